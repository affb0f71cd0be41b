//! A follower's state on its local disk, so that a restart resumes from
//! its revision instead of pulling a whole snapshot: `follower.state` in
//! `--data-dir`, in the backup file's format ([`crate::store::archive`]:
//! versioned, every byte under one BLAKE3 checksum) with source
//! `follower`, the primary's epoch and revision in the header, the
//! primary's digest key id, and every record of the index (counters,
//! accounts, resources, tokens: the records a snapshot sends; hashes and
//! digests, never a secret). Mode 0600.
//!
//! [`keep_state`] writes it off the hot path: every `--follower-state-interval`
//! when the revision moved (but no sooner than [`WRITE_SPACING`] times the
//! last write's own duration: at most a twentieth of a core), and once
//! more at a clean stop; to a temporary file, fsynced, then renamed over
//! the old one (never a half-written file under the real name). The index is read in slices of [`CHUNK`] tokens
//! under short read locks, never held across I/O. The revision is read
//! before the first slice, so every record is at that revision or newer:
//! replaying the commits after it (whole records and deletes) ends in the
//! primary's state.
//!
//! [`load_state`] installs a valid file at start (index, epoch, revision)
//! without making the follower ready: it asks the primary to resume from
//! there and serves once the missed commits are in, or takes the snapshot
//! the primary sends instead. A damaged, truncated, foreign or
//! wrong-version file is set aside (`follower.state.damaged`) with a
//! warning naming why, and the follower starts empty: never served from.
//!
//! Part of replication (layer L5): imports `engine`, `index`, `store` (the
//! archive format) and `metrics` through the engine.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::Engine;
use crate::index::{Change, Index};
use crate::store::archive::{ArchiveError, ArchiveReader, ArchiveWriter, Header, Position};
use crate::store::records::Record;
use crate::store::{LoadCheck, StoreError};

use super::CHUNK;

/// The state file's name in the data dir.
pub const STATE_FILE: &str = "follower.state";
/// Where a file that would not load is set aside (the last one only).
const DAMAGED: &str = "follower.state.damaged";
/// The `source` a follower's state file names in its header.
const SOURCE: &str = "follower";
/// Buffer of the file reads and writes.
const IO_BUFFER: usize = 1 << 20;

/// What [`load_state`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// No state file: the follower starts empty (a snapshot).
    Absent,
    /// A valid file, installed (not ready): resume from `position`.
    Installed {
        /// Where it stands in the primary's stream.
        position: Position,
        /// Tokens it held.
        tokens: usize,
    },
    /// A file that would not load, set aside; why. The follower starts
    /// empty (a snapshot).
    Discarded(String),
}

/// A temporary file of this process (a follower stopped mid-write leaves
/// one; the next start removes it).
fn temp_path(dir: &Path) -> PathBuf {
    dir.join(format!("{STATE_FILE}.tmp-{}", std::process::id()))
}

/// Removes the temporary files earlier writes left behind.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{STATE_FILE}.tmp-");
    for e in entries.flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Reads `dir`'s state file into `engine` (a follower not yet ready):
/// the whole file is read and checked before anything is installed. Runs
/// blocking I/O: call it from a blocking thread.
pub fn load_state(engine: &Engine, dir: &Path) -> Loaded {
    remove_leftovers(dir);
    let path = dir.join(STATE_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::Absent,
        Err(e) => return discard(dir, format!("cannot be read: {e}")),
    };
    let Some(f) = engine.follower() else {
        return Loaded::Absent;
    };
    let (header, idx) = match read(engine, BufReader::with_capacity(IO_BUFFER, file)) {
        Ok(read) => read,
        Err(why) => return discard(dir, why),
    };
    let Some(position) = header.position else {
        return discard(dir, "no position in the header".into());
    };
    if header.digest_key_id != engine.key().id() {
        tracing::warn!("the primary's digest key differs from ours: tokens will be verified with argon2 (copy the primary's --digest-key-file to avoid it)");
    }
    let tokens = engine.install(idx);
    *f.primary_key_id.lock() = header.digest_key_id;
    f.epoch.store(position.epoch, Ordering::Release);
    f.revision.store(position.revision, Ordering::Release);
    f.primary_revision
        .store(position.revision, Ordering::Release);
    let age_s = (engine.now_ms() - header.created_at_ms).max(0) / 1000;
    tracing::info!(
        file = %path.display(),
        tokens,
        epoch = position.epoch,
        revision = position.revision,
        age_s,
        "follower state loaded; not serving until the primary answers"
    );
    Loaded::Installed { position, tokens }
}

