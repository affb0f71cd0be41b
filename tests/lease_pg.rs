//! Sending limits on PostgreSQL nodes: every node leases from the one
//! budget the database keeps (`keyward_budgets`), in chunks, so N nodes
//! together never allow more than the limit plus one chunk per node. A
//! reset's two tokens share it across nodes; a node that stops gives its
//! lease back and a restarted one refills nothing; a node cut off from the
//! database spends only its lease, then refuses; a follower of a node
//! leases from the database through it.
//!
//! Each test runs its own PostgreSQL server (tests/common/pg.rs).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::lease::*;
use common::pg::PgCluster;
use common::*;
use keyward::clock::ManualClock;
use keyward::pb::v1 as pb;

/// A PostgreSQL server of the test's own with a database `kw`, the
/// nodes' shared digest key and clock.
struct Db {
    cluster: PgCluster,
    keys: tempfile::TempDir,
    clock: Arc<ManualClock>,
}

impl Db {
    async fn start() -> Db {
        let cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
        cluster.create_database("kw");
        Db {
            cluster,
            keys: temp(),
            clock: Arc::new(ManualClock::new()),
        }
    }

    /// A node on the database.
    async fn node(&self, name: &str) -> TestServer {
        node(
            &self.cluster.base_url(),
            self.keys.path(),
            self.clock.clone(),
            name,
        )
        .await
    }
}

/// A node on the database `kw` at `base`, with the shared digest key in
/// `keys`, on `clock`.
async fn node(base: &str, keys: &Path, clock: Arc<ManualClock>, name: &str) -> TestServer {
    let data = temp();
    let mut opts = options(data.path(), clock.clone());
    // Leases stay while a test stops the database (which may take longer
    // than the default second of idleness on a loaded machine); the
    // give-back at a clean stop is what these tests check.
    opts.settings.lease_idle = Duration::from_secs(3600);
    opts.digest_key_file = keys.join("digest.key");
    opts.postgres = Some(postgres_at(base, "kw"));
    opts.settings.node_name = name.into();
    let s = TestServer::start_with(opts, clock)
        .await
        .expect("node starts");
    std::mem::forget(data);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_nodes_together_stay_within_the_bound() {
    let db = Db::start().await;
    let clock = db.clock.clone();
    let a = db.node("a").await;
    let b = db.node("b").await;
    let d = db.node("c").await;
    let limit = 320; // chunk: 20
    let chunk = 20;
    let secret = token(&a, limit).await;
    knows(&b, &secret).await;
    knows(&d, &secret).await;
    // The clock stands still in the first phase: the database granted
    // at most the limit.
    let first = two_phases(
        &[&a, &b, &d],
        &secret,
        &clock,
        (limit, chunk, 3),
        limit,
        "lease_pg",
    )
    .await;
    assert!(
        first.iter().all(|&n| n > 0),
        "every node allowed some: {first:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reset_on_one_node_shares_the_budget_on_another() {
    let db = Db::start().await;
    let a = db.node("a").await;
    let b = db.node("b").await;
    let t = limited(&a, 32).await; // chunk: 2
    assert_eq!(allowed_of(&a, &t.secret, 20).await, 20);
    let new = a
        .tokens()
        .reset_token(auth(
            pb::ResetTokenRequest {
                account_id: t.acct,
                token_id: t.id,
                ..Default::default()
            },
            &t.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    knows(&b, &new).await;
    // The new token on B and the old one (in its grace) on A draw on the
    // 12 units left, together.
    let on_b = allowed_of(&b, &new, 20).await;
    let on_a = allowed_of(&a, &t.secret, 20).await;
    println!("lease_pg: after the reset, new token on B {on_b}, old on A {on_a}");
    assert!(on_b + on_a <= 12, "{on_b} + {on_a} > the 12 left");
    assert!(
        on_b + on_a >= 12 - 2 * 2,
        "{on_b} + {on_a}: leases stranded"
    );
    assert!(on_b > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopping_node_gives_its_lease_back_and_a_restart_refills_nothing() {
    let db = Db::start().await;
    let clock = db.clock.clone();
    let a = db.node("a").await;
    let b = db.node("b").await;
    let secret = token(&a, 48).await; // chunk: 3
    assert_eq!(allowed_of(&a, &secret, 10).await, 10);
    a.stop().await.unwrap();
    knows(&b, &secret).await;
    // What A held came back: B gets every unit A did not spend, and not
    // one more (the clock stands still: nothing refills).
    assert_eq!(allowed_up_to(&b, &secret, 38).await, 38);
    assert_eq!(allowed_of(&b, &secret, 5).await, 0);
    b.stop().await.unwrap();
    // A node started again finds the budget spent.
    let again = db.node("a").await;
    knows(&again, &secret).await;
    assert_eq!(allowed_of(&again, &secret, 5).await, 0);
    clock.advance_ms(1_000_000 * 3 / 48);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(allowed_of(&again, &secret, 5).await, 3, "time refills it");
}

/// Authorizes on `node` until `want` calls were allowed, or 100 calls (a
/// call denied while the node waits for its next lease, as happens on a
/// loaded machine, is tried again rather than counted as budget lost).
/// Returns how many were allowed.
async fn allowed_up_to(node: &TestServer, secret: &str, want: u64) -> u64 {
    let mut allowed = 0;
    for _ in 0..100 {
        if allowed == want {
            break;
        }
        allowed += allowed_of(node, secret, 1).await;
    }
    allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_from_the_database_spends_only_its_lease() {
    let mut db = Db::start().await;
    let a = db.node("a").await;
    let secret = token(&a, 160).await; // chunk: 10
    let d = a
        .authorizer()
        .authorize(req(&secret))
        .await
        .unwrap()
        .into_inner();
    assert!(d.allowed, "{d:?}");
    assert_eq!(
        d.remaining,
        Some(159),
        "its lease and what the database has left"
    );
    tokio::task::block_in_place(|| db.cluster.stop_fast());
    let allowed = allowed_of(&a, &secret, 15).await;
    assert_eq!(allowed, 9, "the rest of its lease, then refusals");
    tokio::task::block_in_place(|| db.cluster.start_again());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let d = a
            .authorizer()
            .authorize(req(&secret))
            .await
            .unwrap()
            .into_inner();
        if d.allowed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never leased again: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A follower of a PostgreSQL node leases through its node from the
/// database: another node sees what it took.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_of_a_postgres_node_leases_from_the_database() {
    let db = Db::start().await;
    let clock = db.clock.clone();
    let a = db.node("a").await;
    let b = db.node("b").await;
    let fdir = temp();
    let f = TestServer::start_with(
        follower_options(
            fdir.path(),
            clock.clone(),
            a.grpc,
            &db.keys.path().join("digest.key"),
            false,
        ),
        clock.clone(),
    )
    .await
    .expect("follower starts");
    let secret = token(&a, 32).await; // chunk: 2
    knows(&f, &secret).await;
    knows(&b, &secret).await;
    let on_f = allowed_of(&f, &secret, 20).await;
    assert_eq!(on_f, 20);
    // What the follower took is gone for B too: at most 12 left.
    let on_b = allowed_of(&b, &secret, 20).await;
    println!("lease_pg: follower {on_f}, then node B {on_b}");
    assert!((12 - 2 * 2..=12).contains(&on_b), "node B allowed {on_b}");
}
