//! `passerelle run`: the node in the foreground.

use std::process::ExitCode;

use anyhow::Context;
use passerelle_node::home::Home;
use passerelle_node::{identity, runtime};

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// With --country: if the home holds no identity yet, create one for this
    /// commune first (as `passerelle init` would).
    #[arg(long, requires = "country")]
    pub name: Option<String>,
    /// Country code for --name.
    #[arg(long, requires = "name")]
    pub country: Option<String>,
}

/// Runs the node until a signal.
pub fn run(home: &Home, args: Args) -> anyhow::Result<ExitCode> {
    if let (Some(name), Some(country)) = (&args.name, &args.country)
        && !home.config().exists()
    {
        let id = identity::init(home, name, country, passerelle_node::config::DEFAULT_API_PORT)?;
        eprintln!("created identity for {} in {}", id.config.commune.name, home.root().display());
    }
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    rt.block_on(async {
        let node = runtime::start(home).await?;
        eprintln!("node running: API on http://{} (home {}). Stop with Ctrl-C.", node.api_addr, home.root().display());
        if let Ok(info) = node.net.info().await {
            let id = passerelle_node::identity::load(home)?.node_id();
            for addr in &info.listen {
                eprintln!("  peers reach it with: passerelle peer add {id} {addr}");
            }
        }
        runtime::shutdown_signal().await;
        node.shutdown().await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
