//! What the core remembers of each peer (persisted by the driver, so it
//! survives restarts), and the operator's own choices: peers added by hand
//! are dialled, peers removed by hand are forgotten.

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;

/// What this node remembers of a peer: how to reach it and how syncing
/// with it went. Persisted, so it survives restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The peer's node id.
    pub node: NodeId,
    /// Addresses to dial (multiaddrs); empty for peers that only dial us.
    pub addrs: Vec<String>,
    /// Whether it is dialled (and redialled): an operator added it (`peer
    /// add`), or the roster's link rule chose it (then `auto` too).
    pub configured: bool,
    /// Whether the link rule chose it (forgotten when no longer chosen);
    /// `false` for peers an operator added.
    #[serde(default)]
    pub auto: bool,
    /// The peer's commune, once its certificate was seen.
    pub commune: Option<String>,
    /// Last time a connection came up (ms).
    pub last_connected_ms: Option<i64>,
    /// Last time a reconciliation found both sides in sync (ms).
    pub last_sync_ms: Option<i64>,
    /// Sync payload bytes received from it, all time.
    pub bytes_in: u64,
    /// Sync payload bytes sent to it, all time.
    pub bytes_out: u64,
    /// Changes received from it and stored.
    pub changes_in: u64,
    /// Items it sent that were refused.
    pub rejected: u64,
    /// The last error seen with it.
    pub last_error: Option<String>,
    /// The delivery rate last measured towards it (bytes/s): frames for a
    /// slow peer are small from the first message of the next connection.
    #[serde(default)]
    pub link_bytes_per_s: Option<u64>,
    /// The address of the last connection with it (a `/p2p-circuit`
    /// address when it went through a relay).
    #[serde(default)]
    pub last_addr: Option<String>,
    /// Requests for rounds this node dropped because the peer sent them
    /// too fast ([`super::ASKS_PER_MINUTE`]).
    #[serde(default)]
    pub rounds_refused: u64,
    /// Documents queued for the peer at its request since `pushed_since_ms`
    /// (a day at most; see [`super::PUSH_ALLOWANCE_PER_DAY`]).
    #[serde(default)]
    pub pushed: u64,
    /// When the current day of `pushed` began (ms).
    #[serde(default)]
    pub pushed_since_ms: i64,
    /// Documents the peer asked for beyond its allowance, not queued.
    #[serde(default)]
    pub pushes_refused: u64,
    /// Whether the peer holds our membership statements (it said its
    /// roster equals ours): our hellos leave the proof out until it asks
    /// for it again.
    #[serde(default)]
    pub placed_us: bool,
}

impl PeerRecord {
    /// A record for a peer seen for the first time.
    pub fn new(node: NodeId) -> Self {
        Self {
            node,
            addrs: Vec::new(),
            configured: false,
            auto: false,
            commune: None,
            last_connected_ms: None,
            last_sync_ms: None,
            bytes_in: 0,
            bytes_out: 0,
            changes_in: 0,
            rejected: 0,
            last_error: None,
            link_bytes_per_s: None,
            placed_us: false,
            last_addr: None,
            rounds_refused: 0,
            pushed: 0,
            pushed_since_ms: 0,
            pushes_refused: 0,
        }
    }
}
