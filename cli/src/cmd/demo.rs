//! `passerelle demo`: a local federation playing the story.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use passerelle_node::demo;

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the nodes' homes after the demo stops (they are removed otherwise).
    #[arg(long)]
    pub keep: bool,
    /// Where to put the nodes' homes [default: a new temporary directory].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Play the story and stop, instead of running until Ctrl-C.
    #[arg(long)]
    pub once: bool,
    /// Put Tala-n-Asif on a poor link to Senneval: 64 kbit/s, 600 ms round
    /// trip, cut every 20 s (an emulated link on loopback).
    #[arg(long)]
    pub poor_link: bool,
}

/// Runs the demo.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    rt.block_on(async {
        let d = demo::start(args.dir.clone(), args.poor_link).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let played = demo::play(&d).await.map_err(|e| anyhow::anyhow!("{e}"));
        if played.is_ok() && !args.once {
            eprintln!("\nThe federation keeps running. Ask any node with the CLI, for example:");
            for (home, (name, _)) in d.homes.iter().zip(demo::COMMUNES) {
                eprintln!("  passerelle --home {:<50} request list      # {name}", home.root().display());
            }
            eprintln!("  passerelle --home {} peers", d.homes[1].root().display());
            eprintln!("Stop with Ctrl-C.");
            passerelle_node::runtime::shutdown_signal().await;
        }
        eprintln!("stopping the demo federation");
        d.shutdown(args.keep).await;
        played
    })?;
    Ok(ExitCode::SUCCESS)
}
