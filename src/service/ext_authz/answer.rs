//! `CheckResponse`s on the wire. An allow (the hot path) is written
//! straight into tonic's buffer from its parts: no header `String`s, no
//! metadata map, nothing allocated but the expiry's text when the token
//! expires. Denials, rarer and varied, are Envoy's message, encoded by
//! prost; the unchecked pass of `unmatched = "allow"` is encoded once.
//!
//! Field numbers are `envoy.service.auth.v3`'s: a unit test decodes every
//! shape with prost and compares it with the message
//! `envoy_types`' builders make.

use std::sync::{Arc, LazyLock};

use envoy_types::ext_authz::v3::pb::{CheckResponse, HeaderAppendAction};
use envoy_types::ext_authz::v3::{CheckResponseExt, OkHttpResponseBuilder};
use prost::bytes::{BufMut, Bytes};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;
use tonic::Status;

use super::{ACCOUNT_ID_HEADER, EXPIRES_AT_HEADER, REPLACED_BY_HEADER, TOKEN_ID_HEADER};

/// `CheckResponse.status` (`google.rpc.Status`), `.ok_response`,
/// `.dynamic_metadata`.
const RESPONSE_STATUS: u32 = 1;
const RESPONSE_OK: u32 = 3;
const RESPONSE_METADATA: u32 = 4;
/// `OkHttpResponse.headers`, `.headers_to_remove`,
/// `.response_headers_to_add`.
const OK_HEADERS: u32 = 2;
const OK_REMOVE: u32 = 5;
const OK_RESPONSE_HEADERS: u32 = 6;
/// `HeaderValueOption.header`, `.append_action`.
const OPTION_HEADER: u32 = 1;
const OPTION_ACTION: u32 = 3;
/// `Struct.fields` (map entries: key 1, value 2); `Value.number_value`,
/// `.string_value`.
const STRUCT_FIELDS: u32 = 1;
const VALUE_NUMBER: u32 = 2;
const VALUE_STRING: u32 = 3;

/// Every header keyward sets is set with this action.
const OVERWRITE: HeaderAppendAction = HeaderAppendAction::OverwriteIfExistsOrAdd;

/// An answer to `Check`.
#[derive(Debug)]
pub enum Answer {
    /// An allowed request.
    Allow(Allow),
    /// Bytes encoded once (the unchecked pass).
    Encoded(Bytes),
    /// Any other answer, as Envoy's message.
    Message(Box<CheckResponse>),
}

impl From<CheckResponse> for Answer {
    fn from(resp: CheckResponse) -> Self {
        Answer::Message(Box::new(resp))
    }
}

impl Answer {
    /// `unmatched = "allow"`: through unchecked, but never with ids a
    /// client made up.
    pub fn unchecked() -> Answer {
        static UNCHECKED: LazyLock<Bytes> = LazyLock::new(|| {
            let mut http = OkHttpResponseBuilder::new();
            http.remove_header(TOKEN_ID_HEADER)
                .remove_header(ACCOUNT_ID_HEADER)
                .remove_header(EXPIRES_AT_HEADER)
                .remove_header(REPLACED_BY_HEADER);
            let mut resp = CheckResponse::with_status(Status::ok(""));
            resp.set_http_response(http);
            resp.encode_to_vec().into()
        });
        Answer::Encoded(UNCHECKED.clone())
    }

    /// Writes the answer's encoding to `buf`.
    pub fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Answer::Allow(a) => a.encode(buf),
            Answer::Encoded(b) => buf.put_slice(b),
            Answer::Message(m) => m.encode_raw(buf),
        }
    }

    /// The answer as Envoy's message, as a client decodes it.
    pub fn to_message(&self) -> Result<CheckResponse, Status> {
        let mut bytes = Vec::new();
        self.encode(&mut bytes);
        CheckResponse::decode(bytes.as_slice())
            .map_err(|e| Status::internal(format!("an answer keyward cannot read back: {e}")))
    }
}

/// An allow: the ids, and the expiry and successor when there are any, on
/// the upstream request (overwritten, or removed when there is none, so a
/// client cannot supply its own), the credential removed (`strip`), the
/// ids and route as dynamic metadata (`metadata`), and what a limited
/// token has left on the response to the client.
#[derive(Debug, Clone)]
pub struct Allow {
    /// The token's id.
    pub token_id: u64,
    /// The token's account.
    pub account_id: u64,
    /// The token's expiry, RFC 3339, if it expires.
    pub expires_at: Option<String>,
    /// The token that replaced this one by a reset (0 = none).
    pub replaced_by: u64,
    /// What a rate-limited token has left (`ratelimit-remaining`).
    pub remaining: Option<u64>,
    /// Remove the credential headers before the request goes upstream.
    pub strip: bool,
    /// Add the ids and route as dynamic metadata.
    pub metadata: bool,
    /// The route's template (metadata `route`).
    pub route: Arc<str>,
}

/// Length of a field's key (every tag here is below 16).
const KEY: usize = 1;

/// Encoded length of a length-delimited field holding `len` bytes.
fn delimited_len(len: usize) -> usize {
    KEY + encoded_len_varint(len as u64) + len
}

