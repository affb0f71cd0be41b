//! What replication needs of the engine: on a primary, a consistent start
//! for a watcher ([`Engine::subscribe`]); on a follower, a snapshot put in
//! place of the index ([`Engine::install`]) and the primary's commits
//! applied in order ([`Engine::apply_followed`]).

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
    /// index. Returns its token count.
    pub(crate) fn install(&self, idx: Index) -> usize {
        let tokens = idx.tokens.len();
        *self.index.write() = idx;
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
}
