//! A throwaway PostgreSQL server for tests: `initdb` into a temp dir, start
//! on 127.0.0.1:<free port>, stop and start again on the same port and data,
//! removed on drop. Synchronous std::process code, no client crate: the
//! server binaries (initdb, pg_ctl, pg_isready, psql) do the work.
//!
//! As root the binaries run as the `postgres` system user (initdb refuses
//! root); the temp dir is chowned to it. Otherwise they run as the caller.
//!
//! A suite may instead run against one shared server: `shared_base_url()`
//! reads KEYWARD_TEST_PG (e.g. `postgres://keyward@127.0.0.1:5432`, as
//! printed by `scripts/pg_cluster.sh start`), and `create_database_at` makes
//! a database there.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The superuser of test clusters (trust auth: no password).
pub const SUPERUSER: &str = "keyward";

/// How long start-up (and a stop) may take before the harness gives up.
const WAIT: Duration = Duration::from_secs(30);

/// Port-in-use retries of `start()` (the free port is found by binding
/// 127.0.0.1:0 and releasing it, so another process may take it first).
const START_ATTEMPTS: u32 = 5;

/// PG* variables that would redirect or alter the harness's own psql,
/// pg_isready and pg_ctl calls against its own cluster.
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
    /// Root of everything: data/, the unix socket, server.log. Removed on drop.
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    /// `Some((uid, gid))` of `postgres` when we are root.
    run_as: Option<(u32, u32)>,
    running: bool,
}

