//! Live dissemination without the duplicates of flooding: Plumtree's eager
//! push along a tree, lazy announcements elsewhere, pulls on demand
//! (Leitão, Pereira, Rodrigues, 2007; as iroh-gossip does).
//!
//! Every link starts *eager*: what this node stores (a local write, or
//! material a peer pushed) is pushed at once (`Push`) to its eager peers
//! and announced (`Have`: document ids with heads, statement hashes) to
//! the others, in small batches. A peer that receives a push it already
//! held answers `Prune`, and the link becomes lazy on both sides: the
//! eager links settle into a spanning tree, and each item crosses each
//! link once. A peer that hears of something it still lacks a while after
//! an announcement asks for it (`Graft`, with its own heads), which also
//! makes that link eager again: a broken tree mends itself where it broke.
//!
//! Documents of a partnership are never on the tree: they go to the peers
//! that may hold them, always pushed. Per-link reconciliation (summaries,
//! buckets, items) stays underneath as the repair of last resort.

use std::collections::BTreeMap;

use crate::envelope::ChangeEnvelope;
use crate::header::SignedHeader;
use crate::ids::{DocId, NodeId};
use crate::network::roster::short_hash;
use crate::sync::audience::Audience;
use crate::sync::message::{Item, MAX_ANNOUNCED, SyncMessage};
use crate::sync::session::Session;

use super::io::{Announcement, Heads};
use super::{DocSource, Millis, Replica};

/// How long announcements wait to go out together.
pub const HAVE_DELAY_MS: Millis = 400;
/// How long after an announcement a node waits for the eager push before
/// it asks (a push on a slow path may still be on its way).
pub const GRAFT_AFTER_MS: Millis = 3_000;
/// Most items a node waits for at a time (beyond, reconciliation repairs).
pub const MAX_WANTED: usize = 10_000;

/// Announcements waiting to go to one lazy peer.
#[derive(Debug, Default)]
pub(super) struct HaveBatch {
    since: Millis,
    docs: Vec<Item>,
    statements: Vec<[u8; 16]>,
}

/// Something announced that this node lacks.
#[derive(Debug)]
pub(super) struct Want {
    heads: Heads,
    /// Who announced it, in order: asked one after the other.
    announcers: Vec<NodeId>,
    deadline: Millis,
}

/// What the gossip layer keeps.
#[derive(Debug, Default)]
pub(super) struct Gossip {
    have_out: BTreeMap<NodeId, HaveBatch>,
    wanted: BTreeMap<DocId, Want>,
    wanted_statements: BTreeMap<[u8; 16], Want>,
    /// Pushes that brought only duplicates, and prunes sent (metrics).
    pub(super) prunes: u64,
    /// Grafts sent.
    pub(super) grafts: u64,
}

impl Replica {
    fn is_eager(&self, peer: &NodeId) -> bool {
        self.links.get(peer).is_some_and(|l| l.eager)
    }

    pub(super) fn set_eager(&mut self, peer: &NodeId, eager: bool) {
        if let Some(l) = self.links.get_mut(peer) {
            l.eager = eager;
        }
    }

    fn announce(&mut self, now: Millis, peer: NodeId, docs: Vec<Item>, statements: Vec<[u8; 16]>) {
        let batch =
            self.gossip.have_out.entry(peer).or_insert_with(|| HaveBatch { since: now, ..HaveBatch::default() });
        for d in docs {
            if let Some(old) = batch.docs.iter_mut().find(|(id, _)| *id == d.0) {
                old.1 = d.1;
            } else if batch.docs.len() < MAX_ANNOUNCED {
                batch.docs.push(d);
            }
        }
        for s in statements {
            if batch.statements.len() < MAX_ANNOUNCED && !batch.statements.contains(&s) {
                batch.statements.push(s);
            }
        }
    }

