//! Heartbeats that scale: each node says how it is when that changes (a
//! full, signed [`Heartbeat`], with a new [`PulseChain`]) and otherwise
//! only that it is still there: a [`Pulse`] of 30 bytes every
//! [`PULSE_EVERY_MS`], on a grid every node shares, so pulses meet and
//! travel in the same batches. They are carried towards the nodes that
//! watch — the coordinators — not kept by every node.
//!
//! Each node knows how many hops it is from each watcher: its neighbours
//! tell it (`Routes`, sent when their distances change — a distance
//! vector, with split horizon and 16 as infinity), and its route towards a
//! watcher is the neighbour nearest it (the smallest id among equals, so
//! routes stay put while nothing changes). Every node's words go hop by
//! hop along those routes towards every watcher, each node passing on only
//! what is newer than what it passed on before; pulses of one grid point
//! leave together once those that came the same way last time are in.
//! A watcher keeps every node's latest full heartbeat and pulse chain, and
//! forgets what is older than [`BEAT_EXPIRY_MS`] or no longer admitted;
//! other nodes keep their own, and the chains of the nodes whose pulses
//! they carry.

use std::collections::{BTreeMap, HashMap};

use crate::heartbeat::{
    Heartbeat, HeartbeatError, MAX_CLOCK_AHEAD_MS, MAX_COUNTS, MAX_PEERS, PeerBeat, Pulse, PulseChain, SignedHeartbeat,
    StoredHeartbeat,
};
use crate::ids::{CommuneId, NodeId};
use crate::network::Role;
use crate::sync::message::{MAX_BEATS_WANTED, MAX_HEARTBEATS, MAX_PULSES, SyncMessage};
use crate::sync::session::Effect;

use super::io::{Event, Output, Persist};
use super::{DocSource, Millis, Replica};

/// A node with nothing new to say pulses this often, on a shared grid.
pub const PULSE_EVERY_MS: Millis = 8 * 60 * 1000;
/// A node says its full status at least this often, changed or not.
pub const FULL_EVERY_MS: Millis = 6 * 60 * 60 * 1000;
/// After its first full heartbeat, a node says it again this long after
/// the one before, changed or not: while a network forms, links come and
/// go and a heartbeat lost on the way would otherwise wait for the next
/// change (or [`FULL_EVERY_MS`]) to reach the coordinators.
pub const EARLY_FULLS_MS: [Millis; 3] = [2 * 60 * 1000, 8 * 60 * 1000, 20 * 60 * 1000];
/// Heartbeats and chains waiting to go to one peer are sent together
/// after this.
pub const BEAT_BATCH_MS: Millis = 10_000;
/// Pulses of one grid point wait for those of the nodes that came through
/// the same way last time, at most this long after the first of them.
pub const PULSE_WAIT_MS: Millis = 10_000;
/// A watcher forgets nodes it has not heard of for this long.
pub const BEAT_EXPIRY_MS: Millis = 7 * 24 * 60 * 60 * 1000;
/// Pulses of nodes on one grid point spread over this much time.
const PULSE_SPREAD_MS: Millis = 5_000;
/// A node asks for, or passes on, a want of one node's full status at
/// most this often.
pub const WANT_AGAIN_MS: Millis = 60 * 1000;
/// A node says its full status again for a want at most this often (a
/// watcher asks at most once a pulse period).
pub const ANSWER_AGAIN_MS: Millis = PULSE_EVERY_MS / 2;
/// Hops that mean "unreachable" in a distance vector.
pub const UNREACHABLE: u8 = 16;

/// The pulse chain of a node, and the last of its pulses checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    /// The chain.
    pub chain: PulseChain,
    /// The last pulse checked: its index and value (0 and the anchor at first).
    pub last: (u16, [u8; 16]),
}

impl ChainState {
    /// When the node was last heard of by this chain (ms).
    pub fn heard_ms(&self) -> u64 {
        if self.last.0 == 0 { 0 } else { self.chain.due(self.last.0) / 1000 * 1000 }
    }
}

/// This node's own chain and its values.
#[derive(Debug)]
struct OwnChain {
    chain: PulseChain,
    values: Vec<[u8; 16]>,
    next: u16,
}

/// Words waiting to go to one peer.
#[derive(Debug, Default)]
struct Outbox {
    since: Millis,
    beats: Vec<SignedHeartbeat>,
    chains: Vec<PulseChain>,
    pulses: Vec<Pulse>,
}

/// The pulses of one grid point waiting to go to one peer: they leave
/// together once every node whose pulse went that way at the last point
/// has its pulse here (or at the deadline), so each link carries one
/// message of pulses per point.
#[derive(Debug, Default)]
struct PulseBatch {
    point: u64,
    pulses: Vec<Pulse>,
    expected: std::collections::HashSet<[u8; 8]>,
    deadline: Millis,
}

