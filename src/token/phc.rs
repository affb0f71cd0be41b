//! An argon2id PHC string kept in binary ([`Phc`]): keyward's own hashes
//! (`$argon2id$v=19$m=…,t=…,p=…$<16-byte salt>$<32-byte hash>`) take 56
//! bytes in place instead of a ~100-byte heap string per token (the cost
//! parameters, the same for nearly every token, are a 2-byte index into a
//! per-process table of the few sets in use); any other
//! string (other parameters' shape, lengths, a future format) is kept as
//! written. The binary form is used only when it renders back to exactly
//! the string it came from, so what is stored, replicated and verified is
//! byte for byte the same.

use std::fmt::{self, Write as _};
use std::sync::LazyLock;

use parking_lot::RwLock;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;

/// A PHC string.
#[derive(Clone, PartialEq, Eq)]
pub enum Phc {
    /// keyward's shape, in binary.
    Argon2id {
        /// Memory (KiB), iterations, parallelism: an index into [`PARAMS`].
        params: u16,
        /// The salt.
        salt: [u8; 16],
        /// The hash.
        hash: [u8; 32],
    },
    /// Anything else, as written.
    Other(Box<str>),
}

/// `b64` (standard alphabet, no padding) decoded to exactly `N` bytes,
/// without an allocation.
fn decode_exact<const N: usize>(b64: &str) -> Option<[u8; N]> {
    if b64.len() != (N * 4).div_ceil(3) {
        return None;
    }
    // Room for the engine's estimate (whole 3-byte groups).
    let mut buf = [0u8; 48];
    let n = STANDARD_NO_PAD.decode_slice(b64, &mut buf).ok()?;
    buf[..n].try_into().ok()
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
        // Only the canonical spelling (what rendering gives back): the
        // engine refuses padding and non-zero trailing bits, so a text it
        // decodes to exactly 16 (32) bytes is the one those bytes render to.
        let salt = decode_exact::<16>(salt_b64)?;
        let hash = decode_exact::<32>(hash_b64)?;
        Some(Phc::Argon2id {
            params: params_index([m, t, p])?,
            salt,
            hash,
        })
    }
}

/// The cost parameter sets in use, by index: only ever appended to (a set
/// is three numbers, and a store holds one set per configuration it has
/// seen). Past `u16::MAX` sets, a hash is kept as written.
static PARAMS: LazyLock<RwLock<Vec<[u32; 3]>>> = LazyLock::new(RwLock::default);

/// The index of a parameter set, added if new.
fn params_index(set: [u32; 3]) -> Option<u16> {
    let find = |sets: &[[u32; 3]]| sets.iter().position(|s| *s == set);
    if let Some(i) = find(&PARAMS.read()) {
        return u16::try_from(i).ok();
    }
    let mut sets = PARAMS.write();
    let i = find(&sets).unwrap_or_else(|| {
        sets.push(set);
        sets.len() - 1
    });
    let index = u16::try_from(i).ok();
    if index.is_none() {
        sets.truncate(usize::from(u16::MAX) + 1);
    }
    index
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
                let [m, t, p] = PARAMS.read()[usize::from(*params)];
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
    fn a_binary_hash_takes_56_bytes() {
        assert_eq!(std::mem::size_of::<Phc>(), 56);
    }

    #[test]
    fn hashes_of_different_costs_render_their_own_costs() {
        let a = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        let b = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        let (pa, pb) = (Phc::new(a), Phc::new(b));
        assert!(matches!(pa, Phc::Argon2id { .. }) && matches!(pb, Phc::Argon2id { .. }));
        assert_ne!(pa, pb);
        assert_eq!(
            (pa.to_string(), pb.to_string()),
            (a.to_string(), b.to_string())
        );
        assert_eq!(Phc::new(a), pa, "the same costs share one index");
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
        // Non-zero trailing bits ("...dB" decodes to the same salt as
        // "...dA") and padding: not what rendering gives, so kept as written.
        for s in [
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdB$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2h",
        ] {
            assert!(matches!(Phc::new(s), Phc::Other(_)), "{s}");
            assert_eq!(Phc::new(s).to_string(), s);
        }
        let plus = "$argon2id$v=19$m=+19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        assert_eq!(Phc::new(plus).to_string(), plus);
        assert!(matches!(
            Phc::new("$argon2id$v=19$m=019456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"),
            Phc::Other(_)
        ));
    }
}