    /// Passes on what a flushed batch stored: statements first, then
    /// changes, pushed to eager peers and announced to lazy ones.
    pub(super) fn disseminate(&mut self, now: Millis, announcements: Vec<Announcement>) {
        let ready = self.ready_peers();
        for (from, statements) in std::mem::take(&mut self.roster_news) {
            for peer in ready.iter().copied().filter(|p| Some(*p) != from) {
                if self.is_eager(&peer) {
                    self.send(peer, &SyncMessage::Roster { statements: statements.clone(), complete: false });
                } else {
                    let hashes = statements.iter().map(|s| short_hash(&s.hash())).collect();
                    self.announce(now, peer, Vec::new(), hashes);
                }
                self.reset_round(now, &peer);
            }
        }
        for a in announcements {
            let docs: BTreeMap<DocId, Option<Audience>> =
                a.changes.iter().map(|c| (c.doc, self.index.audience(&c.doc).cloned())).collect();
            for peer in ready.iter().copied().filter(|p| Some(*p) != a.from) {
                let Some(commune) = self.session(&peer).and_then(Session::commune) else { continue };
                let Some(roster) = &self.roster else { continue };
                let (mut push, mut lazy): (Vec<DocId>, Vec<Item>) = (Vec::new(), Vec::new());
                let eager = self.is_eager(&peer);
                for (doc, audience) in &docs {
                    if !audience.as_ref().is_some_and(|a| a.admits(&commune, roster)) {
                        continue;
                    }
                    // Partnership documents are never on the tree: pushed to whoever may hold them.
                    if eager || *audience != Some(Audience::Network) {
                        push.push(*doc);
                    } else if let Some(heads) = self.index.heads(doc) {
                        lazy.push((*doc, heads.to_vec()));
                    }
                }
                if push.is_empty() && lazy.is_empty() {
                    continue;
                }
                self.reset_round(now, &peer);
                if !lazy.is_empty() {
                    self.announce(now, peer, lazy, Vec::new());
                }
                if !push.is_empty() {
                    let headers: Vec<SignedHeader> =
                        a.new_docs.iter().filter(|h| push.contains(&h.id())).cloned().collect();
                    let changes: Vec<ChangeEnvelope> =
                        a.changes.iter().filter(|c| push.contains(&c.doc)).cloned().collect();
                    self.send_frames(peer, headers, changes, None, true);
                }
            }
        }
    }

    /// Sends announcements that waited long enough.
    pub(super) fn flush_haves(&mut self, now: Millis) {
        let due: Vec<NodeId> =
            self.gossip.have_out.iter().filter(|(_, b)| now - b.since >= HAVE_DELAY_MS).map(|(p, _)| *p).collect();
        for peer in due {
            let Some(batch) = self.gossip.have_out.remove(&peer) else { continue };
            if self.is_ready(&peer) {
                self.send(peer, &SyncMessage::Have { docs: batch.docs, statements: batch.statements });
            }
        }
    }

    /// The earliest time an announcement batch or a wanted item is due.
    pub(super) fn gossip_wake(&self) -> Millis {
        let haves = self.gossip.have_out.values().map(|b| b.since + HAVE_DELAY_MS).min();
        let wants = self.gossip.wanted.values().chain(self.gossip.wanted_statements.values()).map(|w| w.deadline).min();
        haves.into_iter().chain(wants).min().unwrap_or(Millis::MAX)
    }

    /// Handles a gossip message from a ready peer.
    pub(super) fn on_gossip(&mut self, now: Millis, from: NodeId, msg: SyncMessage, docs: &mut impl DocSource) {
        match msg {
            SyncMessage::Push { certificates, headers, changes } => {
                for cert in certificates.iter().chain(headers.iter().map(|h| &h.certificate)) {
                    self.learn_certificate(cert.clone());
                }
                self.reset_round(now, &from);
                if !headers.is_empty() || !changes.is_empty() {
                    self.push(super::Output::Ingest {
                        from,
                        batch: super::IngestBatch { headers, changes, live: true },
                    });
                }
            }
            SyncMessage::Prune => {
                self.set_eager(&from, false);
                // Never left without a link on the tree.
                self.keep_on_tree();
            }
            SyncMessage::Have { docs: announced, statements } => self.on_have(now, from, announced, statements, docs),
            SyncMessage::Graft { docs: wanted, statements } => {
                self.set_eager(&from, true);
                if !wanted.is_empty() {
                    self.enqueue(from, wanted.into_iter().map(|(d, h)| (d, Some(h))).collect(), docs);
                }
                if !statements.is_empty()
                    && let Some(roster) = &self.roster
                {
                    let found: Vec<_> =
                        roster.statements().filter(|s| statements.contains(&short_hash(&s.hash()))).cloned().collect();
                    if !found.is_empty() {
                        self.send(from, &SyncMessage::Roster { statements: found, complete: false });
                    }
                }
            }
            SyncMessage::Pulses { chains, pulses } => self.on_pulses(now, from, chains, pulses, docs),
            SyncMessage::Unlink => self.on_unlink(from),
            SyncMessage::Routes { hops } => self.on_routes(now, from, hops),
            SyncMessage::BeatsWanted { nodes } => self.on_beats_wanted(now, from, nodes, docs),
            SyncMessage::Differ { answer, roster_count, roster_fingerprint, docs: list } => {
                let roster = crate::xorset::Fingerprint { count: roster_count, xor: roster_fingerprint };
                self.on_differ(now, from, answer, roster, list, docs);
            }
            _ => {}
        }
    }

