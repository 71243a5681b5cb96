//! `passerelle bench ...`: benchmarks that print JSON lines.

use std::process::ExitCode;

use anyhow::Context;

use crate::output::{Output, write_stdout};

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Signed changes verified, applied and made durable per second on one
    /// node, beside the bare ed25519 sign and verify rates.
    Ingest {
        /// Documents in the workload (11 changes each).
        #[arg(long, default_value_t = 1_000)]
        docs: usize,
    },
    /// The shared sync workload between two node processes on loopback:
    /// catch-up, idle re-sync, one-change latency; bytes counted on the wire.
    Sync {
        /// Documents node A holds (11 signed changes each).
        #[arg(long, default_value_t = 1_000)]
        docs: usize,
        /// Also catch up a third node over an emulated poor link (64 kbit/s,
        /// 600 ms round trip, cut every 20 s); prints goodput and bytes re-sent.
        #[arg(long)]
        poor_link: bool,
    },
    /// Real nodes on loopback formed into one network (founder, joins,
    /// partnerships, three coordinators), default settings: transport bytes
    /// per node per day while idle (counted by the nodes on every TCP
    /// connection), links, how old the coordinators' view is, one change's
    /// spread, resident memory per node. One JSON line.
    Network {
        /// Nodes to start.
        #[arg(long, default_value_t = 40)]
        nodes: usize,
        /// Minutes to let the network settle before measuring (anti-entropy
        /// intervals grow to their longest in about half an hour).
        #[arg(long, default_value_t = 35)]
        warmup_minutes: u64,
        /// Minutes of idle traffic measured.
        #[arg(long, default_value_t = 10)]
        idle_minutes: u64,
    },
    /// The replica core at the network's size, in the deterministic
    /// simulator (virtual time): links per node, idle bytes and messages
    /// per node per day, how old the coordinators' view of each node gets,
    /// how fast one change spreads and how often it arrives twice, memory
    /// per simulated node. One JSON line per size.
    Scale {
        /// Network sizes to simulate (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "50,100,300,1000")]
        nodes: Vec<usize>,
        /// Idle hours measured (after an hour to settle).
        #[arg(long, default_value_t = 6.0)]
        idle_hours: f64,
        /// Seed of the simulation.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// Runs a benchmark; each figure is one JSON line on stdout.
pub fn run(command: BenchCommand, _out: &Output) -> anyhow::Result<ExitCode> {
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    match command {
        BenchCommand::Network { nodes, warmup_minutes, idle_minutes } => {
            if !(3..=200).contains(&nodes) || idle_minutes == 0 {
                return Err(super::UsageError("--nodes: 3 to 200; --idle-minutes: at least 1".into()).into());
            }
            let bin = std::env::current_exe().context("cannot find the passerelle binary")?;
            let figure = passerelle_node::bench::network::run(
                bin,
                nodes,
                std::time::Duration::from_secs(warmup_minutes * 60),
                std::time::Duration::from_secs(idle_minutes * 60),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            write_stdout(&serde_json::to_string(&figure).expect("figures serialize"));
            return Ok(ExitCode::SUCCESS);
        }
        BenchCommand::Scale { nodes, idle_hours, seed } => {
            if nodes.iter().any(|n| *n < 5) || !(0.1..=48.0).contains(&idle_hours) {
                return Err(super::UsageError("--nodes: 5 or more each; --idle-hours: 0.1 to 48".into()).into());
            }
            for n in &nodes {
                eprintln!("bench scale: simulating {n} nodes ({idle_hours} h idle)…");
                passerelle_node::bench::scale::run(&[*n], idle_hours, seed, |f| {
                    write_stdout(&serde_json::to_string(f).expect("figures serialize"));
                });
            }
            return Ok(ExitCode::SUCCESS);
        }
        BenchCommand::Ingest { docs } => {
            if docs == 0 {
                return Err(super::UsageError("--docs must be at least 1".into()).into());
            }
            eprintln!("bench ingest: {docs} documents, {} signed changes", docs * 11);
            rt.block_on(passerelle_node::bench::ingest(docs, |f| {
                write_stdout(&serde_json::to_string(f).expect("figures serialize"));
            }))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        BenchCommand::Sync { docs, poor_link } => {
            if docs < 20 {
                return Err(super::UsageError("--docs must be at least 20".into()).into());
            }
            let bin = std::env::current_exe().context("cannot find the passerelle binary")?;
            rt.block_on(passerelle_node::bench::sync::run(bin, docs, poor_link, |f| {
                write_stdout(&serde_json::to_string(f).expect("figures serialize"));
            }))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
