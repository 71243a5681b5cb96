//! `passerelle init` and `passerelle id`.

use std::process::ExitCode;

use anyhow::Context;
use passerelle_node::config::DEFAULT_API_PORT;
use passerelle_node::home::Home;
use passerelle_node::identity;
use serde::Serialize;

use crate::output::Output;

/// Arguments of `init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The commune's name, e.g. "Senneval".
    #[arg(long)]
    pub name: String,
    /// The commune's country, an ISO 3166-1 alpha-2 code such as BE or MA.
    #[arg(long)]
    pub country: String,
    /// Port of the node's local API (0 picks any free port).
    #[arg(long, default_value_t = DEFAULT_API_PORT)]
    pub api_port: u16,
    /// A libp2p address to listen on, e.g. /ip4/0.0.0.0/tcp/7421; repeatable
    /// [default: TCP and QUIC on port 7421 of every interface].
    #[arg(long = "listen", value_name = "MULTIADDR")]
    pub listen: Vec<String>,
}

#[derive(Debug, Serialize)]
struct IdView {
    name: String,
    country: String,
    commune_id: String,
    node_id: String,
    home: String,
}

fn id_view(home: &Home, id: &identity::Identity) -> IdView {
    IdView {
        name: id.config.commune.name.clone(),
        country: id.config.commune.country.clone(),
        commune_id: id.commune_id().to_string(),
        node_id: id.node_id().to_string(),
        home: home.root().display().to_string(),
    }
}

fn human(v: &IdView) -> String {
    format!(
        "commune   {} ({})\ncommune id {}\nnode id    {}\nhome       {}",
        v.name, v.country, v.commune_id, v.node_id, v.home
    )
}

/// Creates the identity.
pub fn run(home: &Home, args: Args, out: &Output) -> anyhow::Result<ExitCode> {
    let listen = (!args.listen.is_empty()).then_some(args.listen);
    let id = identity::init_with_listen(home, &args.name, &args.country, args.api_port, listen)?;
    let view = id_view(home, &id);
    out.print(&view, || format!("{}\n\nStart the node with: passerelle run --home {}", human(&view), view.home));
    Ok(ExitCode::SUCCESS)
}

/// Shows the identity.
pub fn show_id(home: &Home, out: &Output) -> anyhow::Result<ExitCode> {
    let id = identity::load(home).context("cannot read the identity")?;
    let view = id_view(home, &id);
    out.print(&view, || human(&view));
    Ok(ExitCode::SUCCESS)
}
