//! Deterministic chaos over the real replica core: five to seven nodes
//! of two countries in a ring with random chords, two of them partners,
//! one on a slow link; they write network and partnership documents while
//! the network drops, duplicates and reorders messages, cuts links,
//! partitions nodes and restarts them; a new member is admitted mid-run
//! and, in some seeds, a member is removed or a key revoked; a document
//! larger than a frame travels in chunks. Each node starts knowing only
//! its own admission. After healing, every node must hold exactly the
//! documents it may hold, with the same heads as every other holder, and
//! the same roster — and never a document it may not hold. Seeds are
//! reproducible: a failure prints its seed.
//!
//! ```text
//!     A ─── B
//!    /       \
//!   E         C        (plus random chords; the last node joins mid-run)
//!    \       /
//!     ─── D ─
//! ```

use std::collections::{BTreeMap, BTreeSet};

use passerelle_protocol::header::Scope;
use passerelle_protocol::ids::{CommuneId, DocId};
use passerelle_protocol::network::{Role, Statement};
use passerelle_protocol::replica::ReplicaConfig;
use passerelle_protocol::sim::{self, Access, EPOCH_MS, Faults, Federation, MemberSpec, Rng, Sim};
use passerelle_protocol::sync::audience::Audience;

/// What one seed's run came to.
struct Outcome {
    delivered: u64,
    bytes: u64,
    duplicates: u64,
    applied: u64,
    converge_ms: i64,
}

fn spec(i: usize, slow: bool) -> MemberSpec {
    MemberSpec {
        name: format!("commune {i}"),
        country: if i.is_multiple_of(2) { "BE" } else { "MA" }.into(),
        role: Role::Commune,
        access: if slow {
            Access { latency_ms: 300, bytes_per_s: Some(8_000) }
        } else {
            Access { latency_ms: 5, bytes_per_s: Some(1_000_000) }
        },
    }
}

/// Whether node `i` has converged with everyone: the same roster, and for
/// every document anyone holds, the same heads as every node that may hold
/// it — and nothing it may not hold.
fn check(sim: &Sim, live: &[usize]) -> Result<(), String> {
    let roster = sim.nodes[live[0]].replica.roster().expect("in a network").clone();
    // Every document anyone holds: who may hold it, and the heads seen.
    type Versions = (Audience, BTreeSet<Vec<[u8; 32]>>);
    let mut all: BTreeMap<DocId, Versions> = BTreeMap::new();
    for &i in live {
        let node = &sim.nodes[i];
        if node.replica.roster().map(|r| r.fingerprint()) != Some(roster.fingerprint()) {
            return Err(format!("node {i}: roster differs"));
        }
        for (id, d) in &node.docs.docs {
            let audience = Audience::of(&d.header.header);
            let mut heads: Vec<[u8; 32]> = d.doc.get_heads().iter().map(|h| h.0).collect();
            heads.sort();
            all.entry(*id).or_insert((audience, BTreeSet::new())).1.insert(heads);
        }
    }
    for &i in live {
        let node = &sim.nodes[i];
        let me: CommuneId = node.replica.me().commune();
        for (id, (audience, versions)) in &all {
            let may = audience.admits(&me, &roster);
            match (node.docs.docs.get(id), may) {
                (Some(_), false) => return Err(format!("node {i} holds {} it may not hold", id.short())),
                (None, true) => return Err(format!("node {i} lacks {}", id.short())),
                _ => {}
            }
            if may && versions.len() > 1 {
                return Err(format!("{} has {} versions", id.short(), versions.len()));
            }
        }
    }
    Ok(())
}

