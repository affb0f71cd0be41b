//! The engine: the index, the store, the verifier and the clock, and the
//! operations every surface shares: authenticate a token, decide, commit.
//! The admin rules live in `access` and the operations in `admin/`; the
//! wire lives in `service/` and `rest/`.
//!
//! This file holds the state, its construction and load, and the commit
//! path. The operations sit beside it, one file per concern: `authn`
//! (prove a token authentic, the argon2 budgets, hash new secrets),
//! `authorize` (one Authorize decision), `introspect` (a token described
//! to its holder, at Authorize's cost), `caller` (an admin caller
//! authenticated), `mutate` (the one way state changes, and the audit
//! log's two ends), `upkeep` (persist usage, purge expired tokens, the
//! work counters), `usage` (the usage writer: usage persisted in small
//! paced steps) and `catch_up` (the write lock, and keeping a shared
//! store's node current: [`sync`]).
//!
//! Layer L4: imports the vocabulary (`clock`, `error`, `metrics`, `model`,
//! `pb`, `token`), `index`, `store`, `wire`, `feed`, `upstream`, `authz`
//! and `access`; never a layer above it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{OwnedMutexGuard, Semaphore};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::index::{Change, Index};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::token::{Digest, DigestKey, Secret};
use crate::upstream::{FollowerState, Freshness, Upstream};

mod authn;
mod authorize;
mod caller;
mod catch_up;
mod introspect;
mod lease;
mod mutate;
mod replica;
mod upkeep;
mod usage;

pub use authn::AuthnFailure;
pub use authorize::{Cached, Decision, Rate};
pub use catch_up::sync;
pub use lease::{Held, LeaseAsk, LeaseGrant, LeaseSource, StoreLeases, LEASE_WAIT, ROUND_EVERY};
pub use mutate::{Done, Mint, NewToken, Plan};
pub use upkeep::Work;
use upkeep::WorkCounters;
pub use usage::UsagePace;

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
    /// This node's name (`--node-name`), recorded with every use it sees
    /// so that `last_used_by` says where a token is still used.
    pub node_name: Arc<str>,
    /// A node that leases sending-limit budget gives back a lease left
    /// unspent this long.
    pub lease_idle: Duration,
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
            node_name: Arc::from("keyward"),
            lease_idle: Duration::from_secs(1),
        }
    }
}

