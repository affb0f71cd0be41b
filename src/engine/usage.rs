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
//! lock that a latency-critical thread waits for: on a core saturated by
//! normal threads `SCHED_IDLE` gets very little CPU (its weight is 3
//! against a normal thread's 1,024), so whatever it holds is held for
//! tens of milliseconds of wall time. The first version of this writer
//! held the node's writer lock for a whole step at idle priority, and
//! keyward-bench scenario 18 (PauseToken/ResumeToken beside a saturating
//! Authorize load, BENCHMARKS.md) measured it: a mutation's p50 went from
//! 2.2 ms to 19.4 ms and its p99 from 8.6 ms to 59.6 ms. So a step is split
//! by priority:
//!
//! 1. on this thread, at idle priority: the scan of a bounded slice of
//!    token ids for due ones, under the index's read lock in sub-slices
//!    of [`SCAN_SLICE`] ids (the costly part: a lap of 1 M tokens, ~10,000
//!    ids a step), holding no other lock;
//! 2. only if some are due: a task on the runtime, at normal priority,
//!    writes them as any mutation does ([`Engine::persist_ids`]: the
//!    writer lock, the store write begun, the records built from the
//!    index as it is then, committed, marked saved), while this thread
//!    waits for it. That is at most 20 records: the small part.
//!
//! The one lock the idle thread still holds is the read lock of a
//! sub-slice (256 ids, a few µs of work). A mutation that wants the write
//! lock meanwhile blocks its worker thread until the slice ends; with the
//! workers blocked the core is free and the idle thread finishes at once.
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
/// parks the writer there, as a starved step would be, to show that
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
    /// A step looks for due tokens on this thread (at idle priority, no
    /// lock but the index's read lock in slices) and hands the ones found
    /// to a task on the runtime, at normal priority, which writes them as
    /// any mutation does ([`Engine::persist_ids`]) while this thread waits.
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
            let due = self.due_slice(&mut cursor, per_step, pace.granularity_ms);
            if !due.is_empty() {
                self.usage_gate();
                let engine = self.clone();
                let write = runtime.spawn(async move { engine.persist_ids(&due).await });
                let failed = match runtime.block_on(write) {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(e) => Some(format!("the write task ended: {e}")),
                };
                if let Some(e) = failed {
                    tracing::warn!(error = %e, "persisting last-use times failed; will retry");
                    next = Instant::now() + pace.every;
                }
            }
            // Late (the machine was busy): no catching up in a burst.
            next = next.max(Instant::now());
        }
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
