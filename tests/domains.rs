//! One canonical form for DOMAIN ids (issue 15, part 1): every spelling of a
//! domain (case, a trailing dot, Unicode or A-labels) names the same domain
//! on every way in (RegisterResource, Authorize, AuthorizeBatch, ext_authz
//! Check, both REST facades); what is not a host name (a port, an IP
//! address, `_`) is refused with a field error; and a store that already
//! holds two spellings of one domain refuses to start, naming both.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use keyward::clock::ManualClock;
use keyward::pb::v1 as pb;
use keyward::server::ServeError;
use pb::DenyReason;
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;

/// Spellings of `example.com` that are the same domain.
const SAME: [&str; 6] = [
    "EXAMPLE.com",
    "Example.Com",
    "example.com.",
    "EXAMPLE.COM.",
    "ｅｘａｍｐｌｅ．ｃｏｍ", // full-width: UTS 46 maps it to ASCII
    "example。com",           // an ideographic full stop is a dot
];

/// Spellings of `bücher.example` (its A-label form is `xn--bcher-kva.example`).
const BUCHER: [&str; 5] = [
    "bücher.example",
    "BÜCHER.example",
    "xn--bcher-kva.example",
    "XN--BCHER-KVA.EXAMPLE",
    "Bücher.Example.",
];

/// Domain ids that are not host names, each refused with a field error.
const NOT_HOST_NAMES: [&str; 12] = [
    "example.com:25",
    "example.com..",
    ".example.com",
    "exa mple.com",
    "exa_mple.com",
    "-example.com",
    "example-.com",
    "127.0.0.1",
    "[::1]",
    "user@example.com",
    "xn--zz.example",
    "a..b",
];

