//! A follower's side of TLS: `--follow https://...` verifies its primary
//! (`--tls-ca` or the system roots, host name checked) before it sends the
//! replication secret, so a forged primary gets neither the secret nor the
//! chance to serve forged tokens; with the right CA it follows; it
//! presents its client certificate to a primary that requires one; the
//! files are re-read at every connect; a plaintext `--follow` warns.
//!
//! Certificates are made here with rcgen. Nodes run in process through
//! `server::run` on 127.0.0.1:0 (a follower that must never become ready
//! cannot go through `TestServer::start_with`, which waits for it).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use keyward::clock::ManualClock;
use keyward::pb::v1 as pb;
use keyward::server::{self, Options, ServeError};
use keyward::tls::TlsFiles;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// The domain the forged tokens claim.
const VICTIM: &str = "victim.com";

// ------------------------------------------------------------ certificates

/// A certificate authority made for one test.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    /// Its certificate, PEM, in a file (what `--tls-ca` and
    /// `--tls-client-ca` name).
    file: PathBuf,
}

/// A certificate and its key, as files.
#[derive(Clone)]
struct Pair {
    cert: PathBuf,
    key: PathBuf,
    /// The file of the CA that signed it.
    ca: PathBuf,
}

impl Pair {
    /// The files as a port's TLS settings (with client CAs to require).
    fn serving(&self, client_ca: Option<&Ca>) -> TlsFiles {
        TlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: client_ca.map(|ca| ca.file.clone()),
        }
    }
}

/// A CA named `name`, its certificate written to `dir/<name>-ca.pem`.
fn ca(dir: &Path, name: &str) -> Ca {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let key = rcgen::KeyPair::generate().expect("key");
    let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA");
    let file = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&file, issuer.pem()).expect("write CA");
    Ca { issuer, file }
}

/// A certificate for `names` (host names or IP addresses) signed by `ca`,
/// good for serving and as a client certificate, written to
/// `dir/<file>.pem` and `dir/<file>-key.pem`.
fn leaf(dir: &Path, file: &str, ca: &Ca, names: &[&str]) -> Pair {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).expect("params");
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca.issuer).expect("sign");
    let pair = Pair {
        cert: dir.join(format!("{file}.pem")),
        key: dir.join(format!("{file}-key.pem")),
        ca: ca.file.clone(),
    };
    std::fs::write(&pair.cert, cert.pem()).expect("write cert");
    std::fs::write(&pair.key, key.serialize_pem()).expect("write key");
    pair
}

// -------------------------------------------------------------------- logs

/// What this test binary logs, through the binary's own subscriber
/// (`keyward::logs::subscriber`) at info.
fn capture() -> &'static Capture {
    log_capture("info")
}

// ------------------------------------------------------------------- nodes

/// A keyward running in this process, not necessarily ready.
struct Node {
    grpc: SocketAddr,
    ready: Option<oneshot::Receiver<server::Ready>>,
    root: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Node {
    /// Starts `opts` on fresh loopback ports; does not wait for it.
    async fn spawn(opts: Options) -> Node {
        let Spawned {
            grpc,
            ready,
            stop,
            task,
            ..
        } = spawn(opts).await;
        Node {
            grpc,
            ready: Some(ready),
            root: None,
            stop: Some(stop),
            task,
        }
    }

    /// Whether it becomes ready within `within` (a follower: once it has
    /// applied a snapshot from its primary).
    async fn ready_within(&mut self, within: Duration) -> bool {
        let Some(rx) = self.ready.as_mut() else {
            return true;
        };
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(ready)) => {
                self.root = ready.root_token.map(|s| s.expose().to_string());
                self.ready = None;
                true
            }
            Ok(Err(_)) => panic!("the node stopped before ready: {:?}", self.task),
            Err(_) => false,
        }
    }

    /// Stops it and returns what `run` returned.
    async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task).await.expect("join")
    }
}

/// How a test client reaches a TLS port: the CA the server's certificate
/// chains to, the name it must bear, the client certificate to present.
#[derive(Clone, Copy)]
struct Reach<'a> {
    ca: &'a Path,
    name: &'a str,
    client: Option<&'a Pair>,
}

impl<'a> Reach<'a> {
    /// A server named `localhost` whose certificate chains to `ca`.
    fn localhost(ca: &'a Ca) -> Self {
        Reach {
            ca: &ca.file,
            name: "localhost",
            client: None,
        }
    }