/// The file's header and the index its records build; Err says why it
/// will not do.
fn read(engine: &Engine, inp: impl io::Read) -> Result<(Header, Index), String> {
    let said = |e: ArchiveError| match e {
        ArchiveError::Damaged(why) => why,
        ArchiveError::Io(e) => format!("cannot be read: {e}"),
    };
    let mut r = ArchiveReader::open(inp).map_err(said)?.counting_only();
    let header = r.header().clone();
    if header.source != SOURCE {
        return Err(format!(
            "not a follower's state file (its header says {:?})",
            header.source
        ));
    }
    let mut idx = Index::new(engine.key().clone());
    // The same checks as a store's load: ids within the counter.
    let mut check = LoadCheck::new();
    let refused = |e: StoreError| match e {
        StoreError::Corrupt(why) => why,
        e => e.to_string(),
    };
    // The last token record, whose allocations the next one reuses.
    let mut spare = None;
    while let Some(record) = r.next_record_reusing(spare.take()).map_err(said)? {
        let change = match record {
            Record::Counters {
                next_account_id,
                next_token_id,
            } => check
                .counters(next_account_id, next_token_id)
                .map_err(refused)?,
            Record::Account(a) => Change::PutAccount(a),
            Record::Resource(res) => Change::PutResource(res),
            Record::Token(t) => check.token(t).map_err(refused)?,
            Record::Audit(_) => {
                return Err("it holds audit events: a backup, not a follower's state".into())
            }
        };
        idx.apply(&change);
        if let Change::PutToken(t) = change {
            spare = Some(Record::Token(t));
        }
    }
    Ok((header, idx))
}

/// Sets a file that would not load aside and says why, loudly.
fn discard(dir: &Path, why: String) -> Loaded {
    let path = dir.join(STATE_FILE);
    let aside = dir.join(DAMAGED);
    let moved = match std::fs::rename(&path, &aside) {
        Ok(()) => format!("moved to {}", aside.display()),
        Err(_) => match std::fs::remove_file(&path) {
            Ok(()) => "removed".to_string(),
            Err(e) => format!("could not be removed either: {e}"),
        },
    };
    tracing::warn!(
        file = %path.display(),
        why = %why,
        "the follower state file is not usable and is {moved}; taking a snapshot from the primary"
    );
    Loaded::Discarded(why)
}

