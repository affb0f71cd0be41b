//! Sending limits away from the budget's source: a follower spends leases
//! of budget taken from its primary in chunks ([`Budget::chunk`]), and the
//! primary grants them from its own budgets ([`Engine::grant_leases`]).
//!
//! On a follower the hot path spends its lease with one atomic operation
//! (no lock, no await); a lease that falls under half a chunk queues its
//! token, once, for the refill task (`replication::lease`), which asks the
//! primary for what tops it up to one chunk, and gives back leases idle for
//! a second. A decision that finds the lease too short waits (once, at
//! most [`LEASE_WAIT`]) for the next refill round, then decides again. A
//! follower cut off from its primary spends what it holds, then refuses
//! with RATE_LIMITED; past `--stale-after` with `--stale-mode serve` it
//! falls back on its own copy of the budget (each node alone then allows
//! the limit).
//!
//! Part of the engine (layer L4).

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;

use super::Engine;
use crate::ratelimit::{Budget, Outcome};

/// Longest a decision waits for a lease when the one held is too short.
pub const LEASE_WAIT: Duration = Duration::from_millis(250);

/// Rounds (of [`ROUND_EVERY`]) a lease may sit unspent before it is given
/// back.
pub const IDLE_ROUNDS: u32 = 10;

/// How often the refill task runs when nothing asks for it sooner.
pub const ROUND_EVERY: Duration = Duration::from_millis(100);

/// The follower's lease machinery.
#[derive(Debug)]
pub(crate) struct Leases {
    /// Tokens whose lease wants a refill (each queued once until served).
    tx: UnboundedSender<u64>,
    rx: tokio::sync::Mutex<UnboundedReceiver<u64>>,
    /// Refill rounds done: a waiting decision watches it.
    round: watch::Sender<u64>,
}

impl Leases {
    pub(crate) fn new() -> Self {
        let (tx, rx) = unbounded_channel();
        Leases {
            tx,
            rx: tokio::sync::Mutex::new(rx),
            round: watch::Sender::new(0),
        }
    }
}

/// One ask of a follower's refill round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseAsk {
    /// The token.
    pub token_id: u64,
    /// Units wanted.
    pub want: u64,
    /// Unspent units given back.
    pub give_back: u64,
}

/// What a follower knows of a lease it holds: units spent as last seen,
/// and rounds since they moved.
pub type Held = HashMap<u64, (u64, u32)>;

impl Engine {
    /// Takes `cost` from a limited token's budget: here (a primary, a
    /// PostgreSQL node), or from the lease held (a follower). The second
    /// value says a follower's lease was too short (a refill is asked for).
    pub(crate) fn spend(&self, id: u64, b: &Budget, now: i64, cost: u64) -> (Outcome, bool) {
        let Some(f) = self.follower() else {
            return (b.take(now, cost), false);
        };
        let chunk = b.chunk();
        match b.spend_lease(cost) {
            Ok(left) => {
                if left < chunk.div_ceil(2) && b.want() {
                    let _ = self.leases.tx.send(id);
                }
                (outcome(b, true, left, Some(0)), false)
            }
            Err(_) if f.freshness.silence_ms(now) > f.freshness.stale_after_ms => {
                // Cut off past --stale-after and still serving: this
                // node's own copy of the budget decides.
                (b.take(now, cost), false)
            }
            Err(held) => {
                if b.want() {
                    let _ = self.leases.tx.send(id);
                }
                // When one unit comes back at the source, for the cost.
                let wait = b
                    .specs()
                    .iter()
                    .filter(|s| cost <= s.limit)
                    .map(|s| {
                        let per = u128::from(s.period_ms.unsigned_abs()) * u128::from(cost.max(1));
                        i64::try_from(per.div_ceil(u128::from(s.limit))).unwrap_or(i64::MAX)
                    })
                    .max();
                let never = b.specs().iter().any(|s| cost > s.limit);
                (
                    outcome(b, false, held, if never { None } else { wait }),
                    true,
                )
            }
        }
    }

    /// A follower: waits (at most [`LEASE_WAIT`]) for the next refill round.
    pub(crate) async fn wait_for_lease(&self) {
        let mut rx = self.leases.round.subscribe();
        let _ = tokio::time::timeout(LEASE_WAIT, rx.changed()).await;
    }

    /// The refill task's queue (held by one task at a time).
    pub(crate) fn lease_queue(&self) -> &tokio::sync::Mutex<UnboundedReceiver<u64>> {
        &self.leases.rx
    }

