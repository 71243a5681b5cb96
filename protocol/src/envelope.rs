//! Signed change envelopes: how every Automerge change travels and is stored.
//!
//! Automerge changes are not signed, so each one is wrapped with the id of its
//! document, the node key of its author and that key's signature over the
//! canonical bytes. A receiver checks the envelope ([`ChangeEnvelope::validate`])
//! before anything reaches Automerge; a failure names its reason
//! ([`ValidationFailure`]) so it can be logged and counted.
//!
//! A change may also travel *covered*, without a signature of its own: a
//! later change of the same author in the same document, sent in the same
//! batch, is signed, and its bytes name its parents' hashes, so that one
//! signature covers every ancestor's exact bytes ([`runs`]).

use automerge::Change;

use crate::book::CertificateBook;
use crate::canonical::{DecodeError, Reader, Writer};
use crate::header::DocHeader;
use crate::ids::{CommuneId, DocId, NodeId};
use crate::keys::{self, SIGNATURE_LEN, SecretKey};

mod runs;
pub use runs::{
    ChangeLinks, MAX_RUN_WORK, causal_order, change_links, cover_runs, covered, covered_cut, covered_within, uncovered,
};

const TAG: &str = "passerelle/change";
/// The version in the bytes a signature covers (it never changes: a
/// change signed once stays verifiable).
const SIGNED_VERSION: u8 = 1;
/// The encoding's version: 2 says whether a signature follows (1 always
/// had one; still read, from stores written before).
const VERSION: u8 = 2;
/// The largest Automerge change accepted in one envelope.
pub const MAX_CHANGE_BYTES: usize = 256 * 1024;
/// How far in the future a change's timestamp may be (clock skew allowance).
pub const MAX_CLOCK_SKEW_MS: i64 = 10 * 60 * 1000;

/// Why a change is refused. Each variant is a reason logged and counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationFailure {
    /// The envelope bytes do not decode.
    #[error("malformed envelope: {0}")]
    Malformed(#[from] DecodeError),
    /// The signature does not match the author's key.
    #[error("bad signature by node {0}")]
    BadSignature(String),
    /// No known commune certifies the author's key.
    #[error("unknown author: node {0} is not certified by any known commune")]
    UnknownAuthor(String),
    /// The author's commune may not write this document.
    #[error("commune {commune} is not a writer of document {doc}")]
    NotAWriter {
        /// The author's commune.
        commune: String,
        /// The document.
        doc: String,
    },
    /// The envelope is filed under another document.
    #[error("envelope for document {found} offered for document {expected}")]
    WrongDocument {
        /// The document the caller expected.
        expected: String,
        /// The document the envelope names.
        found: String,
    },
    /// The Automerge change bytes do not decode.
    #[error("undecodable change: {0}")]
    BadChange(String),
    /// The change's actor is not its signer: a signer may only wrap its own changes.
    #[error("the change's actor is not its signing node {0}")]
    ActorMismatch(String),
    /// The author's commune is not (or no longer) a member of the network.
    #[error("commune {0} is not a member of the network")]
    NotAMember(String),
    /// The author's key is not registered to the commune that certifies it
    /// (its admission, or a `Node` statement of the commune).
    #[error("node key {0} is not registered to the commune that certifies it")]
    NotRegistered(String),
    /// The author's node key was revoked and the change is not among those
    /// the revocation keeps.
    #[error("node key {0} is revoked and this change is not among those it signed before")]
    Revoked(String),
    /// A writer other than the owner set or removed a field only the owner
    /// decides (a request's `consent_relay`: consent is the requester's).
    #[error("only the owner of document {doc} may change {field}")]
    OwnerOnly {
        /// The field.
        field: &'static str,
        /// The document.
        doc: String,
    },
    /// The change claims a time too far in the future.
    #[error("change time {time_ms} is more than {skew_s} s ahead of now ({now_ms})", skew_s = MAX_CLOCK_SKEW_MS / 1000)]
    FromTheFuture {
        /// The change's timestamp.
        time_ms: i64,
        /// Our clock.
        now_ms: i64,
    },
    /// A change sent without its own signature that no later signed change
    /// of its author in the same batch covers.
    #[error("a change of node {0} came without a signature and nothing signed in its batch covers it")]
    Uncovered(String),
}

