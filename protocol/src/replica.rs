//! The replica core: where every replication decision is made, without
//! I/O, clock or randomness of its own.
//!
//! A [`Replica`] holds what one node knows for replicating: the roster
//! (who is a member, who partners whom), the certificate book, the index of
//! what it may share with whom, its peers (records, sessions, transfer
//! state) and the heartbeats it keeps. Its inputs are named for what
//! happened — [`Replica::peer_connected`], [`Replica::message_received`],
//! [`Replica::message_delivered`], [`Replica::ingested`],
//! [`Replica::committed`] (after the node's flush), [`Replica::tick`] —
//! each with the time `now`; its outputs ([`Output`]) are what the driver
//! must do: send bytes, verify and store documents, persist records, dial,
//! disconnect, tell live views. The driver reads the store for it through
//! [`DocSource`].
//!
//! Two drivers run it: the node's engine (sled, libp2p, the wall clock)
//! and the deterministic simulator ([`crate::sim`]), so the rules tested
//! over thousands of seeded runs are the rules that ship.
//!
//! ```text
//!  swarm events ──▶ peer_connected / message_received / … ──┐
//!  API writes   ──▶ doc_changed, committed (after flush)  ──┤  Replica ──▶ poll(): Output
//!  timers       ──▶ tick(now)                             ──┘     ▲
//!                                                                 │ DocSource (store reads,
//!                                                                 │ transfer queues)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::book::CertificateBook;
use crate::ids::{DocId, NodeId};
use crate::network::{Roster, SignedStatement};
use crate::sync::audience::{Audience, SyncIndex};
use crate::sync::message::SyncMessage;
use crate::sync::session::Session;

mod apart;
mod beats;
mod config;
mod gossip;
mod io;
mod links;
mod membership;
mod peers;
mod relay;
mod sessions;
#[cfg(test)]
mod tests;
mod traffic;
mod transfers;

pub use apart::{APART_AHEAD_FOR_MS, APART_FOR_MS, DIFFER_DELAY_MS, MAX_APART_PER_PEER};
pub use beats::{BEAT_EXPIRY_MS, Beats, ChainState, FULL_EVERY_MS, PULSE_EVERY_MS};
pub use config::{Me, ReplicaConfig};
pub use io::{
    Announcement, DirtyPeers, DocSource, Event, Heads, IngestBatch, IngestOutcome, LocalStatus, MissingChange, Output,
    Persist, QueuedDoc, queue_priority,
};
pub use links::{AWAY_AFTER_MS, CYCLES, NEIGHBOURS, choose as choose_links};
pub use peers::PeerRecord;
pub use traffic::{FrameParts, KindTraffic, Traffic};

/// Milliseconds since the Unix epoch, as the driver's clock says.
pub type Millis = i64;

/// The longest interval between two rounds with a peer that stays in sync.
pub const MAX_ROUND_INTERVAL_MS: Millis = 30 * 60 * 1000;

/// What the core counted since it started (the node adds its own).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Sync protocol faults of peers.
    pub faults: u64,
    /// Sync sessions opened (one per connection in a network).
    pub sessions_opened: u64,
    /// Reconciliation rounds that found a peer in sync.
    pub rounds_in_sync: u64,
    /// Live pushes answered with a prune (they came by another path).
    pub prunes: u64,
    /// Grafts sent (announced items asked for).
    pub grafts: u64,
    /// Items the core refused, by reason code (heartbeats, statements).
    pub rejected: BTreeMap<String, u64>,
    /// Messages and bytes by kind, each way.
    pub traffic: Traffic,
    /// What the document frames sent were made of.
    pub frames_sent: FrameParts,
}

/// What a node kept of the replica's state (its store), to start from.
#[derive(Debug, Default)]
pub struct Persisted {
    /// The roster (`None` outside any network).
    pub roster: Option<Roster>,
    /// The certificates it knows.
    pub book: CertificateBook,
    /// Its peer records.
    pub peers: Vec<PeerRecord>,
    /// The heartbeats it kept.
    pub heartbeats: Vec<crate::heartbeat::StoredHeartbeat>,
    /// The pulse chains it kept.
    pub chains: Vec<crate::heartbeat::PulseChain>,
}

