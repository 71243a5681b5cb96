//! Synchronisation between two nodes, sans I/O.
//!
//! Two peers reconcile the set of documents they share in a few messages
//! whose size does not depend on the number of documents when nothing
//! changed, then push each other exactly the documents or changes the other
//! lacks, as signed envelopes that the receiver verifies like any change.
//!
//! - [`message`]: the wire messages and their bounded codec.
//! - [`fingerprint`]: per-document item hashes, set and bucket fingerprints.
//! - [`session`]: the per-peer state machine: inputs in, [`session::Effect`]s out.
//! - [`audience`]: who may receive each document (scopes), and the
//!   fingerprints of what two peers share, kept per audience.
//!
//! ## Reconciliation in brief
//!
//! Each document a peer shares contributes an *item*: `H(doc id, sorted
//! heads)`. The set's fingerprint is the XOR of its items, with their count.
//!
//! 1. On connection and on every anti-entropy tick, each side sends
//!    `Summary {count, fingerprint}`. Equal summaries: in sync, done (one
//!    message each way, a few dozen bytes, whatever the number of documents).
//! 2. Otherwise each side sends `Buckets`: 256 bucket fingerprints (documents
//!    bucketed by the first byte of their id).
//! 3. For each bucket that differs: if the peer's bucket is empty, push every
//!    document of it; else send `Items` listing `(doc id, heads)` of the bucket.
//! 4. On `Items`: push each listed-bucket document the peer lacks, and for each
//!    document whose heads differ, the changes the peer's heads do not cover.
//!
//! Pushes are `Docs` messages (certificates, headers, change envelopes) in
//! bounded frames. New local changes are pushed to connected peers at once,
//! and changes received from one peer are pushed on to the others (relay).

pub mod audience;
pub mod fingerprint;
pub mod message;
pub mod session;
