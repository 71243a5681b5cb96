//! Unit tests of the core's rules: which links a node chooses, how often
//! rounds come while peers agree, how pushes settle into a tree, how
//! pulses are checked and heartbeats expire. Multi-node cases run in the
//! simulator (the same core, in memory).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::header::Scope;
use crate::heartbeat::PulseChain;
use crate::ids::NodeId;
use crate::keys::SecretKey;
use crate::network::Role;
use crate::sim::{self, Access, EPOCH_MS, Federation, MemberSpec, Sim};

use super::links::{NEIGHBOURS, choose};
use super::{BEAT_EXPIRY_MS, ReplicaConfig};

fn member(i: usize, country: &str, role: Role) -> MemberSpec {
    MemberSpec { name: format!("{country} {i}"), country: country.into(), role, access: Access::default() }
}

/// `be` Belgian, `ma` Moroccan, `tn` Tunisian communes; the founder (0) is
/// the only coordinator; Moroccan commune k partners Belgian commune k + 1.
fn federation(be: usize, ma: usize, tn: usize) -> (Federation, Vec<MemberSpec>) {
    let mut specs = Vec::new();
    for i in 0..be {
        specs.push(member(i, "BE", if i == 0 { Role::Coordinator } else { Role::Commune }));
    }
    for i in 0..ma {
        specs.push(member(be + i, "MA", Role::Commune));
    }
    for i in 0..tn {
        specs.push(member(be + ma + i, "TN", Role::Commune));
    }
    let mut fed = Federation::new(&specs, 7);
    for k in 0..ma {
        fed.partner(be + k, 1 + k % (be - 1));
    }
    (fed, specs)
}

/// Every node's chosen links, as a graph (an edge for a choice of either side).
fn graph(fed: &Federation, away: &BTreeSet<NodeId>) -> BTreeMap<NodeId, BTreeSet<NodeId>> {
    let roster = fed.roster();
    let mut g: BTreeMap<NodeId, BTreeSet<NodeId>> = BTreeMap::new();
    for k in &fed.keys {
        let me = k.node.node_id();
        if away.contains(&me) {
            continue;
        }
        for peer in choose(&roster, &k.commune.commune_id(), away).into_keys() {
            g.entry(me).or_default().insert(peer);
            g.entry(peer).or_default().insert(me);
        }
    }
    g
}

/// Hops from `from` to every node it reaches.
fn distances(g: &BTreeMap<NodeId, BTreeSet<NodeId>>, from: NodeId) -> BTreeMap<NodeId, usize> {
    let mut d = BTreeMap::from([(from, 0)]);
    let mut queue = VecDeque::from([from]);
    while let Some(n) = queue.pop_front() {
        for m in g.get(&n).into_iter().flatten() {
            if !d.contains_key(m) {
                d.insert(*m, d[&n] + 1);
                queue.push_back(*m);
            }
        }
    }
    d
}

#[test]
fn a_small_country_links_with_all_its_members_and_partners_only() {
    let (fed, _) = federation(4, 2, 0);
    let roster = fed.roster();
    let node = |i: usize| fed.keys[i].node.node_id();
    // Belgian commune 1: the other Belgians, and its Moroccan partner (commune 4).
    let mine: BTreeSet<NodeId> =
        choose(&roster, &fed.keys[1].commune.commune_id(), &BTreeSet::new()).into_keys().collect();
    assert_eq!(mine, BTreeSet::from([node(0), node(2), node(3), node(4)]));
    // Moroccan commune 5: its partner (2) and the other Moroccan; no other Belgian.
    let theirs: BTreeSet<NodeId> =
        choose(&roster, &fed.keys[5].commune.commune_id(), &BTreeSet::new()).into_keys().collect();
    assert_eq!(theirs, BTreeSet::from([node(2), node(4)]));
}

#[test]
fn a_large_network_stays_sparse_connected_and_close() {
    let (fed, _) = federation(180, 100, 20);
    let g = graph(&fed, &BTreeSet::new());
    let roster = fed.roster();
    for k in &fed.keys {
        let me = k.commune.commune_id();
        let partners = roster.partners_of(&me).len();
        let chosen = choose(&roster, &me, &BTreeSet::new());
        assert!(chosen.len() <= NEIGHBOURS + partners + 1, "{} links", chosen.len());
    }
    // The rings are symmetric: what a node chooses on its rings chooses it back.
    let most = g.values().map(BTreeSet::len).max().unwrap_or(0);
    assert!(most <= NEIGHBOURS + 4, "a node has {most} links");
    // Tunisia has no partnership: one of its communes bridges it to a coordinator.
    let d = distances(&g, fed.keys[0].node.node_id());
    assert_eq!(d.len(), fed.keys.len(), "every node is reached");
    let diameter = d.values().max().copied().unwrap_or(0);
    assert!(diameter <= 8, "{diameter} hops from the founder");
}

