//! What scenarios 9 (`ext_authz_check`) and 15 (`introspect`) share: one
//! call measured against `Authorize` on the same keyward and tokens,
//! sequential (cost per call) and 16 × 8 closed loop (throughput),
//! alternating each round, reported as four rows and two ratios.

use crate::bench::Bench;
use crate::load::{load, Mode, Run, Workload};
use crate::report::verdict;

impl Bench {
    /// Runs `other` (named `name`) against `authorize` (Authorize calls)
    /// for scenario `number` under `header`, and notes the two ratios
    /// against `target`.
    pub(crate) async fn versus_authorize(
        &mut self,
        number: u32,
        (authorize, other): (&Workload, &Workload),
        name: &str,
        header: &str,
        target: f64,
    ) {
        let sequential = Mode::Closed {
            conns: 1,
            inflight: 1,
        };
        let closed = Mode::Closed {
            conns: 16,
            inflight: 8,
        };
        let (seq, loop_) = (format!("{name} seq"), format!("{name} 16x8"));
        let mut runs: Vec<Run> = (0..4).map(|_| Run::new()).collect();
        for r in 0..self.cli.rounds {
            for (k, (mode, w, label)) in [
                (sequential, authorize, "Authorize seq"),
                (sequential, other, seq.as_str()),
                (closed, authorize, "Authorize 16x8"),
                (closed, other, loop_.as_str()),
            ]
            .into_iter()
            .enumerate()
            {
                let (warmup, duration) = (self.cli.warmup, self.cli.duration);
                let label = format!("{number}. {label} #{}", r + 1);
                runs[k].add(&load(self.keyward.addr, mode, w, warmup, duration, &label).await);
            }
        }
        self.report.header(header);
        self.report.row("Authorize, sequential", &runs[0]);
        self.report.row(&format!("{name}, sequential"), &runs[1]);
        self.report.row("Authorize, 16 × 8", &runs[2]);
        self.report.row(&format!("{name}, 16 × 8"), &runs[3]);
        let cost = runs[1].us(0.5) / runs[0].us(0.5);
        let tput = runs[2].rps() / runs[3].rps();
        self.report.note(format!(
            "{name} / Authorize: sequential p50 {cost:.3}, closed-loop cost (Authorize req/s ÷ {name} req/s) {tput:.3} (target ≤ {target}: {})",
            verdict(cost <= target && tput <= target)
        ));
        self.report.print_last(11);
    }
}
