//! The rules that contain a leak or a narrow token (issue "Cannot be
//! fooled"): scopes on every mutation, a reset token's grace is for
//! authorizing only, a reset keeps a pause, the last ADMIN on a domain
//! stays, and a token outside the caller's reach does not exist for it.
//! Real server on 127.0.0.1:0, real gRPC and HTTP clients.

mod common;

use common::*;
use keyward::pb::v1 as pb;
use keyward::pb::v1::audit_client::AuditClient;
use prost_types::FieldMask;
use tonic::Code;

async fn audit(s: &TestServer, caller: &str, account_id: u64) -> Result<usize, tonic::Status> {
    AuditClient::new(s.channel.clone())
        .list_audit_events(auth(
            pb::ListAuditEventsRequest {
                account_id,
                ..Default::default()
            },
            caller,
        ))
        .await
        .map(|r| r.into_inner().events.len())
}

async fn register(
    s: &TestServer,
    caller: &str,
    account_id: u64,
    kind: pb::ResourceType,
    id: &str,
    parent: Option<&str>,
) -> Result<pb::RegisterResourceResponse, tonic::Status> {
    s.resources()
        .register_resource(auth(
            pb::RegisterResourceRequest {
                account_id,
                resource: Some(rref(kind, id)),
                parent: parent.map(|p| rref(PROJECT, p)),
            },
            caller,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn unregister(
    s: &TestServer,
    caller: &str,
    account_id: u64,
    kind: pb::ResourceType,
    id: &str,
) -> Result<pb::DeleteResourceResponse, tonic::Status> {
    s.resources()
        .delete_resource(auth(
            pb::DeleteResourceRequest {
                account_id,
                resource: Some(rref(kind, id)),
            },
            caller,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn reset(
    s: &TestServer,
    caller: &str,
    account_id: u64,
    token_id: u64,
) -> Result<pb::TokenWithSecret, tonic::Status> {
    s.tokens()
        .reset_token(auth(
            pb::ResetTokenRequest {
                account_id,
                token_id,
                expires_at: None,
                grace: None,
            },
            caller,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn set_grants(
    s: &TestServer,
    caller: &str,
    account_id: u64,
    token_id: u64,
    grants: Vec<pb::Grant>,
) -> Result<pb::Token, tonic::Status> {
    s.tokens()
        .update_token(auth(
            pb::UpdateTokenRequest {
                account_id,
                token_id,
                grants,
                update_mask: Some(FieldMask {
                    paths: vec!["grants".into()],
                }),
                ..Default::default()
            },
            caller,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn get(
    s: &TestServer,
    caller: &str,
    account_id: u64,
    token_id: u64,
) -> Result<pb::Token, tonic::Status> {
    s.tokens()
        .get_token(auth(
            pb::GetTokenRequest {
                account_id,
                token_id,
            },
            caller,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// A token with ACCOUNT ADMIN but only the `analytics` scope can no longer
/// register or delete projects and sandboxes (deleting a project drops
/// other tokens' grants), nor domains, nor read the audit log. Projects
/// and sandboxes belong to no feature scope: only an unrestricted token
/// changes them; domains need `domains` at ADMIN (and `tokens` at ADMIN to
/// register, since that mints the domain token); the audit log needs an
/// unrestricted account admin.
#[tokio::test]
async fn a_scope_restricted_token_changes_no_resource_outside_its_scopes() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    let acct = a.to_string();
    s.register(&admin, a, PROJECT, "p1", None).await;
    s.register(&admin, a, SANDBOX, "s1", Some("p1")).await;
    s.register(&admin, a, DOMAIN, "d.example", None).await;
    let narrow = s
        .create_scoped(
            &admin,
            a,
            "analytics only",
            vec![grant(ACCOUNT, &acct, ADMIN)],
            vec![scope("analytics", VIEWER)],
        )
        .await
        .unwrap()
        .secret;
    for (kind, id, parent) in [
        (PROJECT, "p2", None),
        (SANDBOX, "s2", Some("p1")),
        (DOMAIN, "e.example", None),
    ] {
        let r = register(&s, &narrow, a, kind, id, parent).await;
        assert_code(r, Code::PermissionDenied);
    }
    for (kind, id) in [(SANDBOX, "s1"), (PROJECT, "p1"), (DOMAIN, "d.example")] {
        let r = unregister(&s, &narrow, a, kind, id).await;
        assert_code(r, Code::PermissionDenied);
    }
    assert_code(audit(&s, &narrow, a).await, Code::PermissionDenied);

    // `domains` ADMIN deletes a domain; registering one also needs `tokens`.
    let domains = s
        .create_scoped(
            &admin,
            a,
            "domains",
            vec![grant(ACCOUNT, &acct, ADMIN)],
            vec![scope("domains", ADMIN)],
        )
        .await
        .unwrap()
        .secret;
    assert_code(
        register(&s, &domains, a, DOMAIN, "e.example", None).await,
        Code::PermissionDenied,
    );
    assert_code(
        register(&s, &domains, a, PROJECT, "p2", None).await,
        Code::PermissionDenied,
    );
    let every_scope: Vec<pb::Scope> = keyward::model::SCOPE_NAMES
        .iter()
        .map(|n| scope(n, ADMIN))
        .collect();
    let all = s
        .create_scoped(
            &admin,
            a,
            "every scope",
            vec![grant(ACCOUNT, &acct, ADMIN)],
            every_scope,
        )
        .await
        .unwrap()
        .secret;
    register(&s, &all, a, DOMAIN, "e.example", None)
        .await
        .unwrap();
    // The domain token made for it carries the caller's scopes.
    unregister(&s, &domains, a, DOMAIN, "e.example")
        .await
        .unwrap();
    // Even every feature scope is not "unrestricted": projects stay out.
    assert_code(
        register(&s, &all, a, PROJECT, "p2", None).await,
        Code::PermissionDenied,
    );
    assert_code(
        unregister(&s, &all, a, SANDBOX, "s1").await,
        Code::PermissionDenied,
    );
    assert_code(audit(&s, &all, a).await, Code::PermissionDenied);

    // Nothing changed: the unrestricted admin still sees every resource,
    // and it may do all of the above.
    assert!(s.check(&admin, SANDBOX, "s1", ADMIN).await.allowed);
    register(&s, &admin, a, PROJECT, "p2", None).await.unwrap();
    unregister(&s, &admin, a, PROJECT, "p2").await.unwrap();
    assert!(audit(&s, &admin, a).await.unwrap() > 0);
    s.stop().await.unwrap();
}

/// During its grace period a reset token (possibly the leaked one) still
/// authorizes, which is what the grace is for, but the admin plane refuses
/// it: it cannot mint a permanent token, delete, reset, edit or pause its
/// replacement, touch resources, list tokens or read the audit log, over
/// gRPC or the REST facades.
#[tokio::test]
async fn a_reset_token_in_its_grace_period_only_authorizes() {
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
    let leaked = leaked.secret;
    let fresh = reset(&s, &admin, a, leaked_id).await.unwrap();
    let fresh_id = fresh.token.as_ref().unwrap().id;

    assert!(s.check(&leaked, PROJECT, "p", ADMIN).await.allowed);
    let r = s
        .create(&leaked, a, "persist", vec![grant(ACCOUNT, &acct, ADMIN)])
        .await;
    assert_code(r, Code::PermissionDenied);
    assert_code(s.delete(&leaked, a, fresh_id).await, Code::PermissionDenied);
    assert_code(
        reset(&s, &leaked, a, fresh_id).await,
        Code::PermissionDenied,
    );
    assert_code(
        set_grants(&s, &leaked, a, fresh_id, vec![grant(PROJECT, "p", VIEWER)]).await,
        Code::PermissionDenied,
    );
    let r = s
        .tokens()
        .pause_token(auth(
            pb::PauseTokenRequest {
                account_id: a,
                token_id: fresh_id,
            },
            &leaked,
        ))
        .await;
    assert_code(r, Code::PermissionDenied);
    assert_code(
        register(&s, &leaked, a, PROJECT, "q", None).await,
        Code::PermissionDenied,
    );
    assert_code(
        unregister(&s, &leaked, a, PROJECT, "p").await,
        Code::PermissionDenied,
    );
    let r = s
        .tokens()
        .list_tokens(auth(
            pb::ListTokensRequest {
                account_id: a,
                ..Default::default()
            },
            &leaked,
        ))
        .await;
    assert_code(r, Code::PermissionDenied);
    assert_code(audit(&s, &leaked, a).await, Code::PermissionDenied);
    // The REST facades say 403 too.
    let body = serde_json::json!({"name": "persist", "resources": [
        {"resource_type": "account", "resource_id": a, "access_level": 100}]});
    let r = http(
        s.http,
        "POST",
        "/api/api_tokens",
        Some(&leaked),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 403, "{:?}", String::from_utf8_lossy(&r.body));
    let r = http(
        s.http,
        "DELETE",
        &format!("/v1/token/{fresh_id}"),
        Some(&leaked),
        None,
    )
    .await;
    assert_eq!(r.status, 403, "{:?}", String::from_utf8_lossy(&r.body));

    // The replacement works and nothing the leaked token tried happened.
    assert!(s.check(&fresh.secret, PROJECT, "p", ADMIN).await.allowed);
    assert_eq!(s.list(&admin, a).await.tokens.len(), 3);
    s.stop().await.unwrap();
}

/// Resetting a paused token (paused because it leaked, say) gives a
/// replacement that is paused too: a reset never resumes.
#[tokio::test]
async fn resetting_a_paused_token_keeps_the_pause() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    s.register(&admin, a, PROJECT, "p", None).await;
    let t = s
        .create(&admin, a, "ci", vec![grant(PROJECT, "p", ADMIN)])
        .await
        .unwrap();
    let id = t.token.as_ref().unwrap().id;
    s.tokens()
        .pause_token(auth(
            pb::PauseTokenRequest {
                account_id: a,
                token_id: id,
            },
            &admin,
        ))
        .await
        .unwrap();
    let new = reset(&s, &admin, a, id).await.unwrap();
    let nt = new.token.clone().unwrap();
    assert!(nt.paused, "the replacement of a paused token is paused");
    assert_eq!(
        s.check(&new.secret, PROJECT, "p", ADMIN).await.reason,
        DenyReason::Paused as i32
    );
    assert_eq!(
        s.check(&t.secret, PROJECT, "p", ADMIN).await.reason,
        DenyReason::Paused as i32
    );
    s.tokens()
        .resume_token(auth(
            pb::ResumeTokenRequest {
                account_id: a,
                token_id: nt.id,
            },
            &admin,
        ))
        .await
        .unwrap();
    assert!(s.check(&new.secret, PROJECT, "p", ADMIN).await.allowed);
    s.stop().await.unwrap();
}

/// Sending needs ADMIN on the domain, so the last token holding ADMIN on a
/// domain can neither be downgraded to VIEWER, nor lose the grant, nor be
/// deleted while only VIEWER holders remain.
#[tokio::test]
async fn the_last_admin_of_a_domain_keeps_admin() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    s.register(&admin, a, PROJECT, "p", None).await;
    let d = s
        .register(&admin, a, DOMAIN, "d.example", None)
        .await
        .unwrap();
    let d_id = d.token.as_ref().unwrap().id;
    let r = set_grants(
        &s,
        &admin,
        a,
        d_id,
        vec![grant(DOMAIN, "d.example", VIEWER)],
    )
    .await;
    let st = assert_code(r, Code::FailedPrecondition);
    assert!(st.message().contains("d.example"), "{}", st.message());
    assert_code(
        set_grants(&s, &admin, a, d_id, vec![grant(PROJECT, "p", ADMIN)]).await,
        Code::FailedPrecondition,
    );
    // A VIEWER holder does not make the ADMIN one deletable.
    let v = s
        .create(
            &admin,
            a,
            "reader",
            vec![grant(DOMAIN, "d.example", VIEWER)],
        )
        .await
        .unwrap();
    assert_code(s.delete(&admin, a, d_id).await, Code::FailedPrecondition);
    assert!(s.check(&d.secret, DOMAIN, "d.example", ADMIN).await.allowed);
    // A second ADMIN holder frees the first; then that one is the last.
    let e = s
        .create(&admin, a, "sender", vec![grant(DOMAIN, "d.example", ADMIN)])
        .await
        .unwrap();
    let e_id = e.token.as_ref().unwrap().id;
    set_grants(
        &s,
        &admin,
        a,
        d_id,
        vec![grant(DOMAIN, "d.example", VIEWER)],
    )
    .await
    .unwrap();
    assert_code(s.delete(&admin, a, e_id).await, Code::FailedPrecondition);
    s.delete(&admin, a, v.token.as_ref().unwrap().id)
        .await
        .unwrap();
    assert!(s.check(&e.secret, DOMAIN, "d.example", ADMIN).await.allowed);
    s.stop().await.unwrap();
}

/// A token outside the caller's reach does not exist for it: NOT_FOUND on
/// gRPC, 404 on both facades, with the same answer as an id that was never
/// issued (the reference API lists only tokens visible to the caller).
#[tokio::test]
async fn a_token_outside_reach_is_not_found_on_every_surface() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    s.register(&admin, a, PROJECT, "p1", None).await;
    s.register(&admin, a, PROJECT, "p2", None).await;
    let manager = s
        .create(&admin, a, "p1 manager", vec![grant(PROJECT, "p1", ADMIN)])
        .await
        .unwrap()
        .secret;
    let other = s
        .create(&admin, a, "p2 token", vec![grant(PROJECT, "p2", ADMIN)])
        .await
        .unwrap();
    let other_id = other.token.as_ref().unwrap().id;
    let never = other_id + 1000;

    let hidden = assert_code(get(&s, &manager, a, other_id).await, Code::NotFound);
    let absent = assert_code(get(&s, &manager, a, never).await, Code::NotFound);
    assert_eq!(
        hidden.message().replace(&other_id.to_string(), "N"),
        absent.message().replace(&never.to_string(), "N"),
        "the answer must not tell the two apart"
    );
    assert_code(s.delete(&manager, a, other_id).await, Code::NotFound);
    assert_code(reset(&s, &manager, a, other_id).await, Code::NotFound);

    for path in [
        format!("/api/api_tokens/{other_id}"),
        format!("/api/accounts/{a}/api_tokens/{other_id}"),
        format!("/v1/token/{other_id}"),
    ] {
        let hidden = http(s.http, "GET", &path, Some(&manager), None).await;
        let absent_path = path.replace(&other_id.to_string(), &never.to_string());
        let absent = http(s.http, "GET", &absent_path, Some(&manager), None).await;
        assert_eq!(hidden.status, 404, "{path}");
        assert_eq!(
            String::from_utf8_lossy(&hidden.body).replace(&other_id.to_string(), "N"),
            String::from_utf8_lossy(&absent.body).replace(&never.to_string(), "N"),
            "{path}"
        );
        let r = http(s.http, "DELETE", &path, Some(&manager), None).await;
        assert_eq!(r.status, 404, "DELETE {path}");
    }
    // The token is untouched and its owner still sees it.
    assert!(s.check(&other.secret, PROJECT, "p2", ADMIN).await.allowed);
    get(&s, &admin, a, other_id).await.unwrap();
    s.stop().await.unwrap();
}
