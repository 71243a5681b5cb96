//! `passerelle history <doc-id>`.

use std::collections::HashMap;
use std::process::ExitCode;

use passerelle_node::home::Home;

use crate::output::{Output, time};

/// Arguments of `history`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The document's id, or a unique prefix of it.
    pub id: String,
}

/// Prints a document's changes.
pub fn run(home: &Home, args: Args, out: &Output) -> anyhow::Result<ExitCode> {
    let client = super::client(home)?;
    let id = super::docs::resolve_id(&client, None, &args.id)?;
    let entries = client.history(&id)?;
    // Commune names come from the profiles this node holds.
    let names: HashMap<String, String> = if out.json {
        HashMap::new()
    } else {
        client.list(Some("profile"), None, None)?.into_iter().filter_map(|p| Some((p.owner, p.title?))).collect()
    };
    out.print(&entries, || {
        entries
            .iter()
            .map(|e| {
                let commune = e
                    .author_commune
                    .map(|c| names.get(&c.to_string()).cloned().unwrap_or_else(|| format!("commune {}", c.short())));
                let from = match &e.received_from {
                    Some(peer) => format!(", received from node {}", &peer[..8.min(peer.len())]),
                    None => String::new(),
                };
                format!(
                    "#{:<3} {}  {} (node key {})  {}\n      change {}, {} ops{from}",
                    e.seq,
                    time(e.time_ms),
                    commune.unwrap_or_else(|| "unknown commune".into()),
                    e.author_node.short(),
                    e.message.as_deref().unwrap_or("(no summary)"),
                    &e.hash[..12.min(e.hash.len())],
                    e.ops,
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(ExitCode::SUCCESS)
}
