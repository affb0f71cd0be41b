//! Durability and start-up: what was acknowledged survives a restart, old
//! secrets still authorize, the root token is printed only once, the digest
//! key can change, and a damaged data dir refuses to serve.

mod common;

use std::sync::Arc;

use common::*;
use keyward::clock::ManualClock;
use keyward::pb::v1 as pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Write through the API, stop, start a new server on the same data dir:
/// everything is there and every secret still authorizes.
#[tokio::test]
async fn everything_survives_a_restart() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let root = s.root();
    let (a, admin) = s.account("A").await;
    s.register(&admin, a, PROJECT, "p", None).await;
    s.register(&admin, a, SANDBOX, "s", Some("p")).await;
    let dt = s
        .register(&admin, a, DOMAIN, "d.example", None)
        .await
        .unwrap();
    let t = s
        .create(&admin, a, "t", vec![grant(SANDBOX, "s", VIEWER)])
        .await
        .unwrap();
    let paused = s
        .create(&admin, a, "paused", vec![grant(PROJECT, "p", VIEWER)])
        .await
        .unwrap();
    let paused_id = paused.token.as_ref().unwrap().id;
    s.tokens()
        .pause_token(auth(
            pb::PauseTokenRequest {
                account_id: a,
                token_id: paused_id,
            },
            &admin,
        ))
        .await
        .unwrap();
    let before = s.list(&admin, a).await;
    s.stop().await.unwrap();

    let s = TestServer::start(dir.path()).await;
    assert!(
        s.root.is_none(),
        "the root token is printed on the first start only"
    );
    let after = s.list(&admin, a).await;
    let strip = |l: &pb::ListTokensResponse| {
        l.tokens
            .iter()
            .map(|t| {
                let mut t = t.clone();
                t.last_used_at = None;
                t
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&before), strip(&after));
    assert!(s.check(&t.secret, SANDBOX, "s", VIEWER).await.allowed);
    assert!(
        s.check(&dt.secret, DOMAIN, "d.example", ADMIN)
            .await
            .allowed
    );
    assert_eq!(
        s.check(&paused.secret, PROJECT, "p", VIEWER).await.reason,
        DenyReason::Paused as i32
    );
    // The root token still works, and ids keep counting up.
    let (b, _) = {
        let resp = s
            .accounts()
            .create_account(auth(pb::CreateAccountRequest { name: "B".into() }, &root))
            .await
            .unwrap()
            .into_inner();
        (resp.account.unwrap().id, ())
    };
    assert_eq!(b, a + 1);
    s.stop().await.unwrap();
}