/// The nodes whose pulses went to a peer: the grid point, those of the
/// point before it, and those of that point so far.
type PointSets = (u64, std::collections::HashSet<[u8; 8]>, std::collections::HashSet<[u8; 8]>);

/// Heartbeats, chains and pulses known here, and where they go.
#[derive(Debug, Default)]
pub struct Beats {
    /// The latest full heartbeat of each node kept here.
    pub latest: HashMap<NodeId, StoredHeartbeat>,
    /// The pulse chain of each node whose words passed here.
    pub chains: HashMap<NodeId, ChainState>,
    /// Per watcher: the neighbour nearest it, and this node's hops to it.
    routes: HashMap<NodeId, (NodeId, u8)>,
    /// Per neighbour: its hops to each watcher, as it last said.
    theirs: HashMap<NodeId, HashMap<NodeId, u8>>,
    /// Per neighbour: the distances last told it.
    told: HashMap<NodeId, Vec<(NodeId, u8)>>,
    /// Per node: the time of the latest full heartbeat, chain start and
    /// pulse of it passed on (so nothing goes round twice).
    passed: HashMap<NodeId, [u64; 3]>,
    out: BTreeMap<NodeId, Outbox>,
    pulses_out: BTreeMap<NodeId, PulseBatch>,
    /// Per peer: the nodes whose pulses went to it at the last points
    /// (the point before the latest, and the latest so far).
    last_point: HashMap<NodeId, PointSets>,
    /// What this node's last full heartbeat said (everything but times).
    material: Option<Vec<u8>>,
    last_full: Millis,
    /// Full heartbeats made since the node started (see [`EARLY_FULLS_MS`]).
    fulls: usize,
    own: Option<OwnChain>,
    /// This node's latest words, not yet passed towards every watcher.
    own_unsent: bool,
    /// The watchers routes were worked out for.
    routed_for: Vec<NodeId>,
    /// Per node: the neighbour its latest new words came from, the way
    /// back to it for a `BeatsWanted`.
    came_from: HashMap<NodeId, NodeId>,
    /// Per node: when a want of its full status last left here.
    wanted: HashMap<NodeId, Millis>,
    /// A watcher wants this node's full status: it says it at the next check.
    full_wanted: bool,
}

impl Beats {
    /// When the latest word of `node` (full heartbeat or pulse) was made.
    pub fn last_heard(&self, node: &NodeId) -> Option<u64> {
        let full = self.latest.get(node).map(|h| h.beat.heartbeat.time_ms);
        let pulse = self.chains.get(node).map(ChainState::heard_ms).filter(|t| *t > 0);
        full.max(pulse)
    }
}

/// What a heartbeat says, without the times that move on their own.
fn material(h: &Heartbeat) -> Vec<u8> {
    let mut m = h.clone();
    m.time_ms = 0;
    m.uptime_s = 0;
    // Disk use in steps of about a tenth.
    m.disk_bytes = ((m.disk_bytes.max(1) as f64).ln() / 1.1f64.ln()) as u64;
    for p in &mut m.peers {
        p.last_sync_ms = 0;
    }
    SignedHeartbeat { heartbeat: m, signature: [0; 64] }.encode()
}

/// Which of a node's words: full heartbeat, chain, pulse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Full = 0,
    Chain = 1,
    Pulse = 2,
}

impl Replica {
    /// The nodes that watch: the coordinators' nodes (the one each joined
    /// with, and the keys its commune certified since, not revoked).
    pub fn watchers(&self) -> Vec<NodeId> {
        if let Some(w) = self.watchers.borrow().as_ref() {
            return w.clone();
        }
        let Some(roster) = &self.roster else { return Vec::new() };
        let coordinators: Vec<CommuneId> =
            roster.members().filter(|m| m.role == Role::Coordinator).map(|m| m.commune).collect();
        let mut out: Vec<NodeId> = roster
            .members()
            .filter(|m| m.role == Role::Coordinator)
            .filter_map(|m| m.node.filter(|n| !roster.is_revoked(n, &m.commune)))
            .collect();
        for cert in self.book.iter().filter(|c| coordinators.contains(&c.commune)) {
            if !roster.is_revoked(&cert.node, &cert.commune) && !out.contains(&cert.node) {
                out.push(cert.node);
            }
        }
        out.sort();
        *self.watchers.borrow_mut() = Some(out.clone());
        out
    }

    fn is_watcher(&self, node: &NodeId) -> bool {
        self.watchers().contains(node)
    }

    /// The commune a node key speaks for, as far as this node knows.
    pub(super) fn commune_of_node(&self, node: &NodeId) -> Option<CommuneId> {
        self.book
            .commune_of(node)
            .or_else(|| self.roster.as_ref()?.members().find(|m| m.node == Some(*node)).map(|m| m.commune))
    }

