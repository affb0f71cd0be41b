//! All settings, from flags or `KEYWARD_*` environment variables, parsed and
//! validated once at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// keyward: issues and manages API tokens, and answers "may this token do
/// this, on this resource, at this level?" over gRPC.
#[derive(Debug, Clone, Parser)]
#[command(name = "keyward", version, about)]
pub struct Config {
    /// gRPC listen address: the keyward services (Accounts, Resources,
    /// Tokens, Audit, Authorizer), Envoy ext_authz (Check), Replication (the
    /// stream followers watch), health and reflection.
    #[arg(long, env = "KEYWARD_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// HTTP listen address: the REST facades (Mailtrap's /api/...,
    /// MailerSend's /v1/token..., /openapi.json), the probes /healthz and
    /// /readyz, and /metrics.
    #[arg(long, env = "KEYWARD_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Directory of the embedded sled store (created if missing).
    #[arg(long, env = "KEYWARD_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// File of the verified-digest key (64 hex chars). Default:
    /// `<data-dir>/digest.key`, created with mode 0600 on first start.
    #[arg(long, env = "KEYWARD_DIGEST_KEY_FILE")]
    pub digest_key_file: Option<PathBuf>,

    /// How long a reset token keeps working ("12h", "30m", ...).
    #[arg(long, env = "KEYWARD_RESET_GRACE", default_value = "12h", value_parser = humantime::parse_duration)]
    pub reset_grace: Duration,

    /// How long after expiry a token is deleted.
    #[arg(long, env = "KEYWARD_PURGE_AFTER", default_value = "24h", value_parser = humantime::parse_duration)]
    pub purge_after: Duration,

    /// Per-request deadline on the gRPC port.
    #[arg(long, env = "KEYWARD_REQUEST_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Requests in flight on the gRPC port before new ones are shed (RESOURCE_EXHAUSTED).
    #[arg(long, env = "KEYWARD_MAX_IN_FLIGHT", default_value_t = 4096)]
    pub max_in_flight: usize,

    /// HTTP/2 streams per connection.
    #[arg(long, env = "KEYWARD_MAX_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,

    /// How often last-use times and learnt digests are persisted (each run
    /// writes at most 2,000 tokens whose last use moved by a minute or more).
    #[arg(long, env = "KEYWARD_USAGE_FLUSH_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub usage_flush_interval: Duration,

    /// The ext_authz routes file (TOML): which check each HTTP request
    /// needs. Reloaded on SIGHUP and when it changes.
    #[arg(long, env = "KEYWARD_ROUTES")]
    pub routes: Option<PathBuf>,

    /// Follower mode: the primary's gRPC address (`host:port` or URL). The
    /// follower opens no store; it answers Authorize and Check from what the
    /// primary streams, and refuses admin calls. Needs
    /// --replication-secret-file.
    #[arg(long, env = "KEYWARD_FOLLOW")]
    pub follow: Option<String>,

    /// Follower: how often the tokens used through this follower since its
    /// last report are reported to the primary (with this node's name), so
    /// that the primary's `last_used_at` sees use anywhere.
    #[arg(long, env = "KEYWARD_USE_REPORT_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub use_report_interval: Duration,

    /// Follower: how often its state (the primary's epoch and revision and
    /// every record of its index) is written to `<data-dir>/follower.state`
    /// when the revision moved, and at a clean stop, so that a restart
    /// resumes from it instead of taking a whole snapshot. 0 = no state
    /// file: neither written nor read.
    #[arg(long, env = "KEYWARD_FOLLOWER_STATE_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub follower_state_interval: Duration,

    /// This node's name, recorded as `last_used_by` with the uses it sees
    /// (a follower reports it to the primary): 1 to 64 of A-Z a-z 0-9 . _ -
    /// [default: the host name]
    #[arg(long, env = "KEYWARD_NODE_NAME")]
    pub node_name: Option<String>,

    /// File holding the replication secret (one line, at least 32
    /// characters). On a primary it enables Replication/Watch for followers
    /// that present it; a follower presents it.
    #[arg(long, env = "KEYWARD_REPLICATION_SECRET_FILE")]
    pub replication_secret_file: Option<PathBuf>,

