//! The CLI's connection: the channel to `--server` (plaintext, or TLS
//! verified against `--ca` or the system roots, with `--cert`/`--key` as
//! client certificate), and the caller's token, from `--token-file` or
//! `KEYWARD_TOKEN` (never from a flag: it would show in `ps`), sent as
//! `authorization: Bearer` metadata marked sensitive.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::exit::{with_causes, CliError};
use super::ClientArgs;
use crate::model::limits;

/// A token string read from a file, the environment or stdin; its Debug
/// is redacted.
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(REDACTED)")
    }
}

impl Token {
    /// The token string, to put in a request.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The first line of `text`, trimmed; `from` names where it came from.
    fn from_text(text: &str, from: &str, max: usize) -> Result<Token, CliError> {
        let token = text.lines().next().unwrap_or_default().trim();
        if token.is_empty() {
            return Err(CliError::Usage(format!("{from} holds no token")));
        }
        if token.len() > max {
            return Err(CliError::Usage(format!(
                "{from}: longer than a token ({max} bytes at most)"
            )));
        }
        Ok(Token(token.to_string()))
    }

    /// The token on stdin (its first line, at most `max` bytes).
    pub fn from_stdin(max: usize) -> Result<Token, CliError> {
        let mut text = String::new();
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| CliError::Other(format!("stdin: {e}")))?;
        Token::from_text(&text, "stdin", max)
    }

    /// The caller's token: `--token-file`, else `KEYWARD_TOKEN`.
    pub fn credential(args: &ClientArgs) -> Result<Token, CliError> {
        if let Some(path) = &args.token_file {
            let text = read_file("--token-file", path)?;
            return Token::from_text(
                &text,
                &format!("--token-file {}", path.display()),
                limits::TOKEN_MAX,
            );
        }
        match std::env::var("KEYWARD_TOKEN") {
            Ok(text) => Token::from_text(&text, "KEYWARD_TOKEN", limits::TOKEN_MAX),
            Err(_) => Err(CliError::Usage(
                "no credential: set KEYWARD_TOKEN or give --token-file FILE \
                 (a token is never taken from a flag: it would show in `ps`)"
                    .into(),
            )),
        }
    }
}

fn read_file(flag: &str, path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("{flag} {}: {e}", path.display())))
}

/// A connected channel to `--server`.
pub async fn channel(args: &ClientArgs) -> Result<Channel, CliError> {
    let url = args.server.trim_end_matches('/');
    let tls = url.starts_with("https://");
    if !tls && !url.starts_with("http://") {
        return Err(CliError::Usage(format!(
            "--server {url}: expected http://host:port or https://host:port"
        )));
    }
    if !tls && (args.ca.is_some() || args.cert.is_some() || args.key.is_some()) {
        return Err(CliError::Usage(
            "--ca, --cert and --key are for an https:// --server".into(),
        ));
    }
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| CliError::Usage(format!("--server {url}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    if tls {
        let mut config = match &args.ca {
            Some(path) => {
                let (pem, _) = crate::tls::read_ca("--ca", path)
                    .map_err(|e| CliError::Usage(e.to_string()))?;
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
            }
            None => ClientTlsConfig::new().with_native_roots(),
        };
        match (&args.cert, &args.key) {
            (Some(cert), Some(key)) => {
                config = config.identity(Identity::from_pem(
                    read_file("--cert", cert)?,
                    read_file("--key", key)?,
                ));
            }
            (None, None) => {}
            _ => return Err(CliError::Usage("--cert and --key go together".into())),
        }
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| CliError::Usage(format!("--server {url}: {}", with_causes(&e))))?;
    }
    endpoint
        .connect()
        .await
        .map_err(|e| CliError::Unreachable(format!("{url}: {}", with_causes(&e))))
}

/// A request carrying the caller's token.
pub fn with_token<T>(message: T, token: &Token) -> Result<tonic::Request<T>, CliError> {
    let mut request = tonic::Request::new(message);
    let mut value = MetadataValue::try_from(format!("Bearer {}", token.expose()))
        .map_err(|_| CliError::Usage("the credential holds characters no token has".into()))?;
    value.set_sensitive(true);
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}
