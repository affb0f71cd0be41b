//! Proving a token authentic: the cheap proof (its keyed digest compared
//! in constant time), else one argon2 verify under a bounded budget, with
//! a negative cache and a per-token failure window so a flood of wrong
//! secrets costs no argon2; and hashing new secrets under a budget of
//! their own.
//!
//! Part of the engine (layer L4): imports the vocabulary and `index`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::Engine;
use crate::error::{Denial, Error, Result};
use crate::index::{Index, TokenState};
use crate::model::limits;
use crate::pb::v1::DenyReason;
use crate::token::{self, Digest, ParsedToken, Secret};

/// Why a token is not accepted as authentic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthnFailure {
    /// Not a keyward token.
    Malformed,
    /// No such token, or the secret does not verify.
    Unknown,
    /// argon2 capacity exhausted: shed (fail closed).
    Overloaded,
}

impl From<AuthnFailure> for Error {
    /// A failed proof as a caller sees it: "invalid token" (UNAUTHENTICATED,
    /// the same words for a malformed and an unknown token), or UNAVAILABLE
    /// when argon2 capacity is exhausted (fail closed).
    fn from(failure: AuthnFailure) -> Error {
        match failure {
            AuthnFailure::Malformed | AuthnFailure::Unknown => {
                Denial::of(DenyReason::UnknownToken).error()
            }
            AuthnFailure::Overloaded => {
                Error::Unavailable("token verification is overloaded; retry shortly".into())
            }
        }
    }
}

/// The outcome of the cheap proof.
pub(super) enum Proof<'i> {
    /// The digest matched: the token's live state.
    Verified(&'i TokenState),
    /// No digest known: argon2 must check this PHC hash.
    NeedsArgon2(String),
}

/// One argon2 call waiting for its budget; leaves the count on drop.
struct Waiting<'a> {
    count: &'a AtomicUsize,
    gauge: &'a metrics::Gauge,
    depth: usize,
}

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize, gauge: &'a metrics::Gauge) -> Self {
        let depth = count.fetch_add(1, Ordering::AcqRel) + 1;
        gauge.set(depth as f64);
        Self {
            count,
            gauge,
            depth,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let left = self.count.fetch_sub(1, Ordering::AcqRel) - 1;
        self.gauge.set(left as f64);
    }
}

/// Takes a permit of `permits` within `wait`, unless `max_waiters` are
/// queued already. The waiter count is decremented on drop: a request
/// cancelled while it waits must not leave the count (and so the
/// shedding) raised for ever.
async fn acquire_bounded(
    permits: &Arc<Semaphore>,
    waiters: &AtomicUsize,
    gauge: &metrics::Gauge,
    max_waiters: usize,
    wait: Duration,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let queued = Waiting::enter(waiters, gauge);
    if queued.depth > max_waiters {
        return None;
    }
    tokio::time::timeout(wait, permits.clone().acquire_owned())
        .await
        .ok()
        .and_then(std::result::Result::ok)
}

impl Engine {
    /// Hashes a new secret part with argon2id under its own budget
    /// (`hash_concurrency` at once, a bounded queue with a deadline), apart
    /// from Authorize's verifies. Callers check permission first: only a
    /// caller who may create a token ever gets here.
    pub(crate) async fn hash_new_secret(&self) -> Result<(Secret, String)> {
        let permit = acquire_bounded(
            &self.hash_permits,
            &self.hash_waiters,
            &self.metrics.hash_queue,
            self.settings.hash_max_waiters,
            self.settings.hash_queue_timeout,
        )
        .await;
        let Some(permit) = permit else {
            self.metrics.hash_shed.increment(1);
            return Err(Error::Unavailable(
                "too many tokens are being created at once; retry shortly".into(),
            ));
        };
        self.work.hashes.fetch_add(1, Ordering::Relaxed);
        let part = token::new_secret_part();
        let hashed = part.clone();
        let phc = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            token::hash_secret(&hashed)
        })
        .await
        .map_err(|e| Error::Internal(format!("hash task: {e}")))?
        .map_err(|e| Error::Internal(format!("argon2: {e}")))?;
        Ok((part, phc))
    }
}

impl Engine {
    /// Proves `token` authentic: its id exists and its secret verifies.
    /// Cheap when the verified digest is known (one keyed BLAKE3 and a
    /// constant-time compare); otherwise one argon2 verify, bounded and shed.
    pub async fn authenticate(&self, token: &str) -> Result<u64, AuthnFailure> {
        let mut unbounded = usize::MAX;
        self.authenticate_within(token, &mut unbounded).await
    }

    /// [`Engine::authenticate`] with an argon2 budget of the caller's (a
    /// leak report's items share one): a secret whose digest is unknown
    /// takes one of `argon2_left`'s verifies; with none left it is not
    /// judged ([`AuthnFailure::Overloaded`]).
    pub async fn authenticate_within(
        &self,
        token: &str,
        argon2_left: &mut usize,
    ) -> Result<u64, AuthnFailure> {
        let parsed = parse_bounded(token).ok_or(AuthnFailure::Malformed)?;
        let digest = self.key.digest(parsed.full());
        let phc = {
            let idx = self.index.read();
            match self.prove(&idx, &parsed, &digest)? {
                Proof::Verified(_) => return Ok(parsed.id),
                Proof::NeedsArgon2(phc) => phc,
            }
        };
        *argon2_left = argon2_left.checked_sub(1).ok_or(AuthnFailure::Overloaded)?;
        self.verify_slow(parsed, digest, phc).await
    }

