//! Sending limits: the budget of one token, as GCRA (the generic cell rate
//! algorithm, a token bucket kept as one "theoretical arrival time" per
//! limit).
//!
//! A limit of `limit` per `period` is a bucket of `limit` units refilled
//! continuously at `limit / period`: a burst of `limit` is allowed at once,
//! then one unit every `period / limit`. Over any interval of length `t`,
//! at most `limit + t * limit / period` units pass. The arithmetic is exact:
//! each limit's time is kept in "milliseconds × limit" (an u128), so one
//! unit costs exactly `period_ms` and nothing is rounded.
//!
//! A token's limits are taken all or nothing (every limit has the cost, or
//! none is charged). The state of one token sits behind its own small
//! mutex: no lock is shared by two tokens.
//!
//! Layer L0: imports nothing of keyward.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

/// Most limits on one token.
pub const LIMITS_MAX: usize = 8;
/// Shortest period, in ms.
pub const PERIOD_MIN_MS: i64 = 1000;
/// Longest period (31 days), in ms.
pub const PERIOD_MAX_MS: i64 = 31 * 24 * 3600 * 1000;
/// Largest limit.
pub const LIMIT_MAX: u64 = 1_000_000_000_000;

/// One limit: `limit` units per `period_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// Units per period, 1..=[`LIMIT_MAX`].
    pub limit: u64,
    /// The period, [`PERIOD_MIN_MS`]..=[`PERIOD_MAX_MS`].
    pub period_ms: i64,
}

impl Spec {
    /// One unit, in scaled time (ms × limit).
    fn unit(self) -> u128 {
        u128::from(self.period_ms.unsigned_abs())
    }
    /// The whole bucket, in scaled time.
    fn capacity(self) -> u128 {
        self.unit() * u128::from(self.limit)
    }
    /// `ms` in scaled time.
    fn scaled(self, ms: i64) -> u128 {
        u128::from(ms.max(0).unsigned_abs()) * u128::from(self.limit)
    }
}

/// What a take decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Every limit had the cost (and was charged, unless it was a peek).
    pub allowed: bool,
    /// Units left in the tightest limit after this take (before it, when
    /// refused).
    pub remaining: u64,
    /// Refused: ms until the cost fits every limit (`None`: never, the cost
    /// is above a limit). Allowed: `Some(0)`.
    pub retry_after_ms: Option<i64>,
    /// The tightest limit (the one with the fewest units left): its index.
    pub tightest: usize,
    /// ms until the tightest limit is full again.
    pub reset_ms: i64,
}

/// The budget of one token (and of the token that replaced it by a reset,
/// which shares it during the grace period).
#[derive(Debug)]
pub struct Budget {
    specs: Box<[Spec]>,
    /// The limits' names, by position (empty when not named).
    names: Box<[Box<str>]>,
    /// Per limit: the theoretical arrival time, in scaled time; then, per
    /// limit, what it was when last saved (the second half).
    tat: Mutex<Box<[u128]>>,
    /// Charged (or given back) since the last [`Budget::take_dirty`]: the
    /// persisted state is behind.
    dirty: AtomicBool,
    /// Spent a sixteenth of some limit since the last save: a crash now
    /// would lose more than that, so the persister writes it at once.
    due: AtomicBool,
    /// A follower: units leased from the primary and not spent yet
    /// (already charged to every limit there).
    leased: AtomicU64,
    /// A follower: a refill of the lease was asked for and not served yet.
    wanted: AtomicBool,
    /// A node that leases: the largest cost that found the lease short
    /// since the last refill (a cost above a chunk asks for that much).
    need: AtomicU64,
    /// A node that leases: when (engine clock, ms) a spend last found the
    /// lease short, and when the refill in flight was planned: a grant
    /// planned before a later shortage is asked again (once), so a
    /// decision never waits on an answer from before its time.
    short_at: AtomicI64,
    asked_at: AtomicI64,
    /// A follower: units spent from leases, ever (tells an idle lease).
    spent: AtomicU64,
    /// A node spending leases: units the source had left (tightest limit)
    /// when it last granted, for `remaining` (an estimate: other nodes
    /// spend meanwhile).
    source_left: AtomicU64,
    /// A node that leases: units leased for the limits this budget
    /// replaced (an update changed them), owed back to the source with
    /// the next ask (they were charged there under the old limits).
    owed: AtomicU64,
    /// Where a shared store keeps this budget: the id of the token it was
    /// first made for (a reset's new token shares its old token's).
    key: u64,
}

/// Largest lease chunk.
pub const CHUNK_MAX: u64 = 1024;

