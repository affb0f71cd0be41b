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
use pb::DenyReason;

async fn cluster() -> PgCluster {
    let c = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    c.create_database("kw");
    c
}

/// A node on the cluster's database `kw`, with the shared digest key in
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
    let c = cluster().await;
    let (keys, clock) = (temp(), Arc::new(ManualClock::new()));
    let a = node(&c.base_url(), keys.path(), clock.clone(), "a").await;
    let b = node(&c.base_url(), keys.path(), clock.clone(), "b").await;
    let d = node(&c.base_url(), keys.path(), clock.clone(), "c").await;
    let limit = 320; // chunk: 20
    let chunk = 20;
    let secret = token(&a, limit).await;
    knows(&b, &secret).await;
    knows(&d, &secret).await;
    let nodes = [&a, &b, &d];
    let first = load(&nodes, &secret).await;
    let total: u64 = first.iter().sum();
    println!("lease_pg: phase 1 allowed per node {first:?}, total {total}");
    // The clock stands still: the database granted at most the limit.
    assert!(total <= limit, "allowed {total} > limit {limit}");
    assert!(total >= limit - 3 * chunk, "allowed only {total}");
    assert!(
        first.iter().all(|&n| n > 0),
        "every node allowed some: {first:?}"
    );
    // Half a period later: half the limit more over the whole run (the
    // nodes hear from the database again within a poll).
    clock.advance_ms(500_000);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let second = load(&nodes, &secret).await;
    let whole: u64 = total + second.iter().sum::<u64>();
    println!("lease_pg: phase 2 allowed per node {second:?}, whole run {whole}");
    let bound = limit + limit / 2 + 3 * chunk;
    assert!(
        whole <= bound,
        "allowed {whole} over the run > bound {bound}"
    );
    assert!(whole > total, "the budget refilled");
    let m = http(a.http, "GET", "/metrics", None, None).await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(metric(&text, "keyward_lease_units_total{dir=\"taken\"}") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reset_on_one_node_shares_the_budget_on_another() {
    let c = cluster().await;
    let (keys, clock) = (temp(), Arc::new(ManualClock::new()));
    let a = node(&c.base_url(), keys.path(), clock.clone(), "a").await;
    let b = node(&c.base_url(), keys.path(), clock.clone(), "b").await;
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
    let c = cluster().await;
    let (keys, clock) = (temp(), Arc::new(ManualClock::new()));
    let a = node(&c.base_url(), keys.path(), clock.clone(), "a").await;
    let b = node(&c.base_url(), keys.path(), clock.clone(), "b").await;
    let secret = token(&a, 48).await; // chunk: 3
    assert_eq!(allowed_of(&a, &secret, 10).await, 10);
    a.stop().await.unwrap();
    knows(&b, &secret).await;
    // What A held came back: B gets every unit A did not spend.
    assert_eq!(allowed_of(&b, &secret, 45).await, 38);
    b.stop().await.unwrap();
    // A node started again finds the budget spent.
    let again = node(&c.base_url(), keys.path(), clock.clone(), "a").await;
    knows(&again, &secret).await;
    assert_eq!(allowed_of(&again, &secret, 5).await, 0);
    clock.advance_ms(1_000_000 * 3 / 48);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(allowed_of(&again, &secret, 5).await, 3, "time refills it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_from_the_database_spends_only_its_lease() {
    let mut c = cluster().await;
    let (keys, clock) = (temp(), Arc::new(ManualClock::new()));
    let a = node(&c.base_url(), keys.path(), clock.clone(), "a").await;
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
    tokio::task::block_in_place(|| c.stop_fast());
    let mut allowed = 0;
    for _ in 0..15 {
        let d = a
            .authorizer()
            .authorize(req(&secret))
            .await
            .unwrap()
            .into_inner();
        if d.allowed {
            allowed += 1;
        } else {
            assert_eq!(d.reason, DenyReason::RateLimited as i32, "{d:?}");
            assert!(d.retry_after.is_some());
        }
    }
    assert_eq!(allowed, 9, "the rest of its lease, then refusals");
    tokio::task::block_in_place(|| c.start_again());
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
    let c = cluster().await;
    let (keys, clock) = (temp(), Arc::new(ManualClock::new()));
    let a = node(&c.base_url(), keys.path(), clock.clone(), "a").await;
    let b = node(&c.base_url(), keys.path(), clock.clone(), "b").await;
    let fdir = temp();
    let f = TestServer::start_with(
        follower_options(
            fdir.path(),
            clock.clone(),
            a.grpc,
            &keys.path().join("digest.key"),
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
