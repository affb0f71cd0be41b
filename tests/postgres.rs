//! PostgreSQL as the store of record, with a real server (tests/common/pg.rs
//! starts one per test in a temp dir): several keyward nodes on one
//! database converge under concurrent writers on each, revocation on one is
//! denied on the others, nothing acknowledged is lost across a database
//! crash and a node restart, a node out of reach of its database fails
//! closed, and damaged or newer-schema databases are refused.
//!
//! The core behavioural suite runs against PostgreSQL too: scripts/test.sh
//! runs it a second time with KEYWARD_TEST_PG set (tests/common picks the
//! backend), so those rules are not copied here.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pg::PgCluster;
use common::*;
use keyward::clock::ManualClock;
use keyward::pb::v1 as pb;
use pb::ResourceType::Account as ACCOUNT;
use tonic::Code;

/// A node on database `db` of `cluster`, sharing the digest key in `keys`.
async fn node(cluster: &PgCluster, db: &str, keys: &Path, clock: Arc<ManualClock>) -> TestServer {
    try_node(cluster, db, keys, clock, |_| {})
        .await
        .expect("node starts")
}

async fn try_node(
    cluster: &PgCluster,
    db: &str,
    keys: &Path,
    clock: Arc<ManualClock>,
    tune: impl FnOnce(&mut keyward::server::Options),
) -> Result<TestServer, keyward::server::ServeError> {
    let data = temp();
    let mut opts = options(data.path(), clock.clone());
    opts.digest_key_file = keys.join("digest.key");
    opts.postgres = Some(postgres_at(&cluster.base_url(), db));
    tune(&mut opts);
    let s = TestServer::start_with(opts, clock).await;
    // The data dir holds nothing in PostgreSQL mode; keep it alive anyway.
    std::mem::forget(data);
    s
}

