//! Per-peer transfer queues: what reconciliation found a peer lacks waits
//! on disk (`q` records, see the store) until the peer acknowledges the
//! frame that carried it.
//!
//! A backlog is not turned into frames all at once: the engine hands the
//! swarm task a few frames at a time ([`TRANSFER_WINDOW`]) and builds the
//! next ones as acknowledgements come back, so memory stays bounded
//! whatever the backlog, and the order can favour small and recent
//! documents. After a cut (or a restart) the transfer resumes with what
//! was not acknowledged, without a new reconciliation round: summaries say
//! how much is still queued, and buckets are compared only once both
//! queues are empty.

use std::collections::{HashMap, HashSet};

use passerelle_protocol::automerge::ReadDoc;
use passerelle_protocol::envelope::ChangeEnvelope;
use passerelle_protocol::header::SignedHeader;
use passerelle_protocol::ids::{DocId, NodeId};
use passerelle_protocol::sync::session::{Phase, missing_changes};

use super::EngineError;
use super::worker::Worker;
use crate::store::{DocMeta, QueuedDoc, Store, WriteOp};

/// Frames of a transfer handed to the swarm task and not acknowledged yet:
/// a little more than it keeps in flight, so it never waits for the engine.
pub(crate) const TRANSFER_WINDOW: usize = crate::net::SEND_WINDOW + 2;

/// A document's heads, as a peer holds them.
type Heads = Vec<[u8; 32]>;

/// Queue entries read from the store at a time.
const PAGE: usize = 64;

/// The order of a peer's queue: small documents first (by the number of
/// changes, in powers of two), then the most recently changed.
pub(crate) fn priority(meta: &DocMeta) -> u64 {
    let size_class = u64::from((64 - meta.changes.leading_zeros()).min(255));
    let age = u64::MAX >> 8;
    let recency = age - (meta.updated_ms.max(0) as u64).min(age);
    (size_class << 56) | recency
}

/// Transfer state kept in memory (the queues themselves are on disk).
#[derive(Debug, Default)]
pub(crate) struct Transfers {
    peers: HashMap<NodeId, PeerQueue>,
    next_tag: u64,
}

#[derive(Debug, Default)]
struct PeerQueue {
    /// Documents queued on disk; counted on first use.
    len: Option<u64>,
    /// Frames handed to the swarm task, by tag.
    sending: HashMap<u64, Sending>,
}

/// One batch of queued documents on its way, in one or more frames; for a
/// document sent in chunks, the peer's heads once this chunk is in.
#[derive(Debug)]
struct Sending {
    docs: Vec<(QueuedDoc, Option<Heads>)>,
    frames: usize,
}

impl Transfers {
    /// Frames of transfers to `peer` the swarm task has not had acknowledged.
    fn frames_out(&self, peer: &NodeId) -> usize {
        self.peers.get(peer).map_or(0, |q| q.sending.values().map(|s| s.frames).sum())
    }

    /// The peer was removed: nothing more is kept of its transfer.
    pub(crate) fn forget(&mut self, peer: &NodeId) {
        self.peers.remove(peer);
    }

    /// The connection dropped: whatever was on its way is sent again.
    pub(crate) fn connection_lost(&mut self, peer: &NodeId) {
        if let Some(q) = self.peers.get_mut(peer) {
            q.sending.clear();
        }
    }
}

impl<S: Store> Worker<S> {
    /// How many documents are queued for `peer`.
    pub(crate) fn queue_len(&mut self, peer: &NodeId) -> u64 {
        if let Some(n) = self.sync.transfers.peers.get(peer).and_then(|q| q.len) {
            return n;
        }
        let n = self.store.queue_len(peer).unwrap_or_else(|e| {
            tracing::warn!(peer = %peer.short(), error = %e, "transfer queue not readable");
            0
        });
        self.sync.transfers.peers.entry(*peer).or_default().len = Some(n);
        n
    }

    /// How many documents are queued for `peer`, without counting them again.
    pub(crate) fn queued_for(&self, peer: &NodeId) -> u64 {
        match self.sync.transfers.peers.get(peer).and_then(|q| q.len) {
            Some(n) => n,
            None => self.store.queue_len(peer).unwrap_or(0),
        }
    }

