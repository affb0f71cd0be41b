//! `envoy.service.auth.v3.Authorization/Check`: Envoy's (and Istio's)
//! external authorization, answered with the same hot path as `Authorize`.
//!
//! The routes file ([`crate::routes`]) says which check a request needs.
//! Allowed: OK with `x-keyward-token-id` and `x-keyward-account-id` set on
//! the upstream request (overwriting whatever the client sent), and, when
//! the token expires, `x-keyward-token-expires-at` (RFC 3339, UTC,
//! milliseconds) and, when it was reset (its grace period),
//! `x-keyward-token-replaced-by` (removed from the request otherwise, so a
//! client cannot supply them), the credential header removed (by default),
//! and the ids as dynamic metadata.
//! A token with rate limits gets `ratelimit-remaining` on the response;
//! spent, it is denied with `429` and `retry-after` and `ratelimit-*`
//! headers ([`too_many`]).
//! Denied: `401 {"error": ..}` for a missing, malformed, unknown, expired
//! or paused token (with `www-authenticate`), `403 {"errors": ..}` for
//! insufficient access, a request no route allows, or one keyward does not
//! judge ([`crate::routes::Unsafe`]: a method that is not an upper-case
//! token; `;`, `#`, `\`, dot or empty segments or percent-encoding other
//! than of unreserved characters in the path), which is also logged
//! (rate-limited) with its reason, whatever `unmatched` says. keyward's
//! own failure (loading, overloaded) is a gRPC `UNAVAILABLE`, not a
//! denial, so Envoy's `failure_mode_allow` decides.

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpStatusCode};
use envoy_types::ext_authz::v3::{CheckResponseExt, DeniedHttpResponseBuilder};
use parking_lot::RwLock;
use tonic::{Response, Status};

use crate::authz::Check;
use crate::engine::{Decision, Engine, Rate};
use crate::error::{Denial, WWW_AUTHENTICATE};
use crate::logs;
use crate::pb::v1::DenyReason;
use crate::routes::{Match, Routes, Unmatched};
use crate::service::pick_credential;

mod answer;
mod request;
mod server;

pub use answer::{Allow, Answer};
pub use request::{BadCheck, CheckCall};
pub use server::CheckServer;

/// Header with the allowed token's id, set on the upstream request.
pub const TOKEN_ID_HEADER: &str = "x-keyward-token-id";
/// Header with the allowed token's account id, set on the upstream request.
pub const ACCOUNT_ID_HEADER: &str = "x-keyward-account-id";
/// Header with the allowed token's expiry (RFC 3339), set on the upstream
/// request when the token expires: the service may warn its client.
pub const EXPIRES_AT_HEADER: &str = "x-keyward-token-expires-at";
/// Header with the id of the token that replaced the allowed one by a
/// reset, set on the upstream request during the grace period: the service
/// may tell its client to switch before the expiry.
pub const REPLACED_BY_HEADER: &str = "x-keyward-token-replaced-by";

/// The routes in force; replaced whole on reload, never edited.
#[derive(Debug, Default)]
pub struct SharedRoutes(RwLock<Arc<Routes>>);

impl SharedRoutes {
    /// Routes to start with.
    pub fn new(routes: Routes) -> Self {
        SharedRoutes(RwLock::new(Arc::new(routes)))
    }

    /// The routes now (requests in flight keep the ones they started with).
    pub fn current(&self) -> Arc<Routes> {
        self.0.read().clone()
    }

    /// Puts new routes in force.
    pub fn replace(&self, routes: Routes) {
        *self.0.write() = Arc::new(routes);
    }
}

/// The ext_authz service.
#[derive(Debug, Clone)]
pub struct ExtAuthzService {
    /// Shared engine.
    pub engine: Arc<Engine>,
    /// The routes in force.
    pub routes: Arc<SharedRoutes>,
}

/// A denial: `401 {"error": m}` with `www-authenticate`, or
/// `403 {"errors": m}`, as JSON.
fn deny(unauthenticated: bool, message: &str) -> CheckResponse {
    let mut http = DeniedHttpResponseBuilder::new();
    http.add_header("content-type", "application/json", None, false);
    let (status, body) = if unauthenticated {
        http.add_header("www-authenticate", WWW_AUTHENTICATE, None, false);
        (
            HttpStatusCode::Unauthorized,
            serde_json::json!({ "error": message }),
        )
    } else {
        (
            HttpStatusCode::Forbidden,
            serde_json::json!({ "errors": message }),
        )
    };
    http.set_http_status(status).set_body(body.to_string());
    let code = if unauthenticated {
        Status::unauthenticated(message)
    } else {
        Status::permission_denied(message)
    };
    let mut resp = CheckResponse::with_status(code);
    resp.set_http_response(http);
    resp
}

/// Whole seconds in `ms`, rounded up.
fn seconds_up(ms: i64) -> String {
    (ms.max(0).unsigned_abs().div_ceil(1000)).to_string()
}

/// A rate-limit denial: `429 {"errors": m}` with `retry-after` (seconds,
/// rounded up; absent when the cost can never fit) and the tightest
/// limit's `ratelimit-limit`, `ratelimit-remaining` and `ratelimit-reset`
/// (seconds until it is full again, rounded up).
fn too_many(rate: &Rate, message: &str) -> CheckResponse {
    let mut http = DeniedHttpResponseBuilder::new();
    http.add_header("content-type", "application/json", None, false);
    if let Some(ms) = rate.retry_after_ms {
        http.add_header("retry-after", seconds_up(ms), None, false);
    }
    http.add_header("ratelimit-limit", rate.limit.to_string(), None, false);
    http.add_header(
        "ratelimit-remaining",
        rate.remaining.to_string(),
        None,
        false,
    );
    http.add_header("ratelimit-reset", seconds_up(rate.reset_ms), None, false);
    http.set_http_status(HttpStatusCode::TooManyRequests)
        .set_body(serde_json::json!({ "errors": message }).to_string());
    let mut resp = CheckResponse::with_status(Status::resource_exhausted(message));
    resp.set_http_response(http);
    resp
}

