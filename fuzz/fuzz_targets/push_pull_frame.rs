//! Fuzz target `push_pull_frame`: see `shoal_fuzzing::push_pull_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_fuzzing::push_pull_frame(data));
