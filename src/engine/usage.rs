//! The usage writer: what the hot path learnt (last-use times, verified
//! digests, sending-limit budgets) written to the store while a primary
//! serves, by a thread of its own (`keyward-usage`) at the lowest
//! scheduling priority, in small steps paced over the interval.
//!
//! Why a thread, and why so: this work used to run once a second on the
//! async worker that answers Authorize (a scan of every token, then up to
//! 2,000 records built and committed in a row), and the slowest answers of
//! a fixed-rate load bunched at that phase of the second (BENCHMARKS.md,
//! "The open-loop tail"). Here it runs under Linux's `SCHED_IDLE`: the
//! kernel gives the core to any normal thread that wakes, so a request
//! arriving while a step runs is answered at once; the step goes on when
//! the core is idle again. Best effort: where the policy is refused the
//! thread runs at normal priority (logged at debug), still off the async
//! workers and paced.
//!
//! Locks, and priority inversion. A thread that may starve must not hold a
//! lock that a latency-critical thread waits for. Each step:
//!
//! 1. takes this node's writer lock (the async mutex every mutation takes
//!    first), waiting in line like any mutation;
//! 2. scans a bounded slice of token ids for due ones, under the index's
//!    read lock in sub-slices of [`SCAN_SLICE`] ids;
//! 3. only if some are due: begins the store write (on PostgreSQL the
//!    database's write lock, and the commits of other nodes applied, so the
//!    index is current), builds at most a hundredth of the interval's
//!    records under the read lock, commits them on this thread (sled's
//!    encoding and tree updates included; the disk flush is the store's
//!    group flush), marks them saved, and lets the lock go.
//!
//! Every index write but one is made under the writer lock, so while this
//! thread holds the index's read lock no writer can be queued behind it
//! (the lock is task-fair: a queued writer would hold up Authorize's
//! readers). The one exception is a digest learnt after an argon2 verify;
//! the read lock is held for a sub-slice or a chunk (tens of µs), and a
//! waiting writer leaves the core to this thread. Authorize never takes
//! the writer lock on sled, so it cannot wait for this thread; a mutation
//! can, for one step: a scan slice and at most 20 records, ~100 µs of CPU.
//! On a core saturated by normal threads `SCHED_IDLE` gets very little CPU
//! (its weight is 3 against a normal thread's 1,024), and a mutation queued
//! behind a step then waits for the scheduler to run it: measured in
//! BENCHMARKS.md. Raising the thread's priority while it holds a lock would
//! bound that, but an unprivileged process may not leave `SCHED_IDLE`
//! (without `CAP_SYS_NICE` or `RLIMIT_NICE`), so it is not done.
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

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::upkeep::usage_due;
use super::{mark_saved, store_unavailable, Engine, WriteGuard};
use crate::error::Result;

/// Steps per interval.
pub const STEPS: u32 = 100;

/// Token ids looked at per hold of the index's read lock.
pub const SCAN_SLICE: u64 = 1024;

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

/// The running usage writer; [`UsageWriter::stop`] ends it (dropping it
/// asks it to end without waiting).
pub struct UsageWriter {
    /// Tells the thread to end.
    stop: Arc<Stop>,
    /// The thread, joined at stop.
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A stop flag the thread sleeps on between steps.
#[derive(Default)]
struct Stop {
    /// Set once the writer must end.
    stopped: Mutex<bool>,
    /// Wakes the thread when `stopped` is set.
    wake: Condvar,
}

impl Stop {
    /// Sleeps until `deadline`; true if told to stop (at once, then).
    fn wait_until(&self, deadline: Instant) -> bool {
        let mut stopped = self.stopped.lock();
        while !*stopped && Instant::now() < deadline {
            let _ = self.wake.wait_until(&mut stopped, deadline);
        }
        *stopped
    }

