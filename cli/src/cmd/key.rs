//! `passerelle key rotate`: a new node key, certified by the commune key.

use std::process::ExitCode;

use passerelle_node::home::Home;

use crate::output::Output;

/// Node key management.
#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Replace this node's key with a new one the commune certifies (after a
    /// reinstall, a suspected theft, or routinely). Run it with the node
    /// stopped. What the old key signed stays verifiable; revoke the old key
    /// afterwards with `passerelle network revoke <old-node-id>` if it may be
    /// in other hands.
    Rotate,
}

/// Runs `key ...`.
pub fn run(home: &Home, command: KeyCommand, out: &Output) -> anyhow::Result<ExitCode> {
    match command {
        KeyCommand::Rotate => {
            if let Ok(client) = super::client(home)
                && client.status().is_ok()
            {
                anyhow::bail!("the node is running: stop it first, then rotate its key");
            }
            let (old, new) = passerelle_node::identity::rotate_node_key(home)?;
            let value = serde_json::json!({ "old_node_id": old, "node_id": new.node_id() });
            out.print(&value, || {
                format!(
                    "new node key {} certified by the commune; the old key {} is retired in {}\n\
                     if the old key may be in other hands, revoke it once the node runs again:\n  \
                     passerelle network revoke {old}",
                    new.node_id(),
                    old.short(),
                    home.keys().join("retired").display()
                )
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