    fn adjust_len(&mut self, peer: &NodeId, added: u64, removed: u64) {
        let n = self.queue_len(peer);
        let q = self.sync.transfers.peers.entry(*peer).or_default();
        q.len = Some((n + added).saturating_sub(removed));
    }

    /// Queues documents for `peer`: whole (`None`) or what the given heads
    /// do not cover. A document queued already keeps one entry.
    pub(crate) fn enqueue(
        &mut self,
        peer: NodeId,
        docs: Vec<(DocId, Option<Vec<[u8; 32]>>)>,
    ) -> Result<(), EngineError> {
        // Counted before anything is written, so the count stays exact.
        self.queue_len(&peer);
        let mut ops = Vec::new();
        let mut seen = HashSet::new();
        let mut added = 0;
        for (doc, heads) in docs {
            if !seen.insert(doc) {
                continue;
            }
            let Some(meta) = self.store.meta(&doc)? else { continue };
            let mut their_heads = heads;
            match self.store.queued_doc(&peer, &doc)? {
                Some(old) => {
                    if old.their_heads.is_none() {
                        their_heads = None;
                    }
                    ops.push(WriteOp::Dequeue(peer, old));
                }
                None => added += 1,
            }
            ops.push(WriteOp::Enqueue(peer, QueuedDoc { priority: priority(&meta), doc, their_heads }));
        }
        if ops.is_empty() {
            return Ok(());
        }
        self.store.write(ops)?;
        self.sync.wrote = true;
        self.adjust_len(&peer, added, 0);
        self.fill(peer)
    }

    /// The header and changes a queued entry stands for.
    fn material(&mut self, q: &QueuedDoc) -> Result<Option<(SignedHeader, Vec<ChangeEnvelope>)>, EngineError> {
        let Some(header) = self.store.header(&q.doc)? else { return Ok(None) };
        let mut changes = Vec::new();
        match &q.their_heads {
            None => {
                for (_, record) in self.store.changes(&q.doc, 0)? {
                    match record {
                        Ok(stored) => changes.push(stored.envelope),
                        Err(e) => tracing::warn!(doc = %q.doc.short(), error = %e, "damaged change not sent"),
                    }
                }
            }
            Some(heads) => {
                let node_id = self.node_id;
                let Some(loaded) = self.cache.get_or_load(&self.store, &node_id, &q.doc)? else { return Ok(None) };
                for hash in missing_changes(&loaded.doc, heads) {
                    if let Some(stored) = self.store.change_by_hash(&hash.0)? {
                        changes.push(stored.envelope);
                    }
                }
            }
        }
        Ok(Some((header, changes)))
    }

    /// Hands the swarm task the next frames of the transfer to `peer`, up
    /// to [`TRANSFER_WINDOW`], if a session with it is ready.
    pub(crate) fn fill(&mut self, peer: NodeId) -> Result<(), EngineError> {
        if !self.sync.sessions.get(&peer).is_some_and(|s| s.phase() == Phase::Ready) {
            return Ok(());
        }
        while self.sync.transfers.frames_out(&peer) < TRANSFER_WINDOW && self.queue_len(&peer) > 0 {
            let busy: HashSet<DocId> = self
                .sync
                .transfers
                .peers
                .get(&peer)
                .map(|q| q.sending.values().flat_map(|s| s.docs.iter().map(|(d, _)| d.doc)).collect())
                .unwrap_or_default();
            let page: Vec<QueuedDoc> =
                self.store.queued(&peer, busy.len() + PAGE)?.into_iter().filter(|q| !busy.contains(&q.doc)).collect();
            if page.is_empty() {
                break;
            }
            let target = self.frame_target(&peer);
            let (mut headers, mut changes, mut taken, mut size) = (Vec::new(), Vec::new(), Vec::new(), 0);
            for q in page {
                let Some((header, more)) = self.material(&q)? else {
                    taken.push((q, None));
                    continue;
                };
                let len = 400 + more.iter().map(|c| c.change.len() + 140).sum::<usize>();
                if len > target {
                    if size > 0 {
                        // A large document goes alone, in chunks.
                        break;
                    }
                    let (chunk, next_heads) = self.chunk(&q, more, target)?;
                    headers.push(header);
                    changes.extend(chunk);
                    taken.push((q, next_heads));
                    break;
                }
                if size + len > target && size > 0 {
                    break;
                }
                size += len;
                headers.push(header);
                changes.extend(more);
                taken.push((q, None));
            }
            let tag = self.sync.transfers.next_tag;
            self.sync.transfers.next_tag += 1;
            let frames = self.send_docs(peer, headers, changes, Some(tag));
            if frames == 0 {
                // Nothing of it may (or can) be sent any more: off the queue.
                self.dequeue(peer, taken.into_iter().map(|(q, _)| (q, None)).collect())?;
                continue;
            }
            self.sync.transfers.peers.entry(peer).or_default().sending.insert(tag, Sending { docs: taken, frames });
        }
        Ok(())
    }

