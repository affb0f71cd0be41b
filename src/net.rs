//! What both ports' accept loops share (the gRPC port's TLS loop in
//! `tls/grpc.rs`, the HTTP port's in `http/serve.rs`): which accept errors
//! concern one connection only, and how long to back off on the others.
//!
//! Layer L0 (vocabulary): depends on nothing in the crate.

use std::time::Duration;

/// Pause after an accept error that is not the client's (e.g. out of file
/// descriptors), so the loop does not spin.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Accept errors that concern one connection only.
pub fn is_client_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    )
}
