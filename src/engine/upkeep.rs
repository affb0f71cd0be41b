//! Upkeep: persisting what the hot path learnt (verified digests, last-use
//! times), purging expired tokens, and the counters of costly work that
//! tests and benchmarks compare across an attack.
//!
//! Part of the engine (layer L4): imports the vocabulary and `index`.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Engine;
use crate::error::Result;
use crate::index::{Change, TokenState};

/// Costly work an engine did: what an attacker would try to make it do.
#[derive(Debug, Default)]
pub(super) struct WorkCounters {
    /// argon2 hashes of new secrets.
    pub(super) hashes: AtomicU64,
    /// argon2 verifies run (either outcome).
    pub(super) verifies: AtomicU64,
    /// Catch-ups with the shared store for callers whose token was newer
    /// than the index.
    pub(super) unseen_catch_ups: AtomicU64,
    /// Token records the usage writer wrote.
    pub(super) usage_records: AtomicU64,
    /// Commits the usage writer made for them.
    pub(super) usage_commits: AtomicU64,
}

/// A reading of the engine's work counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Work {
    /// argon2 hashes of new secrets.
    pub hashes: u64,
    /// argon2 verifies run (either outcome).
    pub verifies: u64,
    /// Catch-ups with the shared store for callers with an unseen token id.
    pub unseen_catch_ups: u64,
    /// Token records the usage writer wrote (periodically and at stop).
    pub usage_records: u64,
    /// Commits the usage writer made for them.
    pub usage_commits: u64,
}

impl Engine {
    /// The costly work this engine has done since it started.
    pub fn work(&self) -> Work {
        let w = &self.work;
        Work {
            hashes: w.hashes.load(Ordering::Relaxed),
            verifies: w.verifies.load(Ordering::Relaxed),
            unseen_catch_ups: w.unseen_catch_ups.load(Ordering::Relaxed),
            usage_records: w.usage_records.load(Ordering::Relaxed),
            usage_commits: w.usage_commits.load(Ordering::Relaxed),
        }
    }

    /// Persists what the hot path learnt: verified digests, last-use
    /// times that moved by at least `granularity_ms` since stored (0 at
    /// shutdown: everything), and the state of sending-limit budgets
    /// charged since their last save (so a restart never refills one), at
    /// most `max` tokens per call. Writes go to the store in chunks, with
    /// no index write lock, so Authorize never waits on them. Returns
    /// tokens written.
    ///
    /// This runs on the caller's task: at shutdown (`server::run` calls
    /// it with 0 and `usize::MAX` once serving has stopped) and in tests.
    /// While serving, the usage writer ([`Engine::write_usage`]) does the
    /// same work in small paced steps.
    pub async fn persist_usage(&self, granularity_ms: i64, max: usize) -> Result<usize> {
        // Ids first (cheap), records chunk by chunk, each its own commit.
        let due: Vec<u64> = {
            let idx = self.index.read();
            idx.tokens
                .values()
                .filter(|t| usage_due(t, granularity_ms))
                .map(TokenState::id)
                .take(max)
                .collect()
        };
        self.persist_ids(&due).await
    }

    /// Writes the usage of tokens `ids` (those still there), 256 to a
    /// commit, each taking the writer lock like any mutation. Returns
    /// tokens written.
    pub(super) async fn persist_ids(&self, ids: &[u64]) -> Result<usize> {
        let mut written = 0;
        for ids in ids.chunks(256) {
            // Records are built after the write lock is taken: on a shared
            // store the index is then current, and on any store no
            // mutation can commit between the build and this commit, so no
            // record written here can undo an edit.
            let guard = self.write_lock().await?;
            let chunk = self.usage_records(ids);
            let n = chunk.len();
            if n > 0 {
                if let Err(e) = self.commit_as(guard, chunk, true).await {
                    tracing::warn!(error = %e, "persisting last-use times failed");
                    self.usage_not_saved(ids);
                    return Err(e);
                }
                self.count_usage(n);
            }
            written += n;
            tokio::task::yield_now().await;
        }
        Ok(written)
    }

    /// The records of tokens `ids` (those still there) as the usage writer
    /// stores them, their budgets marked saved. Call with the write lock
    /// held (see [`Engine::persist_usage`]); takes the index's read lock.
    pub(super) fn usage_records(&self, ids: &[u64]) -> Vec<Change> {
        let idx = self.index.read();
        ids.iter()
            .filter_map(|id| idx.tokens.get(id))
            .map(|t| {
                // Cleared before the save: a charge racing it marks the
                // budget again, for the next run. A budget shared by a
                // reset's two tokens is saved with both (each was chosen).
                let mut r = t.to_record(&self.key);
                if let Some(b) = &t.budget {
                    b.take_dirty();
                    r.rate_full_at_ms = b.save();
                }
                Change::PutToken(r)
            })
            .collect()
    }

    /// A usage commit of tokens `ids` failed: their budgets are due again.
    pub(super) fn usage_not_saved(&self, ids: &[u64]) {
        let idx = self.index.read();
        for b in ids
            .iter()
            .filter_map(|id| idx.tokens.get(id)?.budget.as_ref())
        {
            b.mark_dirty();
        }
    }

    /// Counts one usage commit of `records` token records.
    pub(super) fn count_usage(&self, records: usize) {
        let w = &self.work;
        w.usage_records.fetch_add(records as u64, Ordering::Relaxed);
        w.usage_commits.fetch_add(1, Ordering::Relaxed);
        self.metrics.store.usage_records.increment(records as u64);
        self.metrics.store.usage_commits.increment(1);
    }

    /// Deletes tokens expired for longer than `purge_after`. Returns how many.
    pub async fn purge_expired(&self) -> Result<usize> {
        let w = self.write_lock().await?;
        let horizon = self
            .now_ms()
            .saturating_sub(crate::clock::duration_ms(self.settings.purge_after));
        let changes: Vec<Change> = {
            let idx = self.index.read();
            idx.tokens
                .values()
                .filter(|t| t.expires_at_ms().is_some_and(|e| e <= horizon))
                .map(|t| Change::DeleteToken(t.id()))
                .collect()
        };
        let n = changes.len();
        if n > 0 {
            self.commit(w, changes).await?;
            tracing::info!(purged = n, "purged expired tokens");
        }
        Ok(n)
    }
}

/// Whether token `t` has something for the usage writer: a verified
/// digest not stored yet; a sending-limit budget with a sixteenth of a
/// limit spent since saved (or, at shutdown, any charge); a last use that
/// moved by more than `granularity_ms` since stored (0: any move).
pub(super) fn usage_due(t: &TokenState, granularity_ms: i64) -> bool {
    t.digest_unsaved.load(Ordering::Relaxed)
        // A budget is written when a sixteenth of a limit was spent since
        // saved; otherwise with its token's last use (a charge is a use),
        // and all at shutdown.
        || t.budget
            .as_ref()
            .is_some_and(|b| b.is_due() || (granularity_ms <= 0 && b.is_dirty()))
        || t.use_unsaved(granularity_ms)
}
