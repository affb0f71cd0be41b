//! Scenario 13, `under_attack`: scenario 1's valid load under attack. The same closed loop
//! (16 connections × 8 in flight, every request a different warm token) is
//! measured alone and beside each attack, alternating each round:
//!
//! - **header-only streams**: 24 connections × 256 streams that send their
//!   HEADERS (no credential) and never a body, from one client thread, each
//!   connection reopened as soon as the server has answered all of its
//!   streams (issue 14's first attack);
//! - **argon2 amplification**: a VIEWER token calling `CreateAccount`,
//!   `ResetToken` and `RegisterResource(DOMAIN)` in turn at a fixed rate,
//!   each refused (each used to hash a new secret before checking
//!   permission);
//! - both at once.
//!
//! The ratios are against the same load without an attack, in the same run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward::pb::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::Channel;

use crate::bench::Bench;
use crate::load::{load, Mode, Run};
use crate::report::verdict;

/// Attacking connections in the header-only attack.
const STALL_CONNECTIONS: usize = 24;

/// Streams per attacking connection (the server's `max_concurrent_streams`).
const STALL_STREAMS: u32 = 256;

/// Refused admin calls per second in the argon2 amplification.
const ADMIN_FLOOD_RPS: u64 = 300;

/// The header-only attack's outcome.
#[derive(Default)]
struct StallStats {
    /// Connections opened (each with 256 streams).
    rounds: u64,
    /// Streams the server answered (a HEADERS frame ending the stream).
    answered: u64,
    /// Streams the server reset (RST_STREAM) without answering them.
    reset: u64,
    /// Connections the server closed before answering every stream.
    cut: u64,
}

impl Bench {
    /// Scenario 1's load alone, then beside each attack, each round.
    pub(crate) async fn under_attack(&mut self) {
        let viewer = match self.viewer_token().await {
            Ok(t) => t,
            Err(e) => {
                self.report
                    .note(format!("13. skipped: could not create a VIEWER token: {e}"));
                self.report.print_last(1);
                return;
            }
        };
        // A token the VIEWER may not reset (any seeded one).
        let victim =
            keyward::token::parse(&self.valid[1 % self.valid.len()].token).map_or(1, |p| p.id);
        let w = self.workload(1);
        let mode = Mode::Closed {
            conns: 16,
            inflight: 8,
        };
        let kinds = [
            "no attack",
            "header-only streams",
            "argon2 amplification",
            "both",
        ];
        let mut runs: Vec<Run> = kinds.iter().map(|_| Run::new()).collect();
        let mut stalls = StallStats::default();
        let mut refused: HashMap<String, u64> = HashMap::new();
        let rss_before = self.keyward.rss_kib();
        let mut rss_peak = rss_before;
        for r in 0..self.cli.rounds {
            for (k, kind) in kinds.iter().enumerate() {
                let stop = Arc::new(AtomicBool::new(false));
                let stall = (k == 1 || k == 3).then(|| {
                    spawn_header_only(self.keyward.addr, self.layout.client_core, stop.clone())
                });
                let flood = (k == 2 || k == 3).then(|| {
                    tokio::spawn(admin_flood(
                        self.keyward.addr,
                        viewer.clone(),
                        (self.account_id, victim),
                        stop.clone(),
                    ))
                });
                let run = load(
                    self.keyward.addr,
                    mode,
                    &w,
                    self.cli.warmup,
                    self.cli.duration,
                    &format!("13. {kind} #{}", r + 1),
                )
                .await;
                rss_peak = rss_peak.max(self.keyward.rss_kib());
                stop.store(true, Ordering::Relaxed);
                if let Some(h) = stall {
                    if let Ok(Ok(s)) = tokio::task::spawn_blocking(move || h.join()).await {
                        stalls.rounds += s.rounds;
                        stalls.answered += s.answered;
                        stalls.reset += s.reset;
                        stalls.cut += s.cut;
                    }
                }
                if let Some(h) = flood {
                    if let Ok(codes) = h.await {
                        for (c, n) in codes {
                            *refused.entry(c).or_default() += n;
                        }
                    }
                }
                runs[k].add(&run);
            }
        }
        self.report.header(&format!(
            "13. Under attack: scenario 1's load (16 × 8) beside {STALL_CONNECTIONS} × {STALL_STREAMS} \
             header-only streams and {ADMIN_FLOOD_RPS}/s refused admin calls (VIEWER token)"
        ));
        for (kind, run) in kinds.iter().zip(&runs) {
            self.report.row(&format!("keyward, {kind}"), run);
        }
        let quiet = &runs[0];
        let mut notes = Vec::new();
        for (kind, run) in kinds.iter().zip(&runs).skip(1) {
            let tput = run.rps() / quiet.rps().max(1e-9);
            let p99 = run.us(0.99) / quiet.us(0.99).max(1e-9);
            notes.push(format!(
                "{kind}: throughput ratio {tput:.3} (target ≥ 0.90: {}), p99 ratio {p99:.3} (target ≤ 1.5: {})",
                verdict(tput >= 0.90),
                verdict(p99 <= 1.5)
            ));
        }
        self.report.note(notes.join("; "));
        let mut codes: Vec<_> = refused.into_iter().collect();
        codes.sort();
        self.report.note(format!(
            "header-only attack: {} connections opened, {} streams answered, {} reset, {} connections cut off; \
             admin flood answers: {codes:?}; keyward RSS {} MiB before, peak {} MiB",
            stalls.rounds,
            stalls.answered,
            stalls.reset,
            stalls.cut,
            rss_before / 1024,
            rss_peak / 1024
        ));
        self.report.print_last(12);
    }

