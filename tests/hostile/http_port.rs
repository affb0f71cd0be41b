//! Hostile clients, the HTTP port: slow bodies, idle and half-sent connections, probes out of reach.

#[allow(unused_imports)]
use super::*;