    fn on_have(
        &mut self,
        now: Millis,
        from: NodeId,
        announced: Vec<Item>,
        statements: Vec<[u8; 16]>,
        docs: &mut impl DocSource,
    ) {
        for (doc, heads) in announced {
            if self.index.heads(&doc).is_some_and(|h| same(h, &heads)) || heads.iter().all(|h| docs.has_change(h)) {
                continue;
            }
            if let Some(w) = self.gossip.wanted.get_mut(&doc) {
                if !w.announcers.contains(&from) {
                    w.announcers.push(from);
                }
                continue;
            }
            if self.gossip.wanted.len() < MAX_WANTED {
                let deadline = now + GRAFT_AFTER_MS;
                self.gossip.wanted.insert(doc, Want { heads, announcers: vec![from], deadline });
            }
        }
        for s in statements {
            if self.roster.as_ref().is_some_and(|r| r.has_short_hash(&s)) {
                continue;
            }
            let room = self.gossip.wanted_statements.len() < MAX_WANTED;
            match self.gossip.wanted_statements.get_mut(&s) {
                Some(w) if !w.announcers.contains(&from) => w.announcers.push(from),
                Some(_) => {}
                None if room => {
                    let deadline = now + GRAFT_AFTER_MS;
                    self.gossip
                        .wanted_statements
                        .insert(s, Want { heads: Vec::new(), announcers: vec![from], deadline });
                }
                None => {}
            }
        }
    }

    /// Asks for what was announced and has not come: from the first
    /// announcer still connected, then the next one.
    pub(super) fn graft_due(&mut self, now: Millis, docs: &mut impl DocSource) {
        let mut asks: BTreeMap<NodeId, (Vec<Item>, Vec<[u8; 16]>)> = BTreeMap::new();
        let due: Vec<DocId> = self.gossip.wanted.iter().filter(|(_, w)| w.deadline <= now).map(|(d, _)| *d).collect();
        for doc in due {
            let Some(mut w) = self.gossip.wanted.remove(&doc) else { continue };
            if w.heads.iter().all(|h| docs.has_change(h)) {
                continue;
            }
            while let Some(peer) = (!w.announcers.is_empty()).then(|| w.announcers.remove(0)) {
                if self.is_ready(&peer) {
                    let mine = self.index.heads(&doc).map(<[[u8; 32]]>::to_vec).unwrap_or_default();
                    asks.entry(peer).or_default().0.push((doc, mine));
                    w.deadline = now + GRAFT_AFTER_MS;
                    if !w.announcers.is_empty() {
                        self.gossip.wanted.insert(doc, w);
                    }
                    break;
                }
            }
        }
        let due: Vec<[u8; 16]> =
            self.gossip.wanted_statements.iter().filter(|(_, w)| w.deadline <= now).map(|(s, _)| *s).collect();
        for s in due {
            let Some(mut w) = self.gossip.wanted_statements.remove(&s) else { continue };
            if self.roster.as_ref().is_some_and(|r| r.has_short_hash(&s)) {
                continue;
            }
            while let Some(peer) = (!w.announcers.is_empty()).then(|| w.announcers.remove(0)) {
                if self.is_ready(&peer) {
                    asks.entry(peer).or_default().1.push(s);
                    w.deadline = now + GRAFT_AFTER_MS;
                    if !w.announcers.is_empty() {
                        self.gossip.wanted_statements.insert(s, w);
                    }
                    break;
                }
            }
        }
        for (peer, (docs, statements)) in asks {
            self.gossip.grafts += 1;
            self.set_eager(&peer, true);
            self.send(peer, &SyncMessage::Graft { docs, statements });
        }
    }

    /// A live push brought nothing new: it came by another path too, so
    /// this link need not carry pushes (Plumtree's prune).
    pub(super) fn maybe_prune(&mut self, from: NodeId, live: bool, applied: u64, duplicates: u64, refused: usize) {
        if live && applied == 0 && duplicates > 0 && refused == 0 && self.is_eager(&from) {
            self.gossip.prunes += 1;
            self.set_eager(&from, false);
            self.send(from, &SyncMessage::Prune);
        }
    }

    /// A link went down: when no eager link is left, every other link
    /// becomes eager again (and tells its peer), so this node stays on
    /// the tree.
    pub(super) fn keep_on_tree(&mut self) {
        let ready = self.ready_peers();
        if ready.is_empty() || ready.iter().any(|p| self.is_eager(p)) {
            return;
        }
        for peer in ready {
            self.set_eager(&peer, true);
            self.send(peer, &SyncMessage::Graft { docs: Vec::new(), statements: Vec::new() });
        }
    }
}

fn same(a: &[[u8; 32]], b: &[[u8; 32]]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_unstable();
    b.sort_unstable();
    a == b
}
