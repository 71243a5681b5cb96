//! # passerelle-protocol
//!
//! The pure core of Passerelle: everything two nodes must agree on, and
//! nothing that touches a socket, a disk, a clock or a random source (time
//! and randomness come in as arguments). The node (`passerelle-node`) drives
//! it; tests drive it directly.
//!
//! ## Layout
//!
//! - [`ids`]: `CommuneId`, `NodeId`, `DocId` newtypes.
//! - [`keys`], [`certificate`], [`book`]: ed25519 keys; a commune certifies
//!   the node keys it runs; the book maps a node key to its commune.
//! - [`canonical`]: the canonical byte encoding every signature covers
//!   (domain tag, version, fields).
//! - [`header`]: a document's immutable, owner-signed header; its hash is
//!   the document id.
//! - [`envelope`]: the signed envelope every Automerge change travels and is
//!   stored in, and its validation (each failure a named reason).
//! - [`document`], [`schema`], [`status`], [`codes`]: document content:
//!   edits as Automerge operations, per-kind fields and their checks,
//!   status lifecycles that converge, code lists.
//! - [`sync`]: reconciliation between two nodes as a sans-IO state machine:
//!   fingerprints, bounded wire messages, per-peer sessions, audiences.
//! - [`replica`]: the replica core: every replication decision of a node
//!   (sessions, transfers, relay, links, heartbeats, membership) as inputs
//!   and outputs, driven by the node and by the simulator.
//! - [`sim`]: a deterministic simulator of many nodes over the real
//!   replica core (virtual time, latency, bandwidth, loss, cuts, churn).
//! - [`xorset`]: a set's count-and-XOR fingerprint (documents, statements).
//!
//! ## Typical flow
//!
//! A node creates a [`header::DocHeader`], signs it ([`header::SignedHeader`])
//! and derives the [`ids::DocId`]. A user's input is checked by
//! [`schema::KindSchema::edits`], applied by [`document::commit`] into one
//! Automerge change, wrapped by [`envelope::ChangeEnvelope::sign`] and stored.
//! A receiver (or `passerelle verify`) runs
//! [`envelope::ChangeEnvelope::validate`] before Automerge sees the change.
#![warn(missing_docs)]

pub mod book;
pub mod bundle;
pub mod canonical;
pub mod certificate;
pub mod codes;
pub mod document;
pub mod envelope;
pub mod fuzzing;
pub mod header;
pub mod heartbeat;
pub mod ids;
pub mod keys;
pub mod network;
pub mod replica;
pub mod schema;
pub mod sim;
pub mod status;
pub mod sync;
pub mod xorset;

pub use automerge;
