//! The primary's side of replication: `Replication/Watch`, which checks
//! the replication secret, then sends a consistent snapshot (or, within
//! the epoch, only the commits a follower missed) and every commit after
//! it, with a heartbeat every [`HEARTBEAT`]; and `Replication/ReportUse`,
//! the uses a follower saw, checked the same way and bounded
//! ([`USES_MAX`]).
//!
//! Part of replication (layer L5): imports `engine`, `error`, `feed`,
//! `index`, `credential`, `model` and `pb`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::engine::{Engine, LeaseAsk};
use crate::error::Error;
use crate::index::change::to_wire;
use crate::index::Change;
use crate::pb::replication::{
    self as rpb, replication_server::Replication, watch_event::Kind as Ev, LeaseGrant,
    LeaseRequest, LeaseResponse, UseReport, UseReportAck, WatchEvent, WatchRequest,
};

/// Snapshot token records per message: about 250 KiB encoded, so that
/// what a snapshot in flight holds on the primary stays small.
pub const CHUNK: usize = 512;
/// Events a watch stream buffers ahead of its follower (one snapshot
/// chunk: with the one being sent and the one being read, the primary's
/// memory per snapshot in flight).
const WATCH_BUFFER: usize = 1;
/// Heartbeat period.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Most uses in one `ReportUse` (more: INVALID_ARGUMENT). Within the
/// service's 64 KiB message limit with room to spare (≤ 16 bytes a use);
/// followers send half as many per report.
pub const USES_MAX: usize = 4096;

/// The head of a snapshot: counters, accounts and resources (small: read
/// while the caller holds the writer lock, so they are exactly the state
/// at the feed's revision), and the token id counter the token chunks run
/// up to.
fn snapshot_head(engine: &Engine) -> (Vec<rpb::Change>, u64) {
    let mut head = Vec::new();
    let idx = engine.view();
    head.push(to_wire(&Change::Counters {
        next_account_id: idx.next_account_id,
        next_token_id: idx.next_token_id,
    }));
    for a in idx.accounts.values() {
        head.push(to_wire(&Change::PutAccount(a.to_record())));
        head.extend(
            a.resource_records()
                .map(|r| to_wire(&Change::PutResource(r))),
        );
    }
    (head, idx.next_token_id)
}

/// Up to [`CHUNK`] tokens with ids in `from..to`, as they are now (one
/// short read lock), and the id to go on from.
fn token_chunk(engine: &Engine, from: u64, to: u64) -> (Vec<rpb::Change>, u64) {
    let idx = engine.view();
    let (tokens, next) = idx.tokens.slice(from, to, CHUNK);
    let chunk = tokens
        .into_iter()
        .map(|t| to_wire(&Change::PutToken(t.to_record(engine.key()))))
        .collect();
    (chunk, next)
}

/// Streams the rest of a snapshot begun at `last`: the tokens in chunks of
/// [`CHUNK`], each encoded only when the follower has taken the one
/// before (the channel's bound paces it, so a snapshot of any size costs
/// the primary a few chunks of memory per follower), then the commits
/// that landed meanwhile, still inside the snapshot, then its end at the
/// revision they reach. A token read after `last` may already show a later
/// commit; the follower applies that commit again over it in order, so
/// the index it installs at the end is exactly the state at that revision.
/// Returns the revision reached, or None when the stream is over.
async fn stream_snapshot(
    engine: &Engine,
    epoch: u64,
    mut last: u64,
    max_id: u64,
    rx: &mut broadcast::Receiver<Arc<crate::feed::Batch>>,
    tx: &mpsc::Sender<Result<WatchEvent, Status>>,
) -> Option<u64> {
    let mut from = 0u64;
    while from < max_id {
        let (chunk, next) = token_chunk(engine, from, max_id);
        if !chunk.is_empty() {
            let ev = event(Ev::SnapshotChunk, epoch, last, chunk, engine.now_ms());
            tx.send(Ok(ev)).await.ok()?;
        }
        from = next;
    }
    loop {
        let b = match rx.try_recv() {
            Ok(b) => b,
            Err(broadcast::error::TryRecvError::Empty) => break,
            Err(e) => {
                let _ = tx.send(Err(lost(&e))).await;
                return None;
            }
        };
        if b.reset {
            let _ = tx.send(Err(reloaded())).await;
            return None;
        }
        if b.revision > last {
            last = b.revision;
            let ev = event(
                Ev::SnapshotChunk,
                epoch,
                last,
                b.changes.clone(),
                engine.now_ms(),
            );
            tx.send(Ok(ev)).await.ok()?;
        }
    }
    let end = event(Ev::SnapshotEnd, epoch, last, vec![], engine.now_ms());
    tx.send(Ok(end)).await.ok()?;
    Some(last)
}

fn reloaded() -> Status {
    Status::unavailable("this keyward reloaded its state; reconnect for a snapshot")
}

