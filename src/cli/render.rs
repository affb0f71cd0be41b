//! How answers are printed: an aligned table (or `field  value` lines for
//! one thing) for people, or one JSON document for scripts (`--json`), with
//! stable snake_case names. Resource types and levels are written as the
//! command line takes them (`domain`, `admin`); times in RFC 3339 (UTC),
//! absent ones as `null` (JSON) or `never`/`-` (tables); durations as
//! protobuf's JSON does (`"2592000s"`). A secret is never in a table: it
//! goes on a line of its own, the last one.

use std::io::Write;

use serde_json::{json, Value};

use super::exit::CliError;
use crate::model::{Kind, Level};
use crate::pb::v1 as pb;

/// Writes `text` and a newline to stdout.
pub fn emit(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| CliError::Other(format!("stdout: {e}")))
}

/// Writes `bytes` as they are to stdout.
pub fn emit_bytes(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::Other(format!("stdout: {e}")))
}

/// Writes one JSON document to stdout.
pub fn emit_json(value: &Value) -> Result<(), CliError> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| CliError::Other(format!("JSON: {e}")))?;
    emit(&text)
}

/// A type's name as the CLI writes it (`domain`), or its number.
pub fn kind_name(n: i32) -> String {
    Kind::from_wire(n).map_or_else(|| n.to_string(), |k| k.as_str().to_string())
}

/// A level's name as the CLI writes it (`admin`), or its number.
pub fn level_name(n: i32) -> String {
    match Level::from_wire(n) {
        Some(Level::Admin) => "admin".into(),
        Some(Level::Viewer) => "viewer".into(),
        None => n.to_string(),
    }
}

/// A time in RFC 3339, seconds precision (UTC).
fn time(t: Option<&prost_types::Timestamp>) -> Option<String> {
    let t = t?;
    let st = std::time::SystemTime::try_from(*t).ok()?;
    Some(humantime::format_rfc3339_seconds(st).to_string())
}

