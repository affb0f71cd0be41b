//! Moving a sled store: [`SledExport`] reads every tree in key order, a
//! chunk at a time (consistent only while no one writes: offline, or under
//! the engine's writer lock), and [`SledImport`] fills an empty data dir,
//! flagged incomplete until it is verified. May import what `store` may.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use super::{SledStore, MARKER_FILE, META_AUDIT_SEQ, META_COUNTERS, META_INCOMPLETE};
use crate::model::{Kind, ResourceKey};
use crate::store::records::{verify_failed, Export, Import, Record, RecordKind, Tally, CHUNK};
use crate::store::{corrupt, BoxFuture, StoreError};

/// The trees still to read, each with its iterator.
#[derive(Default)]
struct Cursor {
    /// The counters, read first.
    counters: Option<Record>,
    /// Trees not finished yet, in order.
    trees: VecDeque<(RecordKind, sled::Iter)>,
}

impl Cursor {
    /// Up to `n` records.
    fn read(&mut self, n: usize) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::with_capacity(n.min(CHUNK));
        if let Some(c) = self.counters.take() {
            out.push(c);
        }
        while out.len() < n {
            let Some((kind, iter)) = self.trees.front_mut() else {
                break;
            };
            let kind = *kind;
            match iter.next() {
                None => {
                    self.trees.pop_front();
                }
                Some(kv) => {
                    let (_, v) = kv?;
                    out.push(decode_value(kind, &v)?);
                }
            }
        }
        Ok(out)
    }
}

fn decode_value(kind: RecordKind, v: &[u8]) -> Result<Record, StoreError> {
    let tree = match kind {
        RecordKind::Account => "accounts",
        RecordKind::Resource => "resources",
        RecordKind::Token => "tokens",
        RecordKind::Audit => "audit",
        RecordKind::Counters => "meta/counters",
    };
    Record::decode(kind, v).map_err(|e| corrupt(tree, e))
}

/// Every record of a sled store, in tree and key order.
pub struct SledExport {
    cursor: Cursor,
    total: u64,
}

impl SledExport {
    /// Reads everything synchronously into `tally` (a blocking thread's
    /// work).
    fn tally_sync(mut self) -> Result<Tally, StoreError> {
        let mut tally = Tally::default();
        loop {
            let chunk = self.cursor.read(CHUNK)?;
            if chunk.is_empty() {
                return Ok(tally);
            }
            for r in &chunk {
                tally.add(r);
            }
        }
    }
}

impl Export for SledExport {
    fn total(&self) -> u64 {
        self.total
    }

    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Vec<Record>, StoreError>> {
        Box::pin(async move {
            // Reading and decoding is blocking work: off the async workers.
            let mut cursor = std::mem::take(&mut self.cursor);
            let (cursor, out) = tokio::task::spawn_blocking(move || {
                let out = cursor.read(CHUNK);
                (cursor, out)
            })
            .await
            .map_err(|e| corrupt("export task", e))?;
            self.cursor = cursor;
            out
        })
    }
}

/// Whether `e` is sled's "could not acquire lock" (another handle holds
/// the dir).
fn is_locked(e: &StoreError) -> bool {
    matches!(e, StoreError::Engine(sled::Error::Io(io)) if io.to_string().contains("acquire lock"))
}

