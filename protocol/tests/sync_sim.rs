//! Deterministic chaos simulation of the sync core: five to seven nodes in
//! a ring with random chords, each writing to its own documents and to a
//! document they all share, over a network that drops, duplicates and
//! reorders messages while links are cut and restored on a random schedule.
//! Each node starts knowing only its own admission to the network.
//! After healing, every node must hold exactly the same documents with the
//! same heads, and the same roster. Seeds are reproducible: a failure prints its seed.
//!
//! ```text
//!     A ─── B
//!    /       \
//!   E         C
//!    \       /
//!     ─── D ─
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};

use passerelle_protocol::automerge::{Automerge, Change, ChangeHash};
use passerelle_protocol::book::CertificateBook;
use passerelle_protocol::certificate::NodeCertificate;
use passerelle_protocol::document::{self, Edit};
use passerelle_protocol::envelope::{ChangeEnvelope, verify_signatures};
use passerelle_protocol::header::{DocHeader, DocKind, Scope, SignedHeader};
use passerelle_protocol::ids::{CommuneId, DocId, NodeId};
use passerelle_protocol::keys::SecretKey;
use passerelle_protocol::network::{Role, Roster, SignedStatement, Statement};
use passerelle_protocol::sync::fingerprint::{SetFingerprints, bucket_of, item_hash};
use passerelle_protocol::sync::message::{Item, SyncMessage};
use passerelle_protocol::sync::session::{Effect, LocalSet, Session, missing_changes};

/// splitmix64: a tiny seeded generator, so the protocol crate needs no RNG.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

struct SimNode {
    key: SecretKey,
    commune: CommuneId,
    cert: NodeCertificate,
    book: CertificateBook,
    headers: BTreeMap<DocId, SignedHeader>,
    docs: BTreeMap<DocId, Automerge>,
    envelopes: HashMap<[u8; 32], ChangeEnvelope>,
    items: BTreeMap<DocId, [u8; 16]>,
    fps: SetFingerprints,
    sessions: BTreeMap<usize, Session>,
    roster: Roster,
    now: i64,
    /// Bytes of changes received that this node already held.
    resent_bytes: u64,
}

impl LocalSet for SimNode {
    fn fingerprints(&self, _peer: &CommuneId) -> SetFingerprints {
        self.fps.clone()
    }
    fn items(&self, _peer: &CommuneId, bucket: u8) -> Vec<Item> {
        self.docs.iter().filter(|(id, _)| bucket_of(id) == bucket).map(|(id, d)| (*id, heads(d))).collect()
    }
}

fn heads(doc: &Automerge) -> Vec<[u8; 32]> {
    doc.get_heads().iter().map(|h| h.0).collect()
}

type Outbox = Vec<(usize, SyncMessage)>;

impl SimNode {
    /// Node `i` starts knowing only the network's founding and its own
    /// admission: rosters are reconciled by the sessions, under the same
    /// faults as documents.
    fn new(i: usize, seed: u64) -> Self {
        let commune = SecretKey::from_seed([i as u8 + 1; 32]);
        let key = SecretKey::from_seed([(i as u8 + 1).wrapping_mul(31) ^ (seed as u8); 32]);
        let cert = NodeCertificate::issue(&commune, key.node_id(), 0);
        let founder = SecretKey::from_seed([250; 32]);
        let mut roster = Roster::founded(SignedStatement::found(&founder, "Réseau", "Secrétariat", "BE", 1)).unwrap();
        let admit = Statement::Admit {
            member: commune.commune_id(),
            name: format!("commune {i}"),
            country: "BE".into(),
            role: Role::Commune,
            invitation: [0; 16],
            node: key.node_id(),
            addrs: vec![],
        };
        roster.insert(SignedStatement::sign(&founder, roster.network(), 10 + i as u64, admit)).unwrap();
        let mut book = CertificateBook::new();
        book.insert(cert.clone()).unwrap();
        Self {
            key,
            commune: commune.commune_id(),
            cert,
            book,
            headers: BTreeMap::new(),
            docs: BTreeMap::new(),
            envelopes: HashMap::new(),
            items: BTreeMap::new(),
            fps: SetFingerprints::default(),
            sessions: BTreeMap::new(),
            roster,
            now: 1_000,
            resent_bytes: 0,
        }
    }

