//! The background jobs of a running node, in one [`JoinSet`]: the
//! replication stream a follower follows and its state file; the upkeep loop (last-use
//! writer, purge of expired tokens, metrics upkeep and argon2 memory trim,
//! health kept in step with staleness); the PostgreSQL LISTEN and catch-up;
//! the TLS and routes reloads. Each stops when the stop signal is sent;
//! [`Jobs::drain`] waits for all of them at once.
//!
//! Wiring (L7): may import any module below `server`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::engine::Engine;
use crate::service::ext_authz::SharedRoutes;
use crate::tls::{Hangup, Tls};

use super::{grpc::set_all, wait_for_stop, Follow, Options};

/// Last-use times are persisted when they moved by a minute or more (and
/// all at shutdown): precise enough for "last used", and at most one write
/// per busy token per minute.
pub const USAGE_GRANULARITY_MS: i64 = 60_000;

/// Most tokens the usage writer persists per interval, a hundredth of it
/// per step (`engine/usage.rs`): small slices of work, spread over the
/// interval, rather than a burst that would show in Authorize latency.
pub const USAGE_BATCH_MAX: usize = 2_000;

/// argon2 memory (19 MiB per buffer) unused this long is given back to the
/// kernel, so RSS returns to its resting size after a burst of hashes.
pub const ARGON2_MEMORY_IDLE: Duration = Duration::from_secs(30);

/// How often the routes file is looked at for changes (SIGHUP reloads at
/// once).
pub const ROUTES_POLL: Duration = Duration::from_secs(1);

/// The jobs running, and the signal that stops them.
pub(super) struct Jobs {
    /// Every job spawned so far.
    set: JoinSet<()>,
    /// Turns true when the node stops; each job watches it.
    stop: watch::Receiver<bool>,
}

impl Jobs {
    /// No jobs yet; those spawned later stop on `stop`.
    pub(super) fn new(stop: watch::Receiver<bool>) -> Self {
        Jobs {
            set: JoinSet::new(),
            stop,
        }
    }

    /// Follower: streams the primary's state into `engine` (from before
    /// the node is ready: the first snapshot, or a resume from the state
    /// `loaded` from disk, makes it ready), and keeps that state on disk
    /// every `--follower-state-interval` (unless zero) and at stop.
    pub(super) fn follow(
        &mut self,
        engine: &Arc<Engine>,
        follow: &Follow,
        opts: &Options,
        loaded: Option<crate::store::archive::Position>,
    ) {
        let every = follow.state_interval;
        let follow = crate::replication::FollowOptions {
            primary: follow.primary.clone(),
            secret: follow.secret.clone(),
            tls_ca: opts.tls_ca.clone(),
            client_cert: opts.tls.as_ref().map(|t| (t.cert.clone(), t.key.clone())),
            use_report_interval: follow.use_report_interval,
        };
        let stop = wait_for_stop(self.stop.clone());
        self.set
            .spawn(crate::replication::follow(engine.clone(), follow, stop));
        if !every.is_zero() {
            self.set.spawn(crate::replication::keep_state(
                engine.clone(),
                opts.data_dir.clone(),
                every,
                loaded,
                wait_for_stop(self.stop.clone()),
            ));
        }
    }

    /// The jobs of a serving node: upkeep, and as configured the
    /// PostgreSQL LISTEN and catch-up, the TLS watcher and the routes
    /// watcher.
    pub(super) fn start(&mut self, serving: Serving) {
        let Serving {
            engine,
            usage_every,
            reporter,
            listen,
            tls,
            routes,
        } = serving;
        self.set.spawn(upkeep(
            engine.clone(),
            usage_every,
            self.stop.clone(),
            reporter,
        ));
        // PostgreSQL: follow what the other nodes commit.
        if let Some((config, tls)) = listen {
            let notify = Arc::new(tokio::sync::Notify::new());
            self.set.spawn(crate::store::postgres::listen(
                config,
                tls,
                notify.clone(),
                wait_for_stop(self.stop.clone()),
            ));
            self.set.spawn(crate::engine::sync(
                engine.clone(),
                notify,
                wait_for_stop(self.stop.clone()),
            ));
            // Sending limits: leases from the budgets the database keeps.
            self.set
                .spawn(store_leases(engine.clone(), self.stop.clone()));
        }
        // New certificates for new connections, without a restart.
        if let Some((tls, hangup)) = tls {
            self.set.spawn(crate::tls::watch(
                tls,
                hangup,
                wait_for_stop(self.stop.clone()),
            ));
        }
        if let Some((path, routes)) = routes {
            self.set
                .spawn(watch_routes(path, routes, engine, self.stop.clone()));
        }
    }

