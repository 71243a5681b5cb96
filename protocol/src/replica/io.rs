//! What the replica core asks of its driver ([`Output`]), what the driver
//! tells it back about work it carried out ([`IngestOutcome`],
//! [`Announcement`]), and its window on the node's store ([`DocSource`]).

use crate::certificate::NodeCertificate;
use crate::envelope::ChangeEnvelope;
use crate::header::SignedHeader;
use crate::heartbeat::StoredHeartbeat;
use crate::ids::{DocId, NodeId};
use crate::network::{Invitation, SignedStatement};

use super::PeerRecord;

/// A document's heads: the hashes of its latest changes.
pub type Heads = Vec<[u8; 32]>;

/// Something the driver must do. Outputs are taken with
/// [`super::Replica::poll`] after each input, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Hand these encoded sync-message bytes to the transport for `to`. A
    /// tagged message is reported back with
    /// [`super::Replica::message_delivered`] or
    /// [`super::Replica::message_lost`].
    Send {
        /// The peer.
        to: NodeId,
        /// The message's kind, for logs.
        kind: &'static str,
        /// The encoded message.
        bytes: Vec<u8>,
        /// Set on frames whose delivery the core follows (transfers).
        tag: Option<u64>,
    },
    /// Verify these headers and changes (signatures with the core's
    /// [`super::Replica::book`], membership with its roster), apply and
    /// store what passes, then call [`super::Replica::ingested`] with the
    /// outcome. Certificates that came with them are already in the book.
    Ingest {
        /// The peer they came from.
        from: NodeId,
        /// What to verify and store.
        batch: IngestBatch,
    },
    /// Make these records durable with the batch (before its flush).
    Persist(Persist),
    /// A node outside the network presents an invitation to this node:
    /// check it against the invitations issued here, and answer with
    /// [`super::Replica::send_message`] (`Welcome` or `JoinRefused`).
    Redeem {
        /// The connected node.
        from: NodeId,
        /// The invitation.
        invitation: Box<Invitation>,
        /// Its certificate.
        certificate: NodeCertificate,
        /// Where it listens.
        addrs: Vec<String>,
    },
    /// The node that issued our invitation answered: the statements of a
    /// welcome (the proof of our admission), or the reason it refused.
    JoinAnswered {
        /// The issuing node.
        from: NodeId,
        /// The network the invitation is for.
        network: crate::ids::NetworkId,
        /// The welcome's statements, or the refusal's reason.
        answer: Result<Vec<SignedStatement>, String>,
    },
    /// Remember this peer's addresses and dial it, now and whenever the
    /// connection drops.
    Dial {
        /// The peer.
        node: NodeId,
        /// Where to reach it (multiaddrs).
        addrs: Vec<String>,
    },
    /// Stop dialling this peer and close any connection with it.
    Forget {
        /// The peer.
        node: NodeId,
    },
    /// Close the connection with a peer (it may dial again).
    Disconnect {
        /// The peer.
        node: NodeId,
        /// Why, for the log.
        reason: String,
    },
    /// Something live views may want to show.
    Event(Event),
}

/// Records the driver keeps durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persist {
    /// New roster statements.
    Statements(Vec<SignedStatement>),
    /// Statements that stopped counting (by hash): forget them.
    ForgetStatements(Vec<[u8; 32]>),
    /// A node certificate learnt from a peer.
    Certificate(NodeCertificate),
    /// A node's latest heartbeat (replacing the one before).
    Heartbeat(Box<StoredHeartbeat>),
    /// A node's pulse chain (what checks its pulses after a restart).
    PulseChain(crate::heartbeat::PulseChain),
    /// A node's heartbeat is gone (expired or no longer admitted).
    ForgetHeartbeat(NodeId),
    /// A peer record was removed (its transfer queue goes with it).
    RemovePeer(NodeId),
}

/// Live events (the API's event stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A connection with a peer came up or went down.
    Peer(NodeId),
    /// A node's status arrived.
    Heartbeat(NodeId),
}

/// Signed material to verify and store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestBatch {
    /// Headers of the documents the changes belong to.
    pub headers: Vec<SignedHeader>,
    /// The changes.
    pub changes: Vec<ChangeEnvelope>,
    /// Whether a peer pushed it live (rather than in answer to a round).
    pub live: bool,
}

/// What the driver made of an [`Output::Ingest`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Changes verified and stored.
    pub applied: u64,
    /// Changes this node already held.
    pub duplicates: u64,
    /// What was refused: reason code and reason.
    pub refused: Vec<(String, String)>,
    /// Documents some of whose changes were refused for a reason that is
    /// not a fault (a key revoked, a change dated ahead…), with the code:
    /// this node keeps its state of them and tells the sender, so the two
    /// agree to differ instead of sending them again every round.
    pub apart: Vec<(DocId, String)>,
    /// The batch was a live push ([`IngestBatch::live`]).
    pub live: bool,
}

