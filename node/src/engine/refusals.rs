//! Refusals that cost little: a change refused for what it is (a forged
//! signature, an author that is not a writer, …) is remembered by its
//! signature, so the same item sent again is refused by a lookup instead of
//! another signature check; and refusal logs are rate-limited per reason,
//! so a peer replaying garbage cannot fill the disk with them.

use std::collections::{HashMap, VecDeque};

/// Items remembered as refused (by signature), oldest forgotten first.
pub const REMEMBERED_REFUSALS: usize = 8_192;
/// Refusal log lines per reason per minute; beyond, one line says how many
/// were left out.
pub const REFUSAL_LOGS_PER_MINUTE: u32 = 10;

/// Whether a refusal holds for the item whatever this node learns later
/// (its bytes, its signature, its document's fixed writers), so that it
/// may be remembered. An unknown author or a revoked member is not: the
/// certificate may arrive, the roster may change.
pub fn is_stable(code: &str) -> bool {
    matches!(
        code,
        "malformed"
            | "bad_signature"
            | "wrong_document"
            | "bad_change"
            | "actor_mismatch"
            | "not_a_writer"
            | "owner_only"
    )
}

/// Refused items and the refusal log's budget.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    known: HashMap<[u8; 64], String>,
    order: VecDeque<[u8; 64]>,
    /// Per reason: the minute it counts in, lines logged, lines left out.
    logs: HashMap<String, (i64, u32, u64)>,
}

impl Refusals {
    /// Why an item with this signature was refused before, if it was.
    pub fn known(&self, signature: &[u8; 64]) -> Option<&str> {
        self.known.get(signature).map(String::as_str)
    }

    /// Remembers that the item with this signature was refused for `code`.
    pub fn remember(&mut self, signature: [u8; 64], code: &str) {
        if self.known.insert(signature, code.to_owned()).is_none() {
            self.order.push_back(signature);
            while self.order.len() > REMEMBERED_REFUSALS {
                if let Some(old) = self.order.pop_front() {
                    self.known.remove(&old);
                }
            }
        }
    }

    /// Logs a refusal, within the budget of its reason.
    pub fn log(&mut self, now_ms: i64, doc: &str, code: &str, reason: &str) {
        let minute = now_ms / 60_000;
        let entry = self.logs.entry(code.to_owned()).or_insert((minute, 0, 0));
        if entry.0 != minute {
            if entry.2 > 0 {
                tracing::warn!(code, left_out = entry.2, "more refusals of this reason were not logged last minute");
            }
            *entry = (minute, 0, 0);
        }
        if entry.1 < REFUSAL_LOGS_PER_MINUTE {
            entry.1 += 1;
            tracing::warn!(%doc, code, %reason, "refused");
        } else {
            entry.2 += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_refusals_are_bounded_and_the_oldest_go_first() {
        let mut r = Refusals::default();
        for i in 0..(REMEMBERED_REFUSALS as u32 + 10) {
            let mut sig = [0u8; 64];
            sig[..4].copy_from_slice(&i.to_be_bytes());
            r.remember(sig, "bad_signature");
        }
        assert_eq!(r.known.len(), REMEMBERED_REFUSALS);
        assert!(r.known(&[0; 64]).is_none(), "the oldest was forgotten");
        let mut last = [0u8; 64];
        last[..4].copy_from_slice(&(REMEMBERED_REFUSALS as u32 + 9).to_be_bytes());
        assert_eq!(r.known(&last), Some("bad_signature"));
        // The log budget: ten lines a minute per reason, the rest counted.
        for _ in 0..100 {
            r.log(0, "doc", "bad_signature", "forged");
        }
        assert_eq!(r.logs["bad_signature"], (0, REFUSAL_LOGS_PER_MINUTE, 90));
    }
}
