//! Domain errors, and the one place that maps them to the wire (`tonic::Status`).
//!
//! Messages never contain a token secret or a hash: callers build them from
//! ids, names and field paths only.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Why a request failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// No credential, or one that is malformed, unknown, expired or paused.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The thing named does not exist (or the caller may not see it).
    #[error("{0}")]
    NotFound(String),
    /// The request is invalid; one entry per bad field: (field path, why).
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<(String, String)>),
    /// The request is valid but a business rule refuses it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The thing to create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// keyward cannot answer now (loading, overloaded, shutting down).
    #[error("{0}")]
    Unavailable(String),
    /// keyward's own failure (the store); details are logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
}

fn describe(fields: &[(String, String)]) -> String {
    fields
        .iter()
        .map(|(f, d)| format!("{f}: {d}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// The gRPC code name of this error, e.g. `PERMISSION_DENIED`.
    pub fn code_name(&self) -> &'static str {
        match self {
            Error::Unauthenticated(_) => "UNAUTHENTICATED",
            Error::PermissionDenied(_) => "PERMISSION_DENIED",
            Error::NotFound(_) => "NOT_FOUND",
            Error::InvalidArgument(_) => "INVALID_ARGUMENT",
            Error::FailedPrecondition(_) => "FAILED_PRECONDITION",
            Error::AlreadyExists(_) => "ALREADY_EXISTS",
            Error::Unavailable(_) => "UNAVAILABLE",
            Error::Internal(_) => "INTERNAL",
        }
    }

    /// One invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![(field.into(), description.into())])
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        match err {
            Error::InvalidArgument(ref fields) => {
                let mut details = ErrorDetails::new();
                for (field, description) in fields {
                    details.add_bad_request_violation(field.clone(), description.clone());
                }
                Status::with_error_details(Code::InvalidArgument, err.to_string(), details)
            }
            Error::Unauthenticated(m) => Status::unauthenticated(m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::NotFound(m) => Status::not_found(m),
            Error::FailedPrecondition(m) => {
                let mut details = ErrorDetails::new();
                details.add_precondition_failure_violation("RULE", "token", m.clone());
                Status::with_error_details(Code::FailedPrecondition, m, details)
            }
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::Unavailable(m) => Status::unavailable(m),
            Error::Internal(m) => {
                // Rate-limited: one failing store fails every request.
                if crate::logs::ERRORS.admit() {
                    tracing::error!(
                        error = &*crate::logs::clip_to(&m, crate::logs::MESSAGE_MAX),
                        "internal error"
                    );
                }
                Status::internal("internal error; see the server log")
            }
        }
    }
}

/// Result with the domain error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
