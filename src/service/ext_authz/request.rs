//! The part of Envoy's `CheckRequest` a route needs, decoded straight from
//! the wire: `attributes.request.http`'s `method`, `path` and the two
//! credential headers (`authorization`, `api-token`, from `headers` or
//! `header_map`). Every other field (the peers, the rest of the headers,
//! metadata, the body, ...) is skipped unread, never allocated.
//!
//! Field numbers are those of `envoy.service.auth.v3` (clients still send
//! the standard `CheckRequest`). Where a field repeats, the result is
//! prost's: the last string wins, nested messages merge, map entries
//! overwrite, repeated entries append. The kept strings must be UTF-8;
//! skipped ones are not looked at.

use std::ops::Range;

use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
use prost::DecodeError;

/// Why a `CheckRequest` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BadCheck {
    /// A malformed key, varint or skipped field.
    #[error("{0}")]
    Wire(#[from] DecodeError),
    /// A field keyward reads came with another wire type.
    #[error("field {0} has wire type {1:?}, not length-delimited")]
    WireType(u32, WireType),
    /// A length runs past the end of its message.
    #[error("a length-delimited field runs past the end of its message")]
    Truncated,
    /// A string keyward reads is not UTF-8.
    #[error("a string field is not UTF-8")]
    NotUtf8,
}

/// `CheckRequest.attributes`.
const CHECK_ATTRIBUTES: u32 = 1;
/// `AttributeContext.request`.
const ATTRIBUTES_REQUEST: u32 = 4;
/// `AttributeContext.Request.http`.
const REQUEST_HTTP: u32 = 2;
/// `HttpRequest.method`.
const HTTP_METHOD: u32 = 2;
/// `HttpRequest.headers` (a `map<string, string>`: entries with key 1,
/// value 2).
const HTTP_HEADERS: u32 = 3;
/// `HttpRequest.path`.
const HTTP_PATH: u32 = 4;
/// `HttpRequest.header_map` (`HeaderMap { repeated HeaderValue headers = 1 }`).
const HTTP_HEADER_MAP: u32 = 13;
/// `HeaderValue.key`, `.value`, `.raw_value`.
const HEADER_KEY: u32 = 1;
const HEADER_VALUE: u32 = 2;
const HEADER_RAW_VALUE: u32 = 3;

/// The two headers a credential comes in (lower case, as Envoy sends
/// `headers`' keys).
const CREDENTIAL_HEADERS: [&[u8]; 2] = [b"authorization", b"api-token"];

/// One credential header, as [`CheckCall::header`] finds it.
#[derive(Debug, Default, Clone)]
struct Found {
    /// The last `headers` entry with this key.
    map: Option<Range<usize>>,
    /// The first `header_map` entry with this key (any case): its value,
    /// or its raw value when the value is empty; `Some(None)` when that
    /// raw value is not UTF-8.
    list: Option<Option<Range<usize>>>,
}

/// What keyward reads of a `CheckRequest`.
#[derive(Debug, Default, Clone)]
pub struct CheckCall {
    /// The kept strings, back to back (one allocation per call).
    text: String,
    /// `attributes.request.http` was present.
    has_http: bool,
    /// `http.method` in `text`.
    method: Range<usize>,
    /// `http.path` in `text`.
    path: Range<usize>,
    /// The `authorization` and `api-token` headers.
    found: [Found; 2],
}

impl CheckCall {
    /// Decodes the fields keyward needs from an encoded `CheckRequest`.
    pub fn decode(buf: &[u8]) -> Result<CheckCall, BadCheck> {
        let mut call = CheckCall {
            text: String::with_capacity(128),
            ..CheckCall::default()
        };
        fields(buf, |tag, wire, buf| {
            if tag != CHECK_ATTRIBUTES {
                return Ok(false);
            }
            fields(delimited(tag, wire, buf)?, |tag, wire, buf| {
                if tag != ATTRIBUTES_REQUEST {
                    return Ok(false);
                }
                fields(delimited(tag, wire, buf)?, |tag, wire, buf| {
                    if tag != REQUEST_HTTP {
                        return Ok(false);
                    }
                    call.has_http = true;
                    call.http(delimited(tag, wire, buf)?)?;
                    Ok(true)
                })?;
                Ok(true)
            })?;
            Ok(true)
        })?;
        Ok(call)
    }