#[test]
fn the_rings_close_around_a_member_that_is_away() {
    let (fed, _) = federation(40, 0, 0);
    let away_node = fed.keys[10].node.node_id();
    let before = graph(&fed, &BTreeSet::new());
    let after = graph(&fed, &BTreeSet::from([away_node]));
    let neighbours = &before[&away_node];
    // Its neighbours still reach everyone else.
    let d = distances(&after, *neighbours.iter().next().unwrap());
    assert_eq!(d.len(), fed.keys.len() - 1);
    assert!(!after.contains_key(&away_node));
}

/// Three Belgian communes (0 the coordinator) in a simulation, not linked yet.
fn three_belgians(seed: u64, config: ReplicaConfig) -> (Sim, Federation, Vec<MemberSpec>) {
    let specs: Vec<MemberSpec> =
        (0..3).map(|i| member(i, "BE", if i == 0 { Role::Coordinator } else { Role::Commune })).collect();
    let fed = Federation::new(&specs, seed);
    let nodes = (0..3).map(|i| fed.node(i, &specs[i], fed.roster(), config.clone(), EPOCH_MS)).collect();
    (Sim::new(nodes, EPOCH_MS, seed), fed, specs)
}

fn pair_sim(config: ReplicaConfig) -> (Sim, Federation) {
    let specs = vec![member(0, "BE", Role::Coordinator), member(1, "BE", Role::Commune)];
    let fed = Federation::new(&specs, 3);
    let nodes = (0..2).map(|i| fed.node(i, &specs[i], fed.roster(), config.clone(), EPOCH_MS)).collect();
    let mut sim = Sim::new(nodes, EPOCH_MS, 3);
    sim.dial(1, 0);
    (sim, fed)
}

#[test]
fn rounds_grow_rare_while_peers_agree_and_start_over_on_a_change() {
    let (mut sim, fed) = pair_sim(ReplicaConfig::default());
    sim.run_for(2 * 3_600_000);
    let before = sim.nodes[0].received.get("summary").copied().unwrap_or(0);
    sim.run_for(3_600_000);
    let idle = sim.nodes[0].received.get("summary").copied().unwrap_or(0) - before;
    // At most one round every 30 minutes (and a tenth of jitter).
    assert!(idle <= 2, "{idle} summaries in an idle hour");
    assert_eq!(sim.nodes[0].replica.max_interval(), 30 * 60 * 1000);
    // A change: the next round comes within the base interval.
    sim::create(&mut sim, &fed.keys[1], 1, Scope::Network, &[], 1);
    let before = sim.nodes[0].received.get("summary").copied().unwrap_or(0);
    sim.run_for(35_000);
    assert!(sim.nodes[0].received.get("summary").copied().unwrap_or(0) > before, "no round after a change");
}

#[test]
fn pushes_settle_into_a_tree() {
    // A triangle: the first push reaches C twice, and C prunes one path.
    let specs: Vec<MemberSpec> = (0..3).map(|i| member(i, "BE", Role::Commune)).collect();
    let fed = Federation::new(&specs, 5);
    let config = ReplicaConfig { auto_links: false, ..ReplicaConfig::default() };
    let nodes = (0..3).map(|i| fed.node(i, &specs[i], fed.roster(), config.clone(), EPOCH_MS)).collect();
    let mut sim = Sim::new(nodes, EPOCH_MS, 5);
    for (a, b) in [(0, 1), (1, 2), (2, 0)] {
        sim.dial(a, b);
    }
    sim.run_for(10_000);
    let doc = sim::create(&mut sim, &fed.keys[0], 0, Scope::Network, &[], 1);
    sim.run_for(5_000);
    let dups: u64 = sim.nodes.iter().map(|n| n.duplicates).sum();
    let prunes: u64 = sim.nodes.iter().map(|n| n.replica.counters().prunes).sum();
    assert!(dups >= 1 && prunes >= 1, "a flood first: {dups} duplicates, {prunes} prunes");
    // The next changes, from anyone, arrive once each.
    for k in 0..3u64 {
        let i = k as usize;
        sim::edit(&mut sim, &fed.keys[i], i, doc, &format!("v{k}"));
        sim.run_for(5_000);
    }
    assert_eq!(sim.nodes.iter().map(|n| n.duplicates).sum::<u64>(), dups, "duplicates once the tree formed");
    let state = sim.nodes[0].docs.state();
    assert!(sim.nodes.iter().all(|n| n.docs.state() == state));
}

