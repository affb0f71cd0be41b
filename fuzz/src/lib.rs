//! What each fuzz target checks, shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`, nightly) and their stable mirror
//! `tests/fuzz_inputs.rs` (which includes this file with `#[path]`, so that
//! `cargo test` replays the corpus and proptest's inputs through exactly the
//! same checks). It therefore uses only crates both have: keyward, prost,
//! prost-types, tonic, tokio and crc32fast.
//!
//! Every check takes arbitrary bytes, must not panic, and asserts that what
//! keyward accepts is sane:
//!
//! - [`token_input`]: the token parser (and the credential header it is read
//!   from) against a separate reference implementation of the format.
//! - [`grpc_request`]: prost `decode` of every `keyward.v1` request message
//!   (the first byte picks which), a decode/encode round trip, then the
//!   validation the service applies to it, each compared with a reference
//!   rule; invalid input is always `INVALID_ARGUMENT`, never `INTERNAL`.
//! - [`authorize`]: an `AuthorizeRequest` through the real in-memory hot
//!   path (`Engine::authorize_cached`) of a small world, each decision
//!   compared with a reference decision for that world.
//! - [`store_records`]: a sequence of store records (what `Store::load`
//!   yields) decoded and applied to an `Index`, `TokenState` record round
//!   trips, and decisions over whatever the records built.
//! - [`routes_file`]: the ext_authz routes file parser and its matcher.
//! - [`ext_authz_check`]: an Envoy `CheckRequest` through the real
//!   ext_authz service of the same world, checked against the reference.
//! - [`rest_time`]: the JSON facades' RFC 3339 parser and formatters.

use std::sync::{Arc, OnceLock};

use keyward::admin::{check_expiry, page_bounds};
use keyward::authz::{self, Check};
use keyward::clock::ManualClock;
use keyward::engine::{Cached, Engine, Settings};
use keyward::error::Error;
use keyward::index::{Change, Index, TokenState};
use keyward::model::{self, limits, Kind, Level, ResourceKey, SCOPE_NAMES};
use keyward::pb::store as rec;
use keyward::pb::v1 as pb;
use keyward::routes::{Match, Unmatched};
use keyward::service::authorizer::check_of;
use keyward::service::ext_authz::{ExtAuthzService, SharedRoutes};
use keyward::store::{BoxFuture, Store, StoreError};
use keyward::token::{self, DigestKey, PREFIX, TOKEN_LEN};
use pb::DenyReason;
use prost::Message;
use tonic::Code;

// ------------------------------------------------------------------ token

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

// -------------------------------------------------------- gRPC requests

/// The request messages of `keyward.v1`, in the order the first byte of a
/// [`grpc_request`] input picks them.
pub const REQUESTS: [&str; 18] = [
    "CreateAccountRequest",
    "GetAccountRequest",
    "ListAccountsRequest",
    "RegisterResourceRequest",
    "DeleteResourceRequest",
    "ListResourcesRequest",
    "CreateTokenRequest",
    "GetTokenRequest",
    "ListTokensRequest",
    "UpdateTokenRequest",
    "ResetTokenRequest",
    "PauseTokenRequest",
    "ResumeTokenRequest",
    "DeleteTokenRequest",
    "AuthorizeRequest",
    "AuthorizeBatchRequest",
    "ListAuditEventsRequest",
    // The health check request tonic-health decodes on the same port.
    "HealthCheckRequest",
];

/// "Now" for the expiry rules (2023-11-14).
pub const NOW_MS: i64 = 1_700_000_000_000;

/// Decodes `body` as `M` the way tonic's prost codec does, and checks that
/// encoding the result and decoding it again gives the same message.
pub fn decode_round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(
    body: &[u8],
) -> Option<M> {
    let m = M::decode(body).ok()?;
    let bytes = m.encode_to_vec();
    assert_eq!(bytes.len(), m.encoded_len());
    let again = M::decode(bytes.as_slice()).expect("a re-encoded message decodes");
    assert_eq!(again, m, "decode(encode(m)) != m");
    Some(m)
}

/// Invalid input is INVALID_ARGUMENT on the wire, naming a field under
/// `prefix`, and never INTERNAL.
fn assert_invalid(err: Error, prefix: &str) {
    match &err {
        Error::InvalidArgument(fields) => {
            assert!(!fields.is_empty());
            for (field, why) in fields {
                assert!(
                    field.starts_with(prefix),
                    "field {field:?} is not under {prefix:?}"
                );
                assert!(!why.is_empty());
            }
        }
        other => panic!("bad input gave {other:?}, not INVALID_ARGUMENT"),
    }
    assert_eq!(tonic::Status::from(err).code(), Code::InvalidArgument);
}

/// `Ok(v)` must match `expected`; `Err` must be INVALID_ARGUMENT.
fn agree<T>(result: Result<T, Error>, expected: bool, prefix: &str, what: &str) -> Option<T> {
    match result {
        Ok(v) => {
            assert!(expected, "{what}: accepted, the reference rule refuses it");
            Some(v)
        }
        Err(e) => {
            assert!(
                !expected,
                "{what}: refused ({e}), the reference rule accepts it"
            );
            assert_invalid(e, prefix);
            None
        }
    }
}

fn reference_name_ok(name: &str) -> bool {
    !name.trim().is_empty() && name.chars().count() <= 100 && !name.chars().any(char::is_control)
}

fn check_name(name: &str) {
    agree(
        model::validate_name("name", name),
        reference_name_ok(name),
        "name",
        "validate_name",
    );
}

fn reference_id_ok(id: &str) -> bool {
    (1..=100).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~:@-".contains(&b))
}

/// What the README's rule makes of a DOMAIN id, written from the rule
/// rather than from `model.rs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefDomain {
    /// A host name; its canonical spelling.
    Canonical(String),
    /// Not a host name.
    NotHost,
    /// Only UTS 46's tables can tell (non-ASCII input, an `xn--` label):
    /// [`check_domain`] checks keyward's answer by its properties instead.
    Unknown,
}

/// The reference canonical form of a DOMAIN id: at most 100 bytes, no
/// port, lower case, one trailing dot dropped, dot-separated labels of
/// 1..=63 letters, digits and hyphens (no hyphen first or last), a top
/// label that is not a number (`1`, `0x7f`: an IPv4 address).
pub fn reference_domain(id: &str) -> RefDomain {
    if id.is_empty() || id.len() > 100 || id.contains(':') {
        return RefDomain::NotHost;
    }
    if !id.is_ascii() {
        return RefDomain::Unknown;
    }
    let lower = id.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    let labels: Vec<&str> = name.split('.').collect();
    let ldh = |l: &&str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !labels.iter().all(ldh) {
        return RefDomain::NotHost;
    }
    if labels.iter().any(|l| l.starts_with("xn--")) {
        return RefDomain::Unknown;
    }
    let top = labels.last().copied().unwrap_or_default();
    let hex = top
        .strip_prefix("0x")
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    if top.bytes().all(|b| b.is_ascii_digit()) || hex {
        return RefDomain::NotHost;
    }
    RefDomain::Canonical(name.to_string())
}

/// `model::canonical_host` against [`reference_domain`]; where the
/// reference cannot tell, keyward's answer must be a lower-case ASCII host
/// name with no trailing dot that is its own canonical spelling. Returns
/// the canonical spelling keyward uses, if any.
pub fn check_domain(id: &str) -> Option<String> {
    let got = model::canonical_host(id).ok().map(|c| c.into_owned());
    match reference_domain(id) {
        RefDomain::Canonical(c) => {
            assert_eq!(got.as_deref(), Some(c.as_str()), "canonical_host({id:?})");
        }
        RefDomain::NotHost => {
            assert_eq!(got, None, "canonical_host({id:?}) takes a non-host name");
        }
        RefDomain::Unknown => {
            if let Some(c) = &got {
                assert_ne!(reference_domain(c), RefDomain::NotHost, "{id:?} -> {c:?}");
                assert!(c.is_ascii() && *c == c.to_ascii_lowercase() && !c.ends_with('.'));
                assert_eq!(
                    model::canonical_host(c).as_deref(),
                    Ok(c.as_str()),
                    "canonical_host is not idempotent on {id:?}"
                );
            }
        }
    }
    got
}