    /// The cheap proof: the token exists and its digest matches the known
    /// verified digest; or, with no digest known, the hash argon2 must check.
    pub(super) fn prove<'i>(
        &self,
        idx: &'i Index,
        parsed: &ParsedToken<'_>,
        digest: &Digest,
    ) -> Result<Proof<'i>, AuthnFailure> {
        let state = idx.tokens.get(&parsed.id).ok_or(AuthnFailure::Unknown)?;
        match &state.digest {
            Some(known) if token::digests_equal(known, digest) => {
                self.metrics.verify_digest.increment(1);
                Ok(Proof::Verified(state))
            }
            Some(_) => Err(AuthnFailure::Unknown),
            None => Ok(Proof::NeedsArgon2(state.phc_hash.to_string())),
        }
    }

    /// The argon2 path: negative cache, bounded queue with a deadline, and a
    /// digest fill that only lands if the token still exists unchanged.
    pub(super) async fn verify_slow(
        &self,
        parsed: ParsedToken<'_>,
        digest: Digest,
        phc: String,
    ) -> Result<u64, AuthnFailure> {
        let now = self.now_ms();
        if self
            .negative
            .lock()
            .get(&digest)
            .is_some_and(|&until| until > now)
        {
            self.metrics.verify_negative.increment(1);
            return Err(AuthnFailure::Unknown);
        }
        if self.failed_too_often(parsed.id, now) {
            self.metrics.verify_token_failures.increment(1);
            return Err(AuthnFailure::Unknown);
        }
        let permit = acquire_bounded(
            &self.verify_permits,
            &self.verify_waiters,
            &self.metrics.argon2_queue,
            self.settings.verify_max_waiters,
            self.settings.verify_queue_timeout,
        )
        .await;
        let Some(permit) = permit else {
            self.metrics.argon2_shed.increment(1);
            return Err(AuthnFailure::Overloaded);
        };
        self.work.verifies.fetch_add(1, Ordering::Relaxed);
        let secret = parsed.secret_part().to_owned();
        let phc_for_task = phc.clone();
        // The permit moves into the blocking task: argon2 work stays bounded
        // by the cores even if this request is cancelled.
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            token::verify_secret(&secret, &phc_for_task)
        })
        .await
        .unwrap_or(false);
        if ok {
            &self.metrics.verify_argon2_ok
        } else {
            &self.metrics.verify_argon2_fail
        }
        .increment(1);
        if !ok {
            let mut neg = self.negative.lock();
            if neg.len() >= self.settings.negative_max {
                neg.retain(|_, until| *until > now);
                if neg.len() >= self.settings.negative_max {
                    neg.clear();
                }
            }
            let ttl = crate::clock::duration_ms(self.settings.negative_ttl);
            neg.insert(digest, now.saturating_add(ttl));
            drop(neg);
            self.count_failure(parsed.id, now);
            return Err(AuthnFailure::Unknown);
        }
        // Fill the verified digest, unless the token was deleted (or, ids
        // never being reused, replaced) while argon2 ran.
        let mut idx = self.index.write();
        if let Some(state) = idx.tokens.get_mut(&parsed.id) {
            if state.phc_hash == token::Phc::new(&phc) && state.digest.is_none() {
                state.digest = Some(digest);
                state.digest_unsaved.store(true, Ordering::Relaxed);
            }
        }
        Ok(parsed.id)
    }

    /// Whether token `id` used up its failed argon2 verifies for the
    /// current window: further unproven secrets for it are refused without
    /// argon2 (fail closed) until the window ends. A token whose digest is
    /// known never gets here: a wrong secret is refused by the digest.
    fn failed_too_often(&self, id: u64, now: i64) -> bool {
        let window = crate::clock::duration_ms(self.settings.argon2_failure_window);
        self.failures.lock().get(&id).is_some_and(|&(start, n)| {
            now < start.saturating_add(window) && n >= self.settings.argon2_failures_per_token
        })
    }

    /// Counts a failed argon2 verify against token `id`. The map holds one
    /// entry per attacked id; past `negative_max` ids, windows that ended
    /// are dropped first, then all.
    fn count_failure(&self, id: u64, now: i64) {
        let window = crate::clock::duration_ms(self.settings.argon2_failure_window);
        let mut failures = self.failures.lock();
        if failures.len() >= self.settings.negative_max {
            failures.retain(|_, (start, _)| now < start.saturating_add(window));
            if failures.len() >= self.settings.negative_max {
                failures.clear();
            }
        }
        let entry = failures.entry(id).or_insert((now, 0));
        if now >= entry.0.saturating_add(window) {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// Parses a token with the length bound applied first.
pub(super) fn parse_bounded(token: &str) -> Option<ParsedToken<'_>> {
    if token.len() > limits::TOKEN_MAX {
        return None;
    }
    token::parse(token)
}
