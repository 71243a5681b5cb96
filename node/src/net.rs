//! The peer-to-peer side: one task owns the libp2p swarm.
//!
//! Transports are TCP (Noise, Yamux) and QUIC; behaviours are identify,
//! ping, optional mDNS, and request-response for `/passerelle/sync/6`. The
//! node key is the libp2p identity, so the Noise handshake authenticates the
//! node; its commune certificate travels in the first sync message.
//!
//! The task only translates: swarm events become engine commands (sent with
//! `try_send`, so the loop never waits on the engine; a full engine inbox
//! answers the peer `Busy`), and the engine's outbound messages become
//! requests, at most [`SEND_WINDOW`] in flight per peer. Protocol decisions
//! live in the sync core, driven by the engine.

use std::time::Duration;

use libp2p::Multiaddr;
use passerelle_protocol::ids::NodeId;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

mod behaviour;
pub mod codec;
pub mod counting;
mod event_loop;
pub mod guard;
pub mod identity;

pub use event_loop::spawn;

/// Commands from the API waiting for the swarm task.
pub const NET_INBOX: usize = 64;
/// Outbound sync messages waiting for the swarm task (from the engine).
pub const NET_OUTBOX: usize = 1024;
/// Requests in flight per peer: enough to fill a link, few enough to react.
pub const SEND_WINDOW: usize = 4;
/// How long a request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections idle this long are closed: longer than the longest
/// interval between two anti-entropy rounds with a peer in sync (30
/// minutes, and a tenth of jitter), so a quiet link stays up.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(45 * 60);
/// How often a connection is pinged (and closed when a ping goes
/// unanswered for [`PING_TIMEOUT`]): often enough to find a dead link
/// within the half hour, rarely enough to cost about 20 KB a day.
pub const PING_INTERVAL: Duration = Duration::from_secs(20 * 60);
/// How long a ping may go unanswered.
pub const PING_TIMEOUT: Duration = Duration::from_secs(60);
/// How often identify asks a peer again (it also pushes changes of this
/// node's addresses as they happen).
pub const IDENTIFY_INTERVAL: Duration = Duration::from_secs(6 * 60 * 60);
/// First redial delay; doubles up to [`MAX_REDIAL_DELAY`], with jitter.
pub const MIN_REDIAL_DELAY: Duration = Duration::from_secs(1);
/// Longest redial delay, so a peer away for days is retried often enough.
pub const MAX_REDIAL_DELAY: Duration = Duration::from_secs(300);

/// Errors of the network side.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A listen address is not usable.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The swarm could not be built.
    #[error("cannot start the network: {0}")]
    Build(String),
    /// The swarm task has stopped.
    #[error("the network task has stopped")]
    Stopped,
}

/// The network as the API sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetInfo {
    /// This node's libp2p peer id.
    pub peer_id: String,
    /// Addresses it listens on.
    pub listen: Vec<String>,
    /// Peers connected now.
    pub connected: Vec<NodeId>,
    /// Whether other nodes can dial this one, as AutoNAT found out:
    /// `public`, `private` (reach it through a relay) or `unknown`; `not
    /// checked` on a node that neither uses nor serves relays.
    pub reachability: &'static str,
    /// Bytes received and sent on this node's TCP connections since it
    /// started (everything: handshakes, identify, ping, sync).
    #[serde(default)]
    pub transport_bytes: (u64, u64),
    /// Connections refused, messages dropped and slow peers cut off.
    #[serde(default)]
    pub guard: guard::GuardCounts,
}

/// What the API can ask the swarm task.
#[derive(Debug)]
pub(crate) enum NetCommand {
    Dial(NodeId, Vec<Multiaddr>, oneshot::Sender<()>),
    Forget(NodeId, oneshot::Sender<()>),
    Info(oneshot::Sender<NetInfo>),
    Shutdown(oneshot::Sender<()>),
}

/// Messages from the engine to the swarm task.
#[derive(Debug)]
pub enum NetOut {
    /// Send an encoded sync message.
    Send {
        /// To whom.
        to: NodeId,
        /// Its kind, for logs.
        kind: &'static str,
        /// The encoded message.
        bytes: Vec<u8>,
        /// Reported back to the engine when the peer acknowledges the
        /// message ([`NetEvent::Delivered`](crate::engine::NetEvent)) or
        /// when it is lost: frames of a transfer are tagged.
        tag: Option<u64>,
    },
    /// Remember a peer's addresses and dial it (and again when the link drops).
    Dial {
        /// The peer.
        node: NodeId,
        /// Where to reach it.
        addrs: Vec<Multiaddr>,
    },
    /// Disconnect a peer and stop redialling it.
    Forget {
        /// The peer.
        node: NodeId,
    },
    /// Close connections with a peer that broke the protocol.
    Disconnect {
        /// Whom.
        to: NodeId,
        /// Why.
        reason: String,
    },
    /// The registered nodes of the network's members, sent when the roster
    /// changes: whom the relay server serves (unless it serves anyone).
    Members(Vec<NodeId>),
}

/// A cloneable handle to the swarm task.
#[derive(Debug, Clone)]
pub struct NetHandle {
    tx: mpsc::Sender<NetCommand>,
}

impl NetHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> NetCommand) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// Remembers addresses of a peer and dials it now (and again whenever
    /// the connection drops).
    ///
    /// # Errors
    /// [`NetError::Stopped`].
    pub async fn dial(&self, node: NodeId, addrs: Vec<Multiaddr>) -> Result<(), NetError> {
        self.ask(|r| NetCommand::Dial(node, addrs, r)).await
    }

    /// Disconnects a peer and stops redialling it.
    ///
    /// # Errors
    /// [`NetError::Stopped`].
    pub async fn forget(&self, node: NodeId) -> Result<(), NetError> {
        self.ask(|r| NetCommand::Forget(node, r)).await
    }

    /// Listen addresses and connected peers.
    ///
    /// # Errors
    /// [`NetError::Stopped`].
    pub async fn info(&self) -> Result<NetInfo, NetError> {
        self.ask(NetCommand::Info).await
    }

    /// Closes every connection and stops the task.
    pub async fn shutdown(&self) {
        let _ = self.ask(NetCommand::Shutdown).await;
    }
}
