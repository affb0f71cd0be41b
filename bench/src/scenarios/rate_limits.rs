//! Scenario 16, `rate_limits`: scenario 1's load (Authorize, 10,000
//! distinct tokens, 16 connections × 8 in flight) on three keywards
//! seeded alike but for sending limits, alternating each round: every
//! token unlimited (the main keyward), every token limited and never
//! reaching its limit (10^12 per 31 days; target: throughput ≥ 0.95×,
//! p99 ≤ 1.1× unlimited), and every token limited to 5 per second, so
//! most answers are RATE_LIMITED denials (which must cost no more than
//! allows: p50 and p99 no higher than the never-reached run). Then a
//! check of correctness: one token of the hit keyward, asked sequentially
//! for a measured time, is never allowed more than 5 + 5 × seconds.

use std::time::Instant;

use keyward::pb::v1::authorizer_client::AuthorizerClient;

use crate::bench::{request, Bench};
use crate::load::{load, Mode, Run, Workload};
use crate::procs::start_keyward;
use crate::report::verdict;

/// The limit that is hit: per second.
const HIT: u64 = 5;

impl Bench {
    pub(crate) async fn rate_limits(&mut self) {
        let n = self.valid.len();
        let month = 31 * 24 * 3600 * 1000;
        let never_dir = tempfile::tempdir().expect("tempdir");
        let hit_dir = tempfile::tempdir().expect("tempdir");
        let never =
            keyward::seed::seed_limited(never_dir.path(), n, true, &[(1_000_000_000_000, month)])
                .await
                .expect("seed");
        let hit = keyward::seed::seed_limited(hit_dir.path(), n, true, &[(HIT, 1000)])
            .await
            .expect("seed");
        let (never_kw, _) = start_keyward(&self.layout, &self.keyward_bin, never_dir.path());
        let (hit_kw, _) = start_keyward(&self.layout, &self.keyward_bin, hit_dir.path());
        let workload = |tokens: &[keyward::token::Secret], project: &str| Workload {
            requests: std::sync::Arc::new(
                tokens
                    .iter()
                    .map(|t| request(t.expose(), project))
                    .collect(),
            ),
            batch: 1,
            checks: None,
            introspect: false,
            raw: None,
        };
        let targets = [
            ("unlimited", self.keyward.addr, self.workload(1)),
            (
                "limited, never reached",
                never_kw.addr,
                workload(&never.tokens, &never.project),
            ),
            (
                "limited, hit (5/s)",
                hit_kw.addr,
                workload(&hit.tokens, &hit.project),
            ),
        ];
        let mode = Mode::Closed {
            conns: 16,
            inflight: 8,
        };
        let mut runs: Vec<Run> = (0..3).map(|_| Run::new()).collect();
        for r in 0..self.cli.rounds {
            for (k, (name, addr, w)) in targets.iter().enumerate() {
                let label = format!("16. {name} #{}", r + 1);
                runs[k]
                    .add(&load(*addr, mode, w, self.cli.warmup, self.cli.duration, &label).await);
            }
        }
        // Correctness where limits are hit: one token, sequential.
        let mut client = AuthorizerClient::connect(format!("http://{}", hit_kw.addr))
            .await
            .expect("connect");
        let req = request(hit.tokens[0].expose(), &hit.project);
        let start = Instant::now();
        let (mut allowed, mut limited, mut other) = (0u64, 0u64, 0u64);
        while start.elapsed() < self.cli.duration {
            match client.authorize(req.clone()).await {
                Ok(d) if d.get_ref().allowed => allowed += 1,
                Ok(d) if d.get_ref().reason == keyward::pb::v1::DenyReason::RateLimited as i32 => {
                    limited += 1
                }
                _ => other += 1,
            }
        }
        // The load above spent this token's budget too: the bound holds
        // for the sequential pass alone (plus the burst it may find).
        let secs = start.elapsed().as_secs_f64();
        let bound = HIT as f64 + HIT as f64 * secs.ceil();
        self.report.header(
            "16. Sending limits: scenario 1 unlimited vs limited (never reached) vs limited (hit)",
        );
        for (k, (name, _, _)) in targets.iter().enumerate() {
            self.report.row(name, &runs[k]);
        }
        let tput = runs[1].rps() / runs[0].rps();
        let p99 = runs[1].us(0.99) / runs[0].us(0.99);
        self.report.note(format!(
            "limited (never reached) / unlimited: throughput {tput:.3} (target ≥ 0.95: {}), p99 {p99:.3} (target ≤ 1.1: {})",
            verdict(tput >= 0.95),
            verdict(p99 <= 1.1)
        ));
        let (p50h, p99h) = (
            runs[2].us(0.5) / runs[1].us(0.5),
            runs[2].us(0.99) / runs[1].us(0.99),
        );
        self.report.note(format!(
            "limits hit / never reached (mostly denials vs allows): p50 {p50h:.3}, p99 {p99h:.3} (target ≤ 1.0 within noise: {})",
            verdict(p50h <= 1.05 && p99h <= 1.1)
        ));
        self.report.note(format!(
            "one hit token, sequential {secs:.1} s: {allowed} allowed (bound {bound:.0}: {}), {limited} RATE_LIMITED, {other} other (target 0: {})",
            verdict(allowed as f64 <= bound),
            verdict(other == 0)
        ));
        self.report.print_last(14);
    }
}
