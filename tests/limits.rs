//! Sending limits (issue 19) on one node, over real gRPC against a real
//! server: exact GCRA budgets with the test's manual clock, cost 0 and
//! cost > 1, all or nothing across limits, only allowed decisions spend,
//! AuthorizeBatch in order, UpdateToken carrying unchanged limits, a reset
//! sharing one budget, a restart keeping it, the REST shapes, and bad
//! input refused naming the field.

mod common;

use std::sync::Arc;

use common::*;
use keyward::clock::ManualClock;
use keyward::pb::v1 as pb;
use pb::DenyReason;
use prost_types::{Duration, FieldMask};
use serde_json::json;
use tonic::Code;

fn limit(name: &str, limit: u64, period_ms: i64) -> pb::RateLimit {
    pb::RateLimit {
        name: name.into(),
        limit,
        period: Some(Duration {
            seconds: period_ms / 1000,
            nanos: i32::try_from((period_ms % 1000) * 1_000_000).unwrap(),
        }),
    }
}

/// An account with project `p1` and a token on it with `limits`:
/// (account, admin secret, token).
async fn limited(s: &TestServer, limits: Vec<pb::RateLimit>) -> (u64, String, pb::TokenWithSecret) {
    let (acct, admin) = s.account("Acme").await;
    s.register(&admin, acct, PROJECT, "p1", None).await;
    let t = create_limited(s, &admin, acct, "sender", limits)
        .await
        .expect("create");
    (acct, admin, t)
}

async fn create_limited(
    s: &TestServer,
    admin: &str,
    acct: u64,
    name: &str,
    limits: Vec<pb::RateLimit>,
) -> Result<pb::TokenWithSecret, tonic::Status> {
    s.tokens()
        .create_token(auth(
            pb::CreateTokenRequest {
                account_id: acct,
                name: name.into(),
                grants: vec![grant(PROJECT, "p1", VIEWER)],
                scopes: vec![],
                expires_at: None,
                rate_limits: limits,
            },
            admin,
        ))
        .await
        .map(tonic::Response::into_inner)
}

fn req(token: &str, level: i32, cost: Option<u64>) -> pb::AuthorizeRequest {
    pb::AuthorizeRequest {
        token: token.into(),
        resource: Some(rref(PROJECT, "p1")),
        level,
        scope: String::new(),
        cost,
    }
}

async fn take(s: &TestServer, token: &str, cost: Option<u64>) -> pb::AuthorizeResponse {
    s.authorizer()
        .authorize(req(token, VIEWER, cost))
        .await
        .expect("authorize")
        .into_inner()
}

fn ms(d: &Option<Duration>) -> Option<i64> {
    d.as_ref()
        .map(|d| d.seconds * 1000 + i64::from(d.nanos / 1_000_000))
}

