//! Wiring: opens the store, builds the engine, serves gRPC (with health,
//! reflection and limits) and HTTP, runs the background jobs, and shuts
//! down gracefully: NOT_SERVING, drain, persist, flush.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::clock::Clock;
use crate::engine::{Engine, Settings};
use crate::pb::replication::replication_server::ReplicationServer;
use crate::pb::v1::{
    accounts_server::AccountsServer, audit_server::AuditServer,
    authorizer_server::AuthorizerServer, resources_server::ResourcesServer,
    tokens_server::TokensServer, FILE_DESCRIPTOR_SET,
};
use crate::replication::ReplicationService;
use crate::routes::Routes;
use crate::service::ext_authz::{ExtAuthzService, SharedRoutes};
use crate::service::{
    accounts::AccountsService, audit::AuditService, authorizer::AuthorizerService,
    resources::ResourcesService, tokens::TokensService,
};
use crate::store::{SledStore, Store};
use crate::token::{DigestKey, Secret};
use envoy_types::ext_authz::v3::pb::AuthorizationServer;

/// Last-use times are persisted when they moved by a minute or more (and
/// all at shutdown): precise enough for "last used", and at most one write
/// per busy token per minute.
pub const USAGE_GRANULARITY_MS: i64 = 60_000;

/// Most tokens the periodic usage writer persists per run: small slices of
/// work, often, rather than a burst that would show in Authorize latency.
pub const USAGE_BATCH_MAX: usize = 2_000;

/// argon2 memory (19 MiB per buffer) unused this long is given back to the
/// kernel, so RSS returns to its resting size after a burst of hashes.
pub const ARGON2_MEMORY_IDLE: Duration = Duration::from_secs(30);

/// Largest gRPC message accepted or sent.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store could not be opened or loaded; keyward refuses to serve.
    #[error("store at {path}: {source}")]
    Store {
        /// The data dir.
        path: String,
        /// What failed.
        source: crate::store::StoreError,
    },
    /// The digest key file could not be read or created.
    #[error("digest key file {path}: {source}")]
    DigestKey {
        /// The key file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// gRPC transport failure.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection descriptors failed to build.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// I/O failure (HTTP server, data dir).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The routes file is invalid (the message points to the line).
    #[error("--routes: {0}")]
    Routes(#[from] crate::routes::RoutesError),
    /// A TLS file is missing, unreadable, not PEM, or the key is not the
    /// certificate's (the message names the flag and the file).
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Everything `run` needs besides its listeners.
pub struct Options {
    /// Directory of the sled store.
    pub data_dir: std::path::PathBuf,
    /// The digest key file; created in the data dir when it is the default.
    pub digest_key_file: std::path::PathBuf,
    /// Lifecycle and verifier tunables.
    pub settings: Settings,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// Per-request deadline.
    pub request_timeout: Duration,
    /// Requests in flight before shedding.
    pub max_in_flight: usize,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Period of the last-use / digest persister.
    pub usage_flush_interval: Duration,
    /// The ext_authz routes file (none: every Check is unmatched, denied).
    pub routes_file: Option<std::path::PathBuf>,
    /// Primary: the secret followers must present to `Replication/Watch`
    /// (none: replication is off).
    pub replication_secret: Option<Arc<str>>,
    /// Follower mode: follow this primary instead of opening a store.
    pub follow: Option<Follow>,
    /// PostgreSQL mode: the shared store instead of sled in `data_dir`.
    pub postgres: Option<Postgres>,
    /// TLS on both ports (none: plaintext, as without `--tls-cert`).
    pub tls: Option<crate::tls::TlsFiles>,
    /// Follower with an https primary: the CA file its certificate must
    /// chain to (none: the system roots).
    pub tls_ca: Option<std::path::PathBuf>,
}

/// Follower mode settings.
#[derive(Clone)]
pub struct Follow {
    /// The primary's gRPC address.
    pub primary: String,
    /// The replication secret.
    pub secret: Arc<str>,
    /// Fail closed after this long without a word from the primary.
    pub stale_after: Duration,
    /// Keep answering from the last state instead of failing closed.
    pub serve_stale: bool,
}

impl std::fmt::Debug for Follow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follow")
            .field("primary", &self.primary)
            .field("secret", &"REDACTED")
            .field("stale_after", &self.stale_after)
            .field("serve_stale", &self.serve_stale)
            .finish()
    }
}

