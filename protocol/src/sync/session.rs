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
use super::message::{Item, MAX_PROOF, ROSTER_FRAME_TARGET_BYTES, SetSummary, SyncMessage};
use crate::certificate::NodeCertificate;
use crate::envelope::ChangeEnvelope;
use crate::header::SignedHeader;
use crate::ids::{CommuneId, DocId, NodeId};
use crate::network::{Invitation, Role, Roster, SignedStatement};

/// Protocol faults tolerated from a peer before it is disconnected.
pub const MAX_FAULTS: u32 = 3;
/// Whether a refusal (by its reason code) is the sender's fault: forged or
/// unauthorised data. A change for a document not known yet, or from a
/// clock slightly ahead, can come from an honest peer and is only dropped.
/// Membership refusals depend on what each node knows of the roster (a
/// relay may not have heard of a revocation yet), so they are not counted
/// against the relay either. An owner-only field changed by another writer
/// (`owner_only`) may sit in a history an older release accepted: an
/// honest relay of it is not at fault. Nor is what the receiver could not
/// store (`store_failed`: a full or failing disk), nor a covered change
/// whose cover was refused for one of these reasons (`cover_refused`; a
/// cover refused as a fault is counted as such already).
pub fn refusal_is_fault(code: &str) -> bool {
    !matches!(
        code,
        "unknown_document"
            | "from_the_future"
            | "not_a_member"
            | "not_registered"
            | "revoked"
            | "role_forbids_kind"
            | "owner_only"
            | "store_failed"
            | "cover_refused"
    )
}

/// Whether a refusal of part of a document makes the two nodes agree to
/// differ on it (see `replica::apart`): not a fault, and not merely a
/// header this node lacks yet.
pub fn refusal_keeps_apart(code: &str) -> bool {
    !refusal_is_fault(code) && code != "unknown_document"
}

/// Joins a peer may present on one connection (an honest joiner sends
/// one, and one more on a retry; an operator's tool checking a few).
pub const MAX_JOINS: u8 = 4;
/// `RosterHave`s answered per round of this node's: more is a fault.
pub const MAX_ROSTER_ANSWERS_PER_ROUND: u8 = 3;

/// Messages kept while waiting for the peer's hello: messages travel on
/// separate streams, so one may overtake the hello.
pub const MAX_EARLY_MESSAGES: usize = 16;

/// What a session needs to know of the local documents it may share with
/// a peer of commune `peer` (scopes decide which: see the node's policy).
pub trait LocalSet {
    /// Fingerprints of the set shared with `peer`.
    fn fingerprints(&self, peer: &CommuneId) -> SetFingerprints;
    /// The documents of one bucket shared with `peer`, with their heads.
    fn items(&self, peer: &CommuneId, bucket: u8) -> Vec<Item>;
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
    /// Verify and add these membership statements to the roster (they
    /// arrive before any document the peer sends after them).
    IngestRoster(Vec<SignedStatement>),
    /// A node outside the network redeems an invitation: check it, admit
    /// the node's commune, answer `Welcome` or `JoinRefused`.
    Redeem {
        /// The invitation.
        invitation: Box<Invitation>,
        /// The joining node's certificate.
        certificate: NodeCertificate,
        /// Where it listens.
        addrs: Vec<String>,
    },
    /// Say hello (again): the peer may not have received ours, or asked
    /// for the membership proof (`proof`: it must come with it).
    SendHello {
        /// The peer asked for the proof.
        proof: bool,
    },
    /// Verify and store what the peer sent.
    Ingest {
        /// Certificates.
        certificates: Vec<NodeCertificate>,
        /// Headers.
        headers: Vec<SignedHeader>,
        /// Changes.
        changes: Vec<ChangeEnvelope>,
    },
    /// Check and keep these heartbeats (the latest of each node), and pass
    /// on those that are new.
    Heartbeats(Vec<crate::heartbeat::SignedHeartbeat>),
    /// A message of the gossip layer (live pushes, announcements, pulses),
    /// for the replica to handle once the peer is ready.
    Gossip(SyncMessage),
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
    /// The peer is an admitted member; rosters are being reconciled first,
    /// so that revocations and removals are known before any document.
    Roster,
    /// The peer is identified, admitted, and rosters agree.
    Ready,
}