/// `TYPE:ID`
pub fn resource_text(r: Option<&pb::ResourceRef>) -> String {
    r.map_or_else(String::new, |r| format!("{}:{}", kind_name(r.r#type), r.id))
}

/// `{"type", "id"}`, or null.
pub fn resource_json(r: Option<&pb::ResourceRef>) -> Value {
    r.map_or(
        Value::Null,
        |r| json!({"type": kind_name(r.r#type), "id": r.id}),
    )
}

fn id_or_null(id: u64) -> Value {
    if id == 0 {
        Value::Null
    } else {
        json!(id)
    }
}

/// A token as JSON (never a secret: `pb::Token` has none).
pub fn token_json(t: &pb::Token) -> Value {
    json!({
        "id": t.id,
        "account_id": t.account_id,
        "name": t.name,
        "last_4_digits": t.last_4_digits,
        "created_by": t.created_by,
        "created_at": time(t.created_at.as_ref()),
        "expires_at": time(t.expires_at.as_ref()),
        "paused": t.paused,
        "grants": t.grants.iter().map(|g| json!({
            "type": g.resource.as_ref().map(|r| kind_name(r.r#type)),
            "id": g.resource.as_ref().map(|r| r.id.clone()),
            "level": level_name(g.level),
        })).collect::<Vec<_>>(),
        "scopes": t.scopes.iter().map(|s| json!({"name": s.name, "level": level_name(s.level)})).collect::<Vec<_>>(),
        "replaced_by": id_or_null(t.replaced_by),
        "replaces": id_or_null(t.replaces),
        "last_used_at": time(t.last_used_at.as_ref()),
        "last_used_by": (!t.last_used_by.is_empty()).then_some(&t.last_used_by),
        "root": t.root,
        "rate_limits": t.rate_limits.iter().map(|r| json!({
            "name": r.name,
            "limit": r.limit,
            "period_seconds": r.period.as_ref().map_or(0, |p| p.seconds),
        })).collect::<Vec<_>>(),
    })
}

fn grants_text(t: &pb::Token) -> String {
    t.grants
        .iter()
        .map(|g| {
            format!(
                "{}={}",
                resource_text(g.resource.as_ref()),
                level_name(g.level)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn scopes_text(t: &pb::Token) -> String {
    if t.scopes.is_empty() {
        return "all".into();
    }
    t.scopes
        .iter()
        .map(|s| format!("{}={}", s.name, level_name(s.level)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn status_text(t: &pb::Token) -> String {
    if t.paused {
        "paused".into()
    } else if t.replaced_by != 0 {
        format!("replaced by {}", t.replaced_by)
    } else {
        "active".into()
    }
}

/// One token, as `field  value` lines.
pub fn token_fields(t: &pb::Token) -> String {
    let opt = |id: u64| {
        if id == 0 {
            "-".to_string()
        } else {
            id.to_string()
        }
    };
    fields(&[
        ("id", t.id.to_string()),
        ("account", t.account_id.to_string()),
        ("name", t.name.clone()),
        ("last 4", t.last_4_digits.clone()),
        ("status", status_text(t)),
        ("grants", grants_text(t)),
        ("scopes", scopes_text(t)),
        ("created", time(t.created_at.as_ref()).unwrap_or_default()),
        ("created by", t.created_by.clone()),
        (
            "expires",
            time(t.expires_at.as_ref()).unwrap_or_else(|| "never".into()),
        ),
        ("replaced by", opt(t.replaced_by)),
        ("replaces", opt(t.replaces)),
        (
            "last used",
            match time(t.last_used_at.as_ref()) {
                Some(at) if t.last_used_by.is_empty() => at,
                Some(at) => format!("{at} ({})", t.last_used_by),
                None => "never".into(),
            },
        ),
        ("rate limits", rate_limits_text(t)),
    ])
}

/// `send=1000/86400s, burst=10/1s`, or `none`.
fn rate_limits_text(t: &pb::Token) -> String {
    if t.rate_limits.is_empty() {
        return "none".into();
    }
    t.rate_limits
        .iter()
        .map(|r| {
            let secs = r.period.as_ref().map_or(0, |p| p.seconds);
            format!("{}={}/{secs}s", r.name, r.limit)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Tokens, as a table.
pub fn tokens_table(tokens: &[pb::Token]) -> String {
    table(
        &["ID", "NAME", "STATUS", "EXPIRES", "GRANTS", "SCOPES"],
        tokens
            .iter()
            .map(|t| {
                vec![
                    t.id.to_string(),
                    t.name.clone(),
                    status_text(t),
                    time(t.expires_at.as_ref()).unwrap_or_else(|| "never".into()),
                    grants_text(t),
                    scopes_text(t),
                ]
            })
            .collect(),
    )
}

/// An account as JSON.
pub fn account_json(a: &pb::Account) -> Value {
    let policy = a.policy.unwrap_or_default();
    json!({
        "id": a.id,
        "name": a.name,
        "created_at": time(a.created_at.as_ref()),
        "policy": {
            "max_token_lifetime": policy.max_token_lifetime.as_ref().map(duration_json),
            "require_expiry": policy.require_expiry,
        },
    })
}

fn duration_json(d: &prost_types::Duration) -> String {
    let d = std::time::Duration::try_from(*d).unwrap_or_default();
    crate::wire::duration_json(d)
}

fn lifetime_text(a: &pb::Account) -> String {
    a.policy
        .as_ref()
        .and_then(|p| p.max_token_lifetime.as_ref())
        .and_then(|d| std::time::Duration::try_from(*d).ok())
        .filter(|d| !d.is_zero())
        .map_or_else(
            || "none".into(),
            |d| humantime::format_duration(d).to_string(),
        )
}

fn require_text(a: &pb::Account) -> String {
    let on = a.policy.as_ref().is_some_and(|p| p.require_expiry);
    (if on { "yes" } else { "no" }).into()
}

/// Accounts, as a table.
pub fn accounts_table(accounts: &[pb::Account]) -> String {
    table(
        &[
            "ID",
            "NAME",
            "CREATED",
            "MAX TOKEN LIFETIME",
            "REQUIRE EXPIRY",
        ],
        accounts
            .iter()
            .map(|a| {
                vec![
                    a.id.to_string(),
                    a.name.clone(),
                    time(a.created_at.as_ref()).unwrap_or_default(),
                    lifetime_text(a),
                    require_text(a),
                ]
            })
            .collect(),
    )
}

/// Resources, as a table.
pub fn resources_table(resources: &[pb::ResourceInfo]) -> String {
    table(
        &["TYPE", "ID", "PARENT"],
        resources
            .iter()
            .map(|r| {
                vec![
                    r.resource
                        .as_ref()
                        .map(|r| kind_name(r.r#type))
                        .unwrap_or_default(),
                    r.resource
                        .as_ref()
                        .map(|r| r.id.clone())
                        .unwrap_or_default(),
                    resource_text(r.parent.as_ref()),
                ]
            })
            .collect(),
    )
}

/// An audit event as JSON.
pub fn event_json(e: &pb::AuditEvent) -> Value {
    json!({
        "id": e.id,
        "account_id": e.account_id,
        "at": time(e.at.as_ref()),
        "actor_token_id": e.actor_token_id,
        "actor_name": e.actor_name,
        "action": e.action,
        "token_id": id_or_null(e.token_id),
        "resource": (!e.resource.is_empty()).then_some(&e.resource),
        "outcome": e.outcome,
        "detail": e.detail,
    })
}

/// Audit events, as a table.
pub fn events_table(events: &[pb::AuditEvent]) -> String {
    table(
        &[
            "ID", "AT", "ACTOR", "ACTION", "TOKEN", "RESOURCE", "OUTCOME", "DETAIL",
        ],
        events
            .iter()
            .map(|e| {
                vec![
                    e.id.to_string(),
                    time(e.at.as_ref()).unwrap_or_default(),
                    format!("{} ({})", e.actor_name, e.actor_token_id),
                    e.action.clone(),
                    if e.token_id == 0 {
                        "-".into()
                    } else {
                        e.token_id.to_string()
                    },
                    if e.resource.is_empty() {
                        "-".into()
                    } else {
                        e.resource.clone()
                    },
                    e.outcome.clone(),
                    e.detail.clone(),
                ]
            })
            .collect(),
    )
}

/// An Authorize answer as JSON.
pub fn decision_json(d: &pb::AuthorizeResponse) -> Value {
    json!({
        "allowed": d.allowed,
        "reason": reason_name(d.reason),
        "token_id": id_or_null(d.token_id),
        "account_id": id_or_null(d.account_id),
        "expires_at": time(d.expires_at.as_ref()),
        "replaced_by": id_or_null(d.replaced_by),
        "remaining": d.remaining,
        "retry_after_seconds": d.retry_after.as_ref().map(|r| r.seconds + i64::from(r.nanos > 0)),
    })
}

/// A deny reason as the CLI writes it (`NO_GRANT`), or null when allowed.
fn reason_name(n: i32) -> Value {
    match pb::DenyReason::try_from(n) {
        Ok(pb::DenyReason::Unspecified) => Value::Null,
        Ok(r) => json!(r.as_str_name().trim_start_matches("DENY_REASON_")),
        Err(_) => json!(n.to_string()),
    }
}

/// An Authorize answer, as `field  value` lines.
pub fn decision_fields(d: &pb::AuthorizeResponse) -> String {
    let decision = if d.allowed {
        "allowed".to_string()
    } else {
        format!(
            "denied: {}",
            reason_name(d.reason).as_str().unwrap_or("UNSPECIFIED")
        )
    };
    let mut rows = vec![("decision", decision)];
    if d.token_id != 0 {
        rows.push(("token", d.token_id.to_string()));
        rows.push(("account", d.account_id.to_string()));
        rows.push((
            "expires",
            time(d.expires_at.as_ref()).unwrap_or_else(|| "never".into()),
        ));
    }
    if d.replaced_by != 0 {
        rows.push(("replaced by", d.replaced_by.to_string()));
    }
    if let Some(left) = d.remaining {
        rows.push(("remaining", left.to_string()));
    }
    if let Some(r) = &d.retry_after {
        rows.push((
            "retry after",
            format!("{}s", r.seconds + i64::from(r.nanos > 0)),
        ));
    }
    fields(&rows)
}

/// `name  value` lines, the values aligned.
pub fn fields(rows: &[(&str, String)]) -> String {
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:width$}  {v}").trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A table: a header row and rows, columns aligned, two spaces apart.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    std::iter::once(line(headers.iter().map(|h| (*h).to_string()).collect()))
        .chain(rows.into_iter().map(line))
        .collect::<Vec<_>>()
        .join("\n")
}
