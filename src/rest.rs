//! The HTTP/JSON facades: Mailtrap's token API (`/api/api_tokens...`) and
//! MailerSend's (`/v1/token...`), served on the HTTP port over the same
//! engine, rules, store and audit log as the gRPC services, so clients
//! written against those APIs work against keyward unchanged.
//!
//! Bodies are read with a size limit and a deadline, parsed as JSON values
//! and checked field by field: every bad input gets a 4xx JSON answer that
//! names the field, and no error message repeats a value the client sent.

mod limits;
pub mod mailersend;
pub mod mailtrap;
pub mod time;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::credential::pick_credential;
use crate::engine::Engine;
use crate::error::Error;
use crate::pb::v1 as pb;

/// Largest request body, in bytes.
pub const BODY_MAX: usize = 64 * 1024;
/// Time a client has to send its whole body, from the end of its headers
/// (the HTTP port starts the clock, [`crate::http`]); past it the answer is
/// 408 and the connection is closed. A JSON body of at most [`BODY_MAX`]
/// takes milliseconds; a client slower than this holds a REST place for
/// nothing.
pub const BODY_DEADLINE: Duration = Duration::from_secs(2);

/// The body did not end within [`BODY_DEADLINE`] of the headers.
#[derive(Debug, thiserror::Error)]
#[error("the body was not sent within {BODY_DEADLINE:?}")]
pub struct BodyTimedOut;

/// The facades' routes and `/openapi.json`.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .merge(mailtrap::router())
        .merge(mailersend::router())
        .route("/openapi.json", get(openapi))
        .with_state(engine)
}

/// The OpenAPI documents of both facades (kept in the repo under
/// `openapi/`), merged into one.
pub fn openapi_document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
        let mut doc = parse(include_str!("../openapi/mailtrap-api-tokens.json"));
        let other = parse(include_str!("../openapi/mailersend-tokens.json"));
        doc["info"] = json!({
            "title": "keyward REST facades",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Mailtrap-compatible (/api/...) and MailerSend-compatible (/v1/token...) \
                API-token APIs, served by keyward. The same tokens, rules and audit log as its gRPC API.",
        });
        merge_into(&mut doc["paths"], &other["paths"]);
        for section in ["schemas", "responses", "securitySchemes", "parameters"] {
            merge_into(&mut doc["components"][section], &other["components"][section]);
        }
        if let Some(tags) = doc["tags"].as_array_mut() {
            tags.extend(other["tags"].as_array().cloned().unwrap_or_default());
        }
        doc
    })
}

/// Adds the keys of `from` to the object `into`. The two documents name
/// their components apart (MailerSend's start with `MailerSend`); a name in
/// both must mean the same thing, which the tests check.
fn merge_into(into: &mut Value, from: &Value) {
    if let (Some(into), Some(from)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in from {
            into.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

async fn openapi() -> Json<&'static Value> {
    Json(openapi_document())
}

/// Which API's error shapes to answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `{"error": ..}` (401, 404), `{"errors": ".."}` (403),
    /// `{"errors": {"field": [..]}}` (422).
    Mailtrap,
    /// `{"message": ..}`, with `errors` per field on 422.
    MailerSend,
}

/// Why an HTTP request failed.
#[derive(Debug)]
pub enum Problem {
    /// A rule of the engine, or a bad field.
    Domain(Error),
    /// The body is not JSON.
    BadRequest(String),
    /// The body is over [`BODY_MAX`].
    TooLarge,
    /// The body did not arrive within [`BODY_DEADLINE`].
    BodyTimedOut,
    /// The body is not sent as JSON.
    UnsupportedMedia,
    /// The path names nothing (a malformed id).
    NotFound(String),
}

impl From<Error> for Problem {
    fn from(e: Error) -> Self {
        Problem::Domain(e)
    }
}

/// One field error.
pub fn invalid(field: &str, why: &str) -> Problem {
    Problem::Domain(Error::invalid(field, why))
}

fn body(status: StatusCode, value: Value) -> Response {
    (status, Json(value)).into_response()
}

impl Problem {
    /// The answer, in the dialect's shapes. `field` renames a gRPC field
    /// path (`grants[0].level`) to the facade's (`resources[0].access_level`).
    pub fn render(self, dialect: Dialect, field: fn(&str) -> String) -> Response {
        let (status, message) = match self {
            Problem::Domain(e) => return domain(e, dialect, field),
            Problem::NotFound(m) => (StatusCode::NOT_FOUND, m),
            Problem::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            Problem::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {BODY_MAX} bytes"),
            ),
            Problem::BodyTimedOut => (StatusCode::REQUEST_TIMEOUT, BodyTimedOut.to_string()),
            Problem::UnsupportedMedia => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON, with content-type: application/json".to_string(),
            ),
        };
        one(dialect, status, &message)
    }
}

