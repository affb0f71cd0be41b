//! The engine: the index, the store, the verifier and the clock, and the
//! operations every surface shares: authenticate a token, decide, commit.
//! Admin rules live in `admin.rs`; the wire lives in `service/`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{OwnedMutexGuard, Semaphore};

use crate::authz::{self, Check};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::index::{Change, Index, TokenState};
use crate::metrics::Metrics;
use crate::model::{self, limits, Kind};
use crate::pb::store::TokenRecord;
use crate::pb::v1::DenyReason;
use crate::store::{Store, StoreError};
use crate::token::{self, Digest, DigestKey, ParsedToken, Secret};

/// Tunables of the lifecycle and the verifier.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a reset token keeps working (default 12 h).
    pub reset_grace: Duration,
    /// How long after expiry a token is purged (default 24 h).
    pub purge_after: Duration,
    /// How long an argon2 verify may wait for a CPU before it is shed.
    pub verify_queue_timeout: Duration,
    /// Most argon2 verifies waiting at once; more are shed at once.
    pub verify_max_waiters: usize,
    /// Concurrent argon2 verifies (default: the number of cores).
    pub verify_concurrency: usize,
    /// How long a wrong secret is remembered, so a flood costs no argon2.
    pub negative_ttl: Duration,
    /// Most wrong secrets remembered.
    pub negative_max: usize,
    /// Concurrent argon2 hashes of new secrets (creates, resets): a budget
    /// of its own, so admin calls and Authorize's verifies cannot take each
    /// other's cores (default: half the cores, at least one).
    pub hash_concurrency: usize,
    /// How long a hash of a new secret may wait for its budget before the
    /// call is refused with UNAVAILABLE.
    pub hash_queue_timeout: Duration,
    /// Most hashes waiting at once; more are refused at once.
    pub hash_max_waiters: usize,
    /// Failed argon2 verifies one token id may cost per window before
    /// further unproven secrets for it are refused without argon2 (only
    /// tokens with no verified digest, e.g. on a follower without the
    /// digest key, ever get here).
    pub argon2_failures_per_token: u32,
    /// The window of `argon2_failures_per_token`.
    pub argon2_failure_window: Duration,
    /// On a shared store: at most one catch-up for callers whose token is
    /// newer than this node's index, per this interval.
    pub unseen_catch_up_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            reset_grace: Duration::from_secs(12 * 3600),
            purge_after: Duration::from_secs(24 * 3600),
            verify_queue_timeout: Duration::from_millis(200),
            verify_max_waiters: 256,
            verify_concurrency: std::thread::available_parallelism().map_or(2, usize::from),
            negative_ttl: Duration::from_secs(60),
            negative_max: 100_000,
            hash_concurrency: (std::thread::available_parallelism().map_or(2, usize::from) / 2)
                .max(1),
            hash_queue_timeout: Duration::from_secs(2),
            hash_max_waiters: 64,
            argon2_failures_per_token: 4,
            argon2_failure_window: Duration::from_secs(10),
            unseen_catch_up_interval: Duration::from_millis(100),
        }
    }
}

/// Why a token is not accepted as authentic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthnFailure {
    /// Not a keyward token.
    Malformed,
    /// No such token, or the secret does not verify.
    Unknown,
    /// argon2 capacity exhausted: shed (fail closed).
    Overloaded,
}

/// A decision with what the caller may log or return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Allowed or not.
    pub allowed: bool,
    /// Why not (Unspecified when allowed).
    pub reason: DenyReason,
    /// Recognised token id (0 if none).
    pub token_id: u64,
    /// Its account (0 if none).
    pub account_id: u64,
}

impl Decision {
    fn deny(reason: DenyReason) -> Self {
        Self {
            allowed: false,
            reason,
            token_id: 0,
            account_id: 0,
        }
    }
}

