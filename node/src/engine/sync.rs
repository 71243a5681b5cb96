//! The engine's side of replication: it holds the sync sessions (one per
//! connected peer), keeps the fingerprints of the local set up to date, and
//! carries out the sessions' effects against the store. Messages leave
//! through the swarm task's bounded outbox.
//!
//! Live pushes are sent only after the batch that stored them was flushed,
//! so a peer never learns of a change this node could still lose.

use std::collections::{HashMap, HashSet};

use passerelle_protocol::certificate::NodeCertificate;
use passerelle_protocol::envelope::ChangeEnvelope;
use passerelle_protocol::header::SignedHeader;
use passerelle_protocol::ids::{DocId, NodeId};
use passerelle_protocol::network::SignedStatement;
use passerelle_protocol::sync::audience::SyncIndex;
use passerelle_protocol::sync::message::{DOCS_FRAME_TARGET_BYTES, SyncMessage};
use passerelle_protocol::sync::session::{Effect, Phase, Session, refusal_is_fault};
use tokio::sync::mpsc;

use super::transfers::Transfers;
use super::worker::Worker;
use super::{EngineError, IngestBatch, NetEvent};
use crate::clock;
use crate::net::NetOut;
use crate::store::{PeerRecord, Store, WriteOp};

/// Smallest `Docs` frame built on purpose (a single change may be larger).
pub(crate) const MIN_FRAME_BYTES: usize = 4 * 1024;

/// Something to push to connected peers once it is durable.
#[derive(Debug, Clone, Default)]
pub(crate) struct Announcement {
    /// The peer it came from, who needs no copy.
    pub exclude: Option<NodeId>,
    /// Documents new to this node: their headers go along.
    pub new_docs: Vec<SignedHeader>,
    /// The changes.
    pub changes: Vec<ChangeEnvelope>,
}

/// Replication state owned by the engine thread.
#[derive(Debug, Default)]
pub(crate) struct SyncState {
    pub index: SyncIndex,
    pub sessions: HashMap<NodeId, Session>,
    pub net: Option<mpsc::Sender<NetOut>>,
    pub peers: HashMap<NodeId, PeerRecord>,
    pub dirty_peers: HashSet<NodeId>,
    pub announcements: Vec<Announcement>,
    /// Statements new to this node, to push to ready peers after the flush
    /// (with the peer they came from, who needs no copy).
    pub roster_news: Vec<(Option<NodeId>, Vec<SignedStatement>)>,
    /// Hellos received while this node was outside any network (it is
    /// joining): replayed once it has joined.
    pub early_hellos: HashMap<NodeId, SyncMessage>,
    /// Peers with a connection up.
    pub connected: HashSet<NodeId>,
    /// Set when a network event wrote to the store: the batch must flush.
    pub wrote: bool,
    /// Per-peer transfer queues (on disk) and the frames on their way.
    pub transfers: Transfers,
}

impl<S: Store> Worker<S> {
    fn peer_mut(&mut self, node: NodeId) -> &mut PeerRecord {
        self.sync.dirty_peers.insert(node);
        self.sync.peers.entry(node).or_insert_with(|| PeerRecord::new(node))
    }

    /// Encodes and hands a message to the swarm task.
    pub(crate) fn send(&mut self, to: NodeId, msg: &SyncMessage) {
        self.send_tagged(to, msg, None);
    }

    /// Hands a message to the swarm task; a tagged one is reported back
    /// when the peer acknowledges it (or when it is lost).
    fn send_tagged(&mut self, to: NodeId, msg: &SyncMessage, tag: Option<u64>) {
        let Some(net) = self.sync.net.clone() else { return };
        let bytes = msg.encode();
        self.peer_mut(to).bytes_out += bytes.len() as u64 + 4;
        // The swarm task never waits on the engine, so this wait is short.
        if net.blocking_send(NetOut::Send { to, kind: msg.kind(), bytes, tag }).is_err() {
            tracing::debug!("network stopped: message dropped");
        }
    }

    fn certificates_for(&self, changes: &[ChangeEnvelope], headers: &[SignedHeader]) -> Vec<NodeCertificate> {
        let mut authors: Vec<NodeId> = changes.iter().map(|c| c.author).collect();
        authors.sort();
        authors.dedup();
        let in_headers: HashSet<NodeId> = headers.iter().map(|h| h.certificate.node).collect();
        authors.iter().filter(|a| !in_headers.contains(a)).filter_map(|a| self.book.get(a).cloned()).collect()
    }

