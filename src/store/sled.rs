//! The embedded sled store in a data dir: [`SledStore`].
//!
//! A commit is atomic across trees and durable when it returns (sled
//! transaction, then a group flush (`GroupFlush`: one `flush` at a time,
//! covering every write before it). Loads go through `LoadCheck` like
//! every backend's. May import what `store` may.

use std::path::Path;
use std::sync::Arc;

use prost::Message;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

mod moves;

pub use moves::{SledExport, SledImport};

use super::{corrupt, Begun, BoxFuture, LoadCheck, Loaded, Store, StoreError, WriteTxn};
use crate::index::{Change, Index};
use crate::model::{Kind, ResourceKey};
use crate::pb::store::{AccountRecord, AuditRecord, ResourceRecord, TokenRecord};
use crate::token::DigestKey;

const SCHEMA_VERSION: u64 = 1;
const META_SCHEMA: &[u8] = b"schema_version";
const META_COUNTERS: &[u8] = b"counters";
const META_AUDIT_SEQ: &[u8] = b"audit_seq";
/// Set while a store copy or restore writes into the store, removed once
/// it is verified: keyward refuses to start on a store that holds it.
const META_INCOMPLETE: &[u8] = b"import_incomplete";
/// Written in the data dir when keyward initialises it.
const MARKER_FILE: &str = "keyward.store";

/// The embedded sled store in a data dir.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    accounts: sled::Tree,
    resources: sled::Tree,
    tokens: sled::Tree,
    meta: sled::Tree,
    audit: sled::Tree,
    /// Serialises audit appends: concurrent appends would conflict on the
    /// audit sequence key and retry.
    audit_writer: Arc<parking_lot::Mutex<()>>,
    /// Group commit without `flush_async`.
    flusher: Arc<GroupFlush>,
}

/// Makes writes durable, one `sled::Db::flush` at a time, each covering
/// every write that finished before it started (group commit).
///
/// Not `flush_async`: concurrent `flush_async` calls deadlock sled 0.34
/// (spacejam/sled#1308, fixed on sled's main branch, never released). A
/// flood of refused admin calls, each appending an audit event, hung every
/// writer and flush of the store for good.
#[derive(Default)]
struct GroupFlush {
    /// Serialises flushes.
    lock: tokio::sync::Mutex<()>,
    /// Flush requests made so far.
    requested: std::sync::atomic::AtomicU64,
    /// Every request up to this one is durable.
    durable: std::sync::atomic::AtomicU64,
}

impl GroupFlush {
    /// Returns once every write that finished before the call is durable.
    async fn flush(&self, db: &sled::Db) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let mine = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let _turn = self.lock.lock().await;
        if self.durable.load(Ordering::Acquire) >= mine {
            // A flush that started after this request covered it.
            return Ok(());
        }
        let upto = self.requested.load(Ordering::Acquire);
        let db = db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| corrupt("flush task", e))??;
        self.durable.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }
}

