//! Hostile clients, log floods and listings that must fit the message limit.

#[allow(unused_imports)]
use super::*;
