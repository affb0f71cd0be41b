//! What a client subcommand can fail with, its exit code (one per class of
//! gRPC status, the table in the README), and how it is said on stderr: the
//! status in words, and for a bad request each field the server named
//! (`google.rpc.BadRequest` details), one per line.

use std::process::ExitCode;

use tonic::Code;
use tonic_types::StatusExt;

/// Exit code: success.
pub const OK: u8 = 0;
/// Exit code: any other failure (INTERNAL, UNKNOWN, a local I/O error).
pub const OTHER: u8 = 1;
/// Exit code: the command line is wrong (clap's own code too).
pub const USAGE: u8 = 2;
/// Exit code: INVALID_ARGUMENT (and OUT_OF_RANGE).
pub const INVALID_ARGUMENT: u8 = 3;
/// Exit code: UNAUTHENTICATED.
pub const UNAUTHENTICATED: u8 = 4;
/// Exit code: PERMISSION_DENIED, and `authorize` answered "denied".
pub const PERMISSION_DENIED: u8 = 5;
/// Exit code: NOT_FOUND.
pub const NOT_FOUND: u8 = 6;
/// Exit code: FAILED_PRECONDITION, ALREADY_EXISTS, ABORTED.
pub const REFUSED: u8 = 7;
/// Exit code: UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
/// CANCELLED (the connection broke), or the server cannot be reached:
/// worth retrying.
pub const UNAVAILABLE: u8 = 8;

/// Why a client subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The invocation is wrong or incomplete (no credential, a flag that
    /// needs another); exit 2.
    #[error("{0}")]
    Usage(String),
    /// The server answered with an error.
    #[error("{}", status_line(.0))]
    Status(tonic::Status),
    /// The server could not be reached (connect, TLS handshake); exit 8.
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// Anything else (a file that cannot be read, stdout closed); exit 1.
    #[error("{0}")]
    Other(String),
}

impl From<tonic::Status> for CliError {
    /// A status the server sent; or, for one made on this side from a
    /// broken connection (UNKNOWN "transport error" with a cause, or
    /// CANCELLED: this client never cancels; e.g. a TLS 1.3 server refusing
    /// the client certificate after the handshake), the server could not
    /// be reached, with its causes.
    fn from(status: tonic::Status) -> Self {
        if status.code() == Code::Cancelled || std::error::Error::source(&status).is_some() {
            let said = causes(
                status.message().to_string(),
                std::error::Error::source(&status),
            );
            return CliError::Unreachable(said);
        }
        CliError::Status(status)
    }
}

/// An error with its causes, each said once (tonic's "transport error"
/// alone does not say a certificate was refused).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    causes(e.to_string(), e.source())
}

/// `text`, then each cause not said yet.
fn causes(mut text: String, mut source: Option<&dyn std::error::Error>) -> String {
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// The exit code of a gRPC status code.
pub fn code_of(code: Code) -> u8 {
    match code {
        Code::Ok => OK,
        Code::InvalidArgument | Code::OutOfRange => INVALID_ARGUMENT,
        Code::Unauthenticated => UNAUTHENTICATED,
        Code::PermissionDenied => PERMISSION_DENIED,
        Code::NotFound => NOT_FOUND,
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => REFUSED,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Cancelled => {
            UNAVAILABLE
        }
        Code::Unknown | Code::Unimplemented | Code::Internal | Code::DataLoss => OTHER,
    }
}

impl CliError {
    /// This error's exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => USAGE,
            CliError::Status(s) => code_of(s.code()),
            CliError::Unreachable(_) => UNAVAILABLE,
            CliError::Other(_) => OTHER,
        }
    }

    /// The lines said on stderr (without the `keyward: ` prefix): for a bad
    /// request, one per field the server named.
    pub fn lines(&self) -> Vec<String> {
        if let CliError::Status(status) = self {
            let words = code_words(status.code());
            if let Some(bad) = status.get_details_bad_request() {
                if !bad.field_violations.is_empty() {
                    return bad
                        .field_violations
                        .iter()
                        .map(|v| format!("{words}: {}: {}", v.field, v.description))
                        .collect();
                }
            }
        }
        vec![self.to_string()]
    }
}

/// A status in one line: its code in words, then the server's message.
fn status_line(status: &tonic::Status) -> String {
    format!("{}: {}", code_words(status.code()), status.message())
}

/// A status code in words ("permission denied").
pub fn code_words(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// Says `err` on stderr and returns its exit code.
pub fn report(err: &CliError) -> ExitCode {
    for line in err.lines() {
        eprintln!("keyward: {line}");
    }
    ExitCode::from(err.exit_code())
}
