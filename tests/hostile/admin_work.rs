//! Hostile clients, work before permission: argon2 and store reads only after the caller may act.

#[allow(unused_imports)]
use super::*;
