//! Pre-encoded calls: the load generator sends the bytes of a request
//! encoded once, and decodes the answer only to tell its outcome, so that
//! two calls compared on one keyward (scenario 9: `Check` against
//! `Authorize`) cost the one-core client the same, and a saturated closed
//! loop measures the server rather than the client's message encoding
//! (an Envoy `CheckRequest` is several times an `AuthorizeRequest`'s work
//! to build and encode). As h2load does with a request body file.

use envoy_types::ext_authz::v3::pb::CheckResponse;
use keyward::pb::v1::AuthorizeResponse;
use prost::bytes::{Buf, BufMut};
use prost::Message;
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::Bytes;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// One gRPC method and the request bodies cycled through.
pub(crate) struct RawCalls {
    /// `/package.Service/Method`.
    pub(crate) path: PathAndQuery,
    /// Encoded requests.
    pub(crate) bodies: Vec<Bytes>,
    /// The answer is a `CheckResponse`, allowed only with an OK status
    /// inside; else an `AuthorizeResponse`, allowed only if `allowed`.
    pub(crate) check: bool,
}

impl RawCalls {
    /// `messages` encoded once, for `path`.
    pub(crate) fn new<M: Message>(path: &'static str, messages: &[M], check: bool) -> Self {
        RawCalls {
            path: PathAndQuery::from_static(path),
            bodies: messages
                .iter()
                .map(|m| Bytes::from(m.encode_to_vec()))
                .collect(),
            check,
        }
    }
}

/// Sends bytes as they are; answers are kept as bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Call `i` of `calls` on `grpc`; whether it was allowed.
pub(crate) async fn call(grpc: &mut Grpc<Channel>, calls: &RawCalls, i: u64) -> bool {
    let body = calls.bodies[(i % calls.bodies.len() as u64) as usize].clone();
    if grpc.ready().await.is_err() {
        return false;
    }
    match grpc
        .unary::<Bytes, Bytes, RawCodec>(Request::new(body), calls.path.clone(), RawCodec)
        .await
    {
        Ok(answer) if calls.check => CheckResponse::decode(answer.into_inner())
            .is_ok_and(|r| r.status.is_some_and(|s| s.code == 0)),
        Ok(answer) => AuthorizeResponse::decode(answer.into_inner()).is_ok_and(|r| r.allowed),
        Err(_) => false,
    }
}
