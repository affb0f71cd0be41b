//! How connections to PostgreSQL are secured (`sslmode=require`: the
//! server's certificate verified, as libpq's verify-full). May import what
//! `store` may.

use std::sync::Arc;

use super::db;
use crate::store::StoreError;

/// How connections are secured.
#[derive(Clone)]
pub enum Tls {
    /// Plaintext (`sslmode` disable or prefer, the default).
    Off,
    /// TLS, the server's certificate verified (`sslmode=require`).
    On(tokio_postgres_rustls::MakeRustlsConnect),
}

/// TLS for `sslmode=require`: the server's certificate must chain to the
/// system's roots or to `ca_file`, and name the host connected to (as
/// libpq's verify-full; keyward does not connect to a server it cannot
/// authenticate). Any other mode is plaintext.
pub fn tls_for(
    config: &tokio_postgres::Config,
    ca_file: Option<&std::path::Path>,
) -> Result<Tls, StoreError> {
    use rustls_pki_types::pem::PemObject;
    if config.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
        return Ok(Tls::Off);
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system root rustls cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| db(&format!("--pg-ca-file {}", path.display()), e))?;
        let mut n = 0;
        for cert in certs {
            let cert = cert.map_err(|e| db(&format!("--pg-ca-file {}", path.display()), e))?;
            roots
                .add(cert)
                .map_err(|e| db(&format!("--pg-ca-file {}", path.display()), e))?;
            n += 1;
        }
        if n == 0 {
            return Err(db(
                &format!("--pg-ca-file {}", path.display()),
                "no PEM certificate in it",
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| db("tls", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Tls::On(tokio_postgres_rustls::MakeRustlsConnect::new(tls)))
}