    fn node_id(&self) -> NodeId {
        self.key.node_id()
    }

    fn refresh(&mut self, id: DocId) {
        let item = item_hash(&id, &heads(&self.docs[&id]));
        let old = self.items.insert(id, item);
        self.fps.update(&id, old.as_ref(), &item);
    }

    fn create(&mut self, writers: Vec<CommuneId>, nonce: u8) -> (SignedHeader, ChangeEnvelope) {
        self.now += 1;
        let header = DocHeader {
            kind: DocKind::Request,
            schema: 1,
            owner: self.commune,
            writers,
            scope: Scope::Network,
            created_ms: self.now as u64,
            nonce: [nonce; 16],
        };
        let signed = SignedHeader::sign(header, &self.key, self.cert.clone());
        let id = signed.id();
        let mut doc = document::new_document(&self.node_id());
        let edit = Edit::Text { field: "title".into(), lang: "fr".into(), text: format!("doc {nonce}") };
        let change = document::commit(&mut doc, &[edit], "create", self.now).unwrap().unwrap();
        let env = ChangeEnvelope::sign(id, &change, &self.key);
        self.envelopes.insert(change.hash().0, env.clone());
        self.headers.insert(id, signed.clone());
        self.docs.insert(id, doc);
        self.refresh(id);
        (signed, env)
    }

    fn edit(&mut self, id: DocId, text: String) -> Option<ChangeEnvelope> {
        self.now += 1;
        let doc = self.docs.get_mut(&id)?;
        let edit = Edit::Text { field: "title".into(), lang: "fr".into(), text };
        let change = document::commit(doc, &[edit], "edit", self.now).unwrap()?;
        let env = ChangeEnvelope::sign(id, &change, &self.key);
        self.envelopes.insert(change.hash().0, env.clone());
        self.refresh(id);
        Some(env)
    }

    /// Verifies and applies; returns the envelopes newly stored (to relay).
    fn ingest(
        &mut self,
        certs: Vec<NodeCertificate>,
        headers: Vec<SignedHeader>,
        changes: Vec<ChangeEnvelope>,
    ) -> Vec<ChangeEnvelope> {
        for c in certs {
            let _ = self.book.insert(c);
        }
        for h in headers {
            if h.verify().is_ok() {
                let _ = self.book.insert(h.certificate.clone());
                let id = h.id();
                self.headers.entry(id).or_insert(h);
            }
        }
        let sigs = verify_signatures(&changes);
        let mut by_doc: BTreeMap<DocId, Vec<Change>> = BTreeMap::new();
        let mut fresh = Vec::new();
        for (env, sig) in changes.into_iter().zip(sigs) {
            assert!(sig.is_ok(), "honest nodes only sign valid changes");
            let Some(header) = self.headers.get(&env.doc) else { continue };
            let verified =
                env.validate_signed(&header.header.id(), &header.header, &self.book, i64::MAX / 2).expect("valid");
            let hash = verified.change.hash().0;
            if self.envelopes.contains_key(&hash) {
                continue;
            }
            self.envelopes.insert(hash, verified.envelope.clone());
            by_doc.entry(verified.envelope.doc).or_default().push(verified.change);
            fresh.push(verified.envelope);
        }
        for (id, changes) in by_doc {
            let node = self.node_id();
            let doc = self.docs.entry(id).or_insert_with(|| document::new_document(&node));
            doc.apply_changes(changes).unwrap();
            self.refresh(id);
        }
        fresh
    }