/// The (type, id) keyward must keep for a wire resource by the reference
/// rules (a DOMAIN id in its canonical spelling); `None`: refused.
fn reference_resource(r: Option<&pb::ResourceRef>) -> Option<(i32, String)> {
    let r = r?;
    let id = match r.r#type {
        4 => check_domain(&r.id)?,
        1..=3 if reference_id_ok(&r.id) => r.id.clone(),
        _ => return None,
    };
    Some((r.r#type, id))
}

fn check_resource(field: &str, r: Option<&pb::ResourceRef>) -> Option<ResourceKey> {
    let want = reference_resource(r);
    let key = agree(
        model::resource_from_wire(field, r),
        want.is_some(),
        field,
        "resource_from_wire",
    )?;
    let (r#type, id) = want.expect("accepted, so the reference accepts it");
    assert_eq!(
        key.to_wire(),
        pb::ResourceRef { r#type, id },
        "resource round trip"
    );
    Some(key)
}

fn check_grants(grants: &[pb::Grant]) {
    let wanted: Vec<Option<(i32, String)>> = grants
        .iter()
        .map(|g| reference_resource(g.resource.as_ref()))
        .collect();
    let each_ok = grants
        .iter()
        .zip(&wanted)
        .all(|(g, w)| w.is_some() && matches!(g.level, 10 | 100));
    // Two spellings of one domain are the same resource.
    let distinct = wanted
        .iter()
        .enumerate()
        .all(|(i, w)| !wanted[..i].contains(w));
    let expected = (1..=100).contains(&grants.len()) && each_ok && distinct;
    if let Some(out) = agree(
        model::grants_from_wire("grants", grants),
        expected,
        "grants",
        "grants_from_wire",
    ) {
        let wire: Vec<pb::Grant> = out.iter().map(model::Grant::to_wire).collect();
        let want: Vec<pb::Grant> = grants
            .iter()
            .zip(wanted)
            .map(|(g, w)| {
                let (r#type, id) = w.expect("accepted");
                pb::Grant {
                    resource: Some(pb::ResourceRef { r#type, id }),
                    level: g.level,
                }
            })
            .collect();
        assert_eq!(wire, want, "grants round trip (domain ids canonical)");
    }
}

fn check_scopes(scopes: &[pb::Scope]) {
    let each_ok = scopes
        .iter()
        .all(|s| SCOPE_NAMES.contains(&s.name.as_str()) && matches!(s.level, 10 | 100));
    let distinct = scopes
        .iter()
        .enumerate()
        .all(|(i, s)| scopes[..i].iter().all(|o| o.name != s.name));
    let expected = scopes.len() <= SCOPE_NAMES.len() && each_ok && distinct;
    if let Some(out) = agree(
        model::scopes_from_wire("scopes", scopes),
        expected,
        "scopes",
        "scopes_from_wire",
    ) {
        let wire: Vec<pb::Scope> = out.iter().map(model::ScopeGrant::to_wire).collect();
        assert_eq!(wire, scopes, "scopes round trip");
    }
}

fn check_expires_at(t: Option<&prost_types::Timestamp>) {
    let expected_ms = t.map(|t| {
        if !(0..1_000_000_000).contains(&t.nanos) {
            return None;
        }
        let ms = i128::from(t.seconds) * 1000 + i128::from(t.nanos / 1_000_000);
        let now = i128::from(NOW_MS);
        (i64::try_from(ms).is_ok() && ms > now && ms - now <= i128::from(limits::EXPIRY_MAX_MS))
            .then_some(ms as i64)
    });
    let result = check_expiry("expires_at", t, NOW_MS);
    match expected_ms {
        None => assert_eq!(result, Ok(None), "no expiry"),
        Some(expected) => {
            let got = agree(result, expected.is_some(), "expires_at", "check_expiry");
            if let Some(got) = got {
                assert_eq!(got, expected, "expiry in ms");
            }
        }
    }
}

fn check_page(page_size: u32, page_token: &str) {
    let expected_after = if page_token.is_empty() {
        Some(0)
    } else {
        page_token.parse::<u64>().ok()
    };
    let expected = page_size <= 1000 && expected_after.is_some();
    if let Some((size, after)) = agree(
        page_bounds(page_size, page_token),
        expected,
        "page_",
        "page_bounds",
    ) {
        let want = if page_size == 0 { 100 } else { page_size };
        assert_eq!(size, want as usize);
        assert_eq!(Some(after), expected_after);
    }
}

fn check_authorize(field: &str, req: &pb::AuthorizeRequest) {
    let expected = req
        .resource
        .as_ref()
        .is_some_and(|r| (1..=4).contains(&r.r#type) && (1..=100).contains(&r.id.len()))
        && matches!(req.level, 10 | 100)
        && req.scope.len() <= 64;
    if let Some(check) = agree(check_of(field, req), expected, field, "check_of") {
        let r = req.resource.as_ref().expect("accepted, so present");
        assert_eq!(check.kind.to_wire(), r.r#type);
        assert_eq!(check.id, r.id);
        assert_eq!(check.level.to_wire(), req.level);
        assert_eq!(check.scope, req.scope);
    }
    if req.token.len() <= limits::TOKEN_MAX {
        check_token_str(&req.token);
    }
}

/// One `keyward.v1` request: the first byte picks the message (see
/// [`REQUESTS`]), the rest is its encoding.
pub fn grpc_request(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    match usize::from(pick) % REQUESTS.len() {
        0 => {
            if let Some(r) = decode_round_trip::<pb::CreateAccountRequest>(body) {
                check_name(&r.name);
            }
        }
        1 => {
            decode_round_trip::<pb::GetAccountRequest>(body);
        }
        2 => {
            if let Some(r) = decode_round_trip::<pb::ListAccountsRequest>(body) {
                check_page(r.page_size, &r.page_token);
            }
        }
        3 => {
            if let Some(r) = decode_round_trip::<pb::RegisterResourceRequest>(body) {
                check_resource("resource", r.resource.as_ref());
                if r.parent.is_some() {
                    check_resource("parent", r.parent.as_ref());
                }
            }
        }
        4 => {
            if let Some(r) = decode_round_trip::<pb::DeleteResourceRequest>(body) {
                check_resource("resource", r.resource.as_ref());
            }
        }
        5 => {
            decode_round_trip::<pb::ListResourcesRequest>(body);
        }
        6 => {
            if let Some(r) = decode_round_trip::<pb::CreateTokenRequest>(body) {
                // The order `Engine::create_token` validates in.
                check_name(&r.name);
                check_grants(&r.grants);
                check_scopes(&r.scopes);
                check_expires_at(r.expires_at.as_ref());
            }
        }
        7 => {
            decode_round_trip::<pb::GetTokenRequest>(body);
        }
        8 => {
            if let Some(r) = decode_round_trip::<pb::ListTokensRequest>(body) {
                check_page(r.page_size, &r.page_token);
            }
        }
        9 => {
            if let Some(r) = decode_round_trip::<pb::UpdateTokenRequest>(body) {
                // What `Engine::update_token` validates for each mask path.
                for path in r.update_mask.iter().flat_map(|m| &m.paths) {
                    match path.as_str() {
                        "name" => check_name(&r.name),
                        "grants" => check_grants(&r.grants),
                        "scopes" => check_scopes(&r.scopes),
                        _ => {}
                    }
                }
            }
        }
        10 => {
            if let Some(r) = decode_round_trip::<pb::ResetTokenRequest>(body) {
                check_expires_at(r.expires_at.as_ref());
            }
        }
        11 => {
            decode_round_trip::<pb::PauseTokenRequest>(body);
        }
        12 => {
            decode_round_trip::<pb::ResumeTokenRequest>(body);
        }
        13 => {
            decode_round_trip::<pb::DeleteTokenRequest>(body);
        }
        14 => {
            if let Some(r) = decode_round_trip::<pb::AuthorizeRequest>(body) {
                check_authorize("", &r);
            }
        }
        15 => {
            if let Some(r) = decode_round_trip::<pb::AuthorizeBatchRequest>(body) {
                for (i, c) in r.checks.iter().enumerate().take(limits::BATCH_MAX) {
                    check_authorize(&format!("checks[{i}]"), c);
                }
            }
        }
        16 => {
            if let Some(r) = decode_round_trip::<pb::ListAuditEventsRequest>(body) {
                check_page(r.page_size, &r.page_token);
            }
        }
        _ => {
            decode_round_trip::<tonic_health_check::HealthCheckRequest>(body);
        }
    }
}

/// `grpc.health.v1.HealthCheckRequest`, declared here (it is one string
/// field) so that neither crate needs tonic-health as a dependency.
pub mod tonic_health_check {
    /// `message HealthCheckRequest { string service = 1; }`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HealthCheckRequest {
        /// The service asked about.
        #[prost(string, tag = "1")]
        pub service: String,
    }
}

/// Encodes `msg` as a [`grpc_request`] input for the message at `pick`.
pub fn request_input(pick: u8, msg: &impl Message) -> Vec<u8> {
    let mut out = vec![pick];
    out.extend(msg.encode_to_vec());
    out
}

// -------------------------------------------------------------- authorize

/// Keeps nothing: the world of [`authorize`] lives in the index only.
struct NoStore;

/// A write that keeps nothing.
struct NoTxn;

impl keyward::store::WriteTxn for NoTxn {
    fn commit<'a>(
        self: Box<Self>,
        _changes: &'a [Change],
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async { Ok(0) })
    }
}

impl Store for NoStore {
    fn load(
        &self,
        key: keyward::token::DigestKey,
    ) -> BoxFuture<'_, Result<keyward::store::Loaded, StoreError>> {
        Box::pin(async move {
            Ok(keyward::store::Loaded {
                index: keyward::index::Index::new(key),
                revision: 0,
            })
        })
    }
    fn begin(&self, _applied: u64) -> BoxFuture<'_, Result<keyward::store::Begun, StoreError>> {
        Box::pin(async {
            let txn: Box<dyn keyward::store::WriteTxn> = Box::new(NoTxn);
            Ok((txn, Vec::new()))
        })
    }
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    fn append_audit<'a>(
        &'a self,
        _e: &'a rec::AuditRecord,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    fn list_audit(
        &self,
        _a: u64,
        _after: u64,
        _l: usize,
    ) -> BoxFuture<'_, Result<Vec<rec::AuditRecord>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn last_audit_id(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async { Ok(0) })
    }
}

/// What the reference knows of one token of the world.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// The token string.
    pub secret: String,
    /// Its account (0 for root).
    pub account: u64,
    /// (kind, id, level) of each grant.
    pub grants: Vec<(Kind, String, Level)>,
    /// (scope, level); empty = unrestricted.
    pub scopes: Vec<(&'static str, Level)>,
    /// Paused.
    pub paused: bool,
    /// Past its expiry.
    pub expired: bool,
}

/// A small world built through the real admin path, and what the reference
/// needs to decide in it.
pub struct World {
    /// Runs the async surfaces (ext_authz Check) of the world.
    pub rt: tokio::runtime::Runtime,
    /// The engine (no store behind it).
    pub engine: Arc<Engine>,
    /// The Envoy ext_authz service over the engine, with [`WORLD_ROUTES`].
    pub ext_authz: ExtAuthzService,
    /// Every token, by position; `@<n>` in a token field names the n-th.
    pub tokens: Vec<TokenSpec>,
    /// (account, kind, id, parent project) of every registered resource.
    pub resources: Vec<(u64, Kind, String, Option<String>)>,
    /// Account ids.
    pub accounts: Vec<u64>,
}

fn ok<T>(r: Result<T, Error>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("building the world: {what}: {e}"))
}

fn build_world() -> World {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let clock = Arc::new(ManualClock::new());
    let settings = Settings {
        verify_concurrency: 1,
        ..Settings::default()
    };
    let engine = Engine::new(
        Arc::new(NoStore),
        DigestKey::from_bytes([7; 32]),
        clock.clone(),
        settings,
    );
    let world = rt.block_on(async {
        let root = ok(
            engine
                .load(true)
                .await
                .map_err(|e| Error::Internal(e.to_string())),
            "load",
        )
        .expect("a new store makes a root token");
        let root = root.expose().to_string();
        let root_id = ok(engine.authenticate_caller(Some(&root)).await, "root");
        let mut tokens = Vec::new();
        let mut resources = Vec::new();
        let mut accounts = Vec::new();
        let grant = |kind: pb::ResourceType, id: &str, level: pb::AccessLevel| pb::Grant {
            resource: Some(pb::ResourceRef {
                r#type: kind as i32,
                id: id.into(),
            }),
            level: level as i32,
        };
        for (name, project, domain) in [("acme", "p1", "example.com"), ("other", "p2", "other.com")]
        {
            let created = ok(
                engine
                    .create_account(root_id, pb::CreateAccountRequest { name: name.into() })
                    .await,
                "account",
            );
            let account = created.account.expect("account").id;
            accounts.push(account);
            let admin = created.admin_token.expect("admin token").secret;
            let admin_id = ok(engine.authenticate_caller(Some(&admin)).await, "admin");
            resources.push((account, Kind::Account, account.to_string(), None));
            tokens.push(TokenSpec {
                secret: admin.clone(),
                account,
                grants: vec![(Kind::Account, account.to_string(), Level::Admin)],
                scopes: vec![],
                paused: false,
                expired: false,
            });
            let register = |kind: pb::ResourceType, id: &str, parent: Option<&str>| {
                engine.register_resource(
                    admin_id,
                    pb::RegisterResourceRequest {
                        account_id: account,
                        resource: Some(pb::ResourceRef {
                            r#type: kind as i32,
                            id: id.into(),
                        }),
                        parent: parent.map(|p| pb::ResourceRef {
                            r#type: pb::ResourceType::Project as i32,
                            id: p.into(),
                        }),
                    },
                )
            };
            ok(
                register(pb::ResourceType::Project, project, None).await,
                "project",
            );
            resources.push((account, Kind::Project, project.into(), None));
            let sandbox = format!("{project}-sandbox");
            ok(
                register(pb::ResourceType::Sandbox, &sandbox, Some(project)).await,
                "sandbox",
            );
            resources.push((account, Kind::Sandbox, sandbox, Some(project.to_string())));
            let domain_token = ok(
                register(pb::ResourceType::Domain, domain, None).await,
                "domain",
            )
            .domain_token
            .expect("a domain comes with a token");
            resources.push((account, Kind::Domain, domain.into(), None));
            tokens.push(TokenSpec {
                secret: domain_token.secret,
                account,
                grants: vec![(Kind::Domain, domain.into(), Level::Admin)],
                scopes: vec![],
                paused: false,
                expired: false,
            });
            if name != "acme" {
                continue;
            }
            // A viewer on the project, a scope-restricted sender, a paused
            // admin and an admin that expires.
            let create = |name: &str,
                          grants: Vec<pb::Grant>,
                          scopes: Vec<pb::Scope>,
                          expires: Option<i64>| {
                engine.create_token(
                    admin_id,
                    pb::CreateTokenRequest {
                        account_id: account,
                        name: name.into(),
                        grants,
                        scopes,
                        expires_at: expires.map(keyward::admin::ts),
                    },
                )
            };
            let viewer = ok(
                create(
                    "viewer",
                    vec![grant(
                        pb::ResourceType::Project,
                        project,
                        pb::AccessLevel::Viewer,
                    )],
                    vec![],
                    None,
                )
                .await,
                "viewer",
            );
            tokens.push(TokenSpec {
                secret: viewer.secret,
                account,
                grants: vec![(Kind::Project, project.into(), Level::Viewer)],
                scopes: vec![],
                paused: false,
                expired: false,
            });
            let scoped = ok(
                create(
                    "scoped",
                    vec![
                        grant(pb::ResourceType::Domain, domain, pb::AccessLevel::Admin),
                        grant(pb::ResourceType::Project, project, pb::AccessLevel::Admin),
                    ],
                    vec![
                        pb::Scope {
                            name: "email".into(),
                            level: Level::Admin.to_wire(),
                        },
                        pb::Scope {
                            name: "domains".into(),
                            level: Level::Viewer.to_wire(),
                        },
                    ],
                    None,
                )
                .await,
                "scoped",
            );
            tokens.push(TokenSpec {
                secret: scoped.secret,
                account,
                grants: vec![
                    (Kind::Domain, domain.into(), Level::Admin),
                    (Kind::Project, project.into(), Level::Admin),
                ],
                scopes: vec![("email", Level::Admin), ("domains", Level::Viewer)],
                paused: false,
                expired: false,
            });
            let account_admin = || {
                vec![grant(
                    pb::ResourceType::Account,
                    &account.to_string(),
                    pb::AccessLevel::Admin,
                )]
            };
            let paused = ok(
                create("paused", account_admin(), vec![], None).await,
                "paused",
            );
            let paused_id = paused.token.as_ref().expect("token").id;
            ok(
                engine.set_paused(admin_id, account, paused_id, true).await,
                "pause",
            );
            tokens.push(TokenSpec {
                secret: paused.secret,
                account,
                grants: vec![(Kind::Account, account.to_string(), Level::Admin)],
                scopes: vec![],
                paused: true,
                expired: false,
            });
            let hour = 3_600_000;
            let expiring = ok(
                create(
                    "expiring",
                    account_admin(),
                    vec![],
                    Some(engine.now_ms() + hour),
                )
                .await,
                "expiring",
            );
            tokens.push(TokenSpec {
                secret: expiring.secret,
                account,
                grants: vec![(Kind::Account, account.to_string(), Level::Admin)],
                scopes: vec![],
                paused: false,
                expired: true,
            });
        }
        tokens.push(TokenSpec {
            secret: root,
            account: 0,
            grants: vec![],
            scopes: vec![],
            paused: false,
            expired: false,
        });
        (tokens, resources, accounts)
    });
    let (tokens, resources, accounts) = world;
    let routes =
        keyward::routes::parse("world.toml", WORLD_ROUTES).expect("the world's routes parse");
    let world = World {
        rt,
        ext_authz: ExtAuthzService {
            engine: engine.clone(),
            routes: Arc::new(SharedRoutes::new(routes)),
        },
        engine,
        tokens,
        resources,
        accounts,
    };
    // Two hours later: the expiring token has expired. The clock does not
    // move again, so decisions are repeatable.
    clock.advance_ms(2 * 3_600_000);
    world
}

/// The world of [`authorize`], built once per process.
pub fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(build_world)
}

