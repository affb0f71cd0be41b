//! Scenario 3, `fixed_rate`: a fixed rate of 50 % and 80 % of the
//! baseline's peak (scenario 1's, measured here if scenario 1 did not
//! run), latency from the intended send time; p99 against the baseline's.

use crate::bench::Bench;
use crate::load::{load, Mode};
use crate::report::{tail_timeline, verdict};

impl Bench {
    pub(crate) async fn fixed_rate(&mut self) {
        if self.peak.is_none() {
            let w = self.workload(1);
            let b = load(
                self.baseline.addr,
                Mode::Closed {
                    conns: 16,
                    inflight: 8,
                },
                &w,
                self.cli.warmup,
                self.cli.duration,
                "3. baseline peak",
            )
            .await;
            self.peak = Some(b.rps());
        }
        let peak = self.peak.unwrap_or(1000.0);
        for pct in [50u64, 80] {
            let rps = (peak * pct as f64 / 100.0) as u64;
            let w = self.workload(1);
            let title = format!("3. Fixed rate {rps} req/s ({pct} % of baseline peak {peak:.0})");
            let (base, kw) = self
                .compare(
                    Mode::Rate { rps, conns: 16 },
                    &w,
                    &format!("3. rate {pct}%"),
                )
                .await;
            self.report.header(&title);
            self.report.row("baseline (no-op)", &base);
            self.report.row("keyward", &kw);
            let d = kw.us(0.99) - base.us(0.99);
            self.report.note(format!(
                "p99 difference {d:+.1} µs (target ≤ +50 µs: {})",
                verdict(d <= 50.0)
            ));
            self.report
                .note(format!("baseline: {}", tail_timeline(&base)));
            self.report.note(format!("keyward: {}", tail_timeline(&kw)));
            self.report.print_last(13);
        }
    }
}