#[test]
fn pulses_check_against_their_chain_and_nothing_else_passes() {
    let network = crate::ids::NetworkId::from_bytes([4; 32]);
    let key = SecretKey::from_seed([9; 32]);
    let (chain, values) = PulseChain::make(&network, &key, 1_000_000, 60_000, 10);
    chain.verify(&network).unwrap();
    assert!(chain.verify(&crate::ids::NetworkId::from_bytes([5; 32])).is_err(), "another network's chain");
    let p = |i| crate::heartbeat::Pulse::of(&chain, &values, i).unwrap();
    // Pulse 3 after the anchor; then 7, skipping some.
    assert!(chain.admits(&p(3), (0, chain.anchor)));
    assert!(chain.admits(&p(7), (3, p(3).token)));
    // Replayed, out of order, tampered, or of another schedule: refused.
    assert!(!chain.admits(&p(3), (7, p(7).token)));
    let mut forged = p(8);
    forged.token[0] ^= 1;
    assert!(!chain.admits(&forged, (7, p(7).token)));
    let mut late = p(8);
    late.time_s += 60;
    assert!(!chain.admits(&late, (7, p(7).token)) && !chain.on_schedule(&late));
    // Nobody else can make the next value: another key's chain does not fit.
    let (other, other_values) = PulseChain::make(&network, &SecretKey::from_seed([8; 32]), 1_000_000, 60_000, 10);
    let stranger = crate::heartbeat::Pulse::of(&other, &other_values, 8).unwrap();
    assert!(!chain.admits(&stranger, (7, p(7).token)));
}

#[test]
fn a_watcher_hears_every_node_and_forgets_those_gone_a_week() {
    let (mut sim, fed) = pair_sim(ReplicaConfig::default());
    sim.run_for(20 * 60 * 1000);
    let member = fed.keys[1].node.node_id();
    let heard = sim.nodes[0].replica.beats().last_heard(&member).expect("the member is heard of");
    assert!(sim.now - heard as i64 <= 10 * 60 * 1000, "heard of {} s ago", (sim.now - heard as i64) / 1000);
    // Silent for more than a week: forgotten.
    sim.stop(1);
    sim.run_for(BEAT_EXPIRY_MS + 2 * 3_600_000);
    assert!(!sim.nodes[0].replica.beats().latest.contains_key(&member));
}

/// Drains a replica's outputs: the disconnections it asked for, and whether
/// it persisted a record of `peer`.
fn drain(node: &mut crate::sim::SimNode, peer: &NodeId) -> (Vec<String>, bool) {
    let mut disconnects = Vec::new();
    let mut persisted = false;
    while let Some(out) = node.replica.poll() {
        if let super::Output::Disconnect { node: n, reason } = out
            && n == *peer
        {
            disconnects.push(reason);
        }
    }
    persisted |= node.replica.take_dirty_peers().iter().any(|r| r.node == *peer);
    (disconnects, persisted)
}

#[test]
fn a_stranger_that_does_not_say_hello_is_dropped_and_leaves_nothing() {
    let specs = vec![member(0, "BE", Role::Coordinator)];
    let fed = Federation::new(&specs, 11);
    let mut node = fed.node(0, &specs[0], fed.roster(), ReplicaConfig::default(), EPOCH_MS);
    let stranger = SecretKey::from_seed([77; 32]).node_id();
    let mut docs = crate::sim::MemDocs::default();
    node.replica.peer_connected(EPOCH_MS, stranger, "/ip4/10.0.0.9/tcp/7421".into(), &mut docs);
    // Silent: nothing stored, nothing listed in the heartbeat.
    let (gone, persisted) = drain(&mut node, &stranger);
    assert!(gone.is_empty() && !persisted, "{gone:?} {persisted}");
    assert!(!node.replica.is_known_peer(&stranger));
    node.replica.tick(EPOCH_MS + super::HELLO_DEADLINE_MS - 1, &mut docs);
    assert!(drain(&mut node, &stranger).0.is_empty(), "dropped before its deadline");
    node.replica.tick(EPOCH_MS + super::HELLO_DEADLINE_MS, &mut docs);
    let (gone, persisted) = drain(&mut node, &stranger);
    assert_eq!(gone, ["no hello within 30 s"]);
    assert!(!persisted);
    node.replica.peer_disconnected(EPOCH_MS + super::HELLO_DEADLINE_MS, stranger, Some("closed".into()));
    assert!(node.replica.peer(&stranger).is_none(), "the stranger's record is gone");
    assert!(node.replica.take_dirty_peers().is_empty());

    // Another one talks a lot before any hello: cut at the byte budget.
    let chatty = SecretKey::from_seed([78; 32]).node_id();
    node.replica.peer_connected(EPOCH_MS, chatty, "/ip4/10.0.0.10/tcp/7421".into(), &mut docs);
    let have = crate::sync::message::SyncMessage::RosterHave { hashes: vec![[0; 16]; 4096] };
    let bytes = have.encode().len();
    let mut sent = 0;
    while sent <= super::MAX_PRE_HELLO_BYTES {
        node.replica.message_received(EPOCH_MS + 1, chatty, have.clone(), bytes, &mut docs);
        sent += bytes;
    }
    let (gone, persisted) = drain(&mut node, &chatty);
    assert_eq!(gone, ["more than 256 KiB before its hello"]);
    assert!(!persisted);
}

