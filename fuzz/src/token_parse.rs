//! Target `token_parse`: the token parser (and the credential header it is
//! read from) against a separate reference implementation of the format.

use keyward::model::limits;
use keyward::token::{self, PREFIX, TOKEN_LEN};

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Fixed-width base62, written here from the format's description rather
/// than taken from `token.rs`.
fn base62(mut n: u64, width: usize) -> String {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out).expect("base62 is ASCII")
}

fn unbase62(s: &[u8]) -> Option<u64> {
    s.iter().try_fold(0u64, |acc, &b| {
        let d = ALPHABET.iter().position(|&a| a == b)? as u64;
        acc.checked_mul(62)?.checked_add(d)
    })
}

/// The token a reference encoder builds from an id and a 43-character
/// secret part: `kw_` + base62(id, 11) + secret + base62(CRC32, 6).
pub fn reference_token(id: u64, secret_part: &str) -> String {
    let mut s = format!("{PREFIX}{}{secret_part}", base62(id, 11));
    let crc = crc32fast::hash(s.as_bytes());
    s.push_str(&base62(u64::from(crc), 6));
    s
}

/// The reference parser: the id, if `s` is a keyward token.
pub fn reference_parse(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 63 || !s.starts_with("kw_") {
        return None;
    }
    if !b[3..].iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    let crc = unbase62(&b[57..])?;
    if crc != u64::from(crc32fast::hash(&b[..57])) {
        return None;
    }
    unbase62(&b[3..14])
}

/// Parses `s` with keyward and with the reference; they must agree, and a
/// parsed token must re-assemble to the same string.
pub fn check_token_str(s: &str) {
    let parsed = token::parse(s);
    assert_eq!(
        parsed.map(|p| p.id),
        reference_parse(s),
        "keyward and the reference parser disagree on {s:?}"
    );
    if let Some(p) = parsed {
        assert_eq!(s.len(), TOKEN_LEN);
        assert!(s.len() <= limits::TOKEN_MAX);
        assert_eq!(p.full(), s);
        assert_eq!(p.secret_part().len(), 43);
        assert_eq!(reference_token(p.id, p.secret_part()), s, "re-assembly");
        assert!(
            !format!("{p:?}").contains(p.secret_part()),
            "Debug of a parsed token shows its secret"
        );
    }
}

/// The token parser on arbitrary bytes: as a string, as a well-formed token
/// built from the bytes (must parse to its id; any one-byte change must not
/// parse), and as the value of the credential headers.
pub fn token_input(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    check_token_str(&s);

    if data.len() >= 8 {
        let id = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
        let secret: String = (0..43)
            .map(|i| {
                let b = data.get(8 + i).copied().unwrap_or(0);
                char::from(ALPHABET[usize::from(b) % 62])
            })
            .collect();
        let good = reference_token(id, &secret);
        let p = token::parse(&good).expect("a reference token parses");
        assert_eq!(p.id, id);
        assert_eq!(p.secret_part(), secret);
        check_token_str(&good);
        // One changed byte, at a position and to a value the input picks.
        if let Some(&pos) = data.get(51) {
            let pos = usize::from(pos) % good.len();
            let mut bytes = good.clone().into_bytes();
            let mut to = data
                .get(52)
                .map_or(b'_', |&v| ALPHABET[usize::from(v) % 62]);
            if to == bytes[pos] {
                to = if to == b'_' { b'x' } else { b'_' };
            }
            bytes[pos] = to;
            let changed = String::from_utf8(bytes).expect("ASCII");
            assert!(
                token::parse(&changed).is_none(),
                "a one-byte change at {pos} was accepted"
            );
        }
    }

    // The credential header: `authorization: Bearer <t>`, bare, or `api-token`.
    if let Ok(value) = tonic::metadata::AsciiMetadataValue::try_from(data) {
        let name = if data.first().is_some_and(|b| b & 1 == 1) {
            "api-token"
        } else {
            "authorization"
        };
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert(name, value);
        if let Some(cred) = keyward::service::credential(&md) {
            assert_eq!(cred, cred.trim(), "credential not trimmed");
            check_token_str(cred);
        }
    }
}
