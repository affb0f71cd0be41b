//! Admission of gRPC requests: a request takes an in-flight slot only once
//! its whole message has arrived.
//!
//! The in-flight limit (`load_shed` + `concurrency_limit` in
//! [`crate::server`]) counts a request from the moment its HEADERS arrive.
//! tonic then waits inside that slot for the request body, so a client that
//! opens streams and never sends a body holds slots until the request
//! timeout: a few such connections (256 streams each) take the capacity
//! that valid callers need.
//!
//! [`AdmissionLayer`] sits outside that limit. For every method whose
//! request is one message (unary and server-streaming: all of keyward's,
//! health, ext_authz, replication), it reads the whole request body first:
//!
//! - within [`HEADER_TO_MESSAGE`] of the headers, or the stream is answered
//!   `DEADLINE_EXCEEDED` and never reaches the limit;
//! - at most one message of the largest size any service accepts (plus its
//!   5-byte gRPC prefix): a larger length prefix or body is answered
//!   `OUT_OF_RANGE` at once, unread;
//! - bytes that have to wait for the rest of their body are charged to
//!   their connection, at most [`CONNECTION_BUFFER_BYTES`] each; a stream
//!   that would go over is answered `RESOURCE_EXHAUSTED`. A body that is
//!   complete when first polled (every well-behaved unary call) is never
//!   charged and costs no lock.
//!
//! Then it passes the buffered body on, and the request takes its slot (or
//! is shed) as before. Methods whose *request* is a stream
//! ([`STREAMING_REQUESTS`]: server reflection, bidirectional) pass through
//! unchanged; they still count against the limit, but only until their
//! service returns its response stream, which reflection does at once, so
//! a stalled reflection stream holds no slot either.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt as _;
use metrics::{counter, Counter};
use parking_lot::Mutex;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::Bytes;
use tonic::transport::server::TcpConnectInfo;
use tonic::Status;
use tower::{Layer, Service};

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

/// Length of the gRPC message prefix: compressed flag and u32 length.
const PREFIX: usize = 5;

/// Builds [`Admission`] around the in-flight limit.
#[derive(Clone)]
pub struct AdmissionLayer {
    /// Limits, the per-connection ledger and counters, shared by every
    /// connection's copy of the service.
    shared: Arc<Shared>,
}

/// What every copy of the layer shares.
struct Shared {
    /// Largest request message any service decodes (its own limit still
    /// applies after admission).
    max_message: usize,
    /// See [`HEADER_TO_MESSAGE`] (a field so tests can shorten it).
    deadline: Duration,
    /// See [`CONNECTION_BUFFER_BYTES`].
    connection_budget: usize,
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
}

impl AdmissionLayer {
    /// Admission for services whose largest decoding limit is `max_message`
    /// bytes, with the production deadline and connection budget.
    pub fn new(max_message: usize) -> Self {
        Self::with_limits(max_message, HEADER_TO_MESSAGE, CONNECTION_BUFFER_BYTES)
    }