/// The shared state behind every surface.
pub struct Engine {
    /// Everything, in memory; Authorize takes only the read lock.
    pub(crate) index: Arc<RwLock<Index>>,
    /// Durable records.
    store: Arc<dyn Store>,
    /// Serialises mutations: rules are checked and the commit applied with
    /// no other mutation in between.
    pub(crate) writer: Arc<tokio::sync::Mutex<()>>,
    /// Wall clock, injectable for tests.
    pub(crate) clock: Arc<dyn Clock>,
    /// Key of the verified digests (kept outside the store).
    key: DigestKey,
    /// Tunables.
    pub(crate) settings: Settings,
    /// Bounds concurrent argon2 work to the cores.
    verify_permits: Arc<Semaphore>,
    /// argon2 verifies waiting for a permit.
    verify_waiters: AtomicUsize,
    /// Digests of tokens whose secret failed to verify, until (unix ms).
    negative: Mutex<HashMap<Digest, i64>>,
    /// Bounds concurrent argon2 hashes of new secrets (a budget apart from
    /// the verifies').
    hash_permits: Arc<Semaphore>,
    /// Hashes waiting for a permit.
    hash_waiters: AtomicUsize,
    /// Per token id: failed argon2 verifies in the current window (window
    /// start in unix ms, failures), so random secrets for one real id
    /// cannot keep the cores busy.
    failures: Mutex<HashMap<u64, (i64, u32)>>,
    /// On a shared store: when the last catch-up for an unseen caller
    /// started (monotonic: the injected clock may stand still in tests);
    /// callers that arrived before it share its result.
    unseen_catch_up: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    /// Costly work done so far, per engine (tests and benchmarks compare
    /// it across an attack; the Prometheus counters are process-wide).
    work: WorkCounters,
    /// Set once the store is loaded; until then every call is UNAVAILABLE.
    ready: AtomicBool,
    /// Metric handles.
    pub(crate) metrics: Metrics,
    /// Last audit event id handed out.
    audit_seq: AtomicU64,
    /// Every commit, for followers (primary).
    pub(crate) feed: Arc<crate::replication::Feed>,
    /// Set when this keyward follows a primary instead of owning a store.
    pub(crate) follower: Option<crate::replication::FollowerState>,
    /// The shared store's revision the index is at (0 on sled).
    pub(crate) applied: Arc<AtomicU64>,
    /// On a shared store: when the database was last reached.
    pub(crate) shared: Option<crate::nodes::Freshness>,
}

