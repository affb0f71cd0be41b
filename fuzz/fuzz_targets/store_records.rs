//! Fuzz target `store_records`: see [`keyward_fuzz::store_records`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_fuzz::store_records(data));
