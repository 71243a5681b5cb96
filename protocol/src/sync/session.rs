//! The per-peer sync state machine.
//!
//! A [`Session`] is created when a connection to a peer is up. Its inputs
//! are named for what happened ([`Session::start_round`] on connection and on
//! each anti-entropy tick, [`Session::on_message`] for each message received);
//! its outputs are [`Effect`]s the caller carries out: send a message, push
//! documents or changes, ingest what arrived, note that the peer is in sync,
//! or drop the peer. It reads the local set through [`LocalSet`] and does no
//! I/O, so it runs the same over libp2p and in the deterministic simulation.

use std::collections::HashMap;

use automerge::{Automerge, ChangeHash, ReadDoc};

use super::fingerprint::{BUCKETS, BucketPrint, SetFingerprints};
use super::message::{Item, SyncMessage};
use crate::certificate::NodeCertificate;
use crate::envelope::ChangeEnvelope;
use crate::header::SignedHeader;
use crate::ids::{CommuneId, DocId, NodeId};

/// Protocol faults tolerated from a peer before it is disconnected.
pub const MAX_FAULTS: u32 = 3;
/// Messages kept while waiting for the peer's hello: messages travel on
/// separate streams, so one may overtake the hello.
pub const MAX_EARLY_MESSAGES: usize = 16;

/// What a session needs to know of the local documents shared with the peer.
pub trait LocalSet {
    /// Fingerprints of the shared set.
    fn fingerprints(&self) -> &SetFingerprints;
    /// The shared documents of one bucket, with their heads.
    fn items(&self, bucket: u8) -> Vec<Item>;
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send this message to the peer.
    Send(SyncMessage),
    /// Push every shared document of these buckets: the peer has none.
    PushBuckets(Vec<u8>),
    /// Push these documents whole: the peer lacks them.
    PushDocs(Vec<DocId>),
    /// Push, for each document, the changes the peer's heads do not cover.
    PushMissing(Vec<(DocId, Vec<[u8; 32]>)>),
    /// Verify and store what the peer sent.
    Ingest {
        /// Certificates.
        certificates: Vec<NodeCertificate>,
        /// Headers.
        headers: Vec<SignedHeader>,
        /// Changes.
        changes: Vec<ChangeEnvelope>,
    },
    /// The peer's shared set equals ours.
    InSync,
    /// The peer broke the protocol: log the reason, count it.
    Fault(String),
    /// Too many faults: close the connection.
    Disconnect(String),
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the peer's certificate.
    AwaitingHello,
    /// The peer is identified.
    Ready,
}

/// Sync state for one connected peer.
#[derive(Debug, Clone)]
pub struct Session {
    remote: NodeId,
    phase: Phase,
    commune: Option<CommuneId>,
    faults: u32,
    early: Vec<SyncMessage>,
    /// Reconciliation rounds started.
    pub rounds: u64,
    /// Rounds that ended with equal summaries.
    pub in_sync_rounds: u64,
}

impl Session {
    /// A session with the peer authenticated (by the transport) as `remote`.
    pub fn new(remote: NodeId) -> Self {
        Self {
            remote,
            phase: Phase::AwaitingHello,
            commune: None,
            faults: 0,
            early: Vec::new(),
            rounds: 0,
            in_sync_rounds: 0,
        }
    }

    /// The first message to send on a new connection.
    pub fn hello(certificate: &NodeCertificate) -> SyncMessage {
        SyncMessage::Hello { certificate: certificate.clone() }
    }

    /// Where the session stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The peer's commune, once its certificate was checked.
    pub fn commune(&self) -> Option<CommuneId> {
        self.commune
    }

    /// Starts a reconciliation round: on connection (after hello) and on
    /// each anti-entropy tick.
    pub fn start_round(&mut self, local: &impl LocalSet) -> Vec<Effect> {
        if self.phase != Phase::Ready {
            return Vec::new();
        }
        self.rounds += 1;
        let total = local.fingerprints().total();
        vec![Effect::Send(SyncMessage::Summary { count: total.count, fingerprint: total.xor })]
    }

    /// Counts a fault found by the caller (e.g. changes that failed
    /// verification); returns a disconnect once the peer reached [`MAX_FAULTS`].
    pub fn penalise(&mut self, reason: String) -> Vec<Effect> {
        self.fault(reason)
    }

    fn fault(&mut self, reason: String) -> Vec<Effect> {
        self.faults += 1;
        if self.faults >= MAX_FAULTS {
            vec![
                Effect::Fault(reason.clone()),
                Effect::Disconnect(format!("{} protocol faults, last: {reason}", self.faults)),
            ]
        } else {
            vec![Effect::Fault(reason)]
        }
    }

