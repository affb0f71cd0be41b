//! Scenario 14, `tls`: scenarios 1 and 2 over TLS. keyward with `--tls-cert` and
//! `--tls-key` against the no-op baseline serving TLS (tonic's rustls) with
//! the same certificate and key, on a data dir of its own seeded like the
//! main one; the client (tonic's rustls) verifies the certificate against
//! the CA and the name `localhost`. Both servers offer ALPN h2 and TLS 1.3;
//! the certificate is ECDSA P-256, made with openssl as in the README's TLS
//! try-out. Connections are opened before each run, so handshakes are not
//! measured: the figures are the per-request cost of TLS.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keyward::pb::v1::authorizer_client::AuthorizerClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::bench::{request, Bench};
use crate::load::{load_with, Mode, Run, Workload};
use crate::procs::{spawn_keyward, start_noop_with, Proc};
use crate::report::verdict;

/// A CA and a server certificate for `localhost` and 127.0.0.1, in a
/// temporary directory removed on drop.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

/// openssl with `args` in `dir`; its output only on failure.
fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {}: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The README try-out's CA and server certificate (one day).
fn make_certs() -> Result<Certs, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let d = dir.path();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-days",
        "1",
        "-subj",
        "/CN=keyward-bench CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(d, &ca)?;
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    openssl(d, &csr)?;
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| e.to_string())?;
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    )?;
    // keyward warns about a key readable by others.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("server.key"), std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
    }
    Ok(Certs { dir })
}

