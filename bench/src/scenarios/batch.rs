//! Scenario 7, `batch`: AuthorizeBatch of 100 checks against one Authorize
//! on keyward, sequential; the ratio of their p50s.

use crate::bench::Bench;
use crate::load::{load, Mode, Run};
use crate::report::verdict;

impl Bench {
    pub(crate) async fn batch(&mut self) {
        let single = self.workload(1);
        let batch = self.workload(100);
        let mode = Mode::Closed {
            conns: 1,
            inflight: 1,
        };
        let (mut one, mut hundred) = (Run::new(), Run::new());
        for r in 0..self.cli.rounds {
            one.add(
                &load(
                    self.keyward.addr,
                    mode,
                    &single,
                    self.cli.warmup,
                    self.cli.duration,
                    &format!("7. single #{}", r + 1),
                )
                .await,
            );
            hundred.add(
                &load(
                    self.keyward.addr,
                    mode,
                    &batch,
                    self.cli.warmup,
                    self.cli.duration,
                    &format!("7. batch of 100 #{}", r + 1),
                )
                .await,
            );
        }
        self.report
            .header("7. AuthorizeBatch of 100 vs one Authorize (keyward, sequential)");
        self.report.row("Authorize", &one);
        self.report.row("AuthorizeBatch (100 checks)", &hundred);
        let ratio = hundred.us(0.5) / one.us(0.5);
        self.report.note(format!(
            "batch p50 / single p50 = {ratio:.2} (target ≤ 5: {})",
            verdict(ratio <= 5.0)
        ));
        self.report.print_last(9);
    }
}