/// Costly work an engine did: what an attacker would try to make it do.
#[derive(Debug, Default)]
struct WorkCounters {
    /// argon2 hashes of new secrets.
    hashes: AtomicU64,
    /// argon2 verifies run (either outcome).
    verifies: AtomicU64,
    /// Catch-ups with the shared store for callers whose token was newer
    /// than the index.
    unseen_catch_ups: AtomicU64,
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

/// The right to mutate: this node's writer lock and, on a shared store,
/// the open write that locks out every other node's writers.
pub(crate) struct WriteGuard {
    _local: OwnedMutexGuard<()>,
    txn: Box<dyn crate::store::WriteTxn>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine over `store`, not loaded yet: every call is UNAVAILABLE
    /// until [`Engine::load`] finishes.
    pub fn new(
        store: Arc<dyn Store>,
        key: DigestKey,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Arc<Engine> {
        Self::build(store, key, clock, settings, None, None)
    }

    /// An engine on a shared store (PostgreSQL), one node of several: it
    /// fails closed past `freshness`'s bound without reaching the database.
    pub fn new_shared(
        store: Arc<dyn Store>,
        key: DigestKey,
        clock: Arc<dyn Clock>,
        settings: Settings,
        freshness: crate::nodes::Freshness,
    ) -> Arc<Engine> {
        Self::build(store, key, clock, settings, None, Some(freshness))
    }

    /// An engine that follows a primary: its index is filled by
    /// replication ([`crate::replication::follow`]), never by admin calls.
    pub fn new_follower(
        key: DigestKey,
        clock: Arc<dyn Clock>,
        settings: Settings,
        follower: crate::replication::FollowerState,
    ) -> Arc<Engine> {
        let store: Arc<dyn Store> = Arc::new(crate::store::NoStore);
        Self::build(store, key, clock, settings, Some(follower), None)
    }

    fn build(
        store: Arc<dyn Store>,
        key: DigestKey,
        clock: Arc<dyn Clock>,
        settings: Settings,
        follower: Option<crate::replication::FollowerState>,
        shared: Option<crate::nodes::Freshness>,
    ) -> Arc<Engine> {
        let feed = match store.cluster_id() {
            // Nodes of one database share the epoch and revisions, so a
            // follower may resume from any of them.
            Some(id) => crate::replication::Feed::with_epoch(id),
            None => crate::replication::Feed::new(),
        };
        let permits = settings.verify_concurrency.max(1);
        let hash_permits = settings.hash_concurrency.max(1);
        Arc::new(Engine {
            index: Arc::new(RwLock::new(Index::new(key.clone()))),
            store,
            writer: Arc::new(tokio::sync::Mutex::new(())),
            clock,
            key,
            settings,
            verify_permits: Arc::new(Semaphore::new(permits)),
            verify_waiters: AtomicUsize::new(0),
            negative: Mutex::new(HashMap::new()),
            hash_permits: Arc::new(Semaphore::new(hash_permits)),
            hash_waiters: AtomicUsize::new(0),
            failures: Mutex::new(HashMap::new()),
            unseen_catch_up: tokio::sync::Mutex::new(None),
            work: WorkCounters::default(),
            ready: AtomicBool::new(false),
            metrics: Metrics::new(),
            audit_seq: AtomicU64::new(0),
            feed: Arc::new(feed),
            follower,
            applied: Arc::new(AtomicU64::new(0)),
            shared,
        })
    }

    /// Loads everything from the store into memory, then marks the engine
    /// ready. On a new store (`is_new`) creates the root token and returns
    /// it: the only time its secret exists outside the caller's hands.
    pub async fn load(&self, is_new: bool) -> Result<Option<Secret>, StoreError> {
        self.install_snapshot().await?;
        let last = self.store.last_audit_id().await?;
        self.audit_seq.store(last, Ordering::Release);
        let root_token = if is_new {
            self.create_root().await?
        } else {
            None
        };
        let tokens = self.index.read().tokens.len();
        self.metrics.tokens.set(tokens as f64);
        self.ready.store(true, Ordering::Release);
        Ok(root_token)
    }

    /// Creates the root token through the same hashing and commit path as
    /// every other token.
    async fn create_root(&self) -> Result<Option<Secret>, StoreError> {
        let bootstrap = |e: Error| StoreError::Bootstrap(e.to_string());
        if self.index.read().next_token_id > 1 {
            // A shared store that has one already: no argon2 for nothing.
            return Ok(None);
        }
        let (part, phc) = self.hash_new_secret().await.map_err(bootstrap)?;
        let w = self.write_lock().await.map_err(bootstrap)?;
        let (id, next_account_id) = {
            let idx = self.index.read();
            if idx.next_token_id > 1 || !idx.tokens.is_empty() {
                // Another node of the shared store started first and made it.
                return Ok(None);
            }
            (idx.next_token_id, idx.next_account_id)
        };
        let full = token::assemble(id, &part);
        let record = TokenRecord {
            id,
            account_id: 0,
            name: "root".into(),
            phc_hash: phc,
            last_4_digits: token::last_4(&full),
            created_by: "keyward".into(),
            created_at_ms: self.now_ms(),
            root: true,
            verified_digest: self.key.digest(full.expose()).to_vec(),
            digest_key_id: self.key.id().to_vec(),
            ..Default::default()
        };
        let changes = vec![
            Change::Counters {
                next_account_id,
                next_token_id: id + 1,
            },
            Change::PutToken(record),
        ];
        self.commit(w, changes).await.map_err(bootstrap)?;
        Ok(Some(full))
    }

    /// The costly work this engine has done since it started.
    pub fn work(&self) -> Work {
        let w = &self.work;
        Work {
            hashes: w.hashes.load(Ordering::Relaxed),
            verifies: w.verifies.load(Ordering::Relaxed),
            unseen_catch_ups: w.unseen_catch_ups.load(Ordering::Relaxed),
        }
    }

    /// The shared store's revision this node's index is at (0 on sled).
    pub fn applied_revision(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Whether the store is loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the engine ready (a follower, once its first snapshot is in).
    pub(crate) fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Fails with UNAVAILABLE until the store is loaded, and on a follower
    /// (or PostgreSQL node) that has not heard from its primary (database)
    /// for longer than the staleness bound (fail closed), unless it was told
    /// to serve stale answers.
    pub fn ensure_ready(&self) -> Result<()> {
        if !self.is_ready() {
            return Err(Error::Unavailable(
                "keyward is loading its store; retry shortly".into(),
            ));
        }
        let now = self.now_ms();
        let stale = |source: &dyn std::fmt::Display, f: &crate::nodes::Freshness| {
            Error::Unavailable(format!(
                "no word from {source} for {} ms (bound {} ms): failing closed",
                f.silence_ms(now),
                f.stale_after_ms
            ))
        };
        if let Some(s) = self.shared.as_ref().filter(|s| !s.may_serve(now)) {
            return Err(stale(&"the database", s));
        }
        if let Some(f) = self.follower.as_ref().filter(|f| !f.may_serve(now)) {
            return Err(stale(
                &format_args!("the primary {}", f.primary),
                &f.freshness,
            ));
        }
        Ok(())
    }

    /// The shared store's freshness, on a PostgreSQL node.
    pub fn shared(&self) -> Option<&crate::nodes::Freshness> {
        self.shared.as_ref()
    }

    /// The follower state, if this keyward follows a primary.
    pub fn follower(&self) -> Option<&crate::replication::FollowerState> {
        self.follower.as_ref()
    }

    /// Now, from the injected clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The digest key.
    pub(crate) fn key(&self) -> &DigestKey {
        &self.key
    }

    /// Makes everything committed durable (shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.store.flush().await
    }

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
                if let Some(s) = &self.shared {
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
        if let Some(s) = &self.shared {
            s.heard(self.now_ms());
        }
        let n = missed.len();
        self.apply_remote(missed)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(n)
    }

    /// A shared store: drops change rows older than the retention.
    pub async fn prune_changes(&self) -> std::result::Result<u64, StoreError> {
        self.store.prune().await
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
    async fn install_snapshot(&self) -> std::result::Result<(u64, usize), StoreError> {
        let _w = self.writer.lock().await;
        let loaded = self.store.load(self.key.clone()).await?;
        let tokens = loaded.index.tokens.len();
        *self.index.write() = loaded.index;
        self.applied.store(loaded.revision, Ordering::Release);
        self.feed.reset(loaded.revision);
        self.metrics.tokens.set(tokens as f64);
        if let Some(s) = &self.shared {
            s.heard(self.now_ms());
        }
        Ok((loaded.revision, tokens))
    }

    /// Commits `changes`: durable first, then visible, then the caller may
    /// acknowledge. The work runs in its own task that owns the write
    /// guard, so a request cancelled mid-way (deadline, client gone) cannot
    /// leave the store and the index apart, nor let the next mutation in
    /// before this one is applied.
    pub(crate) async fn commit(&self, guard: WriteGuard, changes: Vec<Change>) -> Result<()> {
        self.commit_as(guard, changes, false).await
    }

    /// Commits records of what the hot path learnt (`usage`: last-use
    /// times, digests), or any other change. A usage commit is not
    /// re-applied to this node's index (which holds newer values already):
    /// it only marks the tokens saved, under the read lock, so Authorize
    /// never waits behind it; and on sled it is not published (followers
    /// learn their own digests; on a shared store every revision is).
    async fn commit_as(&self, guard: WriteGuard, changes: Vec<Change>, usage: bool) -> Result<()> {
        let (index, tokens, feed) = (
            self.index.clone(),
            self.metrics.tokens.clone(),
            self.feed.clone(),
        );
        let engine_applied = self.applied.clone();
        let task = tokio::spawn(async move {
            let WriteGuard { _local, txn } = guard;
            let revision = match txn.commit(&changes).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "store commit failed");
                    return Err(store_unavailable(&e));
                }
            };
            if usage {
                let idx = index.read();
                for c in &changes {
                    if let Change::PutToken(r) = c {
                        if let Some(t) = idx.tokens.get(&r.id) {
                            t.last_used_saved_ms
                                .fetch_max(r.last_used_at_ms, Ordering::Relaxed);
                            if !r.verified_digest.is_empty() {
                                t.digest_unsaved.store(false, Ordering::Relaxed);
                            }
                        }
                    }
                }
            } else {
                let mut idx = index.write();
                for c in &changes {
                    idx.apply(c);
                }
                tokens.set(idx.tokens.len() as f64);
            }
            // Still under the writer lock: followers see commits in order.
            if revision == 0 {
                if !usage {
                    feed.publish(&changes);
                }
            } else {
                feed.publish_at(revision, &changes);
                engine_applied.store(revision, Ordering::Release);
            }
            drop(_local);
            Ok(())
        });
        task.await
            .map_err(|e| Error::Internal(format!("commit task: {e}")))?
    }

