//! Fuzz target `datagram`: see `shoal_fuzzing::datagram`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_fuzzing::datagram(data));
