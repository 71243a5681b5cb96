//! Counters the engine keeps since it started, read by `GET /metrics`
//! (Prometheus). Per-peer byte counters live in the peer records (all
//! time, persisted); these are process counters and start at zero.

use std::collections::BTreeMap;

use super::Counts;
use crate::views::PeerView;

/// What the engine counted since it started.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EngineMetrics {
    /// Changes written on this node.
    pub changes_local: u64,
    /// Changes received, verified and stored.
    pub changes_remote: u64,
    /// Changes received that this node already held.
    pub changes_duplicate: u64,
    /// Refused items, by reason code (`bad_signature`, `not_a_writer`, ...).
    pub rejected: BTreeMap<String, u64>,
    /// Sync protocol faults of peers (malformed or refused messages).
    pub faults: u64,
    /// Sync sessions opened (one per connection).
    pub sessions_opened: u64,
    /// Reconciliation rounds that found a peer in sync.
    pub rounds_in_sync: u64,
    /// Sync messages and bytes by kind, each way.
    pub traffic: passerelle_protocol::replica::Traffic,
    /// What the document frames sent were made of.
    pub frames_sent: passerelle_protocol::replica::FrameParts,
}

/// Everything `GET /metrics` shows that the engine knows.
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    /// Process counters.
    pub counters: EngineMetrics,
    /// Sessions whose peer is identified and admitted.
    pub sessions_ready: u64,
    /// Peers with their records, receipts and queues.
    pub peers: Vec<PeerView>,
    /// Documents by kind, and by kind and status.
    pub counts: Counts,
}
