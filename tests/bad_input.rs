//! Bad input gets a clear error code with the field named, never INTERNAL,
//! never a panic, and changes nothing.

mod common;

use common::*;
use keyward::pb::v1 as pb;
use prost_types::FieldMask;
use tonic::Code;
use tonic_types::StatusExt;

/// Validation errors are INVALID_ARGUMENT with a BadRequest detail naming
/// the field.
#[tokio::test]
async fn invalid_fields_are_named() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    let acct = a.to_string();
    let ok_grant = || vec![grant(ACCOUNT, &acct, VIEWER)];
    let cases: Vec<(pb::CreateTokenRequest, &str)> = vec![
        (
            pb::CreateTokenRequest {
                account_id: a,
                name: String::new(),
                grants: ok_grant(),
                ..Default::default()
            },
            "name",
        ),
        (
            pb::CreateTokenRequest {
                account_id: a,
                name: "x".repeat(101),
                grants: ok_grant(),
                ..Default::default()
            },
            "name",
        ),
        (
            pb::CreateTokenRequest {
                account_id: a,
                name: "tab\there".into(),
                grants: ok_grant(),
                ..Default::default()
            },
            "name",
        ),
        (
            pb::CreateTokenRequest {
                account_id: a,
                name: "n".into(),
                grants: vec![],
                ..Default::default()
            },
            "grants",
        ),
        (
            pb::CreateTokenRequest {
                account_id: a,
                name: "n".into(),
                grants: vec![grant(ACCOUNT, &acct, 0)],
                ..Default::default()
            },
            "grants[0].level",
        ),
        (
            pb::CreateTokenRequest {
                account_id: a,
                name: "n".into(),
                grants: vec![grant(ACCOUNT, &acct, 50)],
                ..Default::default()
            },
            "grants[0].level",
        ),
        (
            pb::CreateTokenRequest {
                account_id: a,
                name: "n".into(),
                grants: vec![pb::Grant {
                    resource: Some(pb::ResourceRef {
                        r#type: 0,
                        id: "1".into(),
                    }),
                    level: VIEWER,
                }],
                ..Default::default()
            },
            "grants[0].resource.type",
        ),
        (
            pb::CreateTokenRequest {
                account_id: a,
                name: "n".into(),
                grants: vec![pb::Grant {
                    resource: Some(pb::ResourceRef {
                        r#type: 99,
                        id: "1".into(),
                    }),
                    level: VIEWER,
                }],
                ..Default::default()
            },
            "grants[0].resource.type",
        ),
        (
            pb::CreateTokenRequest {
                account_id: a,
                name: "n".into(),
                grants: vec![pb::Grant {
                    resource: None,
                    level: VIEWER,
                }],
                ..Default::default()
            },
            "grants[0].resource",
        ),
        (
            pb::CreateTokenRequest {
                account_id: a,
                name: "n".into(),
                grants: vec![grant(PROJECT, "bad id!", VIEWER)],
                ..Default::default()
            },
            "grants[0].resource.id",
        ),
        (
            pb::CreateTokenRequest {
                account_id: a,
                name: "n".into(),
                grants: vec![grant(ACCOUNT, &acct, VIEWER); 2],
                ..Default::default()
            },
            "grants[1].resource",
        ),
        (
            pb::CreateTokenRequest {
                account_id: a,
                name: "n".into(),
                grants: vec![grant(ACCOUNT, &acct, VIEWER); 101],
                ..Default::default()
            },
            "grants",
        ),
        (
            pb::CreateTokenRequest {
                account_id: a,
                name: "n".into(),
                grants: ok_grant(),
                scopes: vec![scope("email", 0)],
                ..Default::default()
            },
            "scopes[0].level",
        ),
        (
            pb::CreateTokenRequest {
                account_id: a,
                name: "n".into(),
                grants: ok_grant(),
                scopes: vec![scope("email", VIEWER), scope("email", ADMIN)],
                ..Default::default()
            },
            "scopes[1].name",
        ),
        (
            pb::CreateTokenRequest {
                account_id: a,
                name: "n".into(),
                grants: ok_grant(),
                expires_at: Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: -5,
                }),
                ..Default::default()
            },
            "expires_at",
        ),
    ];
    for (req, field) in cases {
        let st = assert_code(
            s.tokens().create_token(auth(req.clone(), &admin)).await,
            Code::InvalidArgument,
        );
        let details = st.get_error_details();
        let bad = details
            .bad_request()
            .unwrap_or_else(|| panic!("no BadRequest detail for {field}: {st:?}"));
        assert_eq!(bad.field_violations[0].field, field, "{req:?}");
    }
    // Nothing was created by any of them.
    let listed = s.list(&admin, a).await;
    assert_eq!(listed.tokens.len(), 1);
    s.stop().await.unwrap();
}

