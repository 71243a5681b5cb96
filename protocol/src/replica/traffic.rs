//! What crossed the wire, by message kind, and what the document frames
//! sent were made of: so each byte of a benchmark or a busy node can be
//! explained. Bounded: one entry per message kind.

use std::collections::BTreeMap;

use crate::envelope::ChangeEnvelope;
use crate::header::SignedHeader;

/// Messages and bytes of one kind, each way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KindTraffic {
    /// Messages received.
    pub messages_in: u64,
    /// Their bytes (frames, length prefix included).
    pub bytes_in: u64,
    /// Messages sent.
    pub messages_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
}

/// What the `Docs` and `Push` frames sent carried, before compression.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameParts {
    /// Frames sent.
    pub frames: u64,
    /// Their bytes on the wire (compressed where it paid).
    pub wire_bytes: u64,
    /// Their bytes before compression.
    pub plain_bytes: u64,
    /// Headers' bytes, before compression.
    pub header_bytes: u64,
    /// Automerge change bytes, before compression.
    pub change_bytes: u64,
    /// Changes sent.
    pub changes: u64,
    /// Changes sent covered by a later signature (no signature of their own).
    pub covered: u64,
}

impl FrameParts {
    /// Counts one frame.
    pub(super) fn add(&mut self, headers: &[SignedHeader], changes: &[ChangeEnvelope], plain: usize, wire: usize) {
        self.frames += 1;
        self.wire_bytes += wire as u64;
        self.plain_bytes += plain as u64;
        self.header_bytes += headers.iter().map(|h| h.header.canonical_bytes().len() as u64 + 66).sum::<u64>();
        self.change_bytes += changes.iter().map(|c| c.change.len() as u64).sum::<u64>();
        self.changes += changes.len() as u64;
        self.covered += changes.iter().filter(|c| c.signature.is_none()).count() as u64;
    }
}

/// Traffic by message kind.
pub type Traffic = BTreeMap<&'static str, KindTraffic>;