/// A domain error in the dialect's shapes, with its status from the error
/// table ([`Error::http_status`]).
fn domain(e: Error, dialect: Dialect, field: fn(&str) -> String) -> Response {
    let status = e.http_status();
    match e {
        Error::InvalidArgument(fields) => {
            let mut errors = Map::new();
            for (f, why) in fields {
                let entry = errors.entry(field(&f)).or_insert_with(|| json!([]));
                if let Some(list) = entry.as_array_mut() {
                    list.push(Value::String(why));
                }
            }
            body(
                status,
                match dialect {
                    Dialect::Mailtrap => json!({ "errors": errors }),
                    Dialect::MailerSend => {
                        json!({ "message": "The given data was invalid.", "errors": errors })
                    }
                },
            )
        }
        Error::FailedPrecondition(m) | Error::AlreadyExists(m) => body(
            status,
            match dialect {
                Dialect::Mailtrap => json!({ "errors": { "base": [m] } }),
                Dialect::MailerSend => json!({ "message": m, "errors": { "base": [m] } }),
            },
        ),
        Error::PermissionDenied(m) => body(
            status,
            match dialect {
                Dialect::Mailtrap => json!({ "errors": m }),
                Dialect::MailerSend => json!({ "message": m }),
            },
        ),
        Error::Unauthenticated(m) => {
            let mut r = one(dialect, status, &m);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(crate::error::WWW_AUTHENTICATE),
            );
            r
        }
        Error::NotFound(m) | Error::Unavailable(m) => one(dialect, status, &m),
        Error::Internal(m) => one(dialect, status, crate::error::log_internal(&m)),
    }
}

/// A one-message error: `{"error": m}` or `{"message": m}`.
fn one(dialect: Dialect, status: StatusCode, m: &str) -> Response {
    match dialect {
        Dialect::Mailtrap => body(status, json!({ "error": m })),
        Dialect::MailerSend => body(status, json!({ "message": m })),
    }
}

/// Authenticates the caller from `Authorization: Bearer` or `Api-Token`.
pub async fn caller(engine: &Engine, headers: &HeaderMap) -> Result<u64, Problem> {
    let value = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let credential = pick_credential(value("authorization"), value("api-token"));
    Ok(engine.authenticate_caller(credential).await?)
}

/// The account a facade call without an account in its path acts in: the
/// caller's own. The root token belongs to no account.
pub fn home_account(engine: &Engine, caller: u64, hint: &str) -> Result<u64, Problem> {
    engine.home_account(caller)?.ok_or_else(|| {
        Problem::Domain(Error::PermissionDenied(format!(
            "the root token belongs to no account; {hint}"
        )))
    })
}

/// Every token of the account the caller may manage, by id.
pub fn visible_tokens(
    engine: &Engine,
    caller: u64,
    account_id: u64,
) -> Result<Vec<pb::Token>, Problem> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = engine.list_tokens(
            caller,
            &pb::ListTokensRequest {
                account_id,
                page_size: crate::model::limits::PAGE_MAX,
                page_token,
                expiring_before: None,
            },
        )?;
        out.extend(page.tokens);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = page.next_page_token;
    }
}

