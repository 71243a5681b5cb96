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
}

/// Runs a benchmark; each figure is one JSON line on stdout.
pub fn run(command: BenchCommand, _out: &Output) -> anyhow::Result<ExitCode> {
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    match command {
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