    /// On a shared store: whether `token` carries an id beyond any this
    /// node has seen allocated (made on another node since it last looked).
    pub(crate) fn unseen_token(&self, token: &str) -> bool {
        self.shared.is_some()
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

    /// Proves `token` authentic: its id exists and its secret verifies.
    /// Cheap when the verified digest is known (one keyed BLAKE3 and a
    /// constant-time compare); otherwise one argon2 verify, bounded and shed.
    pub async fn authenticate(&self, token: &str) -> Result<u64, AuthnFailure> {
        let parsed = parse_bounded(token).ok_or(AuthnFailure::Malformed)?;
        let digest = self.key.digest(parsed.full());
        let phc = {
            let idx = self.index.read();
            match self.prove(&idx, &parsed, &digest)? {
                Proof::Verified(_) => return Ok(parsed.id),
                Proof::NeedsArgon2(phc) => phc,
            }
        };
        self.verify_slow(parsed, digest, phc).await
    }

    /// The cheap proof: the token exists and its digest matches the known
    /// verified digest; or, with no digest known, the hash argon2 must check.
    fn prove<'i>(
        &self,
        idx: &'i Index,
        parsed: &ParsedToken<'_>,
        digest: &Digest,
    ) -> Result<Proof<'i>, AuthnFailure> {
        let state = idx.tokens.get(&parsed.id).ok_or(AuthnFailure::Unknown)?;
        match &state.digest {
            Some(known) if token::digests_equal(known, digest) => {
                self.metrics.verify_digest.increment(1);
                Ok(Proof::Verified(state))
            }
            Some(_) => Err(AuthnFailure::Unknown),
            None => Ok(Proof::NeedsArgon2(state.phc_hash.clone())),
        }
    }

    /// The argon2 path: negative cache, bounded queue with a deadline, and a
    /// digest fill that only lands if the token still exists unchanged.
    async fn verify_slow(
        &self,
        parsed: ParsedToken<'_>,
        digest: Digest,
        phc: String,
    ) -> Result<u64, AuthnFailure> {
        let now = self.now_ms();
        if self
            .negative
            .lock()
            .get(&digest)
            .is_some_and(|&until| until > now)
        {
            metrics::counter!("keyward_verify_negative_hits_total").increment(1);
            return Err(AuthnFailure::Unknown);
        }
        if self.failed_too_often(parsed.id, now) {
            self.metrics.verify_token_failures.increment(1);
            return Err(AuthnFailure::Unknown);
        }
        let permit = acquire_bounded(
            &self.verify_permits,
            &self.verify_waiters,
            &self.metrics.argon2_queue,
            self.settings.verify_max_waiters,
            self.settings.verify_queue_timeout,
        )
        .await;
        let Some(permit) = permit else {
            self.metrics.argon2_shed.increment(1);
            return Err(AuthnFailure::Overloaded);
        };
        self.work.verifies.fetch_add(1, Ordering::Relaxed);
        let secret = parsed.secret_part().to_owned();
        let phc_for_task = phc.clone();
        // The permit moves into the blocking task: argon2 work stays bounded
        // by the cores even if this request is cancelled.
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            token::verify_secret(&secret, &phc_for_task)
        })
        .await
        .unwrap_or(false);
        if ok {
            &self.metrics.verify_argon2_ok
        } else {
            &self.metrics.verify_argon2_fail
        }
        .increment(1);
        if !ok {
            let mut neg = self.negative.lock();
            if neg.len() >= self.settings.negative_max {
                neg.retain(|_, until| *until > now);
                if neg.len() >= self.settings.negative_max {
                    neg.clear();
                }
            }
            let ttl = crate::clock::duration_ms(self.settings.negative_ttl);
            neg.insert(digest, now.saturating_add(ttl));
            drop(neg);
            self.count_failure(parsed.id, now);
            return Err(AuthnFailure::Unknown);
        }
        // Fill the verified digest, unless the token was deleted (or, ids
        // never being reused, replaced) while argon2 ran.
        let mut idx = self.index.write();
        if let Some(state) = idx.tokens.get_mut(&parsed.id) {
            if state.phc_hash == phc && state.digest.is_none() {
                state.digest = Some(digest);
                state.digest_unsaved.store(true, Ordering::Relaxed);
            }
        }
        Ok(parsed.id)
    }

    /// Whether token `id` used up its failed argon2 verifies for the
    /// current window: further unproven secrets for it are refused without
    /// argon2 (fail closed) until the window ends. A token whose digest is
    /// known never gets here: a wrong secret is refused by the digest.
    fn failed_too_often(&self, id: u64, now: i64) -> bool {
        let window = crate::clock::duration_ms(self.settings.argon2_failure_window);
        self.failures.lock().get(&id).is_some_and(|&(start, n)| {
            now < start.saturating_add(window) && n >= self.settings.argon2_failures_per_token
        })
    }

    /// Counts a failed argon2 verify against token `id`. The map holds one
    /// entry per attacked id; past `negative_max` ids, windows that ended
    /// are dropped first, then all.
    fn count_failure(&self, id: u64, now: i64) {
        let window = crate::clock::duration_ms(self.settings.argon2_failure_window);
        let mut failures = self.failures.lock();
        if failures.len() >= self.settings.negative_max {
            failures.retain(|_, (start, _)| now < start.saturating_add(window));
            if failures.len() >= self.settings.negative_max {
                failures.clear();
            }
        }
        let entry = failures.entry(id).or_insert((now, 0));
        if now >= entry.0.saturating_add(window) {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// Decides one Authorize request. Fails (closed) only when argon2
    /// capacity is exhausted and the token needs it.
    pub async fn authorize(&self, token: &str, check: &Check<'_>) -> Result<Decision> {
        let (parsed, digest, phc) = match self.authorize_cached(token, check) {
            Cached::Decided(d) => return Ok(d),
            Cached::NeedsArgon2 {
                parsed,
                digest,
                phc,
            } => (parsed, digest, phc),
        };
        match self.verify_slow(parsed, digest, phc).await {
            Ok(_) => {}
            Err(AuthnFailure::Overloaded) => {
                return Err(Error::Unavailable(
                    "token verification is overloaded; retry shortly".into(),
                ))
            }
            Err(_) => return Ok(Decision::deny(DenyReason::UnknownToken)),
        }
        // Live state after the (slow) proof: a delete that landed while
        // argon2 ran is seen here.
        let now = self.now_ms();
        let idx = self.index.read();
        Ok(match idx.tokens.get(&parsed.id) {
            Some(state) => decide_for(&idx, state, check, now),
            None => Decision::deny(DenyReason::UnknownToken),
        })
    }

    /// The in-memory part of Authorize: parse, checksum, digest, lookup and
    /// decision under one read lock, with no allocation; hands back what
    /// argon2 needs when no verified digest is known.
    pub fn authorize_cached<'t>(&self, token: &'t str, check: &Check<'_>) -> Cached<'t> {
        let Some(parsed) = parse_bounded(token) else {
            return Cached::Decided(Decision::deny(DenyReason::Malformed));
        };
        let digest = self.key.digest(parsed.full());
        let now = self.now_ms();
        let idx = self.index.read();
        match self.prove(&idx, &parsed, &digest) {
            Ok(Proof::Verified(state)) => Cached::Decided(decide_for(&idx, state, check, now)),
            Ok(Proof::NeedsArgon2(phc)) => Cached::NeedsArgon2 {
                parsed,
                digest,
                phc,
            },
            Err(_) => Cached::Decided(Decision::deny(DenyReason::UnknownToken)),
        }
    }

    /// Persists what the hot path learnt: verified digests, and last-use
    /// times that moved by at least `granularity_ms` since stored (0 at
    /// shutdown: everything), at most `max` tokens per call (the rest on the
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
                        || t.last_used_ms.load(Ordering::Relaxed)
                            > t.last_used_saved_ms.load(Ordering::Relaxed) + granularity_ms.max(0)
                })
                .map(|t| t.id)
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
                    .map(|t| Change::PutToken(t.to_record(&self.key)))
                    .collect()
            };
            let n = chunk.len();
            if n > 0 {
                if let Err(e) = self.commit_as(guard, chunk, true).await {
                    tracing::warn!(error = %e, "persisting last-use times failed");
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
                .filter(|t| t.expires_at_ms.is_some_and(|e| e <= horizon))
                .map(|t| Change::DeleteToken(t.id))
                .collect()
        };
        let n = changes.len();
        if n > 0 {
            self.commit(w, changes).await?;
            tracing::info!(purged = n, "purged expired tokens");
        }
        Ok(n)
    }

    /// Looks up an authenticated caller's live state: not paused, not expired, not
    /// reset (a token in its grace period only authorizes).
    pub(crate) fn live_caller<'a>(&self, idx: &'a Index, id: u64) -> Result<&'a TokenState> {
        let state = idx
            .tokens
            .get(&id)
            .ok_or_else(|| Error::Unauthenticated("invalid token".into()))?;
        if state.paused {
            return Err(Error::Unauthenticated("token is paused".into()));
        }
        if state.is_expired(self.now_ms()) {
            return Err(Error::Unauthenticated("token has expired".into()));
        }
        // A reset token (possibly the leaked one) keeps authorizing during
        // its grace period, which is what the grace is for, but the admin
        // plane is for its replacement: it cannot mint, edit or delete.
        if state.replaced_by != 0 {
            return Err(Error::PermissionDenied(format!(
                "this token was reset (replaced by token {}): during its grace period it only \
                 authorizes; use its replacement",
                state.replaced_by
            )));
        }
        Ok(state)
    }
}

