//! MailerSend's token API (`openapi/mailersend-tokens.json`): list (paged),
//! create, show, rename, pause/unpause and delete under `/v1/token`, in the
//! caller's own account.
//!
//! A MailerSend token covers one, several or all of an account's sending
//! domains, with per-feature scopes. In keyward that is a grant on each
//! domain (ADMIN if any scope is `_full`, else VIEWER; `domain_id` left out
//! means every domain of the account the caller can see, as they are then) and the matching feature scopes
//! ([`SCOPES`]). Tokens list their domains as `domain_ids`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use prost_types::FieldMask;
use serde_json::{json, Value};

use super::{
    caller, deny_unknown, home_account, invalid, opt_expiry, opt_str, path_id, read_object,
    req_str, visible_tokens, Dialect, Problem,
};
use crate::engine::Engine;
use crate::model::{limits, Kind, Level};
use crate::pb::v1 as pb;

type St = State<Arc<Engine>>;

/// MailerSend's scope families: (its name stem, keyward's scope, whether a
/// `_read` form exists). `<stem>_full` is ADMIN, `<stem>_read` VIEWER.
pub const SCOPES: [(&str, &str, bool); 15] = [
    ("email", "email", false),
    ("domains", "domains", true),
    ("activity", "activity", true),
    ("analytics", "analytics", true),
    ("tokens", "tokens", false),
    ("webhooks", "webhooks", false),
    ("templates", "templates", false),
    ("suppressions", "suppressions", true),
    ("sms", "sms", true),
    ("email_verification", "email_verification", true),
    ("inbound", "inbound", false),
    ("recipients", "recipients", true),
    ("sender_identity", "sender_identities", true),
    ("smtp_users", "smtp_users", true),
    ("users", "users", true),
];

/// Longest token name MailerSend accepts.
const NAME_MAX: usize = 50;
/// Page size bounds and default of `GET /v1/token`.
const LIMIT_MIN: u64 = 10;
const LIMIT_MAX: u64 = 100;
const LIMIT_DEFAULT: u64 = 25;

/// The routes.
pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/v1/token", get(list).post(create))
        .route("/v1/token/{id}", get(show).put(rename).delete(delete))
        .route("/v1/token/{id}/settings", put(settings))
}

/// gRPC field paths to this API's names.
fn field(grpc: &str) -> String {
    if grpc.starts_with("grants") {
        "domain_id".into()
    } else if grpc.starts_with("scopes[") {
        "scopes".into()
    } else {
        grpc.into()
    }
}

fn answer(result: Result<Response, Problem>) -> Response {
    result.unwrap_or_else(|p| p.render(Dialect::MailerSend, field))
}

async fn scope(engine: &Engine, headers: &HeaderMap) -> Result<(u64, u64), Problem> {
    let caller = caller(engine, headers).await?;
    let account = home_account(engine, caller, "use a token of the account")?;
    Ok((caller, account))
}

/// A MailerSend scope name → keyward's scope and level.
fn scope_from(name: &str) -> Option<pb::Scope> {
    let (stem, level) = if let Some(stem) = name.strip_suffix("_full") {
        (stem, Level::Admin)
    } else {
        (name.strip_suffix("_read")?, Level::Viewer)
    };
    let &(_, keyward, has_read) = SCOPES.iter().find(|(s, _, _)| *s == stem)?;
    (level == Level::Admin || has_read).then(|| pb::Scope {
        name: keyward.into(),
        level: level.to_wire(),
    })
}

/// A token's scopes in MailerSend's names; a token without scopes (full
/// access) has every `_full` scope.
fn scope_names(t: &pb::Token) -> Vec<String> {
    if t.scopes.is_empty() {
        return SCOPES
            .iter()
            .map(|(stem, _, _)| format!("{stem}_full"))
            .collect();
    }
    t.scopes
        .iter()
        .filter_map(|s| {
            let (stem, _, _) = SCOPES.iter().find(|(_, k, _)| *k == s.name)?;
            let suffix = if s.level == Level::Admin.to_wire() {
                "full"
            } else {
                "read"
            };
            Some(format!("{stem}_{suffix}"))
        })
        .collect()
}