/// RegisterResource of a domain by `caller` in `account`.
async fn register(
    s: &TestServer,
    caller: &str,
    account: u64,
    id: &str,
) -> Result<pb::RegisterResourceResponse, tonic::Status> {
    s.resources()
        .register_resource(auth(
            pb::RegisterResourceRequest {
                account_id: account,
                resource: Some(rref(DOMAIN, id)),
                parent: None,
            },
            caller,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// The field a BadRequest detail names.
fn field_of(st: &tonic::Status) -> String {
    st.get_error_details()
        .bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_else(|| panic!("no BadRequest detail: {st:?}"))
}

/// Account A holds `example.com` and `bücher.example`; account B can
/// register no other spelling of either (ALREADY_EXISTS, as for the same
/// spelling), nor can A register one twice; ids that are not host names
/// are INVALID_ARGUMENT naming `resource.id`; a domain registered in
/// another spelling is stored, answered and named in its canonical form.
#[tokio::test]
async fn a_domain_has_one_owner_whatever_the_spelling() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, a_admin) = s.account("A").await;
    let (b, b_admin) = s.account("B").await;
    register(&s, &a_admin, a, "example.com").await.unwrap();
    for id in SAME {
        let st = assert_code(register(&s, &b_admin, b, id).await, Code::AlreadyExists);
        println!("B registers {id:?}: {}", st.message());
        assert_code(register(&s, &a_admin, a, id).await, Code::AlreadyExists);
    }
    let bucher = register(&s, &a_admin, a, "bücher.example").await.unwrap();
    assert_eq!(
        bucher.resource.unwrap().id,
        "xn--bcher-kva.example",
        "a Unicode spelling is stored as its A-labels"
    );
    for id in BUCHER {
        assert_code(register(&s, &b_admin, b, id).await, Code::AlreadyExists);
        assert_code(register(&s, &a_admin, a, id).await, Code::AlreadyExists);
    }
    for id in NOT_HOST_NAMES {
        let st = assert_code(register(&s, &b_admin, b, id).await, Code::InvalidArgument);
        assert_eq!(field_of(&st), "resource.id", "{id:?}");
        println!("B registers {id:?}: {}", st.message());
    }
    // The port is named as the reason, not just "bad characters".
    let st = assert_code(
        register(&s, &b_admin, b, "example.com:25").await,
        Code::InvalidArgument,
    );
    assert!(st.message().contains("port"), "{}", st.message());

    // B's account holds none of them.
    let listed = s.list(&b_admin, b).await;
    assert_eq!(listed.tokens.len(), 1, "only B's admin token: {listed:?}");

    // Registered in another spelling: stored, answered and named canonical.
    let shop = register(&s, &b_admin, b, "Shop.EXAMPLE.").await.unwrap();
    assert_eq!(shop.resource.unwrap().id, "shop.example");
    let token = shop.domain_token.unwrap().token.unwrap();
    assert_eq!(token.name, format!("shop.example token {}", token.id));
    assert_eq!(
        token.grants[0].resource.as_ref().unwrap().id,
        "shop.example"
    );
    assert_code(
        register(&s, &a_admin, a, "shop.example").await,
        Code::AlreadyExists,
    );

    // DeleteResource takes any spelling too.
    s.resources()
        .delete_resource(auth(
            pb::DeleteResourceRequest {
                account_id: b,
                resource: Some(rref(DOMAIN, "SHOP.example")),
            },
            &b_admin,
        ))
        .await
        .expect("delete by another spelling");
    register(&s, &a_admin, a, "shop.example").await.unwrap();
    // The audit log names the domain as stored, whatever the spelling sent.
    let events = keyward::pb::v1::audit_client::AuditClient::new(s.channel.clone())
        .list_audit_events(auth(
            pb::ListAuditEventsRequest {
                account_id: b,
                ..Default::default()
            },
            &b_admin,
        ))
        .await
        .expect("audit")
        .into_inner()
        .events;
    let shop: Vec<_> = events
        .iter()
        .filter(|e| e.resource.contains("hop."))
        .map(|e| (e.action.as_str(), e.resource.as_str()))
        .collect();
    assert_eq!(
        shop,
        [
            ("RegisterResource", "domain/shop.example"),
            ("DeleteResource", "domain/shop.example")
        ],
        "{events:?}"
    );
    s.stop().await.unwrap();
}

/// Authorize and AuthorizeBatch decide every spelling as the canonical
/// one: A's domain token is allowed on all of them, B's tokens on none; an
/// id that is not a host name is a denial (UNKNOWN_RESOURCE), not an error.
#[tokio::test]
async fn authorize_decides_every_spelling_as_the_canonical_one() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, a_admin) = s.account("A").await;
    let (b, b_admin) = s.account("B").await;
    let a_domain = register(&s, &a_admin, a, "example.com")
        .await
        .unwrap()
        .domain_token
        .unwrap()
        .secret;
    let a_bucher = register(&s, &a_admin, a, "xn--bcher-kva.example")
        .await
        .unwrap()
        .domain_token
        .unwrap()
        .secret;
    // Whatever B tried to register (refused since the fix).
    let mut b_tokens = vec![b_admin.clone()];
    for id in SAME.iter().chain(&BUCHER).chain(&["example.com:25"]) {
        if let Ok(r) = register(&s, &b_admin, b, id).await {
            b_tokens.extend(r.domain_token.map(|t| t.secret));
        }
    }
    for id in std::iter::once(&"example.com").chain(&SAME) {
        let d = s.check(&a_domain, DOMAIN, id, ADMIN).await;
        assert!(d.allowed, "A's domain token on {id:?}: {d:?}");
        for t in &b_tokens {
            let d = s.check(t, DOMAIN, id, ADMIN).await;
            assert!(!d.allowed, "B's token on {id:?}: {d:?}");
            assert_eq!(d.reason, DenyReason::WrongAccount as i32, "{id:?}");
        }
    }
    for id in BUCHER {
        let d = s.check(&a_bucher, DOMAIN, id, ADMIN).await;
        assert!(d.allowed, "A's bücher token on {id:?}: {d:?}");
        for t in &b_tokens {
            assert!(!s.check(t, DOMAIN, id, ADMIN).await.allowed, "{id:?}");
        }
    }
    for id in NOT_HOST_NAMES {
        let d = s.check(&a_domain, DOMAIN, id, ADMIN).await;
        assert!(!d.allowed, "{id:?}: {d:?}");
        assert_eq!(d.reason, DenyReason::UnknownResource as i32, "{id:?}");
    }
    // The account's admin token covers the domain in any spelling, too.
    assert!(
        s.check(&a_admin, DOMAIN, "EXAMPLE.COM", VIEWER)
            .await
            .allowed
    );

    // AuthorizeBatch: the same decisions.
    let checks: Vec<pb::AuthorizeRequest> = SAME
        .iter()
        .map(|id| pb::AuthorizeRequest {
            cost: Default::default(),
            token: a_domain.clone(),
            resource: Some(rref(DOMAIN, id)),
            level: ADMIN,
            scope: String::new(),
        })
        .chain(std::iter::once(pb::AuthorizeRequest {
            cost: Default::default(),
            token: b_admin.clone(),
            resource: Some(rref(DOMAIN, "EXAMPLE.com")),
            level: ADMIN,
            scope: String::new(),
        }))
        .collect();
    let out = s
        .authorizer()
        .authorize_batch(pb::AuthorizeBatchRequest { checks })
        .await
        .expect("batch")
        .into_inner();
    let allowed: Vec<bool> = out.decisions.iter().map(|d| d.allowed).collect();
    let mut want = vec![true; SAME.len()];
    want.push(false);
    assert_eq!(allowed, want, "{:?}", out.decisions);
    s.stop().await.unwrap();
}