    /// A node serving `pair` (for `localhost`), or plaintext without one.
    fn serving(pair: Option<&'a Pair>) -> Option<Self> {
        pair.map(|p| Reach {
            ca: &p.ca,
            name: "localhost",
            client: None,
        })
    }
}

/// A gRPC channel to `addr`: plaintext, or TLS as `reach` says.
async fn channel(addr: SocketAddr, reach: Option<Reach<'_>>) -> Channel {
    let Some(reach) = reach else {
        return Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
    };
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(reach.ca).expect("CA file"),
        ))
        .domain_name(reach.name);
    if let Some(pair) = reach.client {
        config = config.identity(Identity::from_pem(
            std::fs::read(&pair.cert).expect("cert"),
            std::fs::read(&pair.key).expect("key"),
        ));
    }
    Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(config)
        .expect("tls config")
        .connect()
        .await
        .expect("connect over TLS")
}

/// A primary and the token it issued with ADMIN on [`VICTIM`].
struct Primary {
    node: Node,
    /// Its data dir (the follower borrows its digest key).
    dir: tempfile::TempDir,
    /// A channel to it (TLS when it serves TLS).
    channel: Channel,
    /// An account admin token.
    admin: String,
    /// The account's id.
    account: u64,
    /// A token with ADMIN on [`VICTIM`].
    token: String,
}

/// Starts a primary serving `tls` (none: plaintext) that holds an account
/// with [`VICTIM`] and a token with ADMIN on it; the test reaches it as
/// `reach` says.
async fn primary(tls: Option<TlsFiles>, reach: Option<Reach<'_>>) -> Primary {
    let dir = temp();
    let clock = Arc::new(ManualClock::new());
    let mut opts = options(dir.path(), clock);
    opts.postgres = None;
    opts.tls = tls;
    let mut node = Node::spawn(opts).await;
    assert!(
        node.ready_within(Duration::from_secs(30)).await,
        "primary ready"
    );
    let channel = channel(node.grpc, reach).await;
    let root = node.root.clone().expect("root token");
    let accounts = pb::accounts_client::AccountsClient::new(channel.clone());
    let made = accounts
        .clone()
        .create_account(auth(
            pb::CreateAccountRequest {
                name: "Victim".into(),
            },
            &root,
        ))
        .await
        .expect("create account")
        .into_inner();
    let account = made.account.expect("account").id;
    let admin = made.admin_token.expect("admin").secret;
    pb::resources_client::ResourcesClient::new(channel.clone())
        .register_resource(auth(
            pb::RegisterResourceRequest {
                account_id: account,
                resource: Some(rref(DOMAIN, VICTIM)),
                parent: None,
            },
            &admin,
        ))
        .await
        .expect("register the domain");
    let token = create_token(&channel, &admin, account, "ci").await;
    Primary {
        node,
        dir,
        channel,
        admin,
        account,
        token,
    }
}

/// Creates a token with ADMIN on [`VICTIM`]; returns its secret.
async fn create_token(channel: &Channel, admin: &str, account: u64, name: &str) -> String {
    pb::tokens_client::TokensClient::new(channel.clone())
        .create_token(auth(
            pb::CreateTokenRequest {
                rate_limits: Default::default(),
                account_id: account,
                name: name.into(),
                grants: vec![grant(DOMAIN, VICTIM, ADMIN)],
                scopes: vec![],
                expires_at: None,
            },
            admin,
        ))
        .await
        .expect("create token")
        .into_inner()
        .secret
}

/// Options of a follower of `primary` (a `--follow` value) verifying it
/// against `tls_ca` and presenting `cert` (which its own ports then serve
/// too, as the binary's flags do).
fn follower(
    dir: &Path,
    primary: &Primary,
    follow: String,
    tls_ca: Option<&Path>,
    cert: Option<&Pair>,
) -> Options {
    let clock = Arc::new(ManualClock::new());
    let mut opts = follower_options(
        dir,
        clock,
        primary.node.grpc,
        &primary.dir.path().join("digest.key"),
        false,
    );
    opts.postgres = None;
    if let Some(f) = opts.follow.as_mut() {
        f.primary = follow;
    }
    opts.tls_ca = tls_ca.map(Path::to_path_buf);
    opts.tls = cert.map(|c| c.serving(None));
    opts
}

