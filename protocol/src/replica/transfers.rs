//! Per-peer transfers: what reconciliation found a peer lacks waits in
//! the node's store (through [`DocSource`]) until the peer acknowledges
//! the frame that carried it.
//!
//! A backlog is not turned into frames all at once: the core hands out a
//! few frames at a time ([`TRANSFER_WINDOW`]) and builds the next ones as
//! acknowledgements come back, so memory stays bounded whatever the
//! backlog, and the order can favour small and recent documents. After a
//! cut (or a restart) the transfer resumes with what was not acknowledged,
//! without a new reconciliation round: summaries say how much is still
//! queued, and buckets are compared only once both queues are empty.

use std::collections::{HashMap, HashSet};

use crate::certificate::NodeCertificate;
use crate::envelope::{self, ChangeEnvelope};
use crate::header::SignedHeader;
use crate::ids::{DocId, NodeId};
use crate::sync::message::{DOCS_FRAME_TARGET_BYTES, SyncMessage};
use crate::sync::session::Session;

use super::io::{Heads, QueuedDoc, queue_priority};
use super::{DocSource, Millis, Replica};

/// Frames of a transfer handed out and not acknowledged yet: a little
/// more than the transport keeps in flight, so it never waits for the core.
pub const TRANSFER_WINDOW: usize = 6;

/// Smallest `Docs` frame built on purpose (a single change may be larger).
pub const MIN_FRAME_BYTES: usize = 4 * 1024;

/// Queue entries read from the store at a time.
const PAGE: usize = 64;

/// Transfer state kept in memory (the queues themselves are in the store).
#[derive(Debug, Default)]
pub(super) struct Transfers {
    peers: HashMap<NodeId, PeerQueue>,
    next_tag: u64,
}

#[derive(Debug, Default)]
struct PeerQueue {
    /// Documents queued in the store; counted on first use.
    len: Option<u64>,
    /// Frames handed out, by tag.
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
    /// Frames of transfers to `peer` not acknowledged yet.
    pub(super) fn frames_out(&self, peer: &NodeId) -> usize {
        self.peers.get(peer).map_or(0, |q| q.sending.values().map(|s| s.frames).sum())
    }

    /// A tag no frame carried yet.
    pub(super) fn new_tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// The peer was removed: nothing more is kept of its transfer.
    pub(super) fn forget(&mut self, peer: &NodeId) {
        self.peers.remove(peer);
    }

    /// The connection dropped: whatever was on its way is sent again.
    pub(super) fn connection_lost(&mut self, peer: &NodeId) {
        if let Some(q) = self.peers.get_mut(peer) {
            q.sending.clear();
        }
    }

    /// How many documents are queued for `peer`.
    pub(super) fn queue_len(&mut self, peer: &NodeId, docs: &mut impl DocSource) -> u64 {
        let q = self.peers.entry(*peer).or_default();
        *q.len.get_or_insert_with(|| docs.queue_len(peer))
    }

    fn adjust_len(&mut self, peer: &NodeId, added: u64, removed: u64, docs: &mut impl DocSource) {
        let n = self.queue_len(peer, docs);
        self.peers.entry(*peer).or_default().len = Some((n + added).saturating_sub(removed));
    }

    /// The documents a frame on its way to `peer` carries part of.
    pub(super) fn busy(&self, peer: &NodeId) -> HashSet<DocId> {
        self.peers
            .get(peer)
            .map(|q| q.sending.values().flat_map(|s| s.docs.iter().map(|(d, _)| d.doc)).collect())
            .unwrap_or_default()
    }
}

impl Replica {
    /// How many documents are queued for `peer` (as far as the core has counted).
    pub fn queued_for(&mut self, peer: &NodeId, docs: &mut impl DocSource) -> u64 {
        self.transfers.queue_len(peer, docs)
    }