impl Budget {
    /// A full budget for `specs` (1..=[`LIMITS_MAX`], each within bounds:
    /// the caller validated them).
    pub fn new(specs: &[Spec]) -> Self {
        Budget {
            specs: specs.into(),
            names: Box::default(),
            tat: Mutex::new(vec![0; 2 * specs.len()].into()),
            dirty: AtomicBool::new(false),
            due: AtomicBool::new(false),
            leased: AtomicU64::new(0),
            wanted: AtomicBool::new(false),
            need: AtomicU64::new(0),
            short_at: AtomicI64::new(0),
            asked_at: AtomicI64::new(0),
            spent: AtomicU64::new(0),
            source_left: AtomicU64::new(0),
            owed: AtomicU64::new(0),
            key: 0,
        }
    }

    /// The same budget, kept under `key` in a shared store.
    #[must_use]
    pub fn with_key(mut self, key: u64) -> Self {
        self.key = key;
        self
    }

    /// Where a shared store keeps it (see [`Budget::with_key`]).
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The same budget with its limits named (by position).
    pub fn with_names(mut self, names: Vec<Box<str>>) -> Self {
        self.names = names.into();
        self
    }

    /// The limits.
    pub fn specs(&self) -> &[Spec] {
        &self.specs
    }

    /// The limits' names, by position (empty when not named).
    pub fn names(&self) -> &[Box<str>] {
        &self.names
    }

    /// Whether `specs` named `names` are exactly this budget's limits.
    pub fn same_limits(&self, specs: &[Spec], names: &[Box<str>]) -> bool {
        *self.specs == *specs && *self.names == *names
    }

    /// Whether it was charged since the last call (and clears the mark):
    /// a persister calls it before [`Budget::save`], so that a charge
    /// racing the save marks it again.
    pub fn take_dirty(&self) -> bool {
        self.due.store(false, Ordering::Relaxed);
        self.dirty.swap(false, Ordering::Relaxed)
    }

    /// Whether a sixteenth of some limit was spent since the last save.
    pub fn is_due(&self) -> bool {
        self.due.load(Ordering::Relaxed)
    }

    /// After a charge (under the lock): due when a limit moved by a
    /// sixteenth of its capacity since saved.
    fn check_due(&self, tat: &[u128]) {
        if self.due.load(Ordering::Relaxed) {
            return;
        }
        let n = self.specs.len();
        if self
            .specs
            .iter()
            .enumerate()
            .any(|(i, spec)| tat[i] >= tat[n + i] + spec.capacity() / 16)
        {
            self.due.store(true, Ordering::Relaxed);
        }
    }