    /// Reads one `HttpRequest` (of possibly several, merged).
    fn http(&mut self, buf: &[u8]) -> Result<(), BadCheck> {
        fields(buf, |tag, wire, buf| {
            match tag {
                HTTP_METHOD => self.method = self.keep(delimited(tag, wire, buf)?)?,
                HTTP_PATH => self.path = self.keep(delimited(tag, wire, buf)?)?,
                HTTP_HEADERS => self.map_entry(delimited(tag, wire, buf)?)?,
                HTTP_HEADER_MAP => fields(delimited(tag, wire, buf)?, |tag, wire, buf| {
                    if tag != 1 {
                        return Ok(false);
                    }
                    self.list_entry(delimited(tag, wire, buf)?)?;
                    Ok(true)
                })?,
                _ => return Ok(false),
            }
            Ok(true)
        })
    }

    /// One `headers` entry: kept (last wins) when it is a credential's.
    fn map_entry(&mut self, buf: &[u8]) -> Result<(), BadCheck> {
        let (mut key, mut value): (&[u8], &[u8]) = (b"", b"");
        fields(buf, |tag, wire, buf| {
            match tag {
                1 => key = delimited(tag, wire, buf)?,
                2 => value = delimited(tag, wire, buf)?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        if let Some(i) = CREDENTIAL_HEADERS.iter().position(|h| *h == key) {
            self.found[i].map = Some(self.keep(value)?);
        }
        Ok(())
    }

    /// One `header_map` entry: kept when it is the first of a credential's
    /// name (in any case).
    fn list_entry(&mut self, buf: &[u8]) -> Result<(), BadCheck> {
        let (mut key, mut value, mut raw): (&[u8], &[u8], &[u8]) = (b"", b"", b"");
        fields(buf, |tag, wire, buf| {
            match tag {
                HEADER_KEY => key = delimited(tag, wire, buf)?,
                HEADER_VALUE => value = delimited(tag, wire, buf)?,
                HEADER_RAW_VALUE => raw = delimited(tag, wire, buf)?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        let Some(i) = CREDENTIAL_HEADERS
            .iter()
            .position(|h| h.eq_ignore_ascii_case(key))
        else {
            return Ok(());
        };
        if self.found[i].list.is_some() {
            return Ok(());
        }
        let kept = if value.is_empty() {
            // Raw bytes: not a string on the wire, so not an error.
            std::str::from_utf8(raw).ok().map(|s| self.push(s))
        } else {
            Some(self.keep(value)?)
        };
        self.found[i].list = Some(kept);
        Ok(())
    }

    /// Appends a string field's bytes to `text` (they must be UTF-8).
    fn keep(&mut self, bytes: &[u8]) -> Result<Range<usize>, BadCheck> {
        let s = std::str::from_utf8(bytes).map_err(|_| BadCheck::NotUtf8)?;
        Ok(self.push(s))
    }

    /// Appends `s` to `text`.
    fn push(&mut self, s: &str) -> Range<usize> {
        let start = self.text.len();
        self.text.push_str(s);
        start..self.text.len()
    }

    /// Whether the request carried `attributes.request.http`.
    pub fn has_http(&self) -> bool {
        self.has_http
    }

    /// `http.method`.
    pub fn method(&self) -> &str {
        &self.text[self.method.clone()]
    }

    /// `http.path` (with its query string, if any).
    pub fn path(&self) -> &str {
        &self.text[self.path.clone()]
    }

    /// The `authorization` header: from `headers`, else from `header_map`.
    pub fn authorization(&self) -> Option<&str> {
        self.header(0)
    }

    /// The `api-token` header: from `headers`, else from `header_map`.
    pub fn api_token(&self) -> Option<&str> {
        self.header(1)
    }

    fn header(&self, i: usize) -> Option<&str> {
        let f = &self.found[i];
        f.map
            .clone()
            .or_else(|| f.list.clone().flatten())
            .map(|r| &self.text[r])
    }
}

/// Calls `each(tag, wire type, rest)` for every field of the message in
/// `buf`; `each` reads the field's value from `rest` and returns true, or
/// returns false and the field is skipped.
fn fields<'a>(
    mut buf: &'a [u8],
    mut each: impl FnMut(u32, WireType, &mut &'a [u8]) -> Result<bool, BadCheck>,
) -> Result<(), BadCheck> {
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf)?;
        if !each(tag, wire, &mut buf)? {
            skip_field(wire, tag, &mut buf, DecodeContext::default())?;
        }
    }
    Ok(())
}

/// The bytes of a length-delimited field (a string or a message).
fn delimited<'a>(tag: u32, wire: WireType, buf: &mut &'a [u8]) -> Result<&'a [u8], BadCheck> {
    if wire != WireType::LengthDelimited {
        return Err(BadCheck::WireType(tag, wire));
    }
    let len = decode_varint(buf)?;
    let len = usize::try_from(len)
        .ok()
        .filter(|n| *n <= buf.len())
        .ok_or(BadCheck::Truncated)?;
    let (value, rest) = buf.split_at(len);
    *buf = rest;
    Ok(value)
}
