//! The hand-written seeds of every target's corpus (written into
//! `fuzz/corpus/<target>/` by `tests/fuzz_inputs.rs`, replayed by it).

use keyward::pb::store as rec;
use keyward::pb::v1 as pb;
use keyward::token::DigestKey;
use prost::Message;

use super::common::NOW_MS;
use super::ext_authz_check::{check_request, PATH_ATTACKS};
use super::grpc_requests::{request_input, tonic_health_check};
use super::routes_file::WORLD_ROUTES;
use super::token_parse::reference_token;

fn rref(kind: pb::ResourceType, id: &str) -> Option<pb::ResourceRef> {
    Some(pb::ResourceRef {
        r#type: kind as i32,
        id: id.into(),
    })
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len()).expect("small record");
    let mut out = vec![kind];
    out.extend(len.to_le_bytes());
    out.extend(body);
    out
}

/// Hand-written starting inputs for each target, by target name: the
/// corpus in `fuzz/corpus/` grew from these, and `tests/fuzz_inputs.rs`
/// replays them as well.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use pb::ResourceType::{Account, Domain, Project, Sandbox};
    let mut out: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let secret = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg";
    for s in [
        reference_token(1, secret),
        reference_token(u64::MAX, secret),
        format!("Bearer {}", reference_token(42, secret)),
        format!("{}x", reference_token(7, secret)),
        "kw_".to_string(),
        "Bearer ".to_string(),
        String::new(),
    ] {
        out.push(("token_parse", s.into_bytes()));
    }
    let mut built: Vec<u8> = 5u64.to_le_bytes().to_vec();
    built.extend((0u8..45).map(|i| i.wrapping_mul(37)));
    out.push(("token_parse", built));

    let grant = |kind, id: &str, level: i32| pb::Grant {
        resource: rref(kind, id),
        level,
    };
    let scope = |name: &str, level: i32| pb::Scope {
        name: name.into(),
        level,
    };
    let check = |token: &str, kind, id: &str, level: i32, scope: &str| pb::AuthorizeRequest {
        cost: Default::default(),
        token: token.into(),
        resource: rref(kind, id),
        level,
        scope: scope.into(),
    };
    let ts = |seconds: i64| Some(prost_types::Timestamp { seconds, nanos: 0 });
    let good_token = reference_token(3, secret);
    let requests: Vec<Vec<u8>> = vec![
        request_input(
            0,
            &pb::CreateAccountRequest {
                name: "acme".into(),
            },
        ),
        request_input(0, &pb::CreateAccountRequest { name: " \n".into() }),
        request_input(1, &pb::GetAccountRequest { account_id: 1 }),
        request_input(
            2,
            &pb::ListAccountsRequest {
                page_size: 10,
                page_token: "5".into(),
            },
        ),
        request_input(
            3,
            &pb::RegisterResourceRequest {
                account_id: 1,
                resource: rref(Sandbox, "s1"),
                parent: rref(Project, "p1"),
            },
        ),
        request_input(
            4,
            &pb::DeleteResourceRequest {
                account_id: 1,
                resource: rref(Domain, "example.com"),
            },
        ),
        request_input(
            5,
            &pb::ListResourcesRequest {
                account_id: 1,
                ..Default::default()
            },
        ),
        request_input(
            6,
            &pb::CreateTokenRequest {
                rate_limits: Default::default(),
                account_id: 1,
                name: "ci sender".into(),
                grants: vec![grant(Domain, "example.com", 100), grant(Project, "p1", 10)],
                scopes: vec![scope("email", 100)],
                expires_at: ts(NOW_MS / 1000 + 3600),
            },
        ),
        request_input(
            6,
            &pb::CreateTokenRequest {
                rate_limits: Default::default(),
                account_id: 1,
                name: "dup".into(),
                grants: vec![grant(Project, "p1", 10), grant(Project, "p1", 100)],
                scopes: vec![scope("nope", 10)],
                expires_at: ts(-5),
            },
        ),
        request_input(
            7,
            &pb::GetTokenRequest {
                account_id: 1,
                token_id: 2,
            },
        ),
        request_input(
            8,
            &pb::ListTokensRequest {
                account_id: 1,
                page_size: 1001,
                page_token: "x".into(),
                ..Default::default()
            },
        ),
        request_input(
            9,
            &pb::UpdateTokenRequest {
                rate_limits: Default::default(),
                account_id: 1,
                token_id: 2,
                name: "renamed".into(),
                grants: vec![grant(Account, "1", 100)],
                scopes: vec![],
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![
                        "name".into(),
                        "grants".into(),
                        "scopes".into(),
                        "paused".into(),
                    ],
                }),
                expires_at: None,
            },
        ),
        request_input(
            10,
            &pb::ResetTokenRequest {
                account_id: 1,
                token_id: 2,
                expires_at: ts(NOW_MS / 1000 + 6 * 365 * 24 * 3600),
                grace: None,
            },
        ),
        request_input(
            11,
            &pb::PauseTokenRequest {
                account_id: 1,
                token_id: 2,
            },
        ),
        request_input(
            12,
            &pb::ResumeTokenRequest {
                account_id: 1,
                token_id: 2,
            },
        ),
        request_input(
            13,
            &pb::DeleteTokenRequest {
                account_id: 1,
                token_id: 2,
            },
        ),
        request_input(14, &check(&good_token, Domain, "example.com", 100, "email")),
        request_input(
            15,
            &pb::AuthorizeBatchRequest {
                checks: vec![
                    check(&good_token, Project, "p1", 10, ""),
                    check("kw_x", Sandbox, "", 5, ""),
                ],
            },
        ),
        request_input(
            16,
            &pb::ListAuditEventsRequest {
                account_id: 1,
                page_size: 0,
                page_token: String::new(),
            },
        ),
        request_input(
            17,
            &tonic_health_check::HealthCheckRequest {
                service: "keyward.v1.Authorizer".into(),
            },
        ),
        request_input(
            18,
            &pb::UpdateAccountRequest {
                account_id: 1,
                name: String::new(),
                policy: Some(pb::AccountPolicy {
                    max_token_lifetime: Some(prost_types::Duration {
                        seconds: 0,
                        nanos: 1,
                    }),
                    require_expiry: true,
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["name".into(), "policy".into()],
                }),
            },
        ),
    ];
    out.extend(requests.into_iter().map(|r| ("grpc_requests", r)));

    // Account ids in the world: acme = 1, other = 2.
    let targets = [
        (Account, "1"),
        (Account, "2"),
        (Account, "+1"),
        (Project, "p1"),
        (Sandbox, "p1-sandbox"),
        (Domain, "example.com"),
        (Domain, "other.com"),
        (Project, "nowhere"),
        // Spellings of the world's domains, and ids that are not host names.
        (Domain, "EXAMPLE.com"),
        (Domain, "Other.COM."),
        (Domain, "ｅｘａｍｐｌｅ．ｃｏｍ"),
        (Domain, "example.com:25"),
        (Domain, "127.0.0.1"),
        (Domain, "xn--bcher-kva.example"),
    ];
    for n in 0..9 {
        for (i, (kind, id)) in targets.iter().enumerate() {
            let level = if i % 2 == 0 { 100 } else { 10 };
            let scope = ["", "email", "domains"][(n + i) % 3];
            out.push((
                "authorize",
                check(&format!("@{n}"), *kind, id, level, scope).encode_to_vec(),
            ));
        }
    }
    out.push((
        "authorize",
        check(&good_token, Domain, "example.com", 100, "").encode_to_vec(),
    ));

    let key = DigestKey::from_bytes([7; 32]);
    let token = rec::TokenRecord {
        rate_full_at_ms: Default::default(),
        budget_id: 0,
        rate_limits: Default::default(),
        id: 3,
        account_id: 1,
        name: "ci".into(),
        phc_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        last_4_digits: "abcd".into(),
        created_by: "acme admin token".into(),
        created_at_ms: NOW_MS,
        expires_at_ms: NOW_MS + 1000,
        paused: false,
        grants: vec![
            rec::GrantRecord {
                resource_type: 4,
                resource_id: "example.com".into(),
                level: 100,
            },
            rec::GrantRecord {
                resource_type: 9,
                resource_id: "bad".into(),
                level: 100,
            },
        ],
        scopes: vec![rec::ScopeRecord {
            name: "email".into(),
            level: 100,
        }],
        replaced_by: 0,
        replaces: 2,
        last_used_at_ms: NOW_MS,
        root: false,
        verified_digest: key.digest("kw_x").to_vec(),
        digest_key_id: key.id().to_vec(),
        last_used_by: "primary-0".into(),
    };
    let mut counters = 2u64.to_be_bytes().to_vec();
    counters.extend(4u64.to_be_bytes());
    let mut load = Vec::new();
    load.extend(frame(4, &counters));
    load.extend(frame(
        0,
        &rec::AccountRecord {
            id: 1,
            name: "acme".into(),
            created_at_ms: NOW_MS,
            ..Default::default()
        }
        .encode_to_vec(),
    ));
    for (kind, id, parent) in [(2, "p1", ""), (3, "s1", "p1"), (4, "example.com", "")] {
        load.extend(frame(
            1,
            &rec::ResourceRecord {
                account_id: 1,
                resource_type: kind,
                id: id.into(),
                parent_type: if parent.is_empty() { 1 } else { 2 },
                parent_id: if parent.is_empty() {
                    "1".into()
                } else {
                    parent.into()
                },
            }
            .encode_to_vec(),
        ));
    }
    load.extend(frame(2, &token.encode_to_vec()));
    load.extend(frame(
        5,
        &rec::AuditRecord {
            id: 1,
            account_id: 1,
            at_ms: NOW_MS,
            actor_token_id: 2,
            actor_name: "acme admin token".into(),
            action: "CreateToken".into(),
            token_id: 3,
            resource: String::new(),
            outcome: "OK".into(),
            detail: String::new(),
        }
        .encode_to_vec(),
    ));
    out.push(("store_records", load.clone()));
    load.extend(frame(3, &3u64.to_le_bytes()));
    load.extend(frame(
        6,
        &rec::ResourceRecord {
            account_id: 1,
            resource_type: 2,
            id: "p1".into(),
            ..Default::default()
        }
        .encode_to_vec(),
    ));
    out.push(("store_records", load));

    for text in [
        format!(
            "{WORLD_ROUTES}\n---\nGET /api/accounts/1/projects/p1/x\nPOST /api/domains/example.com/send\nGET /a/../b\nGET /api/accounts/1"
        ),
        include_str!("../../deploy/routes.toml").to_string(),
        "unmatched = \"allow\"\n[[routes]]\npath = \"/x/{a}/{a}\"\nresource = \"domain\"\nid = \"a\"\n".into(),
        "[[routes]]\npath = 5\n".into(),
        "[[routes]]\nmethods = [\"BREW\"]\npath = \"/**/x\"\nresource = \"teapot\"\nid = \"b\"\nlevel = \"owner\"\n".into(),
    ] {
        out.push(("routes_file", text.into_bytes()));
    }
    for (method, path, _) in PATH_ATTACKS {
        out.push((
            "routes_file",
            format!("{WORLD_ROUTES}\n---\n{method} {path}").into_bytes(),
        ));
    }
    for (method, path, token) in PATH_ATTACKS {
        out.push(("ext_authz_check", check_request(method, path, token)));
    }

    {
        use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
        use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
        let paths = [
            ("POST", "/api/domains/example.com/send"),
            ("GET", "/api/domains/other.com/stats"),
            ("GET", "/api/accounts/1/projects/p1/inboxes"),
            (
                "DELETE",
                "/api/accounts/1/projects/p1/sandboxes/p1-sandbox/messages",
            ),
            ("GET", "/api/accounts/2/projects/p1/x"),
            ("PUT", "/api/accounts/1"),
            ("GET", "/api/accounts/1/projects/p1/../p2"),
            ("GET", "/nowhere"),
        ];
        for (i, (method, path)) in paths.iter().enumerate() {
            for n in [i % 9, (i + 4) % 9] {
                let req = CheckRequest {
                    attributes: Some(AttributeContext {
                        request: Some(Request {
                            http: Some(HttpRequest {
                                method: (*method).into(),
                                path: (*path).into(),
                                host: "mail.example".into(),
                                headers: [("authorization".to_string(), format!("Bearer @{n}"))]
                                    .into_iter()
                                    .collect(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                };
                out.push(("ext_authz_check", req.encode_to_vec()));
            }
        }
    }

    for t in [
        "2026-12-01T10:00:00Z",
        "2026-12-01",
        "2026-12-01T10:00:00.5+02:00",
        "2024-02-29T23:59:59.999999999-23:59",
        "1970-01-01t00:00:00z",
        "2026-13-01T00:00:00Z",
    ] {
        out.push(("rest_time", t.as_bytes().to_vec()));
    }
    out
}