    /// The admitted node whose key starts with `prefix`, if this node knows it.
    fn node_by_prefix(&self, prefix: &[u8; 8]) -> Option<NodeId> {
        let roster = self.roster.as_ref()?;
        let hit = |n: &NodeId| &n.as_bytes()[..8] == prefix;
        roster
            .members()
            .filter_map(|m| m.node)
            .find(|n| hit(n))
            .or_else(|| self.book.iter().map(|c| c.node).find(|n| hit(n)))
            .or_else(|| self.beats.chains.keys().copied().find(|n| hit(n)))
    }

    /// Shared documents stored here after `peer`'s last in-sync round: what
    /// it has not acknowledged at their current state.
    pub fn unacknowledged(&self, record: &super::PeerRecord) -> Option<(u64, u64)> {
        let roster = self.roster.as_ref()?;
        let commune = record.commune.as_deref()?.parse::<CommuneId>().ok()?;
        let synced = record.last_sync_ms;
        let (mut shared, mut pending) = (0, 0);
        for (doc, stored) in &self.stored {
            if !self.index.may_share(doc, &commune, roster) {
                continue;
            }
            shared += 1;
            if synced.is_none_or(|s| *stored > s) {
                pending += 1;
            }
        }
        Some((shared, pending))
    }

    /// This node's status now.
    fn own_status(&mut self, now: Millis, docs: &mut impl DocSource) -> Option<Heartbeat> {
        let network = self.roster.as_ref()?.network();
        // Strangers (neither chosen nor admitted) are not listed.
        let nodes: Vec<NodeId> = self.peers.keys().filter(|n| self.is_known_peer(n)).copied().collect();
        let mut peers = Vec::new();
        for node in nodes {
            let queued = self.transfers.queue_len(&node, docs);
            let record = &self.peers[&node];
            peers.push(PeerBeat {
                node,
                connected: self.is_ready(&node),
                last_contact_ms: record.last_connected_ms.unwrap_or(0).max(0) as u64,
                last_sync_ms: record.last_sync_ms.unwrap_or(0).max(0) as u64,
                unacknowledged: self.unacknowledged(record).map_or(0, |(_, p)| p),
                queued,
            });
        }
        // The most recently in touch first, if there are more than a heartbeat lists.
        peers.sort_by_key(|p| std::cmp::Reverse(p.last_contact_ms));
        peers.truncate(MAX_PEERS);
        let status = docs.local_status();
        let mut documents = status.documents;
        documents.truncate(MAX_COUNTS);
        let mut rejected: BTreeMap<String, u64> = status.rejected.into_iter().collect();
        for (code, n) in &self.counters.rejected {
            *rejected.entry(code.clone()).or_default() += n;
        }
        Some(Heartbeat {
            network,
            certificate: self.me.certificate.clone(),
            time_ms: now.max(0) as u64,
            version: self.config.version.clone(),
            uptime_s: ((now - self.started).max(0) / 1000) as u64,
            peers,
            documents,
            disk_bytes: status.disk_bytes,
            rejected: rejected.into_iter().take(MAX_COUNTS).collect(),
        })
    }

    fn pulse_every(&self) -> Millis {
        PULSE_EVERY_MS.max(self.config.heartbeat_ms as Millis)
    }

    /// This node's place in a grid point's spread of pulses.
    fn pulse_offset(&self) -> Millis {
        let node = self.me.node();
        let b = node.as_bytes();
        (Millis::from(b[0]) * 256 + Millis::from(b[1])) % PULSE_SPREAD_MS
    }

    /// Time to see how this node is: a full heartbeat and a new chain if
    /// that changed (or at least every [`FULL_EVERY_MS`]); else the pulse
    /// due on the grid, if any.
    pub(super) fn heartbeat_due(&mut self, now: Millis, docs: &mut impl DocSource) {
        let Some(status) = self.own_status(now, docs) else { return };
        let m = material(&status);
        let changed = self.beats.material.as_ref() != Some(&m);
        let offset = self.pulse_offset();
        let exhausted = self.beats.own.as_ref().is_none_or(|o| o.next > o.chain.count);
        let early = self
            .beats
            .fulls
            .checked_sub(1)
            .and_then(|i| EARLY_FULLS_MS.get(i))
            .is_some_and(|after| now - self.beats.last_full >= *after);
        let wanted = std::mem::take(&mut self.beats.full_wanted);
        if changed || exhausted || early || wanted || now - self.beats.last_full >= FULL_EVERY_MS {
            let Some(network) = self.roster.as_ref().map(|r| r.network()) else { return };
            let beat = SignedHeartbeat::sign(status, &self.me.node_key);
            let every = self.pulse_every();
            let start = now.max(0) / every * every;
            let count = (FULL_EVERY_MS / every + 1) as u16;
            let (chain, values) = PulseChain::make(&network, &self.me.node_key, start as u64, every as u32, count);
            self.beats.material = Some(m);
            self.beats.last_full = now;
            self.beats.fulls += 1;
            self.beats.own = Some(OwnChain { chain, values, next: 1 });
            self.keep(StoredHeartbeat { beat, received_ms: now, via: None });
            self.beats.own_unsent = true;
        } else {
            self.pulse_due(now, offset);
        }
        self.send_own(now);
    }

