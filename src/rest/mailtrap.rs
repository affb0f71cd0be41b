//! Mailtrap's API-token API (`openapi/mailtrap-api-tokens.json`, built from
//! the reference page): list, create, get, delete and reset, under
//! `/api/api_tokens` (the caller's own account) and
//! `/api/accounts/{account_id}/api_tokens` (the account in the path).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::{
    caller, deny_unknown, home_account, invalid, opt_expiry, path_id, read_object, req_str,
    visible_tokens, Dialect, Problem,
};
use crate::engine::Engine;
use crate::model::{Kind, Level};
use crate::pb::v1 as pb;

type St = State<Arc<Engine>>;

/// The routes, both forms.
pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/api/api_tokens", get(list).post(create))
        .route("/api/api_tokens/{id}", get(show).delete(delete))
        .route("/api/api_tokens/{id}/reset", post(reset))
        .route(
            "/api/accounts/{account_id}/api_tokens",
            get(list_in).post(create_in),
        )
        .route(
            "/api/accounts/{account_id}/api_tokens/{id}",
            get(show_in).delete(delete_in),
        )
        .route(
            "/api/accounts/{account_id}/api_tokens/{id}/reset",
            post(reset_in),
        )
}

/// gRPC field paths to this API's names.
fn field(grpc: &str) -> String {
    let Some(rest) = grpc.strip_prefix("grants") else {
        return grpc.into();
    };
    let rest = if let Some(r) = rest.strip_suffix(".resource.type") {
        format!("{r}.resource_type")
    } else if let Some(r) = rest
        .strip_suffix(".resource.id")
        .or_else(|| rest.strip_suffix(".resource"))
    {
        format!("{r}.resource_id")
    } else if let Some(r) = rest.strip_suffix(".level") {
        format!("{r}.access_level")
    } else {
        rest.to_string()
    };
    format!("resources{rest}")
}

fn answer(result: Result<Response, Problem>) -> Response {
    result.unwrap_or_else(|p| p.render(Dialect::Mailtrap, field))
}

/// The caller and the account the call acts in.
async fn scope(
    engine: &Engine,
    headers: &HeaderMap,
    account: Option<&str>,
) -> Result<(u64, u64), Problem> {
    let caller = caller(engine, headers).await?;
    let account_id = match account {
        Some(segment) => path_id(segment, "account")?,
        None => home_account(engine, caller, "use /api/accounts/{account_id}/api_tokens")?,
    };
    Ok((caller, account_id))
}

/// A resource id as registered: an integer when it reads as one.
fn resource_id(id: &str) -> Value {
    let canonical = !id.is_empty() && (id == "0" || !id.starts_with('0'));
    match id.parse::<i64>() {
        Ok(n) if canonical && id.bytes().all(|b| b.is_ascii_digit()) => json!(n),
        _ => json!(id),
    }
}

fn permission(g: &pb::Grant) -> Value {
    let r = g.resource.clone().unwrap_or_default();
    json!({
        "resource_type": Kind::from_wire(r.r#type).map_or("unknown", Kind::as_str),
        "resource_id": resource_id(&r.id),
        "access_level": g.level,
    })
}

/// `ApiToken`.
fn api_token(t: &pb::Token) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(t.id));
    m.insert("name".into(), json!(t.name));
    m.insert("last_4_digits".into(), json!(t.last_4_digits));
    m.insert("created_by".into(), json!(t.created_by));
    m.insert(
        "expires_at".into(),
        json!(t.expires_at.as_ref().map(super::time::format_millis)),
    );
    m.insert(
        "resources".into(),
        t.grants.iter().map(permission).collect(),
    );
    m.insert("rate_limits".into(), super::limits::to_json(&t.rate_limits));
    m
}

/// `ApiTokenWithToken`: the new token's value, shown this once.
fn with_secret(created: pb::TokenWithSecret) -> Response {
    let mut m = created.token.as_ref().map(api_token).unwrap_or_default();
    m.insert("token".into(), Value::String(created.secret));
    Json(Value::Object(m)).into_response()
}

/// `ResourcePermissionInput` → a grant.
fn grant_from(i: usize, v: &Value) -> Result<pb::Grant, Problem> {
    let at = |f: &str| format!("resources[{i}].{f}");
    let Value::Object(m) = v else {
        return Err(invalid(&format!("resources[{i}]"), "must be an object"));
    };
    deny_unknown(m, &["resource_type", "resource_id", "access_level"])?;
    let kind = match m.get("resource_type") {
        None => return Err(invalid(&at("resource_type"), "is required")),
        Some(Value::String(s)) => Kind::ALL.into_iter().find(|k| k.as_str() == s),
        Some(_) => None,
    }
    .ok_or_else(|| {
        invalid(
            &at("resource_type"),
            "must be one of account, project, sandbox, domain",
        )
    })?;
    let id = match m.get("resource_id") {
        None => return Err(invalid(&at("resource_id"), "is required")),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        Some(_) => {
            return Err(invalid(
                &at("resource_id"),
                "must be an integer or a string",
            ))
        }
    };
    let level = match m.get("access_level") {
        None => return Err(invalid(&at("access_level"), "is required")),
        Some(v) => v
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .and_then(Level::from_wire)
            .ok_or_else(|| invalid(&at("access_level"), "must be 10 (viewer) or 100 (admin)"))?,
    };
    Ok(pb::Grant {
        resource: Some(pb::ResourceRef {
            r#type: kind.to_wire(),
            id,
        }),
        level: level.to_wire(),
    })
}