/// `ms` (unix ms) as RFC 3339, UTC, with milliseconds.
fn rfc3339(ms: i64) -> String {
    let since_epoch = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(UNIX_EPOCH + since_epoch).to_string()
}

/// An allow, from the decision, the route and the routes file's options.
fn allow(d: &Decision, route: &Arc<str>, routes: &Routes) -> Answer {
    Answer::Allow(Allow {
        token_id: d.token_id,
        account_id: d.account_id,
        expires_at: d.expires_at_ms.map(rfc3339),
        replaced_by: d.replaced_by,
        remaining: d.rate.map(|r| r.remaining),
        strip: routes.strip_credential,
        metadata: routes.dynamic_metadata,
        route: route.clone(),
    })
}

impl ExtAuthzService {
    async fn decide(&self, req: &CheckCall) -> Result<Answer, Status> {
        let m = &self.engine.metrics().check;
        if !req.has_http() {
            m.unsafe_path.increment(1);
            return Ok(deny(false, "the check carries no HTTP request").into());
        }
        let routes = self.routes.current();
        let needed = match routes.find(req.method(), req.path()) {
            Match::Route(n) => n,
            Match::Unmatched if routes.unmatched == Unmatched::Allow => {
                m.unmatched_allow.increment(1);
                return Ok(Answer::unchecked());
            }
            Match::Unmatched => {
                m.unmatched_deny.increment(1);
                return Ok(deny(false, "no route allows this request").into());
            }
            Match::Unsafe(why) => {
                m.unsafe_path.increment(1);
                // Rate-limited: anyone can send these. The path is logged
                // without its query string (which may carry anything).
                if logs::UNSAFE_REQUESTS.admit() {
                    let path = req.path().split_once('?').map_or(req.path(), |(p, _)| p);
                    tracing::info!(
                        method = &*logs::clip(req.method()),
                        path = &*logs::clip(path),
                        reason = why.label(),
                        "check refused: a request keyward does not judge"
                    );
                }
                return Ok(deny(false, why.message()).into());
            }
        };
        let credential = pick_credential(req.authorization(), req.api_token());
        let Some(token) = credential.filter(|t| !t.is_empty()) else {
            m.deny.increment(1);
            self.engine.metrics().deny(DenyReason::Malformed);
            return Ok(deny(
                true,
                "missing credential: send `Authorization: Bearer <token>` or `Api-Token: <token>`",
            )
            .into());
        };
        let check = Check {
            kind: needed.kind,
            id: &needed.id,
            level: needed.level,
            scope: needed.scope,
            cost: needed.cost,
        };
        let d = self
            .engine
            .authorize(token, &check)
            .await
            .inspect_err(|_| {
                self.engine.metrics().shed.increment(1);
            })?;
        let wrong_account = needed
            .account
            .as_deref()
            .is_some_and(|a| a != d.account_id.to_string());
        if !d.allowed || wrong_account {
            let reason = if d.allowed {
                // Only an allowed request spends: give back what this
                // decision took.
                self.engine
                    .refund(d.token_id, d.rate.map_or(0, |_| needed.cost));
                DenyReason::WrongAccount
            } else {
                d.reason
            };
            let denial = Denial::of(reason);
            m.deny.increment(1);
            self.engine.metrics().deny(reason);
            // Rate-limited: a caller decides how many denials there are.
            if logs::limiter_for(reason).admit() {
                tracing::info!(
                    token.id = d.token_id,
                    route = &*logs::clip(needed.template),
                    resource.kind = check.kind.as_str(),
                    resource.id = &*logs::clip(check.id),
                    reason = denial.label,
                    "check denied"
                );
            }
            if let (DenyReason::RateLimited, Some(rate)) = (reason, d.rate) {
                return Ok(too_many(&rate, denial.message).into());
            }
            return Ok(deny(denial.unauthenticated, denial.message).into());
        }
        m.allow.increment(1);
        self.engine.metrics().allow.increment(1);
        Ok(allow(&d, needed.template, &routes))
    }

    /// Answers a whole `CheckRequest` with Envoy's `CheckResponse`, through
    /// the same wire forms the gRPC service uses (for in-process callers:
    /// the fuzz targets).
    pub async fn check_message(&self, req: &CheckRequest) -> Result<CheckResponse, Status> {
        let call = CheckCall::decode(&prost::Message::encode_to_vec(req))
            .map_err(|e| Status::invalid_argument(format!("not a CheckRequest: {e}")))?;
        self.check(&call).await?.into_inner().to_message()
    }

    /// Answers one `Check`.
    pub async fn check(&self, req: &CheckCall) -> Result<Response<Answer>, Status> {
        // Not ready is keyward's failure, not a denial: Envoy decides.
        self.engine.ensure_ready()?;
        let start = Instant::now();
        let out = self.decide(req).await?;
        self.engine
            .metrics()
            .check
            .seconds
            .record(start.elapsed().as_secs_f64());
        Ok(Response::new(out))
    }
}

#[cfg(test)]
mod tests;