    /// Sends this node's pulse if one is due on the grid.
    pub(super) fn pulse_due(&mut self, now: Millis, offset: Millis) {
        if let Some(own) = self.beats.own.as_mut()
            && own.next <= own.chain.count
            && own.chain.due(own.next) as Millis + offset <= now
        {
            // Pulses missed while the node was busy are skipped: the latest one says it all.
            while own.next < own.chain.count && (own.chain.due(own.next + 1) as Millis) <= now {
                own.next += 1;
            }
            if let Some(pulse) = Pulse::of(&own.chain, &own.values, own.next) {
                let token = pulse.token;
                own.next += 1;
                let node = self.me.node();
                let chain = own.chain.clone();
                let state = self.beats.chains.entry(node).or_insert(ChainState { chain, last: (0, [0; 16]) });
                state.last = (pulse.index, token);
                self.beats.own_unsent = true;
            }
        }
        self.send_own(now);
    }

    /// Sends this node's pulse if one is due now (between status checks).
    pub(super) fn pulse_if_due(&mut self, now: Millis) {
        let offset = self.pulse_offset();
        self.pulse_due(now, offset);
    }

    /// When this node's next pulse is due.
    pub(super) fn next_pulse(&self) -> Millis {
        match &self.beats.own {
            Some(o) if o.next <= o.chain.count => o.chain.due(o.next) as Millis + self.pulse_offset(),
            _ => Millis::MAX,
        }
    }

    /// Passes this node's latest words on: a watcher's to the whole tree,
    /// anyone else's towards each watcher.
    fn send_own(&mut self, now: Millis) {
        if !self.beats.own_unsent {
            return;
        }
        let me = self.me.node();
        let full = self.beats.latest.get(&me).map(|h| h.beat.clone());
        let chain = self.beats.own.as_ref().map(|o| o.chain.clone());
        let pulse = self.beats.own.as_ref().and_then(|o| Pulse::of(&o.chain, &o.values, o.next.saturating_sub(1)));
        let targets = self.route_peers(None);
        if targets.is_empty() {
            return;
        }
        self.beats.own_unsent = false;
        let passed = self.beats.passed.entry(me).or_default();
        let mut words = Outbox::default();
        if let Some(f) = full.filter(|f| f.heartbeat.time_ms > passed[0]) {
            passed[0] = f.heartbeat.time_ms;
            words.beats.push(f);
        }
        if let Some(c) = chain.filter(|c| c.start_ms > passed[1] || words.beats.len() == 1) {
            passed[1] = c.start_ms;
            words.chains.push(c);
        }
        if let Some(p) = pulse.filter(|p| p.time_ms() > passed[2]) {
            passed[2] = p.time_ms();
            words.pulses.push(p);
        }
        for peer in targets {
            self.queue_words(now, peer, &words);
        }
    }

