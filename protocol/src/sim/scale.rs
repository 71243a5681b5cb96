//! The network the project is for, simulated at any size: Belgian,
//! Moroccan and Tunisian communes (60 / 35 / 5 %), each Moroccan and
//! Tunisian commune partnering a Belgian one, a few Belgian coordinators,
//! Moroccan nodes on 64 kbit/s links with a 600 ms round trip. Every node
//! runs the real replica core with its default settings (auto links on).
//!
//! [`run`] lets the network settle, measures it idle (bytes and messages
//! per node, links per node, how old the coordinators' view of each node
//! gets), then has one commune write and measures how fast the change
//! spreads and how often it arrives twice.

use crate::header::Scope;
use crate::network::Role;
use crate::replica::{Millis, ReplicaConfig};

use super::federation::{EPOCH_MS, Federation, MemberSpec, create};
use super::{Access, Sim};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct ScaleSpec {
    /// Number of nodes.
    pub nodes: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Coordinators (Belgian communes).
    pub coordinators: usize,
    /// Time to settle before measuring (ms).
    pub warmup_ms: Millis,
    /// Idle time measured (ms).
    pub idle_ms: Millis,
}

impl ScaleSpec {
    /// `nodes` nodes with three coordinators, an hour to settle, six hours idle.
    pub fn new(nodes: usize, seed: u64) -> Self {
        Self { nodes, seed, coordinators: 3, warmup_ms: 60 * 60 * 1000, idle_ms: 6 * 60 * 60 * 1000 }
    }
}

