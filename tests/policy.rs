//! An account's token policy (issue 18, item 2): `max_token_lifetime` and
//! `require_expiry`, set with `UpdateAccount` by an account admin, enforced
//! whenever an expiry is written (create, reset, update) over gRPC and both
//! REST facades with a field error naming the policy; and `ListTokens`
//! filtered by `expiring_before`. Real server on 127.0.0.1:0, real gRPC
//! and HTTP clients, the manual clock.

mod common;

use common::*;
use keyward::clock::Clock;
use keyward::pb::v1 as pb;
use keyward::pb::v1::audit_client::AuditClient;
use prost_types::{Duration, FieldMask, Timestamp};
use serde_json::json;
use tonic::Code;

const HOUR_MS: i64 = 3600 * 1000;
const DAY_S: i64 = 24 * 3600;

fn at(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).expect("nanos"),
    }
}

fn days(n: i64) -> Option<Duration> {
    Some(Duration {
        seconds: n * DAY_S,
        nanos: 0,
    })
}

fn policy(lifetime: Option<Duration>, require_expiry: bool) -> Option<pb::AccountPolicy> {
    Some(pb::AccountPolicy {
        max_token_lifetime: lifetime,
        require_expiry,
    })
}

async fn update_account(
    s: &TestServer,
    caller: &str,
    account_id: u64,
    policy: Option<pb::AccountPolicy>,
    paths: &[&str],
) -> Result<pb::Account, tonic::Status> {
    s.accounts()
        .update_account(auth(
            pb::UpdateAccountRequest {
                account_id,
                name: "Renamed".into(),
                policy,
                update_mask: Some(FieldMask {
                    paths: paths.iter().map(|p| (*p).to_string()).collect(),
                }),
            },
            caller,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn get_account(s: &TestServer, caller: &str, account_id: u64) -> pb::Account {
    s.accounts()
        .get_account(auth(pb::GetAccountRequest { account_id }, caller))
        .await
        .expect("get account")
        .into_inner()
}

async fn create_expiring(
    s: &TestServer,
    caller: &str,
    account_id: u64,
    expires_at: Option<Timestamp>,
) -> Result<pb::TokenWithSecret, tonic::Status> {
    s.tokens()
        .create_token(auth(
            pb::CreateTokenRequest {
                rate_limits: Default::default(),
                account_id,
                name: "ci".into(),
                grants: vec![grant(PROJECT, "p", VIEWER)],
                scopes: vec![],
                expires_at,
            },
            caller,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// The one field error of an INVALID_ARGUMENT: (field, description).
fn field_error(st: &tonic::Status) -> (String, String) {
    use tonic_types::StatusExt;
    let details = st.get_error_details();
    let v = details
        .bad_request()
        .and_then(|b| b.field_violations.first())
        .unwrap_or_else(|| panic!("no BadRequest detail: {st:?}"));
    (v.field.clone(), v.description.clone())
}

fn now(s: &TestServer) -> i64 {
    s.clock.now_ms()
}

/// An account with project "p": (account, its admin's secret).
async fn world(s: &TestServer) -> (u64, String) {
    let (a, admin) = s.account("A").await;
    s.register(&admin, a, PROJECT, "p", None).await;
    (a, admin)
}

#[tokio::test]
async fn update_account_sets_shows_and_clears_the_policy() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = world(&s).await;

    let fresh = get_account(&s, &admin, a).await;
    assert_eq!(fresh.policy, policy(None, false), "no policy by default");

    let got = update_account(&s, &admin, a, policy(days(30), true), &["policy"])
        .await
        .expect("an account admin sets the policy");
    assert_eq!(got.policy, policy(days(30), true));
    assert_eq!(got.name, "A", "only the masked fields change");
    assert_eq!(get_account(&s, &admin, a).await.policy, got.policy);
    let listed = s
        .accounts()
        .list_accounts(auth(pb::ListAccountsRequest::default(), &s.root()))
        .await
        .unwrap()
        .into_inner();
    let listed = listed.accounts.iter().find(|x| x.id == a).expect("listed");
    assert_eq!(listed.policy, got.policy);

    // One sub-field alone: the other keeps its value; unset clears it.
    let got = update_account(&s, &admin, a, None, &["policy.max_token_lifetime"])
        .await
        .unwrap();
    assert_eq!(got.policy, policy(None, true));
    let got = update_account(
        &s,
        &admin,
        a,
        policy(None, false),
        &["policy.require_expiry", "name"],
    )
    .await
    .unwrap();
    assert_eq!(got.policy, policy(None, false));
    assert_eq!(got.name, "Renamed");

    // Audited.
    let events = AuditClient::new(s.channel.clone())
        .list_audit_events(auth(
            pb::ListAuditEventsRequest {
                account_id: a,
                page_size: 1000,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    let updates = events
        .iter()
        .filter(|e| e.action == "UpdateAccount" && e.outcome == "OK")
        .count();
    assert_eq!(updates, 3, "{events:?}");

    // It survives a restart (stored with the account).
    update_account(&s, &admin, a, policy(days(7), true), &["policy"])
        .await
        .unwrap();
    s.stop().await.unwrap();
    let s = TestServer::start(dir.path()).await;
    assert_eq!(
        get_account(&s, &admin, a).await.policy,
        policy(days(7), true)
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn only_root_or_an_unrestricted_account_admin_sets_the_policy() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = world(&s).await;
    let (b, other) = s.account("B").await;
    let acct = a.to_string();
    let scoped = s
        .create_scoped(
            &admin,
            a,
            "scoped admin",
            vec![grant(ACCOUNT, &acct, ADMIN)],
            vec![scope("tokens", ADMIN)],
        )
        .await
        .expect("create")
        .secret;
    let viewer = s
        .create(&admin, a, "viewer", vec![grant(ACCOUNT, &acct, VIEWER)])
        .await
        .expect("create")
        .secret;
    let set = policy(days(1), true);
    for (who, caller, account) in [
        ("a scope-restricted admin", &scoped, a),
        ("an account VIEWER", &viewer, a),
        ("another account's admin", &other, a),
        ("this account's admin, on another account", &admin, b),
    ] {
        let st = assert_code(
            update_account(&s, caller, account, set, &["policy"]).await,
            Code::PermissionDenied,
        );
        assert!(!st.message().is_empty(), "{who}");
    }
    assert_eq!(get_account(&s, &admin, a).await.policy, policy(None, false));
    let got = update_account(&s, &s.root(), b, set, &["policy"])
        .await
        .expect("root");
    assert_eq!(got.policy, set);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn bad_policies_and_masks_are_refused_and_change_nothing() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = world(&s).await;
    update_account(&s, &admin, a, policy(days(30), false), &["policy"])
        .await
        .unwrap();
    let cases: [(Option<pb::AccountPolicy>, &[&str], &str); 6] = [
        (
            policy(days(-1), false),
            &["policy"],
            "policy.max_token_lifetime",
        ),
        (
            policy(days(5 * 366), false),
            &["policy"],
            "policy.max_token_lifetime",
        ),
        (
            policy(
                Some(Duration {
                    seconds: 1,
                    nanos: -1,
                }),
                false,
            ),
            &["policy.max_token_lifetime"],
            "policy.max_token_lifetime",
        ),
        (
            policy(None, true),
            &["policy.nonsense"],
            "update_mask.paths[0]",
        ),
        (policy(None, true), &[], "update_mask"),
        (policy(None, true), &["name", "policy"], "name"),
    ];
    for (p, paths, field) in cases {
        let mut req = pb::UpdateAccountRequest {
            account_id: a,
            name: "Renamed".into(),
            policy: p,
            update_mask: Some(FieldMask {
                paths: paths.iter().map(|p| (*p).to_string()).collect(),
            }),
        };
        if field == "name" {
            req.name = " ".into();
        }
        let st = assert_code(
            s.accounts().update_account(auth(req, &admin)).await,
            Code::InvalidArgument,
        );
        assert_eq!(field_error(&st).0, field, "{}", st.message());
    }
    let kept = get_account(&s, &admin, a).await;
    assert_eq!(kept.policy, policy(days(30), false));
    assert_eq!(kept.name, "A");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn the_policy_is_enforced_on_create_reset_and_update_over_grpc() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = world(&s).await;
    // A token made before the policy, with no expiry: it keeps working,
    // and a change that writes no expiry (a rename) is allowed.
    let before = create_expiring(&s, &admin, a, None).await.unwrap();
    let before_id = before.token.as_ref().unwrap().id;
    update_account(&s, &admin, a, policy(days(30), false), &["policy"])
        .await
        .unwrap();
    let tokens_before = s.list(&admin, a).await.tokens.len();

    // Create: no expiry, or one past 30 days, is refused naming the policy.
    let st = assert_code(
        create_expiring(&s, &admin, a, None).await,
        Code::InvalidArgument,
    );
    let (field, why) = field_error(&st);
    assert_eq!(field, "expires_at");
    assert!(
        why.contains("max_token_lifetime") && why.contains("2592000s"),
        "{why}"
    );
    let too_far = at(now(&s) + 30 * 24 * HOUR_MS + 1000);
    let st = assert_code(
        create_expiring(&s, &admin, a, Some(too_far)).await,
        Code::InvalidArgument,
    );
    assert!(field_error(&st).1.contains("max_token_lifetime"));
    assert_eq!(
        s.list(&admin, a).await.tokens.len(),
        tokens_before,
        "nothing made"
    );
    let ok = create_expiring(&s, &admin, a, Some(at(now(&s) + 24 * HOUR_MS)))
        .await
        .expect("within the policy");
    let ok_id = ok.token.as_ref().unwrap().id;

    // Update: setting a far expiry or clearing it is refused; a nearer one
    // is fine; a rename of the old never-expiring token still works.
    let set_expiry = |token_id: u64, expires_at: Option<Timestamp>| {
        let req = pb::UpdateTokenRequest {
            account_id: a,
            token_id,
            expires_at,
            update_mask: Some(FieldMask {
                paths: vec!["expires_at".into()],
            }),
            ..Default::default()
        };
        let mut c = s.tokens();
        let admin = admin.clone();
        async move { c.update_token(auth(req, &admin)).await }
    };
    let st = assert_code(set_expiry(ok_id, None).await, Code::InvalidArgument);
    assert!(field_error(&st).1.contains("max_token_lifetime"));
    assert_code(
        set_expiry(ok_id, Some(at(now(&s) + 31 * 24 * HOUR_MS))).await,
        Code::InvalidArgument,
    );
    set_expiry(before_id, Some(at(now(&s) + 2 * HOUR_MS)))
        .await
        .expect("bringing an old token under the policy");
    let renamed = s
        .tokens()
        .update_token(auth(
            pb::UpdateTokenRequest {
                account_id: a,
                token_id: ok_id,
                name: "renamed".into(),
                update_mask: Some(FieldMask {
                    paths: vec!["name".into()],
                }),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("a rename writes no expiry");
    assert_eq!(renamed.into_inner().name, "renamed");

    // Reset: the new token's expiry follows the policy too.
    let reset = |expires_at: Option<Timestamp>| {
        let req = pb::ResetTokenRequest {
            account_id: a,
            token_id: ok_id,
            expires_at,
            grace: None,
        };
        let mut c = s.tokens();
        let admin = admin.clone();
        async move { c.reset_token(auth(req, &admin)).await }
    };
    let st = assert_code(reset(None).await, Code::InvalidArgument);
    assert_eq!(field_error(&st).0, "expires_at");
    assert!(
        s.check(&ok.secret, PROJECT, "p", VIEWER).await.allowed,
        "not reset"
    );
    reset(Some(at(now(&s) + 24 * HOUR_MS)))
        .await
        .expect("a reset within the policy");

    // require_expiry alone: any expiry (up to 5 years), but one.
    update_account(&s, &admin, a, policy(None, true), &["policy"])
        .await
        .unwrap();
    let st = assert_code(
        create_expiring(&s, &admin, a, None).await,
        Code::InvalidArgument,
    );
    assert!(field_error(&st).1.contains("require_expiry"));
    create_expiring(&s, &admin, a, Some(at(now(&s) + 4 * 365 * 24 * HOUR_MS)))
        .await
        .expect("far, but an expiry");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn the_policy_is_enforced_on_both_rest_facades() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = world(&s).await;
    s.register(&admin, a, DOMAIN, "example.com", None).await;
    update_account(&s, &admin, a, policy(days(1), false), &["policy"])
        .await
        .unwrap();
    let h = s.http;
    let rfc3339 = |ms: i64| keyward::rest::time::format_millis(&keyward::wire::ts(ms));

    // Mailtrap: create without an expiry, or too far, is a 422 on the field.
    let body = |expires: Option<String>| {
        let mut b = json!({"name": "ci", "resources": [
            {"resource_type": "project", "resource_id": "p", "access_level": 10}]});
        if let Some(e) = expires {
            b["expires_at"] = json!(e);
        }
        b
    };
    for expires in [None, Some(rfc3339(now(&s) + 25 * HOUR_MS))] {
        let r = http(
            h,
            "POST",
            "/api/api_tokens",
            Some(&admin),
            Some(&body(expires)),
        )
        .await;
        assert_eq!(r.status, 422, "{:?}", r.json());
        let why = r.json()["errors"]["expires_at"][0]
            .as_str()
            .unwrap()
            .to_string();
        assert!(why.contains("max_token_lifetime"), "{why}");
    }
    let r = http(
        h,
        "POST",
        "/api/api_tokens",
        Some(&admin),
        Some(&body(Some(rfc3339(now(&s) + HOUR_MS)))),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let id = r.json()["id"].as_u64().unwrap();
    // Mailtrap's reset: the new token needs an expiry within the policy.
    let reset = format!("/api/api_tokens/{id}/reset");
    let r = http(h, "POST", &reset, Some(&admin), None).await;
    assert_eq!(r.status, 422, "{:?}", r.json());
    assert!(r.json()["errors"]["expires_at"][0]
        .as_str()
        .unwrap()
        .contains("max_token_lifetime"));
    let within = json!({"expires_at": rfc3339(now(&s) + HOUR_MS)});
    let r = http(h, "POST", &reset, Some(&admin), Some(&within)).await;
    assert_eq!(r.status, 200, "{:?}", r.json());

    // MailerSend: the same rule, in its error shape.
    let ms = json!({"name": "ms", "domain_id": "example.com", "scopes": ["email_full"]});
    let r = http(h, "POST", "/v1/token", Some(&admin), Some(&ms)).await;
    assert_eq!(r.status, 422, "{:?}", r.json());
    let text = r.json().to_string();
    assert!(
        text.contains("expires_at") && text.contains("max_token_lifetime"),
        "{text}"
    );
    let mut ms = ms;
    ms["expires_at"] = json!(rfc3339(now(&s) + HOUR_MS));
    let r = http(h, "POST", "/v1/token", Some(&admin), Some(&ms)).await;
    assert!(r.status == 200 || r.status == 201, "{:?}", r.json());
    s.stop().await.unwrap();
}

#[tokio::test]
async fn list_tokens_filters_by_expiring_before() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = world(&s).await;
    let t0 = now(&s);
    let mut soon = Vec::new();
    for hours in [1, 3, 2] {
        let t = create_expiring(&s, &admin, a, Some(at(t0 + hours * HOUR_MS)))
            .await
            .unwrap();
        soon.push((hours, t.token.unwrap().id));
    }
    create_expiring(&s, &admin, a, None).await.unwrap();
    let list = |before: Option<Timestamp>, page_size: u32, page_token: String| {
        let req = pb::ListTokensRequest {
            account_id: a,
            page_size,
            page_token,
            expiring_before: before,
        };
        let mut c = s.tokens();
        let admin = admin.clone();
        async move { c.list_tokens(auth(req, &admin)).await }
    };
    let ids = |r: pb::ListTokensResponse| r.tokens.iter().map(|t| t.id).collect::<Vec<_>>();
    let all = list(None, 100, String::new()).await.unwrap().into_inner();
    assert_eq!(all.tokens.len(), 5, "admin, three expiring, one not");
    let within = |h: i64| {
        let mut v: Vec<u64> = soon
            .iter()
            .filter(|(x, _)| *x <= h)
            .map(|(_, id)| *id)
            .collect();
        v.sort_unstable();
        v
    };
    let got = list(Some(at(t0 + 150 * 60_000)), 100, String::new())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(got), within(2), "before 2.5 h: the 1 h and 2 h tokens");
    let got = list(Some(at(t0 + HOUR_MS)), 100, String::new())
        .await
        .unwrap()
        .into_inner();
    assert!(got.tokens.is_empty(), "strictly before: {got:?}");
    // Paged, the filter holds on every page.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(Some(at(t0 + 10 * HOUR_MS)), 1, token)
            .await
            .unwrap()
            .into_inner();
        seen.extend(ids(page.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, within(3));
    // Expired tokens are still listed (until purged).
    s.clock.advance_ms(90 * 60_000);
    let got = list(Some(at(t0 + 150 * 60_000)), 100, String::new())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(got), within(2));
    let bad = Timestamp {
        seconds: 1,
        nanos: -1,
    };
    let st = assert_code(
        list(Some(bad), 100, String::new()).await,
        Code::InvalidArgument,
    );
    assert_eq!(field_error(&st).0, "expiring_before");
    s.stop().await.unwrap();
}
