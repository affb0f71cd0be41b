//! Scenario 4, `malformed_tokens`: scenario 1's load with every tenth token
//! broken (a bad checksum), keyward against the baseline.

use std::sync::Arc;

use crate::bench::Bench;
use crate::load::{Mode, Workload};

impl Bench {
    pub(crate) async fn malformed_tokens(&mut self) {
        // Every tenth request has a broken checksum.
        let mut reqs = self.valid.clone();
        for (i, r) in reqs.iter_mut().enumerate() {
            if i % 10 == 0 {
                let mut b = r.token.clone().into_bytes();
                b[20] = if b[20] == b'a' { b'b' } else { b'a' };
                r.token = String::from_utf8(b).unwrap_or_default();
            }
        }
        let w = Workload {
            requests: Arc::new(reqs),
            batch: 1,
            checks: None,
            introspect: false,
            raw: None,
        };
        self.closed_pair(
            "4. 10 % malformed tokens (bad checksum), 16 × 8",
            w,
            Mode::Closed {
                conns: 16,
                inflight: 8,
            },
            (0.90, 1.2),
        )
        .await;
    }
}
