//! Document headers: the immutable, owner-signed facts about a document.
//!
//! The header says what a document is (kind, content schema), who owns it,
//! who may write it, how far it travels (scope) and when it was created. The
//! document id is the SHA-256 of the header's canonical bytes, so an id cannot
//! be reused for another header; the header is signed by a node key that the
//! owner commune certifies, and carries that certificate so anyone can check
//! it offline.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::canonical::{DecodeError, Reader, Writer};
use crate::certificate::NodeCertificate;
use crate::ids::{CommuneId, DocId};
use crate::keys::{self, SIGNATURE_LEN, SecretKey};

const TAG: &str = "passerelle/doc-header";
const SIGNED_TAG: &str = "passerelle/signed-header";
const VERSION: u8 = 1;

/// The content schema version this release writes.
pub const CONTENT_SCHEMA: u32 = 1;

/// At most this many writers per document.
pub const MAX_WRITERS: usize = 64;
const MAX_NAME_BYTES: usize = 32;

/// What a document is. Kinds this release does not know are kept as
/// [`DocKind::Unknown`] and passed on, never dropped.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum DocKind {
    /// A commune's profile.
    Profile,
    /// A project (demonstrative action, co-responsibility action, ...).
    Project,
    /// A need a commune asks help for.
    Request,
    /// A capability offered, possibly answering a request.
    Offer,
    /// A practice or method sheet.
    Practice,
    /// A follow-up note on another document: a coordinator's tags and next
    /// steps, or an observer's comment. Never a change to that document.
    Followup,
    /// A kind from a newer release.
    Unknown(String),
}

impl DocKind {
    /// The kinds this release can create and validate.
    pub const KNOWN: [DocKind; 6] =
        [DocKind::Profile, DocKind::Project, DocKind::Request, DocKind::Offer, DocKind::Practice, DocKind::Followup];

    /// The kind's code on the wire and in the API.
    pub fn as_str(&self) -> &str {
        match self {
            DocKind::Profile => "profile",
            DocKind::Project => "project",
            DocKind::Request => "request",
            DocKind::Offer => "offer",
            DocKind::Practice => "practice",
            DocKind::Followup => "followup",
            DocKind::Unknown(s) => s,
        }
    }

    fn parse_any(s: &str) -> Self {
        match s {
            "profile" => DocKind::Profile,
            "project" => DocKind::Project,
            "request" => DocKind::Request,
            "offer" => DocKind::Offer,
            "practice" => DocKind::Practice,
            "followup" => DocKind::Followup,
            other => DocKind::Unknown(other.to_owned()),
        }
    }
}

impl fmt::Display for DocKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a kind or scope given by a user is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {input:?}; expected one of: {expected}")]
pub struct UnknownName {
    what: &'static str,
    input: String,
    expected: &'static str,
}

impl FromStr for DocKind {
    type Err = UnknownName;

    /// Parses a kind a user asked for: only known kinds.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match Self::parse_any(s) {
            DocKind::Unknown(_) => Err(UnknownName {
                what: "document kind",
                input: s.to_owned(),
                expected: "profile, project, request, offer, practice, followup",
            }),
            k => Ok(k),
        }
    }
}

/// How far a document travels.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Scope {
    /// To every member of the network, relayed from node to node.
    Network,
    /// Only to the owner's partners.
    Partnership,
    /// A scope from a newer release; such documents are kept but not sent.
    Unknown(String),
}

impl Scope {
    /// The scope's code.
    pub fn as_str(&self) -> &str {
        match self {
            Scope::Network => "network",
            Scope::Partnership => "partnership",
            Scope::Unknown(s) => s,
        }
    }

    fn parse_any(s: &str) -> Self {
        match s {
            "network" => Scope::Network,
            "partnership" => Scope::Partnership,
            other => Scope::Unknown(other.to_owned()),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match Self::parse_any(s) {
            Scope::Unknown(_) => {
                Err(UnknownName { what: "scope", input: s.to_owned(), expected: "network, partnership" })
            }
            k => Ok(k),
        }
    }
}

/// The immutable facts about a document; hashed into its id.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DocHeader {
    /// What the document is.
    pub kind: DocKind,
    /// Version of the content schema the document was created with.
    pub schema: u32,
    /// The commune that owns it.
    pub owner: CommuneId,
    /// Communes whose certified nodes may change it; always holds the owner.
    pub writers: Vec<CommuneId>,
    /// How far it travels.
    pub scope: Scope,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Random bytes so two documents created alike get distinct ids.
    pub nonce: [u8; 16],
}