/// Waits until every node has applied the database's newest revision.
async fn converge(cluster: &PgCluster, db: &str, nodes: &[&TestServer]) -> u64 {
    let client = pg_connect(&cluster.url(db)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rev: i64 = client
            .query_one("SELECT revision FROM keyward_meta", &[])
            .await
            .unwrap()
            .get(0);
        let rev = rev as u64;
        if nodes.iter().all(|n| n.engine.applied_revision() == rev) {
            return rev;
        }
        assert!(
            Instant::now() < deadline,
            "nodes did not converge on revision {rev}: {:?}",
            nodes
                .iter()
                .map(|n| n.engine.applied_revision())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The token ids of `account` as the node lists them.
async fn listed(s: &TestServer, root: &str, account: u64) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let r = s
            .tokens()
            .list_tokens(auth(
                pb::ListTokensRequest {
                    account_id: account,
                    page_size: 1000,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                root,
            ))
            .await
            .expect("list")
            .into_inner();
        out.extend(r.tokens.iter().map(|t| t.id));
        if r.next_page_token.is_empty() {
            return out;
        }
        page_token = r.next_page_token;
    }
}

/// The token ids of `account` in the database.
async fn in_database(client: &tokio_postgres::Client, account: u64) -> BTreeSet<u64> {
    client
        .query(
            "SELECT id FROM keyward_tokens WHERE account_id = $1",
            &[&(account as i64)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i64>(0) as u64)
        .collect()
}

fn viewer(account: u64) -> Vec<pb::Grant> {
    vec![grant(ACCOUNT, &account.to_string(), VIEWER)]
}

/// Three nodes, three writers on each: every node converges to the
/// database's state, the change table has every revision from 1 with no
/// gap, and a token revoked on one node is denied on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_converge_under_concurrent_writers_and_revocation_reaches_all() {
    let cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    cluster.create_database("kw");
    let keys = temp();
    let clock = Arc::new(ManualClock::new());
    let a = node(&cluster, "kw", keys.path(), clock.clone()).await;
    let root = a.root();
    let b = node(&cluster, "kw", keys.path(), clock.clone()).await;
    let c = node(&cluster, "kw", keys.path(), clock.clone()).await;
    assert!(b.root.is_none() && c.root.is_none(), "one root token only");
    let (acct, admin) = a.account("acme").await;

    let nodes = Arc::new([a, b, c]);
    let mut writers = Vec::new();
    for n in 0..3 {
        for w in 0..3 {
            let (nodes, admin) = (nodes.clone(), admin.clone());
            writers.push(tokio::spawn(async move {
                let s = &nodes[n];
                let mut kept = Vec::new();
                for i in 0..12 {
                    let t = s
                        .create(&admin, acct, &format!("n{n}w{w}t{i}"), viewer(acct))
                        .await
                        .expect("create on any node");
                    let id = t.token.unwrap().id;
                    if i % 2 == 0 {
                        s.delete(&admin, acct, id).await.expect("delete");
                    } else {
                        kept.push(id);
                    }
                }
                kept
            }));
        }
    }
    let mut kept = BTreeSet::new();
    for w in writers {
        kept.extend(w.await.unwrap());
    }
    let [a, b, c] = &*nodes;
    let rev = converge(&cluster, "kw", &[a, b, c]).await;
    let client = pg_connect(&cluster.url("kw")).await;
    let row = client
        .query_one(
            "SELECT count(*), coalesce(min(revision), 0), coalesce(max(revision), 0) FROM keyward_changes",
            &[],
        )
        .await
        .unwrap();
    let (count, min, max): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (count, min, max),
        (rev as i64, 1, rev as i64),
        "no revision skipped"
    );
    // 1 root + 1 account + 54 creates + 27 deletes, at least (usage writes add more).
    assert!(rev >= 83, "{rev}");
    let db_tokens = in_database(&client, acct).await;
    assert!(kept.is_subset(&db_tokens), "every kept token is stored");
    assert_eq!(db_tokens.len(), kept.len() + 1, "kept + the admin token");
    for n in [a, b, c] {
        assert_eq!(
            listed(n, &root, acct).await,
            db_tokens,
            "node lists the database's tokens"
        );
    }

    // Revocation on one node is denied on the others.
    for (on, others) in [(a, [b, c]), (b, [a, c]), (c, [a, b])] {
        let t = on
            .create(&admin, acct, "revoke me", viewer(acct))
            .await
            .unwrap();
        let (id, secret) = (t.token.unwrap().id, t.secret);
        converge(&cluster, "kw", &[a, b, c]).await;
        for o in others {
            assert!(
                o.check(&secret, ACCOUNT, &acct.to_string(), VIEWER)
                    .await
                    .allowed
            );
        }
        on.delete(&admin, acct, id).await.unwrap();
        assert!(
            !on.check(&secret, ACCOUNT, &acct.to_string(), VIEWER)
                .await
                .allowed
        );
        let started = Instant::now();
        for o in others {
            while o
                .check(&secret, ACCOUNT, &acct.to_string(), VIEWER)
                .await
                .allowed
            {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "revocation did not reach a node"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// Nodes starting together on a new database: exactly one makes the root
/// token, and all see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_starting_together_make_one_root_token() {
    let cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    cluster.create_database("kw");
    let keys = temp();
    // The key file first, so the nodes share it.
    std::fs::write(
        keys.path().join("digest.key"),
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new());
    let (x, y, z) = tokio::join!(
        node(&cluster, "kw", keys.path(), clock.clone()),
        node(&cluster, "kw", keys.path(), clock.clone()),
        node(&cluster, "kw", keys.path(), clock.clone()),
    );
    let roots: Vec<&String> = [&x, &y, &z]
        .iter()
        .filter_map(|n| n.root.as_ref())
        .collect();
    assert_eq!(roots.len(), 1, "exactly one node prints the root token");
    let root = roots[0].clone();
    converge(&cluster, "kw", &[&x, &y, &z]).await;
    for n in [&x, &y, &z] {
        let r = n
            .accounts()
            .create_account(auth(pb::CreateAccountRequest { name: "a".into() }, &root))
            .await;
        assert!(r.is_ok(), "the root token works on every node: {r:?}");
    }
}

/// Writers on two nodes while the database crashes (immediate stop and
/// restart, WAL recovery) and one node restarts: every acknowledged create
/// is in the database and on both nodes afterwards; failed writes say
/// UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_acknowledged_is_lost_across_database_and_node_restarts() {
    let mut cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    cluster.create_database("kw");
    let keys = temp();
    let clock = Arc::new(ManualClock::new());
    let a = Arc::new(node(&cluster, "kw", keys.path(), clock.clone()).await);
    let (acct, admin) = a.account("acme").await;
    let b = node(&cluster, "kw", keys.path(), clock.clone()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = |s: Arc<TestServer>, tag: &'static str| {
        let (stop, admin) = (stop.clone(), admin.clone());
        tokio::spawn(async move {
            let (mut acked, mut unavailable, mut i) = (Vec::new(), 0u32, 0u32);
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match s
                    .create(&admin, acct, &format!("{tag}{i}"), viewer(acct))
                    .await
                {
                    Ok(t) => acked.push(t.token.unwrap().id),
                    Err(e) if e.code() == Code::Unavailable => {
                        unavailable += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("unexpected error: {e:?}"),
                }
            }
            (acked, unavailable)
        })
    };
    let b = Arc::new(b);
    let wa = writer(a.clone(), "a");
    let wb = writer(b.clone(), "b");
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The database crashes and comes back.
    tokio::task::block_in_place(|| cluster.restart_immediate());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Node b stops (its writer with it) and starts again.
    stop.store(true, Ordering::Relaxed);
    let (acked_a1, unavailable_a1) = wa.await.unwrap();
    let (acked_b1, _) = wb.await.unwrap();
    let b = Arc::try_unwrap(b).ok().expect("b has no other owner");
    b.stop().await.unwrap();
    let b = Arc::new(node(&cluster, "kw", keys.path(), clock.clone()).await);
    stop.store(false, Ordering::Relaxed);
    let wa = writer(a.clone(), "c");
    let wb = writer(b.clone(), "d");
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked_a2, _) = wa.await.unwrap();
    let (acked_b2, _) = wb.await.unwrap();
    assert!(
        !acked_a2.is_empty() && !acked_b2.is_empty(),
        "writes succeed again after the database restart"
    );
    let acked: BTreeSet<u64> = [acked_a1, acked_b1, acked_a2, acked_b2]
        .into_iter()
        .flatten()
        .collect();
    converge(&cluster, "kw", &[&a, &b]).await;
    let client = pg_connect(&cluster.url("kw")).await;
    let stored = in_database(&client, acct).await;
    let missing: Vec<_> = acked.difference(&stored).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    let root = a.root();
    assert_eq!(listed(&a, &root, acct).await, stored);
    assert_eq!(listed(&b, &root, acct).await, stored);
    eprintln!(
        "acknowledged {} creates; {unavailable_a1} UNAVAILABLE on node a around the crash",
        acked.len()
    );
}

/// A node that cannot reach its database keeps answering from memory up to
/// the staleness bound, then fails closed (UNAVAILABLE, health
/// NOT_SERVING) unless told to serve stale; writes fail with UNAVAILABLE
/// naming the database. It serves again once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_out_of_reach_of_its_database_fails_closed() {
    let mut cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    cluster.create_database("kw");
    let keys = temp();
    let clock = Arc::new(ManualClock::new());
    let bounded = |o: &mut keyward::server::Options| {
        let pg = o.postgres.as_mut().unwrap();
        pg.stale_after = Duration::from_secs(30);
    };
    let closed = try_node(&cluster, "kw", keys.path(), clock.clone(), bounded)
        .await
        .unwrap();
    let (acct, admin) = closed.account("acme").await;
    let serving = try_node(&cluster, "kw", keys.path(), clock.clone(), |o| {
        bounded(o);
        o.postgres.as_mut().unwrap().serve_stale = true;
    })
    .await
    .unwrap();
    converge(&cluster, "kw", &[&closed, &serving]).await;
    let id = acct.to_string();
    assert!(closed.check(&admin, ACCOUNT, &id, ADMIN).await.allowed);

    tokio::task::block_in_place(|| cluster.stop_fast());
    // Within the bound: answers from memory; writes fail, nothing applied.
    assert!(closed.check(&admin, ACCOUNT, &id, ADMIN).await.allowed);
    let err = closed
        .create(&admin, acct, "x", viewer(acct))
        .await
        .expect_err("no database, no write");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("database"), "{}", err.message());

    // Past the bound.
    clock.advance_ms(31_000);
    let req = || pb::AuthorizeRequest {
        cost: Default::default(),
        token: admin.clone(),
        resource: Some(rref(ACCOUNT, &id)),
        level: ADMIN,
        scope: String::new(),
    };
    let err = closed
        .authorizer()
        .authorize(req())
        .await
        .expect_err("fails closed");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        serving.check(&admin, ACCOUNT, &id, ADMIN).await.allowed,
        "serve mode answers"
    );
    closed
        .wait_for_health(
            "",
            tonic_health::pb::health_check_response::ServingStatus::NotServing,
            Duration::from_secs(5),
        )
        .await;

    // The database is back: the node serves again (its poll reaches it).
    tokio::task::block_in_place(|| cluster.start_again());
    let deadline = Instant::now() + Duration::from_secs(10);
    while closed.authorizer().authorize(req()).await.is_err() {
        assert!(Instant::now() < deadline, "the node did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    closed
        .create(&admin, acct, "after", viewer(acct))
        .await
        .expect("writes work again");
}

/// A damaged record, a token id beyond the id counter, and a schema newer
/// than this build are refused at start with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_newer_databases_are_refused() {
    let cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    let keys = temp();
    let clock = Arc::new(ManualClock::new());
    for (db, damage, expect) in [
        (
            "bad_record",
            "UPDATE keyward_tokens SET record = '\\xffffff' WHERE id = 1",
            "corrupt",
        ),
        (
            "moved_record",
            "INSERT INTO keyward_tokens (id, account_id, record) \
             SELECT 1099511627776, account_id, record FROM keyward_tokens WHERE id = 1",
            "holds the record of 1",
        ),
        (
            "far_id",
            // Token 1's record with id 2^40 appended (field 1, varint: the
            // last value of a field wins).
            "INSERT INTO keyward_tokens (id, account_id, record) \
             SELECT 1099511627776, account_id, record || '\\x08808080808020'::bytea \
             FROM keyward_tokens WHERE id = 1",
            "not below the id counter",
        ),
        (
            "newer",
            "INSERT INTO keyward_schema (version) VALUES (99)",
            "newer",
        ),
    ] {
        cluster.create_database(db);
        let s = node(&cluster, db, keys.path(), clock.clone()).await;
        s.account("A").await;
        s.stop().await.unwrap();
        cluster.psql(db, damage);
        let err = try_node(&cluster, db, keys.path(), clock.clone(), |_| {})
            .await
            .err()
            .unwrap_or_else(|| panic!("{db}: started on a damaged database"));
        let msg = err.to_string();
        assert!(msg.contains(expect), "{db}: {msg}");
        assert!(
            !msg.contains("postgres://"),
            "no connection string in errors: {msg}"
        );
    }
}

