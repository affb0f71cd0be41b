//! Secrets never leak: the whole lifecycle runs with every log level asked
//! for (`RUST_LOG=trace` through the binary's own subscriber,
//! `keyward::logs::subscriber`, so tonic, h2, sled and tokio-postgres all
//! log), on sled and on PostgreSQL, and no token secret, secret part, stored
//! hash, verified digest or the digest key appears in a log line, an error
//! message or a Debug print, in any form a formatter prints bytes in (text,
//! hex, decimal byte arrays, base64), nor the PHC prefix `$argon2id$` of any
//! hash; the store holds no secret.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use common::pg::PgCluster;
use common::*;
use keyward::clock::ManualClock;
use keyward::pb::v1 as pb;
use prost_types::FieldMask;

/// `RUST_LOG` of the runs: everything there is.
const DIRECTIVES: &str = "trace";

/// The prefix of every stored hash: found in any form, some hash leaked,
/// even one of a token since deleted.
const PHC_PREFIX: &[u8] = b"$argon2id$";

/// The tests share one subscriber and one capture: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The capture of this binary's subscriber: the one the keyward binary
/// installs (`logs::subscriber`, with its caps), at [`DIRECTIVES`], with
/// `log` records bridged in.
fn capture() -> &'static Capture {
    log_capture(DIRECTIVES)
}

/// A value that must never be printed, and what it is (failure messages
/// name it; they never show it).
struct Secret {
    /// Named in a failure message.
    what: String,
    /// The value, as bytes.
    bytes: Vec<u8>,
}

impl Secret {
    fn new(what: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Secret {
        Secret {
            what: what.into(),
            bytes: bytes.into(),
        }
    }
}

/// Needles for every form a formatter prints `bytes` in: as they are, hex
/// (both cases), `{:?}` and `{:x?}` of a byte slice without the brackets
/// (so a value inside a longer array is found too), with and without the
/// spaces, and base64 (standard and URL-safe) at each of the three
/// alignments a value can have inside a longer encoded run: only the
/// characters that depend on `bytes` alone, so padded, unpadded and
/// embedded encodings all contain one of them.
fn printed_forms(bytes: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let join = |sep: &str, f: &dyn Fn(&u8) -> String| -> Vec<u8> {
        bytes
            .iter()
            .map(f)
            .collect::<Vec<_>>()
            .join(sep)
            .into_bytes()
    };
    let mut out = vec![
        ("text", bytes.to_vec()),
        ("hex", join("", &|b| format!("{b:02x}"))),
        ("upper-case hex", join("", &|b| format!("{b:02X}"))),
        ("a decimal byte array", join(", ", &|b| b.to_string())),
        (
            "a decimal byte array without spaces",
            join(",", &|b| b.to_string()),
        ),
        (
            "a hex byte array ({:x?})",
            join(", ", &|b| format!("{b:x}")),
        ),
    ];
    for (name, alphabet) in [("base64", BASE64), ("URL-safe base64", BASE64_URL)] {
        for shift in 0..3 {
            let mut shifted = vec![0u8; shift];
            shifted.extend_from_slice(bytes);
            let encoded = base64_unpadded(&shifted, alphabet);
            // Character i holds bits 6i..6i+6 of the input.
            let first = (8 * shift).div_ceil(6);
            let end = 8 * shifted.len() / 6;
            out.push((name, encoded[first..end].to_vec()));
        }
    }
    out
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// `bytes` in base64 with `alphabet`, without padding.
fn base64_unpadded(bytes: &[u8], alphabet: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize]);
        }
    }
    out
}

