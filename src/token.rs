//! The token string: format, parsing, generation, the redacted [`Secret`]
//! type, argon2id hashing and the keyed digest that proves a token was
//! verified before.
//!
//! Format: `kw_` + base62(id, 11 chars) + 43 random base62 chars (256 bits
//! from the OS CSPRNG) + base62(CRC32 of what precedes, 6 chars) = 63 chars.
//! The id is the selector: a lookup needs no scan. The checksum rejects typos
//! and garbage before any lookup, and lets secret scanners recognise tokens.

use std::fmt;
use std::io::Write;
use std::path::Path;

mod hashing;
mod phc;

pub use hashing::trim_argon2_memory;
pub use phc::Phc;

use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::OsRng;
use rand::RngCore;
use subtle::ConstantTimeEq;

/// Every keyward token starts with this.
pub const PREFIX: &str = "kw_";
const ID_LEN: usize = 11;
const SECRET_LEN: usize = 43;
const CRC_LEN: usize = 6;
/// Length of every keyward token string.
pub const TOKEN_LEN: usize = PREFIX.len() + ID_LEN + SECRET_LEN + CRC_LEN;

/// The regular expression secret scanners (GitHub's partner program) match
/// keyward tokens with: the prefix, then the id, the secret and the
/// checksum, all base62, between word boundaries. Candidates it finds are
/// checked by [`parse`] (the checksum) before anything is looked up.
pub const SCANNER_REGEX: &str = r"\bkw_[0-9A-Za-z]{60}\b";

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A plaintext secret (a whole token, or its random part). Its `Debug` and
/// `Display` print `REDACTED`; only [`Secret::expose`] reveals it, and only
/// the create/reset responses call that.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The plaintext. Call only to put it in a create/reset response.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(REDACTED)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("REDACTED")
    }
}

/// A token string that passed the format and checksum checks.
#[derive(Clone, Copy)]
pub struct ParsedToken<'a> {
    /// The token id (selector).
    pub id: u64,
    /// The random part, the input of the argon2 hash.
    secret_part: &'a str,
    /// The whole string, the input of the keyed digest.
    full: &'a str,
}

impl fmt::Debug for ParsedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// base62 value of each byte, `INVALID` for bytes outside the alphabet.
const INVALID: u8 = 0xFF;
#[expect(clippy::cast_possible_truncation, reason = "indexes below 62")]
const DECODE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 62 {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Decodes fixed-width base62; `None` on a byte outside the alphabet or
/// overflow.
fn decode_fixed(s: &[u8]) -> Option<u64> {
    let mut acc = 0u64;
    for &b in s {
        let d = DECODE[usize::from(b)];
        if d == INVALID {
            return None;
        }
        acc = acc.checked_mul(62)?.checked_add(u64::from(d))?;
    }
    Some(acc)
}

fn encode_fixed(mut n: u64, width: usize, out: &mut String) {
    let mut buf = [b'0'; 16];
    for slot in buf[..width].iter_mut().rev() {
        // `n % 62` is < 62, so the index is in bounds.
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out.extend(buf[..width].iter().map(|&b| char::from(b)));
}

/// Parses a token string: prefix, length, alphabet, checksum, id. Constant
/// work, no allocation; `None` for anything that is not a keyward token.
pub fn parse(s: &str) -> Option<ParsedToken<'_>> {
    let b = s.as_bytes();
    if b.len() != TOKEN_LEN || !s.starts_with(PREFIX) {
        return None;
    }
    let body = &b[..TOKEN_LEN - CRC_LEN];
    // Branch-free alphabet check: OR of every table value has the INVALID
    // bits set iff some byte is outside the alphabet.
    if body[PREFIX.len()..]
        .iter()
        .fold(0u8, |acc, &c| acc | DECODE[usize::from(c)])
        == INVALID
    {
        return None;
    }
    let crc = decode_fixed(&b[TOKEN_LEN - CRC_LEN..])?;
    if crc != u64::from(crc32fast::hash(body)) {
        return None;
    }
    let id = decode_fixed(&b[PREFIX.len()..PREFIX.len() + ID_LEN])?;
    Some(ParsedToken {
        id,
        secret_part: &s[PREFIX.len() + ID_LEN..TOKEN_LEN - CRC_LEN],
        full: s,
    })
}

impl<'a> ParsedToken<'a> {
    /// The random part (argon2 input).
    pub fn secret_part(&self) -> &'a str {
        self.secret_part
    }
    /// The whole token (digest input).
    pub fn full(&self) -> &'a str {
        self.full
    }
}

/// A fresh random secret part: 43 base62 characters from the OS CSPRNG.
pub fn new_secret_part() -> Secret {
    Secret(Alphanumeric.sample_string(&mut OsRng, SECRET_LEN))
}

/// The full token string for `id` and a secret part from [`new_secret_part`].
pub fn assemble(id: u64, secret_part: &Secret) -> Secret {
    let mut s = String::with_capacity(TOKEN_LEN);
    s.push_str(PREFIX);
    encode_fixed(id, ID_LEN, &mut s);
    s.push_str(secret_part.expose());
    let crc = crc32fast::hash(s.as_bytes());
    encode_fixed(u64::from(crc), CRC_LEN, &mut s);
    Secret(s)
}

/// The last 4 characters of a token, shown to recognise it.
pub fn last_4(token: &Secret) -> String {
    token.expose()[TOKEN_LEN - 4..].to_string()
}

