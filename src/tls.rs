//! TLS on keyward's ports: the certificate, key and client-CA files, loaded
//! and checked ([`load`]), held where each new connection takes the config
//! in force ([`Tls`]), reloaded when the files change or on SIGHUP
//! ([`watch`]); and the gRPC port's TLS accept loop ([`grpc_incoming`]).
//!
//! - Both ports serve the same certificate: the gRPC port with ALPN `h2`,
//!   the HTTP port with ALPN `http/1.1`; TLS 1.2 and 1.3 (rustls, ring).
//! - With a client CA, the gRPC port refuses a handshake without a client
//!   certificate chaining to it; the HTTP port verifies one when presented
//!   (a bad one fails the handshake) and otherwise lets the connection
//!   reach the probes only (see [`crate::http::serve`]).
//! - A reload that fails (unreadable file, bad PEM, key not matching the
//!   certificate) logs one warning naming the file and keeps the config in
//!   force; connections already open keep theirs either way.
//! - Every handshake runs in a task of its own under a deadline, so a
//!   client that never finishes one holds no place in any accept loop.
//!
//! Metrics: `keyward_tls_reloads_total{result="ok|refused"}`,
//! `keyward_tls_handshake_failures_total{port="grpc|http"}`.
//! No error or log line carries key material: PEM errors are described,
//! never quoted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use metrics::counter;
use parking_lot::{Mutex, RwLock};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often the files are looked at for changes (SIGHUP reloads at once).
pub const POLL: Duration = Duration::from_secs(5);

/// Time a gRPC client has to finish its TLS handshake.
pub const GRPC_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time an HTTP client has to finish its TLS handshake (then the header
/// deadline of [`crate::http::serve`] applies).
pub const HTTP_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most gRPC handshakes in progress at once. Each may hold a partial
/// handshake message of up to 64 KiB for up to its deadline; past this, the
/// oldest handshake in progress is dropped for the new one (a client that
/// opens connections and stalls their handshakes cannot keep new clients
/// out for a whole deadline, nor grow memory without bound: 1,024 x 64 KiB).
pub const GRPC_HANDSHAKES_MAX: usize = 1024;

/// The files that make a port speak TLS (`--tls-cert`, `--tls-key`,
/// `--tls-client-ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first: what clients verify.
    pub cert: PathBuf,
    /// PEM private key of the leaf: proves the certificate is ours (its
    /// content is never logged).
    pub key: PathBuf,
    /// PEM CA certificate(s) client certificates must chain to (none: no
    /// client certificate is asked for).
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Every file with the flag that names it.
    fn each(&self) -> impl Iterator<Item = (&'static str, &Path)> {
        [
            Some(("--tls-cert", self.cert.as_path())),
            Some(("--tls-key", self.key.as_path())),
            self.client_ca.as_deref().map(|ca| ("--tls-client-ca", ca)),
        ]
        .into_iter()
        .flatten()
    }
}

/// Why a set of TLS files cannot be served: the flag, the file, and what is
/// wrong with it (never its content).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{flag} {}: {problem}", path.display())]
pub struct TlsError {
    /// The flag that names the file.
    pub flag: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

impl TlsError {
    fn new(flag: &'static str, path: &Path, problem: impl Into<String>) -> TlsError {
        TlsError {
            flag,
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
}

/// The two ports' configs made from one set of files.
#[derive(Clone)]
pub struct Configs {
    /// The gRPC port: ALPN h2; a client certificate required with a CA.
    pub grpc: Arc<ServerConfig>,
    /// The HTTP port: ALPN http/1.1; a client certificate verified when
    /// presented, not required.
    pub http: Arc<ServerConfig>,
}

/// Reads and checks `files` and builds both ports' configs: the chain and
/// key must parse, the key must be the leaf's, the client CAs must be
/// usable trust anchors.
pub fn load(files: &TlsFiles) -> Result<Configs, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certs("--tls-cert", &files.cert)?;
    let key = read_key(&files.key)?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::new("--tls-key", &files.key, format!("unusable key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::new(
                "--tls-key",
                &files.key,
                format!(
                    "does not match the certificate in {} (the first certificate of --tls-cert)",
                    files.cert.display()
                ),
            ))
        }
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::new(
                "--tls-key",
                &files.key,
                "cannot be checked against the certificate (unsupported key type)",
            ))
        }
        Err(e) => {
            return Err(TlsError::new(
                "--tls-cert",
                &files.cert,
                format!("first certificate unusable: {e}"),
            ))
        }
    }
    let resolver = Arc::new(SingleCertAndKey::from(certified));
    let (grpc_verifier, http_verifier) = match &files.client_ca {
        None => (None, None),
        Some(path) => {
            let (_, roots) = read_ca("--tls-client-ca", path)?;
            let roots = Arc::new(roots);
            let verifier = |required: bool| {
                let builder =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
                let builder = if required {
                    builder
                } else {
                    builder.allow_unauthenticated()
                };
                builder
                    .build()
                    .map_err(|e| TlsError::new("--tls-client-ca", path, format!("unusable: {e}")))
            };
            (Some(verifier(true)?), Some(verifier(false)?))
        }
    };
    let config = |verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
                  alpn: &[u8]|
     -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::new("--tls-cert", &files.cert, e.to_string()))?;
        let builder = match verifier {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(Arc::new(config))
    };
    Ok(Configs {
        grpc: config(grpc_verifier.map(|v| v as _), b"h2")?,
        http: config(http_verifier.map(|v| v as _), b"http/1.1")?,
    })
}

