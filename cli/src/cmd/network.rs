//! Membership: `network create|show|remove|revoke`, `invite`, `join`,
//! `members`, `partner propose|accept|end`, `partners`.

use std::path::PathBuf;
use std::process::ExitCode;

use passerelle_node::api::types::{InviteRequest, NetworkState, NetworkView};
use passerelle_node::home::Home;
use passerelle_protocol::ids::NodeId;

use super::UsageError;
use crate::output::{Output, time};

/// The network this node belongs to.
#[derive(Debug, clap::Subcommand)]
pub enum NetworkCommand {
    /// Found a network: this commune becomes its first coordinator, and the
    /// network id derives from its key.
    Create {
        /// The network's name, e.g. "Réseau TOGETHER Belgique–Maroc".
        #[arg(long)]
        name: String,
    },
    /// Show the network: id, name, members, partnerships, revoked keys.
    Show,
    /// The network's state, as the dashboard shows it: each node (last
    /// heard of, through whom, sync lag, peers, what it has not delivered),
    /// links that lag or are down, the requests board with candidate
    /// offers, response times.
    Status,
    /// Remove a member (coordinators only). Its nodes are disconnected and
    /// its later changes refused everywhere.
    Remove {
        /// The member: its commune id, an id prefix, or its name.
        commune: String,
    },
    /// Revoke a node key (a stolen or retired one): its later changes are
    /// refused everywhere; what it signed before stays valid.
    Revoke {
        /// The node id to revoke.
        node: NodeId,
    },
}

/// `invite` arguments.
#[derive(Debug, clap::Args)]
pub struct InviteArgs {
    /// The invited commune's name.
    #[arg(long)]
    name: String,
    /// Its country (ISO 3166 alpha-2, e.g. MA).
    #[arg(long)]
    country: String,
    /// Its role: commune, observer or coordinator.
    #[arg(long, default_value = "commune")]
    role: String,
    /// Hours before the invitation expires.
    #[arg(long, default_value_t = 168)]
    expires_hours: u64,
    /// Also write the token to this file (to send by mail or on a stick).
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// `join` arguments.
#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// The invitation token, or `@FILE` to read it from a file.
    token: String,
}

