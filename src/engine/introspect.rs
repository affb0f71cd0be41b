//! Introspect: what a presented token is, told to its holder (Vault's
//! `lookup-self`). About Authorize's cost: the admin caller's proof
//! (parse, checksum, keyed digest and lookup under the read lock, argon2
//! only when no verified digest is known, under Authorize's budget, shed
//! alike), then the token read under the read lock again; and the same
//! refusals for a token that will not do, as the admin plane answers them:
//! malformed or unknown "invalid token", "token is paused", "token has
//! expired", each UNAUTHENTICATED with the deny table's message. A token in
//! its reset grace period answers, `replaced_by` and `expires_at` set.
//! The answer is the token as served: never a secret or a hash.
//!
//! Part of the engine (layer L4): imports the vocabulary, `index` and
//! `wire` (the token as served).

use super::Engine;
use crate::error::{Denial, Result};
use crate::index::TokenState;
use crate::pb::v1::{self as pb, DenyReason};
use crate::wire::token_to_wire;

impl Engine {
    /// Describes `token` to its holder: its metadata as served, with
    /// `last_used_at` the last use before this call (which counts as one).
    /// Fails UNAUTHENTICATED for a malformed, unknown, paused or expired
    /// token, UNAVAILABLE when argon2 capacity is exhausted and the token
    /// needs it (fail closed). The proof is the admin caller's
    /// ([`Engine::authenticate`]): the verified digest under the read lock,
    /// argon2 only when no digest is known.
    pub async fn introspect(&self, token: &str) -> Result<pb::Token> {
        let id = self.authenticate(token).await?;
        // Live state after the proof: a delete, pause or reset that landed
        // while argon2 ran is seen here.
        let now = self.now_ms();
        let idx = self.index.read();
        match idx.tokens.get(&id) {
            Some(state) => describe(state, now, self.node),
            None => Err(refusal(DenyReason::UnknownToken)),
        }
    }
}

/// An authentic token's answer: refused as Authorize denies it when paused
/// or expired (in that order, as Authorize checks them); otherwise its
/// metadata, and the use recorded (by `node`, this node's name id).
fn describe(state: &TokenState, now: i64, node: u32) -> Result<pb::Token> {
    if state.paused() {
        return Err(refusal(DenyReason::Paused));
    }
    if state.is_expired(now) {
        return Err(refusal(DenyReason::Expired));
    }
    let token = token_to_wire(state);
    state.touch(now, node);
    Ok(token)
}

/// A refusal with the deny table's message: UNAUTHENTICATED for every
/// reason Introspect refuses (malformed, unknown, expired, paused).
fn refusal(reason: DenyReason) -> crate::error::Error {
    Denial::of(reason).error()
}
