//! Envoy ext_authz v3 `Check` through a real gRPC client built from
//! `envoy-types`, against a real server with a routes file: allowed, every
//! deny reason, unmatched routes, unsafe paths, a bad routes file, reload.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::google::protobuf::value::Kind as ValueKind;
use keyward::clock::ManualClock;
use keyward::pb::v1 as pb;
use keyward::server::ServeError;

const ROUTES: &str = r#"
unmatched = "deny"

[[routes]]
methods = ["GET", "HEAD"]
path = "/api/accounts/{account_id}/projects/{project_id}/**"
resource = "project"
id = "project_id"
account = "account_id"

[[routes]]
path = "/api/accounts/{account_id}/projects/{project_id}/**"
resource = "project"
id = "project_id"
account = "account_id"

[[routes]]
methods = ["POST"]
path = "/api/send/{domain}"
resource = "domain"
id = "domain"
level = "admin"
scope = "email"

[[routes]]
path = "/api/sandboxes/{sandbox}"
resource = "sandbox"
id = "sandbox"
"#;

async fn start(dir: &Path, routes: &str) -> Result<TestServer, ServeError> {
    let file = dir.join("routes.toml");
    std::fs::write(&file, routes).expect("write routes");
    let clock = Arc::new(ManualClock::new());
    let mut opts = options(&dir.join("data"), clock.clone());
    opts.routes_file = Some(file);
    TestServer::start_with(opts, clock).await
}

/// The outcome of one Check, as Envoy would act on it.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// 200 = let through; else the status Envoy sends back.
    status: u16,
    headers: HashMap<String, String>,
    /// Headers added to the response to the client (allowed requests).
    response: HashMap<String, String>,
    removed: Vec<String>,
    body: String,
    metadata: HashMap<String, String>,
}

