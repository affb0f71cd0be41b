//! DOMAIN ids are host names: [`canonical_host`] gives the one canonical
//! spelling (lower case, IDNA A-labels per UTS 46, no trailing dot, no
//! port, not an IP address); [`domain_lookup_key`] is the id Authorize looks
//! a DOMAIN up under; [`canonical_domain`] checks a request field. Imports
//! only the vocabulary (`error`, `model::limits`).

use std::borrow::Cow;

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

use super::limits;
use crate::error::{Error, Result};

/// Why a DOMAIN id is not a host name. Small and `Copy`: Authorize turns
/// it into a denial without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotHostName {
    /// Nothing (or only the root dot).
    #[error("must not be empty")]
    Empty,
    /// Longer than an id may be, as given or as A-labels.
    #[error(
        "must be at most {} bytes (in IDNA A-label form)",
        limits::RESOURCE_ID_MAX
    )]
    TooLong,
    /// `host:port`: a port is never part of a domain.
    #[error("must be a host name without a port")]
    Port,
    /// An IPv4 or IPv6 address (a top label that is a number, or `[...]`).
    #[error("must be a host name, not an IP address")]
    IpAddress,
    /// Anything else UTS 46 (STD3 rules) or host-name syntax refuses.
    #[error(
        "must be a host name: dot-separated labels of 1..63 letters, digits and hyphens \
         (not first or last), or their Unicode (IDNA) form"
    )]
    Syntax,
}

/// Longest label of a host name, in bytes (RFC 1035).
const LABEL_MAX: usize = 63;

/// Whether a host name's top label reads as a number (`1`, `0x7f`), as an
/// IPv4 address does (WHATWG URL's "ends in a number"; RFC 3696 §2: a top
/// label is never all digits).
fn ends_in_a_number(name: &[u8]) -> bool {
    let top = name.rsplit(|&b| b == b'.').next().unwrap_or_default();
    top.iter().all(u8::is_ascii_digit)
        || top
            .strip_prefix(b"0x")
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
}

/// The shape of a canonical DOMAIN id: 1..=100 bytes of dot-separated
/// labels of 1..=63 `a-z 0-9 -`, no hyphen first or last in a label, no
/// trailing dot, a top label that is not a number. With `a_labels` false,
/// a label starting `xn--` fails too (only UTS 46 can tell a valid A-label).
/// One pass over the bytes: Authorize runs it on every DOMAIN check.
pub(super) fn has_canonical_shape(name: &[u8], a_labels: bool) -> bool {
    if name.is_empty() || name.len() > limits::RESOURCE_ID_MAX {
        return false;
    }
    // Whether the label name[start..end] is whole: 1..=63 bytes, no hyphen
    // last (a hyphen first is refused as it is read), not an `xn--` one
    // unless allowed.
    let label_ok = |start: usize, end: usize| {
        (1..=LABEL_MAX).contains(&(end - start))
            && name[end - 1] != b'-'
            && (a_labels || !name[start..end].starts_with(b"xn--"))
    };
    let mut start = 0;
    for (i, &b) in name.iter().enumerate() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' => {}
            b'-' if i > start => {}
            b'.' if i > start && label_ok(start, i) => start = i + 1,
            _ => return false,
        }
    }
    start < name.len() && label_ok(start, name.len()) && !ends_in_a_number(&name[start..])
}

/// The canonical spelling of a DOMAIN id: lower case, IDNA A-labels per
/// UTS 46 (non-transitional, STD3 rules, hyphens not first or last in a
/// label, DNS lengths), one trailing dot dropped, no port, not an IP
/// address, at most 100 bytes. Every spelling of a domain (`EXAMPLE.com`,
/// `example.com.`, `bücher.example` / `xn--bcher-kva.example`) gives the
/// same answer, and the answer is its own canonical spelling.
///
/// Input that is already canonical (nearly all of Authorize's) is
/// recognised by one pass over its bytes and borrowed back: no UTS 46
/// processing, no allocation.
pub fn canonical_host(id: &str) -> std::result::Result<Cow<'_, str>, NotHostName> {
    if has_canonical_shape(id.as_bytes(), false) {
        return Ok(Cow::Borrowed(id));
    }
    canonical_host_slow(id)
}

/// [`canonical_host`] for input that is not canonical already.
#[cold]
fn canonical_host_slow(id: &str) -> std::result::Result<Cow<'_, str>, NotHostName> {
    if id.is_empty() {
        return Err(NotHostName::Empty);
    }
    // Bounded before any Unicode work.
    if id.len() > limits::RESOURCE_ID_MAX {
        return Err(NotHostName::TooLong);
    }
    if id.starts_with('[') {
        return Err(NotHostName::IpAddress);
    }
    match id.bytes().filter(|&b| b == b':').count() {
        0 => {}
        1 => return Err(NotHostName::Port),
        _ => return Err(NotHostName::IpAddress),
    }
    let mut ascii = Uts46::new()
        .to_ascii(
            id.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::CheckFirstLast,
            DnsLength::VerifyAllowRootDot,
        )
        .map_err(|_| NotHostName::Syntax)?;
    // One trailing (root) dot names the same domain; UTS 46 has already
    // refused two, and mapped `。` and `．` to `.`.
    match &mut ascii {
        Cow::Borrowed(s) => *s = s.strip_suffix('.').unwrap_or(s),
        Cow::Owned(s) => {
            if s.ends_with('.') {
                s.pop();
            }
        }
    }
    if ascii.is_empty() {
        return Err(NotHostName::Empty);
    }
    if ascii.len() > limits::RESOURCE_ID_MAX {
        return Err(NotHostName::TooLong);
    }
    if ends_in_a_number(ascii.as_bytes()) {
        return Err(NotHostName::IpAddress);
    }
    // UTS 46 with these flags yields this shape; checked rather than
    // assumed, since the index relies on it.
    if !has_canonical_shape(ascii.as_bytes(), true) {
        return Err(NotHostName::Syntax);
    }
    Ok(ascii)
}

/// The id Authorize looks a DOMAIN up under: its canonical spelling, or
/// the empty id (under which nothing is registered) when it is not a host
/// name. Input already shaped like a canonical id is used as it is, `xn--`
/// labels included, without UTS 46's validation of those labels (about a
/// microsecond): an invalid A-label is never registered (every stored id
/// passed [`canonical_host`], and a store holding another refuses to
/// start), so it is not found, exactly as the empty id would not be.
pub fn domain_lookup_key(id: &str) -> Cow<'_, str> {
    if has_canonical_shape(id.as_bytes(), true) {
        return Cow::Borrowed(id);
    }
    canonical_host_slow(id).unwrap_or_default()
}

/// [`canonical_host`] for a request field: what is not a host name is
/// INVALID_ARGUMENT naming `field`.
pub fn canonical_domain<'a>(field: &str, id: &'a str) -> Result<Cow<'a, str>> {
    canonical_host(id).map_err(|e| Error::invalid(field, e.to_string()))
}
