//! A simulated node's store, in memory: documents (header, Automerge
//! document, signed changes in arrival order), the transfer queues the
//! replica core keeps there, and the ingest path a node runs on what
//! peers send (every signature and membership checked, as the node does).

use std::collections::{BTreeMap, HashMap};

use automerge::{Automerge, Change, ChangeHash, ReadDoc};

use crate::envelope::{ChangeEnvelope, verify_signatures};
use crate::header::SignedHeader;
use crate::ids::{DocId, NodeId};
use crate::replica::{
    Announcement, DocSource, IngestBatch, IngestOutcome, LocalStatus, MissingChange, QueuedDoc, Replica,
};
use crate::sync::session::missing_changes;

/// One document as a simulated node holds it.
#[derive(Debug)]
pub struct MemDoc {
    /// The signed header.
    pub header: SignedHeader,
    /// The document.
    pub doc: Automerge,
    /// Its changes in the order they were stored.
    pub changes: Vec<ChangeEnvelope>,
    /// When the last change was stored (ms).
    pub updated_ms: i64,
}

/// One peer's transfer queue: by (priority, document), the peer's heads.
type Queue = BTreeMap<(u64, DocId), Option<Vec<[u8; 32]>>>;

/// A simulated node's store.
#[derive(Debug, Default)]
pub struct MemDocs {
    /// The documents.
    pub docs: BTreeMap<DocId, MemDoc>,
    /// Every change held, by hash.
    pub by_hash: HashMap<[u8; 32], ChangeEnvelope>,
    /// Transfer queues: per peer, by (priority, doc).
    queues: HashMap<NodeId, Queue>,
}

fn heads(doc: &Automerge) -> Vec<[u8; 32]> {
    doc.get_heads().iter().map(|h| h.0).collect()
}

impl MemDocs {
    /// The heads of every document: what convergence compares.
    pub fn state(&self) -> BTreeMap<DocId, Vec<[u8; 32]>> {
        self.docs.iter().map(|(id, d)| (*id, heads(&d.doc))).collect()
    }

    /// Documents queued for `peer`, all peers together.
    pub fn queued_total(&self) -> usize {
        self.queues.values().map(BTreeMap::len).sum()
    }

    /// Stores a change written by this node (document created or edited)
    /// and tells the core. Returns the announcement to commit.
    pub fn write_local(
        &mut self,
        replica: &mut Replica,
        header: Option<SignedHeader>,
        doc: DocId,
        change: &Change,
        envelope: ChangeEnvelope,
        now: i64,
    ) -> Announcement {
        if let Some(h) = &header {
            let node = replica.me().node();
            self.docs.insert(
                doc,
                MemDoc {
                    header: h.clone(),
                    doc: crate::document::new_document(&node),
                    changes: Vec::new(),
                    updated_ms: now,
                },
            );
        }
        let d = self.docs.get_mut(&doc).expect("a local write names a document held here");
        if d.doc.get_change_by_hash(&change.hash()).is_none() {
            d.doc.apply_changes(vec![change.clone()]).expect("a change this node made applies");
        }
        d.changes.push(envelope.clone());
        d.updated_ms = now;
        self.by_hash.insert(change.hash().0, envelope.clone());
        let audience = crate::sync::audience::Audience::of(&d.header.header);
        replica.doc_changed(doc, audience, heads(&d.doc), now);
        Announcement { from: None, new_docs: header.into_iter().collect(), changes: vec![envelope] }
    }