async fn check(
    s: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Outcome, tonic::Status> {
    check_request(s, lean(method, path, headers)).await
}

/// A CheckRequest with only what keyward reads (and the host).
fn lean(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    host: "mail.example".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

async fn check_request(s: &TestServer, req: CheckRequest) -> Result<Outcome, tonic::Status> {
    let mut client = AuthorizationClient::new(s.channel.clone());
    let resp: CheckResponse = client.check(req).await?.into_inner();
    let code = resp.status.as_ref().map_or(-1, |s| s.code);
    let metadata = resp
        .dynamic_metadata
        .map(|m| {
            m.fields
                .into_iter()
                .map(|(k, v)| {
                    let v = match v.kind {
                        Some(ValueKind::NumberValue(n)) => format!("{n}"),
                        Some(ValueKind::StringValue(s)) => s,
                        other => format!("{other:?}"),
                    };
                    (k, v)
                })
                .collect()
        })
        .unwrap_or_default();
    let pairs = |hs: Vec<envoy_types::ext_authz::v3::pb::HeaderValueOption>| {
        hs.into_iter()
            .filter_map(|h| h.header)
            .map(|h| (h.key, h.value))
            .collect::<HashMap<_, _>>()
    };
    Ok(match resp.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            assert_eq!(code, 0, "an OK response has an OK status");
            Outcome {
                status: 200,
                headers: pairs(ok.headers),
                response: pairs(ok.response_headers_to_add),
                removed: ok.headers_to_remove,
                body: String::new(),
                metadata,
            }
        }
        Some(HttpResponse::DeniedResponse(d)) => {
            assert_ne!(code, 0, "a denial has a non-OK status");
            Outcome {
                status: d.status.map_or(0, |s| u16::try_from(s.code).unwrap_or(0)),
                headers: pairs(d.headers),
                response: HashMap::new(),
                removed: Vec::new(),
                body: d.body,
                metadata,
            }
        }
        other => panic!("unexpected http_response {other:?}"),
    })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn check_allows_and_denies_like_authorize() {
    let dir = temp();
    let s = start(dir.path(), ROUTES).await.expect("starts");
    let (acct, admin) = s.account("Acme").await;
    let (other, other_admin) = s.account("Other").await;
    s.register(&admin, acct, PROJECT, "p1", None).await;
    s.register(&admin, acct, SANDBOX, "s1", Some("p1")).await;
    s.register(&admin, acct, DOMAIN, "example.com", None).await;
    s.register(&other_admin, other, PROJECT, "p9", None).await;
    let viewer = s
        .create(&admin, acct, "viewer", vec![grant(PROJECT, "p1", VIEWER)])
        .await
        .unwrap();
    let viewer_id = viewer.token.as_ref().unwrap().id.to_string();
    let viewer = viewer.secret;
    let sender = s
        .create_scoped(
            &admin,
            acct,
            "sender",
            vec![grant(DOMAIN, "example.com", ADMIN)],
            vec![scope("email", ADMIN)],
        )
        .await
        .unwrap()
        .secret;
    let reader = s
        .create_scoped(
            &admin,
            acct,
            "reader",
            vec![grant(DOMAIN, "example.com", ADMIN)],
            vec![scope("domains", ADMIN)],
        )
        .await
        .unwrap()
        .secret;
    let a = acct.to_string();
    let messages = format!("/api/accounts/{a}/projects/p1/messages?page=2");

    // Allowed: ids on the upstream request (overwriting the client's), the
    // credential removed, the ids as dynamic metadata.
    let spoof = [
        ("authorization", bearer(&viewer)),
        ("x-keyward-account-id", "999".to_string()),
    ];
    let spoof: Vec<(&str, &str)> = spoof.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let o = check(&s, "GET", &messages, &spoof).await.unwrap();
    assert_eq!(o.status, 200, "{o:?}");
    assert_eq!(o.headers["x-keyward-token-id"], viewer_id);
    assert_eq!(o.headers["x-keyward-account-id"], a);
    assert!(o.removed.contains(&"authorization".to_string()));
    assert_eq!(o.metadata["token_id"], viewer_id);
    assert_eq!(o.metadata["account_id"], a);
    assert_eq!(
        o.metadata["route"],
        "/api/accounts/{account_id}/projects/{project_id}/**"
    );
    // Api-Token works too.
    let o = check(&s, "HEAD", &messages, &[("api-token", &viewer)])
        .await
        .unwrap();
    assert_eq!(o.status, 200);
    assert!(o.removed.contains(&"api-token".to_string()));
    // A sandbox is covered by its project's grant.
    let o = check(
        &s,
        "GET",
        "/api/sandboxes/s1",
        &[("authorization", &bearer(&viewer))],
    )
    .await
    .unwrap();
    assert_eq!(o.status, 200);
    // The right scope sends mail.
    let o = check(
        &s,
        "POST",
        "/api/send/example.com",
        &[("authorization", &bearer(&sender))],
    )
    .await
    .unwrap();
    assert_eq!(o.status, 200);

    // 401 {"error"} with www-authenticate.
    let paused = s
        .create(&admin, acct, "paused", vec![grant(PROJECT, "p1", VIEWER)])
        .await
        .unwrap();
    s.tokens()
        .pause_token(auth(
            pb::PauseTokenRequest {
                account_id: acct,
                token_id: paused.token.as_ref().unwrap().id,
            },
            &admin,
        ))
        .await
        .unwrap();
    let expiring = s
        .tokens()
        .create_token(auth(
            pb::CreateTokenRequest {
                rate_limits: Default::default(),
                account_id: acct,
                name: "expiring".into(),
                grants: vec![grant(PROJECT, "p1", VIEWER)],
                scopes: vec![],
                expires_at: Some(prost_types::Timestamp {
                    seconds: keyward::clock::Clock::now_ms(&*s.clock) / 1000 + 60,
                    nanos: 0,
                }),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    s.clock.advance_ms(120_000);
    // The viewer's token with its last character changed (to one it is
    // not: a token that already ends in 'A' must not stay itself).
    let last = if viewer.ends_with('A') { 'B' } else { 'A' };
    let unknown = format!("{}{last}", &viewer[..viewer.len() - 1]);
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (vec![], "missing credential"),
        (
            vec![("authorization", "Bearer nope".into())],
            "invalid token",
        ),
        (vec![("authorization", bearer(&unknown))], "invalid token"),
        (
            vec![("authorization", bearer(&paused.secret))],
            "token is paused",
        ),
        (
            vec![("authorization", bearer(&expiring))],
            "token has expired",
        ),
    ];
    for (headers, message) in cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let o = check(&s, "GET", &messages, &h).await.unwrap();
        assert_eq!(o.status, 401, "{message}: {o:?}");
        assert_eq!(o.headers["content-type"], "application/json");
        assert!(o.headers.contains_key("www-authenticate"));
        let body: serde_json::Value = serde_json::from_str(&o.body).unwrap();
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
        assert!(
            body["error"].as_str().unwrap().starts_with(message),
            "{body}"
        );
    }

    // 403 {"errors"}: no grant (level), wrong account, scope, unknown
    // resource, the path's account not the token's, no route, unsafe path.
    let v = bearer(&viewer);
    let r = bearer(&reader);
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("POST", messages.clone(), &v, "no access"),
        (
            "GET",
            "/api/accounts/1/projects/p9/x".replace('1', &a),
            &v,
            "another account",
        ),
        ("POST", "/api/send/example.com".into(), &r, "scopes"),
        (
            "GET",
            format!("/api/accounts/{a}/projects/nope/x"),
            &v,
            "no such resource",
        ),
        (
            "GET",
            format!("/api/accounts/{other}/projects/p1/x"),
            &v,
            "another account",
        ),
        ("GET", "/api/elsewhere".into(), &v, "no route"),
        (
            "GET",
            format!("/api/accounts/{a}/projects/p1/../p9"),
            &v,
            "not accepted",
        ),
        (
            "GET",
            format!("/api/accounts/{a}/projects/p1%2F..%2Fp9/x"),
            &v,
            "not accepted",
        ),
    ];
    for (method, path, token, message) in cases {
        let o = check(&s, method, &path, &[("authorization", token)])
            .await
            .unwrap();
        assert_eq!(o.status, 403, "{method} {path}: {o:?}");
        assert_eq!(o.headers["content-type"], "application/json");
        let body: serde_json::Value = serde_json::from_str(&o.body).unwrap();
        assert!(
            body["errors"].as_str().unwrap().contains(message),
            "{method} {path}: {body}"
        );
    }
    // A check without an HTTP request is denied, not an error.
    let mut client = AuthorizationClient::new(s.channel.clone());
    let r = client
        .check(CheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        r.http_response,
        Some(HttpResponse::DeniedResponse(_))
    ));

    // Revocation takes effect at once: delete, and the next Check is 401.
    s.delete(&admin, acct, viewer_id.parse().unwrap())
        .await
        .unwrap();
    let o = check(&s, "GET", &messages, &[("authorization", &v)])
        .await
        .unwrap();
    assert_eq!(o.status, 401);

    // Metrics count Check outcomes.
    let m = http(s.http, "GET", "/metrics", None, None).await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains("keyward_check_total{result=\"allow\"}"),
        "{text}"
    );
    assert!(text.contains("keyward_check_total{result=\"unsafe_path\"}"));
}

