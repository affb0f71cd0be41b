//! An argon2id PHC string kept in binary ([`Phc`]): keyward's own hashes
//! (`$argon2id$v=19$m=…,t=…,p=…$<16-byte salt>$<32-byte hash>`) take 64
//! bytes in place instead of a ~100-byte heap string per token; any other
//! string (other parameters' shape, lengths, a future format) is kept as
//! written. The binary form is used only when it renders back to exactly
//! the string it came from, so what is stored, replicated and verified is
//! byte for byte the same.

use std::fmt::{self, Write as _};

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;

/// A PHC string.
#[derive(Clone, PartialEq, Eq)]
pub enum Phc {
    /// keyward's shape, in binary.
    Argon2id {
        /// Memory (KiB), iterations, parallelism.
        params: [u32; 3],
        /// The salt.
        salt: [u8; 16],
        /// The hash.
        hash: [u8; 32],
    },
    /// Anything else, as written.
    Other(Box<str>),
}

impl Phc {
    /// From its string form.
    pub fn new(s: &str) -> Self {
        Self::compact(s).unwrap_or_else(|| Phc::Other(s.into()))
    }

    fn compact(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("$argon2id$v=19$m=")?;
        let (params, rest) = rest.split_once('$')?;
        let (salt_b64, hash_b64) = rest.split_once('$')?;
        let mut it = params.split(',');
        let m = number(it.next()?)?;
        let t = number(it.next()?.strip_prefix("t=")?)?;
        let p = number(it.next()?.strip_prefix("p=")?)?;
        if it.next().is_some() {
            return None;
        }
        let salt: [u8; 16] = STANDARD_NO_PAD.decode(salt_b64).ok()?.try_into().ok()?;
        let hash: [u8; 32] = STANDARD_NO_PAD.decode(hash_b64).ok()?.try_into().ok()?;
        // Only the canonical spelling (what rendering gives back).
        let mut buf = [0u8; 44];
        let n = STANDARD_NO_PAD.encode_slice(salt, &mut buf).ok()?;
        if buf[..n] != *salt_b64.as_bytes() {
            return None;
        }
        let n = STANDARD_NO_PAD.encode_slice(hash, &mut buf).ok()?;
        if buf[..n] != *hash_b64.as_bytes() {
            return None;
        }
        Some(Phc::Argon2id {
            params: [m, t, p],
            salt,
            hash,
        })
    }
}

/// A decimal number as rendering writes it: digits, no leading zero.
fn number(s: &str) -> Option<u32> {
    let canonical = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s.len() == 1 || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

impl fmt::Display for Phc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phc::Argon2id { params, salt, hash } => {
                let [m, t, p] = params;
                write!(f, "$argon2id$v=19$m={m},t={t},p={p}$")?;
                f.write_str(&STANDARD_NO_PAD.encode(salt))?;
                f.write_char('$')?;
                f.write_str(&STANDARD_NO_PAD.encode(hash))
            }
            Phc::Other(s) => f.write_str(s),
        }
    }
}

impl fmt::Debug for Phc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Phc(REDACTED)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywards_hashes_are_binary_and_render_back_exactly() {
        let s = crate::token::hash_secret(&crate::token::new_secret_part()).unwrap();
        let phc = Phc::new(&s);
        assert!(matches!(phc, Phc::Argon2id { .. }), "{s}");
        assert_eq!(phc.to_string(), s);
    }

    #[test]
    fn anything_else_is_kept_as_written() {
        for s in [
            "",
            "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaA",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
            "$argon2id$v=19$m=019456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
            "$argon2id$v=19$m=19456,t=2,p=1,x=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        ] {
            let phc = Phc::new(s);
            assert_eq!(phc.to_string(), s);
        }
        let plus = "$argon2id$v=19$m=+19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        assert_eq!(Phc::new(plus).to_string(), plus);
        assert!(matches!(
            Phc::new("$argon2id$v=19$m=019456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"),
            Phc::Other(_)
        ));
    }
}
