//! The baseline servers: a no-op `Authorizer` that decodes the same
//! `AuthorizeRequest` and always allows (the physical limit of the stack),
//! and a no-op ext_authz `Authorization` (the floor of scenario 10), served
//! by `keyward-bench noop-server`.

use std::net::SocketAddr;
use std::path::PathBuf;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use envoy_types::ext_authz::v3::{CheckResponseExt, OkHttpResponseBuilder};
use keyward::pb::v1::authorizer_server::{Authorizer, AuthorizerServer};
use keyward::pb::v1::{
    AuthorizeBatchRequest, AuthorizeBatchResponse, AuthorizeRequest, AuthorizeResponse,
    IntrospectRequest, IntrospectResponse, Token,
};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

/// The baseline: decodes the same request and always says allowed.
pub(crate) struct Noop;

#[tonic::async_trait]
impl Authorizer for Noop {
    async fn authorize(
        &self,
        _req: Request<AuthorizeRequest>,
    ) -> Result<Response<AuthorizeResponse>, Status> {
        Ok(Response::new(AuthorizeResponse {
            allowed: true,
            reason: 0,
            token_id: 1,
            account_id: 1,
            ..AuthorizeResponse::default()
        }))
    }
    async fn authorize_batch(
        &self,
        req: Request<AuthorizeBatchRequest>,
    ) -> Result<Response<AuthorizeBatchResponse>, Status> {
        let n = req.get_ref().checks.len();
        let one = AuthorizeResponse {
            allowed: true,
            reason: 0,
            token_id: 1,
            account_id: 1,
            ..AuthorizeResponse::default()
        };
        Ok(Response::new(AuthorizeBatchResponse {
            decisions: vec![one; n],
        }))
    }
    async fn introspect(
        &self,
        _req: Request<IntrospectRequest>,
    ) -> Result<Response<IntrospectResponse>, Status> {
        Ok(Response::new(IntrospectResponse {
            token: Some(Token {
                id: 1,
                account_id: 1,
                ..Token::default()
            }),
        }))
    }
}

/// What the ext_authz floor answers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// A bare OK.
    BareOk,
    /// keyward's allow (headers set and removed, dynamic metadata).
    Keyward,
    /// keyward's allow without its dynamic metadata.
    KeywardWithoutMetadata,
}

/// The ext_authz floor: allows every Check, adds nothing; or, `shaped`,
/// answers every Check with this allow in keyward's shape (decided
/// nothing, but Envoy gets the same headers to set and remove and the
/// same metadata as from keyward).
pub(crate) struct NoopCheck {
    shaped: Option<CheckResponse>,
}

impl NoopCheck {
    fn new(shape: Shape) -> Self {
        let shaped = (!matches!(shape, Shape::BareOk)).then(|| {
            keyward::service::ext_authz::Answer::Allow(keyward::service::ext_authz::Allow {
                token_id: 12_345,
                account_id: 1,
                expires_at: None,
                replaced_by: 0,
                remaining: None,
                strip: true,
                metadata: !matches!(shape, Shape::KeywardWithoutMetadata),
                route: "/projects/{project}".into(),
            })
            .to_message()
            .expect("keyward's answer decodes")
        });
        NoopCheck { shaped }
    }
}

#[tonic::async_trait]
impl Authorization for NoopCheck {
    async fn check(&self, _req: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        if let Some(resp) = &self.shaped {
            return Ok(Response::new(resp.clone()));
        }
        let mut resp = CheckResponse::with_status(Status::ok(""));
        resp.set_http_response(OkHttpResponseBuilder::new());
        Ok(Response::new(resp))
    }
}

/// The no-op baseline on `addr`; over TLS (tonic's rustls, ALPN h2) when
/// given a certificate and key.
pub(crate) fn serve_noop(
    addr: SocketAddr,
    tls: Option<(PathBuf, PathBuf)>,
    shape: Shape,
) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        println!("listening {}", listener.local_addr()?);
        let mut server = Server::builder();
        if let Some((cert, key)) = tls {
            let identity =
                tonic::transport::Identity::from_pem(std::fs::read(&cert)?, std::fs::read(&key)?);
            server =
                server.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
        }
        server
            .add_service(AuthorizerServer::new(Noop))
            .add_service(AuthorizationServer::new(NoopCheck::new(shape)))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await?;
        Ok(())
    })
}