/// `Authorize(token, DOMAIN victim.com, ADMIN)` on `channel`: `Some(allowed)`,
/// or `None` when refused (UNAVAILABLE: not ready).
async fn authorize(channel: &Channel, token: &str) -> Option<bool> {
    pb::authorizer_client::AuthorizerClient::new(channel.clone())
        .authorize(pb::AuthorizeRequest {
            cost: Default::default(),
            token: token.into(),
            resource: Some(rref(DOMAIN, VICTIM)),
            level: ADMIN,
            scope: String::new(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().allowed)
}

/// Waits (≤ 10 s) until `token` is allowed through `channel`.
async fn until_allowed(channel: &Channel, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while authorize(channel, token).await != Some(true) {
        assert!(Instant::now() < deadline, "the follower never allowed it");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long a follower that should never follow is given.
const NEVER: Duration = Duration::from_secs(3);

/// Starts a follower of `forged` (verifying against `tls_ca`, presenting
/// `cert`) that must not follow it; checks that it never becomes ready,
/// never allows the forged token, and logs why (a line naming the primary
/// and one of `why`) without a secret.
async fn refuses(
    forged: &Primary,
    follow: String,
    tls_ca: Option<&Path>,
    cert: Option<&Pair>,
    why: &[&str],
) {
    let log = capture();
    let mark = log.mark();
    let dir = temp();
    let mut f = Node::spawn(follower(dir.path(), forged, follow.clone(), tls_ca, cert)).await;
    assert!(
        !f.ready_within(NEVER).await,
        "{follow}: the follower followed a primary it should refuse"
    );
    assert_ne!(
        authorize(&channel(f.grpc, Reach::serving(cert)).await, &forged.token).await,
        Some(true),
        "{follow}: the forged token is allowed"
    );
    let lines = log.lines_since(mark, &follow);
    if let Some(first) = lines.first() {
        println!("tls_follower: {first}");
    }
    assert!(
        lines.iter().any(|l| why.iter().any(|w| l.contains(w))),
        "{follow}: no log line says why ({why:?}): {lines:#?}"
    );
    let all = log.text();
    for secret in [REPLICATION_SECRET, &forged.token, &forged.admin] {
        assert!(!all.contains(secret), "a secret in the log");
    }
    f.stop().await.expect("the follower stops");
}

// ------------------------------------------------------------------- tests

/// The forged primary of issue 16: whatever it serves, a follower given
/// `--follow https://...` never follows it, never allows the token only
/// it knows, and logs why. (a) a plaintext keyward behind an https URL
/// (before this change the follower spoke plaintext to it, secret
/// included, and allowed the forged token); (b) a certificate from
/// another CA; (c) a certificate from the right CA naming another host;
/// (d) without --tls-ca, a private CA the system roots do not hold.
#[tokio::test]
async fn a_forged_primary_is_never_followed() {
    let pki = temp();
    let real = ca(pki.path(), "real");
    let forged_ca = ca(pki.path(), "forged");

    // (a) No TLS at all.
    let plain = primary(None, None).await;
    let url = format!("https://127.0.0.1:{}", plain.node.grpc.port());
    refuses(&plain, url, Some(&real.file), None, &["corrupt message"]).await;

    // (b) Another CA signed it.
    let pair = leaf(
        pki.path(),
        "forged",
        &forged_ca,
        &["localhost", "127.0.0.1"],
    );
    let other_ca = primary(Some(pair.serving(None)), Some(Reach::localhost(&forged_ca))).await;
    let url = format!("https://localhost:{}", other_ca.node.grpc.port());
    refuses(
        &other_ca,
        url,
        Some(&real.file),
        None,
        &["invalid peer certificate"],
    )
    .await;

    // (c) The right CA, another host's name.
    let pair = leaf(pki.path(), "elsewhere", &real, &["elsewhere.example"]);
    let reach = Reach {
        name: "elsewhere.example",
        ..Reach::localhost(&real)
    };
    let misnamed = primary(Some(pair.serving(None)), Some(reach)).await;
    let url = format!("https://localhost:{}", misnamed.node.grpc.port());
    refuses(
        &misnamed,
        url,
        Some(&real.file),
        None,
        &["invalid peer certificate"],
    )
    .await;

    // (d) The system roots do not hold a private CA.
    let url = format!("https://localhost:{}", other_ca.node.grpc.port());
    refuses(
        &other_ca,
        url,
        None,
        None,
        &["invalid peer certificate", "native certs"],
    )
    .await;

    for p in [plain, other_ca, misnamed] {
        p.node.stop().await.expect("primary stops");
    }
}

/// With the CA that signed its certificate, a follower follows an https
/// primary named by host name or by IP address (verified against the
/// certificate's IP SAN): it answers Authorize for the primary's tokens,
/// new ones included, and logs no plaintext warning.
#[tokio::test]
async fn the_right_ca_follows() {
    let log = capture();
    let pki = temp();
    let real = ca(pki.path(), "real");
    let pair = leaf(pki.path(), "primary", &real, &["localhost", "127.0.0.1"]);
    let p = primary(Some(pair.serving(None)), Some(Reach::localhost(&real))).await;
    let port = p.node.grpc.port();
    let mut followers = Vec::new();
    for url in [
        format!("https://localhost:{port}"),
        format!("https://127.0.0.1:{port}"),
    ] {
        let mark = log.mark();
        let dir = temp();
        let mut f = Node::spawn(follower(
            dir.path(),
            &p,
            url.clone(),
            Some(&real.file),
            None,
        ))
        .await;
        assert!(
            f.ready_within(Duration::from_secs(30)).await,
            "{url}: the follower never followed"
        );
        let ch = channel(f.grpc, None).await;
        assert_eq!(authorize(&ch, &p.token).await, Some(true), "{url}");
        let newer = create_token(&p.channel, &p.admin, p.account, &format!("new {url}")).await;
        until_allowed(&ch, &newer).await;
        let lines = log.lines_since(mark, &url);
        assert!(
            !lines.iter().any(|l| l.contains("in clear")),
            "{url}: {lines:#?}"
        );
        followers.push((f, dir));
    }
    for (f, _dir) in followers {
        f.stop().await.expect("follower stops");
    }
    p.node.stop().await.expect("primary stops");
}

/// A primary that requires client certificates (`--tls-client-ca`): a
/// follower presenting its `--tls-cert`/`--tls-key` signed by that CA
/// follows; one without a client certificate, or with one from another
/// CA, is refused and never follows; and a follower whose certificate
/// files are replaced by good ones follows without a restart (the files
/// are re-read at every connect).
#[tokio::test]
async fn an_mtls_primary_takes_the_followers_certificate() {
    let pki = temp();
    let real = ca(pki.path(), "real");
    let clients = ca(pki.path(), "clients");
    let strangers = ca(pki.path(), "strangers");
    let pair = leaf(pki.path(), "primary", &real, &["localhost", "127.0.0.1"]);
    let operator = leaf(pki.path(), "operator", &clients, &["operator.example"]);
    let reach = Reach {
        client: Some(&operator),
        ..Reach::localhost(&real)
    };
    let p = primary(Some(pair.serving(Some(&clients))), Some(reach)).await;
    let url = format!("https://localhost:{}", p.node.grpc.port());

    // A good client certificate: it follows (and serves it on its ports).
    let good = leaf(
        pki.path(),
        "follower",
        &clients,
        &["localhost", "127.0.0.1"],
    );
    let dir = temp();
    let mut opts = follower(dir.path(), &p, url.clone(), Some(&real.file), Some(&good));
    opts.settings.node_name = "mtls-follower".into();
    let mut f = Node::spawn(opts).await;
    assert!(
        f.ready_within(Duration::from_secs(30)).await,
        "a follower with a good client certificate never followed"
    );
    let ch = channel(f.grpc, Reach::serving(Some(&good))).await;
    assert_eq!(authorize(&ch, &p.token).await, Some(true));

    // None, or one from another CA: refused.
    refuses(
        &p,
        url.clone(),
        Some(&real.file),
        None,
        &["CertificateRequired"],
    )
    .await;
    let stranger = leaf(
        pki.path(),
        "stranger",
        &strangers,
        &["localhost", "127.0.0.1"],
    );
    let why = ["UnknownCA", "BadCertificate"];
    refuses(&p, url.clone(), Some(&real.file), Some(&stranger), &why).await;

    // Rotation: the stranger's files replaced by a good pair.
    let rotating = leaf(
        pki.path(),
        "rotating",
        &strangers,
        &["localhost", "127.0.0.1"],
    );
    let dir2 = temp();
    let mut r = Node::spawn(follower(
        dir2.path(),
        &p,
        url.clone(),
        Some(&real.file),
        Some(&rotating),
    ))
    .await;
    assert!(
        !r.ready_within(NEVER).await,
        "followed with a stranger's certificate"
    );
    let fresh = leaf(pki.path(), "fresh", &clients, &["localhost", "127.0.0.1"]);
    std::fs::copy(&fresh.key, &rotating.key).expect("rotate key");
    std::fs::copy(&fresh.cert, &rotating.cert).expect("rotate cert");
    assert!(
        r.ready_within(Duration::from_secs(30)).await,
        "the follower never picked up its new certificate"
    );

    r.stop().await.expect("follower stops");
    f.stop().await.expect("follower stops");
    // Its use reached the primary over the same mTLS connection (the
    // report a follower sends when it stops).
    let listed = pb::tokens_client::TokensClient::new(p.channel.clone())
        .list_tokens(auth(
            pb::ListTokensRequest {
                account_id: p.account,
                ..Default::default()
            },
            &p.admin,
        ))
        .await
        .expect("list tokens")
        .into_inner();
    let ci = listed.tokens.iter().find(|t| t.name == "ci").expect("ci");
    assert_eq!(ci.last_used_by, "mtls-follower");
    p.node.stop().await.expect("primary stops");
}

/// `--follow host:port` and `--follow http://...` still follow, in
/// plaintext, and warn once at start that the replication secret and
/// every token record travel in clear (naming no secret).
#[tokio::test]
async fn a_plaintext_follow_warns() {
    let log = capture();
    let p = primary(None, None).await;
    for url in [p.node.grpc.to_string(), format!("http://{}", p.node.grpc)] {
        let mark = log.mark();
        let dir = temp();
        let mut f = Node::spawn(follower(dir.path(), &p, url.clone(), None, None)).await;
        assert!(
            f.ready_within(Duration::from_secs(30)).await,
            "{url}: never followed"
        );
        assert_eq!(
            authorize(&channel(f.grpc, None).await, &p.token).await,
            Some(true)
        );
        let warnings: Vec<String> = log
            .lines_since(mark, &format!("primary={url}"))
            .into_iter()
            .filter(|l| l.contains("WARN") && l.contains("travel in clear"))
            .collect();
        println!("tls_follower: {warnings:?}");
        assert_eq!(warnings.len(), 1, "{url}: one warning: {warnings:#?}");
        assert!(!warnings[0].contains(REPLICATION_SECRET));
        f.stop().await.expect("follower stops");
    }
    p.node.stop().await.expect("primary stops");
}

/// A bad `--tls-ca` refuses the start with exit 64, naming the file and
/// what is wrong (missing, not PEM, no certificate in it), and never
/// quoting the file.
#[test]
fn a_bad_tls_ca_exits_64() {
    let dir = temp();
    let secret = dir.path().join("replication.secret");
    std::fs::write(&secret, format!("{REPLICATION_SECRET}\n")).expect("secret");
    let missing = dir.path().join("missing-ca.pem");
    let garbage = dir.path().join("garbage-ca.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n",
    )
    .expect("write");
    let key_only = dir.path().join("key-only-ca.pem");
    let key = rcgen::KeyPair::generate().expect("key").serialize_pem();
    std::fs::write(&key_only, &key).expect("write");
    let cases = [
        (&missing, "No such file"),
        (&garbage, "PEM"),
        (&key_only, "no PEM CERTIFICATE"),
    ];
    for (file, why) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args([
                "--data-dir",
                dir.path().join("data").to_str().expect("utf-8"),
            ])
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--follow", "https://localhost:1"])
            .args(["--replication-secret-file", secret.to_str().expect("utf-8")])
            .args(["--tls-ca", file.to_str().expect("utf-8")])
            .env("RUST_LOG", "warn")
            .output()
            .expect("run keyward");
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("tls_follower: {}", stderr.trim());
        assert_eq!(out.status.code(), Some(64), "{file:?}: {stderr}");
        let named = format!("--tls-ca {}", file.display());
        assert!(stderr.contains(&named), "{file:?}: {stderr}");
        assert!(stderr.contains(why), "{file:?}: {stderr}");
        assert!(!stderr.contains("not base64"), "the file quoted: {stderr}");
        let key_line = key.lines().nth(1).expect("a key line");
        assert!(!stderr.contains(key_line), "the key quoted: {stderr}");
    }
}
