//! `keyward.v1.Authorizer/Introspect` against a real server on 127.0.0.1:0:
//! a token described to its holder (no admin rights, never a secret or a
//! hash), refused exactly as Authorize denies it, a reset token's successor
//! shown during its grace period, Authorize's answers carrying the expiry
//! and the successor, the cost of Authorize (no argon2 for a known
//! secret), and reflection listing the method.

mod common;

use common::*;
use keyward::error::Denial;
use keyward::pb::v1 as pb;
use pb::DenyReason;
use prost::Message;
use prost_types::Timestamp;
use tonic::Code;

const HOUR_MS: i64 = 3600 * 1000;

fn now_ms(s: &TestServer) -> i64 {
    keyward::clock::Clock::now_ms(&*s.clock)
}

fn ms_of(t: &Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos / 1_000_000)
}

/// Introspect `token` (no caller credential: the token is the request).
async fn introspect(s: &TestServer, token: &str) -> Result<pb::IntrospectResponse, tonic::Status> {
    s.authorizer()
        .introspect(pb::IntrospectRequest {
            token: token.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The answer for `token`'s holder; panics if refused.
async fn described(s: &TestServer, token: &str) -> pb::Token {
    introspect(s, token)
        .await
        .expect("introspect")
        .token
        .expect("token")
}

/// Resets token `token_id` as `admin`; returns the new token.
async fn reset(s: &TestServer, admin: &str, account_id: u64, token_id: u64) -> pb::TokenWithSecret {
    s.tokens()
        .reset_token(auth(
            pb::ResetTokenRequest {
                account_id,
                token_id,
                ..Default::default()
            },
            admin,
        ))
        .await
        .expect("reset")
        .into_inner()
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A token with VIEWER on one project and a scope (no admin rights at all)
/// introspects itself: every field the admin plane shows, and nothing
/// secret in the answer's bytes (neither the token string, nor its secret
/// part, nor an argon2 hash). Its last use is the one before the call, and
/// the call counts as one. The root token introspects too.
#[tokio::test]
async fn a_holder_sees_its_own_token_and_no_secret() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (acct, admin) = s.account("Acme").await;
    s.register(&admin, acct, PROJECT, "p1", None).await;
    let expires = Timestamp {
        seconds: (now_ms(&s) + 48 * HOUR_MS) / 1000,
        nanos: 0,
    };
    let created = s
        .tokens()
        .create_token(auth(
            pb::CreateTokenRequest {
                rate_limits: Default::default(),
                account_id: acct,
                name: "reader".into(),
                grants: vec![grant(PROJECT, "p1", VIEWER)],
                scopes: vec![scope("domains", VIEWER)],
                expires_at: Some(expires),
            },
            &admin,
        ))
        .await
        .expect("create")
        .into_inner();
    let secret = created.secret.clone();
    let made = created.token.expect("token");

    let resp = introspect(&s, &secret).await.expect("introspect");
    let t = resp.token.clone().expect("token");
    assert_eq!(t.id, made.id);
    assert_eq!(t.account_id, acct);
    assert_eq!(t.name, "reader");
    assert_eq!(t.last_4_digits, secret[secret.len() - 4..]);
    assert_eq!(t.created_by, "Acme admin token");
    assert_eq!(t.created_at, made.created_at);
    assert_eq!(t.expires_at, Some(expires));
    assert!(!t.paused);
    assert!(!t.root);
    assert_eq!(t.grants, vec![grant(PROJECT, "p1", VIEWER)]);
    assert_eq!(t.scopes, vec![scope("domains", VIEWER)]);
    assert_eq!((t.replaced_by, t.replaces), (0, 0));
    assert_eq!(t.last_used_at, None, "never used before this call");
    assert_eq!(t.last_used_by, "", "never used before this call");
    // The whole token as the admin plane shows it: the same message, but
    // for the use the introspect was.
    let got = s
        .tokens()
        .get_token(auth(
            pb::GetTokenRequest {
                account_id: acct,
                token_id: made.id,
            },
            &admin,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        pb::Token {
            last_used_at: None,
            last_used_by: String::new(),
            ..got
        },
        t
    );

    // Nothing secret in the bytes on the wire.
    let bytes = resp.encode_to_vec();
    let part = keyward::token::parse(&secret)
        .expect("parses")
        .secret_part();
    assert!(!contains(&bytes, secret.as_bytes()), "the token string");
    assert!(!contains(&bytes, part.as_bytes()), "the secret part");
    assert!(!contains(&bytes, b"$argon2"), "a hash");
    assert!(!format!("{resp:?}").contains(part));

    // The introspect was a use; the next answer shows it.
    let first_use = now_ms(&s);
    s.clock.advance_ms(5_000);
    let t = described(&s, &secret).await;
    assert_eq!(t.last_used_at.as_ref().map(ms_of), Some(first_use));
    assert_eq!(
        t.last_used_by, "keyward",
        "the node's name (Settings' default)"
    );

    // The root token describes itself.
    let root = described(&s, &s.root()).await;
    assert!(root.root);
    assert_eq!((root.account_id, root.name.as_str()), (0, "root"));
    s.stop().await.unwrap();
}

/// A malformed, unknown (wrong secret, deleted), paused or expired token is
/// refused UNAUTHENTICATED with the message of the deny reason Authorize
/// gives the same token (the deny table's, as the admin plane and ext_authz
/// answer it).
#[tokio::test]
async fn introspect_refuses_what_authorize_denies_with_the_same_messages() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (acct, admin) = s.account("Acme").await;
    s.register(&admin, acct, PROJECT, "p1", None).await;
    let make = |name: &'static str| {
        let s = &s;
        let admin = admin.clone();
        async move {
            let t = s
                .create(&admin, acct, name, vec![grant(PROJECT, "p1", VIEWER)])
                .await
                .expect("create");
            (t.token.expect("token").id, t.secret)
        }
    };
    let (paused_id, paused) = make("paused").await;
    s.tokens()
        .pause_token(auth(
            pb::PauseTokenRequest {
                account_id: acct,
                token_id: paused_id,
            },
            &admin,
        ))
        .await
        .expect("pause");
    let (deleted_id, deleted) = make("deleted").await;
    s.delete(&admin, acct, deleted_id).await.expect("delete");
    let expiring = s
        .tokens()
        .create_token(auth(
            pb::CreateTokenRequest {
                rate_limits: Default::default(),
                account_id: acct,
                name: "expiring".into(),
                grants: vec![grant(PROJECT, "p1", VIEWER)],
                scopes: vec![],
                expires_at: Some(Timestamp {
                    seconds: (now_ms(&s) + HOUR_MS) / 1000,
                    nanos: 0,
                }),
            },
            &admin,
        ))
        .await
        .expect("create")
        .into_inner()
        .secret;
    s.clock.advance_ms(2 * HOUR_MS);
    let id = keyward::token::parse(&admin).expect("parses").id;
    let wrong = keyward::token::assemble(id, &keyward::token::new_secret_part());
    let too_long = format!("{admin}{}", "a".repeat(200));

    let cases: [(&str, &str, DenyReason); 8] = [
        ("empty", "", DenyReason::Malformed),
        ("not a token", "kw_not-a-token", DenyReason::Malformed),
        ("too long", &too_long, DenyReason::Malformed),
        ("wrong secret", wrong.expose(), DenyReason::UnknownToken),
        ("deleted", &deleted, DenyReason::UnknownToken),
        ("paused", &paused, DenyReason::Paused),
        ("expired", &expiring, DenyReason::Expired),
        // A bad checksum: the last character changed.
        (
            "bad checksum",
            &format!(
                "{}{}",
                &admin[..admin.len() - 1],
                if admin.ends_with('A') { 'B' } else { 'A' }
            ),
            DenyReason::Malformed,
        ),
    ];
    for (what, token, reason) in cases {
        let d = s.check(token, PROJECT, "p1", VIEWER).await;
        assert_eq!(d.reason, reason as i32, "{what}: Authorize");
        let status = assert_code(introspect(&s, token).await, Code::Unauthenticated);
        assert_eq!(status.message(), Denial::of(reason).message, "{what}");
    }
    // The messages the admin plane gives the same credentials.
    for (token, reason) in [
        (&paused, DenyReason::Paused),
        (&expiring, DenyReason::Expired),
    ] {
        let r = s
            .tokens()
            .list_tokens(auth(
                pb::ListTokensRequest {
                    account_id: acct,
                    ..Default::default()
                },
                token,
            ))
            .await;
        let status = assert_code(r, Code::Unauthenticated);
        assert_eq!(status.message(), Denial::of(reason).message);
    }
    s.stop().await.unwrap();
}

/// A reset token in its grace period is introspectable: it names its
/// successor and the end of its grace; the successor names it. Authorize
/// (and AuthorizeBatch) carry the same expiry and successor, on allows and
/// on denials of a recognised token, none for an unknown one. Past the
/// grace, the old token is refused as expired.
#[tokio::test]
async fn a_reset_token_in_grace_shows_its_successor_and_expiry() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (acct, admin) = s.account("Acme").await;
    s.register(&admin, acct, PROJECT, "p1", None).await;
    let old = s
        .create(&admin, acct, "sender", vec![grant(PROJECT, "p1", VIEWER)])
        .await
        .expect("create");
    let old_id = old.token.expect("token").id;
    let d = s.check(&old.secret, PROJECT, "p1", VIEWER).await;
    assert!(d.allowed);
    assert_eq!((d.expires_at, d.replaced_by), (None, 0), "{d:?}");

    let reset_at = now_ms(&s);
    let new = reset(&s, &admin, acct, old_id).await;
    let new_id = new.token.expect("token").id;
    let grace_end = reset_at + 12 * HOUR_MS;

    let t = described(&s, &old.secret).await;
    assert_eq!(t.id, old_id);
    assert_eq!(t.replaced_by, new_id);
    assert_eq!(t.expires_at.as_ref().map(ms_of), Some(grace_end));
    let t = described(&s, &new.secret).await;
    assert_eq!((t.id, t.replaces, t.replaced_by), (new_id, old_id, 0));
    assert_eq!(t.expires_at, None);

    // Authorize: allowed, with the expiry and the successor.
    let d = s.check(&old.secret, PROJECT, "p1", VIEWER).await;
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.replaced_by, new_id);
    assert_eq!(d.expires_at.as_ref().map(ms_of), Some(grace_end));
    // A denial of the recognised token carries them too.
    let d = s.check(&old.secret, PROJECT, "p1", ADMIN).await;
    assert_eq!(d.reason, DenyReason::NoGrant as i32);
    assert_eq!(d.replaced_by, new_id);
    assert_eq!(d.expires_at.as_ref().map(ms_of), Some(grace_end));
    // The successor: neither.
    let d = s.check(&new.secret, PROJECT, "p1", VIEWER).await;
    assert!(d.allowed);
    assert_eq!((d.expires_at, d.replaced_by), (None, 0));
    // AuthorizeBatch answers the same; an unknown token gets neither.
    let one = |token: &str| pb::AuthorizeRequest {
        cost: Default::default(),
        token: token.into(),
        resource: Some(rref(PROJECT, "p1")),
        level: VIEWER,
        scope: String::new(),
    };
    let batch = s
        .authorizer()
        .authorize_batch(pb::AuthorizeBatchRequest {
            checks: vec![one(&old.secret), one("kw_not-a-token")],
        })
        .await
        .expect("batch")
        .into_inner()
        .decisions;
    assert_eq!(batch[0].replaced_by, new_id);
    assert_eq!(batch[0].expires_at.as_ref().map(ms_of), Some(grace_end));
    assert_eq!(batch[1].reason, DenyReason::Malformed as i32);
    assert_eq!((batch[1].expires_at, batch[1].replaced_by), (None, 0));

    // Past the grace: refused as Authorize denies it.
    s.clock.advance_ms(12 * HOUR_MS + 1_000);
    let d = s.check(&old.secret, PROJECT, "p1", VIEWER).await;
    assert_eq!(d.reason, DenyReason::Expired as i32);
    let status = assert_code(introspect(&s, &old.secret).await, Code::Unauthenticated);
    assert_eq!(status.message(), "token has expired");
    assert_eq!(described(&s, &new.secret).await.id, new_id);
    s.stop().await.unwrap();
}