#[test]
fn a_member_asking_for_the_roster_in_a_loop_is_cut_off() {
    let (mut sim, _) = pair_sim(ReplicaConfig::default());
    sim.run_for(10_000);
    assert!(sim.nodes[0].replica.is_ready(&sim.nodes[1].replica.me().node()));
    let asker = sim.nodes[1].replica.me().node();
    let mut docs = crate::sim::MemDocs::default();
    // Flush what the simulation left, then the flood: a RosterHave listing
    // nothing, which buys the whole roster each time it is answered.
    drain(&mut sim.nodes[0], &asker);
    let have = crate::sync::message::SyncMessage::RosterHave { hashes: Vec::new() };
    let mut answers = 0;
    let mut disconnects = Vec::new();
    for _ in 0..1_000 {
        sim.nodes[0].replica.message_received(sim.now, asker, have.clone(), 8, &mut docs);
        while let Some(out) = sim.nodes[0].replica.poll() {
            match out {
                super::Output::Send { kind: "roster", .. } => answers += 1,
                super::Output::Disconnect { reason, .. } => disconnects.push(reason),
                _ => {}
            }
        }
        if !disconnects.is_empty() {
            break;
        }
    }
    // Three answers a round; the rest unanswered, then cut off by the request budget.
    assert_eq!(answers, crate::sync::session::MAX_ROSTER_ANSWERS_PER_ROUND as usize);
    assert!(disconnects.first().is_some_and(|d| d.contains("faster than")), "{disconnects:?}");
}

/// A member sending summaries in a loop, each of which would buy a
/// `Buckets` answer, gets a burst answered, then a few a second, then is
/// cut off; its record counts what was dropped.
#[test]
fn a_member_starting_rounds_in_a_loop_is_slowed_then_cut_off() {
    let (mut sim, _) = pair_sim(ReplicaConfig::default());
    sim.run_for(10_000);
    let asker = sim.nodes[1].replica.me().node();
    let mut docs = crate::sim::MemDocs::default();
    drain(&mut sim.nodes[0], &asker);
    // A summary that differs from everything: each one answered costs fingerprints.
    let summary = crate::sync::message::SyncMessage::Summary {
        count: 999,
        fingerprint: [9; 16],
        roster_count: 1,
        roster_fingerprint: [9; 16],
        pending: 0,
    };
    let (mut answered, mut disconnected) = (0, None);
    for i in 0..1_000i64 {
        // 100 a second, far beyond the budget.
        let now = sim.now + i * 10;
        sim.nodes[0].replica.message_received(now, asker, summary.clone(), 60, &mut docs);
        let mut sent = false;
        while let Some(out) = sim.nodes[0].replica.poll() {
            match out {
                super::Output::Send { .. } => sent = true,
                super::Output::Disconnect { reason, .. } => disconnected = Some((i, reason)),
                _ => {}
            }
        }
        answered += usize::from(sent);
        if disconnected.is_some() {
            break;
        }
    }
    let (at, reason) = disconnected.expect("the flood was cut off");
    assert!(reason.contains("faster than"), "{reason}");
    // The burst, plus what the rate allows over the flood's duration, at most.
    let allowed = super::ASKS_BURST as u64 + (at as u64 * 10) * super::ASKS_PER_MINUTE as u64 / 60_000 + 1;
    assert!(answered as u64 <= allowed, "{answered} answers sent, at most {allowed} allowed");
    assert!(answered >= super::ASKS_BURST as usize / 2, "honest bursts are answered: {answered}");
    let record = sim.nodes[0].replica.peer(&asker).expect("a member's record");
    assert!(record.rounds_refused >= super::MAX_ASKS_DROPPED as u64);
}

