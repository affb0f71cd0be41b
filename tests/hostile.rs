//! Hostile clients against a real server with the production limits (64 KiB
//! messages, 16 KiB headers, 256 streams per connection, 5 s request
//! timeout, 4,096 requests in flight), while valid clients keep asking
//! Authorize on their own connections:
//!
//! 1. protocol abuse: oversized messages, a length prefix that lies, huge
//!    metadata, a CONTINUATION flood, garbage, a bad preface, HTTP/1.1,
//!    bad frames (DATA on stream 0, bad SETTINGS, zero WINDOW_UPDATE,
//!    oversized frame, bad HPACK), rapid reset;
//! 2. slow clients: 2,000 streams on one connection, 768 streams that never
//!    send their body, calls with no deadline whose body never ends, and a
//!    client that sends requests but never reads;
//! 3. saturation: 4,352 stalled streams over 17 connections, more than the
//!    whole in-flight budget (they take none of it: a request takes its
//!    slot only once its message has arrived, `keyward::admission`).
//!
//! Each abuse gets a clear status or a cut-off (asserted), never a crash;
//! valid requests succeed or are shed with a clear status (asserted), most
//! succeed in every phase, saturation included (asserted), the service recovers
//! after it (asserted), and the process RSS stays bounded (asserted). Valid
//! clients' Authorize latency is printed per phase against the baseline
//! measured just before (`-- --nocapture`); no assertion depends on timing.

mod common;

// Each attack of issue 14 in a file of its own; they share this file's
// raw HTTP/2 helpers and valid-load measurement, and run one at a time.
#[path = "hostile/admin_work.rs"]
mod admin_work;
#[path = "hostile/grpc_admission.rs"]
mod grpc_admission;
#[path = "hostile/http_port.rs"]
mod http_port;
#[path = "hostile/logs_and_pages.rs"]
mod logs_and_pages;

/// One attack at a time: every test measures valid callers against a
/// baseline taken in the same run, which a neighbour's attack would spoil.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use keyward::pb::v1 as pb;
use prost::Message;
use tonic::codegen::{Body as _, Bytes, Service as _};
use tonic::transport::Channel;
use tonic::Code;

// ------------------------------------------------------------- raw HTTP/2

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const REFUSED_STREAM: u32 = 0x7;

const AUTHORIZE: &str = "/keyward.v1.Authorizer/Authorize";

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small frame");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix, `flags` in the first byte.
#[expect(
    clippy::cast_possible_truncation,
    reason = "every byte pushed is below 256 by construction"
)]
fn hpack_int(flags: u8, n: u32, mut value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

fn hpack_str(s: &[u8], out: &mut Vec<u8>) {
    hpack_int(0, 7, s.len(), out);
    out.extend(s);
}

/// A gRPC request's header block: static-table `:method POST` and
/// `:scheme http`, then literals without indexing (no Huffman).
fn request_block(path: &str, extra: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0x83, 0x86];
    out.push(0x04); // :path, indexed name
    hpack_str(path.as_bytes(), &mut out);
    out.push(0x01); // :authority, indexed name
    hpack_str(b"localhost", &mut out);
    for (name, value) in [
        ("content-type", b"application/grpc".to_vec()),
        ("te", b"trailers".to_vec()),
    ]
    .iter()
    .chain(extra)
    {
        out.push(0x00);
        hpack_str(name.as_bytes(), &mut out);
        hpack_str(value, &mut out);
    }
    out
}

/// A gRPC length-prefixed message.
fn grpc_message(msg: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend(u32::try_from(msg.len()).expect("small").to_be_bytes());
    out.extend(msg);
    out
}

/// A frame the server sent.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    /// The error code of a GOAWAY or RST_STREAM.
    fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            GOAWAY => 4,
            RST_STREAM => 0,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(b.try_into().ok()?))
    }
}

