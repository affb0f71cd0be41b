//! The usage writer: what the hot path learnt (last-use times, digests,
//! sending-limit budgets) reaches the store while keyward serves, in small
//! commits paced over `--usage-flush-interval`, and no mutation waits for a
//! step that is stalled between its scan and its write; a clean stop still
//! writes everything.
//!
//! A real server on sled in a temp dir, its tokens seeded straight into the
//! store (no argon2 per token), used through Authorize.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use keyward::pb::v1 as pb;

const PROJECT: pb::ResourceType = pb::ResourceType::Project;

/// A server on `dir` (seeded) whose usage writer runs every `every`.
async fn serve(dir: &Path, every: Duration) -> TestServer {
    let clock = std::sync::Arc::new(keyward::clock::ManualClock::new());
    let mut opts = options(dir, clock.clone());
    opts.usage_flush_interval = every;
    // Seeded stores are sled stores: this file's tests do not run on
    // PostgreSQL.
    opts.postgres = None;
    TestServer::start_with(opts, clock)
        .await
        .expect("server starts")
}

/// Uses every seeded token once (each then has a last use to write).
async fn use_all(s: &TestServer, seeded: &keyward::seed::Seeded) {
    for t in &seeded.tokens {
        assert!(
            s.check(t.expose(), PROJECT, &seeded.project, VIEWER)
                .await
                .allowed
        );
    }
}

/// Waits until the usage writer has written `n` records, or fails after
/// 30 s (a bound for a hung writer, not a measurement).
async fn until_written(s: &TestServer, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.engine.work().usage_records < n {
        assert!(
            Instant::now() < deadline,
            "the usage writer wrote {} of {n} records in 30 s",
            s.engine.work().usage_records
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Uses reach the store while the server serves, within the writer's
/// interval, and a pass is written in small commits (at most a
/// hundredth of the 2,000 tokens an interval may write, i.e. 20), not in
/// one burst of every due token.
#[tokio::test]
async fn uses_are_written_while_serving_in_small_commits() {
    let dir = temp();
    let seeded = keyward::seed::seed(dir.path(), 100, true)
        .await
        .expect("seed");
    let s = serve(dir.path(), Duration::from_millis(200)).await;
    use_all(&s, &seeded).await;
    until_written(&s, 100).await;
    let work = s.engine.work();
    assert!(
        work.usage_commits >= 5,
        "100 due tokens in commits of at most 20: {work:?}"
    );
    // Nothing is written twice for one use.
    assert_eq!(work.usage_records, 100, "{work:?}");
    s.stop().await.expect("stops");
    let stored = stored_tokens(dir.path()).await;
    assert_eq!(stored.len(), 100);
    assert!(
        stored.iter().all(|r| r.last_used_at_ms > 0),
        "every use stored"
    );
}

/// A clean stop writes every use not written yet, all of them at once,
/// even when the periodic writer had only begun: here its interval is an
/// hour, so everything is left to the stop.
#[tokio::test]
async fn a_clean_stop_writes_every_use() {
    let dir = temp();
    let seeded = keyward::seed::seed(dir.path(), 300, true)
        .await
        .expect("seed");
    let s = serve(dir.path(), Duration::from_secs(3600)).await;
    use_all(&s, &seeded).await;
    let used = keyward::clock::Clock::now_ms(&*s.clock);
    s.stop().await.expect("stops");
    let stored = stored_tokens(dir.path()).await;
    assert_eq!(stored.len(), 300);
    let missing = stored.iter().filter(|r| r.last_used_at_ms != used).count();
    assert_eq!(missing, 0, "uses not stored at shutdown");
}

/// A usage step parked between its scan and its write (due tokens found,
/// not yet written: where a thread the scheduler keeps off a saturated
/// core would stall) holds up no mutation: a PauseToken is answered while
/// it is parked, and the step writes its tokens once let go. (A first
/// version of the writer held the node's writer lock there, at idle
/// priority, so the mutation waited for the parked step: scenario 18 of
/// keyward-bench measured what that cost.)
#[tokio::test]
async fn a_parked_usage_step_holds_up_no_mutation() {
    let dir = temp();
    let mut seeded = keyward::seed::seed(dir.path(), 11, true)
        .await
        .expect("seed");
    let s = serve(dir.path(), Duration::from_millis(200)).await;
    let parked = s.engine.park_usage_writer();
    // Ten tokens used (ten records due); the eleventh, unused, is paused.
    let unused = seeded.tokens.pop().expect("11 tokens");
    let unused_id = keyward::token::parse(unused.expose()).expect("a token").id;
    use_all(&s, &seeded).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s.engine.usage_writer_parked() {
        assert!(
            Instant::now() < deadline,
            "no usage step came to the gate in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut tokens = s.tokens();
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        tokens.pause_token(auth(
            pb::PauseTokenRequest {
                account_id: seeded.account_id,
                token_id: unused_id,
            },
            seeded.tokens[0].expose(),
        )),
    )
    .await;
    assert!(s.engine.usage_writer_parked(), "the step stayed parked");
    drop(parked);
    let token = answer
        .expect("PauseToken answered while a usage step was parked (it waited 10 s for the step)")
        .expect("PauseToken")
        .into_inner();
    assert!(token.paused);
    until_written(&s, 10).await;
    s.stop().await.expect("stops");
}
