//! What a stranger or a peer that does not read can cost this node's
//! network task, bounded: connections (in all, pending, per peer, and
//! incoming per IP address), and bytes queued for each peer. Refusals and
//! drops are counted for `/metrics`.

use std::collections::HashMap;
use std::net::IpAddr;

use libp2p::Multiaddr;
use libp2p::connection_limits::ConnectionLimits;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use serde::{Deserialize, Serialize};

/// Incoming connections still in their handshake.
pub const MAX_PENDING_INCOMING: u32 = 32;
/// Established incoming connections (a node's links are a dozen or so;
/// the rest is room for joins, operators and relayed peers).
pub const MAX_ESTABLISHED_INCOMING: u32 = 256;
/// Established connections in all.
pub const MAX_ESTABLISHED: u32 = 512;
/// Connections with one peer (direct, relayed, and a simultaneous dial).
pub const MAX_PER_PEER: u32 = 4;
/// Incoming connections from one IP address. Loopback is not limited: it
/// is the operator's own machine (and the tests' federations).
pub const MAX_INCOMING_PER_IP: usize = 8;
/// Bytes queued for one peer beyond its send window: past it, new
/// messages for the peer are dropped (anti-entropy repairs; a transfer's
/// frame is reported lost and sent again later).
pub const MAX_QUEUED_BYTES: usize = 8 << 20;
/// Requests to one peer that timed out in a row before the peer is
/// disconnected: it does not read.
pub const MAX_TIMEOUTS_IN_A_ROW: u32 = 3;

/// The connection limits libp2p enforces for us.
pub fn connection_limits() -> ConnectionLimits {
    ConnectionLimits::default()
        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
        .with_max_established_incoming(Some(MAX_ESTABLISHED_INCOMING))
        .with_max_established(Some(MAX_ESTABLISHED))
        .with_max_established_per_peer(Some(MAX_PER_PEER))
}

/// What the guard refused or dropped since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardCounts {
    /// Incoming connections closed for their IP address's limit.
    pub connections_refused: u64,
    /// Messages dropped because a peer's queue was full.
    pub messages_dropped: u64,
    /// Peers disconnected because they stopped reading.
    pub slow_peers_disconnected: u64,
    /// Relay reservations and circuits of peers that are not registered
    /// nodes of members, closed.
    #[serde(default)]
    pub relay_refused: u64,
}

/// Incoming connections per remote IP address.
#[derive(Debug, Default)]
pub struct PerIp {
    by_ip: HashMap<IpAddr, Vec<ConnectionId>>,
    of: HashMap<ConnectionId, IpAddr>,
}

impl PerIp {
    /// Counts a new incoming connection from `remote`; returns `false` if
    /// its address already has [`MAX_INCOMING_PER_IP`] (then it is not
    /// counted and must be closed).
    pub fn admit(&mut self, id: ConnectionId, remote: &Multiaddr) -> bool {
        let Some(ip) = ip_of(remote) else { return true };
        if ip.is_loopback() {
            return true;
        }
        let list = self.by_ip.entry(ip).or_default();
        if list.len() >= MAX_INCOMING_PER_IP {
            return false;
        }
        list.push(id);
        self.of.insert(id, ip);
        true
    }

    /// A connection closed.
    pub fn closed(&mut self, id: ConnectionId) {
        let Some(ip) = self.of.remove(&id) else { return };
        if let Some(list) = self.by_ip.get_mut(&ip) {
            list.retain(|c| *c != id);
            if list.is_empty() {
                self.by_ip.remove(&ip);
            }
        }
    }
}

fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_gets_a_few_connections_and_loopback_is_free() {
        let mut per_ip = PerIp::default();
        let far: Multiaddr = "/ip4/203.0.113.7/tcp/40000".parse().unwrap();
        let ids: Vec<ConnectionId> = (1..=MAX_INCOMING_PER_IP + 1).map(ConnectionId::new_unchecked).collect();
        for id in &ids[..MAX_INCOMING_PER_IP] {
            assert!(per_ip.admit(*id, &far));
        }
        assert!(!per_ip.admit(ids[MAX_INCOMING_PER_IP], &far), "one too many from one address");
        per_ip.closed(ids[0]);
        assert!(per_ip.admit(ids[MAX_INCOMING_PER_IP], &far), "room again once one closed");
        let local: Multiaddr = "/ip4/127.0.0.1/tcp/40000".parse().unwrap();
        for i in 0..100 {
            assert!(per_ip.admit(ConnectionId::new_unchecked(1000 + i), &local));
        }
    }
}
