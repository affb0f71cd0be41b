//! Fuzz target `grpc_requests`: see [`keyward_fuzz::grpc_request`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_fuzz::grpc_request(data));
