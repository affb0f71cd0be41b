//! TLS on keyward's ports: the certificate, key and client-CA files, loaded,
//! checked and reloaded without a restart.

use std::path::PathBuf;

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
