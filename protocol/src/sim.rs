//! A deterministic simulator of many nodes, driving the real replica core.
//!
//! Each simulated node is a [`Replica`] with an in-memory store
//! ([`MemDocs`]); the simulator plays the transport (connections that
//! dial, open and close; messages delayed by each path's latency and
//! serialised by its bandwidth; acknowledgements; loss, duplication,
//! reordering, cuts and partitions drawn from a seed) and the clock
//! (virtual milliseconds, events in time order). Nothing here decides
//! replication: what a node sends, when, and to whom is the core's answer,
//! exactly as in a real node.
//!
//! Bytes are counted as the transport would carry them: each message's
//! encoding plus a fixed framing cost per request and its reply
//! ([`Transport::per_message`]), a handshake per connection, and the
//! keep-alive pings of idle connections.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use crate::ids::NodeId;
use crate::replica::{Announcement, Millis, Output, Replica};
use crate::sync::message::SyncMessage;

mod federation;
mod memdocs;
pub mod scale;

pub use federation::{EPOCH_MS, Federation, Keys, MemberSpec, create, edit};
pub use memdocs::{MemDoc, MemDocs};

/// splitmix64: a small seeded generator (the protocol crate has no RNG).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with the given chance in percent.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What the transport costs beyond the messages' own bytes, as measured on
/// real nodes (TCP, Noise, Yamux, request-response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transport {
    /// Bytes of framing per message and its acknowledgement, both ways.
    pub per_message: u64,
    /// Bytes to open a connection (handshake, identify), both ways.
    pub handshake: u64,
    /// Bytes of one keep-alive ping and its answer.
    pub ping: u64,
    /// Interval of keep-alive pings on a connection (ms; 0: none).
    pub ping_interval_ms: i64,
}

impl Default for Transport {
    fn default() -> Self {
        Self { per_message: 250, handshake: 4_000, ping: 140, ping_interval_ms: 20 * 60 * 1000 }
    }
}

/// A node's access link: what its messages cross to reach anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// One-way latency added by this node's link (ms).
    pub latency_ms: i64,
    /// Its bandwidth (bytes/s), or unlimited.
    pub bytes_per_s: Option<u64>,
}

impl Default for Access {
    fn default() -> Self {
        Self { latency_ms: 10, bytes_per_s: None }
    }
}

/// Faults the network injects (percentages per message).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Messages lost.
    pub loss: u64,
    /// Messages delivered twice.
    pub duplicate: u64,
    /// Messages delayed by up to `jitter_ms` more (so they overtake or are overtaken).
    pub reorder: u64,
    /// The extra delay of reordered messages (ms).
    pub jitter_ms: i64,
}

/// One simulated node: the core, its store, and what the transport keeps
/// for it.
#[derive(Debug)]
pub struct SimNode {
    /// The replica core.
    pub replica: Replica,
    /// Its store.
    pub docs: MemDocs,
    /// Whether it is running.
    pub online: bool,
    /// Its access link.
    pub access: Access,
    /// Peers it dials (the core's `Dial` outputs, and the scenario's).
    pub wants: BTreeSet<usize>,
    /// What its current batch stored, announced at the end of the event.
    pending: Vec<Announcement>,
    /// The wake-up already scheduled.
    wake_at: Millis,
    /// Bytes it sent and received, as the transport carries them.
    pub bytes_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Messages it sent.
    pub messages_out: u64,
    /// Messages received, by kind.
    pub received: BTreeMap<&'static str, u64>,
    /// Bytes of messages received, by kind (without the transport's framing).
    pub received_bytes: BTreeMap<&'static str, u64>,
    /// Changes it stored from peers, and changes it received again.
    pub applied: u64,
    /// Changes received that it already held.
    pub duplicates: u64,
}

impl SimNode {
    /// A running node around `replica`.
    pub fn new(replica: Replica, access: Access) -> Self {
        Self {
            replica,
            docs: MemDocs::default(),
            online: true,
            access,
            wants: BTreeSet::new(),
            pending: Vec::new(),
            wake_at: Millis::MAX,
            bytes_out: 0,
            bytes_in: 0,
            messages_out: 0,
            received: BTreeMap::new(),
            received_bytes: BTreeMap::new(),
            applied: 0,
            duplicates: 0,
        }
    }
}