async fn do_list(
    engine: &Engine,
    headers: &HeaderMap,
    account: Option<&str>,
) -> Result<Response, Problem> {
    let (caller, account_id) = scope(engine, headers, account).await?;
    let tokens = visible_tokens(engine, caller, account_id)?;
    let list: Vec<Value> = tokens.iter().map(|t| Value::Object(api_token(t))).collect();
    Ok(Json(list).into_response())
}

async fn do_create(
    engine: &Engine,
    headers: &HeaderMap,
    account: Option<&str>,
    body: Body,
) -> Result<Response, Problem> {
    let (caller, account_id) = scope(engine, headers, account).await?;
    let m = read_object(headers, body, true).await?.unwrap_or_default();
    deny_unknown(&m, &["name", "resources", "expires_at", "rate_limits"])?;
    let name = req_str(&m, "name")?.to_string();
    let grants = match m.get("resources") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| grant_from(i, v))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("resources", "must be an array")),
    };
    let req = pb::CreateTokenRequest {
        account_id,
        name,
        grants,
        scopes: Vec::new(),
        expires_at: opt_expiry(&m, "expires_at")?,
        rate_limits: super::limits::from_json(m.get("rate_limits"))?,
    };
    Ok(with_secret(engine.create_token(caller, req).await?))
}

async fn do_show(
    engine: &Engine,
    headers: &HeaderMap,
    account: Option<&str>,
    id: &str,
) -> Result<Response, Problem> {
    let (caller, account_id) = scope(engine, headers, account).await?;
    let token_id = path_id(id, "token")?;
    let t = engine.get_token(
        caller,
        &pb::GetTokenRequest {
            account_id,
            token_id,
        },
    )?;
    Ok(Json(Value::Object(api_token(&t))).into_response())
}

async fn do_delete(
    engine: &Engine,
    headers: &HeaderMap,
    account: Option<&str>,
    id: &str,
) -> Result<Response, Problem> {
    let (caller, account_id) = scope(engine, headers, account).await?;
    let token_id = path_id(id, "token")?;
    super::delete_token(engine, caller, account_id, token_id).await
}

async fn do_reset(
    engine: &Engine,
    headers: &HeaderMap,
    account: Option<&str>,
    id: &str,
    body: Body,
) -> Result<Response, Problem> {
    let (caller, account_id) = scope(engine, headers, account).await?;
    let token_id = path_id(id, "token")?;
    let m = read_object(headers, body, false).await?.unwrap_or_default();
    deny_unknown(&m, &["expires_at"])?;
    let req = pb::ResetTokenRequest {
        account_id,
        token_id,
        expires_at: opt_expiry(&m, "expires_at")?,
        // Mailtrap's reset has no grace field: the server's reset grace.
        grace: None,
    };
    Ok(with_secret(engine.reset_token(caller, req).await?))
}

async fn list(State(e): St, h: HeaderMap) -> Response {
    answer(do_list(&e, &h, None).await)
}
async fn list_in(State(e): St, Path(a): Path<String>, h: HeaderMap) -> Response {
    answer(do_list(&e, &h, Some(&a)).await)
}
async fn create(State(e): St, h: HeaderMap, b: Body) -> Response {
    answer(do_create(&e, &h, None, b).await)
}
async fn create_in(State(e): St, Path(a): Path<String>, h: HeaderMap, b: Body) -> Response {
    answer(do_create(&e, &h, Some(&a), b).await)
}
async fn show(State(e): St, Path(id): Path<String>, h: HeaderMap) -> Response {
    answer(do_show(&e, &h, None, &id).await)
}
async fn show_in(State(e): St, Path((a, id)): Path<(String, String)>, h: HeaderMap) -> Response {
    answer(do_show(&e, &h, Some(&a), &id).await)
}
async fn delete(State(e): St, Path(id): Path<String>, h: HeaderMap) -> Response {
    answer(do_delete(&e, &h, None, &id).await)
}
async fn delete_in(State(e): St, Path((a, id)): Path<(String, String)>, h: HeaderMap) -> Response {
    answer(do_delete(&e, &h, Some(&a), &id).await)
}
async fn reset(State(e): St, Path(id): Path<String>, h: HeaderMap, b: Body) -> Response {
    answer(do_reset(&e, &h, None, &id, b).await)
}
async fn reset_in(
    State(e): St,
    Path((a, id)): Path<(String, String)>,
    h: HeaderMap,
    b: Body,
) -> Response {
    answer(do_reset(&e, &h, Some(&a), &id, b).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_use_the_api_names() {
        assert_eq!(field("grants[2].level"), "resources[2].access_level");
        assert_eq!(field("grants[0].resource.id"), "resources[0].resource_id");
        assert_eq!(
            field("grants[0].resource.type"),
            "resources[0].resource_type"
        );
        assert_eq!(field("grants[1].resource"), "resources[1].resource_id");
        assert_eq!(field("grants"), "resources");
        assert_eq!(field("name"), "name");
    }

    #[test]
    fn resource_ids_are_integers_when_they_read_as_one() {
        assert_eq!(resource_id("42"), json!(42));
        assert_eq!(resource_id("0"), json!(0));
        assert_eq!(resource_id("042"), json!("042"));
        assert_eq!(resource_id("example.com"), json!("example.com"));
        assert_eq!(
            resource_id("99999999999999999999"),
            json!("99999999999999999999")
        );
    }
}