/// Last-use times are persisted in batches (and at shutdown), not on the
/// hot path, and survive a restart with the node that saw them.
#[tokio::test]
async fn last_used_is_persisted_in_batches() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    let acct = a.to_string();
    let t = s
        .create(&admin, a, "t", vec![grant(ACCOUNT, &acct, VIEWER)])
        .await
        .unwrap();
    let id = t.token.unwrap().id;
    s.clock.advance_ms(5000);
    assert!(s.check(&t.secret, ACCOUNT, &acct, VIEWER).await.allowed);
    let used = keyward::clock::Clock::now_ms(&*s.clock);
    assert!(s.engine.persist_usage(0, usize::MAX).await.unwrap() >= 1);
    s.stop().await.unwrap();
    let s = TestServer::start(dir.path()).await;
    let got = s
        .tokens()
        .get_token(auth(
            pb::GetTokenRequest {
                account_id: a,
                token_id: id,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let at = got.last_used_at.expect("last_used_at");
    assert_eq!(at.seconds * 1000 + i64::from(at.nanos / 1_000_000), used);
    assert_eq!(got.last_used_by, "keyward", "the node that saw it, stored");
    s.stop().await.unwrap();
}

/// A new digest key invalidates the stored digests; argon2 (the canonical
/// verifier) still proves the old secrets, and wrong secrets still fail.
#[tokio::test]
async fn a_new_digest_key_falls_back_to_argon2() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    let acct = a.to_string();
    s.stop().await.unwrap();
    std::fs::remove_file(dir.path().join("digest.key")).unwrap();
    let s = TestServer::start(dir.path()).await;
    assert!(s.check(&admin, ACCOUNT, &acct, ADMIN).await.allowed);
    // A well-formed token with the right id and a wrong secret.
    let id = keyward::token::parse(&admin).unwrap().id;
    let wrong = keyward::token::assemble(id, &keyward::token::new_secret_part());
    let wrong = wrong.expose().to_string();
    for _ in 0..2 {
        let d = s.check(&wrong, ACCOUNT, &acct, ADMIN).await;
        assert_eq!(d.reason, DenyReason::UnknownToken as i32);
    }
    s.stop().await.unwrap();
}

/// Health is SERVING once loaded, for the whole server and each service.
#[tokio::test]
async fn health_reports_each_service() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let mut health = HealthClient::new(s.channel.clone());
    for service in [
        "",
        "keyward.v1.Accounts",
        "keyward.v1.Resources",
        "keyward.v1.Tokens",
        "keyward.v1.Authorizer",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service}");
    }
    let body = reqwest_lite(&s.http, "/readyz").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let body = reqwest_lite(&s.http, "/metrics").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    s.stop().await.unwrap();
}

/// A data dir whose records are damaged is refused with a clear error,
/// never served as an empty store.
#[tokio::test]
async fn a_damaged_store_refuses_to_serve() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    s.account("A").await;
    s.stop().await.unwrap();
    // Overwrite a token record with bytes that are not a TokenRecord.
    {
        let db = sled::open(dir.path()).unwrap();
        let tokens = db.open_tree("tokens").unwrap();
        tokens
            .insert(1u64.to_be_bytes(), &[0xff, 0xff, 0xff][..])
            .unwrap();
        db.flush().unwrap();
    }
    let clock = Arc::new(ManualClock::new());
    let err = TestServer::start_with(options(dir.path(), clock.clone()), clock)
        .await
        .err()
        .expect("refuses");
    let msg = err.to_string();
    assert!(msg.contains("corrupt"), "{msg}");
    // A well-formed record whose id is far beyond the id counter (ids
    // index a dense table) is refused, not allocated for.
    let far = temp();
    let s = TestServer::start(far.path()).await;
    s.account("A").await;
    s.stop().await.unwrap();
    {
        let db = sled::open(far.path()).unwrap();
        let tokens = db.open_tree("tokens").unwrap();
        let (_, v) = tokens.iter().next().unwrap().unwrap();
        let mut record =
            <keyward::pb::store::TokenRecord as prost::Message>::decode(v.as_ref()).unwrap();
        record.id = 1 << 40;
        tokens
            .insert(
                record.id.to_be_bytes(),
                prost::Message::encode_to_vec(&record),
            )
            .unwrap();
        db.flush().unwrap();
    }
    let clock = Arc::new(ManualClock::new());
    let err = TestServer::start_with(options(far.path(), clock.clone()), clock)
        .await
        .err()
        .expect("refuses");
    assert!(
        err.to_string().contains("not below the id counter"),
        "{err}"
    );
    // A store truncated to nothing is refused, not started empty.
    let cut = temp();
    let s = TestServer::start(cut.path()).await;
    s.stop().await.unwrap();
    for entry in std::fs::read_dir(cut.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && path.file_name().unwrap() != "keyward.store" {
            std::fs::File::create(&path).unwrap();
        } else if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        }
    }
    let clock = Arc::new(ManualClock::new());
    let err = TestServer::start_with(options(cut.path(), clock.clone()), clock)
        .await
        .err()
        .expect("refuses");
    assert!(err.to_string().contains("refusing"), "{err}");
    // A data dir that is not a sled store at all is refused too.
    let junk = temp();
    std::fs::write(junk.path().join("conf"), b"not sled").unwrap();
    std::fs::write(junk.path().join("db"), vec![0xAB; 4096]).unwrap();
    let clock = Arc::new(ManualClock::new());
    assert!(
        TestServer::start_with(options(junk.path(), clock.clone()), clock)
            .await
            .is_err()
    );
}

