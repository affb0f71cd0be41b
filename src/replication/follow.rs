//! The follower's side of replication: [`follow`] connects to the primary
//! (over TLS for an `https://` primary, verified against `--tls-ca` or the
//! system roots, presenting `--tls-cert`/`--tls-key` when given, all
//! re-read at every connect), applies its snapshot and commits to the
//! in-memory index, and reconnects with backoff. Over the same channel it
//! reports the tokens used here ([`super::report`]), every
//! `--use-report-interval` and once more when it stops.
//!
//! Part of replication (layer L5, with `tls`): imports `engine`, `index`
//! and `pb`, and `tls::read_ca` for the CA file.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use crate::engine::Engine;
use crate::index::change::from_wire;
use crate::index::Index;
use crate::pb::replication::{self as rpb, watch_event::Kind as Ev, WatchRequest};

use super::report;

/// How a follower connects.
#[derive(Clone)]
pub struct FollowOptions {
    /// The primary's gRPC address, `host:port` or a URL; `https://` makes
    /// the follower speak TLS and verify the primary.
    pub primary: String,
    /// The replication secret.
    pub secret: Arc<str>,
    /// `--tls-ca`: the CA certificate(s) an https primary's certificate
    /// must chain to (none: the system roots). Re-read at every connect,
    /// so a rotated CA needs no restart.
    pub tls_ca: Option<PathBuf>,
    /// `--tls-cert` and `--tls-key`: the client certificate presented to
    /// an https primary (one that requires mTLS refuses a follower
    /// without). Re-read at every connect, like the CA.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// How often the tokens used here are reported to the primary.
    pub use_report_interval: Duration,
}

impl std::fmt::Debug for FollowOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowOptions")
            .field("primary", &self.primary)
            .field("secret", &"REDACTED")
            .field("tls_ca", &self.tls_ca)
            .field("client_cert", &self.client_cert)
            .field("use_report_interval", &self.use_report_interval)
            .finish()
    }
}

