//! Who the replica is and the settings it runs with.

use crate::certificate::NodeCertificate;
use crate::ids::{CommuneId, NodeId};
use crate::keys::SecretKey;

/// This node: its key (which signs its heartbeats), the commune's
/// certificate of that key, and the commune's country (links prefer it).
#[derive(Debug, Clone)]
pub struct Me {
    /// The node key.
    pub node_key: SecretKey,
    /// The commune's certificate of the node key.
    pub certificate: NodeCertificate,
    /// The commune's country (ISO 3166-1 alpha-2).
    pub country: String,
}

impl Me {
    /// The node's id.
    pub fn node(&self) -> NodeId {
        self.certificate.node
    }

    /// The commune it speaks for.
    pub fn commune(&self) -> CommuneId {
        self.certificate.commune
    }
}

/// Settings of the replica, from the node's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// Base interval of anti-entropy rounds with a peer (ms); it grows
    /// while the peer stays in sync (see [`super::Replica::max_interval`]).
    pub anti_entropy_ms: u64,
    /// How often this node says how it is (ms).
    pub heartbeat_ms: u64,
    /// Link on its own with partners and members (`network.auto_links`).
    pub auto_links: bool,
    /// Relays are configured: a member without a contact address can still
    /// be dialled, through them.
    pub uses_relays: bool,
    /// The per-peer send budget (bytes/s), which also bounds frame sizes.
    pub peer_budget: Option<u64>,
    /// The software version heartbeats name.
    pub version: String,
    /// Seed of the core's jitter (the node draws it at random).
    pub seed: u64,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            anti_entropy_ms: 30_000,
            heartbeat_ms: 60_000,
            auto_links: true,
            uses_relays: false,
            peer_budget: None,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            seed: 1,
        }
    }
}