#[tokio::test]
async fn a_burst_of_the_limit_then_one_unit_per_period_over_limit() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (_, _, t) = limited(&s, vec![limit("per_10s", 5, 10_000)]).await;
    for left in (0..5).rev() {
        let d = take(&s, &t.secret, None).await;
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.remaining, Some(left));
        assert_eq!(d.retry_after, None);
    }
    let d = take(&s, &t.secret, None).await;
    assert!(!d.allowed);
    assert_eq!(d.reason, DenyReason::RateLimited as i32);
    assert_eq!(d.remaining, Some(0));
    assert_eq!(ms(&d.retry_after), Some(2_000), "one unit every 10 s / 5");
    s.clock.advance_ms(1_999);
    assert!(!take(&s, &t.secret, None).await.allowed);
    s.clock.advance_ms(1);
    let d = take(&s, &t.secret, None).await;
    assert!(d.allowed, "refilled after period/limit: {d:?}");
    assert!(!take(&s, &t.secret, None).await.allowed);
    // A denied token is still the same token: the ids are there.
    assert_eq!(d.token_id, t.token.as_ref().unwrap().id);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn cost_zero_checks_and_a_cost_is_taken_whole() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (_, _, t) = limited(&s, vec![limit("per_min", 10, 60_000)]).await;
    for _ in 0..3 {
        let d = take(&s, &t.secret, Some(0)).await;
        assert!(d.allowed);
        assert_eq!(d.remaining, Some(10), "a check spends nothing");
    }
    let d = take(&s, &t.secret, Some(4)).await;
    assert!(d.allowed);
    assert_eq!(d.remaining, Some(6));
    let d = take(&s, &t.secret, Some(7)).await;
    assert_eq!(d.reason, DenyReason::RateLimited as i32);
    assert_eq!(d.remaining, Some(6), "nothing taken by a refusal");
    assert_eq!(ms(&d.retry_after), Some(6_000), "one more unit in 6 s");
    let d = take(&s, &t.secret, Some(11)).await;
    assert_eq!(d.reason, DenyReason::RateLimited as i32);
    assert_eq!(d.retry_after, None, "a cost above the limit never fits");
    assert!(take(&s, &t.secret, Some(6)).await.allowed);
    let d = take(&s, &t.secret, Some(0)).await;
    assert_eq!(
        d.reason,
        DenyReason::RateLimited as i32,
        "spent: a check says so"
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn every_limit_is_taken_or_none() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (_, _, t) = limited(
        &s,
        vec![limit("slow", 5, 1_000_000), limit("per_second", 2, 1_000)],
    )
    .await;
    let d = take(&s, &t.secret, Some(2)).await;
    assert!(d.allowed);
    assert_eq!(d.remaining, Some(0));
    // Refused by per_second: slow keeps its 3.
    let d = take(&s, &t.secret, Some(2)).await;
    assert_eq!(d.reason, DenyReason::RateLimited as i32);
    s.clock.advance_ms(1_000);
    let d = take(&s, &t.secret, Some(1)).await;
    assert!(d.allowed);
    assert_eq!(
        d.remaining,
        Some(1),
        "slow 5-2-1 = 2, per_second 2-1 = 1 (slow would be 0 had the refusal charged it)"
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn only_allowed_decisions_spend_and_unlimited_tokens_show_nothing() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (acct, admin, t) = limited(&s, vec![limit("per_min", 2, 60_000)]).await;
    for _ in 0..5 {
        let d = s
            .authorizer()
            .authorize(req(&t.secret, ADMIN, None))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.reason, DenyReason::NoGrant as i32);
        assert_eq!(d.remaining, None);
    }
    assert!(take(&s, &t.secret, None).await.allowed);
    assert!(take(&s, &t.secret, None).await.allowed);
    assert!(!take(&s, &t.secret, None).await.allowed);
    let free = s
        .create(&admin, acct, "free", vec![grant(PROJECT, "p1", VIEWER)])
        .await
        .unwrap();
    for _ in 0..20 {
        let d = take(&s, &free.secret, Some(1_000)).await;
        assert!(d.allowed);
        assert_eq!((d.remaining, d.retry_after), (None, None));
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_batch_spends_in_order() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (_, _, t) = limited(&s, vec![limit("per_min", 3, 60_000)]).await;
    let checks = vec![
        req(&t.secret, VIEWER, Some(2)),
        req(&t.secret, VIEWER, Some(2)),
        req(&t.secret, ADMIN, None),
        req(&t.secret, VIEWER, Some(1)),
        req(&t.secret, VIEWER, Some(1)),
    ];
    let out = s
        .authorizer()
        .authorize_batch(pb::AuthorizeBatchRequest { checks })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(bool, i32, Option<u64>)> = out
        .decisions
        .iter()
        .map(|d| (d.allowed, d.reason, d.remaining))
        .collect();
    let limited = DenyReason::RateLimited as i32;
    assert_eq!(
        got,
        vec![
            (true, 0, Some(1)),
            (false, limited, Some(1)),
            (false, DenyReason::NoGrant as i32, None),
            (true, 0, Some(0)),
            (false, limited, Some(0)),
        ]
    );
    s.stop().await.unwrap();
}

async fn update_limits(
    s: &TestServer,
    admin: &str,
    acct: u64,
    id: u64,
    limits: Vec<pb::RateLimit>,
) -> Result<pb::Token, tonic::Status> {
    s.tokens()
        .update_token(auth(
            pb::UpdateTokenRequest {
                account_id: acct,
                token_id: id,
                rate_limits: limits,
                update_mask: Some(FieldMask {
                    paths: vec!["rate_limits".into()],
                }),
                ..Default::default()
            },
            admin,
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn an_update_keeps_what_unchanged_limits_spent() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (acct, admin, t) = limited(&s, vec![limit("per_min", 3, 60_000)]).await;
    let id = t.token.as_ref().unwrap().id;
    assert!(take(&s, &t.secret, Some(2)).await.allowed);
    let both = vec![
        limit("per_min", 3, 60_000),
        limit("per_day", 100, 86_400_000),
    ];
    let shown = update_limits(&s, &admin, acct, id, both.clone())
        .await
        .unwrap();
    assert_eq!(shown.rate_limits, both);
    let d = take(&s, &t.secret, Some(0)).await;
    assert_eq!(d.remaining, Some(1), "per_min carried through the update");
    // A changed limit starts full.
    update_limits(&s, &admin, acct, id, vec![limit("per_min", 10, 60_000)])
        .await
        .unwrap();
    assert_eq!(take(&s, &t.secret, None).await.remaining, Some(9));
    // No limits: unlimited.
    let shown = update_limits(&s, &admin, acct, id, vec![]).await.unwrap();
    assert!(shown.rate_limits.is_empty());
    assert_eq!(take(&s, &t.secret, Some(1_000)).await.remaining, None);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_reset_shares_one_budget_between_old_and_new() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let limits = vec![limit("per_hour", 6, 3_600_000)];
    let (acct, admin, old) = limited(&s, limits.clone()).await;
    let old_id = old.token.as_ref().unwrap().id;
    assert!(take(&s, &old.secret, Some(2)).await.allowed);
    let new = s
        .tokens()
        .reset_token(auth(
            pb::ResetTokenRequest {
                account_id: acct,
                token_id: old_id,
                expires_at: None,
                grace: None,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(new.token.as_ref().unwrap().rate_limits, limits, "inherited");
    // Old and new together: 4 more, whichever spends them.
    let mut allowed = 0;
    for i in 0..10 {
        let secret = if i % 2 == 0 { &old.secret } else { &new.secret };
        if take(&s, secret, None).await.allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 4, "a reset cannot double a budget");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_restart_keeps_what_was_spent() {
    let dir = temp();
    let clock = Arc::new(ManualClock::new());
    let s = TestServer::start_with(options(dir.path(), clock.clone()), clock.clone())
        .await
        .unwrap();
    let (_, _, t) = limited(&s, vec![limit("per_hour", 3, 3_600_000)]).await;
    assert!(take(&s, &t.secret, Some(3)).await.allowed);
    s.stop().await.unwrap();
    let s = TestServer::start_with(options(dir.path(), clock.clone()), clock.clone())
        .await
        .unwrap();
    let d = take(&s, &t.secret, None).await;
    assert_eq!(
        d.reason,
        DenyReason::RateLimited as i32,
        "not refilled: {d:?}"
    );
    assert_eq!(ms(&d.retry_after), Some(1_200_000));
    clock.advance_ms(1_200_000);
    assert!(take(&s, &t.secret, None).await.allowed);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn bad_limits_are_refused_naming_the_field() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (acct, admin) = s.account("Acme").await;
    s.register(&admin, acct, PROJECT, "p1", None).await;
    let ok = || limit("ok", 1, 1_000);
    let mut half_ms = limit("half", 1, 1_000);
    half_ms.period.as_mut().unwrap().nanos = 500_000;
    let mut no_period = limit("none", 1, 1_000);
    no_period.period = None;
    let cases: Vec<(Vec<pb::RateLimit>, &str)> = vec![
        (vec![ok(), ok()], "rate_limits[1].name"),
        (
            vec![ok(), limit("b", 1, 1_000), limit("Caps", 1, 1_000)],
            "rate_limits[2].name",
        ),
        (vec![limit("", 1, 1_000)], "rate_limits[0].name"),
        (
            vec![limit(&"x".repeat(33), 1, 1_000)],
            "rate_limits[0].name",
        ),
        (vec![limit("z", 0, 1_000)], "rate_limits[0].limit"),
        (
            vec![limit("z", 1_000_000_000_001, 1_000)],
            "rate_limits[0].limit",
        ),
        (
            vec![ok(), limit("b", 1, 1_000), limit("c", 1, 999)],
            "rate_limits[2].period",
        ),
        (
            vec![limit("z", 1, 31 * 86_400_000 + 1)],
            "rate_limits[0].period",
        ),
        (vec![half_ms], "rate_limits[0].period"),
        (vec![no_period], "rate_limits[0].period"),
        (
            (0..9).map(|i| limit(&format!("l{i}"), 1, 1_000)).collect(),
            "rate_limits",
        ),
    ];
    for (limits, field) in cases {
        let st = assert_code(
            create_limited(&s, &admin, acct, "t", limits.clone()).await,
            Code::InvalidArgument,
        );
        assert!(st.message().contains(field), "{field}: {}", st.message());
    }
    // The same rules on update.
    let t = create_limited(&s, &admin, acct, "t", vec![ok()])
        .await
        .unwrap();
    let st = assert_code(
        update_limits(&s, &admin, acct, t.token.unwrap().id, vec![ok(), ok()]).await,
        Code::InvalidArgument,
    );
    assert!(
        st.message().contains("rate_limits[1].name"),
        "{}",
        st.message()
    );
    // Bounds are accepted.
    create_limited(
        &s,
        &admin,
        acct,
        "edges",
        vec![
            limit("a", 1, 1_000),
            limit("b", 1_000_000_000_000, 31 * 86_400_000),
            limit("c-1_z", 7, 1_500),
        ],
    )
    .await
    .unwrap();
    s.stop().await.unwrap();
}

#[tokio::test]
async fn both_rest_facades_show_and_take_rate_limits() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (acct, admin) = s.account("Acme").await;
    s.register(&admin, acct, PROJECT, "7", None).await;
    s.register(&admin, acct, DOMAIN, "example.com", None).await;
    let body = json!({
        "name": "ci",
        "resources": [{"resource_type": "project", "resource_id": 7, "access_level": 10}],
        "rate_limits": [{"name": "per_minute", "limit": 100, "period_seconds": 60}],
    });
    let r = http(s.http, "POST", "/api/api_tokens", Some(&admin), Some(&body)).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let created = r.json();
    assert_eq!(
        created["rate_limits"],
        json!([{"name": "per_minute", "limit": 100, "period_seconds": 60}])
    );
    let id = created["id"].as_u64().unwrap();
    let secret = created["token"].as_str().unwrap().to_string();
    assert_eq!(
        s.check(&secret, PROJECT, "7", VIEWER).await.remaining,
        Some(99)
    );
    let r = http(
        s.http,
        "GET",
        &format!("/api/api_tokens/{id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(r.json()["rate_limits"], created["rate_limits"]);
    // Without them: an empty list.
    let body = json!({
        "name": "plain",
        "resources": [{"resource_type": "project", "resource_id": 7, "access_level": 10}],
    });
    let r = http(s.http, "POST", "/api/api_tokens", Some(&admin), Some(&body)).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["rate_limits"], json!([]));
    // A bad one names the field.
    let body = json!({
        "name": "bad",
        "resources": [{"resource_type": "project", "resource_id": 7, "access_level": 10}],
        "rate_limits": [{"name": "x", "limit": 0, "period_seconds": 1}],
    });
    let r = http(s.http, "POST", "/api/api_tokens", Some(&admin), Some(&body)).await;
    assert_eq!(r.status, 422, "{:?}", r.json());
    assert!(
        r.json().to_string().contains("rate_limits"),
        "{:?}",
        r.json()
    );

    // MailerSend.
    let body = json!({
        "name": "sender",
        "domain_id": "example.com",
        "scopes": ["email_full"],
        "rate_limits": [{"name": "per_day", "limit": 5000, "period_seconds": 86400},
                        {"name": "burst", "limit": 10, "period_seconds": 1.5}],
    });
    let r = http(s.http, "POST", "/v1/token", Some(&admin), Some(&body)).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let data = r.json()["data"].clone();
    assert_eq!(
        data["rate_limits"],
        json!([{"name": "per_day", "limit": 5000, "period_seconds": 86400},
               {"name": "burst", "limit": 10, "period_seconds": 1.5}])
    );
    let id = data["id"].as_str().unwrap();
    let r = http(
        s.http,
        "GET",
        &format!("/v1/token/{id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(r.json()["data"]["rate_limits"], data["rate_limits"]);
    let body = json!({"name": "plain", "domain_id": "example.com", "scopes": ["email_full"]});
    let r = http(s.http, "POST", "/v1/token", Some(&admin), Some(&body)).await;
    assert_eq!(r.json()["data"]["rate_limits"], json!([]));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn rate_limited_decisions_are_counted() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (_, _, t) = limited(&s, vec![limit("per_min", 1, 60_000)]).await;
    assert!(take(&s, &t.secret, None).await.allowed);
    for _ in 0..3 {
        assert!(!take(&s, &t.secret, None).await.allowed);
    }
    let page = http(s.http, "GET", "/metrics", None, None).await;
    let text = String::from_utf8_lossy(&page.body).to_string();
    assert!(
        metric(
            &text,
            "keyward_decisions_total{result=\"deny\",reason=\"rate_limited\"}"
        ) >= 3.0,
        "{}",
        text.lines()
            .filter(|l| l.contains("decisions"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    s.stop().await.unwrap();
}
