//! `envoy.service.auth.v3.Authorization` served with keyward's own codec:
//! the same gRPC path and messages on the wire as `envoy_types`' generated
//! server (reflection still describes the standard proto), but the request
//! is decoded into a [`CheckCall`] (only what a route needs) and the answer
//! encoded from an [`Answer`].
//!
//! A request that is not a `CheckRequest` is `INVALID_ARGUMENT` (prost's
//! codec says `INTERNAL`, which is keyward's own failure).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use prost::bytes::Buf;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::Status;

use super::answer::Answer;
use super::request::CheckCall;
use super::ExtAuthzService;

/// The one method served.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// The ext_authz gRPC service, with its message size limits.
#[derive(Debug, Clone)]
pub struct CheckServer {
    /// The service answering.
    inner: Arc<ExtAuthzService>,
    /// Largest request message decoded.
    max_decoding: usize,
    /// Largest answer encoded.
    max_encoding: usize,
}

impl CheckServer {
    /// Serves `inner` with tonic's default limits (4 MiB in, unlimited out).
    pub fn new(inner: ExtAuthzService) -> Self {
        CheckServer {
            inner: Arc::new(inner),
            max_decoding: 4 << 20,
            max_encoding: usize::MAX,
        }
    }

    /// Limits the size of a decoded request message.
    #[must_use]
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.max_decoding = limit;
        self
    }

    /// Limits the size of an encoded answer.
    #[must_use]
    pub fn max_encoding_message_size(mut self, limit: usize) -> Self {
        self.max_encoding = limit;
        self
    }
}

impl NamedService for CheckServer {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

/// `Check` as tonic's unary service.
struct CheckMethod(Arc<ExtAuthzService>);

impl UnaryService<CheckCall> for CheckMethod {
    type Response = Answer;
    type Future = BoxFuture<tonic::Response<Answer>, Status>;

    fn call(&mut self, request: tonic::Request<CheckCall>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.check(request.get_ref()).await })
    }
}

impl<B> tower::Service<http::Request<B>> for CheckServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != CHECK_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let (inner, dec, enc) = (self.inner.clone(), self.max_decoding, self.max_encoding);
        Box::pin(async move {
            let mut grpc =
                Grpc::new(CheckCodec).apply_max_message_size_config(Some(dec), Some(enc));
            Ok(grpc.unary(CheckMethod(inner), req).await)
        })
    }
}

/// Decodes [`CheckCall`]s, encodes [`Answer`]s.
#[derive(Debug, Clone, Copy, Default)]
struct CheckCodec;

impl Codec for CheckCodec {
    type Encode = Answer;
    type Decode = CheckCall;
    type Encoder = CheckCodec;
    type Decoder = CheckCodec;

    fn encoder(&mut self) -> CheckCodec {
        CheckCodec
    }

    fn decoder(&mut self) -> CheckCodec {
        CheckCodec
    }
}

impl Encoder for CheckCodec {
    type Item = Answer;
    type Error = Status;

    fn encode(&mut self, item: Answer, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst);
        Ok(())
    }
}

impl Decoder for CheckCodec {
    type Item = CheckCall;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<CheckCall>, Status> {
        let len = src.remaining();
        // One message, contiguous in tonic's buffer; copied only if not.
        let call = if src.chunk().len() == len {
            CheckCall::decode(src.chunk())
        } else {
            CheckCall::decode(&src.copy_to_bytes(len))
        };
        src.advance(src.remaining());
        call.map(Some)
            .map_err(|e| Status::invalid_argument(format!("not a CheckRequest: {e}")))
    }
}