/// Authorize: an invalid request is INVALID_ARGUMENT; a malformed or unknown
/// token is a denial with its reason.
#[tokio::test]
async fn authorize_rejects_bad_requests_and_denies_bad_tokens() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    let acct = a.to_string();
    let bad_requests = [
        pb::AuthorizeRequest {
            cost: Default::default(),
            token: admin.clone(),
            resource: None,
            level: VIEWER,
            scope: String::new(),
        },
        pb::AuthorizeRequest {
            cost: Default::default(),
            token: admin.clone(),
            resource: Some(rref(ACCOUNT, &acct)),
            level: 0,
            scope: String::new(),
        },
        pb::AuthorizeRequest {
            cost: Default::default(),
            token: admin.clone(),
            resource: Some(pb::ResourceRef {
                r#type: 0,
                id: acct.clone(),
            }),
            level: VIEWER,
            scope: String::new(),
        },
        pb::AuthorizeRequest {
            cost: Default::default(),
            token: admin.clone(),
            resource: Some(rref(PROJECT, "")),
            level: VIEWER,
            scope: String::new(),
        },
        pb::AuthorizeRequest {
            cost: Default::default(),
            token: admin.clone(),
            resource: Some(rref(ACCOUNT, &acct)),
            level: VIEWER,
            scope: "s".repeat(65),
        },
    ];
    for req in bad_requests {
        assert_code(s.authorizer().authorize(req).await, Code::InvalidArgument);
    }
    let mut flipped = admin.clone().into_bytes();
    flipped[30] = if flipped[30] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for token in [
        "",
        "kw_",
        "not a token",
        &"kw_".repeat(50),
        &flipped,
        "kw_ÿÿÿÿ",
    ] {
        let d = s.check(token, ACCOUNT, &acct, VIEWER).await;
        assert_eq!(
            (d.allowed, d.reason, d.token_id),
            (false, DenyReason::Malformed as i32, 0),
            "{token:?}"
        );
    }
    // Well formed, but no such token id.
    let ghost = keyward::token::assemble(999_999, &keyward::token::new_secret_part());
    let d = s.check(ghost.expose(), ACCOUNT, &acct, VIEWER).await;
    assert_eq!(d.reason, DenyReason::UnknownToken as i32);
    s.stop().await.unwrap();
}

/// Unknown ids are NOT_FOUND; bad masks and pages are INVALID_ARGUMENT;
/// garbage metadata is UNAUTHENTICATED; an oversized message is refused.
#[tokio::test]
async fn unknown_ids_masks_metadata_and_sizes() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    let r = s
        .tokens()
        .get_token(auth(
            pb::GetTokenRequest {
                account_id: a,
                token_id: 424242,
            },
            &admin,
        ))
        .await;
    assert_code(r, Code::NotFound);
    let r = s
        .tokens()
        .pause_token(auth(
            pb::PauseTokenRequest {
                account_id: a,
                token_id: 424242,
            },
            &admin,
        ))
        .await;
    assert_code(r, Code::NotFound);
    let r = s
        .accounts()
        .get_account(auth(pb::GetAccountRequest { account_id: 777 }, &s.root()))
        .await;
    assert_code(r, Code::NotFound);
    let r = s
        .resources()
        .delete_resource(auth(
            pb::DeleteResourceRequest {
                account_id: a,
                resource: Some(rref(PROJECT, "nope")),
            },
            &admin,
        ))
        .await;
    assert_code(r, Code::NotFound);
    let r = s
        .resources()
        .delete_resource(auth(
            pb::DeleteResourceRequest {
                account_id: a,
                resource: Some(rref(ACCOUNT, &a.to_string())),
            },
            &admin,
        ))
        .await;
    assert_code(r, Code::InvalidArgument);
    for mask in [
        None,
        Some(FieldMask { paths: vec![] }),
        Some(FieldMask {
            paths: vec!["secret".into()],
        }),
    ] {
        let r = s
            .tokens()
            .update_token(auth(
                pb::UpdateTokenRequest {
                    account_id: a,
                    token_id: 2,
                    update_mask: mask,
                    ..Default::default()
                },
                &admin,
            ))
            .await;
        assert_code(r, Code::InvalidArgument);
    }
    let r = s
        .accounts()
        .create_account(auth(
            pb::CreateAccountRequest { name: " ".into() },
            &s.root(),
        ))
        .await;
    assert_code(r, Code::InvalidArgument);
    // Garbage metadata values.
    for (k, v) in [
        ("authorization", "Basic dXNlcjpwYXNz"),
        ("authorization", "Bearer kw_x y z"),
        ("api-token", "\u{7f}"),
    ] {
        let mut req = tonic::Request::new(pb::ListTokensRequest {
            account_id: a,
            ..Default::default()
        });
        if let Ok(v) = v.parse() {
            req.metadata_mut().insert(k, v);
        }
        assert_code(s.tokens().list_tokens(req).await, Code::Unauthenticated);
    }
    // A message over the 64 KiB limit is refused before it is decoded.
    let huge = pb::CreateAccountRequest {
        name: "x".repeat(100 * 1024),
    };
    let st = s
        .accounts()
        .create_account(auth(huge, &s.root()))
        .await
        .expect_err("too big");
    assert_ne!(st.code(), Code::Internal);
    assert_ne!(st.code(), Code::Ok);
    s.stop().await.unwrap();
}
