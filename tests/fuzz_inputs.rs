//! The fuzz targets' checks on stable, so that `cargo test` (and CI) runs
//! them: every file of the kept corpus (`fuzz/corpus/<target>/`), the
//! hand-written seeds, and a few thousand proptest inputs per target, both
//! arbitrary bytes and structured messages. The checks themselves live in
//! `fuzz/src/` (`lib.rs` and a module per target, shared with the nightly
//! cargo-fuzz targets): no panic, and what keyward accepts matches a
//! separate reference rule, round-trips, and is INVALID_ARGUMENT (never
//! INTERNAL) when refused.
//!
//! Cases per proptest: `KEYWARD_FUZZ_CASES` (default 1,000).

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::PathBuf;

use keyward::pb::store as rec;
use keyward::pb::v1 as pb;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;

/// A target's check: panics on a finding.
type Check = fn(&[u8]);

/// Each target and the check it runs.
const TARGETS: [(&str, Check); 7] = [
    ("token_parse", checks::token_input),
    ("grpc_requests", checks::grpc_request),
    ("authorize", checks::authorize),
    ("store_records", checks::store_records),
    ("routes_file", checks::routes_file),
    ("ext_authz_check", checks::ext_authz_check),
    ("rest_time", checks::rest_time),
];

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn cases() -> u32 {
    std::env::var("KEYWARD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Runs `check` on every input `strategy` makes; fails with the (shrunk)
/// input that panicked.
fn run_bytes<S>(cases: u32, strategy: S, check: fn(&[u8]))
where
    S: Strategy<Value = Vec<u8>>,
{
    let result = runner(cases).run(&strategy, |input| {
        check(&input);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn the_kept_corpus_and_the_seeds_pass_every_check() {
    let mut total = 0;
    for (target, check) in TARGETS {
        let dir = corpus_dir(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        files.sort();
        assert!(
            files.len() >= 10,
            "{}: the corpus is missing or nearly empty ({} files)",
            dir.display(),
            files.len()
        );
        for f in &files {
            let data = std::fs::read(f).expect("read corpus file");
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                panic!("{target}: {} fails its check", f.display());
            }
        }
        let seeds: Vec<Vec<u8>> = checks::seeds()
            .into_iter()
            .filter(|(t, _)| *t == target)
            .map(|(_, s)| s)
            .collect();
        assert!(!seeds.is_empty(), "{target}: no seeds");
        for s in &seeds {
            check(s);
        }
        println!(
            "{target}: {} corpus files, {} seeds: no panic, every check held",
            files.len(),
            seeds.len()
        );
        total += files.len() + seeds.len();
    }
    println!("fuzz corpus replay: {total} inputs");
}

/// The checks are not vacuous: a broken token, request or decision is caught.
#[test]
fn the_checks_catch_what_they_are_meant_to() {
    let secret = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg";
    let good = checks::reference_token(9, secret);
    assert_eq!(keyward::token::parse(&good).map(|p| p.id), Some(9));
    assert_eq!(checks::reference_parse(&good), Some(9));
    // The reference refuses what keyward refuses.
    let mut bad = good.clone().into_bytes();
    bad[20] = if bad[20] == b'a' { b'b' } else { b'a' };
    let bad = String::from_utf8(bad).expect("ascii");
    assert_eq!(checks::reference_parse(&bad), None);
    assert!(keyward::token::parse(&bad).is_none());
    // A real decision disagreeing with the reference would be caught: the
    // world's ACME admin token is allowed on its project, denied elsewhere.
    let w = checks::world();
    let admin = &w.tokens[0];
    let p1 = keyward::authz::Check {
        kind: keyward::model::Kind::Project,
        id: "p1",
        level: keyward::model::Level::Admin,
        scope: "",
        cost: 1,
    };
    assert_eq!(checks::reference_decision(w, admin, &p1), Ok(()));
    let other = keyward::authz::Check { id: "p2", ..p1 };
    assert_eq!(
        checks::reference_decision(w, admin, &other),
        Err(pb::DenyReason::WrongAccount)
    );
    // And the world holds every kind of token the reference distinguishes.
    assert!(w.tokens.iter().any(|t| t.paused));
    assert!(w.tokens.iter().any(|t| t.expired));
    assert!(w.tokens.iter().any(|t| !t.scopes.is_empty()));
    assert!(w.tokens.iter().any(|t| t.account == 0));
}

#[test]
fn arbitrary_bytes_never_panic_any_target() {
    let n = cases();
    for (target, check) in TARGETS {
        run_bytes(n, prop::collection::vec(any::<u8>(), 0..400), check);
        println!("{target}: {n} arbitrary inputs: no panic, every check held");
    }
}

/// Token strings near the format: right prefix and length, alphabet mostly
/// right, checksum right or not.
#[test]
fn near_tokens_parse_exactly_when_the_reference_does() {
    let strategy = (
        any::<u64>(),
        "[0-9A-Za-z]{43}",
        prop::option::of((0usize..63, any::<char>())),
        prop::option::of("[ -~]{0,70}"),
    );
    let parsed = std::cell::Cell::new(0u32);
    let result = runner(cases() * 2).run(&strategy, |(id, secret, change, raw)| {
        let mut s = checks::reference_token(id, &secret);
        if let Some((pos, c)) = change {
            s.replace_range(pos..pos + 1, &c.to_string());
        }
        if let Some(raw) = raw {
            checks::check_token_str(&raw);
        }
        checks::check_token_str(&s);
        let p = keyward::token::parse(&s);
        if change.is_none() {
            prop_assert_eq!(p.map(|p| p.id), Some(id));
        }
        if p.is_some() {
            parsed.set(parsed.get() + 1);
        }
        checks::token_input(s.as_bytes());
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(parsed.get() > 0);
    println!(
        "near tokens: {} cases, {} parsed",
        cases() * 2,
        parsed.get()
    );
}

fn resource_ref() -> impl Strategy<Value = Option<pb::ResourceRef>> {
    prop::option::weighted(
        0.95,
        (
            prop_oneof![Just(-1), 0..6i32, Just(i32::MAX)],
            prop_oneof![
                "[a-z0-9.]{1,12}",
                "[a-zA-Z0-9-]{1,12}(\\.[a-zA-Z0-9-]{1,12}){0,3}\\.?",
                "[ -~]{0,110}",
                "\\PC{0,30}",
                Just("p1".to_string()),
                Just("example.com".to_string()),
                Just("1".to_string()),
            ],
        )
            .prop_map(|(t, id)| pb::ResourceRef { r#type: t, id }),
    )
}

fn level() -> impl Strategy<Value = i32> {
    prop_oneof![Just(10), Just(100), Just(0), Just(50), any::<i32>()]
}

fn grants() -> impl Strategy<Value = Vec<pb::Grant>> {
    prop::collection::vec(
        (resource_ref(), level()).prop_map(|(resource, level)| pb::Grant { resource, level }),
        0..6,
    )
}

fn scopes() -> impl Strategy<Value = Vec<pb::Scope>> {
    prop::collection::vec(
        (
            prop_oneof![
                prop::sample::select(keyward::model::SCOPE_NAMES.to_vec()).prop_map(String::from),
                "[a-z_]{0,12}",
            ],
            level(),
        )
            .prop_map(|(name, level)| pb::Scope { name, level }),
        0..5,
    )
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{0,20}",
        "\\PC{0,110}",
        "\\PC{0,3}[\\x00-\\x1f]\\PC{0,3}",
        "\\s{0,4}"
    ]
}

fn timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    let now = checks::NOW_MS / 1000;
    prop::option::of(
        (
            prop_oneof![
                now - 10..now + 10,
                now..now + 6 * 366 * 86_400,
                any::<i64>(),
            ],
            prop_oneof![0..1_000_000_000i32, any::<i32>()],
        )
            .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
    )
}

fn authorize_request() -> impl Strategy<Value = pb::AuthorizeRequest> {
    (
        prop_oneof![
            (0usize..10).prop_map(|n| format!("@{n}")),
            "[ -~]{0,140}",
            (any::<u64>(), "[0-9A-Za-z]{43}")
                .prop_map(|(id, s)| checks::reference_token(id % 12, &s)),
        ],
        resource_ref(),
        prop_oneof![Just(10), Just(100), level()],
        prop_oneof![
            Just(String::new()),
            Just("email".to_string()),
            Just("domains".to_string()),
            "[a-z]{0,70}",
        ],
    )
        .prop_map(|(token, resource, level, scope)| pb::AuthorizeRequest {
            cost: Default::default(),
            token,
            resource,
            level,
            scope,
        })
}

/// Structured messages: each one round-trips through its encoding, and its
/// validation agrees with the reference rules.
#[test]
fn structured_requests_round_trip_and_validate_like_the_reference() {
    let n = cases();
    let create = (name(), grants(), scopes(), timestamp()).prop_map(|(name, grants, scopes, t)| {
        pb::CreateTokenRequest {
            rate_limits: Default::default(),
            account_id: 1,
            name,
            grants,
            scopes,
            expires_at: t,
        }
    });
    let update = (
        name(),
        grants(),
        scopes(),
        prop::collection::vec(
            prop_oneof![
                Just("name".to_string()),
                Just("grants".to_string()),
                Just("scopes".to_string()),
                "[a-z]{0,8}",
            ],
            0..4,
        ),
    )
        .prop_map(|(name, grants, scopes, paths)| pb::UpdateTokenRequest {
            rate_limits: Default::default(),
            account_id: 1,
            token_id: 2,
            name,
            grants,
            scopes,
            update_mask: Some(prost_types::FieldMask { paths }),
            expires_at: None,
        });
    let register = (resource_ref(), resource_ref()).prop_map(|(resource, parent)| {
        pb::RegisterResourceRequest {
            account_id: 1,
            resource,
            parent,
        }
    });
    let page = (
        prop_oneof![0..1200u32, any::<u32>()],
        prop_oneof!["[0-9]{0,21}", "[ -~]{0,8}"],
    );
    let batch = prop::collection::vec(authorize_request(), 0..8)
        .prop_map(|checks| pb::AuthorizeBatchRequest { checks });
    let all = (create, update, register, page, batch, timestamp());
    let result = runner(n).run(&all, |(create, update, register, page, batch, reset)| {
        let inputs = [
            checks::request_input(6, &create),
            checks::request_input(9, &update),
            checks::request_input(3, &register),
            checks::request_input(
                8,
                &pb::ListTokensRequest {
                    account_id: 1,
                    page_size: page.0,
                    page_token: page.1.clone(),
                    ..Default::default()
                },
            ),
            checks::request_input(15, &batch),
            checks::request_input(
                10,
                &pb::ResetTokenRequest {
                    account_id: 1,
                    token_id: 2,
                    expires_at: reset,
                    grace: None,
                },
            ),
        ];
        for input in &inputs {
            checks::grpc_request(input);
        }
        prop_assert_eq!(
            checks::decode_round_trip::<pb::CreateTokenRequest>(&inputs[0][1..]),
            Some(create)
        );
        prop_assert_eq!(
            checks::decode_round_trip::<pb::AuthorizeBatchRequest>(&inputs[4][1..]),
            Some(batch)
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    println!("structured requests: {n} cases x 6 messages");
}

/// Authorize requests on the world's real tokens (`@n`), forged and
/// malformed ones: every decision matches the reference.
#[test]
fn authorize_decisions_match_the_reference_world() {
    let n = cases() * 3;
    let allowed = std::cell::Cell::new(0u32);
    // Mostly the world's own tokens and resources, so that allows are
    // reached too; the rest anything.
    let in_world = (
        0usize..10,
        prop::sample::select(vec![
            (1, "1"),
            (1, "2"),
            (1, "+1"),
            (2, "p1"),
            (2, "p2"),
            (3, "p1-sandbox"),
            (3, "p2-sandbox"),
            (4, "example.com"),
            (4, "other.com"),
            (4, "nowhere.com"),
            (4, "EXAMPLE.com"),
            (4, "example.com."),
            (4, "Other.Com"),
            (4, "example.com:25"),
        ]),
        prop::sample::select(vec![10, 100]),
        prop::sample::select(vec!["", "email", "domains", "sms"]),
    )
        .prop_map(|(n, (kind, id), level, scope)| pb::AuthorizeRequest {
            cost: Default::default(),
            token: format!("@{n}"),
            resource: Some(pb::ResourceRef {
                r#type: kind,
                id: id.into(),
            }),
            level,
            scope: scope.into(),
        });
    let strategy = prop_oneof![3 => in_world, 1 => authorize_request()];
    let result = runner(n).run(&strategy, |req| {
        let bytes = req.encode_to_vec();
        checks::authorize(&bytes);
        checks::grpc_request(&checks::request_input(14, &req));
        if let Some(t) = req
            .token
            .strip_prefix('@')
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| checks::world().tokens.get(i))
        {
            let real = pb::AuthorizeRequest {
                token: t.secret.clone(),
                ..req.clone()
            };
            if let Ok(check) = keyward::service::authorizer::check_of("", &real) {
                if checks::reference_decision(checks::world(), t, &check).is_ok() {
                    allowed.set(allowed.get() + 1);
                }
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The inputs reach allowed decisions too, not only denials.
    assert!(allowed.get() > 0, "no input was allowed");
    println!("authorize: {n} requests, {} allowed", allowed.get());
}

/// Routes files made of random templates and fields, and requests built
/// from the same segments: each file loads or names the place of its error,
/// and every match is sane.
#[test]
fn random_routes_files_load_or_say_where() {
    let segment = prop_oneof![
        "[a-z]{1,4}",
        Just("{a}".to_string()),
        Just("{b}".to_string()),
        Just("**".to_string()),
        Just("..".to_string()),
        Just(String::new()),
        Just("%2F".to_string()),
        Just("{".to_string()),
        Just("%61".to_string()),
        Just("%2e".to_string()),
        Just("A".to_string()),
        Just("a;b".to_string()),
    ];
    let opt = |v: Vec<&'static str>| prop::option::of(prop::sample::select(v));
    let route = (
        prop::collection::vec(segment.clone(), 0..5),
        prop::sample::select(vec!["account", "project", "sandbox", "domain", "mailbox"]),
        prop::sample::select(vec!["a", "b", "c"]),
        opt(vec!["viewer", "admin", "root"]),
        opt(vec!["a", "b", "z"]),
        opt(vec!["email", "domains", "nope"]),
        opt(vec!["[\"GET\"]", "[\"POST\", \"get\"]", "[]", "[\"BREW\"]"]),
    )
        .prop_map(|(segs, resource, id, level, account, scope, methods)| {
            let mut r = format!(
                "[[routes]]\npath = \"/{}\"\nresource = \"{resource}\"\nid = \"{id}\"\n",
                segs.join("/")
            );
            for (k, v) in [("level", level), ("account", account), ("scope", scope)] {
                if let Some(v) = v {
                    r.push_str(&format!("{k} = \"{v}\"\n"));
                }
            }
            if let Some(m) = methods {
                r.push_str(&format!("methods = {m}\n"));
            }
            r
        });
    let request = (
        prop::sample::select(vec!["GET", "POST", "DELETE", "get"]),
        prop::collection::vec(segment, 0..6),
    )
        .prop_map(|(m, segs)| format!("{m} /{}", segs.join("/")));
    let file = (
        prop::option::of(prop::sample::select(vec!["deny", "allow", "maybe"])),
        prop::collection::vec(route, 0..5),
        prop::collection::vec(request, 0..8),
    )
        .prop_map(|(unmatched, routes, requests)| {
            let head = unmatched.map_or(String::new(), |u| format!("unmatched = \"{u}\"\n"));
            format!("{head}{}\n---\n{}", routes.join("\n"), requests.join("\n"))
        });
    let loaded = std::cell::Cell::new(0u32);
    let result = runner(cases()).run(&file, |text| {
        let routes_text = text.split("\n---\n").next().unwrap_or("");
        if keyward::routes::parse("x.toml", routes_text).is_ok() {
            loaded.set(loaded.get() + 1);
        }
        checks::routes_file(text.as_bytes());
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(loaded.get() > 0, "no random routes file loaded");
    println!("routes files: {} cases, {} loaded", cases(), loaded.get());
}

/// Envoy checks on the world's paths (and disguised ones) with its real
/// tokens (`@n`): allowed exactly when the reference allows, refused paths
/// refused whatever `unmatched` says.
#[test]
fn ext_authz_checks_match_the_reference_world() {
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    let strategy = (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "post"]),
        prop::sample::select(vec![
            "/api/domains/example.com/send",
            "/api/domains/example.com/send/",
            "/API/Domains/example.com/send",
            "/api/domains/example.com/send;x",
            "/api/accounts/1/%75sers/list",
            "/api/accounts/1/users",
            "/api/accounts/1/projectS/p1",
            "/api/accounts/1/projects/p%31/x",
            "/api/accounts/1/projects/p1/..;/..;/users/list",
            "/api/accounts/1/projects/p1/%252e%252e/users",
            "/api/accounts/1/projects/p1#/../../users",
            "/api/domains/other.com/send",
            "/api/domains/example.com/stats",
            "/api/accounts/1/projects/p1/inboxes",
            "/api/accounts/2/projects/p2/inboxes",
            "/api/accounts/1/projects/p2/x",
            "/api/accounts/1/projects/p1/sandboxes/p1-sandbox/m",
            "/api/accounts/1",
            "/api/accounts/2",
            "/api/accounts/1/projects/p1/../p2",
            "/nowhere",
        ]),
        0usize..10,
        prop::sample::select(vec!["Bearer ", "bearer ", "", "Basic "]),
        any::<bool>(),
    );
    let allowed = std::cell::Cell::new(0u32);
    let result = runner(cases()).run(&strategy, |(method, path, n, scheme, api_token)| {
        let header = if api_token {
            "api-token"
        } else {
            "authorization"
        };
        let value = if api_token {
            format!("@{n}")
        } else {
            format!("{scheme}@{n}")
        };
        let req = CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: method.into(),
                        path: path.into(),
                        headers: [(header.to_string(), value)].into_iter().collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        if checks::ext_authz_decision(&req.encode_to_vec()) == Some(true) {
            allowed.set(allowed.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(allowed.get() > 0, "no check was allowed");
    println!("ext_authz: {} checks, {} allowed", cases(), allowed.get());
}

fn record_frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend(u16::try_from(body.len()).expect("small").to_le_bytes());
    out.extend(body);
    out
}

/// Sequences of well-formed store records with arbitrary field values.
#[test]
fn store_record_sequences_load_without_panic() {
    let account = (
        0..4u64,
        "\\PC{0,10}",
        any::<i64>(),
        any::<i64>(),
        any::<bool>(),
    )
        .prop_map(|(id, name, at, lifetime, require)| {
            record_frame(
                0,
                &rec::AccountRecord {
                    id,
                    name,
                    created_at_ms: at,
                    max_token_lifetime_ms: lifetime,
                    require_expiry: require,
                }
                .encode_to_vec(),
            )
        });
    let resource = (
        0..4u64,
        -1..6i32,
        "[a-z0-9]{0,4}",
        -1..6i32,
        "[a-z0-9]{0,4}",
        any::<bool>(),
    )
        .prop_map(|(account_id, t, id, pt, pid, delete)| {
            record_frame(
                if delete { 6 } else { 1 },
                &rec::ResourceRecord {
                    account_id,
                    resource_type: t,
                    id,
                    parent_type: pt,
                    parent_id: pid,
                }
                .encode_to_vec(),
            )
        });
    let grant = (-1..6i32, "[a-z0-9]{0,4}", level()).prop_map(|(t, id, level)| rec::GrantRecord {
        resource_type: t,
        resource_id: id,
        level,
    });
    let scope = (
        prop_oneof![
            prop::sample::select(keyward::model::SCOPE_NAMES.to_vec()).prop_map(String::from),
            "[a-z]{0,6}",
        ],
        level(),
    )
        .prop_map(|(name, level)| rec::ScopeRecord { name, level });
    let token = (
        (
            0..64u64,
            0..4u64,
            any::<i64>(),
            any::<bool>(),
            any::<bool>(),
        ),
        prop::collection::vec(grant, 0..4),
        prop::collection::vec(scope, 0..3),
        prop::collection::vec(any::<u8>(), 0..40),
        any::<bool>(),
    )
        .prop_map(
            |((id, account_id, expires, paused, root), grants, scopes, digest, own_key)| {
                let key = keyward::token::DigestKey::from_bytes([7; 32]);
                record_frame(
                    2,
                    &rec::TokenRecord {
                        id,
                        account_id,
                        name: "t".into(),
                        expires_at_ms: expires,
                        paused,
                        root,
                        grants,
                        scopes,
                        verified_digest: digest,
                        digest_key_id: if own_key {
                            key.id().to_vec()
                        } else {
                            vec![1, 2]
                        },
                        ..Default::default()
                    }
                    .encode_to_vec(),
                )
            },
        );
    let delete = (0..64u64).prop_map(|id| record_frame(3, &id.to_le_bytes()));
    // The id counter: a token is held only below it (every mint commits
    // it first), so most sequences begin with one; some move it on the
    // way, back below some ids or far ahead.
    let counters = |next: u64| {
        let mut body = 1u64.to_be_bytes().to_vec();
        body.extend(next.to_be_bytes());
        record_frame(4, &body)
    };
    let moved =
        prop_oneof![0..80u64, Just(u64::from(u32::MAX)), Just(1u64 << 33)].prop_map(counters);
    let item = prop_oneof![6 => account, 6 => resource, 6 => token, 6 => delete, 1 => moved];
    run_bytes(
        cases(),
        (any::<bool>(), prop::collection::vec(item, 0..24)).prop_map(move |(first, items)| {
            let head = if first { counters(64) } else { Vec::new() };
            [head, items.concat()].concat()
        }),
        checks::store_records,
    );
    println!("store records: {} sequences", cases());
}

/// Writes the hand-written seeds into `fuzz/corpus/<target>/seed-<n>`.
/// Run by hand when the seeds change: `cargo test --test fuzz_inputs --
/// --ignored write_seed_corpus`.
#[test]
#[ignore = "writes into fuzz/corpus; run by hand"]
fn write_seed_corpus() {
    let mut n = std::collections::HashMap::new();
    for (target, data) in checks::seeds() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let i = n.entry(target).or_insert(0);
        std::fs::write(dir.join(format!("seed-{i:03}")), data).expect("write seed");
        *i += 1;
    }
}
