//! Scenario 15, `introspect`: `Introspect` against `Authorize` on the same
//! keyward, same tokens, sequential (cost per call) and closed loop
//! (throughput); the target is Introspect within 1.1× of Authorize.

use crate::bench::Bench;
use crate::load::Workload;

impl Bench {
    /// Introspect against Authorize on the same keyward and tokens:
    /// sequential and 16 × 8 closed loop, alternating each round.
    pub(crate) async fn introspect(&mut self) {
        let introspect = Workload {
            introspect: true,
            ..self.workload(1)
        };
        let header = "15. Introspect vs Authorize (keyward, same tokens)";
        let authorize = self.workload(1);
        self.versus_authorize(15, (&authorize, &introspect), "Introspect", header, 1.1)
            .await;
    }
}
