//! Fuzz target `beacon`: see `shoal_fuzzing::beacon`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_fuzzing::beacon(data));
