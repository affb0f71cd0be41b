//! Starting the servers the scenarios measure, as child processes killed on
//! drop: the no-op baseline (this binary's `noop-server`), keyward (on a
//! data dir, on PostgreSQL, or as a follower), each pinned to the server
//! core by `taskset` when the [`Layout`] says so; and the small HTTP/1.1
//! client that reads `/readyz` and `/metrics`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The ext_authz routes keyward gets in the benchmark: Check asks what
/// Authorize asks (ADMIN on the project).
pub(crate) const BENCH_ROUTES: &str = "[[routes]]\npath = \"/projects/{project}\"\nresource = \"project\"\nid = \"project\"\nlevel = \"admin\"\n";

// ------------------------------------------------------------------ processes

/// A server process, killed on drop.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) http: Option<SocketAddr>,
    /// keyward's routes file and replication secret, kept outside its data
    /// dir (keyward refuses to initialise a data dir holding other files);
    /// a follower's own temporary data dir.
    pub(crate) files: Option<tempfile::TempDir>,
}

impl Proc {
    /// The replication secret file this keyward was started with.
    pub(crate) fn secret_file(&self) -> PathBuf {
        self.files
            .as_ref()
            .expect("a keyward started by spawn_keyward")
            .path()
            .join("bench-replication.secret")
    }