const ROUTES: &str = r#"
unmatched = "deny"

[[routes]]
methods = ["POST"]
path = "/api/domains/{domain}/send"
resource = "domain"
id = "domain"
level = "admin"
"#;

/// The status Envoy would act on for one Check (200 = let through).
async fn envoy_check(s: &TestServer, path: &str, token: &str) -> u16 {
    let bearer = format!("Bearer {token}");
    let req = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: path.into(),
                    host: "mail.example".into(),
                    headers: [("authorization".to_string(), bearer)].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let resp = AuthorizationClient::new(s.channel.clone())
        .check(req)
        .await
        .expect("check")
        .into_inner();
    match resp.http_response {
        Some(HttpResponse::OkResponse(_)) => 200,
        Some(HttpResponse::DeniedResponse(d)) => {
            d.status.map_or(0, |s| u16::try_from(s.code).unwrap_or(0))
        }
        _ => 0,
    }
}

/// ext_authz Check: the id a route captures from the path is a spelling
/// like any other: `POST /api/domains/EXAMPLE.com/send` is let through for
/// A's token and refused (403) for B's, whatever B tried to register.
#[tokio::test]
async fn ext_authz_captures_are_canonical_too() {
    let dir = temp();
    let routes = dir.path().join("routes.toml");
    std::fs::write(&routes, ROUTES).unwrap();
    let clock = Arc::new(ManualClock::new());
    let mut opts = options(&dir.path().join("data"), clock.clone());
    opts.routes_file = Some(routes);
    let s = TestServer::start_with(opts, clock).await.expect("starts");
    let (a, a_admin) = s.account("A").await;
    let (b, b_admin) = s.account("B").await;
    let a_domain = register(&s, &a_admin, a, "example.com")
        .await
        .unwrap()
        .domain_token
        .unwrap()
        .secret;
    let b_domain = register(&s, &b_admin, b, "EXAMPLE.com")
        .await
        .ok()
        .and_then(|r| r.domain_token)
        .map(|t| t.secret);
    assert!(b_domain.is_none(), "B registered A's domain in capitals");
    for path in [
        "/api/domains/example.com/send",
        "/api/domains/EXAMPLE.com/send",
        "/api/domains/Example.Com/send",
        "/api/domains/example.com./send",
    ] {
        assert_eq!(envoy_check(&s, path, &a_domain).await, 200, "A on {path}");
        assert_eq!(envoy_check(&s, path, &b_admin).await, 403, "B on {path}");
    }
    assert_eq!(
        envoy_check(&s, "/api/domains/example.com:25/send", &a_domain).await,
        403,
        "a port is not part of a domain"
    );
    s.stop().await.unwrap();
}

/// Both REST facades build the same gRPC messages: a grant on
/// `EXAMPLE.COM` (Mailtrap `resources`, MailerSend `domain_id`) is stored
/// as `example.com` and works there.
#[tokio::test]
async fn rest_facades_store_grants_canonical() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    register(&s, &admin, a, "example.com").await.unwrap();
    let h = s.http;

    let body = json!({
        "name": "mailtrap",
        "resources": [{"resource_type": "domain", "resource_id": "EXAMPLE.COM", "access_level": 100}],
    });
    let r = http(h, "POST", "/api/api_tokens", Some(&admin), Some(&body)).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let created = r.json();
    assert_eq!(created["resources"][0]["resource_id"], "example.com");
    let mailtrap = created["token"].as_str().unwrap().to_string();
    assert!(
        s.check(&mailtrap, DOMAIN, "example.com", ADMIN)
            .await
            .allowed
    );

    let body = json!({"name": "mailersend", "domain_id": "EXAMPLE.COM.", "scopes": ["email_full"]});
    let r = http(h, "POST", "/v1/token", Some(&admin), Some(&body)).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let mailersend = r.json()["data"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        s.check_scope(&mailersend, DOMAIN, "example.com", ADMIN, "email")
            .await
            .allowed
    );

    // What the store holds (and gRPC shows): the canonical spelling only.
    let listed = s.list(&admin, a).await;
    for t in &listed.tokens {
        for g in &t.grants {
            let id = &g.resource.as_ref().unwrap().id;
            assert!(!id.contains("EXAMPLE"), "{} holds {id}", t.name);
        }
    }
    let held: Vec<&str> = listed
        .tokens
        .iter()
        .filter(|t| t.name.starts_with("mail"))
        .flat_map(|t| &t.grants)
        .map(|g| g.resource.as_ref().unwrap().id.as_str())
        .collect();
    assert_eq!(held, ["example.com", "example.com"]);

    // A spelling that is not a host name is the facade's field error.
    let body = json!({
        "name": "x",
        "resources": [{"resource_type": "domain", "resource_id": "example.com:25", "access_level": 100}],
    });
    let r = http(h, "POST", "/api/api_tokens", Some(&admin), Some(&body)).await;
    assert_eq!(r.status, 422, "{:?}", r.json());
    s.stop().await.unwrap();
}

