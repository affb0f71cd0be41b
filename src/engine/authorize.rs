//! One Authorize decision: from memory under one read lock when the
//! token's verified digest is known, otherwise after an argon2 proof;
//! DOMAIN ids are looked up in their canonical spelling.
//!
//! Part of the engine (layer L4): imports the vocabulary, `index` and
//! `authz` (the pure decision).

use super::authn::{parse_bounded, Proof};
use super::{AuthnFailure, Engine};
use crate::authz::{self, Check};
use crate::error::Result;
use crate::index::{Index, TokenState};
use crate::model::{self, Kind};
use crate::pb::v1::DenyReason;
use crate::token::{Digest, ParsedToken};

/// A decision with what the caller may log or return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Allowed or not.
    pub allowed: bool,
    /// Why not (Unspecified when allowed).
    pub reason: DenyReason,
    /// Recognised token id (0 if none).
    pub token_id: u64,
    /// Its account (0 if none).
    pub account_id: u64,
    /// Its expiry, unix ms (none if it never expires or was not
    /// recognised): a holder learns when to switch.
    pub expires_at_ms: Option<i64>,
    /// Its successor by reset (0 if none): a holder in a reset's grace
    /// period learns that it must switch.
    pub replaced_by: u64,
    /// The token's sending limits after the decision: set when the token
    /// has limits and was otherwise allowed.
    pub rate: Option<Rate>,
}

/// Where a limited token's budget stands after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Units left in the tightest limit.
    pub remaining: u64,
    /// Refused: ms until the cost fits (`None`: never). Allowed: 0.
    pub retry_after_ms: Option<i64>,
    /// The tightest limit's `limit`.
    pub limit: u64,
    /// ms until the tightest limit is full again.
    pub reset_ms: i64,
    /// A follower whose lease was too short: a refill is asked for.
    pub short_lease: bool,
}

impl Decision {
    fn deny(reason: DenyReason) -> Self {
        Self {
            allowed: false,
            reason,
            token_id: 0,
            account_id: 0,
            expires_at_ms: None,
            replaced_by: 0,
            rate: None,
        }
    }
}

/// The outcome of [`Engine::authorize_cached`].
pub enum Cached<'t> {
    /// Decided from memory.
    Decided(Decision),
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
    /// Decides one Authorize request. Fails (closed) only when argon2
    /// capacity is exhausted and the token needs it.
    pub async fn authorize(&self, token: &str, check: &Check<'_>) -> Result<Decision> {
        let d = self.authorize_slow(token, check).await?;
        if d.rate.is_some_and(|r| r.short_lease) {
            // A node whose lease ran short: one bounded wait for the
            // refill, then the same question again.
            self.wait_for_lease(d.token_id).await;
            return self.authorize_slow(token, check).await;
        }
        Ok(d)
    }

    async fn authorize_slow(&self, token: &str, check: &Check<'_>) -> Result<Decision> {
        let (parsed, digest, phc) = match self.authorize_cached(token, check) {
            Cached::Decided(d) => return Ok(d),
            Cached::NeedsArgon2 {
                parsed,
                digest,
                phc,
            } => (parsed, digest, phc),
        };
        match self.verify_slow(parsed, digest, phc).await {
            Ok(_) => {}
            Err(AuthnFailure::Overloaded) => return Err(AuthnFailure::Overloaded.into()),
            Err(_) => return Ok(Decision::deny(DenyReason::UnknownToken)),
        }
        // Live state after the (slow) proof: a delete that landed while
        // argon2 ran is seen here.
        let now = self.now_ms();
        let idx = self.index.read();
        Ok(match idx.tokens.get(&parsed.id) {
            Some(state) => decide_for(self, &idx, state, check, now),
            None => Decision::deny(DenyReason::UnknownToken),
        })
    }

    /// Gives back `cost` units that an allowed decision for `token_id`
    /// took, when the caller denies after all (ext_authz's route names
    /// another account): only allowed requests spend.
    pub fn refund(&self, token_id: u64, cost: u64) {
        if cost == 0 {
            return;
        }
        let idx = self.index.read();
        if let Some(b) = idx.tokens.get(&token_id).and_then(|t| t.budget.as_ref()) {
            // A node that leases spent its lease (or, stale and serving, its own
            // copy of the budget: the lease then gets units it never
            // had, at most one cost).
            if self.leasing().is_some() {
                b.unspend_lease(cost);
            } else {
                b.give_back(cost);
            }
        }
    }

    /// The in-memory part of Authorize: parse, checksum, digest, lookup and
    /// decision under one read lock, with no allocation; hands back what
    /// argon2 needs when no verified digest is known.
    pub fn authorize_cached<'t>(&self, token: &'t str, check: &Check<'_>) -> Cached<'t> {
        let Some(parsed) = parse_bounded(token) else {
            return Cached::Decided(Decision::deny(DenyReason::Malformed));
        };
        let digest = self.key.digest(parsed.full());
        let now = self.now_ms();
        let idx = self.index.read();
        match self.prove(&idx, &parsed, &digest) {
            Ok(Proof::Verified(state)) => {
                Cached::Decided(decide_for(self, &idx, state, check, now))
            }
            Ok(Proof::NeedsArgon2(phc)) => Cached::NeedsArgon2 {
                parsed,
                digest,
                phc,
            },
            Err(_) => Cached::Decided(Decision::deny(DenyReason::UnknownToken)),
        }
    }
}

/// Decides for an authentic token and records its use, by `node` (this
/// node's name id). A DOMAIN id is
/// looked up in its canonical spelling (borrowed, with no allocation, when
/// it is one already): every spelling of a domain gets the same decision.
/// One that is not a host name is looked up as an id nothing is registered
/// under: UNKNOWN_RESOURCE, after the token's own checks.
fn decide_for(
    engine: &Engine,
    idx: &Index,
    state: &TokenState,
    check: &Check<'_>,
    now: i64,
) -> Decision {
    let canonical;
    let domain_check;
    let check = if check.kind == Kind::Domain {
        canonical = model::domain_lookup_key(check.id);
        domain_check = Check {
            id: &canonical,
            ..*check
        };
        &domain_check
    } else {
        check
    };
    let mut result = authz::decide(idx, state, check, now);
    // Only a decision allowed on every other ground takes from the budget;
    // an unlimited token costs one branch.
    let mut rate = None;
    if let (Ok(()), Some(budget)) = (&result, &state.budget) {
        let (o, short) = engine.spend(state.id(), budget, now, check.cost);
        if !o.allowed {
            result = Err(DenyReason::RateLimited);
        }
        rate = Some(Rate {
            short_lease: short,
            remaining: o.remaining,
            retry_after_ms: o.retry_after_ms,
            limit: budget.specs().get(o.tightest).map_or(0, |s| s.limit),
            reset_ms: o.reset_ms,
        });
    }
    if result.is_ok() {
        state.touch(now, engine.node);
    }
    Decision {
        allowed: result.is_ok(),
        reason: result.err().unwrap_or(DenyReason::Unspecified),
        token_id: state.id(),
        account_id: state.account_id(),
        expires_at_ms: state.expires_at_ms(),
        replaced_by: state.replaced_by(),
        rate,
    }
}
