//! The usage writer: what the hot path learnt (last-use times, verified
//! digests, sending-limit budgets) written to the store while a primary
//! serves, in small steps paced over the interval by a thread of its own
//! (`keyward-usage`), each step's work done in short slices on the runtime.
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
//! 1. the scan for due tokens runs as a task on the runtime, under the
//!    index's read lock in sub-slices of [`SCAN_SLICE`] ids (a few µs each,
//!    the order of an Authorize's own hold), yielding to waiting requests
//!    between them: at 1 M tokens a step's ~10,000 ids are ~40 slices;
//! 2. only if some are due, a second task writes them as any mutation does
//!    ([`Engine::persist_ids`]: the writer lock, the store write begun, the
//!    records built from the index as it is then, committed, marked saved):
//!    at most 20 records.
//!
//! The thread only sleeps between steps and waits for the two tasks.
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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::upkeep::usage_due;
use super::Engine;

/// Steps per interval.
pub const STEPS: u32 = 100;

/// Token ids looked at per hold of the index's read lock.
pub const SCAN_SLICE: u64 = 256;

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
    fn usage_gate(&self) {
        let gate = &self.usage_gate;
        if !gate.closed.load(Ordering::Acquire) {
            return;
        }
        gate.parked.store(true, Ordering::Release);
        while gate.closed.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
        gate.parked.store(false, Ordering::Release);
    }

    /// Starts the usage writer of a primary (or a PostgreSQL node): a
    /// thread of its own paces the steps; each step's work runs as tasks
    /// on the current tokio runtime. Err if the thread could not be made.
    pub fn start_usage_writer(self: &Arc<Self>, pace: UsagePace) -> std::io::Result<UsageWriter> {
        let runtime = tokio::runtime::Handle::current();
        let stop = Arc::new(Stop::default());
        let (engine, signal) = (self.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("keyward-usage".into())
            .spawn(move || engine.write_usage(&runtime, pace, &signal))?;
        Ok(UsageWriter {
            stop,
            thread: Some(thread),
        })
    }

    /// The writer's loop: a step every interval / [`STEPS`] until stopped.
    /// A step is two tasks on the runtime, this thread waiting for each:
    /// the scan for due tokens ([`Engine::due_slice`]), then, if it found
    /// any, their write, as any mutation writes ([`Engine::persist_ids`]).
    fn write_usage(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        pace: UsagePace,
        stop: &Stop,
    ) {
        let tick = (pace.every / STEPS).max(Duration::from_millis(1));
        let per_step = pace.max_per_interval.div_ceil(STEPS as usize).max(1);
        let mut cursor = 1;
        let mut next = Instant::now() + tick;
        loop {
            if stop.wait_until(next) {
                return;
            }
            next += tick;
            let engine = self.clone();
            let scan = runtime.spawn(async move {
                let due = engine
                    .due_slice(&mut cursor, per_step, pace.granularity_ms)
                    .await;
                (cursor, due)
            });
            let due = match runtime.block_on(scan) {
                Ok((moved, due)) => {
                    cursor = moved;
                    due
                }
                // The runtime is shutting down.
                Err(_) => return,
            };
            if !due.is_empty() {
                self.usage_gate();
                let engine = self.clone();
                let write = runtime.spawn(async move { engine.persist_ids(&due).await });
                match runtime.block_on(write) {
                    Ok(Ok(_)) => {}
                    // Logged where it failed; the next try waits an interval.
                    Ok(Err(_)) => next = Instant::now() + pace.every,
                    Err(_) => return,
                }
            }
            // Late (the machine was busy): no catching up in a burst.
            next = next.max(Instant::now());
        }
    }

    /// The due tokens among the next 1/[`STEPS`] of the id space from
    /// `cursor` (at most `max`; the cursor stops after the last one taken),
    /// read in sub-slices of [`SCAN_SLICE`] ids, the read lock let go and
    /// the worker yielded between them (requests waiting go first).
    async fn due_slice(&self, cursor: &mut u64, max: usize, granularity_ms: i64) -> Vec<u64> {
        let mut due = Vec::new();
        let mut left = None;
        while due.len() < max {
            {
                let idx = self.index.read();
                // Ids are handed out densely from 1: the table's length.
                let end = idx.next_token_id;
                let left =
                    left.get_or_insert_with(|| end.saturating_sub(1).div_ceil(u64::from(STEPS)));
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
            tokio::task::yield_now().await;
        }
        due
    }
}