    /// The first chunk of a document too large for one frame: its changes
    /// the peer lacks in causal order, as many as fit in `target` (at least
    /// one), and the peer's heads once they are in (`None` if this chunk is
    /// all of it). The queue entry moves to those heads when the chunk is
    /// acknowledged, so a cut resumes after the last chunk that arrived.
    fn chunk(
        &mut self,
        q: &QueuedDoc,
        all: Vec<ChangeEnvelope>,
        target: usize,
    ) -> Result<(Vec<ChangeEnvelope>, Option<Heads>), EngineError> {
        let node_id = self.node_id;
        let Some(loaded) = self.cache.get_or_load(&self.store, &node_id, &q.doc)? else { return Ok((all, None)) };
        let base: Vec<[u8; 32]> = q.their_heads.clone().unwrap_or_default();
        let order = missing_changes(&loaded.doc, &base);
        let mut taken = Vec::new();
        let mut size = 0;
        for hash in &order {
            let Some(stored) = self.store.change_by_hash(&hash.0)? else { continue };
            let len = stored.envelope.change.len() + 140;
            if size + len > target && !taken.is_empty() {
                break;
            }
            size += len;
            taken.push((*hash, stored.envelope));
        }
        if taken.len() >= order.len() {
            return Ok((taken.into_iter().map(|(_, e)| e).collect(), None));
        }
        // The peer's heads after this chunk: of its heads and the chunk's
        // changes, those no change of the chunk depends on.
        let chunk: HashSet<[u8; 32]> = taken.iter().map(|(h, _)| h.0).collect();
        let deps: HashSet<[u8; 32]> = taken
            .iter()
            .filter_map(|(h, _)| loaded.doc.get_change_by_hash(h))
            .flat_map(|c| c.deps().iter().map(|d| d.0).collect::<Vec<_>>())
            .collect();
        let mut heads: Vec<[u8; 32]> = base.into_iter().chain(chunk).filter(|h| !deps.contains(h)).collect();
        heads.sort_unstable();
        heads.dedup();
        Ok((taken.into_iter().map(|(_, e)| e).collect(), Some(heads)))
    }

    /// Takes acknowledged documents off the queue, or, for a chunk of a
    /// large one, moves its entry on to the peer's new heads.
    fn dequeue(&mut self, peer: NodeId, docs: Vec<(QueuedDoc, Option<Heads>)>) -> Result<(), EngineError> {
        self.queue_len(&peer);
        let mut ops = Vec::new();
        let mut removed = 0;
        for (d, next_heads) in docs {
            // Queued again since it left (with newer heads): that entry stays.
            if self.store.queued_doc(&peer, &d.doc)?.as_ref() != Some(&d) {
                continue;
            }
            let doc = d.doc;
            let priority = d.priority;
            ops.push(WriteOp::Dequeue(peer, d));
            match next_heads {
                Some(heads) => {
                    ops.push(WriteOp::Enqueue(peer, QueuedDoc { priority, doc, their_heads: Some(heads) }));
                }
                None => removed += 1,
            }
        }
        if !ops.is_empty() {
            self.store.write(ops)?;
            self.sync.wrote = true;
            self.adjust_len(&peer, 0, removed);
        }
        Ok(())
    }

