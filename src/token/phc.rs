//! An argon2id PHC string kept in binary ([`Phc`]): keyward's own hashes
//! (`$argon2id$v=19$m=…,t=…,p=…$<16-byte salt>$<32-byte hash>`) take 49
//! bytes in place, with no alignment, instead of a ~100-byte heap string
//! per token (the cost parameters, the same for nearly every token, are a
//! 1-byte index into a per-process table of the few sets in use); any
//! other string (other parameters' shape, lengths, a future format) is
//! kept as written, in a shared table. The binary form is used only when it renders back to exactly
//! the string it came from, so what is stored, replicated and verified is
//! byte for byte the same.

use std::fmt::{self, Write as _};
use std::sync::LazyLock;

use parking_lot::{Mutex, RwLock};

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;

/// A PHC string, in 49 bytes with no alignment (it sits between a token
/// entry's other byte fields, with no padding): byte 0 is the index of the
/// cost parameters in [`PARAMS`] and 16 bytes of salt and 32 of hash
/// follow; or byte 0 is [`OTHER`] and bytes 1..5 name the slot of
/// [`OTHERS`] that holds the string as written (rare: keyward writes its
/// own shape).
pub struct Phc([u8; 49]);

/// Byte 0 of a [`Phc`] kept as written.
const OTHER: u8 = u8::MAX;

/// Strings of [`Phc`]s not in keyward's shape, by slot; a slot is freed
/// when its `Phc` is dropped and reused.
static OTHERS: LazyLock<Mutex<Slots>> = LazyLock::new(Mutex::default);

#[derive(Default)]
struct Slots {
    strings: Vec<Option<Box<str>>>,
    free: Vec<u32>,
}

impl Slots {
    fn put(&mut self, s: Box<str>) -> u32 {
        if let Some(i) = self.free.pop() {
            self.strings[i as usize] = Some(s);
            return i;
        }
        self.strings.push(Some(s));
        // More than 2^32 live hashes would not fit in memory first.
        u32::try_from(self.strings.len() - 1).unwrap_or(u32::MAX)
    }
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
        Self::compact(s).unwrap_or_else(|| {
            let mut b = [0u8; 49];
            b[0] = OTHER;
            b[1..5].copy_from_slice(&OTHERS.lock().put(s.into()).to_le_bytes());
            Phc(b)
        })
    }

    /// Whether it is kept in binary (keyward's shape).
    pub fn is_binary(&self) -> bool {
        self.0[0] != OTHER
    }

    /// The [`OTHERS`] slot of a string kept as written.
    fn slot(&self) -> Option<u32> {
        (!self.is_binary())
            .then(|| u32::from_le_bytes([self.0[1], self.0[2], self.0[3], self.0[4]]))
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
        let mut b = [0u8; 49];
        b[0] = params_index([m, t, p])?;
        b[1..17].copy_from_slice(&salt);
        b[17..].copy_from_slice(&hash);
        Some(Phc(b))
    }
}

impl Clone for Phc {
    fn clone(&self) -> Self {
        match self.slot() {
            None => Phc(self.0),
            Some(i) => {
                let mut others = OTHERS.lock();
                let s = others.strings[i as usize].clone().unwrap_or_default();
                let mut b = self.0;
                b[1..5].copy_from_slice(&others.put(s).to_le_bytes());
                Phc(b)
            }
        }
    }
}

impl Drop for Phc {
    fn drop(&mut self) {
        if let Some(i) = self.slot() {
            let mut others = OTHERS.lock();
            others.strings[i as usize] = None;
            others.free.push(i);
        }
    }
}

impl PartialEq for Phc {
    fn eq(&self, other: &Self) -> bool {
        match (self.slot(), other.slot()) {
            (None, None) => self.0 == other.0,
            (Some(a), Some(b)) => {
                let others = OTHERS.lock();
                others.strings[a as usize] == others.strings[b as usize]
            }
            _ => false,
        }
    }
}

impl Eq for Phc {}

/// The cost parameter sets in use, by index: only ever appended to (a set
/// is three numbers, and a store holds one set per configuration it has
/// seen). Past 255 sets ([`OTHER`] is not an index), a hash is kept as
/// written.
static PARAMS: LazyLock<RwLock<Vec<[u32; 3]>>> = LazyLock::new(RwLock::default);

/// The index of a parameter set, added if new; `None` once [`OTHER`]
/// sets are in use (the hash is then kept as written).
fn params_index(set: [u32; 3]) -> Option<u8> {
    let find = |sets: &[[u32; 3]]| sets.iter().position(|s| *s == set);
    if let Some(i) = find(&PARAMS.read()) {
        return u8::try_from(i).ok();
    }
    let mut sets = PARAMS.write();
    let i = find(&sets).unwrap_or_else(|| {
        sets.push(set);
        sets.len() - 1
    });
    let index = u8::try_from(i).ok().filter(|&i| i != OTHER);
    if index.is_none() {
        sets.truncate(usize::from(OTHER));
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
        if let Some(i) = self.slot() {
            let s = OTHERS.lock().strings[i as usize]
                .clone()
                .unwrap_or_default();
            return f.write_str(&s);
        }
        let [m, t, p] = PARAMS.read()[usize::from(self.0[0])];
        write!(f, "$argon2id$v=19$m={m},t={t},p={p}$")?;
        f.write_str(&STANDARD_NO_PAD.encode(&self.0[1..17]))?;
        f.write_char('$')?;
        f.write_str(&STANDARD_NO_PAD.encode(&self.0[17..]))
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
        assert!(phc.is_binary(), "{s}");
        assert_eq!(phc.to_string(), s);
    }

    #[test]
    fn a_hash_takes_49_bytes_with_no_alignment() {
        assert_eq!(std::mem::size_of::<Phc>(), 49);
        assert_eq!(std::mem::align_of::<Phc>(), 1);
    }

    #[test]
    fn hashes_kept_as_written_are_compared_cloned_and_freed() {
        let s = "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaA";
        let a = Phc::new(s);
        let b = a.clone();
        assert!(!a.is_binary());
        assert_eq!(a, b);
        assert_ne!(a.slot(), b.slot(), "a clone holds its own string");
        assert_ne!(a, Phc::new("$argon2i$other"));
        drop(a);
        assert_eq!(b.to_string(), s, "dropping one leaves the other");
        // Slots are reused: many hashes made and dropped leave the table
        // no bigger than what is alive at once.
        for i in 0..1000 {
            drop(Phc::new(&format!("$other${i}")));
        }
        assert!(OTHERS.lock().strings.len() < 1000);
    }

    #[test]
    fn hashes_of_different_costs_render_their_own_costs() {
        let a = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        let b = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        let (pa, pb) = (Phc::new(a), Phc::new(b));
        assert!(pa.is_binary() && pb.is_binary());
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
            assert!(!Phc::new(s).is_binary(), "{s}");
            assert_eq!(Phc::new(s).to_string(), s);
        }
        let plus = "$argon2id$v=19$m=+19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        assert_eq!(Phc::new(plus).to_string(), plus);
        assert!(!Phc::new("$argon2id$v=19$m=019456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g").is_binary());
    }
}