impl ValidationFailure {
    /// A short, stable code for metrics and reports.
    pub fn code(&self) -> &'static str {
        match self {
            ValidationFailure::Malformed(_) => "malformed",
            ValidationFailure::BadSignature(_) => "bad_signature",
            ValidationFailure::UnknownAuthor(_) => "unknown_author",
            ValidationFailure::NotAWriter { .. } => "not_a_writer",
            ValidationFailure::WrongDocument { .. } => "wrong_document",
            ValidationFailure::BadChange(_) => "bad_change",
            ValidationFailure::ActorMismatch(_) => "actor_mismatch",
            ValidationFailure::FromTheFuture { .. } => "from_the_future",
            ValidationFailure::NotAMember(_) => "not_a_member",
            ValidationFailure::NotRegistered(_) => "not_registered",
            ValidationFailure::Revoked(_) => "revoked",
            ValidationFailure::OwnerOnly { .. } => "owner_only",
            ValidationFailure::Uncovered(_) => "uncovered",
        }
    }
}

/// A signed Automerge change.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChangeEnvelope {
    /// The document the change belongs to.
    pub doc: DocId,
    /// The node key that signed it (and whose actor made it).
    pub author: NodeId,
    /// The Automerge change, as `Change::raw_bytes`.
    pub change: Vec<u8>,
    /// The author's signature over the canonical bytes; `None` when the
    /// change travels covered by a later signed change of its author (see
    /// the module's documentation).
    pub signature: Option<[u8; SIGNATURE_LEN]>,
}

/// A change whose envelope passed every check, ready to apply.
#[derive(Debug, Clone)]
pub struct VerifiedChange {
    /// The envelope, kept to store and pass on.
    pub envelope: ChangeEnvelope,
    /// The decoded change.
    pub change: Change,
    /// The commune the author speaks for.
    pub commune: CommuneId,
}

impl ChangeEnvelope {
    /// Signs an Automerge change of `doc` with the node key.
    pub fn sign(doc: DocId, change: &Change, key: &SecretKey) -> Self {
        let author = key.node_id();
        let change = change.raw_bytes().to_vec();
        let signature = Some(key.sign(&signed_bytes(&doc, &author, &change)));
        Self { doc, author, change, signature }
    }