/// Reads `path` whole (a PEM file is small).
fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::new(flag, path, e.to_string()))
}

/// The certificates of a PEM file, in order; at least one.
fn read_certs(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs_in(flag, path, &read(flag, path)?)
}

/// A file of CA certificates (`--tls-client-ca`; a follower's `--tls-ca`):
/// its PEM, and its certificates as trust anchors, at least one and each
/// usable. The error names the flag and the file, never the content.
pub fn read_ca(flag: &'static str, path: &Path) -> Result<(Vec<u8>, RootCertStore), TlsError> {
    let pem = read(flag, path)?;
    let mut roots = RootCertStore::empty();
    for cert in certs_in(flag, path, &pem)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::new(flag, path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok((pem, roots))
}

/// The certificates in `pem` (the content of `path`), in order; at least one.
fn certs_in(
    flag: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(flag, path, pem_problem(&e, "CERTIFICATE")))?;
    if certs.is_empty() {
        return Err(TlsError::new(flag, path, "no PEM CERTIFICATE in it"));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("--tls-key", path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| TlsError::new("--tls-key", path, pem_problem(&e, "PRIVATE KEY")))
}

/// What is wrong with a PEM file, without quoting it (its lines may be
/// key material).
fn pem_problem(e: &rustls_pki_types::pem::Error, what: &str) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::NoItemsFound => format!("no PEM {what} in it"),
        Error::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        Error::IllegalSectionStart { .. } => "a malformed PEM BEGIN line".into(),
        Error::Base64Decode(_) => "bad base64 in a PEM section".into(),
        Error::Io(e) => e.to_string(),
        _ => "not valid PEM".into(),
    }
}

/// A file's identity: modification time, length and, on Unix, the inode
/// and the change time (which no tool can set back): a change of any means
/// a new file, even one rewritten at the same length within the clock's
/// resolution, or with its modification time restored.
type Stamp = Option<(SystemTime, u64, u64, i64, i64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let (ino, ctime, ctime_ns) = {
        use std::os::unix::fs::MetadataExt;
        (m.ino(), m.ctime(), m.ctime_nsec())
    };
    #[cfg(not(unix))]
    let (ino, ctime, ctime_ns) = (0, 0, 0);
    Some((m.modified().ok()?, m.len(), ino, ctime, ctime_ns))
}

/// How long after a file's last change a set that fails to load is taken
/// for one caught half-written (a rotation writes the certificate and the
/// key one after the other) and retried at the next look before it is
/// refused.
const SETTLE: Duration = Duration::from_secs(2);

/// Whether any of `files` changed within [`SETTLE`].
fn just_written(files: &TlsFiles) -> bool {
    files.each().any(|(_, p)| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < SETTLE)
    })
}

/// The TLS configs in force, and the files they come from. Each new
/// connection takes the config in force when it starts (one read lock).
pub struct Tls {
    /// Where the configs come from.
    files: TlsFiles,
    /// The configs in force.
    current: RwLock<Configs>,
    /// The files' stamps when last loaded (or refused): a change starts a
    /// reload, an unchanged bad file is not warned about again.
    stamps: Mutex<Vec<Stamp>>,
}

impl Tls {
    /// Loads `files` at start: an error refuses the start. A key file
    /// readable by others is warned about.
    pub fn start(files: TlsFiles) -> Result<Arc<Tls>, TlsError> {
        let stamps = files.each().map(|(_, p)| stamp(p)).collect();
        let configs = load(&files)?;
        warn_if_key_exposed(&files.key);
        // Shown at zero from the start, so that dashboards and alerts see
        // the series before the first failure.
        for result in ["ok", "refused"] {
            counter!("keyward_tls_reloads_total", "result" => result).increment(0);
        }
        for port in ["grpc", "http"] {
            counter!("keyward_tls_handshake_failures_total", "port" => port).increment(0);
        }
        Ok(Arc::new(Tls {
            files,
            current: RwLock::new(configs),
            stamps: Mutex::new(stamps),
        }))
    }