/// Writes the key and length of a length-delimited field.
fn open(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// Writes a string (or bytes) field.
fn string(tag: u32, s: &[u8], buf: &mut impl BufMut) {
    open(tag, s.len(), buf);
    buf.put_slice(s);
}

/// `HeaderValue { key, value }`'s length.
fn header_len(key: &str, value: &[u8]) -> usize {
    delimited_len(key.len()) + delimited_len(value.len())
}

/// `HeaderValueOption { header, append_action: overwrite }`'s length.
fn option_len(key: &str, value: &[u8]) -> usize {
    delimited_len(header_len(key, value)) + KEY + encoded_len_varint(OVERWRITE as u64)
}

/// Writes a `HeaderValueOption` as field `tag`.
fn option(tag: u32, key: &str, value: &[u8], buf: &mut impl BufMut) {
    open(tag, option_len(key, value), buf);
    open(OPTION_HEADER, header_len(key, value), buf);
    string(1, key.as_bytes(), buf);
    string(2, value, buf);
    encode_key(OPTION_ACTION, WireType::Varint, buf);
    encode_varint(OVERWRITE as u64, buf);
}

/// A `Struct.fields` entry's `Value` length: a number or a string.
fn value_len(v: &Meta<'_>) -> usize {
    match v {
        Meta::Number(_) => KEY + 8,
        Meta::Text(s) => delimited_len(s.len()),
    }
}

/// A metadata value.
enum Meta<'a> {
    Number(u64),
    Text(&'a str),
}

/// A `Struct.fields` entry's length.
fn entry_len(key: &str, v: &Meta<'_>) -> usize {
    delimited_len(key.len()) + delimited_len(value_len(v))
}

/// Writes a `Struct.fields` entry.
fn entry(key: &str, v: &Meta<'_>, buf: &mut impl BufMut) {
    open(STRUCT_FIELDS, entry_len(key, v), buf);
    string(1, key.as_bytes(), buf);
    open(2, value_len(v), buf);
    match v {
        Meta::Number(n) => {
            encode_key(VALUE_NUMBER, WireType::SixtyFourBit, buf);
            buf.put_f64_le(*n as f64);
        }
        Meta::Text(s) => string(VALUE_STRING, s.as_bytes(), buf),
    }
}

impl Allow {
    /// Writes the allow's `CheckResponse`.
    fn encode(&self, buf: &mut impl BufMut) {
        let mut token = itoa::Buffer::new();
        let token = token.format(self.token_id).as_bytes();
        let mut account = itoa::Buffer::new();
        let account = account.format(self.account_id).as_bytes();
        let mut successor = itoa::Buffer::new();
        let successor =
            (self.replaced_by != 0).then(|| successor.format(self.replaced_by).as_bytes());
        let mut left = itoa::Buffer::new();
        let left = self.remaining.map(|n| left.format(n).as_bytes());
        let expires = self.expires_at.as_deref().map(str::as_bytes);

        // Headers set, removed, and on the response, in that order.
        let set: [Option<(&str, &[u8])>; 4] = [
            Some((TOKEN_ID_HEADER, token)),
            Some((ACCOUNT_ID_HEADER, account)),
            expires.map(|e| (EXPIRES_AT_HEADER, e)),
            successor.map(|s| (REPLACED_BY_HEADER, s)),
        ];
        let removed: [Option<&str>; 4] = [
            expires.is_none().then_some(EXPIRES_AT_HEADER),
            successor.is_none().then_some(REPLACED_BY_HEADER),
            self.strip.then_some("authorization"),
            self.strip.then_some("api-token"),
        ];
        let response = left.map(|l| ("ratelimit-remaining", l));
        let ok_len = set
            .iter()
            .flatten()
            .map(|(k, v)| delimited_len(option_len(k, v)))
            .sum::<usize>()
            + removed
                .iter()
                .flatten()
                .map(|k| delimited_len(k.len()))
                .sum::<usize>()
            + response.map_or(0, |(k, v)| delimited_len(option_len(k, v)));

        // status: google.rpc.Status OK (every field at its default).
        open(RESPONSE_STATUS, 0, buf);
        open(RESPONSE_OK, ok_len, buf);
        for (k, v) in set.iter().flatten() {
            option(OK_HEADERS, k, v, buf);
        }
        for k in removed.iter().flatten() {
            string(OK_REMOVE, k.as_bytes(), buf);
        }
        if let Some((k, v)) = response {
            option(OK_RESPONSE_HEADERS, k, v, buf);
        }
        if self.metadata {
            let meta = [
                ("token_id", Meta::Number(self.token_id)),
                ("account_id", Meta::Number(self.account_id)),
                ("route", Meta::Text(&self.route)),
            ];
            let meta_len = meta
                .iter()
                .map(|(k, v)| delimited_len(entry_len(k, v)))
                .sum::<usize>();
            open(RESPONSE_METADATA, meta_len, buf);
            for (k, v) in &meta {
                entry(k, v, buf);
            }
        }
    }
}