/// What a flushed batch made durable here, to pass on: a local write, or
/// material received from `from`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announcement {
    /// The peer it came from (who needs no copy); `None` for local writes.
    pub from: Option<NodeId>,
    /// Documents new to this node: their headers go along.
    pub new_docs: Vec<SignedHeader>,
    /// The changes.
    pub changes: Vec<ChangeEnvelope>,
}

/// A document waiting in a peer's transfer queue: what reconciliation
/// found the peer lacks, kept in the node's store until the peer
/// acknowledges the frame that carried it, so a transfer cut halfway
/// resumes where it stopped (after a reconnection or a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedDoc {
    /// Sending order: smaller first (small and recent documents first).
    pub priority: u64,
    /// The document.
    pub doc: DocId,
    /// The heads the peer said it has (send what they do not cover), or
    /// `None` to send the whole document.
    pub their_heads: Option<Heads>,
}

/// A change a peer lacks, with what the core needs to cut a large
/// document into chunks that each apply on their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingChange {
    /// The change's hash.
    pub hash: [u8; 32],
    /// The hashes of the changes it depends on.
    pub deps: Vec<[u8; 32]>,
    /// The signed envelope.
    pub envelope: ChangeEnvelope,
}

/// What a node says of itself in its heartbeat, read from its store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalStatus {
    /// Documents by kind and status (status empty for kinds without one).
    pub documents: Vec<(String, String, u64)>,
    /// Bytes the store takes on disk.
    pub disk_bytes: u64,
    /// Items refused since start, by reason code.
    pub rejected: Vec<(String, u64)>,
}

/// The core's window on the node's store: documents to send, and the
/// per-peer transfer queues kept there (so a backlog costs disk, not
/// memory). The node implements it over sled; the simulator in memory.
/// Failures to read are the driver's to log: the core treats a missing
/// answer as "nothing there" and the next round repairs.
pub trait DocSource {
    /// A document's signed header.
    fn header(&mut self, doc: &DocId) -> Option<SignedHeader>;
    /// Number of changes the document has and when it last changed (ms):
    /// what orders a transfer queue.
    fn doc_size(&mut self, doc: &DocId) -> Option<(u64, i64)>;
    /// The changes of a document that a peer holding `their_heads` lacks
    /// (every change when `None`), in an order that applies.
    fn changes_for(&mut self, doc: &DocId, their_heads: Option<&[[u8; 32]]>) -> Vec<ChangeEnvelope>;
    /// Like [`DocSource::changes_for`], in causal order and with each
    /// change's hash and dependencies (to cut a large document in chunks).
    fn missing(&mut self, doc: &DocId, their_heads: &[[u8; 32]]) -> Vec<MissingChange>;
    /// Whether this node holds the change with this hash.
    fn has_change(&mut self, hash: &[u8; 32]) -> bool;
    /// Documents queued for `peer`.
    fn queue_len(&mut self, peer: &NodeId) -> u64;
    /// The first `limit` entries of `peer`'s queue, in sending order.
    fn queue_front(&mut self, peer: &NodeId, limit: usize) -> Vec<QueuedDoc>;
    /// The queue entry of `doc` for `peer`, if queued.
    fn queued(&mut self, peer: &NodeId, doc: &DocId) -> Option<QueuedDoc>;
    /// Adds queue entries for `peer` (written with the batch).
    fn enqueue(&mut self, peer: &NodeId, entries: Vec<QueuedDoc>);
    /// Removes queue entries of `peer`.
    fn dequeue(&mut self, peer: &NodeId, entries: Vec<QueuedDoc>);
    /// Removes the whole queue of `peer`.
    fn drop_queue(&mut self, peer: &NodeId);
    /// What this node says of itself in a heartbeat.
    fn local_status(&mut self) -> LocalStatus;
}

/// The order of a transfer queue: small documents first (by the number
/// of changes, in powers of two), then the most recently changed.
pub fn queue_priority(changes: u64, updated_ms: i64) -> u64 {
    let size_class = u64::from((64 - changes.leading_zeros()).min(255));
    let age = u64::MAX >> 8;
    let recency = age - (updated_ms.max(0) as u64).min(age);
    (size_class << 56) | recency
}

/// Peer records the driver persists: those changed since the last call.
pub type DirtyPeers = Vec<PeerRecord>;