    /// Admission with explicit limits.
    pub fn with_limits(max_message: usize, deadline: Duration, connection_budget: usize) -> Self {
        let refused = |reason: &'static str| counter!("keyward_grpc_admission_refused_total", "reason" => reason);
        Self {
            shared: Arc::new(Shared {
                max_message,
                deadline,
                connection_budget,
                waiting: Mutex::new(HashMap::new()),
                refused_deadline: refused("message_deadline"),
                refused_too_large: refused("too_large"),
                refused_budget: refused("connection_budget"),
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

/// The admission service: buffers a request's message, then calls `inner`.
#[derive(Clone)]
pub struct Admission<S> {
    /// The in-flight limit and the services behind it.
    inner: S,
    /// See [`AdmissionLayer`].
    shared: Arc<Shared>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S> Service<Request<Body>> for Admission<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    /// Always ready: readiness of `inner` (an in-flight slot) is asked for
    /// only once the message is here.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        if STREAMING_REQUESTS.contains(&req.uri().path()) {
            return Box::pin(forward(inner, req));
        }
        let shared = self.shared.clone();
        let arrived = tokio::time::Instant::now();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let conn = parts
                .extensions
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr);
            match receive(body, &shared, conn, arrived).await {
                Ok(buffered) => {
                    forward(inner, Request::from_parts(parts, Body::new(buffered))).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// Waits for an in-flight slot (or the shed answer) and calls `inner`.
async fn forward<S>(mut inner: S, req: Request<Body>) -> Result<Response<Body>, BoxError>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: Into<BoxError>,
{
    std::future::poll_fn(|cx| inner.poll_ready(cx))
        .await
        .map_err(Into::into)?;
    inner.call(req).await.map_err(Into::into)
}

/// Bytes of one stream that wait for the rest of their body, charged to
/// its connection; released on drop (passed on, refused or cancelled).
struct Waiting<'a> {
    /// The ledger.
    shared: &'a Shared,
    /// The connection charged.
    conn: Option<SocketAddr>,
    /// Bytes charged so far.
    bytes: usize,
}

impl Waiting<'_> {
    /// Charges `n` more bytes, or refuses them if the connection's budget
    /// would be exceeded.
    fn charge(&mut self, n: usize) -> Result<(), Status> {
        if n == 0 {
            return Ok(());
        }
        let mut waiting = self.shared.waiting.lock();
        let held = waiting.entry(self.conn).or_insert(0);
        if *held + n > self.shared.connection_budget {
            if *held == 0 {
                waiting.remove(&self.conn);
            }
            drop(waiting);
            self.shared.refused_budget.increment(1);
            return Err(Status::resource_exhausted(format!(
                "this connection already has {} KiB of request messages waiting for their end",
                self.shared.connection_budget / 1024
            )));
        }
        *held += n;
        self.bytes += n;
        Ok(())
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let mut waiting = self.shared.waiting.lock();
        if let Some(held) = waiting.get_mut(&self.conn) {
            *held = held.saturating_sub(self.bytes);
            if *held == 0 {
                waiting.remove(&self.conn);
            }
        }
    }
}

/// The body's next frame if it is already here, without waiting.
async fn frame_now(body: &mut Body) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await
}

/// Reads the whole request body within the deadline and the limits.
async fn receive(
    mut body: Body,
    shared: &Shared,
    conn: Option<SocketAddr>,
    arrived: tokio::time::Instant,
) -> Result<Buffered, Status> {
    let mut out = Buffered::default();
    let mut prefix = [0u8; PREFIX];
    let mut waiting: Option<Waiting<'_>> = None;
    let mut deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let max_body = shared.max_message + PREFIX;
    loop {
        let next = match frame_now(&mut body).await {
            Poll::Ready(next) => next,
            Poll::Pending => {
                // From here on the bytes wait for the rest of their body:
                // charge what is already here, then each frame that comes.
                if waiting.is_none() {
                    let mut w = Waiting {
                        shared,
                        conn,
                        bytes: 0,
                    };
                    w.charge(out.data_len)?;
                    waiting = Some(w);
                }
                let sleep = deadline.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(arrived + shared.deadline))
                });
                tokio::select! {
                    biased;
                    next = body.frame() => next,
                    () = sleep.as_mut() => {
                        shared.refused_deadline.increment(1);
                        return Err(Status::deadline_exceeded(format!(
                            "the request message did not arrive within {} ms of its headers",
                            shared.deadline.as_millis()
                        )));
                    }
                }
            }
        };
        let frame = match next {
            None => return Ok(out),
            Some(frame) => frame?,
        };
        if let Some(data) = frame.data_ref() {
            let before = out.data_len;
            // The first message's length prefix, possibly split over frames.
            if before < PREFIX {
                let n = data.len().min(PREFIX - before);
                prefix[before..before + n].copy_from_slice(&data[..n]);
                if before + n == PREFIX {
                    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
                    if len as usize > shared.max_message {
                        shared.refused_too_large.increment(1);
                        return Err(Status::out_of_range(format!(
                            "the request message is {len} bytes; the limit is {} bytes",
                            shared.max_message
                        )));
                    }
                }
            }
            let total = before + data.len();
            if total > max_body {
                shared.refused_too_large.increment(1);
                return Err(Status::out_of_range(format!(
                    "the request body is over {max_body} bytes: more than one message of at most {} bytes",
                    shared.max_message
                )));
            }
            if let Some(w) = waiting.as_mut() {
                w.charge(data.len())?;
            }
            out.data_len = total;
        }
        out.frames.push_back(frame);
    }
}

/// A request body read in full, handed to tonic as it came.
#[derive(Default)]
struct Buffered {
    /// Data (and trailers, if any) in order.
    frames: VecDeque<Frame<Bytes>>,
    /// Data bytes left to hand out.
    data_len: usize,
}

impl http_body::Body for Buffered {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.frames.pop_front();
        if let Some(data) = next.as_ref().and_then(Frame::data_ref) {
            self.data_len -= data.len();
        }
        Poll::Ready(next.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data_len as u64)
    }
}

#[cfg(test)]
mod tests;
