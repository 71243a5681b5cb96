//! `passerelle bench scale`: the replica core at the network's size, in
//! the deterministic simulator (`passerelle_protocol::sim::scale`): idle
//! traffic per node, links, how fresh the coordinators' view stays, how
//! fast one change spreads, memory per simulated node. Virtual time, so
//! the figures do not depend on the machine (the wall time does).

use std::time::Instant;

use passerelle_protocol::sim::scale::{self, ScaleSpec, Spread};
use serde_json::{Value, json};

fn spread(s: &Spread) -> Value {
    json!({"mean": s.mean.round(), "p99": s.p99.round(), "max": s.max.round()})
}

/// Resident memory of this process now (bytes), from /proc.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Runs the scenario at each size and hands out one JSON object per size.
pub fn run(sizes: &[usize], idle_hours: f64, seed: u64, mut emit: impl FnMut(&Value)) {
    for &n in sizes {
        let mut spec = ScaleSpec::new(n, seed);
        spec.idle_ms = (idle_hours * 3_600_000.0) as i64;
        let before = rss_bytes();
        let started = Instant::now();
        let (report, after) = {
            let report = scale::run(&spec);
            (report, rss_bytes())
        };
        let r = report;
        emit(&json!({
            "system": "passerelle",
            "scenario": "scale-sim",
            "nodes": r.nodes,
            "idle_hours": idle_hours,
            "links_per_node": spread(&r.links_per_node),
            "idle_bytes_per_node_per_day": spread(&r.idle_bytes_per_day),
            "idle_messages_per_node_per_day": spread(&r.idle_messages_per_day),
            "busiest_node": r.busiest,
            "coordinator_view_age_s": spread(&r.view_age_s),
            "change_reach_ms": {"p50": r.reach_ms[0], "p99": r.reach_ms[1], "p100": r.reach_ms[2]},
            "slow_link_reach_ms": {"p99": r.slow_reach_ms[0], "p100": r.slow_reach_ms[1]},
            "partner_reach_ms": r.partner_reach_ms,
            "duplicates_per_reception": (r.duplicates_per_reception * 1000.0).round() / 1000.0,
            "first_change_duplicates_per_reception": (r.first_duplicates_per_reception * 1000.0).round() / 1000.0,
            "converged": r.converged,
            "churn": {
                "stopped": "every tenth commune, 30 min",
                "reach_online_ms": r.churn_reach_ms,
                "coordinator_view_age_s": r.churn_view_age_s.round(),
                "links_max": r.churn_links_max,
                "converged_after_return": r.converged_after_churn,
            },
            "memory_per_node_kb": (after.saturating_sub(before) / n.max(1) as u64) / 1024,
            "events": r.steps,
            "wall_s": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        }));
    }
}