/// Writes a domain record for `account` straight into the stopped
/// server's store (sled, or the test database), as data written before
/// domain ids were canonical would be.
async fn plant(dir: &Path, account: u64, ids: &[&str]) {
    use prost::Message;
    let records = ids.iter().map(|id| keyward::pb::store::ResourceRecord {
        account_id: account,
        resource_type: DOMAIN as i32,
        id: id.to_string(),
        parent_type: ACCOUNT as i32,
        parent_id: account.to_string(),
    });
    if let Some(pg) = pg_client(dir).await {
        for record in records {
            pg.execute(
                "INSERT INTO keyward_resources (account_id, kind, id, record) VALUES ($1, $2, $3, $4)",
                &[
                    &i64::try_from(account).unwrap(),
                    &record.resource_type,
                    &record.id,
                    &record.encode_to_vec(),
                ],
            )
            .await
            .expect("insert a resource row");
        }
        return;
    }
    let db = sled::open(dir).unwrap();
    let resources = db.open_tree("resources").unwrap();
    for record in records {
        let mut key = account.to_be_bytes().to_vec();
        key.push(3); // the DOMAIN slot
        key.extend_from_slice(record.id.as_bytes());
        resources.insert(key, record.encode_to_vec()).unwrap();
    }
    db.flush().unwrap();
}

/// Starts on `dir` expecting a refusal; its message.
async fn refused(dir: &Path) -> String {
    let clock = Arc::new(ManualClock::new());
    let err: ServeError = TestServer::start_with(options(dir, clock.clone()), clock)
        .await
        .err()
        .expect("refuses to start");
    let msg = err.to_string();
    println!("refused: {msg}");
    msg
}

/// A store written before this rule, holding two spellings of one domain
/// in two accounts, refuses to start and names both accounts and both
/// spellings rather than merge them; so does one account holding two
/// spellings; and one record in a non-canonical spelling is refused with
/// what to do about it.
#[tokio::test]
async fn a_store_with_two_spellings_of_a_domain_refuses_to_start() {
    // Two accounts.
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, a_admin) = s.account("A").await;
    let (b, _) = s.account("B").await;
    register(&s, &a_admin, a, "example.com").await.unwrap();
    s.stop().await.unwrap();
    plant(dir.path(), b, &["EXAMPLE.com"]).await;
    let msg = refused(dir.path()).await;
    for want in [
        "example.com",
        "EXAMPLE.com",
        &format!("account {a}"),
        &format!("account {b}"),
    ] {
        assert!(msg.contains(want), "{want:?} not in {msg}");
    }

    // One account, two spellings.
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, _) = s.account("A").await;
    s.stop().await.unwrap();
    plant(dir.path(), a, &["Example.com", "example.com."]).await;
    let msg = refused(dir.path()).await;
    for want in ["Example.com", "example.com.", &format!("account {a}")] {
        assert!(msg.contains(want), "{want:?} not in {msg}");
    }

    // One record in a spelling that is not canonical: named, with the fix.
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, _) = s.account("A").await;
    s.stop().await.unwrap();
    plant(dir.path(), a, &["Example.com"]).await;
    let msg = refused(dir.path()).await;
    for want in ["Example.com", "example.com", &format!("account {a}")] {
        assert!(msg.contains(want), "{want:?} not in {msg}");
    }
    assert!(msg.contains("DeleteResource"), "says what to do: {msg}");
}