/// A raw HTTP/2 client on a blocking socket.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    closed: bool,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        s.set_write_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        Raw {
            s,
            buf: Vec::new(),
            closed: false,
        }
    }

    /// Connects, says hello and acknowledges the server's SETTINGS.
    fn handshake(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect(addr);
        raw.send(PREFACE);
        raw.send(&frame(SETTINGS, 0, 0, &[]));
        let frames = raw.read_until(Duration::from_secs(10), |f| {
            f.iter().any(|f| f.kind == SETTINGS && f.flags & ACK == 0)
        });
        assert!(
            frames
                .iter()
                .any(|f| f.kind == SETTINGS && f.flags & ACK == 0),
            "no SETTINGS from the server"
        );
        raw.send(&frame(SETTINGS, ACK, 0, &[]));
        raw
    }

    /// Writes `bytes`; a refused write means the server cut us off.
    fn send(&mut self, bytes: &[u8]) -> bool {
        if self.closed {
            return false;
        }
        if self.s.write_all(bytes).is_err() {
            self.closed = true;
        }
        !self.closed
    }

    /// Reads frames until `done` says so, the server closes, or `limit`
    /// passes (a liveness bound, not a measurement).
    fn read_until(&mut self, limit: Duration, done: impl Fn(&[Frame]) -> bool) -> Vec<Frame> {
        let deadline = Instant::now() + limit;
        let mut frames = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        while !self.closed && !done(&frames) && Instant::now() < deadline {
            match self.s.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buf.extend(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.closed = true,
            }
            while self.buf.len() >= 9 {
                let len = usize::from(self.buf[0]) << 16
                    | usize::from(self.buf[1]) << 8
                    | usize::from(self.buf[2]);
                if self.buf.len() < 9 + len {
                    break;
                }
                let f = Frame {
                    kind: self.buf[3],
                    flags: self.buf[4],
                    stream: u32::from_be_bytes(self.buf[5..9].try_into().expect("4")) & 0x7fff_ffff,
                    payload: self.buf[9..9 + len].to_vec(),
                };
                self.buf.drain(..9 + len);
                frames.push(f);
            }
        }
        frames
    }

    /// Sends `bytes` and waits for the server to close the connection;
    /// returns the GOAWAY error code if one came first.
    fn expect_cut_off(&mut self, what: &str, bytes: &[u8]) -> Option<u32> {
        self.send(bytes);
        let frames = self.read_until(Duration::from_secs(15), |_| false);
        assert!(self.closed, "{what}: the server kept the connection open");
        frames
            .iter()
            .find(|f| f.kind == GOAWAY)
            .and_then(Frame::error_code)
    }
}

fn authorize_msg(token: &str) -> Vec<u8> {
    pb::AuthorizeRequest {
        cost: Default::default(),
        token: token.into(),
        resource: Some(rref(DOMAIN, "example.com")),
        level: ADMIN,
        scope: String::new(),
    }
    .encode_to_vec()
}

// ----------------------------------------------------------- valid clients

/// Answers of the valid clients, per phase.
#[derive(Default)]
struct Phase {
    ok: Vec<Duration>,
    shed: usize,
    /// Shed answers by code.
    shed_codes: HashMap<Code, usize>,
    other: Vec<String>,
}

struct Load {
    phase: AtomicUsize,
    stop: AtomicBool,
    phases: Mutex<HashMap<usize, Phase>>,
}