/// Writes `engine`'s state into `dir` (a temporary file, fsynced, renamed
/// over the state file, the dir fsynced). Ok(None) when there is nothing
/// to write (not synced) or the follower took another epoch's snapshot
/// meanwhile (the file would mix two). Runs blocking I/O.
pub fn save_state(engine: &Engine, dir: &Path) -> io::Result<Option<Position>> {
    let Some(f) = engine.follower() else {
        return Ok(None);
    };
    if !f.synced.load(Ordering::Acquire) {
        return Ok(None);
    }
    // The epoch first, then the revision, then the records: every record
    // is at the revision or newer; the epoch is checked again at the end.
    let epoch = f.epoch.load(Ordering::Acquire);
    let position = Position {
        epoch,
        revision: f.revision.load(Ordering::Acquire),
    };
    let header = Header {
        created_at_ms: engine.now_ms(),
        source: SOURCE.into(),
        digest_key_id: f.primary_key_id.lock().clone(),
        position: Some(position),
    };
    std::fs::create_dir_all(dir)?;
    let tmp = temp_path(dir);
    let _ = std::fs::remove_file(&tmp);
    let mut open = OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let file = open.open(&tmp)?;
    let written = write_records(engine, file, &header).and_then(|file| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if f.epoch.load(Ordering::Acquire) != epoch {
        let _ = std::fs::remove_file(&tmp);
        return Ok(None);
    }
    std::fs::rename(&tmp, dir.join(STATE_FILE))?;
    File::open(dir)?.sync_all()?;
    Ok(Some(position))
}

/// Writes the header and every record of the index to `file`: counters,
/// accounts and resources under one read lock, then tokens by id in
/// slices of [`CHUNK`], each copied under a short read lock and written
/// with none held.
fn write_records(engine: &Engine, file: File, header: &Header) -> io::Result<File> {
    let mut w =
        ArchiveWriter::new(BufWriter::with_capacity(IO_BUFFER, file), header)?.counting_only();
    let (head, max_id) = {
        let idx = engine.view();
        let mut head = vec![Record::Counters {
            next_account_id: idx.next_account_id,
            next_token_id: idx.next_token_id,
        }];
        for a in idx.accounts.values() {
            head.push(Record::Account(a.to_record()));
            head.extend(a.resource_records().map(Record::Resource));
        }
        (head, idx.next_token_id)
    };
    for r in &head {
        w.write(r)?;
    }
    drop(head);
    let mut from = 0u64;
    let mut slice = Vec::with_capacity(CHUNK);
    while from < max_id {
        {
            let idx = engine.view();
            let (tokens, next) = idx.tokens.slice(from, max_id, CHUNK);
            slice.extend(
                tokens
                    .into_iter()
                    .map(|t| Record::Token(t.to_record(engine.key()))),
            );
            from = next;
        }
        for r in slice.drain(..) {
            w.write(&r)?;
        }
    }
    let (out, _) = w.finish()?;
    out.into_inner().map_err(io::IntoInnerError::into_error)
}

/// A write is followed by at least this many times its own duration
/// before the next periodic one: the writer takes at most a twentieth of a
/// core however large the index (at 1 M tokens a write takes seconds).
pub const WRITE_SPACING: u32 = 20;

/// Keeps `dir`'s state file up to date until `stop` resolves: every
/// `every` (or [`WRITE_SPACING`] times the last write's duration, if
/// longer) when the follower's position moved since the last write (or
/// since `loaded`), and once more when it stops.
pub async fn keep_state(
    engine: Arc<Engine>,
    dir: PathBuf,
    every: Duration,
    loaded: Option<Position>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut saved = loaded;
    let mut next = tokio::time::Instant::now() + every;
    loop {
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep_until(next) => {
                let started = tokio::time::Instant::now();
                saved = save_if_moved(&engine, &dir, saved).await;
                next = started + every.max(started.elapsed() * WRITE_SPACING);
            }
        }
    }
    save_if_moved(&engine, &dir, saved).await;
}

/// Writes the state when the follower is synced and its position is not
/// the one last written; returns the position on disk now.
async fn save_if_moved(
    engine: &Arc<Engine>,
    dir: &Path,
    saved: Option<Position>,
) -> Option<Position> {
    let f = engine.follower()?;
    if !f.synced.load(Ordering::Acquire) {
        return saved;
    }
    let now = Position {
        epoch: f.epoch.load(Ordering::Acquire),
        revision: f.revision.load(Ordering::Acquire),
    };
    if saved == Some(now) {
        return saved;
    }
    let (e, d) = (engine.clone(), dir.to_path_buf());
    let started = std::time::Instant::now();
    let m = &engine.metrics().replication;
    match tokio::task::spawn_blocking(move || save_state(&e, &d)).await {
        Ok(Ok(Some(position))) => {
            m.state_written.increment(1);
            tracing::debug!(
                revision = position.revision,
                took = ?started.elapsed(),
                "follower state written"
            );
            Some(position)
        }
        Ok(Ok(None)) => saved,
        Ok(Err(e)) => {
            m.state_write_failed.increment(1);
            tracing::warn!(dir = %dir.display(), error = %e, "could not write the follower state file; will retry");
            saved
        }
        Err(e) => {
            m.state_write_failed.increment(1);
            tracing::warn!(error = %e, "the follower state writer failed; will retry");
            saved
        }
    }
}
