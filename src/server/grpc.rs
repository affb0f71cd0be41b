//! The gRPC port: every service with its message limits, health and
//! reflection (v1 and v1alpha, from one list of descriptor sets), the
//! port's limits (deadline, streams, keepalive, admission, in-flight cap,
//! connection age over TLS), and the task that serves it until stop.
//!
//! Wiring (L7): may import any module below `server`.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::engine::Engine;
use crate::pb::replication::replication_server::ReplicationServer;
use crate::pb::v1::{
    accounts_server::AccountsServer, admin_server::AdminServer, audit_server::AuditServer,
    authorizer_server::AuthorizerServer, resources_server::ResourcesServer,
    tokens_server::TokensServer, FILE_DESCRIPTOR_SET,
};
use crate::replication::ReplicationService;
use crate::service::ext_authz::{CheckServer, ExtAuthzService};
use crate::service::{
    accounts::AccountsService, admin::AdminService, audit::AuditService,
    authorizer::AuthorizerService, resources::ResourcesService, tokens::TokensService,
};

use super::open::Files;
use super::{wait_for_stop, Options, ServeError};

/// Largest gRPC message accepted or sent.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Longest life of a gRPC connection over TLS (then GOAWAY, 30 s grace).
pub const TLS_MAX_CONNECTION_AGE: Duration = Duration::from_secs(3600);

/// The gRPC port being served.
pub(super) struct Port {
    /// Health of every service (NOT_SERVING until the node is ready).
    pub reporter: HealthReporter,
    /// Ends once stop is sent and the port has drained.
    pub task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Sets the health of the server (`""`) and of every service.
pub(super) async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for name in [
        "",
        <AccountsServer<AccountsService> as NamedService>::NAME,
        <ResourcesServer<ResourcesService> as NamedService>::NAME,
        <TokensServer<TokensService> as NamedService>::NAME,
        <AuthorizerServer<AuthorizerService> as NamedService>::NAME,
        <AuditServer<AuditService> as NamedService>::NAME,
        <AdminServer<AdminService> as NamedService>::NAME,
        <CheckServer as NamedService>::NAME,
        <ReplicationServer<ReplicationService> as NamedService>::NAME,
    ] {
        reporter.set_service_status(name, status).await;
    }
}

/// Reflection over keyward's, health's, the error details' and Envoy's ext_authz protos.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(crate::pb::ENVOY_AUTHZ_DESCRIPTOR_SET)
}

/// Serves every gRPC service on `listener` until `stop` turns true, health
/// NOT_SERVING meanwhile.
pub(super) async fn serve(
    opts: &Options,
    engine: &Arc<Engine>,
    files: &Files,
    listener: TcpListener,
    stop: &watch::Receiver<bool>,
) -> Result<Port, ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    set_all(&reporter, ServingStatus::NotServing).await;

    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let accounts = AccountsServer::new(AccountsService {
        engine: engine.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(4 * MAX_MESSAGE_BYTES);
    let resources = ResourcesServer::new(ResourcesService {
        engine: engine.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(4 * MAX_MESSAGE_BYTES);
    let tokens = TokensServer::new(TokensService {
        engine: engine.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(16 * MAX_MESSAGE_BYTES);
    let authorizer = AuthorizerServer::new(AuthorizerService {
        engine: engine.clone(),
    })
    .max_decoding_message_size(2 * MAX_MESSAGE_BYTES)
    .max_encoding_message_size(2 * MAX_MESSAGE_BYTES);
    let audit = AuditServer::new(AuditService {
        engine: engine.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(16 * MAX_MESSAGE_BYTES);
    // Backup streams 64 KiB chunks.
    let admin = AdminServer::new(AdminService {
        engine: engine.clone(),
        temp_dir: opts.data_dir.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(4 * MAX_MESSAGE_BYTES);

    let ext_authz = CheckServer::new(ExtAuthzService {
        engine: engine.clone(),
        routes: files.routes.clone(),
    })
    // Envoy sends the request's headers: up to its own 60 KiB default.
    .max_decoding_message_size(2 * MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    engine.metrics().check.routes.set(files.route_count as f64);

    let replication = ReplicationServer::new(ReplicationService {
        engine: engine.clone(),
        // A follower publishes nothing (it commits nothing): followers must
        // follow the primary itself, so a follower's Watch is off.
        secret: if opts.follow.is_some() {
            None
        } else {
            opts.replication_secret.clone()
        },
        stop: stop.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(64 << 20);

    let mut builder = Server::builder();
    if files.tls.is_some() {
        // A certificate's access ends with its connection: a client CA
        // taken out of --tls-client-ca (the way to revoke) cuts a client
        // that is already connected within the hour. Followers resume
        // their stream from their revision.
        builder = builder
            .max_connection_age(TLS_MAX_CONNECTION_AGE)
            .max_connection_age_grace(Duration::from_secs(30));
    }
    // The request timeout, the in-flight limit and its shedding are
    // admission's, in one layer rather than tonic's `Server::timeout` and
    // tower's `load_shed` + `concurrency_limit`: per call one
    // compare-and-swap and no timer unless the call has to wait (issue 21).
    // A request takes a slot only once its message is here (within 3 s of
    // its headers). Messages bounded by the largest decoding limit above
    // (Authorizer, ext_authz); each service's own still applies. tonic
    // still honours a client's `grpc-timeout`.
    let admission = crate::admission::AdmissionLayer::new(crate::admission::Limits::new(
        2 * MAX_MESSAGE_BYTES,
        opts.max_in_flight,
        opts.request_timeout,
    ));
    let router = builder
        .max_concurrent_streams(opts.max_concurrent_streams)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .http2_max_header_list_size(16 * 1024)
        .layer(admission)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(accounts)
        .add_service(resources)
        .add_service(tokens)
        .add_service(authorizer)
        .add_service(ext_authz)
        .add_service(replication)
        .add_service(audit)
        .add_service(admin);
    let shutdown = wait_for_stop(stop.clone());
    let task = match &files.tls {
        // No Nagle: a response split over several writes must not wait for
        // the client's delayed ACK (40 ms stalls on large batches).
        None => tokio::spawn(router.serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )),
        // TLS: each handshake in a task of its own, under a deadline; no
        // Nagle there either.
        Some((tls, _)) => tokio::spawn(router.serve_with_incoming_shutdown(
            crate::tls::grpc_incoming(listener, tls.clone(), wait_for_stop(stop.clone())),
            shutdown,
        )),
    };
    Ok(Port { reporter, task })
}