/// Runs one valid client on its own connection until told to stop.
async fn valid_client(addr: SocketAddr, token: String, load: Arc<Load>) {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = pb::authorizer_client::AuthorizerClient::new(channel);
    let req = pb::AuthorizeRequest {
        cost: Default::default(),
        token,
        resource: Some(rref(DOMAIN, "example.com")),
        level: ADMIN,
        scope: String::new(),
    };
    while !load.stop.load(Ordering::Relaxed) {
        let phase = load.phase.load(Ordering::Relaxed);
        let start = Instant::now();
        let result = client.authorize(req.clone()).await;
        let took = start.elapsed();
        load.record(
            phase,
            took,
            result.map(|r| {
                let r = r.into_inner();
                r.allowed
                    .then_some(())
                    .ok_or_else(|| format!("denied: {r:?}"))
            }),
        );
        // Closed loop with a short think time: 4 clients, ~1,000/s at most,
        // so the attack, not the valid load, is what the server is busy with.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[expect(clippy::cast_possible_truncation, reason = "an index within the slice")]
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Samples RSS every 100 ms; returns the peak seen in each phase.
fn rss_sampler(load: Arc<Load>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut peaks = vec![0u64; 5];
        loop {
            let phase = load.phase.load(Ordering::Relaxed).min(4);
            peaks[phase] = peaks[phase].max(rss_kib());
            if stop.load(Ordering::Relaxed) {
                return peaks;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

// ------------------------------------------------------- tonic-level abuse

/// One call whose body is the given bytes and then never ends, with no
/// deadline: returns the gRPC status the server answers with.
async fn stalled_call(channel: &Channel, path: &str, first: Vec<u8>) -> (Code, String) {
    let body = axum::body::Body::from_stream(tokio_stream::StreamExt::chain(
        tokio_stream::iter(
            (!first.is_empty()).then(|| Ok::<_, std::io::Error>(Bytes::from(first))),
        ),
        tokio_stream::pending(),
    ));
    let req = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(body))
        .expect("request");
    let mut ch = channel.clone();
    std::future::poll_fn(|cx| ch.poll_ready(cx))
        .await
        .expect("channel ready");
    let resp = ch
        .call(req)
        .await
        .expect("a response, not a transport error");
    if let Some(s) = tonic::Status::from_header_map(resp.headers()) {
        return (s.code(), s.message().to_string());
    }
    let mut body = resp.into_body();
    loop {
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            Some(Ok(f)) => {
                if let Ok(trailers) = f.into_trailers() {
                    let s = tonic::Status::from_header_map(&trailers).expect("grpc-status");
                    return (s.code(), s.message().to_string());
                }
            }
            Some(Err(s)) => return (s.code(), s.message().to_string()),
            None => panic!("response without grpc-status"),
        }
    }
}

fn too_big(code: Code) -> bool {
    matches!(code, Code::OutOfRange | Code::ResourceExhausted)
}

/// Oversized messages, a lying length prefix and huge metadata through real
/// clients: each a clear status, and the same channel keeps working.
async fn oversized_and_metadata(s: &TestServer, token: &str, log: &mut Vec<String>) {
    let big = |c: Channel| {
        pb::authorizer_client::AuthorizerClient::new(c)
            .max_encoding_message_size(8 << 20)
            .max_decoding_message_size(8 << 20)
    };
    let mut authz = big(s.channel.clone());
    // The Authorizer service's decode limit is 128 KiB (it serves
    // AuthorizeBatch too), so a 70 KiB Authorize is read and denied as
    // MALFORMED (its token is over 128 bytes); 130 KiB is refused unread.
    let with_token = |len: usize| pb::AuthorizeRequest {
        cost: Default::default(),
        token: "k".repeat(len),
        resource: Some(rref(DOMAIN, "example.com")),
        level: ADMIN,
        scope: String::new(),
    };
    let r = authz
        .authorize(with_token(70 * 1024))
        .await
        .expect("a 70 KiB Authorize is within the Authorizer's 128 KiB");
    assert_eq!(r.get_ref().reason, DenyReason::Malformed as i32);
    let st = authz
        .authorize(with_token(130 * 1024))
        .await
        .expect_err("130 KiB Authorize");
    assert!(too_big(st.code()), "130 KiB Authorize: {st:?}");
    log.push(format!(
        "Authorize of 70 KiB: read, denied MALFORMED; of 130 KiB: {:?}",
        st.code()
    ));

    let check = pb::AuthorizeRequest {
        cost: Default::default(),
        token: token.into(),
        resource: Some(rref(DOMAIN, "example.com")),
        level: ADMIN,
        scope: "x".repeat(20),
    };
    let one = check.encoded_len() + 2;
    // Just under the 128 KiB AuthorizeBatch limit (and ≤ 1,000 checks):
    // answered. Just over it: refused on its size.
    let under = (120 * 1024 / one).min(1000);
    let batch = |n| pb::AuthorizeBatchRequest {
        checks: vec![check.clone(); n],
    };
    assert!(batch(under).encoded_len() > 64 * 1024);
    let r = authz
        .authorize_batch(batch(under))
        .await
        .expect("a 120 KiB batch is within the limit");
    assert_eq!(r.get_ref().decisions.len(), under);
    let over = 130 * 1024 / one + 1;
    let mut over_batch = batch(over.min(1000));
    for c in &mut over_batch.checks {
        c.scope = "x".repeat(60);
    }
    assert!(over_batch.encoded_len() > 128 * 1024);
    let st = authz
        .authorize_batch(over_batch)
        .await
        .expect_err("a batch over 128 KiB");
    assert!(too_big(st.code()), "batch over 128 KiB: {st:?}");
    log.push(format!(
        "AuthorizeBatch {under} checks (~120 KiB): OK; > 128 KiB: {:?}",
        st.code()
    ));

    // Admin services: 64 KiB.
    let mut accounts = pb::accounts_client::AccountsClient::new(s.channel.clone())
        .max_encoding_message_size(8 << 20);
    for (len, what) in [(70 * 1024, "70 KiB"), (1 << 20, "1 MiB")] {
        let st = accounts
            .create_account(auth(
                pb::CreateAccountRequest {
                    name: "n".repeat(len),
                },
                &s.root(),
            ))
            .await
            .expect_err("an oversized CreateAccount");
        assert!(too_big(st.code()), "{what} CreateAccount: {st:?}");
        log.push(format!("CreateAccount of {what}: {:?}", st.code()));
    }

    // A length prefix of 4 GiB, then nothing: refused on the prefix, not
    // after waiting for (or allocating) 4 GiB.
    let (code, msg) = stalled_call(&s.channel, AUTHORIZE, vec![0, 0xff, 0xff, 0xff, 0xff]).await;
    assert!(too_big(code), "4 GiB length prefix: {code:?} {msg}");
    log.push(format!("4 GiB length prefix, no body: {code:?}"));

    // 20 KiB of metadata (limit 16 KiB): a stream error for this call only.
    let mut req = tonic::Request::new(pb::AuthorizeRequest {
        cost: Default::default(),
        token: token.into(),
        resource: Some(rref(DOMAIN, "example.com")),
        level: ADMIN,
        scope: String::new(),
    });
    req.metadata_mut()
        .insert("x-padding", "p".repeat(20 * 1024).parse().expect("ascii"));
    let st = authz.authorize(req).await.expect_err("20 KiB of metadata");
    assert_ne!(st.code(), Code::Ok);
    log.push(format!(
        "20 KiB metadata via tonic: {:?} ({})",
        st.code(),
        st.message()
    ));

    // The same connection still answers.
    let r = authz
        .authorize(pb::AuthorizeRequest {
            cost: Default::default(),
            token: token.into(),
            resource: Some(rref(DOMAIN, "example.com")),
            level: ADMIN,
            scope: String::new(),
        })
        .await
        .expect("the channel still works");
    assert!(r.get_ref().allowed);
}

// ---------------------------------------------------------- protocol abuse

/// Raw protocol abuse; returns one line per case.
fn protocol_abuse(addr: SocketAddr, token: &str) -> Vec<String> {
    let mut log = Vec::new();

    // Not HTTP/2 at all.
    let mut garbage = Raw::connect(addr);
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0])
        .collect();
    let code = garbage.expect_cut_off("garbage", &junk);
    log.push(format!("4 KiB of garbage: closed (GOAWAY {code:?})"));
    let mut http1 = Raw::connect(addr);
    let code = http1.expect_cut_off(
        "HTTP/1.1",
        b"GET /keyward.v1.Authorizer/Authorize HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    log.push(format!("HTTP/1.1 request: closed (GOAWAY {code:?})"));
    let mut preface = Raw::connect(addr);
    let code = preface.expect_cut_off("bad preface", b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n");
    log.push(format!("bad preface: closed (GOAWAY {code:?})"));

    // Bad frames after a good handshake: a GOAWAY with an error, then close.
    // An indexed header field with index 5,000: outside every table.
    let mut bad_hpack = Vec::new();
    hpack_int(0x80, 7, 5000, &mut bad_hpack);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("DATA on stream 0", frame(DATA, 0, 0, b"hello")),
        (
            "SETTINGS of 5 bytes",
            frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0]),
        ),
        (
            "zero WINDOW_UPDATE",
            frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 0]),
        ),
        ("1 MiB frame (max 16 KiB)", {
            let mut f = frame(DATA, 0, 1, &[]);
            f[..3].copy_from_slice(&(1u32 << 20).to_be_bytes()[1..]);
            f.extend(vec![0u8; 64 * 1024]);
            f
        }),
        (
            "HEADERS with an HPACK index out of range",
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &bad_hpack),
        ),
        (
            "HEADERS on an even (server) stream id",
            frame(HEADERS, END_HEADERS, 2, &request_block(AUTHORIZE, &[])),
        ),
    ];
    for (what, bytes) in cases {
        let mut raw = Raw::handshake(addr);
        let code = raw.expect_cut_off(what, &bytes);
        assert!(
            code.is_some_and(|c| c != 0),
            "{what}: no GOAWAY with an error code before the close ({code:?})"
        );
        log.push(format!("{what}: GOAWAY {:#x}, closed", code.unwrap_or(0)));
    }

    // 20 KiB and 64 KiB of headers (limit 16 KiB), in HEADERS +
    // CONTINUATION frames: the stream is refused (and the connection keeps
    // serving), or the connection is cut off.
    for kib in [20, 64] {
        let mut raw = Raw::handshake(addr);
        let block = request_block(AUTHORIZE, &[("x-padding", vec![b'p'; kib * 1024])]);
        let chunks: Vec<&[u8]> = block.chunks(16 * 1024).collect();
        for (i, c) in chunks.iter().enumerate() {
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            let last = if i + 1 == chunks.len() {
                END_HEADERS
            } else {
                0
            };
            raw.send(&frame(kind, last, 1, c));
        }
        let frames = raw.read_until(Duration::from_secs(10), |f| {
            f.iter().any(|f| f.stream == 1 && f.kind == RST_STREAM)
                || f.iter().any(|f| f.kind == GOAWAY)
        });
        let reset = frames
            .iter()
            .find(|f| f.stream == 1 && f.kind == RST_STREAM)
            .and_then(Frame::error_code);
        let goaway = frames
            .iter()
            .find(|f| f.kind == GOAWAY)
            .and_then(Frame::error_code);
        assert!(
            reset.is_some_and(|c| c != 0) || goaway.is_some_and(|c| c != 0),
            "{kib} KiB of headers: neither refused nor cut off"
        );
        let answered_431 = frames.iter().any(|f| f.stream == 1 && f.kind == HEADERS);
        if goaway.is_none() {
            // Still serving on this connection: a valid call on stream 3.
            raw.send(&frame(
                HEADERS,
                END_HEADERS,
                3,
                &request_block(AUTHORIZE, &[]),
            ));
            raw.send(&frame(
                DATA,
                END_STREAM,
                3,
                &grpc_message(&authorize_msg(token)),
            ));
            let frames = raw.read_until(Duration::from_secs(10), |f| {
                f.iter()
                    .any(|f| f.stream == 3 && f.kind == HEADERS && f.flags & END_STREAM != 0)
            });
            assert!(
                frames.iter().any(|f| f.stream == 3 && f.kind == HEADERS),
                "after refusing {kib} KiB of headers the connection no longer answers"
            );
        }
        log.push(format!(
            "{kib} KiB of headers: RST_STREAM {reset:?}, a response on the stream (431): {answered_431}, GOAWAY {goaway:?}; the connection {}",
            if goaway.is_none() { "still answers" } else { "was closed" }
        ));
    }

    // A CONTINUATION flood: headers that never end.
    let mut raw = Raw::handshake(addr);
    raw.send(&frame(HEADERS, 0, 1, &request_block(AUTHORIZE, &[])));
    let mut sent = 0;
    let piece = {
        let mut b = vec![0x00];
        hpack_str(b"x-flood", &mut b);
        hpack_str(&[b'f'; 1000], &mut b);
        b
    };
    let mut frames = Vec::new();
    while sent < 10_000 && raw.send(&frame(CONTINUATION, 0, 1, &piece)) {
        sent += 1;
        if sent % 5 == 0 {
            frames.extend(raw.read_until(Duration::from_millis(1), |_| false));
            if raw.closed {
                break;
            }
        }
    }
    frames.extend(raw.read_until(Duration::from_secs(10), |_| false));
    assert!(
        raw.closed,
        "CONTINUATION flood: {sent} frames (~{} KiB) accepted, connection still open",
        sent
    );
    let code = frames
        .iter()
        .find(|f| f.kind == GOAWAY)
        .and_then(Frame::error_code);
    assert!(sent < 10_000, "CONTINUATION flood never cut off");
    log.push(format!(
        "CONTINUATION flood: cut off after {sent} frames of 1 KiB (GOAWAY {code:?})"
    ));

    // Rapid reset: open and cancel 10,000 streams as fast as possible.
    let mut raw = Raw::handshake(addr);
    let block = request_block(AUTHORIZE, &[]);
    let mut burst = Vec::new();
    let mut frames = Vec::new();
    let mut opened = 0u32;
    for i in 0..10_000u32 {
        let id = 2 * i + 1;
        burst.extend(frame(HEADERS, END_HEADERS, id, &block));
        burst.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes())); // CANCEL
        if burst.len() > 64 * 1024 {
            if !raw.send(&burst) {
                break;
            }
            burst.clear();
            frames.extend(raw.read_until(Duration::from_millis(1), |_| false));
        }
        opened = i + 1;
    }
    raw.send(&burst);
    frames.extend(raw.read_until(Duration::from_secs(3), |f| {
        f.iter().any(|f| f.kind == GOAWAY)
    }));
    let code = frames
        .iter()
        .find(|f| f.kind == GOAWAY)
        .and_then(Frame::error_code);
    if code.is_none() && !raw.closed {
        // Not cut off: then the connection must still answer.
        let id = 2 * opened + 1;
        raw.send(&frame(HEADERS, END_HEADERS, id, &block));
        raw.send(&frame(
            DATA,
            END_STREAM,
            id,
            &grpc_message(&authorize_msg(token)),
        ));
        let frames = raw.read_until(Duration::from_secs(10), |f| {
            f.iter().any(|f| f.stream == id && f.kind == HEADERS)
        });
        assert!(
            frames.iter().any(|f| f.stream == id && f.kind == HEADERS),
            "rapid reset: neither cut off nor answering"
        );
    }
    log.push(format!(
        "rapid reset: {opened} streams opened and cancelled; GOAWAY {code:?}, closed {}",
        raw.closed
    ));
    log
}

