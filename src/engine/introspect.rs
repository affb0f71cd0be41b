//! Introspect: what a presented token is, told to its holder (Vault's
//! `lookup-self`). The same cost as Authorize: parse, checksum, keyed
//! digest and lookup under one read lock, argon2 only when no verified
//! digest is known (under Authorize's budget, shed alike); and the same
//! refusals for a token that will not do, as the admin plane answers them:
//! malformed or unknown "invalid token", "token is paused", "token has
//! expired", each UNAUTHENTICATED with the deny table's message. A token in
//! its reset grace period answers, `replaced_by` and `expires_at` set.
//! The answer is the token as served: never a secret or a hash.
//!
//! Part of the engine (layer L4): imports the vocabulary, `index` and
//! `wire` (the token as served).

use super::authn::{parse_bounded, Proof};
use super::{AuthnFailure, Engine};
use crate::error::{Denial, Error, Result};
use crate::index::TokenState;
use crate::pb::v1::{self as pb, DenyReason};
use crate::token::{Digest, ParsedToken};
use crate::wire::token_to_wire;

/// The outcome of the in-memory part of Introspect.
enum Looked<'t> {
    /// Answered from memory.
    Done(Result<pb::Token>),
    /// No verified digest is known: argon2 must check the secret.
    NeedsArgon2 {
        /// The parsed token.
        parsed: ParsedToken<'t>,
        /// Its keyed digest, to fill in on success.
        digest: Digest,
        /// The PHC hash to verify against.
        phc: String,
    },
}

impl Engine {
    /// Describes `token` to its holder: its metadata as served, with
    /// `last_used_at` the last use before this call (which counts as one).
    /// Fails UNAUTHENTICATED for a malformed, unknown, paused or expired
    /// token, UNAVAILABLE when argon2 capacity is exhausted and the token
    /// needs it (fail closed).
    pub async fn introspect(&self, token: &str) -> Result<pb::Token> {
        let (parsed, digest, phc) = match self.introspect_cached(token) {
            Looked::Done(answer) => return answer,
            Looked::NeedsArgon2 {
                parsed,
                digest,
                phc,
            } => (parsed, digest, phc),
        };
        let id = parsed.id;
        match self.verify_slow(parsed, digest, phc).await {
            Ok(_) => {}
            Err(AuthnFailure::Overloaded) => {
                return Err(Error::Unavailable(
                    "token verification is overloaded; retry shortly".into(),
                ))
            }
            Err(_) => return Err(refusal(DenyReason::UnknownToken)),
        }
        // Live state after the (slow) proof: a delete, pause or reset that
        // landed while argon2 ran is seen here.
        let now = self.now_ms();
        let idx = self.index.read();
        match idx.tokens.get(&id) {
            Some(state) => describe(state, now),
            None => Err(refusal(DenyReason::UnknownToken)),
        }
    }

    /// Parse, checksum, digest and lookup under one read lock; hands back
    /// what argon2 needs when no verified digest is known.
    fn introspect_cached<'t>(&self, token: &'t str) -> Looked<'t> {
        let Some(parsed) = parse_bounded(token) else {
            return Looked::Done(Err(refusal(DenyReason::Malformed)));
        };
        let digest = self.key.digest(parsed.full());
        let now = self.now_ms();
        let idx = self.index.read();
        match self.prove(&idx, &parsed, &digest) {
            Ok(Proof::Verified(state)) => Looked::Done(describe(state, now)),
            Ok(Proof::NeedsArgon2(phc)) => Looked::NeedsArgon2 {
                parsed,
                digest,
                phc,
            },
            Err(_) => Looked::Done(Err(refusal(DenyReason::UnknownToken))),
        }
    }
}

/// An authentic token's answer: refused as Authorize denies it when paused
/// or expired (in that order, as Authorize checks them); otherwise its
/// metadata, and the use recorded.
fn describe(state: &TokenState, now: i64) -> Result<pb::Token> {
    if state.paused {
        return Err(refusal(DenyReason::Paused));
    }
    if state.is_expired(now) {
        return Err(refusal(DenyReason::Expired));
    }
    let token = token_to_wire(state);
    state.touch(now);
    Ok(token)
}

/// A refusal with the deny table's message: UNAUTHENTICATED for every
/// reason Introspect refuses (malformed, unknown, expired, paused).
fn refusal(reason: DenyReason) -> Error {
    Denial::of(reason).error()
}