/// A peer that keeps claiming to hold nothing (all its buckets empty)
/// makes this node queue what they share a few times a day, not at every
/// round: the claims beyond the daily allowance are counted, not acted on.
/// (Each claim counts, whether or not the documents were queued already.)
#[test]
fn a_peer_claiming_to_hold_nothing_cannot_make_the_node_upload_in_a_loop() {
    let (mut sim, fed) = pair_sim(ReplicaConfig::default());
    for n in 0..5 {
        sim::create(&mut sim, &fed.keys[0], 0, Scope::Network, &[], n);
    }
    sim.run_for(60_000);
    let claimer = sim.nodes[1].replica.me().node();
    drain(&mut sim.nodes[0], &claimer);
    let empty = crate::sync::message::SyncMessage::Buckets {
        buckets: vec![Default::default(); crate::sync::fingerprint::BUCKETS],
    };
    let shared = 5 + 2; // the documents, and the two profiles... at most
    let mut now = sim.now;
    for _ in 0..2_000 {
        // Slow enough for the request budget: it is the claims that are bounded here.
        now += 300;
        let node = &mut sim.nodes[0];
        node.replica.message_received(now, claimer, empty.clone(), 600, &mut node.docs);
        while node.replica.poll().is_some() {}
    }
    let record = sim.nodes[0].replica.peer(&claimer).expect("the peer's record");
    let allowance = super::PUSH_ALLOWANCE_PER_DAY * shared + super::PUSH_ALLOWANCE_EXTRA;
    assert!(record.pushed <= allowance, "{} queued, allowance {allowance}", record.pushed);
    assert!(record.pushes_refused > 0, "claims beyond the allowance are refused");
    assert!(record.pushed >= 5, "the first claims were acted on");
    // Item lists that name nothing in every bucket are the same claim: refused too.
    let refused = record.pushes_refused;
    let items = crate::sync::message::SyncMessage::Items { buckets: (0..=255u8).map(|b| (b, Vec::new())).collect() };
    for _ in 0..10 {
        now += 300;
        let node = &mut sim.nodes[0];
        node.replica.message_received(now, claimer, items.clone(), 600, &mut node.docs);
        while node.replica.poll().is_some() {}
    }
    let record = sim.nodes[0].replica.peer(&claimer).expect("the peer's record");
    assert!(record.pushed <= allowance && record.pushes_refused > refused, "{record:?}");
}

/// While a network forms, a node says its full status again at 2, 10 and
/// 30 minutes, changed or not, so a heartbeat lost on the way does not
/// leave the coordinators without it for hours; then only on change.
#[test]
fn early_full_heartbeats_repair_a_lost_first_one() {
    let (mut sim, _) = pair_sim(ReplicaConfig::default());
    sim.run_for(60_000);
    let beats = |sim: &Sim| sim.nodes[0].received.get("heartbeats").copied().unwrap_or(0);
    let first = beats(&sim);
    sim.run_for(35 * 60_000);
    let early = beats(&sim) - first;
    assert!(early >= 3, "{early} heartbeats in the first 35 minutes after the first");
    sim.run_for(2 * 3_600_000);
    let later = beats(&sim) - first - early;
    assert!(later <= 1, "{later} heartbeats in two idle hours after");
}

