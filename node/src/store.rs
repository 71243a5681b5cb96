//! Durable storage of documents, behind a small trait so the engine does
//! not depend on sled (and a node could move to another engine).
//!
//! What is stored, per document: its signed header, a metadata record for
//! listing without loading Automerge, every signed change envelope in arrival
//! order (with when and from whom it arrived: the audit trail), and from time
//! to time an Automerge snapshot so a long history loads fast. Certificates
//! of known node keys are stored too.
//!
//! [`Store::write`] applies a group of operations atomically but does not
//! make them durable; [`Store::flush`] does. The engine flushes once per
//! batch of commands and acknowledges writes only after the flush.

use passerelle_protocol::canonical::{DecodeError, Reader, Writer};
use passerelle_protocol::certificate::NodeCertificate;
use passerelle_protocol::envelope::ChangeEnvelope;
use passerelle_protocol::header::SignedHeader;
use passerelle_protocol::ids::{CommuneId, DocId, NodeId};
use passerelle_protocol::network::SignedStatement;
use serde::{Deserialize, Serialize};

mod repair;
mod sled_store;

pub use repair::{DamagedRecord, RepairReport};

pub use passerelle_protocol::heartbeat::StoredHeartbeat;
pub use passerelle_protocol::replica::{PeerRecord, QueuedDoc};

pub use sled_store::keys as sled_keys;

pub use sled_store::SledStore;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("store failure: {0}")]
    Backend(String),
    /// The store is already used by another running node.
    #[error("the store at {0} is in use by another process (is a node already running on this home?)")]
    Locked(String),
    /// A stored record does not decode.
    #[error("damaged record {key} in the store: {reason}")]
    Corrupt {
        /// Which record.
        key: String,
        /// Why.
        reason: String,
    },
}

/// A change as stored: the signed envelope and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChange {
    /// The signed envelope, exactly as received or made.
    pub envelope: ChangeEnvelope,
    /// When this node stored it, milliseconds since the Unix epoch.
    pub received_ms: i64,
    /// The peer it came from (its node id), or `None` if written here.
    pub from: Option<String>,
}

const STORED_CHANGE_TAG: &str = "passerelle/stored-change";

impl StoredChange {
    /// Encodes for storage.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(STORED_CHANGE_TAG, 1);
        w.u64(self.received_ms as u64).str(self.from.as_deref().unwrap_or("")).bytes(&self.envelope.encode());
        w.finish()
    }

    /// Decodes a stored change.
    ///
    /// # Errors
    /// [`DecodeError`] when the record is damaged.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (mut r, _) = Reader::open(bytes, STORED_CHANGE_TAG, "stored change", 1)?;
        let received_ms = r.u64("received")? as i64;
        let from = r.str("from", 128)?;
        let from = (!from.is_empty()).then(|| from.to_owned());
        let envelope = ChangeEnvelope::decode(r.bytes("envelope", usize::MAX)?)?;
        r.end()?;
        Ok(Self { envelope, received_ms, from })
    }
}

/// What lists and counts need to know about a document without loading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocMeta {
    /// The document.
    pub id: DocId,
    /// Its kind code.
    pub kind: String,
    /// Its owner (commune id, hex).
    pub owner: String,
    /// Its scope code.
    pub scope: String,
    /// Creation time (ms).
    pub created_ms: i64,
    /// Time of the latest change (ms).
    pub updated_ms: i64,
    /// Number of stored changes.
    pub changes: u64,
    /// Current Automerge heads (hex).
    pub heads: Vec<String>,
    /// Current status, if the kind has one.
    pub status: Option<String>,
    /// Title in its original language.
    pub title: Option<String>,
    /// How many changes the latest snapshot covers (0: none).
    pub snapshot_changes: u64,
    /// When this node last stored a change of it (ms, its own clock): what
    /// delivery receipts compare with a peer's last in-sync round.
    #[serde(default)]
    pub stored_ms: i64,
}

