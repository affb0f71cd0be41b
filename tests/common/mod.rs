//! A real keyward on 127.0.0.1:0 with sled in a temp dir, a manual clock,
//! and generated gRPC clients.
#![allow(dead_code, unused_imports)]

pub mod lease;
pub mod pg;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keyward::clock::ManualClock;
use keyward::engine::{Engine, Settings};
use keyward::pb::v1 as pb;
use keyward::server::{self, Options, ServeError};
use pb::accounts_client::AccountsClient;
use pb::authorizer_client::AuthorizerClient;
use pb::resources_client::ResourcesClient;
use pb::tokens_client::TokensClient;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// The replication secret of test primaries.
pub const REPLICATION_SECRET: &str = "test-replication-secret-0123456789abcdef";

pub const ADMIN: i32 = pb::AccessLevel::Admin as i32;
pub const VIEWER: i32 = pb::AccessLevel::Viewer as i32;

/// A running server and what tests need to talk to it.
pub struct TestServer {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub root: Option<String>,
    pub engine: Arc<Engine>,
    pub clock: Arc<ManualClock>,
    pub channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

pub fn options(dir: &Path, clock: Arc<ManualClock>) -> Options {
    Options {
        data_dir: dir.to_path_buf(),
        digest_key_file: dir.join("digest.key"),
        settings: Settings::default(),
        clock,
        request_timeout: Duration::from_secs(10),
        max_in_flight: 1024,
        max_concurrent_streams: 256,
        usage_flush_interval: Duration::from_secs(3600),
        routes_file: None,
        replication_secret: Some(REPLICATION_SECRET.into()),
        follow: None,
        postgres: test_postgres(dir),
        tls: None,
        tls_ca: None,
        leak_report_keys: None,
    }
}

/// The store the suite runs against: sled in `dir`, or, with
/// `KEYWARD_TEST_PG=postgres://user@host:port` set (scripts/test.sh runs
/// the core suite a second time that way), a PostgreSQL database of its
/// own named after `dir` (so a restart on the same dir finds its data).
pub fn test_postgres(dir: &Path) -> Option<server::Postgres> {
    let base = std::env::var("KEYWARD_TEST_PG").ok()?;
    Some(postgres_at(&base, &db_name(dir)))
}

/// PostgreSQL mode on database `db` of the server at `base`. The manual
/// clock jumps hours in some tests: the staleness bound is out of the way
/// unless a test sets its own.
pub fn postgres_at(base: &str, db: &str) -> server::Postgres {
    server::Postgres {
        store: keyward::store::postgres::PgOptions {
            url: format!("{}/{db}", base.trim_end_matches('/')),
            pool_size: 4,
            retain_changes: 100_000,
            ca_file: None,
        },
        stale_after: Duration::from_secs(100 * 365 * 86_400),
        serve_stale: false,
    }
}

/// A database name unique to `dir`.
pub fn db_name(dir: &Path) -> String {
    let h = blake3::hash(dir.as_os_str().as_encoded_bytes());
    format!("kw_{}", &h.to_hex()[..16])
}

/// A client of the test database of `dir` (PostgreSQL runs only).
pub async fn pg_client(dir: &Path) -> Option<tokio_postgres::Client> {
    let pg = test_postgres(dir)?;
    Some(pg_connect(&pg.store.url).await)
}

/// A client of the database at `url`, its connection driven in the background.
pub async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to the test database: {e}"));
    tokio::spawn(conn);
    client
}

/// Every token record the store of `dir` holds (sled, or the test database).
pub async fn stored_tokens(dir: &Path) -> Vec<keyward::pb::store::TokenRecord> {
    let url = test_postgres(dir).map(|pg| pg.store.url);
    stored_tokens_in(dir, url.as_deref()).await
}

/// Every token record in the database at `pg_url`, or without one in the
/// sled store in `dir`.
pub async fn stored_tokens_in(
    dir: &Path,
    pg_url: Option<&str>,
) -> Vec<keyward::pb::store::TokenRecord> {
    use prost::Message;
    let client = match pg_url {
        Some(url) => Some(pg_connect(url).await),
        None => None,
    };
    let raw: Vec<Vec<u8>> = match client {
        Some(c) => c
            .query("SELECT record FROM keyward_tokens ORDER BY id", &[])
            .await
            .expect("read tokens")
            .iter()
            .map(|r| r.get::<_, Vec<u8>>(0))
            .collect(),
        None => {
            let db = open_sled(dir);
            db.open_tree("tokens")
                .expect("tree")
                .iter()
                .map(|kv| kv.expect("record").1.to_vec())
                .collect()
        }
    };
    raw.iter()
        .map(|v| keyward::pb::store::TokenRecord::decode(v.as_slice()).expect("decode"))
        .collect()
}

