//! Fuzz target: `passerelle_protocol::fuzzing::envelope`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| passerelle_protocol::fuzzing::envelope(data));