impl DocMeta {
    /// Its heads as bytes (hex that does not decode is left out).
    pub fn head_bytes(&self) -> Vec<[u8; 32]> {
        self.heads
            .iter()
            .filter_map(|h| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(h, &mut out).ok().map(|()| out)
            })
            .collect()
    }

    /// The metadata of a document with no change stored yet.
    pub fn new(id: DocId, header: &passerelle_protocol::header::DocHeader) -> Self {
        Self {
            id,
            kind: header.kind.to_string(),
            owner: header.owner.to_string(),
            scope: header.scope.to_string(),
            created_ms: header.created_ms as i64,
            updated_ms: header.created_ms as i64,
            changes: 0,
            heads: Vec::new(),
            status: None,
            title: None,
            snapshot_changes: 0,
            stored_ms: 0,
        }
    }
}

/// A saved Automerge document covering the first `changes` stored changes.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Number of stored changes it covers.
    pub changes: u64,
    /// `Automerge::save` bytes.
    pub bytes: Vec<u8>,
}

/// One operation of an atomic write.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Stores a document's header (once, at creation or first receipt).
    Header(SignedHeader),
    /// Replaces a document's metadata.
    Meta(DocMeta),
    /// Appends a change at position `seq` of the document's log.
    Change {
        /// The document.
        doc: DocId,
        /// Position in the document's log, from 0.
        seq: u64,
        /// The change.
        change: StoredChange,
        /// The Automerge change hash, indexed for duplicate detection.
        hash: [u8; 32],
    },
    /// Replaces a document's snapshot.
    Snapshot(DocId, Snapshot),
    /// Stores a verified node certificate.
    Certificate(NodeCertificate),
    /// Adds or replaces a peer's record.
    Peer(PeerRecord),
    /// Forgets a peer.
    RemovePeer(NodeId),
    /// Stores a verified membership statement.
    Statement(SignedStatement),
    /// Records an invitation this node issued (or its redemption).
    Invitation(InvitationRecord),
    /// Queues a document (or the part of it a peer lacks) for a peer.
    Enqueue(NodeId, QueuedDoc),
    /// Takes a document off a peer's queue: the peer acknowledged it.
    Dequeue(NodeId, QueuedDoc),
    /// Keeps a node's latest heartbeat (replacing the one before).
    Heartbeat(StoredHeartbeat),
    /// Forgets a roster statement (by hash) that no longer counts.
    ForgetStatement([u8; 32]),
    /// Forgets a node's heartbeat (and pulse chain).
    ForgetHeartbeat(NodeId),
    /// Keeps a node's pulse chain (replacing the one before).
    PulseChain(passerelle_protocol::heartbeat::PulseChain),
}

/// An invitation this node issued, and whether it was redeemed: what makes
/// invitations single-use. Persisted before the admission is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationRecord {
    /// The invitation id (hex).
    pub id: String,
    /// The invited commune's name.
    pub name: String,
    /// Its country.
    pub country: String,
    /// The role offered.
    pub role: String,
    /// Expiry (ms).
    pub expires_ms: u64,
    /// When it was issued (ms).
    pub issued_ms: u64,
    /// The commune that redeemed it, if any.
    pub used_by: Option<CommuneId>,
    /// When (ms).
    pub used_ms: Option<u64>,
}

/// A stored change, or why it could not be decoded.
pub type ChangeRecord = (u64, Result<StoredChange, DecodeError>);