/// Longest life of a gRPC connection over TLS (then GOAWAY, 30 s grace).
pub const TLS_MAX_CONNECTION_AGE: Duration = Duration::from_secs(3600);

/// How often the routes file is looked at for changes (SIGHUP reloads at
/// once).
pub const ROUTES_POLL: Duration = Duration::from_secs(1);

/// PostgreSQL mode.
#[derive(Debug, Clone)]
pub struct Postgres {
    /// How to reach the database (the URL prints as REDACTED).
    pub store: crate::store::postgres::PgOptions,
    /// Fail closed after this long without reaching the database.
    pub stale_after: Duration,
    /// Keep answering from memory instead.
    pub serve_stale: bool,
}

/// What the store is, as errors name it (never a connection string).
fn store_name(opts: &Options) -> String {
    if opts.postgres.is_some() {
        "the PostgreSQL database (--store)".into()
    } else {
        opts.data_dir.display().to_string()
    }
}

/// Told once the store is loaded and the server is serving.
pub struct Ready {
    /// The engine (tests drive the clock-dependent jobs through it).
    pub engine: Arc<Engine>,
    /// The root token, on the very first start only.
    pub root_token: Option<Secret>,
}

fn open_store(dir: &Path) -> Result<(SledStore, bool), ServeError> {
    let wrap = |source| ServeError::Store {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir)?;
    let store = SledStore::open(dir).map_err(wrap)?;
    let is_new = store.is_new().map_err(wrap)?;
    Ok((store, is_new))
}

async fn set_all(reporter: &tonic_health::server::HealthReporter, status: ServingStatus) {
    for name in [
        "",
        <AccountsServer<AccountsService> as NamedService>::NAME,
        <ResourcesServer<ResourcesService> as NamedService>::NAME,
        <TokensServer<TokensService> as NamedService>::NAME,
        <AuthorizerServer<AuthorizerService> as NamedService>::NAME,
        <AuditServer<AuditService> as NamedService>::NAME,
        <AuthorizationServer<ExtAuthzService> as NamedService>::NAME,
        <ReplicationServer<ReplicationService> as NamedService>::NAME,
    ] {
        reporter.set_service_status(name, status).await;
    }
}

