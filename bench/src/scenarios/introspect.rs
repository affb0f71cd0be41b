//! Scenario 15, `introspect`: `Introspect` against `Authorize` on the same
//! keyward, same tokens, sequential (cost per call) and closed loop
//! (throughput); the target is Introspect within 1.1× of Authorize.

use crate::bench::Bench;
use crate::load::{load, Mode, Run, Workload};
use crate::report::verdict;

impl Bench {
    /// Introspect against Authorize on the same keyward and tokens:
    /// sequential and 16 × 8 closed loop, alternating each round.
    pub(crate) async fn introspect(&mut self) {
        let authorize = self.workload(1);
        let introspect = Workload {
            introspect: true,
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
                (sequential, &introspect, "Introspect seq"),
                (closed, &authorize, "Authorize 16x8"),
                (closed, &introspect, "Introspect 16x8"),
            ]
            .into_iter()
            .enumerate()
            {
                let (warmup, duration) = (self.cli.warmup, self.cli.duration);
                let label = format!("15. {name} #{}", r + 1);
                runs[k].add(&load(self.keyward.addr, mode, w, warmup, duration, &label).await);
            }
        }
        self.report
            .header("15. Introspect vs Authorize (keyward, same tokens)");
        self.report.row("Authorize, sequential", &runs[0]);
        self.report.row("Introspect, sequential", &runs[1]);
        self.report.row("Authorize, 16 × 8", &runs[2]);
        self.report.row("Introspect, 16 × 8", &runs[3]);
        let cost = runs[1].us(0.5) / runs[0].us(0.5);
        let tput = runs[2].rps() / runs[3].rps();
        self.report.note(format!(
            "Introspect / Authorize: sequential p50 {cost:.3}, closed-loop cost (Authorize req/s ÷ Introspect req/s) {tput:.3} (target ≤ 1.1: {})",
            verdict(cost <= 1.1 && tput <= 1.1)
        ));
        self.report.print_last(11);
    }
}