/// Mean, 99th percentile and maximum of a measure over nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spread {
    /// Mean.
    pub mean: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`.
    pub fn of(mut values: Vec<f64>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let p99 = values[((values.len() as f64 * 0.99).ceil() as usize).saturating_sub(1).min(values.len() - 1)];
        Self { mean, p99, max: values[values.len() - 1] }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct ScaleReport {
    /// Nodes simulated.
    pub nodes: usize,
    /// Open connections per node once settled.
    pub links_per_node: Spread,
    /// Bytes per node per day while idle (sent and received, as the
    /// transport carries them).
    pub idle_bytes_per_day: Spread,
    /// Messages per node per day while idle (sent).
    pub idle_messages_per_day: Spread,
    /// The busiest node while idle, and its role.
    pub busiest: String,
    /// How old the coordinators' view of each online node got while idle (s).
    pub view_age_s: Spread,
    /// Time for a network change to reach 50 %, 99 % and 100 % of the
    /// nodes (ms): the slowest of eight, once the tree formed.
    pub reach_ms: [Millis; 3],
    /// The same for the nodes on slow links (99 %, 100 %).
    pub slow_reach_ms: [Millis; 2],
    /// A partnership request to reach the partner (ms).
    pub partner_reach_ms: Millis,
    /// Receptions of a change beyond the first, per node that got it, over
    /// eight changes once the tree formed.
    pub duplicates_per_reception: f64,
    /// The same for the first change (every link still eager: a flood).
    pub first_duplicates_per_reception: f64,
    /// Whether every node ended with the same documents.
    pub converged: bool,
    /// Churn: a tenth of the communes stopped for half an hour, then back.
    /// The slowest of the online nodes to get a change written meanwhile (ms).
    pub churn_reach_ms: Millis,
    /// How old the coordinators' view of the online nodes got meanwhile (s).
    pub churn_view_age_s: f64,
    /// Most open connections of a node meanwhile.
    pub churn_links_max: usize,
    /// Whether every node had every network document 20 minutes after the
    /// stopped ones came back.
    pub converged_after_churn: bool,
    /// Events the simulator processed.
    pub steps: u64,
}

/// The members of a network of `n` nodes: who, where, on which link.
pub fn members(n: usize, coordinators: usize) -> Vec<MemberSpec> {
    let be = (n * 60 / 100).max(1);
    let ma = (n * 35 / 100).max(usize::from(n > 1));
    (0..n)
        .map(|i| {
            let (country, access) = if i < be {
                ("BE", Access { latency_ms: 10, bytes_per_s: Some(2_000_000) })
            } else if i < be + ma {
                ("MA", Access { latency_ms: 300, bytes_per_s: Some(8_000) })
            } else {
                ("TN", Access { latency_ms: 100, bytes_per_s: Some(32_000) })
            };
            MemberSpec {
                name: format!("{country} {i}"),
                country: country.into(),
                role: if i < coordinators.min(be) { Role::Coordinator } else { Role::Commune },
                access,
            }
        })
        .collect()
}

/// Builds the network, settled: every node dials the links the roster
/// chooses for it, as it would have when the roster named them.
pub fn build(spec: &ScaleSpec) -> (Sim, Federation, Vec<MemberSpec>) {
    let specs = members(spec.nodes, spec.coordinators);
    let be = specs.iter().filter(|s| s.country == "BE").count();
    let mut fed = Federation::new(&specs, spec.seed);
    for (i, s) in specs.iter().enumerate() {
        if s.country != "BE" {
            // Coordinators partner nobody: their link budget is for watching.
            let partners = be.saturating_sub(spec.coordinators).max(1);
            fed.partner(i, spec.coordinators.min(be - 1) + (i % partners));
        }
    }
    let roster = fed.roster();
    let nodes = (0..spec.nodes)
        .map(|i| {
            let config =
                ReplicaConfig { seed: spec.seed ^ (i as u64).wrapping_mul(0x9E37_79B9), ..ReplicaConfig::default() };
            fed.node(i, &specs[i], roster.clone(), config, EPOCH_MS)
        })
        .collect();
    let mut sim = Sim::new(nodes, EPOCH_MS, spec.seed);
    for i in 0..spec.nodes {
        for peer in sim.nodes[i].replica.chosen_links() {
            if let Some(j) = sim.index_of(&peer) {
                sim.dial(i, j);
            }
        }
    }
    (sim, fed, specs)
}

/// How one change spread: when each node got it, and how often it came twice.
#[derive(Debug, Clone)]
pub struct Spreading {
    /// Per node: ms after the write (`None`: never within the deadline).
    pub reached: Vec<Option<Millis>>,
    /// Receptions beyond the first.
    pub duplicates: u64,
    /// Receptions that stored it.
    pub receptions: u64,
}

impl Spreading {
    /// The time by which a share `p` of the nodes in `set` had it.
    pub fn pct(&self, set: &[usize], p: f64) -> Millis {
        let mut t: Vec<Millis> = set.iter().map(|i| self.reached[*i].unwrap_or(Millis::MAX)).collect();
        t.sort_unstable();
        t[((t.len() as f64 * p).ceil() as usize).saturating_sub(1).min(t.len().saturating_sub(1))]
    }
}

/// A network request written by node `writer`, followed until every node
/// that may hold it has it (or 30 minutes).
pub fn spread(sim: &mut Sim, fed: &Federation, writer: usize, nonce: u64) -> Spreading {
    let n = sim.nodes.len();
    let (dup0, app0): (u64, u64) = sim.nodes.iter().fold((0, 0), |(d, a), x| (d + x.duplicates, a + x.applied));
    let written = sim.now;
    let doc = create(sim, &fed.keys[writer], writer, Scope::Network, &[], nonce);
    let mut reached: Vec<Option<Millis>> = vec![None; n];
    reached[writer] = Some(0);
    let deadline = written + 30 * 60 * 1000;
    while sim.now < deadline && reached.iter().enumerate().any(|(i, r)| r.is_none() && sim.nodes[i].online) {
        sim.run_for(100);
        for (i, r) in reached.iter_mut().enumerate() {
            if r.is_none() && sim.nodes[i].docs.docs.contains_key(&doc) {
                *r = Some(sim.now - written);
            }
        }
    }
    // Pushes still on their way count too.
    sim.run_for(5_000);
    let (dup1, app1): (u64, u64) = sim.nodes.iter().fold((0, 0), |(d, a), x| (d + x.duplicates, a + x.applied));
    Spreading { reached, duplicates: dup1 - dup0, receptions: app1 - app0 }
}

/// How old, at most, the coordinators' view of the online nodes is now (s).
fn view_age(sim: &Sim, coordinators: &[usize], since: Millis) -> f64 {
    let mut worst = 0f64;
    for &c in coordinators.iter().filter(|c| sim.nodes[**c].online) {
        let beats = sim.nodes[c].replica.beats();
        for i in (0..sim.nodes.len()).filter(|i| *i != c && sim.nodes[*i].online) {
            let heard = beats.last_heard(&sim.ids[i]).map_or(since, |t| (t as Millis).max(since));
            worst = worst.max((sim.now - heard) as f64 / 1000.0);
        }
    }
    worst
}

/// Stops every tenth commune (not a coordinator) for half an hour — past
/// the time its neighbours step over it — while another writes, then
/// starts them again. Returns the slowest online node's time to get the
/// change (ms), the oldest view the coordinators had of an online node
/// (s), the most links a node had, and whether everyone converged 20
/// minutes after the return.
fn churn(sim: &mut Sim, fed: &Federation, specs: &[MemberSpec], coordinators: &[usize]) -> (Millis, f64, usize, bool) {
    let n = sim.nodes.len();
    let gone: Vec<usize> = (0..n).filter(|i| i % 10 == 5 && !coordinators.contains(i)).collect();
    for &i in &gone {
        sim.stop(i);
    }
    let since = sim.now;
    let mut age = 0f64;
    let mut links = 0;
    for _ in 0..20 {
        sim.run_for(60_000);
        age = age.max(view_age(sim, coordinators, since));
    }
    let writer = (0..n).find(|i| specs[*i].country == "BE" && !coordinators.contains(i) && sim.nodes[*i].online);
    let change = spread(sim, fed, writer.unwrap_or(0), 9_999);
    let online: Vec<usize> = (0..n).filter(|i| sim.nodes[*i].online).collect();
    let reach = change.pct(&online, 1.0);
    for _ in 0..10 {
        sim.run_for(60_000);
        age = age.max(view_age(sim, coordinators, since));
        links = links.max((0..n).map(|i| sim.degree(i)).max().unwrap_or(0));
    }
    for &i in &gone {
        sim.restart(i);
    }
    sim.run_for(20 * 60 * 1000);
    let docs = |i: usize| -> Vec<_> {
        sim.nodes[i]
            .docs
            .docs
            .iter()
            .filter(|(_, d)| d.header.header.scope == Scope::Network)
            .map(|(id, d)| (*id, d.doc.get_heads()))
            .collect()
    };
    let reference = docs(0);
    (reach, age, links, (1..n).all(|i| docs(i) == reference))
}

fn per_day(value: u64, over_ms: Millis) -> f64 {
    value as f64 * 86_400_000.0 / over_ms.max(1) as f64
}

/// Runs the scenario and measures it.
pub fn run(spec: &ScaleSpec) -> ScaleReport {
    let (mut sim, fed, specs) = build(spec);
    let n = spec.nodes;
    sim.run_for(spec.warmup_ms);

    // Idle.
    sim.settle_pings();
    let bytes0: Vec<u64> = sim.nodes.iter().map(|x| x.bytes_in + x.bytes_out).collect();
    let msgs0: Vec<u64> = sim.nodes.iter().map(|x| x.messages_out).collect();
    let start = sim.now;
    let coordinators: Vec<usize> = (0..n).filter(|i| specs[*i].role == Role::Coordinator).collect();
    let mut ages = vec![0f64; n];
    while sim.now < start + spec.idle_ms {
        sim.run_for(60_000);
        for &c in &coordinators {
            let beats = sim.nodes[c].replica.beats();
            for (i, age) in ages.iter_mut().enumerate() {
                if i == c {
                    continue;
                }
                let heard = beats.last_heard(&sim.ids[i]).map_or(0, |t| t as Millis);
                // Nodes still unheard of count from the start of the measure.
                let since = if heard == 0 { start } else { heard };
                *age = age.max((sim.now - since) as f64 / 1000.0);
            }
        }
    }
    sim.settle_pings();
    let over = sim.now - start;
    let bytes: Vec<f64> =
        sim.nodes.iter().zip(&bytes0).map(|(x, b)| per_day(x.bytes_in + x.bytes_out - b, over)).collect();
    let msgs: Vec<f64> = sim.nodes.iter().zip(&msgs0).map(|(x, m)| per_day(x.messages_out - m, over)).collect();
    let busiest = (0..n).max_by(|a, b| bytes[*a].total_cmp(&bytes[*b])).unwrap_or(0);
    let links: Vec<f64> = (0..n).map(|i| sim.degree(i) as f64).collect();

    // Changes from several communes: the first floods (every link starts
    // eager), the next ones travel the tree the first ones pruned.
    let writers: Vec<usize> = (spec.coordinators..n).filter(|i| specs[*i].country == "BE").take(5).collect();
    let writers = if writers.is_empty() { vec![0] } else { writers };
    let first = spread(&mut sim, &fed, writers[0], 1);
    let mut steady = Vec::new();
    for k in 1..=8u64 {
        sim.run_for(10_000);
        let w = writers[k as usize % writers.len()];
        steady.push(spread(&mut sim, &fed, w, 1 + k));
    }
    // The change whose 99 % took longest.
    let slowest =
        steady.iter().max_by_key(|c| c.pct(&(0..n).collect::<Vec<_>>(), 0.99)).cloned().unwrap_or(first.clone());
    let all: Vec<usize> = (0..n).collect();
    let slow: Vec<usize> = (0..n).filter(|i| specs[*i].country == "MA").collect();
    let (dups, receptions) = steady.iter().fold((0, 0), |(d, r), c| (d + c.duplicates, r + c.receptions));

    // A partnership request of a Moroccan commune to its partner.
    let asker = (0..n).find(|i| specs[*i].country == "MA").unwrap_or(0);
    let partner = sim.nodes[asker]
        .replica
        .roster()
        .and_then(|r| r.partners_of(&fed.keys[asker].commune.commune_id()).first().copied())
        .and_then(|c| fed.keys.iter().position(|k| k.commune.commune_id() == c));
    let asked = sim.now;
    let request = create(&mut sim, &fed.keys[asker], asker, Scope::Partnership, &[], 2);
    let mut partner_reach_ms = Millis::MAX;
    if let Some(p) = partner {
        while sim.now < asked + 10 * 60 * 1000 {
            sim.run_for(100);
            if sim.nodes[p].docs.docs.contains_key(&request) {
                partner_reach_ms = sim.now - asked;
                break;
            }
        }
    }
    sim.run_for(60_000);
    let network_docs = |i: usize| -> Vec<_> {
        sim.nodes[i]
            .docs
            .docs
            .iter()
            .filter(|(_, d)| d.header.header.scope == Scope::Network)
            .map(|(id, d)| (*id, d.doc.get_heads()))
            .collect()
    };
    let reference = network_docs(0);
    let converged = (1..n).all(|i| network_docs(i) == reference);
    let churn = churn(&mut sim, &fed, &specs, &coordinators);
    ScaleReport {
        nodes: n,
        links_per_node: Spread::of(links),
        idle_bytes_per_day: Spread::of(bytes),
        idle_messages_per_day: Spread::of(msgs),
        busiest: format!(
            "node {busiest} ({} {})",
            specs[busiest].country,
            if specs[busiest].role == Role::Coordinator { "coordinator" } else { "commune" }
        ),
        view_age_s: Spread::of(
            ages.into_iter().enumerate().filter(|(i, _)| !coordinators.contains(i)).map(|(_, a)| a).collect(),
        ),
        reach_ms: [slowest.pct(&all, 0.5), slowest.pct(&all, 0.99), slowest.pct(&all, 1.0)],
        slow_reach_ms: if slow.is_empty() { [0, 0] } else { [slowest.pct(&slow, 0.99), slowest.pct(&slow, 1.0)] },
        partner_reach_ms,
        duplicates_per_reception: dups as f64 / receptions.max(1) as f64,
        first_duplicates_per_reception: first.duplicates as f64 / first.receptions.max(1) as f64,
        converged,
        churn_reach_ms: churn.0,
        churn_view_age_s: churn.1,
        churn_links_max: churn.2,
        converged_after_churn: churn.3,
        steps: sim.steps,
    }
}