    /// The canonical bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        signed_bytes(&self.doc, &self.author, &self.change)
    }

    /// Encodes the envelope: document, author, change, then whether a
    /// signature follows and the signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG, VERSION);
        w.fixed(self.doc.as_bytes()).fixed(self.author.as_bytes()).bytes(&self.change);
        match &self.signature {
            Some(sig) => w.u8(1).fixed(sig),
            None => w.u8(0),
        };
        w.finish()
    }

    /// Decodes an envelope, refusing oversized changes before allocating.
    /// Does not verify it.
    ///
    /// # Errors
    /// [`DecodeError`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (mut r, version) = Reader::open(bytes, TAG, "change envelope", VERSION)?;
        let doc = DocId::from_bytes(r.fixed("document")?);
        let author = NodeId::from_bytes(r.fixed("author")?);
        let change = r.bytes("change", MAX_CHANGE_BYTES)?.to_vec();
        let signed = version < 2 || r.u8("seal")? == 1;
        let signature = if signed { Some(r.fixed("signature")?) } else { None };
        r.end()?;
        Ok(Self { doc, author, change, signature })
    }

    /// Checks the signature alone (a covered envelope, judged alone, is
    /// not covered).
    ///
    /// # Errors
    /// [`ValidationFailure::BadSignature`], [`ValidationFailure::Uncovered`].
    pub fn check_signature(&self) -> Result<(), ValidationFailure> {
        let Some(signature) = &self.signature else {
            return Err(ValidationFailure::Uncovered(self.author.short()));
        };
        keys::verify(self.author.as_bytes(), &self.signed_bytes(), signature)
            .map_err(|_| ValidationFailure::BadSignature(self.author.short()))
    }

    /// Every check but the signature: document, certified author, writer,
    /// decodable change made by the signer, plausible time. Callers verify
    /// signatures first, in batches ([`verify_signatures`]).
    ///
    /// # Errors
    /// The first [`ValidationFailure`] found.
    pub fn validate_signed(
        self,
        id: &DocId,
        header: &DocHeader,
        book: &CertificateBook,
        now_ms: i64,
    ) -> Result<VerifiedChange, ValidationFailure> {
        if &self.doc != id {
            return Err(ValidationFailure::WrongDocument { expected: id.short(), found: self.doc.short() });
        }
        let commune =
            book.commune_of(&self.author).ok_or_else(|| ValidationFailure::UnknownAuthor(self.author.short()))?;
        if !header.is_writer(&commune) {
            return Err(ValidationFailure::NotAWriter { commune: commune.short(), doc: id.short() });
        }
        let change =
            Change::from_bytes(self.change.clone()).map_err(|e| ValidationFailure::BadChange(e.to_string()))?;
        // A covered change was judged by the links read from its bytes:
        // Automerge must read the same change.
        if self.signature.is_none() && change_links(&self.change).map(|l| l.hash) != Some(change.hash().0) {
            return Err(ValidationFailure::BadChange(
                "the change's hash is not the one its run was checked with".into(),
            ));
        }
        if change.actor_id().to_bytes() != self.author.as_bytes() {
            return Err(ValidationFailure::ActorMismatch(self.author.short()));
        }
        if change.timestamp() > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(ValidationFailure::FromTheFuture { time_ms: change.timestamp(), now_ms });
        }
        if commune != header.owner
            && let Some(field) = touched_owner_field(&change, crate::schema::owner_only_fields(&header.kind))
        {
            return Err(ValidationFailure::OwnerOnly { field, doc: id.short() });
        }
        Ok(VerifiedChange { envelope: self, change, commune })
    }

    /// The network's say on a verified change: its author's commune must be
    /// a member, and a revoked key only passes with changes its revocation
    /// keeps.
    ///
    /// # Errors
    /// [`ValidationFailure::NotAMember`], [`ValidationFailure::NotRegistered`],
    /// [`ValidationFailure::Revoked`].
    pub fn check_membership(
        verified: &VerifiedChange,
        roster: &crate::network::Roster,
    ) -> Result<(), ValidationFailure> {
        if !roster.is_member(&verified.commune) {
            return Err(ValidationFailure::NotAMember(verified.commune.short()));
        }
        let author = &verified.envelope.author;
        if roster.commune_of_node(author) != Some(verified.commune) {
            return Err(ValidationFailure::NotRegistered(author.short()));
        }
        if !roster.change_allowed(author, &verified.commune, &verified.change.hash().0) {
            return Err(ValidationFailure::Revoked(author.short()));
        }
        Ok(())
    }

    /// Every check, signature included.
    ///
    /// # Errors
    /// The first [`ValidationFailure`] found.
    pub fn validate(
        self,
        id: &DocId,
        header: &DocHeader,
        book: &CertificateBook,
        now_ms: i64,
    ) -> Result<VerifiedChange, ValidationFailure> {
        self.check_signature()?;
        self.validate_signed(id, header, book, now_ms)
    }
}

/// The first of `fields` (root fields of the document) that `change` sets
/// or deletes.
fn touched_owner_field(change: &Change, fields: &'static [&'static str]) -> Option<&'static str> {
    use automerge::legacy::{Key, ObjectId};
    if fields.is_empty() {
        return None;
    }
    change.decode().operations.iter().find_map(|op| match (&op.obj, &op.key) {
        (ObjectId::Root, Key::Map(k)) => fields.iter().find(|f| **f == k.as_str()).copied(),
        _ => None,
    })
}

fn signed_bytes(doc: &DocId, author: &NodeId, change: &[u8]) -> Vec<u8> {
    let mut w = Writer::new(TAG, SIGNED_VERSION);
    w.fixed(doc.as_bytes()).fixed(author.as_bytes()).bytes(change);
    w.finish()
}