    /// Handles a message from the peer.
    pub fn on_message(&mut self, msg: SyncMessage, local: &impl LocalSet) -> Vec<Effect> {
        match (self.phase, msg) {
            (_, SyncMessage::Hello { certificate }) => {
                if certificate.node != self.remote {
                    return self.fault(format!(
                        "hello certifies node {} but the connection is from {}",
                        certificate.node.short(),
                        self.remote.short()
                    ));
                }
                if certificate.verify().is_err() {
                    return self.fault("hello carries a certificate that does not verify".into());
                }
                let first = self.phase == Phase::AwaitingHello;
                self.phase = Phase::Ready;
                self.commune = Some(certificate.commune);
                let mut out =
                    vec![Effect::Ingest { certificates: vec![certificate], headers: vec![], changes: vec![] }];
                if first {
                    out.extend(self.start_round(local));
                    for early in std::mem::take(&mut self.early) {
                        out.extend(self.on_message(early, local));
                    }
                }
                out
            }
            (Phase::AwaitingHello, other) => {
                if self.early.len() < MAX_EARLY_MESSAGES {
                    self.early.push(other);
                    Vec::new()
                } else {
                    self.fault(format!("{} messages before hello", MAX_EARLY_MESSAGES + 1))
                }
            }
            (Phase::Ready, SyncMessage::Summary { count, fingerprint }) => {
                let mine = local.fingerprints().total();
                if mine.count == count && mine.xor == fingerprint {
                    self.in_sync_rounds += 1;
                    vec![Effect::InSync]
                } else {
                    vec![Effect::Send(SyncMessage::Buckets { buckets: local.fingerprints().bucket_prints() })]
                }
            }
            (Phase::Ready, SyncMessage::Buckets { buckets }) => {
                if buckets.len() != BUCKETS {
                    return self.fault(format!("{} buckets instead of {BUCKETS}", buckets.len()));
                }
                let mine = local.fingerprints().buckets();
                let mut push_all = Vec::new();
                let mut list = Vec::new();
                for (i, (m, t)) in mine.iter().zip(&buckets).enumerate() {
                    if BucketPrint::from(m) == *t || m.count == 0 {
                        // Equal, or we have nothing there: the peer pushes to us.
                        continue;
                    }
                    let bucket = i as u8;
                    if t.count == 0 {
                        push_all.push(bucket);
                    } else {
                        list.push((bucket, local.items(bucket)));
                    }
                }
                let mut out = Vec::new();
                if !push_all.is_empty() {
                    out.push(Effect::PushBuckets(push_all));
                }
                if !list.is_empty() {
                    out.push(Effect::Send(SyncMessage::Items { buckets: list }));
                }
                out
            }
            (Phase::Ready, SyncMessage::Items { buckets }) => {
                let mut push_docs = Vec::new();
                let mut push_missing = Vec::new();
                for (bucket, theirs) in buckets {
                    let theirs: HashMap<DocId, Vec<[u8; 32]>> = theirs.into_iter().collect();
                    for (doc, heads) in local.items(bucket) {
                        match theirs.get(&doc) {
                            None => push_docs.push(doc),
                            Some(their_heads) if !same_heads(their_heads, &heads) => {
                                push_missing.push((doc, their_heads.clone()))
                            }
                            Some(_) => {}
                        }
                    }
                }
                let mut out = Vec::new();
                if !push_docs.is_empty() {
                    out.push(Effect::PushDocs(push_docs));
                }
                if !push_missing.is_empty() {
                    out.push(Effect::PushMissing(push_missing));
                }
                out
            }
            (Phase::Ready, SyncMessage::Docs { certificates, headers, changes }) => {
                vec![Effect::Ingest { certificates, headers, changes }]
            }
        }
    }
}

fn same_heads(a: &[[u8; 32]], b: &[[u8; 32]]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}

