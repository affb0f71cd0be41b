//! Scenario 2, `sequential`: one connection, one request at a time; the
//! p50 difference between keyward and the no-op baseline is keyward's cost
//! per call.

use crate::bench::Bench;
use crate::load::Mode;
use crate::report::verdict;

impl Bench {
    pub(crate) async fn sequential(&mut self) {
        let w = self.workload(1);
        let (base, kw) = self
            .compare(
                Mode::Closed {
                    conns: 1,
                    inflight: 1,
                },
                &w,
                "2. sequential",
            )
            .await;
        self.report
            .header("2. One connection, one request at a time");
        self.report.row("baseline (no-op)", &base);
        self.report.row("keyward", &kw);
        let d = kw.us(0.5) - base.us(0.5);
        self.report.note(format!(
            "p50 difference {d:+.1} µs (target ≤ +10 µs: {})",
            verdict(d <= 10.0)
        ));
        self.report.print_last(9);
    }
}
