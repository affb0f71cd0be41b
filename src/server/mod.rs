//! Wiring: [`run`] opens the store and the engine ([`open`]), serves gRPC
//! ([`grpc`]: every service, health, reflection, limits) and HTTP, runs the
//! background jobs ([`jobs`]), and shuts down gracefully: NOT_SERVING,
//! drain, persist, flush. [`Options::from_config`] turns the validated
//! flags into what `run` needs.
//!
//! Wiring (L7): may import any module of the crate; nothing imports it but
//! the binary and the tests.

mod grpc;
mod jobs;
mod open;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, StaleMode};
use crate::engine::{Engine, Settings};
use crate::token::Secret;

pub use grpc::{MAX_MESSAGE_BYTES, TLS_MAX_CONNECTION_AGE};
pub use jobs::{ARGON2_MEMORY_IDLE, ROUTES_POLL, USAGE_BATCH_MAX, USAGE_GRANULARITY_MS};

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
    /// The leak report keys file is missing or bad (the message names the
    /// flag, the file and the entry).
    #[error("{0}")]
    LeakReportKeys(String),
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
    /// GitHub's secret-scanning keys file (none: leak reports are off).
    pub leak_report_keys: Option<std::path::PathBuf>,
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
    /// How often the tokens used here are reported to the primary.
    pub use_report_interval: Duration,
    /// How often the state file in the data dir is rewritten when the
    /// revision moved (zero: no state file is read or written).
    pub state_interval: Duration,
}

impl std::fmt::Debug for Follow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follow")
            .field("primary", &self.primary)
            .field("secret", &"REDACTED")
            .field("stale_after", &self.stale_after)
            .field("serve_stale", &self.serve_stale)
            .field("use_report_interval", &self.use_report_interval)
            .field("state_interval", &self.state_interval)
            .finish()
    }
}

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

impl Options {
    /// The options of a `keyward` process: `config` (already validated)
    /// and the system clock. Reads `--replication-secret-file` and the host
    /// name; Err is the message for a secret file or node name that will
    /// not do (exit 64).
    pub fn from_config(config: &Config) -> Result<Options, String> {
        let node_name = config.node_name()?;
        let secret = config
            .replication_secret_file
            .as_deref()
            .map(crate::config::read_secret)
            .transpose()?;
        let serve_stale = config.stale_mode == StaleMode::Serve;
        Ok(Options {
            data_dir: config.data_dir.clone(),
            digest_key_file: config.digest_key_path(),
            settings: Settings {
                reset_grace: config.reset_grace,
                purge_after: config.purge_after,
                node_name: node_name.into(),
                ..Settings::default()
            },
            clock: Arc::new(SystemClock),
            request_timeout: config.request_timeout,
            max_in_flight: config.max_in_flight,
            max_concurrent_streams: config.max_concurrent_streams,
            usage_flush_interval: config.usage_flush_interval,
            routes_file: config.routes.clone(),
            replication_secret: secret.clone().map(Into::into),
            postgres: config.store.clone().map(|url| Postgres {
                store: crate::store::postgres::PgOptions {
                    url: url.0,
                    pool_size: config.pg_pool_size,
                    retain_changes: config.pg_retain_changes,
                    ca_file: config.pg_ca_file.clone(),
                },
                stale_after: config.stale_after,
                serve_stale,
            }),
            follow: config.follow.clone().map(|primary| Follow {
                primary,
                secret: secret.unwrap_or_default().into(),
                stale_after: config.stale_after,
                serve_stale,
                use_report_interval: config.use_report_interval,
                state_interval: config.follower_state_interval,
            }),
            tls: config.tls_files(),
            tls_ca: config.tls_ca.clone(),
            leak_report_keys: config.leak_report_keys.clone(),
        })
    }
}

/// Told once the store is loaded and the server is serving.
pub struct Ready {
    /// The engine (tests drive the clock-dependent jobs through it).
    pub engine: Arc<Engine>,
    /// The root token, on the very first start only.
    pub root_token: Option<Secret>,
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

    // Open: the files first (a bad one refuses the start), then the store.
    let mut files = open::load_files(&opts)?;
    let open::Opened {
        engine,
        is_new,
        listen,
    } = open::open(&opts).await?;

