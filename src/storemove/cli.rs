//! `keyward store copy|backup|restore`: the subcommand's flags (clap) and
//! [`run`], which the binary calls with the node's channel and the root
//! token when a backup goes through a server. Progress goes to stderr, the
//! summary and what to do about the digest key to stdout; the exit code is
//! [`MoveError::exit_code`]'s. Part of `storemove`.

use std::io::Write;
use std::path::PathBuf;

use super::{
    backup, copy, restore, BackupOptions, BackupSource, CopyOptions, Location, MoveError, Report,
    RestoreOptions,
};

/// `keyward store ...`: move a store between sled and PostgreSQL, back it
/// up, restore it.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy every record of an offline store into an empty one (sled data
    /// dir or postgres:// URL, either way), then verify it.
    Copy {
        /// The source: a data dir no keyward holds, or a postgres:// URL
        /// (stop its nodes first).
        #[arg(long, env = "KEYWARD_STORE_FROM")]
        from: String,
        /// The destination: a new or empty data dir, or an empty database.
        #[arg(long, env = "KEYWARD_STORE_TO")]
        to: String,
        /// The source's digest key file (default: <from>/digest.key for a
        /// data dir); copied into a data-dir destination.
        #[arg(long, env = "KEYWARD_DIGEST_KEY_FILE")]
        digest_key_file: Option<PathBuf>,
        /// Start over an unfinished copy or restore left in a data-dir
        /// destination.
        #[arg(long, env = "KEYWARD_STORE_FORCE")]
        force: bool,
        /// PostgreSQL with ?sslmode=require: PEM CA(s) of the server.
        #[arg(long, env = "KEYWARD_PG_CA_FILE")]
        pg_ca_file: Option<PathBuf>,
    },
    /// Write a consistent snapshot of a running node's store (through
    /// --server with the root token in KEYWARD_TOKEN or --token-file), or
    /// of an offline store (--from), into a new backup file.
    Backup {
        /// The backup file to create (must not exist).
        #[arg(long, env = "KEYWARD_BACKUP_FILE")]
        to: PathBuf,
        /// Read this store directly instead of a server: a data dir no
        /// keyward holds, or a postgres:// URL.
        #[arg(long, env = "KEYWARD_STORE_FROM")]
        from: Option<String>,
        /// With --from: the store's digest key file, named in the header.
        #[arg(long, env = "KEYWARD_DIGEST_KEY_FILE")]
        digest_key_file: Option<PathBuf>,
        /// PostgreSQL with ?sslmode=require: PEM CA(s) of the server.
        #[arg(long, env = "KEYWARD_PG_CA_FILE")]
        pg_ca_file: Option<PathBuf>,
    },
    /// Restore a backup file into an empty store, then verify it.
    Restore {
        /// The backup file.
        #[arg(long, env = "KEYWARD_BACKUP_FILE")]
        from: PathBuf,
        /// The destination: a new or empty data dir, or an empty database.
        #[arg(long, env = "KEYWARD_STORE_TO")]
        to: String,
        /// The backed-up node's digest key file: checked against the
        /// backup and copied into a data-dir destination.
        #[arg(long, env = "KEYWARD_DIGEST_KEY_FILE")]
        digest_key_file: Option<PathBuf>,
        /// Start over an unfinished copy or restore left in a data-dir
        /// destination.
        #[arg(long, env = "KEYWARD_STORE_FORCE")]
        force: bool,
        /// PostgreSQL with ?sslmode=require: PEM CA(s) of the server.
        #[arg(long, env = "KEYWARD_PG_CA_FILE")]
        pg_ca_file: Option<PathBuf>,
    },
}

impl StoreCommand {
    /// Whether [`run`] needs a server channel and token: a backup without
    /// `--from`.
    pub fn needs_server(&self) -> bool {
        matches!(self, StoreCommand::Backup { from: None, .. })
    }
}

/// Runs `cmd`; `server` is the node's channel and the root token (needed
/// only when [`StoreCommand::needs_server`]). Progress and errors go to
/// `err`, the summary to `out`. Returns the exit code (0 on success).
pub async fn run(
    cmd: &StoreCommand,
    server: Option<(tonic::transport::Channel, String)>,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> i32 {
    let result = execute(cmd, server, err).await;
    match result {
        Ok(report) => {
            // Best effort: a closed stdout does not undo a verified move.
            let _ = print(&report, out);
            0
        }
        Err(e) => {
            let _ = writeln!(err, "keyward store: {e}");
            e.exit_code()
        }
    }
}

async fn execute(
    cmd: &StoreCommand,
    server: Option<(tonic::transport::Channel, String)>,
    err: &mut (dyn Write + Send),
) -> Result<Report, MoveError> {
    match cmd.clone() {
        StoreCommand::Copy {
            from,
            to,
            digest_key_file,
            force,
            pg_ca_file,
        } => {
            let opts = CopyOptions {
                from: Location::parse(&from),
                to: Location::parse(&to),
                digest_key_file,
                force,
                pg_ca_file,
            };
            copy(&opts, err).await
        }
        StoreCommand::Backup {
            to,
            from,
            digest_key_file,
            pg_ca_file,
        } => {
            let from = match (from, server) {
                (Some(from), _) => BackupSource::Store(Location::parse(&from)),
                (None, Some((channel, token))) => BackupSource::Server { channel, token },
                (None, None) => {
                    return Err(MoveError::Usage(
                        "a backup of a running node needs --server and the root token \
                         (KEYWARD_TOKEN or --token-file); or give --from"
                            .into(),
                    ))
                }
            };
            let opts = BackupOptions {
                from,
                to,
                digest_key_file,
                pg_ca_file,
            };
            backup(&opts, err).await
        }
        StoreCommand::Restore {
            from,
            to,
            digest_key_file,
            force,
            pg_ca_file,
        } => {
            let opts = RestoreOptions {
                from,
                to: Location::parse(&to),
                digest_key_file,
                force,
                pg_ca_file,
            };
            restore(&opts, err).await
        }
    }
}

/// The summary: records per kind, the checksum, the time, and what to do
/// about the digest key.
pub fn print(report: &Report, out: &mut (dyn Write + Send)) -> std::io::Result<()> {
    writeln!(out, "records: {}", report.tally.describe())?;
    writeln!(out, "checksum: {}", report.tally.checksum())?;
    writeln!(out, "verified in {:.1} s", report.elapsed.as_secs_f64())?;
    writeln!(out, "{}", report.key_advice)
}