/// The sled store in `dir`, opened by the test itself. sled releases its
/// file lock from a thread of its own after a stopped server's last handle
/// is dropped, so the lock is waited for (up to 2 s, as
/// `keyward::store::SledStore::open` does).
pub fn open_sled(dir: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match sled::open(dir) {
            Err(sled::Error::Io(e))
                if e.to_string().starts_with("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.expect("open store"),
        }
    }
}

/// Every byte the store of `dir` holds: the sled files, or every row of
/// every keyward table (records, the change table, the audit log).
pub async fn stored_bytes(dir: &Path) -> Vec<u8> {
    let url = test_postgres(dir).map(|pg| pg.store.url);
    stored_bytes_in(dir, url.as_deref()).await
}

/// Every byte of the database at `pg_url` (as [`stored_bytes`]), or without
/// one of the sled files in `dir`.
pub async fn stored_bytes_in(dir: &Path, pg_url: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(url) = pg_url {
        let c = pg_connect(url).await;
        for table in [
            "keyward_meta",
            "keyward_accounts",
            "keyward_resources",
            "keyward_tokens",
            "keyward_changes",
            "keyward_audit",
        ] {
            // Each row as text: bytea comes out hex, so search both forms.
            let rows = c
                .query(&format!("SELECT t::text FROM {table} t"), &[])
                .await
                .expect("read table");
            for r in rows {
                let text: String = r.get(0);
                out.extend_from_slice(text.as_bytes());
                out.extend(hex_decode_all(&text));
            }
        }
        return out;
    }
    fn walk(dir: &Path, out: &mut Vec<u8>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.extend(std::fs::read(p).unwrap_or_default());
            }
        }
    }
    walk(dir, &mut out);
    out
}

/// The bytes of every `\x...` hex run in `text`.
fn hex_decode_all(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for part in text.split("\\x").skip(1) {
        let hex: String = part.chars().take_while(char::is_ascii_hexdigit).collect();
        for pair in hex.as_bytes().chunks(2) {
            if let Ok(b) = u8::from_str_radix(std::str::from_utf8(pair).unwrap_or(""), 16) {
                out.push(b);
            }
        }
    }
    out
}

/// Creates database `db` on the server at `base` unless it exists.
pub async fn create_database(base: &str, db: &str) {
    let url = format!("{}/postgres", base.trim_end_matches('/'));
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to the test PostgreSQL at {base}: {e}"));
    let driver = tokio::spawn(conn);
    match client.batch_execute(&format!("CREATE DATABASE {db}")).await {
        Ok(()) => {}
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
        // The server's own message: "db error" alone says nothing (a full
        // disk, for one).
        Err(e) => panic!(
            "CREATE DATABASE {db}: {e}: {}",
            e.as_db_error().map_or("", |d| d.message())
        ),
    }
    drop(client);
    let _ = driver.await;
}

/// A keyward started by `server::run` on two fresh loopback ports, not
/// waited for.
pub struct Spawned {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// Resolves once it serves (Err: it stopped first; `task` says why).
    pub ready: oneshot::Receiver<server::Ready>,
    /// Stops it gracefully, as SIGTERM does.
    pub stop: oneshot::Sender<()>,
    /// What `run` returns.
    pub task: JoinHandle<Result<(), ServeError>>,
}

/// Starts `opts` on fresh loopback ports (gRPC and HTTP); does not wait.
pub async fn spawn(opts: Options) -> Spawned {
    let grpc_l = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
    let http_l = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
    let grpc = grpc_l.local_addr().expect("addr");
    let http = http_l.local_addr().expect("addr");
    let (stop, stop_rx) = oneshot::channel::<()>();
    let (ready_tx, ready) = oneshot::channel();
    let task = tokio::spawn(server::run(
        opts,
        grpc_l,
        http_l,
        async move {
            let _ = stop_rx.await;
        },
        ready_tx,
    ));
    Spawned {
        grpc,
        http,
        ready,
        stop,
        task,
    }
}

impl TestServer {
    /// Starts a server on `dir` with a fresh manual clock.
    pub async fn start(dir: &Path) -> TestServer {
        let clock = Arc::new(ManualClock::new());
        Self::start_with(options(dir, clock.clone()), clock)
            .await
            .expect("server starts")
    }

