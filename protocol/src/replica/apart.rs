//! Agreeing to differ. When a node refuses part of what a peer sent of a
//! document for a reason that is not a fault — a change by a key revoked
//! since, one dated ahead, one of a role that may not write it — the two
//! would otherwise find the document different at every round and send it
//! again forever. Instead the refusing side proposes (`Differ`), the other
//! agrees (a `Differ` answer) if both hold the same roster, and both leave the
//! document out of their comparison while their states of it and the
//! roster stay what they were: a new change on either side brings it back,
//! and so does time ([`APART_FOR_MS`]; sooner for a change dated ahead,
//! whose date comes). `passerelle peer pending` lists such documents.

use std::collections::BTreeMap;

use crate::ids::{DocId, NodeId};
use crate::sync::audience::Apart;
use crate::sync::message::{MAX_ANNOUNCED, SyncMessage};
use crate::sync::session::{Session, refusal_keeps_apart};
use crate::xorset::Fingerprint;

use super::{DocSource, Millis, Replica};

/// How long two nodes leave a document apart before they try again.
pub const APART_FOR_MS: Millis = 6 * 60 * 60 * 1000;
/// The same for a change refused as dated ahead (its date comes soon) or
/// that the refusing node could not store (its disk may be freed).
pub const APART_AHEAD_FOR_MS: Millis = 10 * 60 * 1000;
/// Most documents left apart with one peer; beyond, refusals are sent
/// again at each round (as without agreement).
pub const MAX_APART_PER_PEER: usize = 10_000;
/// Proposals to one peer are gathered this long before they leave.
pub const DIFFER_DELAY_MS: Millis = 2_000;

fn lasts(code: &str) -> Millis {
    if matches!(code, "from_the_future" | "store_failed" | "cover_refused") { APART_AHEAD_FOR_MS } else { APART_FOR_MS }
}

impl Replica {
    /// Documents of which this node refused something `from` sent, for a
    /// reason that is not a fault: proposed to leave apart with it
    /// (`Differ`, gathered for [`DIFFER_DELAY_MS`]); they are, once it
    /// agrees under the same roster.
    pub(super) fn keep_apart(&mut self, now: Millis, from: NodeId, refused: Vec<(DocId, String)>) {
        let Some(roster) = self.roster.as_ref().map(|r| r.fingerprint()) else { return };
        let apart = self.apart.entry(from).or_default();
        let out = self.differ_out.entry(from).or_insert_with(|| (now, BTreeMap::new()));
        for (doc, code) in refused {
            if apart.len() >= MAX_APART_PER_PEER && !apart.contains_key(&doc) {
                continue;
            }
            let item = self.index.item(&doc);
            let proposal = Apart { item, since: now, code: code.clone(), refused_here: true, roster, agreed: false };
            apart.insert(doc, proposal);
            out.1.insert(doc, code);
        }
    }

    /// Sends the proposals gathered long enough (one message per peer and
    /// [`DIFFER_DELAY_MS`], so a catch-up full of refusals stays within the
    /// peer's request budget).
    pub(super) fn flush_differs(&mut self, now: Millis) {
        let Some(roster) = self.roster.as_ref().map(|r| r.fingerprint()) else { return };
        let due: Vec<NodeId> =
            self.differ_out.iter().filter(|(_, (since, _))| now - since >= DIFFER_DELAY_MS).map(|(p, _)| *p).collect();
        for peer in due {
            let Some((_, told)) = self.differ_out.remove(&peer) else { continue };
            if told.is_empty() || !self.is_ready(&peer) {
                continue;
            }
            tracing::info!(peer = %peer.short(), docs = told.len(), "refused part of some documents: proposing to differ");
            let told: Vec<(DocId, String)> = told.into_iter().collect();
            for chunk in told.chunks(MAX_ANNOUNCED) {
                self.send(
                    peer,
                    &SyncMessage::Differ {
                        answer: false,
                        roster_count: roster.count,
                        roster_fingerprint: roster.xor,
                        docs: chunk.to_vec(),
                    },
                );
            }
        }
    }

    /// When the next batch of proposals is due.
    pub(super) fn differ_wake(&self) -> Millis {
        self.differ_out.values().map(|(since, _)| since + DIFFER_DELAY_MS).min().unwrap_or(Millis::MAX)
    }

