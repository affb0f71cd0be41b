//! The load generator: closed-loop and fixed-rate gRPC load (Authorize,
//! AuthorizeBatch, Introspect or ext_authz Check) over tonic connections, every
//! latency into an HdrHistogram ([`Run`]), with a warm-up that is not
//! recorded and a progress line.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use hdrhistogram::Histogram;
use keyward::pb::v1::authorizer_client::AuthorizerClient;
use keyward::pb::v1::{AuthorizeBatchRequest, AuthorizeRequest, IntrospectRequest};
use tonic::client::Grpc;
use tonic::transport::Channel;

use crate::raw::RawCalls;

/// Most requests a fixed-rate load keeps in flight (16 connections × 64).
const RATE_IN_FLIGHT: usize = 1024;

/// How long a fixed-rate load waits, after its window, for the answers to
/// requests intended within it (the rest count as errors).
const RATE_DRAIN: Duration = Duration::from_secs(10);

/// How requests are issued.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mode {
    /// `conns` connections × `inflight` requests outstanding on each.
    Closed { conns: usize, inflight: usize },
    /// A fixed rate over `conns` connections; latency from the intended send
    /// time, so a stall is charged to every request it delays.
    Rate { rps: u64, conns: usize },
}

/// What to send: requests cycled in order, singly or in batches (Authorize),
/// or Envoy ext_authz Checks of the same tokens.
#[derive(Clone)]
pub(crate) struct Workload {
    pub(crate) requests: Arc<Vec<AuthorizeRequest>>,
    pub(crate) batch: usize,
    /// Send these as ext_authz `Check` instead (same tokens, same resource).
    pub(crate) checks: Option<Arc<Vec<CheckRequest>>>,
    /// Send `Introspect` of each request's token instead (one at a time).
    pub(crate) introspect: bool,
    /// Send these pre-encoded calls instead ([`crate::raw`]).
    pub(crate) raw: Option<Arc<RawCalls>>,
}

/// One connection, with a client for each API.
#[derive(Clone)]
pub(crate) struct Conn {
    pub(crate) authorizer: AuthorizerClient<Channel>,
    pub(crate) authorization: AuthorizationClient<Channel>,
    /// For pre-encoded calls.
    pub(crate) raw: Grpc<Channel>,
}

/// Measured requests: one run, one task's share of it, or several runs
/// merged.
pub(crate) struct Run {
    pub(crate) hist: Histogram<u64>,
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    /// Fixed rate only: every answer as (intended send time, ns since
    /// [`epoch`]; latency ns), to tell a periodic stall from scattered
    /// slow answers ([`crate::report::tail_timeline`]).
    pub(crate) timeline: Vec<(u64, u64)>,
}

/// The process's time origin for [`Run::timeline`] (rounds do not overlap).
pub(crate) fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Run {
    pub(crate) fn new() -> Self {
        Self {
            hist: new_hist(),
            ok: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            timeline: Vec::new(),
        }
    }
    /// One answer that took `ns` nanoseconds.
    pub(crate) fn record(&mut self, ns: u64, good: bool) {
        let _ = self.hist.record(ns.max(1));
        if good {
            self.ok += 1
        } else {
            self.errors += 1
        }
    }
    /// Adds another run (or task share) to this one.
    pub(crate) fn add(&mut self, r: &Run) {
        let _ = self.hist.add(&r.hist);
        self.ok += r.ok;
        self.errors += r.errors;
        self.elapsed += r.elapsed;
        self.timeline.extend_from_slice(&r.timeline);
    }
    pub(crate) fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub(crate) fn us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

pub(crate) async fn clients(addr: SocketAddr, n: usize) -> Vec<Conn> {
    clients_with(addr, None, n).await
}

/// `n` connections to `addr`, over TLS when given a client configuration.
pub(crate) async fn clients_with(
    addr: SocketAddr,
    tls: Option<&tonic::transport::ClientTlsConfig>,
    n: usize,
) -> Vec<Conn> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let endpoint = match tls {
            Some(tls) => Channel::from_shared(format!("https://{addr}"))
                .expect("uri")
                .tls_config(tls.clone())
                .expect("client TLS"),
            None => Channel::from_shared(format!("http://{addr}")).expect("uri"),
        };
        let ch = endpoint.connect().await.expect("connect");
        out.push(Conn {
            authorizer: AuthorizerClient::new(ch.clone()).max_decoding_message_size(1 << 20),
            authorization: AuthorizationClient::new(ch.clone()),
            raw: Grpc::new(ch),
        });
    }
    out
}

pub(crate) fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

pub(crate) async fn send(conn: &mut Conn, w: &Workload, i: u64) -> bool {
    if let Some(raw) = &w.raw {
        return crate::raw::call(&mut conn.raw, raw, i).await;
    }
    if let Some(checks) = &w.checks {
        let req = checks[(i % checks.len() as u64) as usize].clone();
        // Allowed = an OK status inside the answer.
        return conn
            .authorization
            .check(req)
            .await
            .is_ok_and(|r| r.get_ref().status.as_ref().is_some_and(|s| s.code == 0));
    }
    let client = &mut conn.authorizer;
    let n = w.requests.len() as u64;
    if w.introspect {
        let token = w.requests[(i % n) as usize].token.clone();
        client
            .introspect(IntrospectRequest { token })
            .await
            .is_ok_and(|r| r.get_ref().token.is_some())
    } else if w.batch <= 1 {
        let req = w.requests[(i % n) as usize].clone();
        client.authorize(req).await.is_ok()
    } else {
        let start = (i * w.batch as u64) % n;
        let checks = (0..w.batch as u64)
            .map(|k| w.requests[((start + k) % n) as usize].clone())
            .collect();
        client
            .authorize_batch(AuthorizeBatchRequest { checks })
            .await
            .is_ok()
    }
}