/// The reference decision for an authentic token of the world, written
/// from the rules in the README rather than from `authz.rs`.
pub fn reference_decision(w: &World, t: &TokenSpec, check: &Check<'_>) -> Result<(), DenyReason> {
    // Any spelling of a domain names the same domain; what is not a host
    // name names nothing registered.
    let canonical;
    let domain_check;
    let check = if check.kind == Kind::Domain {
        canonical = check_domain(check.id).unwrap_or_default();
        domain_check = Check {
            id: &canonical,
            ..*check
        };
        &domain_check
    } else {
        check
    };
    if t.paused {
        return Err(DenyReason::Paused);
    }
    if t.expired {
        return Err(DenyReason::Expired);
    }
    if t.account == 0 {
        return Err(DenyReason::NoGrant);
    }
    // The chain from the resource up to the account, if it is the token's.
    let own = |kind: Kind, id: &str| {
        w.resources
            .iter()
            .find(|(a, k, i, _)| *a == t.account && *k == kind && i == id)
    };
    let chain: Vec<(Kind, String)> = match own(check.kind, check.id) {
        Some((_, kind, id, parent)) => {
            let mut c = vec![(*kind, id.clone())];
            if let Some(p) = parent {
                c.push((Kind::Project, p.clone()));
            }
            c.push((Kind::Account, t.account.to_string()));
            c
        }
        None => {
            // An ACCOUNT id names an account by its number.
            let elsewhere = if check.kind == Kind::Account {
                check
                    .id
                    .parse::<u64>()
                    .is_ok_and(|n| w.accounts.contains(&n))
            } else {
                w.resources
                    .iter()
                    .any(|(_, k, i, _)| *k == check.kind && i == check.id)
            };
            return Err(if elsewhere {
                DenyReason::WrongAccount
            } else {
                DenyReason::UnknownResource
            });
        }
    };
    let held = t
        .grants
        .iter()
        .filter(|(k, i, _)| chain.iter().any(|(ck, ci)| ck == k && ci == i))
        .map(|g| g.2)
        .max();
    if held.is_none_or(|h| h < check.level) {
        return Err(DenyReason::NoGrant);
    }
    if !t.scopes.is_empty()
        && !t
            .scopes
            .iter()
            .any(|(name, level)| *name == check.scope && *level >= check.level)
    {
        return Err(DenyReason::Scope);
    }
    Ok(())
}

