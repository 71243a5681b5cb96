//! Chaos on real nodes: five nodes linked only through emulated links
//! (`passerelle_node::netem`) with random latency and bandwidth; for a
//! while, on a schedule drawn from a seed, links are cut and partitioned,
//! nodes write, and one node is killed with SIGKILL in the middle of a burst
//! of writes and restarted. After healing, every node holds identical heads
//! for every document, and no acknowledged write is missing anywhere.
//!
//! ```text
//!   Senneval ── Verbois
//!     │  ╲         │
//!   Hautrieu  Tala-n-Asif
//!     │            │
//!   Imlil (killed) ┘
//! ```
//!
//! Seeds: `PASSERELLE_CHAOS_SEEDS` (comma-separated) replaces the defaults.
//! Each run prints its seed and figures.

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use passerelle_node::api::types::CreateDoc;
use passerelle_node::netem::{Link, LinkShape};
use passerelle_protocol::ids::DocId;
use passerelle_tests::{TestNode, disconnect_all, federation, wait_converged};
use serde_json::json;

const CHAOS: Duration = Duration::from_secs(12);
/// Links partitioned for seconds may have backed off to tens of seconds between dials.
const DEADLINE: Duration = Duration::from_secs(180);

/// A small deterministic generator (xorshift), so a seed replays the schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn port_of(node: &TestNode) -> anyhow::Result<std::net::SocketAddr> {
    let addr = node.p2p_addr()?;
    let port: u16 = addr.rsplit('/').next().unwrap_or_default().parse()?;
    Ok(([127, 0, 0, 1], port).into())
}

/// Creates a network-scope request; its id once acknowledged.
fn write(node: &TestNode, title: &str) -> anyhow::Result<DocId> {
    let fields = json!({"title": title, "description": "chaos"});
    let req = CreateDoc {
        kind: "request".into(),
        scope: Some("network".into()),
        fields: fields.as_object().unwrap().clone(),
        ..Default::default()
    };
    Ok(node.client()?.create(&req)?.id)
}

