//! Target `ext_authz_check`: an Envoy `CheckRequest` through the real
//! ext_authz service of the world, checked against the reference (with
//! `unmatched` deny and allow).

use std::sync::{Arc, OnceLock};

use keyward::authz::Check;
use keyward::routes::Unmatched;
use keyward::service::ext_authz::{ExtAuthzService, SharedRoutes};
use prost::Message;

use super::common::decode_round_trip;
use super::routes_file::{ref_of, reference_world_match, RefMatch, WORLD_ROUTES};
use super::world::{reference_decision, world, TokenSpec};

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
                cost: 1,
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
            w.rt.block_on(service.check_message(&req))
                .unwrap_or_else(|s| panic!("Check failed instead of answering: {s:?}"));
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
