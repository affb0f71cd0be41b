//! Sending limits away from the budget's source: a follower spends leases
//! of budget taken from its primary in chunks ([`Budget::chunk`]), and the
//! primary grants them from its own budgets ([`Engine::grant_leases`]); a
//! PostgreSQL node spends leases taken from the budgets the database keeps
//! ([`StoreLeases`], [`crate::ratelimit::shared`]), and grants its own
//! followers' asks from there too.
//!
//! On a node that leases, the hot path spends its lease with one atomic
//! operation (no lock, no await); a lease that falls under half a chunk
//! queues its token, once, for the refill task ([`Engine::refill_leases`]),
//! which asks the source for what tops it up to one chunk, and gives back
//! leases idle for a second (and all of them when the node stops). A
//! decision that finds the lease too short waits (once, at most
//! [`LEASE_WAIT`]) for the next refill round, then decides again. A node
//! cut off from its source spends what it holds, then refuses with
//! RATE_LIMITED; past `--stale-after` with `--stale-mode serve` it falls
//! back on its own copy of the budget (each node alone then allows the
//! limit).
//!
//! Part of the engine (layer L4).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;

use super::Engine;
use crate::error::Result;
use crate::ratelimit::{Budget, Outcome};
use crate::store::{BoxFuture, BudgetAsk};

/// Longest a decision waits for a lease when the one held is too short.
pub const LEASE_WAIT: Duration = Duration::from_millis(250);

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

/// What a source granted for one ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The token.
    pub token_id: u64,
    /// Units granted.
    pub granted: u64,
    /// Units the source had left in the tightest limit after the grant.
    pub remaining: u64,
}

/// Where a node's leases come from: its primary (`replication`) or the
/// database it shares ([`StoreLeases`]).
pub trait LeaseSource: Send {
    /// Asks at most this many per call.
    fn batch(&self) -> usize;
    /// Gives back, then grants, per ask; Err says what failed.
    fn ask<'a>(
        &'a mut self,
        engine: &'a Engine,
        asks: &'a [LeaseAsk],
    ) -> BoxFuture<'a, std::result::Result<Vec<LeaseGrant>, String>>;
}

/// A PostgreSQL node's leases: from the budgets its database keeps.
#[derive(Debug, Clone, Copy)]
pub struct StoreLeases;

