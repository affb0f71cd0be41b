//! Durable storage: the narrow [`Store`] trait, its errors, the checks every
//! backend's load goes through, and [`NoStore`] (a follower's). The
//! backends: [`sled`] (embedded, the default) and [`postgres`] (shared by
//! several nodes).
//!
//! A commit is atomic and durable when it returns. The index is rebuilt at
//! start from [`Store::load`], which yields the same [`Change`]s that
//! commits carry. May import `index`, `model`, `pb`, `token`; never the
//! engine or replication.

use std::future::Future;
use std::pin::Pin;

pub mod archive;
pub mod postgres;
pub mod records;
pub mod sled;

pub use self::sled::SledStore;

use crate::index::{Change, Index};
use crate::pb::store::{AuditRecord, TokenRecord};
use crate::token::DigestKey;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage engine failed (I/O, disk full, ...).
    #[error("storage engine: {0}")]
    Engine(#[from] ::sled::Error),
    /// A record or key could not be decoded: the data dir is damaged.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The first start could not create the root token.
    #[error("first start: {0}")]
    Bootstrap(String),
    /// The database failed or is unreachable; nothing was applied.
    #[error("database: {0}")]
    Database(String),
    /// The connection failed while the commit was in flight: it may or may
    /// not have been applied.
    #[error("database connection lost during commit; the change may or may not be applied: {0}")]
    Ambiguous(String),
    /// Changes this node needs were pruned: it must reload a snapshot.
    #[error("this node is behind the change retention horizon and must reload")]
    Horizon,
    /// The store holds DOMAIN ids written before ids were canonical that
    /// are not in canonical form (two spellings of one domain, perhaps in
    /// two accounts): keyward will not merge them or pick an owner.
    #[error(
        "the store holds domain ids that are not in canonical form (lower case, IDNA \
         A-labels, no trailing dot or port): {0}. keyward compares domains in that form and \
         will not merge spellings or pick an owner: with the keyward that wrote this store, \
         DeleteResource each spelling that should not stay (its tokens lose their grants on \
         it), then start this keyward and RegisterResource the canonical spelling where it is \
         missing"
    )]
    DomainIds(String),
    /// A store copy or restore into this store did not finish (or did
    /// not verify): its records are incomplete.
    #[error(
        "{0} holds a store copy or restore that did not finish: its records are incomplete; \
         run the copy or restore again with --force (it starts over), or remove it"
    )]
    Incomplete(String),
    /// A store copy or restore was pointed at a store that holds records.
    #[error("{0}")]
    NotEmpty(String),
    /// The data dir was written by a newer keyward.
    #[error("store schema version {found} is newer than this keyward supports ({supported})")]
    Version {
        /// Version in the store.
        found: u64,
        /// Newest version this build reads.
        supported: u64,
    },
}

/// A boxed future, for a trait that must be object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a store holds, read into a fresh index.
pub struct Loaded {
    /// Everything, as the hot path reads it.
    pub index: Index,
    /// The revision of a shared store the index is at (0 for sled, whose
    /// revisions are the process's own).
    pub revision: u64,
}

/// One commit of a shared store, as other nodes read it back.
#[derive(Debug, Clone)]
pub struct Revision {
    /// Its place in the store's total order (1, 2, ...; no gaps).
    pub revision: u64,
    /// What it changed.
    pub changes: Vec<Change>,
}

/// An open write: on a shared store no other writer (on any node) commits
/// until it is committed or dropped. Dropping it without committing rolls
/// it back.
pub trait WriteTxn: Send {
    /// Applies `changes` atomically; durable once the future resolves.
    /// Returns the revision of the commit (0 on a store without shared
    /// revisions).
    fn commit<'a>(self: Box<Self>, changes: &'a [Change])
        -> BoxFuture<'a, Result<u64, StoreError>>;
}

/// One node's lease of a sending-limit budget kept in a shared store
/// (see [`crate::ratelimit::shared`]).
#[derive(Debug, Clone)]
pub struct BudgetAsk {
    /// Where the budget is kept ([`crate::ratelimit::Budget::key`]).
    pub budget_id: u64,
    /// The token's limits, as the node knows them.
    pub specs: Vec<crate::ratelimit::Spec>,
    /// What the node knew of the budget (per limit, when full again),
    /// for a budget the store does not hold yet.
    pub floor: Vec<i64>,
    /// Units wanted.
    pub want: u64,
    /// Unspent units given back (first).
    pub give_back: u64,
}

/// What a lease got: units granted, and units the budget has left (its
/// tightest limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetGrant {
    /// Units granted.
    pub granted: u64,
    /// Units left after the grant.
    pub remaining: u64,
}

/// An open write, and what other nodes committed before it.
pub type Begun = (Box<dyn WriteTxn>, Vec<Revision>);