fn token_json(t: &pb::Token) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), json!(t.id.to_string()));
    m.insert("name".into(), json!(t.name));
    m.insert(
        "status".into(),
        json!(if t.paused { "pause" } else { "unpause" }),
    );
    m.insert(
        "created_at".into(),
        json!(t.created_at.as_ref().map(super::time::format_micros)),
    );
    m.insert(
        "expires_at".into(),
        json!(t.expires_at.as_ref().map(super::time::format_micros)),
    );
    m.insert("scopes".into(), json!(scope_names(t)));
    let domains: Vec<&str> = t
        .grants
        .iter()
        .filter_map(|g| g.resource.as_ref())
        .filter(|r| r.r#type == Kind::Domain.to_wire())
        .map(|r| r.id.as_str())
        .collect();
    m.insert("domain_ids".into(), json!(domains));
    m.insert("rate_limits".into(), super::limits::to_json(&t.rate_limits));
    m
}

fn data(t: &pb::Token) -> Response {
    Json(json!({ "data": token_json(t) })).into_response()
}

/// A query parameter as a positive integer.
fn query_int(query: &str, name: &str) -> Result<Option<u64>, Problem> {
    let Some(v) = query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
    else {
        return Ok(None);
    };
    v.parse::<u64>()
        .ok()
        .filter(|&n| n > 0 && v.len() <= 10)
        .map(Some)
        .ok_or_else(|| invalid(name, "must be a positive integer"))
}

async fn do_list(engine: &Engine, headers: &HeaderMap, query: &str) -> Result<Response, Problem> {
    let (caller, account_id) = scope(engine, headers).await?;
    let page = query_int(query, "page")?.unwrap_or(1);
    let limit = query_int(query, "limit")?.unwrap_or(LIMIT_DEFAULT);
    if !(LIMIT_MIN..=LIMIT_MAX).contains(&limit) {
        return Err(invalid("limit", "must be between 10 and 100"));
    }
    let tokens = visible_tokens(engine, caller, account_id)?;
    let total = tokens.len() as u64;
    let last_page = total.div_ceil(limit).max(1);
    let start = (page - 1).saturating_mul(limit);
    let items: Vec<Value> = tokens
        .iter()
        .skip(usize::try_from(start).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|t| Value::Object(token_json(t)))
        .collect();
    let shown = items.len() as u64;
    let link = |p: u64| format!("/v1/token?page={p}&limit={limit}");
    Ok(Json(json!({
        "data": items,
        "links": {
            "first": link(1),
            "last": link(last_page),
            "prev": (page > 1).then(|| link(page - 1)),
            "next": (page < last_page).then(|| link(page + 1)),
        },
        "meta": {
            "current_page": page,
            "from": (shown > 0).then_some(start + 1),
            "last_page": last_page,
            "path": "/v1/token",
            "per_page": limit,
            "to": (shown > 0).then_some(start + shown),
            "total": total,
        },
    }))
    .into_response())
}

/// A name MailerSend would accept (keyward's own rules follow in the engine).
fn check_name(name: &str) -> Result<(), Problem> {
    if name.chars().count() > NAME_MAX {
        return Err(invalid("name", "must be at most 50 characters"));
    }
    Ok(())
}

