//! Revocation is immediate on the node: once DeleteToken, PauseToken or a
//! grant edit is acknowledged, no Authorize sent after the acknowledgement
//! is allowed. Concurrent Authorize loops race each revocation, over more
//! than 1,000 trials, including the race of an argon2 cache fill that
//! started before the delete.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use keyward::pb::v1 as pb;
use prost_types::FieldMask;

/// Authorize loops racing one revocation.
const LOOPS: usize = 3;

/// Result of one trial.
struct Trial {
    /// Allowed answers to requests sent after the acknowledgement.
    allows_after_ack: usize,
    /// Answers to requests sent after the acknowledgement.
    after_ack: usize,
    /// Allowed answers to requests sent before it (shows the race was real).
    allows_before_ack: usize,
}

/// Runs LOOPS Authorize loops on `check` while `revoke` runs after a short
/// random delay; every loop stops after two requests sent after the ack.
async fn race(
    s: &TestServer,
    check: pb::AuthorizeRequest,
    delay: Duration,
    revoke: impl Future<Output = ()>,
) -> Trial {
    let ack: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let started = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..LOOPS {
        let mut client = s.authorizer();
        let (check, ack, started, stop) =
            (check.clone(), ack.clone(), started.clone(), stop.clone());
        loops.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut post = 0;
            while post < 2 && !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                // UNAVAILABLE (argon2 capacity shed, fail closed) is a denial.
                let allowed = match client.authorize(check.clone()).await {
                    Ok(d) => d.into_inner().allowed,
                    Err(s) if s.code() == tonic::Code::Unavailable => false,
                    Err(s) => panic!("authorize failed: {s:?}"),
                };
                started.fetch_add(1, Ordering::Relaxed);
                if ack.get().is_some_and(|a| sent > *a) {
                    post += 1;
                }
                samples.push((sent, allowed));
            }
            samples
        }));
    }
    while started.load(Ordering::Relaxed) < LOOPS {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(delay).await;
    revoke.await;
    let at = Instant::now();
    ack.set(at).expect("ack once");
    let guard = tokio::spawn({
        let stop = stop.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            stop.store(true, Ordering::Relaxed);
        }
    });
    let mut t = Trial {
        allows_after_ack: 0,
        after_ack: 0,
        allows_before_ack: 0,
    };
    for l in loops {
        for (sent, allowed) in l.await.expect("loop") {
            if sent > at {
                t.after_ack += 1;
                t.allows_after_ack += usize::from(allowed);
            } else {
                t.allows_before_ack += usize::from(allowed);
            }
        }
    }
    guard.abort();
    t
}

fn authorize_req(token: &str, kind: pb::ResourceType, id: &str) -> pb::AuthorizeRequest {
    pb::AuthorizeRequest {
        cost: Default::default(),
        token: token.into(),
        resource: Some(rref(kind, id)),
        level: ADMIN,
        scope: String::new(),
    }
}

/// Tallies trials and checks none allowed anything after its ack.
#[derive(Default)]
struct Tally {
    trials: usize,
    after_ack: usize,
    allows_before: usize,
}

