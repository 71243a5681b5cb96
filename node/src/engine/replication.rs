//! The engine's driver of the replica core: swarm events and ticks go in
//! as inputs, the core's outputs are carried out here — bytes handed to
//! the swarm task, documents verified and stored, records persisted, dials
//! and disconnections asked for, live events told. Every replication
//! decision is the core's (`passerelle_protocol::replica`); this file only
//! translates, and gives the core its window on the store ([`StoreDocs`]).

use std::collections::BTreeMap;

use passerelle_protocol::automerge::ReadDoc;
use passerelle_protocol::envelope::ChangeEnvelope;
use passerelle_protocol::header::SignedHeader;
use passerelle_protocol::ids::{DocId, NodeId};
use passerelle_protocol::replica::{
    DocSource, Event, IngestOutcome, LocalStatus, MissingChange, Output, Persist, QueuedDoc, Replica,
};
use passerelle_protocol::sync::session::{missing_changes, refusal_keeps_apart};

use super::cache::DocCache;
use super::worker::Worker;
use super::{EngineError, IngestBatch, NetEvent};
use crate::clock;
use crate::net::NetOut;
use crate::store::{Store, WriteOp};

/// The core's window on the store: reads, and the transfer queues it keeps
/// there (written with the batch, flushed with it).
pub(crate) struct StoreDocs<'a, S: Store> {
    pub store: &'a S,
    pub cache: &'a mut DocCache,
    pub node: NodeId,
    /// Refusals the engine counted (for this node's heartbeat).
    pub rejected: &'a BTreeMap<String, u64>,
    /// Set when something was written: the batch must flush.
    pub wrote: bool,
}

/// A read's result, its failure logged (the core treats it as nothing there).
fn logged<T>(what: &str, r: Result<T, impl std::fmt::Display>) -> Option<T> {
    r.inspect_err(|e| tracing::warn!(error = %e, "store read for replication failed: {what}")).ok()
}

impl<S: Store> StoreDocs<'_, S> {
    fn write(&mut self, ops: Vec<WriteOp>) {
        if ops.is_empty() {
            return;
        }
        match self.store.write(ops) {
            Ok(()) => self.wrote = true,
            Err(e) => tracing::warn!(error = %e, "transfer queue not written"),
        }
    }
}

impl<S: Store> DocSource for StoreDocs<'_, S> {
    fn header(&mut self, doc: &DocId) -> Option<SignedHeader> {
        logged("header", self.store.header(doc)).flatten()
    }

    fn doc_size(&mut self, doc: &DocId) -> Option<(u64, i64)> {
        logged("metadata", self.store.meta(doc)).flatten().map(|m| (m.changes, m.updated_ms))
    }

    fn changes_for(&mut self, doc: &DocId, their_heads: Option<&[[u8; 32]]>) -> Vec<ChangeEnvelope> {
        let mut out = Vec::new();
        match their_heads {
            None => {
                for (_, record) in logged("changes", self.store.changes(doc, 0)).unwrap_or_default() {
                    match record {
                        Ok(stored) => out.push(stored.envelope),
                        Err(e) => tracing::warn!(doc = %doc.short(), error = %e, "damaged change not sent"),
                    }
                }
            }
            Some(heads) => {
                let node = self.node;
                let loaded = self.cache.get_or_load(self.store, &node, doc);
                let Some(Some(loaded)) = logged("document", loaded) else { return out };
                let hashes = missing_changes(&loaded.doc, heads);
                for hash in hashes {
                    if let Some(Some(stored)) = logged("change", self.store.change_by_hash(&hash.0)) {
                        out.push(stored.envelope);
                    }
                }
            }
        }
        out
    }

    fn missing(&mut self, doc: &DocId, their_heads: &[[u8; 32]]) -> Vec<MissingChange> {
        let node = self.node;
        let loaded = self.cache.get_or_load(self.store, &node, doc);
        let Some(Some(loaded)) = logged("document", loaded) else { return Vec::new() };
        let order: Vec<([u8; 32], Vec<[u8; 32]>)> = missing_changes(&loaded.doc, their_heads)
            .into_iter()
            .map(|h| {
                let deps = loaded.doc.get_change_by_hash(&h).map(|c| c.deps().iter().map(|d| d.0).collect());
                (h.0, deps.unwrap_or_default())
            })
            .collect();
        let mut out = Vec::with_capacity(order.len());
        for (hash, deps) in order {
            if let Some(Some(stored)) = logged("change", self.store.change_by_hash(&hash)) {
                out.push(MissingChange { hash, deps, envelope: stored.envelope });
            }
        }
        out
    }

    fn has_change(&mut self, hash: &[u8; 32]) -> bool {
        logged("change", self.store.has_change(hash)).unwrap_or(false)
    }

    fn queue_len(&mut self, peer: &NodeId) -> u64 {
        logged("queue", self.store.queue_len(peer)).unwrap_or(0)
    }

    fn queue_front(&mut self, peer: &NodeId, limit: usize) -> Vec<QueuedDoc> {
        logged("queue", self.store.queued(peer, limit)).unwrap_or_default()
    }

    fn queued(&mut self, peer: &NodeId, doc: &DocId) -> Option<QueuedDoc> {
        logged("queue", self.store.queued_doc(peer, doc)).flatten()
    }

    fn enqueue(&mut self, peer: &NodeId, entries: Vec<QueuedDoc>) {
        self.write(entries.into_iter().map(|q| WriteOp::Enqueue(*peer, q)).collect());
    }

    fn dequeue(&mut self, peer: &NodeId, entries: Vec<QueuedDoc>) {
        self.write(entries.into_iter().map(|q| WriteOp::Dequeue(*peer, q)).collect());
    }

    fn drop_queue(&mut self, peer: &NodeId) {
        let all = logged("queue", self.store.queued(peer, usize::MAX)).unwrap_or_default();
        self.dequeue(peer, all);
    }

    fn local_status(&mut self) -> LocalStatus {
        let (by_kind, by_status) = logged("counts", super::counts_of(self.store)).unwrap_or_default();
        let mut documents = Vec::new();
        for (kind, n) in by_kind {
            match by_status.get(&kind).filter(|s| !s.is_empty()) {
                Some(statuses) => documents.extend(statuses.iter().map(|(s, n)| (kind.clone(), s.clone(), *n))),
                None => documents.push((kind, String::new(), n)),
            }
        }
        LocalStatus {
            documents,
            disk_bytes: self.store.disk_bytes().unwrap_or(0),
            rejected: self.rejected.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }
}