impl PgCluster {
    /// initdb (trust auth for local and 127.0.0.1, superuser "keyward",
    /// UTF8, C locale), start on 127.0.0.1:<free port> with the unix socket
    /// inside the temp dir, and wait until it accepts connections.
    /// Panics (with the server log) if it does not within ~30 s.
    pub fn start() -> PgCluster {
        let bin = bin_dir();
        let run_as = run_as();
        let dir = make_temp_dir(run_as);
        let mut cluster = PgCluster {
            dir,
            port: 0,
            bin,
            run_as,
            running: false,
        };
        cluster.initdb();
        let mut attempt = 1;
        loop {
            cluster.port = free_port();
            cluster.write_settings();
            match cluster.try_start() {
                Ok(()) => return cluster,
                Err(why) => {
                    let log = cluster.log();
                    let port_taken =
                        log.contains("could not bind") || log.contains("Address already in use");
                    if port_taken && attempt < START_ATTEMPTS {
                        // Whatever half-started gets stopped; next port.
                        let _ = cluster.pg_ctl_stop("immediate");
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
        match self.pg_ctl_stop(mode) {
            Ok(()) => self.running = false,
            Err(why) => self.fail(&format!("pg_ctl stop -m {mode} failed: {why}")),
        }
    }

    fn initdb(&self) {
        let data = self.data_dir();
        let args = [
            "-D",
            path_str(&data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            // Only initdb's own final sync is skipped (the cluster is
            // thrown away anyway); the server runs with fsync on.
            "--no-sync",
        ];
        let out = self.run(self.bin.join("initdb"), &args);
        if !out.status.success() {
            panic!(
                "initdb into {} failed ({}):\n{}{}",
                self.data_dir().display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Our settings live in keyward.conf, included last, so that a port
        // change is a rewrite of that file rather than another append.
        let conf = self.data_dir().join("postgresql.conf");
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .unwrap_or_else(|e| panic!("open {}: {e}", conf.display()));
        writeln!(f, "\n# keyward test harness\ninclude = 'keyward.conf'")
            .unwrap_or_else(|e| panic!("append to {}: {e}", conf.display()));
        // initdb --auth=trust writes trust lines for local, 127.0.0.1/32 and
        // ::1/128 already; write them explicitly so that does not depend on
        // the version's template.
        self.write_owned(
            &self.data_dir().join("pg_hba.conf"),
            "# keyward test harness: trust, no TLS\n\
             local all         all                trust\n\
             host  all         all  127.0.0.1/32  trust\n\
             host  all         all  ::1/128       trust\n\
             local replication all                trust\n\
             host  replication all  127.0.0.1/32  trust\n",
        );
    }

    fn write_settings(&self) {
        let sock = self.dir.path();
        self.write_owned(
            &self.data_dir().join("keyward.conf"),
            &format!(
                "listen_addresses = '127.0.0.1'\n\
                 port = {port}\n\
                 unix_socket_directories = '{sock}'\n\
                 max_connections = 200\n\
                 shared_buffers = 32MB\n\
                 fsync = on\n\
                 synchronous_commit = on\n\
                 full_page_writes = on\n\
                 ssl = off\n\
                 logging_collector = off\n\
                 log_line_prefix = '%m [%p] '\n",
                port = self.port,
                sock = path_str(sock).replace('\'', "''"),
            ),
        );
    }

    /// pg_ctl start (waits for "ready" up to 30 s), then pg_isready over
    /// TCP until it answers, within the same 30 s.
    fn try_start(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        let out = self.run(
            self.bin.join("pg_ctl"),
            &[
                "start",
                "-D",
                path_str(&self.data_dir()),
                "-l",
                path_str(&self.log_path()),
                "-w",
                "-t",
                &WAIT.as_secs().to_string(),
                "-s",
            ],
        );
        // Even a failed pg_ctl may have left a postmaster behind (e.g. a
        // timeout): let drop stop it.
        self.running = true;
        if !out.status.success() {
            return Err(format!(
                "pg_ctl start exited {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        loop {
            let ready = self.run(
                self.bin.join("pg_isready"),
                &[
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    SUPERUSER,
                    "-d",
                    "postgres",
                    "-t",
                    "2",
                ],
            );
            if ready.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "pg_isready -h 127.0.0.1 -p {} still fails ({}) after {:?}",
                    self.port, ready.status, WAIT
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<(), String> {
        let out = self.run(
            self.bin.join("pg_ctl"),
            &[
                "stop",
                "-D",
                path_str(&self.data_dir()),
                "-m",
                mode,
                "-w",
                "-t",
                &WAIT.as_secs().to_string(),
                "-s",
            ],
        );
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "exit {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Runs a server binary: as `postgres` when we are root, in the temp
    /// dir, without the caller's PG* variables.
    fn run(&self, program: PathBuf, args: &[&str]) -> Output {
        let mut cmd = Command::new(&program);
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .env("LC_MESSAGES", "C");
        for var in PG_ENV {
            cmd.env_remove(var);
        }
        if let Some((uid, gid)) = self.run_as {
            // std drops supplementary groups (setgroups(0)) before setuid.
            cmd.uid(uid).gid(gid).env("HOME", self.dir.path());
        }
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
    }

    /// Writes a file in the temp dir, owned by the server's user.
    fn write_owned(&self, path: &Path, contents: &str) {
        fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
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
    /// `pg_ctl stop -m immediate` (errors ignored; if pg_ctl cannot stop it,
    /// SIGQUIT to the postmaster), then the temp dir goes.
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        if self.pg_ctl_stop("immediate").is_ok() {
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

/// The dir of the server binaries: $KEYWARD_PG_BIN if set, else
/// /usr/lib/postgresql/<highest version>/bin, else the (symlink-resolved)
/// dir of `pg_ctl` on PATH. Panics if none has initdb and pg_ctl.
pub fn bin_dir() -> PathBuf {
    find_bin_dir().unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries not found (initdb, pg_ctl; looked at \
             $KEYWARD_PG_BIN, /usr/lib/postgresql/*/bin and PATH): run \
             ./scripts/test.sh, which installs postgresql \
             (or scripts/pg_cluster.sh install)"
        )
    })
}

/// `bin_dir()` without the panic.
pub fn find_bin_dir() -> Option<PathBuf> {
    let is_server_dir = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("KEYWARD_PG_BIN").filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        assert!(
            is_server_dir(&dir),
            "KEYWARD_PG_BIN={} has no initdb and pg_ctl",
            dir.display()
        );
        return Some(dir);
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|p| p.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| is_server_dir(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("pg_ctl"))
        .find(|p| p.is_file())
        .and_then(|p| fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .filter(|d| is_server_dir(d))
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
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port on 127.0.0.1: {e}"))
}

/// `Some((uid, gid))` of the `postgres` user when we are root, else None.
fn run_as() -> Option<(u32, u32)> {
    let id = |flag: &str, who: Option<&str>| -> Option<u32> {
        let mut cmd = Command::new("id");
        cmd.arg(flag);
        if let Some(w) = who {
            cmd.arg(w);
        }
        let out = cmd.stderr(Stdio::null()).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    let me = id("-u", None).expect("cannot run `id -u`");
    if me != 0 {
        return None;
    }
    match (id("-u", Some("postgres")), id("-g", Some("postgres"))) {
        (Some(uid), Some(gid)) => Some((uid, gid)),
        _ => panic!(
            "running as root, and initdb refuses root, but there is no `postgres` \
             user to run PostgreSQL as: install postgresql (scripts/pg_cluster.sh \
             install creates it) or run the tests as a non-root user"
        ),
    }
}

/// A temp dir the server's user owns and can reach. As root, the system
/// temp dir is used only if every ancestor is world-searchable; else /tmp.
fn make_temp_dir(run_as: Option<(u32, u32)>) -> tempfile::TempDir {
    let mut parent = std::env::temp_dir();
    if run_as.is_some() && !world_searchable(&parent) {
        parent = PathBuf::from("/tmp");
    }
    // Short prefix: the unix socket path (dir + "/.s.PGSQL.NNNNN") must
    // stay under ~107 bytes.
    let dir = tempfile::Builder::new()
        .prefix("kwpg")
        .tempdir_in(&parent)
        .unwrap_or_else(|e| panic!("cannot make a temp dir in {}: {e}", parent.display()));
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", dir.path().display()));
    }
    // 0755: postgres (as root) and psql (any user) reach the socket and log.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.path().display()));
    dir
}

fn world_searchable(dir: &Path) -> bool {
    let Ok(dir) = fs::canonicalize(dir) else {
        return false;
    };
    dir.ancestors().all(|d| {
        fs::metadata(d)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("path is not UTF-8: {}", p.display()))
}