    /// The size of `Docs` frames for a peer: about a second of its measured
    /// delivery rate (so a cut loses little and every frame arrives between
    /// cuts on a poor link), between [`MIN_FRAME_BYTES`] and
    /// [`DOCS_FRAME_TARGET_BYTES`]; a middle size until a rate is known.
    pub(crate) fn frame_target(&self, to: &NodeId) -> usize {
        let rate = self.sync.peers.get(to).and_then(|p| p.link_bytes_per_s);
        // Under a send budget, a frame is at most a second of it.
        let rate = match (rate, self.peer_budget) {
            (Some(r), Some(b)) => Some(r.min(b)),
            (r, b) => r.or(b),
        };
        match rate {
            Some(rate) => (rate as usize).clamp(MIN_FRAME_BYTES, DOCS_FRAME_TARGET_BYTES),
            None => DOCS_FRAME_TARGET_BYTES / 4,
        }
    }

    /// Sends headers and changes in frames of bounded size, all tagged
    /// `tag`; returns how many frames left. Each frame is self-contained:
    /// it carries the header of every document it has changes of (frames
    /// travel on separate streams and may arrive in any order) and the
    /// certificates of their authors.
    pub(crate) fn send_docs(
        &mut self,
        to: NodeId,
        mut headers: Vec<SignedHeader>,
        mut changes: Vec<ChangeEnvelope>,
        tag: Option<u64>,
    ) -> usize {
        // The sending side enforces scopes: whatever asked for it, nothing
        // leaves for a peer outside the document's audience.
        let (Some(peer), Some(roster)) = (self.sync.sessions.get(&to).and_then(Session::commune), &self.roster) else {
            return 0;
        };
        headers.retain(|h| self.sync.index.may_share(&h.id(), &peer, roster));
        changes.retain(|c| self.sync.index.may_share(&c.doc, &peer, roster));
        let target = self.frame_target(&to);
        let by_id: HashMap<DocId, SignedHeader> = headers.iter().map(|h| (h.id(), h.clone())).collect();
        let mut frame_headers: Vec<SignedHeader> = Vec::new();
        let mut frame_changes: Vec<ChangeEnvelope> = Vec::new();
        let mut size = 0;
        let mut frames = 0;
        let mut flush = |this: &mut Self, headers: Vec<SignedHeader>, changes: Vec<ChangeEnvelope>| {
            if headers.is_empty() && changes.is_empty() {
                return;
            }
            let certificates = this.certificates_for(&changes, &headers);
            this.send_tagged(to, &SyncMessage::Docs { certificates, headers, changes }, tag);
            frames += 1;
        };
        for change in changes {
            let len = change.change.len() + 140;
            if size + len > target && !frame_changes.is_empty() {
                flush(self, std::mem::take(&mut frame_headers), std::mem::take(&mut frame_changes));
                size = 0;
            }
            if let Some(h) = by_id.get(&change.doc)
                && !frame_headers.iter().any(|f| f.id() == change.doc)
            {
                size += 400;
                frame_headers.push(h.clone());
            }
            size += len;
            frame_changes.push(change);
        }
        // Headers of documents without changes here still travel once.
        for h in headers {
            if !frame_headers.iter().any(|f| f.id() == h.id()) && frame_changes.iter().all(|c| c.doc != h.id()) {
                frame_headers.push(h);
            }
        }
        flush(self, frame_headers, frame_changes);
        frames
    }

    /// Starts a reconciliation round with a connected peer.
    pub(crate) fn start_round(&mut self, peer: NodeId) -> Result<(), EngineError> {
        let pending = self.queue_len(&peer);
        let (Some(mut session), Some(roster)) = (self.sync.sessions.remove(&peer), self.roster.as_ref()) else {
            return Ok(());
        };
        session.set_pending(pending);
        let effects = session.start_round(&self.sync.index.view(self.commune, roster), roster);
        self.sync.sessions.insert(peer, session);
        self.run_effects(peer, effects)
    }