/// The cost of Authorize: a known secret is proved by its verified digest
/// (no argon2, however many calls); after a restart with a new digest key
/// the first call proves it by one argon2 verify, and the calls after it by
/// the digest that verify filled in. A wrong secret is refused either way.
#[tokio::test]
async fn introspect_costs_no_argon2_for_a_known_secret() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (_, admin) = s.account("Acme").await;
    described(&s, &admin).await;
    let before = s.engine.work().verifies;
    for _ in 0..200 {
        described(&s, &admin).await;
    }
    assert_eq!(
        s.engine.work().verifies,
        before,
        "no argon2 for a known secret"
    );
    s.stop().await.unwrap();

    std::fs::remove_file(dir.path().join("digest.key")).unwrap();
    let s = TestServer::start(dir.path()).await;
    let before = s.engine.work().verifies;
    let first = described(&s, &admin).await;
    assert_eq!(s.engine.work().verifies, before + 1, "one argon2 verify");
    for _ in 0..50 {
        assert_eq!(described(&s, &admin).await.id, first.id);
    }
    assert_eq!(s.engine.work().verifies, before + 1, "then the digest");
    let id = keyward::token::parse(&admin).expect("parses").id;
    let wrong = keyward::token::assemble(id, &keyward::token::new_secret_part());
    let status = assert_code(introspect(&s, wrong.expose()).await, Code::Unauthenticated);
    assert_eq!(status.message(), "invalid token");
    s.stop().await.unwrap();
}

