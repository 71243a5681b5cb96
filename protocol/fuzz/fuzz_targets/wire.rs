//! Fuzz target: `passerelle_protocol::fuzzing::wire`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| passerelle_protocol::fuzzing::wire(data));
