//! Fuzz target: `passerelle_protocol::fuzzing::bundle`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| passerelle_protocol::fuzzing::bundle(data));