    /// Waits until every job has ended (each ends once stop is sent).
    pub(super) async fn drain(mut self) {
        while self.set.join_next().await.is_some() {}
    }
}

/// A PostgreSQL node's leases of sending-limit budget from its database,
/// until told to stop; then every unspent unit goes back.
async fn store_leases(engine: Arc<Engine>, stop: watch::Receiver<bool>) {
    let mut source = crate::engine::StoreLeases;
    tokio::select! {
        () = wait_for_stop(stop) => {}
        never = engine.refill_leases(&mut source) => match never {},
    }
    let back = engine.return_leases(&mut source).await;
    if back > 0 {
        tracing::info!(
            units = back,
            "unspent sending-limit leases given back at shutdown"
        );
    }
}

/// What the jobs of a serving node work with.
pub(super) struct Serving {
    /// The engine they keep up.
    pub engine: Arc<Engine>,
    /// Period of the last-use writer (`--usage-flush-interval`).
    pub usage_every: Duration,
    /// Health, kept in step with staleness.
    pub reporter: HealthReporter,
    /// PostgreSQL: where to LISTEN for the other nodes' commits.
    pub listen: Option<(tokio_postgres::Config, crate::store::postgres::Tls)>,
    /// TLS: the configs to reload and the SIGHUP stream.
    pub tls: Option<(Arc<Tls>, Hangup)>,
    /// The routes file and the routes in force.
    pub routes: Option<(PathBuf, Arc<SharedRoutes>)>,
}

/// Persists last-use times and learnt digests, and purges expired tokens,
/// until told to stop. On a follower (whose primary does both) it instead
/// keeps health and the lag gauge in step with the primary's silence.
async fn upkeep(
    engine: Arc<Engine>,
    usage_every: Duration,
    stop: watch::Receiver<bool>,
    reporter: HealthReporter,
) {
    if engine.follower().is_some() {
        return follower_upkeep(engine, stop, reporter).await;
    }
    // The usage writer: a task of its own, in small steps paced over the
    // interval (engine/usage.rs says why), so that a step waiting for the
    // store holds up none of the work below.
    let pace = crate::engine::UsagePace {
        every: usage_every,
        granularity_ms: USAGE_GRANULARITY_MS,
        max_per_interval: USAGE_BATCH_MAX,
    };
    let writer = tokio::spawn(
        engine
            .clone()
            .write_usage(pace, wait_for_stop(stop.clone())),
    );
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
            _ = &mut stopped => {
                // It ends after the step under way.
                let _ = writer.await;
                return;
            }
            _ = health.tick(), if engine.shared().is_some() => {
                health_follows_staleness(&engine, &reporter, &mut serving).await;
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

/// A follower's upkeep: health NOT_SERVING while it may not answer (stale
/// and failing closed), SERVING again once it hears from the primary; the
/// lag gauges; the metrics recorder's upkeep.
async fn follower_upkeep(
    engine: Arc<Engine>,
    stop: watch::Receiver<bool>,
    reporter: HealthReporter,
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
                engine.metrics().replication.lag_seconds.set(f.silence_ms(now) as f64 / 1000.0);
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

/// Keeps health in step with the staleness bound of a follower or a
/// PostgreSQL node: NOT_SERVING once `ensure_ready` fails (the error says
/// who has been silent, and for how long), SERVING again once it passes.
async fn health_follows_staleness(engine: &Engine, reporter: &HealthReporter, serving: &mut bool) {
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
    path: PathBuf,
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
        let m = &engine.metrics().check;
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