fn lost(e: &broadcast::error::TryRecvError) -> Status {
    match e {
        broadcast::error::TryRecvError::Lagged(n) => Status::resource_exhausted(format!(
            "follower fell {n} commits behind; reconnect for a snapshot"
        )),
        _ => Status::unavailable("the primary is shutting down"),
    }
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

impl ReplicationService {
    /// Whether the caller presented the replication secret (compared in
    /// constant time). FAILED_PRECONDITION when replication is off (no
    /// secret configured, or a follower), UNAUTHENTICATED for a missing or
    /// wrong one.
    fn check_secret(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let Some(secret) = &self.secret else {
            return Err(Status::failed_precondition(
                "replication is off on this keyward (start it with --replication-secret-file)",
            ));
        };
        let given = crate::credential::credential(metadata).unwrap_or_default();
        let same: bool = subtle::ConstantTimeEq::ct_eq(given.as_bytes(), secret.as_bytes()).into();
        if !same {
            return Err(Status::unauthenticated(
                "wrong or missing replication secret",
            ));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Replication for ReplicationService {
    type WatchStream = EventStream;

    async fn watch(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.check_secret(req.metadata())?;
        self.engine.ensure_ready()?;
        let engine = self.engine.clone();
        let want = req.into_inner();
        // No commit can land between what we send first and the live
        // stream until `held` is dropped.
        let (feed, rx, held) = engine.subscribe().await;
        let resume = (want.epoch == feed.epoch)
            .then(|| feed.since(want.revision))
            .flatten();
        let m = &engine.metrics().replication;
        match resume {
            Some(_) => m.resumes_served.increment(1),
            None => m.snapshots_served.increment(1),
        }
        let now = engine.now_ms();
        let mut first: Vec<WatchEvent> = Vec::new();
        let mut last = feed.revision();
        // A snapshot's tokens are streamed after `held` is dropped.
        let mut tokens_to = None;
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
                let (head, max_id) = snapshot_head(&engine);
                let mut begin = event(Ev::SnapshotBegin, feed.epoch, last, vec![], now);
                begin.digest_key_id = engine.key().id().to_vec();
                first.push(begin);
                first.push(event(Ev::SnapshotChunk, feed.epoch, last, head, now));
                tokens_to = Some(max_id);
            }
        }
        drop(held);
        engine.metrics().replication.watchers.increment(1.0);
        // A small bound: a snapshot is encoded a chunk at a time, as the
        // follower takes them (commits wait in the feed's broadcast).
        let (tx, out) = mpsc::channel::<Result<WatchEvent, Status>>(WATCH_BUFFER);
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            let _count = WatcherCount(engine.clone());
            for e in first {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            let mut rx = rx;
            if let Some(max_id) = tokens_to {
                match stream_snapshot(&engine, feed.epoch, last, max_id, &mut rx, &tx).await {
                    Some(reached) => last = reached,
                    None => return,
                }
            }
            let mut beat = tokio::time::interval(HEARTBEAT);
            loop {
                let next = tokio::select! {
                    b = rx.recv() => match b {
                        Ok(b) if b.reset => {
                            let _ = tx.send(Err(reloaded())).await;
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

    async fn report_use(&self, req: Request<UseReport>) -> Result<Response<UseReportAck>, Status> {
        self.check_secret(req.metadata())?;
        self.engine.ensure_ready()?;
        let report = req.into_inner();
        if !crate::index::nodes::is_valid(&report.node) {
            return Err(Error::invalid("node", "must be 1 to 64 of A-Z a-z 0-9 . _ -").into());
        }
        if report.uses.len() > USES_MAX {
            return Err(
                Error::invalid("uses", format!("at most {USES_MAX} uses per report")).into(),
            );
        }
        let applied = self.engine.record_uses(
            &report.node,
            report.uses.iter().map(|u| (u.token_id, u.at_ms)),
        );
        Ok(Response::new(UseReportAck { applied }))
    }

    async fn lease(&self, req: Request<LeaseRequest>) -> Result<Response<LeaseResponse>, Status> {
        self.check_secret(req.metadata())?;
        self.engine.ensure_ready()?;
        let req = req.into_inner();
        if req.asks.len() > USES_MAX {
            return Err(
                Error::invalid("asks", format!("at most {USES_MAX} asks per lease")).into(),
            );
        }
        let asks: Vec<LeaseAsk> = req
            .asks
            .iter()
            .map(|a| LeaseAsk {
                token_id: a.token_id,
                want: a.want,
                give_back: a.give_back,
            })
            .collect();
        let grants = self
            .engine
            .grant(&asks)
            .await?
            .into_iter()
            .map(|g| LeaseGrant {
                token_id: g.token_id,
                granted: g.granted,
                remaining: g.remaining,
            })
            .collect();
        Ok(Response::new(LeaseResponse { grants }))
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
        self.0.metrics().replication.watchers.decrement(1.0);
    }
}
