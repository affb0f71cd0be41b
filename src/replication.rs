//! Primary → follower replication.
//!
//! **Primary.** Every commit gets the next revision of this process's epoch
//! (a random id drawn at start) and is published on a [`Feed`]: kept in a
//! bounded history and broadcast to the `Replication/Watch` streams. A new
//! follower gets a consistent snapshot (taken with the writer lock held, so
//! no commit falls between the snapshot and the stream), then every commit
//! in order, and a heartbeat every second. A follower that reconnects within
//! the same epoch, with its revision still in the history, gets only what it
//! missed. Watch requires the replication secret; without one configured,
//! replication is off.
//!
//! **Follower** ([`follow`]): no store of its own; it applies what the
//! primary streams to its in-memory index, serves Authorize and Check from
//! it, refuses admin calls naming the primary, reconnects with backoff, and
//! reports its lag. Past the staleness bound without a word from the
//! primary it fails closed (or keeps serving, by flag). An `https://`
//! primary is reached over TLS: its certificate must chain to `--tls-ca`
//! (or the system roots) and name the URL's host, and the follower
//! presents `--tls-cert`/`--tls-key` when given, all re-read at every
//! connect. A plaintext primary gets one warning at start: the secret and
//! every record travel in clear.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Response, Status};

use crate::engine::Engine;
use crate::index::{Change, Index};
use crate::model::Kind;
use crate::pb::replication::{
    self as rpb, replication_server::Replication, watch_event::Kind as Ev, WatchEvent, WatchRequest,
};
use crate::pb::store::{AccountRecord, ResourceRecord};

pub use crate::index::change::{from_wire, to_wire};

/// Commits kept for followers that reconnect.
pub const HISTORY_MAX: usize = 8192;
/// Snapshot records per message.
pub const CHUNK: usize = 2048;
/// Heartbeat period.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// One published commit.
#[derive(Debug)]
pub struct Batch {
    /// Its revision.
    pub revision: u64,
    /// What changed.
    pub changes: Vec<rpb::Change>,
    /// The state was replaced (a reload): watchers must resync.
    pub reset: bool,
}

/// The primary's change feed.
#[derive(Debug)]
pub struct Feed {
    /// This process's epoch.
    pub epoch: u64,
    /// Last published revision, and the history (under one lock: they move
    /// together).
    state: Mutex<(u64, VecDeque<Arc<Batch>>)>,
    tx: broadcast::Sender<Arc<Batch>>,
}

impl Default for Feed {
    fn default() -> Self {
        Self::new()
    }
}

impl Feed {
    /// A feed with a fresh random epoch.
    pub fn new() -> Self {
        Self::with_epoch(rand::random::<u64>() | 1)
    }

    /// A feed in a given epoch (a shared store's cluster id: its nodes
    /// publish the store's revisions, so followers may resume on any).
    pub fn with_epoch(epoch: u64) -> Self {
        let (tx, _) = broadcast::channel(HISTORY_MAX);
        Feed {
            epoch,
            state: Mutex::new((0, VecDeque::new())),
            tx,
        }
    }

    /// Starts over at `revision` with an empty history (after a load or a
    /// reload); watchers of the state before end, so their followers
    /// resync.
    pub fn reset(&self, revision: u64) {
        let mut st = self.state.lock();
        st.0 = revision;
        st.1.clear();
        let _ = self.tx.send(Arc::new(Batch {
            revision,
            changes: Vec::new(),
            reset: true,
        }));
    }

    /// The last published revision.
    pub fn revision(&self) -> u64 {
        self.state.lock().0
    }

    /// Publishes a commit; called with the writer lock held, after the
    /// index applied it.
    pub fn publish(&self, changes: &[Change]) {
        let next = self.revision() + 1;
        self.publish_at(next, changes);
    }

    /// Publishes a commit at a given revision (a shared store's), which
    /// must follow the last one.
    pub fn publish_at(&self, revision: u64, changes: &[Change]) {
        let mut st = self.state.lock();
        st.0 = revision;
        let batch = Arc::new(Batch {
            revision,
            changes: changes.iter().map(to_wire).collect(),
            reset: false,
        });
        if st.1.len() == HISTORY_MAX {
            st.1.pop_front();
        }
        st.1.push_back(batch.clone());
        // No receivers is fine: nobody follows yet.
        let _ = self.tx.send(batch);
    }

    /// The commits after `revision`, if all are still in the history.
    fn since(&self, revision: u64) -> Option<Vec<Arc<Batch>>> {
        let st = self.state.lock();
        let oldest = st.1.front().map_or(st.0 + 1, |b| b.revision);
        if revision > st.0 || revision + 1 < oldest {
            return None;
        }
        Some(
            st.1.iter()
                .filter(|b| b.revision > revision)
                .cloned()
                .collect(),
        )
    }
}