    // Serve, NOT_SERVING until loaded.
    let (stop_tx, stop_rx) = watch::channel(false);
    let grpc = grpc::serve(&opts, &engine, &files, grpc, &stop_rx).await?;
    let http_task = serve_http(&engine, http, &files, &stop_rx);
    // Whoever asked us to stop, stop everyone.
    let stopper = {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
    };
    let mut jobs = jobs::Jobs::new(stop_rx.clone());
    let root_token = if let Some(follow) = &opts.follow {
        // The state kept on disk, if any (not ready with it: the primary
        // must answer first).
        let loaded = if follow.state_interval.is_zero() {
            None
        } else {
            load_follower_state(&engine, &opts.data_dir).await
        };
        jobs.follow(&engine, follow, &opts, loaded);
        // Ready once the primary's state is in (a snapshot, or the commits
        // missed since the state on disk); health follows staleness.
        wait_for_first_snapshot(&engine, stop_rx.clone()).await;
        None
    } else {
        match engine.load(is_new).await {
            Ok(root) => root,
            Err(source) => {
                let _ = stop_tx.send(true);
                let _ = grpc.task.await;
                let _ = http_task.await;
                return Err(open::store_error(&opts)(source));
            }
        }
    };
    grpc::set_all(&grpc.reporter, ServingStatus::Serving).await;
    tracing::info!(
        tokens = engine.view().tokens.len(),
        follower = opts.follow.is_some(),
        "loaded; serving"
    );
    let _ = ready.send(Ready {
        engine: engine.clone(),
        root_token,
    });
    jobs.start(jobs::Serving {
        engine: engine.clone(),
        usage_every: opts.usage_flush_interval,
        reporter: grpc.reporter.clone(),
        listen,
        tls: files.tls.take(),
        routes: opts
            .routes_file
            .clone()
            .map(|path| (path, files.routes.clone())),
    });

    // Wait for shutdown.
    wait_for_stop(stop_rx.clone()).await;
    tracing::info!("shutting down: NOT_SERVING, draining");
    grpc::set_all(&grpc.reporter, ServingStatus::NotServing).await;

    // Drain: both ports, then every job.
    let grpc_result = grpc
        .task
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    let http_result = http_task
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    jobs.drain().await;
    stopper.abort();

    // Flush.
    flush(&engine, &opts).await?;
    tracing::info!("stopped");
    grpc_result?;
    http_result?;
    Ok(())
}

/// Serves the HTTP port (probes, metrics, REST facades) until stop.
fn serve_http(
    engine: &Arc<Engine>,
    listener: TcpListener,
    files: &open::Files,
    stop: &watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>> {
    let app = crate::http::router(engine, files.leak_keys.clone());
    // Descriptor headroom: the open-files limit raised, the HTTP port
    // capped to a share of it so the gRPC port keeps the rest.
    let cap = crate::http::serve::fd_headroom();
    tokio::spawn(crate::http::serve::serve(
        listener,
        app,
        cap,
        files.tls.as_ref().map(|(tls, _)| tls.clone()),
        wait_for_stop(stop.clone()),
    ))
}

/// A follower: installs the state kept in `dir` (off the async workers);
/// where it stands, if it was valid.
async fn load_follower_state(
    engine: &Arc<Engine>,
    dir: &std::path::Path,
) -> Option<crate::store::archive::Position> {
    let (e, d) = (engine.clone(), dir.to_path_buf());
    match tokio::task::spawn_blocking(move || crate::replication::load_state(&e, &d)).await {
        Ok(crate::replication::Loaded::Installed { position, .. }) => Some(position),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "loading the follower state failed; taking a snapshot");
            None
        }
    }
}

/// A follower: waits until the primary's state is in (a snapshot, or a
/// resume from the state on disk), or stop.
async fn wait_for_first_snapshot(engine: &Engine, mut stop: watch::Receiver<bool>) {
    while !engine.is_ready() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}

/// Persists every last-use time (not on a follower: it owns no store) and
/// flushes the store.
async fn flush(engine: &Engine, opts: &Options) -> Result<(), ServeError> {
    if engine.follower().is_none() {
        if let Err(e) = engine.persist_usage(0, usize::MAX).await {
            tracing::warn!(error = %e, "could not persist last-use times at shutdown");
        }
    }
    engine.flush().await.map_err(open::store_error(opts))
}

/// Resolves once stop is sent.
async fn wait_for_stop(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
