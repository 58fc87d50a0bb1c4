//! Fuzz target `control_body`: see `shoal_fuzzing::control_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_fuzzing::control_body(data));
