//! The token lifecycle an operator manages (issue 18, items 2 and 3): a
//! reset's grace chosen per request (never above the server's
//! `--reset-grace`; "0s" for a leak), and `UpdateToken` setting or
//! clearing `expires_at` with create's validation. Real server on
//! 127.0.0.1:0, real gRPC clients, the manual clock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use keyward::clock::{Clock, ManualClock};
use keyward::pb::v1 as pb;
use keyward::pb::v1::audit_client::AuditClient;
use prost_types::{FieldMask, Timestamp};
use tonic::Code;

const HOUR_MS: i64 = 3600 * 1000;

fn grace(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos })
}

fn at(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).expect("nanos"),
    }
}

async fn reset(
    s: &TestServer,
    caller: &str,
    account_id: u64,
    token_id: u64,
    grace: Option<prost_types::Duration>,
) -> Result<pb::TokenWithSecret, tonic::Status> {
    s.tokens()
        .reset_token(auth(
            pb::ResetTokenRequest {
                account_id,
                token_id,
                expires_at: None,
                grace,
            },
            caller,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// UpdateToken with the `expires_at` path (and the field, or none to clear).
async fn set_expiry(
    s: &TestServer,
    caller: &str,
    account_id: u64,
    token_id: u64,
    expires_at: Option<Timestamp>,
) -> Result<pb::Token, tonic::Status> {
    s.tokens()
        .update_token(auth(
            pb::UpdateTokenRequest {
                account_id,
                token_id,
                expires_at,
                update_mask: Some(FieldMask {
                    paths: vec!["expires_at".into()],
                }),
                ..Default::default()
            },
            caller,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn get(s: &TestServer, caller: &str, account_id: u64, token_id: u64) -> pb::Token {
    s.tokens()
        .get_token(auth(
            pb::GetTokenRequest {
                account_id,
                token_id,
            },
            caller,
        ))
        .await
        .expect("get token")
        .into_inner()
}

async fn audit(s: &TestServer, caller: &str, account_id: u64) -> Vec<pb::AuditEvent> {
    AuditClient::new(s.channel.clone())
        .list_audit_events(auth(
            pb::ListAuditEventsRequest {
                account_id,
                page_size: 1000,
                ..Default::default()
            },
            caller,
        ))
        .await
        .expect("audit")
        .into_inner()
        .events
}

/// An account with project "p" and a token "ci" holding ADMIN on it:
/// (account, its admin's secret, the token's id, the token's secret).
async fn world(s: &TestServer) -> (u64, String, u64, String) {
    let (a, admin) = s.account("A").await;
    s.register(&admin, a, PROJECT, "p", None).await;
    let ci = s
        .create(&admin, a, "ci", vec![grant(PROJECT, "p", ADMIN)])
        .await
        .expect("create");
    let id = ci.token.as_ref().expect("token").id;
    (a, admin, id, ci.secret)
}

/// `"grace": "0s"` is the leak case: the old token is refused as expired
/// on the very next Authorize, while its replacement works.
#[tokio::test]
async fn a_reset_with_grace_0s_stops_the_old_token_at_once() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin, old_id, old) = world(&s).await;
    assert!(s.check(&old, PROJECT, "p", ADMIN).await.allowed);

    let new = reset(&s, &admin, a, old_id, grace(0, 0)).await.unwrap();
    let d = s.check(&old, PROJECT, "p", ADMIN).await;
    assert_eq!((d.allowed, d.reason), (false, DenyReason::Expired as i32));
    assert!(s.check(&new.secret, PROJECT, "p", ADMIN).await.allowed);
    let got = get(&s, &admin, a, old_id).await;
    assert_eq!(got.expires_at, Some(at(s.clock.now_ms())));
    assert_eq!(got.replaced_by, new.token.unwrap().id);
    s.stop().await.unwrap();
}

/// A grace inside the server's keeps the old token exactly that long (to
/// the millisecond), and never past an expiry it had already.
#[tokio::test]
async fn a_reset_grace_within_the_servers_keeps_the_old_token_that_long() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin, old_id, old) = world(&s).await;
    let new = reset(&s, &admin, a, old_id, grace(90, 500_000_000))
        .await
        .unwrap();
    s.clock.advance_ms(90_499);
    assert!(
        s.check(&old, PROJECT, "p", ADMIN).await.allowed,
        "inside 90.5 s"
    );
    s.clock.advance_ms(1);
    let d = s.check(&old, PROJECT, "p", ADMIN).await;
    assert_eq!((d.allowed, d.reason), (false, DenyReason::Expired as i32));
    assert!(s.check(&new.secret, PROJECT, "p", ADMIN).await.allowed);

    // A token due to expire in 1 min keeps that end with a 1 h grace.
    let soon = s
        .tokens()
        .create_token(auth(
            pb::CreateTokenRequest {
                rate_limits: Default::default(),
                account_id: a,
                name: "soon".into(),
                grants: vec![grant(PROJECT, "p", VIEWER)],
                scopes: vec![],
                expires_at: Some(at(s.clock.now_ms() + 60_000)),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let soon_id = soon.token.as_ref().unwrap().id;
    let ends = get(&s, &admin, a, soon_id).await.expires_at;
    reset(&s, &admin, a, soon_id, grace(3600, 0)).await.unwrap();
    assert_eq!(get(&s, &admin, a, soon_id).await.expires_at, ends);
    s.stop().await.unwrap();
}

/// A grace above the server's reset grace is refused with the server's
/// limit in the message, and nothing changes: the old token still works
/// and is not marked replaced, no new token exists, and the refusal is in
/// the audit log. Negative and malformed graces are refused the same way.
#[tokio::test]
async fn a_grace_above_the_servers_or_negative_is_refused_and_changes_nothing() {
    let dir = temp();
    let clock = Arc::new(ManualClock::new());
    let mut opts = options(dir.path(), clock.clone());
    opts.settings.reset_grace = Duration::from_secs(3600);
    let s = TestServer::start_with(opts, clock).await.unwrap();
    let (a, admin, old_id, old) = world(&s).await;
    let ids = |l: pb::ListTokensResponse| l.tokens.iter().map(|t| t.id).collect::<Vec<_>>();
    let tokens_before = ids(s.list(&admin, a).await);

    let cases = [
        (
            grace(3600, 1),
            "grace: must be at most 3600s, the server's reset grace",
        ),
        (
            grace(12 * 3600, 0),
            "grace: must be at most 3600s, the server's reset grace",
        ),
        (grace(-1, 0), "grace: must not be negative"),
        (grace(0, -1), "grace: must not be negative"),
        (grace(0, 1_000_000_000), "grace: nanos must be"),
        (grace(1, -1), "grace: nanos must be"),
    ];
    for (g, message) in &cases {
        let st = assert_code(
            reset(&s, &admin, a, old_id, *g).await,
            Code::InvalidArgument,
        );
        assert!(st.message().contains(message), "{g:?}: {}", st.message());
    }

    assert!(s.check(&old, PROJECT, "p", ADMIN).await.allowed);
    s.clock.advance_ms(2 * HOUR_MS);
    assert!(
        s.check(&old, PROJECT, "p", ADMIN).await.allowed,
        "no grace began"
    );
    assert_eq!(ids(s.list(&admin, a).await), tokens_before, "no new token");
    let got = get(&s, &admin, a, old_id).await;
    assert_eq!((got.replaced_by, got.expires_at), (0, None));

    let refused: Vec<_> = audit(&s, &admin, a)
        .await
        .into_iter()
        .filter(|e| e.action == "ResetToken")
        .collect();
    assert_eq!(refused.len(), cases.len());
    for e in &refused {
        assert_eq!(
            (e.outcome.as_str(), e.token_id),
            ("INVALID_ARGUMENT", old_id)
        );
        assert!(e.detail.contains("grace: "), "{}", e.detail);
    }
    assert!(refused[0].detail.contains("3600s"), "{}", refused[0].detail);

    // The largest grace allowed is the server's own.
    reset(&s, &admin, a, old_id, grace(3600, 0)).await.unwrap();
    s.clock.advance_ms(HOUR_MS - 1);
    assert!(s.check(&old, PROJECT, "p", ADMIN).await.allowed);
    s.clock.advance_ms(1);
    assert!(!s.check(&old, PROJECT, "p", ADMIN).await.allowed);
    s.stop().await.unwrap();
}

/// UpdateToken with path `expires_at` sets the expiry (Authorize follows),
/// clears it when the field is unset, and an expired token stays expired.
#[tokio::test]
async fn update_token_sets_and_clears_expires_at() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin, id, secret) = world(&s).await;

    let in_an_hour = at(s.clock.now_ms() + HOUR_MS);
    let t = set_expiry(&s, &admin, a, id, Some(in_an_hour))
        .await
        .unwrap();
    assert_eq!(t.expires_at, Some(in_an_hour));
    assert_eq!(t.name, "ci", "only the masked field changes");
    assert_eq!(t.grants, vec![grant(PROJECT, "p", ADMIN)]);
    assert!(s.check(&secret, PROJECT, "p", ADMIN).await.allowed);

    let t = set_expiry(&s, &admin, a, id, None).await.unwrap();
    assert_eq!(t.expires_at, None, "path given, field unset: cleared");
    s.clock.advance_ms(2 * HOUR_MS);
    assert!(s.check(&secret, PROJECT, "p", ADMIN).await.allowed);

    let in_a_minute = at(s.clock.now_ms() + 60_000);
    set_expiry(&s, &admin, a, id, Some(in_a_minute))
        .await
        .unwrap();
    s.clock.advance_ms(60_000);
    let d = s.check(&secret, PROJECT, "p", ADMIN).await;
    assert_eq!((d.allowed, d.reason), (false, DenyReason::Expired as i32));
    // An expired token cannot be brought back.
    let st = assert_code(
        set_expiry(&s, &admin, a, id, None).await,
        Code::FailedPrecondition,
    );
    assert!(st.message().contains("has expired"), "{}", st.message());
    assert!(!s.check(&secret, PROJECT, "p", ADMIN).await.allowed);
    s.stop().await.unwrap();
}

/// The expiry an update sets is validated as on create (well formed, in
/// the future, at most 5 years ahead); the mask messages name the new
/// path; the root token cannot be edited.
#[tokio::test]
async fn update_token_refuses_a_past_or_too_far_expiry() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin, id, secret) = world(&s).await;
    let now = s.clock.now_ms();
    let cases = [
        (at(now - 1000), "expires_at: must be in the future"),
        (at(now), "expires_at: must be in the future"),
        (
            at(now + 6 * 365 * 24 * HOUR_MS),
            "expires_at: must be at most 5 years ahead",
        ),
        (
            Timestamp {
                seconds: now / 1000 + 60,
                nanos: -1,
            },
            "expires_at: nanos must be in 0..1e9",
        ),
    ];
    for (t, message) in cases {
        let st = assert_code(
            set_expiry(&s, &admin, a, id, Some(t)).await,
            Code::InvalidArgument,
        );
        assert!(st.message().contains(message), "{}", st.message());
    }
    assert_eq!(get(&s, &admin, a, id).await.expires_at, None);
    assert!(s.check(&secret, PROJECT, "p", ADMIN).await.allowed);

    let update = |paths: Vec<String>| pb::UpdateTokenRequest {
        account_id: a,
        token_id: id,
        update_mask: Some(FieldMask { paths }),
        ..Default::default()
    };
    let st = assert_code(
        s.tokens().update_token(auth(update(vec![]), &admin)).await,
        Code::InvalidArgument,
    );
    assert!(
        st.message().contains(
            "update_mask: name at least one of: name, grants, scopes, expires_at, rate_limits"
        ),
        "{}",
        st.message()
    );
    let st = assert_code(
        s.tokens()
            .update_token(auth(update(vec!["paused".into()]), &admin))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        st.message().contains(
            "update_mask.paths[0]: must be name, grants, scopes, expires_at or rate_limits"
        ),
        "{}",
        st.message()
    );

    let root = s.root();
    let r = s
        .tokens()
        .update_token(auth(
            pb::UpdateTokenRequest {
                account_id: 0,
                token_id: 1,
                expires_at: Some(at(now + HOUR_MS)),
                update_mask: Some(FieldMask {
                    paths: vec!["expires_at".into()],
                }),
                ..Default::default()
            },
            &root,
        ))
        .await;
    // The root token lives in no account a caller can reach, so an edit
    // of it never gets as far as the "cannot be edited" rule.
    let st = assert_code(r, Code::NotFound);
    assert_eq!(st.message(), "account 0 not found");
    s.stop().await.unwrap();
}

/// A reset token in its grace period cannot use UpdateToken (to lengthen
/// its own grace or shorten its replacement's life); an admin may cut the
/// old token's grace short, never lengthen or clear it.
#[tokio::test]
async fn a_reset_tokens_expiry_only_moves_earlier() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    let acct = a.to_string();
    s.register(&admin, a, PROJECT, "p", None).await;
    let leaked = s
        .create(&admin, a, "ops", vec![grant(ACCOUNT, &acct, ADMIN)])
        .await
        .unwrap();
    let leaked_id = leaked.token.as_ref().unwrap().id;
    let fresh = reset(&s, &admin, a, leaked_id, None).await.unwrap();
    let fresh_id = fresh.token.as_ref().unwrap().id;
    let deadline = get(&s, &admin, a, leaked_id).await.expires_at.unwrap();
    let later = at(s.clock.now_ms() + 24 * HOUR_MS);
    let sooner = at(s.clock.now_ms() + HOUR_MS);

    for target in [leaked_id, fresh_id] {
        for expiry in [Some(later), None] {
            assert_code(
                set_expiry(&s, &leaked.secret, a, target, expiry).await,
                Code::PermissionDenied,
            );
        }
    }
    assert_eq!(get(&s, &admin, a, fresh_id).await.expires_at, None);

    for expiry in [Some(later), None] {
        let st = assert_code(
            set_expiry(&s, &admin, a, leaked_id, expiry).await,
            Code::FailedPrecondition,
        );
        assert!(
            st.message().contains("can only move earlier"),
            "{}",
            st.message()
        );
    }
    assert_eq!(
        get(&s, &admin, a, leaked_id).await.expires_at,
        Some(deadline)
    );

    let t = set_expiry(&s, &admin, a, leaked_id, Some(sooner))
        .await
        .unwrap();
    assert_eq!(t.expires_at, Some(sooner));
    s.clock.advance_ms(HOUR_MS);
    let d = s.check(&leaked.secret, PROJECT, "p", ADMIN).await;
    assert_eq!((d.allowed, d.reason), (false, DenyReason::Expired as i32));
    assert!(s.check(&fresh.secret, PROJECT, "p", ADMIN).await.allowed);
    s.stop().await.unwrap();
}
