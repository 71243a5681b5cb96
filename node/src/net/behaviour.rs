//! The libp2p behaviours a node runs.

use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{StreamProtocol, autonat, connection_limits, dcutr, identify, mdns, ping, relay, request_response};
use passerelle_protocol::sync::message::PROTOCOL;

use super::codec::SyncCodec;

/// How long one relayed connection may last before the relay closes it
/// (the nodes then reconnect, or have upgraded to a direct connection).
pub const RELAYED_CONNECTION_MAX: Duration = Duration::from_secs(30 * 60);
/// Bytes one relayed connection may carry: a catch-up of thousands of
/// documents, not the 128 KiB libp2p allows by default for hole-punching
/// handshakes only.
pub const RELAYED_CONNECTION_BYTES: u64 = 256 << 20;
/// Relayed connections at once, in all and per peer: so at most 4 GiB (1 GiB
/// per peer) cross the relay per half hour.
pub const RELAY_CIRCUITS: usize = 16;
/// Relayed connections one peer may have at once.
pub const RELAY_CIRCUITS_PER_PEER: usize = 4;
/// Reservations held at once (peers reachable through this relay).
pub const RELAY_RESERVATIONS: usize = 64;

/// connection limits + identify + ping + optional mDNS + NAT traversal (relay client, optional
/// relay server, DCUtR, AutoNAT) + the sync protocol.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub limits: connection_limits::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub relay_client: relay::client::Behaviour,
    pub relay: Toggle<relay::Behaviour>,
    pub dcutr: dcutr::Behaviour,
    pub autonat: Toggle<autonat::Behaviour>,
    pub sync: request_response::Behaviour<SyncCodec>,
}

/// Which optional behaviours run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    pub mdns: bool,
    pub relay_server: bool,
    /// AutoNAT probes (and answers probes): for nodes that use relays or
    /// serve as one. Off otherwise, since a probe makes the prober dial the
    /// other's listen addresses directly.
    pub autonat: bool,
}

impl Behaviour {
    pub fn new(
        key: &libp2p::identity::Keypair,
        relay_client: relay::client::Behaviour,
        options: Options,
    ) -> std::io::Result<Self> {
        let me = key.public().to_peer_id();
        let sync = request_response::Behaviour::with_codec(
            SyncCodec,
            [(StreamProtocol::new(PROTOCOL), request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(super::REQUEST_TIMEOUT)
                .with_max_concurrent_streams(64),
        );
        let mdns = if options.mdns { Some(mdns::tokio::Behaviour::new(mdns::Config::default(), me)?) } else { None };
        let relay = options.relay_server.then(|| {
            relay::Behaviour::new(
                me,
                relay::Config {
                    max_reservations: RELAY_RESERVATIONS,
                    max_reservations_per_peer: 2,
                    max_circuits: RELAY_CIRCUITS,
                    max_circuits_per_peer: RELAY_CIRCUITS_PER_PEER,
                    max_circuit_duration: RELAYED_CONNECTION_MAX,
                    max_circuit_bytes: RELAYED_CONNECTION_BYTES,
                    // libp2p's rate limits on new reservations and circuits per peer and per IP stay.
                    ..relay::Config::default()
                },
            )
        });
        // Federations also run on private networks (and tests on
        // loopback): probes are not limited to global addresses.
        let autonat = options
            .autonat
            .then(|| autonat::Behaviour::new(me, autonat::Config { only_global_ips: false, ..Default::default() }));
        Ok(Self {
            limits: connection_limits::Behaviour::new(super::guard::connection_limits()),
            identify: identify::Behaviour::new(
                identify::Config::new("/passerelle/1.0.0".into(), key.public()).with_interval(super::IDENTIFY_INTERVAL),
            ),
            ping: ping::Behaviour::new(
                ping::Config::new().with_interval(super::PING_INTERVAL).with_timeout(super::PING_TIMEOUT),
            ),
            mdns: mdns.into(),
            relay_client,
            relay: relay.into(),
            dcutr: dcutr::Behaviour::new(me),
            autonat: autonat.into(),
            sync,
        })
    }
}
