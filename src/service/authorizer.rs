//! `keyward.v1.Authorizer`: the hot path on the wire (Authorize,
//! AuthorizeBatch), and Introspect (a token described to its holder).

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use crate::authz::Check;
use crate::engine::{Decision, Engine};
use crate::error::{Error, Result};
use crate::logs;
use crate::metrics::Metrics;
use crate::model::{limits, Kind, Level};
use crate::pb::v1::{self as pb, authorizer_server::Authorizer};
use crate::wire::ts;

/// The Authorizer service.
#[derive(Debug, Clone)]
pub struct AuthorizerService {
    /// Shared engine.
    pub engine: Arc<Engine>,
}

/// Checks the parts of a request that are not the token; `field` prefixes
/// error paths (e.g. `checks[3]`). Pure: the fuzz targets call it.
pub fn check_of<'a>(field: &str, req: &'a pb::AuthorizeRequest) -> Result<Check<'a>> {
    let path = |f: &str| {
        if field.is_empty() {
            f.to_string()
        } else {
            format!("{field}.{f}")
        }
    };
    let resource = req
        .resource
        .as_ref()
        .ok_or_else(|| Error::invalid(path("resource"), "is required"))?;
    let kind = Kind::from_wire(resource.r#type).ok_or_else(|| {
        Error::invalid(
            path("resource.type"),
            "must be ACCOUNT, PROJECT, SANDBOX or DOMAIN",
        )
    })?;
    if resource.id.is_empty() || resource.id.len() > limits::RESOURCE_ID_MAX {
        return Err(Error::invalid(path("resource.id"), "must be 1..100 bytes"));
    }
    let level = Level::from_wire(req.level)
        .ok_or_else(|| Error::invalid(path("level"), "must be VIEWER (10) or ADMIN (100)"))?;
    if req.scope.len() > 64 {
        return Err(Error::invalid(path("scope"), "must be at most 64 bytes"));
    }
    Ok(Check {
        kind,
        id: &resource.id,
        level,
        scope: &req.scope,
        cost: req.cost.unwrap_or(1),
    })
}

impl AuthorizerService {
    async fn decide(
        &self,
        req: &pb::AuthorizeRequest,
        check: &Check<'_>,
    ) -> Result<pb::AuthorizeResponse> {
        let m = &self.engine.metrics();
        let d: Decision = self
            .engine
            .authorize(&req.token, check)
            .await
            .inspect_err(|_| m.shed.increment(1))?;
        if d.allowed {
            m.allow.increment(1);
            tracing::debug!(
                token.id = d.token_id,
                resource.id = check.id,
                decision = "allow",
                "authorize"
            );
        } else {
            m.deny(d.reason);
            // Rate-limited: a caller decides how many denials there are.
            if logs::limiter_for(d.reason).admit() {
                tracing::info!(
                    token.id = d.token_id,
                    resource.kind = check.kind.as_str(),
                    resource.id = &*logs::clip(check.id),
                    decision = "deny",
                    reason = Metrics::reason_label(d.reason),
                    "authorize"
                );
            }
        }
        Ok(pb::AuthorizeResponse {
            allowed: d.allowed,
            reason: d.reason as i32,
            token_id: d.token_id,
            account_id: d.account_id,
            expires_at: d.expires_at_ms.map(ts),
            replaced_by: d.replaced_by,
            remaining: d.rate.map(|r| r.remaining),
            retry_after: d
                .rate
                .and_then(|r| r.retry_after_ms)
                .filter(|_| !d.allowed)
                .map(crate::clock::wire_duration_ms),
        })
    }
}

/// Checks of an `AuthorizeBatch` decided between two yields to the runtime.
const BATCH_YIELD_EVERY: usize = 64;

#[tonic::async_trait]
impl Authorizer for AuthorizerService {
    async fn authorize(
        &self,
        req: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::AuthorizeResponse>, Status> {
        self.engine.ensure_ready()?;
        let start = Instant::now();
        let req = req.get_ref();
        let check = check_of("", req)?;
        let out = self.decide(req, &check).await?;
        self.engine
            .metrics()
            .authorize_seconds
            .record(start.elapsed().as_secs_f64());
        Ok(Response::new(out))
    }

    async fn authorize_batch(
        &self,
        req: Request<pb::AuthorizeBatchRequest>,
    ) -> Result<Response<pb::AuthorizeBatchResponse>, Status> {
        self.engine.ensure_ready()?;
        let checks = &req.get_ref().checks;
        if checks.len() > limits::BATCH_MAX {
            return Err(
                Error::invalid("checks", format!("at most {} checks", limits::BATCH_MAX)).into(),
            );
        }
        let parsed = checks
            .iter()
            .enumerate()
            .map(|(i, c)| check_of(&format!("checks[{i}]"), c))
            .collect::<Result<Vec<_>>>()?;
        let mut decisions = Vec::with_capacity(checks.len());
        for (i, (req, check)) in checks.iter().zip(&parsed).enumerate() {
            // Decisions from memory never wait: a batch of 1,000 would hold
            // its worker thread for the whole run, ahead of other callers.
            if i % BATCH_YIELD_EVERY == BATCH_YIELD_EVERY - 1 {
                tokio::task::yield_now().await;
            }
            decisions.push(self.decide(req, check).await?);
        }
        Ok(Response::new(pb::AuthorizeBatchResponse { decisions }))
    }

    async fn introspect(
        &self,
        req: Request<pb::IntrospectRequest>,
    ) -> Result<Response<pb::IntrospectResponse>, Status> {
        self.engine.ensure_ready()?;
        // Not an Authorize decision: not counted in keyward_decisions_total
        // (a shed verify is in keyward_argon2_shed_total).
        let token = self.engine.introspect(&req.get_ref().token).await?;
        tracing::debug!(token.id = token.id, "introspect");
        Ok(Response::new(pb::IntrospectResponse { token: Some(token) }))
    }
}
