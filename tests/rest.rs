//! The HTTP/JSON facades (Mailtrap's `/api/...` and MailerSend's
//! `/v1/token...`) over real HTTP against a real server: every route, every
//! status and every error shape, and that they run the same rules as gRPC.

mod common;

use common::*;
use keyward::pb::v1 as pb;
use serde_json::{json, Value};

const HOUR_MS: i64 = 3600 * 1000;

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

const API_TOKEN_KEYS: [&str; 7] = [
    "created_by",
    "expires_at",
    "id",
    "last_4_digits",
    "name",
    "rate_limits",
    "resources",
];

/// An RFC 3339 time `ms` from the server's clock.
fn at(s: &TestServer, ms: i64) -> String {
    let t = keyward::clock::Clock::now_ms(&*s.clock) + ms;
    keyward::rest::time::format_millis(&keyward::wire::ts(t))
}

#[tokio::test]
async fn mailtrap_tokens_lifecycle() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (acct, admin) = s.account("Acme").await;
    s.register(&admin, acct, PROJECT, "7", None).await;
    let domain = s
        .register(&admin, acct, DOMAIN, "example.com", None)
        .await
        .expect("domain token");
    let h = s.http;

    // List: the caller's account, as an array of ApiToken.
    let r = http(h, "GET", "/api/api_tokens", Some(&admin), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let list = r.json();
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 2, "admin and domain tokens: {list:?}");
    for t in list {
        assert_eq!(keys(t), API_TOKEN_KEYS);
    }

    // Create, with an integer and a string resource id and an expiry.
    let expires = at(&s, 48 * HOUR_MS);
    let body = json!({
        "name": "ci",
        "resources": [
            {"resource_type": "project", "resource_id": 7, "access_level": 10},
            {"resource_type": "domain", "resource_id": "example.com", "access_level": 100},
        ],
        "expires_at": expires,
    });
    let r = http(h, "POST", "/api/api_tokens", Some(&admin), Some(&body)).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let created = r.json();
    let mut want: Vec<&str> = API_TOKEN_KEYS.to_vec();
    want.push("token");
    want.sort_unstable();
    assert_eq!(keys(&created), want);
    assert_eq!(created["name"], "ci");
    assert_eq!(created["created_by"], "Acme admin token");
    assert_eq!(created["expires_at"], Value::String(expires));
    assert_eq!(
        created["resources"],
        json!([
            {"resource_type": "project", "resource_id": 7, "access_level": 10},
            {"resource_type": "domain", "resource_id": "example.com", "access_level": 100},
        ])
    );
    let secret = created["token"].as_str().expect("token").to_string();
    assert!(secret.ends_with(created["last_4_digits"].as_str().unwrap()));
    let id = created["id"].as_u64().expect("id");
    // The new token is a real keyward token: its grants decide.
    assert!(s.check(&secret, PROJECT, "7", VIEWER).await.allowed);
    assert!(!s.check(&secret, PROJECT, "7", ADMIN).await.allowed);
    assert!(s.check(&secret, DOMAIN, "example.com", ADMIN).await.allowed);

    // Get: the same, without the secret; never shown again anywhere.
    for path in [
        format!("/api/api_tokens/{id}"),
        format!("/api/accounts/{acct}/api_tokens/{id}"),
    ] {
        let r = http(h, "GET", &path, Some(&admin), None).await;
        assert_eq!(r.status, 200);
        let got = r.json();
        assert_eq!(keys(&got), API_TOKEN_KEYS);
        assert_eq!(got["id"], created["id"]);
        assert!(!String::from_utf8_lossy(&r.body).contains(&secret));
    }
    let r = http(h, "GET", "/api/api_tokens", Some(&admin), None).await;
    assert!(!String::from_utf8_lossy(&r.body).contains(&secret));

    // Reset: a new token with the same resources; the old one keeps
    // working through the grace period; a second reset is refused (422).
    let r = http(
        h,
        "POST",
        &format!("/api/api_tokens/{id}/reset"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let reset = r.json();
    assert_eq!(reset["resources"], created["resources"]);
    assert_eq!(reset["name"], format!("ci token {}", reset["id"]));
    let new_secret = reset["token"].as_str().expect("token");
    assert!(s.check(new_secret, PROJECT, "7", VIEWER).await.allowed);
    assert!(s.check(&secret, PROJECT, "7", VIEWER).await.allowed);
    // Mailtrap's reset has no grace: the server's (12 h), which ends
    // before the 48 h the old token had.
    let r = http(
        h,
        "GET",
        &format!("/api/api_tokens/{id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(r.json()["expires_at"], Value::String(at(&s, 12 * HOUR_MS)));
    // ... and a body naming one is refused, changing nothing.
    let r = http(
        h,
        "POST",
        &format!("/api/api_tokens/{}/reset", reset["id"]),
        Some(&admin),
        Some(&json!({"grace": "0s"})),
    )
    .await;
    assert_eq!(r.status, 422, "{:?}", r.json());
    assert!(s.check(new_secret, PROJECT, "7", VIEWER).await.allowed);
    let r = http(
        h,
        "POST",
        &format!("/api/api_tokens/{id}/reset"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.json()["errors"]["base"][0]
        .as_str()
        .unwrap()
        .contains("already reset"));

    // Delete: 204, no body, at once; then 404 {"error"}.
    let new_id = reset["id"].as_u64().unwrap();
    let r = http(
        h,
        "DELETE",
        &format!("/api/api_tokens/{new_id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert!(!s.check(new_secret, PROJECT, "7", VIEWER).await.allowed);
    let r = http(
        h,
        "GET",
        &format!("/api/api_tokens/{new_id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(keys(&r.json()), ["error"]);
    let r = http(
        h,
        "DELETE",
        &format!("/api/api_tokens/{new_id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(r.status, 404);

    // The last token of a domain cannot go (422, record-level).
    let domain_id = domain.token.as_ref().unwrap().id;
    let r = http(
        h,
        "DELETE",
        &format!("/api/api_tokens/{domain_id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.json()["errors"]["base"].is_array());

    // Every mutation made over HTTP is in the audit log like a gRPC one.
    let mut audit = pb::audit_client::AuditClient::new(s.channel.clone());
    let events = audit
        .list_audit_events(auth(
            pb::ListAuditEventsRequest {
                account_id: acct,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("audit")
        .into_inner()
        .events;
    let actions: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.action.as_str(), e.outcome.as_str()))
        .collect();
    for want in [
        ("CreateToken", "OK"),
        ("ResetToken", "OK"),
        ("ResetToken", "FAILED_PRECONDITION"),
        ("DeleteToken", "OK"),
        ("DeleteToken", "NOT_FOUND"),
        ("DeleteToken", "FAILED_PRECONDITION"),
    ] {
        assert!(actions.contains(&want), "{want:?} not in {actions:?}");
    }
}

#[tokio::test]
async fn mailtrap_errors_have_the_reference_shapes() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (acct, admin) = s.account("Acme").await;
    let (other, other_admin) = s.account("Other").await;
    let h = s.http;
    let admin_c = admin.clone();
    let post = move |body: Value| {
        let admin = admin_c.clone();
        async move { http(h, "POST", "/api/api_tokens", Some(&admin), Some(&body)).await }
    };

    // 401 {"error"} with www-authenticate: no credential, garbage, Api-Token.
    for token in [
        None,
        Some("nope"),
        Some("kw_0000000000000000000000000000000000000000000000000000000000"),
    ] {
        let r = http(h, "GET", "/api/api_tokens", token, None).await;
        assert_eq!(r.status, 401, "{token:?}");
        assert_eq!(keys(&r.json()), ["error"]);
        assert!(r.header("www-authenticate").is_some());
    }
    let req = format!("GET /api/api_tokens HTTP/1.1\r\nhost: k\r\nconnection: close\r\napi-token: {admin}\r\n\r\n");
    assert_eq!(http_raw(h, req.as_bytes()).await.status, 200);

    // 403 {"errors": "..."}: another account; the root token without one.
    let r = http(
        h,
        "GET",
        &format!("/api/accounts/{other}/api_tokens"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.json()["errors"].is_string());
    let r = http(
        h,
        "GET",
        &format!("/api/accounts/{acct}/api_tokens/2"),
        Some(&other_admin),
        None,
    )
    .await;
    assert_eq!(r.status, 403, "never another account's data");
    let r = http(h, "GET", "/api/api_tokens", Some(&s.root()), None).await;
    assert_eq!(r.status, 403);
    // ... while root may act in any account through the path.
    let r = http(
        h,
        "GET",
        &format!("/api/accounts/{other}/api_tokens"),
        Some(&s.root()),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = http(
        h,
        "GET",
        "/api/accounts/999/api_tokens",
        Some(&s.root()),
        None,
    )
    .await;
    assert_eq!(r.status, 404);

    // 422 {"errors": {"field": [...]}} per field.
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": 5}), "name"),
        (json!({"name": "x"}), "resources"),
        (json!({"name": "x", "resources": {}}), "resources"),
        (json!({"name": "x", "resources": [1]}), "resources[0]"),
        (
            json!({"name": "x", "resources": [{"resource_type": "planet", "resource_id": 1, "access_level": 10}]}),
            "resources[0].resource_type",
        ),
        (
            json!({"name": "x", "resources": [{"resource_type": "project", "resource_id": 1.5, "access_level": 10}]}),
            "resources[0].resource_id",
        ),
        (
            json!({"name": "x", "resources": [{"resource_type": "project", "resource_id": 1, "access_level": 50}]}),
            "resources[0].access_level",
        ),
        (
            json!({"name": "x", "resources": [{"resource_type": "project", "resource_id": 1}]}),
            "resources[0].access_level",
        ),
        (
            json!({"name": "x", "resources": [{"resource_type": "project", "resource_id": "", "access_level": 10}]}),
            "resources[0].resource_id",
        ),
        (
            json!({"name": "x", "resources": [{"resource_type": "account", "resource_id": acct, "access_level": 10}], "expires_at": "soon"}),
            "expires_at",
        ),
        (
            json!({"name": "x", "resources": [{"resource_type": "account", "resource_id": acct, "access_level": 10}], "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"name": "x", "resources": [{"resource_type": "account", "resource_id": acct, "access_level": 10}], "expires_at": at(&s, 6 * 366 * 24 * HOUR_MS)}),
            "expires_at",
        ),
        (json!({"name": "x", "scopes": []}), "scopes"),
    ];
    for (body, field) in cases {
        let r = post(body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {:?}", r.json());
        let errors = r.json()["errors"].clone();
        assert!(errors[field].is_array(), "{body}: want {field} in {errors}");
    }
    // A resource of another account: refused, not created.
    let body = json!({"name": "x", "resources": [{"resource_type": "account", "resource_id": other, "access_level": 10}]});
    assert!(matches!(post(body).await.status, 403 | 422));

    // 400 malformed JSON, 415 not JSON, 413 too large, 422 not an object.
    let raw = |content_type: &str, body: &str| {
        format!(
            "POST /api/api_tokens HTTP/1.1\r\nhost: k\r\nconnection: close\r\nauthorization: Bearer {admin}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let r = http_raw(h, raw("application/json", "{\"name\":").as_bytes()).await;
    assert_eq!((r.status, keys(&r.json())), (400, vec!["error"]));
    let r = http_raw(h, raw("text/plain", "{\"name\":\"x\"}").as_bytes()).await;
    assert_eq!((r.status, keys(&r.json())), (415, vec!["error"]));
    let big = format!("{{\"name\":\"{}\"}}", "a".repeat(70_000));
    let r = http_raw(h, raw("application/json", &big).as_bytes()).await;
    assert_eq!((r.status, keys(&r.json())), (413, vec!["error"]));
    let r = http_raw(h, raw("application/json", "[1,2]").as_bytes()).await;
    assert_eq!(r.status, 422);
    let r = http_raw(h, raw("application/json", "").as_bytes()).await;
    assert_eq!(r.status, 400);
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let r = http_raw(h, raw("application/json", &deep).as_bytes()).await;
    assert_eq!(r.status, 400, "nesting is bounded");

    // Unknown fields are refused and named; a key that is not a plain
    // field name is not echoed.
    let r = post(json!({"name": "x", "colour": "red"})).await;
    assert_eq!(r.status, 422);
    assert!(r.json()["errors"]["colour"].is_array());
    let r = post(json!({"name": "x", "kw_Secret-Looking Key": 1})).await;
    assert_eq!(r.status, 422);
    assert!(!String::from_utf8_lossy(&r.body).contains("kw_Secret"));

    // Ids that are not ids: 404, never 5xx.
    for path in [
        "/api/api_tokens/abc",
        "/api/api_tokens/0",
        "/api/api_tokens/-1",
        "/api/api_tokens/99999999999999999999999",
        "/api/accounts/x/api_tokens",
    ] {
        let r = http(h, "GET", path, Some(&admin), None).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(r.json()["error"].is_string());
    }
    // Unknown routes and methods: JSON 404 and 405.
    let r = http(h, "GET", "/api/nothing", Some(&admin), None).await;
    assert_eq!((r.status, r.json()["error"].is_string()), (404, true));
    let r = http(h, "PATCH", "/api/api_tokens", Some(&admin), None).await;
    assert_eq!((r.status, r.json()["error"].is_string()), (405, true));

    // A token scope-restricted without `tokens` is refused (403).
    let scoped = s
        .create_scoped(
            &admin,
            acct,
            "mailer",
            vec![grant(ACCOUNT, &acct.to_string(), ADMIN)],
            vec![scope("email", ADMIN)],
        )
        .await
        .unwrap()
        .secret;
    let r = http(h, "GET", "/api/api_tokens", Some(&scoped), None).await;
    assert_eq!(r.status, 403);

    // Nothing refused above was created.
    assert_eq!(s.list(&admin, acct).await.tokens.len(), 2);
}

#[tokio::test]
async fn mailersend_tokens_lifecycle_and_errors() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (acct, admin) = s.account("Acme").await;
    s.register(&admin, acct, DOMAIN, "example.com", None).await;
    let h = s.http;

    // Create: a domain token with MailerSend scopes.
    let body = json!({"name": "sender", "domain_id": "example.com", "scopes": ["email_full", "domains_read", "analytics_read", "analytics_full"]});
    let r = http(h, "POST", "/v1/token", Some(&admin), Some(&body)).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let data = r.json()["data"].clone();
    assert_eq!(
        keys(&data),
        [
            "accessToken",
            "created_at",
            "domain_ids",
            "expires_at",
            "id",
            "name",
            "rate_limits",
            "scopes",
            "status"
        ]
    );
    assert_eq!(data["domain_ids"], json!(["example.com"]));
    assert_eq!(data["status"], "unpause");
    assert_eq!(
        data["scopes"],
        json!(["email_full", "domains_read", "analytics_full"])
    );
    assert!(data["created_at"].as_str().unwrap().ends_with("000Z"));
    let secret = data["accessToken"].as_str().unwrap().to_string();
    let id = data["id"].as_str().unwrap().to_string();
    // In keyward terms: ADMIN on the domain, restricted to those features.
    let d = s
        .check_scope(&secret, DOMAIN, "example.com", ADMIN, "email")
        .await;
    assert!(d.allowed, "{d:?}");
    let d = s
        .check_scope(&secret, DOMAIN, "example.com", ADMIN, "domains")
        .await;
    assert_eq!(d.reason, DenyReason::Scope as i32);
    assert!(
        s.check_scope(&secret, DOMAIN, "example.com", VIEWER, "domains")
            .await
            .allowed
    );
    assert!(
        !s.check_scope(&secret, DOMAIN, "example.com", VIEWER, "webhooks")
            .await
            .allowed
    );

    // Show, rename, pause, unpause, delete.
    let path = format!("/v1/token/{id}");
    let r = http(h, "GET", &path, Some(&admin), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        keys(&r.json()["data"]),
        [
            "created_at",
            "domain_ids",
            "expires_at",
            "id",
            "name",
            "rate_limits",
            "scopes",
            "status"
        ]
    );
    assert!(!String::from_utf8_lossy(&r.body).contains(&secret));
    let r = http(
        h,
        "PUT",
        &path,
        Some(&admin),
        Some(&json!({"name": "renamed"})),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["data"]["name"].clone()),
        (200, json!("renamed"))
    );
    let settings = format!("{path}/settings");
    let r = http(
        h,
        "PUT",
        &settings,
        Some(&admin),
        Some(&json!({"status": "pause"})),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["data"]["status"].clone()),
        (200, json!("pause"))
    );
    let d = s
        .check_scope(&secret, DOMAIN, "example.com", ADMIN, "email")
        .await;
    assert_eq!(d.reason, DenyReason::Paused as i32);
    let r = http(
        h,
        "PUT",
        &settings,
        Some(&admin),
        Some(&json!({"status": "unpause"})),
    )
    .await;
    assert_eq!(r.json()["data"]["status"], "unpause");
    assert!(
        s.check_scope(&secret, DOMAIN, "example.com", ADMIN, "email")
            .await
            .allowed
    );
    let r = http(
        h,
        "PUT",
        &settings,
        Some(&admin),
        Some(&json!({"status": "stop"})),
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.json()["errors"]["status"].is_array());
    let r = http(h, "DELETE", &path, Some(&admin), None).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert!(
        !s.check_scope(&secret, DOMAIN, "example.com", ADMIN, "email")
            .await
            .allowed
    );
    let r = http(h, "GET", &path, Some(&admin), None).await;
    assert_eq!(r.status, 404);
    assert_eq!(keys(&r.json()), ["message"]);

    // Paging: 12 more tokens; limit 10..100; page links and meta.
    for i in 0..12 {
        let body =
            json!({"name": format!("t{i}"), "domain_id": "example.com", "scopes": ["email_full"]});
        assert_eq!(
            http(h, "POST", "/v1/token", Some(&admin), Some(&body))
                .await
                .status,
            200
        );
    }
    let r = http(h, "GET", "/v1/token?limit=10&page=2", Some(&admin), None).await;
    assert_eq!(r.status, 200);
    let page = r.json();
    let total = 14; // admin + domain token + 12
    assert_eq!(page["data"].as_array().unwrap().len(), total - 10);
    assert_eq!(page["meta"]["total"], total);
    assert_eq!(page["meta"]["current_page"], 2);
    assert_eq!(page["meta"]["last_page"], 2);
    assert_eq!(
        (page["meta"]["from"].clone(), page["meta"]["to"].clone()),
        (json!(11), json!(total))
    );
    assert_eq!(page["links"]["next"], Value::Null);
    assert_eq!(page["links"]["prev"], "/v1/token?page=1&limit=10");
    let r = http(h, "GET", "/v1/token", Some(&admin), None).await;
    assert_eq!(r.json()["meta"]["per_page"], 25);
    for q in ["limit=9", "limit=101", "page=0", "page=x", "limit=-5"] {
        let r = http(h, "GET", &format!("/v1/token?{q}"), Some(&admin), None).await;
        assert_eq!(r.status, 422, "{q}");
        assert_eq!(r.json()["message"], "The given data was invalid.");
    }

    // Errors: {"message"} for 401/403/404; 422 with errors per field.
    let r = http(h, "GET", "/v1/token", None, None).await;
    assert_eq!((r.status, keys(&r.json())), (401, vec!["message"]));
    let r = http(h, "GET", "/v1/token", Some(&s.root()), None).await;
    assert_eq!((r.status, keys(&r.json())), (403, vec!["message"]));
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"domain_id": "example.com", "scopes": ["email_full"]}),
            "name",
        ),
        (
            json!({"name": "x".repeat(51), "domain_id": "example.com", "scopes": ["email_full"]}),
            "name",
        ),
        (
            json!({"name": "x", "domain_id": [], "scopes": ["email_full"]}),
            "domain_id",
        ),
        (
            json!({"name": "x", "domain_id": ["example.com", true], "scopes": ["email_full"]}),
            "domain_id.1",
        ),
        (
            json!({"name": "x", "domain_id": {"id": "example.com"}, "scopes": ["email_full"]}),
            "domain_id",
        ),
        (
            json!({"name": "x", "domain_id": ["example.com", "EXAMPLE.com."], "scopes": ["email_full"]}),
            "domain_id",
        ),
        (
            json!({"name": "x", "domain_id": vec!["example.com"; 101], "scopes": ["email_full"]}),
            "domain_id",
        ),
        (
            json!({"name": "x", "domain_id": "nope.example", "scopes": ["email_full"]}),
            "domain_id",
        ),
        (json!({"name": "x", "domain_id": "example.com"}), "scopes"),
        (
            json!({"name": "x", "domain_id": "example.com", "scopes": []}),
            "scopes",
        ),
        (
            json!({"name": "x", "domain_id": "example.com", "scopes": ["email_read"]}),
            "scopes.0",
        ),
        (
            json!({"name": "x", "domain_id": "example.com", "scopes": ["email_full", 7]}),
            "scopes.1",
        ),
        (
            json!({"name": "x", "domain_id": "example.com", "scopes": ["email_full"], "expires_at": "2001-01-01"}),
            "expires_at",
        ),
        (
            json!({"name": "x", "domain_id": "example.com", "scopes": ["email_full"], "extra": true}),
            "extra",
        ),
    ];
    for (body, field) in cases {
        let r = http(h, "POST", "/v1/token", Some(&admin), Some(&body)).await;
        assert_eq!(r.status, 422, "{body}");
        let v = r.json();
        assert_eq!(v["message"], "The given data was invalid.", "{body}");
        assert!(v["errors"][field].is_array(), "{body}: want {field} in {v}");
    }
    let r = http(
        h,
        "PUT",
        "/v1/token/abc",
        Some(&admin),
        Some(&json!({"name": "x"})),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(s.list(&admin, acct).await.tokens.len(), total);
}

/// MailerSend tokens cover "all or multiple domains": `domain_id` may be an
/// array, or left out for every domain the account has; each is a grant,
/// and responses list them as `domain_ids`.
#[tokio::test]
async fn mailersend_tokens_cover_several_or_all_domains() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (acct, admin) = s.account("Acme").await;
    let h = s.http;
    let all = json!({"name": "all", "scopes": ["email_full"]});
    // No domains yet: "all of them" is none, refused naming the field.
    let r = http(h, "POST", "/v1/token", Some(&admin), Some(&all)).await;
    assert_eq!(r.status, 422, "{:?}", r.json());
    assert!(r.json()["errors"]["domain_id"][0]
        .as_str()
        .unwrap()
        .contains("no domains"));
    for d in ["a.example", "b.example", "c.example"] {
        s.register(&admin, acct, DOMAIN, d, None).await;
    }
    s.register(&admin, acct, PROJECT, "p1", None).await;

    // Several, in any spelling: one grant each, listed canonically.
    let two =
        json!({"name": "two", "domain_id": ["A.example", "c.example."], "scopes": ["email_full"]});
    let r = http(h, "POST", "/v1/token", Some(&admin), Some(&two)).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let data = r.json()["data"].clone();
    assert_eq!(data["domain_ids"], json!(["a.example", "c.example"]));
    let secret = data["accessToken"].as_str().unwrap().to_string();
    for (d, allowed) in [
        ("a.example", true),
        ("b.example", false),
        ("c.example", true),
    ] {
        let got = s.check_scope(&secret, DOMAIN, d, ADMIN, "email").await;
        assert_eq!(got.allowed, allowed, "{d}: {got:?}");
    }

    // None: every domain the account has now (not its project).
    let r = http(h, "POST", "/v1/token", Some(&admin), Some(&all)).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let data = r.json()["data"].clone();
    assert_eq!(
        data["domain_ids"],
        json!(["a.example", "b.example", "c.example"])
    );
    let id = data["id"].as_str().unwrap().to_string();
    let secret = data["accessToken"].as_str().unwrap().to_string();
    for d in ["a.example", "b.example", "c.example"] {
        assert!(
            s.check_scope(&secret, DOMAIN, d, ADMIN, "email")
                .await
                .allowed,
            "{d}"
        );
    }
    assert!(!s.check(&secret, PROJECT, "p1", VIEWER).await.allowed);
    // Stored as grants: gRPC shows the same, and show/list list them.
    let t = s
        .tokens()
        .get_token(auth(
            pb::GetTokenRequest {
                account_id: acct,
                token_id: id.parse().unwrap(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        t.grants,
        ["a.example", "b.example", "c.example"].map(|d| grant(DOMAIN, d, ADMIN))
    );
    let r = http(h, "GET", &format!("/v1/token/{id}"), Some(&admin), None).await;
    assert_eq!(r.json()["data"]["domain_ids"], data["domain_ids"]);
    let r = http(h, "GET", "/v1/token", Some(&admin), None).await;
    let listed = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == data["id"])
        .cloned()
        .expect("listed");
    assert_eq!(listed["domain_ids"], data["domain_ids"]);

    // "All" is every domain the caller can see: a caller holding one domain
    // gets that one (other domains' names are not its to learn, not even
    // from a refusal).
    let one = s
        .create_scoped(
            &admin,
            acct,
            "a only",
            vec![grant(DOMAIN, "a.example", ADMIN)],
            vec![scope("tokens", ADMIN), scope("email", ADMIN)],
        )
        .await
        .unwrap()
        .secret;
    let before = s.list(&admin, acct).await.tokens.len();
    let r = http(h, "POST", "/v1/token", Some(&one), Some(&all)).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["data"]["domain_ids"], json!(["a.example"]));
    let r = http(
        h,
        "POST",
        "/v1/token",
        Some(&one),
        Some(&json!({"name": "b", "domain_id": ["a.example", "b.example"], "scopes": ["email_full"]})),
    )
    .await;
    assert_eq!(r.status, 403, "{:?}", r.json());
    assert_eq!(s.list(&admin, acct).await.tokens.len(), before + 1);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn openapi_document_is_served() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let r = http(s.http, "GET", "/openapi.json", None, None).await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for p in [
        "/api/api_tokens",
        "/api/api_tokens/{id}",
        "/api/api_tokens/{id}/reset",
        "/api/accounts/{account_id}/api_tokens",
        "/v1/token",
        "/v1/token/{token_id}",
        "/v1/token/{token_id}/settings",
    ] {
        assert!(paths.contains(&p), "{p} not in {paths:?}");
    }
}

/// Arbitrary JSON: any shape, keys that are field names or noise.
fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("project"),
            Just("domain"),
            Just("example.com"),
            Just("email_full"),
            Just("pause"),
            Just("2030-01-01T00:00:00Z"),
        ]
        .prop_map(|s| json!(s)),
    ];
    let key = prop_oneof![
        Just("name".to_string()),
        Just("resources".to_string()),
        Just("resource_type".to_string()),
        Just("resource_id".to_string()),
        Just("access_level".to_string()),
        Just("expires_at".to_string()),
        Just("domain_id".to_string()),
        Just("scopes".to_string()),
        Just("status".to_string()),
        "\\PC{0,8}",
    ];
    leaf.prop_recursive(4, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Fuzzing the facades' JSON over real HTTP: whatever the body (any JSON
/// value, or bytes that are not JSON), every route answers a documented
/// 4xx or 2xx with a JSON body, never a 5xx, and the server stays up.
#[test]
fn facades_survive_arbitrary_bodies() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = temp();
    let (s, admin, id) = rt.block_on(async {
        let s = TestServer::start(dir.path()).await;
        let (acct, admin) = s.account("Acme").await;
        s.register(&admin, acct, DOMAIN, "example.com", None).await;
        s.register(&admin, acct, PROJECT, "p1", None).await;
        let victim = s
            .create(&admin, acct, "victim", vec![grant(PROJECT, "p1", VIEWER)])
            .await
            .expect("create")
            .token
            .expect("token")
            .id;
        (s, admin, victim)
    });
    let routes: Vec<(&str, String)> = vec![
        ("POST", "/api/api_tokens".into()),
        ("POST", format!("/api/api_tokens/{id}/reset")),
        ("POST", "/v1/token".into()),
        ("PUT", format!("/v1/token/{id}")),
        ("PUT", format!("/v1/token/{id}/settings")),
    ];
    let cases = std::env::var("KEYWARD_REST_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let body = prop_oneof![
        3 => any_json().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ];
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    runner
        .run(&(0..routes.len(), body), |(route, body)| {
            let (method, path) = &routes[route];
            let req = format!(
                "{method} {path} HTTP/1.1\r\nhost: k\r\nconnection: close\r\nauthorization: Bearer {admin}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let mut raw = req.into_bytes();
            raw.extend_from_slice(&body);
            let r = rt.block_on(http_raw(s.http, &raw));
            *statuses.borrow_mut().entry(r.status).or_default() += 1;
            prop_assert!(
                matches!(r.status, 200 | 400 | 404 | 422),
                "{method} {path} {:?}: {} {}",
                String::from_utf8_lossy(&body),
                r.status,
                String::from_utf8_lossy(&r.body)
            );
            prop_assert!(serde_json::from_slice::<Value>(&r.body).is_ok());
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "facade fuzz: {cases} bodies, statuses {:?}",
        statuses.borrow()
    );
    // Still serving, and the caller's token still works.
    let r = rt.block_on(http(s.http, "GET", "/api/api_tokens", Some(&admin), None));
    assert_eq!(r.status, 200);
}