/// An allow tells the service when the token expires
/// (`x-keyward-token-expires-at`, RFC 3339) and, during a reset's grace
/// period, which token replaced it (`x-keyward-token-replaced-by`), so the
/// service can warn its client; a token with neither gets neither, and
/// whatever the client sent under those names is overwritten or removed.
#[tokio::test]
async fn an_allow_carries_the_expiry_and_the_successor() {
    let dir = temp();
    let s = start(dir.path(), ROUTES).await.expect("starts");
    let (acct, admin) = s.account("Acme").await;
    s.register(&admin, acct, PROJECT, "p1", None).await;
    let expires_s = keyward::clock::Clock::now_ms(&*s.clock) / 1000 + 7 * 24 * 3600;
    let created = s
        .tokens()
        .create_token(auth(
            pb::CreateTokenRequest {
                rate_limits: Default::default(),
                account_id: acct,
                name: "expiring".into(),
                grants: vec![grant(PROJECT, "p1", VIEWER)],
                scopes: vec![],
                expires_at: Some(prost_types::Timestamp {
                    seconds: expires_s,
                    nanos: 0,
                }),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let old_id = created.token.as_ref().unwrap().id;
    let path = format!("/api/accounts/{acct}/projects/p1/messages");
    let spoofed = |token: &str| {
        vec![
            ("authorization".to_string(), bearer(token)),
            (
                "x-keyward-token-expires-at".to_string(),
                "2099-01-01T00:00:00Z".to_string(),
            ),
            ("x-keyward-token-replaced-by".to_string(), "999".to_string()),
        ]
    };
    let at = |o: &Outcome| {
        let v = &o.headers["x-keyward-token-expires-at"];
        assert!(v.ends_with('Z'), "UTC: {v}");
        let t = humantime::parse_rfc3339(v).expect("RFC 3339");
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
    };
    let run = |headers: Vec<(String, String)>| {
        let s = &s;
        let path = path.clone();
        async move {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let o = check(s, "GET", &path, &h).await.unwrap();
            assert_eq!(o.status, 200, "{o:?}");
            o
        }
    };

    // Expires, not reset: the expiry; the client's successor removed.
    let o = run(spoofed(&created.secret)).await;
    assert_eq!(at(&o), u128::try_from(expires_s).unwrap() * 1000);
    assert!(
        !o.headers.contains_key("x-keyward-token-replaced-by"),
        "{o:?}"
    );
    assert!(o
        .removed
        .contains(&"x-keyward-token-replaced-by".to_string()));

    // Reset: the old token, in its grace, names its successor and the
    // grace's end (earlier than its own expiry).
    let reset_at = keyward::clock::Clock::now_ms(&*s.clock);
    let new = s
        .tokens()
        .reset_token(auth(
            pb::ResetTokenRequest {
                account_id: acct,
                token_id: old_id,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let new_id = new.token.as_ref().unwrap().id;
    let o = run(spoofed(&created.secret)).await;
    assert_eq!(o.headers["x-keyward-token-replaced-by"], new_id.to_string());
    assert_eq!(at(&o), u128::try_from(reset_at + 12 * 3600 * 1000).unwrap());
    assert_eq!(o.headers["x-keyward-token-id"], old_id.to_string());

    // The successor never expires and was not reset: neither header, both
    // removed from what the client sent.
    let o = run(spoofed(&new.secret)).await;
    assert_eq!(o.headers["x-keyward-token-id"], new_id.to_string());
    for h in ["x-keyward-token-expires-at", "x-keyward-token-replaced-by"] {
        assert!(!o.headers.contains_key(h), "{h}: {o:?}");
        assert!(o.removed.contains(&h.to_string()), "{h}: {o:?}");
    }
    // A denial carries neither.
    let o = check(
        &s,
        "POST",
        &path,
        &[("authorization", &bearer(&created.secret))],
    )
    .await
    .unwrap();
    assert_eq!(o.status, 403);
    assert!(!o.headers.contains_key("x-keyward-token-replaced-by"));
}

#[tokio::test]
async fn unmatched_allow_lets_through_without_ids() {
    let dir = temp();
    let routes = format!(
        "unmatched = \"allow\"\nstrip_credential = false\n{}",
        &ROUTES[ROUTES.find("[[routes]]").unwrap()..]
    );
    let s = start(dir.path(), &routes).await.expect("starts");
    let (acct, admin) = s.account("Acme").await;
    s.register(&admin, acct, PROJECT, "p1", None).await;
    let o = check(&s, "GET", "/healthz", &[("x-keyward-account-id", "1")])
        .await
        .unwrap();
    assert_eq!(o.status, 200);
    assert!(o.headers.is_empty());
    assert!(o.removed.contains(&"x-keyward-account-id".to_string()));
    assert!(o.removed.contains(&"x-keyward-token-id".to_string()));
    assert!(o
        .removed
        .contains(&"x-keyward-token-expires-at".to_string()));
    assert!(o
        .removed
        .contains(&"x-keyward-token-replaced-by".to_string()));
    // Matched routes are still checked; the credential stays when asked.
    let path = format!("/api/accounts/{acct}/projects/p1/x");
    let o = check(&s, "GET", &path, &[]).await.unwrap();
    assert_eq!(o.status, 401);
    let o = check(&s, "GET", &path, &[("authorization", &bearer(&admin))])
        .await
        .unwrap();
    assert_eq!(o.status, 200);
    assert!(
        !o.removed
            .iter()
            .any(|h| h == "authorization" || h == "api-token"),
        "{o:?}"
    );
    // Unsafe paths are denied even so.
    let o = check(&s, "GET", "/a/../b", &[]).await.unwrap();
    assert_eq!(o.status, 403);
}

/// `dynamic_metadata = false`: an allow carries the same headers and no
/// dynamic metadata (for meshes where nothing reads it, Envoy skips a
/// struct per request).
#[tokio::test]
async fn dynamic_metadata_can_be_left_out() {
    let dir = temp();
    let routes = format!("dynamic_metadata = false\n{ROUTES}");
    let s = start(dir.path(), &routes).await.expect("starts");
    let (acct, admin) = s.account("Acme").await;
    s.register(&admin, acct, PROJECT, "p1", None).await;
    let path = format!("/api/accounts/{acct}/projects/p1/x");
    let o = check(&s, "GET", &path, &[("authorization", &bearer(&admin))])
        .await
        .unwrap();
    assert_eq!(o.status, 200, "{o:?}");
    assert_eq!(o.headers["x-keyward-account-id"], acct.to_string());
    assert!(o.removed.contains(&"authorization".to_string()));
    assert!(o.metadata.is_empty(), "{o:?}");
}

#[tokio::test]
async fn a_bad_routes_file_refuses_to_start() {
    let dir = temp();
    let bad = "[[routes]]\npath = \"/a/{x}\"\nresource = \"project\"\nid = \"y\"\n";
    let e = start(dir.path(), bad).await.err().expect("refused");
    let text = e.to_string();
    assert!(matches!(e, ServeError::Routes(_)), "{text}");
    assert!(text.contains("routes.toml:4:"), "{text}");
    assert!(text.contains("{y}"), "{text}");
}

#[tokio::test]
async fn routes_reload_when_the_file_changes_and_bad_edits_are_refused() {
    let dir = temp();
    let s = start(dir.path(), ROUTES).await.expect("starts");
    let (acct, admin) = s.account("Acme").await;
    s.register(&admin, acct, PROJECT, "p1", None).await;
    let b = bearer(&admin);
    let h = [("authorization", b.as_str())];
    assert_eq!(
        check(&s, "GET", "/v2/projects/p1", &h)
            .await
            .unwrap()
            .status,
        403
    );

    // A new route: in force within a few polls.
    let file = dir.path().join("routes.toml");
    let added = format!(
        "{ROUTES}\n[[routes]]\npath = \"/v2/projects/{{p}}\"\nresource = \"project\"\nid = \"p\"\n"
    );
    std::fs::write(&file, &added).unwrap();
    let mut status = 0;
    for _ in 0..50 {
        status = check(&s, "GET", "/v2/projects/p1", &h)
            .await
            .unwrap()
            .status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "the new route took effect");

    // A broken edit: refused, the routes in force stay, Checks keep working.
    std::fs::write(&file, "[[routes]]\npath = 7\n").unwrap();
    let errors = |text: &str| metric(text, "keyward_routes_reloads_total{result=\"error\"}");
    let mut refused = false;
    for _ in 0..50 {
        let m = http(s.http, "GET", "/metrics", None, None).await;
        if errors(&String::from_utf8_lossy(&m.body)) >= 1.0 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the bad file was looked at and refused");
    assert_eq!(
        check(&s, "GET", "/v2/projects/p1", &h)
            .await
            .unwrap()
            .status,
        200
    );
}

/// The example routes file shipped in deploy/ loads.
#[test]
fn the_example_routes_file_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/routes.toml");
    if !path.exists() {
        panic!("{} is missing", path.display());
    }
    let routes = keyward::routes::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!routes.is_empty());
}

// ---------------------------------------------------------------- issue 15
//
// Paths and methods that could mean something else to the upstream than to
// keyward. Each attack family runs against deploy/routes.toml with
// `unmatched = "allow"` and with `unmatched = "deny"`: what is refused is
// refused whatever `unmatched` says.

/// A server with deploy/routes.toml (`unmatched` set to `mode`), account
/// Acme with project `pA` and domain `victim.com`, and its tokens.
struct Attacked {
    s: TestServer,
    _dir: tempfile::TempDir,
    mode: &'static str,
    /// Acme's account id.
    a: String,
    /// Acme's admin token (ADMIN on the account).
    admin: String,
    /// VIEWER on project pA only.
    project_viewer: String,
    /// VIEWER on the account.
    account_viewer: String,
    /// victim.com's own token (ADMIN on the domain).
    sender: String,
}

/// deploy/routes.toml with `unmatched = "<mode>"`.
fn deploy_routes(mode: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/routes.toml");
    let text = std::fs::read_to_string(&path).expect("deploy/routes.toml");
    assert!(text.contains("\nunmatched = \"deny\"\n"));
    text.replace(
        "\nunmatched = \"deny\"\n",
        &format!("\nunmatched = \"{mode}\"\n"),
    )
}

async fn attacked(mode: &'static str) -> Attacked {
    let dir = temp();
    let s = start(dir.path(), &deploy_routes(mode))
        .await
        .expect("starts");
    let (acct, admin) = s.account("Acme").await;
    s.register(&admin, acct, PROJECT, "pA", None).await;
    let sender = s
        .register(&admin, acct, DOMAIN, "victim.com", None)
        .await
        .expect("a domain token")
        .secret;
    let project_viewer = s
        .create(&admin, acct, "pv", vec![grant(PROJECT, "pA", VIEWER)])
        .await
        .unwrap()
        .secret;
    let account_viewer = s
        .create(
            &admin,
            acct,
            "av",
            vec![grant(ACCOUNT, &acct.to_string(), VIEWER)],
        )
        .await
        .unwrap()
        .secret;
    Attacked {
        s,
        _dir: dir,
        mode,
        a: acct.to_string(),
        admin,
        project_viewer,
        account_viewer,
        sender,
    }
}

impl Attacked {
    /// The status and body of `method path`, with `token` as a bearer
    /// credential (none when empty).
    async fn status(&self, method: &str, path: &str, token: &str) -> (u16, String) {
        let b = bearer(token);
        let headers: Vec<(&str, &str)> = if token.is_empty() {
            vec![]
        } else {
            vec![("authorization", &b)]
        };
        let o = check(&self.s, method, path, &headers).await.unwrap();
        (o.status, o.body)
    }

    /// `method path` with `token` is refused as an unsafe request: 403,
    /// saying so, whatever `unmatched` says.
    async fn refused(&self, method: &str, path: &str, token: &str) {
        let (status, body) = self.status(method, path, token).await;
        assert_eq!(
            (status, body.contains("not accepted")),
            (403, true),
            "unmatched={}: {method:?} {path:?} should be refused as unsafe: {body}",
            self.mode
        );
    }

    /// `method path` with `token` is answered `want` with a body containing
    /// `says` (a matched route's answer, not an unsafe or unmatched one).
    async fn answered(&self, method: &str, path: &str, token: &str, want: u16, says: &str) {
        let (status, body) = self.status(method, path, token).await;
        assert_eq!(
            (status, body.contains(says)),
            (want, true),
            "unmatched={}: {method} {path:?}: want {want} {says:?}, got {status} {body}",
            self.mode
        );
    }

    /// The unsafe_path count in /metrics.
    async fn unsafe_count(&self) -> f64 {
        let m = http(self.s.http, "GET", "/metrics", None, None).await;
        metric(
            &String::from_utf8_lossy(&m.body),
            "keyward_check_total{result=\"unsafe_path\"}",
        )
    }
}

/// A single trailing slash is checked exactly as the path without it (no
/// credential: 401, not unmatched); `//` anywhere is refused.
#[tokio::test]
async fn a_trailing_slash_is_checked_like_the_path_without_it() {
    for mode in ["allow", "deny"] {
        let w = attacked(mode).await;
        let send = "/api/domains/victim.com/send/";
        w.answered("POST", send, "", 401, "missing credential")
            .await;
        w.answered("POST", send, &w.project_viewer, 403, "no access")
            .await;
        w.answered("POST", send, &w.sender, 200, "").await;
        let a = &w.a;
        w.answered(
            "GET",
            &format!("/api/accounts/{a}/projects/pA/"),
            &w.project_viewer,
            200,
            "",
        )
        .await;
        w.answered(
            "DELETE",
            &format!("/api/accounts/{a}/projects/pA/"),
            &w.project_viewer,
            403,
            "no access",
        )
        .await;
        let before = w.unsafe_count().await;
        for path in [
            "/api/domains/victim.com/send//".to_string(),
            "//api/domains/victim.com/send".to_string(),
            format!("/api/accounts/{a}//projects/pA/x"),
            format!("/api/accounts/{a}/projects/pA//"),
        ] {
            w.refused("POST", &path, "").await;
            w.refused("POST", &path, &w.admin).await;
        }
        // At least these (the metrics are the process's: other tests
        // running at the same time count too).
        let counted = w.unsafe_count().await - before;
        assert!(counted >= 8.0, "{counted} counted as unsafe_path");
    }
}

/// Methods are case-sensitive upper-case tokens (RFC 9110): `post` is not
/// POST and is refused as unsafe, not treated as an unmatched method.
#[tokio::test]
async fn a_method_that_is_not_an_upper_case_token_is_refused() {
    for mode in ["allow", "deny"] {
        let w = attacked(mode).await;
        let send = "/api/domains/victim.com/send";
        for method in ["post", "Post", "get", "POST ", "PO ST", "", "GET\n"] {
            w.refused(method, send, "").await;
            w.refused(method, send, &w.sender).await;
        }
        w.answered("POST", send, "", 401, "missing credential")
            .await;
        w.answered("POST", send, &w.sender, 200, "").await;
    }
}

/// Literal segments match whatever their case (`/API/...`, `projectS`):
/// checked by the canonical route; ids keep their case (project ids are
/// case-sensitive).
#[tokio::test]
async fn literal_segments_match_whatever_their_case() {
    for mode in ["allow", "deny"] {
        let w = attacked(mode).await;
        let a = &w.a;
        w.answered(
            "POST",
            "/API/domains/victim.com/send",
            "",
            401,
            "missing credential",
        )
        .await;
        w.answered(
            "POST",
            "/Api/Domains/victim.com/SEND",
            &w.project_viewer,
            403,
            "no access",
        )
        .await;
        w.answered("POST", "/API/DOMAINS/victim.com/send", &w.sender, 200, "")
            .await;
        let deleted = format!("/api/accounts/{a}/projectS/pA");
        w.answered("DELETE", &deleted, "", 401, "missing credential")
            .await;
        w.answered("DELETE", &deleted, &w.project_viewer, 403, "no access")
            .await;
        w.answered("DELETE", &deleted, &w.admin, 200, "").await;
        w.answered(
            "GET",
            &format!("/API/Accounts/{a}/PROJECTS/pA/messages"),
            &w.project_viewer,
            200,
            "",
        )
        .await;
        // The id is passed as it is: PA is not pA.
        w.answered(
            "GET",
            &format!("/api/accounts/{a}/projects/PA/messages"),
            &w.project_viewer,
            403,
            "no such resource",
        )
        .await;
        // Users is checked by the users route (account ADMIN), not the
        // account's GET ** route an account VIEWER passes.
        w.answered(
            "GET",
            &format!("/api/accounts/{a}/USERS/list"),
            &w.account_viewer,
            403,
            "no access",
        )
        .await;
    }
}

/// `;` (path parameters: Tomcat and Spring resolve `..;` as `..`), `#` and
/// `\` are refused anywhere in the path; the query string is not judged.
#[tokio::test]
async fn semicolons_fragments_and_backslashes_are_refused() {
    for mode in ["allow", "deny"] {
        let w = attacked(mode).await;
        let a = &w.a;
        let before = w.unsafe_count().await;
        let paths = [
            "/api/domains/victim.com/send;x".to_string(),
            "/api/domains/victim.com;x/send".to_string(),
            format!("/api/accounts/{a}/projects/pA/..;/..;/users/list"),
            format!("/api/accounts/{a}/projects/pA;/x"),
            format!("/api/accounts/{a}/projects/pA/x#/../../users/list"),
            format!("/api/accounts/{a}/projects/pA#"),
            format!("/api/accounts/{a}/projects/pA/x?page=1#frag"),
            format!("/api/accounts/{a}/projects/pA/..\\..\\users"),
            format!("/api/accounts/{a}/projects/pA/x\\"),
        ];
        for path in &paths {
            w.refused("POST", path, "").await;
            w.refused("GET", path, &w.project_viewer).await;
        }
        // At least these (the metrics are the process's: other tests
        // running at the same time count too).
        let counted = w.unsafe_count().await - before;
        assert!(
            counted >= 2.0 * paths.len() as f64,
            "{counted} counted as unsafe_path"
        );
        // The query string is not judged.
        w.answered(
            "GET",
            &format!("/api/accounts/{a}/projects/pA/x?q=a;b%25c\\d//e/../f"),
            &w.project_viewer,
            200,
            "",
        )
        .await;
    }
}

/// Percent-encoded unreserved characters are decoded before matching
/// (`%75sers` is `users`); any other percent-encoding (`%25`, so
/// `%252e%252e`; `%2F`, `%3B`, `%00`, malformed) is refused, and so is a dot
/// segment spelled `%2e`.
#[tokio::test]
async fn percent_encoding_is_decoded_when_unreserved_and_refused_otherwise() {
    for mode in ["allow", "deny"] {
        let w = attacked(mode).await;
        let a = &w.a;
        // Decoded: the users route (account ADMIN) decides, not the
        // account's GET ** route that lets an account VIEWER through.
        w.answered(
            "GET",
            &format!("/api/accounts/{a}/%75sers/list"),
            &w.account_viewer,
            403,
            "no access",
        )
        .await;
        w.answered(
            "GET",
            &format!("/api/accounts/{a}/%75sers/list"),
            &w.admin,
            200,
            "",
        )
        .await;
        // Ids are decoded too: %70A is pA.
        w.answered(
            "GET",
            &format!("/api/accounts/{a}/projects/%70%41/x"),
            &w.project_viewer,
            200,
            "",
        )
        .await;
        w.answered(
            "POST",
            "/api/domains/victim%2Ecom/%73end",
            &w.sender,
            200,
            "",
        )
        .await;
        w.answered(
            "POST",
            "/api/domains/victim.com/%73end",
            "",
            401,
            "missing credential",
        )
        .await;
        for path in [
            format!("/api/accounts/{a}/projects/pA/%252e%252e/%252e%252e/users/list"),
            format!("/api/accounts/{a}/projects/pA/%2e%2e/%2e%2e/users/list"),
            format!("/api/accounts/{a}/projects/pA/.%2E/x"),
            format!("/api/accounts/{a}/projects/pA/%2e/x"),
            format!("/api/accounts/{a}/projects/pA%2Fx"),
            format!("/api/accounts/{a}/projects/pA%3Bx/y"),
            format!("/api/accounts/{a}/projects/pA%00/x"),
            format!("/api/accounts/{a}/projects/pA%20/x"),
            format!("/api/accounts/{a}/projects/pA%/x"),
            format!("/api/accounts/{a}/projects/pA%7/x"),
            format!("/api/accounts/{a}/projects/pA%zz/x"),
            format!("/api/accounts/{a}/projects/p%C3%A9/x"),
        ] {
            w.refused("GET", &path, &w.project_viewer).await;
            w.refused("POST", &path, "").await;
        }
    }
}

/// Everything this test binary logs at info and above, from every test,
/// through the binary's own subscriber.
fn capture() -> &'static Capture {
    log_capture("info")
}

/// A refused request is logged with its reason (its path without the query
/// string), within the log budget of its own category.
#[tokio::test]
async fn a_refused_request_is_logged_with_its_reason_within_a_budget() {
    let capture = capture();
    let w = attacked("allow").await;
    let a = &w.a;
    let cases = [
        (
            "GET",
            format!("/api/accounts/{a}/projects/pA/..;/users?api_token=kw_hidden"),
            "reason=\"semicolon\"",
        ),
        (
            "post",
            "/api/domains/victim.com/send".into(),
            "reason=\"method\"",
        ),
        (
            "GET",
            format!("/api/accounts/{a}/%252e%252e/users"),
            "reason=\"percent_encoding\"",
        ),
    ];
    // Other tests running at the same time spend the same budget: retry
    // across windows until each line is seen.
    for (method, path, reason) in &cases {
        let mut seen = false;
        for _ in 0..30 {
            w.refused(method, path, "").await;
            if capture
                .text()
                .lines()
                .any(|l| l.contains("check refused") && l.contains(reason))
            {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(seen, "no log line with {reason}:\n{}", capture.text());
    }
    let text = capture.text();
    assert!(
        !text.contains("kw_hidden"),
        "the query string was logged:\n{text}"
    );
    assert!(text.contains("path=\"/api/accounts/"), "{text}");
    // A flood: at most the category's budget (10 a second) and one
    // suppression line per window, whoever sends them (other tests' too).
    let category = |text: &str| {
        text.lines()
            .filter(|l| l.contains("check refused") || l.contains("(refused ext_authz requests)"))
            .count()
    };
    let start = std::time::Instant::now();
    let before = category(&capture.text());
    for _ in 0..300 {
        w.refused("GET", "/a/../b", "").await;
    }
    let windows = start.elapsed().as_secs_f64().ceil() + 1.0;
    let lines = category(&capture.text()) - before;
    assert!(
        (lines as f64) <= 11.0 * windows,
        "{lines} log lines for 300 refusals in {windows} windows"
    );
    println!("ext_authz: 300 refused requests, {lines} log lines");
}

/// A route's `cost` is taken from a limited token's budget; allows carry
/// `ratelimit-remaining`, a spent budget is a 429 with `retry-after` and
/// the `ratelimit-*` headers of the tightest limit; a denial for another
/// reason (here: the path names another account) spends nothing.
#[tokio::test]
async fn rate_limits_answer_429_with_headers() {
    let routes = r#"
[[routes]]
methods = ["POST"]
path = "/api/accounts/{account_id}/projects/{project_id}/send"
resource = "project"
id = "project_id"
account = "account_id"
cost = 2

[[routes]]
path = "/api/accounts/{account_id}/projects/{project_id}/**"
resource = "project"
id = "project_id"
account = "account_id"
"#;
    let dir = temp();
    let s = start(dir.path(), routes).await.expect("starts");
    let (acct, admin) = s.account("Acme").await;
    let (other, _) = s.account("Other").await;
    s.register(&admin, acct, PROJECT, "p1", None).await;
    let t = s
        .tokens()
        .create_token(auth(
            pb::CreateTokenRequest {
                account_id: acct,
                name: "limited".into(),
                grants: vec![grant(PROJECT, "p1", ADMIN)],
                scopes: vec![],
                expires_at: None,
                rate_limits: vec![pb::RateLimit {
                    name: "per_min".into(),
                    limit: 5,
                    period: Some(prost_types::Duration {
                        seconds: 60,
                        nanos: 0,
                    }),
                }],
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let b = bearer(&t.secret);
    let h = [("authorization", b.as_str())];
    let send = format!("/api/accounts/{acct}/projects/p1/send");
    // Another account in the path: 403, nothing spent.
    for _ in 0..3 {
        let o = check(
            &s,
            "POST",
            &format!("/api/accounts/{other}/projects/p1/send"),
            &h,
        )
        .await
        .unwrap();
        assert_eq!(o.status, 403, "{o:?}");
    }
    let o = check(&s, "POST", &send, &h).await.unwrap();
    assert_eq!(o.status, 200);
    assert_eq!(
        o.response.get("ratelimit-remaining").map(String::as_str),
        Some("3")
    );
    assert!(
        !o.headers.contains_key("ratelimit-remaining"),
        "not upstream"
    );
    let o = check(
        &s,
        "GET",
        &format!("/api/accounts/{acct}/projects/p1/x"),
        &h,
    )
    .await
    .unwrap();
    assert_eq!(
        o.response.get("ratelimit-remaining").map(String::as_str),
        Some("2")
    );
    let o = check(&s, "POST", &send, &h).await.unwrap();
    assert_eq!(o.status, 200);
    let o = check(&s, "POST", &send, &h).await.unwrap();
    assert_eq!(o.status, 429, "{o:?}");
    let hv = |n: &str| o.headers.get(n).map(String::as_str);
    // 0 left, 2 needed: 24 s (one unit per 12 s).
    assert_eq!(hv("retry-after"), Some("24"));
    assert_eq!(hv("ratelimit-limit"), Some("5"));
    assert_eq!(hv("ratelimit-remaining"), Some("0"));
    assert_eq!(hv("ratelimit-reset"), Some("60"));
    assert!(o.body.contains("rate limit"), "{}", o.body);
    s.clock.advance_ms(24_000);
    assert_eq!(check(&s, "POST", &send, &h).await.unwrap().status, 200);
    // An unlimited token gets no ratelimit header.
    let free = s
        .create(&admin, acct, "free", vec![grant(PROJECT, "p1", ADMIN)])
        .await
        .unwrap();
    let b = bearer(&free.secret);
    let o = check(&s, "POST", &send, &[("authorization", b.as_str())])
        .await
        .unwrap();
    assert_eq!(o.status, 200);
    assert!(o.response.is_empty(), "{:?}", o.response);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_route_cost_is_validated() {
    let dir = temp();
    for (cost, ok) in [
        ("-1", false),
        ("1000000000001", false),
        ("0", true),
        ("\"1\"", false),
    ] {
        let routes = format!(
            "[[routes]]\npath = \"/p/{{id}}\"\nresource = \"project\"\nid = \"id\"\ncost = {cost}\n"
        );
        let sub = dir.path().join(format!("c{}", cost.len()));
        std::fs::create_dir_all(&sub).unwrap();
        let r = start(&sub, &routes).await;
        assert_eq!(r.is_ok(), ok, "cost = {cost}");
        if let Ok(s) = r {
            s.stop().await.unwrap();
        }
    }
}

/// `req` with every other field Envoy can send set: the peers, the request
/// time, id, host, scheme, query, size, protocol, a body, thirty more
/// headers in both forms, context extensions, metadata, the TLS session.
fn fatten(mut req: CheckRequest) -> CheckRequest {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{Peer, TlsSession};
    use envoy_types::pb::google::protobuf::{Struct, Timestamp, Value};
    let peer = |name: &str| Peer {
        service: name.into(),
        labels: [("app".to_string(), name.to_string())].into(),
        principal: format!("spiffe://cluster.local/ns/default/sa/{name}"),
        certificate: "-----BEGIN CERTIFICATE-----\n".repeat(20),
        ..Default::default()
    };
    let meta = Metadata {
        filter_metadata: [(
            "envoy.filters.http.jwt_authn".to_string(),
            Struct {
                fields: [(
                    "sub".to_string(),
                    Value {
                        kind: Some(ValueKind::StringValue("s".repeat(500))),
                    },
                )]
                .into(),
            },
        )]
        .into(),
        ..Default::default()
    };
    let attrs = req.attributes.get_or_insert_with(Default::default);
    attrs.source = Some(peer("client"));
    attrs.destination = Some(peer("mail"));
    attrs.context_extensions = [("virtual_host".to_string(), "mail".to_string())].into();
    attrs.metadata_context = Some(meta.clone());
    attrs.route_metadata_context = Some(meta);
    attrs.tls_session = Some(TlsSession {
        sni: "mail.example".into(),
    });
    let r = attrs.request.get_or_insert_with(Default::default);
    r.time = Some(Timestamp {
        seconds: 1_800_000_000,
        nanos: 1,
    });
    let http = r.http.get_or_insert_with(Default::default);
    http.id = "4711".into();
    http.scheme = "https".into();
    http.query = "page=2".into();
    http.fragment = "top".into();
    http.size = 8192;
    http.protocol = "HTTP/2".into();
    http.body = "{\"to\": \"someone\"}".repeat(400);
    http.raw_body = vec![0xff; 2048];
    let mut list = Vec::new();
    for i in 0..30 {
        let (k, v) = (format!("x-extra-{i}"), "v".repeat(i * 10));
        http.headers.insert(k.clone(), v.clone());
        list.push(HeaderValue {
            key: k,
            value: String::new(),
            raw_value: v.into_bytes(),
        });
    }
    http.header_map
        .get_or_insert_with(HeaderMap::default)
        .headers
        .splice(0..0, list);
    req
}

/// A Check carrying everything else Envoy may send (peers, metadata, a
/// body, many headers, a raw header map) is decided exactly as the bare
/// request with only method, path and credential: keyward reads only those
/// fields and skips the rest on the wire.
#[tokio::test]
async fn a_check_carrying_every_other_field_is_decided_like_the_bare_one() {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    let dir = temp();
    let s = start(dir.path(), ROUTES).await.expect("starts");
    let (acct, admin) = s.account("Acme").await;
    s.register(&admin, acct, PROJECT, "p1", None).await;
    let viewer = s
        .create(&admin, acct, "viewer", vec![grant(PROJECT, "p1", VIEWER)])
        .await
        .unwrap()
        .secret;
    let path = format!("/api/accounts/{acct}/projects/p1/messages?page=2");
    let (auth, wrong) = (bearer(&viewer), bearer("kw_nope"));
    /// Method, path, headers, the status wanted.
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16);
    let cases: [Case<'_>; 6] = [
        ("GET", &path, vec![("authorization", &auth)], 200),
        ("GET", &path, vec![("api-token", &viewer)], 200),
        ("POST", &path, vec![("authorization", &auth)], 403),
        ("GET", &path, vec![("authorization", &wrong)], 401),
        ("GET", &path, vec![], 401),
        ("GET", "/nowhere", vec![("authorization", &auth)], 403),
    ];
    for (method, path, headers, want) in cases {
        let bare = check(&s, method, path, &headers).await.unwrap();
        assert_eq!(bare.status, want, "{method} {path}: {bare:?}");
        let fat = check_request(&s, fatten(lean(method, path, &headers)))
            .await
            .unwrap();
        assert_eq!(fat, bare, "{method} {path}");
        // The same headers only in Envoy's raw header map (any case).
        let mut raw = lean(method, path, &[]);
        let http = raw
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
            .unwrap();
        http.header_map = Some(HeaderMap {
            headers: headers
                .iter()
                .map(|(k, v)| HeaderValue {
                    key: k.to_uppercase(),
                    value: String::new(),
                    raw_value: v.as_bytes().to_vec(),
                })
                .collect(),
        });
        let fat = check_request(&s, fatten(raw)).await.unwrap();
        assert_eq!(fat, bare, "{method} {path} (header map)");
    }
}

/// Sends `bytes` as the message of a Check, whatever they are.
async fn raw_check(s: &TestServer, bytes: Vec<u8>) -> Result<CheckResponse, tonic::Status> {
    use prost::bytes::BufMut;
    use prost::Message;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Clone, Copy)]
    struct Raw;
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = CheckResponse;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }
    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for Raw {
        type Item = CheckResponse;
        type Error = tonic::Status;
        fn decode(
            &mut self,
            src: &mut DecodeBuf<'_>,
        ) -> Result<Option<CheckResponse>, tonic::Status> {
            CheckResponse::decode(src)
                .map(Some)
                .map_err(|e| tonic::Status::data_loss(e.to_string()))
        }
    }

    let mut grpc = tonic::client::Grpc::new(s.channel.clone());
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/envoy.service.auth.v3.Authorization/Check",
    );
    grpc.unary(tonic::Request::new(bytes), path, Raw)
        .await
        .map(tonic::Response::into_inner)
}

/// Bytes that are not a CheckRequest (cut short, a wrong wire type, a bad
/// key, a method that is not UTF-8) are the caller's error,
/// INVALID_ARGUMENT, not keyward's (INTERNAL, which prost's codec said);
/// the server goes on answering.
#[tokio::test]
async fn a_check_that_is_not_a_check_request_is_invalid_argument() {
    use prost::Message;
    let dir = temp();
    let s = start(dir.path(), ROUTES).await.expect("starts");
    let good = fatten(lean("GET", "/p", &[("authorization", "Bearer kw_x")])).encode_to_vec();
    let mut not_utf8 = lean("GET", "/p", &[]).encode_to_vec();
    let at = not_utf8.windows(3).position(|w| w == b"GET").unwrap();
    not_utf8[at] = 0xff;
    for (i, bytes) in [
        good[..good.len() / 2].to_vec(),
        vec![0x08, 0x01],
        vec![0x00],
        vec![0x0a, 0xff, 0xff],
        vec![0xff; 11],
        not_utf8,
    ]
    .into_iter()
    .enumerate()
    {
        let err = raw_check(&s, bytes).await.expect_err("not a CheckRequest");
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "case {i}: {err:?}"
        );
    }
    // The empty message is a CheckRequest without an HTTP request.
    let resp = raw_check(&s, Vec::new()).await.expect("answered");
    assert_eq!(resp.status.map(|s| s.code), Some(7), "permission denied");
    let o = check(&s, "GET", "/nowhere", &[])
        .await
        .expect("still serving");
    assert_eq!(o.status, 403);
}