/// A store failure as the caller sees it: UNAVAILABLE, saying whether
/// anything may have been applied.
fn store_unavailable(e: &StoreError) -> Error {
    match e {
        StoreError::Ambiguous(_) => Error::Unavailable(
            "the database connection was lost while committing: the change may or may not \
             have been applied; read it back before retrying"
                .into(),
        ),
        StoreError::Database(detail) => Error::Unavailable(format!(
            "the database is unavailable ({detail}); nothing was applied"
        )),
        _ => {
            Error::Unavailable("the store could not persist the change; nothing was applied".into())
        }
    }
}

/// What an audited admin call was about.
#[derive(Debug, Clone, Default)]
pub struct AuditSubject {
    /// The account acted on.
    pub account_id: u64,
    /// The token acted on (0 if none or not known before the call).
    pub token_id: u64,
    /// The resource acted on, "type/id".
    pub resource: String,
}

impl Engine {
    /// Appends an audit event for an admin call by `caller` and returns its
    /// result unchanged. `created` names a token (or account) the call made,
    /// when the subject did not know it yet.
    pub async fn audited<T>(
        &self,
        caller: u64,
        action: &'static str,
        mut subject: AuditSubject,
        result: Result<T>,
        created: impl Fn(&T) -> (u64, u64),
    ) -> Result<T> {
        let (outcome, detail) = match &result {
            Ok(v) => {
                let (account, token) = created(v);
                if subject.account_id == 0 {
                    subject.account_id = account;
                }
                if subject.token_id == 0 {
                    subject.token_id = token;
                }
                ("OK".to_string(), String::new())
            }
            Err(Error::Internal(_)) => ("INTERNAL".to_string(), "internal error".to_string()),
            Err(e) => (e.code_name().to_string(), e.to_string()),
        };
        let (actor_name, actor_account, actor_root) = {
            let idx = self.index.read();
            idx.tokens
                .get(&caller)
                .map_or((String::new(), 0, false), |t| {
                    (t.name.clone(), t.account_id, t.root)
                })
        };
        // A caller refused in another account is recorded in its own
        // account's log: nobody can write into a log they cannot read.
        if !actor_root && subject.account_id != actor_account {
            subject.account_id = actor_account;
        }
        let event = crate::pb::store::AuditRecord {
            id: self.audit_seq.fetch_add(1, Ordering::AcqRel) + 1,
            account_id: subject.account_id,
            at_ms: self.now_ms(),
            actor_token_id: caller,
            actor_name,
            action: action.to_string(),
            token_id: subject.token_id,
            resource: subject.resource,
            outcome,
            detail,
        };
        if let Err(e) = self.store.append_audit(&event).await {
            tracing::error!(error = %e, action, "could not append the audit event");
        }
        result
    }