    pub(crate) fn run_effects(&mut self, peer: NodeId, effects: Vec<Effect>) -> Result<(), EngineError> {
        for effect in effects {
            match effect {
                Effect::Send(msg) => self.send(peer, &msg),
                Effect::PushBuckets(buckets) => {
                    let (Some(commune), Some(roster)) =
                        (self.sync.sessions.get(&peer).and_then(Session::commune), &self.roster)
                    else {
                        continue;
                    };
                    let ids = self.sync.index.ids_in(&buckets, &self.commune, &commune, roster);
                    self.enqueue(peer, ids.into_iter().map(|id| (id, None)).collect())?;
                }
                Effect::IngestRoster(statements) => self.add_statements(statements, Some(peer))?,
                Effect::SendHello => {
                    if let Some(roster) = &self.roster {
                        let hello = Session::hello(&self.certificate, roster);
                        self.send(peer, &hello);
                    }
                }
                Effect::Redeem { invitation, certificate, addrs } => {
                    self.redeem(peer, invitation, certificate, addrs)?;
                }
                Effect::PushDocs(ids) => self.enqueue(peer, ids.into_iter().map(|id| (id, None)).collect())?,
                Effect::PushMissing(list) => {
                    self.enqueue(peer, list.into_iter().map(|(id, heads)| (id, Some(heads))).collect())?;
                }
                Effect::Ingest { certificates, headers, changes } => {
                    if headers.is_empty() && changes.is_empty() {
                        for cert in certificates {
                            if self.book.insert(cert.clone()).unwrap_or(false) {
                                self.store.write(vec![WriteOp::Certificate(cert.clone())])?;
                                self.sync.wrote = true;
                            }
                            self.peer_mut(peer).commune = Some(cert.commune.to_string());
                        }
                        continue;
                    }
                    let report = self.ingest(IngestBatch { certificates, headers, changes, from: Some(peer) })?;
                    self.sync.wrote = true;
                    let record = self.peer_mut(peer);
                    record.changes_in += report.applied;
                    record.rejected += report.rejected.len() as u64;
                    if let Some(r) = report.rejected.iter().rev().find(|r| refusal_is_fault(&r.code)) {
                        let reason =
                            format!("refused {} item(s), last {}: {}", report.rejected.len(), r.code, r.reason);
                        record.last_error = Some(reason.clone());
                        // Sending what does not verify is a fault of the sender.
                        self.metrics.faults += 1;
                        if let Some(mut session) = self.sync.sessions.remove(&peer) {
                            let effects = session.penalise(reason);
                            self.sync.sessions.insert(peer, session);
                            let disconnect: Vec<Effect> =
                                effects.into_iter().filter(|e| matches!(e, Effect::Disconnect(_))).collect();
                            self.run_effects(peer, disconnect)?;
                        }
                    }
                }
                Effect::Heartbeats(beats) => self.on_heartbeats(peer, beats)?,
                Effect::InSync => {
                    self.metrics.rounds_in_sync += 1;
                    self.peer_mut(peer).last_sync_ms = Some(clock::now_ms());
                    tracing::debug!(peer = %peer.short(), "in sync");
                }
                Effect::Fault(reason) => {
                    self.metrics.faults += 1;
                    tracing::warn!(peer = %peer.short(), %reason, "sync protocol fault: message dropped");
                    let record = self.peer_mut(peer);
                    record.rejected += 1;
                    record.last_error = Some(reason);
                }
                Effect::Disconnect(reason) => {
                    if let Some(net) = &self.sync.net {
                        let _ = net.blocking_send(NetOut::Disconnect { to: peer, reason });
                    }
                }
            }
        }
        Ok(())
    }

    /// Opens a sync session with a connected peer and says hello, if this
    /// node is in a network (a node outside any can only join).
    pub(crate) fn open_session(&mut self, node: NodeId) {
        let Some(roster) = &self.roster else { return };
        let hello = Session::hello(&self.certificate, roster);
        // The session starts its first round when the peer's hello arrives.
        self.sync.sessions.insert(node, Session::new(node));
        self.metrics.sessions_opened += 1;
        self.send(node, &hello);
    }

