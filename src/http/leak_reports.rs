//! `POST /v1/secret-scanning/reports`: GitHub's secret-scanning partner
//! reports. No caller token: the body's ECDSA signature, by a key of
//! `--leak-report-keys`, is the credential ([`crate::leak_report`]).
//!
//! In order: keys configured (404), a place among [`REPORTS_IN_FLIGHT`]
//! (503), the body within [`BODY_MAX`] (413) and [`BODY_DEADLINE`] (408),
//! the signature (401), the items (400, 422), the replay window (401);
//! then each distinct string is judged by [`Engine::judge_leak`] with at
//! most [`ARGON2_PER_REPORT`] argon2 verifies for the whole report. A
//! report that cannot be judged whole (argon2 shed or its budget spent, the
//! store down) is answered 503 and forgotten by the replay window, so
//! GitHub's retry is accepted; tokens paused before stay paused (a pause is
//! idempotent). The answer is GitHub's: `[{"token_raw", "token_type",
//! "label"}]`, one entry per item, in order.
//!
//! Nothing here logs or answers with a reported string except the answer's
//! `token_raw`, which echoes what GitHub sent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use metrics::counter;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::admin::LeakReporter;
use crate::engine::Engine;
use crate::error::Error;
use crate::leak_report::{parse_report, KeysFile, Refusal, ReplayGuard, ReportError, BODY_MAX};

/// The route.
pub const PATH: &str = "/v1/secret-scanning/reports";

/// Reports judged at once; more wait up to [`REPORTS_QUEUE_WAIT`], then 503.
pub const REPORTS_IN_FLIGHT: usize = 4;

/// Longest wait for a place.
pub const REPORTS_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// Time the sender has to send the whole body, from the end of its headers.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// argon2 verifies one report may cost (reported strings whose verified
/// digest is unknown: rare on a primary, which keeps every token's).
pub const ARGON2_PER_REPORT: usize = 32;

/// Who signed a report, as the audit log names the actor.
pub const ACTOR: &str = "GitHub secret scanning";

/// The key identifier header.
const KEY_ID: &str = "github-public-key-identifier";
/// The signature header.
const SIGNATURE: &str = "github-public-key-signature";

/// What the route holds.
struct Reports {
    engine: Arc<Engine>,
    /// The keys file in force; none: leak reports are off (404).
    keys: Option<Arc<KeysFile>>,
    /// Bodies accepted in the last 24 h.
    replay: ReplayGuard,
    /// Places: [`REPORTS_IN_FLIGHT`].
    places: Semaphore,
}

/// The route, over `keys` (none: every report is answered 404).
pub fn router(engine: Arc<Engine>, keys: Option<Arc<KeysFile>>) -> Router {
    let state = Arc::new(Reports {
        engine,
        keys,
        replay: ReplayGuard::default(),
        places: Semaphore::new(REPORTS_IN_FLIGHT),
    });
    Router::new().route(PATH, post(report)).with_state(state)
}

/// `{"error": message}` with `status`, counted under `why`.
fn refuse(status: StatusCode, why: &'static str, message: &str) -> Response {
    counter!("keyward_leak_reports_refused_total", "why" => why).increment(1);
    tracing::debug!(why, status = status.as_u16(), "leak report refused");
    let mut response = super::json_error(status, message).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    }
    response
}

async fn report(State(s): State<Arc<Reports>>, headers: HeaderMap, body: Body) -> Response {
    let Some(keys) = &s.keys else {
        return refuse(
            StatusCode::NOT_FOUND,
            "no_keys",
            "leak reports are not enabled on this keyward (start it with --leak-report-keys)",
        );
    };
    let Ok(Ok(_place)) = tokio::time::timeout(REPORTS_QUEUE_WAIT, s.places.acquire()).await else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many leak reports at once; retry shortly",
        );
    };
    let bytes = match read_body(&headers, body).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Err(refusal) = keys
        .current()
        .verify(header(KEY_ID), header(SIGNATURE), &bytes)
    {
        return refused(refusal);
    }
    let items = match parse_report(&bytes) {
        Ok(items) => items,
        Err(e @ ReportError::Malformed(_)) => {
            return refuse(StatusCode::BAD_REQUEST, "malformed", &e.to_string())
        }
        Err(e) => {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "malformed",
                &e.to_string(),
            )
        }
    };
    if !s.replay.admit(&bytes, s.engine.now_ms()) {
        return refused(Refusal::Replay);
    }
    // Each distinct string once: a secret copied into many files is
    // reported many times in one report.
    let mut labels: HashMap<&str, bool> = HashMap::new();
    let mut argon2_left = ARGON2_PER_REPORT;
    for item in &items {
        if labels.contains_key(item.token.as_str()) {
            continue;
        }
        let reporter = LeakReporter {
            actor_token_id: 0,
            actor_name: ACTOR.into(),
            source: item.source.clone(),
            url: item.url.clone(),
        };
        match s
            .engine
            .judge_leak(&item.token, &reporter, &mut argon2_left)
            .await
        {
            Ok(live) => {
                labels.insert(&item.token, live);
            }
            Err(e) => {
                s.replay.forget(&bytes);
                return not_judged(&e);
            }
        }
    }
    let answer: Vec<Value> = items
        .iter()
        .map(|item| {
            let live = labels.get(item.token.as_str()).copied().unwrap_or(false);
            json!({
                "token_raw": item.token,
                "token_type": item.kind,
                "label": if live { "true_positive" } else { "false_positive" },
            })
        })
        .collect();
    let found = labels.values().filter(|&&live| live).count();
    tracing::info!(
        items = items.len(),
        true_positives = found,
        "leak report judged"
    );
    (StatusCode::OK, Json(Value::Array(answer))).into_response()
}

/// The body, within [`BODY_MAX`] and [`BODY_DEADLINE`].
async fn read_body(headers: &HeaderMap, body: Body) -> Result<axum::body::Bytes, Response> {
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!("a report may be at most {BODY_MAX} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_MAX as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(BODY_DEADLINE, axum::body::to_bytes(body, BODY_MAX)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            &format!("the body was not sent within {BODY_DEADLINE:?}"),
        )),
    }
}

/// A report refused before its items were judged: 401.
fn refused(refusal: Refusal) -> Response {
    refuse(StatusCode::UNAUTHORIZED, refusal.label(), refusal.message())
}

/// A report some item of which could not be judged.
fn not_judged(e: &Error) -> Response {
    let status = match e {
        // A follower, or not ready: GitHub should retry (at the primary).
        Error::FailedPrecondition(_) | Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => e.http_status(),
    };
    let message = match e {
        Error::Internal(m) => crate::error::log_internal(m).to_string(),
        other => other.to_string(),
    };
    refuse(status, "not_judged", &message)
}
