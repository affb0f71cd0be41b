//! Store moves, the library behind `keyward store copy|backup|restore`:
//! [`copy`] every record between sled data dirs and PostgreSQL databases
//! (offline source, empty destination), [`backup`] a running node (through
//! `keyward.v1.Admin/Backup`) or an offline store into a backup file, and
//! [`restore`] a backup file into an empty store. Each streams records in
//! chunks (bounded memory), reports progress on the given writer about
//! once a second, and verifies the destination (counts per kind and the
//! checksum of [`Tally`]) before it is usable.
//!
//! [`cli`] holds the subcommand's flags and its `run`.
//!
//! Layer L7 (wiring): opens stores like `server` does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::pb::v1::{admin_client::AdminClient, BackupRequest};
use crate::store::archive::{self, ArchiveError, ArchiveExport, Header};
use crate::store::postgres::{PgOptions, PgStore};
use crate::store::records::{Export, Import, Record, Tally};
use crate::store::{SledStore, StoreError};

pub mod cli;
mod key;

use key::{hex, place_key, read_key, set_private};

/// Where a store lives: a sled data dir, or a PostgreSQL database.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An embedded sled store in this data dir.
    Sled(PathBuf),
    /// A PostgreSQL database (`postgres://...`; never printed: it may hold
    /// a password).
    Postgres(String),
}

impl Location {
    /// `postgres://...` or `postgresql://...` is a database, anything else
    /// a data dir.
    pub fn parse(s: &str) -> Location {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Location::Postgres(s.to_string())
        } else {
            Location::Sled(PathBuf::from(s))
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sled(dir) => write!(f, "data dir {}", dir.display()),
            Location::Postgres(_) => f.write_str("the PostgreSQL database"),
        }
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Why a move failed. Every message names what to do; none holds a
/// connection string or a record's contents.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// Reading or writing a store failed, or a destination is not empty
    /// ([`StoreError::NotEmpty`], [`StoreError::Incomplete`]).
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The backup file is damaged or not one this keyward reads.
    #[error("{0}")]
    Archive(#[from] ArchiveError),
    /// The node refused or failed the backup.
    #[error("the server answered {}: {}", .0.code(), .0.message())]
    Rpc(#[from] tonic::Status),
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// Which file, and what was done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The options make no sense (same source and destination, existing
    /// backup file).
    #[error("{0}")]
    Usage(String),
}

impl MoveError {
    /// The process exit code a subcommand should end with: 65 (EX_DATAERR)
    /// for a damaged backup file or a failed verification, 73
    /// (EX_CANTCREAT) for a destination that is not empty or a store in use,
    /// 64 (EX_USAGE) for bad options, 69 (EX_UNAVAILABLE) for a refused or
    /// failed RPC, 74 (EX_IOERR) otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            MoveError::Archive(ArchiveError::Damaged(_)) => 65,
            MoveError::Store(StoreError::Corrupt(_)) => 65,
            MoveError::Store(StoreError::NotEmpty(_) | StoreError::Incomplete(_)) => 73,
            MoveError::Usage(_) => 64,
            MoveError::Rpc(_) => 69,
            _ => 74,
        }
    }
}

/// What a move did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Records per kind, as verified on the destination.
    pub tally: Tally,
    /// How long it took.
    pub elapsed: Duration,
    /// What the operator must do about the digest key (print it).
    pub key_advice: String,
}

/// `keyward store copy`.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// The source: offline (sled: no process may hold the dir; PostgreSQL:
    /// stop the nodes first, or writes after the copy's snapshot are lost).
    pub from: Location,
    /// The destination: a new or empty data dir, or an empty database.
    pub to: Location,
    /// The source's digest key file (default for a sled source:
    /// `<from>/digest.key`); copied into a sled destination.
    pub digest_key_file: Option<PathBuf>,
    /// Start over an unfinished copy or restore left in a sled destination.
    pub force: bool,
    /// PEM CA file for PostgreSQL with `sslmode=require`.
    pub pg_ca_file: Option<PathBuf>,
}

/// Where `keyward store backup` reads from.
#[derive(Clone)]
pub enum BackupSource {
    /// A running node, through `keyward.v1.Admin/Backup`, with the root
    /// token.
    Server {
        /// The node's gRPC channel (TLS as the CLI sets it up).
        channel: tonic::transport::Channel,
        /// The root token (from `KEYWARD_TOKEN` or `--token-file`).
        token: String,
    },
    /// A store read directly: a sled data dir no process holds, or a
    /// PostgreSQL database (one REPEATABLE READ snapshot; nodes may run).
    Store(Location),
}