/// Server reflection (what grpcurl uses) describes the method, with its
/// request and response types.
#[tokio::test]
async fn reflection_lists_introspect() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{server_reflection_request, ServerReflectionRequest};

    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            server_reflection_request::MessageRequest::FileContainingSymbol(
                "keyward.v1.Authorizer".into(),
            ),
        ),
    })
    .await
    .unwrap();
    let mut replies = ServerReflectionClient::new(s.channel.clone())
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("reflection")
        .into_inner();
    let first = replies.message().await.expect("reply").expect("one");
    drop(tx);
    let files = match first.message_response {
        Some(MessageResponse::FileDescriptorResponse(f)) => f.file_descriptor_proto,
        other => panic!("unexpected {other:?}"),
    };
    let file = files
        .iter()
        .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).expect("descriptor"))
        .find(|f| f.package() == "keyward.v1")
        .expect("keyward.v1");
    let service = file
        .service
        .iter()
        .find(|sv| sv.name() == "Authorizer")
        .expect("Authorizer");
    let method = service
        .method
        .iter()
        .find(|m| m.name() == "Introspect")
        .expect("Introspect");
    assert_eq!(method.input_type(), ".keyward.v1.IntrospectRequest");
    assert_eq!(method.output_type(), ".keyward.v1.IntrospectResponse");
    let response = file
        .message_type
        .iter()
        .find(|m| m.name() == "AuthorizeResponse")
        .expect("AuthorizeResponse");
    let fields: Vec<_> = response
        .field
        .iter()
        .map(|f| (f.name(), f.number()))
        .collect();
    assert!(fields.contains(&("expires_at", 5)), "{fields:?}");
    assert!(fields.contains(&("replaced_by", 6)), "{fields:?}");
    s.stop().await.unwrap();
}

