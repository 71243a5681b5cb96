//! Agreeing to differ. When a node refuses part of what a peer sent of a
//! document for a reason that is not a fault — a change by a key revoked
//! since, one dated ahead, one of a role that may not write it — the two
//! would otherwise find the document different at every round and send it
//! again forever. Instead the refusing side tells the other (`Differ`),
//! and both leave the document out of their comparison while their states
//! of it stay what they were: a new change on either side brings it back,
//! and so does time ([`APART_FOR_MS`]; sooner for a change dated ahead,
//! whose date comes). `passerelle peer pending` lists such documents.

use std::collections::BTreeMap;

use crate::ids::{DocId, NodeId};
use crate::sync::audience::Apart;
use crate::sync::message::{MAX_ANNOUNCED, SyncMessage};
use crate::sync::session::Session;

use super::{DocSource, Millis, Replica};

/// How long two nodes leave a document apart before they try again.
pub const APART_FOR_MS: Millis = 6 * 60 * 60 * 1000;
/// The same for a change refused as dated ahead: its date comes soon.
pub const APART_AHEAD_FOR_MS: Millis = 10 * 60 * 1000;
/// Most documents left apart with one peer; beyond, refusals are sent
/// again at each round (as without agreement).
pub const MAX_APART_PER_PEER: usize = 10_000;

fn lasts(code: &str) -> Millis {
    if code == "from_the_future" { APART_AHEAD_FOR_MS } else { APART_FOR_MS }
}

impl Replica {
    /// Documents of which this node refused something `from` sent, for a
    /// reason that is not a fault: kept apart with it, and it is told.
    pub(super) fn keep_apart(&mut self, now: Millis, from: NodeId, refused: Vec<(DocId, String)>) {
        let mut told: BTreeMap<DocId, String> = BTreeMap::new();
        let apart = self.apart.entry(from).or_default();
        for (doc, code) in refused {
            if apart.len() >= MAX_APART_PER_PEER && !apart.contains_key(&doc) {
                continue;
            }
            let item = self.index.item(&doc);
            apart.insert(doc, Apart { item, since: now, code: code.clone(), refused_here: true });
            told.insert(doc, code);
        }
        if told.is_empty() {
            return;
        }
        tracing::info!(peer = %from.short(), docs = told.len(), "refused part of some documents: agreeing to differ");
        let told: Vec<(DocId, String)> = told.into_iter().collect();
        for chunk in told.chunks(MAX_ANNOUNCED) {
            self.send(from, &SyncMessage::Differ { docs: chunk.to_vec() });
        }
    }

    /// `from` refused part of these documents: those held here and shared
    /// with it are left apart (and leave its transfer queue).
    pub(super) fn on_differ(
        &mut self,
        now: Millis,
        from: NodeId,
        list: Vec<(DocId, String)>,
        docs: &mut impl DocSource,
    ) {
        let (Some(commune), Some(roster)) = (self.session(&from).and_then(Session::commune), &self.roster) else {
            return;
        };
        let apart = self.apart.entry(from).or_default();
        let mut unqueue = Vec::new();
        for (doc, code) in list {
            let Some(item) = self.index.item(&doc) else { continue };
            if !self.index.may_share(&doc, &commune, roster)
                || (apart.len() >= MAX_APART_PER_PEER && !apart.contains_key(&doc))
            {
                continue;
            }
            tracing::debug!(peer = %from.short(), doc = %doc, %code, "the peer refused part of a document: agreeing to differ");
            apart.insert(doc, Apart { item: Some(item), since: now, code, refused_here: false });
            unqueue.push(doc);
        }
        self.unqueue(from, &unqueue, docs);
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

    /// The documents this node and `peer` leave apart now (their state
    /// here is still the one agreed), with why.
    pub fn kept_apart(&self, peer: &NodeId) -> Vec<(DocId, Apart)> {
        self.apart
            .get(peer)
            .into_iter()
            .flatten()
            .filter(|(doc, a)| a.item == self.index.item(doc))
            .map(|(d, a)| (*d, a.clone()))
            .collect()
    }
}
