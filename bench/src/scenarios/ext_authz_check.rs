//! Scenario 9, `ext_authz_check`: Envoy's ext_authz `Check` against
//! `Authorize` on the same keyward, same tokens and resource, sequential
//! and closed loop.

use std::sync::Arc;

use crate::bench::{check_request, Bench};
use crate::load::Workload;

impl Bench {
    /// ext_authz Check against Authorize on the same keyward, same tokens,
    /// same resource: sequential (cost per call) and closed loop.
    pub(crate) async fn ext_authz_check(&mut self) {
        let check = Workload {
            checks: Some(Arc::new(
                self.valid
                    .iter()
                    .map(|r| check_request(&r.token, &self.project))
                    .collect(),
            )),
            ..self.workload(1)
        };
        let header = "9. ext_authz Check vs Authorize (keyward, same tokens and resource)";
        self.versus_authorize(9, &check, "Check", header, 1.2).await;
    }
}