/// A peer the operator removed is told and stays away: the roster rule,
/// run again on the next statement, does not bring it back, and one that
/// connects again before its session was ready is told at its hello.
#[test]
fn a_peer_the_operator_removed_stays_away() {
    let (mut sim, fed, specs) = three_belgians(5, ReplicaConfig::default());
    for i in 0..3 {
        // The links the rule makes when the roster first names them (a
        // node restarted keeps them in its peer records).
        sim.nodes[i].replica.desired.clear();
        sim.nodes[i].replica.relink();
        while let Some(out) = sim.nodes[i].replica.poll() {
            if let super::Output::Dial { node, .. } = out {
                let j = sim.index_of(&node).unwrap();
                sim.dial(i, j);
            }
        }
    }
    sim.run_for(60_000);
    assert!(sim.connected(0, 1) && sim.connected(0, 2) && sim.connected(1, 2));
    let one = sim.ids[1];
    let node = &mut sim.nodes[0];
    assert!(node.replica.remove_peer(one, &mut node.docs));
    sim.run_for(60_000);
    assert!(!sim.connected(0, 1));
    // As on any new roster statement: the rule still chooses 1, but 0's
    // operator removed it.
    sim.nodes[0].replica.relink();
    sim.run_for(30 * 60_000);
    assert!(!sim.connected(0, 1), "the removed peer was dialled again");
    assert!(sim.nodes[0].replica.peer(&one).is_none(), "{:?}", sim.nodes[0].replica.peer(&one));
    assert!(sim.connected(0, 2) && sim.connected(1, 2));

    // Removed while its session was not ready (no hello yet): told at its next hello.
    let (mut lone, mut docs) =
        (fed.node(0, &specs[0], fed.roster(), ReplicaConfig::default(), EPOCH_MS), sim::MemDocs::default());
    let two = fed.node(2, &specs[2], fed.roster(), ReplicaConfig::default(), EPOCH_MS);
    let peer = two.replica.me().node();
    while lone.replica.poll().is_some() {}
    lone.replica.peer_connected(EPOCH_MS, peer, "/ip4/127.0.0.1/tcp/7421".into(), &mut docs);
    lone.replica.remove_peer(peer, &mut docs);
    lone.replica.peer_disconnected(EPOCH_MS + 1, peer, None);
    lone.replica.peer_connected(EPOCH_MS + 2, peer, "/ip4/127.0.0.1/tcp/7421".into(), &mut docs);
    let hello = two.replica.hello().expect("a member says hello");
    lone.replica.message_received(EPOCH_MS + 3, peer, hello, 0, &mut docs);
    let mut kinds = Vec::new();
    while let Some(out) = lone.replica.poll() {
        if let super::Output::Send { to, kind, .. } = out
            && to == peer
        {
            kinds.push(kind);
        }
    }
    assert!(kinds.contains(&"unlink"), "{kinds:?}");
}

/// A full heartbeat lost on the way (here: forgotten by the watcher) is
/// asked for again when the node's next pulse arrives, back the way the
/// pulse came, instead of waiting hours for the next change.
#[test]
fn a_watcher_missing_a_status_asks_for_it_back_along_the_pulses_way() {
    let (mut sim, ..) = three_belgians(9, ReplicaConfig { auto_links: false, ..ReplicaConfig::default() });
    // A line: 2 — 1 — 0 (the watcher).
    sim.dial(1, 0);
    sim.dial(2, 1);
    // Past the early repeats of a forming network.
    sim.run_for(40 * 60_000);
    let far = sim.ids[2];
    assert!(sim.nodes[0].replica.beats.latest.contains_key(&far));
    // Lost: the watcher has neither the status nor the chain of node 2.
    sim.nodes[0].replica.beats.latest.remove(&far);
    sim.nodes[0].replica.beats.chains.remove(&far);
    let asked = |sim: &Sim| sim.nodes[2].received.get("beats-wanted").copied().unwrap_or(0);
    let before = asked(&sim);
    sim.run_for(super::beats::PULSE_EVERY_MS + 60_000);
    assert_eq!(asked(&sim) - before, 1, "node 2 was asked once, through node 1");
    assert!(sim.nodes[0].replica.beats.latest.contains_key(&far), "the watcher has node 2's status again");
    // Then nothing more is asked while the watcher has it.
    sim.run_for(4 * super::beats::PULSE_EVERY_MS);
    assert_eq!(asked(&sim) - before, 1);
}

