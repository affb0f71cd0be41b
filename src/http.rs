//! The HTTP port: liveness, readiness, Prometheus metrics, and the REST
//! facades ([`crate::rest`]) with their OpenAPI document.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower::limit::GlobalConcurrencyLimitLayer;

use crate::engine::Engine;

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

/// Most HTTP requests served at once; more wait (the gRPC port has its own
/// limit and load shedding).
const HTTP_IN_FLIGHT_MAX: usize = 256;

/// The HTTP routes.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(HttpState {
            engine: engine.clone(),
            metrics: metrics_handle(),
        })
        .merge(crate::rest::router(engine))
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .layer(GlobalConcurrencyLimitLayer::new(HTTP_IN_FLIGHT_MAX))
}

fn json_error(status: StatusCode, message: &str) -> (StatusCode, Json<serde_json::Value>) {
    (status, Json(serde_json::json!({ "error": message })))
}

async fn readyz(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    if s.engine.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading\n")
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