// ------------------------------------------------------------ slow clients

/// Opens `n` streams that send their headers and never their body; returns
/// (refused, answered, connection closed) once every stream got a refusal
/// or an answer, or the connection closed, or `limit` passed.
fn stalled_streams(addr: SocketAddr, n: u32, limit: Duration) -> (usize, usize, bool) {
    let mut raw = Raw::handshake(addr);
    let block = request_block(AUTHORIZE, &[]);
    let mut out = Vec::new();
    for i in 0..n {
        out.extend(frame(HEADERS, END_HEADERS, 2 * i + 1, &block));
    }
    raw.send(&out);
    let mut refused = HashSet::new();
    let mut answered = HashSet::new();
    let deadline = Instant::now() + limit;
    while !raw.closed && Instant::now() < deadline && refused.len() + answered.len() < n as usize {
        for f in raw.read_until(Duration::from_millis(200), |_| false) {
            match f.kind {
                RST_STREAM if f.error_code() == Some(REFUSED_STREAM) => {
                    refused.insert(f.stream);
                }
                HEADERS if !refused.contains(&f.stream) => {
                    answered.insert(f.stream);
                }
                _ => {}
            }
        }
    }
    (refused.len(), answered.len(), raw.closed)
}

/// Sends complete Authorize requests and never reads a byte; returns how
/// many requests the socket took before `stop`.
fn never_reads(addr: SocketAddr, token: &str, stop: &AtomicBool) -> usize {
    let mut raw = Raw::connect(addr);
    raw.s
        .set_write_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    raw.send(PREFACE);
    raw.send(&frame(SETTINGS, 0, 0, &[]));
    let block = request_block(AUTHORIZE, &[]);
    let data = grpc_message(&authorize_msg(token));
    let mut sent = 0usize;
    let mut id = 1u32;
    while !stop.load(Ordering::Relaxed) && id < 1 << 30 {
        let mut req = frame(HEADERS, END_HEADERS, id, &block);
        req.extend(frame(DATA, END_STREAM, id, &data));
        if raw.s.write_all(&req).is_err() {
            // Blocked (the server stopped reading us, since we never read
            // its answers) or cut off: either way, stop writing.
            break;
        }
        sent += 1;
        id += 2;
    }
    // Hold the connection open, unread, until the phase ends.
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    sent
}