impl std::fmt::Debug for BackupSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupSource::Server { .. } => f.write_str("Server { token: REDACTED }"),
            BackupSource::Store(l) => write!(f, "Store({l})"),
        }
    }
}

/// `keyward store backup`.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Where the snapshot comes from.
    pub from: BackupSource,
    /// The backup file to write (must not exist; written as
    /// `<to>.partial`, renamed once verified).
    pub to: PathBuf,
    /// With a [`BackupSource::Store`]: the digest key file, so the header
    /// names the key the digests need.
    pub digest_key_file: Option<PathBuf>,
    /// PEM CA file for PostgreSQL with `sslmode=require`.
    pub pg_ca_file: Option<PathBuf>,
}

/// `keyward store restore`.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The backup file.
    pub from: PathBuf,
    /// The destination: a new or empty data dir, or an empty database.
    pub to: Location,
    /// The digest key file of the node that was backed up: checked against
    /// the file's header and copied into a sled destination.
    pub digest_key_file: Option<PathBuf>,
    /// Start over an unfinished copy or restore left in a sled destination.
    pub force: bool,
    /// PEM CA file for PostgreSQL with `sslmode=require`.
    pub pg_ca_file: Option<PathBuf>,
}

/// Progress lines ("copy: 40960 / 100005 records (40%)"), at most one a
/// second, and the last one always.
struct Progress<'a> {
    out: &'a mut (dyn Write + Send),
    what: &'static str,
    total: u64,
    done: u64,
    last: Instant,
}

impl<'a> Progress<'a> {
    fn new(out: &'a mut (dyn Write + Send), what: &'static str, total: u64) -> Self {
        Progress {
            out,
            what,
            total,
            done: 0,
            last: Instant::now(),
        }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        if self.last.elapsed() >= Duration::from_secs(1) {
            self.line();
        }
    }

    fn line(&mut self) {
        self.last = Instant::now();
        let pct = (self.done * 100).checked_div(self.total).unwrap_or(100);
        // Progress is best effort: a closed stderr does not stop a copy.
        let _ = writeln!(
            self.out,
            "{}: {} / {} records ({pct}%)",
            self.what, self.done, self.total
        );
    }
}

fn pg_options(url: &str, ca_file: Option<&PathBuf>) -> PgOptions {
    PgOptions {
        url: url.to_string(),
        pool_size: 2,
        retain_changes: 100_000,
        ca_file: ca_file.cloned(),
    }
}

/// Opens `from` to read it whole.
async fn open_source(from: &Location, ca: Option<&PathBuf>) -> Result<Box<dyn Export>, MoveError> {
    Ok(match from {
        Location::Sled(dir) => Box::new(SledStore::open_source(dir)?.export()?),
        Location::Postgres(url) => {
            let store = PgStore::connect(&pg_options(url, ca)).await?;
            Box::new(store.export().await?)
        }
    })
}

/// Opens `to` to fill it (refused unless empty).
async fn open_destination(
    to: &Location,
    force: bool,
    key_id: Option<Vec<u8>>,
    ca: Option<&PathBuf>,
) -> Result<Box<dyn Import>, MoveError> {
    Ok(match to {
        Location::Sled(dir) => Box::new(SledStore::begin_import(dir, force)?),
        Location::Postgres(url) => {
            let store = PgStore::connect(&pg_options(url, ca)).await?;
            Box::new(store.begin_import(key_id).await?)
        }
    })
}

/// Streams `export` into `import`, then verifies; the source's tally.
async fn pump(
    export: &mut dyn Export,
    mut import: Box<dyn Import>,
    progress: &mut Progress<'_>,
    digest_keys: &mut Vec<(Vec<u8>, u64)>,
) -> Result<Tally, MoveError> {
    let mut tally = Tally::default();
    loop {
        let chunk = export.next_chunk().await?;
        if chunk.is_empty() {
            break;
        }
        for r in &chunk {
            tally.add(r);
            if let Record::Token(t) = r {
                if !t.verified_digest.is_empty() {
                    match digest_keys.iter_mut().find(|(k, _)| *k == t.digest_key_id) {
                        Some((_, n)) => *n += 1,
                        None => digest_keys.push((t.digest_key_id.clone(), 1)),
                    }
                }
            }
        }
        let n = chunk.len() as u64;
        import.put(chunk).await?;
        progress.add(n);
    }
    progress.line();
    let _ = writeln!(progress.out, "{}: verifying the destination", progress.what);
    import.finish(tally).await?;
    Ok(tally)
}

