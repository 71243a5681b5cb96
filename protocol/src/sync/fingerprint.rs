//! Item hashes and set fingerprints for reconciliation.

use sha2::{Digest, Sha256};

use crate::ids::DocId;
pub use crate::xorset::Fingerprint;

/// Number of buckets documents are split into (by the first byte of their id).
pub const BUCKETS: usize = 256;

/// A document's contribution to a set fingerprint: 16 bytes of
/// `SHA-256("passerelle/sync-item" ‖ doc id ‖ sorted heads)`.
pub fn item_hash(doc: &DocId, heads: &[[u8; 32]]) -> [u8; 16] {
    let mut sorted: Vec<&[u8; 32]> = heads.iter().collect();
    sorted.sort();
    let mut h = Sha256::new();
    h.update(b"passerelle/sync-item");
    h.update(doc.as_bytes());
    for head in sorted {
        h.update(head);
    }
    let full: [u8; 32] = h.finalize().into();
    full[..16].try_into().expect("16 of 32 bytes")
}

/// The bucket a document falls in.
pub fn bucket_of(doc: &DocId) -> u8 {
    doc.as_bytes()[0]
}

/// A bucket's fingerprint as it travels: a 32-bit count and the first 8
/// bytes of the XOR (12 bytes instead of 24; a bucket holds few documents,
/// and a collision only delays a repair to the next round).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BucketPrint {
    /// Number of documents in the bucket (saturating).
    pub count: u32,
    /// First 8 bytes of the bucket's XOR.
    pub xor: [u8; 8],
}

impl From<&Fingerprint> for BucketPrint {
    fn from(f: &Fingerprint) -> Self {
        Self { count: u32::try_from(f.count).unwrap_or(u32::MAX), xor: f.xor[..8].try_into().expect("8 of 16 bytes") }
    }
}

/// Fingerprints of the whole set and of each bucket, kept up to date as
/// documents change.
#[derive(Debug, Clone)]
pub struct SetFingerprints {
    total: Fingerprint,
    buckets: Vec<Fingerprint>,
}

impl Default for SetFingerprints {
    fn default() -> Self {
        Self { total: Fingerprint::default(), buckets: vec![Fingerprint::default(); BUCKETS] }
    }
}

impl SetFingerprints {
    /// Records that `doc` now has item `new` (and no longer `old`, if it had one).
    pub fn update(&mut self, doc: &DocId, old: Option<&[u8; 16]>, new: &[u8; 16]) {
        let b = usize::from(bucket_of(doc));
        if let Some(old) = old {
            self.total.toggle(old, false);
            self.buckets[b].toggle(old, false);
        }
        self.total.toggle(new, true);
        self.buckets[b].toggle(new, true);
    }

    /// Records that `doc` (with item `item`) left the set.
    pub fn remove(&mut self, doc: &DocId, item: &[u8; 16]) {
        let b = usize::from(bucket_of(doc));
        self.total.toggle(item, false);
        self.buckets[b].toggle(item, false);
    }

    /// Adds a disjoint set: the fingerprints of the union.
    pub fn merge(&mut self, other: &SetFingerprints) {
        self.total.merge(&other.total);
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            mine.merge(theirs);
        }
    }

    /// The whole set's fingerprint.
    pub fn total(&self) -> Fingerprint {
        self.total
    }

    /// Each bucket's fingerprint.
    pub fn buckets(&self) -> &[Fingerprint] {
        &self.buckets
    }

    /// Each bucket's fingerprint in its wire form.
    pub fn bucket_prints(&self) -> Vec<BucketPrint> {
        self.buckets.iter().map(BucketPrint::from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_do_not_depend_on_order_and_update_incrementally() {
        let docs: Vec<DocId> = (0..50u8).map(|i| DocId::from_bytes([i.wrapping_mul(37); 32])).collect();
        let mut a = SetFingerprints::default();
        let mut b = SetFingerprints::default();
        for d in &docs {
            a.update(d, None, &item_hash(d, &[[1; 32]]));
        }
        for d in docs.iter().rev() {
            b.update(d, None, &item_hash(d, &[[1; 32]]));
        }
        assert_eq!(a.total(), b.total());
        // One document moves on: fingerprints differ, in one bucket only.
        let d = &docs[7];
        a.update(d, Some(&item_hash(d, &[[1; 32]])), &item_hash(d, &[[2; 32]]));
        assert_ne!(a.total(), b.total());
        assert_eq!(a.total().count, 50);
        let differing = (0..BUCKETS).filter(|i| a.buckets()[*i] != b.buckets()[*i]).count();
        assert_eq!(differing, 1);
        // Heads order does not matter.
        assert_eq!(item_hash(d, &[[1; 32], [2; 32]]), item_hash(d, &[[2; 32], [1; 32]]));
    }
}
