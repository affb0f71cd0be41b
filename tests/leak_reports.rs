//! Leak reports end to end: GitHub's secret-scanning partner reports,
//! signed with a P-256 key made here and listed in a keys file, pause a
//! live token on the primary (Authorize denies it PAUSED) and on a
//! follower; the metric and the audit event (with the report's url and
//! source) are there; every refusal (unsigned, bad or foreign signature,
//! unknown key, replay, oversized, malformed, too many items, no keys) and
//! every false positive leaves tokens alone; `Tokens/ReportLeak` does the
//! same for authenticated callers; and no reported string reaches the
//! server's log at any level. The README's scanner regex matches minted
//! tokens and nothing near them.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use keyward::clock::ManualClock;
use keyward::pb::v1 as pb;
use keyward::pb::v1::audit_client::AuditClient;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{json, Value};
use tonic::Code;

/// The tests share the process's metrics and log capture: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PATH: &str = "/v1/secret-scanning/reports";

fn new_key() -> SigningKey {
    SigningKey::random(&mut rand::rngs::OsRng)
}

/// Writes GitHub's keys JSON for `keys` to `path`.
fn write_keys(path: &Path, keys: &[(&str, &SigningKey)]) {
    let entries: Vec<Value> = keys
        .iter()
        .map(|(id, k)| {
            let pem = k
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("pem");
            json!({ "key_identifier": id, "key": pem, "is_current": true })
        })
        .collect();
    std::fs::write(path, json!({ "public_keys": entries }).to_string()).expect("write keys");
}

fn sign(key: &SigningKey, body: &[u8]) -> String {
    let sig: Signature = key.sign(body);
    base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
}

/// The other valid signature of the same body (s replaced by n - s).
fn malleated(key: &SigningKey, body: &[u8]) -> String {
    let sig: Signature = key.sign(body);
    let (r, s) = sig.split_scalars();
    let flipped = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).expect("signature");
    base64::engine::general_purpose::STANDARD.encode(flipped.to_der().as_bytes())
}

/// POSTs a report with the given signature headers.
async fn post(
    addr: std::net::SocketAddr,
    body: &str,
    key_id: Option<&str>,
    sig: Option<&str>,
) -> HttpReply {
    let mut req = format!(
        "POST {PATH} HTTP/1.1\r\nhost: keyward\r\nconnection: close\r\ncontent-type: application/json\r\n"
    );
    if let Some(k) = key_id {
        req.push_str(&format!("Github-Public-Key-Identifier: {k}\r\n"));
    }
    if let Some(s) = sig {
        req.push_str(&format!("Github-Public-Key-Signature: {s}\r\n"));
    }
    req.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    http_raw(addr, req.as_bytes()).await
}

/// A report of `tokens`, each with its own url.
fn report(tokens: &[&str]) -> String {
    let items: Vec<Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({
                "token": t,
                "type": "keyward_api_token",
                "url": format!("https://github.com/octo/leaky/blob/main/config-{i}.env"),
                "source": "content",
            })
        })
        .collect();
    Value::Array(items).to_string()
}

/// A primary with `--leak-report-keys` (key "k1"), its keys file path,
/// and the directory of that file (outside the data dir).
async fn primary(
    dir: &Path,
    key: &SigningKey,
) -> (TestServer, std::path::PathBuf, tempfile::TempDir) {
    let keys_dir = temp();
    let keys = keys_dir.path().join("github-keys.json");
    write_keys(&keys, &[("k1", key)]);
    let clock = Arc::new(ManualClock::new());
    let mut opts = options(dir, clock.clone());
    opts.leak_report_keys = Some(keys.clone());
    let s = TestServer::start_with(opts, clock)
        .await
        .expect("primary starts");
    (s, keys, keys_dir)
}

/// An account with domain `d.example` and `n` tokens sending for it.
async fn tokens(s: &TestServer, name: &str, n: usize) -> (u64, String, Vec<(u64, String)>) {
    let (acct, admin) = s.account(name).await;
    s.register(&admin, acct, DOMAIN, "d.example", None).await;
    let mut out = Vec::new();
    for i in 0..n {
        let t = s
            .create(
                &admin,
                acct,
                &format!("t{i}"),
                vec![grant(DOMAIN, "d.example", ADMIN)],
            )
            .await
            .expect("create");
        out.push((t.token.expect("token").id, t.secret));
    }
    (acct, admin, out)
}