    /// Handles an event from the swarm task.
    pub(crate) fn on_net(&mut self, event: NetEvent) -> Result<(), EngineError> {
        match event {
            NetEvent::Connected { node, addr } => {
                tracing::debug!(peer = %node.short(), %addr, "connection up");
                self.sync.connected.insert(node);
                // Whatever was on its way over an earlier connection is not.
                self.sync.transfers.connection_lost(&node);
                self.live("peer", node.to_string());
                let record = self.peer_mut(node);
                record.last_connected_ms = Some(clock::now_ms());
                record.last_addr = Some(addr);
                record.last_error = None;
                if let Some(join) = self.joining.as_ref().filter(|j| j.invitation.issuer_node == node) {
                    let msg = SyncMessage::Join {
                        invitation: Box::new(join.invitation.clone()),
                        certificate: self.certificate.clone(),
                        addrs: join.addrs.clone(),
                    };
                    self.send(node, &msg);
                }
                self.open_session(node);
            }
            NetEvent::Disconnected { node, error } => {
                self.live("peer", node.to_string());
                self.sync.sessions.remove(&node);
                self.sync.transfers.connection_lost(&node);
                self.sync.early_hellos.remove(&node);
                self.sync.connected.remove(&node);
                if let Some(e) = error {
                    self.peer_mut(node).last_error = Some(e);
                }
            }
            NetEvent::DialFailed { node, error } => {
                self.peer_mut(node).last_error = Some(format!("dial failed: {error}"));
            }
            NetEvent::Refused { from, reason } => {
                self.metrics.faults += 1;
                let record = self.peer_mut(from);
                record.rejected += 1;
                record.last_error = Some(reason.clone());
                match self.sync.sessions.remove(&from) {
                    Some(mut session) => {
                        let effects = session.penalise(reason);
                        self.sync.sessions.insert(from, session);
                        let disconnect: Vec<Effect> =
                            effects.into_iter().filter(|e| matches!(e, Effect::Disconnect(_))).collect();
                        self.run_effects(from, disconnect)?;
                    }
                    None => {
                        if let Some(net) = &self.sync.net {
                            let _ = net.blocking_send(NetOut::Disconnect { to: from, reason });
                        }
                    }
                }
            }
            NetEvent::Message { from, msg, bytes } => {
                self.peer_mut(from).bytes_in += bytes as u64;
                match msg {
                    SyncMessage::Welcome { statements } if self.is_joining_through(&from) => {
                        self.finish_join(from, Ok(statements))?;
                        return Ok(());
                    }
                    SyncMessage::JoinRefused { reason } if self.is_joining_through(&from) => {
                        self.finish_join(from, Err(reason))?;
                        return Ok(());
                    }
                    hello @ SyncMessage::Hello { .. } if self.roster.is_none() => {
                        // Not in a network yet: keep it for when this node has joined.
                        self.sync.early_hellos.insert(from, hello);
                        return Ok(());
                    }
                    _ => {}
                }
                let pending = self.queue_len(&from);
                let (Some(mut session), Some(roster)) = (self.sync.sessions.remove(&from), self.roster.as_ref()) else {
                    tracing::debug!(peer = %from.short(), kind = msg.kind(), "message outside a session: ignored");
                    return Ok(());
                };
                let was_ready = session.phase() == Phase::Ready;
                session.set_pending(pending);
                let effects = session.on_message(msg, &self.sync.index.view(self.commune, roster), roster);
                let now_ready = session.phase() == Phase::Ready;
                self.sync.sessions.insert(from, session);
                self.run_effects(from, effects)?;
                if now_ready && !was_ready {
                    // A transfer cut by the last disconnection resumes now.
                    self.fill(from)?;
                    self.send_heartbeats(from);
                }
            }
            NetEvent::Delivered { node, tag } => self.frame_delivered(node, tag)?,
            NetEvent::HeartbeatDue => self.heartbeat_due()?,
            NetEvent::Lost { node, tag } => self.frame_lost(node, tag),
            NetEvent::LinkRate { node, bytes_per_s } => {
                tracing::debug!(peer = %node.short(), bytes_per_s, "delivery rate");
                self.peer_mut(node).link_bytes_per_s = Some(bytes_per_s);
            }
            NetEvent::AntiEntropy { idle } => {
                for peer in idle {
                    // A transfer whose frames were lost goes on.
                    self.fill(peer)?;
                    self.start_round(peer)?;
                }
            }
        }
        Ok(())
    }

    /// Sends what became durable in this batch to the connected peers, and
    /// persists peer records that changed.
    pub(crate) fn after_flush(&mut self) {
        let roster_news = std::mem::take(&mut self.sync.roster_news);
        let announcements = std::mem::take(&mut self.sync.announcements);
        if announcements.is_empty() && roster_news.is_empty() {
            return;
        }
        let ready: Vec<NodeId> =
            self.sync.sessions.iter().filter(|(_, s)| s.phase() == Phase::Ready).map(|(n, _)| *n).collect();
        // Roster news first: a revocation reaches peers before documents.
        for (exclude, statements) in roster_news {
            for peer in ready.iter().filter(|p| Some(**p) != exclude) {
                self.send(*peer, &SyncMessage::Roster { statements: statements.clone(), complete: false });
            }
        }
        let mut changed: Vec<String> =
            announcements.iter().flat_map(|a| a.changes.iter().map(|c| c.doc.to_string())).collect();
        changed.sort();
        changed.dedup();
        for doc in changed {
            self.live("doc", doc);
        }
        for a in announcements {
            for peer in ready.iter().filter(|p| Some(**p) != a.exclude) {
                self.send_docs(*peer, a.new_docs.clone(), a.changes.clone(), None);
            }
        }
    }

    /// Peer records changed in this batch, to write before the flush.
    pub(crate) fn dirty_peer_ops(&mut self) -> Vec<WriteOp> {
        let dirty: Vec<NodeId> = self.sync.dirty_peers.drain().collect();
        dirty.iter().filter_map(|n| self.sync.peers.get(n).cloned()).map(WriteOp::Peer).collect()
    }
}
