//! Last use that sees the mesh: a follower reports the tokens used through
//! it to its primary (`Replication/ReportUse`, with the replication
//! secret), and the primary's `GetToken` shows `last_used_at` and
//! `last_used_by` (the node that saw the use) within the report interval.
//! The primary clamps a reported time to its own clock, ignores unknown
//! ids, keeps the newer use, and refuses a report without the secret or
//! over the cap.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use keyward::clock::{Clock, ManualClock};
use keyward::pb::replication::replication_client::ReplicationClient;
use keyward::pb::replication::{Use, UseReport};
use keyward::pb::v1 as pb;
use tonic::Code;

const PROJECT: pb::ResourceType = pb::ResourceType::Project;

/// The primary's node name in these tests.
const PRIMARY: &str = "primary-a";

/// A primary named [`PRIMARY`] on `dir`.
async fn primary(dir: &Path) -> TestServer {
    let clock = Arc::new(ManualClock::new());
    let mut opts = options(dir, clock.clone());
    opts.settings.node_name = PRIMARY.into();
    TestServer::start_with(opts, clock)
        .await
        .expect("primary starts")
}

/// A follower named `name` of the primary at `addr`, sharing its clock and
/// digest key, reporting use every `every`.
async fn follower(
    addr: SocketAddr,
    primary_dir: &Path,
    dir: &Path,
    clock: Arc<ManualClock>,
    name: &str,
    every: Duration,
) -> TestServer {
    let mut opts = follower_options(
        dir,
        clock.clone(),
        addr,
        &primary_dir.join("digest.key"),
        false,
    );
    opts.settings.node_name = name.into();
    if let Some(f) = opts.follow.as_mut() {
        f.use_report_interval = every;
    }
    TestServer::start_with(opts, clock)
        .await
        .expect("follower starts")
}

/// GetToken on `server` as `caller`.
async fn get(server: &TestServer, caller: &str, account_id: u64, token_id: u64) -> pb::Token {
    server
        .tokens()
        .get_token(auth(
            pb::GetTokenRequest {
                account_id,
                token_id,
            },
            caller,
        ))
        .await
        .expect("get token")
        .into_inner()
}

