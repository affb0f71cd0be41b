//! Followers: a primary and several followers on loopback, in process.
//! Every admin change on the primary shows on every follower; a follower
//! reconnects and resumes from its revision through a cut connection;
//! followers resync after a primary restart; a follower cut off past the
//! staleness bound fails closed; replication needs the secret.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use keyward::clock::ManualClock;
use keyward::pb::replication::replication_client::ReplicationClient;
use keyward::pb::replication::WatchRequest;
use keyward::pb::v1 as pb;
use prost_types::FieldMask;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::Code;

/// Starts a follower of `primary_addr` on `dir`, sharing `clock`, with the
/// primary's digest key.
async fn follower(
    primary_addr: SocketAddr,
    primary_dir: &Path,
    dir: &Path,
    clock: Arc<ManualClock>,
    serve_stale: bool,
) -> TestServer {
    let opts = follower_options(
        dir,
        clock.clone(),
        primary_addr,
        &primary_dir.join("digest.key"),
        serve_stale,
    );
    TestServer::start_with(opts, clock)
        .await
        .expect("follower starts")
}

/// Waits (≤ 10 s) until every follower answers `want` for the check.
async fn converge(
    followers: &[&TestServer],
    token: &str,
    kind: pb::ResourceType,
    id: &str,
    level: i32,
    want: (bool, DenyReason),
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for f in followers {
        loop {
            let d = f.check(token, kind, id, level).await;
            if (d.allowed, d.reason) == (want.0, want.1 as i32) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "follower {} still answers {d:?}, want {want:?}",
                f.grpc
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

const ALLOW: (bool, DenyReason) = (true, DenyReason::Unspecified);

#[tokio::test]
async fn every_change_on_the_primary_shows_on_every_follower() {
    let (pdir, fdirs) = (temp(), [temp(), temp(), temp()]);
    let p = TestServer::start(pdir.path()).await;
    let (acct, admin) = p.account("Acme").await;
    p.register(&admin, acct, PROJECT, "p1", None).await;
    let mut fs = Vec::new();
    for d in &fdirs {
        fs.push(follower(p.grpc, pdir.path(), d.path(), p.clock.clone(), false).await);
    }
    let f: Vec<&TestServer> = fs.iter().collect();

    // Create: visible everywhere (the snapshot had the account; this comes
    // as a commit).
    let t = p
        .create(&admin, acct, "ci", vec![grant(PROJECT, "p1", VIEWER)])
        .await
        .unwrap();
    let (secret, id) = (t.secret.clone(), t.token.as_ref().unwrap().id);
    converge(&f, &secret, PROJECT, "p1", VIEWER, ALLOW).await;
    converge(
        &f,
        &secret,
        PROJECT,
        "p1",
        ADMIN,
        (false, DenyReason::NoGrant),
    )
    .await;

    // Edit grants, new resources.
    p.register(&admin, acct, SANDBOX, "s1", Some("p1")).await;
    p.tokens()
        .update_token(auth(
            pb::UpdateTokenRequest {
                account_id: acct,
                token_id: id,
                grants: vec![grant(PROJECT, "p1", ADMIN)],
                update_mask: Some(FieldMask {
                    paths: vec!["grants".into()],
                }),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap();
    converge(&f, &secret, SANDBOX, "s1", ADMIN, ALLOW).await;

    // Pause, resume.
    let ids = pb::PauseTokenRequest {
        account_id: acct,
        token_id: id,
    };
    p.tokens().pause_token(auth(ids, &admin)).await.unwrap();
    converge(
        &f,
        &secret,
        PROJECT,
        "p1",
        VIEWER,
        (false, DenyReason::Paused),
    )
    .await;
    let ids = pb::ResumeTokenRequest {
        account_id: acct,
        token_id: id,
    };
    p.tokens().resume_token(auth(ids, &admin)).await.unwrap();
    converge(&f, &secret, PROJECT, "p1", VIEWER, ALLOW).await;

    // Reset: the new token works on followers, the old one too (grace).
    let new = p
        .tokens()
        .reset_token(auth(
            pb::ResetTokenRequest {
                account_id: acct,
                token_id: id,
                expires_at: None,
                grace: None,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    converge(&f, &new.secret, PROJECT, "p1", ADMIN, ALLOW).await;
    converge(&f, &secret, PROJECT, "p1", ADMIN, ALLOW).await;

    // Delete: denied everywhere.
    p.delete(&admin, acct, new.token.as_ref().unwrap().id)
        .await
        .unwrap();
    converge(
        &f,
        &new.secret,
        PROJECT,
        "p1",
        ADMIN,
        (false, DenyReason::UnknownToken),
    )
    .await;

    // Followers refuse admin calls, naming the primary; their health is
    // SERVING; they report their lag.
    let r = fs[0]
        .tokens()
        .list_tokens(auth(
            pb::ListTokensRequest {
                account_id: acct,
                ..Default::default()
            },
            &admin,
        ))
        .await;
    let status = assert_code(r, Code::FailedPrecondition);
    assert!(status.message().contains(&p.grpc.to_string()), "{status:?}");
    let r = http(fs[0].http, "GET", "/api/api_tokens", Some(&admin), None).await;
    assert_eq!(r.status, 422, "the REST facades refuse too");
    let m = http(fs[0].http, "GET", "/metrics", None, None).await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(text.contains("keyward_follower_lag_revisions 0"), "{text}");
    assert_eq!(
        fs[0].health("").await,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // The primary counts its watchers.
    let m = http(p.http, "GET", "/metrics", None, None).await;
    // The gauge is the process's: other tests' primaries may add to it.
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        metric(&text, "keyward_replication_watchers") >= 3.0,
        "{text}"
    );
}

/// A TCP proxy whose connections can be cut.
struct Proxy {
    addr: SocketAddr,
    conns: Arc<parking_lot::Mutex<Vec<JoinHandle<()>>>>,
    _accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(to: SocketAddr) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns: Arc<parking_lot::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let c = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = l.accept().await {
                c.lock().push(tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                }));
            }
        });
        Proxy {
            addr,
            conns,
            _accept: accept,
        }
    }

    /// Drops every open connection.
    fn cut(&self) {
        for c in self.conns.lock().drain(..) {
            c.abort();
        }
    }
}

#[tokio::test]
async fn a_cut_connection_resumes_from_the_revision() {
    let (pdir, fdir) = (temp(), temp());
    let p = TestServer::start(pdir.path()).await;
    let (acct, admin) = p.account("Acme").await;
    p.register(&admin, acct, PROJECT, "p1", None).await;
    let proxy = Proxy::start(p.grpc).await;
    let f = follower(proxy.addr, pdir.path(), fdir.path(), p.clock.clone(), false).await;
    let t = p
        .create(&admin, acct, "a", vec![grant(PROJECT, "p1", VIEWER)])
        .await
        .unwrap();
    converge(&[&f], &t.secret, PROJECT, "p1", VIEWER, ALLOW).await;

    // Cut, change on the primary meanwhile, and see the follower catch up
    // without a second snapshot.
    proxy.cut();
    let t2 = p
        .create(&admin, acct, "b", vec![grant(PROJECT, "p1", ADMIN)])
        .await
        .unwrap();
    p.delete(&admin, acct, t.token.as_ref().unwrap().id)
        .await
        .unwrap();
    converge(&[&f], &t2.secret, PROJECT, "p1", ADMIN, ALLOW).await;
    converge(
        &[&f],
        &t.secret,
        PROJECT,
        "p1",
        VIEWER,
        (false, DenyReason::UnknownToken),
    )
    .await;
    let m = http(f.http, "GET", "/metrics", None, None).await;
    let text = String::from_utf8_lossy(&m.body);
    // The process-wide recorder sums every follower in this test binary:
    // compare with what this follower did.
    assert!(
        metric(&text, "keyward_follower_disconnects_total") >= 1.0,
        "{text}"
    );
    let fs = f.engine.follower().unwrap();
    assert_eq!(
        fs.revision.load(std::sync::atomic::Ordering::Acquire),
        fs.primary_revision
            .load(std::sync::atomic::Ordering::Acquire)
    );
}

#[tokio::test]
async fn followers_resync_after_a_primary_restart() {
    let (pdir, fdir) = (temp(), temp());
    let clock = Arc::new(ManualClock::new());
    let p = TestServer::start_with(options(pdir.path(), clock.clone()), clock.clone())
        .await
        .unwrap();
    let (acct, admin) = p.account("Acme").await;
    p.register(&admin, acct, PROJECT, "p1", None).await;
    let t = p
        .create(&admin, acct, "a", vec![grant(PROJECT, "p1", VIEWER)])
        .await
        .unwrap();
    let proxy = Proxy::start(p.grpc).await;
    let f = follower(proxy.addr, pdir.path(), fdir.path(), clock.clone(), false).await;
    converge(&[&f], &t.secret, PROJECT, "p1", VIEWER, ALLOW).await;
    let epoch_before = f
        .engine
        .follower()
        .unwrap()
        .epoch
        .load(std::sync::atomic::Ordering::Acquire);

    // Delete, then stop the primary: the follower has applied the delete
    // before the stop acknowledged... and answers from it meanwhile.
    p.delete(&admin, acct, t.token.as_ref().unwrap().id)
        .await
        .unwrap();
    converge(
        &[&f],
        &t.secret,
        PROJECT,
        "p1",
        VIEWER,
        (false, DenyReason::UnknownToken),
    )
    .await;
    let grpc = p.grpc;
    p.stop().await.unwrap();
    assert!(!f.check(&t.secret, PROJECT, "p1", VIEWER).await.allowed);

    // A new primary process on the same data dir and address: new epoch,
    // the follower resyncs (snapshot) and sees what changed since.
    let mut opts = options(pdir.path(), clock.clone());
    opts.replication_secret = Some(REPLICATION_SECRET.into());
    let listener = loop {
        match TcpListener::bind(grpc).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let http_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(keyward::server::run(
        opts,
        listener,
        http_l,
        async move {
            let _ = stop_rx.await;
        },
        ready_tx,
    ));
    let Ok(ready) = ready_rx.await else {
        panic!(
            "the restarted primary stopped before ready: {:?}",
            task.await
        );
    };
    // An admin change on the new primary (through its engine's gRPC port).
    let ch = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let created = pb::tokens_client::TokensClient::new(ch)
        .create_token(auth(
            pb::CreateTokenRequest {
                rate_limits: Default::default(),
                account_id: acct,
                name: "after restart".into(),
                grants: vec![grant(PROJECT, "p1", ADMIN)],
                scopes: vec![],
                expires_at: None,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    converge(&[&f], &created.secret, PROJECT, "p1", ADMIN, ALLOW).await;
    converge(
        &[&f],
        &t.secret,
        PROJECT,
        "p1",
        VIEWER,
        (false, DenyReason::UnknownToken),
    )
    .await;
    let fs = f.engine.follower().unwrap();
    let epoch_after = fs.epoch.load(std::sync::atomic::Ordering::Acquire);
    if test_postgres(pdir.path()).is_some() {
        // On PostgreSQL the epoch is the database's: it outlives the
        // process, and the follower resumed or resynced within it.
        assert_eq!(epoch_after, epoch_before);
    } else {
        assert_ne!(epoch_after, epoch_before);
    }
    drop(ready);
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_cut_off_follower_fails_closed_past_the_bound() {
    let (pdir, fdir, sdir) = (temp(), temp(), temp());
    let p = TestServer::start(pdir.path()).await;
    let (acct, admin) = p.account("Acme").await;
    p.register(&admin, acct, PROJECT, "p1", None).await;
    let t = p
        .create(&admin, acct, "a", vec![grant(PROJECT, "p1", VIEWER)])
        .await
        .unwrap();
    let proxy = Proxy::start(p.grpc).await;
    let f = follower(proxy.addr, pdir.path(), fdir.path(), p.clock.clone(), false).await;
    let stale_ok = follower(proxy.addr, pdir.path(), sdir.path(), p.clock.clone(), true).await;
    converge(&[&f, &stale_ok], &t.secret, PROJECT, "p1", VIEWER, ALLOW).await;

    // Partition: the proxy stops forwarding (and accepts nothing new).
    drop(proxy);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Within the bound: still answering.
    assert!(f.check(&t.secret, PROJECT, "p1", VIEWER).await.allowed);
    // Past it (the shared manual clock jumps 31 s): UNAVAILABLE, never an
    // allow; health NOT_SERVING.
    p.clock.advance_ms(31_000);
    let r = f
        .authorizer()
        .authorize(pb::AuthorizeRequest {
            cost: Default::default(),
            token: t.secret.clone(),
            resource: Some(rref(PROJECT, "p1")),
            level: VIEWER,
            scope: String::new(),
        })
        .await;
    let s = assert_code(r, Code::Unavailable);
    assert!(s.message().contains("failing closed"), "{s:?}");
    f.wait_for_health(
        "keyward.v1.Authorizer",
        tonic_health::pb::health_check_response::ServingStatus::NotServing,
        Duration::from_secs(5),
    )
    .await;
    // Readiness says the same over HTTP (what kubelet probes under TLS).
    let r = http(f.http, "GET", "/readyz", None, None).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("failing closed"));
    let r = http(stale_ok.http, "GET", "/readyz", None, None).await;
    assert_eq!(r.status, 200, "told to serve stale: still ready");
    // The follower told to serve stale keeps answering from its state.
    assert!(
        stale_ok
            .check(&t.secret, PROJECT, "p1", VIEWER)
            .await
            .allowed
    );
}

#[tokio::test]
async fn replication_needs_the_secret() {
    let dir = temp();
    let p = TestServer::start(dir.path()).await;
    let mut client = ReplicationClient::new(p.channel.clone());
    for secret in [None, Some("wrong-secret-wrong-secret-wrong-secret")] {
        let mut req = tonic::Request::new(WatchRequest::default());
        if let Some(s) = secret {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {s}").parse().unwrap());
        }
        let r = client.watch(req).await.map(|_| ());
        assert_code(r, Code::Unauthenticated);
    }
    // A primary without a secret has replication off.
    let dir2 = temp();
    let clock = Arc::new(ManualClock::new());
    let mut opts = options(dir2.path(), clock.clone());
    opts.replication_secret = None;
    let q = TestServer::start_with(opts, clock).await.unwrap();
    let mut req = tonic::Request::new(WatchRequest::default());
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {REPLICATION_SECRET}").parse().unwrap(),
    );
    let r = ReplicationClient::new(q.channel.clone())
        .watch(req)
        .await
        .map(|_| ());
    assert_code(r, Code::FailedPrecondition);
}

/// A follower without the primary's digest key proves each token's secret
/// with argon2 once. Random secrets for one real token id cost at most
/// `argon2_failures_per_token` argon2 runs per window: then every unproven
/// secret for that id, the right one too, is refused without argon2 (fail
/// closed) until the window ends, while other tokens are unaffected and a
/// repeated wrong secret is answered from the negative cache.
#[tokio::test]
async fn a_follower_without_the_key_bounds_argon2_per_token() {
    let (pdir, fdir) = (temp(), temp());
    let p = TestServer::start(pdir.path()).await;
    let (acct, admin) = p.account("Acme").await;
    p.register(&admin, acct, PROJECT, "p1", None).await;
    let mk = |name: &'static str| {
        let (p, admin) = (&p, admin.clone());
        async move {
            p.create(&admin, acct, name, vec![grant(PROJECT, "p1", VIEWER)])
                .await
                .unwrap()
        }
    };
    let (attacked, other) = (mk("attacked").await, mk("other").await);
    let opts = follower_options(
        fdir.path(),
        p.clock.clone(),
        p.grpc,
        &fdir.path().join("no-such.key"),
        false,
    );
    let f = TestServer::start_with(opts, p.clock.clone())
        .await
        .expect("follower starts");
    converge(&[&f], &other.secret, PROJECT, "p1", VIEWER, ALLOW).await;

    let id = attacked.token.as_ref().unwrap().id;
    let limit = keyward::engine::Settings::default().argon2_failures_per_token;
    let before = f.engine.work().verifies;
    let negative = r#"keyward_verify_total{path="negative_cache"}"#;
    let scrape = || async {
        let m = http(f.http, "GET", "/metrics", None, None).await;
        metric(&String::from_utf8_lossy(&m.body), negative)
    };
    let negative_before = scrape().await;
    let mut forged = Vec::new();
    for _ in 0..(limit * 5) {
        let t = keyward::token::assemble(id, &keyward::token::new_secret_part());
        forged.push(t.expose().to_string());
    }
    for t in forged.iter().chain(forged.iter().take(3)) {
        let d = f.check(t, PROJECT, "p1", VIEWER).await;
        assert_eq!(
            (d.allowed, d.reason),
            (false, DenyReason::UnknownToken as i32)
        );
    }
    let argon2_runs = f.engine.work().verifies - before;
    assert_eq!(
        argon2_runs,
        u64::from(limit),
        "{} forged secrets for one token id cost {argon2_runs} argon2 verifies",
        forged.len() + 3
    );
    // The 3 repeated wrong secrets were answered from the negative cache,
    // and counted where the README says (process-wide: other tests in this
    // binary may add to it, never take away).
    let negative_hits = scrape().await - negative_before;
    assert!(
        negative_hits >= 3.0,
        "{negative} rose by {negative_hits}, not by the 3 repeated secrets"
    );
    // Fail closed for that id until the window ends, the right secret too.
    let d = f.check(&attacked.secret, PROJECT, "p1", VIEWER).await;
    assert_eq!(
        (d.allowed, d.reason),
        (false, DenyReason::UnknownToken as i32)
    );
    // Another token is served.
    converge(&[&f], &other.secret, PROJECT, "p1", VIEWER, ALLOW).await;
    let window = keyward::engine::Settings::default().argon2_failure_window;
    p.clock
        .advance_ms(i64::try_from(window.as_millis()).unwrap() + 1_000);
    converge(&[&f], &attacked.secret, PROJECT, "p1", VIEWER, ALLOW).await;
}

/// A snapshot is streamed chunk by chunk while the primary keeps
/// committing: the commits that land meanwhile reach the follower inside
/// the snapshot (or right after it), so once caught up it answers exactly
/// as the primary for every token the writer touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commits_during_a_streamed_snapshot_reach_the_follower() {
    let (pdir, fdir) = (temp(), temp());
    let n = 20_000; // ten snapshot chunks
    let seeded = keyward::seed::seed(pdir.path(), n, true).await.unwrap();
    let p = TestServer::start(pdir.path()).await;
    let admin = seeded.tokens[0].expose().to_string();
    let project = seeded.project.clone();
    // Deletes tokens 2, 3, ... one after another until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (mut tokens, stop, admin) = (p.tokens(), stop.clone(), admin.clone());
        let account_id = seeded.account_id;
        tokio::spawn(async move {
            let mut id = 2u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && id < 2_000 {
                tokens
                    .delete_token(auth(
                        pb::DeleteTokenRequest {
                            account_id,
                            token_id: id,
                        },
                        &admin,
                    ))
                    .await
                    .expect("delete");
                id += 1;
            }
            id
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let f = follower(p.grpc, pdir.path(), fdir.path(), p.clock.clone(), false).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let deleted_to = writer.await.unwrap();
    assert!(deleted_to > 3, "the writer committed during the test");
    // Caught up: the follower's revision is the primary's.
    let deadline = Instant::now() + Duration::from_secs(10);
    while f
        .engine
        .follower()
        .unwrap()
        .revision
        .load(std::sync::atomic::Ordering::Acquire)
        < p.engine.applied_revision()
    {
        assert!(Instant::now() < deadline, "the follower never caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let touched = usize::try_from(deleted_to + 5).unwrap();
    for (i, t) in seeded.tokens.iter().enumerate().take(touched) {
        let (id, secret) = (i + 1, t.expose());
        let want = p.check(secret, PROJECT, &project, ADMIN).await;
        let got = f.check(secret, PROJECT, &project, ADMIN).await;
        assert_eq!(
            (got.allowed, got.reason),
            (want.allowed, want.reason),
            "token {id}: follower {got:?}, primary {want:?}"
        );
    }
    println!(
        "followers: {} deletes during the follower's snapshot",
        deleted_to - 2
    );
}