/// One `domain_id`: a string, or a number (MailerSend's ids are strings,
/// but a JSON client may send a numeric one).
fn domain_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// `domain_id` as an array: 1..=100 domain ids (a repeat is refused by the
/// grant rules, in any spelling).
fn domain_list(items: &[Value]) -> Result<Vec<String>, Problem> {
    if items.is_empty() {
        return Err(invalid(
            "domain_id",
            "must name at least one domain (leave it out for all of the account's domains)",
        ));
    }
    if items.len() > limits::GRANTS_MAX {
        return Err(invalid(
            "domain_id",
            &format!("must name at most {} domains", limits::GRANTS_MAX),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            domain_of(v).ok_or_else(|| invalid(&format!("domain_id.{i}"), "must be a domain id"))
        })
        .collect()
}

/// No `domain_id`: every domain of the account the caller can see (as
/// MailerSend's tokens cover all of an account's domains), as they are now.
/// Domains the caller cannot see are left out rather than refused: a
/// refusal naming them would tell it they exist.
fn every_domain(engine: &Engine, caller: u64, account_id: u64) -> Result<Vec<String>, Problem> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = engine.list_resources(
            caller,
            &pb::ListResourcesRequest {
                account_id,
                page_size: limits::PAGE_MAX,
                page_token,
            },
        )?;
        out.extend(
            page.resources
                .into_iter()
                .filter_map(|r| r.resource)
                .filter(|r| r.r#type == Kind::Domain.to_wire())
                .map(|r| r.id),
        );
        if out.len() > limits::GRANTS_MAX {
            return Err(invalid(
                "domain_id",
                &format!(
                    "the account has more than {} domains: name the ones the token is for",
                    limits::GRANTS_MAX
                ),
            ));
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if out.is_empty() {
        return Err(invalid(
            "domain_id",
            "the account has no domains yet: register one first",
        ));
    }
    Ok(out)
}

async fn do_create(engine: &Engine, headers: &HeaderMap, body: Body) -> Result<Response, Problem> {
    let (caller, account_id) = scope(engine, headers).await?;
    let m = read_object(headers, body, true).await?.unwrap_or_default();
    deny_unknown(
        &m,
        &["name", "domain_id", "scopes", "expires_at", "rate_limits"],
    )?;
    let name = req_str(&m, "name")?;
    check_name(name)?;
    let domains = match m.get("domain_id") {
        None | Some(Value::Null) => every_domain(engine, caller, account_id)?,
        Some(Value::Array(items)) => domain_list(items)?,
        Some(one) => vec![domain_of(one)
            .ok_or_else(|| invalid("domain_id", "must be a domain id or an array of them"))?],
    };
    let Some(Value::Array(names)) = m.get("scopes") else {
        return Err(invalid("scopes", "is required: an array of scope names"));
    };
    if names.is_empty() || names.len() > 2 * SCOPES.len() {
        return Err(invalid("scopes", "must name between 1 and 30 scopes"));
    }
    let mut scopes: Vec<pb::Scope> = Vec::new();
    for (i, v) in names.iter().enumerate() {
        let s = v
            .as_str()
            .and_then(scope_from)
            .ok_or_else(|| invalid(&format!("scopes.{i}"), "is not a MailerSend scope"))?;
        // `x_read` and `x_full` together mean `x_full`.
        match scopes.iter_mut().find(|o| o.name == s.name) {
            Some(o) => o.level = o.level.max(s.level),
            None => scopes.push(s),
        }
    }
    let level = scopes.iter().map(|s| s.level).max().unwrap_or_default();
    let req = pb::CreateTokenRequest {
        account_id,
        name: name.to_string(),
        grants: domains
            .into_iter()
            .map(|id| pb::Grant {
                resource: Some(pb::ResourceRef {
                    r#type: Kind::Domain.to_wire(),
                    id,
                }),
                level,
            })
            .collect(),
        scopes,
        expires_at: opt_expiry(&m, "expires_at")?,
        rate_limits: super::limits::from_json(m.get("rate_limits"))?,
    };
    let created = engine.create_token(caller, req).await?;
    let mut out = created.token.as_ref().map(token_json).unwrap_or_default();
    out.insert("accessToken".into(), Value::String(created.secret));
    Ok(Json(json!({ "data": out })).into_response())
}

async fn do_show(engine: &Engine, headers: &HeaderMap, id: &str) -> Result<Response, Problem> {
    let (caller, account_id) = scope(engine, headers).await?;
    let token_id = path_id(id, "token")?;
    Ok(data(&engine.get_token(
        caller,
        &pb::GetTokenRequest {
            account_id,
            token_id,
        },
    )?))
}

async fn do_rename(
    engine: &Engine,
    headers: &HeaderMap,
    id: &str,
    body: Body,
) -> Result<Response, Problem> {
    let (caller, account_id) = scope(engine, headers).await?;
    let token_id = path_id(id, "token")?;
    let m = read_object(headers, body, true).await?.unwrap_or_default();
    deny_unknown(&m, &["name"])?;
    let name = req_str(&m, "name")?;
    check_name(name)?;
    let req = pb::UpdateTokenRequest {
        account_id,
        token_id,
        name: name.to_string(),
        update_mask: Some(FieldMask {
            paths: vec!["name".into()],
        }),
        ..Default::default()
    };
    Ok(data(&engine.update_token(caller, req).await?))
}

async fn do_settings(
    engine: &Engine,
    headers: &HeaderMap,
    id: &str,
    body: Body,
) -> Result<Response, Problem> {
    let (caller, account_id) = scope(engine, headers).await?;
    let token_id = path_id(id, "token")?;
    let m = read_object(headers, body, true).await?.unwrap_or_default();
    deny_unknown(&m, &["status"])?;
    let token = match opt_str(&m, "status")? {
        None => engine.get_token(
            caller,
            &pb::GetTokenRequest {
                account_id,
                token_id,
            },
        )?,
        Some("pause") => {
            engine
                .set_paused(caller, account_id, token_id, true)
                .await?
        }
        Some("unpause") => {
            engine
                .set_paused(caller, account_id, token_id, false)
                .await?
        }
        Some(_) => return Err(invalid("status", "must be pause or unpause")),
    };
    Ok(data(&token))
}

async fn do_delete(engine: &Engine, headers: &HeaderMap, id: &str) -> Result<Response, Problem> {
    let (caller, account_id) = scope(engine, headers).await?;
    let token_id = path_id(id, "token")?;
    super::delete_token(engine, caller, account_id, token_id).await
}

async fn list(State(e): St, h: HeaderMap, RawQuery(q): RawQuery) -> Response {
    answer(do_list(&e, &h, q.as_deref().unwrap_or_default()).await)
}
async fn create(State(e): St, h: HeaderMap, b: Body) -> Response {
    answer(do_create(&e, &h, b).await)
}
async fn show(State(e): St, Path(id): Path<String>, h: HeaderMap) -> Response {
    answer(do_show(&e, &h, &id).await)
}
async fn rename(State(e): St, Path(id): Path<String>, h: HeaderMap, b: Body) -> Response {
    answer(do_rename(&e, &h, &id, b).await)
}
async fn settings(State(e): St, Path(id): Path<String>, h: HeaderMap, b: Body) -> Response {
    answer(do_settings(&e, &h, &id, b).await)
}
async fn delete(State(e): St, Path(id): Path<String>, h: HeaderMap) -> Response {
    answer(do_delete(&e, &h, &id).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_map_both_ways() {
        let s = scope_from("sender_identity_read").expect("known");
        assert_eq!((s.name.as_str(), s.level), ("sender_identities", 10));
        assert_eq!(scope_from("email_full").map(|s| s.level), Some(100));
        assert_eq!(
            scope_from("email_read"),
            None,
            "email has no read-only form"
        );
        assert_eq!(scope_from("email"), None);
        assert_eq!(scope_from("nope_full"), None);
        let t = pb::Token {
            scopes: vec![
                s,
                pb::Scope {
                    name: "tokens".into(),
                    level: 100,
                },
            ],
            ..Default::default()
        };
        assert_eq!(scope_names(&t), ["sender_identity_read", "tokens_full"]);
        assert_eq!(scope_names(&pb::Token::default()).len(), SCOPES.len());
        for (stem, keyward, _) in SCOPES {
            assert!(crate::model::scope_index(keyward).is_some(), "{stem}");
        }
    }
}