    /// What a node does with an [`crate::replica::Output::Ingest`]: verify
    /// every signature, header, writer and membership against the core's
    /// book and roster, then apply and store each document's new changes.
    pub fn ingest(
        &mut self,
        replica: &mut Replica,
        from: NodeId,
        batch: IngestBatch,
        now: i64,
    ) -> (IngestOutcome, Announcement) {
        let mut outcome = IngestOutcome { live: batch.live, ..IngestOutcome::default() };
        let mut new_headers: HashMap<DocId, SignedHeader> = HashMap::new();
        for h in batch.headers {
            let id = h.id();
            if self.docs.contains_key(&id) || new_headers.contains_key(&id) {
                continue;
            }
            let registered =
                replica.roster().is_none_or(|r| r.commune_of_node(&h.certificate.node) == Some(h.header.owner));
            match h.verify_with(replica.book()) {
                Ok(()) if !registered => {
                    outcome
                        .refused
                        .push(("not_registered".into(), "header by a key not registered to its owner".into()));
                }
                Ok(()) => {
                    new_headers.insert(id, h);
                }
                Err(e) => outcome.refused.push(("bad_header".into(), e.to_string())),
            }
        }
        let sigs = verify_signatures(&batch.changes);
        let mut by_doc: BTreeMap<DocId, Vec<ChangeEnvelope>> = BTreeMap::new();
        for (env, sig) in batch.changes.into_iter().zip(sigs) {
            match sig {
                Ok(()) => by_doc.entry(env.doc).or_default().push(env),
                Err(e) => outcome.refused.push((e.code().into(), e.to_string())),
            }
        }
        let mut announced = Announcement { from: Some(from), ..Announcement::default() };
        for (id, envs) in by_doc {
            let new_header = new_headers.remove(&id);
            let header = match (&new_header, self.docs.get(&id)) {
                (Some(h), _) => h.clone(),
                (None, Some(d)) => d.header.clone(),
                (None, None) => {
                    outcome.refused.push(("unknown_document".into(), "no header known".into()));
                    continue;
                }
            };
            let mut fresh: Vec<(Change, ChangeEnvelope)> = Vec::new();
            for env in envs {
                let checked = env.validate_signed(&id, &header.header, replica.book(), now).and_then(|v| match replica
                    .roster()
                {
                    Some(r) => ChangeEnvelope::check_membership(&v, r).map(|()| v),
                    None => Ok(v),
                });
                match checked {
                    Ok(v) => {
                        let hash = v.change.hash().0;
                        if self.by_hash.contains_key(&hash) || fresh.iter().any(|(c, _)| c.hash().0 == hash) {
                            outcome.duplicates += 1;
                        } else {
                            fresh.push((v.change, v.envelope));
                        }
                    }
                    Err(e) => {
                        if crate::sync::session::refusal_keeps_apart(e.code()) {
                            outcome.apart.push((id, e.code().into()));
                        }
                        outcome.refused.push((e.code().into(), e.to_string()));
                    }
                }
            }
            if fresh.is_empty() {
                continue;
            }
            let node = replica.me().node();
            let d = self.docs.entry(id).or_insert_with(|| MemDoc {
                header: header.clone(),
                doc: crate::document::new_document(&node),
                changes: Vec::new(),
                updated_ms: now,
            });
            if d.doc.apply_changes(fresh.iter().map(|(c, _)| c.clone())).is_err() {
                outcome.refused.push(("bad_change".into(), "automerge refused the changes".into()));
                continue;
            }
            for (c, e) in &fresh {
                self.by_hash.insert(c.hash().0, e.clone());
                d.changes.push(e.clone());
            }
            d.updated_ms = now;
            outcome.applied += fresh.len() as u64;
            let audience = crate::sync::audience::Audience::of(&header.header);
            replica.doc_changed(id, audience, heads(&d.doc), now);
            if let Some(h) = new_header {
                announced.new_docs.push(h);
            }
            announced.changes.extend(fresh.into_iter().map(|(_, e)| e));
        }
        (outcome, announced)
    }
}

impl DocSource for MemDocs {
    fn header(&mut self, doc: &DocId) -> Option<SignedHeader> {
        self.docs.get(doc).map(|d| d.header.clone())
    }

    fn doc_size(&mut self, doc: &DocId) -> Option<(u64, i64)> {
        self.docs.get(doc).map(|d| (d.changes.len() as u64, d.updated_ms))
    }

    fn changes_for(&mut self, doc: &DocId, their_heads: Option<&[[u8; 32]]>) -> Vec<ChangeEnvelope> {
        let Some(d) = self.docs.get(doc) else { return Vec::new() };
        match their_heads {
            None => d.changes.clone(),
            Some(h) => missing_changes(&d.doc, h).iter().filter_map(|c| self.by_hash.get(&c.0).cloned()).collect(),
        }
    }

    fn missing(&mut self, doc: &DocId, their_heads: &[[u8; 32]]) -> Vec<MissingChange> {
        let Some(d) = self.docs.get(doc) else { return Vec::new() };
        missing_changes(&d.doc, their_heads)
            .into_iter()
            .filter_map(|h: ChangeHash| {
                let deps = d.doc.get_change_by_hash(&h)?.deps().iter().map(|x| x.0).collect();
                Some(MissingChange { hash: h.0, deps, envelope: self.by_hash.get(&h.0)?.clone() })
            })
            .collect()
    }

    fn has_change(&mut self, hash: &[u8; 32]) -> bool {
        self.by_hash.contains_key(hash)
    }

    fn queue_len(&mut self, peer: &NodeId) -> u64 {
        self.queues.get(peer).map_or(0, |q| q.len() as u64)
    }

    fn queue_front(&mut self, peer: &NodeId, limit: usize) -> Vec<QueuedDoc> {
        self.queues
            .get(peer)
            .map(|q| {
                q.iter()
                    .take(limit)
                    .map(|((priority, doc), heads)| QueuedDoc {
                        priority: *priority,
                        doc: *doc,
                        their_heads: heads.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn queued(&mut self, peer: &NodeId, doc: &DocId) -> Option<QueuedDoc> {
        self.queues.get(peer)?.iter().find(|((_, d), _)| d == doc).map(|((priority, doc), heads)| QueuedDoc {
            priority: *priority,
            doc: *doc,
            their_heads: heads.clone(),
        })
    }

    fn enqueue(&mut self, peer: &NodeId, entries: Vec<QueuedDoc>) {
        let q = self.queues.entry(*peer).or_default();
        for e in entries {
            q.insert((e.priority, e.doc), e.their_heads);
        }
    }

    fn dequeue(&mut self, peer: &NodeId, entries: Vec<QueuedDoc>) {
        if let Some(q) = self.queues.get_mut(peer) {
            for e in entries {
                q.remove(&(e.priority, e.doc));
            }
        }
    }

    fn drop_queue(&mut self, peer: &NodeId) {
        self.queues.remove(peer);
    }

    fn local_status(&mut self) -> LocalStatus {
        let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
        for d in self.docs.values() {
            *by_kind.entry(d.header.header.kind.to_string()).or_default() += 1;
        }
        LocalStatus {
            documents: by_kind.into_iter().map(|(k, n)| (k, String::new(), n)).collect(),
            disk_bytes: self.by_hash.values().map(|e| e.change.len() as u64 + 140).sum(),
            rejected: Vec::new(),
        }
    }
}