impl DocHeader {
    /// A header written by this release: current content schema, the owner
    /// as its only writer.
    pub fn new(kind: DocKind, owner: CommuneId, scope: Scope, created_ms: u64, nonce: [u8; 16]) -> Self {
        Self { kind, schema: CONTENT_SCHEMA, owner, writers: vec![owner], scope, created_ms, nonce }
    }

    /// The canonical bytes the id and signature are computed over.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG, VERSION);
        w.str(self.kind.as_str()).u32(self.schema).fixed(self.owner.as_bytes());
        // Writer count fits: MAX_WRITERS is enforced at creation and decoding.
        w.u32(self.writers.len() as u32);
        for writer in &self.writers {
            w.fixed(writer.as_bytes());
        }
        w.str(self.scope.as_str()).u64(self.created_ms).fixed(&self.nonce);
        w.finish()
    }

    /// The document id: SHA-256 of the canonical bytes.
    pub fn id(&self) -> DocId {
        DocId::from_bytes(Sha256::digest(self.canonical_bytes()).into())
    }

    /// Whether `commune` may change the document.
    pub fn is_writer(&self, commune: &CommuneId) -> bool {
        self.writers.contains(commune)
    }

    /// Decodes canonical bytes (a frame carries a header this way, its
    /// certificate named apart).
    ///
    /// # Errors
    /// [`DecodeError`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (mut r, _) = Reader::open(bytes, TAG, "document header", VERSION)?;
        let kind = DocKind::parse_any(r.str("kind", MAX_NAME_BYTES)?);
        let schema = r.u32("schema")?;
        let owner = CommuneId::from_bytes(r.fixed("owner")?);
        let count = r.u32("writer count")? as usize;
        if count > MAX_WRITERS {
            return Err(DecodeError::TooLarge { field: "writers", len: count, max: MAX_WRITERS });
        }
        let mut writers = Vec::with_capacity(count);
        for _ in 0..count {
            let writer = CommuneId::from_bytes(r.fixed("writer")?);
            // A writer named twice would count twice in the audience's fingerprints.
            if writers.contains(&writer) {
                return Err(DecodeError::Invalid { field: "writers", reason: "a writer is named twice".into() });
            }
            writers.push(writer);
        }
        let scope = Scope::parse_any(r.str("scope", MAX_NAME_BYTES)?);
        let created_ms = r.u64("created")?;
        let nonce = r.fixed("nonce")?;
        r.end()?;
        if !writers.contains(&owner) {
            return Err(DecodeError::Invalid { field: "writers", reason: "the owner is not a writer".into() });
        }
        Ok(Self { kind, schema, owner, writers, scope, created_ms, nonce })
    }
}

/// Why a signed header is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The bytes do not decode.
    #[error("malformed header: {0}")]
    Malformed(#[from] DecodeError),
    /// The certificate inside is not signed by the commune it names.
    #[error("the certificate of node {node} is not signed by commune {commune}")]
    BadCertificate {
        /// The node the certificate names.
        node: String,
        /// The commune it names.
        commune: String,
    },
    /// The header was signed by a node of another commune than the owner.
    #[error("the header is signed by a node of commune {signer}, not of its owner {owner}")]
    NotOwner {
        /// The certificate's commune.
        signer: String,
        /// The header's owner.
        owner: String,
    },
    /// The signature does not match.
    #[error("the header signature does not match")]
    BadSignature,
    /// The id does not match the header.
    #[error("document id {claimed} does not match its header (which hashes to {actual})")]
    IdMismatch {
        /// The id the header was filed under.
        claimed: String,
        /// What it hashes to.
        actual: String,
    },
}

/// A header with the certificate of the node that signed it and the signature.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SignedHeader {
    /// The header.
    pub header: DocHeader,
    /// The owner's certificate of the signing node.
    pub certificate: NodeCertificate,
    /// The node's signature over the header's canonical bytes.
    pub signature: [u8; SIGNATURE_LEN],
}

impl SignedHeader {
    /// Signs `header` with a node key certified by the owner.
    ///
    /// # Panics
    /// If the certificate is not the one of `node_key` for the owner: a
    /// programming error in the caller.
    pub fn sign(header: DocHeader, node_key: &SecretKey, certificate: NodeCertificate) -> Self {
        assert_eq!(certificate.node, node_key.node_id(), "certificate of another node");
        assert_eq!(certificate.commune, header.owner, "certificate of another commune");
        let signature = node_key.sign(&header.canonical_bytes());
        Self { header, certificate, signature }
    }