/// Whether `primary` (a `--follow` value) names an https primary: the
/// follower then speaks TLS and verifies its certificate.
pub fn follows_over_tls(primary: &str) -> bool {
    primary
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

pub(super) fn endpoint(addr: &str) -> String {
    let scheme = |s: &str| {
        addr.get(..s.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(s))
    };
    if scheme("http://") || scheme("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// The TLS settings of one connection to an https primary, from the files
/// as they are now: its certificate verified against `--tls-ca` or the
/// system roots, the URL's host name (or IP address) checked, ALPN h2,
/// and the client certificate presented when one is configured.
fn primary_tls(opts: &FollowOptions) -> Result<ClientTlsConfig, String> {
    let config = match &opts.tls_ca {
        Some(path) => {
            let (pem, _) = crate::tls::read_ca("--tls-ca", path).map_err(|e| e.to_string())?;
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
        }
        None => ClientTlsConfig::new().with_native_roots(),
    };
    let config = match &opts.client_cert {
        Some((cert, key)) => {
            let read = |flag: &str, path: &Path| {
                std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
            };
            config.identity(Identity::from_pem(
                read("--tls-cert", cert)?,
                read("--tls-key", key)?,
            ))
        }
        None => config,
    };
    Ok(config.timeout(Duration::from_secs(5)))
}

/// An error with its causes, outermost first, each said once (tonic's
/// "transport error" alone does not say a certificate failed to verify).
fn with_causes(e: &dyn std::error::Error) -> String {
    causes(e.to_string(), e.source())
}

/// A refusal's message with its causes (a primary requiring a client
/// certificate refuses after the TLS 1.3 handshake, so the first call
/// fails with the alert as its cause).
fn status_with_causes(s: &Status) -> String {
    causes(s.message().to_string(), std::error::Error::source(s))
}

/// `text`, then each cause in `source`'s chain not already said in it.
fn causes(mut text: String, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// Follows the primary until `stop` resolves: connect, sync, apply, and on
/// any failure reconnect with backoff (100 ms doubling to 5 s), resuming
/// from the last revision when the primary still has it. Once `stop`
/// resolves, the uses not reported yet go to the primary on the last
/// connection (at most [`report::REPORT_TIMEOUT`] per batch).
pub async fn follow(
    engine: Arc<Engine>,
    opts: FollowOptions,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    if !follows_over_tls(&opts.primary) {
        tracing::warn!(
            primary = %opts.primary,
            "following the primary in plaintext: the replication secret and every token record \
             travel in clear; use --follow https://host:port"
        );
    }
    let mut backoff = Duration::from_millis(100);
    // The last connection to the primary, for the report at shutdown.
    let mut last: Option<Channel> = None;
    loop {
        let run = follow_once(&engine, &opts, &mut last);
        let outcome = tokio::select! {
            _ = &mut stop => return report_at_stop(&engine, &opts, last).await,
            r = run => r,
        };
        let m = &engine.metrics().replication;
        m.disconnects.increment(1);
        match outcome {
            Ok(()) => {
                tracing::warn!(primary = %opts.primary, "the primary ended the stream; reconnecting");
            }
            Err(e) => {
                tracing::warn!(primary = %opts.primary, error = %e, retry_in = ?backoff, "following the primary failed; reconnecting");
            }
        }
        tokio::select! {
            _ = &mut stop => return report_at_stop(&engine, &opts, last).await,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
        if engine
            .follower()
            .is_some_and(|f| f.synced.load(Ordering::Acquire))
        {
            // Once synced, retries stay at most 800 ms apart: the state it
            // serves from ages with every retry.
            backoff = backoff.min(Duration::from_millis(800));
        }
    }
}

/// The report of a follower that stops: what was used since the last
/// round, and its unspent leases back, on the last connection (none if it
/// never connected).
async fn report_at_stop(engine: &Engine, opts: &FollowOptions, last: Option<Channel>) {
    let Some(channel) = last else { return };
    if let Ok(bearer) = super::bearer(&opts.secret) {
        let mut source = super::lease::PrimaryLeases::new(channel.clone(), bearer);
        let back = engine.return_leases(&mut source).await;
        if back > 0 {
            tracing::info!(
                units = back,
                "unspent sending-limit leases given back at shutdown"
            );
        }
    }
    match report::report_uses(engine, &channel, &opts.secret).await {
        Ok(n) => tracing::info!(uses = n, "last uses reported to the primary at shutdown"),
        Err(e) => tracing::warn!(error = %e, "could not report last uses at shutdown"),
    }
}

/// One connection: watch the primary's stream and apply it, reporting uses
/// on the same channel meanwhile, until the stream ends or fails.
async fn follow_once(
    engine: &Arc<Engine>,
    opts: &FollowOptions,
    last: &mut Option<Channel>,
) -> Result<(), String> {
    let mut primary = Endpoint::from_shared(endpoint(&opts.primary))
        .map_err(|e| format!("bad primary address: {e}"))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    if follows_over_tls(&opts.primary) {
        primary = primary.tls_config(primary_tls(opts)?).map_err(|e| {
            let files = match &opts.client_cert {
                Some((cert, key)) => {
                    format!(
                        " (--tls-cert {}, --tls-key {})",
                        cert.display(),
                        key.display()
                    )
                }
                None => String::new(),
            };
            format!("TLS settings{files}: {}", with_causes(&e))
        })?;
    }
    let channel = primary
        .connect()
        .await
        .map_err(|e| format!("connect: {}", with_causes(&e)))?;
    *last = Some(channel.clone());
    let reports = report::report_every(
        engine,
        channel.clone(),
        &opts.secret,
        opts.use_report_interval,
    );
    let mut source =
        super::lease::PrimaryLeases::new(channel.clone(), super::bearer(&opts.secret)?);
    let leases = engine.refill_leases(&mut source);
    tokio::select! {
        r = watch(engine, opts, channel) => r,
        never = reports => match never {},
        never = leases => match never {},
    }
}

/// Watches the primary on `channel`: applies its snapshot and commits to
/// the index until the stream ends (Ok) or fails.
async fn watch(engine: &Arc<Engine>, opts: &FollowOptions, channel: Channel) -> Result<(), String> {
    let f = engine.follower().ok_or("not a follower")?;
    let mut client = rpb::replication_client::ReplicationClient::new(channel)
        .max_decoding_message_size(64 << 20);
    let mut req = Request::new(WatchRequest {
        epoch: f.epoch.load(Ordering::Acquire),
        revision: f.revision.load(Ordering::Acquire),
    });
    req.metadata_mut()
        .insert("authorization", super::bearer(&opts.secret)?);
    let mut stream = client
        .watch(req)
        .await
        .map_err(|s| format!("watch: {}", status_with_causes(&s)))?
        .into_inner();
    let mut building: Option<Index> = None;
    // Resumed from the state kept on disk, not serving yet: serving once
    // the missed commits are in (the first heartbeat, which the primary
    // sends after them, names no revision past ours).
    let mut catching_up = false;
    let m = &engine.metrics().replication;
    while let Some(ev) = stream
        .message()
        .await
        .map_err(|s| format!("stream: {}", status_with_causes(&s)))?
    {
        let now = engine.now_ms();
        f.freshness.heard(now);
        f.primary_sent_ms.store(ev.sent_at_ms, Ordering::Release);
        f.primary_revision.fetch_max(ev.revision, Ordering::AcqRel);
        match Ev::try_from(ev.kind).unwrap_or(Ev::Unspecified) {
            Ev::SnapshotBegin => {
                if ev.digest_key_id != engine.key().id() {
                    tracing::warn!("the primary's digest key differs from ours: tokens will be verified with argon2 (copy the primary's --digest-key-file to avoid it)");
                }
                f.primary_revision.store(ev.revision, Ordering::Release);
                f.primary_key_id.lock().clone_from(&ev.digest_key_id);
                if !f.synced.load(Ordering::Acquire) {
                    // Never served (a state from disk the primary could
                    // not resume): let it go before the snapshot is built,
                    // so a start needs room for one index, not two.
                    engine.install(Index::new(engine.key().clone()));
                }
                building = Some(Index::new(engine.key().clone()));
                catching_up = false;
            }
            Ev::SnapshotChunk => {
                let idx = building
                    .as_mut()
                    .ok_or("snapshot chunk outside a snapshot")?;
                for c in ev.changes {
                    idx.apply(&from_wire(c).ok_or("unknown change in the snapshot")?);
                }
            }
            Ev::SnapshotEnd => {
                let idx = building.take().ok_or("snapshot end outside a snapshot")?;
                let tokens = engine.install(idx);
                f.epoch.store(ev.epoch, Ordering::Release);
                f.revision.store(ev.revision, Ordering::Release);
                f.synced.store(true, Ordering::Release);
                m.snapshots.increment(1);
                engine.mark_ready();
                tracing::info!(
                    tokens,
                    revision = ev.revision,
                    "snapshot from the primary applied"
                );
            }
            Ev::Resume => {
                if ev.epoch != f.epoch.load(Ordering::Acquire) {
                    return Err("resume in another epoch".into());
                }
                catching_up = !f.synced.load(Ordering::Acquire);
                tracing::info!(
                    revision = ev.revision,
                    from_disk = catching_up,
                    "resumed from the primary's history"
                );
            }
            Ev::Commit => {
                let have = f.revision.load(Ordering::Acquire);
                if ev.epoch != f.epoch.load(Ordering::Acquire) || ev.revision != have + 1 {
                    // Out of order: start over with a snapshot.
                    f.epoch.store(0, Ordering::Release);
                    return Err(format!("commit {} after {have}: resyncing", ev.revision));
                }
                let changes = ev
                    .changes
                    .into_iter()
                    .map(from_wire)
                    .collect::<Option<Vec<_>>>()
                    .ok_or("unknown change in a commit")?;
                engine.apply_followed(&changes);
                f.revision.store(ev.revision, Ordering::Release);
                m.commits.increment(1);
            }
            Ev::Heartbeat if catching_up && ev.revision <= f.revision.load(Ordering::Acquire) => {
                catching_up = false;
                f.synced.store(true, Ordering::Release);
                engine.mark_ready();
                tracing::info!(
                    tokens = engine.view().tokens.len(),
                    revision = ev.revision,
                    "caught up from the state kept on disk: no snapshot needed"
                );
            }
            Ev::Heartbeat | Ev::Unspecified => {}
        }
        let lag = f
            .primary_revision
            .load(Ordering::Acquire)
            .saturating_sub(f.revision.load(Ordering::Acquire));
        m.lag_revisions.set(lag as f64);
    }
    Ok(())
}