    /// Lists audit events of an account for an account admin (or root).
    pub async fn list_audit(
        &self,
        caller: u64,
        req: &crate::pb::v1::ListAuditEventsRequest,
    ) -> Result<crate::pb::v1::ListAuditEventsResponse> {
        let (size, after) = crate::admin::page_bounds(req.page_size, &req.page_token)?;
        self.audit_rules(&self.index.read(), caller, req.account_id)?;
        let records = self
            .store
            .list_audit(req.account_id, after, size + 1)
            .await
            .map_err(|e| store_unavailable(&e))?;
        // `size + 1` records: a page that fills up knows whether more follow.
        let mut page = crate::admin::Page::new(size);
        for r in records {
            let event = crate::pb::v1::AuditEvent {
                id: r.id,
                account_id: r.account_id,
                at: Some(crate::admin::ts(r.at_ms)),
                actor_token_id: r.actor_token_id,
                actor_name: r.actor_name,
                action: r.action,
                token_id: r.token_id,
                resource: r.resource,
                outcome: r.outcome,
                detail: r.detail,
            };
            if !page.push(event) {
                break;
            }
        }
        let next_page_token = page.next_token(|e| e.id.to_string());
        Ok(crate::pb::v1::ListAuditEventsResponse {
            events: page.items,
            next_page_token,
        })
    }
}

