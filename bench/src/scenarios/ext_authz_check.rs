//! Scenario 9, `ext_authz_check`: Envoy's ext_authz `Check` against
//! `Authorize` on the same keyward, same tokens and resource, sequential
//! and closed loop. Both are sent pre-encoded ([`crate::raw`]): the
//! one-core client then does the same work for either call, and the
//! saturated ratio is the server's (with each message built and encoded
//! per call, the client ran out of core first: a `CheckRequest` is
//! several times an `AuthorizeRequest`'s work to encode).

use std::sync::Arc;

use crate::bench::{check_request, Bench};
use crate::load::Workload;
use crate::raw::RawCalls;

impl Bench {
    /// ext_authz Check against Authorize on the same keyward, same tokens,
    /// same resource: sequential (cost per call) and closed loop.
    pub(crate) async fn ext_authz_check(&mut self) {
        let checks: Vec<_> = self
            .valid
            .iter()
            .map(|r| check_request(&r.token, &self.project))
            .collect();
        let check = Workload {
            raw: Some(Arc::new(RawCalls::new(
                "/envoy.service.auth.v3.Authorization/Check",
                &checks,
                true,
            ))),
            ..self.workload(1)
        };
        let authorize = Workload {
            raw: Some(Arc::new(RawCalls::new(
                "/keyward.v1.Authorizer/Authorize",
                &self.valid,
                false,
            ))),
            ..self.workload(1)
        };
        let header =
            "9. ext_authz Check vs Authorize (keyward, same tokens and resource, both pre-encoded)";
        self.versus_authorize(9, (&authorize, &check), "Check", header, 1.2)
            .await;
    }
}