/// A connected peer.
#[derive(Debug)]
struct Link {
    /// The sync session, once this node is in a network.
    session: Option<Session>,
    /// When the next anti-entropy round with it is due.
    next_round: Millis,
    /// The interval of rounds: it doubles while the peer stays in sync,
    /// up to [`Replica::max_interval`], and starts over on any change.
    interval: Millis,
    /// When this node last told the peer its summary.
    last_summary: Millis,
    /// Whether live changes are pushed to it (gossip's tree) or announced.
    eager: bool,
    /// Until the peer's hello: when it must have arrived, and the bytes
    /// it sent before it ([`HELLO_DEADLINE_MS`], [`MAX_PRE_HELLO_BYTES`]).
    awaiting_hello: Option<(Millis, usize)>,
    /// The peer's requests that make this node work ([`ASKS_PER_MINUTE`]).
    asks: AskBudget,
    /// The distances its last hello said, taken in once its session is ready.
    hello_routes: Option<Vec<(NodeId, u8)>>,
}

/// Requests that make a node work for a peer (`Summary`, `Buckets`,
/// `Items`, `RosterHave`: each answered with fingerprints, documents or
/// statements) that one peer
/// may send a minute, sustained; beyond, they are dropped and counted. An
/// honest peer sends one of each per round, and rounds are a second apart
/// at the most eager. (`Graft` answers this node's own announcements and
/// also shapes the push tree: it is never dropped.)
pub const ASKS_PER_MINUTE: u32 = 240;
/// How many such requests may come at once (a burst of rounds after a
/// reconnection).
pub const ASKS_BURST: u32 = 60;
/// Requests dropped within a minute after which the peer is disconnected:
/// it is not slowing down.
pub const MAX_ASKS_DROPPED: u32 = 120;

/// How many documents a peer's claims (`Buckets`, `Items`: "I lack
/// these") may make this node queue for it in a day, as a multiple of what
/// the two share, plus [`PUSH_ALLOWANCE_EXTRA`]: a whole catch-up, and
/// another after a loss, but not the whole corpus in a loop.
pub const PUSH_ALLOWANCE_PER_DAY: u64 = 2;
/// Documents a day a peer may ask for beyond twice what the two share.
pub const PUSH_ALLOWANCE_EXTRA: u64 = 1_000;

/// A token bucket of [`ASKS_PER_MINUTE`], [`ASKS_BURST`] deep.
#[derive(Debug, Clone, Copy)]
struct AskBudget {
    tokens: f64,
    at: Millis,
    /// Requests dropped since `window`, a minute at most ago.
    dropped: u32,
    window: Millis,
}

impl AskBudget {
    fn new(now: Millis) -> Self {
        Self { tokens: f64::from(ASKS_BURST), at: now, dropped: 0, window: now }
    }