/// The outcome of [`Engine::authorize_cached`].
pub enum Cached<'t> {
    /// Decided from memory.
    Decided(Decision),
    /// No verified digest is known: argon2 must check the secret.
    NeedsArgon2 {
        /// The parsed token.
        parsed: ParsedToken<'t>,
        /// Its keyed digest, to fill in on success.
        digest: Digest,
        /// The PHC hash to verify against.
        phc: String,
    },
}

/// One argon2 call waiting for its budget; leaves the count on drop.
struct Waiting<'a> {
    count: &'a AtomicUsize,
    gauge: &'a metrics::Gauge,
    depth: usize,
}

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize, gauge: &'a metrics::Gauge) -> Self {
        let depth = count.fetch_add(1, Ordering::AcqRel) + 1;
        gauge.set(depth as f64);
        Self {
            count,
            gauge,
            depth,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let left = self.count.fetch_sub(1, Ordering::AcqRel) - 1;
        self.gauge.set(left as f64);
    }
}

/// Takes a permit of `permits` within `wait`, unless `max_waiters` are
/// queued already. The waiter count is decremented on drop: a request
/// cancelled while it waits must not leave the count (and so the
/// shedding) raised for ever.
async fn acquire_bounded(
    permits: &Arc<Semaphore>,
    waiters: &AtomicUsize,
    gauge: &metrics::Gauge,
    max_waiters: usize,
    wait: Duration,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let queued = Waiting::enter(waiters, gauge);
    if queued.depth > max_waiters {
        return None;
    }
    tokio::time::timeout(wait, permits.clone().acquire_owned())
        .await
        .ok()
        .and_then(std::result::Result::ok)
}