/// Until an Authorize over TLS answers OK (keyward has loaded its store),
/// at most `max`.
async fn wait_tls_ready(
    addr: SocketAddr,
    tls: &ClientTlsConfig,
    probe: &keyward::pb::v1::AuthorizeRequest,
    max: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + max;
    let mut last = String::from("never connected");
    while Instant::now() < deadline {
        let endpoint = Channel::from_shared(format!("https://{addr}"))
            .map_err(|e| e.to_string())?
            .tls_config(tls.clone())
            .map_err(|e| e.to_string())?;
        match endpoint.connect().await {
            Ok(ch) => match AuthorizerClient::new(ch).authorize(probe.clone()).await {
                Ok(r) if r.get_ref().allowed => return Ok(()),
                Ok(r) => last = format!("answered {:?}", r.get_ref()),
                Err(s) => last = s.to_string(),
            },
            Err(e) => last = format!("{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("not ready over TLS within {max:?}: {last}"))
}

impl Bench {
    /// Baseline and keyward over TLS, alternating each round, `mode`'s load.
    async fn compare_tls(
        &self,
        (base_addr, kw_addr): (SocketAddr, SocketAddr),
        tls: &ClientTlsConfig,
        mode: Mode,
        w: &Workload,
        label: &str,
    ) -> (Run, Run) {
        let (mut base, mut kw) = (Run::new(), Run::new());
        for r in 0..self.cli.rounds {
            let (warmup, duration) = (self.cli.warmup, self.cli.duration);
            let b = load_with(
                base_addr,
                Some(tls),
                mode,
                w,
                warmup,
                duration,
                &format!("{label} TLS baseline #{}", r + 1),
            )
            .await;
            base.add(&b);
            let k = load_with(
                kw_addr,
                Some(tls),
                mode,
                w,
                warmup,
                duration,
                &format!("{label} TLS keyward #{}", r + 1),
            )
            .await;
            kw.add(&k);
        }
        (base, kw)
    }

    /// Scenarios 1 and 2, both servers over TLS with the same certificate.
    pub(crate) async fn tls(&mut self) {
        match self.tls_servers().await {
            Ok(rig) => {
                let tls = client_tls(&rig.certs);
                let addrs = (rig.base.addr, rig.kw.addr);
                self.tls_closed(&tls, addrs, &rig.w).await;
                self.tls_sequential(&tls, addrs, &rig.w).await;
            }
            Err(e) => {
                self.report.note(format!("14. TLS: skipped: {e}"));
                self.report.print_last(1);
            }
        }
    }

    /// The certificates, a seeded keyward and the baseline, both over TLS
    /// and answering; and the workload (the new store's tokens).
    async fn tls_servers(&mut self) -> Result<Rig, String> {
        let certs = make_certs()?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        eprintln!("scenario 14: seeding {} tokens ...", self.cli.tokens);
        let seeded = keyward::seed::seed(dir.path(), self.cli.tokens, true)
            .await
            .map_err(|e| e.to_string())?;
        let valid: Vec<_> = seeded
            .tokens
            .iter()
            .map(|t| request(t.expose(), &seeded.project))
            .collect();
        let flags: Vec<OsString> = vec![
            "--tls-cert".into(),
            certs.path("server.crt").into(),
            "--tls-key".into(),
            certs.path("server.key").into(),
        ];
        let base = start_noop_with(&self.layout, &flags);
        let (kw, _) = spawn_keyward(&self.layout, &self.keyward_bin, dir.path(), &flags);
        let tls = client_tls(&certs);
        let probe = valid.first().ok_or("no seeded token")?;
        wait_tls_ready(base.addr, &tls, probe, Duration::from_secs(30))
            .await
            .map_err(|e| format!("baseline: {e}"))?;
        wait_tls_ready(kw.addr, &tls, probe, Duration::from_secs(120))
            .await
            .map_err(|e| format!("keyward: {e}"))?;
        let w = Workload {
            requests: std::sync::Arc::new(valid),
            batch: 1,
            checks: None,
            introspect: false,
            raw: None,
        };
        Ok(Rig {
            base,
            kw,
            certs,
            _store: dir,
            w,
        })
    }

    async fn tls_closed(
        &mut self,
        tls: &ClientTlsConfig,
        addrs: (SocketAddr, SocketAddr),
        w: &Workload,
    ) {
        let title = "14a. TLS: scenario 1's load (16 conns × 8 in flight), both servers over TLS";
        let mode = Mode::Closed {
            conns: 16,
            inflight: 8,
        };
        let (base, kw) = self.compare_tls(addrs, tls, mode, w, "14a").await;
        self.report.header(title);
        self.report.row("baseline (no-op), TLS", &base);
        self.report.row("keyward, TLS", &kw);
        let tput = kw.rps() / base.rps();
        let p99 = kw.us(0.99) / base.us(0.99);
        self.report.note(format!(
            "throughput ratio {tput:.3} (target ≥ 0.90: {}), p99 ratio {p99:.3}",
            verdict(tput >= 0.90)
        ));
        self.report.print_last(9);
    }

    async fn tls_sequential(
        &mut self,
        tls: &ClientTlsConfig,
        addrs: (SocketAddr, SocketAddr),
        w: &Workload,
    ) {
        let mode = Mode::Closed {
            conns: 1,
            inflight: 1,
        };
        let (base, kw) = self.compare_tls(addrs, tls, mode, w, "14b").await;
        self.report
            .header("14b. TLS: scenario 2's load (one connection, one request at a time)");
        self.report.row("baseline (no-op), TLS", &base);
        self.report.row("keyward, TLS", &kw);
        let d = kw.us(0.5) - base.us(0.5);
        self.report.note(format!(
            "p50 difference {d:+.1} µs (target ≤ +15 µs: {})",
            verdict(d <= 15.0)
        ));
        self.report.print_last(9);
    }
}

/// The client side: the CA, the name `localhost` (in the certificate).
fn client_tls(certs: &Certs) -> ClientTlsConfig {
    let ca = std::fs::read(certs.path("ca.crt")).unwrap_or_default();
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost")
}

/// Scenario 14's servers and what they use. Fields drop in order: the
/// processes are stopped before their files are removed.
struct Rig {
    /// The no-op baseline over TLS.
    base: Proc,
    /// keyward over TLS, on `_store`.
    kw: Proc,
    /// The CA and the server certificate both serve.
    certs: Certs,
    /// keyward's seeded data dir.
    _store: tempfile::TempDir,
    /// The seeded tokens' Authorize requests.
    w: Workload,
}