    /// Follower (and PostgreSQL node): without a word from the primary
    /// (heartbeats included), or without reaching the database, for this
    /// long, stop answering (UNAVAILABLE; health NOT_SERVING).
    #[arg(long, env = "KEYWARD_STALE_AFTER", default_value = "30s", value_parser = humantime::parse_duration)]
    pub stale_after: Duration,

    /// Follower (and PostgreSQL node): when stale, `closed` (fail closed: UNAVAILABLE) or `serve`
    /// (keep answering from the last state received).
    #[arg(long, env = "KEYWARD_STALE_MODE", default_value = "closed")]
    pub stale_mode: StaleMode,

    /// Store: unset = embedded sled in --data-dir; `postgres://user:pass@host:port/db`
    /// = PostgreSQL, shared by any number of keyward nodes (the digest key
    /// must then be the same file on every node). Never logged.
    #[arg(long, env = "KEYWARD_STORE", hide_env_values = true)]
    pub store: Option<StoreUrl>,

    /// PostgreSQL: connections in each node's pool.
    #[arg(long, env = "KEYWARD_PG_POOL_SIZE", default_value_t = 8)]
    pub pg_pool_size: usize,

    /// PostgreSQL: change rows kept behind the newest revision; a node or
    /// follower further behind reloads a snapshot.
    #[arg(long, env = "KEYWARD_PG_RETAIN_CHANGES", default_value_t = 100_000)]
    pub pg_retain_changes: u64,

    /// PostgreSQL with `sslmode=require` in the URL: a PEM file of the
    /// CA(s) that sign the server's certificate, trusted beside the
    /// system's roots. The certificate must also name the host.
    #[arg(long, env = "KEYWARD_PG_CA_FILE")]
    pub pg_ca_file: Option<PathBuf>,

    /// PEM certificate chain (leaf first): with --tls-key, the gRPC and HTTP
    /// ports speak TLS only (1.2 and 1.3). Re-read when it changes (checked
    /// every 5 s and on SIGHUP); a follower also presents it to its primary.
    #[arg(long, env = "KEYWARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1). Never logged;
    /// a file readable by others gets a warning at start.
    #[arg(long, env = "KEYWARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s) client certificates must chain to: the gRPC
    /// port then refuses a client without one; the HTTP port answers only
    /// /healthz and /readyz without one. Needs --tls-cert.
    #[arg(long, env = "KEYWARD_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// Follower with `--follow https://...` (needed; exit 64 otherwise):
    /// PEM CA certificate(s) the primary's certificate must chain to
    /// (default: the system roots).
    #[arg(long, env = "KEYWARD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// GitHub secret-scanning reports: GitHub's public keys file (JSON
    /// `{"public_keys": [...]}`, PEM ECDSA P-256 keys). Enables POST
    /// /v1/secret-scanning/reports on the HTTP port, whose reports must be
    /// signed by one of them; re-read when it changes. Not on a follower.
    #[arg(long, env = "KEYWARD_LEAK_REPORT_KEYS")]
    pub leak_report_keys: Option<PathBuf>,
}

/// What a follower or a PostgreSQL node does once it is stale
/// (`--stale-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleMode {
    /// Fail closed: answer UNAVAILABLE, health NOT_SERVING.
    Closed,
    /// Keep answering from the last state received.
    Serve,
}

// By hand rather than derived: a derived `ValueEnum` would print each
// variant's doc comment as a help line of its own in `--help`.
impl clap::ValueEnum for StaleMode {
    fn value_variants<'a>() -> &'a [Self] {
        &[StaleMode::Closed, StaleMode::Serve]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            StaleMode::Closed => "closed",
            StaleMode::Serve => "serve",
        }))
    }
}

/// A store connection string: it may hold a password, so it prints as
/// REDACTED and no error repeats it.
#[derive(Clone)]
pub struct StoreUrl(pub String);

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreUrl(REDACTED)")
    }
}

impl std::str::FromStr for StoreUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(StoreUrl(s.to_string()))
    }
}

