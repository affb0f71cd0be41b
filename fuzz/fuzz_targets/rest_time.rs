//! Fuzz target `rest_time`: see [`keyward_fuzz::rest_time`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_fuzz::rest_time(data));
