//! Staying current with a shared store (PostgreSQL) whose other nodes
//! commit too: the write lock, which first applies what they committed;
//! catch-up and reload; the catch-up for a caller whose token is newer
//! than the index; and the node job [`sync`].
//!
//! A node loads a consistent snapshot at start, then applies the change
//! table after that revision: woken by `NOTIFY`, and polled every
//! [`POLL`] as a fallback (and as the proof the database is reachable).
//! Its own commits are applied as they are made. Past the staleness bound
//! without reaching the database it fails closed (or serves stale answers,
//! by flag), like a follower. Each node also prunes old change rows.
//!
//! Part of the engine (layer L4): imports the vocabulary and `store`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::authn::parse_bounded;
use super::{store_unavailable, Engine, WriteGuard};
use crate::error::{Error, Result};
use crate::store::StoreError;

/// How often a node reads the change table with no notification.
pub const POLL: Duration = Duration::from_secs(1);
/// Commits read per query.
const BATCH: usize = 1024;
/// How often each node prunes old change rows.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl Engine {
    /// Takes the right to mutate: this node's writer lock, then the
    /// store's write (on a shared store, the lock that keeps every other
    /// node's writers out), and applies what other nodes committed since
    /// this node last looked, so rules are checked against the current
    /// state.
    pub(crate) async fn write_lock(&self) -> Result<WriteGuard> {
        let local = self.writer.clone().lock_owned().await;
        let applied = self.applied.load(Ordering::Acquire);
        match self.store.begin(applied).await {
            Ok((txn, missed)) => {
                self.apply_remote(missed)?;
                if let Some(s) = self.upstream.database() {
                    s.heard(self.now_ms());
                }
                Ok(WriteGuard { _local: local, txn })
            }
            Err(StoreError::Horizon) => {
                drop(local);
                self.reload().await.map_err(|e| store_unavailable(&e))?;
                Err(Error::Unavailable(
                    "this node was behind the database and has reloaded; retry".into(),
                ))
            }
            Err(e) => Err(store_unavailable(&e)),
        }
    }

    /// Applies commits other nodes made, in order, under the writer lock.
    fn apply_remote(&self, missed: Vec<crate::store::Revision>) -> Result<()> {
        if missed.is_empty() {
            return Ok(());
        }
        let mut idx = self.index.write();
        for r in missed {
            let applied = self.applied.load(Ordering::Acquire);
            if r.revision != applied + 1 {
                return Err(Error::Internal(format!(
                    "commit {} after {applied}: out of order",
                    r.revision
                )));
            }
            for c in &r.changes {
                idx.apply(c);
            }
            self.feed.publish_at(r.revision, &r.changes);
            self.applied.store(r.revision, Ordering::Release);
        }
        self.metrics.tokens.set(idx.tokens.len() as f64);
        Ok(())
    }

    /// A shared store: applies what other nodes committed since this node
    /// last looked (at most `limit` commits). Returns how many.
    pub async fn catch_up(&self, limit: usize) -> std::result::Result<usize, StoreError> {
        let _w = self.writer.lock().await;
        let applied = self.applied.load(Ordering::Acquire);
        let missed = self.store.changes_since(applied, limit).await?;
        if let Some(s) = self.upstream.database() {
            s.heard(self.now_ms());
        }
        let n = missed.len();
        self.apply_remote(missed)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(n)
    }

    /// A shared store: drops change rows older than the retention, and
    /// sending-limit budgets full again (an absent budget is full).
    pub async fn prune_changes(&self) -> std::result::Result<u64, StoreError> {
        let budgets = self.store.prune_budgets(self.now_ms()).await?;
        Ok(self.store.prune().await? + budgets)
    }

    /// Replaces the index with a fresh snapshot of the store (a shared
    /// store's node that fell behind its change retention). Followers of
    /// this node resync.
    pub async fn reload(&self) -> std::result::Result<(), StoreError> {
        let (revision, tokens) = self.install_snapshot().await?;
        tracing::warn!(revision, tokens, "reloaded a snapshot of the store");
        Ok(())
    }

    /// Loads the store and puts what it holds in place of the index, under
    /// the writer lock; the feed starts over at its revision. Returns the
    /// revision and the token count.
    pub(super) async fn install_snapshot(&self) -> std::result::Result<(u64, usize), StoreError> {
        let _w = self.writer.lock().await;
        let loaded = self.store.load(self.key.clone()).await?;
        let tokens = loaded.index.tokens.len();
        let old = std::mem::replace(&mut *self.index.write(), loaded.index);
        self.applied.store(loaded.revision, Ordering::Release);
        self.feed.reset(loaded.revision);
        self.metrics.tokens.set(tokens as f64);
        if let Some(s) = self.upstream.database() {
            s.heard(self.now_ms());
        }
        drop(old);
        crate::heap::trim();
        Ok((loaded.revision, tokens))
    }

    /// On a shared store: whether `token` carries an id beyond any this
    /// node has seen allocated (made on another node since it last looked).
    pub(crate) fn unseen_token(&self, token: &str) -> bool {
        self.shared().is_some()
            && parse_bounded(token).is_some_and(|p| p.id >= self.index.read().next_token_id)
    }

    /// On a shared store, for a caller whose token is newer than this
    /// node's index (made on another node a moment ago, or forged): reads
    /// what this node missed, at most once per `unseen_catch_up_interval`.
    /// Every caller that arrived before a catch-up started shares it, so a
    /// flood of forged ids costs the database a few reads per second, not
    /// one transaction per request.
    pub(crate) async fn catch_up_unseen(&self) {
        let arrived = tokio::time::Instant::now();
        let mut last = self.unseen_catch_up.lock().await;
        if let Some(started) = *last {
            if started >= arrived {
                return;
            }
            tokio::time::sleep_until(started + self.settings.unseen_catch_up_interval).await;
        }
        *last = Some(tokio::time::Instant::now());
        self.work.unseen_catch_ups.fetch_add(1, Ordering::Relaxed);
        self.metrics.store.unseen_catch_ups.increment(1);
        if let Err(e) = self.catch_up(1024).await {
            tracing::debug!(error = %e, "catching up for an unseen caller failed");
        }
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
