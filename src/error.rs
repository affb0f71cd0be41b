//! Domain errors, and the one place that maps them to the wire: the gRPC
//! `Status` (`From<Error>`), the HTTP status
//! ([`Error::http_status`]), and the deny table ([`DENIALS`]): for each
//! [`DenyReason`], its metric label, its message and 401 or 403, as the
//! REST facades, ext_authz and the metrics answer it.
//!
//! Messages never contain a token secret or a hash: callers build them from
//! ids, names and field paths only.
//!
//! Vocabulary (L0): imports only `pb` and `logs`.

use tonic::codegen::http::StatusCode;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::pb::v1::DenyReason;

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

    /// The HTTP status of this error (the REST facades'): 422 for a bad
    /// field or a refused rule, 401, 403, 404, 503, 500.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Error::InvalidArgument(_) | Error::FailedPrecondition(_) | Error::AlreadyExists(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::PermissionDenied(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What a 401 answers in `www-authenticate` (REST facades and ext_authz).
pub const WWW_AUTHENTICATE: &str = "Bearer realm=\"keyward\"";

/// Logs an internal error's detail (rate-limited: one failing store fails
/// every request) and returns what the client is told instead.
pub fn log_internal(detail: &str) -> &'static str {
    if crate::logs::ERRORS.admit() {
        tracing::error!(
            error = &*crate::logs::clip_to(detail, crate::logs::MESSAGE_MAX),
            "internal error"
        );
    }
    "internal error; see the server log"
}

/// How every surface names and answers one deny reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    /// The reason.
    pub reason: DenyReason,
    /// Its label: `keyward_decisions_total{result="deny", reason}` and the
    /// `reason` field of denial log lines.
    pub label: &'static str,
    /// What ext_authz's 401/403 says (JSON body and gRPC status message).
    pub message: &'static str,
    /// 401 (the credential will not do: malformed, unknown, expired,
    /// paused) rather than 403 (a good token that may not do this).
    pub unauthenticated: bool,
}

/// Every deny reason in wire order (a reason's number is its index, but
/// for the reserved number 9: RATE_LIMITED, 10, is at 9; see
/// [`Denial::slot`]). The unspecified reason is on allowed decisions; it is
/// never counted, and a denial carrying it (none does) would be a 403
/// "denied".
pub const DENIALS: [Denial; 10] = [
    denial(DenyReason::Unspecified, "none", "denied", false),
    denial(DenyReason::Malformed, "malformed", "invalid token", true),
    denial(
        DenyReason::UnknownToken,
        "unknown_token",
        "invalid token",
        true,
    ),
    denial(DenyReason::Expired, "expired", "token has expired", true),
    denial(DenyReason::Paused, "paused", "token is paused", true),
    denial(
        DenyReason::NoGrant,
        "no_grant",
        "this token has no access to this resource",
        false,
    ),
    denial(
        DenyReason::WrongAccount,
        "wrong_account",
        "this resource belongs to another account",
        false,
    ),
    denial(
        DenyReason::Scope,
        "scope",
        "this token's scopes do not allow this",
        false,
    ),
    denial(
        DenyReason::UnknownResource,
        "unknown_resource",
        "no such resource",
        false,
    ),
    denial(
        DenyReason::RateLimited,
        "rate_limited",
        "this token's rate limit is spent",
        false,
    ),
];

const fn denial(
    reason: DenyReason,
    label: &'static str,
    message: &'static str,
    unauthenticated: bool,
) -> Denial {
    Denial {
        reason,
        label,
        message,
        unauthenticated,
    }
}

impl Denial {
    /// The index of `reason` in [`DENIALS`]: its wire number, less one
    /// above the reserved number 9.
    pub const fn slot(reason: DenyReason) -> usize {
        let n = reason as usize;
        if n > 9 {
            n - 1
        } else {
            n
        }
    }

    /// The row of `reason`.
    pub fn of(reason: DenyReason) -> &'static Denial {
        DENIALS.get(Self::slot(reason)).unwrap_or(&DENIALS[0])
    }

    /// 401 or 403.
    pub fn http_status(&self) -> StatusCode {
        self.error().http_status()
    }

    /// The denial as a domain error: `Unauthenticated` or
    /// `PermissionDenied`, with the table's message.
    pub fn error(&self) -> Error {
        if self.unauthenticated {
            Error::Unauthenticated(self.message.into())
        } else {
            Error::PermissionDenied(self.message.into())
        }
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
            Error::Internal(m) => Status::internal(log_internal(&m)),
        }
    }
}

/// Result with the domain error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The deny table is complete and in wire order: `Denial::of` indexes
    /// it by the reason's number.
    #[test]
    fn denials_are_in_wire_order_and_complete() {
        for (i, d) in DENIALS.iter().enumerate() {
            assert_eq!(Denial::slot(d.reason), i, "{d:?}");
            assert_eq!(Denial::of(d.reason), d);
            let number = if i >= 9 { i + 1 } else { i };
            assert_eq!(
                DenyReason::try_from(i32::try_from(number).expect("few reasons")),
                Ok(d.reason)
            );
        }
        assert!(DenyReason::try_from(9).is_err(), "9 is reserved");
        assert!(
            DenyReason::try_from(i32::try_from(DENIALS.len() + 1).expect("few reasons")).is_err()
        );
    }

    /// 401 for a credential that will not do, 403 for a token that may
    /// not; the gRPC code agrees.
    #[test]
    fn a_denial_is_a_401_or_a_403() {
        assert_eq!(
            Denial::of(DenyReason::Paused).http_status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            Denial::of(DenyReason::Scope).http_status(),
            StatusCode::FORBIDDEN
        );
        let status = Status::from(Denial::of(DenyReason::Expired).error());
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "token has expired");
    }
}