/// Runs keyward until `shutdown` resolves, then drains and flushes.
pub async fn run(
    opts: Options,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: oneshot::Sender<Ready>,
) -> Result<(), ServeError> {
    // The recorder must exist before the engine registers its handles.
    let _ = crate::http::metrics_handle();
    // A burst of new gRPC connections waits in the kernel instead of having
    // its SYNs dropped (std's backlog is 128), as on the HTTP port.
    crate::http::serve::deepen_accept_queue(&grpc);
    // A bad routes file refuses the start, before anything else is opened.
    let routes = match &opts.routes_file {
        Some(path) => crate::routes::load(path)?,
        None => Routes::default(),
    };
    let route_count = routes.len();
    // So are bad TLS files; SIGHUP is listened to from here on.
    let tls = match &opts.tls {
        Some(files) => Some((
            crate::tls::Tls::start(files.clone())?,
            crate::tls::Hangup::listen(),
        )),
        None => None,
    };
    // A follower's --tls-ca too (it is re-read at every connect).
    if let (Some(_), Some(ca)) = (&opts.follow, &opts.tls_ca) {
        crate::tls::read_ca("--tls-ca", ca)?;
    }
    let routes = Arc::new(SharedRoutes::new(routes));
    let mut listen_config = None;
    let (engine, is_new) = match (&opts.follow, &opts.postgres) {
        (None, Some(pg)) => {
            let wrap = |source| ServeError::Store {
                path: store_name(&opts),
                source,
            };
            std::fs::create_dir_all(&opts.data_dir)?;
            let store = crate::store::postgres::PgStore::connect(&pg.store)
                .await
                .map_err(wrap)?;
            let key = DigestKey::load_or_create(&opts.digest_key_file, true).map_err(|source| {
                ServeError::DigestKey {
                    path: opts.digest_key_file.display().to_string(),
                    source,
                }
            })?;
            let before = store.record_digest_key(&key.id()[..]).await.map_err(wrap)?;
            if before.is_some_and(|b| b != key.id()) {
                tracing::warn!(
                    "the last node to start on this database had another digest key: \
                     tokens it learnt are verified here with argon2 once; \
                     give every node the same --digest-key-file"
                );
            }
            listen_config = Some(store.listen_target());
            let store: Arc<dyn Store> = Arc::new(store);
            let freshness = crate::upstream::Freshness::new(pg.stale_after, pg.serve_stale);
            let engine = Engine::new_shared(
                store,
                key,
                opts.clock.clone(),
                opts.settings.clone(),
                freshness,
            );
            // A new database gets its root token from whichever node
            // commits first; the others find it there.
            (engine, true)
        }
        (None, None) => {
            let is_default_key = opts.digest_key_file == opts.data_dir.join("digest.key");
            let dir = opts.data_dir.clone();
            let (store, is_new) = tokio::task::spawn_blocking(move || open_store(&dir))
                .await
                .map_err(|e| ServeError::Io(std::io::Error::other(e)))??;
            let key = DigestKey::load_or_create(&opts.digest_key_file, is_default_key || is_new)
                .map_err(|source| ServeError::DigestKey {
                    path: opts.digest_key_file.display().to_string(),
                    source,
                })?;
            let store: Arc<dyn Store> = Arc::new(store);
            let engine = Engine::new(store, key, opts.clock.clone(), opts.settings.clone());
            (engine, is_new)
        }
        (Some(f), _) => {
            // A follower writes nothing: the primary's digest key if one is
            // given (so digests verify), else a throwaway one (argon2 on
            // each token's first use).
            let key = if opts.digest_key_file.exists() {
                DigestKey::load_or_create(&opts.digest_key_file, false).map_err(|source| {
                    ServeError::DigestKey {
                        path: opts.digest_key_file.display().to_string(),
                        source,
                    }
                })?
            } else {
                DigestKey::generate()
            };
            let state = crate::upstream::FollowerState::new(
                f.primary.clone(),
                f.stale_after,
                f.serve_stale,
            );
            let engine =
                Engine::new_follower(key, opts.clock.clone(), opts.settings.clone(), state);
            (engine, false)
        }
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let (reporter, health) = tonic_health::server::health_reporter();
    set_all(&reporter, ServingStatus::NotServing).await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

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

    let ext_authz = AuthorizationServer::new(ExtAuthzService {
        engine: engine.clone(),
        routes: routes.clone(),
    })
    // Envoy sends the request's headers: up to its own 60 KiB default.
    .max_decoding_message_size(2 * MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    engine.metrics.check.routes.set(route_count as f64);

    let replication = ReplicationServer::new(ReplicationService {
        engine: engine.clone(),
        // A follower publishes nothing (it commits nothing): followers must
        // follow the primary itself, so a follower's Watch is off.
        secret: if opts.follow.is_some() {
            None
        } else {
            opts.replication_secret.clone()
        },
        stop: stop_rx.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(64 << 20);

    let grpc_shutdown = wait_for_stop(stop_rx.clone());
    let mut grpc_builder = Server::builder();
    if tls.is_some() {
        // A certificate's access ends with its connection: a client CA
        // taken out of --tls-client-ca (the way to revoke) cuts a client
        // that is already connected within the hour. Followers resume
        // their stream from their revision.
        grpc_builder = grpc_builder
            .max_connection_age(TLS_MAX_CONNECTION_AGE)
            .max_connection_age_grace(Duration::from_secs(30));
    }
    let grpc_server = grpc_builder
        .timeout(opts.request_timeout)
        .max_concurrent_streams(opts.max_concurrent_streams)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .http2_max_header_list_size(16 * 1024)
        .layer(
            tower::ServiceBuilder::new()
                // Outside the in-flight limit: a request takes a slot only
                // once its message is here (within 3 s of its headers).
                // Bounded by the largest decoding limit below (Authorizer,
                // ext_authz); each service's own still applies.
                .layer(crate::admission::AdmissionLayer::new(2 * MAX_MESSAGE_BYTES))
                .load_shed()
                .concurrency_limit(opts.max_in_flight)
                .into_inner(),
        )
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(accounts)
        .add_service(resources)
        .add_service(tokens)
        .add_service(authorizer)
        .add_service(ext_authz)
        .add_service(replication)
        .add_service(
            AuditServer::new(AuditService {
                engine: engine.clone(),
            })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(16 * MAX_MESSAGE_BYTES),
        );
    let grpc_task = match &tls {
        // No Nagle: a response split over several writes must not wait for
        // the client's delayed ACK (40 ms stalls on large batches).
        None => tokio::spawn(grpc_server.serve_with_incoming_shutdown(
            TcpIncoming::from(grpc).with_nodelay(Some(true)),
            grpc_shutdown,
        )),
        // TLS: each handshake in a task of its own, under a deadline; no
        // Nagle there either.
        Some((tls, _)) => tokio::spawn(grpc_server.serve_with_incoming_shutdown(
            crate::tls::grpc_incoming(grpc, tls.clone(), wait_for_stop(stop_rx.clone())),
            grpc_shutdown,
        )),
    };

    let http_shutdown = wait_for_stop(stop_rx.clone());
    let http_app = crate::http::router(engine.clone());
    // Descriptor headroom: the open-files limit raised, the HTTP port
    // capped to a share of it so the gRPC port keeps the rest.
    let http_cap = crate::http::serve::fd_headroom();
    let http_task = tokio::spawn(crate::http::serve::serve(
        http,
        http_app,
        http_cap,
        tls.as_ref().map(|(tls, _)| tls.clone()),
        http_shutdown,
    ));

    // Whoever asked us to stop, stop everyone.
    let stopper = {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
    };

    let follower_task = opts.follow.clone().map(|f| {
        let (engine, stop) = (engine.clone(), wait_for_stop(stop_rx.clone()));
        let opts = crate::replication::FollowOptions {
            primary: f.primary,
            secret: f.secret,
            tls_ca: opts.tls_ca.clone(),
            client_cert: opts.tls.as_ref().map(|t| (t.cert.clone(), t.key.clone())),
        };
        tokio::spawn(crate::replication::follow(engine, opts, stop))
    });
    let root_token = if follower_task.is_some() {
        // Ready once the first snapshot is in; health follows staleness.
        let mut stop = stop_rx.clone();
        while !engine.is_ready() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        None
    } else {
        match engine.load(is_new).await {
            Ok(root) => root,
            Err(source) => {
                let _ = stop_tx.send(true);
                let _ = grpc_task.await;
                let _ = http_task.await;
                return Err(ServeError::Store {
                    path: store_name(&opts),
                    source,
                });
            }
        }
    };
    set_all(&reporter, ServingStatus::Serving).await;
    tracing::info!(
        tokens = engine.index.read().tokens.len(),
        follower = follower_task.is_some(),
        "loaded; serving"
    );
    let _ = ready.send(Ready {
        engine: engine.clone(),
        root_token,
    });

    let jobs = tokio::spawn(background_jobs(
        engine.clone(),
        opts.usage_flush_interval,
        stop_rx.clone(),
        reporter.clone(),
    ));
    // PostgreSQL: follow what the other nodes commit.
    let node_sync = listen_config.map(|(config, tls)| {
        let notify = Arc::new(tokio::sync::Notify::new());
        let listener = tokio::spawn(crate::store::postgres::listen(
            config,
            tls,
            notify.clone(),
            wait_for_stop(stop_rx.clone()),
        ));
        let sync = tokio::spawn(crate::engine::sync(
            engine.clone(),
            notify,
            wait_for_stop(stop_rx.clone()),
        ));
        (listener, sync)
    });
    // New certificates for new connections, without a restart.
    let tls_watch = tls.map(|(tls, hangup)| {
        tokio::spawn(crate::tls::watch(
            tls,
            hangup,
            wait_for_stop(stop_rx.clone()),
        ))
    });
    let routes_watch = opts.routes_file.clone().map(|path| {
        tokio::spawn(watch_routes(
            path,
            routes.clone(),
            engine.clone(),
            stop_rx.clone(),
        ))
    });

    wait_for_stop(stop_rx.clone()).await;
    tracing::info!("shutting down: NOT_SERVING, draining");
    set_all(&reporter, ServingStatus::NotServing).await;
    let grpc_result = grpc_task
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    let http_result = http_task
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    let _ = jobs.await;
    if let Some(w) = routes_watch {
        let _ = w.await;
    }
    if let Some(w) = tls_watch {
        let _ = w.await;
    }
    if let Some(f) = follower_task {
        let _ = f.await;
    }
    if let Some((listener, sync)) = node_sync {
        let _ = listener.await;
        let _ = sync.await;
    }
    stopper.abort();
    if engine.follower().is_none() {
        if let Err(e) = engine.persist_usage(0, usize::MAX).await {
            tracing::warn!(error = %e, "could not persist last-use times at shutdown");
        }
    }
    engine.flush().await.map_err(|source| ServeError::Store {
        path: store_name(&opts),
        source,
    })?;
    tracing::info!("stopped");
    grpc_result?;
    http_result?;
    Ok(())
}

async fn wait_for_stop(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Persists last-use times and learnt digests, and purges expired tokens,
/// until told to stop. On a follower (whose primary does both) it instead
/// keeps health and the lag gauge in step with the primary's silence.
async fn background_jobs(
    engine: Arc<Engine>,
    usage_every: Duration,
    stop: watch::Receiver<bool>,
    reporter: tonic_health::server::HealthReporter,
) {
    if engine.follower().is_some() {
        return follower_jobs(engine, stop, reporter).await;
    }
    let mut usage = tokio::time::interval(usage_every);
    let mut purge = tokio::time::interval(Duration::from_secs(60));
    // The Prometheus recorder keeps histogram samples until upkeep drains them.
    let mut upkeep = tokio::time::interval(Duration::from_secs(5));
    let metrics = crate::http::metrics_handle();
    // A PostgreSQL node's health follows whether it reaches its database.
    let mut health = tokio::time::interval(Duration::from_millis(250));
    let mut serving = true;
    let stopped = wait_for_stop(stop);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = health.tick(), if engine.shared().is_some() => {
                health_follows_staleness(&engine, &reporter, &mut serving).await;
            }
            _ = usage.tick() => {
                if let Err(e) = engine.persist_usage(USAGE_GRANULARITY_MS, USAGE_BATCH_MAX).await {
                    tracing::warn!(error = %e, "persisting last-use times failed; will retry");
                }
            }
            _ = upkeep.tick() => {
                if let Some(m) = metrics.clone() {
                    // Draining histograms is CPU work: not on an async worker.
                    let _ = tokio::task::spawn_blocking(move || m.run_upkeep()).await;
                }
                crate::token::trim_argon2_memory(ARGON2_MEMORY_IDLE);
            }
            _ = purge.tick() => {
                if let Err(e) = engine.purge_expired().await {
                    tracing::warn!(error = %e, "purging expired tokens failed; will retry");
                }
            }
        }
    }
}

/// The routes file's identity: a change of either means a new file.
fn file_stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reloads the routes file on SIGHUP or when it changes on disk (checked
/// every [`ROUTES_POLL`]). A file that does not load leaves the routes in
/// force and is logged with its line; requests are never dropped: each
/// Check uses the routes in force when it started.
async fn watch_routes(
    path: std::path::PathBuf,
    routes: Arc<SharedRoutes>,
    engine: Arc<Engine>,
    stop: watch::Receiver<bool>,
) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut poll = tokio::time::interval(ROUTES_POLL);
    let mut stamp = file_stamp(&path);
    let stopped = wait_for_stop(stop);
    tokio::pin!(stopped);
    loop {
        #[cfg(unix)]
        let sighup = async {
            match hangup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let sighup = std::future::pending::<()>();
        let why = tokio::select! {
            _ = &mut stopped => return,
            _ = sighup => "SIGHUP",
            _ = poll.tick() => {
                let now = file_stamp(&path);
                if now == stamp {
                    continue;
                }
                stamp = now;
                "file changed"
            }
        };
        let p = path.clone();
        let m = &engine.metrics.check;
        match tokio::task::spawn_blocking(move || crate::routes::load(&p)).await {
            Ok(Ok(new)) => {
                tracing::info!(routes = new.len(), why, "routes reloaded");
                m.routes.set(new.len() as f64);
                m.reload_ok.increment(1);
                routes.replace(new);
            }
            Ok(Err(e)) => {
                m.reload_error.increment(1);
                tracing::error!(error = %e, why, "routes file not reloaded; the previous routes stay");
            }
            Err(e) => tracing::error!(error = %e, "routes reload task failed"),
        }
    }
}

/// A follower's upkeep: health NOT_SERVING while it may not answer (stale
/// and failing closed), SERVING again once it hears from the primary; the
/// lag gauges; the metrics recorder's upkeep.
/// Keeps health in step with the staleness bound of a follower or a
/// PostgreSQL node: NOT_SERVING once `ensure_ready` fails (the error says
/// who has been silent, and for how long), SERVING again once it passes.
async fn health_follows_staleness(
    engine: &Engine,
    reporter: &tonic_health::server::HealthReporter,
    serving: &mut bool,
) {
    let ready = engine.ensure_ready();
    if ready.is_ok() == *serving {
        return;
    }
    *serving = ready.is_ok();
    match ready {
        Ok(()) => {
            tracing::info!("heard from the source again: serving");
            set_all(reporter, ServingStatus::Serving).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "stale: failing closed");
            set_all(reporter, ServingStatus::NotServing).await;
        }
    }
}

async fn follower_jobs(
    engine: Arc<Engine>,
    stop: watch::Receiver<bool>,
    reporter: tonic_health::server::HealthReporter,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut upkeep = tokio::time::interval(Duration::from_secs(5));
    let metrics = crate::http::metrics_handle();
    let stopped = wait_for_stop(stop);
    tokio::pin!(stopped);
    let mut serving = true;
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tick.tick() => {
                let Some(f) = engine.follower() else { return };
                let now = engine.now_ms();
                engine.metrics.replication.lag_seconds.set(f.silence_ms(now) as f64 / 1000.0);
                health_follows_staleness(&engine, &reporter, &mut serving).await;
            }
            _ = upkeep.tick() => {
                if let Some(m) = metrics.clone() {
                    let _ = tokio::task::spawn_blocking(move || m.run_upkeep()).await;
                }
                crate::token::trim_argon2_memory(ARGON2_MEMORY_IDLE);
            }
        }
    }
}