/// An `AuthorizeRequest` through the real in-memory hot path of [`world`].
/// A token field `@<n>` is replaced by the world's n-th real token (a fuzzer
/// cannot forge a secret); decisions on real tokens are compared with
/// [`reference_decision`], and anything else must be denied.
pub fn authorize(data: &[u8]) {
    let Ok(mut req) = pb::AuthorizeRequest::decode(data) else {
        return;
    };
    let w = world();
    let spec = req
        .token
        .strip_prefix('@')
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| w.tokens.get(n));
    if let Some(spec) = spec {
        req.token.clone_from(&spec.secret);
    }
    let Ok(check) = check_of("", &req) else {
        return;
    };
    let decision = match w.engine.authorize_cached(&req.token, &check) {
        Cached::Decided(d) => d,
        Cached::NeedsArgon2 { .. } => {
            panic!("every token of the world has a verified digest: no argon2")
        }
    };
    let result = if decision.allowed {
        Ok(())
    } else {
        Err(decision.reason)
    };
    let known = w.tokens.iter().find(|t| t.secret == req.token);
    match known {
        Some(t) => {
            let parsed = token::parse(&t.secret).expect("a real token parses");
            assert_eq!(decision.token_id, parsed.id);
            assert_eq!(decision.account_id, t.account);
            assert_eq!(
                result,
                reference_decision(w, t, &check),
                "decision for token #{} on {:?}",
                w.tokens
                    .iter()
                    .position(|o| o.secret == t.secret)
                    .unwrap_or(0),
                check
            );
        }
        None => {
            let well_formed =
                req.token.len() <= limits::TOKEN_MAX && token::parse(&req.token).is_some();
            let want = if well_formed {
                DenyReason::UnknownToken
            } else {
                DenyReason::Malformed
            };
            assert_eq!(result, Err(want), "a token the world does not hold");
            assert_eq!(decision.account_id, 0);
        }
    }
}

// ---------------------------------------------------------- store records

/// Token ids above this are not applied to the index in [`store_records`]:
/// the index keeps tokens in a table indexed by id, 8 bytes per id up to the
/// largest (ids are issued densely from 1), so one record with an id near
/// 2^32 allocates 32 GiB. That is a known limit of a damaged store (see
/// `fuzz/README.md`), not something to find again on every run.
pub const MAX_APPLIED_TOKEN_ID: u64 = 1 << 20;

/// What the store load yields, one record per item: `[kind][len u16 le][bytes]`.
/// Kinds: 0 account, 1 resource, 2 token, 3 delete token (8 bytes of id),
/// 4 counters (16 bytes), 5 audit event, 6 delete resource (a resource record).
pub fn store_records(data: &[u8]) {
    let key = DigestKey::from_bytes([7; 32]);
    let mut index = Index::new(key.clone());
    let mut rest = data;
    let mut applied = 0usize;
    while rest.len() >= 3 && applied < 256 {
        let kind = rest[0];
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]]));
        let body = &rest[3..(3 + len).min(rest.len())];
        rest = &rest[(3 + len).min(rest.len())..];
        let change = match kind % 7 {
            0 => decode_round_trip::<rec::AccountRecord>(body).map(Change::PutAccount),
            1 => decode_round_trip::<rec::ResourceRecord>(body).map(Change::PutResource),
            2 => decode_round_trip::<rec::TokenRecord>(body).map(|r| {
                check_token_record(&r, &key);
                Change::PutToken(r)
            }),
            3 => Some(Change::DeleteToken(u64::from_le_bytes(pad8(body)))),
            4 => {
                let mut b = [0u8; 16];
                let n = body.len().min(16);
                b[..n].copy_from_slice(&body[..n]);
                Some(Change::Counters {
                    next_account_id: u64::from_be_bytes(b[..8].try_into().expect("8")),
                    next_token_id: u64::from_be_bytes(b[8..].try_into().expect("8")),
                })
            }
            5 => {
                decode_round_trip::<rec::AuditRecord>(body);
                None
            }
            _ => decode_round_trip::<rec::ResourceRecord>(body).and_then(|r| {
                Some(Change::DeleteResource {
                    account_id: r.account_id,
                    key: ResourceKey::new(Kind::from_wire(r.resource_type)?, r.id.as_str()),
                })
            }),
        };
        let Some(change) = change else { continue };
        if matches!(&change, Change::PutToken(r) if r.id >= MAX_APPLIED_TOKEN_ID) {
            continue;
        }
        index.apply(&change);
        applied += 1;
    }
    check_index(&index);
}

fn pad8(b: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    let n = b.len().min(8);
    out[..n].copy_from_slice(&b[..n]);
    out
}