/// A document holding changes by a key revoked since: the node that keeps
/// it offers it, the node that refuses them says so (`Differ`), and the
/// two stop sending it at every round — their rounds go quiet again —
/// until either side's state of it changes.
#[test]
fn nodes_agree_to_differ_on_what_one_refuses_and_the_other_keeps() {
    use crate::network::{SignedStatement, Statement};
    let (mut sim, fed, _) = three_belgians(21, ReplicaConfig { auto_links: false, ..ReplicaConfig::default() });
    // Node 2 writes a document that reaches node 0 only.
    sim.dial(2, 0);
    sim.run_for(60_000);
    let writers = [fed.keys[0].commune.commune_id()];
    let doc = sim::create(&mut sim, &fed.keys[2], 2, Scope::Network, &writers, 1);
    sim.run_for(60_000);
    assert!(sim.nodes[0].docs.state().contains_key(&doc), "node 0 holds node 2's document");
    sim.close(2, 0);
    sim.nodes[2].wants.clear();
    // Then node 2's key is revoked (nothing of it kept), everywhere.
    let revoke = SignedStatement::sign(
        &fed.founder,
        fed.found.network,
        1_000_001,
        Statement::Revoke { node: fed.keys[2].node.node_id(), kept: vec![] },
    );
    for i in 0..2 {
        let now = sim.now;
        let node = &mut sim.nodes[i];
        node.replica.add_statements(now, vec![revoke.clone()], None, &mut node.docs);
    }
    // Node 1 meets node 0: it refuses the revoked key's changes.
    sim.dial(1, 0);
    sim.run_for(10 * 60_000);
    let carried = |sim: &Sim| {
        let r = &sim.nodes[1].received;
        r.get("docs").copied().unwrap_or(0) + r.get("push").copied().unwrap_or(0)
    };
    let first = carried(&sim);
    assert!(first >= 1, "node 0 offered the document once");
    assert!(!sim.nodes[1].docs.state().contains_key(&doc), "node 1 refused it");
    let apart = sim.nodes[0].replica.kept_apart(&sim.ids[1]);
    assert_eq!(apart.len(), 1, "{apart:?}");
    assert_eq!((apart[0].0, apart[0].1.code.as_str(), apart[0].1.refused_here), (doc, "revoked", false));
    let theirs = sim.nodes[1].replica.kept_apart(&sim.ids[0]);
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert!(theirs[0].1.refused_here);
    // A proposal made under another roster (one side lacks a statement the
    // refusal may rest on) is not agreed; under the same roster it is.
    let own = sim::create(&mut sim, &fed.keys[0], 0, Scope::Network, &[], 2);
    let (one, now) = (sim.ids[1], sim.now);
    let elsewhere = crate::xorset::Fingerprint { count: 1, xor: [9; 16] };
    let node = &mut sim.nodes[0];
    node.replica.on_differ(now, one, false, elsewhere, vec![(own, "revoked".into())], &mut node.docs);
    assert_eq!(node.replica.kept_apart(&one).len(), 1);
    let same = node.replica.roster().unwrap().fingerprint();
    node.replica.on_differ(now, one, false, same, vec![(own, "not a reason".into())], &mut node.docs);
    assert_eq!(node.replica.kept_apart(&one).len(), 1, "an unknown reason is not agreed to");
    node.replica.on_differ(now, one, false, same, vec![(own, "revoked".into())], &mut node.docs);
    assert_eq!(node.replica.kept_apart(&one).len(), 2);
    node.replica.apart.get_mut(&one).unwrap().remove(&own);
    sim.run_for(60_000);
    let first = carried(&sim);
    // Two hours on, the document was not sent again, and rounds grew rare.
    let summaries = |sim: &Sim| sim.nodes[1].received.get("summary").copied().unwrap_or(0);
    let before = summaries(&sim);
    sim.run_for(2 * 3_600_000);
    assert_eq!(carried(&sim), first, "sent again");
    let rounds = summaries(&sim) - before;
    assert!(rounds <= 12, "{rounds} summaries in two hours: the peers do not agree");

    // Node 0 writes to the document: it is compared and sent again, node 1
    // still cannot take it (it rests on the revoked key's change), and the
    // two agree again; then their rounds go quiet again.
    assert!(sim::edit(&mut sim, &fed.keys[0], 0, doc, "une suite"));
    sim.run_for(30 * 60_000);
    assert_eq!(sim.nodes[0].replica.kept_apart(&one).len(), 1, "agreed again on the new state");
    assert_eq!(sim.nodes[1].replica.kept_apart(&sim.ids[0]).len(), 1);
    let (sent, before) = (carried(&sim), summaries(&sim));
    sim.run_for(2 * 3_600_000);
    assert_eq!(carried(&sim), sent, "sent again after the second agreement");
    let rounds = summaries(&sim) - before;
    assert!(rounds <= 12, "{rounds} summaries in two hours after the second agreement");
}

/// What a node could not store (a full disk) is held back by the sender
/// for ten minutes, then offered again.
#[test]
fn what_a_node_could_not_store_is_held_back_for_a_while() {
    let (mut sim, fed, _) = three_belgians(23, ReplicaConfig { auto_links: false, ..ReplicaConfig::default() });
    sim.dial(1, 0);
    sim.run_for(60_000);
    let doc = sim::create(&mut sim, &fed.keys[0], 0, Scope::Network, &[], 1);
    sim.run_for(60_000);
    let (zero, one, now) = (sim.ids[0], sim.ids[1], sim.now);
    // Node 1's store failed on that document (as the engine reports it).
    let outcome = super::IngestOutcome {
        refused: vec![("store_failed".into(), "no space left on device".into())],
        apart: vec![(doc, "store_failed".into())],
        ..Default::default()
    };
    let node = &mut sim.nodes[1];
    node.replica.ingested(now, zero, outcome, &mut node.docs);
    sim.run_for(60_000);
    let held = sim.nodes[0].replica.kept_apart(&one);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!((held[0].0, held[0].1.code.as_str(), held[0].1.refused_here), (doc, "store_failed", false));
    assert_eq!(sim.nodes[1].replica.counters.faults, 0, "a full disk is nobody's fault");
    sim.run_for(super::APART_AHEAD_FOR_MS);
    assert!(sim.nodes[0].replica.kept_apart(&one).is_empty(), "offered again after ten minutes");
}

