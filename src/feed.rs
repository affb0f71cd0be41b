//! The commit feed: every commit, in order, with its revision in this
//! process's epoch, kept in a bounded history and broadcast to whoever
//! watches (the primary's `Replication/Watch` streams). A follower that
//! reconnects within the epoch, with its revision still in the history,
//! gets only what it missed; a reset (a reload) makes watchers resync.
//!
//! Layer L2: imports `index` (the changes and their wire codec) and `pb`.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::index::change::to_wire;
use crate::index::Change;
use crate::pb::replication as rpb;

/// Commits kept for followers that reconnect.
pub const HISTORY_MAX: usize = 8192;

/// One published commit.
#[derive(Debug)]
pub struct Batch {
    /// Its revision.
    pub revision: u64,
    /// What changed.
    pub changes: Vec<rpb::Change>,
    /// The state was replaced (a reload): watchers must resync.
    pub reset: bool,
}

/// The primary's change feed.
#[derive(Debug)]
pub struct Feed {
    /// This process's epoch.
    pub epoch: u64,
    /// Last published revision, and the history (under one lock: they move
    /// together).
    state: Mutex<(u64, VecDeque<Arc<Batch>>)>,
    /// Hands each batch to the live watchers.
    tx: broadcast::Sender<Arc<Batch>>,
}

impl Default for Feed {
    fn default() -> Self {
        Self::new()
    }
}

impl Feed {
    /// A feed with a fresh random epoch.
    pub fn new() -> Self {
        Self::with_epoch(rand::random::<u64>() | 1)
    }

    /// A feed in a given epoch (a shared store's cluster id: its nodes
    /// publish the store's revisions, so followers may resume on any).
    pub fn with_epoch(epoch: u64) -> Self {
        let (tx, _) = broadcast::channel(HISTORY_MAX);
        Feed {
            epoch,
            state: Mutex::new((0, VecDeque::new())),
            tx,
        }
    }

    /// Starts over at `revision` with an empty history (after a load or a
    /// reload); watchers of the state before end, so their followers
    /// resync.
    pub fn reset(&self, revision: u64) {
        let mut st = self.state.lock();
        st.0 = revision;
        st.1.clear();
        let _ = self.tx.send(Arc::new(Batch {
            revision,
            changes: Vec::new(),
            reset: true,
        }));
    }

    /// The last published revision.
    pub fn revision(&self) -> u64 {
        self.state.lock().0
    }

    /// Publishes a commit; called with the writer lock held, after the
    /// index applied it.
    pub fn publish(&self, changes: &[Change]) {
        let next = self.revision() + 1;
        self.publish_at(next, changes);
    }

    /// Publishes a commit at a given revision (a shared store's), which
    /// must follow the last one.
    pub fn publish_at(&self, revision: u64, changes: &[Change]) {
        let mut st = self.state.lock();
        st.0 = revision;
        let batch = Arc::new(Batch {
            revision,
            changes: changes.iter().map(to_wire).collect(),
            reset: false,
        });
        if st.1.len() == HISTORY_MAX {
            st.1.pop_front();
        }
        st.1.push_back(batch.clone());
        // No receivers is fine: nobody follows yet.
        let _ = self.tx.send(batch);
    }

    /// A receiver of every commit published from now on (and of resets).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Batch>> {
        self.tx.subscribe()
    }

    /// The commits after `revision`, if all are still in the history.
    pub fn since(&self, revision: u64) -> Option<Vec<Arc<Batch>>> {
        let st = self.state.lock();
        let oldest = st.1.front().map_or(st.0 + 1, |b| b.revision);
        if revision > st.0 || revision + 1 < oldest {
            return None;
        }
        Some(
            st.1.iter()
                .filter(|b| b.revision > revision)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_answers_only_what_it_still_holds() {
        let feed = Feed::new();
        assert!(feed.since(0).is_some_and(|v| v.is_empty()));
        assert!(feed.since(1).is_none(), "a revision from the future");
        for i in 0..(HISTORY_MAX as u64 + 10) {
            feed.publish(&[Change::DeleteToken(i)]);
        }
        let last = feed.revision();
        assert_eq!(last, HISTORY_MAX as u64 + 10);
        assert!(feed.since(last).is_some_and(|v| v.is_empty()));
        let missed = feed.since(last - 3).expect("recent");
        assert_eq!(
            missed.iter().map(|b| b.revision).collect::<Vec<_>>(),
            vec![last - 2, last - 1, last]
        );
        // The oldest kept is revision 11: resuming after 10 works, after 9
        // (revision 10 is gone) needs a snapshot.
        assert_eq!(feed.since(10).map(|v| v.len()), Some(HISTORY_MAX));
        assert!(feed.since(9).is_none());
    }
}