    fn docs_message(&self, ids: &[DocId], changes: Vec<ChangeHash>) -> SyncMessage {
        let mut envs: Vec<ChangeEnvelope> = changes.iter().filter_map(|h| self.envelopes.get(&h.0).cloned()).collect();
        let mut headers = Vec::new();
        for id in ids {
            headers.push(self.headers[id].clone());
            envs.extend(self.docs[id].get_changes(&[]).iter().filter_map(|c| self.envelopes.get(&c.hash().0).cloned()));
        }
        SyncMessage::Docs { certificates: self.certs_for(&envs), headers, changes: envs }
    }

    /// Certificates of the authors of `envs`, so relayed changes can be
    /// checked by nodes that never met their author.
    fn certs_for(&self, envs: &[ChangeEnvelope]) -> Vec<NodeCertificate> {
        let mut authors: Vec<NodeId> = envs.iter().map(|e| e.author).collect();
        authors.sort();
        authors.dedup();
        authors.iter().filter_map(|a| self.book.get(a).cloned()).collect()
    }

    /// Carries out a session's effects towards `peer`; returns messages to send.
    fn execute(&mut self, peer: usize, effects: Vec<Effect>, out: &mut Outbox, peers: &[usize]) {
        for effect in effects {
            match effect {
                Effect::Send(m) => out.push((peer, m)),
                // The simulation's nodes send no heartbeats.
                Effect::Heartbeats(_) => {}
                Effect::PushBuckets(buckets) => {
                    let ids: Vec<DocId> =
                        self.docs.keys().filter(|d| buckets.contains(&bucket_of(d))).copied().collect();
                    out.push((peer, self.docs_message(&ids, vec![])));
                }
                Effect::PushDocs(ids) => out.push((peer, self.docs_message(&ids, vec![]))),
                Effect::PushMissing(list) => {
                    let mut hashes = Vec::new();
                    let mut headers = Vec::new();
                    for (id, their) in list {
                        hashes.extend(missing_changes(&self.docs[&id], &their));
                        headers.push(id);
                    }
                    let SyncMessage::Docs { changes, certificates, .. } = self.docs_message(&[], hashes) else {
                        unreachable!()
                    };
                    // Headers travel with pushes, so a receiver that lost one can still apply.
                    let headers = headers.iter().map(|id| self.headers[id].clone()).collect();
                    out.push((peer, SyncMessage::Docs { certificates, headers, changes }));
                }
                Effect::Ingest { certificates, headers, changes } => {
                    let relay_headers = headers.clone();
                    let offered: u64 = changes.iter().map(|c| c.change.len() as u64).sum();
                    let fresh = self.ingest(certificates, headers, changes);
                    self.resent_bytes += offered - fresh.iter().map(|c| c.change.len() as u64).sum::<u64>();
                    if !fresh.is_empty() {
                        // Relay: pass what was new on to the other peers.
                        for &p in peers.iter().filter(|p| **p != peer) {
                            let hs: Vec<SignedHeader> = relay_headers
                                .iter()
                                .filter(|h| fresh.iter().any(|e| e.doc == h.id()))
                                .cloned()
                                .collect();
                            let certificates = self.certs_for(&fresh);
                            out.push((p, SyncMessage::Docs { certificates, headers: hs, changes: fresh.clone() }));
                        }
                    }
                }
                Effect::IngestRoster(statements) => {
                    let (_, refused) = self.roster.insert_all(statements);
                    assert!(refused.is_empty(), "honest peers send valid statements: {refused:?}");
                }
                Effect::Redeem { .. } => unreachable!("no node joins during the simulation"),
                Effect::SendHello => out.push((peer, Session::hello(&self.cert, &self.roster))),
                Effect::InSync | Effect::Fault(_) | Effect::Disconnect(_) => {
                    assert!(
                        !matches!(effect, Effect::Fault(_) | Effect::Disconnect(_)),
                        "honest peers never fault: {effect:?}"
                    );
                }
            }
        }
    }
}

