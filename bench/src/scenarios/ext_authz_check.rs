//! Scenario 9, `ext_authz_check`: Envoy's ext_authz `Check` against
//! `Authorize` on the same keyward, same tokens and resource, sequential
//! and closed loop.

use std::sync::Arc;

use crate::bench::{check_request, Bench};
use crate::load::{load, Mode, Run, Workload};
use crate::report::verdict;

impl Bench {
    /// ext_authz Check against Authorize on the same keyward, same tokens,
    /// same resource: sequential (cost per call) and closed loop.
    pub(crate) async fn ext_authz_check(&mut self) {
        let authorize = self.workload(1);
        let check = Workload {
            checks: Some(Arc::new(
                self.valid
                    .iter()
                    .map(|r| check_request(&r.token, &self.project))
                    .collect(),
            )),
            ..self.workload(1)
        };
        let sequential = Mode::Closed {
            conns: 1,
            inflight: 1,
        };
        let closed = Mode::Closed {
            conns: 16,
            inflight: 8,
        };
        let mut runs: Vec<Run> = (0..4).map(|_| Run::new()).collect();
        for r in 0..self.cli.rounds {
            for (k, (mode, w, name)) in [
                (sequential, &authorize, "Authorize seq"),
                (sequential, &check, "Check seq"),
                (closed, &authorize, "Authorize 16x8"),
                (closed, &check, "Check 16x8"),
            ]
            .into_iter()
            .enumerate()
            {
                let (warmup, duration) = (self.cli.warmup, self.cli.duration);
                let label = format!("9. {name} #{}", r + 1);
                runs[k].add(&load(self.keyward.addr, mode, w, warmup, duration, &label).await);
            }
        }
        self.report
            .header("9. ext_authz Check vs Authorize (keyward, same tokens and resource)");
        self.report.row("Authorize, sequential", &runs[0]);
        self.report.row("Check, sequential", &runs[1]);
        self.report.row("Authorize, 16 × 8", &runs[2]);
        self.report.row("Check, 16 × 8", &runs[3]);
        let cost = runs[1].us(0.5) / runs[0].us(0.5);
        let tput = runs[2].rps() / runs[3].rps();
        self.report.note(format!(
            "Check / Authorize: sequential p50 {cost:.3}, closed-loop cost (Authorize req/s ÷ Check req/s) {tput:.3} (target ≤ 1.2: {})",
            verdict(cost <= 1.2 && tput <= 1.2)
        ));
        self.report.print_last(11);
    }
}
