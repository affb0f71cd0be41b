//! Nodes on a shared store (PostgreSQL): how each keeps its in-memory
//! index current with what the other nodes commit.
//!
//! A node loads a consistent snapshot at start, then applies the change
//! table after that revision: woken by `NOTIFY`, and polled every
//! [`POLL`] as a fallback (and as the proof the database is reachable).
//! Its own commits are applied as they are made. Past the staleness bound
//! without reaching the database it fails closed (or serves stale answers,
//! by flag), like a follower. Each node also prunes old change rows.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::Engine;
use crate::store::StoreError;

/// How often a node reads the change table with no notification.
pub const POLL: Duration = Duration::from_secs(1);
/// Commits read per query.
const BATCH: usize = 1024;
/// How often each node prunes old change rows.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// When a source (a PostgreSQL node's database, a follower's primary) was
/// last heard from, and what to do past the staleness bound.
#[derive(Debug)]
pub struct Freshness {
    /// Failing closed after this long without a word from the source.
    pub stale_after_ms: i64,
    /// Keep answering from memory when stale, instead of failing.
    pub serve_stale: bool,
    /// Engine clock, unix ms; 0 never.
    last_heard_ms: AtomicI64,
}

impl Freshness {
    /// Nothing heard yet.
    pub fn new(stale_after: Duration, serve_stale: bool) -> Self {
        Freshness {
            stale_after_ms: crate::clock::duration_ms(stale_after),
            serve_stale,
            last_heard_ms: AtomicI64::new(0),
        }
    }

    /// The source answered at `now_ms`.
    pub fn heard(&self, now_ms: i64) {
        self.last_heard_ms.store(now_ms, Ordering::Release);
    }

    /// Milliseconds since the source last answered.
    pub fn silence_ms(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.last_heard_ms.load(Ordering::Acquire))
    }

    /// Whether answers may be given now: within the bound, or told to
    /// serve stale answers.
    pub fn may_serve(&self, now_ms: i64) -> bool {
        self.serve_stale || self.silence_ms(now_ms) <= self.stale_after_ms
    }
}

/// Keeps `engine` current with the shared store until `stop` resolves.
pub async fn sync(
    engine: Arc<Engine>,
    notify: Arc<tokio::sync::Notify>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut last_prune = tokio::time::Instant::now();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = notify.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
        let m = &engine.metrics.store;
        loop {
            match engine.catch_up(BATCH).await {
                Ok(n) => {
                    if failing {
                        tracing::info!("the database is reachable again");
                        failing = false;
                    }
                    m.remote_commits.increment(n as u64);
                    if n < BATCH {
                        break;
                    }
                }
                Err(StoreError::Horizon) => {
                    m.reloads.increment(1);
                    if let Err(e) = engine.reload().await {
                        tracing::warn!(error = %e, "reloading from the database failed");
                    }
                    break;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "reading the database's changes failed; serving from memory until the staleness bound");
                        failing = true;
                    }
                    m.errors.increment(1);
                    break;
                }
            }
        }
        m.revision.set(engine.applied_revision() as f64);
        if let Some(f) = engine.shared() {
            m.silence_seconds
                .set(f.silence_ms(engine.now_ms()).max(0) as f64 / 1000.0);
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = tokio::time::Instant::now();
            match engine.prune_changes().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(rows = n, "pruned old change rows"),
                Err(e) => tracing::warn!(error = %e, "pruning change rows failed"),
            }
        }
    }
}