/// A token record through `TokenState`: the fields kept as they are, only
/// valid grants and scopes kept, the digest only under its own key, and
/// `to_record` a fixed point.
fn check_token_record(r: &rec::TokenRecord, key: &DigestKey) {
    let state = TokenState::from_record(r, key);
    // Debug never shows the hash: a marker hash must not appear in it
    // (unless the input put the marker in a field Debug does show).
    const MARKER: &str = "$argon2id$MARKER-f00d";
    let shown = format!("{:?}{:?}{:?}", r.name, r.grants, r.scopes);
    if !shown.contains("MARKER-f00d") {
        let probe = rec::TokenRecord {
            phc_hash: MARKER.into(),
            ..r.clone()
        };
        let dbg = format!("{:?}", TokenState::from_record(&probe, key));
        assert!(
            !dbg.contains("MARKER-f00d"),
            "Debug of a token shows its hash"
        );
    }
    let back = state.to_record(key);
    assert_eq!(back.id, r.id);
    assert_eq!(back.account_id, r.account_id);
    assert_eq!(back.name, r.name);
    assert_eq!(back.phc_hash, r.phc_hash);
    assert_eq!(back.last_4_digits, r.last_4_digits);
    assert_eq!(back.created_by, r.created_by);
    assert_eq!(back.created_at_ms, r.created_at_ms);
    assert_eq!(back.expires_at_ms, r.expires_at_ms);
    assert_eq!(back.paused, r.paused);
    assert_eq!(back.replaced_by, r.replaced_by);
    assert_eq!(back.replaces, r.replaces);
    assert_eq!(back.last_used_at_ms, r.last_used_at_ms);
    assert_eq!(back.root, r.root);
    let valid_grants: Vec<&rec::GrantRecord> = r
        .grants
        .iter()
        .filter(|g| (1..=4).contains(&g.resource_type) && matches!(g.level, 10 | 100))
        .collect();
    assert_eq!(back.grants.len(), valid_grants.len());
    for (b, g) in back.grants.iter().zip(valid_grants) {
        assert_eq!(b, g);
    }
    let valid_scopes: Vec<&rec::ScopeRecord> = r
        .scopes
        .iter()
        .filter(|s| SCOPE_NAMES.contains(&s.name.as_str()) && matches!(s.level, 10 | 100))
        .collect();
    assert_eq!(back.scopes.len(), valid_scopes.len());
    for (b, s) in back.scopes.iter().zip(valid_scopes) {
        assert_eq!(b, s);
    }
    let digest_kept = r.digest_key_id.as_slice() == key.id() && r.verified_digest.len() == 32;
    assert_eq!(state.digest.is_some(), digest_kept);
    if digest_kept {
        assert_eq!(back.verified_digest, r.verified_digest);
    }
    // A record keyward wrote reads back to itself.
    let again = TokenState::from_record(&back, key).to_record(key);
    assert_eq!(again, back, "to_record is not a fixed point");
}

/// Whatever the records built: every count agrees, every registered
/// resource is found from its account, and every token gets a decision on
/// every resource without a panic.
fn check_index(index: &Index) {
    assert_eq!(index.tokens.len(), index.tokens.values().count());
    let mut checks = Vec::new();
    for account in index.accounts.values() {
        for kind in Kind::ALL {
            let ids: Vec<String> = if kind == Kind::Account {
                vec![account.id_str.to_string()]
            } else {
                account.resources[kind.slot()]
                    .keys()
                    .map(|k| k.to_string())
                    .collect()
            };
            for id in ids {
                assert!(
                    index.is_registered(kind, &id),
                    "{kind:?} {id:?} of account {} not registered",
                    account.id
                );
                checks.push((kind, id));
            }
        }
    }
    for t in index.tokens.values().take(16) {
        for (kind, id) in checks.iter().take(32) {
            for level in [Level::Viewer, Level::Admin] {
                let check = Check {
                    kind: *kind,
                    id,
                    level,
                    scope: "email",
                };
                let _ = authz::decide(index, t, &check, NOW_MS);
            }
        }
    }
}

// ----------------------------------------------------------- routes file

/// The routes of the world's ext_authz service: one per resource kind, one
/// that checks the account in the path, one with a scope, one for account
/// users (ADMIN) that a disguised `users` segment must not slip past.
pub const WORLD_ROUTES: &str = r#"
unmatched = "deny"
strip_credential = true

[[routes]]
methods = ["POST"]
path = "/api/domains/{domain}/send"
resource = "domain"
id = "domain"
scope = "email"

[[routes]]
path = "/api/domains/{domain}/**"
resource = "domain"
id = "domain"

[[routes]]
path = "/api/accounts/{account_id}/projects/{project_id}/sandboxes/{sandbox_id}/**"
resource = "sandbox"
id = "sandbox_id"
account = "account_id"

[[routes]]
path = "/api/accounts/{account_id}/projects/{project_id}/**"
resource = "project"
id = "project_id"
account = "account_id"

[[routes]]
path = "/api/accounts/{account_id}/users/**"
resource = "account"
id = "account_id"
level = "admin"
account = "account_id"

[[routes]]
methods = ["GET", "PUT"]
path = "/api/accounts/{account_id}"
resource = "account"
id = "account_id"
level = "admin"
"#;

/// One route of [`WORLD_ROUTES`] as the reference reads it.
struct RefRoute {
    /// Methods; empty = any.
    methods: &'static [&'static str],
    /// Template segments: a literal, `{name}`, or a final `**`.
    template: &'static [&'static str],
    kind: Kind,
    /// The parameter naming the resource.
    id: &'static str,
    /// The parameter that must be the token's account, if any.
    account: Option<&'static str>,
    /// A fixed level, else by method.
    level: Option<Level>,
    scope: &'static str,
}

/// [`WORLD_ROUTES`], written out again for the reference.
const WORLD_TABLE: [RefRoute; 6] = [
    RefRoute {
        methods: &["POST"],
        template: &["api", "domains", "{domain}", "send"],
        kind: Kind::Domain,
        id: "{domain}",
        account: None,
        level: None,
        scope: "email",
    },
    RefRoute {
        methods: &[],
        template: &["api", "domains", "{domain}", "**"],
        kind: Kind::Domain,
        id: "{domain}",
        account: None,
        level: None,
        scope: "",
    },
    RefRoute {
        methods: &[],
        template: &[
            "api",
            "accounts",
            "{a}",
            "projects",
            "{p}",
            "sandboxes",
            "{s}",
            "**",
        ],
        kind: Kind::Sandbox,
        id: "{s}",
        account: Some("{a}"),
        level: None,
        scope: "",
    },
    RefRoute {
        methods: &[],
        template: &["api", "accounts", "{a}", "projects", "{p}", "**"],
        kind: Kind::Project,
        id: "{p}",
        account: Some("{a}"),
        level: None,
        scope: "",
    },
    RefRoute {
        methods: &[],
        template: &["api", "accounts", "{a}", "users", "**"],
        kind: Kind::Account,
        id: "{a}",
        account: Some("{a}"),
        level: Some(Level::Admin),
        scope: "",
    },
    RefRoute {
        methods: &["GET", "PUT"],
        template: &["api", "accounts", "{a}"],
        kind: Kind::Account,
        id: "{a}",
        account: None,
        level: Some(Level::Admin),
        scope: "",
    },
];

/// The reference's reading of a request's path, from the README's rules
/// (written apart from `routes.rs`): the decoded segments, or `None` when
/// keyward must refuse the request whatever `unmatched` says. Refused: a
/// method that is not upper-case letters; a `#` anywhere; in the path
/// before `?`: not starting with `/`, longer than `PATH_MAX`, a `;` or
/// `\`, an empty segment, a `%` that is not two hex digits encoding an
/// unreserved character (`A-Z a-z 0-9 - . _ ~`), a `.` or `..` segment
/// after decoding. One trailing `/` is dropped.
pub fn reference_path(method: &str, path: &str) -> Option<Vec<String>> {
    if method.is_empty() || !method.chars().all(|c| c.is_ascii_uppercase()) {
        return None;
    }
    if path.contains('#') {
        return None;
    }
    let path = path.split('?').next().unwrap_or_default();
    if path.len() > keyward::routes::PATH_MAX || !path.starts_with('/') {
        return None;
    }
    if path == "/" {
        return Some(Vec::new());
    }
    let mut raw: Vec<&str> = path[1..].split('/').collect();
    if raw.len() > 1 && raw.last() == Some(&"") {
        raw.pop();
    }
    let mut out = Vec::with_capacity(raw.len());
    for seg in raw {
        if seg.is_empty() {
            return None;
        }
        let mut decoded = String::new();
        let mut chars = seg.chars();
        while let Some(c) = chars.next() {
            match c {
                ';' | '\\' => return None,
                '%' => {
                    let hex: String = chars.by_ref().take(2).collect();
                    if hex.len() != 2 || !hex.chars().all(|h| h.is_ascii_hexdigit()) {
                        return None;
                    }
                    let byte = u8::from_str_radix(&hex, 16).ok()?;
                    let c = char::from(byte);
                    if !(c.is_ascii_alphanumeric() || "-._~".contains(c)) {
                        return None;
                    }
                    decoded.push(c);
                }
                c => decoded.push(c),
            }
        }
        if decoded == "." || decoded == ".." {
            return None;
        }
        out.push(decoded);
    }
    Some(out)
}

