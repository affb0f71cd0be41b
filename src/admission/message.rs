//! A request's message read in full before it takes an in-flight slot:
//! the length prefix and size checked as bytes come, bytes that wait for
//! the rest of their body charged to their connection, and the body handed
//! on as it came.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body as _, Frame, SizeHint};
use tonic::body::Body;
use tonic::codegen::http::request;
use tonic::codegen::Bytes;
use tonic::transport::server::TcpConnectInfo;
use tonic::Status;

use super::Shared;

/// Length of the gRPC message prefix: compressed flag and u32 length.
const PREFIX: usize = 5;

/// A request's message so far.
#[derive(Default)]
pub(super) struct Message {
    /// The frames read, in order.
    frames: Frames,
    /// Data bytes read (then: left to hand out).
    data_len: usize,
    /// The first message's length prefix, possibly split over frames.
    prefix: [u8; PREFIX],
    /// Bytes charged to the connection, once some had to wait.
    charge: Option<Charge>,
    /// The body has ended: never poll it again.
    complete: bool,
}

impl Message {
    /// Reads what has come of `body`: ready once it has ended, an error
    /// status for a message over the limits (or a body that failed).
    pub(super) fn poll_read(
        &mut self,
        body: &mut Body,
        parts: &request::Parts,
        shared: &Arc<Shared>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Status>> {
        let limits = &shared.limits;
        let max_body = limits.max_message + PREFIX;
        while !self.complete {
            let frame = match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(frame)) => frame?,
                Poll::Ready(None) => {
                    self.complete = true;
                    break;
                }
                Poll::Pending => {
                    // From here on the bytes wait for the rest of their
                    // body: charge what is already here, then each frame
                    // that comes.
                    if self.charge.is_none() {
                        let mut charge = Charge {
                            shared: shared.clone(),
                            conn: parts
                                .extensions
                                .get::<TcpConnectInfo>()
                                .and_then(TcpConnectInfo::remote_addr),
                            bytes: 0,
                        };
                        charge.add(self.data_len)?;
                        self.charge = Some(charge);
                    }
                    return Poll::Pending;
                }
            };
            if let Some(data) = frame.data_ref() {
                let before = self.data_len;
                if before < PREFIX {
                    let n = data.len().min(PREFIX - before);
                    self.prefix[before..before + n].copy_from_slice(&data[..n]);
                    if before + n == PREFIX {
                        let p = self.prefix;
                        let len = u32::from_be_bytes([p[1], p[2], p[3], p[4]]);
                        if len as usize > limits.max_message {
                            shared.refused_too_large.increment(1);
                            return Poll::Ready(Err(Status::out_of_range(format!(
                                "the request message is {len} bytes; the limit is {} bytes",
                                limits.max_message
                            ))));
                        }
                    }
                }
                let total = before + data.len();
                if total > max_body {
                    shared.refused_too_large.increment(1);
                    return Poll::Ready(Err(Status::out_of_range(format!(
                        "the request body is over {max_body} bytes: more than one message of at most {} bytes",
                        limits.max_message
                    ))));
                }
                if let Some(charge) = self.charge.as_mut() {
                    charge.add(data.len())?;
                }
                self.data_len = total;
            }
            self.frames.push(frame);
        }
        Poll::Ready(Ok(()))
    }

    /// The message read, as the request's body; its bytes are no longer
    /// charged to the connection.
    pub(super) fn into_body(self) -> Body {
        Body::new(Buffered {
            frames: self.frames,
            data_len: self.data_len,
        })
    }
}

/// Frames in order; the first (a unary call's whole message, as a rule)
/// kept inline, no allocation for it.
#[derive(Default)]
struct Frames {
    /// The first frame not yet handed out.
    first: Option<Frame<Bytes>>,
    /// The frames after it.
    rest: VecDeque<Frame<Bytes>>,
}

impl Frames {
    fn push(&mut self, frame: Frame<Bytes>) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(frame);
        } else {
            self.rest.push_back(frame);
        }
    }

    fn pop(&mut self) -> Option<Frame<Bytes>> {
        self.first.take().or_else(|| self.rest.pop_front())
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }
}

/// Bytes of one stream that wait for the rest of their body, charged to
/// its connection; released on drop (passed on, refused or cancelled).
struct Charge {
    /// The ledger.
    shared: Arc<Shared>,
    /// The connection charged.
    conn: Option<SocketAddr>,
    /// Bytes charged so far.
    bytes: usize,
}

impl Charge {
    /// Charges `n` more bytes, or refuses them if the connection's budget
    /// would be exceeded.
    fn add(&mut self, n: usize) -> Result<(), Status> {
        if n == 0 {
            return Ok(());
        }
        let budget = self.shared.limits.connection_budget;
        let mut waiting = self.shared.waiting.lock();
        let held = waiting.entry(self.conn).or_insert(0);
        if *held + n > budget {
            if *held == 0 {
                waiting.remove(&self.conn);
            }
            drop(waiting);
            self.shared.refused_budget.increment(1);
            return Err(Status::resource_exhausted(format!(
                "this connection already has {} KiB of request messages waiting for their end",
                budget / 1024
            )));
        }
        *held += n;
        self.bytes += n;
        Ok(())
    }
}

impl Drop for Charge {
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

/// A request body read in full, handed to tonic as it came.
struct Buffered {
    /// Data (and trailers, if any) in order.
    frames: Frames,
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
        let next = self.frames.pop();
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