impl LeaseSource for StoreLeases {
    fn batch(&self) -> usize {
        1024
    }
    fn ask<'a>(
        &'a mut self,
        engine: &'a Engine,
        asks: &'a [LeaseAsk],
    ) -> BoxFuture<'a, std::result::Result<Vec<LeaseGrant>, String>> {
        Box::pin(async move {
            engine
                .lease_from_store(asks)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// What a follower knows of a lease it holds: units spent as last seen,
/// and rounds since they moved.
pub type Held = HashMap<u64, (u64, u32)>;

impl Engine {
    /// Takes `cost` from a limited token's budget: here (a primary, a
    /// PostgreSQL node), or from the lease held (a follower). The second
    /// value says a follower's lease was too short (a refill is asked for).
    pub(crate) fn spend(&self, id: u64, b: &Budget, now: i64, cost: u64) -> (Outcome, bool) {
        let Some(f) = self.leasing() else {
            return (b.take(now, cost), false);
        };
        let chunk = b.chunk();
        match b.spend_lease(cost) {
            Ok(left) => {
                if left < chunk.div_ceil(2) && b.want() {
                    let _ = self.leases.tx.send(id);
                }
                (outcome(b, true, b.estimate(left), Some(0)), false)
            }
            Err(_) if f.silence_ms(now) > f.stale_after_ms => {
                // Cut off past --stale-after and still serving: this
                // node's own copy of the budget decides.
                (b.take(now, cost), false)
            }
            Err(held) => {
                // A cost above a chunk asks for that much.
                b.need(cost, now);
                if b.want() {
                    let _ = self.leases.tx.send(id);
                }
                // When the units missing come back at the source, as far
                // as this node knows what it has left.
                let missing = cost.max(1).saturating_sub(b.estimate(held)).max(1);
                let wait = b
                    .specs()
                    .iter()
                    .filter(|s| cost <= s.limit)
                    .map(|s| {
                        let per = u128::from(s.period_ms.unsigned_abs()) * u128::from(missing);
                        i64::try_from(per.div_ceil(u128::from(s.limit))).unwrap_or(i64::MAX)
                    })
                    .max();
                let never = b.specs().iter().any(|s| cost > s.limit);
                (
                    outcome(b, false, b.estimate(held), if never { None } else { wait }),
                    true,
                )
            }
        }
    }

    /// A node that leases, whose lease for `token_id` ran short: waits
    /// (at most [`LEASE_WAIT`]) until the refill it asked for was served
    /// (granted, refused or failed), not merely until some round ended.
    pub(crate) async fn wait_for_lease(&self, token_id: u64) {
        let Some(b) = self
            .index
            .read()
            .tokens
            .get(&token_id)
            .and_then(|t| t.budget.clone())
        else {
            return;
        };
        let mut rx = self.leases.round.subscribe();
        let _ = tokio::time::timeout(LEASE_WAIT, async {
            while b.is_wanted() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// A follower's refill round: for `wanted` tokens, what tops their
    /// lease up to one chunk; for leases in `held` unspent for
    /// `Settings::lease_idle`, every unit back (taken out of the lease now).
    pub(crate) fn lease_plan(&self, wanted: &[u64], held: &mut Held) -> Vec<LeaseAsk> {
        let now = self.now_ms();
        let idle_rounds = self.settings.lease_idle.as_millis() / ROUND_EVERY.as_millis().max(1);
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
            if u128::from(*idle) >= idle_rounds {
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
        // A reset's two tokens share one budget: one ask tops it up.
        let mut asked: HashSet<*const Budget> = HashSet::new();
        for id in wanted {
            let Some(b) = idx.tokens.get(id).and_then(|t| t.budget.as_ref()) else {
                continue;
            };
            if !asked.insert(std::sync::Arc::as_ptr(b)) {
                b.served();
                continue;
            }
            let want = b.chunk().max(b.needed()).saturating_sub(b.leased());
            let owed = b.take_owed();
            b.asking(now);
            if want == 0 && owed == 0 {
                b.served();
                continue;
            }
            let ask = asks.entry(*id).or_insert(LeaseAsk {
                token_id: *id,
                want: 0,
                give_back: 0,
            });
            ask.want = want;
            ask.give_back += owed;
        }
        asks.into_values().collect()
    }

    /// A follower: the primary granted these (token id, units); a token
    /// whose limits changed meanwhile gets them all the same (they were
    /// charged to the limits it had).
    pub(crate) fn lease_granted(&self, grants: &[LeaseGrant], held: &mut Held) {
        let idx = self.index.read();
        if self.follower().is_some() {
            let taken = grants.iter().map(|g| g.granted).sum();
            self.metrics.leases.taken.increment(taken);
        }
        for g in grants {
            if let Some(b) = idx.tokens.get(&g.token_id).and_then(|t| t.budget.as_ref()) {
                b.add_lease(g.granted, g.remaining);
                if b.ask_again(g.granted) {
                    // Asked before a larger cost (or a later time) found
                    // the lease short: still wanted, asked again.
                    let _ = self.leases.tx.send(g.token_id);
                } else {
                    b.served();
                }
                held.entry(g.token_id).or_insert((b.spent_from_leases(), 0));
            }
        }
    }

    /// A node that leases: asks that were not answered (the source is out
    /// of reach): a later need asks again.
    pub(crate) fn lease_failed(&self, asks: &[LeaseAsk]) {
        let idx = self.index.read();
        for a in asks {
            if let Some(b) = idx.tokens.get(&a.token_id).and_then(|t| t.budget.as_ref()) {
                // Units an idle lease was giving back stay this node's
                // (the source did not take them; were the answer lost
                // after it did, at most those units are counted twice).
                b.unspend_lease(a.give_back);
                b.served();
            }
        }
    }

    /// A follower: a refill round is over (waiting decisions look again).
    pub(crate) fn lease_round_done(&self) {
        self.leases.round.send_modify(|r| *r += 1);
    }

    /// Grants a follower's asks (give-backs first): from this node's own
    /// budgets, or on a PostgreSQL node from the database's. A token
    /// without limits, or unknown, gets 0.
    pub async fn grant(&self, asks: &[LeaseAsk]) -> Result<Vec<LeaseGrant>> {
        if self.shared().is_some() {
            self.lease_from_store(asks).await
        } else {
            Ok(self.grant_leases(asks))
        }
    }

    /// A primary: grants leases from its budgets (give-backs first). A
    /// token without limits, or unknown, gets 0.
    pub fn grant_leases(&self, asks: &[LeaseAsk]) -> Vec<LeaseGrant> {
        let now = self.now_ms();
        let idx = self.index.read();
        let (mut taken, mut returned) = (0, 0);
        let out = asks
            .iter()
            .map(|a| {
                let Some(b) = idx.tokens.get(&a.token_id).and_then(|t| t.budget.as_ref()) else {
                    return LeaseGrant {
                        token_id: a.token_id,
                        granted: 0,
                        remaining: 0,
                    };
                };
                // A follower never holds more than a chunk (or one cost
                // above it): a larger give-back (a bug) cannot refund
                // what others spent.
                let back = a.give_back.min(b.lease_cap());
                if back > 0 {
                    b.give_back(back);
                    returned += back;
                }
                let granted = if a.want > 0 {
                    b.lease(now, a.want.min(b.lease_cap()))
                } else {
                    0
                };
                taken += granted;
                LeaseGrant {
                    token_id: a.token_id,
                    granted,
                    remaining: b.remaining(now),
                }
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
                old.tokens.get(&t.id()).and_then(|o| o.budget.as_ref()),
            ) else {
                continue;
            };
            if !std::sync::Arc::ptr_eq(nb, ob) && nb.same_limits(ob.specs(), ob.names()) {
                nb.unspend_lease(ob.take_unspent());
            }
        }
    }
}

impl Engine {
    /// Leases from the budgets the shared store keeps: for each ask, its
    /// token's budget as this node knows it (a token without limits, or
    /// unknown, gets 0 and nothing is asked for it).
    pub(crate) async fn lease_from_store(&self, asks: &[LeaseAsk]) -> Result<Vec<LeaseGrant>> {
        let (sent, budget_asks): (Vec<usize>, Vec<BudgetAsk>) = {
            let idx = self.index.read();
            asks.iter()
                .enumerate()
                .filter_map(|(i, a)| {
                    let b = idx.tokens.get(&a.token_id)?.budget.as_ref()?;
                    Some((
                        i,
                        BudgetAsk {
                            budget_id: b.key(),
                            specs: b.specs().to_vec(),
                            floor: b.full_at_ms(),
                            want: a.want.min(b.lease_cap()),
                            give_back: a.give_back.min(b.lease_cap()),
                        },
                    ))
                })
                .unzip()
        };
        let got = self
            .store
            .lease(self.now_ms(), &budget_asks)
            .await
            .map_err(|e| super::store_unavailable(&e))?;
        let mut out: Vec<LeaseGrant> = asks
            .iter()
            .map(|a| LeaseGrant {
                token_id: a.token_id,
                granted: 0,
                remaining: 0,
            })
            .collect();
        let (mut taken, mut returned) = (0, 0);
        for ((i, g), ask) in sent.into_iter().zip(got).zip(&budget_asks) {
            out[i].granted = g.granted;
            out[i].remaining = g.remaining;
            taken += g.granted;
            returned += ask.give_back;
        }
        self.metrics.leases.taken.increment(taken);
        self.metrics.leases.returned.increment(returned);
        Ok(out)
    }

    /// A node that leases: refills its leases from `source` until dropped
    /// (a follower's when its connection ends, a PostgreSQL node's when it
    /// stops).
    pub async fn refill_leases(&self, source: &mut dyn LeaseSource) -> Infallible {
        let mut queue = self.leases.rx.lock().await;
        let mut held = Held::new();
        let mut tick = tokio::time::interval(ROUND_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut wanted: Vec<u64> = Vec::new();
        loop {
            tokio::select! {
                Some(id) = queue.recv() => wanted.push(id),
                _ = tick.tick() => {}
            }
            while let Ok(id) = queue.try_recv() {
                wanted.push(id);
            }
            wanted.sort_unstable();
            wanted.dedup();
            let asks = self.lease_plan(&wanted, &mut held);
            wanted.clear();
            for batch in asks.chunks(source.batch().max(1)) {
                match source.ask(self, batch).await {
                    Ok(grants) => self.lease_granted(&grants, &mut held),
                    Err(e) => {
                        self.lease_failed(batch);
                        tracing::warn!(error = %e, "leasing sending-limit budget failed");
                    }
                }
            }
            self.lease_round_done();
        }
    }

    /// A node that leases and stops: gives every unspent unit back to
    /// `source` (so a rollout does not strand a chunk per node until the
    /// budget refills). Returns units given back.
    pub async fn return_leases(&self, source: &mut dyn LeaseSource) -> u64 {
        let asks: Vec<LeaseAsk> = {
            let idx = self.index.read();
            let mut seen: HashSet<*const Budget> = HashSet::new();
            idx.tokens
                .values()
                .filter_map(|t| {
                    let b = t.budget.as_ref()?;
                    if !seen.insert(std::sync::Arc::as_ptr(b)) {
                        return None;
                    }
                    let units = b.take_unspent();
                    (units > 0).then_some(LeaseAsk {
                        token_id: t.id(),
                        want: 0,
                        give_back: units,
                    })
                })
                .collect()
        };
        let mut back = 0;
        for batch in asks.chunks(source.batch().max(1)) {
            match source.ask(self, batch).await {
                Ok(_) => back += batch.iter().map(|a| a.give_back).sum::<u64>(),
                Err(e) => {
                    tracing::warn!(error = %e, "could not give unspent sending-limit leases back");
                    break;
                }
            }
        }
        back
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
