//! A throwaway PostgreSQL server for tests, through scripts/pg_cluster.sh
//! (the one implementation: initdb, settings, start and wait, stop, where
//! the server binaries are, running them as `postgres` when root). Each
//! [`PgCluster`] is a server of its own in a temp dir on 127.0.0.1:<free
//! port>; it stops and starts again on the same port and data, and is
//! stopped and removed on drop. Tests make a database each on it.
//!
//! A suite may instead run against one shared server: `shared_base_url()`
//! reads KEYWARD_TEST_PG (e.g. `postgres://keyward@127.0.0.1:5432`, as
//! printed by `scripts/pg_cluster.sh start`), and `create_database_at` makes
//! a database there.
#![allow(dead_code)]

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::Duration;

/// The superuser of test clusters (trust auth: no password).
pub const SUPERUSER: &str = "keyward";

/// The script that makes, starts and stops the servers.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg_cluster.sh");

/// Port-in-use retries of `start()` (the free port is found by binding
/// 127.0.0.1:0 and releasing it, so another process may take it first).
const START_ATTEMPTS: u32 = 5;

/// PG* variables that would redirect or alter the script's own pg_ctl and
/// pg_isready calls against its own cluster.
const PG_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGDATA",
    "PGCONNECT_TIMEOUT",
];

/// A PostgreSQL server of its own in a temp dir.
pub struct PgCluster {
    /// Root of everything: data/, the unix socket, server.log. Removed on
    /// drop.
    dir: tempfile::TempDir,
    /// Its TCP port on 127.0.0.1, the same across restarts.
    port: u16,
    /// Whether it was started and not stopped through this value (drop
    /// stops it then).
    running: bool,
}

impl PgCluster {
    /// `scripts/pg_cluster.sh start` in a new temp dir on a free port
    /// (another one if that port was taken meanwhile). Panics (with the
    /// server log) if it does not accept connections within ~30 s.
    pub fn start() -> PgCluster {
        // Short prefix: the unix socket path (dir + "/.s.PGSQL.NNNNN") must
        // stay under ~107 bytes. As root the script hands the dir to
        // `postgres` and makes its parents in the temp dir searchable.
        let dir = tempfile::Builder::new()
            .prefix("kwpg")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot make a temp dir: {e}"));
        let mut cluster = PgCluster {
            dir,
            port: 0,
            running: false,
        };
        let mut attempt = 1;
        loop {
            cluster.port = free_port();
            match cluster.try_start() {
                Ok(()) => return cluster,
                Err(why) => {
                    let log = cluster.log();
                    let port_taken =
                        log.contains("could not bind") || log.contains("Address already in use");
                    if port_taken && attempt < START_ATTEMPTS {
                        // Whatever half-started gets stopped; next port.
                        let _ = cluster.script_stop("immediate");
                        attempt += 1;
                        continue;
                    }
                    cluster.fail(&format!("PostgreSQL did not start: {why}"));
                }
            }
        }
    }

    /// The TCP port on 127.0.0.1 (stays the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://keyward@127.0.0.1:{port}/{db}`
    pub fn url(&self, db: &str) -> String {
        format!("{}/{db}", self.base_url())
    }

    /// `postgres://keyward@127.0.0.1:{port}`, the same shape as
    /// KEYWARD_TEST_PG.
    pub fn base_url(&self) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}", self.port)
    }

    /// The temp dir holding data/, the socket and server.log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// PGDATA.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server log (pg_ctl -l), appended to across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server log's contents ("" if unreadable).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the harness believes the server is running (it was started
    /// and not stopped through this value).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// CREATE DATABASE as the keyward user; fine if it exists already.
    pub fn create_database(&self, name: &str) {
        create_database_at(&self.base_url(), name);
    }

    /// Runs `sql` with psql (ON_ERROR_STOP, unaligned tuples-only output)
    /// in database `db` over TCP, returns stdout trimmed; panics on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        psql_at(&self.url(db), sql).unwrap_or_else(|e| panic!("psql on {}: {e}", self.url(db)))
    }

    /// `pg_ctl stop -m fast`: disconnects clients, checkpoints, exits.
    pub fn stop_fast(&mut self) {
        self.stop("fast");
    }

    /// `pg_ctl stop -m immediate`: no checkpoint, like a crash; the next
    /// start runs WAL recovery.
    pub fn stop_immediate(&mut self) {
        self.stop("immediate");
    }

    /// Starts the stopped server again: same port, same data. Panics (with
    /// the log) if it does not accept connections within ~30 s.
    pub fn start_again(&mut self) {
        assert!(
            !self.running,
            "start_again: the PostgreSQL cluster in {} is running already",
            self.dir().display()
        );
        if let Err(why) = self.try_start() {
            self.fail(&format!("PostgreSQL did not start again: {why}"));
        }
    }

    /// stop_fast() then start_again().
    pub fn restart_fast(&mut self) {
        self.stop_fast();
        self.start_again();
    }

    /// stop_immediate() then start_again() (crash and recovery).
    pub fn restart_immediate(&mut self) {
        self.stop_immediate();
        self.start_again();
    }

    fn stop(&mut self, mode: &str) {
        match self.script_stop(mode) {
            Ok(()) => self.running = false,
            Err(why) => self.fail(&format!("pg_ctl stop -m {mode} failed: {why}")),
        }
    }

    /// `scripts/pg_cluster.sh start DIR PORT`: initdb when new, settings
    /// for this port, start, and wait until it answers over TCP.
    fn try_start(&mut self) -> Result<(), String> {
        let dir = path_str(self.dir.path()).to_string();
        let out = script(&["start", &dir, &self.port.to_string()]);
        // Even a failed start may have left a postmaster behind (e.g. a
        // timeout): let drop stop it.
        self.running = true;
        if !out.status.success() {
            return Err(failure("start", &out));
        }
        let url = String::from_utf8_lossy(&out.stdout);
        let url = url.lines().last().unwrap_or_default().trim();
        if url != self.base_url() {
            return Err(format!(
                "scripts/pg_cluster.sh start printed {url:?}, not {:?}",
                self.base_url()
            ));
        }
        Ok(())
    }

    /// `scripts/pg_cluster.sh stop DIR MODE`.
    fn script_stop(&self, mode: &str) -> Result<(), String> {
        let out = script(&["stop", path_str(self.dir.path()), mode]);
        if out.status.success() {
            Ok(())
        } else {
            Err(failure("stop", &out))
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\n--- PostgreSQL log {} (port {}) ---\n{}--- end of log ---",
            self.log_path().display(),
            self.port,
            self.log()
        );
    }
}