impl Config {
    /// Checks what clap cannot; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(store) = &self.store {
            let url = store.0.as_str();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(
                    "--store: only postgres:// (or postgresql://) URLs are supported; \
                            leave it unset for the embedded sled store"
                        .into(),
                );
            }
            crate::store::postgres::parse_url(url).map_err(|e| format!("--store: {e}"))?;
            if self.follow.is_some() {
                return Err(
                    "--store and --follow exclude each other: a follower has no store".into(),
                );
            }
            if self.pg_pool_size < 2 || self.pg_pool_size > 1000 {
                return Err("--pg-pool-size must be between 2 and 1000".into());
            }
            if self.pg_retain_changes == 0 {
                return Err("--pg-retain-changes must be at least 1".into());
            }
            if let Some(ca) = &self.pg_ca_file {
                if !ca.is_file() {
                    return Err(format!("--pg-ca-file {}: no such file", ca.display()));
                }
            }
        }
        if self.follow.is_some() && self.replication_secret_file.is_none() {
            return Err("--follow needs --replication-secret-file (the primary's secret)".into());
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err("--tls-cert needs --tls-key (the certificate's private key)".into())
            }
            (None, Some(_)) => {
                return Err("--tls-key needs --tls-cert (the key's certificate chain)".into())
            }
            _ => {}
        }
        if self.tls_ca.is_some()
            && !self
                .follow
                .as_deref()
                .is_some_and(crate::replication::follows_over_tls)
        {
            return Err(
                "--tls-ca is the CA a follower verifies its primary with: it needs \
                 --follow https://host:port (a plaintext --follow would send the \
                 replication secret in clear)"
                    .into(),
            );
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err(
                "--tls-client-ca needs --tls-cert and --tls-key: client certificates \
                 are verified only on a TLS port"
                    .into(),
            );
        }
        if self.follow.is_some() && self.leak_report_keys.is_some() {
            return Err(
                "--leak-report-keys is for the primary (or a PostgreSQL node): a follower \
                 cannot pause the tokens reported; point GitHub at the primary"
                    .into(),
            );
        }
        if self.stale_after.is_zero() {
            return Err("--stale-after must be positive".into());
        }
        if self.max_in_flight == 0 || self.max_concurrent_streams == 0 {
            return Err("--max-in-flight and --max-streams must be at least 1".into());
        }
        if self.request_timeout.is_zero() || self.usage_flush_interval.is_zero() {
            return Err("--request-timeout and --usage-flush-interval must be positive".into());
        }
        if self.use_report_interval.is_zero() {
            return Err("--use-report-interval must be positive".into());
        }
        self.node_name()?;
        Ok(())
    }

    /// The node name in effect: `--node-name`, or the host name; Err says
    /// what is wrong with it.
    pub fn node_name(&self) -> Result<String, String> {
        let (name, from) = match &self.node_name {
            Some(n) => (n.clone(), "--node-name"),
            None => (
                host_name().ok_or(
                    "--node-name: the host name could not be read; give a node name \
                     (1 to 64 of A-Z a-z 0-9 . _ -)",
                )?,
                "the host name (the default of --node-name)",
            ),
        };
        if !crate::index::nodes::is_valid(&name) {
            return Err(format!(
                "{from} `{}` will not do as a node name: 1 to 64 of A-Z a-z 0-9 . _ - \
                 (set --node-name)",
                name.escape_debug()
            ));
        }
        Ok(name)
    }

    /// The TLS files of both ports, when --tls-cert and --tls-key are given
    /// (after [`Config::validate`], both or neither are).
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    /// The digest key file in effect.
    pub fn digest_key_path(&self) -> PathBuf {
        self.digest_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("digest.key"))
    }
}

/// This machine's host name, if it can be read and is UTF-8.
#[allow(unsafe_code)]
fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for writes of its length; gethostname
    // writes at most that many bytes.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..len].to_vec()).ok()
}

/// Reads a replication secret file: its first line, trimmed; at least 32
/// characters of visible ASCII.
pub fn read_secret(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--replication-secret-file {}: {e}", path.display()))?;
    let secret = text.lines().next().unwrap_or_default().trim().to_string();
    if secret.len() < 32 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "--replication-secret-file {}: the secret must be at least 32 visible ASCII characters",
            path.display()
        ));
    }
    Ok(secret)
}
