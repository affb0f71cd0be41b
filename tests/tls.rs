//! TLS and mTLS on both ports, with certificates made here (rcgen): every
//! gRPC service over TLS, plaintext refused, client certificates required
//! (gRPC) or probes-only without one (HTTP), certificate rotation without
//! a restart, and bad files refusing the start.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use keyward::clock::ManualClock;
use keyward::pb::v1 as pb;
use keyward::server::ServeError;
use keyward::tls::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{server_reflection_request, ServerReflectionRequest};

// ------------------------------------------------------------ certificates

/// A CA that signs test certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate (for 127.0.0.1 and localhost) with its own key.
    fn leaf(&self, name: &str, serial: u64) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// A certificate and its key.
#[derive(Clone)]
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

/// The server's files in `dir`: its certificate and key, and optionally
/// the client CA.
fn write_files(dir: &Path, leaf: &Leaf, client_ca: Option<&Ca>) -> TlsFiles {
    let files = TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        client_ca: client_ca.map(|_| dir.join("client-ca.crt")),
    };
    std::fs::write(&files.cert, &leaf.cert_pem).expect("write cert");
    std::fs::write(&files.key, &leaf.key_pem).expect("write key");
    set_mode(&files.key, 0o600);
    if let (Some(ca), Some(path)) = (client_ca, &files.client_ca) {
        std::fs::write(path, ca.pem()).expect("write CA");
    }
    files
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

// ----------------------------------------------------------------- clients

/// A client TLS config trusting `ca`, offering `alpn`, presenting
/// `client` when given.
fn client_config(ca: &Ca, client: Option<&Leaf>, alpn: &[u8]) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).expect("root");
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
    let mut config = match client {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![leaf.der.clone()],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key"),
            )
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// A TLS connection to `addr` (server name localhost).
async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// The certificate a new TLS connection to `addr` (offering `alpn`) is
/// served.
async fn served_cert(addr: SocketAddr, ca: &Ca, alpn: &[u8]) -> CertificateDer<'static> {
    let tls = tls_connect(addr, client_config(ca, None, alpn))
        .await
        .expect("TLS handshake");
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone()
}