    /// The files served.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The gRPC port's config in force.
    pub fn grpc_config(&self) -> Arc<ServerConfig> {
        self.current.read().grpc.clone()
    }

    /// The HTTP port's config in force.
    pub fn http_config(&self) -> Arc<ServerConfig> {
        self.current.read().http.clone()
    }

    /// Whether client certificates are verified (`--tls-client-ca`): the
    /// HTTP port then serves only the probes to a client without one.
    pub fn verifies_clients(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Loads the files again: a good set replaces the configs for new
    /// connections; a bad one is refused (one warning naming the file) and
    /// the configs in force stay. Counted in `keyward_tls_reloads_total`.
    pub fn reload(&self, why: &str) -> Result<(), TlsError> {
        // Stamps before reading: a write after this is seen next time.
        let stamps = self.stamps_now();
        self.take(stamps, load(&self.files), why)
    }

    /// Reloads if a file changed since the last load; None if none did,
    /// or if the new set does not load yet but was written within
    /// [`SETTLE`] (the rest of a rotation is probably being written: it is
    /// looked at again next time, and refused then if it is still bad).
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let stamps = self.stamps_now();
        if *self.stamps.lock() == stamps {
            return None;
        }
        let loaded = load(&self.files);
        if loaded.is_err() && just_written(&self.files) {
            return None;
        }
        Some(self.take(stamps, loaded, "file changed"))
    }

    /// The files' stamps now.
    fn stamps_now(&self) -> Vec<Stamp> {
        self.files.each().map(|(_, p)| stamp(p)).collect()
    }

    /// Puts a load of the files stamped `stamps` in force, or refuses it.
    fn take(
        &self,
        stamps: Vec<Stamp>,
        loaded: Result<Configs, TlsError>,
        why: &str,
    ) -> Result<(), TlsError> {
        *self.stamps.lock() = stamps;
        match loaded {
            Ok(configs) => {
                *self.current.write() = configs;
                counter!("keyward_tls_reloads_total", "result" => "ok").increment(1);
                tracing::info!(why, cert = %self.files.cert.display(), "TLS certificate reloaded; new connections use it");
                Ok(())
            }
            Err(e) => {
                counter!("keyward_tls_reloads_total", "result" => "refused").increment(1);
                tracing::warn!(error = %e, why, "TLS files not reloaded; the certificate in force stays");
                Err(e)
            }
        }
    }
}

/// Warns when the key file is readable by others. Group read is not
/// warned about: Kubernetes gives a Secret volume to the pod's `fsGroup`
/// (0440), which is how a non-root keyward reads its key.
fn warn_if_key_exposed(key: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(key) {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o007 != 0 {
                tracing::warn!(
                    file = %key.display(),
                    mode = format_args!("{mode:04o}"),
                    "--tls-key is readable by others; make it 0600, 0400 or 0440"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = key;
}

/// A SIGHUP listener, registered when made (so a SIGHUP sent once the
/// server is up never meets the default action, which ends the process).
pub struct Hangup {
    /// The signal stream (none: SIGHUP cannot be listened to here).
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    /// Starts listening for SIGHUP.
    pub fn listen() -> Hangup {
        Hangup {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    /// Resolves on the next SIGHUP (never, where there is none).
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = self.signal.as_mut() {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await;
    }
}

/// Reloads `tls` on SIGHUP and when its files change (checked every
/// [`POLL`]) until `stop` resolves.
pub async fn watch(tls: Arc<Tls>, mut hangup: Hangup, stop: impl std::future::Future<Output = ()>) {
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        let forced = tokio::select! {
            _ = &mut stop => return,
            _ = hangup.recv() => true,
            _ = poll.tick() => false,
        };
        let t = tls.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if forced {
                let _ = t.reload("SIGHUP");
            } else {
                let _ = t.reload_if_changed();
            }
        })
        .await;
    }
}

/// Counts a failed or abandoned handshake on `port`.
pub fn handshake_failed(port: &'static str) {
    counter!("keyward_tls_handshake_failures_total", "port" => port).increment(1);
}

mod grpc;

pub use grpc::{grpc_incoming, TlsConn};

#[cfg(test)]
mod tests;