/// Partnerships.
#[derive(Debug, clap::Subcommand)]
pub enum PartnerCommand {
    /// Declare a partnership with a member of another country.
    Propose {
        /// The other commune: id, id prefix or name.
        commune: String,
    },
    /// Accept a partnership the other commune proposed (it is then active).
    Accept {
        /// The other commune: id, id prefix or name.
        commune: String,
    },
    /// End a partnership.
    End {
        /// The other commune: id, id prefix or name.
        commune: String,
    },
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn summary(n: &NetworkView) -> String {
    format!(
        "network {:?} ({})\n{}, {}, this commune: {}",
        n.name,
        &n.network[..16],
        plural(n.members.len(), "member", "members"),
        plural(n.partnerships.iter().filter(|p| p.active).count(), "active partnership", "active partnerships"),
        n.role.as_deref().unwrap_or("not a member")
    )
}

fn members_table(n: &NetworkView) -> String {
    let mut text = format!(
        "{:<10} {:<24} {:<7} {:<12} {:<19} {}",
        "COMMUNE", "NAME", "COUNTRY", "ROLE", "SINCE", "NODE KEYS (✗ revoked)"
    );
    for m in &n.members {
        let keys: Vec<String> =
            m.nodes.iter().map(|k| format!("{}{}", k.node.short(), if k.revoked { "✗" } else { "" })).collect();
        text.push_str(&format!(
            "\n{:<10} {:<24} {:<7} {:<12} {:<19} {}{}",
            m.commune.short(),
            m.name,
            m.country,
            m.role,
            time(m.since_ms as i64),
            keys.join(" "),
            if m.me { "  (this commune)" } else { "" }
        ));
    }
    if !n.key_conflicts.is_empty() {
        let keys: Vec<String> = n.key_conflicts.iter().map(|k| k.short()).collect();
        text.push_str(&format!(
            "\nwarning: node keys registered by two communes (the key signed both: shared or stolen), refused for both; revoke them: {}",
            keys.join(" ")
        ));
    }
    text
}

fn partners_table(n: &NetworkView) -> String {
    if n.partnerships.is_empty() {
        return "no partnership declared yet: `passerelle partner propose <commune>`".into();
    }
    let mut text = format!("{:<24} {:<24} STATE", "SIDE A", "SIDE B");
    for p in &n.partnerships {
        let state = match (p.a_signed, p.b_signed) {
            (true, true) => "active".to_owned(),
            (true, false) => format!("proposed by {}", p.a_name),
            (false, true) => format!("proposed by {}", p.b_name),
            (false, false) => "ended".to_owned(),
        };
        text.push_str(&format!("\n{:<24} {:<24} {state}", p.a_name, p.b_name));
    }
    text
}

/// Runs `network ...`.
pub fn run(home: &Home, command: NetworkCommand, out: &Output) -> anyhow::Result<ExitCode> {
    let client = super::client(home)?;
    let view = match command {
        NetworkCommand::Create { name } => client.create_network(&name)?,
        NetworkCommand::Status => {
            let state = client.network_state()?;
            out.print(&state, || status_text(&state));
            return Ok(ExitCode::SUCCESS);
        }
        NetworkCommand::Show => {
            let n = client.network()?;
            out.print(&n, || format!("{}\n\n{}\n\n{}", summary(&n), members_table(&n), partners_table(&n)));
            return Ok(ExitCode::SUCCESS);
        }
        NetworkCommand::Remove { commune } => client.remove_member(&commune)?,
        NetworkCommand::Revoke { node } => client.revoke(&node)?,
    };
    out.print(&view, || summary(&view));
    Ok(ExitCode::SUCCESS)
}

/// Runs `invite`.
pub fn invite(home: &Home, args: InviteArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let req = InviteRequest {
        name: args.name,
        country: args.country,
        role: Some(args.role),
        expires_in_hours: Some(args.expires_hours),
    };
    let inv = super::client(home)?.invite(&req)?;
    if let Some(path) = &args.output {
        passerelle_node::identity::write_private_replacing(path, format!("{}\n", inv.token).as_bytes())
            .map_err(|e| anyhow::anyhow!("cannot write the token to {}: {e}", path.display()))?;
    }
    out.print(&inv, || {
        format!(
            "invitation for {} ({}), single use, valid until {} UTC{}\nthe new node runs: passerelle join {}",
            inv.name,
            inv.role,
            time(inv.expires_ms as i64),
            args.output.as_ref().map(|p| format!(", written to {}", p.display())).unwrap_or_default(),
            inv.token
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// Runs `join`.
pub fn join(home: &Home, args: JoinArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let token = match args.token.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read the token file {path}: {e}"))?
        }
        None => args.token,
    };
    if !token.trim().starts_with(passerelle_protocol::network::invitation::TOKEN_PREFIX) {
        return Err(UsageError(format!(
            "that is not an invitation token (it starts with {:?}); ask a coordinator for one",
            passerelle_protocol::network::invitation::TOKEN_PREFIX
        ))
        .into());
    }
    let view = super::client(home)?.join(token.trim())?;
    out.print(&view, || format!("joined.\n{}", summary(&view)));
    Ok(ExitCode::SUCCESS)
}

/// Runs `members`.
pub fn members(home: &Home, out: &Output) -> anyhow::Result<ExitCode> {
    let n = super::client(home)?.network()?;
    out.print(&n.members, || members_table(&n));
    Ok(ExitCode::SUCCESS)
}

/// Runs `partner ...`.
pub fn partner(home: &Home, command: PartnerCommand, out: &Output) -> anyhow::Result<ExitCode> {
    let (commune, action) = match command {
        PartnerCommand::Propose { commune } => (commune, "propose"),
        PartnerCommand::Accept { commune } => (commune, "accept"),
        PartnerCommand::End { commune } => (commune, "end"),
    };
    let n = super::client(home)?.partner(&commune, action)?;
    out.print(&n.partnerships, || partners_table(&n));
    Ok(ExitCode::SUCCESS)
}

/// Runs `partners`.
pub fn partners(home: &Home, out: &Output) -> anyhow::Result<ExitCode> {
    let n = super::client(home)?.network()?;
    out.print(&n.partnerships, || partners_table(&n));
    Ok(ExitCode::SUCCESS)
}

/// How long ago `ms` was, in words: "12 s", "3 min", "3 h", "2 d".
fn ago(now_ms: i64, ms: i64) -> String {
    let s = (now_ms - ms).max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

fn status_text(s: &NetworkState) -> String {
    let now = s.generated_ms;
    let mut text = format!("{}\n", s.network.as_deref().unwrap_or("(no network)"));
    text.push_str(&format!(
        "\n{:<20} {:<3} {:<10} {:<14} {:<20} {:>8} {:>7} {:>8} {:>7}",
        "COMMUNE", "", "NODE", "LAST HEARD", "VIA", "LAG", "PEERS", "UNACKED", "QUEUED"
    ));
    for m in &s.members {
        if m.nodes.is_empty() {
            text.push_str(&format!("\n{:<20} {:<3} {:<10} {:<14}", m.name, m.country, "-", "never"));
        }
        for n in &m.nodes {
            let via = match &n.via {
                None => "(this node)".to_owned(),
                Some(v) if *v == m.name => "direct".to_owned(),
                Some(v) => v.clone(),
            };
            let lag = n.lag_s.map_or_else(|| "-".to_owned(), |l| format!("{l} s"));
            text.push_str(&format!(
                "\n{:<20} {:<3} {:<10} {:<14} {:<20} {:>8} {:>7} {:>8} {:>7}",
                m.name,
                m.country,
                n.node.short(),
                format!("{} ago", ago(now, n.last_heard_ms as i64)),
                via,
                lag,
                format!("{}/{}", n.peers_connected, n.peers_known),
                n.unacknowledged,
                n.queued
            ));
        }
    }
    let troubled: Vec<String> = s
        .links
        .iter()
        .filter(|l| l.health != "ok")
        .map(|l| {
            format!(
                "{} → {}: {}",
                l.from_name.as_deref().unwrap_or("?"),
                l.to_name.clone().unwrap_or_else(|| l.to.short()),
                l.health
            )
        })
        .collect();
    if !troubled.is_empty() {
        text.push_str(&format!("\n\nlinks not in sync: {}", troubled.join("; ")));
    }
    let secs = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |s| format!("{s} s"));
    let statuses: Vec<String> = s.requests_by_status.iter().map(|(k, v)| format!("{k} {v}")).collect();
    text.push_str(&format!(
        "\n\nrequests: {} ({}); median time to a first offer {} ({} with one), to an answer {} ({} answered)",
        s.requests.len(),
        statuses.join(", "),
        secs(s.response_times.first_offer_median_s),
        s.response_times.with_offer,
        secs(s.response_times.answer_median_s),
        s.response_times.answered
    ));
    for r in s.requests.iter().take(20) {
        text.push_str(&format!(
            "\n  {} {} [{}] by {}",
            r.id.short(),
            r.title.as_deref().unwrap_or("(untitled)"),
            r.status.as_deref().unwrap_or("-"),
            r.owner
        ));
        for c in &r.candidates {
            let why = if c.answers { "answers it".to_owned() } else { c.shared.join(", ") };
            text.push_str(&format!(
                "\n      offer {} {} by {} ({why})",
                c.id.short(),
                c.title.as_deref().unwrap_or(""),
                c.owner
            ));
        }
    }
    text
}
