//! Fuzz target `token_parse`: see [`keyward_fuzz::token_input`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_fuzz::token_input(data));