/// Drives `addr` for `warmup` (discarded) then `duration`, with a progress line.
pub(crate) async fn load(
    addr: SocketAddr,
    mode: Mode,
    w: &Workload,
    warmup: Duration,
    duration: Duration,
    label: &str,
) -> Run {
    load_with(addr, None, mode, w, warmup, duration, label).await
}

/// [`load`], over TLS when given a client configuration.
pub(crate) async fn load_with(
    addr: SocketAddr,
    tls: Option<&tonic::transport::ClientTlsConfig>,
    mode: Mode,
    w: &Workload,
    warmup: Duration,
    duration: Duration,
    label: &str,
) -> Run {
    let conns = match mode {
        Mode::Closed { conns, .. } | Mode::Rate { conns, .. } => conns,
    };
    let chans = clients_with(addr, tls, conns).await;
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let t0 = Instant::now();
    let measure_start = t0 + warmup;
    match mode {
        Mode::Closed { inflight, .. } => {
            for (c, client) in chans.iter().enumerate() {
                for f in 0..inflight {
                    let (mut client, w) = (client.clone(), w.clone());
                    let (recording, stop, done) = (recording.clone(), stop.clone(), done.clone());
                    let mut i = (c * inflight + f) as u64 * 7919;
                    tasks.push(tokio::spawn(async move {
                        let mut share = Run::new();
                        while !stop.load(Ordering::Relaxed) {
                            let sent = Instant::now();
                            let good = send(&mut client, &w, i).await;
                            i += 1;
                            if recording.load(Ordering::Relaxed) {
                                share.record(sent.elapsed().as_nanos() as u64, good);
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        share
                    }));
                }
            }
        }
        Mode::Rate { rps, .. } => {
            let period_ns = 1_000_000_000 / rps.max(1);
            let (stop, done, w) = (stop.clone(), done.clone(), w.clone());
            let chans = chans.clone();
            // One task paces and owns every request in flight: it starts
            // each at its intended time, checked between yields (no
            // timer-wheel rounding to whole milliseconds), and never
            // waits for answers: a stall in the server delays answers,
            // and each is charged from its intended send time. No task
            // or channel per request (the load generator must keep 80 %
            // of what it reaches in a closed loop, on one core), and at
            // most `RATE_IN_FLIGHT` in flight: beyond that a request
            // waits for a slot, still charged from its intended time.
            // The measured requests are those intended within the window
            // (by intended time, whenever answered): after it, answers
            // still out are waited for up to `RATE_DRAIN`, and those not
            // answered by then or never sent count as errors.
            let window = (measure_start, measure_start + duration);
            tasks.push(tokio::spawn(async move {
                let origin = epoch();
                let mut share = Run::new();
                let mut in_flight = FuturesUnordered::new();
                let take = |share: &mut Run, intended: Instant, good: bool| {
                    if intended >= window.0 && intended < window.1 {
                        let at = intended.duration_since(origin).as_nanos() as u64;
                        let ns = intended.elapsed().as_nanos() as u64;
                        share.record(ns, good);
                        share.timeline.push((at, ns));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                };
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    while in_flight.len() < RATE_IN_FLIGHT {
                        let intended = t0 + Duration::from_nanos(i * period_ns);
                        if intended > now || intended >= window.1 {
                            break;
                        }
                        let (mut client, w) =
                            (chans[(i as usize) % chans.len()].clone(), w.clone());
                        in_flight.push(async move {
                            let good = send(&mut client, &w, i).await;
                            (intended, good)
                        });
                        i += 1;
                    }
                    // Answers that are in, without waiting for any.
                    while let Some(Some((intended, good))) = in_flight.next().now_or_never() {
                        take(&mut share, intended, good);
                    }
                    tokio::task::yield_now().await;
                }
                // Requests intended within the window but never sent.
                let first = (window.0 - t0).as_nanos() as u64 / period_ns;
                let end = ((window.1 - t0).as_nanos() as u64).div_ceil(period_ns);
                share.errors += end.saturating_sub(i.max(first));
                let drained = tokio::time::timeout(RATE_DRAIN, async {
                    while let Some((intended, good)) = in_flight.next().await {
                        take(&mut share, intended, good);
                    }
                })
                .await;
                if drained.is_err() {
                    share.errors += in_flight.len().try_into().unwrap_or(u64::MAX);
                }
                share
            }));
        }
    }
    measure(tasks, &recording, &stop, &done, warmup, duration, label).await
}

/// Runs the load `tasks` through `warmup` (not recorded), then records for
/// `duration` with a progress line, stops them and merges their shares.
pub(crate) async fn measure(
    tasks: Vec<tokio::task::JoinHandle<Run>>,
    recording: &AtomicBool,
    stop: &AtomicBool,
    done: &AtomicU64,
    warmup: Duration,
    duration: Duration,
    label: &str,
) -> Run {
    tokio::time::sleep(warmup).await;
    recording.store(true, Ordering::Relaxed);
    let start = Instant::now();
    while start.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = done.load(Ordering::Relaxed);
        eprint!(
            "\r  {label:<40} {:>5.1}s {:>9} req {:>9.0} req/s   ",
            start.elapsed().as_secs_f64(),
            n,
            n as f64 / start.elapsed().as_secs_f64()
        );
    }
    recording.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    eprint!("\r{:<90}\r", "");
    let mut run = Run {
        elapsed,
        ..Run::new()
    };
    for t in tasks {
        if let Ok(share) = t.await {
            run.add(&share);
        }
    }
    run
}