/// Durable storage of documents and certificates. Used from one thread
/// (the engine's), so methods block.
pub trait Store: Send + 'static {
    /// A document's header.
    ///
    /// # Errors
    /// [`StoreError`].
    fn header(&self, id: &DocId) -> Result<Option<SignedHeader>, StoreError>;
    /// A document's metadata.
    ///
    /// # Errors
    /// [`StoreError`].
    fn meta(&self, id: &DocId) -> Result<Option<DocMeta>, StoreError>;
    /// Metadata of every document.
    ///
    /// # Errors
    /// [`StoreError`].
    fn metas(&self) -> Result<Vec<DocMeta>, StoreError>;
    /// Ids of every document that has a header.
    ///
    /// # Errors
    /// [`StoreError`].
    fn doc_ids(&self) -> Result<Vec<DocId>, StoreError>;
    /// Every record that does not decode (what `verify` reports and
    /// `repair` sets aside).
    ///
    /// # Errors
    /// [`StoreError`].
    fn damaged_records(&self) -> Result<Vec<DamagedRecord>, StoreError>;
    /// A document's changes from position `from_seq` on, in order; each
    /// record decoded or with the reason it does not decode.
    ///
    /// # Errors
    /// [`StoreError`].
    fn changes(&self, id: &DocId, from_seq: u64) -> Result<Vec<ChangeRecord>, StoreError>;
    /// A document's latest snapshot.
    ///
    /// # Errors
    /// [`StoreError`].
    fn snapshot(&self, id: &DocId) -> Result<Option<Snapshot>, StoreError>;
    /// Whether a change with this Automerge hash is stored.
    ///
    /// # Errors
    /// [`StoreError`].
    fn has_change(&self, hash: &[u8; 32]) -> Result<bool, StoreError>;
    /// The stored change with this Automerge hash.
    ///
    /// # Errors
    /// [`StoreError`], including a damaged record.
    fn change_by_hash(&self, hash: &[u8; 32]) -> Result<Option<StoredChange>, StoreError>;
    /// Every stored certificate.
    ///
    /// # Errors
    /// [`StoreError`].
    fn certificates(&self) -> Result<Vec<NodeCertificate>, StoreError>;
    /// Every peer record.
    ///
    /// # Errors
    /// [`StoreError`].
    fn peers(&self) -> Result<Vec<PeerRecord>, StoreError>;
    /// Every stored membership statement.
    ///
    /// # Errors
    /// [`StoreError`].
    fn statements(&self) -> Result<Vec<SignedStatement>, StoreError>;
    /// An invitation this node issued.
    ///
    /// # Errors
    /// [`StoreError`].
    fn invitation(&self, id: &[u8; 16]) -> Result<Option<InvitationRecord>, StoreError>;
    /// Every invitation this node issued.
    ///
    /// # Errors
    /// [`StoreError`].
    fn invitations(&self) -> Result<Vec<InvitationRecord>, StoreError>;
    /// The first `limit` documents of a peer's transfer queue, in order.
    ///
    /// # Errors
    /// [`StoreError`].
    fn queued(&self, peer: &NodeId, limit: usize) -> Result<Vec<QueuedDoc>, StoreError>;
    /// Where a document stands in a peer's queue, if it is queued.
    ///
    /// # Errors
    /// [`StoreError`].
    fn queued_doc(&self, peer: &NodeId, doc: &DocId) -> Result<Option<QueuedDoc>, StoreError>;
    /// The latest heartbeat of every node this node heard of.
    ///
    /// # Errors
    /// [`StoreError`].
    fn heartbeats(&self) -> Result<Vec<StoredHeartbeat>, StoreError>;
    /// The pulse chain of every node this node checks pulses of.
    ///
    /// # Errors
    /// [`StoreError`].
    fn pulse_chains(&self) -> Result<Vec<passerelle_protocol::heartbeat::PulseChain>, StoreError>;
    /// Bytes the store takes on disk.
    ///
    /// # Errors
    /// [`StoreError`].
    fn disk_bytes(&self) -> Result<u64, StoreError>;
    /// How many documents a peer's queue holds.
    ///
    /// # Errors
    /// [`StoreError`].
    fn queue_len(&self, peer: &NodeId) -> Result<u64, StoreError>;
    /// Applies operations atomically (all or none), not yet durable.
    ///
    /// # Errors
    /// [`StoreError`]; nothing was applied then.
    fn write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError>;
    /// Makes every applied write durable.
    ///
    /// # Errors
    /// [`StoreError`].
    fn flush(&self) -> Result<(), StoreError>;
}