/// An open connection between two nodes.
#[derive(Debug, Clone, Copy)]
struct Conn {
    id: u64,
    opened: Millis,
    /// When each direction's link is free again (bandwidth).
    free: [Millis; 2],
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    /// Try to connect `a` to `b` (a dial).
    Dial { a: usize, b: usize },
    /// A message reaches `to`.
    Deliver { conn: u64, from: usize, to: usize, bytes: Vec<u8>, tag: Option<u64> },
    /// The sender learns a tagged message arrived (`ok`) or was lost.
    Ack { from: usize, to: usize, tag: u64, ok: bool },
    /// A node's core has something due.
    Wake { node: usize, at: Millis },
}

/// The simulated network and its nodes.
#[derive(Debug)]
pub struct Sim {
    /// Virtual time (ms since the Unix epoch).
    pub now: Millis,
    /// The nodes, by index.
    pub nodes: Vec<SimNode>,
    /// Node ids, by index.
    pub ids: Vec<NodeId>,
    index: HashMap<NodeId, usize>,
    /// Transport costs.
    pub transport: Transport,
    /// Injected faults.
    pub faults: Faults,
    /// Pairs that cannot reach each other (a partition), smaller index first.
    pub cut: BTreeSet<(usize, usize)>,
    conns: BTreeMap<(usize, usize), Conn>,
    /// Redial attempts per (dialler, target), for backoff.
    attempts: HashMap<(usize, usize), u32>,
    queue: BinaryHeap<Reverse<(Millis, u64)>>,
    events: HashMap<u64, Ev>,
    seq: u64,
    next_conn: u64,
    /// The seeded generator every random choice draws from.
    pub rng: Rng,
    /// Messages delivered.
    pub delivered: u64,
    /// Connections opened.
    pub connections: u64,
    /// Events processed.
    pub steps: u64,
    /// The last wake-up handled, and how many times in a row (a guard
    /// against a core that asks to be woken and then does nothing).
    last_wake: (usize, Millis),
    idle_wakes: u32,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    if a < b { (a, b) } else { (b, a) }
}

impl Sim {
    /// A network of `nodes` starting at `now`.
    pub fn new(nodes: Vec<SimNode>, now: Millis, seed: u64) -> Self {
        let ids: Vec<NodeId> = nodes.iter().map(|n| n.replica.me().node()).collect();
        let index = ids.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let mut sim = Self {
            now,
            nodes,
            ids,
            index,
            transport: Transport::default(),
            faults: Faults::default(),
            cut: BTreeSet::new(),
            conns: BTreeMap::new(),
            attempts: HashMap::new(),
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            next_conn: 0,
            rng: Rng(seed),
            delivered: 0,
            connections: 0,
            steps: 0,
            last_wake: (usize::MAX, 0),
            idle_wakes: 0,
        };
        for i in 0..sim.nodes.len() {
            sim.schedule_wake(i);
        }
        sim
    }

    /// The index of a node id.
    pub fn index_of(&self, node: &NodeId) -> Option<usize> {
        self.index.get(node).copied()
    }

