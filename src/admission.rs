//! Admission of gRPC requests: one tower layer that reads a request's
//! whole message before the request takes an in-flight slot, caps the
//! requests in flight (`--max-in-flight`, beyond it the request is shed at
//! once), and ends a request at the server's deadline (`--request-timeout`).
//!
//! **Message first.** An in-flight limit that counts a request from the
//! moment its HEADERS arrive lets a client that opens streams and never
//! sends a body hold slots until the request timeout: a few such
//! connections (256 streams each) take the capacity that valid callers
//! need. So, for every method whose request is one message (unary and
//! server-streaming: all of keyward's, health, ext_authz, replication), the
//! layer reads the whole request body first ([`message`]):
//!
//! - within [`HEADER_TO_MESSAGE`] of the headers, or the stream is answered
//!   `DEADLINE_EXCEEDED` and never takes a slot;
//! - at most one message of the largest size any service accepts (plus its
//!   5-byte gRPC prefix): a larger length prefix or body is answered
//!   `OUT_OF_RANGE` at once, unread;
//! - bytes that have to wait for the rest of their body are charged to
//!   their connection, at most [`CONNECTION_BUFFER_BYTES`] each; a stream
//!   that would go over is answered `RESOURCE_EXHAUSTED`. A body that is
//!   complete when first polled (every well-behaved unary call) is never
//!   charged and costs no lock.
//!
//! Methods whose *request* is a stream ([`STREAMING_REQUESTS`]: server
//! reflection, bidirectional) pass through unread; they take a slot at
//! once, but only until their service returns its response stream, which
//! reflection does at once, so a stalled reflection stream holds no slot.
//!
//! **In flight.** Then the request takes a slot: one compare-and-swap on a
//! counter shared by every connection. At the limit it is answered
//! `RESOURCE_EXHAUSTED` at once (what tower's `load_shed` in front of
//! `concurrency_limit` answered through tonic, word for word) and counted.
//! The slot is held until the service's response future ends (its
//! response headers, as tower's `concurrency_limit` held its permit; a
//! response stream is not counted), or the call is dropped.
//!
//! **Deadline.** The whole call, message included, ends `--request-timeout`
//! after its headers with `CANCELLED` "Timeout expired" (what tonic's
//! `Server::timeout` answered). The call is polled first; the timer is
//! armed only once it has to wait, so a call answered on its first poll
//! (a warm Authorize) costs no timer. A client's own `grpc-timeout` is
//! still honoured by tonic's server, which applies it around this layer.
//!
//! Per request, on the path of a call whose message is there and that is
//! answered without waiting: one clock read, the compare-and-swap and its
//! release (besides the reference counts of the shared state and of the
//! router's copy, which any layer that clones its service pays), and no
//! allocation but the box of the buffered body that tonic takes (the
//! request's own body is one too).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use metrics::{counter, Counter};
use parking_lot::Mutex;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tonic::body::Body;
use tonic::codegen::http::{request, Request, Response};
use tonic::Status;
use tower::{Layer, Service};

mod message;

use message::Message;

/// How long a request may take from its headers to the end of its body.
///
/// Every caller of keyward sends its whole message at once (at most
/// 128 KiB: a millisecond on any network keyward should sit on), so a
/// valid call never comes near it. It answers a stalled stream before the
/// 5 s request timeout, with a status that says why, and keeps doing so if
/// the request timeout is raised.
///
/// It is not shorter because a stalled stream no longer holds an in-flight
/// slot: the deadline only sets how often a client that keeps streams
/// stalled makes the server accept and answer them again. keyward-bench
/// scenario 13 (24 connections × 256 stalled streams, one server core):
/// at 1 s the valid load kept 0.70× its throughput, at 3 s 0.96×.
pub const HEADER_TO_MESSAGE: Duration = Duration::from_secs(3);

/// Most bytes one connection may have waiting for the rest of their
/// request bodies. A connection already has at most 256 streams (HTTP/2
/// `max_concurrent_streams`); without this, each could hold a message of
/// up to 128 KiB for [`HEADER_TO_MESSAGE`] (32 MiB per connection). One
/// MiB is the size of hyper's own HTTP/2 receive window per connection,
/// and eight of the largest messages.
pub const CONNECTION_BUFFER_BYTES: usize = 1 << 20;

