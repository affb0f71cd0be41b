//! Fuzz target `authorize`: see [`keyward_fuzz::authorize`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_fuzz::authorize(data));
