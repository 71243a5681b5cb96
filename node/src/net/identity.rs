//! Node ids and libp2p peer ids are the same ed25519 key in two forms.

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey, ed25519};
use passerelle_protocol::ids::NodeId;
use passerelle_protocol::keys::SecretKey;

/// The libp2p keypair of a node: its node key.
///
/// # Panics
/// Never for a valid node key (32 bytes are always an ed25519 secret).
pub fn keypair(node_key: &SecretKey) -> Keypair {
    Keypair::ed25519_from_bytes(node_key.to_seed()).expect("32 bytes are an ed25519 secret key")
}

/// The peer id of a node id, if the id is a valid ed25519 key.
pub fn peer_id(node: &NodeId) -> Option<PeerId> {
    let key = ed25519::PublicKey::try_from_bytes(node.as_bytes()).ok()?;
    Some(PublicKey::from(key).to_peer_id())
}

/// The node id behind a peer id, if the peer id embeds an ed25519 key.
pub fn node_id(peer: &PeerId) -> Option<NodeId> {
    let key = PublicKey::try_decode_protobuf(peer.as_ref().digest()).ok()?;
    let key = key.try_into_ed25519().ok()?;
    Some(NodeId::from_bytes(key.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_and_peer_ids_correspond() {
        let key = SecretKey::from_seed([5; 32]);
        let pair = keypair(&key);
        let from_pair = pair.public().to_peer_id();
        assert_eq!(peer_id(&key.node_id()), Some(from_pair));
        assert_eq!(node_id(&from_pair), Some(key.node_id()));
    }
}
