//! Fuzz target `routes_file`: see [`keyward_fuzz::routes_file`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_fuzz::routes_file(data));
