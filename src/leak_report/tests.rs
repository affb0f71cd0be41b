use super::*;

use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};

fn key() -> SigningKey {
    SigningKey::random(&mut rand::rngs::OsRng)
}

fn pem(k: &SigningKey) -> String {
    k.verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("pem")
}

fn keys_json(entries: &[(&str, &SigningKey)]) -> String {
    let keys: Vec<Value> = entries
        .iter()
        .map(|(id, k)| serde_json::json!({"key_identifier": id, "key": pem(k), "is_current": true}))
        .collect();
    serde_json::json!({ "public_keys": keys }).to_string()
}

fn sign(k: &SigningKey, body: &[u8]) -> String {
    let sig: Signature = k.sign(body);
    base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
}

#[test]
fn a_body_verifies_only_with_its_own_key_and_signature() {
    let (a, b) = (key(), key());
    let set = KeySet::parse(&keys_json(&[("a", &a), ("b", &b)])).expect("parses");
    let body = br#"[{"token":"x","type":"t","url":"u","source":"content"}]"#;
    let sig = sign(&a, body);
    assert_eq!(set.verify(Some("a"), Some(&sig), body), Ok(()));
    // The same signature under the other key, or over another body.
    assert_eq!(
        set.verify(Some("b"), Some(&sig), body),
        Err(Refusal::BadSignature)
    );
    assert_eq!(
        set.verify(Some("a"), Some(&sig), b"[]"),
        Err(Refusal::BadSignature)
    );
    assert_eq!(
        set.verify(Some("c"), Some(&sig), body),
        Err(Refusal::UnknownKey)
    );
    assert_eq!(set.verify(None, Some(&sig), body), Err(Refusal::Unsigned));
    assert_eq!(set.verify(Some("a"), None, body), Err(Refusal::Unsigned));
    assert_eq!(
        set.verify(Some("a"), Some("not base64!"), body),
        Err(Refusal::BadEncoding)
    );
    assert_eq!(
        set.verify(Some("a"), Some("AAAA"), body),
        Err(Refusal::BadEncoding)
    );
    let long = "A".repeat(SIGNATURE_MAX + 4);
    assert_eq!(
        set.verify(Some("a"), Some(&long), body),
        Err(Refusal::BadEncoding)
    );
}

#[test]
fn the_other_form_of_a_signature_verifies_too() {
    // Why the replay window is keyed on the body: (r, n - s) is as valid
    // as (r, s), so a replayer could pass a guard keyed on the signature.
    let k = key();
    let set = KeySet::parse(&keys_json(&[("k", &k)])).expect("parses");
    let body = b"[]";
    let sig: Signature = k.sign(body);
    let (r, s) = sig.split_scalars();
    let flipped = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).expect("signature");
    assert_ne!(flipped, sig);
    let b64 = base64::engine::general_purpose::STANDARD.encode(flipped.to_der().as_bytes());
    assert_eq!(set.verify(Some("k"), Some(&b64), body), Ok(()));
}

#[test]
fn a_bad_keys_file_names_the_entry() {
    let a = key();
    let good = pem(&a);
    let cases = [
        ("[]".to_string(), "public_keys"),
        (r#"{"public_keys":[]}"#.to_string(), "empty"),
        (
            serde_json::json!({"public_keys":[{"key_identifier":"k1","key":good},{"key_identifier":"k2","key":"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}]}).to_string(),
            "public_keys[1] (key_identifier \"k2\")",
        ),
        (
            serde_json::json!({"public_keys":[{"key":good}]}).to_string(),
            "public_keys[0]: \"key_identifier\"",
        ),
        (
            serde_json::json!({"public_keys":[{"key_identifier":"k","key":good},{"key_identifier":"k","key":good}]}).to_string(),
            "twice",
        ),
        ("not json".to_string(), "not JSON"),
    ];
    for (text, needle) in cases {
        let e = KeySet::parse(&text).expect_err("refused");
        assert!(e.contains(needle), "{e:?} does not name {needle:?}");
        assert!(!e.contains("AAAA"), "key material repeated: {e}");
    }
    // A P-384 key is not P-256.
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
        .expect("P-384 key")
        .public_key_pem();
    let e = KeySet::parse(
        &serde_json::json!({"public_keys":[{"key_identifier":"k","key":p384}]}).to_string(),
    )
    .expect_err("P-384 refused");
    assert!(e.contains("P-256"), "{e}");
}

#[test]
fn reports_parse_within_their_limits() {
    let items = parse_report(
        br#"[{"token":"kw_x","type":"keyward_token","url":"https://github.com/o/r/blob/x","source":"content","extra":1},{"token":"y"}]"#,
    )
    .expect("parses");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].kind, "keyward_token");
    assert_eq!(items[1].source, "");
    assert!(!format!("{items:?}").contains("kw_x"));
    for (body, bad_item) in [
        (&b"{}"[..], false),
        (b"not json", false),
        (br#"[1]"#, true),
        (br#"[{"type":"t"}]"#, true),
        (br#"[{"token":5}]"#, true),
        (br#"[{"token":"t","url":[]}]"#, true),
    ] {
        let e = parse_report(body).expect_err("refused");
        assert_eq!(matches!(e, ReportError::BadItem(_)), bad_item, "{e:?}");
    }
    let many = format!("[{}]", vec![r#"{"token":"t"}"#; ITEMS_MAX + 1].join(","));
    assert_eq!(
        parse_report(many.as_bytes()),
        Err(ReportError::TooManyItems(ITEMS_MAX + 1))
    );
    let most = format!("[{}]", vec![r#"{"token":"t"}"#; ITEMS_MAX].join(","));
    assert_eq!(
        parse_report(most.as_bytes()).map(|v| v.len()),
        Ok(ITEMS_MAX)
    );
}

#[test]
fn a_body_is_admitted_once_per_window_and_the_oldest_go_first() {
    let guard = ReplayGuard::new(Duration::from_secs(10), 3);
    assert!(guard.admit(b"a", 0));
    assert!(!guard.admit(b"a", 9_999), "replay within the window");
    assert!(guard.admit(b"a", 10_000), "accepted again after the window");
    guard.forget(b"a");
    assert!(
        guard.admit(b"a", 10_001),
        "forgotten: its retry is accepted"
    );
    // The cap: the oldest body is forgotten for a new one.
    assert!(guard.admit(b"b", 10_002));
    assert!(guard.admit(b"c", 10_003));
    assert!(guard.admit(b"d", 10_004));
    assert_eq!(guard.len(), 3);
    assert!(guard.admit(b"a", 10_005), "the oldest was forgotten");
    assert!(!guard.admit(b"d", 10_006));
}

#[test]
fn audit_text_is_visible_clipped_and_free_of_tokens() {
    let token = crate::token::assemble(7, &crate::token::new_secret_part());
    let t = token.expose();
    let url = format!("https://x/{}\u{1b}[31m?q={t}&r=kw_short", &t[..10]);
    let clean = clean_text(&url, 300);
    assert!(!clean.contains(t));
    assert!(clean.contains("[token]"));
    assert!(clean.contains("kw_short"));
    assert!(!clean.chars().any(char::is_control));
    // A token split by a control character is still found.
    let split = format!("{}\n{}", &t[..20], &t[20..]);
    assert_eq!(clean_text(&split, 300), "[token]");
    assert_eq!(clean_text("abcdef", 3), "abc…");
    assert_eq!(clean_text("abc", 3), "abc");
}