/// Copies every record of `opts.from` into `opts.to` in one streaming
/// pass, then verifies the destination; progress goes to `progress`.
///
/// The source must be offline: a sled dir held by a running keyward is
/// refused (sled locks it); a PostgreSQL source is read in one snapshot,
/// so writes after it would be lost: stop the nodes first. The destination
/// must be empty (refused otherwise, naming what it holds). A copy
/// interrupted half way leaves a sled destination flagged incomplete
/// (keyward refuses to start on it; `force` starts the copy over) and a
/// PostgreSQL destination untouched (one transaction).
pub async fn copy(
    opts: &CopyOptions,
    progress: &mut (dyn Write + Send),
) -> Result<Report, MoveError> {
    if opts.from == opts.to {
        return Err(MoveError::Usage(
            "the source and the destination are the same store".into(),
        ));
    }
    let started = Instant::now();
    let key_file = opts.digest_key_file.clone().or_else(|| match &opts.from {
        Location::Sled(dir) => Some(dir.join("digest.key")),
        Location::Postgres(_) => None,
    });
    let key = match &key_file {
        Some(f) => read_key(f)?,
        None => None,
    };
    let ca = opts.pg_ca_file.as_ref();
    let mut export = open_source(&opts.from, ca).await?;
    if export.total() == 0 {
        return Err(MoveError::Usage(format!(
            "{} holds no keyward records: nothing to copy",
            opts.from
        )));
    }
    let import = open_destination(
        &opts.to,
        opts.force,
        key.as_ref().map(|k| k.id().to_vec()),
        ca,
    )
    .await?;
    let mut p = Progress::new(progress, "copy", export.total());
    let mut digests = Vec::new();
    let tally = pump(export.as_mut(), import, &mut p, &mut digests).await?;
    drop(export);
    let key_advice = place_key(&opts.to, key_file.as_deref(), key.as_ref(), &digests)?;
    Ok(Report {
        tally,
        elapsed: started.elapsed(),
        key_advice,
    })
}

