//! What replication needs of the engine: on a primary, a consistent start
//! for a watcher ([`Engine::subscribe`]) and the uses followers report
//! ([`Engine::record_uses`]); on a follower, a snapshot put in place of the
//! index ([`Engine::install`]), the primary's commits applied in order
//! ([`Engine::apply_followed`]), and the uses to report
//! ([`Engine::unreported_uses`], [`Engine::mark_reported`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{broadcast, OwnedMutexGuard};

use super::Engine;
use crate::feed::{Batch, Feed};
use crate::index::{Change, Index};

impl Engine {
    /// The feed and a receiver of every commit published from now on, with
    /// commits held back until the returned guard is dropped: what a
    /// watcher is sent first (a snapshot or the missed history) and the
    /// live stream meet with nothing lost or repeated in between.
    pub(crate) async fn subscribe(
        &self,
    ) -> (
        Arc<Feed>,
        broadcast::Receiver<Arc<Batch>>,
        OwnedMutexGuard<()>,
    ) {
        let held = self.writer.clone().lock_owned().await;
        let rx = self.feed.subscribe();
        (self.feed.clone(), rx, held)
    }

    /// A follower: puts a snapshot from the primary in place of the
    /// index. Returns its token count. Uses seen here and not reported yet
    /// are carried over (still unreported), so a resync loses none.
    pub(crate) fn install(&self, idx: Index) -> usize {
        let tokens = idx.tokens.len();
        {
            let old = self.index.read();
            for t in idx.tokens.values() {
                if let Some(o) = old.tokens.get(&t.id()) {
                    let (used, by) = crate::index::newer_use(t.last_use(), o.last_use());
                    t.last_used_ms.store(used, Ordering::Relaxed);
                    t.last_used_by.store(by, Ordering::Relaxed);
                }
            }
            self.carry_leases(&old, &idx);
        }
        // The old index is dropped outside the lock (a million tokens take
        // a while to free), then the loading's garbage goes back to the OS.
        let old = std::mem::replace(&mut *self.index.write(), idx);
        drop(old);
        crate::heap::trim();
        self.metrics.tokens.set(tokens as f64);
        tokens
    }

    /// A follower: applies one commit of the primary's.
    pub(crate) fn apply_followed(&self, changes: &[Change]) {
        let mut idx = self.index.write();
        for c in changes {
            idx.apply(c);
        }
        self.metrics.tokens.set(idx.tokens.len() as f64);
    }

    /// A follower: every token whose last use moved since it was last
    /// reported, with that use (unix ms), in id order. One pass under the
    /// read lock; nothing is held once it returns.
    pub(crate) fn unreported_uses(&self) -> Vec<(u64, i64)> {
        let idx = self.index.read();
        idx.tokens
            .values()
            .filter(|t| t.use_unsaved(0))
            .map(|t| (t.id(), t.last_used_ms.load(Ordering::Relaxed)))
            .collect()
    }

    /// A follower: these uses were acknowledged by the primary (a follower
    /// stores nothing, so its saved mark means reported).
    pub(crate) fn mark_reported(&self, uses: &[(u64, i64)]) {
        let idx = self.index.read();
        for &(id, at) in uses {
            if let Some(t) = idx.tokens.get(&id) {
                t.mark_use_saved(at);
            }
        }
    }

    /// A primary: uses a follower named `node` reported. Each known
    /// token's use, clamped to this node's clock (a follower's fast clock
    /// must not put use in the future), becomes its last use with `node`
    /// when newer than the last use known here; the usage writer then
    /// stores it. Unknown ids and times before 1970 are ignored. Returns
    /// how many became a last use.
    pub fn record_uses(&self, node: &str, uses: impl IntoIterator<Item = (u64, i64)>) -> u32 {
        let node = crate::index::nodes::intern(node);
        let now = self.now_ms();
        let idx = self.index.read();
        let mut applied = 0;
        for (id, at) in uses {
            if at <= 0 {
                continue;
            }
            if idx
                .tokens
                .get(&id)
                .is_some_and(|t| t.record_use(at.min(now), node))
            {
                applied += 1;
            }
        }
        applied
    }
}
