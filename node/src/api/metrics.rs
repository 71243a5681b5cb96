//! `GET /metrics`: the node's state in the Prometheus text format (0.0.4),
//! every name prefixed `passerelle_`. Peers are labelled with the first
//! eight hex digits of their node id and their commune's.

use std::fmt::Write as _;

use crate::engine::MetricsSnapshot;

/// What the swarm task adds to the engine's snapshot.
#[derive(Debug, Clone, Copy)]
pub struct NetFacts {
    /// Peers connected now.
    pub peers_connected: usize,
    /// Seconds since the node started.
    pub uptime_s: u64,
}

/// One metric family: its help line, type and samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP passerelle_{name} {help}\n# TYPE passerelle_{name} {kind}");
        Self { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) -> &mut Self {
        let _ = write!(self.out, "passerelle_{name}");
        if !labels.is_empty() {
            let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(self.out, "{{{}}}", parts.join(","));
        }
        let _ = writeln!(self.out, " {value}");
        self
    }
}

/// Escapes a label value (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Renders the snapshot.
pub fn render(m: &MetricsSnapshot, net: NetFacts, now_ms: i64) -> String {
    let mut out = String::new();
    let c = &m.counters;
    Family::new(&mut out, "uptime_seconds", "gauge", "Seconds since the node started.").sample(
        "uptime_seconds",
        &[],
        net.uptime_s,
    );
    Family::new(&mut out, "changes_applied_total", "counter", "Changes stored since start, by origin.")
        .sample("changes_applied_total", &[("origin", "local")], c.changes_local)
        .sample("changes_applied_total", &[("origin", "remote")], c.changes_remote);
    Family::new(&mut out, "changes_duplicate_total", "counter", "Changes received that were already held.").sample(
        "changes_duplicate_total",
        &[],
        c.changes_duplicate,
    );
    let mut f = Family::new(&mut out, "changes_rejected_total", "counter", "Items refused since start, by reason.");
    for (reason, n) in &c.rejected {
        f.sample("changes_rejected_total", &[("reason", reason)], n);
    }
    Family::new(&mut out, "sync_faults_total", "counter", "Sync protocol faults of peers since start.").sample(
        "sync_faults_total",
        &[],
        c.faults,
    );
    Family::new(&mut out, "sync_sessions_opened_total", "counter", "Sync sessions opened since start.").sample(
        "sync_sessions_opened_total",
        &[],
        c.sessions_opened,
    );
    Family::new(&mut out, "sync_sessions_ready", "gauge", "Sync sessions with an admitted peer now.").sample(
        "sync_sessions_ready",
        &[],
        m.sessions_ready,
    );
    Family::new(&mut out, "sync_rounds_in_sync_total", "counter", "Reconciliation rounds that found a peer in sync.")
        .sample("sync_rounds_in_sync_total", &[], c.rounds_in_sync);
    Family::new(&mut out, "peers_connected", "gauge", "Peers connected now.").sample(
        "peers_connected",
        &[],
        net.peers_connected,
    );

    let labels = |p: &crate::api::types::PeerView| {
        let node = p.record.node.short();
        let commune = p.record.commune.as_deref().map(|c| c[..8.min(c.len())].to_owned()).unwrap_or_default();
        (node, commune)
    };
    let mut f =
        Family::new(&mut out, "sync_bytes_total", "counter", "Sync payload bytes exchanged with each peer, all time.");
    for p in &m.peers {
        let (node, commune) = labels(p);
        f.sample("sync_bytes_total", &[("peer", &node), ("commune", &commune), ("direction", "in")], p.record.bytes_in);
        f.sample(
            "sync_bytes_total",
            &[("peer", &node), ("commune", &commune), ("direction", "out")],
            p.record.bytes_out,
        );
    }
    let mut f = Family::new(
        &mut out,
        "peer_changes_received_total",
        "counter",
        "Changes received from each peer and stored, all time.",
    );
    for p in &m.peers {
        let (node, commune) = labels(p);
        f.sample("peer_changes_received_total", &[("peer", &node), ("commune", &commune)], p.record.changes_in);
    }
    let mut f = Family::new(&mut out, "peer_connected", "gauge", "1 when the peer is connected and admitted.");
    for p in &m.peers {
        let (node, commune) = labels(p);
        f.sample("peer_connected", &[("peer", &node), ("commune", &commune)], u8::from(p.connected));
    }
    let mut f = Family::new(
        &mut out,
        "peer_lag_seconds",
        "gauge",
        "Seconds since the last reconciliation round that found the peer in sync (absent: never).",
    );
    for p in &m.peers {
        if let Some(t) = p.record.last_sync_ms {
            let (node, commune) = labels(p);
            let lag = (now_ms - t).max(0) as f64 / 1000.0;
            f.sample("peer_lag_seconds", &[("peer", &node), ("commune", &commune)], format!("{lag:.3}"));
        }
    }
    let mut f = Family::new(
        &mut out,
        "peer_unacknowledged_documents",
        "gauge",
        "Shared documents the peer has not acknowledged at their current state.",
    );
    for p in &m.peers {
        if let Some(r) = p.receipts {
            let (node, commune) = labels(p);
            f.sample("peer_unacknowledged_documents", &[("peer", &node), ("commune", &commune)], r.pending);
        }
    }
    let mut f =
        Family::new(&mut out, "peer_queued_documents", "gauge", "Documents in the transfer queue for the peer.");
    for p in &m.peers {
        let (node, commune) = labels(p);
        f.sample("peer_queued_documents", &[("peer", &node), ("commune", &commune)], p.queued);
    }
    let mut f = Family::new(
        &mut out,
        "peer_delivery_rate_bytes_per_second",
        "gauge",
        "Delivery rate last measured towards the peer.",
    );
    for p in &m.peers {
        if let Some(rate) = p.record.link_bytes_per_s {
            let (node, commune) = labels(p);
            f.sample("peer_delivery_rate_bytes_per_second", &[("peer", &node), ("commune", &commune)], rate);
        }
    }
    let mut f = Family::new(&mut out, "documents", "gauge", "Documents held, by kind and status.");
    let (by_kind, by_status) = &m.counts;
    for (kind, n) in by_kind {
        match by_status.get(kind) {
            Some(statuses) if !statuses.is_empty() => {
                for (status, n) in statuses {
                    f.sample("documents", &[("kind", kind), ("status", status)], n);
                }
            }
            _ => {
                f.sample("documents", &[("kind", kind)], n);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