/// Sync state for one connected peer.
#[derive(Debug, Clone)]
pub struct Session {
    remote: NodeId,
    phase: Phase,
    commune: Option<CommuneId>,
    role: Option<Role>,
    faults: u32,
    early: Vec<SyncMessage>,
    /// Buckets whose items this session sent in the current round: each
    /// side lists a bucket at most once per round.
    items_sent: std::collections::HashSet<u8>,
    /// Whether this round already answered a repeated hello with ours.
    hello_answered: bool,
    /// What our last hello said: the roster summary, and whether it carried
    /// our first round's summary.
    hello_sent: Option<((u64, [u8; 16]), bool)>,
    /// Whether we asked the peer for its membership proof (once).
    proof_asked: bool,
    /// Whether we answered the peer's request for ours (once).
    proof_given: bool,
    /// Joins presented on this connection (see [`MAX_JOINS`]).
    joins: u8,
    /// `RosterHave`s answered since this node's last round started (see
    /// [`MAX_ROSTER_ANSWERS_PER_ROUND`]).
    roster_answers: u8,
    /// Documents this node still has queued for the peer (set by the
    /// caller): while either side has a transfer under way, rounds compare
    /// rosters only, so a resumed transfer is not re-listed after each cut.
    pending_out: u64,
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
            role: None,
            faults: 0,
            early: Vec::new(),
            items_sent: std::collections::HashSet::new(),
            hello_answered: false,
            hello_sent: None,
            proof_asked: false,
            proof_given: false,
            joins: 0,
            roster_answers: 0,
            pending_out: 0,
            rounds: 0,
            in_sync_rounds: 0,
        }
    }

    /// The first message to send on a new connection: this node's
    /// certificate, its network and roster summary, the proof of its
    /// commune's membership (`proof`: unless the peer holds it already),
    /// our first round's summary and our distances to the watchers (the
    /// caller gives them to a peer its roster admits only).
    pub fn hello(
        certificate: &NodeCertificate,
        roster: &Roster,
        proof: bool,
        summary: Option<SetSummary>,
        routes: Vec<(NodeId, u8)>,
    ) -> SyncMessage {
        let fp = roster.fingerprint();
        let mut proof = if proof { roster.proof_for(&certificate.commune) } else { Vec::new() };
        proof.truncate(MAX_PROOF);
        SyncMessage::Hello {
            certificate: certificate.clone(),
            network: roster.network(),
            roster_count: fp.count,
            roster_fingerprint: fp.xor,
            proof,
            summary,
            routes,
        }
    }

    /// Our first round's summary for a hello, for a peer of a known commune.
    pub fn hello_summary(local: &impl LocalSet, peer: Option<&CommuneId>, pending: u64) -> Option<SetSummary> {
        let total = local.fingerprints(peer?).total();
        Some(SetSummary { count: total.count, fingerprint: total.xor, pending })
    }

    /// Records the hello just sent to the peer (what it said decides
    /// whether the peer's first round is compared with the hellos).
    pub fn hello_sent(&mut self, hello: &SyncMessage) {
        if let SyncMessage::Hello { roster_count, roster_fingerprint, summary, .. } = hello {
            self.hello_sent = Some(((*roster_count, *roster_fingerprint), summary.is_some()));
        }
    }

    /// The roster statements a peer lacks, in messages of bounded size; the
    /// last one says the answer is complete.
    pub fn roster_answer(roster: &Roster, theirs: &[[u8; 16]]) -> Vec<SyncMessage> {
        let mut out = Vec::new();
        let mut part = Vec::new();
        let mut size = 0;
        for s in roster.missing_from(theirs) {
            let len = s.encode().len() + 4;
            if size + len > ROSTER_FRAME_TARGET_BYTES && !part.is_empty() {
                out.push(SyncMessage::Roster { statements: std::mem::take(&mut part), complete: false });
                size = 0;
            }
            size += len;
            part.push(s);
        }
        out.push(SyncMessage::Roster { statements: part, complete: true });
        out
    }

    /// Tells the session how many documents this node has queued for the
    /// peer; said in each summary.
    pub fn set_pending(&mut self, pending: u64) {
        self.pending_out = pending;
    }

    /// Where the session stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The peer's commune, once its certificate was checked.
    pub fn commune(&self) -> Option<CommuneId> {
        self.commune
    }

    /// The peer's role in the network, once it was admitted.
    pub fn role(&self) -> Option<Role> {
        self.role
    }

    /// Starts a reconciliation round: on connection (after hello) and on
    /// each anti-entropy tick.
    /// A round still reconciling rosters asks for the peer's statements
    /// again (the last request or answer may have been lost).
    pub fn start_round(&mut self, local: &impl LocalSet, roster: &Roster) -> Vec<Effect> {
        self.hello_answered = false;
        self.roster_answers = 0;
        match (self.phase, self.commune) {
            // Still no hello from the peer: ours may have been lost too.
            (Phase::AwaitingHello, _) => vec![Effect::SendHello { proof: false }],
            (Phase::Roster, _) => {
                vec![Effect::Send(SyncMessage::RosterHave { hashes: roster.short_hashes() })]
            }
            (Phase::Ready, Some(peer)) => {
                self.rounds += 1;
                let total = local.fingerprints(&peer).total();
                let r = roster.fingerprint();
                vec![Effect::Send(SyncMessage::Summary {
                    count: total.count,
                    fingerprint: total.xor,
                    roster_count: r.count,
                    roster_fingerprint: r.xor,
                    pending: self.pending_out,
                })]
            }
            _ => Vec::new(),
        }
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

    /// Refuses the peer outright: it is not (or no longer) admitted.
    fn refuse(&mut self, reason: String) -> Vec<Effect> {
        self.faults = MAX_FAULTS;
        vec![Effect::Fault(reason.clone()), Effect::Disconnect(reason)]
    }

    fn become_ready(&mut self, local: &impl LocalSet, roster: &Roster) -> Vec<Effect> {
        self.phase = Phase::Ready;
        let out = self.start_round(local, roster);
        self.with_early(out, local, roster)
    }

    /// Ready at the first hello, rosters agreeing: when the two hellos were
    /// sent under the same roster (both sides see it so), each carried
    /// summary is the first round of its sender. Ours said: no `Summary`
    /// to send; theirs said: compare it now. A hello without one leaves its
    /// sender's `Summary` to follow as before.
    fn become_ready_at_hello(
        &mut self,
        local: &impl LocalSet,
        roster: &Roster,
        theirs: (u64, [u8; 16]),
        summary: Option<SetSummary>,
    ) -> Vec<Effect> {
        let same_roster_sent = self.hello_sent.is_some_and(|(ours, _)| ours == theirs);
        if !same_roster_sent {
            return self.become_ready(local, roster);
        }
        self.phase = Phase::Ready;
        let ours_said_it = self.hello_sent.is_some_and(|(_, s)| s);
        let mut out = if ours_said_it {
            self.rounds += 1;
            Vec::new()
        } else {
            self.start_round(local, roster)
        };
        if let Some(s) = summary {
            out.extend(self.on_sync(
                SyncMessage::Summary {
                    count: s.count,
                    fingerprint: s.fingerprint,
                    roster_count: theirs.0,
                    roster_fingerprint: theirs.1,
                    pending: s.pending,
                },
                local,
                roster,
            ));
        }
        self.with_early(out, local, roster)
    }

    /// Messages that came before the session was ready, handled now.
    fn with_early(&mut self, mut out: Vec<Effect>, local: &impl LocalSet, roster: &Roster) -> Vec<Effect> {
        for early in std::mem::take(&mut self.early) {
            out.extend(self.on_message(early, local, roster));
        }
        out
    }

    fn on_hello(&mut self, hello: SyncMessage, local: &impl LocalSet, roster: &Roster) -> Vec<Effect> {
        let SyncMessage::Hello { certificate, network, roster_count, roster_fingerprint, proof, summary, routes: _ } =
            hello
        else {
            return Vec::new();
        };
        let roster_fp = (roster_count, roster_fingerprint);
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
        if network != roster.network() {
            return self.refuse(format!(
                "peer belongs to network {}, this node to network {}",
                network.short(),
                roster.network().short()
            ));
        }
        // The proof may teach us of a member admitted since we last heard:
        // check admission against the roster with the proof added.
        let without_proof = proof.is_empty();
        let mut with_proof = roster.clone();
        let (new, _) = with_proof.insert_all(proof);
        let role = match with_proof.node_admitted(&certificate.node, &certificate.commune) {
            Ok(role) => role,
            // A peer that left its proof out thought we held it: ask once.
            Err(_) if without_proof && !self.proof_asked => {
                self.proof_asked = true;
                return vec![Effect::Send(SyncMessage::ProofWanted)];
            }
            Err(reason) => return self.refuse(format!("not admitted: {reason}")),
        };
        if self.commune.is_some_and(|c| c != certificate.commune) {
            return self.fault("a second hello names another commune".into());
        }
        let first = self.phase == Phase::AwaitingHello;
        self.commune = Some(certificate.commune);
        self.role = Some(role);
        let mut out = Vec::new();
        if !first && !self.hello_answered {
            // A hello again: the peer is still waiting for ours (lost). Once a round.
            self.hello_answered = true;
            out.push(Effect::SendHello { proof: false });
        }
        if !new.is_empty() {
            out.push(Effect::IngestRoster(new));
        }
        out.push(Effect::Ingest { certificates: vec![certificate], headers: vec![], changes: vec![] });
        if first {
            let mine = with_proof.fingerprint();
            if (mine.count, mine.xor) == roster_fp {
                out.extend(self.become_ready_at_hello(local, &with_proof, roster_fp, summary));
            } else {
                self.phase = Phase::Roster;
                out.push(Effect::Send(SyncMessage::RosterHave { hashes: with_proof.short_hashes() }));
            }
        }
        out
    }

    /// Handles a message from the peer; `roster` is this node's roster and
    /// `local` its documents as they may be shared with the peer.
    pub fn on_message(&mut self, msg: SyncMessage, local: &impl LocalSet, roster: &Roster) -> Vec<Effect> {
        match (self.phase, msg) {
            (_, hello @ SyncMessage::Hello { .. }) => self.on_hello(hello, local, roster),
            (_, SyncMessage::ProofWanted) => {
                if self.proof_given {
                    return self.fault("asked for our membership proof twice".into());
                }
                self.proof_given = true;
                vec![Effect::SendHello { proof: true }]
            }
            (Phase::AwaitingHello, SyncMessage::Join { invitation, certificate, addrs }) => {
                self.joins = self.joins.saturating_add(1);
                if self.joins > MAX_JOINS {
                    return self.refuse(format!("more than {MAX_JOINS} joins on one connection"));
                }
                if certificate.node != self.remote || certificate.verify().is_err() {
                    return self.refuse("join: the certificate is not the connected node's".into());
                }
                vec![Effect::Redeem { invitation, certificate, addrs }]
            }
            (_, SyncMessage::Join { .. }) => self.fault("join from a node that already said hello".into()),
            (_, SyncMessage::Welcome { .. } | SyncMessage::JoinRefused { .. }) => {
                self.fault("answer to a join this node did not send".into())
            }
            (Phase::AwaitingHello, other) => {
                if self.early.len() < MAX_EARLY_MESSAGES {
                    self.early.push(other);
                    Vec::new()
                } else {
                    self.fault(format!("{} messages before hello", MAX_EARLY_MESSAGES + 1))
                }
            }
            (_, SyncMessage::RosterHave { hashes }) => {
                // Honest peers ask once or twice a round of ours (after our
                // summary, or while their session is still reconciling); a
                // peer asking in a loop would buy the roster again each time:
                // beyond the limit it goes unanswered until our next round (a
                // peer on faster rounds than ours is not at fault; a flood
                // runs out of its request budget and is cut off).
                self.roster_answers = self.roster_answers.saturating_add(1);
                if self.roster_answers > MAX_ROSTER_ANSWERS_PER_ROUND {
                    return Vec::new();
                }
                Session::roster_answer(roster, &hashes).into_iter().map(Effect::Send).collect()
            }
            (Phase::Roster, SyncMessage::Roster { statements, complete }) => {
                let mut updated = roster.clone();
                updated.insert_all(statements.clone());
                let mut out = vec![Effect::IngestRoster(statements)];
                if complete {
                    out.extend(self.become_ready(local, &updated));
                }
                out
            }
            (Phase::Ready, SyncMessage::Roster { statements, .. }) => vec![Effect::IngestRoster(statements)],
            (Phase::Roster, other) => {
                // The peer is ready before us: keep its first messages, drop
                // the rest (the next anti-entropy round repairs what is lost).
                if self.early.len() < MAX_EARLY_MESSAGES {
                    self.early.push(other);
                }
                Vec::new()
            }
            (Phase::Ready, msg) => self.on_sync(msg, local, roster),
        }
    }

    fn on_sync(&mut self, msg: SyncMessage, local: &impl LocalSet, roster: &Roster) -> Vec<Effect> {
        let Some(peer) = self.commune else { return Vec::new() };
        match msg {
            SyncMessage::Summary { count, fingerprint, roster_count, roster_fingerprint, pending } => {
                let mut out = Vec::new();
                let r = roster.fingerprint();
                let rosters_agree = (r.count, r.xor) == (roster_count, roster_fingerprint);
                if !rosters_agree {
                    out.push(Effect::Send(SyncMessage::RosterHave { hashes: roster.short_hashes() }));
                }
                if pending > 0 || self.pending_out > 0 {
                    // A transfer is under way: it goes on where it stopped;
                    // the round after it compares the sets.
                    return out;
                }
                let mine = local.fingerprints(&peer).total();
                if mine.count == count && mine.xor == fingerprint {
                    if rosters_agree {
                        self.in_sync_rounds += 1;
                        out.push(Effect::InSync);
                    }
                } else {
                    out.push(Effect::Send(SyncMessage::Buckets { buckets: local.fingerprints(&peer).bucket_prints() }));
                }
                out
            }
            SyncMessage::Buckets { buckets } => {
                if buckets.len() != BUCKETS {
                    return self.fault(format!("{} buckets instead of {BUCKETS}", buckets.len()));
                }
                let fps = local.fingerprints(&peer);
                let mine = fps.buckets();
                let mut push_all = Vec::new();
                let mut list = Vec::new();
                self.items_sent.clear();
                for (i, (m, t)) in mine.iter().zip(&buckets).enumerate() {
                    if BucketPrint::from(m) == *t || m.count == 0 {
                        // Equal, or we have nothing there: the peer pushes to us.
                        continue;
                    }
                    let bucket = i as u8;
                    if t.count == 0 {
                        push_all.push(bucket);
                    } else if u64::from(BucketPrint::from(m).count) <= u64::from(t.count) {
                        // The side with fewer documents lists them; the other
                        // answers with pushes (and its own list if it lacks some).
                        self.items_sent.insert(bucket);
                        list.push((bucket, local.items(&peer, bucket)));
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
            SyncMessage::Items { buckets } => {
                let mut push_docs = Vec::new();
                let mut push_missing = Vec::new();
                let mut answer = Vec::new();
                for (bucket, theirs) in buckets {
                    let mine = local.items(&peer, bucket);
                    let theirs: HashMap<DocId, Vec<[u8; 32]>> = theirs.into_iter().collect();
                    let mut they_have_more = theirs.len() > mine.len();
                    for (doc, heads) in &mine {
                        match theirs.get(doc) {
                            None => push_docs.push(*doc),
                            Some(their_heads) if !same_heads(their_heads, heads) => {
                                // Either side may be ahead: push ours, and let them see our heads.
                                they_have_more = true;
                                push_missing.push((*doc, their_heads.clone()));
                            }
                            Some(_) => {}
                        }
                    }
                    if !they_have_more {
                        let known: std::collections::HashSet<&DocId> = mine.iter().map(|(d, _)| d).collect();
                        they_have_more = theirs.keys().any(|d| !known.contains(d));
                    }
                    // They hold what we lack: list ours once, so they push it.
                    if they_have_more && self.items_sent.insert(bucket) {
                        answer.push((bucket, mine));
                    }
                }
                let mut out = Vec::new();
                if !push_docs.is_empty() {
                    out.push(Effect::PushDocs(push_docs));
                }
                if !push_missing.is_empty() {
                    out.push(Effect::PushMissing(push_missing));
                }
                if !answer.is_empty() {
                    out.push(Effect::Send(SyncMessage::Items { buckets: answer }));
                }
                out
            }
            SyncMessage::Docs { certificates, headers, changes } => {
                vec![Effect::Ingest { certificates, headers, changes }]
            }
            SyncMessage::Heartbeats { beats } => vec![Effect::Heartbeats(beats)],
            gossip @ (SyncMessage::Have { .. }
            | SyncMessage::Graft { .. }
            | SyncMessage::Prune
            | SyncMessage::Push { .. }
            | SyncMessage::Pulses { .. }
            | SyncMessage::Unlink
            | SyncMessage::Routes { .. }
            | SyncMessage::BeatsWanted { .. }
            | SyncMessage::Differ { .. }) => vec![Effect::Gossip(gossip)],
            // Handled before a session is ready.
            SyncMessage::Hello { .. }
            | SyncMessage::ProofWanted
            | SyncMessage::RosterHave { .. }
            | SyncMessage::Roster { .. }
            | SyncMessage::Join { .. }
            | SyncMessage::Welcome { .. }
            | SyncMessage::JoinRefused { .. } => Vec::new(),
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
    use crate::network::Statement;
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
        fn fingerprints(&self, _peer: &CommuneId) -> SetFingerprints {
            self.fps.clone()
        }
        fn items(&self, _peer: &CommuneId, bucket: u8) -> Vec<Item> {
            self.docs.iter().filter(|(d, _)| d.as_bytes()[0] == bucket).cloned().collect()
        }
    }

    const ANY: CommuneId = CommuneId::from_bytes([0; 32]);

    /// A network whose founder admitted the communes of seeds 101 and 102.
    fn roster() -> Roster {
        let founder = SecretKey::from_seed([200; 32]);
        let mut roster = Roster::founded(SignedStatement::found(&founder, "Réseau", "Secrétariat", "BE", 1)).unwrap();
        for seed in [101u8, 102] {
            let member = SecretKey::from_seed([seed; 32]);
            let body = Statement::Admit {
                member: member.commune_id(),
                name: format!("c{seed}"),
                country: "BE".into(),
                role: Role::Commune,
                invitation: [0; 16],
                node: SecretKey::from_seed([seed - 100; 32]).node_id(),
                addrs: vec![],
            };
            roster.insert(SignedStatement::sign(&founder, roster.network(), 2, body)).unwrap();
        }
        roster
    }

    fn summary(set: &Set, r: &Roster) -> SyncMessage {
        let total = set.fingerprints(&ANY).total();
        let fp = r.fingerprint();
        SyncMessage::Summary {
            count: total.count,
            fingerprint: total.xor,
            roster_count: fp.count,
            roster_fingerprint: fp.xor,
            pending: 0,
        }
    }

    fn ready(seed: u8) -> (Session, NodeCertificate) {
        let node = SecretKey::from_seed([seed; 32]);
        let cert = NodeCertificate::issue(&SecretKey::from_seed([seed + 100; 32]), node.node_id(), 0);
        (Session::new(node.node_id()), cert)
    }

    #[test]
    fn messages_that_overtake_the_hello_are_kept() {
        let r = roster();
        let set = Set::new(vec![(DocId::from_bytes([1; 32]), vec![[1; 32]])]);
        let (mut s, cert) = ready(1);
        assert!(s.on_message(summary(&set, &r), &set, &r).is_empty());
        let out = s.on_message(Session::hello(&cert, &r, true, None, vec![]), &set, &r);
        assert_eq!(out.last(), Some(&Effect::InSync), "{out:?}");
    }

    #[test]
    fn equal_sets_are_in_sync_after_one_summary() {
        let r = roster();
        let set = Set::new(vec![(DocId::from_bytes([1; 32]), vec![[1; 32]])]);
        let (mut s, cert) = ready(1);
        let out = s.on_message(Session::hello(&cert, &r, true, None, vec![]), &set, &r);
        let Some(Effect::Send(summary)) = out.last().cloned() else { panic!("{out:?}") };
        assert_eq!(s.on_message(summary, &set, &r), vec![Effect::InSync]);
    }

    #[test]
    fn differences_lead_to_exact_pushes() {
        let shared = (DocId::from_bytes([1; 32]), vec![[1; 32]]);
        let moved = (DocId::from_bytes([2; 32]), vec![[2; 32]]);
        let only_mine = (DocId::from_bytes([3; 32]), vec![[3; 32]]);
        let r = roster();
        let mine = Set::new(vec![shared.clone(), moved.clone(), only_mine.clone()]);
        let theirs = Set::new(vec![shared, (moved.0, vec![[9; 32]])]);
        let (mut s, cert) = ready(1);
        s.on_message(Session::hello(&cert, &r, true, None, vec![]), &mine, &r);
        let out = s.on_message(summary(&theirs, &r), &mine, &r);
        assert!(matches!(&out[..], [Effect::Send(SyncMessage::Buckets { .. })]));
        let out = s.on_message(SyncMessage::Buckets { buckets: theirs.fingerprints(&ANY).bucket_prints() }, &mine, &r);
        // Bucket 3: the peer has nothing there, push it all; bucket 2 differs: list it.
        assert_eq!(out[0], Effect::PushBuckets(vec![3]));
        assert_eq!(out[1], Effect::Send(SyncMessage::Items { buckets: vec![(2, vec![moved.clone()])] }));
        let out = s.on_message(SyncMessage::Items { buckets: vec![(2, theirs.items(&ANY, 2))] }, &mine, &r);
        assert_eq!(out, vec![Effect::PushMissing(vec![(moved.0, vec![[9; 32]])])]);
    }

    #[test]
    fn no_buckets_are_compared_while_a_transfer_is_under_way() {
        let r = roster();
        let mine = Set::new(vec![(DocId::from_bytes([1; 32]), vec![[1; 32]])]);
        let theirs = Set::new(vec![]);
        let (mut s, cert) = ready(1);
        s.on_message(Session::hello(&cert, &r, true, None, vec![]), &mine, &r);
        // The peer still has documents queued for us: nothing to compare yet.
        let SyncMessage::Summary { count, fingerprint, roster_count, roster_fingerprint, .. } = summary(&theirs, &r)
        else {
            unreachable!()
        };
        let busy = SyncMessage::Summary { count, fingerprint, roster_count, roster_fingerprint, pending: 3 };
        assert!(s.on_message(busy, &mine, &r).is_empty());
        // We have documents queued for the peer: the same, and our summary says so.
        s.set_pending(5);
        assert!(s.on_message(summary(&theirs, &r), &mine, &r).is_empty());
        let out = s.start_round(&mine, &r);
        assert!(matches!(&out[..], [Effect::Send(SyncMessage::Summary { pending: 5, .. })]), "{out:?}");
        // Queues drained: the sets are compared again.
        s.set_pending(0);
        let out = s.on_message(summary(&theirs, &r), &mine, &r);
        assert!(matches!(&out[..], [Effect::Send(SyncMessage::Buckets { .. })]), "{out:?}");
    }

    #[test]
    fn a_peer_that_misbehaves_is_dropped() {
        let r = roster();
        let set = Set::new(vec![]);
        let (mut s, _) = ready(1);
        let (_, other_cert) = ready(2);
        for _ in 0..MAX_EARLY_MESSAGES {
            assert!(s.on_message(summary(&set, &r), &set, &r).is_empty());
        }
        assert!(matches!(s.on_message(summary(&set, &r), &set, &r)[..], [Effect::Fault(_)]));
        assert!(matches!(
            s.on_message(Session::hello(&other_cert, &r, true, None, vec![]), &set, &r)[..],
            [Effect::Fault(_)]
        ));
        let out = s.on_message(SyncMessage::Buckets { buckets: vec![] }, &set, &r);
        assert!(matches!(out.last(), Some(Effect::Disconnect(_))), "{out:?}");
    }

    #[test]
    fn non_members_and_other_networks_are_refused_at_hello() {
        let r = roster();
        let set = Set::new(vec![]);
        // Seed 3: its commune (103) was never admitted.
        let (mut s, cert) = ready(3);
        let out = s.on_message(Session::hello(&cert, &r, true, None, vec![]), &set, &r);
        assert!(matches!(&out[..], [Effect::Fault(_), Effect::Disconnect(reason)] if reason.contains("not admitted")));
        let other =
            Roster::founded(SignedStatement::found(&SecretKey::from_seed([9; 32]), "Autre", "X", "BE", 1)).unwrap();
        let (mut s, cert) = ready(1);
        let out = s.on_message(Session::hello(&cert, &other, true, None, vec![]), &set, &r);
        assert!(matches!(out.last(), Some(Effect::Disconnect(reason)) if reason.contains("network")), "{out:?}");
    }

    #[test]
    fn rosters_are_reconciled_before_any_document() {
        let r = roster();
        let set = Set::new(vec![(DocId::from_bytes([1; 32]), vec![[1; 32]])]);
        // The peer knows one more statement (commune 102 revoking its node's
        // key) than we do.
        let mut theirs = r.clone();
        let revoke = SignedStatement::sign(
            &SecretKey::from_seed([102; 32]),
            r.network(),
            5,
            Statement::Revoke { node: SecretKey::from_seed([2; 32]).node_id(), kept: vec![] },
        );
        theirs.insert(revoke.clone()).unwrap();
        let (mut s, cert) = ready(1);
        let out = s.on_message(Session::hello(&cert, &theirs, true, None, vec![]), &set, &r);
        assert!(matches!(out.last(), Some(Effect::Send(SyncMessage::RosterHave { .. }))), "{out:?}");
        assert_eq!(s.phase(), Phase::Roster);
        // A document message before the roster is complete waits.
        assert!(s.on_message(summary(&set, &theirs), &set, &r).is_empty());
        let Some(Effect::Send(SyncMessage::RosterHave { hashes })) = out.last().cloned() else { unreachable!() };
        let answer = Session::roster_answer(&theirs, &hashes);
        assert_eq!(answer, vec![SyncMessage::Roster { statements: vec![revoke.clone()], complete: true }]);
        let out = s.on_message(answer[0].clone(), &set, &r);
        assert_eq!(out[0], Effect::IngestRoster(vec![revoke]));
        assert_eq!(s.phase(), Phase::Ready);
        assert_eq!(out.last(), Some(&Effect::InSync), "the kept summary is answered once ready: {out:?}");
    }

    #[test]
    fn a_lost_hello_is_said_again() {
        let r = roster();
        let set = Set::new(vec![]);
        let (mut s, cert) = ready(1);
        // No hello from the peer yet: each round says ours again.
        assert_eq!(s.start_round(&set, &r), vec![Effect::SendHello { proof: false }]);
        s.on_message(Session::hello(&cert, &r, true, None, vec![]), &set, &r);
        // The peer says hello again: it did not get ours. Answered once a round.
        let again = s.on_message(Session::hello(&cert, &r, true, None, vec![]), &set, &r);
        assert!(again.contains(&Effect::SendHello { proof: false }), "{again:?}");
        let third = s.on_message(Session::hello(&cert, &r, true, None, vec![]), &set, &r);
        assert!(!third.contains(&Effect::SendHello { proof: false }), "{third:?}");
        assert_ne!(s.start_round(&set, &r), vec![Effect::SendHello { proof: false }]);
        assert!(
            s.on_message(Session::hello(&cert, &r, true, None, vec![]), &set, &r)
                .contains(&Effect::SendHello { proof: false })
        );
    }

    /// The roster without commune 101's admission (a node that never heard
    /// of it, or lost it).
    fn roster_without_101() -> Roster {
        let founder = SecretKey::from_seed([200; 32]);
        let full = roster();
        let mut small = Roster::founded(SignedStatement::found(&founder, "Réseau", "Secrétariat", "BE", 1)).unwrap();
        for st in full.proof_for(&SecretKey::from_seed([102; 32]).commune_id()) {
            let _ = small.insert(st);
        }
        assert!(
            small
                .node_admitted(&SecretKey::from_seed([1; 32]).node_id(), &SecretKey::from_seed([101; 32]).commune_id())
                .is_err()
        );
        small
    }

    #[test]
    fn a_hello_without_its_proof_is_asked_for_once() {
        let r = roster();
        let small = roster_without_101();
        let set = Set::new(vec![]);
        // The peer (commune 101) thinks we hold its admission: we do not.
        let (mut s, cert) = ready(1);
        let out = s.on_message(Session::hello(&cert, &r, false, None, vec![]), &set, &small);
        assert_eq!(out, vec![Effect::Send(SyncMessage::ProofWanted)]);
        assert_eq!(s.phase(), Phase::AwaitingHello);
        // Its hello with the proof places it.
        let out = s.on_message(Session::hello(&cert, &r, true, None, vec![]), &set, &small);
        assert!(matches!(&out[0], Effect::IngestRoster(new) if !new.is_empty()), "{out:?}");
        assert_ne!(s.phase(), Phase::AwaitingHello);
        // A peer asked once that says hello without it again is refused.
        let (mut s, cert) = ready(1);
        s.on_message(Session::hello(&cert, &r, false, None, vec![]), &set, &small);
        let out = s.on_message(Session::hello(&cert, &r, false, None, vec![]), &set, &small);
        assert!(matches!(out.last(), Some(Effect::Disconnect(reason)) if reason.contains("not admitted")), "{out:?}");
        // A non-member (commune 103) gets one question, then the door.
        let (mut s, cert) = ready(3);
        assert_eq!(
            s.on_message(Session::hello(&cert, &r, false, None, vec![]), &set, &r),
            vec![Effect::Send(SyncMessage::ProofWanted)]
        );
        let out = s.on_message(Session::hello(&cert, &r, true, None, vec![]), &set, &r);
        assert!(matches!(out.last(), Some(Effect::Disconnect(reason)) if reason.contains("not admitted")), "{out:?}");
        // Asked for ours: said again with it, once; asked twice is a fault.
        let (mut s, _) = ready(1);
        assert_eq!(s.on_message(SyncMessage::ProofWanted, &set, &r), vec![Effect::SendHello { proof: true }]);
        assert!(matches!(s.on_message(SyncMessage::ProofWanted, &set, &r)[..], [Effect::Fault(_)]));
    }

    #[test]
    fn summaries_in_the_hellos_end_a_round_of_peers_in_agreement() {
        let r = roster();
        let set = Set::new(vec![(DocId::from_bytes([1; 32]), vec![[1; 32]])]);
        let (_, mine) = ready(2);
        let ours = Session::hello_summary(&set, Some(&ANY), 0);
        let theirs_equal = ours;
        let theirs_other = Some(SetSummary { count: 2, fingerprint: [9; 16], pending: 0 });

        // Both hellos carry summaries, equal: in sync with nothing more to send.
        let (mut s, cert) = ready(1);
        s.hello_sent(&Session::hello(&mine, &r, false, ours, vec![]));
        let out = s.on_message(Session::hello(&cert, &r, false, theirs_equal, vec![]), &set, &r);
        assert_eq!(out.last(), Some(&Effect::InSync), "{out:?}");
        assert!(!out.iter().any(|e| matches!(e, Effect::Send(_))), "{out:?}");
        assert_eq!((s.rounds, s.in_sync_rounds), (1, 1));

        // Different sets: the buckets follow at once.
        let (mut s, cert) = ready(1);
        s.hello_sent(&Session::hello(&mine, &r, false, ours, vec![]));
        let out = s.on_message(Session::hello(&cert, &r, false, theirs_other, vec![]), &set, &r);
        assert!(matches!(out.last(), Some(Effect::Send(SyncMessage::Buckets { .. }))), "{out:?}");

        // Ours had none: our summary goes as before, theirs is compared.
        let (mut s, cert) = ready(1);
        s.hello_sent(&Session::hello(&mine, &r, false, None, vec![]));
        let out = s.on_message(Session::hello(&cert, &r, false, theirs_equal, vec![]), &set, &r);
        assert!(out.iter().any(|e| matches!(e, Effect::Send(SyncMessage::Summary { .. }))), "{out:?}");
        assert_eq!(out.last(), Some(&Effect::InSync), "{out:?}");

        // Theirs had none: we wait for their summary.
        let (mut s, cert) = ready(1);
        s.hello_sent(&Session::hello(&mine, &r, false, ours, vec![]));
        let out = s.on_message(Session::hello(&cert, &r, false, None, vec![]), &set, &r);
        assert!(!out.iter().any(|e| matches!(e, Effect::Send(_) | Effect::InSync)), "{out:?}");
        assert_eq!(s.on_message(summary(&set, &r), &set, &r), vec![Effect::InSync]);

        // Hellos sent under different rosters: summaries are not compared;
        // the rosters are reconciled, then a round starts as before.
        let small = roster_without_101();
        let (mut s, cert) = ready(2);
        s.hello_sent(&Session::hello(&mine, &small, false, ours, vec![]));
        let out = s.on_message(Session::hello(&cert, &r, true, theirs_equal, vec![]), &set, &small);
        assert!(!out.contains(&Effect::InSync), "{out:?}");
    }
}