/// Where any form ([`printed_forms`]) of any of `secrets` occurs in
/// `haystack`: one line per secret and form, naming both and showing the
/// start of the line it was found in (for a log, its level and target).
fn leaks(haystack: &[u8], secrets: &[Secret]) -> Vec<String> {
    // One pass over the haystack, needles looked up by their first 4 bytes
    // (the logs run to megabytes, the needles to hundreds).
    type Needle = (usize, &'static str, Vec<u8>); // secret, form, bytes
    let mut needles: HashMap<[u8; 4], Vec<Needle>> = HashMap::new();
    for (i, s) in secrets.iter().enumerate() {
        for (form, needle) in printed_forms(&s.bytes) {
            assert!(
                needle.len() >= 10,
                "{} as {form} is too short to search for",
                s.what
            );
            let key = [needle[0], needle[1], needle[2], needle[3]];
            needles.entry(key).or_default().push((i, form, needle));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for at in 0..haystack.len().saturating_sub(3) {
        let key = [
            haystack[at],
            haystack[at + 1],
            haystack[at + 2],
            haystack[at + 3],
        ];
        let Some(candidates) = needles.get(&key) else {
            continue;
        };
        for (i, form, needle) in candidates {
            if haystack[at..].starts_with(needle) && seen.insert((*i, *form)) {
                let start = haystack[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |p| p + 1);
                let line =
                    String::from_utf8_lossy(&haystack[start..haystack.len().min(start + 160)]);
                let line = line.lines().next().unwrap_or_default().to_string();
                out.push(format!(
                    "{} as {form} at byte {at}, in: {line}",
                    secrets[*i].what
                ));
            }
        }
    }
    out
}

/// No form of any of `secrets` in `haystack`.
fn assert_absent(haystack: &[u8], secrets: &[Secret], what: &str) {
    let found = leaks(haystack, secrets);
    assert!(
        found.is_empty(),
        "{what} holds {} secret(s) or hash(es):\n{}",
        found.len(),
        found.join("\n")
    );
}

/// On the store the core suite runs on: sled (PostgreSQL when scripts/test.sh
/// sets KEYWARD_TEST_PG).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_errors_debug_or_store() {
    let _serial = SERIAL.lock().await;
    let dir = temp();
    let clock = Arc::new(ManualClock::new());
    let opts = options(dir.path(), clock.clone());
    let url = opts.postgres.as_ref().map(|pg| pg.store.url.clone());
    lifecycle(dir.path(), opts, clock, url.as_deref()).await;
}

/// On PostgreSQL, where tokio-postgres at debug prints every statement's
/// parameters: a server of its own (tests/common/pg.rs), or the shared one
/// of KEYWARD_TEST_PG.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_errors_debug_or_store_on_postgresql() {
    let _serial = SERIAL.lock().await;
    let (cluster, base) = match pg::shared_base_url() {
        Some(base) => (None, base),
        None => {
            let c = tokio::task::spawn_blocking(PgCluster::start)
                .await
                .expect("start PostgreSQL");
            let base = c.base_url();
            (Some(c), base)
        }
    };
    let dir = temp();
    let clock = Arc::new(ManualClock::new());
    let mut opts = options(dir.path(), clock.clone());
    let pg = postgres_at(&base, &db_name(dir.path()));
    let url = pg.store.url.clone();
    opts.postgres = Some(pg);
    lifecycle(dir.path(), opts, clock, Some(&url)).await;
    drop(cluster);
}

/// The matcher finds each form it claims to (known encodings, computed
/// apart from it), inside longer output too, and nothing in clean output:
/// the tests above cannot pass by searching for nothing.
#[test]
fn the_matcher_finds_every_printed_form() {
    let value = b"kw_\xfb\xff?>~0123456789".to_vec();
    let secret = [Secret::new("the value", value.clone())];
    let prefixed = |p: &[u8]| [p, &value, b"!"].concat();
    let printed: Vec<(&str, Vec<u8>)> = vec![
        ("text", prefixed(b"token=")),
        ("hex", hex_of(&prefixed(b"\x00\x01"), false).into_bytes()),
        ("HEX", hex_of(&value, true).into_bytes()),
        (
            "{:?}",
            format!("record: {:?}", prefixed(b"\x0a\xc8")).into_bytes(),
        ),
        (
            "{:?} of the value alone",
            format!("{:?}", value).into_bytes(),
        ),
        (
            "decimal without spaces",
            format!("{:?}", prefixed(b"\x07"))
                .replace(' ', "")
                .into_bytes(),
        ),
        ("{:x?}", format!("{:x?}", prefixed(b"\x07")).into_bytes()),
        ("base64", b"v=a3df+/8/Pn4wMTIzNDU2Nzg5;".to_vec()),
        (
            "base64, shifted 1",
            b"YWt3X/v/Pz5+MDEyMzQ1Njc4OQ==".to_vec(),
        ),
        (
            "base64, shifted 2",
            b"YWJrd1/7/z8+fjAxMjM0NTY3ODk=".to_vec(),
        ),
        ("URL-safe base64", b"a3df-_8_Pn4wMTIzNDU2Nzg5".to_vec()),
        (
            "URL-safe base64, shifted 1",
            b"YWt3X_v_Pz5-MDEyMzQ1Njc4OQ".to_vec(),
        ),
        (
            "URL-safe base64, shifted 2",
            b"YWJrd1_7_z8-fjAxMjM0NTY3ODk".to_vec(),
        ),
    ];
    for (form, haystack) in &printed {
        assert!(
            !leaks(haystack, &secret).is_empty(),
            "{form} not found: {}",
            String::from_utf8_lossy(haystack)
        );
    }
    // The PHC prefix, of a hash the test knows nothing else about.
    let prefix = [Secret::new("the PHC prefix", PHC_PREFIX)];
    for haystack in [
        b"hash=$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_vec(),
        format!("{:?}", b"\x12\x40$argon2id$v=19$m=19456").into_bytes(),
        b"c2FsdCRhcmdvbjJpZCR2PTE5JG09MTk0NTY=".to_vec(),
    ] {
        assert!(
            !leaks(&haystack, &prefix).is_empty(),
            "the PHC prefix not found: {}",
            String::from_utf8_lossy(&haystack)
        );
    }
    // Nothing in output that holds neither.
    let clean = format!(
        "{:?} {} $argon2i$ {}",
        b"kw_\xfb\xfe?>~0123456789",
        hex_of(b"kw_\xfb\xfe?>~0123456789", false),
        "a3df+/8/Pn4wMTIzNDU2Nzg4"
    );
    assert_eq!(leaks(clean.as_bytes(), &secret), Vec::<String>::new());
    assert_eq!(leaks(clean.as_bytes(), &prefix), Vec::<String>::new());
}

fn hex_of(bytes: &[u8], upper: bool) -> String {
    bytes
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

/// The whole lifecycle on a server started with `opts` (its store: the
/// database at `pg_url`, or sled in `dir`), then every check.
async fn lifecycle(
    dir: &Path,
    opts: keyward::server::Options,
    clock: Arc<ManualClock>,
    pg_url: Option<&str>,
) {
    let capture = capture();
    capture.clear();
    let s = TestServer::start_with(opts, clock)
        .await
        .expect("server starts");
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
                grace: None,
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
            cost: Default::default(),
            token: t.secret.clone(),
            resource: None,
            level: ADMIN,
            scope: String::new()
        },
    );
    s.engine.persist_usage(0, usize::MAX).await.unwrap();
    s.stop().await.unwrap();

    let secrets: Vec<Secret> = [
        ("the root token", &root),
        ("an account admin token", &admin),
        ("a project token", &t.secret),
        ("a reset token", &reset.secret),
        ("a domain token", &domain.secret),
    ]
    .iter()
    .flat_map(|(what, full)| {
        [
            Secret::new(*what, full.as_bytes()),
            Secret::new(
                format!("the secret part of {what}"),
                &full.as_bytes()[14..57],
            ),
        ]
    })
    .collect();
    let hashes = stored_hashes(dir, pg_url).await;
    assert!(hashes.len() > 5);
    let logs = capture.bytes();
    assert!(
        logs.len() > 10_000,
        "TRACE logging captured too little ({} bytes) to prove anything",
        logs.len()
    );
    println!("secrets: {} bytes of logs searched", logs.len());
    assert_absent(&logs, &secrets, "the log");
    assert_absent(&logs, &hashes, "the log");
    let errors = errors.join("\n");
    assert_absent(errors.as_bytes(), &secrets, "an error message");
    assert_absent(errors.as_bytes(), &hashes, "an error message");
    let records = stored_records_debug(dir, pg_url).await;
    assert!(records.contains("TokenRecord"));
    assert_absent(
        records.as_bytes(),
        &secrets,
        "a Debug print of a stored record",
    );
    assert_absent(
        records.as_bytes(),
        &hashes,
        "a Debug print of a stored record",
    );
    assert_absent(debug.as_bytes(), &secrets, "a Debug print");
    assert_absent(debug.as_bytes(), &hashes, "a Debug print");
    // The store (sled files, or every PostgreSQL row) holds hashes, never
    // a secret.
    let stored = stored_bytes_in(dir, pg_url).await;
    assert!(stored.len() > 1000, "too little read from the store");
    for s in &secrets {
        assert!(
            !stored.windows(s.bytes.len()).any(|w| w == s.bytes),
            "the store holds {}",
            s.what
        );
    }
}