/// A tonic channel to `addr` over rustls (ALPN h2), as grpcurl with
/// `-cacert` (and `-cert`/`-key`) would connect.
async fn grpc_channel(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let config = config.clone();
        async move {
            let tls = tls_connect(addr, config).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    // The scheme is only the :scheme header here: TLS is the connector's.
    Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(connector)
        .await
}

/// Health of the whole server through `channel`.
async fn health(channel: &Channel) -> Result<i32, tonic::Status> {
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        HealthClient::new(channel.clone()).check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .map_err(|_| tonic::Status::deadline_exceeded("test: no answer in 5 s"))??;
    Ok(reply.into_inner().status)
}

/// Health over a new TLS connection made with `config`: Err if the
/// handshake or the call fails (with TLS 1.3 a refused client certificate
/// shows on the first read, after the client's handshake is done).
async fn health_with(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<i32, String> {
    let channel = grpc_channel(addr, config)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    health(&channel).await.map_err(|s| format!("call: {s}"))
}

/// One HTTP/1.1 request over TLS; (status, body), or Err if the
/// connection fails before an answer.
async fn https(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let mut tls = tls_connect(addr, config)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut raw)).await;
    // A server that closes without close_notify still answered.
    if raw.is_empty() {
        return Err(format!("no answer: {read:?}"));
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not HTTP: {text}"))?;
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    Ok((status, body))
}

// ------------------------------------------------------------------ server

/// A keyward serving TLS on both ports.
struct TlsServer {
    grpc: SocketAddr,
    http: SocketAddr,
    root: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TlsServer {
    /// Starts keyward (sled in `dir`) with `files`; Err if it refuses to.
    async fn start(dir: &Path, files: TlsFiles) -> Result<TlsServer, ServeError> {
        let mut opts = options(&dir.join("data"), Arc::new(ManualClock::new()));
        // The store is beside the point: sled whatever the suite runs on.
        opts.postgres = None;
        opts.tls = Some(files);
        let Spawned {
            grpc,
            http,
            ready,
            stop,
            task,
        } = spawn(opts).await;
        let Ok(ready) = ready.await else {
            return Err(task.await.expect("join").expect_err("stopped"));
        };
        Ok(TlsServer {
            grpc,
            http,
            root: ready.root_token.expect("root").expose().to_string(),
            stop: Some(stop),
            task: Some(task),
        })
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let result = self.task.take().expect("task").await.expect("join");
        result.expect("clean stop");
    }
}

/// What a counter of `/metrics` says (0 if absent).
fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// keyward_tls_reloads_total{result="refused"} on the HTTPS port at `http`.
async fn refused_reloads(http: SocketAddr, ca: &Ca) -> f64 {
    let (_, m) = https(http, client_config(ca, None, b"http/1.1"), "/metrics", None)
        .await
        .expect("metrics");
    counter(&m, "keyward_tls_reloads_total{result=\"refused\"}")
}

/// Sends this process a SIGHUP, as an operator would after replacing the
/// files (keyward listens for it from start: no default action).
#[allow(unsafe_code)]
fn sighup() {
    // SAFETY: kill(2) on our own pid with a signal we handle.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
}

// ------------------------------------------------------------------- tests

/// Every gRPC service answers over TLS through a real tonic client that
/// verifies the server against the test CA: health, reflection, an admin
/// call (CreateAccount), Authorize (an ALLOW) and ext_authz Check; REST and
/// the probes answer over HTTPS. A plaintext gRPC client and a plaintext
/// HTTP request are refused on the TLS ports.
#[tokio::test]
async fn every_service_answers_over_tls_and_plaintext_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("keyward test CA");
    let files = write_files(dir.path(), &ca.leaf("keyward", 1), None);
    let s = TlsServer::start(dir.path(), files).await.expect("starts");

    let channel = grpc_channel(s.grpc, client_config(&ca, None, b"h2"))
        .await
        .expect("TLS channel");
    assert_eq!(
        health(&channel).await.expect("health"),
        ServingStatus::Serving as i32
    );

    // Reflection (grpcurl's list).
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(ServerReflectionRequest {
        host: String::new(),
        message_request: Some(server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    })
    .await
    .unwrap();
    let mut replies = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("reflection")
        .into_inner();
    let first = replies.message().await.expect("reply").expect("one");
    drop(tx);
    let services = match first.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => l.service,
        other => panic!("unexpected {other:?}"),
    };
    assert!(
        services.iter().any(|s| s.name == "keyward.v1.Authorizer"),
        "{services:?}"
    );

    // Admin plane.
    let created = pb::accounts_client::AccountsClient::new(channel.clone())
        .create_account(auth(
            pb::CreateAccountRequest { name: "tls".into() },
            &s.root,
        ))
        .await
        .expect("CreateAccount over TLS")
        .into_inner();
    let account = created.account.expect("account").id;
    let admin = created.admin_token.expect("token").secret;
    let domain_token = pb::resources_client::ResourcesClient::new(channel.clone())
        .register_resource(auth(
            pb::RegisterResourceRequest {
                account_id: account,
                resource: Some(rref(pb::ResourceType::Domain, "tls.example")),
                parent: None,
            },
            &admin,
        ))
        .await
        .expect("RegisterResource over TLS")
        .into_inner()
        .domain_token
        .expect("domain token")
        .secret;

    // Authorizer.
    let decision = pb::authorizer_client::AuthorizerClient::new(channel.clone())
        .authorize(pb::AuthorizeRequest {
            cost: Default::default(),
            token: domain_token,
            resource: Some(rref(pb::ResourceType::Domain, "tls.example")),
            level: VIEWER,
            scope: String::new(),
        })
        .await
        .expect("Authorize over TLS")
        .into_inner();
    assert!(decision.allowed, "{decision:?}");

    // ext_authz (no routes: unmatched, denied; the point is the answer).
    let check = AuthorizationClient::new(channel.clone())
        .check(CheckRequest::default())
        .await
        .expect("Check over TLS")
        .into_inner();
    assert_ne!(check.status.map(|s| s.code), Some(0), "unmatched is denied");

    // HTTPS: probes and REST.
    let http_tls = client_config(&ca, None, b"http/1.1");
    for path in ["/healthz", "/readyz"] {
        let (status, _) = https(s.http, http_tls.clone(), path, None)
            .await
            .expect("HTTPS");
        assert_eq!(status, 200, "{path}");
    }
    let (status, body) = https(s.http, http_tls.clone(), "/api/api_tokens", Some(&admin))
        .await
        .expect("HTTPS REST");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("tls.example") || body.starts_with('['),
        "{body}"
    );

    // Plaintext on the TLS ports: no gRPC answer, no HTTP answer.
    let plain = async {
        let channel = Channel::from_shared(format!("http://{}", s.grpc))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        health(&channel).await.map_err(|e| e.to_string())
    };
    let plain = plain.await;
    assert!(plain.is_err(), "plaintext gRPC answered: {plain:?}");
    let mut tcp = TcpStream::connect(s.http).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut raw)).await;
    assert!(
        !raw.starts_with(b"HTTP/"),
        "plaintext HTTP answered: {}",
        String::from_utf8_lossy(&raw)
    );
    s.stop().await;
}