impl<S: Store> Worker<S> {
    /// Runs `f` with the core and its window on the store; what the core
    /// asked for is carried out afterwards.
    pub(crate) fn replicate<R>(&mut self, f: impl FnOnce(&mut Replica, &mut StoreDocs<'_, S>) -> R) -> R {
        let mut docs = StoreDocs {
            store: &self.store,
            cache: &mut self.cache,
            node: self.node_id,
            rejected: &self.metrics.rejected,
            wrote: false,
        };
        let r = f(&mut self.replica, &mut docs);
        if docs.wrote {
            self.wrote = true;
        }
        if let Err(e) = self.drive() {
            tracing::error!(error = %e, "replication output failed");
        }
        r
    }

    fn to_net(&self, out: NetOut) {
        if let Some(net) = &self.net
            && net.blocking_send(out).is_err()
        {
            tracing::debug!("network stopped: dropped");
        }
    }

    /// Carries out what the core asked for, until it asks for nothing more.
    pub(crate) fn drive(&mut self) -> Result<(), EngineError> {
        while let Some(output) = self.replica.poll() {
            match output {
                // The swarm task never waits on the engine, so this wait is short.
                Output::Send { to, kind, bytes, tag } => self.to_net(NetOut::Send { to, kind, bytes, tag }),
                Output::Ingest { from, batch } => {
                    let live = batch.live;
                    // Kept for a refusal of the whole batch (a store that fails).
                    let ids: Vec<DocId> =
                        batch.headers.iter().map(|h| h.id()).chain(batch.changes.iter().map(|c| c.doc)).collect();
                    let report = match self.ingest(IngestBatch {
                        certificates: Vec::new(),
                        headers: batch.headers,
                        changes: batch.changes,
                        from: Some(from),
                    }) {
                        Ok(report) => report,
                        Err(EngineError::Store(e)) => {
                            // A full or failing disk: the batch is not kept
                            // (its documents written before the failure are,
                            // and the core learns of them); the peer is
                            // asked to hold these documents
                            // back for a while instead of sending them at
                            // every round.
                            tracing::error!(peer = %from.short(), error = %e, "cannot store what a peer sent");
                            store_failed(ids, &e)
                        }
                        Err(e) => return Err(e),
                    };
                    self.wrote = true;
                    let apart = report
                        .rejected
                        .iter()
                        .filter(|r| refusal_keeps_apart(&r.code))
                        .filter_map(|r| Some((r.doc.parse().ok()?, r.code.clone())))
                        .collect();
                    let outcome = IngestOutcome {
                        applied: report.applied,
                        duplicates: report.duplicates,
                        refused: report.rejected.into_iter().map(|r| (r.code, r.reason)).collect(),
                        apart,
                        live,
                    };
                    let now = clock::now_ms();
                    self.replicate(|r, docs| r.ingested(now, from, outcome, docs));
                }
                Output::Persist(p) => {
                    let ops = match p {
                        Persist::Statements(list) => list.into_iter().map(WriteOp::Statement).collect(),
                        Persist::ForgetStatements(list) => list.into_iter().map(WriteOp::ForgetStatement).collect(),
                        Persist::Certificate(cert) => vec![WriteOp::Certificate(cert)],
                        Persist::Heartbeat(h) => vec![WriteOp::Heartbeat(*h)],
                        Persist::ForgetHeartbeat(node) => vec![WriteOp::ForgetHeartbeat(node)],
                        Persist::PulseChain(chain) => vec![WriteOp::PulseChain(chain)],
                        Persist::RemovePeer(node) => vec![WriteOp::RemovePeer(node)],
                    };
                    self.store.write(ops)?;
                    self.wrote = true;
                }
                Output::Redeem { from, invitation, certificate, addrs } => {
                    self.redeem(from, invitation, certificate, addrs)?;
                }
                Output::JoinAnswered { from, network, answer } => self.finish_join(from, network, answer)?,
                Output::Dial { node, addrs } => {
                    let addrs = addrs.iter().filter_map(|a| a.parse().ok()).collect();
                    self.to_net(NetOut::Dial { node, addrs });
                }
                Output::Forget { node } => self.to_net(NetOut::Forget { node }),
                Output::Disconnect { node, reason } => self.to_net(NetOut::Disconnect { to: node, reason }),
                Output::Event(Event::Peer(node)) => self.live("peer", node.to_string()),
                Output::Event(Event::Heartbeat(node)) => self.live("heartbeat", node.to_string()),
            }
        }
        self.tell_members();
        Ok(())
    }

    /// Tells the swarm task the members' registered nodes when the roster
    /// changed since it last heard (its relay server serves only those).
    fn tell_members(&mut self) {
        let Some(roster) = self.replica.roster() else { return };
        if self.net.is_none() || self.members_sent == Some(roster.fingerprint()) {
            return;
        }
        let nodes = roster
            .registered_nodes()
            .filter(|(node, commune)| roster.is_member(commune) && !roster.is_revoked(node, commune))
            .map(|(node, _)| *node)
            .collect();
        self.members_sent = Some(roster.fingerprint());
        self.to_net(NetOut::Members(nodes));
    }

    /// Handles an event from the swarm task.
    pub(crate) fn on_net(&mut self, event: NetEvent) {
        let now = clock::now_ms();
        match event {
            NetEvent::Connected { node, addr } => {
                tracing::debug!(peer = %node.short(), %addr, "connection up");
                self.replicate(|r, docs| r.peer_connected(now, node, addr, docs));
            }
            NetEvent::Disconnected { node, error } => self.replicate(|r, _| r.peer_disconnected(now, node, error)),
            NetEvent::DialFailed { node, error } => self.replicate(|r, _| r.dial_failed(now, node, error)),
            NetEvent::Refused { from, reason } => self.replicate(|r, docs| r.frame_refused(now, from, reason, docs)),
            NetEvent::Message { from, msg, bytes } => {
                self.replicate(|r, docs| r.message_received(now, from, *msg, bytes, docs));
            }
            NetEvent::Delivered { node, tag } => self.replicate(|r, docs| r.message_delivered(now, node, tag, docs)),
            NetEvent::Lost { node, tag } => self.replicate(|r, _| r.message_lost(now, node, tag)),
            NetEvent::LinkRate { node, bytes_per_s } => {
                tracing::debug!(peer = %node.short(), bytes_per_s, "delivery rate");
                self.replicate(|r, _| r.link_rate(node, bytes_per_s));
            }
            NetEvent::Tick => self.replicate(|r, docs| r.tick(now, docs)),
        }
    }

    /// Sends what became durable in this batch on to the peers.
    pub(crate) fn after_flush(&mut self) {
        let announcements = std::mem::take(&mut self.announcements);
        let mut changed: Vec<String> =
            announcements.iter().flat_map(|a| a.changes.iter().map(|c| c.doc.to_string())).collect();
        changed.sort();
        changed.dedup();
        for doc in changed {
            self.live("doc", doc);
        }
        let now = clock::now_ms();
        self.replicate(|r, docs| r.committed(now, announcements, docs));
    }

    /// Peer records changed in this batch, to write before the flush.
    pub(crate) fn dirty_peer_ops(&mut self) -> Vec<WriteOp> {
        self.replica.take_dirty_peers().into_iter().map(WriteOp::Peer).collect()
    }
}

/// The ingest report of a batch the store could not take: every document
/// refused as `store_failed`.
fn store_failed(mut ids: Vec<DocId>, e: &crate::store::StoreError) -> super::ingest::IngestReport {
    ids.sort();
    ids.dedup();
    let rejected = ids
        .iter()
        .map(|id| super::ingest::Rejection {
            doc: id.to_string(),
            code: "store_failed".into(),
            reason: format!("this node could not store it: {e}"),
        })
        .collect();
    super::ingest::IngestReport { rejected, ..Default::default() }
}