    /// Takes one token: whether the request may be answered.
    fn take(&mut self, now: Millis) -> bool {
        let elapsed = now.saturating_sub(self.at) as f64;
        self.tokens = (self.tokens + elapsed * f64::from(ASKS_PER_MINUTE) / 60_000.0).min(f64::from(ASKS_BURST));
        self.at = now;
        if now.saturating_sub(self.window) > 60_000 {
            self.window = now;
            self.dropped = 0;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

/// How long a connected peer has to say hello (or, to a node not yet in a
/// network, to be the node it joins through) before it is disconnected.
pub const HELLO_DEADLINE_MS: Millis = 30_000;
/// What a peer may send before its hello (its hello included).
pub const MAX_PRE_HELLO_BYTES: usize = 256 * 1024;
/// Peers removed before their session was ready that are owed an `Unlink`
/// when they next say hello; an operator removing more is not remembered.
pub const MAX_UNLINKS_OWED: usize = 1_024;

/// A join in progress: the invitation to present to its issuer.
#[derive(Debug, Clone)]
struct Joining {
    invitation: crate::network::Invitation,
    addrs: Vec<String>,
}

/// One node's replication state and rules. See the module documentation.
#[derive(Debug)]
pub struct Replica {
    me: Me,
    config: ReplicaConfig,
    roster: Option<Roster>,
    book: CertificateBook,
    index: SyncIndex,
    /// When this node last stored a change of each document (receipts).
    stored: HashMap<DocId, Millis>,
    peers: BTreeMap<NodeId, PeerRecord>,
    dirty: BTreeSet<NodeId>,
    links: BTreeMap<NodeId, Link>,
    transfers: transfers::Transfers,
    beats: Beats,
    joining: Option<Joining>,
    /// Hellos received while this node was outside any network (it is
    /// joining): replayed once it has joined. At most one per peer.
    early_hellos: BTreeMap<NodeId, SyncMessage>,
    /// Statements new to this node, pushed to ready peers after the flush
    /// (with the peer they came from, who needs no copy).
    roster_news: Vec<(Option<NodeId>, Vec<SignedStatement>)>,
    counters: Counters,
    out: VecDeque<Output>,
    started: Millis,
    next_beat: Millis,
    next_expiry: Millis,
    /// The links the roster rule chose last (see `links`).
    desired: BTreeMap<NodeId, (Vec<String>, bool)>,
    /// Members stepped over on the rings (not reached for a while).
    away: BTreeSet<NodeId>,
    /// Since when dialling each peer has failed, while it has.
    unreachable: BTreeMap<NodeId, Millis>,
    gossip: gossip::Gossip,
    /// A small generator, seeded by the driver, for jitter.
    rng: u64,
    /// Unlinks on their way (by tag): the connection closes once delivered.
    unlinking: BTreeMap<u64, NodeId>,
    /// Per peer: documents the two leave out of their comparison (see `apart`).
    apart: HashMap<NodeId, BTreeMap<DocId, crate::sync::audience::Apart>>,
    /// Per peer: proposals to leave documents apart, gathered since when.
    differ_out: BTreeMap<NodeId, (Millis, BTreeMap<DocId, String>)>,
    /// Peers the operator removed before their session was ready: told
    /// (`Unlink`) when they next say hello. At most [`MAX_UNLINKS_OWED`].
    unlinks_owed: BTreeSet<NodeId>,
    /// The watchers' nodes, worked out again when the roster or the book changes.
    watchers: std::cell::RefCell<Option<Vec<NodeId>>>,
}

impl Replica {
    /// A replica for `me`, starting at `now` with what the node stored.
    pub fn new(me: Me, config: ReplicaConfig, now: Millis, stored: Persisted) -> Self {
        let Persisted { roster, book, peers, heartbeats, chains } = stored;
        let mut beats = Beats::default();
        for h in heartbeats {
            beats.latest.insert(h.beat.heartbeat.node(), h);
        }
        for c in chains {
            let last = (0, c.anchor);
            beats.chains.insert(c.node, beats::ChainState { chain: c, last });
        }
        // The first heartbeat a few seconds after start (peers are connecting).
        let next_beat = now + (config.heartbeat_ms as i64).min(5_000);
        let rng = config.seed;
        let mut replica = Self {
            me,
            config,
            roster,
            book,
            index: SyncIndex::default(),
            stored: HashMap::new(),
            peers: peers.into_iter().map(|p| (p.node, p)).collect(),
            dirty: BTreeSet::new(),
            links: BTreeMap::new(),
            transfers: transfers::Transfers::default(),
            beats,
            joining: None,
            early_hellos: BTreeMap::new(),
            roster_news: Vec::new(),
            counters: Counters::default(),
            out: VecDeque::new(),
            started: now,
            next_beat,
            next_expiry: now + 60 * 60 * 1000,
            desired: BTreeMap::new(),
            away: BTreeSet::new(),
            unreachable: BTreeMap::new(),
            gossip: gossip::Gossip::default(),
            rng,
            watchers: std::cell::RefCell::new(None),
            unlinking: BTreeMap::new(),
            unlinks_owed: BTreeSet::new(),
            apart: HashMap::new(),
            differ_out: BTreeMap::new(),
        };
        // What the roster chooses now is the baseline: links are made when
        // it changes, not at every start (a peer an operator removed stays so).
        replica.desired = replica.desired_links();
        replica
    }

    /// The replica a restarted node builds from what this one persisted:
    /// roster, certificates, peer records and heartbeats (documents are
    /// told again with [`Replica::doc_changed`]).
    pub fn reloaded(&self, now: Millis) -> Replica {
        let stored = Persisted {
            roster: self.roster.clone(),
            book: self.book.clone(),
            peers: self.peers.values().cloned().collect(),
            heartbeats: self.beats.latest.values().cloned().collect(),
            chains: self.beats.chains.values().map(|c| c.chain.clone()).collect(),
        };
        Replica::new(self.me.clone(), self.config.clone(), now, stored)
    }

    /// The next thing to do, if any.
    pub fn poll(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// This node.
    pub fn me(&self) -> &Me {
        &self.me
    }

    /// The roster, once this node is in a network.
    pub fn roster(&self) -> Option<&Roster> {
        self.roster.as_ref()
    }

    /// The certificates this node knows (what verification reads).
    pub fn book(&self) -> &CertificateBook {
        &self.book
    }

    /// What this node shares with whom.
    pub fn index(&self) -> &SyncIndex {
        &self.index
    }

    /// What the core counted since start.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        c.prunes = self.gossip.prunes;
        c.grafts = self.gossip.grafts;
        c
    }

    /// The longest interval between two rounds with a peer in sync: 64
    /// times the base, at most [`MAX_ROUND_INTERVAL_MS`] (never below the base).
    pub fn max_interval(&self) -> Millis {
        let base = self.config.anti_entropy_ms as Millis;
        (base * 64).min(MAX_ROUND_INTERVAL_MS).max(base)
    }

    /// A number from the driver's seed, for jitter (splitmix64).
    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Something changed with `peer` (or may have): rounds with it start
    /// over from the base interval.
    fn reset_round(&mut self, now: Millis, peer: &NodeId) {
        let base = self.config.anti_entropy_ms as Millis;
        if let Some(l) = self.links.get_mut(peer)
            && l.interval > base
        {
            l.interval = base;
            l.next_round = l.next_round.min(now + base);
        }
    }

    /// A round found `peer` in sync: the next one waits twice as long.
    fn stretch_round(&mut self, now: Millis, peer: &NodeId) -> bool {
        let max = self.max_interval();
        let jitter = self.random();
        let Some(l) = self.links.get_mut(peer) else { return false };
        l.interval = (l.interval * 2).min(max);
        // Up to a tenth more, so two peers do not start rounds together.
        l.next_round = now + l.interval + (jitter % (l.interval as u64 / 10 + 1)) as Millis;
        // Tell the peer our summary too, unless we just did: both sides learn they agree.
        now - l.last_summary > l.interval / 4
    }

    /// The heartbeats this node keeps.
    pub fn beats(&self) -> &Beats {
        &self.beats
    }

    /// Every peer record (strangers while they are connected included).
    pub fn peers(&self) -> impl Iterator<Item = &PeerRecord> {
        self.peers.values()
    }

    /// Whether a peer's record is worth keeping: an operator (or a join)
    /// chose it, or the roster registers its key to a member. Strangers
    /// leave nothing behind: no stored record, no line in heartbeats.
    pub fn is_known_peer(&self, node: &NodeId) -> bool {
        self.peers.get(node).is_some_and(|r| r.configured)
            || self.roster.as_ref().is_some_and(|r| r.commune_of_node(node).is_some_and(|c| r.is_member(&c)))
    }

    /// One peer's record.
    pub fn peer(&self, node: &NodeId) -> Option<&PeerRecord> {
        self.peers.get(node)
    }

    /// Whether a connection with `node` is up.
    pub fn is_connected(&self, node: &NodeId) -> bool {
        self.links.contains_key(node)
    }

    /// Whether `node` is connected, identified and admitted, and rosters
    /// agree (documents flow).
    pub fn is_ready(&self, node: &NodeId) -> bool {
        self.session(node).is_some_and(|s| s.phase() == crate::sync::session::Phase::Ready)
    }

    /// Peers whose sessions are ready.
    pub fn ready_peers(&self) -> Vec<NodeId> {
        self.links.keys().filter(|n| self.is_ready(n)).copied().collect()
    }

    /// When this node last stored a change of `doc` (ms), if it holds it.
    pub fn stored_ms(&self, doc: &DocId) -> Option<Millis> {
        self.stored.get(doc).copied()
    }

    fn session(&self, node: &NodeId) -> Option<&Session> {
        self.links.get(node).and_then(|l| l.session.as_ref())
    }

    /// Peer records changed since the last call, to persist with the batch.
    pub fn take_dirty_peers(&mut self) -> DirtyPeers {
        let dirty = std::mem::take(&mut self.dirty);
        dirty.iter().filter(|n| self.is_known_peer(n)).filter_map(|n| self.peers.get(n).cloned()).collect()
    }

    fn peer_mut(&mut self, node: NodeId) -> &mut PeerRecord {
        self.dirty.insert(node);
        self.peers.entry(node).or_insert_with(|| PeerRecord::new(node))
    }

    fn push(&mut self, output: Output) {
        self.out.push_back(output);
    }

    /// Encodes a message for `to` and counts its bytes.
    fn send(&mut self, to: NodeId, msg: &SyncMessage) {
        self.send_tagged(to, msg, None);
    }

    fn send_tagged(&mut self, to: NodeId, msg: &SyncMessage, tag: Option<u64>) {
        let (bytes, plain) = msg.encode_counted();
        self.peer_mut(to).bytes_out += bytes.len() as u64 + 4;
        let t = self.counters.traffic.entry(msg.kind()).or_default();
        t.messages_out += 1;
        t.bytes_out += bytes.len() as u64 + 4;
        if let SyncMessage::Docs { headers, changes, .. } | SyncMessage::Push { headers, changes, .. } = msg {
            self.counters.frames_sent.add(headers, changes, plain, bytes.len());
        }
        self.push(Output::Send { to, kind: msg.kind(), bytes, tag });
    }

    /// Sends a message the node composed itself (a join's welcome or
    /// refusal, answered after checking its invitations).
    pub fn send_message(&mut self, to: NodeId, msg: &SyncMessage) {
        self.send(to, msg);
    }

    /// A document's heads changed (a local write or an ingest, before the
    /// flush): the index and the fingerprints follow at once.
    pub fn doc_changed(&mut self, doc: DocId, audience: Audience, heads: Vec<[u8; 32]>, stored_ms: Millis) {
        self.index.set(doc, audience, heads);
        self.stored.insert(doc, stored_ms);
    }

    /// A certificate, from a peer or a bundle: kept if it verifies, is new,
    /// and (in a network) certifies a key the roster registers to that
    /// commune — a commune cannot bind a key it did not register.
    pub fn learn_certificate(&mut self, cert: crate::certificate::NodeCertificate) -> bool {
        if let Some(roster) = &self.roster
            && roster.commune_of_node(&cert.node) != Some(cert.commune)
        {
            return false;
        }
        if self.book.insert(cert.clone()).unwrap_or(false) {
            self.watchers.replace(None);
            self.push(Output::Persist(Persist::Certificate(cert)));
            true
        } else {
            false
        }
    }

    /// The delivery rate measured towards a peer: frames for it are sized
    /// to take about a second.
    pub fn link_rate(&mut self, node: NodeId, bytes_per_s: u64) {
        self.peer_mut(node).link_bytes_per_s = Some(bytes_per_s);
    }

    /// Dialling a peer failed.
    pub fn dial_failed(&mut self, now: Millis, node: NodeId, error: String) {
        self.peer_mut(node).last_error = Some(format!("dial failed: {error}"));
        if !self.links.contains_key(&node) {
            self.unreachable.entry(node).or_insert(now);
        }
    }

    /// Time passes: anti-entropy rounds, announcements, grafts and
    /// heartbeats that are due.
    pub fn tick(&mut self, now: Millis, docs: &mut impl DocSource) {
        self.hello_deadlines(now);
        self.reroute_if_watchers_changed(now);
        self.flush_haves(now);
        self.flush_differs(now);
        self.graft_due(now, docs);
        self.flush_beats(now);
        let due: Vec<NodeId> = self.links.iter().filter(|(_, l)| l.next_round <= now).map(|(n, _)| *n).collect();
        for peer in due {
            if let Some(link) = self.links.get_mut(&peer) {
                link.next_round = now + link.interval;
            }
            // A round during a transfer would list it again: the transfer
            // goes on first (frames lost in a cut are sent again).
            if self.transfers.frames_out(&peer) > 0 {
                continue;
            }
            self.fill(peer, docs);
            if self.transfers.frames_out(&peer) == 0 {
                self.start_round(now, peer, docs);
            }
        }
        if now >= self.next_beat {
            self.next_beat = now + self.config.heartbeat_ms.max(1_000) as i64;
            self.heartbeat_due(now, docs);
            self.check_away(now);
            self.expire_apart(now);
        } else if now >= self.next_pulse() {
            self.pulse_if_due(now);
        }
        if now >= self.next_expiry {
            self.next_expiry = now + 60 * 60 * 1000;
            self.expire_beats(now);
        }
    }

    /// The earliest time an input of [`Replica::tick`] has work to do.
    pub fn next_wake(&self) -> Millis {
        self.links
            .values()
            .map(|l| l.next_round)
            .min()
            .unwrap_or(Millis::MAX)
            .min(self.next_beat)
            .min(self.next_expiry)
            .min(self.gossip_wake())
            .min(self.differ_wake())
            .min(self.beats_wake())
    }
}
