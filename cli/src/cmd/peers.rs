//! `passerelle peer add|remove` and `passerelle peers`.

use std::process::ExitCode;

use passerelle_node::home::Home;
use passerelle_protocol::ids::NodeId;

use crate::output::{Output, time};

/// Managing peers.
#[derive(Debug, clap::Subcommand)]
pub enum PeerCommand {
    /// Remember a peer and connect to it (and reconnect whenever the link drops).
    Add {
        /// The peer's node id (`passerelle id` on the peer shows it).
        node: NodeId,
        /// Where to reach it, e.g. /ip4/192.0.2.7/tcp/7421 or /ip4/192.0.2.7/udp/7421/quic-v1.
        addr: String,
    },
    /// Forget a peer and disconnect from it.
    Remove {
        /// The peer's node id.
        node: NodeId,
    },
    /// Documents the peer has not acknowledged yet (changed here since its
    /// last in-sync round), most recent first.
    Pending {
        /// The peer's node id.
        node: NodeId,
    },
}

/// Runs `peer add|remove`.
pub fn run(home: &Home, command: PeerCommand, out: &Output) -> anyhow::Result<ExitCode> {
    let client = super::client(home)?;
    match command {
        PeerCommand::Add { node, addr } => {
            let peer = client.add_peer(&node, &addr)?;
            out.print(&peer, || format!("peer {} added at {addr}; connecting", node.short()));
        }
        PeerCommand::Pending { node } => {
            let pending = client.pending(&node)?;
            out.print(&pending, || {
                if pending.is_empty() {
                    return format!("peer {} has acknowledged every document it may hold", node.short());
                }
                let mut text = format!("{:<10} {:<9} {:<19} TITLE", "DOCUMENT", "KIND", "CHANGED HERE");
                for d in &pending {
                    text.push_str(&format!(
                        "\n{:<10} {:<9} {:<19} {}",
                        d.id.short(),
                        d.kind,
                        time(d.stored_ms),
                        d.title.as_deref().unwrap_or("")
                    ));
                    if let Some(a) = &d.apart {
                        let who = if a.refused_by == "here" { "this node refused" } else { "the peer refused" };
                        text.push_str(&format!(
                            " (agreed to differ since {}: {who} part of it, {}; not sent again until either side changes it)",
                            time(a.since_ms),
                            a.code
                        ));
                    }
                }
                text
            });
        }
        PeerCommand::Remove { node } => {
            client.remove_peer(&node)?;
            out.print(&serde_json::json!({"removed": node}), || format!("peer {} removed", node.short()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Lists peers and their sync state.
pub fn list(home: &Home, out: &Output) -> anyhow::Result<ExitCode> {
    let peers = super::client(home)?.peers()?;
    out.print(&peers, || {
        if peers.is_empty() {
            return "no peers yet: add one with `passerelle peer add <node-id> <multiaddr>`".into();
        }
        let mut text = format!(
            "{:<10} {:<10} {:<9} {:<19} {:>11} {:>7} {:>10} {:>10} {:>8}  LAST ERROR",
            "PEER", "COMMUNE", "STATE", "LAST SYNC", "ACKNOWLEDGED", "QUEUED", "BYTES IN", "BYTES OUT", "CHANGES"
        );
        for view in &peers {
            let p = &view.record;
            let commune = p.commune.as_deref().map(|c| &c[..8.min(c.len())]).unwrap_or("-");
            let acked = view.receipts.map_or_else(|| "-".to_owned(), |r| format!("{}/{}", r.acknowledged, r.shared));
            text.push_str(&format!(
                "\n{:<10} {:<10} {:<9} {:<19} {:>11} {:>7} {:>10} {:>10} {:>8}  {}",
                p.node.short(),
                commune,
                match (view.connected, p.last_addr.as_deref()) {
                    (true, Some(a)) if a.contains("/p2p-circuit") => "relayed",
                    (true, _) => "connected",
                    (false, _) => "offline",
                },
                p.last_sync_ms.map(time).unwrap_or_else(|| "never".into()),
                acked,
                view.queued,
                p.bytes_in,
                p.bytes_out,
                p.changes_in,
                p.last_error.as_deref().unwrap_or("")
            ));
        }
        let apart: Vec<String> =
            peers.iter().filter(|v| v.apart > 0).map(|v| format!("{} ({})", v.record.node.short(), v.apart)).collect();
        if !apart.is_empty() {
            text.push_str(&format!(
                "\nagreed to differ on some documents with {} (one refused part of what the other holds): see `passerelle peer pending <node>`",
                apart.join(", ")
            ));
        }
        text
    });
    Ok(ExitCode::SUCCESS)
}