    /// A follower's refill round: for `wanted` tokens, what tops their
    /// lease up to one chunk; for leases in `held` unspent for
    /// [`IDLE_ROUNDS`], every unit back (taken out of the lease now).
    pub(crate) fn lease_plan(&self, wanted: &[u64], held: &mut Held) -> Vec<LeaseAsk> {
        let idx = self.index.read();
        let mut asks: HashMap<u64, LeaseAsk> = HashMap::new();
        held.retain(|id, (seen, idle)| {
            let Some(b) = idx.tokens.get(id).and_then(|t| t.budget.as_ref()) else {
                return false;
            };
            let spent = b.spent_from_leases();
            if spent == *seen {
                *idle += 1;
            } else {
                (*seen, *idle) = (spent, 0);
            }
            if *idle >= IDLE_ROUNDS {
                let units = b.take_unspent();
                if units > 0 {
                    asks.insert(
                        *id,
                        LeaseAsk {
                            token_id: *id,
                            want: 0,
                            give_back: units,
                        },
                    );
                }
                return false;
            }
            true
        });
        for id in wanted {
            let Some(b) = idx.tokens.get(id).and_then(|t| t.budget.as_ref()) else {
                continue;
            };
            let want = b.chunk().saturating_sub(b.leased());
            if want == 0 {
                b.served();
                continue;
            }
            let ask = asks.entry(*id).or_insert(LeaseAsk {
                token_id: *id,
                want: 0,
                give_back: 0,
            });
            ask.want = want;
        }
        asks.into_values().collect()
    }

    /// A follower: the primary granted these (token id, units); a token
    /// whose limits changed meanwhile gets them all the same (they were
    /// charged to the limits it had).
    pub(crate) fn lease_granted(&self, grants: &[(u64, u64)], held: &mut Held) {
        let idx = self.index.read();
        let mut taken = 0;
        for &(id, units) in grants {
            if let Some(b) = idx.tokens.get(&id).and_then(|t| t.budget.as_ref()) {
                b.add_lease(units);
                b.served();
                taken += units;
                held.entry(id).or_insert((b.spent_from_leases(), 0));
            }
        }
        self.metrics.leases.taken.increment(taken);
    }

    /// A follower: asks that were not answered (the primary is out of
    /// reach): a later need asks again.
    pub(crate) fn lease_failed(&self, asks: &[LeaseAsk]) {
        let idx = self.index.read();
        for a in asks {
            if let Some(b) = idx.tokens.get(&a.token_id).and_then(|t| t.budget.as_ref()) {
                b.served();
            }
        }
    }

    /// A follower: a refill round is over (waiting decisions look again).
    pub(crate) fn lease_round_done(&self) {
        self.leases.round.send_modify(|r| *r += 1);
    }

    /// A primary: grants leases from its budgets (give-backs first). A
    /// token without limits, or unknown, gets 0.
    pub fn grant_leases(&self, asks: &[LeaseAsk]) -> Vec<(u64, u64)> {
        let now = self.now_ms();
        let idx = self.index.read();
        let (mut taken, mut returned) = (0, 0);
        let out = asks
            .iter()
            .map(|a| {
                let Some(b) = idx.tokens.get(&a.token_id).and_then(|t| t.budget.as_ref()) else {
                    return (a.token_id, 0);
                };
                // A follower never holds more than one chunk: a larger
                // give-back (a bug) cannot refund what others spent.
                let back = a.give_back.min(b.chunk());
                if back > 0 {
                    b.give_back(back);
                    returned += back;
                }
                let granted = if a.want > 0 {
                    b.lease(now, a.want.min(b.chunk()))
                } else {
                    0
                };
                taken += granted;
                (a.token_id, granted)
            })
            .collect();
        self.metrics.leases.taken.increment(taken);
        self.metrics.leases.returned.increment(returned);
        out
    }

    /// A follower: a snapshot replaces the index; leases held move to the
    /// new budgets when their limits are the same (else they are left to
    /// the time that refills them at the primary).
    pub(crate) fn carry_leases(&self, old: &crate::index::Index, new: &crate::index::Index) {
        for t in new.tokens.values() {
            let (Some(nb), Some(ob)) = (
                t.budget.as_ref(),
                old.tokens.get(&t.id).and_then(|o| o.budget.as_ref()),
            ) else {
                continue;
            };
            if !std::sync::Arc::ptr_eq(nb, ob) && nb.same_limits(ob.specs(), ob.names()) {
                nb.add_lease(ob.take_unspent());
            }
        }
    }
}

fn outcome(b: &Budget, allowed: bool, left: u64, retry_after_ms: Option<i64>) -> Outcome {
    let tightest = b
        .specs()
        .iter()
        .enumerate()
        .min_by_key(|(_, s)| s.limit)
        .map_or(0, |(i, _)| i);
    Outcome {
        allowed,
        remaining: left,
        retry_after_ms: if allowed { Some(0) } else { retry_after_ms },
        tightest,
        reset_ms: b.specs().get(tightest).map_or(0, |s| s.period_ms),
    }
}