#[test]
fn a_restarted_peer_in_agreement_resyncs_with_the_two_hellos() {
    let (mut sim, fed) = pair_sim(ReplicaConfig::default());
    sim::create(&mut sim, &fed.keys[0], 0, Scope::Network, &[], 1);
    sim::create(&mut sim, &fed.keys[1], 1, Scope::Network, &[], 2);
    sim.run_for(120_000);
    let first_hello = sim.nodes[0].received_bytes["hello"];
    // Node 1 stops and starts again on what it persisted.
    sim.stop(1);
    sim.run_for(1_000);
    let before: Vec<_> = sim.nodes.iter().map(|n| n.received.clone()).collect();
    let hello_bytes_before = sim.nodes[0].received_bytes["hello"];
    let restarted = sim.now;
    sim.restart(1);
    sim.run_for(10_000);
    for (i, node) in sim.nodes.iter().enumerate() {
        let peer = sim.ids[1 - i];
        let synced = node.replica.peer(&peer).and_then(|r| r.last_sync_ms);
        assert!(synced.is_some_and(|t| t >= restarted), "node {i} is not in sync again: {synced:?}");
        let new: BTreeMap<&str, u64> = node
            .received
            .iter()
            .map(|(k, n)| (*k, n - before[i].get(k).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        // One hello each way and nothing else: it carried the summary and
        // the routes; no roster, no question about membership.
        assert_eq!(new.get("hello"), Some(&1), "node {i}: {new:?}");
        for kind in ["summary", "routes", "roster-have", "roster", "proof-wanted", "buckets", "items"] {
            assert!(!new.contains_key(kind), "node {i} received {kind}: {new:?}");
        }
    }
    // The hello of a peer met before leaves its membership proof out.
    let resync_hello = sim.nodes[0].received_bytes["hello"] - hello_bytes_before;
    assert!(resync_hello + 200 < first_hello, "hello of {resync_hello} B, the first {first_hello} B");
}

#[test]
fn a_stranger_hears_neither_our_summary_nor_our_routes() {
    let specs = vec![member(0, "BE", Role::Coordinator), member(1, "BE", Role::Commune)];
    let fed = Federation::new(&specs, 13);
    let mut node = fed.node(0, &specs[0], fed.roster(), ReplicaConfig::default(), EPOCH_MS);
    let mut docs = crate::sim::MemDocs::default();
    let hello_to = |node: &mut crate::sim::SimNode, peer: NodeId| {
        let mut hello = None;
        while let Some(out) = node.replica.poll() {
            if let super::Output::Send { to, kind: "hello", bytes, .. } = out
                && to == peer
            {
                hello = Some(crate::sync::message::SyncMessage::decode(&bytes).expect("our hello decodes"));
            }
        }
        hello.expect("a hello was sent")
    };
    let stranger = SecretKey::from_seed([77; 32]).node_id();
    node.replica.peer_connected(EPOCH_MS, stranger, "/ip4/10.0.0.9/tcp/7421".into(), &mut docs);
    let crate::sync::message::SyncMessage::Hello { proof, summary, routes, .. } = hello_to(&mut node, stranger) else {
        unreachable!()
    };
    assert!(!proof.is_empty() && summary.is_none() && routes.is_empty(), "{proof:?} {summary:?} {routes:?}");
    // A member gets both (and the proof: it never said our roster).
    let member_node = fed.keys[1].node.node_id();
    node.replica.peer_connected(EPOCH_MS, member_node, "/ip4/10.0.0.8/tcp/7421".into(), &mut docs);
    let crate::sync::message::SyncMessage::Hello { proof, summary, routes, .. } = hello_to(&mut node, member_node)
    else {
        unreachable!()
    };
    assert!(!proof.is_empty() && summary.is_some() && !routes.is_empty(), "{proof:?} {summary:?} {routes:?}");
}