/// Followers may follow any node: the nodes share the database's epoch
/// and revisions, so a follower's position on one node resumes on another.
/// Change rows past the retention are pruned, and a reader behind them is
/// told to reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_resume_on_any_node_and_pruning_sends_laggards_to_a_snapshot() {
    use keyward::pb::replication::{
        replication_client::ReplicationClient, watch_event::Kind, WatchRequest,
    };
    let cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    cluster.create_database("kw");
    let keys = temp();
    let clock = Arc::new(ManualClock::new());
    let a = node(&cluster, "kw", keys.path(), clock.clone()).await;
    let (acct, admin) = a.account("acme").await;
    let b = node(&cluster, "kw", keys.path(), clock.clone()).await;
    for i in 0..5 {
        a.create(&admin, acct, &format!("t{i}"), viewer(acct))
            .await
            .unwrap();
    }
    let rev = converge(&cluster, "kw", &[&a, &b]).await;
    let epoch: i64 = pg_connect(&cluster.url("kw"))
        .await
        .query_one("SELECT cluster_id FROM keyward_meta", &[])
        .await
        .unwrap()
        .get(0);
    let watch = |s: &TestServer, revision: u64| {
        let channel = s.channel.clone();
        async move {
            let mut req = tonic::Request::new(WatchRequest {
                epoch: epoch as u64,
                revision,
            });
            req.metadata_mut().insert(
                "authorization",
                format!("Bearer {REPLICATION_SECRET}").parse().unwrap(),
            );
            let mut stream = ReplicationClient::new(channel)
                .watch(req)
                .await
                .unwrap()
                .into_inner();
            let first = stream.message().await.unwrap().unwrap();
            (first.kind, first.revision, first.epoch)
        }
    };
    // A position taken on a, presented to b: resumed, same epoch.
    let (kind, _, e) = watch(&b, rev).await;
    assert_eq!((kind, e), (Kind::Resume as i32, epoch as u64));
    // A position b's history does not hold: a snapshot at b's revision.
    let (kind, at, _) = watch(&b, 1).await;
    assert_eq!((kind, at), (Kind::SnapshotBegin as i32, rev));

    // Pruning keeps the newest rows only; a reader behind them reloads.
    let store = keyward::store::postgres::PgStore::connect(&keyward::store::postgres::PgOptions {
        url: cluster.url("kw"),
        pool_size: 2,
        retain_changes: 3,
        ca_file: None,
    })
    .await
    .unwrap();
    use keyward::store::{Store, StoreError};
    let pruned = store.prune().await.unwrap();
    assert_eq!(pruned, rev - 3);
    assert!(matches!(
        store.changes_since(1, 100).await,
        Err(StoreError::Horizon)
    ));
    let tail = store.changes_since(rev - 3, 100).await.unwrap();
    assert_eq!(
        tail.iter().map(|r| r.revision).collect::<Vec<_>>(),
        vec![rev - 2, rev - 1, rev]
    );
    // A node that reloads lands on the same state.
    b.engine.reload().await.unwrap();
    assert_eq!(b.engine.applied_revision(), rev);
    let root = a.root();
    assert_eq!(listed(&b, &root, acct).await, listed(&a, &root, acct).await);
}