/// Writes a consistent snapshot into the new file `opts.to` (via
/// `<to>.partial`, renamed once the whole file reads back and verifies).
pub async fn backup(
    opts: &BackupOptions,
    progress: &mut (dyn Write + Send),
) -> Result<Report, MoveError> {
    let started = Instant::now();
    if opts.to.exists() {
        return Err(MoveError::Usage(format!(
            "{} exists: a backup goes into a new file",
            opts.to.display()
        )));
    }
    let mut partial = opts.to.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let io = |what: &str, path: &Path| {
        let what = format!("{what} {}", path.display());
        move |source| MoveError::Io { what, source }
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .map_err(io("create", &partial))?;
    set_private(&partial)?;
    let result = write_backup(opts, file, progress).await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    let read = std::fs::File::open(&partial).map_err(io("open", &partial))?;
    let verified = archive::verify(std::io::BufReader::new(read));
    let (header, tally) = match verified {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
    };
    std::fs::rename(&partial, &opts.to).map_err(io("rename", &partial))?;
    let key_advice = if header.digest_key_id.is_empty() {
        "digest key: unknown (give --digest-key-file): nodes serving a restore must use the \
         backed-up node's key, or each token costs one argon2 verify at its first use"
            .to_string()
    } else {
        format!(
            "digest key: the backup's digests need the key with id {} (the node's \
             --digest-key-file): keep a copy of it with the backup, apart from it",
            hex(&header.digest_key_id)
        )
    };
    Ok(Report {
        tally,
        elapsed: started.elapsed(),
        key_advice,
    })
}

async fn write_backup(
    opts: &BackupOptions,
    file: std::fs::File,
    progress: &mut (dyn Write + Send),
) -> Result<(), MoveError> {
    let mut out = std::io::BufWriter::new(file);
    let io = |source| MoveError::Io {
        what: format!("write {}.partial", opts.to.display()),
        source,
    };
    match &opts.from {
        BackupSource::Server { channel, token } => {
            let mut req = tonic::Request::new(BackupRequest {});
            let mut value: tonic::metadata::MetadataValue<_> = format!("Bearer {token}")
                .parse()
                .map_err(|_| MoveError::Usage("the token is not valid ASCII".into()))?;
            // As cli::connect::with_token does: kept out of debug output.
            value.set_sensitive(true);
            req.metadata_mut().insert("authorization", value);
            let mut stream = AdminClient::new(channel.clone())
                .max_decoding_message_size(1 << 20)
                .backup(req)
                .await?
                .into_inner();
            let mut bytes = 0u64;
            let mut last = Instant::now();
            while let Some(chunk) = stream.message().await? {
                out.write_all(&chunk.data).map_err(io)?;
                bytes += chunk.data.len() as u64;
                if last.elapsed() >= Duration::from_secs(1) {
                    last = Instant::now();
                    let _ = writeln!(progress, "backup: {bytes} bytes received");
                }
            }
            let _ = writeln!(
                progress,
                "backup: {bytes} bytes received; verifying the file"
            );
        }
        BackupSource::Store(from) => {
            let key = match &opts.digest_key_file {
                Some(f) => read_key(f)?,
                None => None,
            };
            let mut export = open_source(from, opts.pg_ca_file.as_ref()).await?;
            let header = Header {
                created_at_ms: crate::clock::Clock::now_ms(&crate::clock::SystemClock),
                source: match from {
                    Location::Sled(_) => "sled",
                    Location::Postgres(_) => "postgres",
                }
                .into(),
                digest_key_id: key.map(|k| k.id().to_vec()).unwrap_or_default(),
                position: None,
            };
            let total = export.total();
            let mut p = Progress::new(progress, "backup", total);
            let mut seen = 0;
            let (w, _) = archive::write_export(export.as_mut(), &header, &mut out, &mut |n| {
                p.add(n - seen);
                seen = n;
            })
            .await?;
            w.flush().map_err(io)?;
            p.line();
        }
    }
    out.flush().map_err(io)?;
    out.get_ref().sync_all().map_err(io)?;
    Ok(())
}

/// Restores the backup file `opts.from` into the empty store `opts.to`:
/// the whole file is checked first (a damaged file is refused naming the
/// record), then streamed in and the destination verified against it.
pub async fn restore(
    opts: &RestoreOptions,
    progress: &mut (dyn Write + Send),
) -> Result<Report, MoveError> {
    let started = Instant::now();
    let open = || {
        std::fs::File::open(&opts.from).map_err(|source| MoveError::Io {
            what: format!("open {}", opts.from.display()),
            source,
        })
    };
    let _ = writeln!(progress, "restore: checking {}", opts.from.display());
    let (header, tally) = archive::verify(std::io::BufReader::new(open()?))?;
    let key = match &opts.digest_key_file {
        Some(f) => read_key(f)?,
        None => None,
    };
    if let Some(k) = &key {
        if !header.digest_key_id.is_empty() && k.id()[..] != header.digest_key_id[..] {
            return Err(MoveError::Usage(format!(
                "the digest key file has id {}, the backup's digests were made with key id {}",
                hex(&k.id()),
                hex(&header.digest_key_id)
            )));
        }
    }
    let key_id = (!header.digest_key_id.is_empty()).then(|| header.digest_key_id.clone());
    let import = open_destination(&opts.to, opts.force, key_id, opts.pg_ca_file.as_ref()).await?;
    let mut export = ArchiveExport::new(open()?, tally.total())?;
    let mut p = Progress::new(progress, "restore", tally.total());
    let mut digests = Vec::new();
    let copied = pump(&mut export, import, &mut p, &mut digests).await?;
    if copied != tally {
        return Err(MoveError::Store(StoreError::Corrupt(
            "the backup file changed while it was restored".into(),
        )));
    }
    let key_advice = match (&key, &opts.digest_key_file) {
        (Some(k), Some(f)) => place_key(&opts.to, Some(f), Some(k), &digests)?,
        _ => format!(
            "digest key: nodes serving the restored store must use the backed-up node's key \
             (id {}; give it with --digest-key-file), or each token costs one argon2 verify at \
             its first use",
            hex(&header.digest_key_id)
        ),
    };
    Ok(Report {
        tally,
        elapsed: started.elapsed(),
        key_advice,
    })
}