    /// The neighbours towards the watchers a word from `from` is for
    /// (deduplicated): every watcher for this node's own words; for a word
    /// passed on, those `from` reaches through this node (it told this node
    /// "unreachable" for them: split horizon), so each word follows one
    /// path to each watcher.
    fn route_peers(&self, from: Option<NodeId>) -> Vec<NodeId> {
        let me = self.me.node();
        let theirs = from.and_then(|f| self.beats.theirs.get(&f));
        let mut out: Vec<NodeId> = self
            .watchers()
            .into_iter()
            .filter(|w| *w != me)
            .filter(|w| theirs.is_none_or(|t| t.get(w).is_none_or(|h| *h >= UNREACHABLE)))
            .filter_map(|w| self.beats.routes.get(&w).map(|(via, _)| *via))
            .filter(|via| Some(*via) != from && self.is_ready(via))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Works out this node's distance to each watcher and the neighbour
    /// towards it, and tells the neighbours what changed.
    pub(super) fn reroute(&mut self, now: Millis) {
        let me = self.me.node();
        self.beats.routed_for = self.watchers();
        let ready = self.ready_peers();
        let mut routes = HashMap::new();
        for w in self.watchers() {
            if w == me {
                continue;
            }
            let best = ready
                .iter()
                .filter_map(|p| {
                    let h = if *p == w { 0 } else { *self.beats.theirs.get(p)?.get(&w)? };
                    (h < UNREACHABLE - 1).then_some((h + 1, *p))
                })
                .min();
            if let Some((hops, via)) = best {
                routes.insert(w, (via, hops));
            }
        }
        let moved = routes.iter().any(|(w, r)| self.beats.routes.get(w).map(|x| x.0) != Some(r.0));
        self.beats.routes = routes;
        if moved {
            // A new way: this node's own words go along it, all of them (the
            // nodes on it need its chain to check its pulses).
            self.beats.own_unsent = true;
            if let Some(passed) = self.beats.passed.get_mut(&me) {
                *passed = [0; 3];
            }
        }
        for peer in ready {
            self.tell_routes(peer);
        }
        self.send_own(now);
    }

    /// Tells `peer` this node's distances (what changed since last told).
    fn tell_routes(&mut self, peer: NodeId) {
        let hops = self.routes_for(peer);
        if self.beats.told.get(&peer) == Some(&hops) {
            return;
        }
        self.beats.told.insert(peer, hops.clone());
        self.send(peer, &SyncMessage::Routes { hops });
    }

    /// This node's distances for a hello to `peer`, noted as told.
    pub(super) fn hello_routes(&mut self, peer: NodeId) -> Vec<(NodeId, u8)> {
        let hops = self.routes_for(peer);
        self.beats.told.insert(peer, hops.clone());
        hops
    }

    /// This node's distances as told to `peer`, saying "unreachable" for
    /// watchers reached through it (split horizon).
    fn routes_for(&self, peer: NodeId) -> Vec<(NodeId, u8)> {
        let me = self.me.node();
        // A watcher already receives every node's words: it says it is two
        // hops further from the other watchers than it is, so that their
        // words go round it when another way is about as short.
        let detour = if self.is_watcher(&me) { 2 } else { 0 };
        let mut hops: Vec<(NodeId, u8)> = self
            .watchers()
            .into_iter()
            .map(|w| match self.beats.routes.get(&w) {
                _ if w == me => (w, 0),
                Some((via, _)) if *via == peer => (w, UNREACHABLE),
                Some((_, h)) => (w, (*h + detour).min(UNREACHABLE - 1)),
                None => (w, UNREACHABLE),
            })
            .collect();
        hops.truncate(crate::sync::message::MAX_ROUTES);
        hops
    }

    /// The neighbour towards `watcher`, if any.
    pub fn route_to(&self, watcher: &NodeId) -> Option<NodeId> {
        self.beats.routes.get(watcher).map(|(via, _)| *via)
    }

    /// Routes again if the watchers changed (the roster or the book did).
    pub(super) fn reroute_if_watchers_changed(&mut self, now: Millis) {
        if self.watchers() != self.beats.routed_for {
            self.reroute(now);
        }
    }

    /// A neighbour's distances to the watchers.
    pub(super) fn on_routes(&mut self, now: Millis, from: NodeId, hops: Vec<(NodeId, u8)>) {
        let watchers = self.watchers();
        let theirs: HashMap<NodeId, u8> =
            hops.into_iter().filter(|(w, _)| watchers.contains(w)).map(|(w, h)| (w, h.min(UNREACHABLE))).collect();
        self.beats.theirs.insert(from, theirs);
        self.reroute(now);
    }

    fn queue_words(&mut self, now: Millis, peer: NodeId, words: &Outbox) {
        let out = self.beats.out.entry(peer).or_insert_with(|| Outbox { since: now, ..Outbox::default() });
        for b in &words.beats {
            out.beats.retain(|x| x.heartbeat.node() != b.heartbeat.node());
            if out.beats.len() < MAX_HEARTBEATS {
                out.beats.push(b.clone());
            }
        }
        for c in &words.chains {
            out.chains.retain(|x| x.node != c.node);
            if out.chains.len() < MAX_PULSES {
                out.chains.push(c.clone());
            }
        }
        if out.beats.is_empty() && out.chains.is_empty() && out.pulses.is_empty() {
            self.beats.out.remove(&peer);
        }
        let every = self.pulse_every() as u64;
        for p in &words.pulses {
            let point = p.time_ms() / every;
            if self.beats.pulses_out.get(&peer).is_some_and(|b| b.point != point) {
                self.flush_pulses(peer);
            }
            // Those that came this way at the point before wait for each other.
            let expected = match self.beats.last_point.get(&peer) {
                Some((at, before, latest)) if *at == point => {
                    let mut e = before.clone();
                    e.retain(|x| !latest.contains(x));
                    e
                }
                Some((_, _, latest)) => latest.clone(),
                None => Default::default(),
            };
            let batch = self.beats.pulses_out.entry(peer).or_insert_with(|| PulseBatch {
                point,
                pulses: Vec::new(),
                expected,
                deadline: now + PULSE_WAIT_MS,
            });
            batch.pulses.retain(|x| x.node != p.node);
            if batch.pulses.len() < MAX_PULSES {
                batch.pulses.push(p.clone());
            }
            batch.expected.remove(&p.node);
            if batch.expected.is_empty() {
                self.flush_pulses(peer);
            }
        }
    }

    /// Sends the pulses waiting for `peer`.
    fn flush_pulses(&mut self, peer: NodeId) {
        let Some(batch) = self.beats.pulses_out.remove(&peer) else { return };
        if batch.pulses.is_empty() || !self.is_ready(&peer) {
            return;
        }
        let sent = batch.pulses.iter().map(|p| p.node);
        match self.beats.last_point.get_mut(&peer) {
            Some((at, _, latest)) if *at == batch.point => latest.extend(sent),
            Some(entry) => {
                let before = std::mem::take(&mut entry.2);
                *entry = (batch.point, before, sent.collect());
            }
            None => {
                self.beats.last_point.insert(peer, (batch.point, Default::default(), sent.collect()));
            }
        }
        self.send(peer, &SyncMessage::Pulses { chains: Vec::new(), pulses: batch.pulses });
    }

    /// Sends the batches of words that waited long enough.
    pub(super) fn flush_beats(&mut self, now: Millis) {
        let late: Vec<NodeId> =
            self.beats.pulses_out.iter().filter(|(_, b)| b.deadline <= now).map(|(p, _)| *p).collect();
        for peer in late {
            self.flush_pulses(peer);
        }
        let due: Vec<NodeId> =
            self.beats.out.iter().filter(|(_, o)| now - o.since >= BEAT_BATCH_MS).map(|(p, _)| *p).collect();
        for peer in due {
            let Some(o) = self.beats.out.remove(&peer) else { continue };
            if !self.is_ready(&peer) {
                continue;
            }
            if !o.beats.is_empty() {
                self.send(peer, &SyncMessage::Heartbeats { beats: o.beats });
            }
            if !o.chains.is_empty() || !o.pulses.is_empty() {
                self.send(peer, &SyncMessage::Pulses { chains: o.chains, pulses: o.pulses });
            }
        }
    }

    /// The earliest time a batch of words or this node's pulse is due.
    pub(super) fn beats_wake(&self) -> Millis {
        let pulses = self.beats.pulses_out.values().map(|b| b.deadline).min().unwrap_or(Millis::MAX);
        self.beats
            .out
            .values()
            .map(|o| o.since + BEAT_BATCH_MS)
            .min()
            .unwrap_or(Millis::MAX)
            .min(self.next_pulse())
            .min(pulses)
    }

    /// A peer became ready: it learns this node's distances to the
    /// watchers, and routes are worked out again.
    pub(super) fn beats_on_ready(&mut self, now: Millis, peer: NodeId) {
        // Our hello told the peer our routes: only what changed since goes.
        self.tell_routes(peer);
        self.reroute(now);
    }

    /// A peer's connection closed: routes through it are gone.
    pub(super) fn beats_on_gone(&mut self, now: Millis, peer: &NodeId) {
        self.beats.came_from.retain(|_, via| via != peer);
        self.beats.theirs.remove(peer);
        self.beats.told.remove(peer);
        self.beats.out.remove(peer);
        self.beats.pulses_out.remove(peer);
        self.beats.last_point.remove(peer);
        self.reroute(now);
    }

    fn keep(&mut self, stored: StoredHeartbeat) {
        let node = stored.beat.heartbeat.node();
        self.push(Output::Persist(Persist::Heartbeat(Box::new(stored.clone()))));
        self.push(Output::Event(Event::Heartbeat(node)));
        self.beats.latest.insert(node, stored);
    }

    /// Whether this node keeps the words of `origin`: watchers keep every
    /// node's; others only their own.
    fn keeps(&self, origin: &NodeId) -> bool {
        *origin == self.me.node() || self.is_watcher(&self.me.node())
    }

    /// A word of `origin` arrived from `from`: it goes on towards the
    /// watchers. Returns whether it was new here.
    fn pass_on(&mut self, now: Millis, from: NodeId, origin: NodeId, kind: Kind, time: u64, words: Outbox) -> bool {
        let passed = self.beats.passed.entry(origin).or_default();
        if passed[kind as usize] >= time {
            return false;
        }
        passed[kind as usize] = time;
        self.beats.came_from.insert(origin, from);
        for peer in self.route_peers(Some(from)) {
            self.queue_words(now, peer, &words);
        }
        true
    }

    /// Full heartbeats from `from`: each is checked; the newer ones are
    /// kept where they should be and passed on. Forged ones count as
    /// faults of the sender; the others (a node not admitted yet here, a
    /// clock ahead) are only refused.
    pub(super) fn on_heartbeats(
        &mut self,
        now: Millis,
        from: NodeId,
        beats: Vec<SignedHeartbeat>,
        docs: &mut impl DocSource,
    ) {
        let Some(roster) = self.roster.clone() else { return };
        for beat in beats {
            if let Err(e) = beat.check(&roster, now.max(0) as u64) {
                self.refuse_word(now, from, &beat.heartbeat.node(), &e, docs);
                continue;
            }
            let node = beat.heartbeat.node();
            if node == self.me.node() {
                continue;
            }
            self.learn_certificate(beat.heartbeat.certificate.clone());
            let time = beat.heartbeat.time_ms;
            let newer = self.beats.latest.get(&node).is_none_or(|h| h.beat.heartbeat.time_ms < time);
            if newer && self.keeps(&node) {
                self.keep(StoredHeartbeat { beat: beat.clone(), received_ms: now, via: Some(from) });
            }
            let words = Outbox { beats: vec![beat], ..Outbox::default() };
            self.pass_on(now, from, node, Kind::Full, time, words);
        }
    }

    /// Pulse chains and pulses from `from`: checked, kept where they should
    /// be, passed on. A forged chain is a fault of the sender; a pulse that
    /// does not fit its node's chain is only refused.
    pub(super) fn on_pulses(
        &mut self,
        now: Millis,
        from: NodeId,
        chains: Vec<PulseChain>,
        pulses: Vec<Pulse>,
        docs: &mut impl DocSource,
    ) {
        let Some(roster) = self.roster.clone() else { return };
        let network = roster.network();
        let ahead = now.max(0) as u64 + MAX_CLOCK_AHEAD_MS;
        for chain in chains {
            let checked = chain.verify(&network).and_then(|()| {
                let commune = self.commune_of_node(&chain.node).ok_or_else(|| {
                    HeartbeatError::NotAMember(format!("node {} is not known here", chain.node.short()))
                })?;
                roster.node_admitted(&chain.node, &commune).map_err(HeartbeatError::NotAMember)?;
                if chain.start_ms > ahead {
                    return Err(HeartbeatError::FromTheFuture(chain.start_ms - now.max(0) as u64));
                }
                Ok(())
            });
            if let Err(e) = checked {
                self.refuse_word(now, from, &chain.node, &e, docs);
                continue;
            }
            let node = chain.node;
            if node == self.me.node() {
                continue;
            }
            if self.beats.chains.get(&node).is_none_or(|c| c.chain.start_ms < chain.start_ms) {
                self.beats.chains.insert(node, ChainState { chain: chain.clone(), last: (0, chain.anchor) });
                if self.keeps(&node) {
                    self.push(Output::Persist(Persist::PulseChain(chain.clone())));
                }
            }
            let time = chain.start_ms;
            let words = Outbox { chains: vec![chain], ..Outbox::default() };
            self.pass_on(now, from, node, Kind::Chain, time, words);
        }
        let watching = self.is_watcher(&self.me.node());
        let mut lacking = Vec::new();
        for pulse in pulses {
            let Some(node) = self.node_by_prefix(&pulse.node) else {
                self.refuse_pulse(from, "pulse of a node not known here");
                continue;
            };
            if node == self.me.node() || pulse.time_ms() > ahead {
                continue;
            }
            let state = self.beats.chains.get(&node).cloned();
            let fits = state.as_ref().map(|s| s.chain.admits(&pulse, s.last));
            match fits {
                Some(true) => {
                    if let Some(s) = self.beats.chains.get_mut(&node) {
                        s.last = (pulse.index, pulse.token);
                    }
                    if self.keeps(&node) {
                        self.push(Output::Event(Event::Heartbeat(node)));
                    }
                }
                // Of a chain this node has not seen (not on its schedule): passed
                // on unchecked, who holds that chain checks it.
                Some(false) if state.as_ref().is_some_and(|s| !s.chain.on_schedule(&pulse)) => {}
                // An older pulse, or one that does not fit: dropped here.
                Some(false) => {
                    if state.is_some_and(|s| pulse.index > s.last.0) {
                        self.refuse_pulse(from, "pulse that does not fit its chain");
                    }
                    continue;
                }
                // No chain here (this node restarted): passed on unchecked;
                // who holds the chain checks it.
                None => {}
            }
            // A watcher that hears a node but lacks its status or its
            // current chain (lost on the way) asks for them.
            if watching && (fits != Some(true) || !self.beats.latest.contains_key(&node)) {
                lacking.push(node);
            }
            let time = pulse.time_ms();
            let words = Outbox { pulses: vec![pulse], ..Outbox::default() };
            self.pass_on(now, from, node, Kind::Pulse, time, words);
        }
        self.want_beats(now, from, lacking);
    }

    /// Asks `toward` (the way their pulses came) for the full status of
    /// `nodes`, each at most every [`WANT_AGAIN_MS`].
    fn want_beats(&mut self, now: Millis, toward: NodeId, nodes: Vec<NodeId>) {
        if nodes.is_empty() || !self.is_ready(&toward) {
            return;
        }
        let mut prefixes = Vec::new();
        for node in nodes {
            if self.beats.wanted.get(&node).is_some_and(|t| now - t < WANT_AGAIN_MS) {
                continue;
            }
            self.beats.wanted.insert(node, now);
            let mut prefix = [0; 8];
            prefix.copy_from_slice(&node.as_bytes()[..8]);
            prefixes.push(prefix);
        }
        for chunk in prefixes.chunks(MAX_BEATS_WANTED) {
            tracing::debug!(peer = %toward.short(), nodes = chunk.len(), "asking for full heartbeats");
            self.send(toward, &SyncMessage::BeatsWanted { nodes: chunk.to_vec() });
        }
    }

    /// A watcher wants the full status of some nodes: this node says its
    /// own again (at most every [`ANSWER_AGAIN_MS`]), and passes the others
    /// back the way their words came. Only from a neighbour this node's
    /// words go to (its way towards a watcher): no other peer can make
    /// nodes sign and send again.
    pub(super) fn on_beats_wanted(
        &mut self,
        now: Millis,
        from: NodeId,
        prefixes: Vec<[u8; 8]>,
        docs: &mut impl DocSource,
    ) {
        if !self.beats.routes.values().any(|(via, _)| *via == from) {
            tracing::debug!(peer = %from.short(), "a want of heartbeats from a peer not on the way to a watcher: ignored");
            return;
        }
        let me = self.me.node();
        let mut onward: BTreeMap<NodeId, Vec<NodeId>> = BTreeMap::new();
        for prefix in prefixes {
            let Some(node) = self.node_by_prefix(&prefix) else { continue };
            if node == me {
                if now - self.beats.last_full >= ANSWER_AGAIN_MS {
                    tracing::debug!(peer = %from.short(), "a watcher lacks this node's status: saying it again");
                    self.beats.full_wanted = true;
                }
                continue;
            }
            match self.beats.came_from.get(&node) {
                Some(via) if *via != from => onward.entry(*via).or_default().push(node),
                _ => {}
            }
        }
        for (via, nodes) in onward {
            self.want_beats(now, via, nodes);
        }
        if self.beats.full_wanted {
            self.heartbeat_due(now, docs);
        }
    }

    fn refuse_pulse(&mut self, from: NodeId, reason: &str) {
        tracing::debug!(peer = %from.short(), reason, "pulse refused");
        *self.counters.rejected.entry("pulse_refused".to_owned()).or_default() += 1;
    }

    fn refuse_word(&mut self, now: Millis, from: NodeId, node: &NodeId, e: &HeartbeatError, docs: &mut impl DocSource) {
        tracing::warn!(peer = %from.short(), node = %node.short(), reason = %e, "heartbeat refused");
        *self.counters.rejected.entry(e.code().to_owned()).or_default() += 1;
        if matches!(e, HeartbeatError::BadSignature | HeartbeatError::OtherNetwork) {
            let Some(session) = self.links.get_mut(&from).and_then(|l| l.session.as_mut()) else { return };
            let effects: Vec<Effect> = session.penalise(e.to_string());
            self.run_effects(now, from, effects, docs);
        }
    }

    /// Watchers forget nodes not heard of for [`BEAT_EXPIRY_MS`], and every
    /// node forgets words of nodes the roster no longer admits.
    pub(super) fn expire_beats(&mut self, now: Millis) {
        let Some(roster) = self.roster.clone() else { return };
        let me = self.me.node();
        let gone: Vec<NodeId> = self
            .beats
            .latest
            .iter()
            .filter(|(n, _)| **n != me)
            .filter(|(n, h)| {
                let last = self.beats.last_heard(n).unwrap_or(h.beat.heartbeat.time_ms) as Millis;
                now - last > BEAT_EXPIRY_MS
                    || roster.node_admitted(n, &h.beat.heartbeat.certificate.commune).is_err()
                    || !self.keeps(n)
            })
            .map(|(n, _)| *n)
            .collect();
        for node in gone {
            self.beats.latest.remove(&node);
            self.push(Output::Persist(Persist::ForgetHeartbeat(node)));
        }
        let stale: Vec<NodeId> = self
            .beats
            .chains
            .iter()
            .filter(|(n, c)| {
                **n != me
                    && (now - c.chain.due(c.chain.count) as Millis > BEAT_EXPIRY_MS
                        || self.commune_of_node(n).is_none_or(|com| roster.node_admitted(n, &com).is_err()))
            })
            .map(|(n, _)| *n)
            .collect();
        for node in stale {
            self.beats.chains.remove(&node);
            self.beats.passed.remove(&node);
        }
        // The ways back and the wants of nodes no longer admitted go too.
        let admitted = |n: &NodeId| self.commune_of_node(n).is_some_and(|c| roster.node_admitted(n, &c).is_ok());
        let gone: Vec<NodeId> =
            self.beats.came_from.keys().chain(self.beats.wanted.keys()).filter(|n| !admitted(n)).copied().collect();
        for node in gone {
            self.beats.came_from.remove(&node);
            self.beats.wanted.remove(&node);
        }
    }
}
