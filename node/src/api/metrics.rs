//! `GET /metrics`: the node's state in the Prometheus text format (0.0.4),
//! every name prefixed `passerelle_`. Peers are labelled with the first
//! eight hex digits of their node id and their commune's.

use std::fmt::Write as _;

use crate::api::types::PeerView;
use crate::engine::MetricsSnapshot;

/// What the swarm task adds to the engine's snapshot.
#[derive(Debug, Clone, Copy)]
pub struct NetFacts {
    /// Peers connected now.
    pub peers_connected: usize,
    /// Seconds since the node started.
    pub uptime_s: u64,
    /// Bytes received and sent on TCP connections since start.
    pub transport_bytes: (u64, u64),
    /// What the network task refused or dropped.
    pub guard: crate::net::guard::GuardCounts,
}

/// One metric family: its help line, type and samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP passerelle_{name} {help}\n# TYPE passerelle_{name} {kind}");
        Self { out, name }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) -> &mut Self {
        let _ = write!(self.out, "passerelle_{}", self.name);
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

/// A family with one sample per peer (labels `peer` and `commune`: the
/// first eight hex digits of each id) for the peers `value` gives one for.
fn per_peer(
    out: &mut String,
    peers: &[PeerView],
    (name, kind, help): (&'static str, &str, &str),
    value: impl Fn(&PeerView) -> Option<String>,
) {
    let mut f = Family::new(out, name, kind, help);
    for p in peers {
        let Some(v) = value(p) else { continue };
        let node = p.record.node.short();
        let commune = p.record.commune.as_deref().map(|c| &c[..8.min(c.len())]).unwrap_or_default();
        f.sample(&[("peer", &node), ("commune", commune)], v);
    }
}

/// Renders the snapshot.
pub fn render(m: &MetricsSnapshot, net: NetFacts, now_ms: i64) -> String {
    let mut out = String::new();
    let c = &m.counters;
    let o = &mut out;
    Family::new(o, "uptime_seconds", "gauge", "Seconds since the node started.").sample(&[], net.uptime_s);
    Family::new(
        o,
        "transport_bytes_total",
        "counter",
        "Bytes on TCP connections since start (all of it), by direction.",
    )
    .sample(&[("direction", "in")], net.transport_bytes.0)
    .sample(&[("direction", "out")], net.transport_bytes.1);
    Family::new(
        o,
        "net_refusals_total",
        "counter",
        "Connections refused (per-address limit), messages dropped (a peer's queue full), slow peers disconnected, relay use by non-members closed.",
    )
    .sample(&[("what", "connection")], net.guard.connections_refused)
    .sample(&[("what", "message")], net.guard.messages_dropped)
    .sample(&[("what", "slow_peer")], net.guard.slow_peers_disconnected)
    .sample(&[("what", "relay")], net.guard.relay_refused);
    Family::new(o, "changes_applied_total", "counter", "Changes stored since start, by origin.")
        .sample(&[("origin", "local")], c.changes_local)
        .sample(&[("origin", "remote")], c.changes_remote);
    Family::new(o, "changes_duplicate_total", "counter", "Changes received that were already held.")
        .sample(&[], c.changes_duplicate);
    let mut f = Family::new(o, "changes_rejected_total", "counter", "Items refused since start, by reason.");
    for (reason, n) in &c.rejected {
        f.sample(&[("reason", reason)], n);
    }
    Family::new(o, "sync_faults_total", "counter", "Sync protocol faults of peers since start.").sample(&[], c.faults);
    Family::new(o, "sync_sessions_opened_total", "counter", "Sync sessions opened since start.")
        .sample(&[], c.sessions_opened);
    Family::new(o, "sync_sessions_ready", "gauge", "Sync sessions with an admitted peer now.")
        .sample(&[], m.sessions_ready);
    Family::new(o, "sync_rounds_in_sync_total", "counter", "Reconciliation rounds that found a peer in sync.")
        .sample(&[], c.rounds_in_sync);
    Family::new(o, "peers_connected", "gauge", "Peers connected now.").sample(&[], net.peers_connected);
    let mut f = Family::new(o, "sync_messages_total", "counter", "Sync messages since start, by kind and direction.");
    for (kind, t) in &c.traffic {
        f.sample(&[("kind", kind), ("direction", "in")], t.messages_in);
        f.sample(&[("kind", kind), ("direction", "out")], t.messages_out);
    }
    let mut f = Family::new(
        o,
        "sync_message_bytes_total",
        "counter",
        "Sync message bytes on the wire since start (compressed where it paid), by kind and direction.",
    );
    for (kind, t) in &c.traffic {
        f.sample(&[("kind", kind), ("direction", "in")], t.bytes_in);
        f.sample(&[("kind", kind), ("direction", "out")], t.bytes_out);
    }
    let d = &c.frames_sent;
    Family::new(
        o,
        "docs_frames_sent_bytes_total",
        "counter",
        "What the document frames sent since start were made of, before compression (and on the wire).",
    )
    .sample(&[("part", "wire")], d.wire_bytes)
    .sample(&[("part", "plain")], d.plain_bytes)
    .sample(&[("part", "headers")], d.header_bytes)
    .sample(&[("part", "change_bytes")], d.change_bytes);
    Family::new(o, "docs_frames_sent_changes_total", "counter", "Changes sent in document frames since start.")
        .sample(&[("signed", "own")], d.changes - d.covered)
        .sample(&[("signed", "covered")], d.covered);

    let mut f = Family::new(o, "sync_bytes_total", "counter", "Sync payload bytes exchanged with each peer, all time.");
    for p in &m.peers {
        let node = p.record.node.short();
        let commune = p.record.commune.as_deref().map(|c| &c[..8.min(c.len())]).unwrap_or_default();
        f.sample(&[("peer", &node), ("commune", commune), ("direction", "in")], p.record.bytes_in);
        f.sample(&[("peer", &node), ("commune", commune), ("direction", "out")], p.record.bytes_out);
    }
    let peers = &m.peers;
    per_peer(
        o,
        peers,
        ("peer_changes_received_total", "counter", "Changes received from each peer and stored, all time."),
        |p| Some(p.record.changes_in.to_string()),
    );
    per_peer(o, peers, ("peer_connected", "gauge", "1 when the peer is connected and admitted."), |p| {
        Some(u8::from(p.connected).to_string())
    });
    per_peer(
        o,
        peers,
        (
            "peer_lag_seconds",
            "gauge",
            "Seconds since the last reconciliation round that found the peer in sync (absent: never).",
        ),
        |p| p.record.last_sync_ms.map(|t| format!("{:.3}", (now_ms - t).max(0) as f64 / 1000.0)),
    );
    per_peer(
        o,
        peers,
        (
            "peer_unacknowledged_documents",
            "gauge",
            "Shared documents the peer has not acknowledged at their current state.",
        ),
        |p| p.receipts.map(|r| r.pending.to_string()),
    );
    per_peer(o, peers, ("peer_queued_documents", "gauge", "Documents in the transfer queue for the peer."), |p| {
        Some(p.queued.to_string())
    });
    per_peer(
        o,
        peers,
        ("peer_delivery_rate_bytes_per_second", "gauge", "Delivery rate last measured towards the peer."),
        |p| p.record.link_bytes_per_s.map(|r| r.to_string()),
    );

    let mut f = Family::new(o, "documents", "gauge", "Documents held, by kind and status.");
    let (by_kind, by_status) = &m.counts;
    for (kind, n) in by_kind {
        match by_status.get(kind) {
            Some(statuses) if !statuses.is_empty() => {
                for (status, n) in statuses {
                    f.sample(&[("kind", kind), ("status", status)], n);
                }
            }
            _ => {
                f.sample(&[("kind", kind)], n);
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