    /// Starts a server with explicit options (whose clock is `clock`); Err
    /// if it refuses to start.
    pub async fn start_with(
        opts: Options,
        clock: Arc<ManualClock>,
    ) -> Result<TestServer, ServeError> {
        if let Some(pg) = &opts.postgres {
            let url = &pg.store.url;
            let (base, db) = url.rsplit_once('/').expect("postgres url with a database");
            let db = db.split('?').next().unwrap_or(db);
            create_database(base, db).await;
        }
        let Spawned {
            grpc,
            http,
            ready,
            stop,
            task,
        } = spawn(opts).await;
        let Ok(ready) = ready.await else {
            return Err(task
                .await
                .expect("join")
                .expect_err("server stopped before ready"));
        };
        let channel = Channel::from_shared(format!("http://{grpc}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        Ok(TestServer {
            grpc,
            http,
            root: ready.root_token.map(|s| s.expose().to_string()),
            engine: ready.engine,
            clock,
            channel,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn root(&self) -> String {
        self.root.clone().expect("first start prints a root token")
    }
    pub fn accounts(&self) -> AccountsClient<Channel> {
        AccountsClient::new(self.channel.clone())
    }
    pub fn resources(&self) -> ResourcesClient<Channel> {
        ResourcesClient::new(self.channel.clone())
    }
    pub fn tokens(&self) -> TokensClient<Channel> {
        TokensClient::new(self.channel.clone())
    }
    pub fn authorizer(&self) -> AuthorizerClient<Channel> {
        AuthorizerClient::new(self.channel.clone())
    }

    /// Graceful stop (as on SIGTERM); returns the server's result.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let result = self.task.take().expect("task").await.expect("join");
        // A stream's producer task (a follower's feed) may hold the engine,
        // and so the store's lock, for moments after `run` returns, until
        // it sees its stream gone: a test that opens the same data dir
        // next waits for it, as a new process would not have to.
        let engine = self.engine;
        drop(self.channel);
        for _ in 0..500 {
            if Arc::strong_count(&engine) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        result
    }

    /// Creates an account with the root token; returns (account id, admin secret).
    pub async fn account(&self, name: &str) -> (u64, String) {
        let resp = self
            .accounts()
            .create_account(auth(
                pb::CreateAccountRequest { name: name.into() },
                &self.root(),
            ))
            .await
            .expect("create account")
            .into_inner();
        (
            resp.account.expect("account").id,
            resp.admin_token.expect("token").secret,
        )
    }

    /// Registers a resource; returns the domain token secret for domains.
    pub async fn register(
        &self,
        caller: &str,
        account_id: u64,
        kind: pb::ResourceType,
        id: &str,
        parent: Option<&str>,
    ) -> Option<pb::TokenWithSecret> {
        self.resources()
            .register_resource(auth(
                pb::RegisterResourceRequest {
                    account_id,
                    resource: Some(rref(kind, id)),
                    parent: parent.map(|p| rref(pb::ResourceType::Project, p)),
                },
                caller,
            ))
            .await
            .expect("register resource")
            .into_inner()
            .domain_token
    }

    /// Creates a token; returns it with its secret.
    pub async fn create(
        &self,
        caller: &str,
        account_id: u64,
        name: &str,
        grants: Vec<pb::Grant>,
    ) -> Result<pb::TokenWithSecret, Status> {
        self.create_scoped(caller, account_id, name, grants, vec![])
            .await
    }

    pub async fn create_scoped(
        &self,
        caller: &str,
        account_id: u64,
        name: &str,
        grants: Vec<pb::Grant>,
        scopes: Vec<pb::Scope>,
    ) -> Result<pb::TokenWithSecret, Status> {
        self.tokens()
            .create_token(auth(
                pb::CreateTokenRequest {
                    rate_limits: Default::default(),
                    account_id,
                    name: name.into(),
                    grants,
                    scopes,
                    expires_at: None,
                },
                caller,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// ListTokens of `account_id` as `caller` (first page).
    pub async fn list(&self, caller: &str, account_id: u64) -> pb::ListTokensResponse {
        self.tokens()
            .list_tokens(auth(
                pb::ListTokensRequest {
                    account_id,
                    ..Default::default()
                },
                caller,
            ))
            .await
            .expect("list tokens")
            .into_inner()
    }

    /// One Authorize call.
    /// DeleteToken by `caller`.
    pub async fn delete(
        &self,
        caller: &str,
        account_id: u64,
        token_id: u64,
    ) -> Result<pb::DeleteTokenResponse, Status> {
        self.tokens()
            .delete_token(auth(
                pb::DeleteTokenRequest {
                    account_id,
                    token_id,
                },
                caller,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// The health of `service` ("" for the whole server).
    pub async fn health(&self, service: &str) -> i32 {
        tonic_health::pb::health_client::HealthClient::new(self.channel.clone())
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status
    }

    /// Waits up to `within` for `service`'s health to become `status`.
    pub async fn wait_for_health(
        &self,
        service: &str,
        status: tonic_health::pb::health_check_response::ServingStatus,
        within: Duration,
    ) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let now = self.health(service).await;
            if now == status as i32 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "health of {service:?} is still {now}, not {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn check(
        &self,
        token: &str,
        kind: pb::ResourceType,
        id: &str,
        level: i32,
    ) -> pb::AuthorizeResponse {
        self.check_scope(token, kind, id, level, "").await
    }

    pub async fn check_scope(
        &self,
        token: &str,
        kind: pb::ResourceType,
        id: &str,
        level: i32,
        scope: &str,
    ) -> pb::AuthorizeResponse {
        self.authorizer()
            .authorize(pb::AuthorizeRequest {
                cost: Default::default(),
                token: token.into(),
                resource: Some(rref(kind, id)),
                level,
                scope: scope.into(),
            })
            .await
            .expect("authorize")
            .into_inner()
    }
}

/// Options of a follower of the keyward at `primary`, with the digest key
/// in `key_file` and the given staleness behaviour.
pub fn follower_options(
    dir: &Path,
    clock: Arc<ManualClock>,
    primary: SocketAddr,
    key_file: &Path,
    serve_stale: bool,
) -> Options {
    let mut opts = options(dir, clock);
    opts.digest_key_file = key_file.to_path_buf();
    opts.follow = Some(server::Follow {
        primary: primary.to_string(),
        secret: REPLICATION_SECRET.into(),
        stale_after: Duration::from_secs(30),
        serve_stale,
        use_report_interval: Duration::from_secs(15),
        state_interval: Duration::from_secs(10),
    });
    opts
}

/// This process's resident memory (KiB).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A request carrying `token` as `authorization: Bearer`.
pub fn auth<T>(msg: T, token: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    req
}

pub fn rref(kind: pb::ResourceType, id: &str) -> pb::ResourceRef {
    pb::ResourceRef {
        r#type: kind as i32,
        id: id.into(),
    }
}

pub fn grant(kind: pb::ResourceType, id: &str, level: i32) -> pb::Grant {
    pb::Grant {
        resource: Some(rref(kind, id)),
        level,
    }
}

pub fn scope(name: &str, level: i32) -> pb::Scope {
    pb::Scope {
        name: name.into(),
        level,
    }
}

/// Asserts a call failed with `code`.
pub fn assert_code<T: std::fmt::Debug>(r: Result<T, Status>, code: Code) -> Status {
    match r {
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "unexpected status: {s:?}");
            s
        }
    }
}

pub fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

pub use pb::DenyReason;
pub use pb::ResourceType::{
    Account as ACCOUNT, Domain as DOMAIN, Project as PROJECT, Sandbox as SANDBOX,
};

/// The value of the first sample of `name` (with its labels) in a
/// Prometheus text page; 0 if absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// An HTTP/1.1 answer.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), the
/// raw way: what goes on the wire is exactly what the test wrote.
pub async fn http_raw(addr: SocketAddr, request: &[u8]) -> HttpReply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(request).await.expect("write");
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpReply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// `method path` with an optional bearer token and JSON body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&serde_json::Value>,
) -> HttpReply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: keyward\r\nconnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    let body = json.map(|j| j.to_string()).unwrap_or_default();
    if json.is_some() {
        req.push_str("content-type: application/json\r\n");
    }
    req.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    http_raw(addr, req.as_bytes()).await
}

/// Collects what this test binary's log subscriber writes (one per
/// process: see [`log_capture`]).
#[derive(Clone, Default)]
pub struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Capture {
    /// Every byte logged so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().expect("lock").clone()
    }

    /// Every line logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }

    /// Forgets what was logged so far.
    pub fn clear(&self) {
        self.0.lock().expect("lock").clear();
    }

    /// Where the log is now (see [`Capture::lines_since`]).
    pub fn mark(&self) -> usize {
        self.0.lock().expect("lock").len()
    }

    /// The lines logged since `mark` that contain `needle` (tests run side
    /// by side in one process: the needle picks one test's lines).
    pub fn lines_since(&self, mark: usize, needle: &str) -> Vec<String> {
        let bytes = self.0.lock().expect("lock");
        String::from_utf8_lossy(&bytes[mark.min(bytes.len())..])
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

/// What this test binary logs, through the binary's own subscriber
/// (`keyward::logs::subscriber`, its caps included) at `directives`, with
/// `log` records bridged in. Process-wide (a per-thread subscriber misses
/// events whose callsite another test's thread registered first),
/// installed on first use: the first caller's directives hold.
pub fn log_capture(directives: &str) -> &'static Capture {
    use tracing_subscriber::util::SubscriberInitExt;
    static CAPTURE: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c = Capture::default();
        keyward::logs::subscriber(Some(directives), c.clone(), false).init();
        c
    })
}