/// With --tls-client-ca the gRPC port refuses a client without a
/// certificate and one whose certificate comes from another CA (counted in
/// keyward_tls_handshake_failures_total{port="grpc"}), and serves one from
/// the right CA. The HTTP port answers /healthz and /readyz without a
/// client certificate (kubelet's probes) and 401 on anything else (REST,
/// /metrics); a wrong-CA certificate fails its handshake; the right one
/// gets everything.
#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("keyward test CA");
    let stranger_ca = Ca::new("someone else's CA");
    let client = ca.leaf("client", 10);
    let stranger = stranger_ca.leaf("stranger", 11);
    let files = write_files(dir.path(), &ca.leaf("keyward", 1), Some(&ca));
    let s = TlsServer::start(dir.path(), files).await.expect("starts");

    let none = health_with(s.grpc, client_config(&ca, None, b"h2")).await;
    assert!(none.is_err(), "no client certificate served: {none:?}");
    let wrong = health_with(s.grpc, client_config(&ca, Some(&stranger), b"h2")).await;
    assert!(wrong.is_err(), "another CA's certificate served: {wrong:?}");
    let right = health_with(s.grpc, client_config(&ca, Some(&client), b"h2")).await;
    assert_eq!(right, Ok(ServingStatus::Serving as i32));

    let anonymous = client_config(&ca, None, b"http/1.1");
    for path in ["/healthz", "/readyz"] {
        let (status, _) = https(s.http, anonymous.clone(), path, None)
            .await
            .expect("probe without a client certificate");
        assert_eq!(status, 200, "{path}");
    }
    for path in ["/api/api_tokens", "/metrics", "/openapi.json", "/healthz/"] {
        let (status, body) = https(s.http, anonymous.clone(), path, Some(&s.root))
            .await
            .expect("an answer");
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("client certificate is required"), "{body}");
    }
    let wrong = https(
        s.http,
        client_config(&ca, Some(&stranger), b"http/1.1"),
        "/healthz",
        None,
    )
    .await;
    assert!(wrong.is_err(), "another CA's certificate served: {wrong:?}");

    let (status, metrics) = https(
        s.http,
        client_config(&ca, Some(&client), b"http/1.1"),
        "/metrics",
        None,
    )
    .await
    .expect("metrics with a client certificate");
    assert_eq!(status, 200);
    let failed = counter(
        &metrics,
        "keyward_tls_handshake_failures_total{port=\"grpc\"}",
    );
    assert!(failed >= 2.0, "grpc handshake failures counted: {failed}");
    s.stop().await;
}