/// The shared state behind every surface.
pub struct Engine {
    /// Everything, in memory; Authorize takes only the read lock.
    index: Arc<RwLock<Index>>,
    /// Durable records.
    store: Arc<dyn Store>,
    /// Serialises mutations: rules are checked and the commit applied with
    /// no other mutation in between.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Wall clock, injectable for tests.
    clock: Arc<dyn Clock>,
    /// Key of the verified digests (kept outside the store).
    key: DigestKey,
    /// Tunables.
    settings: Settings,
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
    metrics: Metrics,
    /// Last audit event id handed out.
    audit_seq: AtomicU64,
    /// Every commit, for followers (primary).
    feed: Arc<crate::feed::Feed>,
    /// The shared store's revision the index is at (0 on sled).
    applied: Arc<AtomicU64>,
    /// Where the state comes from when this node does not own its store:
    /// the primary it follows, or the database it shares (and when each
    /// was last reached).
    upstream: Upstream,
    /// This node's name id ([`crate::index::nodes`]), which its own uses
    /// record as `last_used_by`.
    node: u32,
    /// A follower's leases of sending-limit budget.
    leases: lease::Leases,
    /// Where a usage step may be parked by a test ([`usage::UsageGate`]).
    usage_gate: usage::UsageGate,
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
        Self::build(store, key, clock, settings, Upstream::Own)
    }

    /// An engine on a shared store (PostgreSQL), one node of several: it
    /// fails closed past `freshness`'s bound without reaching the database.
    pub fn new_shared(
        store: Arc<dyn Store>,
        key: DigestKey,
        clock: Arc<dyn Clock>,
        settings: Settings,
        freshness: Freshness,
    ) -> Arc<Engine> {
        Self::build(store, key, clock, settings, Upstream::Database(freshness))
    }

    /// An engine that follows a primary: its index is filled by
    /// replication ([`crate::replication::follow`]), never by admin calls.
    pub fn new_follower(
        key: DigestKey,
        clock: Arc<dyn Clock>,
        settings: Settings,
        follower: FollowerState,
    ) -> Arc<Engine> {
        let store: Arc<dyn Store> = Arc::new(crate::store::NoStore);
        Self::build(store, key, clock, settings, Upstream::Primary(follower))
    }

    fn build(
        store: Arc<dyn Store>,
        key: DigestKey,
        clock: Arc<dyn Clock>,
        settings: Settings,
        upstream: Upstream,
    ) -> Arc<Engine> {
        let feed = match store.cluster_id() {
            // Nodes of one database share the epoch and revisions, so a
            // follower may resume from any of them.
            Some(id) => crate::feed::Feed::with_epoch(id),
            None => crate::feed::Feed::new(),
        };
        let node = crate::index::nodes::intern(&settings.node_name);
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
            usage_gate: usage::UsageGate::default(),
            ready: AtomicBool::new(false),
            metrics: Metrics::new(),
            audit_seq: AtomicU64::new(0),
            feed: Arc::new(feed),
            applied: Arc::new(AtomicU64::new(0)),
            upstream,
            node,
            leases: lease::Leases::new(),
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
        let secret = self.hash_new_secret().await.map_err(bootstrap)?;
        let w = self.write_lock().await.map_err(bootstrap)?;
        let (changes, full) = {
            let idx = self.index.read();
            if idx.next_token_id > 1 || !idx.tokens.is_empty() {
                // Another node of the shared store started first and made it.
                return Ok(None);
            }
            let root = NewToken {
                account_id: 0,
                name: "root".into(),
                created_by: "keyward".into(),
                grants: Vec::new(),
                scopes: Vec::new(),
                expires_at_ms: None,
                replaces: 0,
            };
            let (mut record, full) = mutate::token_record(&idx, Some(&secret), root, self.now_ms());
            record.root = true;
            let changes = vec![
                Change::Counters {
                    next_account_id: idx.next_account_id,
                    next_token_id: record.id + 1,
                },
                Change::PutToken(record),
            ];
            (changes, full)
        };
        self.commit(w, changes).await.map_err(bootstrap)?;
        Ok(full)
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
        if let Some(why) = self.upstream.refusal(self.now_ms()) {
            return Err(Error::Unavailable(why));
        }
        Ok(())
    }

    /// The shared store's freshness, on a PostgreSQL node.
    pub fn shared(&self) -> Option<&Freshness> {
        self.upstream.database()
    }

    /// The freshness of the source of a node that spends sending limits
    /// from leases (a follower, a PostgreSQL node); None on a primary.
    pub fn leasing(&self) -> Option<&Freshness> {
        self.upstream.source()
    }

    /// The follower state, if this keyward follows a primary.
    pub fn follower(&self) -> Option<&FollowerState> {
        self.upstream.follower()
    }

    /// Now, from the injected clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The tunables.
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// This node's name (`--node-name`).
    pub fn node_name(&self) -> &str {
        &self.settings.node_name
    }

    /// The metric handles.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The digest key.
    pub(crate) fn key(&self) -> &DigestKey {
        &self.key
    }

    /// Holds this node's writer lock: no mutation (nor usage flush)
    /// commits until the guard is dropped. A backup of sled reads the store
    /// under it.
    pub(crate) async fn hold_writes(&self) -> OwnedMutexGuard<()> {
        self.writer.clone().lock_owned().await
    }

    /// The store.
    pub(crate) fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Makes everything committed durable (shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.store.flush().await
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
            let WriteGuard { _local: local, txn } = guard;
            let revision = match txn.commit(&changes).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "store commit failed");
                    return Err(store_unavailable(&e));
                }
            };
            if usage {
                mark_saved(&index.read(), &changes);
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
            drop(local);
            Ok(())
        });
        task.await
            .map_err(|e| Error::Internal(format!("commit task: {e}")))?
    }
}

/// After a usage commit of `changes`: their tokens' last uses (up to the
/// time written) and digests are stored.
fn mark_saved(idx: &Index, changes: &[Change]) {
    for c in changes {
        if let Change::PutToken(r) = c {
            if let Some(t) = idx.tokens.get(&r.id) {
                t.mark_use_saved(r.last_used_at_ms);
                if !r.verified_digest.is_empty() {
                    t.digest_unsaved.store(false, Ordering::Relaxed);
                }
            }
        }
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