/// What the reference expects of a request: refused, unmatched, or a
/// route's check (kind, id, level, scope, account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefMatch {
    /// Refused whatever `unmatched` says.
    Unsafe,
    /// No route.
    Unmatched,
    /// A route's check: kind, id, level, scope, account in the path.
    Route(Kind, String, Level, String, Option<String>),
}

/// How keyward's [`Match`] reads in the reference's terms.
pub fn ref_of(m: &Match<'_, '_>) -> RefMatch {
    match m {
        Match::Unsafe(_) => RefMatch::Unsafe,
        Match::Unmatched => RefMatch::Unmatched,
        Match::Route(n) => RefMatch::Route(
            n.kind,
            n.id.to_string(),
            n.level,
            n.scope.to_string(),
            n.account.as_deref().map(str::to_string),
        ),
    }
}

/// The reference's match of `method path` against [`WORLD_ROUTES`]: the
/// first route whose method and template match the decoded segments
/// (literals ASCII case-insensitively, a parameter one non-empty segment
/// of at most `RESOURCE_ID_MAX` bytes, `**` any rest).
pub fn reference_world_match(method: &str, path: &str) -> RefMatch {
    let Some(segments) = reference_path(method, path) else {
        return RefMatch::Unsafe;
    };
    'routes: for r in &WORLD_TABLE {
        if !r.methods.is_empty() && !r.methods.contains(&method) {
            continue;
        }
        let mut bound: Vec<(&str, &str)> = Vec::new();
        let mut rest_ok = false;
        for (i, t) in r.template.iter().enumerate() {
            if *t == "**" {
                rest_ok = true;
                break;
            }
            let Some(seg) = segments.get(i) else {
                continue 'routes;
            };
            if t.starts_with('{') {
                if seg.is_empty() || seg.len() > limits::RESOURCE_ID_MAX {
                    continue 'routes;
                }
                bound.push((t, seg));
            } else if !t.eq_ignore_ascii_case(seg) {
                continue 'routes;
            }
        }
        if !rest_ok && segments.len() != r.template.len() {
            continue;
        }
        let get = |name: &str| {
            bound
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        };
        let level = r.level.unwrap_or(match method {
            "GET" | "HEAD" | "OPTIONS" => Level::Viewer,
            _ => Level::Admin,
        });
        return RefMatch::Route(
            r.kind,
            get(r.id).unwrap_or_default(),
            level,
            r.scope.to_string(),
            r.account.and_then(get),
        );
    }
    RefMatch::Unmatched
}

/// A routes file and requests to match against it: the text up to the
/// first `\n---\n`, then one `METHOD path` per line. A file that loads
/// must match every request without a panic; a request is refused exactly
/// when [`reference_path`] refuses it, the id and account of a match are
/// decoded segments of the path, and the same path with one character
/// percent-encoded, or with a trailing `/` added or taken away, matches
/// the same way. Against [`WORLD_ROUTES`] every match equals
/// [`reference_world_match`]. A file that does not load must say where.
pub fn routes_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (file, requests) = text.split_once("\n---\n").unwrap_or((&text, ""));
    let routes = match keyward::routes::parse("fuzz.toml", file) {
        Ok(r) => r,
        Err(e) => {
            assert_eq!(e.file, "fuzz.toml");
            assert!(e.line >= 1 && e.column >= 1, "{e}");
            assert!(!e.message.is_empty());
            assert!(e.to_string().starts_with("fuzz.toml:"));
            return;
        }
    };
    assert!(routes.len() <= keyward::routes::ROUTES_MAX);
    let world = file.trim() == WORLD_ROUTES.trim();
    let world_requests = [
        ("GET", "/api/accounts/1/projects/p1/x"),
        ("POST", "/api/domains/example.com/send"),
        ("GET", "/api/accounts/1"),
    ];
    let lines = requests
        .lines()
        .take(64)
        .map(|line| line.split_once(' ').unwrap_or((line, "/")));
    for (method, path) in lines.chain(world_requests) {
        check_route_match(&routes, method, path);
        if world {
            assert_eq!(
                ref_of(&routes.find(method, path)),
                reference_world_match(method, path),
                "{method} {path:?} against the world's routes"
            );
        }
    }
}

/// The generic checks of one request against any routes file (see
/// [`routes_file`]).
fn check_route_match(routes: &keyward::routes::Routes, method: &str, path: &str) {
    let m = routes.find(method, path);
    let reference = reference_path(method, path);
    assert_eq!(
        matches!(m, Match::Unsafe(_)),
        reference.is_none(),
        "{method:?} {path:?}: keyward {m:?}, reference segments {reference:?}"
    );
    let Some(segments) = reference else { return };
    if let Match::Route(n) = &m {
        assert!(
            segments.iter().any(|s| *s == n.id),
            "id {:?} is not a segment of {path:?}",
            n.id
        );
        if let Some(a) = n.account.as_deref() {
            assert!(segments.iter().any(|s| s == a));
        }
    }
    let (part, query) = match path.find('?') {
        Some(q) => path.split_at(q),
        None => (path, ""),
    };
    if part.len() + 3 > keyward::routes::PATH_MAX {
        return;
    }
    let mut variants = Vec::new();
    // The last unreserved character outside a `%XX` escape, encoded.
    let bytes = part.as_bytes();
    let (mut i, mut last) = (0, None);
    while i < bytes.len() {
        if bytes[i] == b'%' {
            i += 3;
            continue;
        }
        if bytes[i].is_ascii_alphanumeric() || b"-._~".contains(&bytes[i]) {
            last = Some(i);
        }
        i += 1;
    }
    if let Some(at) = last {
        variants.push(format!(
            "{}%{:02X}{}{query}",
            &part[..at],
            bytes[at],
            &part[at + 1..]
        ));
    }
    // A trailing slash added or taken away.
    if part.len() > 1 {
        match part.strip_suffix('/') {
            Some(without) => variants.push(format!("{without}{query}")),
            None => variants.push(format!("{part}/{query}")),
        }
    }
    let want = ref_of(&m);
    for v in variants {
        assert_eq!(
            ref_of(&routes.find(method, &v)),
            want,
            "{method} {v:?} does not match as {path:?}"
        );
    }
}

// -------------------------------------------------------- ext_authz Check

/// The world's ext_authz service with `unmatched = "allow"`: what is
/// refused must be refused whatever `unmatched` says.
fn ext_authz_allow() -> &'static ExtAuthzService {
    static SERVICE: OnceLock<ExtAuthzService> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let text = WORLD_ROUTES.replace("unmatched = \"deny\"", "unmatched = \"allow\"");
        let routes = keyward::routes::parse("world-allow.toml", &text)
            .expect("the world's routes parse with unmatched = allow");
        assert_eq!(routes.unmatched, Unmatched::Allow);
        ExtAuthzService {
            engine: world().engine.clone(),
            routes: Arc::new(SharedRoutes::new(routes)),
        }
    })
}

/// An Envoy `CheckRequest` through the real ext_authz service of
/// [`world`], with [`WORLD_ROUTES`] as they are (`unmatched = "deny"`) and
/// with `unmatched = "allow"`. `@<n>` anywhere in a header value is
/// replaced by the world's n-th real token. keyward's match must equal
/// [`reference_world_match`]; a request the reference refuses is a 403 in
/// both; an unmatched one is allowed exactly when `unmatched` is allow; an
/// allow on a route must be backed by the reference: a world token in the
/// request, whose reference decision for the route's check is an allow, in
/// the account the path names; and a clean request (`authorization: Bearer
/// <token>` only) on a route is allowed exactly when the reference says so.
pub fn ext_authz_check(data: &[u8]) {
    ext_authz_decision(data);
}