/// What may appear nowhere but the store: the PHC prefix, every stored
/// token's PHC hash, the hash part of it alone and its verified digest, and
/// the digest key (its file's hex text and its bytes).
async fn stored_hashes(dir: &Path, pg_url: Option<&str>) -> Vec<Secret> {
    let mut out = vec![Secret::new("the PHC prefix $argon2id$", PHC_PREFIX)];
    for r in stored_tokens_in(dir, pg_url).await {
        let id = r.id;
        out.push(Secret::new(
            format!("token {id}'s PHC hash"),
            r.phc_hash.as_bytes(),
        ));
        out.push(Secret::new(
            format!("the hash part of token {id}'s PHC hash"),
            r.phc_hash.rsplit('$').next().unwrap_or_default().as_bytes(),
        ));
        if !r.verified_digest.is_empty() {
            out.push(Secret::new(
                format!("token {id}'s verified digest"),
                r.verified_digest.clone(),
            ));
        }
    }
    let key = std::fs::read_to_string(dir.join("digest.key")).expect("key");
    let key = key.trim();
    out.push(Secret::new("the digest key's file text", key.as_bytes()));
    let bytes: Vec<u8> = (0..key.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&key[i..i + 2], 16).expect("hex key"))
        .collect();
    out.push(Secret::new("the digest key", bytes));
    out
}

/// Debug prints of every stored token record.
async fn stored_records_debug(dir: &Path, pg_url: Option<&str>) -> String {
    let mut out = String::new();
    for r in stored_tokens_in(dir, pg_url).await {
        out.push_str(&format!("{r:?}\n"));
    }
    out
}
