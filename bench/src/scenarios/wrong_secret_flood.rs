//! Scenario 5, `wrong_secret_flood`: valid traffic (closed 16 × 8) beside a
//! fixed-rate flood of well-formed tokens with wrong secrets, on the
//! baseline and on keyward; valid p99 ratio and the argon2 work the flood
//! caused (read from keyward's /metrics).

use std::sync::Arc;

use crate::bench::{request, Bench};
use crate::load::{load, Mode, Run, Workload};
use crate::procs::metric;
use crate::report::verdict;

impl Bench {
    /// Valid traffic (closed 16 × 8) while ≥ 1,000/s well-formed tokens with
    /// wrong secrets (ever new ones) hit the same server.
    pub(crate) async fn wrong_secret_flood(&mut self) {
        let flood_rps = 2000u64;
        let w = self.workload(1);
        let mut flood_reqs = Vec::with_capacity(50_000);
        for i in 0..50_000usize {
            let id =
                keyward::token::parse(&self.valid[i % self.valid.len()].token).map_or(1, |p| p.id);
            let wrong = keyward::token::assemble(id, &keyward::token::new_secret_part());
            flood_reqs.push(request(wrong.expose(), &self.project));
        }
        let flood = Workload {
            requests: Arc::new(flood_reqs),
            batch: 1,
            checks: None,
            introspect: false,
            raw: None,
        };
        let (mut base, mut kw) = (Run::new(), Run::new());
        let before = self
            .keyward
            .http
            .map(|h| metric(h, "keyward_verify_total{path=\"argon2"))
            .unwrap_or(0.0);
        for r in 0..self.cli.rounds {
            for (addr, merged, name) in [
                (self.baseline.addr, &mut base, "baseline"),
                (self.keyward.addr, &mut kw, "keyward"),
            ] {
                let f = flood.clone();
                let (warmup, duration) = (self.cli.warmup, self.cli.duration);
                let flood_task = tokio::spawn(async move {
                    load(
                        addr,
                        Mode::Rate {
                            rps: flood_rps,
                            conns: 2,
                        },
                        &f,
                        warmup,
                        duration,
                        "flood",
                    )
                    .await
                });
                let valid = load(
                    addr,
                    Mode::Closed {
                        conns: 16,
                        inflight: 8,
                    },
                    &w,
                    warmup,
                    duration,
                    &format!("5. valid under flood {name} #{}", r + 1),
                )
                .await;
                let _ = flood_task.await;
                merged.add(&valid);
            }
        }
        let after = self
            .keyward
            .http
            .map(|h| metric(h, "keyward_verify_total{path=\"argon2"))
            .unwrap_or(0.0);
        let queue = self
            .keyward
            .http
            .map(|h| metric(h, "keyward_argon2_queue_depth"))
            .unwrap_or(0.0);
        self.report.header(&format!(
            "5. Valid traffic (16 × 8) under a flood of {flood_rps}/s wrong secrets"
        ));
        self.report.row("baseline (no-op), valid", &base);
        self.report.row("keyward, valid", &kw);
        let p99 = kw.us(0.99) / base.us(0.99);
        self.report.note(format!(
            "valid p99 ratio {p99:.3} (target ≤ 2: {}); argon2 verifies caused by the flood: {} (wrong secrets \
             of known tokens are refused by the verified digest), argon2 queue depth after: {queue}",
            verdict(p99 <= 2.0),
            after - before
        ));
        self.report.print_last(9);
    }
}