struct Net {
    nodes: Vec<SimNode>,
    links: Vec<(usize, usize)>,
    up: Vec<bool>,
    queue: VecDeque<(usize, usize, SyncMessage)>,
    rng: Rng,
    loss: u64,
    delivered: u64,
    /// Encoded bytes of the messages delivered.
    bytes: u64,
}

impl Net {
    fn neighbours(&self, i: usize) -> Vec<usize> {
        self.links
            .iter()
            .zip(&self.up)
            .filter(|(_, up)| **up)
            .filter_map(|((a, b), _)| {
                if *a == i {
                    Some(*b)
                } else if *b == i {
                    Some(*a)
                } else {
                    None
                }
            })
            .collect()
    }

    fn link_up(&self, a: usize, b: usize) -> bool {
        self.links.iter().zip(&self.up).any(|((x, y), up)| *up && ((*x == a && *y == b) || (*x == b && *y == a)))
    }

    fn connect(&mut self, a: usize, b: usize) {
        for (x, y) in [(a, b), (b, a)] {
            let remote = self.nodes[y].node_id();
            self.nodes[x].sessions.insert(y, Session::new(remote));
            let hello = Session::hello(&self.nodes[x].cert, &self.nodes[x].roster);
            self.queue.push_back((x, y, hello));
        }
    }

    fn send_all(&mut self, from: usize, out: Outbox) {
        for (to, m) in out {
            self.queue.push_back((from, to, m));
        }
    }

    fn anti_entropy(&mut self) {
        for i in 0..self.nodes.len() {
            for p in self.neighbours(i) {
                let node = &mut self.nodes[i];
                let Some(mut s) = node.sessions.remove(&p) else { continue };
                let effects = s.start_round(node, &node.roster);
                node.sessions.insert(p, s);
                let mut out = Vec::new();
                let peers = self.neighbours(i);
                self.nodes[i].execute(p, effects, &mut out, &peers);
                self.send_all(i, out);
            }
        }
    }

    /// Delivers one message, chosen at random among those in flight.
    fn step(&mut self) -> bool {
        if self.queue.is_empty() {
            return false;
        }
        let pick = self.rng.below(self.queue.len().min(4));
        let (from, to, msg) = self.queue.remove(pick).unwrap();
        if !self.link_up(from, to) || self.rng.chance(self.loss) {
            return true;
        }
        // Lossy links also deliver some messages twice.
        if self.loss > 0 && self.rng.chance(5) {
            self.queue.push_back((from, to, msg.clone()));
        }
        self.delivered += 1;
        self.bytes += msg.encode().len() as u64;
        let peers = self.neighbours(to);
        let node = &mut self.nodes[to];
        let Some(mut s) = node.sessions.remove(&from) else { return true };
        let effects = s.on_message(msg, node, &node.roster);
        node.sessions.insert(from, s);
        let mut out = Vec::new();
        self.nodes[to].execute(from, effects, &mut out, &peers);
        self.send_all(to, out);
        true
    }

    fn converged(&self) -> bool {
        self.nodes
            .windows(2)
            .all(|w| w[0].items == w[1].items && w[0].roster.fingerprint() == w[1].roster.fingerprint())
    }
}

/// What one seed's run came to.
struct Outcome {
    delivered: u64,
    bytes: u64,
    resent_bytes: u64,
    rounds: usize,
}