fn chaos(seed: u64) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut nodes = federation([
        ("Senneval", "BE"),
        ("Verbois", "BE"),
        ("Tala-n-Asif", "MA"),
        ("Imlil", "MA"),
        ("Hautrieu", "BE"),
    ])?;
    for n in &nodes {
        disconnect_all(n)?;
    }
    // (dialler, target): Imlil (3), the node that is killed, dials all its
    // links, so it finds them again after its restart.
    let edges = [(1, 0), (2, 1), (4, 0), (2, 0), (3, 2), (3, 4)];
    let mut links: Vec<Link> = Vec::new();
    for (from, to) in edges {
        let shape = LinkShape {
            latency: Duration::from_millis(10 + rng.below(140)),
            bytes_per_s: Some(64_000 + rng.below(448_000)),
        };
        let link = rt.block_on(Link::start(port_of(&nodes[to])?, shape))?;
        let r = nodes[from].cli(&["peer", "add", &nodes[to].node_id()?, &link.multiaddr()]);
        anyhow::ensure!(r.code == 0, "peer add: {}", r.stderr);
        links.push(link);
    }
    let base = nodes[0].doc_heads()?.len();
    wait_converged(&nodes.iter().collect::<Vec<_>>(), base, DEADLINE)?;

    // The chaos phase.
    let mut acked: BTreeSet<DocId> = BTreeSet::new();
    let (mut cuts, mut partitions, mut writes) = (0, 0, 0);
    let victim = 3;
    let mut killed_at: Option<Instant> = None;
    let mut burst: Option<(mpsc::Receiver<Vec<DocId>>, std::thread::JoinHandle<()>)> = None;
    let start = Instant::now();
    while start.elapsed() < CHAOS {
        let t = start.elapsed();
        if burst.is_none() && killed_at.is_none() && t > CHAOS / 3 {
            // A burst of writes on the victim, from two threads...
            let (tx, rx) = mpsc::channel();
            let clients = [nodes[victim].client()?, nodes[victim].client()?];
            let handle = std::thread::spawn(move || {
                std::thread::scope(|s| {
                    for (w, client) in clients.iter().enumerate() {
                        let tx = tx.clone();
                        s.spawn(move || {
                            let mut mine = Vec::new();
                            for n in 0.. {
                                let fields = json!({"title": format!("rafale {w}-{n}"), "description": "chaos"});
                                let req = CreateDoc {
                                    kind: "request".into(),
                                    scope: Some("network".into()),
                                    fields: fields.as_object().unwrap().clone(),
                                    ..Default::default()
                                };
                                match client.create(&req) {
                                    Ok(doc) => mine.push(doc.id),
                                    Err(_) => break,
                                }
                            }
                            let _ = tx.send(mine);
                        });
                    }
                });
            });
            burst = Some((rx, handle));
            std::thread::sleep(Duration::from_millis(400 + rng.below(600)));
            // ...killed in its middle.
            nodes[victim].kill9();
            killed_at = Some(Instant::now());
            if let Some((rx, handle)) = burst.take() {
                handle.join().expect("burst writers");
                for ids in rx.try_iter() {
                    writes += ids.len();
                    acked.extend(ids);
                }
            }
            continue;
        }
        if killed_at.is_some_and(|k| k.elapsed() > Duration::from_secs(2)) && !nodes[victim].is_running() {
            nodes[victim].start()?;
        }
        match rng.below(10) {
            0..=3 => {
                let i = rng.below(nodes.len() as u64) as usize;
                if nodes[i].is_running() {
                    acked.insert(write(&nodes[i], &format!("chaos {seed} t{}", t.as_millis()))?);
                    writes += 1;
                }
            }
            4..=6 => {
                links[rng.below(links.len() as u64) as usize].cut();
                cuts += 1;
            }
            _ => {
                let l = rng.below(links.len() as u64) as usize;
                let on = rng.below(2) == 0;
                links[l].partition(on);
                partitions += usize::from(on);
            }
        }
        std::thread::sleep(Duration::from_millis(150 + rng.below(450)));
    }
    if !nodes[victim].is_running() {
        nodes[victim].start()?;
    }

    // Heal and wait.
    for l in &links {
        l.partition(false);
    }
    let healed = Instant::now();
    if let Err(e) = wait_converged(&nodes.iter().collect::<Vec<_>>(), base + acked.len(), DEADLINE) {
        for n in &nodes {
            eprintln!("--- {} peers: {}", n.name, n.cli_json(&["peers"]).unwrap_or_default());
            let log = n.log();
            let tail: Vec<&str> = log.lines().rev().take(25).collect();
            eprintln!("--- {} log (last lines, newest first):\n{}", n.name, tail.join("\n"));
        }
        return Err(e.context(format!("seed {seed}")));
    }
    let converge_s = healed.elapsed().as_secs_f64();
    let everywhere = nodes[0].doc_heads()?;
    for id in &acked {
        assert!(everywhere.contains_key(&id.to_string()), "seed {seed}: acknowledged write {id} missing");
    }
    for n in &nodes {
        let report = n.cli_json(&["verify"])?;
        assert!(report["failures"].as_array().unwrap().is_empty(), "seed {seed}: {}: {report}", n.name);
    }
    let bytes: u64 = links.iter().map(Link::total_bytes).sum();
    let connections: u64 = links.iter().map(|l| l.connections_and_cuts().0).sum();
    println!(
        "chaos seed {seed}: {writes} writes acknowledged (one node killed mid-burst and restarted), {cuts} cuts, \
         {partitions} partitions, {connections} connections over {} links, {bytes} bytes; converged {converge_s:.1} s \
         after healing, {} documents with identical heads on 5 nodes",
        links.len(),
        everywhere.len()
    );
    for n in &mut nodes {
        n.terminate()?;
    }
    Ok(())
}

fn seeds(defaults: &[u64]) -> Vec<u64> {
    std::env::var("PASSERELLE_CHAOS_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| defaults.to_vec())
}

#[test]
fn five_nodes_converge_after_cuts_partitions_and_a_kill() -> anyhow::Result<()> {
    for seed in seeds(&[7]) {
        chaos(seed)?;
    }
    Ok(())
}