    /// The document id.
    pub fn id(&self) -> DocId {
        self.header.id()
    }

    /// Checks the certificate, that it is the owner's, and the signature.
    ///
    /// # Errors
    /// [`HeaderError`] naming what failed.
    pub fn verify(&self) -> Result<(), HeaderError> {
        self.verify_with(&crate::book::CertificateBook::new())
    }

    /// As [`SignedHeader::verify`], skipping the certificate's own signature
    /// when `book` already holds this exact (verified) certificate: headers
    /// of one author all carry the same certificate.
    ///
    /// # Errors
    /// [`HeaderError`] naming what failed.
    pub fn verify_with(&self, book: &crate::book::CertificateBook) -> Result<(), HeaderError> {
        let cert = &self.certificate;
        if book.get(&cert.node) != Some(cert) {
            cert.verify()
                .map_err(|_| HeaderError::BadCertificate { node: cert.node.short(), commune: cert.commune.short() })?;
        }
        if cert.commune != self.header.owner {
            return Err(HeaderError::NotOwner { signer: cert.commune.short(), owner: self.header.owner.short() });
        }
        keys::verify(cert.node.as_bytes(), &self.header.canonical_bytes(), &self.signature)
            .map_err(|_| HeaderError::BadSignature)
    }

    /// Verifies the header and that it is the one `id` names.
    ///
    /// # Errors
    /// [`HeaderError`].
    pub fn verify_for(&self, id: &DocId) -> Result<(), HeaderError> {
        let actual = self.id();
        if &actual != id {
            return Err(HeaderError::IdMismatch { claimed: id.to_string(), actual: actual.to_string() });
        }
        self.verify()
    }

    /// Encodes the signed header.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(SIGNED_TAG, VERSION);
        w.bytes(&self.header.canonical_bytes()).bytes(&self.certificate.encode()).fixed(&self.signature);
        w.finish()
    }

    /// Decodes a signed header; does not verify it.
    ///
    /// # Errors
    /// [`HeaderError::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderError> {
        let (mut r, _) = Reader::open(bytes, SIGNED_TAG, "signed header", VERSION)?;
        let header = DocHeader::decode(r.bytes("header", 4096)?)?;
        let certificate = NodeCertificate::decode(r.bytes("certificate", 512)?)?;
        let signature = r.fixed("signature")?;
        r.end()?;
        Ok(Self { header, certificate, signature })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_named_twice_is_refused() {
        let (signed, node) = sample();
        let mut header = signed.header.clone();
        let partner = SecretKey::from_seed([3; 32]).commune_id();
        header.writers.extend([partner, partner]);
        let twice = SignedHeader::sign(header, &node, signed.certificate.clone());
        let err = SignedHeader::decode(&twice.encode()).unwrap_err();
        assert!(err.to_string().contains("named twice"), "{err}");
    }

    fn sample() -> (SignedHeader, SecretKey) {
        let commune = SecretKey::from_seed([1; 32]);
        let node = SecretKey::from_seed([2; 32]);
        let cert = NodeCertificate::issue(&commune, node.node_id(), 10);
        let header =
            DocHeader::new(DocKind::Request, commune.commune_id(), Scope::Partnership, 1_700_000_000_000, [9; 16]);
        (SignedHeader::sign(header, &node, cert), node)
    }

    #[test]
    fn signed_header_round_trips_and_verifies() {
        let (signed, _) = sample();
        let back = SignedHeader::decode(&signed.encode()).unwrap();
        assert_eq!(back, signed);
        back.verify_for(&signed.id()).unwrap();
    }

    #[test]
    fn any_tampered_byte_is_detected() {
        let (signed, _) = sample();
        let id = signed.id();
        let bytes = signed.encode();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let ok = SignedHeader::decode(&bad).map(|h| h.verify_for(&id).is_ok()).unwrap_or(false);
            assert!(!ok, "flipping byte {i} went unnoticed");
        }
    }

    #[test]
    fn unknown_kinds_survive_a_round_trip() {
        let (mut signed, node) = sample();
        signed.header.kind = DocKind::Unknown("event".into());
        let signed = SignedHeader::sign(signed.header, &node, signed.certificate);
        let back = SignedHeader::decode(&signed.encode()).unwrap();
        assert_eq!(back.header.kind, DocKind::Unknown("event".into()));
        assert!("event".parse::<DocKind>().is_err());
    }
}