impl Engine {
    /// Hashes a new secret part with argon2id under its own budget
    /// (`hash_concurrency` at once, a bounded queue with a deadline), apart
    /// from Authorize's verifies. Callers check permission first: only a
    /// caller who may create a token ever gets here.
    pub(crate) async fn hash_new_secret(&self) -> Result<(Secret, String)> {
        let permit = acquire_bounded(
            &self.hash_permits,
            &self.hash_waiters,
            &self.metrics.hash_queue,
            self.settings.hash_max_waiters,
            self.settings.hash_queue_timeout,
        )
        .await;
        let Some(permit) = permit else {
            self.metrics.hash_shed.increment(1);
            return Err(Error::Unavailable(
                "too many tokens are being created at once; retry shortly".into(),
            ));
        };
        self.work.hashes.fetch_add(1, Ordering::Relaxed);
        let part = token::new_secret_part();
        let hashed = part.clone();
        let phc = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            token::hash_secret(&hashed)
        })
        .await
        .map_err(|e| Error::Internal(format!("hash task: {e}")))?
        .map_err(|e| Error::Internal(format!("argon2: {e}")))?;
        Ok((part, phc))
    }
}

/// The outcome of the cheap proof.
enum Proof<'i> {
    /// The digest matched: the token's live state.
    Verified(&'i TokenState),
    /// No digest known: argon2 must check this PHC hash.
    NeedsArgon2(String),
}

/// Decides for an authentic token and records its use. A DOMAIN id is
/// looked up in its canonical spelling (borrowed, with no allocation, when
/// it is one already): every spelling of a domain gets the same decision.
/// One that is not a host name is looked up as an id nothing is registered
/// under: UNKNOWN_RESOURCE, after the token's own checks.
fn decide_for(idx: &Index, state: &TokenState, check: &Check<'_>, now: i64) -> Decision {
    let canonical;
    let domain_check;
    let check = if check.kind == Kind::Domain {
        canonical = model::domain_lookup_key(check.id);
        domain_check = Check {
            id: &canonical,
            ..*check
        };
        &domain_check
    } else {
        check
    };
    let result = authz::decide(idx, state, check, now);
    if result.is_ok() {
        state.touch(now);
    }
    Decision {
        allowed: result.is_ok(),
        reason: result.err().unwrap_or(DenyReason::Unspecified),
        token_id: state.id,
        account_id: state.account_id,
    }
}

/// Parses a token with the length bound applied first.
fn parse_bounded(token: &str) -> Option<ParsedToken<'_>> {
    if token.len() > limits::TOKEN_MAX {
        return None;
    }
    token::parse(token)
}
