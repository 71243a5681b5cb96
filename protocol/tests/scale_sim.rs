//! The replica core at the network's size: 300 nodes (Belgian, Moroccan
//! and Tunisian communes, partnerships, three coordinators, Moroccan nodes
//! on 64 kbit/s links), default settings, in the deterministic simulator.
//! A few seeds; for each: every node links with at most its neighbours'
//! share (8) plus its partners and bridges; the coordinators hear from
//! every node within 10 minutes, idle or while a tenth of the communes is
//! away; changes reach every node, each once once the tree formed (no
//! more than 5 % of receptions twice); after the away ones return,
//! every node holds the same documents. The figures themselves (bytes,
//! times) are `passerelle bench scale`'s, not asserted here.

use passerelle_protocol::replica::NEIGHBOURS;
use passerelle_protocol::sim::scale::{self, ScaleSpec};

#[test]
fn three_hundred_nodes_link_sparsely_hear_every_node_and_converge() {
    let seeds: u64 = std::env::var("PASSERELLE_SCALE_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let started = std::time::Instant::now();
    for seed in 1..=seeds {
        let mut spec = ScaleSpec::new(300, seed);
        spec.warmup_ms = 30 * 60 * 1000;
        spec.idle_ms = 30 * 60 * 1000;
        let r = scale::run(&spec);
        println!("seed {seed}: {r:?}");
        assert!(r.converged && r.converged_after_churn, "seed {seed}: no convergence: {r:?}");
        // Partners (at most two per Belgian commune here) and one bridge on top of the rings.
        let bound = (NEIGHBOURS + 3) as f64;
        assert!(r.links_per_node.max <= bound, "seed {seed}: a node has {} links", r.links_per_node.max);
        assert!(r.churn_links_max as f64 <= bound, "seed {seed}: {} links during churn", r.churn_links_max);
        assert!(r.view_age_s.max <= 600.0, "seed {seed}: a coordinator's view is {} s old", r.view_age_s.max);
        assert!(r.churn_view_age_s <= 600.0, "seed {seed}: {} s old during churn", r.churn_view_age_s);
        assert!(r.reach_ms[2] < 60_000 && r.churn_reach_ms < 60_000, "seed {seed}: a change took long: {r:?}");
        assert!(r.duplicates_per_reception <= 0.05, "seed {seed}: {} duplicates", r.duplicates_per_reception);
    }
    println!("scale simulation: {seeds} seeds of 300 nodes in {:.1} s", started.elapsed().as_secs_f64());
}