/// Methods whose request is a stream of messages: passed through unbuffered
/// (a unit test checks this list against every descriptor keyward serves).
pub const STREAMING_REQUESTS: &[&str] = &[
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The answer to a request shed at the in-flight limit: tonic's words for
/// tower's `Overloaded`, which this layer replaces (clients saw these).
const SHED_MESSAGE: &str = "Too many active requests for the connection";

/// The answer to a request past its deadline: tonic's `TimeoutExpired`,
/// which this layer replaces (clients saw these).
const TIMEOUT_MESSAGE: &str = "Timeout expired";

/// The limits the layer enforces.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request message any service decodes (its own limit still
    /// applies after admission).
    pub max_message: usize,
    /// Requests past their message at once (`--max-in-flight`); more are
    /// shed with `RESOURCE_EXHAUSTED`.
    pub max_in_flight: usize,
    /// From headers to answer (`--request-timeout`); then `CANCELLED`.
    pub request_timeout: Duration,
    /// See [`HEADER_TO_MESSAGE`].
    pub message_deadline: Duration,
    /// See [`CONNECTION_BUFFER_BYTES`].
    pub connection_budget: usize,
}

impl Limits {
    /// The production message deadline and connection budget, with the
    /// server's message size, in-flight cap and request timeout.
    pub fn new(max_message: usize, max_in_flight: usize, request_timeout: Duration) -> Self {
        Self {
            max_message,
            max_in_flight,
            request_timeout,
            message_deadline: HEADER_TO_MESSAGE,
            connection_budget: CONNECTION_BUFFER_BYTES,
        }
    }
}

/// Builds [`Admission`] around the services.
#[derive(Clone)]
pub struct AdmissionLayer {
    /// Limits, the in-flight counter, the per-connection ledger and
    /// counters, shared by every connection's copy of the service.
    shared: Arc<Shared>,
}

/// What every copy of the layer shares.
struct Shared {
    /// The limits.
    limits: Limits,
    /// Requests holding a slot now (at most `limits.max_in_flight`).
    in_flight: AtomicUsize,
    /// Bytes waiting per connection (by peer address; `None` when the
    /// transport gives none, all such connections share one budget).
    /// Entries leave when they reach zero.
    waiting: Mutex<HashMap<Option<SocketAddr>, usize>>,
    /// Streams answered DEADLINE_EXCEEDED: no whole message in time.
    refused_deadline: Counter,
    /// Streams answered OUT_OF_RANGE: larger than any message accepted.
    refused_too_large: Counter,
    /// Streams answered RESOURCE_EXHAUSTED: their connection's budget of
    /// waiting bytes was spent.
    refused_budget: Counter,
    /// Requests answered RESOURCE_EXHAUSTED: every in-flight slot taken.
    refused_in_flight: Counter,
}

impl Shared {
    /// Takes an in-flight slot if one is free.
    fn take_slot(&self) -> bool {
        let max = self.limits.max_in_flight;
        self.in_flight
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives a slot back.
    fn release_slot(&self) {
        self.in_flight.fetch_sub(1, Ordering::Release);
    }
}

impl AdmissionLayer {
    /// Admission with these limits.
    pub fn new(limits: Limits) -> Self {
        let refused = |reason: &'static str| counter!("keyward_grpc_admission_refused_total", "reason" => reason);
        Self {
            shared: Arc::new(Shared {
                limits,
                in_flight: AtomicUsize::new(0),
                waiting: Mutex::new(HashMap::new()),
                refused_deadline: refused("message_deadline"),
                refused_too_large: refused("too_large"),
                refused_budget: refused("connection_budget"),
                refused_in_flight: refused("in_flight"),
            }),
        }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The admission service: reads a request's message, takes a slot, then
/// calls `inner`, all under the request's deadline.
#[derive(Clone)]
pub struct Admission<S> {
    /// The services behind admission.
    inner: S,
    /// See [`AdmissionLayer`].
    shared: Arc<Shared>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S> Service<Request<Body>> for Admission<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = AdmissionFuture<S, S::Future>;

    /// Always ready: the readiness of `inner` is asked for only once the
    /// message is here.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let read = !STREAMING_REQUESTS.contains(&req.uri().path());
        let (parts, body) = req.into_parts();
        AdmissionFuture {
            shared: self.shared.clone(),
            arrived: Instant::now(),
            inner: self.inner.clone(),
            arriving: Some(Arriving {
                parts,
                body,
                message: read.then(Message::default),
            }),
            slot: false,
            call: None,
            deadline: None,
            armed: Armed::No,
        }
    }
}

/// A request not yet passed on.
struct Arriving {
    /// Its headers.
    parts: request::Parts,
    /// Its body as it comes.
    body: Body,
    /// Its message so far (None: a streaming request, passed on unread).
    message: Option<Message>,
}

/// Which deadline the timer is set to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Armed {
    /// Not armed: nothing has had to wait yet.
    No,
    /// The header-to-message deadline (earlier than the request's).
    Message,
    /// The request's deadline.
    Request,
}

pin_project! {
    /// One request through admission (no allocation of its own).
    #[project = Projected]
    pub struct AdmissionFuture<S, F> {
        // Limits, counters, the slot counter.
        shared: Arc<Shared>,
        // When the headers were handed over: both deadlines count from it.
        arrived: Instant,
        // The services behind admission (this request's copy).
        inner: S,
        // The request until it is passed on or refused.
        arriving: Option<Arriving>,
        // Whether this request holds an in-flight slot.
        slot: bool,
        // The call, once made.
        #[pin]
        call: Option<F>,
        // The timer, armed only once something has had to wait.
        #[pin]
        deadline: Option<Sleep>,
        // What `deadline` is set to.
        armed: Armed,
    }

    impl<S, F> PinnedDrop for AdmissionFuture<S, F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            // The call first, then its slot (as tower's concurrency limit
            // dropped its inner future before its permit).
            this.call.set(None);
            if *this.slot {
                this.shared.release_slot();
            }
        }
    }
}