/// Calls without or with bad credentials are UNAUTHENTICATED; nothing is
/// ever INTERNAL.
#[tokio::test]
async fn credentials_are_checked() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, _) = s.account("A").await;
    let r = s
        .tokens()
        .list_tokens(pb::ListTokensRequest {
            account_id: a,
            ..Default::default()
        })
        .await;
    assert_code(r, Code::Unauthenticated);
    for bad in ["", "kw_", "Bearer", "garbage", &"x".repeat(4000)] {
        let r = s
            .tokens()
            .list_tokens(auth(
                pb::ListTokensRequest {
                    account_id: a,
                    ..Default::default()
                },
                bad,
            ))
            .await;
        assert_code(r, Code::Unauthenticated);
    }
    let mut req = tonic::Request::new(pb::ListTokensRequest {
        account_id: a,
        ..Default::default()
    });
    req.metadata_mut()
        .insert("api-token", s.root().parse().unwrap());
    s.tokens().list_tokens(req).await.unwrap();
    s.stop().await.unwrap();
}

/// Minimal HTTP/1.1 GET over a raw socket (no HTTP client dependency).
async fn reqwest_lite(addr: &std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    sock.read_to_string(&mut out).await.unwrap();
    out
}

/// Entries keep token and account ids in 4 bytes: once the counters reach
/// `ID_LIMIT` (four billion issued), minting is refused with a clear error
/// and nothing is written, rather than a token no node would hold; what
/// exists keeps working.
#[tokio::test]
async fn minting_stops_when_ids_run_out() {
    use keyward::index::{Change, ID_LIMIT};
    let dir = temp();
    // The counters are written into sled below: a sled node even in the
    // suite's PostgreSQL pass.
    let sled_node = |dir: &std::path::Path| {
        let clock = Arc::new(ManualClock::new());
        let mut opts = options(dir, clock.clone());
        opts.postgres = None;
        TestServer::start_with(opts, clock)
    };
    let s = sled_node(dir.path()).await.expect("starts");
    let root = s.root();
    let (a, admin) = s.account("A").await;
    s.register(&admin, a, PROJECT, "p", None).await;
    s.stop().await.unwrap();
    for (accounts, tokens, refused) in [
        (ID_LIMIT, 10, "account ids are exhausted"),
        (10, ID_LIMIT, "token ids are exhausted"),
    ] {
        let store = keyward::store::SledStore::open(dir.path()).expect("open");
        store
            .commit_batch(&[Change::Counters {
                next_account_id: accounts,
                next_token_id: tokens,
            }])
            .await
            .expect("commit");
        drop(store);
        let s = sled_node(dir.path()).await.expect("starts");
        let made = s
            .accounts()
            .create_account(auth(pb::CreateAccountRequest { name: "B".into() }, &root))
            .await;
        let st = assert_code(made, Code::FailedPrecondition);
        assert!(
            st.message().contains("ids are exhausted"),
            "{}",
            st.message()
        );
        if tokens == ID_LIMIT {
            let st = assert_code(
                s.create(&admin, a, "t", vec![grant(PROJECT, "p", VIEWER)])
                    .await,
                Code::FailedPrecondition,
            );
            assert!(st.message().contains(refused), "{}", st.message());
        } else {
            assert!(st.message().contains(refused), "{}", st.message());
            // Tokens still have ids left.
            s.create(&admin, a, "t", vec![grant(PROJECT, "p", VIEWER)])
                .await
                .unwrap();
        }
        assert!(s.check(&admin, PROJECT, "p", ADMIN).await.allowed);
        s.stop().await.unwrap();
    }
}