/// Opens `dir` with `open`, waiting up to 2 s for sled's lock: a handle
/// this process dropped a moment ago releases it only once sled's
/// background threads let go. A dir held by another process stays locked,
/// and is refused after the wait.
fn open_waiting(
    dir: &Path,
    open: impl Fn(&Path) -> Result<SledStore, StoreError>,
) -> Result<SledStore, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match open(dir) {
            Err(e) if is_locked(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

impl SledStore {
    /// Opens the store in `dir` to read it whole (a copy's source): it must
    /// be an initialised keyward store, not open in another process.
    pub fn open_source(dir: &Path) -> Result<Self, StoreError> {
        if !dir.join(MARKER_FILE).exists() {
            return Err(StoreError::Corrupt(format!(
                "{} is not a keyward data dir (no {MARKER_FILE} marker)",
                dir.display()
            )));
        }
        let store = open_waiting(dir, Self::open).map_err(|e| match e {
            e if is_locked(&e) => StoreError::NotEmpty(format!(
                "{} is in use by another process (a keyward serving it?): sled allows one \
                     process per data dir. Stop it first, or back the running node up with \
                     `keyward store backup`",
                dir.display()
            )),
            e => e,
        })?;
        if store.is_new()? {
            return Err(StoreError::Corrupt(format!(
                "{} holds no keyward records yet: nothing to copy",
                dir.display()
            )));
        }
        Ok(store)
    }

    /// Every record, read from now on in tree and key order. Consistent
    /// only while nothing writes (offline, or under the writer lock; audit
    /// appends that land meanwhile may or may not be included).
    pub fn export(&self) -> Result<SledExport, StoreError> {
        let mut cursor = Cursor::default();
        let mut total = 0;
        if let Some(v) = self.meta.get(META_COUNTERS)? {
            cursor.counters = Some(decode_value(RecordKind::Counters, &v)?);
            total += 1;
        }
        for (kind, tree) in [
            (RecordKind::Account, &self.accounts),
            (RecordKind::Resource, &self.resources),
            (RecordKind::Token, &self.tokens),
            (RecordKind::Audit, &self.audit),
        ] {
            total += tree.len() as u64;
            cursor.trees.push_back((kind, tree.iter()));
        }
        Ok(SledExport { cursor, total })
    }

    /// Starts filling the data dir `dir` (created if missing): it must be
    /// new or empty (but for a digest key), or, with `force`, hold an
    /// unfinished copy, which is cleared. Until [`Import::finish`] verifies
    /// it, the store is flagged incomplete and keyward refuses to start on
    /// it.
    pub fn begin_import(dir: &Path, force: bool) -> Result<SledImport, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| corrupt("data dir", e))?;
        let store = open_waiting(dir, Self::open_any).map_err(|e| match e {
            e if is_locked(&e) => StoreError::NotEmpty(format!(
                "{} is in use by another process (a keyward serving it?)",
                dir.display()
            )),
            e => e,
        })?;
        if store.meta.get(META_INCOMPLETE)?.is_some() {
            if !force {
                return Err(StoreError::Incomplete(dir.display().to_string()));
            }
            for tree in [
                &store.accounts,
                &store.resources,
                &store.tokens,
                &store.audit,
            ] {
                tree.clear()?;
            }
            store.meta.remove(META_COUNTERS)?;
            store.meta.remove(META_AUDIT_SEQ)?;
        } else {
            let held = [
                ("accounts", store.accounts.len()),
                ("resources", store.resources.len()),
                ("tokens", store.tokens.len()),
                ("audit events", store.audit.len()),
            ];
            if !store.is_new()? || held.iter().any(|(_, n)| *n > 0) {
                let what: Vec<String> = held.iter().map(|(k, n)| format!("{n} {k}")).collect();
                return Err(StoreError::NotEmpty(format!(
                    "{} already holds a keyward store ({}): a copy or restore goes into a new, \
                     empty data dir only",
                    dir.display(),
                    what.join(", ")
                )));
            }
        }
        store.meta.insert(META_INCOMPLETE, &[1u8])?;
        store.db.flush()?;
        Ok(SledImport {
            store,
            dir: dir.to_path_buf(),
            max_audit: 0,
        })
    }
}

/// Records going into a new sled data dir.
pub struct SledImport {
    store: SledStore,
    dir: PathBuf,
    /// Highest audit event id written: the audit sequence to store.
    max_audit: u64,
}

fn put_sync(store: &SledStore, records: &[Record]) -> Result<u64, StoreError> {
    let (mut accounts, mut resources, mut tokens, mut audit) = (
        sled::Batch::default(),
        sled::Batch::default(),
        sled::Batch::default(),
        sled::Batch::default(),
    );
    let mut max_audit = 0;
    for r in records {
        match r {
            Record::Counters { .. } => {
                store.meta.insert(META_COUNTERS, r.encode())?;
            }
            Record::Account(a) => accounts.insert(&a.id.to_be_bytes(), r.encode()),
            Record::Resource(res) => {
                let kind = Kind::from_wire(res.resource_type)
                    .ok_or_else(|| corrupt("resources", "invalid resource type"))?;
                let key =
                    super::resource_key(res.account_id, &ResourceKey::new(kind, res.id.as_str()));
                resources.insert(key, r.encode());
            }
            Record::Token(t) => tokens.insert(&t.id.to_be_bytes(), r.encode()),
            Record::Audit(e) => {
                max_audit = max_audit.max(e.id);
                audit.insert(&super::audit_key(e.account_id, e.id), r.encode());
            }
        }
    }
    store.accounts.apply_batch(accounts)?;
    store.resources.apply_batch(resources)?;
    store.tokens.apply_batch(tokens)?;
    store.audit.apply_batch(audit)?;
    Ok(max_audit)
}

impl Import for SledImport {
    fn put(&mut self, records: Vec<Record>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let store = self.store.clone();
            let max = tokio::task::spawn_blocking(move || put_sync(&store, &records))
                .await
                .map_err(|e| corrupt("import task", e))??;
            self.max_audit = self.max_audit.max(max);
            Ok(())
        })
    }

    fn finish(self: Box<Self>, expected: Tally) -> BoxFuture<'static, Result<Tally, StoreError>> {
        Box::pin(async move {
            let me = *self;
            tokio::task::spawn_blocking(move || {
                let SledImport {
                    store,
                    dir,
                    max_audit,
                } = me;
                if max_audit > 0 {
                    store
                        .meta
                        .insert(META_AUDIT_SEQ, &max_audit.to_be_bytes())?;
                }
                store.db.flush()?;
                let tally = store.export()?.tally_sync()?;
                expected
                    .check(&tally)
                    .map_err(|why| verify_failed(&dir.display().to_string(), &why))?;
                store.meta.remove(META_INCOMPLETE)?;
                store.db.flush()?;
                Ok(tally)
            })
            .await
            .map_err(|e| corrupt("import task", e))?
        })
    }
}
