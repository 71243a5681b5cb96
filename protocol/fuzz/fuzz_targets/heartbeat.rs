//! Fuzz target: `passerelle_protocol::fuzzing::heartbeat`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| passerelle_protocol::fuzzing::heartbeat(data));