/// Checks the signatures of many envelopes, in batches of 64 (about 1.7×
/// the single-signature rate); a failed batch is re-checked one by one so
/// each result names exactly the envelopes that fail. A covered envelope
/// passes only when a signed envelope of the same author and document in
/// `envelopes`, whose signature holds, descends from it ([`runs`]).
pub fn verify_signatures(envelopes: &[ChangeEnvelope]) -> Vec<Result<(), ValidationFailure>> {
    const BATCH: usize = 64;
    let signed: Vec<usize> = (0..envelopes.len()).filter(|&i| envelopes[i].signature.is_some()).collect();
    let mut out: Vec<Result<(), ValidationFailure>> = vec![Ok(()); envelopes.len()];
    for chunk in signed.chunks(BATCH) {
        let msgs: Vec<Vec<u8>> = chunk.iter().map(|&i| envelopes[i].signed_bytes()).collect();
        let items: Vec<_> = chunk
            .iter()
            .zip(&msgs)
            .filter_map(|(&i, m)| {
                Some((envelopes[i].author.as_bytes(), m.as_slice(), envelopes[i].signature.as_ref()?))
            })
            .collect();
        if keys::verify_batch(&items).is_err() {
            for &i in chunk {
                out[i] = envelopes[i].check_signature();
            }
        }
    }
    if signed.len() < envelopes.len() {
        let holds: Vec<bool> = envelopes.iter().zip(&out).map(|(e, r)| e.signature.is_some() && r.is_ok()).collect();
        let covered = runs::covered(envelopes, &holds);
        for (i, e) in envelopes.iter().enumerate() {
            if e.signature.is_none() && covered.binary_search(&i).is_err() {
                out[i] = Err(ValidationFailure::Uncovered(e.author.short()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificate::NodeCertificate;
    use crate::header::{DocKind, Scope};
    use automerge::transaction::{CommitOptions, Transactable};
    use automerge::{ActorId, Automerge, ROOT};
    use proptest::prelude::*;

    struct Fixture {
        node: SecretKey,
        header: DocHeader,
        book: CertificateBook,
        change: Change,
    }

    fn fixture() -> Fixture {
        let commune = SecretKey::from_seed([1; 32]);
        let node = SecretKey::from_seed([2; 32]);
        let mut book = CertificateBook::new();
        book.insert(NodeCertificate::issue(&commune, node.node_id(), 0)).unwrap();
        let header = DocHeader::new(DocKind::Request, commune.commune_id(), Scope::Network, 0, [0; 16]);
        let mut doc = Automerge::new().with_actor(ActorId::from(node.public().as_slice()));
        let mut tx = doc.transaction();
        tx.put(ROOT, "status", "open").unwrap();
        tx.commit_with(CommitOptions::default().with_time(1_000));
        let change = doc.get_last_local_change().unwrap();
        Fixture { node, header, book, change }
    }

    #[test]
    fn a_signed_change_validates() {
        let f = fixture();
        let id = f.header.id();
        let env = ChangeEnvelope::sign(id, &f.change, &f.node);
        let back = ChangeEnvelope::decode(&env.encode()).unwrap();
        assert_eq!(back, env);
        let verified = back.validate(&id, &f.header, &f.book, 2_000).unwrap();
        assert_eq!(verified.change.hash(), f.change.hash());
    }

    #[test]
    fn each_failure_has_its_reason() {
        let f = fixture();
        let id = f.header.id();
        let env = ChangeEnvelope::sign(id, &f.change, &f.node);

        let mut forged = env.clone();
        forged.signature.as_mut().unwrap()[5] ^= 1;
        assert_eq!(forged.validate(&id, &f.header, &f.book, 2_000).unwrap_err().code(), "bad_signature");

        let stranger = SecretKey::from_seed([3; 32]);
        let env2 = ChangeEnvelope::sign(id, &f.change, &stranger);
        assert_eq!(env2.validate(&id, &f.header, &f.book, 2_000).unwrap_err().code(), "unknown_author");

        // Certified, but its commune is not a writer.
        let other_commune = SecretKey::from_seed([4; 32]);
        let mut book = f.book.clone();
        book.insert(NodeCertificate::issue(&other_commune, stranger.node_id(), 0)).unwrap();
        let env3 = ChangeEnvelope::sign(id, &f.change, &stranger);
        assert_eq!(env3.clone().validate(&id, &f.header, &book, 2_000).unwrap_err().code(), "not_a_writer");

        // A writer wrapping someone else's change.
        let mut header = f.header.clone();
        header.writers.push(other_commune.commune_id());
        let id2 = header.id();
        let env4 = ChangeEnvelope::sign(id2, &f.change, &stranger);
        assert_eq!(env4.validate(&id2, &header, &book, 2_000).unwrap_err().code(), "actor_mismatch");

        let other_doc = DocId::from_bytes([5; 32]);
        assert_eq!(env.clone().validate(&other_doc, &f.header, &f.book, 2_000).unwrap_err().code(), "wrong_document");

        let now = 1_000 - MAX_CLOCK_SKEW_MS - 1;
        assert_eq!(env.validate(&id, &f.header, &f.book, now).unwrap_err().code(), "from_the_future");
    }

    /// The addressee of a request writes it (to record relays) but cannot
    /// give or withdraw the requester's consent to relay; the owner can.
    #[test]
    fn consent_to_relay_is_the_requesters() {
        let f = fixture();
        let partner = SecretKey::from_seed([6; 32]);
        let partner_node = SecretKey::from_seed([7; 32]);
        let mut book = f.book.clone();
        book.insert(NodeCertificate::issue(&partner, partner_node.node_id(), 0)).unwrap();
        let mut header = f.header.clone();
        header.writers.push(partner.commune_id());
        let id = header.id();
        let edit = |key: &SecretKey, field: &str| {
            let mut doc = Automerge::new().with_actor(ActorId::from(key.public().as_slice()));
            let mut tx = doc.transaction();
            tx.put(ROOT, field, true).unwrap();
            tx.commit_with(CommitOptions::default().with_time(1_000));
            ChangeEnvelope::sign(id, &doc.get_last_local_change().unwrap(), key)
        };
        let forged = edit(&partner_node, "consent_relay").validate(&id, &header, &book, 2_000).unwrap_err();
        assert_eq!(forged.code(), "owner_only");
        assert!(edit(&partner_node, "relays").validate(&id, &header, &book, 2_000).is_ok(), "other fields are open");
        assert!(edit(&f.node, "consent_relay").validate(&id, &header, &book, 2_000).is_ok(), "the owner decides");
    }

    #[test]
    fn oversized_changes_are_refused_before_allocation() {
        let mut w = Writer::new(TAG, VERSION);
        w.fixed(&[0; 32]).fixed(&[0; 32]).u32((MAX_CHANGE_BYTES + 1) as u32);
        let err = ChangeEnvelope::decode(&w.finish()).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { field: "change", .. }));
    }

    #[test]
    fn batch_verification_names_the_bad_envelope() {
        let f = fixture();
        let id = f.header.id();
        let mut envs: Vec<_> = (0..70).map(|_| ChangeEnvelope::sign(id, &f.change, &f.node)).collect();
        envs[66].signature.as_mut().unwrap()[0] ^= 1;
        let results = verify_signatures(&envs);
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
        assert!(results[66].is_err());
    }

    proptest! {
        #[test]
        fn envelope_round_trips(doc in any::<[u8; 32]>(), author in any::<[u8; 32]>(),
                                change in proptest::collection::vec(any::<u8>(), 0..512),
                                sig in proptest::collection::vec(any::<u8>(), 64), covered in any::<bool>()) {
            let env = ChangeEnvelope {
                doc: DocId::from_bytes(doc),
                author: NodeId::from_bytes(author),
                change,
                signature: (!covered).then(|| sig.try_into().unwrap()),
            };
            prop_assert_eq!(ChangeEnvelope::decode(&env.encode()).unwrap(), env);
        }

        #[test]
        fn any_tampered_byte_is_detected(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let f = fixture();
            let id = f.header.id();
            let mut bytes = ChangeEnvelope::sign(id, &f.change, &f.node).encode();
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let accepted = ChangeEnvelope::decode(&bytes)
                .map(|e| e.validate(&id, &f.header, &f.book, 2_000).is_ok())
                .unwrap_or(false);
            prop_assert!(!accepted, "flipped bit {} of byte {} went unnoticed", bit, i);
        }
    }
}