/// Rotation without a restart: new files and a SIGHUP give NEW
/// connections the new certificate while an open connection keeps working;
/// a bad replacement (a key that is not the certificate's) is refused
/// (keyward_tls_reloads_total{result="refused"}) and the certificate in
/// force stays; once the key is fixed, the 5 s poll alone picks the set up.
#[tokio::test]
async fn certificates_rotate_without_a_restart_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("keyward test CA");
    let first = ca.leaf("keyward first", 1);
    let files = write_files(dir.path(), &first, None);
    let s = TlsServer::start(dir.path(), files.clone())
        .await
        .expect("starts");
    assert_eq!(served_cert(s.grpc, &ca, b"h2").await, first.der);
    let open = grpc_channel(s.grpc, client_config(&ca, None, b"h2"))
        .await
        .expect("channel");
    health(&open).await.expect("health");

    // A good new pair, then SIGHUP.
    let second = ca.leaf("keyward second", 2);
    write_files(dir.path(), &second, None);
    sighup();
    let deadline = Instant::now() + Duration::from_secs(5);
    while served_cert(s.grpc, &ca, b"h2").await != second.der {
        assert!(
            Instant::now() < deadline,
            "the new certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        served_cert(s.http, &ca, b"http/1.1").await.as_ref(),
        second.der.as_ref()
    );
    health(&open)
        .await
        .expect("the open connection keeps working");

    // A bad replacement: the third certificate with the second's key.
    let refused_before = refused_reloads(s.http, &ca).await;
    let third = ca.leaf("keyward third", 3);
    std::fs::write(&files.cert, &third.cert_pem).unwrap();
    sighup();
    let deadline = Instant::now() + Duration::from_secs(5);
    while refused_reloads(s.http, &ca).await <= refused_before {
        assert!(Instant::now() < deadline, "the bad set was not refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        served_cert(s.grpc, &ca, b"h2").await,
        second.der,
        "old one stays"
    );
    assert_eq!(
        served_cert(s.http, &ca, b"http/1.1").await,
        second.der,
        "old one stays"
    );
    health(&open).await.expect("still serving");

    // The key fixed, no SIGHUP: the poll (every 5 s) picks it up.
    std::fs::write(&files.key, &third.key_pem).unwrap();
    let deadline = Instant::now() + Duration::from_secs(12);
    while served_cert(s.grpc, &ca, b"h2").await != third.der {
        assert!(Instant::now() < deadline, "the poll did not reload");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fresh = grpc_channel(s.grpc, client_config(&ca, None, b"h2"))
        .await
        .expect("channel");
    assert_eq!(
        health(&fresh).await.expect("health"),
        ServingStatus::Serving as i32
    );
    s.stop().await;
}

/// Bad TLS files refuse the start (the binary exits 64 on this error, see
/// tests/config.rs) with a message naming the flag and the file: a missing
/// certificate, a key that is not the certificate's, a client CA file
/// without a certificate in it.
#[tokio::test]
async fn bad_files_refuse_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("keyward test CA");
    let files = write_files(dir.path(), &ca.leaf("keyward", 1), None);
    let other = ca.leaf("other", 2);
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, &other.key_pem).unwrap();
    let cases = [
        (
            TlsFiles {
                cert: dir.path().join("missing.crt"),
                ..files.clone()
            },
            "--tls-cert",
            "missing.crt",
        ),
        (
            TlsFiles {
                key: other_key.clone(),
                ..files.clone()
            },
            "--tls-key",
            "other.key",
        ),
        (
            TlsFiles {
                client_ca: Some(files.key.clone()),
                ..files.clone()
            },
            "--tls-client-ca",
            "tls.key",
        ),
    ];
    for (i, (files, flag, file)) in cases.into_iter().enumerate() {
        let data = dir.path().join(format!("case{i}"));
        std::fs::create_dir_all(&data).unwrap();
        let err = match TlsServer::start(&data, files).await {
            Ok(s) => {
                s.stop().await;
                panic!("case {i} started");
            }
            Err(e) => e,
        };
        assert!(matches!(err, ServeError::Tls(_)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with(flag) && msg.contains(file), "{msg}");
        assert!(!msg.contains("PRIVATE KEY"), "{msg}");
    }
}

/// A client that opens TCP and never finishes its handshake holds nothing
/// that others need: with 64 such connections open on each port, a valid
/// client is served at once; the server closes them at the handshake
/// deadline (HTTP 5 s, gRPC 10 s), counted as handshake failures.
#[tokio::test]
async fn unfinished_handshakes_hold_no_place_and_are_closed_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("keyward test CA");
    let files = write_files(dir.path(), &ca.leaf("keyward", 1), None);
    let s = TlsServer::start(dir.path(), files).await.expect("starts");
    let opened = Instant::now();
    let mut silent = Vec::new();
    for addr in [s.grpc, s.http] {
        for _ in 0..64 {
            silent.push((addr, TcpStream::connect(addr).await.expect("connect")));
        }
    }
    let started = Instant::now();
    let channel = grpc_channel(s.grpc, client_config(&ca, None, b"h2"))
        .await
        .expect("channel");
    assert_eq!(
        health(&channel).await.expect("health"),
        ServingStatus::Serving as i32
    );
    let (status, _) = https(
        s.http,
        client_config(&ca, None, b"http/1.1"),
        "/healthz",
        None,
    )
    .await
    .expect("probe");
    assert_eq!(status, 200);
    println!(
        "tls: valid gRPC + HTTPS calls beside 128 silent connections: {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // Each silent connection is closed by the server, after its deadline
    // (the HTTP ones, with the shorter one, first).
    for (addr, mut tcp) in silent.into_iter().rev() {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(15), tcp.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "{addr}: still open after 15 s: {read:?}"
        );
        let (deadline, port) = if addr == s.grpc {
            (keyward::tls::GRPC_HANDSHAKE_TIMEOUT, "grpc")
        } else {
            (keyward::tls::HTTP_HANDSHAKE_TIMEOUT, "http")
        };
        assert!(
            opened.elapsed() >= deadline - Duration::from_millis(500),
            "{port}: closed before its deadline"
        );
    }
    let (_, metrics) = https(
        s.http,
        client_config(&ca, None, b"http/1.1"),
        "/metrics",
        None,
    )
    .await
    .expect("metrics");
    for port in ["grpc", "http"] {
        let failed = counter(
            &metrics,
            &format!("keyward_tls_handshake_failures_total{{port=\"{port}\"}}"),
        );
        assert!(failed >= 64.0, "{port}: {failed}");
    }
    s.stop().await;
}