    /// The peer acknowledged a frame of a transfer; once every frame of its
    /// batch arrived, the batch leaves the queue. When the queue is empty,
    /// a round compares the sets at once.
    pub(crate) fn frame_delivered(&mut self, peer: NodeId, tag: u64) -> Result<(), EngineError> {
        let Some(q) = self.sync.transfers.peers.get_mut(&peer) else { return Ok(()) };
        let Some(sending) = q.sending.get_mut(&tag) else { return Ok(()) };
        sending.frames = sending.frames.saturating_sub(1);
        if sending.frames > 0 {
            return Ok(());
        }
        let done = q.sending.remove(&tag).map(|s| s.docs).unwrap_or_default();
        self.dequeue(peer, done)?;
        self.fill(peer)?;
        if self.queue_len(&peer) == 0 && self.sync.transfers.frames_out(&peer) == 0 {
            tracing::debug!(peer = %peer.short(), "transfer complete");
            self.start_round(peer)?;
        }
        Ok(())
    }

    /// A frame of a transfer was lost (the request failed, or the
    /// connection was gone): its batch goes out again with the next
    /// delivery, the next connection or the next anti-entropy tick, not at
    /// once (the link may be down).
    pub(crate) fn frame_lost(&mut self, peer: NodeId, tag: u64) {
        if let Some(q) = self.sync.transfers.peers.get_mut(&peer) {
            q.sending.remove(&tag);
        }
    }
}

#[cfg(test)]
mod tests {
    use passerelle_protocol::ids::NodeId;
    use serde_json::json;

    use super::super::worker::Worker;
    use crate::home::Home;
    use crate::store::{SledStore, Store};
    use crate::views::{CreateDoc, UpdateDoc};

    fn worker(dir: &tempfile::TempDir) -> Worker<SledStore> {
        let home = Home::new(dir.path());
        let identity = crate::identity::init(&home, "Senneval", "BE", 0).unwrap();
        Worker::new(SledStore::open(&home.store()).unwrap(), &identity).unwrap()
    }

    fn create(w: &mut Worker<SledStore>, title: &str) -> passerelle_protocol::ids::DocId {
        let fields = json!({"title": title}).as_object().unwrap().clone();
        w.create(CreateDoc { kind: "offer".into(), fields, ..Default::default() }).unwrap().id
    }

    /// Small documents first, then the most recent; one entry per document
    /// however often it is queued; the queue survives a restart and goes
    /// with the peer.
    #[test]
    fn the_queue_orders_dedupes_persists_and_is_forgotten_with_the_peer() {
        let dir = tempfile::tempdir().unwrap();
        let peer = NodeId::from_bytes([9; 32]);
        let mut w = worker(&dir);
        let old_small = create(&mut w, "petite, ancienne");
        let big = create(&mut w, "grande");
        for v in 0..8 {
            let fields = json!({"description": format!("v{v}")}).as_object().unwrap().clone();
            w.update(big, UpdateDoc { fields, ..Default::default() }).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        let new_small = create(&mut w, "petite, récente");
        w.enqueue(peer, vec![(big, None), (old_small, None), (new_small, None), (old_small, Some(vec![[1; 32]]))])
            .unwrap();
        assert_eq!(w.queue_len(&peer), 3);
        let order: Vec<_> = w.store.queued(&peer, 10).unwrap().into_iter().map(|q| q.doc).collect();
        assert_eq!(order, vec![new_small, old_small, big]);
        // Queued whole once: a later request for part of it keeps it whole.
        assert_eq!(w.store.queued_doc(&peer, &old_small).unwrap().unwrap().their_heads, None);
        w.store.flush().unwrap();
        drop(w);

        let mut w = worker_again(&dir);
        assert_eq!(w.queue_len(&peer), 3, "the queue is on disk");
        w.remove_peer(peer).unwrap();
        assert_eq!(w.queue_len(&peer), 0);
        assert!(w.store.queued(&peer, 10).unwrap().is_empty());
    }

    fn worker_again(dir: &tempfile::TempDir) -> Worker<SledStore> {
        let home = Home::new(dir.path());
        let identity = crate::identity::load(&home).unwrap();
        Worker::new(SledStore::open(&home.store()).unwrap(), &identity).unwrap()
    }
}