/// Where records live. Implementations must make a commit atomic and
/// durable before it returns.
pub trait Store: Send + Sync + 'static {
    /// Everything stored, as an index keyed with `key`.
    fn load(&self, key: DigestKey) -> BoxFuture<'_, Result<Loaded, StoreError>>;
    /// Begins a write. A shared store locks out every other writer and
    /// returns, with the open write, what other nodes committed after
    /// `applied` (so rules are checked against the current state).
    fn begin(&self, applied: u64) -> BoxFuture<'_, Result<Begun, StoreError>>;
    /// A shared store: up to `limit` commits after `applied`, in order.
    /// [`StoreError::Horizon`] when some were already pruned.
    fn changes_since(
        &self,
        _applied: u64,
        _limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Revision>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    /// A shared store's identity (the followers' epoch), None otherwise.
    fn cluster_id(&self) -> Option<u64> {
        None
    }
    /// A shared store: drops change rows no node should need any more.
    fn prune(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async { Ok(0) })
    }
    /// A shared store: at `now_ms`, each ask in order gives back, then
    /// leases from the budget it names, atomically for all (the budgets
    /// of several nodes meet here).
    fn lease<'a>(
        &'a self,
        _now_ms: i64,
        _asks: &'a [BudgetAsk],
    ) -> BoxFuture<'a, Result<Vec<BudgetGrant>, StoreError>> {
        Box::pin(async {
            Err(StoreError::Corrupt(
                "this store keeps no shared sending-limit budgets".into(),
            ))
        })
    }
    /// A shared store: drops budgets full again before `now_ms` (an absent
    /// budget is a full one).
    fn prune_budgets(&self, _now_ms: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async { Ok(0) })
    }
    /// Makes everything committed durable (used at shutdown).
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Appends an audit event; durable once the future resolves.
    fn append_audit<'a>(&'a self, event: &'a AuditRecord) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Up to `limit` audit events of `account_id` with ids above `after`, oldest first.
    fn list_audit(
        &self,
        account_id: u64,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<AuditRecord>, StoreError>>;
    /// The highest audit event id stored (0 if none).
    fn last_audit_id(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Every record, read from now on (a backup). Consistent at one
    /// instant on PostgreSQL (one snapshot); on sled only while the caller
    /// keeps writers out (the engine's writer lock).
    fn export_all(&self) -> BoxFuture<'_, Result<Box<dyn records::Export>, StoreError>> {
        Box::pin(async {
            Err(StoreError::Corrupt(
                "this node keeps no store (a follower): back up its primary".into(),
            ))
        })
    }
}

/// Checks what a load yields, whatever the backend: a token id at or past
/// the id counter, or a counter past what ids can be, is a damaged store
/// (keyward never writes one), refused rather than loaded.
#[derive(Debug)]
pub(crate) struct LoadCheck {
    next_token_id: u64,
}

impl LoadCheck {
    pub(crate) fn new() -> Self {
        Self { next_token_id: 1 }
    }

    /// The id counters, before any token.
    pub(crate) fn counters(
        &mut self,
        next_account_id: u64,
        next_token_id: u64,
    ) -> Result<Change, StoreError> {
        if next_token_id > TOKEN_ID_MAX {
            return Err(corrupt(
                "counters",
                format!("next token id {next_token_id} is beyond {TOKEN_ID_MAX}"),
            ));
        }
        self.next_token_id = next_token_id;
        Ok(Change::Counters {
            next_account_id,
            next_token_id,
        })
    }

    /// A token record: its id must be below the counter.
    pub(crate) fn token(&self, record: TokenRecord) -> Result<Change, StoreError> {
        if record.id == 0 || record.id >= self.next_token_id {
            return Err(corrupt(
                "tokens",
                format!(
                    "token id {} is not below the id counter {}",
                    record.id, self.next_token_id
                ),
            ));
        }
        Ok(Change::PutToken(record))
    }
}

/// Largest token id counter a store may hold (ids are kept in 32 bits).
const TOKEN_ID_MAX: u64 = 1 << 32;

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// No store: a follower keeps nothing on disk (its state comes from the
/// primary). Loads nothing; writes are refused, and never reached: admin
/// calls are refused before any rule runs.
#[derive(Debug, Clone, Copy)]
pub struct NoStore;

impl Store for NoStore {
    fn load(&self, key: DigestKey) -> BoxFuture<'_, Result<Loaded, StoreError>> {
        Box::pin(async move {
            Ok(Loaded {
                index: Index::new(key),
                revision: 0,
            })
        })
    }
    fn begin(&self, _applied: u64) -> BoxFuture<'_, Result<Begun, StoreError>> {
        Box::pin(async {
            Err(StoreError::Corrupt(
                "a follower has no store to write".into(),
            ))
        })
    }
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    fn append_audit<'a>(
        &'a self,
        _event: &'a AuditRecord,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    fn list_audit(
        &self,
        _account_id: u64,
        _after: u64,
        _limit: usize,
    ) -> BoxFuture<'_, Result<Vec<AuditRecord>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn last_audit_id(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async { Ok(0) })
    }
}
