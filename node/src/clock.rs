//! The wall clock, read in one place so the protocol core never reads it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// 32 random bytes from the operating system.
///
/// # Panics
/// If the operating system has no randomness to give, which leaves no safe
/// way to make keys or ids.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system provides randomness");
    out
}