// ------------------------------------------------------------------- test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_cut_off_and_valid_clients_keep_being_served() {
    let _serial = SERIAL.lock().await;
    let dir = temp();
    let clock = Arc::new(keyward::clock::ManualClock::new());
    let mut opts = options(dir.path(), clock.clone());
    // The production defaults (README "Configuration").
    opts.request_timeout = Duration::from_secs(5);
    opts.max_in_flight = 4096;
    opts.max_concurrent_streams = 256;
    let s = TestServer::start_with(opts, clock).await.expect("start");
    let token = acme(&s).await.domain.secret;
    let addr = s.grpc;

    let rss_start = rss_kib();
    let rss_stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load {
        phase: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        phases: Mutex::new(HashMap::new()),
    });
    let rss = rss_sampler(load.clone(), rss_stop.clone());
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(valid_client(addr, token.clone(), load.clone())))
        .collect();
    let names = [
        "baseline",
        "protocol abuse",
        "slow clients",
        "saturation (> in-flight limit)",
        "after the attack",
    ];
    let mut log: Vec<String> = Vec::new();

    // 0: baseline.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 1: protocol abuse.
    load.phase.store(1, Ordering::Relaxed);
    oversized_and_metadata(&s, &token, &mut log).await;
    let t = token.clone();
    log.extend(
        tokio::task::spawn_blocking(move || protocol_abuse(addr, &t))
            .await
            .expect("protocol abuse"),
    );

    // 2: slow clients. The header-to-message deadline (3 s, before the 5 s
    // request timeout) must answer every stalled stream; 30 s is only a
    // bound that turns a hang into a failure.
    load.phase.store(2, Ordering::Relaxed);
    let limit = Duration::from_secs(30);
    let reader_stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (t, stop) = (token.clone(), reader_stop.clone());
        std::thread::spawn(move || never_reads(addr, &t, &stop))
    };
    let flood = std::thread::spawn(move || stalled_streams(addr, 2000, limit));
    let stalled: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || stalled_streams(addr, 256, limit)))
        .collect();
    let no_deadline: Vec<_> = (0..20)
        .map(|_| {
            let ch = s.channel.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let (code, msg) = stalled_call(&ch, AUTHORIZE, Vec::new()).await;
                (code, msg, start.elapsed())
            })
        })
        .collect();
    let (refused, answered, closed) = flood.join().expect("flood");
    assert!(
        refused > 0 && answered <= 256,
        "2,000 streams on one connection: {refused} refused, {answered} answered (at most 256 may run)"
    );
    assert!(
        closed || refused + answered == 2000,
        "2,000 streams: {refused} refused + {answered} answered, and the connection neither answered the rest nor closed"
    );
    log.push(format!(
        "2,000 streams on one connection: {refused} refused (REFUSED_STREAM), {answered} answered at the header-to-message deadline, connection closed: {closed}"
    ));
    for h in stalled {
        let (refused, answered, closed) = h.join().expect("stalled");
        assert_eq!(
            (refused, answered),
            (0, 256),
            "256 streams that never send a body: each gets an answer from the timeout (closed: {closed})"
        );
    }
    log.push(
        "3 connections x 256 streams with no body: all 768 answered at the header-to-message deadline".into(),
    );
    let mut slowest = Duration::ZERO;
    let mut message = String::new();
    for h in no_deadline {
        let (code, msg, took) = h.await.expect("no-deadline call");
        assert!(
            code == Code::DeadlineExceeded && msg.contains("did not arrive"),
            "a call with no deadline and a body that never ends: {code:?} {msg}"
        );
        slowest = slowest.max(took);
        message = msg;
    }
    log.push(format!(
        "20 calls with no deadline and a body that never ends: DEADLINE_EXCEEDED (\"{message}\") from the server, slowest after {:.1} s",
        slowest.as_secs_f64()
    ));
    reader_stop.store(true, Ordering::Relaxed);
    let sent = reader.join().expect("reader");
    log.push(format!(
        "a client that never reads: {sent} requests written before its socket filled; nothing else slowed"
    ));

    // 3: saturation: 17 x 256 stalled streams > 4,096 in flight.
    load.phase.store(3, Ordering::Relaxed);
    let attackers: Vec<_> = (0..17)
        .map(|_| std::thread::spawn(move || stalled_streams(addr, 256, limit)))
        .collect();
    let mut held = 0;
    for h in attackers {
        let (refused, answered, _) = h.join().expect("attacker");
        assert_eq!(refused, 0);
        held += answered;
    }
    log.push(format!(
        "saturation: {held} stalled streams over 17 connections, each answered at the header-to-message deadline, none holding an in-flight slot"
    ));

    // 4: after the attack: served again.
    load.phase.store(4, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..50 {
        assert!(
            s.check(&token, DOMAIN, "example.com", ADMIN).await.allowed,
            "not served after the attack"
        );
    }
    load.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("valid client");
    }
    rss_stop.store(true, Ordering::Relaxed);
    let rss_peaks = rss.join().expect("rss sampler");
    let rss_peak = rss_peaks.iter().copied().max().unwrap_or(0);

    for line in &log {
        println!("hostile: {line}");
    }
    let phases = std::mem::take(&mut *load.phases.lock().expect("lock"));
    let mut base_p99 = Duration::ZERO;
    for (i, name) in names.iter().enumerate() {
        let Some(p) = phases.get(&i) else {
            panic!("phase {name}: no valid request was even sent");
        };
        let mut ok = p.ok.clone();
        ok.sort();
        let p99 = percentile(&ok, 0.99);
        if i == 0 {
            base_p99 = p99;
        }
        let total = ok.len() + p.shed + p.other.len();
        println!(
            "hostile: valid Authorize, {name}: {total} requests, {} ok, {} shed {:?}, {} other; p50 {:?}, p99 {:?} ({:.2}x baseline p99)",
            ok.len(),
            p.shed,
            p.shed_codes,
            p.other.len(),
            percentile(&ok, 0.50),
            p99,
            p99.as_secs_f64() / base_p99.as_secs_f64().max(1e-9)
        );
        assert!(
            p.other.is_empty(),
            "phase {name}: valid requests got neither an answer nor a shed status: {:?}",
            &p.other[..p.other.len().min(5)]
        );
        assert!(
            ok.len() * 10 >= total * 9 && !ok.is_empty(),
            "phase {name}: only {} of {total} valid requests served",
            ok.len()
        );
    }
    let growth_mib = rss_peak.saturating_sub(rss_start) / 1024;
    println!(
        "hostile: RSS {} MiB at start, peak {} MiB (+{growth_mib} MiB); peak per phase (MiB): {:?}",
        rss_start / 1024,
        rss_peak / 1024,
        rss_peaks.iter().map(|k| k / 1024).collect::<Vec<_>>()
    );
    assert!(growth_mib < 200, "RSS grew by {growth_mib} MiB");
    s.stop().await.expect("clean stop");
}