    /// Certificates of the authors of `changes` that `headers` do not carry.
    pub(super) fn certificates_for(
        &self,
        changes: &[ChangeEnvelope],
        headers: &[SignedHeader],
    ) -> Vec<NodeCertificate> {
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
    pub(super) fn frame_target(&self, to: &NodeId) -> usize {
        let rate = self.peers.get(to).and_then(|p| p.link_bytes_per_s);
        // Under a send budget, a frame is at most a second of it.
        let rate = match (rate, self.config.peer_budget) {
            (Some(r), Some(b)) => Some(r.min(b)),
            (r, b) => r.or(b),
        };
        match rate {
            Some(rate) => (rate as usize).clamp(MIN_FRAME_BYTES, DOCS_FRAME_TARGET_BYTES),
            None => DOCS_FRAME_TARGET_BYTES / 4,
        }
    }

    /// Sends headers and changes in frames of bounded size, all tagged
    /// `tag` (`Push` frames when `live`, else `Docs`); returns how many
    /// frames left. Each frame is self-contained:
    /// it carries the header of every document it has changes of (frames
    /// travel on separate streams and may arrive in any order) and the
    /// certificates of their authors.
    pub(super) fn send_frames(
        &mut self,
        to: NodeId,
        mut headers: Vec<SignedHeader>,
        mut changes: Vec<ChangeEnvelope>,
        tag: Option<u64>,
        live: bool,
    ) -> usize {
        // The sending side enforces scopes: whatever asked for it, nothing
        // leaves for a peer outside the document's audience.
        let (Some(peer), Some(roster)) = (self.session(&to).and_then(Session::commune), &self.roster) else {
            return 0;
        };
        headers.retain(|h| self.index.may_share(&h.id(), &peer, roster));
        changes.retain(|c| self.index.may_share(&c.doc, &peer, roster));
        let target = self.frame_target(&to);
        // A header's id is a hash of it: computed once.
        let header_of: HashMap<DocId, SignedHeader> = headers.into_iter().map(|h| (h.id(), h)).collect();
        let mut frames = Vec::new();
        let mut start = 0;
        while start < changes.len() {
            let (mut end, mut size) = (start, 0);
            let mut frame_docs: HashSet<DocId> = HashSet::new();
            while end < changes.len() {
                let change = &changes[end];
                let new_doc = !frame_docs.contains(&change.doc);
                let len = change.change.len() + 140 + if new_doc { 400 } else { 0 };
                if size + len > target && end > start {
                    break;
                }
                frame_docs.insert(change.doc);
                size += len;
                end += 1;
            }
            // A frame is checked alone: it ends where every change in it
            // without a signature of its own is covered within it.
            let end = envelope::covered_cut(&changes, start, end);
            let mut frame_changes = changes[start..end].to_vec();
            // A stored change whose cover cannot travel with it (the frame
            // would pass the wire's bounds) stays here: sent, it would be
            // refused as a fault of ours. (What `cover_runs` leaves out is
            // covered by construction: only stored ones are looked at.)
            let stored_bare = frame_changes.iter().any(|c| c.signature.is_none());
            let bare = if stored_bare { envelope::uncovered(&frame_changes) } else { Vec::new() };
            envelope::cover_runs(&mut frame_changes);
            if !bare.is_empty() {
                tracing::warn!(changes = bare.len(), "changes held back: their cover does not fit in a frame");
                let mut k = 0;
                frame_changes.retain(|_| {
                    k += 1;
                    bare.binary_search(&(k - 1)).is_err()
                });
            }
            let mut in_frame = HashSet::new();
            let frame_headers: Vec<SignedHeader> = frame_changes
                .iter()
                .filter(|c| in_frame.insert(c.doc))
                .filter_map(|c| header_of.get(&c.doc).cloned())
                .collect();
            frames.push((frame_headers, frame_changes));
            start = end;
        }
        // Headers of documents without changes here still travel once.
        let with_changes: HashSet<DocId> = changes.iter().map(|c| c.doc).collect();
        let mut alone: Vec<(DocId, SignedHeader)> =
            header_of.into_iter().filter(|(id, _)| !with_changes.contains(id)).collect();
        alone.sort_by_key(|(id, _)| *id);
        let alone: Vec<SignedHeader> = alone.into_iter().map(|(_, h)| h).collect();
        if !alone.is_empty() || frames.is_empty() {
            match frames.last_mut() {
                Some((h, _)) => h.extend(alone),
                None => frames.push((alone, Vec::new())),
            }
        }
        let mut sent = 0;
        for (headers, changes) in frames {
            if headers.is_empty() && changes.is_empty() {
                continue;
            }
            let certificates = self.certificates_for(&changes, &headers);
            let msg = if live {
                SyncMessage::Push { certificates, headers, changes }
            } else {
                SyncMessage::Docs { certificates, headers, changes }
            };
            self.send_tagged(to, &msg, tag);
            sent += 1;
        }
        sent
    }

    /// Queues documents for `peer`: whole (`None`) or what the given heads
    /// do not cover. A document queued already keeps one entry.
    pub(super) fn enqueue(&mut self, peer: NodeId, list: Vec<(DocId, Option<Heads>)>, docs: &mut impl DocSource) {
        // Counted before anything is written, so the count stays exact.
        self.transfers.queue_len(&peer, docs);
        let mut seen = HashSet::new();
        let (mut put, mut removed) = (Vec::new(), Vec::new());
        let mut added = 0;
        for (doc, heads) in list {
            if !seen.insert(doc) {
                continue;
            }
            let Some((changes, updated_ms)) = docs.doc_size(&doc) else { continue };
            let mut their_heads = heads;
            match docs.queued(&peer, &doc) {
                Some(old) => {
                    if old.their_heads.is_none() {
                        their_heads = None;
                    }
                    removed.push(old);
                }
                None => added += 1,
            }
            put.push(QueuedDoc { priority: queue_priority(changes, updated_ms), doc, their_heads });
        }
        if put.is_empty() {
            return;
        }
        docs.dequeue(&peer, removed);
        docs.enqueue(&peer, put);
        self.transfers.adjust_len(&peer, added, 0, docs);
        self.fill(peer, docs);
    }

    /// Hands out the next frames of the transfer to `peer`, up to
    /// [`TRANSFER_WINDOW`], if a session with it is ready.
    pub(super) fn fill(&mut self, peer: NodeId, docs: &mut impl DocSource) {
        if !self.is_ready(&peer) {
            return;
        }
        while self.transfers.frames_out(&peer) < TRANSFER_WINDOW && self.transfers.queue_len(&peer, docs) > 0 {
            let busy = self.transfers.busy(&peer);
            let page: Vec<QueuedDoc> =
                docs.queue_front(&peer, busy.len() + PAGE).into_iter().filter(|q| !busy.contains(&q.doc)).collect();
            if page.is_empty() {
                break;
            }
            let target = self.frame_target(&peer);
            let (mut headers, mut changes, mut taken, mut size) = (Vec::new(), Vec::new(), Vec::new(), 0);
            for q in page {
                let Some(header) = docs.header(&q.doc) else {
                    taken.push((q, None));
                    continue;
                };
                let more = docs.changes_for(&q.doc, q.their_heads.as_deref());
                let len = 400 + more.iter().map(|c| c.change.len() + 140).sum::<usize>();
                if len > target {
                    if size > 0 {
                        // A large document goes alone, in chunks.
                        break;
                    }
                    let (chunk, next_heads) = chunk(&q, more, target, docs);
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
            let tag = self.transfers.new_tag();
            let frames = self.send_frames(peer, headers, changes, Some(tag), false);
            if frames == 0 {
                // Nothing of it may (or can) be sent any more: off the queue.
                self.dequeue(peer, taken.into_iter().map(|(q, _)| (q, None)).collect(), docs);
                continue;
            }
            self.transfers.peers.entry(peer).or_default().sending.insert(tag, Sending { docs: taken, frames });
        }
    }

    /// Takes documents off a peer's queue that it should not get after all.
    pub(super) fn unqueue(&mut self, peer: NodeId, ids: &[DocId], docs: &mut impl DocSource) {
        let list = ids.iter().filter_map(|id| docs.queued(&peer, id)).map(|q| (q, None)).collect();
        self.dequeue(peer, list, docs);
    }

    /// Takes acknowledged documents off the queue, or, for a chunk of a
    /// large one, moves its entry on to the peer's new heads.
    fn dequeue(&mut self, peer: NodeId, list: Vec<(QueuedDoc, Option<Heads>)>, docs: &mut impl DocSource) {
        self.transfers.queue_len(&peer, docs);
        let (mut gone, mut moved) = (Vec::new(), Vec::new());
        let mut removed = 0;
        for (d, next_heads) in list {
            // Queued again since it left (with newer heads): that entry stays.
            if docs.queued(&peer, &d.doc).as_ref() != Some(&d) {
                continue;
            }
            let (doc, priority) = (d.doc, d.priority);
            gone.push(d);
            match next_heads {
                Some(heads) => moved.push(QueuedDoc { priority, doc, their_heads: Some(heads) }),
                None => removed += 1,
            }
        }
        if gone.is_empty() {
            return;
        }
        docs.dequeue(&peer, gone);
        docs.enqueue(&peer, moved);
        self.transfers.adjust_len(&peer, 0, removed, docs);
    }

    /// The peer acknowledged a tagged frame; once every frame of its batch
    /// arrived, the batch leaves the queue. When the queue is empty, a
    /// round compares the sets at once.
    pub fn message_delivered(&mut self, now: Millis, peer: NodeId, tag: u64, docs: &mut impl DocSource) {
        if let Some(node) = self.unlinking.remove(&tag) {
            self.push(super::Output::Forget { node });
            return;
        }
        let Some(q) = self.transfers.peers.get_mut(&peer) else { return };
        let Some(sending) = q.sending.get_mut(&tag) else { return };
        sending.frames = sending.frames.saturating_sub(1);
        if sending.frames > 0 {
            return;
        }
        let done = q.sending.remove(&tag).map(|s| s.docs).unwrap_or_default();
        self.dequeue(peer, done, docs);
        self.fill(peer, docs);
        if self.transfers.queue_len(&peer, docs) == 0 && self.transfers.frames_out(&peer) == 0 {
            tracing::debug!(peer = %peer.short(), "transfer complete");
            self.start_round(now, peer, docs);
        }
    }

    /// A tagged frame could not be delivered (the request failed, or the
    /// connection was gone): its batch goes out again with the next
    /// delivery, the next connection or the next round, not at once (the
    /// link may be down).
    pub fn message_lost(&mut self, _now: Millis, peer: NodeId, tag: u64) {
        if let Some(node) = self.unlinking.remove(&tag) {
            self.push(super::Output::Forget { node });
            return;
        }
        if let Some(q) = self.transfers.peers.get_mut(&peer) {
            q.sending.remove(&tag);
        }
    }
}

/// The first chunk of a document too large for one frame: its changes the
/// peer lacks in causal order, as many as fit in `target` (at least one),
/// and the peer's heads once they are in (`None` if this chunk is all of
/// it). The queue entry moves to those heads when the chunk is
/// acknowledged, so a cut resumes after the last chunk that arrived.
fn chunk(
    q: &QueuedDoc,
    all: Vec<ChangeEnvelope>,
    target: usize,
    docs: &mut impl DocSource,
) -> (Vec<ChangeEnvelope>, Option<Heads>) {
    let base: Heads = q.their_heads.clone().unwrap_or_default();
    let order = docs.missing(&q.doc, &base);
    if order.is_empty() {
        return (all, None);
    }
    let mut taken = Vec::new();
    let mut size = 0;
    for m in &order {
        let len = m.envelope.change.len() + 140;
        if size + len > target && !taken.is_empty() {
            break;
        }
        size += len;
        taken.push(m);
    }
    // The chunk is checked alone: it ends where its runs are covered.
    let envelopes: Vec<ChangeEnvelope> = order.iter().map(|m| m.envelope.clone()).collect();
    let end = envelope::covered_cut(&envelopes, 0, taken.len());
    let taken: Vec<_> = order.iter().take(end).collect();
    if taken.len() >= order.len() {
        return (envelopes, None);
    }
    // The peer's heads after this chunk: of its heads and the chunk's
    // changes, those no change of the chunk depends on.
    let deps: HashSet<[u8; 32]> = taken.iter().flat_map(|m| m.deps.iter().copied()).collect();
    let mut heads: Heads = base.into_iter().chain(taken.iter().map(|m| m.hash)).filter(|h| !deps.contains(h)).collect();
    heads.sort_unstable();
    heads.dedup();
    (taken.into_iter().map(|m| m.envelope.clone()).collect(), Some(heads))
}