/// Opens sled's files in `dir`. sled releases its file lock from a thread
/// of its own after the last handle is dropped, so a store just closed in
/// this process (a restart in place, a test) can be briefly locked still:
/// the lock is waited for up to 2 s. Any other error, and a lock held
/// longer (another process on the same dir), fail at once.
fn open_db(dir: &Path) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let opened = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            // A small page cache: the index lives in keyward's own memory,
            // sled is read once at start and then only written.
            .cache_capacity(32 * 1024 * 1024)
            .open();
        match opened {
            // sled 0.34 wraps the lock's `WouldBlock` in a message.
            Err(sled::Error::Io(e))
                if e.to_string().starts_with("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn resource_key(account_id: u64, key: &ResourceKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key.id.len());
    k.extend_from_slice(&account_id.to_be_bytes());
    #[expect(clippy::cast_possible_truncation, reason = "four kinds")]
    let slot = key.kind.slot() as u8;
    k.push(slot);
    k.extend_from_slice(key.id.as_bytes());
    k
}

impl SledStore {
    /// Opens (or creates) the store in `dir`, checking its schema version.
    ///
    /// A marker file beside sled's files tells a damaged store from a new
    /// one: sled may open a truncated or foreign data dir as empty, and an
    /// empty start would silently drop every token. So a dir with the marker
    /// must hold a schema version, and a dir without it must be empty (but
    /// for the digest key) before keyward initialises it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let store = Self::open_any(dir)?;
        if store.meta.get(META_INCOMPLETE)?.is_some() {
            return Err(StoreError::Incomplete(dir.display().to_string()));
        }
        Ok(store)
    }

    /// [`SledStore::open`], also on a store an unfinished copy left.
    fn open_any(dir: &Path) -> Result<Self, StoreError> {
        let marker = dir.join(MARKER_FILE);
        let initialised = marker.exists();
        if !initialised {
            let foreign = std::fs::read_dir(dir)
                .map_err(|e| corrupt("data dir", e))?
                .filter_map(std::result::Result::ok)
                .any(|e| e.file_name() != "digest.key");
            if foreign {
                return Err(StoreError::Corrupt(format!(
                    "{} holds files but no {MARKER_FILE} marker: not a keyward data dir (or a damaged one); \
                     refusing to start on it",
                    dir.display()
                )));
            }
            let mut f = std::fs::File::create(&marker).map_err(|e| corrupt("marker", e))?;
            std::io::Write::write_all(&mut f, b"keyward store, schema 1\n")
                .map_err(|e| corrupt("marker", e))?;
            f.sync_all().map_err(|e| corrupt("marker", e))?;
        }
        let db = open_db(dir)?;
        let store = Self {
            accounts: db.open_tree("accounts")?,
            resources: db.open_tree("resources")?,
            tokens: db.open_tree("tokens")?,
            meta: db.open_tree("meta")?,
            audit: db.open_tree("audit")?,
            audit_writer: Arc::new(parking_lot::Mutex::new(())),
            flusher: Arc::new(GroupFlush::default()),
            db,
        };
        match store.meta.get(META_SCHEMA)? {
            None if initialised => {
                return Err(StoreError::Corrupt(format!(
                    "{} was initialised ({MARKER_FILE} exists) but the store is empty: damaged or truncated; \
                     refusing to start with no tokens",
                    dir.display()
                )))
            }
            None => {
                store
                    .meta
                    .insert(META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
                store.db.flush()?;
            }
            Some(v) => {
                let found = u64::from_be_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| corrupt("meta/schema_version", "not 8 bytes"))?,
                );
                if found > SCHEMA_VERSION {
                    return Err(StoreError::Version {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
        }
        Ok(store)
    }

    /// Whether nothing was ever stored (no counters yet): first start.
    pub fn is_new(&self) -> Result<bool, StoreError> {
        Ok(self.meta.get(META_COUNTERS)?.is_none())
    }
}

/// The four trees a commit writes: accounts, resources, tokens, meta.
type Trees = (sled::Tree, sled::Tree, sled::Tree, sled::Tree);

/// Applies `changes` in one sled transaction across the trees (CPU work:
/// run on a blocking thread).
fn apply_batch(trees: &Trees, changes: &[Change]) -> Result<(), StoreError> {
    let result: Result<(), TransactionError<()>> = (&trees.0, &trees.1, &trees.2, &trees.3)
        .transaction(|(accounts, resources, tokens, meta)| {
            for change in changes {
                match change {
                    Change::PutAccount(a) => {
                        accounts.insert(&a.id.to_be_bytes(), a.encode_to_vec())?;
                    }
                    Change::PutResource(r) => {
                        let kind = Kind::from_wire(r.resource_type)
                            .ok_or(ConflictableTransactionError::Abort(()))?;
                        let key =
                            resource_key(r.account_id, &ResourceKey::new(kind, r.id.as_str()));
                        resources.insert(key, r.encode_to_vec())?;
                    }
                    Change::DeleteResource { account_id, key } => {
                        resources.remove(resource_key(*account_id, key))?;
                    }
                    Change::PutToken(t) => {
                        tokens.insert(&t.id.to_be_bytes(), t.encode_to_vec())?;
                    }
                    Change::DeleteToken(id) => {
                        tokens.remove(&id.to_be_bytes())?;
                    }
                    Change::Counters {
                        next_account_id,
                        next_token_id,
                    } => {
                        let mut v = [0u8; 16];
                        v[..8].copy_from_slice(&next_account_id.to_be_bytes());
                        v[8..].copy_from_slice(&next_token_id.to_be_bytes());
                        meta.insert(META_COUNTERS, &v)?;
                    }
                }
            }
            Ok(())
        });
    match result {
        Ok(()) => Ok(()),
        Err(TransactionError::Abort(())) => Err(corrupt("commit", "invalid resource type")),
        Err(TransactionError::Storage(e)) => Err(e.into()),
    }
}

impl SledStore {
    /// Reads everything, in order: counters, accounts, resources, tokens.
    pub fn load_into(&self, apply: &mut dyn FnMut(Change)) -> Result<(), StoreError> {
        let mut check = LoadCheck::new();
        if let Some(v) = self.meta.get(META_COUNTERS)? {
            let b: [u8; 16] = v
                .as_ref()
                .try_into()
                .map_err(|_| corrupt("meta/counters", "not 16 bytes"))?;
            let (a, t) = b.split_at(8);
            apply(check.counters(
                u64::from_be_bytes(a.try_into().map_err(|e| corrupt("meta/counters", e))?),
                u64::from_be_bytes(t.try_into().map_err(|e| corrupt("meta/counters", e))?),
            )?);
        }
        for kv in &self.accounts {
            let (_, v) = kv?;
            apply(Change::PutAccount(
                AccountRecord::decode(v.as_ref()).map_err(|e| corrupt("accounts", e))?,
            ));
        }
        for kv in &self.resources {
            let (_, v) = kv?;
            apply(Change::PutResource(
                ResourceRecord::decode(v.as_ref()).map_err(|e| corrupt("resources", e))?,
            ));
        }
        for kv in &self.tokens {
            let (_, v) = kv?;
            let record = TokenRecord::decode(v.as_ref()).map_err(|e| corrupt("tokens", e))?;
            apply(check.token(record)?);
        }
        Ok(())
    }

    /// Applies `changes` in one transaction; durable once it returns.
    pub async fn commit_batch(&self, changes: &[Change]) -> Result<(), StoreError> {
        {
            // The transaction is CPU work (encoding, tree updates): keep it
            // off the async workers that answer Authorize.
            let trees: Trees = (
                self.accounts.clone(),
                self.resources.clone(),
                self.tokens.clone(),
                self.meta.clone(),
            );
            let owned = changes.to_vec();
            tokio::task::spawn_blocking(move || apply_batch(&trees, &owned))
                .await
                .map_err(|e| corrupt("commit task", e))??;
            self.flusher.flush(&self.db).await?;
            Ok(())
        }
    }
}

/// A sled write: the engine's writer lock already serialises writers.
struct SledTxn(SledStore);

impl WriteTxn for SledTxn {
    fn commit<'a>(
        self: Box<Self>,
        changes: &'a [Change],
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            self.0.commit_batch(changes).await?;
            Ok(0)
        })
    }
}