fn run(seed: u64) -> Outcome {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let n = 5 + (seed % 3) as usize;
    let slow = 1 + rng.below(n as u64 - 2) as usize;
    let specs: Vec<MemberSpec> = (0..n).map(|i| spec(i, i == slow)).collect();
    let mut fed = Federation::new(&specs, seed);
    // Node 0 (BE, the founder) and node 1 (MA) are partners.
    fed.partner(0, 1);
    // Frames of at most 4 KiB: documents larger than that go in chunks.
    let config = ReplicaConfig {
        anti_entropy_ms: 1_000,
        heartbeat_ms: 3_000,
        auto_links: false,
        peer_budget: Some(4_096),
        ..ReplicaConfig::default()
    };
    let joiner = n - 1;
    let nodes = (0..n)
        .map(|i| {
            let mut roster = fed.roster_of(i);
            // Each side of the partnership starts with its own declaration only.
            roster
                .insert_all(fed.partnerships.iter().filter(|s| s.signer == fed.keys[i].commune.commune_id()).cloned());
            fed.node(i, &specs[i], roster, config.clone(), EPOCH_MS)
        })
        .collect();
    let mut sim = Sim::new(nodes, EPOCH_MS, seed);
    // The last node is admitted mid-run: offline until then.
    sim.nodes[joiner].online = false;
    let mut links: Vec<(usize, usize)> = (0..joiner).map(|i| (i, (i + 1) % joiner)).collect();
    for _ in 0..rng.below(3) {
        let (a, b) = (rng.below(joiner as u64) as usize, rng.below(joiner as u64) as usize);
        if a != b && !links.iter().any(|&(x, y)| (x, y) == (a, b) || (x, y) == (b, a)) {
            links.push((a, b));
        }
    }
    for &(a, b) in &links {
        sim.dial(a, b);
    }
    sim.run_for(5_000);

    // A document every commune may write, created by node 0.
    let everyone: Vec<CommuneId> = fed.keys.iter().map(|k| k.commune.commune_id()).collect();
    let shared = sim::create(&mut sim, &fed.keys[0], 0, Scope::Network, &everyone, 0);
    sim.run_for(3_000);

    // The chaos phase.
    sim.faults = Faults { loss: 5 + rng.below(30), duplicate: 5, reorder: 20, jitter_ms: 800 };
    let removed = seed.is_multiple_of(5).then_some(2usize);
    // In other seeds a coordinator revokes the key of node 3, which wrote
    // nothing: what it writes afterwards reaches nobody.
    let revoked = (seed % 5 == 3).then_some(3usize);
    let mut stopped: Vec<usize> = Vec::new();
    let mut docs: Vec<DocId> = vec![shared];
    for round in 0..30u64 {
        if round == 10 {
            // The founder admits the last node, which comes online and dials in.
            let s = fed.admits[joiner].clone();
            let now = sim.now;
            let node = &mut sim.nodes[0];
            node.replica.add_statements(now, vec![s], None, &mut node.docs);
            sim.commit_local(0, Default::default());
            sim.nodes[joiner].online = true;
            sim.restart(joiner);
            sim.dial(joiner, 0);
            sim.dial(joiner, 1 + rng.below(joiner as u64 - 1) as usize);
        }
        if round == 5 {
            // A large document: thirty edits of 200 characters, more than a frame.
            let i = 1;
            let keys = fed.keys[i].clone();
            let big = sim::create(&mut sim, &keys, i, Scope::Network, &[], 900);
            for k in 0..30 {
                sim::edit(&mut sim, &keys, i, big, &format!("{k:03} {}", "chronique d'un partenariat ".repeat(7)));
            }
            docs.push(big);
        }
        if let (Some(r), 20) = (revoked, round) {
            let network = fed.found.network;
            let node = fed.keys[r].node.node_id();
            let s = passerelle_protocol::network::SignedStatement::sign(
                &fed.founder,
                network,
                1_000_001,
                Statement::Revoke { node, kept: vec![] },
            );
            let now = sim.now;
            let n0 = &mut sim.nodes[0];
            n0.replica.add_statements(now, vec![s], None, &mut n0.docs);
            sim.commit_local(0, Default::default());
        }
        if let (Some(r), 20) = (removed, round) {
            let network = fed.found.network;
            let member = fed.keys[r].commune.commune_id();
            let s = passerelle_protocol::network::SignedStatement::sign(
                &fed.founder,
                network,
                1_000_000,
                Statement::Remove { member },
            );
            let now = sim.now;
            let node = &mut sim.nodes[0];
            node.replica.add_statements(now, vec![s], None, &mut node.docs);
            sim.commit_local(0, Default::default());
        }
        if rng.chance(20) {
            let (a, b) = links[rng.below(links.len() as u64) as usize];
            let key = (a.min(b), a.max(b));
            if !sim.cut.remove(&key) {
                sim.cut.insert(key);
                sim.close(a, b);
            }
        }
        if rng.chance(8) {
            let i = 1 + rng.below(joiner as u64 - 1) as usize;
            if stopped.contains(&i) {
                stopped.retain(|s| *s != i);
                sim.restart(i);
            } else if Some(i) != removed {
                stopped.push(i);
                sim.stop(i);
            }
        }
        let live: Vec<usize> = (0..n).filter(|i| sim.nodes[*i].online && Some(*i) != removed).collect();
        let i = live[rng.below(live.len() as u64) as usize];
        // The node whose key is revoked writes only once everyone knows
        // (below): what reached a node before the revocation stays there.
        if Some(i) == revoked {
            sim.run_for(rng.below(2_000) as i64);
            continue;
        }
        let keys = fed.keys[i].clone();
        if rng.chance(30) {
            let scope = if i <= 1 && rng.chance(50) { Scope::Partnership } else { Scope::Network };
            docs.push(sim::create(&mut sim, &keys, i, scope, &[], 1 + round));
        } else {
            let target = if rng.chance(50) { shared } else { docs[rng.below(docs.len() as u64) as usize] };
            sim::edit(&mut sim, &keys, i, target, &format!("n{i} r{round} {}", rng.below(1000)));
        }
        sim.run_for(rng.below(2_000) as i64);
    }

    // Heal: every link up, no fault, every node running.
    sim.faults = Faults::default();
    sim.cut.clear();
    for i in stopped {
        sim.restart(i);
    }
    let healed = sim.now;
    let live: Vec<usize> = (0..n).filter(|i| Some(*i) != removed && Some(*i) != revoked).collect();
    if let Some(r) = revoked {
        // Once every node knows of the revocation, the revoked key writes.
        let key = fed.keys[r].node.node_id();
        let commune = fed.keys[r].commune.commune_id();
        for _ in 0..600 {
            if live.iter().all(|i| sim.nodes[*i].replica.roster().is_some_and(|ro| ro.is_revoked(&key, &commune))) {
                break;
            }
            sim.run_for(500);
        }
        let keys = fed.keys[r].clone();
        sim::create(&mut sim, &keys, r, Scope::Network, &[], 777);
        sim::edit(&mut sim, &keys, r, shared, "écrit avec une clé révoquée");
    }
    let mut last = Err(String::new());
    for _ in 0..600 {
        sim.run_for(500);
        last = check(&sim, &live);
        if last.is_ok() {
            break;
        }
    }
    if let Err(e) = last {
        panic!("seed {seed}: no convergence within 300 s of healing: {e}");
    }
    if let Some(r) = removed {
        // The removed member may knock, but no node speaks with it any more.
        let gone = sim.ids[r];
        assert!(
            live.iter().all(|i| !sim.nodes[*i].replica.is_ready(&gone)),
            "seed {seed}: the removed member is served"
        );
    }
    if let Some(r) = revoked {
        // Whatever the revoked key signed stayed with it.
        for &i in &live {
            for (id, d) in &sim.nodes[i].docs.docs {
                assert!(
                    d.changes.iter().all(|c| c.author != sim.ids[r]),
                    "seed {seed}: node {i} holds a change of the revoked key in {}",
                    id.short()
                );
            }
        }
        assert!(live.iter().all(|i| !sim.nodes[*i].replica.is_ready(&sim.ids[r])), "seed {seed}: revoked key served");
    }
    Outcome {
        delivered: sim.delivered,
        bytes: sim.nodes.iter().map(|n| n.bytes_out).sum(),
        duplicates: sim.nodes.iter().map(|n| n.duplicates).sum(),
        applied: sim.nodes.iter().map(|n| n.applied).sum(),
        converge_ms: sim.now - healed,
    }
}

#[test]
fn the_network_converges_after_loss_reordering_partitions_churn_and_roster_changes() {
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
    let (mut delivered, mut bytes, mut dups, mut applied) = (0, 0, 0, 0);
    let mut times: Vec<i64> = Vec::new();
    for o in outcomes {
        delivered += o.delivered;
        bytes += o.bytes;
        dups += o.duplicates;
        applied += o.applied;
        times.push(o.converge_ms);
    }
    times.sort_unstable();
    let mean = times.iter().sum::<i64>() as f64 / times.len().max(1) as f64 / 1000.0;
    println!(
        "chaos simulation: {seeds} seeds run, {seeds} converged with identical heads and rosters in {:.1} s; \
         {delivered} messages ({bytes} bytes) delivered; changes stored {applied}, received again {dups}; \
         converged after healing in {mean:.1} s on average, {:.1} s at most (virtual)",
        started.elapsed().as_secs_f64(),
        times.last().copied().unwrap_or(0) as f64 / 1000.0
    );
}