/// Everything in `idx` as changes that rebuild it (counters, accounts,
/// resources, then tokens in id order). Tokens come in slices of
/// [`CHUNK`] under short read locks; the caller holds the writer lock, so
/// nothing but digest fills moves meanwhile.
fn snapshot(engine: &Engine) -> Vec<Vec<rpb::Change>> {
    let mut chunks = Vec::new();
    let mut head = Vec::new();
    let max_id = {
        let idx = engine.index.read();
        head.push(to_wire(&Change::Counters {
            next_account_id: idx.next_account_id,
            next_token_id: idx.next_token_id,
        }));
        for a in idx.accounts.values() {
            head.push(to_wire(&Change::PutAccount(AccountRecord {
                id: a.id,
                name: a.name.clone(),
                created_at_ms: a.created_at_ms,
            })));
            for kind in Kind::ALL {
                for (id, node) in &a.resources[kind.slot()] {
                    let (parent_type, parent_id) = match &node.parent {
                        Some(p) => (Kind::Project.to_wire(), p.to_string()),
                        None => (Kind::Account.to_wire(), a.id.to_string()),
                    };
                    head.push(to_wire(&Change::PutResource(ResourceRecord {
                        account_id: a.id,
                        resource_type: kind.to_wire(),
                        id: id.to_string(),
                        parent_type,
                        parent_id,
                    })));
                }
            }
        }
        idx.next_token_id
    };
    chunks.push(head);
    let mut from = 0u64;
    while from < max_id {
        let to = (from + CHUNK as u64).min(max_id);
        let idx = engine.index.read();
        let chunk: Vec<rpb::Change> = (from..to)
            .filter_map(|id| idx.tokens.get(&id))
            .map(|t| to_wire(&Change::PutToken(t.to_record(engine.key()))))
            .collect();
        drop(idx);
        if !chunk.is_empty() {
            chunks.push(chunk);
        }
        from = to;
    }
    chunks
}

/// `Replication/Watch` on the primary.
#[derive(Clone)]
pub struct ReplicationService {
    /// Shared engine.
    pub engine: Arc<Engine>,
    /// The replication secret followers present.
    pub secret: Option<Arc<str>>,
    /// Becomes true when the server stops: streams end, so the graceful
    /// shutdown does not wait for followers forever.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for ReplicationService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationService").finish_non_exhaustive()
    }
}