impl Store for SledStore {
    fn load(&self, key: DigestKey) -> BoxFuture<'_, Result<Loaded, StoreError>> {
        let me = self.clone();
        Box::pin(async move {
            // Decoding every record is CPU work: off the async workers.
            tokio::task::spawn_blocking(move || {
                let mut index = Index::new(key);
                me.load_into(&mut |change| index.apply(&change))?;
                index.check_domain_ids().map_err(StoreError::DomainIds)?;
                Ok(Loaded { index, revision: 0 })
            })
            .await
            .map_err(|e| corrupt("load task", e))?
        })
    }

    fn begin(&self, _applied: u64) -> BoxFuture<'_, Result<Begun, StoreError>> {
        let txn: Box<dyn WriteTxn> = Box::new(SledTxn(self.clone()));
        Box::pin(async move { Ok((txn, Vec::new())) })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.flusher.flush(&self.db).await?;
            Ok(())
        })
    }

    fn append_audit<'a>(&'a self, event: &'a AuditRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        let value = event.encode_to_vec();
        let key = audit_key(event.account_id, event.id);
        let id = event.id;
        let (audit, meta, lock) = (
            self.audit.clone(),
            self.meta.clone(),
            self.audit_writer.clone(),
        );
        Box::pin(async move {
            // One append at a time, off the async workers (it may wait for
            // the lock and does tree updates).
            let append = move || {
                let _one = lock.lock();
                let result: Result<(), TransactionError<()>> =
                    (&audit, &meta).transaction(|(audit, meta)| {
                        audit.insert(key.as_slice(), value.as_slice())?;
                        // Appends may land out of id order: keep the highest.
                        let stored = meta
                            .get(META_AUDIT_SEQ)?
                            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                            .map_or(0, u64::from_be_bytes);
                        meta.insert(META_AUDIT_SEQ, &stored.max(id).to_be_bytes())?;
                        Ok(())
                    });
                result.map_err(|e| match e {
                    TransactionError::Storage(e) => StoreError::Engine(e),
                    TransactionError::Abort(()) => corrupt("audit", "aborted"),
                })
            };
            tokio::task::spawn_blocking(append)
                .await
                .map_err(|e| corrupt("audit task", e))??;
            self.flusher.flush(&self.db).await?;
            Ok(())
        })
    }

    fn list_audit(
        &self,
        account_id: u64,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<AuditRecord>, StoreError>> {
        Box::pin(async move { self.list_audit_sync(account_id, after, limit) })
    }

    fn last_audit_id(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move { self.last_audit_id_sync() })
    }

    fn export_all(&self) -> BoxFuture<'_, Result<Box<dyn super::records::Export>, StoreError>> {
        Box::pin(async move {
            let e: Box<dyn super::records::Export> = Box::new(self.export()?);
            Ok(e)
        })
    }
}

impl SledStore {
    fn list_audit_sync(
        &self,
        account_id: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let start = audit_key(account_id, after.saturating_add(1));
        let end = audit_key(account_id, u64::MAX);
        let mut out = Vec::new();
        for kv in self.audit.range(start..=end).take(limit) {
            let (_, v) = kv?;
            out.push(AuditRecord::decode(v.as_ref()).map_err(|e| corrupt("audit", e))?);
        }
        Ok(out)
    }

    fn last_audit_id_sync(&self) -> Result<u64, StoreError> {
        match self.meta.get(META_AUDIT_SEQ)? {
            None => Ok(0),
            Some(v) => Ok(u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| corrupt("meta/audit_seq", "not 8 bytes"))?,
            )),
        }
    }
}

fn audit_key(account_id: u64, id: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&account_id.to_be_bytes());
    k[8..].copy_from_slice(&id.to_be_bytes());
    k
}
