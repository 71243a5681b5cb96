//! A set's fingerprint: the count of its items and the XOR of their
//! hashes. Both the sync core (documents) and the roster (statements) keep
//! one, updated in O(1) as items come and go; it lives apart from either so
//! neither depends on the other for it.

/// A set fingerprint: count and XOR of item hashes. XOR lets a node update
/// it in O(1) when one document's heads change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fingerprint {
    /// Number of documents.
    pub count: u64,
    /// XOR of their item hashes.
    pub xor: [u8; 16],
}

impl Fingerprint {
    /// Adds (or, applied again, removes) an item.
    pub fn toggle(&mut self, item: &[u8; 16], add: bool) {
        for (a, b) in self.xor.iter_mut().zip(item) {
            *a ^= b;
        }
        if add {
            self.count += 1;
        } else {
            self.count -= 1;
        }
    }
}

impl Fingerprint {
    /// Adds a disjoint set's fingerprint.
    pub fn merge(&mut self, other: &Fingerprint) {
        for (a, b) in self.xor.iter_mut().zip(&other.xor) {
            *a ^= b;
        }
        self.count += other.count;
    }
}