/// Hashes a secret part with argon2id at OWASP cost (19 MiB, t=2, p=1),
/// on pooled memory (see `token/hashing.rs`). CPU heavy (~30 ms): call from a
/// blocking thread.
pub fn hash_secret(secret_part: &Secret) -> Result<String, argon2::password_hash::Error> {
    hashing::hash_secret(secret_part.expose().as_bytes())
}

/// Verifies a secret part against a PHC hash (constant-time compare), on
/// pooled memory. CPU heavy: call from a blocking thread.
pub fn verify_secret(secret_part: &str, phc: &str) -> bool {
    hashing::verify_secret(secret_part.as_bytes(), phc)
}

/// The key of the verified digests, kept outside the store. `Debug` is redacted.
#[derive(Clone)]
pub struct DigestKey {
    key: [u8; 32],
    id: [u8; 8],
}

impl fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A verified digest: keyed BLAKE3 of a whole token string.
pub type Digest = [u8; 32];

impl DigestKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(key: [u8; 32]) -> Self {
        let hash = blake3::hash(&key);
        let mut id = [0u8; 8];
        id.copy_from_slice(&hash.as_bytes()[..8]);
        Self { key, id }
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        Self::from_bytes(key)
    }

    /// Loads the key from `path` (64 hex characters), or creates it there
    /// with mode 0600 when `create` is set and the file does not exist.
    pub fn load_or_create(path: &Path, create: bool) -> std::io::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_hex(text.trim()).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: expected 64 hex characters", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let key = Self::generate();
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    opts.mode(0o600);
                }
                let mut f = opts.open(path)?;
                let hex = key.key.iter().fold(String::new(), |mut hex, b| {
                    let _ = fmt::Write::write_fmt(&mut hex, format_args!("{b:02x}"));
                    hex
                });
                writeln!(f, "{hex}")?;
                f.sync_all()?;
                Ok(key)
            }
            Err(e) => Err(e),
        }
    }

    fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 {
            return None;
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self::from_bytes(key))
    }

    /// Fingerprint of the key, stored beside each digest.
    pub fn id(&self) -> [u8; 8] {
        self.id
    }

    /// The digest of a whole token string.
    pub fn digest(&self, full_token: &str) -> Digest {
        *blake3::keyed_hash(&self.key, full_token.as_bytes()).as_bytes()
    }
}

/// Constant-time equality of two digests: every byte is compared, with
/// no early exit.
pub fn digests_equal(a: &Digest, b: &Digest) -> bool {
    // subtle compares word by word (one optimisation barrier per word, not
    // per byte).
    let word = |d: &Digest, i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&d[8 * i..8 * i + 8]);
        u64::from_le_bytes(w)
    };
    (0..4)
        .fold(subtle::Choice::from(1), |acc, i| {
            acc & word(a, i).ct_eq(&word(b, i))
        })
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembled_tokens_parse_back_to_their_id() {
        for id in [0, 1, 42, 1 << 40, u64::MAX] {
            let t = assemble(id, &new_secret_part());
            assert_eq!(t.expose().len(), TOKEN_LEN);
            let p = parse(t.expose()).expect("parses");
            assert_eq!(p.id, id);
            assert_eq!(p.full(), t.expose());
        }
    }

    #[test]
    fn any_single_character_change_is_rejected() {
        let t = assemble(7, &new_secret_part());
        let s = t.expose();
        for i in 0..s.len() {
            let mut b = s.as_bytes().to_vec();
            b[i] = if b[i] == b'x' { b'y' } else { b'x' };
            let changed = String::from_utf8(b).expect("ascii");
            assert!(parse(&changed).is_none(), "change at {i} accepted");
        }
    }

    #[test]
    fn digests_compare_every_word() {
        let a = [7u8; 32];
        assert!(digests_equal(&a, &a));
        for i in 0..32 {
            let mut b = a;
            b[i] ^= 1;
            assert!(!digests_equal(&a, &b), "difference at byte {i} missed");
        }
    }

    #[test]
    fn the_scanner_regex_counts_what_the_format_holds() {
        let body = ID_LEN + SECRET_LEN + CRC_LEN;
        assert_eq!(
            SCANNER_REGEX,
            format!(r"\b{PREFIX}[0-9A-Za-z]{{{body}}}\b"),
            "the published regex must follow the token format"
        );
        assert!(ALPHABET.iter().all(u8::is_ascii_alphanumeric));
    }

    #[test]
    fn garbage_is_rejected() {
        for s in ["", "kw_", "Bearer x", &"kw_".repeat(21), "kw_é"] {
            assert!(parse(s).is_none());
        }
    }

    #[test]
    fn secrets_never_print() {
        let t = assemble(7, &new_secret_part());
        assert_eq!(format!("{t:?}"), "Secret(REDACTED)");
        assert_eq!(format!("{t}"), "REDACTED");
        let p = parse(t.expose()).expect("parses");
        assert!(!format!("{p:?}").contains(p.secret_part()));
    }

    #[test]
    fn argon2_verifies_only_the_right_secret() {
        let s = new_secret_part();
        let phc = hash_secret(&s).expect("hash");
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_secret(s.expose(), &phc));
        assert!(!verify_secret(new_secret_part().expose(), &phc));
    }

    #[test]
    fn digest_key_round_trips_through_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("digest.key");
        let a = DigestKey::load_or_create(&path, true).expect("create");
        let b = DigestKey::load_or_create(&path, false).expect("load");
        assert_eq!(a.id(), b.id());
        assert_eq!(a.digest("x"), b.digest("x"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
