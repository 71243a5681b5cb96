//! Node certificates: a commune vouches for the key of a node it runs.
//!
//! The commune's long-term key is its identity; the node key signs changes and
//! authenticates the node on the wire (it is its libp2p identity). Separating them lets
//! a commune reinstall a node or rotate its key without changing identity, and
//! history signed by an older certified key stays verifiable.

use crate::canonical::{DecodeError, Reader, Writer};
use crate::ids::{CommuneId, NodeId};
use crate::keys::{self, SIGNATURE_LEN, SecretKey, SignatureError};

const TAG: &str = "passerelle/node-certificate";
const VERSION: u8 = 1;
/// Encoded size of a certificate.
pub const CERTIFICATE_LEN: usize = 4 + TAG.len() + 1 + 32 + 32 + 8 + SIGNATURE_LEN;

/// A commune's signed statement that `node` is one of its nodes since `issued_ms`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NodeCertificate {
    /// The certifying commune.
    pub commune: CommuneId,
    /// The certified node key.
    pub node: NodeId,
    /// When the commune issued it, in milliseconds since the Unix epoch.
    pub issued_ms: u64,
    /// The commune's signature over the canonical bytes.
    pub signature: [u8; SIGNATURE_LEN],
}

impl NodeCertificate {
    /// Issues a certificate for `node`, signed by the commune key.
    pub fn issue(commune_key: &SecretKey, node: NodeId, issued_ms: u64) -> Self {
        let commune = commune_key.commune_id();
        let signature = commune_key.sign(&Self::signed_bytes(&commune, &node, issued_ms));
        Self { commune, node, issued_ms, signature }
    }

    fn signed_bytes(commune: &CommuneId, node: &NodeId, issued_ms: u64) -> Vec<u8> {
        let mut w = Writer::new(TAG, VERSION);
        w.fixed(commune.as_bytes()).fixed(node.as_bytes()).u64(issued_ms);
        w.finish()
    }

    /// Checks the commune's signature.
    ///
    /// # Errors
    /// [`SignatureError`] when the certificate was not signed by `commune`.
    pub fn verify(&self) -> Result<(), SignatureError> {
        let msg = Self::signed_bytes(&self.commune, &self.node, self.issued_ms);
        keys::verify(self.commune.as_bytes(), &msg, &self.signature)
    }

    /// Encodes the certificate (signed bytes, then signature).
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Self::signed_bytes(&self.commune, &self.node, self.issued_ms);
        bytes.extend_from_slice(&self.signature);
        bytes
    }

    /// Decodes a certificate; does not verify it.
    ///
    /// # Errors
    /// [`DecodeError`] on malformed input.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (mut r, _) = Reader::open(bytes, TAG, "node certificate", VERSION)?;
        let cert = Self::read_fields(&mut r)?;
        r.end()?;
        Ok(cert)
    }

    fn read_fields(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            commune: CommuneId::from_bytes(r.fixed("commune")?),
            node: NodeId::from_bytes(r.fixed("node")?),
            issued_ms: r.u64("issued")?,
            signature: r.fixed("signature")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_round_trips_and_verifies() {
        let commune = SecretKey::from_seed([1; 32]);
        let node = SecretKey::from_seed([2; 32]);
        let cert = NodeCertificate::issue(&commune, node.node_id(), 1_700_000_000_000);
        let bytes = cert.encode();
        assert_eq!(bytes.len(), CERTIFICATE_LEN);
        let back = NodeCertificate::decode(&bytes).unwrap();
        assert_eq!(back, cert);
        back.verify().unwrap();
    }

    #[test]
    fn any_tampered_byte_is_detected() {
        let commune = SecretKey::from_seed([1; 32]);
        let cert = NodeCertificate::issue(&commune, SecretKey::from_seed([2; 32]).node_id(), 5);
        let bytes = cert.encode();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let ok = NodeCertificate::decode(&bad).map(|c| c.verify().is_ok()).unwrap_or(false);
            assert!(!ok, "flipping byte {i} went unnoticed");
        }
    }
}