/// A follower (sidecar) of node A sees what node B commits (B → database →
/// A → follower), and resyncs when A reloads its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_of_one_node_sees_the_writes_of_another() {
    let cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    cluster.create_database("kw");
    let keys = temp();
    let clock = Arc::new(ManualClock::new());
    let a = node(&cluster, "kw", keys.path(), clock.clone()).await;
    let root = a.root();
    let b = node(&cluster, "kw", keys.path(), clock.clone()).await;
    let fdir = temp();
    let opts = follower_options(
        fdir.path(),
        clock.clone(),
        a.grpc,
        &keys.path().join("digest.key"),
        false,
    );
    let f = TestServer::start_with(opts, clock.clone())
        .await
        .expect("follower starts");

    let made_on_b = |name: &'static str| {
        let (b, root) = (&b, root.clone());
        async move {
            let r = b
                .accounts()
                .create_account(auth(pb::CreateAccountRequest { name: name.into() }, &root))
                .await
                .unwrap()
                .into_inner();
            (r.account.unwrap().id, r.admin_token.unwrap().secret)
        }
    };
    let seen_by = |f: &TestServer, acct: u64, secret: String| {
        let channel = f.channel.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let r = pb::authorizer_client::AuthorizerClient::new(channel.clone())
                    .authorize(pb::AuthorizeRequest {
                        cost: Default::default(),
                        token: secret.clone(),
                        resource: Some(rref(ACCOUNT, &acct.to_string())),
                        level: ADMIN,
                        scope: String::new(),
                    })
                    .await;
                if r.is_ok_and(|r| r.into_inner().allowed) {
                    return;
                }
                assert!(Instant::now() < deadline, "the follower never saw it");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let (acct, secret) = made_on_b("one").await;
    seen_by(&f, acct, secret).await;
    let epoch_before = f.engine.follower().unwrap().epoch.load(Ordering::Acquire);
    // A reloads (as past the retention horizon): its watchers end, the
    // follower takes a new snapshot, and keeps following.
    a.engine.reload().await.unwrap();
    let (acct, secret) = made_on_b("two").await;
    seen_by(&f, acct, secret).await;
    assert_eq!(
        f.engine.follower().unwrap().epoch.load(Ordering::Acquire),
        epoch_before,
        "the database's epoch, before and after"
    );
    assert_eq!(
        f.engine
            .follower()
            .unwrap()
            .revision
            .load(Ordering::Acquire),
        a.engine.applied_revision(),
    );
}

