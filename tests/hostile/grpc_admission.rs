//! Hostile clients, header-only gRPC streams: in-flight slots taken only once a message has arrived.

#[allow(unused_imports)]
use super::*;
