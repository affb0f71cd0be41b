//! Every admin rule (`src/access.rs`; the choices are in the README's decision list), allowed and refused, through the
//! generated gRPC clients against a real server on 127.0.0.1:0.

mod common;

use common::*;
use keyward::pb::v1 as pb;
use prost_types::{FieldMask, Timestamp};
use tonic::Code;

const HOUR_MS: i64 = 3600 * 1000;

fn ts_in(server: &TestServer, ms: i64) -> Timestamp {
    let at = keyward::clock::Clock::now_ms(&*server.clock) + ms;
    Timestamp {
        seconds: at / 1000,
        nanos: 0,
    }
}

/// Only the root token creates accounts; the new account's admin token
/// holds ADMIN on the account and works at once.
#[tokio::test]
async fn root_creates_accounts_and_nobody_else_can() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (acct, admin) = s.account("Acme").await;
    let d = s.check(&admin, ACCOUNT, &acct.to_string(), ADMIN).await;
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.account_id, acct);
    let r = s
        .accounts()
        .create_account(auth(pb::CreateAccountRequest { name: "x".into() }, &admin))
        .await;
    assert_code(r, Code::PermissionDenied);
    // The root token itself holds no grant on any resource.
    let d = s.check(&s.root(), ACCOUNT, &acct.to_string(), VIEWER).await;
    assert!(!d.allowed);
    // Account visibility: own account only; root sees all.
    let (other, _) = s.account("Other").await;
    let list = s
        .accounts()
        .list_accounts(auth(pb::ListAccountsRequest::default(), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        list.accounts.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![acct]
    );
    let list = s
        .accounts()
        .list_accounts(auth(
            pb::ListAccountsRequest {
                page_size: 1,
                ..Default::default()
            },
            &s.root(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.accounts.len(), 1);
    let next = s
        .accounts()
        .list_accounts(auth(
            pb::ListAccountsRequest {
                page_size: 1,
                page_token: list.next_page_token,
            },
            &s.root(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.accounts[0].id, other);
    let r = s
        .accounts()
        .get_account(auth(pb::GetAccountRequest { account_id: other }, &admin))
        .await;
    assert_code(r, Code::PermissionDenied);
    s.stop().await.unwrap();
}

/// Grants cover descendants; VIEWER does not satisfy ADMIN; resources of
/// other accounts and unknown resources are denied with their reason.
#[tokio::test]
async fn grants_cover_descendants_at_their_level() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    let (b, admin_b) = s.account("B").await;
    s.register(&admin, a, PROJECT, "p1", None).await;
    s.register(&admin, a, SANDBOX, "s1", Some("p1")).await;
    s.register(&admin, a, PROJECT, "p2", None).await;
    s.register(&admin_b, b, PROJECT, "pb", None).await;
    let t = s
        .create(
            &admin,
            a,
            "viewer of p1",
            vec![grant(PROJECT, "p1", VIEWER)],
        )
        .await
        .unwrap()
        .secret;

    assert!(s.check(&t, PROJECT, "p1", VIEWER).await.allowed);
    assert!(
        s.check(&t, SANDBOX, "s1", VIEWER).await.allowed,
        "project grant covers its sandbox"
    );
    let d = s.check(&t, SANDBOX, "s1", ADMIN).await;
    assert_eq!((d.allowed, d.reason), (false, DenyReason::NoGrant as i32));
    let d = s.check(&t, PROJECT, "p2", VIEWER).await;
    assert_eq!(d.reason, DenyReason::NoGrant as i32);
    let d = s.check(&t, ACCOUNT, &a.to_string(), VIEWER).await;
    assert_eq!(
        d.reason,
        DenyReason::NoGrant as i32,
        "a project grant does not cover the account"
    );
    let d = s.check(&t, PROJECT, "pb", VIEWER).await;
    assert_eq!(d.reason, DenyReason::WrongAccount as i32);
    let d = s.check(&t, ACCOUNT, &b.to_string(), VIEWER).await;
    assert_eq!(d.reason, DenyReason::WrongAccount as i32);
    let d = s.check(&t, PROJECT, "nowhere", VIEWER).await;
    assert_eq!(d.reason, DenyReason::UnknownResource as i32);
    // Account admins cover every project, sandbox and domain of their account.
    s.register(&admin, a, DOMAIN, "a.example", None).await;
    for (k, id) in [(PROJECT, "p1"), (SANDBOX, "s1"), (DOMAIN, "a.example")] {
        assert!(s.check(&admin, k, id, ADMIN).await.allowed, "{id}");
    }
    s.stop().await.unwrap();
}

/// The secret is in the create response only: never in Get, List, or any
/// later answer.
#[tokio::test]
async fn secret_is_shown_once() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    let created = s
        .create(
            &admin,
            a,
            "once",
            vec![grant(ACCOUNT, &a.to_string(), VIEWER)],
        )
        .await
        .unwrap();
    let secret = created.secret.clone();
    assert!(secret.starts_with("kw_") && secret.len() == 63);
    let tok = created.token.unwrap();
    assert_eq!(tok.last_4_digits, &secret[59..]);
    let got = s
        .tokens()
        .get_token(auth(
            pb::GetTokenRequest {
                account_id: a,
                token_id: tok.id,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let listed = s.list(&admin, a).await;
    let secret_part = &secret[14..57];
    for bytes in [
        prost::Message::encode_to_vec(&got),
        prost::Message::encode_to_vec(&listed),
    ] {
        assert!(!bytes
            .windows(secret_part.len())
            .any(|w| w == secret_part.as_bytes()));
    }
    s.stop().await.unwrap();
}

/// A caller sees and manages only tokens inside what it holds at ADMIN,
/// can grant only what it holds, and never crosses accounts.
#[tokio::test]
async fn no_escalation_and_no_cross_account_access() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    let (b, admin_b) = s.account("B").await;
    s.register(&admin, a, PROJECT, "p1", None).await;
    s.register(&admin, a, PROJECT, "p2", None).await;
    let p1_admin = s
        .create(&admin, a, "p1 admin", vec![grant(PROJECT, "p1", ADMIN)])
        .await
        .unwrap()
        .secret;
    let p1_viewer = s
        .create(&admin, a, "p1 viewer", vec![grant(PROJECT, "p1", VIEWER)])
        .await
        .unwrap();
    let p2_tok = s
        .create(&admin, a, "p2", vec![grant(PROJECT, "p2", VIEWER)])
        .await
        .unwrap();

    // Granting what it holds works; anything more is PERMISSION_DENIED.
    s.create(&p1_admin, a, "ok", vec![grant(PROJECT, "p1", VIEWER)])
        .await
        .unwrap();
    for g in [
        grant(PROJECT, "p2", VIEWER),
        grant(ACCOUNT, &a.to_string(), VIEWER),
    ] {
        assert_code(
            s.create(&p1_admin, a, "escalate", vec![g]).await,
            Code::PermissionDenied,
        );
    }
    // A VIEWER cannot manage tokens at all (it holds nothing at ADMIN).
    let viewer_secret = p1_viewer.secret.clone();
    assert_code(
        s.create(&viewer_secret, a, "x", vec![grant(PROJECT, "p1", VIEWER)])
            .await,
        Code::PermissionDenied,
    );
    // Visibility: p1 admin sees tokens within p1 only.
    let listed = s.list(&p1_admin, a).await;
    let names: Vec<_> = listed.tokens.iter().map(|t| t.name.as_str()).collect();
    assert!(
        names.contains(&"p1 viewer") && names.contains(&"p1 admin") && !names.contains(&"p2"),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("admin token")),
        "account admin token is outside p1: {names:?}"
    );
    // A token outside its reach does not exist for it.
    let p2_id = p2_tok.token.unwrap().id;
    let r = s.delete(&p1_admin, a, p2_id).await;
    assert_code(r, Code::NotFound);
    // Editing a token it manages to grant more than it holds is refused.
    let r = s
        .tokens()
        .update_token(auth(
            pb::UpdateTokenRequest {
                account_id: a,
                token_id: p1_viewer.token.as_ref().unwrap().id,
                grants: vec![grant(PROJECT, "p2", ADMIN)],
                update_mask: Some(FieldMask {
                    paths: vec!["grants".into()],
                }),
                ..Default::default()
            },
            &p1_admin,
        ))
        .await;
    assert_code(r, Code::PermissionDenied);
    // Cross-account: every admin call into B with A's admin token is refused.
    assert_code(
        s.create(&admin, b, "x", vec![grant(ACCOUNT, &b.to_string(), VIEWER)])
            .await,
        Code::PermissionDenied,
    );
    let r = s
        .tokens()
        .list_tokens(auth(
            pb::ListTokensRequest {
                account_id: b,
                ..Default::default()
            },
            &admin,
        ))
        .await;
    assert_code(r, Code::PermissionDenied);
    let r = s
        .tokens()
        .get_token(auth(
            pb::GetTokenRequest {
                account_id: b,
                token_id: 1,
            },
            &admin,
        ))
        .await;
    assert_code(r, Code::PermissionDenied);
    // A's token ids are not found through B's account either.
    let r = s
        .tokens()
        .get_token(auth(
            pb::GetTokenRequest {
                account_id: b,
                token_id: p2_id,
            },
            &admin_b,
        ))
        .await;
    assert_code(r, Code::NotFound);
    // Granting a resource of another account is invalid.
    s.register(&admin_b, b, PROJECT, "pb", None).await;
    assert_code(
        s.create(&admin, a, "x", vec![grant(PROJECT, "pb", VIEWER)])
            .await,
        Code::InvalidArgument,
    );
    s.stop().await.unwrap();
}

/// Scopes: a scope-restricted token needs the scope named in the request at
/// the level asked; it cannot create unrestricted tokens; token management
/// needs the `tokens` scope at ADMIN.
#[tokio::test]
async fn scopes_restrict_by_feature() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    s.register(&admin, a, DOMAIN, "d.example", None).await;
    let acct = a.to_string();
    let t = s
        .create_scoped(
            &admin,
            a,
            "email only",
            vec![grant(DOMAIN, "d.example", ADMIN)],
            vec![scope("email", ADMIN), scope("domains", VIEWER)],
        )
        .await
        .unwrap()
        .secret;
    assert!(
        s.check_scope(&t, DOMAIN, "d.example", ADMIN, "email")
            .await
            .allowed
    );
    assert!(
        s.check_scope(&t, DOMAIN, "d.example", VIEWER, "domains")
            .await
            .allowed
    );
    let d = s
        .check_scope(&t, DOMAIN, "d.example", ADMIN, "domains")
        .await;
    assert_eq!(d.reason, DenyReason::Scope as i32);
    let d = s.check_scope(&t, DOMAIN, "d.example", ADMIN, "").await;
    assert_eq!(
        d.reason,
        DenyReason::Scope as i32,
        "a scoped token fails closed without a scope"
    );
    // Unrestricted tokens ignore the scope.
    assert!(
        s.check_scope(&admin, DOMAIN, "d.example", ADMIN, "sms")
            .await
            .allowed
    );
    // A scoped token without `tokens` ADMIN cannot manage tokens.
    let no_tokens = s
        .create_scoped(
            &admin,
            a,
            "n",
            vec![grant(ACCOUNT, &acct, ADMIN)],
            vec![scope("tokens", VIEWER)],
        )
        .await
        .unwrap()
        .secret;
    assert_code(
        s.create_scoped(
            &no_tokens,
            a,
            "x",
            vec![grant(ACCOUNT, &acct, VIEWER)],
            vec![scope("tokens", VIEWER)],
        )
        .await,
        Code::PermissionDenied,
    );
    // With `tokens` ADMIN it can, but only within its own scopes.
    let mgr = s
        .create_scoped(
            &admin,
            a,
            "m",
            vec![grant(ACCOUNT, &acct, ADMIN)],
            vec![scope("tokens", ADMIN), scope("email", VIEWER)],
        )
        .await
        .unwrap()
        .secret;
    s.create_scoped(
        &mgr,
        a,
        "ok",
        vec![grant(ACCOUNT, &acct, VIEWER)],
        vec![scope("email", VIEWER)],
    )
    .await
    .unwrap();
    assert_code(
        s.create_scoped(
            &mgr,
            a,
            "wider",
            vec![grant(ACCOUNT, &acct, VIEWER)],
            vec![scope("email", ADMIN)],
        )
        .await,
        Code::PermissionDenied,
    );
    assert_code(
        s.create(&mgr, a, "unrestricted", vec![grant(ACCOUNT, &acct, VIEWER)])
            .await,
        Code::PermissionDenied,
    );
    assert_code(
        s.create_scoped(
            &admin,
            a,
            "bad",
            vec![grant(ACCOUNT, &acct, VIEWER)],
            vec![scope("teleport", VIEWER)],
        )
        .await,
        Code::InvalidArgument,
    );
    s.stop().await.unwrap();
}

/// Registering a domain creates `<domain> token <id>` with ADMIN on it,
/// returned once; the last token on a domain cannot be deleted.
#[tokio::test]
async fn domain_registration_creates_its_token_and_keeps_one() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    let dt = s
        .register(&admin, a, DOMAIN, "example.com", None)
        .await
        .expect("domain token");
    let tok = dt.token.unwrap();
    assert_eq!(tok.name, format!("example.com token {}", tok.id));
    assert_eq!(tok.grants, vec![grant(DOMAIN, "example.com", ADMIN)]);
    // SMTP: the password is the token; sending needs ADMIN on the domain.
    assert!(
        s.check(&dt.secret, DOMAIN, "example.com", ADMIN)
            .await
            .allowed
    );
    let r = s.delete(&admin, a, tok.id).await;
    assert_code(r, Code::FailedPrecondition);
    // Dropping the domain from its last token by an edit is refused too.
    s.register(&admin, a, PROJECT, "p", None).await;
    let r = s
        .tokens()
        .update_token(auth(
            pb::UpdateTokenRequest {
                account_id: a,
                token_id: tok.id,
                grants: vec![grant(PROJECT, "p", VIEWER)],
                update_mask: Some(FieldMask {
                    paths: vec!["grants".into()],
                }),
                ..Default::default()
            },
            &admin,
        ))
        .await;
    assert_code(r, Code::FailedPrecondition);
    // With a second ADMIN token on the domain, the first can go.
    let second = s
        .create(
            &admin,
            a,
            "second",
            vec![grant(DOMAIN, "example.com", ADMIN)],
        )
        .await
        .unwrap();
    s.delete(&admin, a, tok.id).await.unwrap();
    assert_eq!(
        s.check(&dt.secret, DOMAIN, "example.com", ADMIN)
            .await
            .reason,
        DenyReason::UnknownToken as i32
    );
    let r = s.delete(&admin, a, second.token.unwrap().id).await;
    assert_code(r, Code::FailedPrecondition);
    // A reset token on its way out is no holder: after a reset, the new
    // token is the last holder and cannot be deleted.
    s.register(&admin, a, DOMAIN, "two.example", None)
        .await
        .expect("token");
    let ci = s
        .create(&admin, a, "ci", vec![grant(DOMAIN, "two.example", ADMIN)])
        .await
        .unwrap();
    let auto_id = listed_id(&s, a, &admin, "two.example token").await;
    s.delete(&admin, a, auto_id).await.unwrap();
    let reset = s
        .tokens()
        .reset_token(auth(
            pb::ResetTokenRequest {
                account_id: a,
                token_id: ci.token.unwrap().id,
                expires_at: None,
                grace: None,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let r = s.delete(&admin, a, reset.token.unwrap().id).await;
    assert_code(r, Code::FailedPrecondition);
    // Duplicates and bad parents.
    let r = s
        .resources()
        .register_resource(auth(
            pb::RegisterResourceRequest {
                account_id: a,
                resource: Some(rref(DOMAIN, "example.com")),
                parent: None,
            },
            &admin,
        ))
        .await;
    assert_code(r, Code::AlreadyExists);
    let r = s
        .resources()
        .register_resource(auth(
            pb::RegisterResourceRequest {
                account_id: a,
                resource: Some(rref(SANDBOX, "s")),
                parent: None,
            },
            &admin,
        ))
        .await;
    assert_code(r, Code::InvalidArgument);
    let r = s
        .resources()
        .register_resource(auth(
            pb::RegisterResourceRequest {
                account_id: a,
                resource: Some(rref(SANDBOX, "s")),
                parent: Some(rref(PROJECT, "nope")),
            },
            &admin,
        ))
        .await;
    assert_code(r, Code::NotFound);
    s.stop().await.unwrap();
}

/// Reset: the old token works through the grace period and not after; the
/// new one is `<name> token <id>` with the same grants; a token already
/// reset, or expired, cannot be reset.
#[tokio::test]
async fn reset_keeps_the_old_token_for_the_grace_period() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    s.register(&admin, a, PROJECT, "p", None).await;
    let old = s
        .create(&admin, a, "ci", vec![grant(PROJECT, "p", ADMIN)])
        .await
        .unwrap();
    let old_id = old.token.as_ref().unwrap().id;
    let new = s
        .tokens()
        .reset_token(auth(
            pb::ResetTokenRequest {
                account_id: a,
                token_id: old_id,
                expires_at: None,
                grace: None,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let nt = new.token.clone().unwrap();
    assert_eq!(nt.name, format!("ci token {}", nt.id));
    assert_eq!(nt.grants, vec![grant(PROJECT, "p", ADMIN)]);
    assert_eq!(nt.replaces, old_id);
    assert_ne!(new.secret, old.secret);
    let got = s
        .tokens()
        .get_token(auth(
            pb::GetTokenRequest {
                account_id: a,
                token_id: old_id,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.replaced_by, nt.id);
    assert!(got.expires_at.is_some());

    assert!(
        s.check(&old.secret, PROJECT, "p", ADMIN).await.allowed,
        "old token works during the grace period"
    );
    assert!(s.check(&new.secret, PROJECT, "p", ADMIN).await.allowed);
    let again = s
        .tokens()
        .reset_token(auth(
            pb::ResetTokenRequest {
                account_id: a,
                token_id: old_id,
                expires_at: None,
                grace: None,
            },
            &admin,
        ))
        .await;
    assert_code(again, Code::FailedPrecondition);

    s.clock.advance_ms(12 * HOUR_MS - 1000);
    assert!(
        s.check(&old.secret, PROJECT, "p", ADMIN).await.allowed,
        "still inside 12 h"
    );
    s.clock.advance_ms(2000);
    assert_eq!(
        s.check(&old.secret, PROJECT, "p", ADMIN).await.reason,
        DenyReason::Expired as i32
    );
    assert!(s.check(&new.secret, PROJECT, "p", ADMIN).await.allowed);
    let expired = s
        .tokens()
        .reset_token(auth(
            pb::ResetTokenRequest {
                account_id: a,
                token_id: old_id,
                expires_at: None,
                grace: None,
            },
            &admin,
        ))
        .await;
    assert_code(expired, Code::FailedPrecondition);

    // Expired tokens are purged 24 h after expiry, not before.
    assert_eq!(s.engine.purge_expired().await.unwrap(), 0);
    s.clock.advance_ms(24 * HOUR_MS);
    assert_eq!(s.engine.purge_expired().await.unwrap(), 1);
    let r = s
        .tokens()
        .get_token(auth(
            pb::GetTokenRequest {
                account_id: a,
                token_id: old_id,
            },
            &admin,
        ))
        .await;
    assert_code(r, Code::NotFound);
    s.stop().await.unwrap();
}

/// Optional expiry on create: none means never; past or > 5 years is
/// invalid; an expired token is denied EXPIRED, also as an admin caller.
#[tokio::test]
async fn expiry_is_validated_and_enforced() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    let acct = a.to_string();
    let mk = |expires_at| pb::CreateTokenRequest {
        rate_limits: Default::default(),
        account_id: a,
        name: "e".into(),
        grants: vec![grant(ACCOUNT, &acct, ADMIN)],
        scopes: vec![],
        expires_at,
    };
    for bad in [ts_in(&s, -1000), ts_in(&s, 5 * 366 * 24 * HOUR_MS)] {
        let r = s.tokens().create_token(auth(mk(Some(bad)), &admin)).await;
        let st = assert_code(r, Code::InvalidArgument);
        assert!(st.message().contains("expires_at"), "{}", st.message());
    }
    let t = s
        .tokens()
        .create_token(auth(mk(Some(ts_in(&s, HOUR_MS))), &admin))
        .await
        .unwrap()
        .into_inner()
        .secret;
    assert!(s.check(&t, ACCOUNT, &acct, ADMIN).await.allowed);
    s.clock.advance_ms(HOUR_MS);
    assert_eq!(
        s.check(&t, ACCOUNT, &acct, ADMIN).await.reason,
        DenyReason::Expired as i32
    );
    let r = s
        .tokens()
        .list_tokens(auth(
            pb::ListTokensRequest {
                account_id: a,
                ..Default::default()
            },
            &t,
        ))
        .await;
    assert_code(r, Code::Unauthenticated);
    s.stop().await.unwrap();
}

/// Pause, resume, delete and grant edits take effect on the very next
/// Authorize.
#[tokio::test]
async fn pause_resume_delete_and_edits_are_immediate() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    s.register(&admin, a, PROJECT, "p", None).await;
    s.register(&admin, a, PROJECT, "q", None).await;
    let t = s
        .create(&admin, a, "t", vec![grant(PROJECT, "p", ADMIN)])
        .await
        .unwrap();
    let id = t.token.unwrap().id;
    assert!(s.check(&t.secret, PROJECT, "p", ADMIN).await.allowed);
    let paused = s
        .tokens()
        .pause_token(auth(
            pb::PauseTokenRequest {
                account_id: a,
                token_id: id,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(paused.paused);
    assert_eq!(
        s.check(&t.secret, PROJECT, "p", ADMIN).await.reason,
        DenyReason::Paused as i32
    );
    let r = s
        .tokens()
        .list_tokens(auth(
            pb::ListTokensRequest {
                account_id: a,
                ..Default::default()
            },
            &t.secret,
        ))
        .await;
    assert_code(r, Code::Unauthenticated);
    s.tokens()
        .resume_token(auth(
            pb::ResumeTokenRequest {
                account_id: a,
                token_id: id,
            },
            &admin,
        ))
        .await
        .unwrap();
    assert!(s.check(&t.secret, PROJECT, "p", ADMIN).await.allowed);

    let updated = s
        .tokens()
        .update_token(auth(
            pb::UpdateTokenRequest {
                account_id: a,
                token_id: id,
                name: "renamed".into(),
                grants: vec![grant(PROJECT, "q", VIEWER)],
                update_mask: Some(FieldMask {
                    paths: vec!["name".into(), "grants".into()],
                }),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.name, "renamed");
    assert_eq!(
        s.check(&t.secret, PROJECT, "p", ADMIN).await.reason,
        DenyReason::NoGrant as i32
    );
    assert!(s.check(&t.secret, PROJECT, "q", VIEWER).await.allowed);
    // A rename alone keeps the grants.
    let renamed = s
        .tokens()
        .update_token(auth(
            pb::UpdateTokenRequest {
                account_id: a,
                token_id: id,
                name: "again".into(),
                update_mask: Some(FieldMask {
                    paths: vec!["name".into()],
                }),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.grants, vec![grant(PROJECT, "q", VIEWER)]);

    s.delete(&admin, a, id).await.unwrap();
    assert_eq!(
        s.check(&t.secret, PROJECT, "q", VIEWER).await.reason,
        DenyReason::UnknownToken as i32
    );
    let r = s.delete(&admin, a, id).await;
    assert_code(r, Code::NotFound);
    s.stop().await.unwrap();
}

/// Deleting a resource deletes its descendants and drops every grant on them.
#[tokio::test]
async fn deleting_a_resource_drops_its_grants() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    s.register(&admin, a, PROJECT, "p", None).await;
    s.register(&admin, a, SANDBOX, "s", Some("p")).await;
    s.register(&admin, a, PROJECT, "keep", None).await;
    let t = s
        .create(
            &admin,
            a,
            "t",
            vec![grant(SANDBOX, "s", ADMIN), grant(PROJECT, "keep", VIEWER)],
        )
        .await
        .unwrap();
    let resp = s
        .resources()
        .delete_resource(auth(
            pb::DeleteResourceRequest {
                account_id: a,
                resource: Some(rref(PROJECT, "p")),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.deleted.len(), 2);
    assert_eq!(resp.grants_dropped, 1);
    let got = s
        .tokens()
        .get_token(auth(
            pb::GetTokenRequest {
                account_id: a,
                token_id: t.token.unwrap().id,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.grants, vec![grant(PROJECT, "keep", VIEWER)]);
    assert_eq!(
        s.check(&t.secret, SANDBOX, "s", VIEWER).await.reason,
        DenyReason::UnknownResource as i32
    );
    // Re-registering the same id does not bring the grant back.
    s.register(&admin, a, PROJECT, "p", None).await;
    s.register(&admin, a, SANDBOX, "s", Some("p")).await;
    assert_eq!(
        s.check(&t.secret, SANDBOX, "s", VIEWER).await.reason,
        DenyReason::NoGrant as i32
    );
    let listed = s
        .resources()
        .list_resources(auth(
            pb::ListResourcesRequest {
                account_id: a,
                ..Default::default()
            },
            &t.secret,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.resources.len(),
        1,
        "the token sees only what it holds: {listed:?}"
    );
    s.stop().await.unwrap();
}

/// ListTokens pages through everything the caller may see, in id order.
#[tokio::test]
async fn list_tokens_pages() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    let acct = a.to_string();
    for i in 0..5 {
        s.create(
            &admin,
            a,
            &format!("t{i}"),
            vec![grant(ACCOUNT, &acct, VIEWER)],
        )
        .await
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = s
            .tokens()
            .list_tokens(auth(
                pb::ListTokensRequest {
                    account_id: a,
                    page_size: 2,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.tokens.len() <= 2);
        seen.extend(page.tokens.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen.len(), 6, "5 tokens and the admin token");
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let r = s
        .tokens()
        .list_tokens(auth(
            pb::ListTokensRequest {
                account_id: a,
                page_size: 5000,
                page_token: String::new(),
                ..Default::default()
            },
            &admin,
        ))
        .await;
    assert_code(r, Code::InvalidArgument);
    let r = s
        .tokens()
        .list_tokens(auth(
            pb::ListTokensRequest {
                account_id: a,
                page_size: 0,
                page_token: "garbage".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await;
    assert_code(r, Code::InvalidArgument);
    s.stop().await.unwrap();
}

/// AuthorizeBatch answers each check in order, like Authorize would.
#[tokio::test]
async fn authorize_batch_matches_single_calls() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    s.register(&admin, a, PROJECT, "p", None).await;
    let t = s
        .create(&admin, a, "t", vec![grant(PROJECT, "p", VIEWER)])
        .await
        .unwrap()
        .secret;
    let checks = vec![
        pb::AuthorizeRequest {
            cost: Default::default(),
            token: t.clone(),
            resource: Some(rref(PROJECT, "p")),
            level: VIEWER,
            scope: String::new(),
        },
        pb::AuthorizeRequest {
            cost: Default::default(),
            token: t.clone(),
            resource: Some(rref(PROJECT, "p")),
            level: ADMIN,
            scope: String::new(),
        },
        pb::AuthorizeRequest {
            cost: Default::default(),
            token: "kw_nope".into(),
            resource: Some(rref(PROJECT, "p")),
            level: VIEWER,
            scope: String::new(),
        },
    ];
    let out = s
        .authorizer()
        .authorize_batch(pb::AuthorizeBatchRequest {
            checks: checks.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    for (c, d) in checks.iter().zip(&out.decisions) {
        let single = s
            .authorizer()
            .authorize(c.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&single, d);
    }
    assert_eq!(
        out.decisions.iter().map(|d| d.allowed).collect::<Vec<_>>(),
        vec![true, false, false]
    );
    let too_many = vec![checks[0].clone(); 1001];
    let r = s
        .authorizer()
        .authorize_batch(pb::AuthorizeBatchRequest { checks: too_many })
        .await;
    assert_code(r, Code::InvalidArgument);
    s.stop().await.unwrap();
}

/// The id of the first token of `account` whose name starts with `prefix`.
async fn listed_id(s: &TestServer, account: u64, caller: &str, prefix: &str) -> u64 {
    let listed = s.list(caller, account).await;
    listed
        .tokens
        .iter()
        .find(|t| t.name.starts_with(prefix))
        .map(|t| t.id)
        .expect("token listed")
}

/// Resource ids are global: a domain registered by one account cannot be
/// registered by another (its tokens would pass the SMTP check for it). A
/// scope-restricted caller's domain token inherits the caller's scopes, and
/// a token left with no grants belongs to account admins only.
#[tokio::test]
async fn no_escalation_through_resources() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    let (b, admin_b) = s.account("B").await;
    s.register(&admin, a, DOMAIN, "victim.example", None)
        .await
        .expect("token");
    let r = s
        .resources()
        .register_resource(auth(
            pb::RegisterResourceRequest {
                account_id: b,
                resource: Some(rref(DOMAIN, "victim.example")),
                parent: None,
            },
            &admin_b,
        ))
        .await;
    assert_code(r, Code::AlreadyExists);
    // A scoped account admin: its domain token is no wider than itself.
    let acct = a.to_string();
    let scoped = s
        .create_scoped(
            &admin,
            a,
            "scoped",
            vec![grant(ACCOUNT, &acct, ADMIN)],
            vec![scope("tokens", ADMIN), scope("domains", ADMIN)],
        )
        .await
        .unwrap()
        .secret;
    let dt = s
        .register(&scoped, a, DOMAIN, "new.example", None)
        .await
        .expect("token");
    assert_eq!(
        dt.token.unwrap().scopes,
        vec![scope("tokens", ADMIN), scope("domains", ADMIN)]
    );
    assert_eq!(
        s.check_scope(&dt.secret, DOMAIN, "new.example", ADMIN, "email")
            .await
            .reason,
        DenyReason::Scope as i32
    );
    // Without the tokens scope it cannot mint a domain token at all.
    let no_tokens = s
        .create_scoped(
            &admin,
            a,
            "nt",
            vec![grant(ACCOUNT, &acct, ADMIN)],
            vec![scope("domains", ADMIN)],
        )
        .await
        .unwrap()
        .secret;
    let r = s
        .resources()
        .register_resource(auth(
            pb::RegisterResourceRequest {
                account_id: a,
                resource: Some(rref(DOMAIN, "other.example")),
                parent: None,
            },
            &no_tokens,
        ))
        .await;
    assert_code(r, Code::PermissionDenied);
    // A token whose only resource was deleted: account admins only.
    s.register(&admin, a, PROJECT, "gone", None).await;
    s.register(&admin, a, PROJECT, "kept", None).await;
    let orphan = s
        .create(&admin, a, "orphan", vec![grant(PROJECT, "gone", VIEWER)])
        .await
        .unwrap();
    let p_admin = s
        .create(&admin, a, "kept admin", vec![grant(PROJECT, "kept", ADMIN)])
        .await
        .unwrap()
        .secret;
    s.resources()
        .delete_resource(auth(
            pb::DeleteResourceRequest {
                account_id: a,
                resource: Some(rref(PROJECT, "gone")),
            },
            &admin,
        ))
        .await
        .unwrap();
    let oid = orphan.token.unwrap().id;
    let r = s.delete(&p_admin, a, oid).await;
    assert_code(r, Code::NotFound);
    s.delete(&admin, a, oid).await.unwrap();
    s.stop().await.unwrap();
}