    /// `from` proposes to leave documents apart (it refused part of them),
    /// or answers this node's proposal. Under the same roster only. A
    /// proposal is agreed for documents held here, shared with it and with
    /// no part on its way to it, for the reasons that allow it (they leave
    /// its queue), and answered with those, every time (a copy sent before an agreement is
    /// refused and proposed again); an answer is never answered.
    pub(super) fn on_differ(
        &mut self,
        now: Millis,
        from: NodeId,
        answer: bool,
        theirs: Fingerprint,
        list: Vec<(DocId, String)>,
        docs: &mut impl DocSource,
    ) {
        let (Some(commune), Some(roster)) = (self.session(&from).and_then(Session::commune), &self.roster) else {
            return;
        };
        let roster_now = roster.fingerprint();
        if theirs != roster_now {
            // The refusal may rest on a statement one side lacks: no agreement
            // until the rosters agree (the next refusal proposes again).
            tracing::debug!(peer = %from.short(), "a proposal to differ under another roster: not agreed");
            return;
        }
        let in_flight = self.transfers.busy(&from);
        let apart = self.apart.entry(from).or_default();
        if answer {
            for (doc, _) in list {
                if let Some(a) = apart.get_mut(&doc)
                    && a.refused_here
                    && a.roster == roster_now
                {
                    a.agreed = true;
                }
            }
            return;
        }
        let mut agreed = Vec::new();
        for (doc, code) in list.into_iter().filter(|(_, code)| refusal_keeps_apart(code)) {
            let item = self.index.item(&doc);
            // Part of it on its way: that goes first, and is refused and
            // proposed again if it still must be.
            if item.is_none()
                || in_flight.contains(&doc)
                || !self.index.may_share(&doc, &commune, roster)
                || (apart.len() >= MAX_APART_PER_PEER && !apart.contains_key(&doc))
            {
                continue;
            }
            tracing::debug!(peer = %from.short(), doc = %doc, %code, "the peer refused part of a document: agreeing to differ");
            let entry =
                Apart { item, since: now, code: code.clone(), refused_here: false, roster: roster_now, agreed: true };
            apart.insert(doc, entry);
            agreed.push((doc, code));
        }
        if agreed.is_empty() {
            return;
        }
        // Not sent again: off its queue.
        let ids: Vec<DocId> = agreed.iter().map(|(d, _)| *d).collect();
        self.unqueue(from, &ids, docs);
        for chunk in agreed.chunks(MAX_ANNOUNCED) {
            self.send(
                from,
                &SyncMessage::Differ {
                    answer: true,
                    roster_count: roster_now.count,
                    roster_fingerprint: roster_now.xor,
                    docs: chunk.to_vec(),
                },
            );
        }
    }

    /// `from` lists documents in a round: it compares them again (its
    /// state moved, or its agreement lapsed), so the agreements this node
    /// made as their holder end; they are sent, refused and agreed again
    /// if they still must be.
    pub(super) fn peer_lists<'a>(&mut self, from: &NodeId, listed: impl Iterator<Item = &'a DocId>) {
        let Some(apart) = self.apart.get_mut(from) else { return };
        for doc in listed {
            if apart.get(doc).is_some_and(|a| !a.refused_here) {
                apart.remove(doc);
            }
        }
    }

    /// Agreements that ran their time are dropped (the next round compares
    /// those documents again), and those of peers no longer known.
    pub(super) fn expire_apart(&mut self, now: Millis) {
        for apart in self.apart.values_mut() {
            apart.retain(|_, a| now - a.since < lasts(&a.code));
        }
        let peers = &self.peers;
        self.apart.retain(|node, apart| !apart.is_empty() && peers.contains_key(node));
    }

    /// The agreements with `peer` that hold now (this node's state of the
    /// document and the roster are the agreed ones).
    pub(super) fn holding_apart(&self, peer: &NodeId) -> impl Iterator<Item = (&DocId, &Apart)> {
        let roster = self.roster.as_ref();
        self.apart
            .get(peer)
            .into_iter()
            .flatten()
            .filter(move |(doc, a)| roster.is_some_and(|r| a.holds(self.index.item(doc), r)))
    }

    /// The documents this node and `peer` leave apart now, with why.
    pub fn kept_apart(&self, peer: &NodeId) -> Vec<(DocId, Apart)> {
        self.holding_apart(peer).map(|(d, a)| (*d, a.clone())).collect()
    }

    /// How many documents this node and `peer` leave apart now.
    pub fn kept_apart_count(&self, peer: &NodeId) -> usize {
        self.holding_apart(peer).count()
    }
}
