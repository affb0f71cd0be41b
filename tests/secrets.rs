//! Secrets never leak: the whole lifecycle runs with every log level on
//! (TRACE, including tonic, h2 and sled), and no token secret, secret part
//! or stored hash appears in a log line, an error message, a Debug print or
//! the sled files.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use keyward::pb::v1 as pb;
use prost_types::FieldMask;

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Every secret-bearing string must be absent from `haystack`.
fn assert_absent(haystack: &[u8], secrets: &[String], what: &str) {
    for s in secrets {
        assert!(
            !haystack.windows(s.len()).any(|w| w == s.as_bytes()),
            "{what} contains a secret (len {})",
            s.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_errors_debug_or_store() {
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(capture.clone())
        .with_ansi(false)
        .init();

    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let root = s.root();
    let (a, admin) = s.account("A").await;
    let domain = s
        .register(&admin, a, DOMAIN, "d.example", None)
        .await
        .expect("domain token");
    s.register(&admin, a, PROJECT, "p", None).await;
    let t = s
        .create(&admin, a, "t", vec![grant(PROJECT, "p", ADMIN)])
        .await
        .unwrap();
    let id = t.token.as_ref().unwrap().id;
    let reset = s
        .tokens()
        .reset_token(auth(
            pb::ResetTokenRequest {
                account_id: a,
                token_id: id,
                expires_at: None,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut errors = Vec::new();
    // Allowed and denied decisions, errors of every kind, with secrets in
    // the request.
    for token in [&t.secret, &reset.secret, &domain.secret, &admin] {
        s.check(token, PROJECT, "p", ADMIN).await;
        s.check(token, DOMAIN, "d.example", ADMIN).await;
        s.check(token, PROJECT, "nope", VIEWER).await;
    }
    let wrong = keyward::token::assemble(id, &keyward::token::new_secret_part())
        .expose()
        .to_string();
    s.check(&wrong, PROJECT, "p", ADMIN).await;
    for token in [&t.secret, &wrong] {
        let r = s.delete(token, a + 9, id).await;
        errors.push(format!("{:?}", r.expect_err("refused")));
        let r = s
            .tokens()
            .update_token(auth(
                pb::UpdateTokenRequest {
                    account_id: a,
                    token_id: id,
                    update_mask: Some(FieldMask {
                        paths: vec!["x".into()],
                    }),
                    ..Default::default()
                },
                token,
            ))
            .await;
        errors.push(format!("{:?}", r.expect_err("refused")));
    }
    let r = s
        .tokens()
        .create_token(auth(
            pb::CreateTokenRequest {
                account_id: a,
                name: admin.clone(),
                grants: vec![],
                ..Default::default()
            },
            &admin,
        ))
        .await;
    errors.push(format!("{:?}", r.expect_err("refused")));
    s.tokens()
        .pause_token(auth(
            pb::PauseTokenRequest {
                account_id: a,
                token_id: reset.token.as_ref().unwrap().id,
            },
            &admin,
        ))
        .await
        .unwrap();
    s.check(&reset.secret, PROJECT, "p", ADMIN).await;
    // Debug prints of everything that held a secret.
    let debug = format!(
        "{:?} {:?} {:?} {:?} {:?} {:?}",
        keyward::token::parse(&t.secret),
        keyward::token::assemble(1, &keyward::token::new_secret_part()),
        s.engine,
        reset,
        t,
        pb::AuthorizeRequest {
            token: t.secret.clone(),
            resource: None,
            level: ADMIN,
            scope: String::new()
        },
    );
    s.engine.persist_usage(0, usize::MAX).await.unwrap();
    s.stop().await.unwrap();

    let secrets: Vec<String> = [&root, &admin, &t.secret, &reset.secret, &domain.secret]
        .iter()
        .flat_map(|full| [full.to_string(), full[14..57].to_string()])
        .collect();
    let hashes = stored_hashes(dir.path()).await;
    assert!(!hashes.is_empty());
    let logs = capture.0.lock().expect("lock").clone();
    assert!(
        logs.len() > 10_000,
        "TRACE logging captured too little ({} bytes) to prove anything",
        logs.len()
    );
    assert_absent(&logs, &secrets, "the log");
    assert_absent(&logs, &hashes, "the log (hashes)");
    let errors = errors.join("\n");
    assert_absent(errors.as_bytes(), &secrets, "an error message");
    assert_absent(errors.as_bytes(), &hashes, "an error message (hashes)");
    let records = stored_records_debug(dir.path()).await;
    assert!(records.contains("TokenRecord"));
    assert_absent(
        records.as_bytes(),
        &secrets,
        "a Debug print of a stored record",
    );
    assert_absent(
        records.as_bytes(),
        &hashes,
        "a Debug print of a stored record (hashes)",
    );
    assert_absent(debug.as_bytes(), &secrets, "a Debug print");
    assert_absent(debug.as_bytes(), &hashes, "a Debug print (hashes)");
    // The store (sled files, or every PostgreSQL row) holds hashes, never
    // a secret.
    let stored = stored_bytes(dir.path()).await;
    assert!(stored.len() > 1000, "too little read from the store");
    assert_absent(&stored, &secrets, "the store");
}

/// The PHC hashes and verified digests (hex) of every stored token, and the
/// digest key: none may appear in a log, error or Debug print.
async fn stored_hashes(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for r in stored_tokens(dir).await {
        out.push(r.phc_hash.clone());
        // The hash part of the PHC string alone, too.
        out.push(
            r.phc_hash
                .rsplit('$')
                .next()
                .unwrap_or_default()
                .to_string(),
        );
        if !r.verified_digest.is_empty() {
            out.push(
                r.verified_digest
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
            );
        }
    }
    out.push(
        std::fs::read_to_string(dir.join("digest.key"))
            .expect("key")
            .trim()
            .to_string(),
    );
    out
}

/// Debug prints of every stored token record.
async fn stored_records_debug(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for r in stored_tokens(dir).await {
        out.push_str(&format!("{r:?}\n"));
    }
    out
}
