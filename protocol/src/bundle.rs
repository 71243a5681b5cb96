//! Offline bundles: what a partner lacks, in a file carried on a USB stick
//! or sent by e-mail when there is no link at all.
//!
//! A bundle names its network and the commune it is for, carries the
//! network's statements (so revocations are known before anything else),
//! the certificates, headers and signed change envelopes, and is signed as
//! a whole by the exporting node: altered or truncated bundles are refused
//! before anything is applied, and everything inside is verified again on
//! import like anything received from a peer.

use crate::canonical::{DecodeError, Reader, Writer};
use crate::certificate::NodeCertificate;
use crate::envelope::{ChangeEnvelope, MAX_CHANGE_BYTES};
use crate::header::SignedHeader;
use crate::ids::{CommuneId, NetworkId};
use crate::keys::{self, SIGNATURE_LEN, SecretKey};
use crate::network::SignedStatement;
use crate::network::statement::MAX_STATEMENT_BYTES;

const TAG: &str = "passerelle/bundle";
const VERSION: u8 = 1;
/// Most entries of each list in a bundle.
pub const MAX_BUNDLE_ENTRIES: usize = 2_000_000;
/// Largest bundle read.
pub const MAX_BUNDLE_BYTES: usize = 1 << 30;
/// The file name extension used by the CLI.
pub const EXTENSION: &str = "pbundle";

/// Why a bundle is refused before anything in it is looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The bytes do not decode: not a bundle, cut short, or damaged.
    #[error("not a readable bundle (truncated or damaged?): {0}")]
    Malformed(#[from] DecodeError),
    /// The signature does not match the contents.
    #[error("the bundle's signature does not match its contents: it was altered after node {0} signed it")]
    BadSignature(String),
}

/// The contents of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleContents {
    /// The network.
    pub network: NetworkId,
    /// The commune it is for.
    pub recipient: CommuneId,
    /// When it was made (ms since the Unix epoch).
    pub created_ms: u64,
    /// Changes stored after this time (ms) are in it; 0 for everything.
    pub since_ms: u64,
    /// The network's statements.
    pub statements: Vec<SignedStatement>,
    /// Certificates of the authors.
    pub certificates: Vec<NodeCertificate>,
    /// Headers of the documents.
    pub headers: Vec<SignedHeader>,
    /// Signed changes.
    pub changes: Vec<ChangeEnvelope>,
}

/// A bundle: contents, the exporting node's certificate and its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// What it carries.
    pub contents: BundleContents,
    /// The exporting node's certificate.
    pub signer: NodeCertificate,
    /// The exporting node's signature over everything else.
    pub signature: [u8; SIGNATURE_LEN],
}

fn body(c: &BundleContents, signer: &NodeCertificate) -> Vec<u8> {
    fn list<T>(w: &mut Writer, items: &[T], encode: impl Fn(&T) -> Vec<u8>) {
        w.u32(items.len() as u32);
        for item in items {
            w.bytes(&encode(item));
        }
    }
    let mut w = Writer::new(TAG, VERSION);
    w.fixed(c.network.as_bytes()).fixed(c.recipient.as_bytes()).u64(c.created_ms).u64(c.since_ms);
    w.bytes(&signer.encode());
    list(&mut w, &c.statements, SignedStatement::encode);
    list(&mut w, &c.certificates, NodeCertificate::encode);
    list(&mut w, &c.headers, SignedHeader::encode);
    list(&mut w, &c.changes, ChangeEnvelope::encode);
    w.finish()
}

impl Bundle {
    /// Signs contents with the exporting node's key.
    pub fn sign(contents: BundleContents, node_key: &SecretKey, signer: NodeCertificate) -> Self {
        let signature = node_key.sign(&body(&contents, &signer));
        Self { contents, signer, signature }
    }