impl Drop for PgCluster {
    /// `pg_ctl stop -m immediate` (errors ignored; if that cannot stop it,
    /// SIGQUIT to the postmaster), then the temp dir goes.
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        if self.script_stop("immediate").is_ok() {
            return;
        }
        let pid_file = self.data_dir().join("postmaster.pid");
        if let Some(pid) = fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.lines().next().map(str::trim).map(String::from))
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            let _ = Command::new("kill")
                .args(["-QUIT", &pid])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Runs scripts/pg_cluster.sh with `args`, without the caller's PG*
/// variables.
fn script(args: &[&str]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(SCRIPT)
        .args(args)
        .stdin(Stdio::null())
        .env("LC_MESSAGES", "C");
    for var in PG_ENV {
        cmd.env_remove(var);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run bash {SCRIPT}: {e}"))
}

/// What a failed script run said.
fn failure(what: &str, out: &Output) -> String {
    format!(
        "scripts/pg_cluster.sh {what} exited {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// The dir of the server binaries (`scripts/pg_cluster.sh bindir`:
/// $KEYWARD_PG_BIN if set, else /usr/lib/postgresql/<highest version>/bin,
/// else the dir of `pg_ctl` on PATH). Panics if there is none.
pub fn bin_dir() -> PathBuf {
    bin_dir_or_why().unwrap_or_else(|why| panic!("{why}"))
}

/// `bin_dir()` without the panic.
pub fn find_bin_dir() -> Option<PathBuf> {
    bin_dir_or_why().ok()
}

/// What `scripts/pg_cluster.sh bindir` answers, asked once per test binary.
fn bin_dir_or_why() -> Result<PathBuf, String> {
    static BIN_DIR: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BIN_DIR
        .get_or_init(|| {
            let out = script(&["bindir"]);
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !dir.is_empty() {
                Ok(PathBuf::from(dir))
            } else {
                Err(failure("bindir", &out))
            }
        })
        .clone()
}

/// The base URL of a shared server to run against instead of a cluster of
/// one's own: env KEYWARD_TEST_PG (e.g. `postgres://keyward@127.0.0.1:5432`),
/// None if unset or empty.
pub fn shared_base_url() -> Option<String> {
    std::env::var("KEYWARD_TEST_PG")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `base` with database `db`: `postgres://u@h:p` + `db` ->
/// `postgres://u@h:p/db`; a trailing slash or a `?query` is kept in place.
pub fn url_at(base: &str, db: &str) -> String {
    let (head, query) = match base.find('?') {
        Some(i) => (&base[..i], &base[i..]),
        None => (base, ""),
    };
    format!("{}/{db}{query}", head.trim_end_matches('/'))
}

/// CREATE DATABASE `name` on the server at `base_url` (psql to its
/// `postgres` database); fine if it exists already, also when a concurrent
/// caller created it first. Panics on any other failure.
pub fn create_database_at(base_url: &str, name: &str) {
    let admin = url_at(base_url, "postgres");
    let literal = name.replace('\'', "''");
    let exists = format!("SELECT 1 FROM pg_database WHERE datname = '{literal}'");
    let check = || psql_at(&admin, &exists).map(|out| out == "1");
    if check().unwrap_or_else(|e| panic!("create_database_at({admin}, {name}): {e}")) {
        return;
    }
    let create = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    if let Err(e) = psql_at(&admin, &create) {
        // Lost a race with another test creating the same database?
        if check().unwrap_or(false) {
            return;
        }
        panic!("create_database_at({admin}, {name}): {e}");
    }
}

/// Runs `sql` with psql against `url` (no psqlrc, ON_ERROR_STOP, unaligned
/// tuples only, 10 s connect timeout); stdout trimmed, or the error.
pub fn psql_at(url: &str, sql: &str) -> Result<String, String> {
    let psql = psql_bin();
    let mut cmd = Command::new(&psql);
    cmd.args([
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        url,
        "-c",
        sql,
    ])
    .stdin(Stdio::null())
    .env("LC_MESSAGES", "C")
    .env("PGCONNECT_TIMEOUT", "10");
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", psql.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "psql -c {sql:?} exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// psql from bin_dir() if there is one, else /usr/bin/psql, else `psql`
/// on PATH.
pub fn psql_bin() -> PathBuf {
    if let Some(p) = find_bin_dir()
        .map(|d| d.join("psql"))
        .filter(|p| p.is_file())
    {
        return p;
    }
    let usr = PathBuf::from("/usr/bin/psql");
    if usr.is_file() {
        return usr;
    }
    PathBuf::from("psql")
}

/// Whether something accepts TCP connections on 127.0.0.1:`port` now.
pub fn tcp_accepts(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_secs(2),
    )
    .is_ok()
}

/// A port that was free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_or_else(
            |e| panic!("cannot find a free port on 127.0.0.1: {e}"),
            |a| a.port(),
        )
}

fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("path is not UTF-8: {}", p.display()))
}