    /// Replaces this keyward's routes file with `text` and has it reload
    /// (SIGHUP); waits until its reload counter says it took effect, or
    /// panics after 10 s.
    pub(crate) fn set_routes(&self, text: &str) {
        const RELOADED: &str = "keyward_routes_reloads_total{result=\"ok\"}";
        let http = self.http.expect("a keyward started by spawn_keyward");
        let path = self
            .files
            .as_ref()
            .expect("a keyward started by spawn_keyward")
            .path()
            .join("bench-routes.toml");
        let before = metric(http, RELOADED);
        std::fs::write(&path, text).expect("write the routes file");
        let _ = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(http, RELOADED) <= before {
            assert!(
                Instant::now() < deadline,
                "keyward did not reload its routes"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Proc {
    /// Stops it as an orchestrator does (SIGTERM) and waits for it to
    /// exit; how long that took (a follower writes its state file then).
    pub(crate) fn stop(mut self) -> Duration {
        let started = Instant::now();
        let term = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        assert!(term.is_ok_and(|s| s.success()), "kill -TERM");
        let _ = self.child.wait();
        started.elapsed()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

pub(crate) fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Where servers and client run.
#[derive(Clone, Copy)]
pub(crate) struct Layout {
    pub(crate) server_core: Option<usize>,
    pub(crate) client_core: Option<usize>,
}

impl Layout {
    pub(crate) fn new(no_pin: bool) -> Self {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        if no_pin || cores.len() < 2 || Command::new("taskset").arg("-V").output().is_err() {
            return Layout {
                server_core: None,
                client_core: None,
            };
        }
        Layout {
            server_core: cores.last().map(|c| c.id),
            client_core: cores.first().map(|c| c.id),
        }
    }

    pub(crate) fn command(&self, program: &Path) -> Command {
        match self.server_core {
            Some(core) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(core.to_string()).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match (self.server_core, self.client_core) {
            (Some(s), Some(c)) => format!("servers pinned to core {s}, load generator to core {c}"),
            _ => "not pinned (OS scheduling)".into(),
        }
    }
}

pub(crate) fn start_noop(layout: &Layout) -> Proc {
    start_noop_with(layout, &[])
}

/// The no-op baseline with `extra` flags (`--tls-cert`, `--tls-key`).
pub(crate) fn start_noop_with(layout: &Layout, extra: &[std::ffi::OsString]) -> Proc {
    let addr = free_addr();
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = layout.command(&exe);
    cmd.arg("noop-server")
        .arg("--addr")
        .arg(addr.to_string())
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let child = cmd.spawn().expect("spawn baseline");
    wait_port(addr, Duration::from_secs(10));
    Proc {
        child,
        addr,
        http: None,
        files: None,
    }
}

pub(crate) fn start_keyward(layout: &Layout, bin: &Path, dir: &Path) -> (Proc, Duration) {
    start_keyward_with(layout, bin, dir, &[])
}

/// A keyward on the PostgreSQL database `url`, with the digest key file
/// `key` (shared by every node of the database) and `dir` as its data dir.
pub(crate) fn start_keyward_pg(
    layout: &Layout,
    bin: &Path,
    dir: &Path,
    url: &str,
    key: &Path,
) -> (Proc, Duration) {
    std::fs::create_dir_all(dir).expect("node data dir");
    let extra: Vec<std::ffi::OsString> = vec![
        "--store".into(),
        url.into(),
        "--digest-key-file".into(),
        key.into(),
    ];
    start_keyward_with(layout, bin, dir, &extra)
}

/// A keyward on `dir` with `extra` flags, ready (`/readyz` 200) or panics;
/// and how long it took from spawn to ready.
pub(crate) fn start_keyward_with(
    layout: &Layout,
    bin: &Path,
    dir: &Path,
    extra: &[std::ffi::OsString],
) -> (Proc, Duration) {
    let (proc, started) = spawn_keyward(layout, bin, dir, extra);
    let Some(http) = proc.http else {
        unreachable!("spawn_keyward sets the HTTP address")
    };
    let deadline = started + Duration::from_secs(120);
    while Instant::now() < deadline {
        if http_get(http, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            return (proc, started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("keyward did not become ready within 120 s");
}

/// A keyward on `dir` with `extra` flags, spawned (not yet ready), and when.
pub(crate) fn spawn_keyward(
    layout: &Layout,
    bin: &Path,
    dir: &Path,
    extra: &[std::ffi::OsString],
) -> (Proc, Instant) {
    let addr = free_addr();
    let http = free_addr();
    let files = tempfile::tempdir().expect("tempdir for keyward's files");
    let routes = files.path().join("bench-routes.toml");
    std::fs::write(&routes, BENCH_ROUTES).expect("write the routes file");
    let secret = files.path().join("bench-replication.secret");
    std::fs::write(&secret, BENCH_SECRET).expect("write the replication secret");
    let mut cmd = layout.command(bin);
    cmd.arg("--routes")
        .arg(&routes)
        .arg("--replication-secret-file")
        .arg(&secret)
        .arg("--data-dir")
        .arg(dir)
        .arg("--grpc-addr")
        .arg(addr.to_string())
        .arg("--http-addr")
        .arg(http.to_string())
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let started = Instant::now();
    let child = cmd.spawn().expect("spawn keyward");
    let proc = Proc {
        child,
        addr,
        http: Some(http),
        files: Some(files),
    };
    (proc, started)
}

/// Replication secret of the harness's primaries and followers.
pub(crate) const BENCH_SECRET: &str = "keyward-bench-replication-secret-0123456789";

/// A follower of `primary` (whose data dir is `primary_dir`: its digest
/// key is reused, and its secret), with a data dir of its own (a temporary
/// one: it starts with nothing), ready (first snapshot applied) or panics.
pub(crate) fn start_follower(
    layout: &Layout,
    bin: &Path,
    primary: &Proc,
    primary_dir: &Path,
) -> (Proc, Duration) {
    let dir = tempfile::tempdir().expect("tempdir for the follower's data dir");
    let (mut proc, took) = start_follower_in(layout, bin, primary, primary_dir, dir.path());
    proc.files = Some(dir);
    (proc, took)
}

/// [`start_follower`] on the data dir `dir` (where it keeps its state
/// file): ready (a snapshot applied, or resumed from the state in `dir`)
/// or panics; and how long it took from spawn to ready.
pub(crate) fn start_follower_in(
    layout: &Layout,
    bin: &Path,
    primary: &Proc,
    primary_dir: &Path,
    dir: &Path,
) -> (Proc, Duration) {
    let addr = free_addr();
    let http = free_addr();
    let mut cmd = layout.command(bin);
    cmd.arg("--follow")
        .arg(primary.addr.to_string())
        .arg("--replication-secret-file")
        .arg(primary.secret_file())
        .arg("--digest-key-file")
        .arg(primary_dir.join("digest.key"))
        .arg("--data-dir")
        .arg(dir)
        .arg("--grpc-addr")
        .arg(addr.to_string())
        .arg("--http-addr")
        .arg(http.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let started = Instant::now();
    let child = cmd.spawn().expect("spawn follower");
    let proc = Proc {
        child,
        addr,
        http: Some(http),
        files: None,
    };
    let deadline = started + Duration::from_secs(300);
    while Instant::now() < deadline {
        if http_get(http, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            return (proc, started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("follower did not become ready within 300 s");
}

pub(crate) fn wait_port(addr: SocketAddr, max: Duration) {
    let deadline = Instant::now() + max;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{addr} did not open within {max:?}");
}

pub(crate) fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

pub(crate) fn metric(http: SocketAddr, name: &str) -> f64 {
    http_get(http, "/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub(crate) fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// The repository, for the files of it the scenarios use (deploy/envoy,
/// scripts/pg_cluster.sh): the parent of this crate's bench/.
pub(crate) fn repo_root() -> &'static Path {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR"));
    bench.parent().unwrap_or(bench)
}