    fn set(&self) {
        *self.stopped.lock() = true;
        self.wake.notify_all();
    }
}

impl UsageWriter {
    /// Stops the writer after its current step and waits for the thread
    /// to end (off the async workers). What is still due is left to the
    /// shutdown's [`Engine::persist_usage`].
    pub async fn stop(mut self) {
        self.stop.set();
        if let Some(thread) = self.thread.take() {
            if let Ok(Err(_)) = tokio::task::spawn_blocking(move || thread.join()).await {
                tracing::error!("the usage writer thread panicked");
            }
        }
    }
}

impl Drop for UsageWriter {
    fn drop(&mut self) {
        self.stop.set();
    }
}

impl Engine {
    /// Starts the usage writer of a primary (or a PostgreSQL node) on a
    /// thread of its own; its store work is driven through the current
    /// tokio runtime (the writer lock, the disk flush, a database's I/O).
    /// Err if the thread could not be made.
    pub fn start_usage_writer(self: &Arc<Self>, pace: UsagePace) -> std::io::Result<UsageWriter> {
        let runtime = tokio::runtime::Handle::current();
        let stop = Arc::new(Stop::default());
        let (engine, signal) = (self.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("keyward-usage".into())
            .spawn(move || {
                lowest_priority();
                engine.write_usage(&runtime, pace, &signal);
            })?;
        Ok(UsageWriter {
            stop,
            thread: Some(thread),
        })
    }

    /// The writer's loop: a step every interval / [`STEPS`] until stopped.
    fn write_usage(&self, runtime: &tokio::runtime::Handle, pace: UsagePace, stop: &Stop) {
        let tick = (pace.every / STEPS).max(Duration::from_millis(1));
        let per_step = pace.max_per_interval.div_ceil(STEPS as usize).max(1);
        let mut cursor = 1;
        let mut next = Instant::now() + tick;
        loop {
            if stop.wait_until(next) {
                return;
            }
            let step = self.usage_step(&mut cursor, per_step, pace.granularity_ms);
            next += tick;
            if let Err(e) = runtime.block_on(step) {
                tracing::warn!(error = %e, "persisting last-use times failed; will retry");
                next = Instant::now() + pace.every;
            }
            // Late (the machine was busy): no catching up in a burst.
            next = next.max(Instant::now());
        }
    }

    /// One step: looks at the next 1/[`STEPS`] of the token ids from
    /// `cursor` (which it moves on) and writes at most `max` of the due
    /// tokens found in one commit. Returns tokens written.
    async fn usage_step(&self, cursor: &mut u64, max: usize, granularity_ms: i64) -> Result<usize> {
        // The writer lock first: no mutation commits (nor writes the index)
        // until it is let go, see the module doc.
        let local = self.writer.clone().lock_owned().await;
        let due = self.due_slice(cursor, max, granularity_ms);
        if due.is_empty() {
            return Ok(0);
        }
        // Records are built once the store write has begun: on a shared
        // store the index is then current, and on any store no mutation
        // commits in between, so no record written here undoes an edit.
        let WriteGuard { _local: local, txn } = self.begin_write(local).await?;
        let chunk = self.usage_records(&due);
        if chunk.is_empty() {
            return Ok(0);
        }
        let revision = match txn.commit_here(&chunk).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "store commit failed");
                self.usage_not_saved(&due);
                return Err(store_unavailable(&e));
            }
        };
        mark_saved(&self.index.read(), &chunk);
        if revision != 0 {
            // A shared store: every revision is published, in order (still
            // under the writer lock). On sled a usage commit is not.
            self.feed.publish_at(revision, &chunk);
            self.applied.store(revision, Ordering::Release);
        }
        drop(local);
        self.count_usage(chunk.len());
        Ok(chunk.len())
    }

    /// The due tokens among the next 1/[`STEPS`] of the id space from
    /// `cursor` (at most `max`; the cursor stops after the last one taken),
    /// read in sub-slices of [`SCAN_SLICE`] ids, the read lock let go
    /// between them.
    fn due_slice(&self, cursor: &mut u64, max: usize, granularity_ms: i64) -> Vec<u64> {
        let mut due = Vec::new();
        let mut left = None;
        while due.len() < max {
            let idx = self.index.read();
            // Ids are handed out densely from 1: the table's length.
            let end = idx.next_token_id;
            let left = left.get_or_insert_with(|| end.saturating_sub(1).div_ceil(u64::from(STEPS)));
            if *left == 0 {
                break;
            }
            if *cursor >= end || *cursor == 0 {
                *cursor = 1;
            }
            let stop = cursor.saturating_add(SCAN_SLICE.min(*left)).min(end);
            while *cursor < stop && due.len() < max {
                if idx
                    .tokens
                    .get(cursor)
                    .is_some_and(|t| usage_due(t, granularity_ms))
                {
                    due.push(*cursor);
                }
                *cursor += 1;
                *left -= 1;
            }
        }
        due
    }
}

/// Puts the calling thread under `SCHED_IDLE` (Linux): it runs only when
/// no normal thread wants its core. Best effort: refused or elsewhere, it
/// stays at normal priority.
#[allow(unsafe_code)]
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler reads the struct we own, passed by
        // pointer; pid 0 is the calling thread. It changes nothing else.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "usage writer: SCHED_IDLE refused; running at normal priority"
            );
        }
    }
}