/// Deletes a token (rules and audit as over gRPC); both APIs answer 204
/// with no body.
pub async fn delete_token(
    engine: &Engine,
    caller: u64,
    account_id: u64,
    token_id: u64,
) -> Result<Response, Problem> {
    let req = pb::DeleteTokenRequest {
        account_id,
        token_id,
    };
    engine.delete_token(caller, &req).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A positive decimal id from a path segment; `what` names it in the 404.
pub fn path_id(segment: &str, what: &str) -> Result<u64, Problem> {
    segment
        .parse::<u64>()
        .ok()
        .filter(|&id| id > 0 && segment.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| Problem::NotFound(format!("{what} not found")))
}

/// Reads a JSON object body: content type, size and deadline checked.
/// `None` when the body is empty and `required` is false.
pub async fn read_object(
    headers: &HeaderMap,
    body: Body,
    required: bool,
) -> Result<Option<Map<String, Value>>, Problem> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_MAX as u64) {
        return Err(Problem::TooLarge);
    }
    // The HTTP port's deadline counts from the headers; this one, from
    // now, is a backstop for a body that did not come through it.
    let bytes =
        match tokio::time::timeout(BODY_DEADLINE, axum::body::to_bytes(body, BODY_MAX)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) if timed_out(&e) => return Err(Problem::BodyTimedOut),
            Ok(Err(_)) => return Err(Problem::TooLarge),
            Err(_) => return Err(Problem::BodyTimedOut),
        };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if required {
            return Err(Problem::BadRequest("a JSON object body is required".into()));
        }
        return Ok(None);
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|v| {
            v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
        });
    if !is_json {
        return Err(Problem::UnsupportedMedia);
    }
    // serde_json's syntax errors name a position, never the input.
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(invalid("base", "the body must be a JSON object")),
        Err(e) => Err(Problem::BadRequest(format!(
            "the body is not valid JSON: {e}"
        ))),
    }
}

/// Whether reading a body failed on [`BodyTimedOut`] (found down the
/// error's sources: the body layers each wrap it).
fn timed_out(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<BodyTimedOut>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Refuses fields not in `known`. A name is echoed only if it looks like a
/// field name (so a secret pasted as a key is not sent back).
pub fn deny_unknown(map: &Map<String, Value>, known: &[&str]) -> Result<(), Problem> {
    let mut fields = Vec::new();
    for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
        let plain = key.len() <= 40 && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        let name = if plain { key.as_str() } else { "base" };
        fields.push((
            name.to_string(),
            format!("unknown field; known: {}", known.join(", ")),
        ));
    }
    if fields.is_empty() {
        Ok(())
    } else {
        Err(Problem::Domain(Error::InvalidArgument(fields)))
    }
}

/// An optional string field.
pub fn opt_str<'a>(map: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, Problem> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

/// A required string field.
pub fn req_str<'a>(map: &'a Map<String, Value>, field: &str) -> Result<&'a str, Problem> {
    opt_str(map, field)?.ok_or_else(|| invalid(field, "is required"))
}

/// An optional `expires_at`: RFC 3339 date-time (or a date), or null.
pub fn opt_expiry(
    map: &Map<String, Value>,
    field: &str,
) -> Result<Option<prost_types::Timestamp>, Problem> {
    match opt_str(map, field)? {
        None => Ok(None),
        Some(s) => time::parse(s).map(Some).ok_or_else(|| {
            invalid(
                field,
                "must be an RFC 3339 date-time, e.g. 2027-01-31T12:00:00Z",
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_documents_merge_without_conflicts() {
        let a: Value = serde_json::from_str(include_str!("../openapi/mailtrap-api-tokens.json"))
            .expect("mailtrap document parses");
        let b: Value = serde_json::from_str(include_str!("../openapi/mailersend-tokens.json"))
            .expect("mailersend document parses");
        let mut sections = vec![("paths", &a["paths"], &b["paths"])];
        for s in ["schemas", "responses", "securitySchemes", "parameters"] {
            sections.push((s, &a["components"][s], &b["components"][s]));
        }
        for (section, x, y) in sections {
            for (k, v) in y.as_object().into_iter().flatten() {
                if let Some(w) = x.get(k) {
                    assert_eq!(v, w, "{section}.{k} means two things");
                }
            }
        }
        let doc = openapi_document();
        assert_eq!(doc["paths"].as_object().map(|p| p.len()), Some(9));
        assert!(doc["components"]["schemas"]["MailerSendToken"].is_object());
        assert!(doc["components"]["schemas"]["ApiToken"].is_object());
    }
}
