//! Upkeep: persisting what the hot path learnt (verified digests, last-use
//! times), purging expired tokens, and the counters of costly work that
//! tests and benchmarks compare across an attack.
//!
//! Part of the engine (layer L4): imports the vocabulary and `index`.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Engine;
use crate::error::Result;
use crate::index::Change;

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
}

impl Engine {
    /// The costly work this engine has done since it started.
    pub fn work(&self) -> Work {
        let w = &self.work;
        Work {
            hashes: w.hashes.load(Ordering::Relaxed),
            verifies: w.verifies.load(Ordering::Relaxed),
            unseen_catch_ups: w.unseen_catch_ups.load(Ordering::Relaxed),
        }
    }

    /// Persists what the hot path learnt: verified digests, last-use
    /// times that moved by at least `granularity_ms` since stored (0 at
    /// shutdown: everything), and the state of sending-limit budgets
    /// charged since their last save (so a restart never refills one), at most `max` tokens per call (the rest on the
    /// next call, so the work comes in small slices). Writes go to the store
    /// in chunks, with no index write lock, so Authorize never waits on
    /// them. Returns tokens written.
    pub async fn persist_usage(&self, granularity_ms: i64, max: usize) -> Result<usize> {
        // Ids first (cheap), records chunk by chunk, each its own commit:
        // the hot path never waits behind a long scan, and the runtime gets
        // a turn between chunks.
        let due: Vec<u64> = {
            let idx = self.index.read();
            idx.tokens
                .values()
                .filter(|t| {
                    t.digest_unsaved.load(Ordering::Relaxed)
                        // A budget is written when a sixteenth of a limit
                        // was spent since saved; otherwise with its
                        // token's last use (a charge is a use), and all at
                        // shutdown.
                        || t.budget.as_ref().is_some_and(|b| {
                            b.is_due() || (granularity_ms <= 0 && b.is_dirty())
                        })
                        || t.use_unsaved(granularity_ms)
                })
                .map(|t| t.id())
                .take(max)
                .collect()
        };
        let mut written = 0;
        for ids in due.chunks(256) {
            // Records are built after the write lock is taken: on a shared
            // store the index is then current, so no record written here
            // can undo another node's edit.
            let guard = self.write_lock().await?;
            let chunk: Vec<Change> = {
                let idx = self.index.read();
                ids.iter()
                    .filter_map(|id| idx.tokens.get(id))
                    .map(|t| {
                        // Cleared before the save: a charge racing it
                        // marks the budget again, for the next run. A
                        // budget shared by a reset's two tokens is saved
                        // with both (each was chosen above).
                        let mut r = t.to_record(&self.key);
                        if let Some(b) = &t.budget {
                            b.take_dirty();
                            r.rate_full_at_ms = b.save();
                        }
                        Change::PutToken(r)
                    })
                    .collect()
            };
            let n = chunk.len();
            if n > 0 {
                if let Err(e) = self.commit_as(guard, chunk, true).await {
                    tracing::warn!(error = %e, "persisting last-use times failed");
                    // Not saved after all: the budgets are due again.
                    let idx = self.index.read();
                    for b in ids
                        .iter()
                        .filter_map(|id| idx.tokens.get(id)?.budget.as_ref())
                    {
                        b.mark_dirty();
                    }
                    return Err(e);
                }
            }
            written += n;
            tokio::task::yield_now().await;
        }
        Ok(written)
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