fn event(kind: Ev, epoch: u64, revision: u64, changes: Vec<rpb::Change>, now: i64) -> WatchEvent {
    WatchEvent {
        kind: kind as i32,
        epoch,
        revision,
        changes,
        sent_at_ms: now,
        digest_key_id: Vec::new(),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Replication for ReplicationService {
    type WatchStream = EventStream;

    async fn watch(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let Some(secret) = &self.secret else {
            return Err(Status::failed_precondition(
                "replication is off on this keyward (start it with --replication-secret-file)",
            ));
        };
        let given = crate::service::credential(req.metadata()).unwrap_or_default();
        let same: bool = subtle::ConstantTimeEq::ct_eq(given.as_bytes(), secret.as_bytes()).into();
        if !same {
            return Err(Status::unauthenticated(
                "wrong or missing replication secret",
            ));
        }
        self.engine.ensure_ready()?;
        let engine = self.engine.clone();
        let feed = engine.feed.clone();
        let want = req.into_inner();
        // Under the writer lock no commit can land between what we send
        // first and the live stream.
        let w = engine.writer.clone().lock_owned().await;
        let rx = feed.tx.subscribe();
        let resume = (want.epoch == feed.epoch)
            .then(|| feed.since(want.revision))
            .flatten();
        let now = engine.now_ms();
        let mut first: Vec<WatchEvent> = Vec::new();
        let mut last = feed.revision();
        match resume {
            Some(missed) => {
                first.push(event(Ev::Resume, feed.epoch, want.revision, vec![], now));
                for b in missed {
                    first.push(event(
                        Ev::Commit,
                        feed.epoch,
                        b.revision,
                        b.changes.clone(),
                        now,
                    ));
                }
            }
            None => {
                let chunks = snapshot(&engine);
                let mut begin = event(Ev::SnapshotBegin, feed.epoch, last, vec![], now);
                begin.digest_key_id = engine.key().id().to_vec();
                first.push(begin);
                for c in chunks {
                    first.push(event(Ev::SnapshotChunk, feed.epoch, last, c, now));
                }
                first.push(event(Ev::SnapshotEnd, feed.epoch, last, vec![], now));
            }
        }
        drop(w);
        engine.metrics.replication.watchers.increment(1.0);
        let (tx, out) = mpsc::channel::<Result<WatchEvent, Status>>(64);
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            let _count = WatcherCount(engine.clone());
            for e in first {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            let mut rx = rx;
            let mut beat = tokio::time::interval(HEARTBEAT);
            loop {
                let next = tokio::select! {
                    b = rx.recv() => match b {
                        Ok(b) if b.reset => {
                            let _ = tx.send(Err(Status::unavailable(
                                "this keyward reloaded its state; reconnect for a snapshot",
                            ))).await;
                            return;
                        }
                        Ok(b) => {
                            if b.revision <= last {
                                continue;
                            }
                            last = b.revision;
                            event(Ev::Commit, feed.epoch, b.revision, b.changes.clone(), engine.now_ms())
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            let _ = tx.send(Err(Status::resource_exhausted(format!(
                                "follower fell {n} commits behind; reconnect for a snapshot"
                            )))).await;
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = beat.tick() => event(Ev::Heartbeat, feed.epoch, last, vec![], engine.now_ms()),
                    _ = tx.closed() => return,
                    _ = stopped(&mut stop) => {
                        let _ = tx.send(Err(Status::unavailable("the primary is shutting down"))).await;
                        return;
                    }
                };
                if tx.send(Ok(next)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }
}

/// Resolves once the server is stopping.
async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Counts a watcher while it lives.
struct WatcherCount(Arc<Engine>);

impl Drop for WatcherCount {
    fn drop(&mut self) {
        self.0.metrics.replication.watchers.decrement(1.0);
    }
}

// ------------------------------------------------------------------ follower

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
}

impl std::fmt::Debug for FollowOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowOptions")
            .field("primary", &self.primary)
            .field("secret", &"REDACTED")
            .field("tls_ca", &self.tls_ca)
            .field("client_cert", &self.client_cert)
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

fn endpoint(addr: &str) -> String {
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
/// from the last revision when the primary still has it.
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
    loop {
        let run = follow_once(&engine, &opts);
        let outcome = tokio::select! {
            _ = &mut stop => return,
            r = run => r,
        };
        let m = &engine.metrics.replication;
        m.disconnects.increment(1);
        match outcome {
            Ok(()) => {
                tracing::warn!(primary = %opts.primary, "the primary ended the stream; reconnecting")
            }
            Err(e) => {
                tracing::warn!(primary = %opts.primary, error = %e, retry_in = ?backoff, "following the primary failed; reconnecting")
            }
        }
        tokio::select! {
            _ = &mut stop => return,
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

async fn follow_once(engine: &Arc<Engine>, opts: &FollowOptions) -> Result<(), String> {
    let f = engine.follower().ok_or("not a follower")?;
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
    let mut client = rpb::replication_client::ReplicationClient::new(channel)
        .max_decoding_message_size(64 << 20);
    let mut req = Request::new(WatchRequest {
        epoch: f.epoch.load(Ordering::Acquire),
        revision: f.revision.load(Ordering::Acquire),
    });
    let bearer = format!("Bearer {}", opts.secret);
    req.metadata_mut().insert(
        "authorization",
        bearer
            .parse()
            .map_err(|_| "the replication secret is not valid header text")?,
    );
    let mut stream = client
        .watch(req)
        .await
        .map_err(|s| format!("watch: {}", status_with_causes(&s)))?
        .into_inner();
    let mut building: Option<Index> = None;
    let m = &engine.metrics.replication;
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
                building = Some(Index::new(engine.key().clone()));
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
                let tokens = idx.tokens.len();
                *engine.index.write() = idx;
                f.epoch.store(ev.epoch, Ordering::Release);
                f.revision.store(ev.revision, Ordering::Release);
                f.synced.store(true, Ordering::Release);
                engine.metrics.tokens.set(tokens as f64);
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
                tracing::info!(revision = ev.revision, "resumed from the primary's history");
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
                {
                    let mut idx = engine.index.write();
                    for c in &changes {
                        idx.apply(c);
                    }
                    engine.metrics.tokens.set(idx.tokens.len() as f64);
                }
                f.revision.store(ev.revision, Ordering::Release);
                m.commits.increment(1);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_answers_only_what_it_still_holds() {
        let feed = Feed::new();
        assert!(feed.since(0).is_some_and(|v| v.is_empty()));
        assert!(feed.since(1).is_none(), "a revision from the future");
        for i in 0..(HISTORY_MAX as u64 + 10) {
            feed.publish(&[Change::DeleteToken(i)]);
        }
        let last = feed.revision();
        assert_eq!(last, HISTORY_MAX as u64 + 10);
        assert!(feed.since(last).is_some_and(|v| v.is_empty()));
        let missed = feed.since(last - 3).expect("recent");
        assert_eq!(
            missed.iter().map(|b| b.revision).collect::<Vec<_>>(),
            vec![last - 2, last - 1, last]
        );
        // The oldest kept is revision 11: resuming after 10 works, after 9
        // (revision 10 is gone) needs a snapshot.
        assert_eq!(feed.since(10).map(|v| v.len()), Some(HISTORY_MAX));
        assert!(feed.since(9).is_none());
    }

    #[test]
    fn the_scheme_decides_tls() {
        for tls in ["https://primary:50051", "HTTPS://10.0.0.5:50051"] {
            assert!(follows_over_tls(tls), "{tls}");
            assert_eq!(endpoint(tls), tls);
        }
        for plain in ["primary:50051", "http://primary:50051", "https:/x", ""] {
            assert!(!follows_over_tls(plain), "{plain}");
        }
        assert_eq!(endpoint("primary:50051"), "http://primary:50051");
        assert_eq!(endpoint("HTTP://primary:1"), "HTTP://primary:1");
    }
}