    /// Whether `a` and `b` have a connection open.
    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.conns.contains_key(&pair(a, b))
    }

    /// Open connections of node `i`.
    pub fn degree(&self, i: usize) -> usize {
        self.conns.keys().filter(|(a, b)| *a == i || *b == i).count()
    }

    /// Every open connection.
    pub fn links(&self) -> Vec<(usize, usize)> {
        self.conns.keys().copied().collect()
    }

    fn push(&mut self, at: Millis, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn schedule_wake(&mut self, i: usize) {
        if !self.nodes[i].online {
            return;
        }
        let at = self.nodes[i].replica.next_wake().max(self.now);
        if at < self.nodes[i].wake_at {
            self.nodes[i].wake_at = at;
            self.push(at, Ev::Wake { node: i, at });
        }
    }

    /// Node `a` dials `b` (as an operator's `peer add` would): it keeps
    /// dialling whenever the connection drops.
    pub fn dial(&mut self, a: usize, b: usize) {
        self.nodes[a].wants.insert(b);
        self.push(self.now, Ev::Dial { a, b });
    }

    /// One-way delay and bandwidth between two nodes.
    fn path(&self, a: usize, b: usize) -> (Millis, Option<u64>) {
        let (x, y) = (self.nodes[a].access, self.nodes[b].access);
        let bw = match (x.bytes_per_s, y.bytes_per_s) {
            (Some(p), Some(q)) => Some(p.min(q)),
            (p, q) => p.or(q),
        };
        (x.latency_ms + y.latency_ms, bw)
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.nodes[a].online && self.nodes[b].online && !self.cut.contains(&pair(a, b))
    }

    /// Runs until virtual time `until` (events at that time included).
    pub fn run_until(&mut self, until: Millis) {
        while let Some(Reverse((at, seq))) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.queue.pop();
            let Some(ev) = self.events.remove(&seq) else { continue };
            self.now = self.now.max(at);
            self.steps += 1;
            self.handle(ev);
        }
        self.now = self.now.max(until);
    }

    /// Runs until nothing is left to do before `limit`, or `limit`.
    pub fn run_for(&mut self, ms: Millis) {
        let until = self.now + ms;
        self.run_until(until);
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Dial { a, b } => self.try_connect(a, b),
            Ev::Deliver { conn, from, to, bytes, tag } => {
                let open = self.conns.get(&pair(from, to)).is_some_and(|c| c.id == conn);
                if !open || !self.nodes[to].online {
                    if let Some(tag) = tag {
                        self.push(self.now, Ev::Ack { from, to, tag, ok: false });
                    }
                    return;
                }
                let msg = SyncMessage::decode(&bytes).expect("honest cores send well-formed messages");
                self.delivered += 1;
                let per = self.transport.per_message;
                let node = &mut self.nodes[to];
                node.bytes_in += bytes.len() as u64 + per / 2;
                *node.received.entry(msg.kind()).or_default() += 1;
                *node.received_bytes.entry(msg.kind()).or_default() += bytes.len() as u64;
                let now = self.now;
                let from_id = self.ids[from];
                let node = &mut self.nodes[to];
                node.replica.message_received(now, from_id, msg, bytes.len() + 4, &mut node.docs);
                if let Some(tag) = tag {
                    let (lat, _) = self.path(from, to);
                    self.push(self.now + lat, Ev::Ack { from, to, tag, ok: true });
                }
                self.after(to);
            }
            Ev::Ack { from, to, tag, ok } => {
                if !self.nodes[from].online {
                    return;
                }
                let now = self.now;
                let peer = self.ids[to];
                let node = &mut self.nodes[from];
                if ok {
                    node.replica.message_delivered(now, peer, tag, &mut node.docs);
                } else {
                    node.replica.message_lost(now, peer, tag);
                }
                self.after(from);
            }
            Ev::Wake { node, at } => {
                if self.nodes[node].wake_at != at || !self.nodes[node].online {
                    return;
                }
                if self.last_wake == (node, at) {
                    self.idle_wakes += 1;
                    assert!(
                        self.idle_wakes < 10_000,
                        "node {node} wakes at {at} again and again: its core never moves on"
                    );
                } else {
                    self.last_wake = (node, at);
                    self.idle_wakes = 0;
                }
                self.nodes[node].wake_at = Millis::MAX;
                let now = self.now;
                let n = &mut self.nodes[node];
                n.replica.tick(now, &mut n.docs);
                self.after(node);
            }
        }
    }

    fn try_connect(&mut self, a: usize, b: usize) {
        if !self.nodes[a].online || !self.nodes[a].wants.contains(&b) || self.connected(a, b) {
            return;
        }
        if !self.reachable(a, b) {
            let (now, peer) = (self.now, self.ids[b]);
            self.nodes[a].replica.dial_failed(now, peer, "unreachable".into());
            self.after(a);
            // Backoff as the node's redial does: 1 s doubling to 5 minutes.
            let n = self.attempts.entry((a, b)).or_insert(0);
            *n += 1;
            let delay = (1_000i64 << (*n).min(9)).min(300_000);
            let at = self.now + delay;
            self.push(at, Ev::Dial { a, b });
            return;
        }
        self.attempts.remove(&(a, b));
        let (lat, _) = self.path(a, b);
        self.next_conn += 1;
        let conn = Conn { id: self.next_conn, opened: self.now + 4 * lat, free: [self.now; 2] };
        self.conns.insert(pair(a, b), conn);
        self.connections += 1;
        let hs = self.transport.handshake / 2;
        for i in [a, b] {
            self.nodes[i].bytes_in += hs;
            self.nodes[i].bytes_out += hs;
        }
        let now = self.now;
        for (x, y) in [(a, b), (b, a)] {
            let peer = self.ids[y];
            let node = &mut self.nodes[x];
            node.replica.peer_connected(now, peer, format!("/sim/{y}"), &mut node.docs);
        }
        self.after(a);
        self.after(b);
    }

    /// Closes the connection of `a` and `b` (a cut); both are told.
    pub fn close(&mut self, a: usize, b: usize) {
        let Some(conn) = self.conns.remove(&pair(a, b)) else { return };
        self.account_pings(a, b, conn);
        let now = self.now;
        for (x, y) in [(a, b), (b, a)] {
            if self.nodes[x].online {
                let peer = self.ids[y];
                self.nodes[x].replica.peer_disconnected(now, peer, Some("connection closed".into()));
                self.after(x);
            }
            if self.nodes[x].wants.contains(&y) {
                self.push(now + 1_000, Ev::Dial { a: x, b: y });
            }
        }
    }

    /// Keep-alive pings a connection carried while it was open.
    fn account_pings(&mut self, a: usize, b: usize, conn: Conn) {
        if self.transport.ping_interval_ms <= 0 {
            return;
        }
        let pings = ((self.now - conn.opened).max(0) / self.transport.ping_interval_ms) as u64;
        // Each side pings the other.
        for i in [a, b] {
            self.nodes[i].bytes_in += pings * self.transport.ping;
            self.nodes[i].bytes_out += pings * self.transport.ping;
        }
    }

    /// Counts the pings of every open connection up to now (for a report).
    pub fn settle_pings(&mut self) {
        let open: Vec<((usize, usize), Conn)> = self.conns.iter().map(|(k, c)| (*k, *c)).collect();
        for ((a, b), conn) in open {
            self.account_pings(a, b, conn);
            if let Some(c) = self.conns.get_mut(&(a, b)) {
                c.opened = self.now;
            }
        }
    }

    /// Stops node `i`: its connections close; its store and records stay.
    pub fn stop(&mut self, i: usize) {
        let peers: Vec<usize> = self
            .conns
            .keys()
            .filter_map(|(a, b)| {
                if *a == i {
                    Some(*b)
                } else if *b == i {
                    Some(*a)
                } else {
                    None
                }
            })
            .collect();
        for p in peers {
            self.close(i, p);
        }
        self.nodes[i].online = false;
    }

    /// Starts node `i` again with a core rebuilt from what it persisted
    /// (roster, certificates, peer records, heartbeats, its documents).
    pub fn restart(&mut self, i: usize) {
        let fresh = self.nodes[i].replica.reloaded(self.now);
        let node = &mut self.nodes[i];
        node.replica = fresh;
        node.online = true;
        node.wake_at = Millis::MAX;
        node.pending.clear();
        let docs: Vec<_> = node
            .docs
            .docs
            .iter()
            .map(|(id, d)| {
                let heads = d.doc.get_heads().iter().map(|h| h.0).collect::<Vec<_>>();
                (*id, crate::sync::audience::Audience::of(&d.header.header), heads, d.updated_ms)
            })
            .collect();
        for (id, audience, heads, stored) in docs {
            node.replica.doc_changed(id, audience, heads, stored);
        }
        let wants: Vec<usize> = node.wants.iter().copied().collect();
        for b in wants {
            self.push(self.now, Ev::Dial { a: i, b });
        }
        self.schedule_wake(i);
    }

    /// A local write on node `i`, committed at once (as after the flush).
    pub fn commit_local(&mut self, i: usize, announcement: Announcement) {
        self.nodes[i].pending.push(announcement);
        self.after(i);
    }

    /// Carries out node `i`'s outputs, then its batch's commit.
    fn after(&mut self, i: usize) {
        loop {
            self.drain(i);
            let pending = std::mem::take(&mut self.nodes[i].pending);
            if pending.is_empty() {
                break;
            }
            let now = self.now;
            let node = &mut self.nodes[i];
            node.replica.committed(now, pending, &mut node.docs);
        }
        self.schedule_wake(i);
    }

    fn drain(&mut self, i: usize) {
        while let Some(out) = self.nodes[i].replica.poll() {
            match out {
                Output::Send { to, bytes, tag, .. } => self.send(i, to, bytes, tag),
                Output::Ingest { from, batch } => {
                    let now = self.now;
                    let node = &mut self.nodes[i];
                    let (outcome, announced) = node.docs.ingest(&mut node.replica, from, batch, now);
                    node.applied += outcome.applied;
                    node.duplicates += outcome.duplicates;
                    node.replica.ingested(now, from, outcome, &mut node.docs);
                    if !announced.changes.is_empty() {
                        node.pending.push(announced);
                    }
                }
                Output::Dial { node, .. } => {
                    if let Some(b) = self.index_of(&node) {
                        self.dial(i, b);
                    }
                }
                Output::Forget { node } => {
                    if let Some(b) = self.index_of(&node) {
                        self.nodes[i].wants.remove(&b);
                        self.close(i, b);
                    }
                }
                Output::Disconnect { node, .. } => {
                    if let Some(b) = self.index_of(&node) {
                        self.close(i, b);
                    }
                }
                Output::Persist(_) | Output::Event(_) => {}
                Output::Redeem { .. } | Output::JoinAnswered { .. } => {
                    // Joins are played by the scenarios with statements.
                }
            }
        }
    }

    fn send(&mut self, from: usize, to: NodeId, bytes: Vec<u8>, tag: Option<u64>) {
        let Some(to) = self.index_of(&to) else { return };
        let Some(conn) = self.conns.get(&pair(from, to)).copied() else {
            if let Some(tag) = tag {
                self.push(self.now, Ev::Ack { from, to, tag, ok: false });
            }
            return;
        };
        let per = self.transport.per_message;
        self.nodes[from].bytes_out += bytes.len() as u64 + per / 2;
        self.nodes[from].messages_out += 1;
        // The reply's half of the framing is the receiver's to send.
        self.nodes[to].bytes_out += per / 2;
        self.nodes[from].bytes_in += per / 2;
        let (lat, bw) = self.path(from, to);
        let dir = usize::from(from > to);
        let start = conn.free[dir].max(self.now);
        let busy = bw.map_or(0, |bw| ((bytes.len() as u64 + per) * 1000 / bw.max(1)) as i64);
        if let Some(c) = self.conns.get_mut(&pair(from, to)) {
            c.free[dir] = start + busy;
        }
        let mut at = start + busy + lat;
        let f = self.faults;
        if f.loss > 0 && self.rng.chance(f.loss) {
            if let Some(tag) = tag {
                // A lost request fails after a while, as a timeout would.
                self.push(at + 2 * lat + 1_000, Ev::Ack { from, to, tag, ok: false });
            }
            return;
        }
        if f.reorder > 0 && self.rng.chance(f.reorder) {
            at += self.rng.below(f.jitter_ms.max(1) as u64) as i64;
        }
        if f.duplicate > 0 && self.rng.chance(f.duplicate) {
            self.push(at + 1, Ev::Deliver { conn: conn.id, from, to, bytes: bytes.clone(), tag: None });
        }
        self.push(at, Ev::Deliver { conn: conn.id, from, to, bytes, tag });
    }
}