async fn decision(s: &TestServer, token: &str) -> (bool, i32) {
    let d = s.check(token, DOMAIN, "d.example", ADMIN).await;
    (d.allowed, d.reason)
}

const ALLOWED: (bool, i32) = (true, DenyReason::Unspecified as i32);
const PAUSED: (bool, i32) = (false, DenyReason::Paused as i32);

async fn metric_value(s: &TestServer, label: &str) -> f64 {
    let page = http(s.http, "GET", "/metrics", None, None).await;
    let text = String::from_utf8_lossy(&page.body).to_string();
    metric(
        &text,
        &format!("keyward_leak_reports_total{{label=\"{label}\"}}"),
    )
}

async fn audit(s: &TestServer, caller: &str, account_id: u64) -> Vec<pb::AuditEvent> {
    AuditClient::new(s.channel.clone())
        .list_audit_events(auth(
            pb::ListAuditEventsRequest {
                account_id,
                page_size: 1000,
                page_token: String::new(),
            },
            caller,
        ))
        .await
        .expect("audit")
        .into_inner()
        .events
}

/// Fails if any of `secrets` is in the log captured so far.
fn assert_not_logged(secrets: &[&str]) {
    let log = log_capture("trace").text();
    assert!(!log.is_empty(), "the capture works");
    for (i, s) in secrets.iter().enumerate() {
        assert!(!log.contains(s), "reported string {i} is in the log");
    }
}