/// A follower (the sidecar a service asks on localhost) answers Introspect
/// from its replicated index, as the primary does: a reset on the primary
/// shows as `replaced_by` on the follower, a pause as a refusal.
#[tokio::test]
async fn a_follower_answers_introspect_from_its_replica() {
    let (pdir, fdir) = (temp(), temp());
    let p = TestServer::start(pdir.path()).await;
    let (acct, admin) = p.account("Acme").await;
    p.register(&admin, acct, PROJECT, "p1", None).await;
    let t = p
        .create(&admin, acct, "sender", vec![grant(PROJECT, "p1", VIEWER)])
        .await
        .expect("create");
    let id = t.token.expect("token").id;
    let opts = follower_options(
        fdir.path(),
        p.clock.clone(),
        p.grpc,
        &pdir.path().join("digest.key"),
        false,
    );
    let f = TestServer::start_with(opts, p.clock.clone())
        .await
        .expect("follower starts");
    let new = reset(&p, &admin, acct, id).await;
    let new_id = new.token.expect("token").id;
    // Replication is asynchronous: wait (at most 10 s) for the reset.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let seen = introspect(&f, &t.secret).await.ok().and_then(|r| r.token);
        if seen.as_ref().is_some_and(|tok| tok.replaced_by == new_id) {
            assert_eq!(seen.map(|tok| tok.id), Some(id));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "follower: {seen:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    p.tokens()
        .pause_token(auth(
            pb::PauseTokenRequest {
                account_id: acct,
                token_id: new_id,
            },
            &admin,
        ))
        .await
        .expect("pause");
    loop {
        match introspect(&f, &new.secret).await {
            Err(status) if status.code() == Code::Unauthenticated => {
                assert_eq!(status.message(), "token is paused");
                break;
            }
            other => {
                assert!(std::time::Instant::now() < deadline, "follower: {other:?}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
    f.stop().await.unwrap();
    p.stop().await.unwrap();
}