/// Unix ms of a wire timestamp (0 for none).
fn ms(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref()
        .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// Waits (≤ 10 s) until the follower allows `secret` on project p1.
async fn until_allowed(f: &TestServer, secret: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f.check(secret, PROJECT, "p1", VIEWER).await.allowed {
        assert!(Instant::now() < deadline, "the follower never allowed it");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A report with `secret` (none: no authorization header).
fn report(secret: Option<&str>, node: &str, uses: Vec<Use>) -> tonic::Request<UseReport> {
    let mut req = tonic::Request::new(UseReport {
        node: node.into(),
        uses,
    });
    if let Some(s) = secret {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {s}").parse().unwrap());
    }
    req
}

/// A token used only through a follower (Authorize on the follower, never
/// on the primary) shows on the primary's GetToken with the time of that
/// use and the follower's name, and the primary stores both; a later use on
/// the primary names the primary.
#[tokio::test]
async fn a_use_through_a_follower_shows_on_the_primary() {
    let (pdir, fdir) = (temp(), temp());
    let p = primary(pdir.path()).await;
    let (acct, admin) = p.account("Acme").await;
    p.register(&admin, acct, PROJECT, "p1", None).await;
    let t = p
        .create(&admin, acct, "ci", vec![grant(PROJECT, "p1", VIEWER)])
        .await
        .unwrap();
    let (secret, id) = (t.secret.clone(), t.token.as_ref().unwrap().id);
    let f = follower(
        p.grpc,
        pdir.path(),
        fdir.path(),
        p.clock.clone(),
        "sidecar-7",
        Duration::from_millis(200),
    )
    .await;

    // Never used: nothing to show.
    let before = get(&p, &admin, acct, id).await;
    assert_eq!(ms(&before.last_used_at), 0);
    assert_eq!(before.last_used_by, "");

    // Used on the follower only: the primary learns it within a few
    // report intervals.
    until_allowed(&f, &secret).await;
    let used_at = p.clock.now_ms();
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let t = get(&p, &admin, acct, id).await;
        if ms(&t.last_used_at) != 0 {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "the primary never saw the follower's use"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ms(&seen.last_used_at), used_at);
    assert_eq!(seen.last_used_by, "sidecar-7");

    // Used on the primary, later: the primary's own name.
    p.clock.advance_ms(5_000);
    assert!(p.check(&secret, PROJECT, "p1", VIEWER).await.allowed);
    let own = get(&p, &admin, acct, id).await;
    assert_eq!(ms(&own.last_used_at), used_at + 5_000);
    assert_eq!(own.last_used_by, PRIMARY);
    // ListTokens shows the same.
    let listed = p.list(&admin, acct).await;
    let row = listed.tokens.iter().find(|t| t.id == id).expect("listed");
    assert_eq!(row.last_used_by, PRIMARY);

    // Stored with its node at shutdown.
    f.stop().await.expect("follower stops");
    p.stop().await.expect("primary stops");
    let records = stored_tokens(pdir.path()).await;
    let rec = records.iter().find(|r| r.id == id).expect("stored");
    assert_eq!(rec.last_used_at_ms, used_at + 5_000);
    assert_eq!(rec.last_used_by, PRIMARY);
}

/// A follower that stops cleanly reports what it has not reported yet,
/// even when its next round is an hour away.
#[tokio::test]
async fn a_follower_reports_at_shutdown() {
    let (pdir, fdir) = (temp(), temp());
    let p = primary(pdir.path()).await;
    let (acct, admin) = p.account("Acme").await;
    p.register(&admin, acct, PROJECT, "p1", None).await;
    let t = p
        .create(&admin, acct, "ci", vec![grant(PROJECT, "p1", VIEWER)])
        .await
        .unwrap();
    let (secret, id) = (t.secret.clone(), t.token.as_ref().unwrap().id);
    let f = follower(
        p.grpc,
        pdir.path(),
        fdir.path(),
        p.clock.clone(),
        "sidecar-8",
        Duration::from_secs(3600),
    )
    .await;
    until_allowed(&f, &secret).await;
    let used_at = p.clock.now_ms();
    f.stop().await.expect("follower stops");
    let t = get(&p, &admin, acct, id).await;
    assert_eq!(ms(&t.last_used_at), used_at);
    assert_eq!(t.last_used_by, "sidecar-8");
}

/// ReportUse needs the replication secret (none or a wrong one:
/// UNAUTHENTICATED, nothing applied), a valid node name, at most 4,096
/// uses and at most 64 KiB (decoded no further); a time ahead of the primary's clock is clamped to it; an
/// unknown id is ignored; an older use does not replace a newer one.
#[tokio::test]
async fn use_reports_are_checked_clamped_and_merged() {
    let dir = temp();
    let p = primary(dir.path()).await;
    let (acct, admin) = p.account("Acme").await;
    p.register(&admin, acct, PROJECT, "p1", None).await;
    let t = p
        .create(&admin, acct, "ci", vec![grant(PROJECT, "p1", VIEWER)])
        .await
        .unwrap();
    let id = t.token.as_ref().unwrap().id;
    let now = p.clock.now_ms();
    let mut client = ReplicationClient::new(p.channel.clone());
    let future = || {
        vec![Use {
            token_id: id,
            at_ms: now + 3_600_000,
        }]
    };

    for secret in [None, Some("wrong-secret-wrong-secret-wrong-secret")] {
        let r = client.report_use(report(secret, "evil", future())).await;
        assert_code(r, Code::Unauthenticated);
    }
    assert_eq!(ms(&get(&p, &admin, acct, id).await.last_used_at), 0);

    for bad in ["", "a b", "x".repeat(65).as_str(), "ünïcode"] {
        let r = client
            .report_use(report(Some(REPLICATION_SECRET), bad, future()))
            .await;
        assert_code(r, Code::InvalidArgument);
    }
    let over: Vec<Use> = (0..4_097)
        .map(|i| Use {
            token_id: 1_000_000 + i,
            at_ms: now,
        })
        .collect();
    let r = client
        .report_use(report(Some(REPLICATION_SECRET), "f1", over))
        .await;
    let refused = assert_code(r, Code::InvalidArgument);
    assert!(
        refused.message().contains("at most 4096 uses"),
        "{refused:?}"
    );
    // Past the message limit (64 KiB): refused before it is decoded.
    let huge: Vec<Use> = (0..6_000)
        .map(|i| Use {
            token_id: u64::from(u32::MAX) - i,
            at_ms: i64::MAX - 1,
        })
        .collect();
    let r = client
        .report_use(report(Some(REPLICATION_SECRET), "f1", huge))
        .await;
    assert_code(r, Code::OutOfRange);
    assert_eq!(ms(&get(&p, &admin, acct, id).await.last_used_at), 0);

    // In the future: clamped to the primary's now. Unknown ids: ignored.
    let mut uses = future();
    uses.push(Use {
        token_id: 999_999,
        at_ms: now,
    });
    let ack = client
        .report_use(report(Some(REPLICATION_SECRET), "f1", uses))
        .await
        .expect("report accepted")
        .into_inner();
    assert_eq!(ack.applied, 1);
    let t = get(&p, &admin, acct, id).await;
    assert_eq!(ms(&t.last_used_at), now);
    assert_eq!(t.last_used_by, "f1");

    // An older use from another node changes nothing; a newer one wins.
    let older = vec![Use {
        token_id: id,
        at_ms: now - 10_000,
    }];
    let ack = client
        .report_use(report(Some(REPLICATION_SECRET), "f2", older))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.applied, 0);
    assert_eq!(get(&p, &admin, acct, id).await.last_used_by, "f1");
    p.clock.advance_ms(2_000);
    let newer = vec![Use {
        token_id: id,
        at_ms: now + 1_500,
    }];
    client
        .report_use(report(Some(REPLICATION_SECRET), "f2", newer))
        .await
        .unwrap();
    let t = get(&p, &admin, acct, id).await;
    assert_eq!(ms(&t.last_used_at), now + 1_500);
    assert_eq!(t.last_used_by, "f2");

    // A follower's own Replication is off: it takes no reports.
    let fdir = temp();
    let f = follower(
        p.grpc,
        dir.path(),
        fdir.path(),
        p.clock.clone(),
        "f3",
        Duration::from_secs(3600),
    )
    .await;
    let r = ReplicationClient::new(f.channel.clone())
        .report_use(report(Some(REPLICATION_SECRET), "f1", future()))
        .await;
    assert_code(r, Code::FailedPrecondition);
}

/// Waits (≤ 10 s) until GetToken on `s` shows the token's last use as
/// `want` (unix ms, node).
async fn shows(s: &TestServer, admin: &str, acct: u64, id: u64, want: (i64, &str)) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = s
            .tokens()
            .get_token(auth(
                pb::GetTokenRequest {
                    account_id: acct,
                    token_id: id,
                },
                admin,
            ))
            .await
            .map(|t| t.into_inner())
            .map(|t| (ms(&t.last_used_at), t.last_used_by));
        if got.as_ref().is_ok_and(|g| (g.0, g.1.as_str()) == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} shows {got:?}, want {want:?}",
            s.grpc
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// PostgreSQL nodes on one database each record their own name with the
/// uses they see and persist it; where their records meet, the newer use
/// wins with its node, whichever record arrives last.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_nodes_keep_the_newer_use_with_its_node() {
    let cluster = tokio::task::spawn_blocking(common::pg::PgCluster::start)
        .await
        .unwrap();
    cluster.create_database("kw");
    let keys = temp();
    let clock = Arc::new(ManualClock::new());
    let pg_node = |name: &'static str| {
        let (clock, base, keys) = (clock.clone(), cluster.base_url(), keys.path());
        async move {
            let data = temp();
            let mut opts = options(data.path(), clock.clone());
            opts.digest_key_file = keys.join("digest.key");
            opts.postgres = Some(postgres_at(&base, "kw"));
            opts.settings.node_name = name.into();
            let s = TestServer::start_with(opts, clock)
                .await
                .expect("node starts");
            std::mem::forget(data);
            s
        }
    };
    let a = pg_node("pg-a").await;
    let b = pg_node("pg-b").await;
    let (acct, admin) = a.account("Acme").await;
    a.register(&admin, acct, PROJECT, "p1", None).await;
    let t = a
        .create(&admin, acct, "ci", vec![grant(PROJECT, "p1", VIEWER)])
        .await
        .unwrap();
    let (secret, id) = (t.secret.clone(), t.token.as_ref().unwrap().id);
    let shows = |s, want| shows(s, &admin, acct, id, want);
    let t0 = clock.now_ms();

    // Used on A, persisted: B learns it with A's name.
    assert!(a.check(&secret, PROJECT, "p1", VIEWER).await.allowed);
    a.engine.persist_usage(0, usize::MAX).await.unwrap();
    shows(&b, (t0, "pg-a")).await;

    // A newer use on B, persisted, meets an older unsaved use on A: B's
    // wins on both nodes.
    clock.advance_ms(2_000);
    assert!(a.check(&secret, PROJECT, "p1", VIEWER).await.allowed);
    clock.advance_ms(3_000);
    assert!(b.check(&secret, PROJECT, "p1", VIEWER).await.allowed);
    b.engine.persist_usage(0, usize::MAX).await.unwrap();
    shows(&a, (t0 + 5_000, "pg-b")).await;

    // An older use persisted by B does not undo a newer one on A.
    clock.advance_ms(2_000);
    assert!(b.check(&secret, PROJECT, "p1", VIEWER).await.allowed);
    clock.advance_ms(3_000);
    assert!(a.check(&secret, PROJECT, "p1", VIEWER).await.allowed);
    b.engine.persist_usage(0, usize::MAX).await.unwrap();
    shows(&b, (t0 + 7_000, "pg-b")).await;
    // A has applied B's record by the time its own write is built (the
    // write catches up first), and keeps its newer use.
    a.engine.persist_usage(0, usize::MAX).await.unwrap();
    shows(&a, (t0 + 10_000, "pg-a")).await;
    shows(&b, (t0 + 10_000, "pg-a")).await;
    let stored = stored_tokens_in(Path::new("/nonexistent"), Some(&cluster.url("kw"))).await;
    let rec = stored.iter().find(|r| r.id == id).expect("stored");
    assert_eq!(
        (rec.last_used_at_ms, rec.last_used_by.as_str()),
        (t0 + 10_000, "pg-a")
    );
}