#[tokio::test]
async fn a_signed_report_pauses_a_live_token_on_the_primary_and_its_follower() {
    let _serial = SERIAL.lock().await;
    log_capture("trace");
    let (pdir, fdir, key) = (temp(), temp(), new_key());
    let (p, _, _keys) = primary(pdir.path(), &key).await;
    let (acct, admin, toks) = tokens(&p, "Acme", 2).await;
    let (leaked_id, leaked) = toks[0].clone();
    let (_, bystander) = toks[1].clone();
    let f = TestServer::start_with(
        follower_options(
            fdir.path(),
            p.clock.clone(),
            p.grpc,
            &pdir.path().join("digest.key"),
            false,
        ),
        p.clock.clone(),
    )
    .await
    .expect("follower starts");
    assert_eq!(decision(&f, &leaked).await, ALLOWED);

    // The bystander's id with a wrong secret, an unknown id, garbage, and
    // the leaked token twice (found in two files).
    let wrong_secret = keyward::token::assemble(toks[1].0, &keyward::token::new_secret_part());
    let unknown = keyward::token::assemble(9_999_999, &keyward::token::new_secret_part());
    let items = [
        leaked.as_str(),
        wrong_secret.expose(),
        unknown.expose(),
        "kw_not_a_token",
        leaked.as_str(),
    ];
    let (tp, fp) = (
        metric_value(&p, "true_positive").await,
        metric_value(&p, "false_positive").await,
    );
    let body = report(&items);
    let r = post(
        p.http,
        &body,
        Some("k1"),
        Some(&sign(&key, body.as_bytes())),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let answer = r.json();
    let labels: Vec<&str> = answer
        .as_array()
        .expect("array")
        .iter()
        .map(|a| a["label"].as_str().expect("label"))
        .collect();
    assert_eq!(
        labels,
        [
            "true_positive",
            "false_positive",
            "false_positive",
            "false_positive",
            "true_positive"
        ]
    );
    for (a, t) in answer.as_array().expect("array").iter().zip(items) {
        assert_eq!(a["token_raw"], t);
        assert_eq!(a["token_type"], "keyward_api_token");
    }

    // Paused at once on the primary; the follower follows within the bound.
    assert_eq!(decision(&p, &leaked).await, PAUSED);
    assert_eq!(decision(&p, &bystander).await, ALLOWED);
    let deadline = Instant::now() + Duration::from_secs(10);
    while decision(&f, &leaked).await != PAUSED {
        assert!(Instant::now() < deadline, "the follower still allows it");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(decision(&f, &bystander).await, ALLOWED);

    // Counted once per distinct string.
    assert_eq!(metric_value(&p, "true_positive").await - tp, 1.0);
    assert_eq!(metric_value(&p, "false_positive").await - fp, 3.0);

    // Audited in the token's account, with where it was found.
    let events = audit(&p, &admin, acct).await;
    let leak: Vec<_> = events.iter().filter(|e| e.action == "ReportLeak").collect();
    assert_eq!(leak.len(), 1, "{leak:?}");
    let e = leak[0];
    assert_eq!((e.token_id, e.account_id), (leaked_id, acct));
    assert_eq!(e.actor_name, "GitHub secret scanning");
    assert_eq!(e.outcome, "OK");
    assert!(e.detail.contains("source: content"), "{}", e.detail);
    assert!(
        e.detail
            .contains("url: https://github.com/octo/leaky/blob/main/config-0.env"),
        "{}",
        e.detail
    );

    // Reported again (another body): still a true positive, still paused.
    let again = report(&[&leaked]);
    let r = post(
        p.http,
        &again,
        Some("k1"),
        Some(&sign(&key, again.as_bytes())),
    )
    .await;
    assert_eq!(r.json()[0]["label"], "true_positive");
    assert_eq!(decision(&p, &leaked).await, PAUSED);

    assert_not_logged(&[&leaked, wrong_secret.expose(), unknown.expose()]);
    f.stop().await.expect("follower stops");
    p.stop().await.expect("primary stops");
}

#[tokio::test]
async fn reports_that_are_not_signed_fresh_and_well_formed_are_refused_and_change_nothing() {
    let _serial = SERIAL.lock().await;
    log_capture("trace");
    let (dir, key, stranger) = (temp(), new_key(), new_key());
    let (p, _, _keys) = primary(dir.path(), &key).await;
    let (_, _, toks) = tokens(&p, "Acme", 1).await;
    let live = toks[0].1.clone();
    let body = report(&[&live]);
    let good = sign(&key, body.as_bytes());
    let refusals: [(&str, Option<&str>, Option<String>, u16); 6] = [
        ("unsigned", None, None, 401),
        ("no signature", Some("k1"), None, 401),
        (
            "signed over another body",
            Some("k1"),
            Some(sign(&key, b"[]")),
            401,
        ),
        (
            "signed by a key not in the file",
            Some("k1"),
            Some(sign(&stranger, body.as_bytes())),
            401,
        ),
        ("an unknown key id", Some("k9"), Some(good.clone()), 401),
        ("not base64", Some("k1"), Some("%%%".into()), 401),
    ];
    for (what, key_id, sig, status) in refusals {
        let r = post(p.http, &body, key_id, sig.as_deref()).await;
        assert_eq!(
            r.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.json()["error"].is_string(), "{what}");
        assert_eq!(decision(&p, &live).await, ALLOWED, "{what} paused it");
    }

    // Malformed bodies, properly signed.
    for (what, bad, status) in [
        ("not JSON", "{\"token\":".to_string(), 400),
        ("not an array", "{}".to_string(), 400),
        (
            "a token that is not a string",
            "[{\"token\":1}]".to_string(),
            422,
        ),
        (
            "too many items",
            format!("[{}]", vec!["{\"token\":\"x\"}"; 1001].join(",")),
            422,
        ),
    ] {
        let r = post(p.http, &bad, Some("k1"), Some(&sign(&key, bad.as_bytes()))).await;
        assert_eq!(
            r.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }

    // Oversized: refused on its declared length, and on what arrives.
    let r = http_raw(
        p.http,
        format!(
            "POST {PATH} HTTP/1.1\r\nhost: k\r\nconnection: close\r\nGithub-Public-Key-Identifier: k1\r\n\
             Github-Public-Key-Signature: {good}\r\ncontent-length: {}\r\n\r\n[]",
            1024 * 1024 + 1
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(chunked_oversized(p.http).await, 413);

    // Accepted once; the same body again is a replay, whatever the
    // signature (a fresh one, or the other valid form of the same).
    let r = post(p.http, &body, Some("k1"), Some(&good)).await;
    assert_eq!(r.status, 200);
    assert_eq!(decision(&p, &live).await, PAUSED);
    for sig in [
        good.clone(),
        sign(&key, body.as_bytes()),
        malleated(&key, body.as_bytes()),
    ] {
        let r = post(p.http, &body, Some("k1"), Some(&sig)).await;
        assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
        let why = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(
            why.contains("accepted already"),
            "refused as a replay: {why}"
        );
    }
    assert_not_logged(&[&live]);
    p.stop().await.expect("stops");
}

/// A chunked body past 1 MiB with no declared length: the status answered.
async fn chunked_oversized(addr: std::net::SocketAddr) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = conn.into_split();
    let writer = tokio::spawn(async move {
        let head = format!(
            "POST {PATH} HTTP/1.1\r\nhost: k\r\nconnection: close\r\n\
             Github-Public-Key-Identifier: k1\r\nGithub-Public-Key-Signature: AAAA\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
        let _ = wr.write_all(head.as_bytes()).await;
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..20 {
            let size = format!("{:x}\r\n", chunk.len());
            if wr.write_all(size.as_bytes()).await.is_err()
                || wr.write_all(&chunk).await.is_err()
                || wr.write_all(b"\r\n").await.is_err()
            {
                return;
            }
        }
        let _ = wr.write_all(b"0\r\n\r\n").await;
    });
    let mut raw = Vec::new();
    let _ = rd.read_to_end(&mut raw).await;
    writer.abort();
    String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line")
}

#[tokio::test]
async fn tokens_paused_expired_or_in_their_grace_are_judged_as_they_live() {
    let _serial = SERIAL.lock().await;
    let (dir, key) = (temp(), new_key());
    let (p, _, _keys) = primary(dir.path(), &key).await;
    let (acct, admin, toks) = tokens(&p, "Acme", 3).await;
    // Paused already; reset (the old one in its 12 h grace); expiring.
    p.tokens()
        .pause_token(auth(
            pb::PauseTokenRequest {
                account_id: acct,
                token_id: toks[0].0,
            },
            &admin,
        ))
        .await
        .expect("pause");
    p.tokens()
        .reset_token(auth(
            pb::ResetTokenRequest {
                account_id: acct,
                token_id: toks[1].0,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("reset");
    let expiring = p
        .tokens()
        .create_token(auth(
            pb::CreateTokenRequest {
                rate_limits: Default::default(),
                account_id: acct,
                name: "expiring".into(),
                grants: vec![grant(DOMAIN, "d.example", ADMIN)],
                scopes: vec![],
                expires_at: Some(keyward::wire::ts(
                    keyward::clock::Clock::now_ms(&*p.clock) + 60_000,
                )),
            },
            &admin,
        ))
        .await
        .expect("create")
        .into_inner()
        .secret;
    assert_eq!(decision(&p, &toks[1].1).await, ALLOWED, "in its grace");
    p.clock.advance_ms(120_000);
    let body = report(&[&toks[0].1, &toks[1].1, &expiring]);
    let r = post(
        p.http,
        &body,
        Some("k1"),
        Some(&sign(&key, body.as_bytes())),
    )
    .await;
    let labels: Vec<Value> = r
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|a| a["label"].clone())
        .collect();
    assert_eq!(
        labels,
        [
            json!("true_positive"),
            json!("true_positive"),
            json!("false_positive")
        ]
    );
    assert_eq!(decision(&p, &toks[0].1).await, PAUSED);
    assert_eq!(decision(&p, &toks[1].1).await, PAUSED);
    p.stop().await.expect("stops");
}

#[tokio::test]
async fn report_leak_over_grpc_needs_a_caller_and_pauses_across_accounts() {
    let _serial = SERIAL.lock().await;
    log_capture("trace");
    let dir = temp();
    let p = TestServer::start(dir.path()).await;
    let (acct, admin, toks) = tokens(&p, "Acme", 1).await;
    let (_, scanner_admin) = p.account("Scanner Inc").await;
    let leaked = toks[0].1.clone();
    let req = |secret: &str| pb::ReportLeakRequest {
        secret: secret.into(),
        url: "https://ci.example/job/7\u{1b}[2J".into(),
    };

    let no_caller = p.tokens().report_leak(req(&leaked)).await;
    assert_code(no_caller, Code::Unauthenticated);
    assert_eq!(decision(&p, &leaked).await, ALLOWED);

    let wrong = keyward::token::assemble(toks[0].0, &keyward::token::new_secret_part());
    for s in [wrong.expose(), "kw_garbage", ""] {
        let r = p
            .tokens()
            .report_leak(auth(req(s), &scanner_admin))
            .await
            .expect("report");
        assert!(!r.into_inner().true_positive);
    }
    assert_eq!(decision(&p, &leaked).await, ALLOWED);

    // Another account's caller holds the secret: it may stop it.
    let r = p
        .tokens()
        .report_leak(auth(req(&leaked), &scanner_admin))
        .await
        .expect("report");
    assert!(r.into_inner().true_positive);
    assert_eq!(decision(&p, &leaked).await, PAUSED);
    let events = audit(&p, &admin, acct).await;
    let e = events
        .iter()
        .find(|e| e.action == "ReportLeak")
        .expect("audited in the token's account");
    assert_eq!(e.token_id, toks[0].0);
    assert!(e.actor_name.starts_with("Scanner Inc"), "{}", e.actor_name);
    assert!(e.detail.contains("source: grpc"), "{}", e.detail);
    assert!(
        e.detail.contains("url: https://ci.example/job/7[2J"),
        "{}",
        e.detail
    );

    // A follower refuses admin calls, this one too.
    let fdir = temp();
    let f = TestServer::start_with(
        follower_options(
            fdir.path(),
            p.clock.clone(),
            p.grpc,
            &dir.path().join("digest.key"),
            false,
        ),
        p.clock.clone(),
    )
    .await
    .expect("follower starts");
    let refused = f.tokens().report_leak(auth(req(&leaked), &admin)).await;
    assert_code(refused, Code::FailedPrecondition);
    assert_not_logged(&[&leaked, wrong.expose()]);
    f.stop().await.expect("stops");
    p.stop().await.expect("stops");
}

#[tokio::test]
async fn the_keys_file_is_checked_at_start_and_followed_when_it_changes() {
    let _serial = SERIAL.lock().await;
    // No keys: the route says so.
    let dir = temp();
    let plain = TestServer::start(dir.path()).await;
    let r = post(plain.http, "[]", Some("k1"), Some("AAAA")).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]
        .as_str()
        .is_some_and(|m| m.contains("--leak-report-keys")));
    plain.stop().await.expect("stops");

    // A bad entry refuses the start, naming the file and the entry.
    let (dir, keys_dir) = (temp(), temp());
    let keys = keys_dir.path().join("keys.json");
    std::fs::write(
        &keys,
        json!({"public_keys":[{"key_identifier":"old","key":"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}]}).to_string(),
    )
    .expect("write");
    let clock = Arc::new(ManualClock::new());
    let mut opts = options(dir.path(), clock.clone());
    opts.leak_report_keys = Some(keys.clone());
    let err = TestServer::start_with(opts, clock)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains(&keys.display().to_string()), "{err}");
    assert!(
        err.contains("public_keys[0] (key_identifier \"old\")"),
        "{err}"
    );

    // A rotated file is picked up without a restart; a broken one leaves
    // the keys in force.
    let dir = temp();
    let (old, new) = (new_key(), new_key());
    let (p, keys, _keys) = primary(dir.path(), &old).await;
    let (_, _, toks) = tokens(&p, "Acme", 2).await;
    write_keys(&keys, &[("k1", &old), ("rotated-2", &new)]);
    let body = report(&[&toks[0].1]);
    let r = post(
        p.http,
        &body,
        Some("rotated-2"),
        Some(&sign(&new, body.as_bytes())),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    std::fs::write(&keys, "{ broken").expect("write");
    let body = report(&[&toks[1].1]);
    let r = post(
        p.http,
        &body,
        Some("rotated-2"),
        Some(&sign(&new, body.as_bytes())),
    )
    .await;
    assert_eq!(r.status, 200, "the keys in force stay");
    p.stop().await.expect("stops");
}

#[tokio::test]
async fn the_published_regex_matches_minted_tokens_and_nothing_near_them() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let published = keyward::token::SCANNER_REGEX;
    assert!(
        readme.contains(&format!("`{published}`")) || readme.contains(published),
        "the README publishes {published}"
    );
    let re = regex::Regex::new(published).expect("a valid regex");
    let dir = temp();
    let p = TestServer::start(dir.path()).await;
    let (_, admin, toks) = tokens(&p, "Acme", 3).await;
    let mut minted: Vec<String> = toks.into_iter().map(|(_, s)| s).collect();
    minted.push(admin);
    minted.push(p.root());
    for t in &minted {
        for context in [
            t.clone(),
            format!("KEYWARD_TOKEN={t}\n"),
            format!("\"{t}\","),
            format!("Bearer {t}"),
        ] {
            let found: Vec<&str> = re.find_iter(&context).map(|m| m.as_str()).collect();
            assert_eq!(found, [t.as_str()], "in {:?}", context.len());
        }
        let near = [
            t[..t.len() - 1].to_string(),
            format!("{t}a"),
            format!("x{t}"),
            format!("kx_{}", &t[3..]),
            format!("KW_{}", &t[3..]),
            format!("{}-{}", &t[..30], &t[31..]),
            format!("{}_{}", &t[..30], &t[31..]),
        ];
        for n in near {
            assert!(
                !re.is_match(&n),
                "a near miss of length {} matched",
                n.len()
            );
        }
    }
    p.stop().await.expect("stops");
}