/// The changes of `doc` that a peer whose heads are `their_heads` may lack:
/// everything not in the history of the heads we know of. Heads we do not
/// know (the peer is ahead there) are ignored, so the answer may include a
/// few changes the peer has; receivers skip duplicates.
pub fn missing_changes(doc: &Automerge, their_heads: &[[u8; 32]]) -> Vec<ChangeHash> {
    let known: Vec<ChangeHash> =
        their_heads.iter().map(|h| ChangeHash(*h)).filter(|h| doc.get_change_by_hash(h).is_some()).collect();
    doc.get_changes(&known).iter().map(|c| c.hash()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;
    use crate::sync::fingerprint::item_hash;

    struct Set {
        fps: SetFingerprints,
        docs: Vec<Item>,
    }

    impl Set {
        fn new(docs: Vec<Item>) -> Self {
            let mut fps = SetFingerprints::default();
            for (d, h) in &docs {
                fps.update(d, None, &item_hash(d, h));
            }
            Self { fps, docs }
        }
    }

    impl LocalSet for Set {
        fn fingerprints(&self) -> &SetFingerprints {
            &self.fps
        }
        fn items(&self, bucket: u8) -> Vec<Item> {
            self.docs.iter().filter(|(d, _)| d.as_bytes()[0] == bucket).cloned().collect()
        }
    }

    fn ready(seed: u8) -> (Session, NodeCertificate) {
        let node = SecretKey::from_seed([seed; 32]);
        let cert = NodeCertificate::issue(&SecretKey::from_seed([seed + 100; 32]), node.node_id(), 0);
        (Session::new(node.node_id()), cert)
    }

    #[test]
    fn messages_that_overtake_the_hello_are_kept() {
        let set = Set::new(vec![(DocId::from_bytes([1; 32]), vec![[1; 32]])]);
        let (mut s, cert) = ready(1);
        let total = set.fingerprints().total();
        assert!(s.on_message(SyncMessage::Summary { count: total.count, fingerprint: total.xor }, &set).is_empty());
        let out = s.on_message(Session::hello(&cert), &set);
        assert_eq!(out.last(), Some(&Effect::InSync), "{out:?}");
    }

    #[test]
    fn equal_sets_are_in_sync_after_one_summary() {
        let set = Set::new(vec![(DocId::from_bytes([1; 32]), vec![[1; 32]])]);
        let (mut s, cert) = ready(1);
        let out = s.on_message(Session::hello(&cert), &set);
        let Some(Effect::Send(summary)) = out.last().cloned() else { panic!("{out:?}") };
        assert_eq!(s.on_message(summary, &set), vec![Effect::InSync]);
    }

    #[test]
    fn differences_lead_to_exact_pushes() {
        let shared = (DocId::from_bytes([1; 32]), vec![[1; 32]]);
        let moved = (DocId::from_bytes([2; 32]), vec![[2; 32]]);
        let only_mine = (DocId::from_bytes([3; 32]), vec![[3; 32]]);
        let mine = Set::new(vec![shared.clone(), moved.clone(), only_mine.clone()]);
        let theirs = Set::new(vec![shared, (moved.0, vec![[9; 32]])]);
        let (mut s, cert) = ready(1);
        s.on_message(Session::hello(&cert), &mine);
        let total = theirs.fingerprints().total();
        let out = s.on_message(SyncMessage::Summary { count: total.count, fingerprint: total.xor }, &mine);
        assert!(matches!(&out[..], [Effect::Send(SyncMessage::Buckets { .. })]));
        let out = s.on_message(SyncMessage::Buckets { buckets: theirs.fingerprints().bucket_prints() }, &mine);
        // Bucket 3: the peer has nothing there, push it all; bucket 2 differs: list it.
        assert_eq!(out[0], Effect::PushBuckets(vec![3]));
        assert_eq!(out[1], Effect::Send(SyncMessage::Items { buckets: vec![(2, vec![moved.clone()])] }));
        let out = s.on_message(SyncMessage::Items { buckets: vec![(2, theirs.items(2))] }, &mine);
        assert_eq!(out, vec![Effect::PushMissing(vec![(moved.0, vec![[9; 32]])])]);
    }

    #[test]
    fn a_peer_that_misbehaves_is_dropped() {
        let set = Set::new(vec![]);
        let (mut s, _) = ready(1);
        let (_, other_cert) = ready(2);
        for _ in 0..MAX_EARLY_MESSAGES {
            assert!(s.on_message(SyncMessage::Summary { count: 0, fingerprint: [0; 16] }, &set).is_empty());
        }
        assert!(matches!(
            s.on_message(SyncMessage::Summary { count: 0, fingerprint: [0; 16] }, &set)[..],
            [Effect::Fault(_)]
        ));
        assert!(matches!(s.on_message(Session::hello(&other_cert), &set)[..], [Effect::Fault(_)]));
        let out = s.on_message(SyncMessage::Buckets { buckets: vec![] }, &set);
        assert!(matches!(out.last(), Some(Effect::Disconnect(_))), "{out:?}");
    }
}
