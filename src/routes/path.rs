//! The strict path rules: a request is judged only if it cannot mean
//! something else to the upstream than to keyward. [`normalise`] gives the
//! path as routes see it, or the [`Unsafe`] reason it is refused. Imports
//! nothing above `routes`.

use std::borrow::Cow;
use std::ops::Range;

use super::PATH_MAX;

/// Why a request is not judged: what in it could mean something else to
/// the upstream than to keyward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsafe {
    /// The method is not an upper-case token (`post` is not `POST`).
    Method,
    /// The path does not start with `/`.
    NotAbsolute,
    /// The path is longer than [`PATH_MAX`].
    TooLong,
    /// A `#` (a fragment is never sent; an upstream may cut it or not).
    Fragment,
    /// A `;` (path parameters: Tomcat and Spring read `..;` as `..`).
    Semicolon,
    /// A `\` (some servers read it as `/`).
    Backslash,
    /// Percent-encoding of anything but an unreserved character (`%2F`,
    /// `%25`, ...), or a `%` not followed by two hex digits.
    Encoding,
    /// A `.` or `..` segment (also spelled `%2e`).
    DotSegment,
    /// An empty segment (`//`).
    EmptySegment,
}

impl Unsafe {
    /// A short label, for logs.
    pub fn label(self) -> &'static str {
        match self {
            Unsafe::Method => "method",
            Unsafe::NotAbsolute => "not_absolute",
            Unsafe::TooLong => "too_long",
            Unsafe::Fragment => "fragment",
            Unsafe::Semicolon => "semicolon",
            Unsafe::Backslash => "backslash",
            Unsafe::Encoding => "percent_encoding",
            Unsafe::DotSegment => "dot_segment",
            Unsafe::EmptySegment => "empty_segment",
        }
    }

    /// What the denial says.
    pub fn message(self) -> &'static str {
        match self {
            Unsafe::Method => "the request is not accepted: the method is not an upper-case HTTP token",
            Unsafe::NotAbsolute => "the request path is not accepted: it does not start with /",
            Unsafe::TooLong => "the request path is not accepted: it is too long",
            Unsafe::Fragment => "the request path is not accepted: it has a # fragment",
            Unsafe::Semicolon => "the request path is not accepted: it has a ;",
            Unsafe::Backslash => "the request path is not accepted: it has a backslash",
            Unsafe::Encoding => {
                "the request path is not accepted: percent-encoding of a character that is not unreserved"
            }
            Unsafe::DotSegment => "the request path is not accepted: it has a . or .. segment",
            Unsafe::EmptySegment => "the request path is not accepted: it has an empty segment (//)",
        }
    }
}

/// `path[range]`, borrowed from the request when `path` is.
pub(super) fn part_of<'p>(path: &Cow<'p, str>, range: Range<usize>) -> Cow<'p, str> {
    match path {
        Cow::Borrowed(p) => Cow::Borrowed(&p[range]),
        Cow::Owned(p) => Cow::Owned(p[range].to_string()),
    }
}

/// The request path as routes see it: without the query string, the
/// leading `/` and one trailing `/`, unreserved characters percent-decoded
/// (owned only then); or why it is [`Unsafe`].
pub fn normalise(path: &str) -> Result<Cow<'_, str>, Unsafe> {
    // A fragment is never sent: refused wherever it is, query included.
    if path.contains('#') {
        return Err(Unsafe::Fragment);
    }
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path.len() > PATH_MAX {
        return Err(Unsafe::TooLong);
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(Unsafe::NotAbsolute);
    };
    if path.contains("//") {
        return Err(Unsafe::EmptySegment);
    }
    // One trailing slash: the same route as without it. With `//` refused,
    // no segment is empty now (the root path has none).
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let b = rest.as_bytes();
    let mut encoded = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b';' => return Err(Unsafe::Semicolon),
            b'\\' => return Err(Unsafe::Backslash),
            b'%' => {
                if decode_unreserved(b.get(i + 1..i + 3)).is_none() {
                    return Err(Unsafe::Encoding);
                }
                encoded = true;
                i += 2;
            }
            _ => {}
        }
        i += 1;
    }
    let rest = if encoded {
        let mut out = String::with_capacity(rest.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'%' => {
                    if let Some(c) = decode_unreserved(b.get(i + 1..i + 3)) {
                        out.push(char::from(c));
                    }
                    i += 3;
                }
                _ => {
                    // Copy the run up to the next `%` whole (it may hold
                    // multi-byte characters).
                    let end = b[i..]
                        .iter()
                        .position(|&c| c == b'%')
                        .map_or(b.len(), |n| i + n);
                    out.push_str(&rest[i..end]);
                    i = end;
                }
            }
        }
        Cow::Owned(out)
    } else {
        Cow::Borrowed(rest)
    };
    if !rest.is_empty() && rest.split('/').any(|s| s == "." || s == "..") {
        return Err(Unsafe::DotSegment);
    }
    Ok(rest)
}

/// The character `%XY` encodes, if `hex` is two hex digits encoding an RFC
/// 3986 unreserved character (ALPHA, DIGIT, `-`, `.`, `_`, `~`).
fn decode_unreserved(hex: Option<&[u8]>) -> Option<u8> {
    let hex = hex?;
    let digit = |c: u8| char::from(c).to_digit(16);
    let c = u8::try_from(digit(*hex.first()?)? * 16 + digit(*hex.get(1)?)?).ok()?;
    (c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')).then_some(c)
}