    /// The bundle's bytes: the signed body, then the signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = body(&self.contents, &self.signer);
        bytes.extend_from_slice(&self.signature);
        bytes
    }

    /// Reads a bundle and checks its signature (the signer's certificate is
    /// checked too; whether the signer may speak in the network is the
    /// importing node's question).
    ///
    /// # Errors
    /// [`BundleError`].
    pub fn decode_verified(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(DecodeError::TooLarge { field: "bundle", len: bytes.len(), max: MAX_BUNDLE_BYTES }.into());
        }
        let body_len = bytes
            .len()
            .checked_sub(SIGNATURE_LEN)
            .ok_or_else(|| DecodeError::Truncated { field: "signature", needed: SIGNATURE_LEN - bytes.len() })?;
        let (mut r, _) = Reader::open(&bytes[..body_len], TAG, "bundle", VERSION)?;
        let count = |r: &mut Reader<'_>, field: &'static str| -> Result<usize, DecodeError> {
            let n = r.u32(field)? as usize;
            if n > MAX_BUNDLE_ENTRIES {
                Err(DecodeError::TooLarge { field, len: n, max: MAX_BUNDLE_ENTRIES })
            } else {
                Ok(n)
            }
        };
        let invalid =
            |field: &'static str, e: &dyn std::fmt::Display| DecodeError::Invalid { field, reason: e.to_string() };
        let network = NetworkId::from_bytes(r.fixed("network")?);
        let recipient = CommuneId::from_bytes(r.fixed("recipient")?);
        let created_ms = r.u64("created")?;
        let since_ms = r.u64("since")?;
        let signer = NodeCertificate::decode(r.bytes("signer", 512)?).map_err(|e| invalid("signer", &e))?;
        let n = count(&mut r, "statements")?;
        let mut statements = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            let b = r.bytes("statement", MAX_STATEMENT_BYTES)?;
            statements.push(SignedStatement::decode(b).map_err(|e| invalid("statement", &e))?);
        }
        let n = count(&mut r, "certificates")?;
        let mut certificates = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            certificates
                .push(NodeCertificate::decode(r.bytes("certificate", 512)?).map_err(|e| invalid("certificate", &e))?);
        }
        let n = count(&mut r, "headers")?;
        let mut headers = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            headers.push(SignedHeader::decode(r.bytes("header", 8192)?).map_err(|e| invalid("header", &e))?);
        }
        let n = count(&mut r, "changes")?;
        let mut changes = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            let b = r.bytes("change", MAX_CHANGE_BYTES + 1024)?;
            changes.push(ChangeEnvelope::decode(b).map_err(|e| invalid("change", &e))?);
        }
        r.end()?;
        let signature: [u8; SIGNATURE_LEN] = bytes[body_len..].try_into().expect("signature length");
        keys::verify(signer.node.as_bytes(), &bytes[..body_len], &signature)
            .map_err(|_| BundleError::BadSignature(signer.node.short()))?;
        signer.verify().map_err(|_| BundleError::BadSignature(signer.node.short()))?;
        let contents =
            BundleContents { network, recipient, created_ms, since_ms, statements, certificates, headers, changes };
        Ok(Self { contents, signer, signature })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{self, Edit};
    use crate::header::{DocHeader, DocKind, Scope};

    fn sample() -> (Bundle, Vec<u8>) {
        let commune = SecretKey::from_seed([1; 32]);
        let node = SecretKey::from_seed([2; 32]);
        let cert = NodeCertificate::issue(&commune, node.node_id(), 1);
        let found = SignedStatement::found(&commune, "Réseau", "Senneval", "BE", 1);
        let header = DocHeader::new(DocKind::Request, commune.commune_id(), Scope::Partnership, 5, [3; 16]);
        let signed = SignedHeader::sign(header, &node, cert.clone());
        let mut am = document::new_document(&node.node_id());
        let edit = Edit::Text { field: "title".into(), lang: "fr".into(), text: "Demande".into() };
        let change = document::commit(&mut am, &[edit], "create", 10).unwrap().unwrap();
        let env = ChangeEnvelope::sign(signed.id(), &change, &node);
        let contents = BundleContents {
            network: found.network,
            recipient: SecretKey::from_seed([9; 32]).commune_id(),
            created_ms: 20,
            since_ms: 0,
            statements: vec![found],
            certificates: vec![cert.clone()],
            headers: vec![signed],
            changes: vec![env],
        };
        let bundle = Bundle::sign(contents, &node, cert);
        let bytes = bundle.encode();
        (bundle, bytes)
    }

    #[test]
    fn bundles_round_trip_and_verify() {
        let (bundle, bytes) = sample();
        assert_eq!(Bundle::decode_verified(&bytes).unwrap(), bundle);
    }

    #[test]
    fn altered_or_truncated_bundles_are_refused() {
        let (_, bytes) = sample();
        for i in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(Bundle::decode_verified(&bad).is_err(), "flipping byte {i} went unnoticed");
        }
        for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
            let err = Bundle::decode_verified(&bytes[..cut]).unwrap_err();
            assert!(matches!(err, BundleError::Malformed(_) | BundleError::BadSignature(_)), "{err}");
        }
    }
}