impl Tally {
    fn add(&mut self, what: &str, t: &Trial) {
        assert_eq!(
            t.allows_after_ack, 0,
            "{what}: {} allows after the acknowledgement",
            t.allows_after_ack
        );
        assert!(
            t.after_ack >= LOOPS,
            "{what}: the loops must observe the revocation"
        );
        self.trials += 1;
        self.after_ack += t.after_ack;
        self.allows_before += t.allows_before_ack;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_allow_after_pause_edit_or_delete_is_acknowledged() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    s.register(&admin, a, PROJECT, "p", None).await;
    s.register(&admin, a, PROJECT, "q", None).await;
    let mut tally = Tally::default();
    let delay = |i: usize| Duration::from_micros((i as u64 * 7919) % 1500);

    // Pause / resume: 400 trials on one token.
    let t = s
        .create(&admin, a, "paused", vec![grant(PROJECT, "p", ADMIN)])
        .await
        .unwrap();
    let id = t.token.unwrap().id;
    for i in 0..400 {
        let mut tokens = s.tokens();
        let caller = admin.clone();
        let trial = race(
            &s,
            authorize_req(&t.secret, PROJECT, "p"),
            delay(i),
            async move {
                tokens
                    .pause_token(auth(
                        pb::PauseTokenRequest {
                            account_id: a,
                            token_id: id,
                        },
                        &caller,
                    ))
                    .await
                    .expect("pause");
            },
        )
        .await;
        tally.add("pause", &trial);
        s.tokens()
            .resume_token(auth(
                pb::ResumeTokenRequest {
                    account_id: a,
                    token_id: id,
                },
                &admin,
            ))
            .await
            .unwrap();
    }

    // Grant edits: 400 trials moving the grant from p to q and back.
    let t = s
        .create(&admin, a, "edited", vec![grant(PROJECT, "p", ADMIN)])
        .await
        .unwrap();
    let id = t.token.unwrap().id;
    let set_grants = |target: &'static str| {
        let mut tokens = s.tokens();
        let admin = admin.clone();
        async move {
            let req = pb::UpdateTokenRequest {
                account_id: a,
                token_id: id,
                grants: vec![grant(PROJECT, target, ADMIN)],
                update_mask: Some(FieldMask {
                    paths: vec!["grants".into()],
                }),
                ..Default::default()
            };
            tokens
                .update_token(auth(req, &admin))
                .await
                .expect("update");
        }
    };
    for i in 0..400 {
        let (from, to) = if i % 2 == 0 { ("p", "q") } else { ("q", "p") };
        let trial = race(
            &s,
            authorize_req(&t.secret, PROJECT, from),
            delay(i),
            set_grants(to),
        )
        .await;
        tally.add("grant edit", &trial);
    }

    // Deletes: 200 trials, a fresh token each.
    for i in 0..200 {
        let t = s
            .create(&admin, a, "deleted", vec![grant(PROJECT, "p", ADMIN)])
            .await
            .unwrap();
        let id = t.token.unwrap().id;
        let mut tokens = s.tokens();
        let admin = admin.clone();
        let trial = race(
            &s,
            authorize_req(&t.secret, PROJECT, "p"),
            delay(i),
            async move {
                tokens
                    .delete_token(auth(
                        pb::DeleteTokenRequest {
                            account_id: a,
                            token_id: id,
                        },
                        &admin,
                    ))
                    .await
                    .expect("delete");
            },
        )
        .await;
        tally.add("delete", &trial);
    }
    assert!(tally.trials >= 1000);
    // The races were real: many requests were allowed just before the acks.
    assert!(
        tally.allows_before > tally.trials,
        "allowed before acks: {}",
        tally.allows_before
    );
    println!(
        "revocation trials: {}, requests after ack: {}, allows after ack: 0",
        tally.trials, tally.after_ack
    );
    s.stop().await.unwrap();
}

/// The cache-fill race: with no verified digest known (the digest key
/// changed), Authorize runs argon2; a delete acknowledged while argon2 runs
/// must win: no request sent after the ack is allowed, and the late fill
/// does not resurrect the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_fill_racing_a_delete_never_allows_after_the_ack() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    s.register(&admin, a, PROJECT, "p", None).await;
    let mut victims = Vec::new();
    for i in 0..40 {
        let t = s
            .create(
                &admin,
                a,
                &format!("v{i}"),
                vec![grant(PROJECT, "p", ADMIN)],
            )
            .await
            .unwrap();
        victims.push((t.token.unwrap().id, t.secret));
    }
    s.stop().await.unwrap();
    std::fs::remove_file(dir.path().join("digest.key")).unwrap();
    let s = TestServer::start(dir.path()).await;
    let mut tally = Tally::default();
    for (i, (id, secret)) in victims.into_iter().enumerate() {
        let mut tokens = s.tokens();
        let admin = admin.clone();
        // Delays around the ~30 ms argon2 verify, so deletes land before,
        // during and after the fill.
        let delay = Duration::from_millis((i as u64 * 3) % 45);
        let trial = race(
            &s,
            authorize_req(&secret, PROJECT, "p"),
            delay,
            async move {
                tokens
                    .delete_token(auth(
                        pb::DeleteTokenRequest {
                            account_id: a,
                            token_id: id,
                        },
                        &admin,
                    ))
                    .await
                    .expect("delete");
            },
        )
        .await;
        tally.add("fill vs delete", &trial);
        let d = s.check(&secret, PROJECT, "p", ADMIN).await;
        assert_eq!(d.reason, DenyReason::UnknownToken as i32);
    }
    println!(
        "fill races: {}, requests after ack: {}, allows after ack: 0",
        tally.trials, tally.after_ack
    );
    s.stop().await.unwrap();
}
