//! The usage writer: what the hot path learnt (last-use times, verified
//! digests, sending-limit budgets) written to the store while a primary
//! serves, by a task of its own in small steps paced over the interval,
//! each step's work done in short slices.
//!
//! Why so. This work used to run once a second on the async worker that
//! answers Authorize, in one piece (a scan of every token, 22-26 ms at 1 M
//! tokens, then up to 2,000 records built and committed in a row), and the
//! slowest answers of a fixed-rate load bunched at that phase of the second
//! (BENCHMARKS.md, "The open-loop tail"). Then it ran on a thread of the
//! lowest scheduling priority (`SCHED_IDLE`), which holding the node's
//! writer lock for a whole step made a priority inversion: on a core
//! saturated by Authorize that thread got the core only when nothing else
//! wanted it, and keyward-bench scenario 18 (PauseToken/ResumeToken beside
//! a saturating load) measured a mutation's p50 going from 2.2 to 19.4 ms,
//! p99 from 8.6 to 59.6 ms. Scanning on that thread without the writer lock
//! would still have held the index's read lock at idle priority, and a
//! waiting writer (a mutation, another PostgreSQL node's commit applied)
//! blocks every Authorize behind it. So nothing here holds a lock at a
//! priority the rest of the process does not have:
//!
//! 1. the scan for due tokens, under the index's read lock in sub-slices
//!    of [`SCAN_SLICE`] tokens (a few µs each, the order of an Authorize's
//!    own hold; a page of the table holding none is skipped at the cost
//!    of one check), yielding to waiting requests between them: at 1 M
//!    tokens a step's ~10,000 ids are ~40 slices;
//! 2. only if some are due, their write, as any mutation writes
//!    ([`Engine::persist_ids`]: the writer lock, the store write begun, the
//!    records built from the index as it is then, committed, marked saved):
//!    at most 20 records.
//!
//! Pacing: an interval is [`STEPS`] steps, one every interval / 100. A step
//! scans 1/100 of the id space (so a lap of every token takes one interval:
//! a primary with 1 M tokens scans ~10,000 ids a step instead of 1 M at
//! once) and writes at most 1/100 of the interval's budget; the cursor goes
//! on from where it stopped, wrapping around, so no token waits behind
//! others that keep coming due. A step that fails (the store unavailable)
//! waits for the next interval before the next try.
//!
//! Part of the engine (layer L4).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::upkeep::usage_due;
use super::Engine;

/// Steps per interval.
pub const STEPS: u32 = 100;

/// Tokens looked at per hold of the index's read lock.
pub const SCAN_SLICE: usize = 256;

/// A test seam: the point where a step has found due tokens and not yet
/// written them. A test holding [`Engine::park_usage_writer`]'s guard
/// parks the writer there, as a stalled step would be, to show that
/// nothing else waits for it. Otherwise one atomic load per step.
#[derive(Debug, Default)]
pub(super) struct UsageGate {
    /// Set while a test holds the writer.
    closed: AtomicBool,
    /// The writer is waiting at the gate.
    parked: AtomicBool,
}

/// Keeps the usage writer parked until dropped
/// ([`Engine::park_usage_writer`]).
#[derive(Debug)]
pub struct UsageParked<'a>(&'a UsageGate);

impl Drop for UsageParked<'_> {
    fn drop(&mut self) {
        self.0.closed.store(false, Ordering::Release);
    }
}

/// How the usage writer paces its work.
#[derive(Debug, Clone, Copy)]
pub struct UsagePace {
    /// The interval over which a lap of every token is spread
    /// (`--usage-flush-interval`).
    pub every: Duration,
    /// A last use is written when it moved by at least this much since
    /// stored.
    pub granularity_ms: i64,
    /// Most tokens written per interval (a hundredth of it per step).
    pub max_per_interval: usize,
}

impl Engine {
    /// Parks the usage writer at its next step's hand-off (due tokens
    /// found, not yet written) until the guard is dropped. For tests.
    #[doc(hidden)]
    pub fn park_usage_writer(&self) -> UsageParked<'_> {
        self.usage_gate.closed.store(true, Ordering::Release);
        UsageParked(&self.usage_gate)
    }

    /// Whether the usage writer is parked at [`Engine::park_usage_writer`]'s
    /// gate. For tests.
    #[doc(hidden)]
    pub fn usage_writer_parked(&self) -> bool {
        self.usage_gate.parked.load(Ordering::Acquire)
    }

    /// Passes the gate (waits there while a test holds it).
    async fn usage_gate(&self) {
        let gate = &self.usage_gate;
        if !gate.closed.load(Ordering::Acquire) {
            return;
        }
        gate.parked.store(true, Ordering::Release);
        while gate.closed.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        gate.parked.store(false, Ordering::Release);
    }

    /// The usage writer of a primary (or a PostgreSQL node): a step every
    /// interval / [`STEPS`] until `stop` resolves (after the step under
    /// way). A step scans the next 1/[`STEPS`] of the ids
    /// ([`Engine::due_slice`]) and writes the due tokens it found
    /// ([`Engine::persist_ids`]); one that fails waits an interval before
    /// the next. Run it as a task of its own: a step may wait for the
    /// writer lock and the store.
    pub async fn write_usage(self: Arc<Self>, pace: UsagePace, stop: impl Future<Output = ()>) {
        let tick = (pace.every / STEPS).max(Duration::from_millis(1));
        let per_step = pace.max_per_interval.div_ceil(STEPS as usize).max(1);
        let mut cursor = 1;
        let mut next = Instant::now() + tick;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep_until(next) => {}
            }
            next += tick;
            let due = self
                .due_slice(&mut cursor, per_step, pace.granularity_ms)
                .await;
            if !due.is_empty() {
                self.usage_gate().await;
                // A failure is logged where it happened.
                if self.persist_ids(&due).await.is_err() {
                    next = Instant::now() + pace.every;
                }
            }
            // Late (the machine was busy): no catching up in a burst.
            next = next.max(Instant::now());
        }
    }

    /// The due tokens among the next 1/[`STEPS`] of the id space from
    /// `cursor` (at most `max`; the cursor stops after the last one taken),
    /// read in sub-slices of [`SCAN_SLICE`] tokens, the read lock let go and
    /// the worker yielded between them (requests waiting go first).
    async fn due_slice(&self, cursor: &mut u64, max: usize, granularity_ms: i64) -> Vec<u64> {
        let mut due = Vec::new();
        let mut left = None;
        while due.len() < max {
            {
                let idx = self.index.read();
                // Ids are handed out densely from 1 (and none is held at or
                // past the table's end, whatever the counter says).
                let end = idx.next_token_id.min(idx.tokens.id_end());
                let left =
                    left.get_or_insert_with(|| end.saturating_sub(1).div_ceil(u64::from(STEPS)));
                if *left == 0 {
                    break;
                }
                if *cursor >= end || *cursor == 0 {
                    *cursor = 1;
                }
                let start = *cursor;
                let stop = start.saturating_add(*left).min(end);
                // A page holding no token is skipped at the cost of one check.
                let (tokens, next) = idx.tokens.slice(start, stop, SCAN_SLICE);
                *cursor = next;
                for t in tokens {
                    if due.len() == max {
                        *cursor = t.id();
                        break;
                    }
                    if usage_due(t, granularity_ms) {
                        due.push(t.id());
                    }
                }
                *left -= *cursor - start;
            }
            tokio::task::yield_now().await;
        }
        due
    }
}
