//! The libp2p behaviours a node runs.

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{StreamProtocol, identify, mdns, ping, request_response};
use passerelle_protocol::sync::message::PROTOCOL;

use super::codec::SyncCodec;

/// identify + ping + optional mDNS + the sync protocol.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub sync: request_response::Behaviour<SyncCodec>,
}

impl Behaviour {
    pub fn new(key: &libp2p::identity::Keypair, mdns_on: bool) -> std::io::Result<Self> {
        let sync = request_response::Behaviour::with_codec(
            SyncCodec,
            [(StreamProtocol::new(PROTOCOL), request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(super::REQUEST_TIMEOUT)
                .with_max_concurrent_streams(64),
        );
        let mdns = if mdns_on {
            Some(mdns::tokio::Behaviour::new(mdns::Config::default(), key.public().to_peer_id())?)
        } else {
            None
        };
        Ok(Self {
            identify: identify::Behaviour::new(identify::Config::new("/passerelle/1.0.0".into(), key.public())),
            ping: ping::Behaviour::new(ping::Config::new()),
            mdns: mdns.into(),
            sync,
        })
    }
}
