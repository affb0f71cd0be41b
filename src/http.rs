//! The HTTP port: liveness, readiness, Prometheus metrics, and the REST
//! facades ([`crate::rest`]) with their OpenAPI document.
//!
//! - [`serve`]: the accept loop: header-read timeout, connection cap
//!   (idle the longest closed first), graceful drain, open-files limit.
//! - [`rest_limit`]: the REST facades' own concurrency limit (503 beyond a
//!   short wait) and body deadline (408). Probes and `/metrics` are outside
//!   it: no REST caller can queue them.
//! - [`leak_reports`]: GitHub's secret-scanning reports, signed instead of
//!   authenticated by a caller token, with a limit of their own.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{middleware, Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::engine::Engine;

pub mod leak_reports;
pub mod rest_limit;
pub mod serve;

pub use serve::{connection_cap, raise_fd_limit, CONNECTIONS_MAX, HEADER_READ_TIMEOUT};

/// Latency buckets in seconds, 10 µs to 1 s.
const LATENCY_BUCKETS: [f64; 12] = [
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 5e-2, 2.5e-1, 1.0,
];

/// The process-wide Prometheus recorder (installed once, shared by every
/// server in the process, e.g. in tests).
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Bucketed histograms (not summaries): recording and upkeep stay
            // cheap at hundreds of thousands of samples per second.
            PrometheusBuilder::new()
                .set_buckets(&LATENCY_BUCKETS)
                .ok()?
                .install_recorder()
                .ok()
        })
        .clone()
}

#[derive(Clone)]
struct HttpState {
    engine: Arc<Engine>,
    metrics: Option<PrometheusHandle>,
}

/// The HTTP routes. Only the REST facades are limited
/// ([`rest_limit`]) and the leak reports (their own limit); the probes and
/// `/metrics` answer from memory, at most one request per connection at a
/// time, under the connection cap. `leak_keys`: the keys GitHub's leak
/// reports are signed with (none: that route answers 404).
pub fn router(
    engine: &Arc<Engine>,
    leak_keys: Option<Arc<crate::leak_report::KeysFile>>,
) -> Router {
    let rest = crate::rest::router(engine.clone()).layer(middleware::from_fn_with_state(
        rest_limit::RestLimit::new(),
        rest_limit::admit,
    ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(HttpState {
            engine: engine.clone(),
            metrics: metrics_handle(),
        })
        .merge(rest)
        .merge(leak_reports::router(engine.clone(), leak_keys))
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
}

fn json_error(status: StatusCode, message: &str) -> (StatusCode, Json<serde_json::Value>) {
    (status, Json(serde_json::json!({ "error": message })))
}

/// Ready exactly when the gRPC health says SERVING: loaded, and (on a
/// follower or a PostgreSQL node) not cut off from its source past the
/// staleness bound, unless told to serve stale. Kubernetes probes this
/// path when the gRPC port speaks TLS (kubelet's gRPC probes cannot).
async fn readyz(State(s): State<HttpState>) -> (StatusCode, String) {
    match s.engine.ensure_ready() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

async fn metrics(State(s): State<HttpState>) -> (StatusCode, String) {
    match &s.metrics {
        Some(h) => (StatusCode::OK, h.render()),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable\n".into(),
        ),
    }
}