// ------------------------------------------------- shared by the attacks

/// Options with the production limits (README "Configuration"): 5 s
/// request timeout, 4,096 requests in flight, 256 streams per connection.
fn production_options(
    dir: &std::path::Path,
    clock: Arc<keyward::clock::ManualClock>,
) -> keyward::server::Options {
    let mut opts = options(dir, clock);
    opts.request_timeout = Duration::from_secs(5);
    opts.max_in_flight = 4096;
    opts.max_concurrent_streams = 256;
    opts
}

impl Load {
    /// A load in phase 0 (the baseline), nothing measured yet.
    fn new() -> Arc<Load> {
        Arc::new(Load {
            phase: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            phases: Mutex::new(HashMap::new()),
        })
    }

    /// Records one valid call of `phase` that took `took`: allowed, denied
    /// (with what to print), or a gRPC error.
    fn record(
        &self,
        phase: usize,
        took: Duration,
        result: Result<Result<(), String>, tonic::Status>,
    ) {
        let mut phases = self.phases.lock().expect("lock");
        let p = phases.entry(phase).or_default();
        match result {
            Ok(Ok(())) => p.ok.push(took),
            Ok(Err(denied)) => p.other.push(denied),
            // Load shedding: tonic answers RESOURCE_EXHAUSTED for the
            // in-flight limit, keyward UNAVAILABLE for argon2 capacity.
            Err(s) if matches!(s.code(), Code::Unavailable | Code::ResourceExhausted) => {
                p.shed += 1;
                *p.shed_codes.entry(s.code()).or_default() += 1;
            }
            Err(s) => p.other.push(format!("{:?}: {}", s.code(), s.message())),
        }
    }