fn run(seed: u64) -> Outcome {
    let mut rng = Rng(seed);
    let n = 5 + (seed % 3) as usize;
    let nodes: Vec<SimNode> = (0..n).map(|i| SimNode::new(i, seed)).collect();
    let mut links: Vec<(usize, usize)> = (0..n).map(|i| (i, (i + 1) % n)).collect();
    for _ in 0..rng.below(3) {
        let (a, b) = (rng.below(n), rng.below(n));
        if a != b && !links.iter().any(|&(x, y)| (x, y) == (a, b) || (x, y) == (b, a)) {
            links.push((a, b));
        }
    }
    let up = vec![true; links.len()];
    let mut net =
        Net { nodes, links, up, queue: VecDeque::new(), rng: Rng(rng.next()), loss: 0, delivered: 0, bytes: 0 };
    for (a, b) in net.links.clone() {
        net.connect(a, b);
    }
    while net.step() {}

    // A document every commune may write, created by node 0 and spread.
    let all: Vec<CommuneId> = net.nodes.iter().map(|n| n.commune).collect();
    let (h, e) = net.nodes[0].create(all, 0);
    let shared = h.id();
    let peers = net.neighbours(0);
    for p in peers {
        net.queue.push_back((
            0,
            p,
            SyncMessage::Docs { certificates: vec![], headers: vec![h.clone()], changes: vec![e.clone()] },
        ));
    }
    while net.step() {}

    // Lossy, partitioned phase with concurrent writes everywhere.
    net.loss = 5 + rng.next() % 30;
    for round in 0..30 {
        if rng.chance(20) {
            let l = rng.below(net.links.len());
            net.up[l] = !net.up[l];
        }
        let i = rng.below(n);
        let fresh = if rng.chance(30) {
            let own = net.nodes[i].commune;
            let (h, e) = net.nodes[i].create(vec![own], round as u8 + 1);
            Some((Some(h), e))
        } else {
            let target = if rng.chance(50) {
                shared
            } else {
                *net.nodes[i].docs.keys().nth(rng.below(net.nodes[i].docs.len())).unwrap()
            };
            let writers = &net.nodes[i].headers[&target].header.writers;
            if writers.contains(&net.nodes[i].commune) {
                net.nodes[i].edit(target, format!("n{i} r{round} {}", rng.next() % 1000)).map(|e| (None, e))
            } else {
                None
            }
        };
        if let Some((h, e)) = fresh {
            for p in net.neighbours(i) {
                let msg = SyncMessage::Docs {
                    certificates: vec![],
                    headers: h.iter().cloned().collect(),
                    changes: vec![e.clone()],
                };
                net.queue.push_back((i, p, msg));
            }
        }
        for _ in 0..rng.below(8) {
            net.step();
        }
        if rng.chance(20) {
            net.anti_entropy();
        }
    }

    // Heal: every link up, no loss; anti-entropy until everyone agrees.
    net.up.iter_mut().for_each(|u| *u = true);
    net.loss = 0;
    for attempt in 0..20 {
        net.anti_entropy();
        while net.step() {}
        if net.converged() {
            let resent_bytes = net.nodes.iter().map(|n| n.resent_bytes).sum();
            return Outcome { delivered: net.delivered, bytes: net.bytes, resent_bytes, rounds: attempt + 1 };
        }
    }
    let summary: Vec<String> = net.nodes.iter().map(|n| format!("{} docs", n.items.len())).collect();
    panic!("seed {seed}: no convergence after healing ({})", summary.join(", "));
}

#[test]
fn the_network_converges_after_loss_reordering_and_partitions() {
    let seeds: u64 = std::env::var("PASSERELLE_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let started = std::time::Instant::now();
    // Seeds are independent: spread them over the cores.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| scope.spawn(move || (w..seeds).step_by(workers as usize).map(run).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a seed failed: see its message above")).collect()
    });
    let mut rounds_needed = Vec::new();
    let (mut delivered, mut bytes, mut resent) = (0, 0, 0);
    for o in outcomes {
        delivered += o.delivered;
        bytes += o.bytes;
        resent += o.resent_bytes;
        rounds_needed.push(o.rounds);
    }
    let max = rounds_needed.iter().max().copied().unwrap_or(0);
    let mean = rounds_needed.iter().sum::<usize>() as f64 / rounds_needed.len().max(1) as f64;
    println!(
        "chaos simulation: {seeds} seeds run, {seeds} converged with identical heads and rosters in {:.1} s; \
         {delivered} messages ({bytes} bytes) delivered; changes received twice: {resent} bytes; \
         anti-entropy rounds after healing: mean {mean:.2}, at most {max}",
        started.elapsed().as_secs_f64()
    );
}