/// With `sslmode=require` keyward speaks TLS to PostgreSQL and verifies the
/// server's certificate: it connects when `--pg-ca-file` names the CA that
/// signed it (every keyward connection is then encrypted), and refuses to
/// start without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgresql_verifies_the_server() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    cluster.create_database("kw");
    // A CA, and a server certificate for 127.0.0.1 signed by it.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let data = cluster.data_dir();
    let owner = std::fs::metadata(&data).unwrap();
    for (name, pem) in [
        ("server.crt", cert.pem()),
        ("server.key", key.serialize_pem()),
    ] {
        let path = data.join(name);
        std::fs::write(&path, pem).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .unwrap();
    std::io::Write::write_all(
        &mut conf,
        b"\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
    )
    .unwrap();
    tokio::task::block_in_place(|| cluster.restart_fast());
    let keys = temp();
    let ca_file = keys.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let clock = Arc::new(ManualClock::new());
    let tls = |ca: Option<std::path::PathBuf>| {
        move |o: &mut keyward::server::Options| {
            let pg = o.postgres.as_mut().unwrap();
            pg.store.url.push_str("?sslmode=require");
            pg.store.ca_file = ca;
        }
    };

    let err = try_node(&cluster, "kw", keys.path(), clock.clone(), tls(None))
        .await
        .err()
        .expect("an unverifiable server is refused");
    let msg = err.to_string();
    eprintln!("refused: {msg}");
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");

    let s = try_node(
        &cluster,
        "kw",
        keys.path(),
        clock.clone(),
        tls(Some(ca_file)),
    )
    .await
    .expect("a verified server is used");
    let (acct, admin) = s.account("acme").await;
    assert!(
        s.check(&admin, ACCOUNT, &acct.to_string(), ADMIN)
            .await
            .allowed
    );
    // Every connection keyward holds is encrypted.
    let row = pg_connect(&cluster.url("kw"))
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'keyward'",
            &[],
        )
        .await
        .unwrap();
    let (encrypted, plain): (i64, i64) = (row.get(0), row.get(1));
    assert!(encrypted >= 2, "pool and LISTEN connections: {encrypted}");
    assert_eq!(plain, 0);
}

