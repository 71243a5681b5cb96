//! `passerelle status`.

use std::process::ExitCode;

use passerelle_node::home::Home;

use crate::output::Output;

/// Shows the running node's status.
pub fn run(home: &Home, out: &Output) -> anyhow::Result<ExitCode> {
    let s = super::client(home)?.status()?;
    out.print(&s, || {
        let mut text = format!(
            "{} ({}) — node up {} s, version {}\ncommune id {}\nnode id    {}\nAPI        http://{}\ndocuments  {}",
            s.name,
            s.country,
            s.uptime_s,
            s.version,
            s.commune_id,
            s.node_id,
            s.api_addr,
            s.documents.values().sum::<u64>()
        );
        for (kind, n) in &s.documents {
            text.push_str(&format!("\n  {kind:<9} {n}"));
            if let Some(by) = s.statuses.get(kind) {
                let parts: Vec<String> = by.iter().map(|(st, n)| format!("{st} {n}")).collect();
                text.push_str(&format!("  ({})", parts.join(", ")));
            }
        }
        match (&s.network, &s.role) {
            (Some(n), role) => {
                text.push_str(&format!("\nnetwork    {n}, this commune: {}", role.as_deref().unwrap_or("not a member")))
            }
            (None, _) => {
                text.push_str("\nnetwork    none yet: `passerelle network create` or `passerelle join <token>`")
            }
        }
        text.push_str(&format!(
            "\npeers      {} connected; reachable from outside: {}",
            s.peers_connected, s.reachability
        ));
        for a in &s.listen {
            text.push_str(&format!("\nlistening  {a}/p2p/{}", s.peer_id));
        }
        text
    });
    Ok(ExitCode::SUCCESS)
}

/// Prints a one-time login link for the node's web pages.
pub fn login(home: &Home, out: &Output) -> anyhow::Result<ExitCode> {
    let link = super::client(home)?.login_link()?;
    out.print(&link, || {
        format!(
            "Open this link in a browser; it works once, for 5 minutes, and the session lasts 12 hours:\n{}",
            link.url
        )
    });
    Ok(ExitCode::SUCCESS)
}
