//! Fuzz target `ext_authz_check`: see [`keyward_fuzz::ext_authz_check`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_fuzz::ext_authz_check(data));