impl<S, F, E> Future for AdmissionFuture<S, F>
where
    S: Service<Request<Body>, Response = Response<Body>, Future = F, Error = E>,
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let shared: &Shared = this.shared;
        if let Some(arriving) = this.arriving.as_mut() {
            if let Some(message) = arriving.message.as_mut() {
                match message.poll_read(&mut arriving.body, &arriving.parts, this.shared, cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(status)) => {
                        *this.arriving = None;
                        return Poll::Ready(Ok(status.into_http()));
                    }
                    Poll::Pending => {
                        // The earlier of the two deadlines.
                        if *this.armed == Armed::No {
                            let limits = &shared.limits;
                            let (when, armed) = if limits.message_deadline < limits.request_timeout
                            {
                                (*this.arrived + limits.message_deadline, Armed::Message)
                            } else {
                                (*this.arrived + limits.request_timeout, Armed::Request)
                            };
                            this.deadline.set(Some(tokio::time::sleep_until(when)));
                            *this.armed = armed;
                        }
                        if !expired(this.deadline.as_mut(), cx) {
                            return Poll::Pending;
                        }
                        *this.arriving = None;
                        let status = if *this.armed == Armed::Message {
                            shared.refused_deadline.increment(1);
                            Status::deadline_exceeded(format!(
                                "the request message did not arrive within {} ms of its headers",
                                shared.limits.message_deadline.as_millis()
                            ))
                        } else {
                            Status::cancelled(TIMEOUT_MESSAGE)
                        };
                        return Poll::Ready(Ok(status.into_http()));
                    }
                }
            }
            // The message is here (or is a stream, passed on unread).
            match this.inner.poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    *this.arriving = None;
                    return Poll::Ready(Err(e.into()));
                }
                Poll::Pending => return poll_request_deadline(this, cx),
            }
        }
        // A request still arriving has its message and a ready `inner`
        // (every other path above returned): it takes a slot, or is shed.
        if let Some(arriving) = this.arriving.take() {
            if !shared.take_slot() {
                shared.refused_in_flight.increment(1);
                return Poll::Ready(Ok(Status::resource_exhausted(SHED_MESSAGE).into_http()));
            }
            *this.slot = true;
            let body = match arriving.message {
                Some(message) => message.into_body(),
                None => arriving.body,
            };
            let call = this.inner.call(Request::from_parts(arriving.parts, body));
            this.call.set(Some(call));
        }
        let answer = match this.call.as_mut().as_pin_mut() {
            Some(call) => call.poll(cx),
            // Polled again after its answer: nothing more will come.
            None => return Poll::Pending,
        };
        match answer {
            Poll::Ready(answer) => {
                this.call.set(None);
                if std::mem::take(this.slot) {
                    shared.release_slot();
                }
                Poll::Ready(answer.map_err(Into::into))
            }
            Poll::Pending => poll_request_deadline(this, cx),
        }
    }
}

/// Arms the request's deadline (or moves the timer from the message's to
/// it) and polls it: `CANCELLED` once it has passed, the call dropped and
/// its slot given back.
fn poll_request_deadline<S, F>(
    mut this: Projected<'_, S, F>,
    cx: &mut Context<'_>,
) -> Poll<Result<Response<Body>, BoxError>> {
    let when = *this.arrived + this.shared.limits.request_timeout;
    match *this.armed {
        Armed::Request => {}
        Armed::Message => {
            if let Some(d) = this.deadline.as_mut().as_pin_mut() {
                d.reset(when);
            }
        }
        Armed::No => this.deadline.set(Some(tokio::time::sleep_until(when))),
    }
    *this.armed = Armed::Request;
    if !expired(this.deadline.as_mut(), cx) {
        return Poll::Pending;
    }
    *this.arriving = None;
    this.call.set(None);
    if std::mem::take(this.slot) {
        this.shared.release_slot();
    }
    Poll::Ready(Ok(Status::cancelled(TIMEOUT_MESSAGE).into_http()))
}

/// Whether the armed timer has fired (registering for its wake-up if not).
fn expired(deadline: Pin<&mut Option<Sleep>>, cx: &mut Context<'_>) -> bool {
    deadline.as_pin_mut().is_some_and(|d| d.poll(cx).is_ready())
}

#[cfg(test)]
mod tests;