    /// A new token with VIEWER on the seeded project, made by a seeded
    /// token (ADMIN on it).
    async fn viewer_token(&self) -> Result<String, String> {
        let ch = Channel::from_shared(format!("http://{}", self.keyward.addr))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let req = pb::CreateTokenRequest {
            account_id: self.account_id,
            name: "bench viewer".into(),
            grants: vec![pb::Grant {
                resource: Some(pb::ResourceRef {
                    r#type: pb::ResourceType::Project as i32,
                    id: self.project.clone(),
                }),
                level: pb::AccessLevel::Viewer as i32,
            }],
            ..Default::default()
        };
        let resp = pb::tokens_client::TokensClient::new(ch)
            .create_token(with_token(req, &self.valid[0].token)?)
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        Ok(resp.secret)
    }
}

/// `msg` with `authorization: Bearer <token>`.
fn with_token<T>(msg: T, token: &str) -> Result<tonic::Request<T>, String> {
    let mut req = tonic::Request::new(msg);
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| "token is not ASCII".to_string())?;
    req.metadata_mut().insert("authorization", value);
    Ok(req)
}

/// Calls `CreateAccount`, `ResetToken(victim)` and
/// `RegisterResource(DOMAIN)` in turn as `viewer`, [`ADMIN_FLOOD_RPS`] a
/// second, without waiting for answers, until `stop`; returns how they
/// were answered (gRPC code name → count).
async fn admin_flood(
    addr: SocketAddr,
    viewer: String,
    (account_id, victim): (u64, u64),
    stop: Arc<AtomicBool>,
) -> HashMap<String, u64> {
    let Ok(ch) = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
    else {
        return HashMap::from([("connect failed".to_string(), 1)]);
    };
    let codes = Arc::new(std::sync::Mutex::new(HashMap::<String, u64>::new()));
    let in_flight = Arc::new(AtomicU64::new(0));
    let period = Duration::from_nanos(1_000_000_000 / ADMIN_FLOOD_RPS);
    let mut tick = tokio::time::interval(period);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let (ch, viewer, codes, in_flight) =
            (ch.clone(), viewer.clone(), codes.clone(), in_flight.clone());
        in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let code = match refused_call(ch, &viewer, i % 3, account_id, victim).await {
                Ok(()) => "Ok (not refused!)".to_string(),
                Err(c) => format!("{c:?}"),
            };
            *codes.lock().expect("codes").entry(code).or_default() += 1;
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
        i += 1;
    }
    // Let the calls in flight finish (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out = codes.lock().expect("codes").clone();
    out
}

/// One admin call a VIEWER may not make: Ok(()) if it was not refused.
async fn refused_call(
    ch: Channel,
    viewer: &str,
    which: u64,
    account_id: u64,
    victim: u64,
) -> Result<(), tonic::Code> {
    let status = |s: tonic::Status| s.code();
    let bad = |_| tonic::Code::Internal;
    match which {
        0 => pb::accounts_client::AccountsClient::new(ch)
            .create_account(
                with_token(
                    pb::CreateAccountRequest {
                        name: "amplified".into(),
                    },
                    viewer,
                )
                .map_err(bad)?,
            )
            .await
            .map(drop)
            .map_err(status),
        1 => pb::tokens_client::TokensClient::new(ch)
            .reset_token(
                with_token(
                    pb::ResetTokenRequest {
                        account_id,
                        token_id: victim,
                        expires_at: None,
                        grace: None,
                    },
                    viewer,
                )
                .map_err(bad)?,
            )
            .await
            .map(drop)
            .map_err(status),
        _ => pb::resources_client::ResourcesClient::new(ch)
            .register_resource(
                with_token(
                    pb::RegisterResourceRequest {
                        account_id,
                        resource: Some(pb::ResourceRef {
                            r#type: pb::ResourceType::Domain as i32,
                            id: format!("amplified-{}.example", rand::random::<u32>()),
                        }),
                        parent: None,
                    },
                    viewer,
                )
                .map_err(bad)?,
            )
            .await
            .map(drop)
            .map_err(status),
    }
}

