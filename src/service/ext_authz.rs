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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, HeaderAppendAction, HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use envoy_types::pb::google::protobuf::{value::Kind as ValueKind, Struct, Value};
use parking_lot::RwLock;
use tonic::{Request, Response, Status};

use crate::authz::Check;
use crate::engine::{Decision, Engine, Rate};
use crate::error::{Denial, WWW_AUTHENTICATE};
use crate::logs;
use crate::pb::v1::DenyReason;
use crate::routes::{Match, Routes, Unmatched};
use crate::service::pick_credential;

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

/// The request's header `name` (lower case), from `headers` or, when Envoy
/// sends raw headers, from `header_map`.
fn header<'a>(
    http: &'a envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest,
    name: &str,
) -> Option<&'a str> {
    if let Some(v) = http.headers.get(name) {
        return Some(v);
    }
    http.header_map.as_ref().and_then(|m| {
        m.headers
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(name))
            .and_then(|h| {
                if h.value.is_empty() {
                    std::str::from_utf8(&h.raw_value).ok()
                } else {
                    Some(h.value.as_str())
                }
            })
    })
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

fn number(n: u64) -> Value {
    Value {
        kind: Some(ValueKind::NumberValue(n as f64)),
    }
}

/// `ms` (unix ms) as RFC 3339, UTC, with milliseconds.
fn rfc3339(ms: i64) -> String {
    let since_epoch = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(UNIX_EPOCH + since_epoch).to_string()
}

/// An allow: the ids, and the expiry and successor when there are any, on
/// the upstream request (overwritten, or removed when there is none, so a
/// client cannot supply its own), the credential removed, the ids as
/// metadata.
fn allow(d: &Decision, template: &str, strip: bool) -> CheckResponse {
    let (token_id, account_id) = (d.token_id, d.account_id);
    let mut http = OkHttpResponseBuilder::new();
    let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
    http.add_header(TOKEN_ID_HEADER, token_id.to_string(), overwrite, false);
    http.add_header(ACCOUNT_ID_HEADER, account_id.to_string(), overwrite, false);
    match d.expires_at_ms {
        Some(ms) => http.add_header(EXPIRES_AT_HEADER, rfc3339(ms), overwrite, false),
        None => http.remove_header(EXPIRES_AT_HEADER),
    };
    if d.replaced_by == 0 {
        http.remove_header(REPLACED_BY_HEADER);
    } else {
        http.add_header(
            REPLACED_BY_HEADER,
            d.replaced_by.to_string(),
            overwrite,
            false,
        );
    }
    if let Some(rate) = d.rate {
        // To the client, on the response (a limited token only).
        http.add_response_header(
            "ratelimit-remaining",
            rate.remaining.to_string(),
            overwrite,
            false,
        );
    }
    if strip {
        http.remove_header("authorization")
            .remove_header("api-token");
    }
    let mut fields = HashMap::with_capacity(3);
    fields.insert("token_id".to_string(), number(token_id));
    fields.insert("account_id".to_string(), number(account_id));
    fields.insert(
        "route".to_string(),
        Value {
            kind: Some(ValueKind::StringValue(template.to_string())),
        },
    );
    let mut resp = CheckResponse::with_status(Status::ok(""));
    resp.set_http_response(http)
        .set_dynamic_metadata(Some(Struct { fields }));
    resp
}

impl ExtAuthzService {
    async fn decide(&self, req: &CheckRequest) -> Result<CheckResponse, Status> {
        let m = &self.engine.metrics().check;
        let Some(http) = req
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
        else {
            m.unsafe_path.increment(1);
            return Ok(deny(false, "the check carries no HTTP request"));
        };
        let routes = self.routes.current();
        let needed = match routes.find(&http.method, &http.path) {
            Match::Route(n) => n,
            Match::Unmatched if routes.unmatched == Unmatched::Allow => {
                m.unmatched_allow.increment(1);
                // Through unchecked, but never with ids a client made up.
                let mut http = OkHttpResponseBuilder::new();
                http.remove_header(TOKEN_ID_HEADER)
                    .remove_header(ACCOUNT_ID_HEADER)
                    .remove_header(EXPIRES_AT_HEADER)
                    .remove_header(REPLACED_BY_HEADER);
                let mut resp = CheckResponse::with_status(Status::ok(""));
                resp.set_http_response(http);
                return Ok(resp);
            }
            Match::Unmatched => {
                m.unmatched_deny.increment(1);
                return Ok(deny(false, "no route allows this request"));
            }
            Match::Unsafe(why) => {
                m.unsafe_path.increment(1);
                // Rate-limited: anyone can send these. The path is logged
                // without its query string (which may carry anything).
                if logs::UNSAFE_REQUESTS.admit() {
                    let path = http.path.split_once('?').map_or(&*http.path, |(p, _)| p);
                    tracing::info!(
                        method = &*logs::clip(&http.method),
                        path = &*logs::clip(path),
                        reason = why.label(),
                        "check refused: a request keyward does not judge"
                    );
                }
                return Ok(deny(false, why.message()));
            }
        };
        let credential = pick_credential(header(http, "authorization"), header(http, "api-token"));
        let Some(token) = credential.filter(|t| !t.is_empty()) else {
            m.deny.increment(1);
            self.engine.metrics().deny(DenyReason::Malformed);
            return Ok(deny(
                true,
                "missing credential: send `Authorization: Bearer <token>` or `Api-Token: <token>`",
            ));
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
                return Ok(too_many(&rate, denial.message));
            }
            return Ok(deny(denial.unauthenticated, denial.message));
        }
        m.allow.increment(1);
        self.engine.metrics().allow.increment(1);
        Ok(allow(&d, needed.template, routes.strip_credential))
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthzService {
    async fn check(&self, req: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        // Not ready is keyward's failure, not a denial: Envoy decides.
        self.engine.ensure_ready()?;
        let start = Instant::now();
        let out = self.decide(req.get_ref()).await?;
        self.engine
            .metrics()
            .check
            .seconds
            .record(start.elapsed().as_secs_f64());
        Ok(Response::new(out))
    }
}
