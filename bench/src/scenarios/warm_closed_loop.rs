//! Scenario 1, `warm_closed_loop`: Authorize with a warm cache, 10,000
//! distinct tokens, closed loop 16 connections × 8 in flight, keyward
//! against the no-op baseline; its baseline req/s is the peak scenario 3
//! takes percentages of.

use crate::bench::Bench;
use crate::load::Mode;

impl Bench {
    pub(crate) async fn warm_closed_loop(&mut self) {
        let w = self.workload(1);
        let (base, _) = self
            .closed_pair(
                "1. Warm cache, 10,000 distinct tokens, closed loop 16 conns × 8 in flight",
                w,
                Mode::Closed {
                    conns: 16,
                    inflight: 8,
                },
                (0.90, 1.2),
            )
            .await;
        self.peak = Some(base.rps());
    }
}
