//! What a REST request may hold on the HTTP port: one of a bounded number
//! of places (beyond a short, bounded wait it is answered 503, never
//! queued for long), and a body that must arrive within
//! [`BODY_DEADLINE`] of the end of its headers (else 408). Probes and
//! `/metrics` are outside this limit, so no REST caller can delay them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use metrics::{counter, Counter};
use tokio::sync::Semaphore;

use crate::error::Error;
use crate::rest::{BodyTimedOut, Dialect, Problem, BODY_DEADLINE};

/// REST requests handled at once (authentication, body, the operation).
pub const REST_IN_FLIGHT_MAX: usize = 128;

/// REST requests allowed to wait for a place; more are answered 503 at once.
pub const REST_QUEUE_MAX: usize = 128;

/// Longest wait for a place before a 503.
pub const REST_QUEUE_WAIT: Duration = Duration::from_millis(250);

/// The REST facades' places, shared by their routes.
#[derive(Clone)]
pub struct RestLimit {
    /// Places to be handled: [`REST_IN_FLIGHT_MAX`].
    serving: Arc<Semaphore>,
    /// Places to be handled or to wait for one: beyond them, shed at once.
    admitted: Arc<Semaphore>,
    /// `keyward_http_rest_shed_total`: REST requests answered 503.
    shed: Counter,
}

impl RestLimit {
    /// The limit, with its metric handles registered.
    pub fn new() -> RestLimit {
        RestLimit {
            serving: Arc::new(Semaphore::new(REST_IN_FLIGHT_MAX)),
            admitted: Arc::new(Semaphore::new(REST_IN_FLIGHT_MAX + REST_QUEUE_MAX)),
            shed: counter!("keyward_http_rest_shed_total"),
        }
    }
}

impl Default for RestLimit {
    fn default() -> Self {
        RestLimit::new()
    }
}

/// Middleware of the REST routes: starts the body deadline, then takes a
/// place (or answers 503 in the route's error shape).
pub async fn admit(State(limit): State<RestLimit>, request: Request, next: Next) -> Response {
    let dialect = if request.uri().path().starts_with("/v1/") {
        Dialect::MailerSend
    } else {
        Dialect::Mailtrap
    };
    let request = request.map(|body| Body::new(DeadlineBody::new(body, BODY_DEADLINE)));
    let Ok(_admitted) = limit.admitted.clone().try_acquire_owned() else {
        return busy(&limit, dialect);
    };
    let Ok(Ok(_serving)) =
        tokio::time::timeout(REST_QUEUE_WAIT, limit.serving.clone().acquire_owned()).await
    else {
        return busy(&limit, dialect);
    };
    next.run(request).await
}

fn busy(limit: &RestLimit, dialect: Dialect) -> Response {
    limit.shed.increment(1);
    let mut response = Problem::Domain(Error::Unavailable(
        "too many REST requests at once; try again".into(),
    ))
    .render(dialect, str::to_string);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    debug_assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    response
}

/// A request body that fails with [`BodyTimedOut`] if it has not ended by
/// its deadline.
struct DeadlineBody {
    /// The body as received.
    inner: Body,
    /// Armed when the headers were read.
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    fn new(inner: Body, within: Duration) -> DeadlineBody {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(within)),
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
