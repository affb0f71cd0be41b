//! Target `grpc_requests`: prost `decode` of every `keyward.v1` request
//! message (the first byte picks which), a decode/encode round trip, then
//! the validation the service applies to it, each compared with a
//! reference rule; invalid input is always INVALID_ARGUMENT, never INTERNAL.

use keyward::model::{self, limits, ResourceKey, SCOPE_NAMES};
use keyward::pb::v1 as pb;
use keyward::service::authorizer::check_of;
use keyward::wire::{check_expiry, page_bounds, policy_from_wire};
use prost::Message;

use super::common::{agree, decode_round_trip, NOW_MS};
use super::token_parse::check_token_str;

/// The request messages of `keyward.v1`, in the order the first byte of a
/// [`grpc_request`] input picks them.
pub const REQUESTS: [&str; 19] = [
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
    "UpdateAccountRequest",
];

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

/// Sending limits: the reference rules, written out again (at most 8;
/// names 1..32 of [a-z0-9_-], unique; limit 1..=1e12; period 1 s .. 31
/// days in whole ms), against `rate_limits_from_wire`, and the accepted
/// ones round trip to the wire.
fn check_rate_limits(limits: &[pb::RateLimit]) {
    let period_ms = |d: &prost_types::Duration| -> Option<i64> {
        if d.seconds < 0 || !(0..1_000_000_000).contains(&d.nanos) || d.nanos % 1_000_000 != 0 {
            return None;
        }
        let ms = i128::from(d.seconds) * 1000 + i128::from(d.nanos / 1_000_000);
        i64::try_from(ms)
            .ok()
            .filter(|ms| (1000..=31 * 24 * 3600 * 1000).contains(ms))
    };
    let each_ok = limits.iter().enumerate().all(|(i, l)| {
        (1..=32).contains(&l.name.len())
            && l.name
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
            && limits[..i].iter().all(|o| o.name != l.name)
            && (1..=1_000_000_000_000).contains(&l.limit)
            && l.period.as_ref().and_then(period_ms).is_some()
    });
    let expected = limits.len() <= 8 && each_ok;
    if let Some(out) = agree(
        model::rate_limits_from_wire("rate_limits", limits),
        expected,
        "rate_limits",
        "rate_limits_from_wire",
    ) {
        let budget = out.budget(0);
        let wire = model::rate_limits_to_wire(budget.as_deref());
        assert_eq!(wire.len(), limits.len(), "rate limits round trip");
        for (w, l) in wire.iter().zip(limits) {
            assert_eq!((&w.name, w.limit), (&l.name, l.limit));
            assert_eq!(
                w.period.as_ref().and_then(period_ms),
                l.period.as_ref().and_then(period_ms)
            );
        }
    }
}

fn check_expires_at(t: Option<&prost_types::Timestamp>) {
    let expected_ms = t.map(|t| {
        if !(0..1_000_000_000).contains(&t.nanos) {
            return None;
        }
        let ms = i128::from(t.seconds) * 1000 + i128::from(t.nanos / 1_000_000);
        let now = i128::from(NOW_MS);
        i64::try_from(ms)
            .ok()
            .filter(|_| ms > now && ms - now <= i128::from(limits::EXPIRY_MAX_MS))
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
        assert_eq!(check.cost, req.cost.unwrap_or(1), "cost: unset is 1");
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
                check_rate_limits(&r.rate_limits);
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
                        "rate_limits" => check_rate_limits(&r.rate_limits),
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
        17 => {
            decode_round_trip::<tonic_health_check::HealthCheckRequest>(body);
        }
        _ => {
            if let Some(r) = decode_round_trip::<pb::UpdateAccountRequest>(body) {
                if r.update_mask
                    .iter()
                    .flat_map(|m| &m.paths)
                    .any(|p| p == "name")
                {
                    check_name(&r.name);
                }
                check_policy(&r.policy.unwrap_or_default());
            }
        }
    }
}

/// An account policy: a lifetime well formed (nanos in range, with the
/// sign of seconds), not negative, at most 5 years; kept in whole ms
/// rounded up, "0s" meaning none.
fn check_policy(p: &pb::AccountPolicy) {
    let expected = p.max_token_lifetime.as_ref().map(|d| {
        let signs_agree = !(d.seconds > 0 && d.nanos < 0 || d.seconds < 0 && d.nanos > 0);
        let total = i128::from(d.seconds) * 1_000_000_000 + i128::from(d.nanos);
        let ok = (-999_999_999..=999_999_999).contains(&d.nanos)
            && signs_agree
            && total >= 0
            && total <= i128::from(limits::EXPIRY_MAX_MS) * 1_000_000;
        ok.then(|| i64::try_from((total + 999_999) / 1_000_000).expect("<= 5 years of ms"))
    });
    let result = policy_from_wire("policy", p);
    let expected_ok = expected.is_none_or(|e| e.is_some());
    if let Some(got) = agree(result, expected_ok, "policy", "policy_from_wire") {
        let ms = expected.flatten().filter(|ms| *ms > 0);
        assert_eq!(got.max_token_lifetime_ms, ms, "lifetime in ms, rounded up");
        assert_eq!(got.require_expiry, p.require_expiry);
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
