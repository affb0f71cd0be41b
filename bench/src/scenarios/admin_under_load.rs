//! Scenario 18, `admin_under_load`: how long an admin mutation takes while
//! Authorize saturates the server's core and the usage writer has work.
//!
//! Each run seeds a fresh data dir with up to 100,000 tokens (never used,
//! so each is due for a last-use write once the load has touched it: at
//! most 2,000 a second are written, so the usage writer stays busy for the
//! whole run), starts keyward on it, drives scenario 1's closed loop
//! (16 connections × 8 in flight, every request a different token) and,
//! beside it, pauses and resumes one token every 20 ms, timing each call.
//! Two kinds of run alternate each round: the usage writer at work (the
//! default 1 s interval) and resting (a 10 h interval: no step falls in
//! the run). The difference between the two is what a mutation waits for
//! behind the usage writer; the records it wrote are read from
//! `keyward_usage_records_total`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward::pb::v1 as pb;
use tonic::transport::Channel;

use crate::bench::{request, Bench};
use crate::load::{load, Mode, Run, Workload};
use crate::procs::{metric, start_keyward_with};

/// Most tokens seeded per run (fewer with a smaller `--cold-tokens`).
const TOKENS_MAX: usize = 100_000;

/// Time between two timed mutations.
const MUTATION_EVERY: Duration = Duration::from_millis(20);

/// The records the usage writer stored, from keyward's metrics.
const USAGE_RECORDS: &str = "keyward_usage_records_total";

/// The two kinds of run: a name and the `--usage-flush-interval`.
const KINDS: [(&str, &str); 2] = [
    ("usage writer at work (1 s interval)", "1s"),
    ("usage writer resting (10 h interval)", "10h"),
];

impl Bench {
    /// Mutation latency under a saturating Authorize load, with and without
    /// the usage writer at work, alternating `rounds` times.
    pub(crate) async fn admin_under_load(&mut self) {
        let n = self.cli.cold_tokens.clamp(100, TOKENS_MAX);
        let mut authorize: Vec<Run> = KINDS.iter().map(|_| Run::new()).collect();
        let mut mutations: Vec<Run> = KINDS.iter().map(|_| Run::new()).collect();
        let mut written = [0f64; KINDS.len()];
        for round in 0..self.cli.rounds {
            for (k, (kind, interval)) in KINDS.iter().enumerate() {
                let dir = tempfile::tempdir().expect("tempdir");
                eprint!("\r  18. seeding {n} tokens ...");
                let seeded = keyward::seed::seed(dir.path(), n, true)
                    .await
                    .expect("seed");
                eprint!("\r{:<60}\r", "");
                let extra = ["--usage-flush-interval".into(), (*interval).into()];
                let (kw, _) =
                    start_keyward_with(&self.layout, &self.keyward_bin, dir.path(), &extra);
                // The last token is the one paused and resumed; the rest
                // are the load.
                let (target, load_tokens) = seeded.tokens.split_last().expect("tokens");
                let w = Workload {
                    requests: Arc::new(
                        load_tokens
                            .iter()
                            .map(|t| request(t.expose(), &seeded.project))
                            .collect(),
                    ),
                    batch: 1,
                    checks: None,
                    introspect: false,
                    raw: None,
                };
                let target_id = keyward::token::parse(target.expose()).map_or(0, |p| p.id);
                let ch = Channel::from_shared(format!("http://{}", kw.addr))
                    .expect("uri")
                    .connect()
                    .await
                    .expect("connect");
                let stop = Arc::new(AtomicBool::new(false));
                let mutator = tokio::spawn(mutate(
                    pb::tokens_client::TokensClient::new(ch),
                    format!("Bearer {}", seeded.tokens[0].expose()),
                    (seeded.account_id, target_id),
                    Instant::now() + self.cli.warmup,
                    stop.clone(),
                ));
                let run = load(
                    kw.addr,
                    Mode::Closed {
                        conns: 16,
                        inflight: 8,
                    },
                    &w,
                    self.cli.warmup,
                    self.cli.duration,
                    &format!("18. {kind} #{}", round + 1),
                )
                .await;
                stop.store(true, Ordering::Relaxed);
                mutations[k].add(&mutator.await.expect("the mutator task"));
                authorize[k].add(&run);
                written[k] += kw.http.map_or(0.0, |h| metric(h, USAGE_RECORDS));
                drop(kw);
            }
        }
        self.report.header(&format!(
            "18. Admin mutations (PauseToken/ResumeToken every {} ms) beside scenario 1's load on {n} tokens",
            MUTATION_EVERY.as_millis()
        ));
        for (k, (kind, _)) in KINDS.iter().enumerate() {
            self.report
                .row(&format!("Authorize, {kind}"), &authorize[k]);
            self.report
                .row(&format!("mutations, {kind}"), &mutations[k]);
        }
        let (work, rest) = (&mutations[0], &mutations[1]);
        self.report.note(format!(
            "mutation p50 {:+.1} µs, p99 {:+.1} µs, max {:+.1} µs with the usage writer at work \
             ({:.0} records written in its runs, {:.0} in the resting runs; errors {} / {})",
            work.us(0.5) - rest.us(0.5),
            work.us(0.99) - rest.us(0.99),
            work.us(1.0) - rest.us(1.0),
            written[0],
            written[1],
            work.errors,
            rest.errors,
        ));
        self.report.print_last(11);
    }
}

/// Pauses and resumes token `target` of `account` in turn every
/// [`MUTATION_EVERY`] until `stop`, timing the calls made after `from`
/// (each from its real send: a stall that spans several periods counts
/// once, so the tail is understated, alike for both kinds of run).
async fn mutate(
    mut tokens: pb::tokens_client::TokensClient<Channel>,
    bearer: String,
    (account_id, token_id): (u64, u64),
    from: Instant,
    stop: Arc<AtomicBool>,
) -> Run {
    let mut run = Run::new();
    let started = Instant::now();
    let mut pause = true;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(MUTATION_EVERY).await;
        let auth = bearer.parse().expect("ascii");
        let sent = Instant::now();
        let ok = if pause {
            let mut req = tonic::Request::new(pb::PauseTokenRequest {
                account_id,
                token_id,
            });
            req.metadata_mut().insert("authorization", auth);
            tokens.pause_token(req).await.is_ok()
        } else {
            let mut req = tonic::Request::new(pb::ResumeTokenRequest {
                account_id,
                token_id,
            });
            req.metadata_mut().insert("authorization", auth);
            tokens.resume_token(req).await.is_ok()
        };
        pause = !pause;
        if sent >= from {
            run.record(sent.elapsed().as_nanos() as u64, ok);
        }
    }
    run.elapsed = started
        .elapsed()
        .saturating_sub(from.saturating_duration_since(started));
    run
}