/// [`ext_authz_check`], telling whether the request was allowed with
/// `unmatched = "deny"` (`None` when the bytes are not a `CheckRequest`).
pub fn ext_authz_decision(data: &[u8]) -> Option<bool> {
    use envoy_types::ext_authz::v3::pb::HttpResponse;
    use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
    use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
    let mut req = decode_round_trip::<CheckRequest>(data)?;
    let w = world();
    let substitute = |v: &mut String| {
        if let Some(at) = v.find('@') {
            let digits: String = v[at + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Some(t) = digits.parse::<usize>().ok().and_then(|n| w.tokens.get(n)) {
                v.replace_range(at..at + 1 + digits.len(), &t.secret);
            }
        }
    };
    let mut clean = None;
    if let Some(http) = req
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        for v in http.headers.values_mut() {
            substitute(v);
        }
        if let Some(m) = http.header_map.as_mut() {
            for h in &mut m.headers {
                substitute(&mut h.value);
            }
        }
        if http.headers.len() == 1 && http.header_map.is_none() {
            clean = http
                .headers
                .get("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .and_then(|v| w.tokens.iter().find(|t| t.secret == v));
        }
    }
    let http = req
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    let expected = http.map_or(RefMatch::Unsafe, |h| {
        reference_world_match(&h.method, &h.path)
    });
    if let Some(h) = http {
        let routes = w.ext_authz.routes.current();
        assert_eq!(
            ref_of(&routes.find(&h.method, &h.path)),
            expected,
            "{} {:?}",
            h.method,
            h.path
        );
    }
    let reference = |t: &TokenSpec| match &expected {
        RefMatch::Route(kind, id, level, scope, account) => {
            let check = Check {
                kind: *kind,
                id,
                level: *level,
                scope,
            };
            reference_decision(w, t, &check).is_ok()
                && account
                    .as_deref()
                    .is_none_or(|a| a == t.account.to_string())
        }
        _ => false,
    };
    let mut allowed_deny = false;
    for (service, unmatched_allow) in [(&w.ext_authz, false), (ext_authz_allow(), true)] {
        let resp =
            w.rt.block_on(service.check(tonic::Request::new(req.clone())))
                .unwrap_or_else(|s| panic!("Check failed instead of answering: {s:?}"))
                .into_inner();
        let allowed = resp.status.as_ref().is_some_and(|s| s.code == 0);
        if !unmatched_allow {
            allowed_deny = allowed;
        }
        let mode = if unmatched_allow { "allow" } else { "deny" };
        match &expected {
            RefMatch::Unsafe => {
                let status = match &resp.http_response {
                    Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().map(|s| s.code),
                    _ => None,
                };
                assert_eq!(
                    (allowed, status),
                    (false, Some(403)),
                    "unmatched={mode}: a request the reference refuses"
                );
            }
            RefMatch::Unmatched => {
                assert_eq!(allowed, unmatched_allow, "unmatched={mode}: no route");
            }
            RefMatch::Route(..) => {
                if allowed {
                    let text = format!("{:?}", http.map(|h| (&h.headers, &h.header_map)));
                    assert!(
                        w.tokens
                            .iter()
                            .any(|t| text.contains(&t.secret) && reference(t)),
                        "unmatched={mode}: allowed without a token the reference allows"
                    );
                }
                if let Some(t) = clean {
                    assert_eq!(
                        allowed,
                        reference(t),
                        "unmatched={mode}: clean request with token #{}",
                        w.tokens
                            .iter()
                            .position(|o| o.secret == t.secret)
                            .unwrap_or(0)
                    );
                }
            }
        }
    }
    Some(allowed_deny)
}

/// The attacks of issue 15, as `(method, path, token)`: `@<n>` names the
/// world's n-th token (2: acme's VIEWER on p1; 1: example.com's own
/// token), empty for none. Each is refused or checked by the route the
/// upstream would take; none may pass as unmatched or under the wrong route.
pub const PATH_ATTACKS: [(&str, &str, &str); 9] = [
    ("POST", "/api/domains/example.com/send/", "@2"),
    ("post", "/api/domains/example.com/send", "@1"),
    ("POST", "/API/domains/example.com/send", "@2"),
    ("POST", "/api/domains/example.com/send;x", "@1"),
    ("DELETE", "/api/accounts/1/projectS/p1", "@2"),
    (
        "GET",
        "/api/accounts/1/projects/p1/..;/..;/users/list",
        "@2",
    ),
    ("GET", "/api/accounts/1/%75sers/list", "@2"),
    (
        "GET",
        "/api/accounts/1/projects/p1/%252e%252e/%252e%252e/users/list",
        "@2",
    ),
    ("GET", "/api/accounts/1/projects/p1#/../../users/list", "@2"),
];

/// A `CheckRequest` for `method path` with `authorization: Bearer <token>`
/// (no header when `token` is empty), encoded.
pub fn check_request(method: &str, path: &str, token: &str) -> Vec<u8> {
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    let headers = if token.is_empty() {
        Default::default()
    } else {
        [("authorization".to_string(), format!("Bearer {token}"))]
            .into_iter()
            .collect()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    host: "mail.example".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
    .encode_to_vec()
}

// ------------------------------------------------------- REST timestamps

/// The JSON facades' RFC 3339 parser: what it accepts formats back (UTC,
/// milliseconds and microseconds) to a string it reads as the same instant
/// at that precision.
///
/// Known (fuzz/README.md): `parse` accepts years 0000 to 1969, which the
/// formatters cannot show (they print the epoch), so the round trip is
/// checked from 1970 on.
pub fn rest_time(data: &[u8]) {
    use keyward::rest::time;
    let s = String::from_utf8_lossy(data);
    let Some(t) = time::parse(&s) else { return };
    assert!((0..1_000_000_000).contains(&t.nanos), "{s:?} -> {t:?}");
    if t.seconds < 0 {
        return;
    }
    let ms = time::format_millis(&t);
    let back = time::parse(&ms).unwrap_or_else(|| panic!("{ms:?} (from {s:?}) does not parse"));
    assert_eq!(back.seconds, t.seconds, "{s:?} -> {ms:?}");
    assert_eq!(
        back.nanos,
        t.nanos / 1_000_000 * 1_000_000,
        "{s:?} -> {ms:?}"
    );
    let us = time::format_micros(&t);
    let back = time::parse(&us).unwrap_or_else(|| panic!("{us:?} (from {s:?}) does not parse"));
    assert_eq!(back.seconds, t.seconds, "{s:?} -> {us:?}");
    assert_eq!(back.nanos, t.nanos / 1000 * 1000, "{s:?} -> {us:?}");
}

// ------------------------------------------------------------------ seeds

fn rref(kind: pb::ResourceType, id: &str) -> Option<pb::ResourceRef> {
    Some(pb::ResourceRef {
        r#type: kind as i32,
        id: id.into(),
    })
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len()).expect("small record");
    let mut out = vec![kind];
    out.extend(len.to_le_bytes());
    out.extend(body);
    out
}

/// Hand-written starting inputs for each target, by target name: the
/// corpus in `fuzz/corpus/` grew from these, and `tests/fuzz_inputs.rs`
/// replays them as well.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use pb::ResourceType::{Account, Domain, Project, Sandbox};
    let mut out: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let secret = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg";
    for s in [
        reference_token(1, secret),
        reference_token(u64::MAX, secret),
        format!("Bearer {}", reference_token(42, secret)),
        format!("{}x", reference_token(7, secret)),
        "kw_".to_string(),
        "Bearer ".to_string(),
        String::new(),
    ] {
        out.push(("token_parse", s.into_bytes()));
    }
    let mut built: Vec<u8> = 5u64.to_le_bytes().to_vec();
    built.extend((0u8..45).map(|i| i.wrapping_mul(37)));
    out.push(("token_parse", built));

    let grant = |kind, id: &str, level: i32| pb::Grant {
        resource: rref(kind, id),
        level,
    };
    let scope = |name: &str, level: i32| pb::Scope {
        name: name.into(),
        level,
    };
    let check = |token: &str, kind, id: &str, level: i32, scope: &str| pb::AuthorizeRequest {
        token: token.into(),
        resource: rref(kind, id),
        level,
        scope: scope.into(),
    };
    let ts = |seconds: i64| Some(prost_types::Timestamp { seconds, nanos: 0 });
    let good_token = reference_token(3, secret);
    let requests: Vec<Vec<u8>> = vec![
        request_input(
            0,
            &pb::CreateAccountRequest {
                name: "acme".into(),
            },
        ),
        request_input(0, &pb::CreateAccountRequest { name: " \n".into() }),
        request_input(1, &pb::GetAccountRequest { account_id: 1 }),
        request_input(
            2,
            &pb::ListAccountsRequest {
                page_size: 10,
                page_token: "5".into(),
            },
        ),
        request_input(
            3,
            &pb::RegisterResourceRequest {
                account_id: 1,
                resource: rref(Sandbox, "s1"),
                parent: rref(Project, "p1"),
            },
        ),
        request_input(
            4,
            &pb::DeleteResourceRequest {
                account_id: 1,
                resource: rref(Domain, "example.com"),
            },
        ),
        request_input(
            5,
            &pb::ListResourcesRequest {
                account_id: 1,
                ..Default::default()
            },
        ),
        request_input(
            6,
            &pb::CreateTokenRequest {
                account_id: 1,
                name: "ci sender".into(),
                grants: vec![grant(Domain, "example.com", 100), grant(Project, "p1", 10)],
                scopes: vec![scope("email", 100)],
                expires_at: ts(NOW_MS / 1000 + 3600),
            },
        ),
        request_input(
            6,
            &pb::CreateTokenRequest {
                account_id: 1,
                name: "dup".into(),
                grants: vec![grant(Project, "p1", 10), grant(Project, "p1", 100)],
                scopes: vec![scope("nope", 10)],
                expires_at: ts(-5),
            },
        ),
        request_input(
            7,
            &pb::GetTokenRequest {
                account_id: 1,
                token_id: 2,
            },
        ),
        request_input(
            8,
            &pb::ListTokensRequest {
                account_id: 1,
                page_size: 1001,
                page_token: "x".into(),
            },
        ),
        request_input(
            9,
            &pb::UpdateTokenRequest {
                account_id: 1,
                token_id: 2,
                name: "renamed".into(),
                grants: vec![grant(Account, "1", 100)],
                scopes: vec![],
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![
                        "name".into(),
                        "grants".into(),
                        "scopes".into(),
                        "paused".into(),
                    ],
                }),
            },
        ),
        request_input(
            10,
            &pb::ResetTokenRequest {
                account_id: 1,
                token_id: 2,
                expires_at: ts(NOW_MS / 1000 + 6 * 365 * 24 * 3600),
            },
        ),
        request_input(
            11,
            &pb::PauseTokenRequest {
                account_id: 1,
                token_id: 2,
            },
        ),
        request_input(
            12,
            &pb::ResumeTokenRequest {
                account_id: 1,
                token_id: 2,
            },
        ),
        request_input(
            13,
            &pb::DeleteTokenRequest {
                account_id: 1,
                token_id: 2,
            },
        ),
        request_input(14, &check(&good_token, Domain, "example.com", 100, "email")),
        request_input(
            15,
            &pb::AuthorizeBatchRequest {
                checks: vec![
                    check(&good_token, Project, "p1", 10, ""),
                    check("kw_x", Sandbox, "", 5, ""),
                ],
            },
        ),
        request_input(
            16,
            &pb::ListAuditEventsRequest {
                account_id: 1,
                page_size: 0,
                page_token: String::new(),
            },
        ),
        request_input(
            17,
            &tonic_health_check::HealthCheckRequest {
                service: "keyward.v1.Authorizer".into(),
            },
        ),
    ];
    out.extend(requests.into_iter().map(|r| ("grpc_requests", r)));

    // Account ids in the world: acme = 1, other = 2.
    let targets = [
        (Account, "1"),
        (Account, "2"),
        (Account, "+1"),
        (Project, "p1"),
        (Sandbox, "p1-sandbox"),
        (Domain, "example.com"),
        (Domain, "other.com"),
        (Project, "nowhere"),
        // Spellings of the world's domains, and ids that are not host names.
        (Domain, "EXAMPLE.com"),
        (Domain, "Other.COM."),
        (Domain, "ｅｘａｍｐｌｅ．ｃｏｍ"),
        (Domain, "example.com:25"),
        (Domain, "127.0.0.1"),
        (Domain, "xn--bcher-kva.example"),
    ];
    for n in 0..9 {
        for (i, (kind, id)) in targets.iter().enumerate() {
            let level = if i % 2 == 0 { 100 } else { 10 };
            let scope = ["", "email", "domains"][(n + i) % 3];
            out.push((
                "authorize",
                check(&format!("@{n}"), *kind, id, level, scope).encode_to_vec(),
            ));
        }
    }
    out.push((
        "authorize",
        check(&good_token, Domain, "example.com", 100, "").encode_to_vec(),
    ));

    let key = DigestKey::from_bytes([7; 32]);
    let token = rec::TokenRecord {
        id: 3,
        account_id: 1,
        name: "ci".into(),
        phc_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        last_4_digits: "abcd".into(),
        created_by: "acme admin token".into(),
        created_at_ms: NOW_MS,
        expires_at_ms: NOW_MS + 1000,
        paused: false,
        grants: vec![
            rec::GrantRecord {
                resource_type: 4,
                resource_id: "example.com".into(),
                level: 100,
            },
            rec::GrantRecord {
                resource_type: 9,
                resource_id: "bad".into(),
                level: 100,
            },
        ],
        scopes: vec![rec::ScopeRecord {
            name: "email".into(),
            level: 100,
        }],
        replaced_by: 0,
        replaces: 2,
        last_used_at_ms: NOW_MS,
        root: false,
        verified_digest: key.digest("kw_x").to_vec(),
        digest_key_id: key.id().to_vec(),
    };
    let mut counters = 2u64.to_be_bytes().to_vec();
    counters.extend(4u64.to_be_bytes());
    let mut load = Vec::new();
    load.extend(frame(4, &counters));
    load.extend(frame(
        0,
        &rec::AccountRecord {
            id: 1,
            name: "acme".into(),
            created_at_ms: NOW_MS,
        }
        .encode_to_vec(),
    ));
    for (kind, id, parent) in [(2, "p1", ""), (3, "s1", "p1"), (4, "example.com", "")] {
        load.extend(frame(
            1,
            &rec::ResourceRecord {
                account_id: 1,
                resource_type: kind,
                id: id.into(),
                parent_type: if parent.is_empty() { 1 } else { 2 },
                parent_id: if parent.is_empty() {
                    "1".into()
                } else {
                    parent.into()
                },
            }
            .encode_to_vec(),
        ));
    }
    load.extend(frame(2, &token.encode_to_vec()));
    load.extend(frame(
        5,
        &rec::AuditRecord {
            id: 1,
            account_id: 1,
            at_ms: NOW_MS,
            actor_token_id: 2,
            actor_name: "acme admin token".into(),
            action: "CreateToken".into(),
            token_id: 3,
            resource: String::new(),
            outcome: "OK".into(),
            detail: String::new(),
        }
        .encode_to_vec(),
    ));
    out.push(("store_records", load.clone()));
    load.extend(frame(3, &3u64.to_le_bytes()));
    load.extend(frame(
        6,
        &rec::ResourceRecord {
            account_id: 1,
            resource_type: 2,
            id: "p1".into(),
            ..Default::default()
        }
        .encode_to_vec(),
    ));
    out.push(("store_records", load));

    for text in [
        format!(
            "{WORLD_ROUTES}\n---\nGET /api/accounts/1/projects/p1/x\nPOST /api/domains/example.com/send\nGET /a/../b\nGET /api/accounts/1"
        ),
        include_str!("../../deploy/routes.toml").to_string(),
        "unmatched = \"allow\"\n[[routes]]\npath = \"/x/{a}/{a}\"\nresource = \"domain\"\nid = \"a\"\n".into(),
        "[[routes]]\npath = 5\n".into(),
        "[[routes]]\nmethods = [\"BREW\"]\npath = \"/**/x\"\nresource = \"teapot\"\nid = \"b\"\nlevel = \"owner\"\n".into(),
    ] {
        out.push(("routes_file", text.into_bytes()));
    }
    for (method, path, _) in PATH_ATTACKS {
        out.push((
            "routes_file",
            format!("{WORLD_ROUTES}\n---\n{method} {path}").into_bytes(),
        ));
    }
    for (method, path, token) in PATH_ATTACKS {
        out.push(("ext_authz_check", check_request(method, path, token)));
    }

    {
        use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
        use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
        let paths = [
            ("POST", "/api/domains/example.com/send"),
            ("GET", "/api/domains/other.com/stats"),
            ("GET", "/api/accounts/1/projects/p1/inboxes"),
            (
                "DELETE",
                "/api/accounts/1/projects/p1/sandboxes/p1-sandbox/messages",
            ),
            ("GET", "/api/accounts/2/projects/p1/x"),
            ("PUT", "/api/accounts/1"),
            ("GET", "/api/accounts/1/projects/p1/../p2"),
            ("GET", "/nowhere"),
        ];
        for (i, (method, path)) in paths.iter().enumerate() {
            for n in [i % 9, (i + 4) % 9] {
                let req = CheckRequest {
                    attributes: Some(AttributeContext {
                        request: Some(Request {
                            http: Some(HttpRequest {
                                method: (*method).into(),
                                path: (*path).into(),
                                host: "mail.example".into(),
                                headers: [("authorization".to_string(), format!("Bearer @{n}"))]
                                    .into_iter()
                                    .collect(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                };
                out.push(("ext_authz_check", req.encode_to_vec()));
            }
        }
    }

    for t in [
        "2026-12-01T10:00:00Z",
        "2026-12-01",
        "2026-12-01T10:00:00.5+02:00",
        "2024-02-29T23:59:59.999999999-23:59",
        "1970-01-01t00:00:00z",
        "2026-13-01T00:00:00Z",
    ] {
        out.push(("rest_time", t.as_bytes().to_vec()));
    }
    out
}