    /// Phase `i`'s valid calls: (answered OK, sent, p99 of the OK ones).
    fn summary(&self, i: usize) -> (usize, usize, Duration) {
        let phases = self.phases.lock().expect("lock");
        let p = phases.get(&i).expect("valid requests in each phase");
        let mut ok = p.ok.clone();
        ok.sort();
        (
            ok.len(),
            ok.len() + p.shed + p.other.len(),
            percentile(&ok, 0.99),
        )
    }
}

/// The world every attack starts from, on `s`.
struct Acme {
    /// The account "acme".
    account: u64,
    /// Its first ADMIN token.
    admin: String,
    /// The domain example.com's own token (ADMIN on it): the valid callers'.
    domain: pb::TokenWithSecret,
    /// A VIEWER token on the account: valid, but may change nothing.
    viewer: String,
}

/// Makes [`Acme`] and checks the domain token is allowed.
async fn acme(s: &TestServer) -> Acme {
    let (account, admin) = s.account("acme").await;
    let domain = s
        .register(&admin, account, DOMAIN, "example.com", None)
        .await
        .expect("a domain token");
    assert!(
        s.check(&domain.secret, DOMAIN, "example.com", ADMIN)
            .await
            .allowed
    );
    let viewer = s
        .create(
            &admin,
            account,
            "viewer",
            vec![grant(ACCOUNT, &account.to_string(), VIEWER)],
        )
        .await
        .expect("a viewer token")
        .secret;
    Acme {
        account,
        admin,
        domain,
        viewer,
    }
}