    /// Whether it was charged since the last [`Budget::take_dirty`].
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Relaxed)
    }

    fn mark(&self) {
        if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Marks it charged and due again (a save that did not commit).
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Relaxed);
        self.due.store(true, Ordering::Relaxed);
    }

    /// Takes `cost` units from every limit at `now_ms`, all or nothing.
    /// A cost of 0 is a peek: allowed when one unit would be, nothing
    /// charged.
    pub fn take(&self, now_ms: i64, cost: u64) -> Outcome {
        let peek = cost == 0;
        let cost = cost.max(1);
        let mut tat = self.tat.lock();
        let mut allowed = true;
        let mut wait: u128 = 0;
        let mut never = false;
        for (spec, t) in self.specs.iter().zip(tat.iter()) {
            let now = spec.scaled(now_ms);
            let next = (*t).max(now) + spec.unit() * u128::from(cost);
            let over = (next - now).saturating_sub(spec.capacity());
            if over > 0 {
                allowed = false;
                if cost > spec.limit {
                    never = true;
                }
                // Scaled time back to ms, rounded up.
                wait = wait.max(over.div_ceil(u128::from(spec.limit)));
            }
        }
        if allowed && !peek {
            for (spec, t) in self.specs.iter().zip(tat.iter_mut()) {
                let now = spec.scaled(now_ms);
                *t = (*t).max(now) + spec.unit() * u128::from(cost);
            }
            self.mark();
            self.check_due(&tat);
        }
        let (tightest, remaining, reset_ms) = Self::tightest(&self.specs, &tat, now_ms);
        Outcome {
            allowed,
            remaining,
            retry_after_ms: if allowed {
                Some(0)
            } else if never {
                None
            } else {
                Some(i64::try_from(wait).unwrap_or(i64::MAX))
            },
            tightest,
            reset_ms,
        }
    }

    /// Takes up to `want` units (as many as every limit has, maybe 0): a
    /// lease for a node that spends them locally. Returns how many.
    pub fn lease(&self, now_ms: i64, want: u64) -> u64 {
        let mut tat = self.tat.lock();
        let mut grant = want;
        for (spec, t) in self.specs.iter().zip(tat.iter()) {
            let now = spec.scaled(now_ms);
            let used = (*t).max(now) - now;
            let left = spec.capacity().saturating_sub(used) / spec.unit();
            grant = grant.min(u64::try_from(left).unwrap_or(u64::MAX));
        }
        if grant > 0 {
            for (spec, t) in self.specs.iter().zip(tat.iter_mut()) {
                let now = spec.scaled(now_ms);
                *t = (*t).max(now) + spec.unit() * u128::from(grant);
            }
            self.mark();
            self.check_due(&tat);
        }
        grant
    }

    /// Gives back `units` taken by [`Budget::lease`] and not spent.
    pub fn give_back(&self, units: u64) {
        let mut tat = self.tat.lock();
        for (spec, t) in self.specs.iter().zip(tat.iter_mut()) {
            *t = t.saturating_sub(spec.unit() * u128::from(units));
        }
        self.mark();
    }

    /// Units left in the tightest limit at `now_ms`.
    pub fn remaining(&self, now_ms: i64) -> u64 {
        let tat = self.tat.lock();
        Self::tightest(&self.specs, &tat, now_ms).1
    }

    /// Per limit, when its bucket is full again, in unix ms rounded up (0:
    /// full now): what is persisted, so a restart never refills a budget.
    pub fn save(&self) -> Vec<i64> {
        let mut tat = self.tat.lock();
        let n = self.specs.len();
        let (now, saved) = tat.split_at_mut(n);
        saved.copy_from_slice(now);
        self.specs
            .iter()
            .zip(now.iter())
            .map(|(spec, t)| i64::try_from(t.div_ceil(u128::from(spec.limit))).unwrap_or(i64::MAX))
            .collect()
    }

    /// What [`Budget::save`] gives, without marking it saved.
    pub fn full_at_ms(&self) -> Vec<i64> {
        let tat = self.tat.lock();
        self.specs
            .iter()
            .zip(tat.iter())
            .map(|(spec, t)| i64::try_from(t.div_ceil(u128::from(spec.limit))).unwrap_or(i64::MAX))
            .collect()
    }

    /// Restores what [`Budget::save`] gave (a shorter or longer list is
    /// matched by position; extra values are ignored). Never makes the
    /// budget fuller than it is.
    pub fn restore(&self, saved: &[i64]) {
        let mut tat = self.tat.lock();
        for ((spec, t), ms) in self.specs.iter().zip(tat.iter_mut()).zip(saved) {
            // Saved times are rounded up to the millisecond: the state
            // they came from is at least `ms·limit - (limit - 1)` in
            // scaled time. Restoring that lower bound never charges what
            // was not spent (the rounding once cost a whole unit when a
            // record came back into a live budget).
            let floor = spec.scaled(*ms).saturating_sub(u128::from(spec.limit) - 1);
            *t = (*t).max(floor);
        }
    }

    /// A budget for `specs` that keeps the state of the limits `self` has
    /// with the same spec (by position of equal specs), e.g. after an
    /// update that added a limit.
    pub fn carried(&self, specs: &[Spec]) -> Self {
        let old = self.tat.lock();
        let tat = specs
            .iter()
            .map(|s| self.specs.iter().position(|o| o == s).map_or(0, |i| old[i]))
            .chain(specs.iter().map(|_| 0))
            .collect();
        Budget {
            specs: specs.into(),
            names: Box::default(),
            tat: Mutex::new(tat),
            dirty: AtomicBool::new(true),
            due: AtomicBool::new(true),
            leased: AtomicU64::new(0),
            wanted: AtomicBool::new(false),
            need: AtomicU64::new(0),
            short_at: AtomicI64::new(0),
            asked_at: AtomicI64::new(0),
            spent: AtomicU64::new(0),
            source_left: AtomicU64::new(0),
            owed: AtomicU64::new(0),
            key: self.key,
        }
    }

    /// The lease chunk of a node that spends this budget away from its
    /// source: a sixteenth of the smallest limit, 1..=[`CHUNK_MAX`]. A
    /// node never holds more than one chunk.
    pub fn chunk(&self) -> u64 {
        let smallest = self.specs.iter().map(|s| s.limit).min().unwrap_or(1);
        (smallest / 16).clamp(1, CHUNK_MAX)
    }

    /// Spends `cost` units of the lease (0: whether one unit is there,
    /// spending nothing), with no lock: Ok(units left) or Err(units held,
    /// too few).
    pub fn spend_lease(&self, cost: u64) -> Result<u64, u64> {
        let need = cost.max(1);
        let mut cur = self.leased.load(Ordering::Acquire);
        loop {
            if cur < need {
                return Err(cur);
            }
            if cost == 0 {
                return Ok(cur);
            }
            match self.leased.compare_exchange_weak(
                cur,
                cur - cost,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.spent.fetch_add(cost, Ordering::Relaxed);
                    return Ok(cur - cost);
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Adds `units` granted by the source to the lease; the source had
    /// `source_left` units left after granting them.
    pub fn add_lease(&self, units: u64, source_left: u64) {
        self.source_left.store(source_left, Ordering::Relaxed);
        self.leased.fetch_add(units, Ordering::AcqRel);
    }

    /// Puts `units` spent from the lease back into it (a refund).
    pub fn unspend_lease(&self, units: u64) {
        self.leased.fetch_add(units, Ordering::AcqRel);
    }

    /// What a node spending leases tells as `remaining` after leaving
    /// `held` units in its lease: those, and what the source had left
    /// when it last granted.
    pub fn estimate(&self, held: u64) -> u64 {
        held.saturating_add(self.source_left.load(Ordering::Relaxed))
    }

    /// Takes every unspent leased unit (to give them back), those owed
    /// for replaced limits included.
    pub fn take_unspent(&self) -> u64 {
        self.leased.swap(0, Ordering::AcqRel) + self.take_owed()
    }

    /// A node that leases: this budget replaced `old` (an update changed
    /// its limits): what `old` held unspent is owed back to the source.
    pub fn owe_back(&self, old: &Budget) {
        self.owed.fetch_add(old.take_unspent(), Ordering::AcqRel);
    }

    /// Takes the units owed back (see [`Budget::owe_back`]).
    pub fn take_owed(&self) -> u64 {
        self.owed.swap(0, Ordering::AcqRel)
    }

    /// Units leased and not spent.
    pub fn leased(&self) -> u64 {
        self.leased.load(Ordering::Acquire)
    }

    /// Units spent from leases, ever.
    pub fn spent_from_leases(&self) -> u64 {
        self.spent.load(Ordering::Relaxed)
    }

    /// Marks a refill as wanted; true when it was not yet (the caller
    /// then queues the token, once).
    pub fn want(&self) -> bool {
        !self.wanted.load(Ordering::Relaxed) && !self.wanted.swap(true, Ordering::AcqRel)
    }

    /// The refill was served (or given up): a later need asks again.
    pub fn served(&self) {
        self.need.store(0, Ordering::Relaxed);
        self.wanted.store(false, Ordering::Release);
    }

    /// Whether a refill was asked for and not served yet.
    pub fn is_wanted(&self) -> bool {
        self.wanted.load(Ordering::Acquire)
    }

    /// A cost of `cost` found the lease short at `now_ms`.
    pub fn need(&self, cost: u64, now_ms: i64) {
        self.need.fetch_max(cost, Ordering::Relaxed);
        self.short_at.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// A refill is planned at `now_ms`.
    pub fn asking(&self, now_ms: i64) {
        self.asked_at.store(now_ms, Ordering::Relaxed);
    }

    /// Whether the lease is still short of what was needed, and worth
    /// asking again: the source gave something, or the shortage came
    /// after the refill was planned.
    pub fn ask_again(&self, granted: u64) -> bool {
        self.leased() < self.needed()
            && (granted > 0
                || self.short_at.load(Ordering::Relaxed) > self.asked_at.load(Ordering::Relaxed))
    }

    /// The largest cost that found the lease short since the last refill.
    pub fn needed(&self) -> u64 {
        self.need.load(Ordering::Relaxed)
    }

    /// The most a node may lease (or give back) at once: its smallest
    /// limit (a chunk, or one cost above a chunk, is what nodes ask for).
    pub fn lease_cap(&self) -> u64 {
        self.specs.iter().map(|s| s.limit).min().unwrap_or(1)
    }

    fn tightest(specs: &[Spec], tat: &[u128], now_ms: i64) -> (usize, u64, i64) {
        let mut best = (0, u64::MAX, 0);
        for (i, (spec, t)) in specs.iter().zip(tat).enumerate() {
            let now = spec.scaled(now_ms);
            let used = (*t).max(now) - now;
            let left = u64::try_from(spec.capacity().saturating_sub(used) / spec.unit())
                .unwrap_or(u64::MAX);
            if left < best.1 {
                let reset =
                    i64::try_from(used.div_ceil(u128::from(spec.limit))).unwrap_or(i64::MAX);
                best = (i, left, reset);
            }
        }
        best
    }
}

pub mod shared;

#[cfg(test)]
mod tests;