/// Admin calls carrying forged, well-formed tokens whose id is above any
/// issued id (so the node cannot tell them from a token made on another
/// node a moment ago) cost at most one catch-up with the database per
/// interval, shared by every waiting caller, not one transaction each; a
/// token really made on the other node is still accepted at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_unseen_token_ids_cost_one_catch_up_per_interval() {
    let cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    cluster.create_database("kw");
    let keys = temp();
    let clock = Arc::new(ManualClock::new());
    let a = node(&cluster, "kw", keys.path(), clock.clone()).await;
    let root = a.root();
    let b = node(&cluster, "kw", keys.path(), clock.clone()).await;

    let before = a.engine.work().unseen_catch_ups;
    let start = Instant::now();
    let callers: Vec<_> = (0..32)
        .map(|_| {
            let channel = a.channel.clone();
            tokio::spawn(async move {
                let mut codes = Vec::new();
                for i in 0..25u64 {
                    let forged =
                        keyward::token::assemble(1_000_000 + i, &keyward::token::new_secret_part());
                    let r = pb::accounts_client::AccountsClient::new(channel.clone())
                        .list_accounts(auth(pb::ListAccountsRequest::default(), forged.expose()))
                        .await;
                    codes.push(r.err().map(|e| e.code()));
                }
                codes
            })
        })
        .collect();
    for c in callers {
        for code in c.await.unwrap() {
            assert_eq!(code, Some(Code::Unauthenticated));
        }
    }
    let took = start.elapsed();
    let catch_ups = a.engine.work().unseen_catch_ups - before;
    let interval = keyward::engine::Settings::default().unseen_catch_up_interval;
    let bound = took.as_millis() / interval.as_millis() + 2;
    println!("800 forged callers in {took:?}: {catch_ups} catch-ups (bound {bound})");
    assert!(
        u128::from(catch_ups) <= bound,
        "800 forged callers in {took:?} caused {catch_ups} catch-ups"
    );

    // A token made on B a moment ago is still accepted on A.
    let made = b
        .accounts()
        .create_account(auth(
            pb::CreateAccountRequest {
                name: "fresh".into(),
            },
            &root,
        ))
        .await
        .expect("an account made on B")
        .into_inner();
    let acct = made.account.expect("account").id;
    let admin = made.admin_token.expect("its token").secret;
    let got = a
        .accounts()
        .get_account(auth(pb::GetAccountRequest { account_id: acct }, &admin))
        .await
        .expect("a token made on the other node is accepted");
    assert_eq!(got.into_inner().id, acct);
}