/// Runs the header-only attack on a thread of its own (pinned to the load
/// generator's core, never the server's) until `stop`.
fn spawn_header_only(
    addr: SocketAddr,
    core: Option<usize>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<StallStats> {
    std::thread::spawn(move || {
        if let Some(id) = core {
            core_affinity::set_for_current(core_affinity::CoreId { id });
        }
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return StallStats::default();
        };
        rt.block_on(async move {
            let tasks: Vec<_> = (0..STALL_CONNECTIONS)
                .map(|_| tokio::spawn(stall_connection(addr, stop.clone())))
                .collect();
            let mut total = StallStats::default();
            for t in tasks {
                if let Ok(s) = t.await {
                    total.rounds += s.rounds;
                    total.answered += s.answered;
                    total.reset += s.reset;
                    total.cut += s.cut;
                }
            }
            total
        })
    })
}

/// One attacking connection, reopened each time the server has answered
/// all of its streams, until `stop`.
async fn stall_connection(addr: SocketAddr, stop: Arc<AtomicBool>) -> StallStats {
    let mut stats = StallStats::default();
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let _ = s.set_nodelay(true);
        stats.rounds += 1;
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        if s.write_all(&hello).await.is_err() {
            stats.cut += 1;
            continue;
        }
        let mut reader = Frames::default();
        let mut streams_sent = false;
        // Streams answered or reset (the server resets each answered
        // stream too, since its request never ended: count it once).
        let mut done = std::collections::HashSet::new();
        loop {
            if stop.load(Ordering::Relaxed) {
                return stats;
            }
            let Some(f) = reader.next(&mut s).await else {
                stats.cut += 1;
                break;
            };
            match f.kind {
                SETTINGS if f.flags & ACK == 0 && !streams_sent => {
                    // Acknowledge the server's settings, then open every
                    // stream with its headers and nothing else.
                    let mut out = frame(SETTINGS, ACK, 0, &[]);
                    let block = request_block("/keyward.v1.Authorizer/Authorize");
                    for i in 0..STALL_STREAMS {
                        out.extend(frame(HEADERS, END_HEADERS, 2 * i + 1, &block));
                    }
                    if s.write_all(&out).await.is_err() {
                        stats.cut += 1;
                        break;
                    }
                    streams_sent = true;
                }
                HEADERS if f.flags & END_STREAM != 0 => {
                    stats.answered += 1;
                    done.insert(f.stream);
                }
                RST_STREAM if done.insert(f.stream) => stats.reset += 1,
                GOAWAY => {
                    stats.cut += 1;
                    break;
                }
                _ => {}
            }
            if done.len() >= STALL_STREAMS as usize {
                break;
            }
        }
    }
    stats
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// A gRPC request's header block without credentials: static-table
/// `:method POST` and `:scheme http`, then literals (no Huffman, all
/// lengths < 127).
fn request_block(path: &str) -> Vec<u8> {
    let mut out = vec![0x83, 0x86];
    let mut literal = |name: Option<u8>, n: &[u8], v: &[u8]| {
        match name {
            Some(index) => out.push(index),
            None => {
                out.push(0x00);
                out.push(n.len() as u8);
                out.extend(n);
            }
        }
        out.push(v.len() as u8);
        out.extend(v);
    };
    literal(Some(0x04), b"", path.as_bytes());
    literal(Some(0x01), b"", b"localhost");
    literal(None, b"content-type", b"application/grpc");
    literal(None, b"te", b"trailers");
    out
}

/// A frame header the server sent (payloads are skipped).
struct FrameHead {
    kind: u8,
    flags: u8,
    stream: u32,
}

/// Reads frames off a connection.
#[derive(Default)]
struct Frames {
    /// Bytes read and not yet parsed.
    buf: Vec<u8>,
}

impl Frames {
    /// The next frame, or None once the connection is closed or fails.
    async fn next(&mut self, s: &mut TcpStream) -> Option<FrameHead> {
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16)
                    | (usize::from(self.buf[1]) << 8)
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let f = FrameHead {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([
                            self.buf[5],
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]) & 0x7fff_ffff,
                    };
                    self.buf.drain(..9 + len);
                    return Some(f);
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            // Bounded so a quiet connection still sees `stop`.
            match tokio::time::timeout(Duration::from_millis(200), s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(n)) => self.buf.extend(&chunk[..n]),
                Err(_) => {
                    return Some(FrameHead {
                        kind: 0xff,
                        flags: 0,
                        stream: 0,
                    })
                }
            }
        }
    }
}
