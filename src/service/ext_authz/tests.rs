//! Unit tests of the lean wire forms: [`CheckCall`] reads what prost's
//! full `CheckRequest` would give (whatever else the request carries, and
//! merged as prost merges), never panics on bytes that are not a
//! `CheckRequest`; an [`Allow`] encodes to the message `envoy_types`'
//! builders make.

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::{CheckRequest, HeaderAppendAction};
use envoy_types::ext_authz::v3::OkHttpResponseBuilder;
use envoy_types::pb::envoy::config::core::v3::{
    address, Address, HeaderMap, HeaderValue, Metadata, SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request, TlsSession,
};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::google::protobuf::{value::Kind as ValueKind, Struct, Timestamp, Value};
use proptest::prelude::*;
use prost::Message;

use super::*;

/// What the old code read from prost's `CheckRequest`: the HTTP request's
/// presence, method, path and the two credential headers.
type Read = (bool, String, String, Option<String>, Option<String>);

/// The header as the service read it before [`CheckCall`]: `headers`
/// first, then the first `header_map` entry of that name in any case.
fn prost_header(http: &HttpRequest, name: &str) -> Option<String> {
    if let Some(v) = http.headers.get(name) {
        return Some(v.clone());
    }
    http.header_map.as_ref().and_then(|m| {
        m.headers
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(name))
            .and_then(|h| {
                if h.value.is_empty() {
                    std::str::from_utf8(&h.raw_value).ok().map(String::from)
                } else {
                    Some(h.value.clone())
                }
            })
    })
}

fn prost_read(req: &CheckRequest) -> Read {
    match req
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
    {
        None => (false, String::new(), String::new(), None, None),
        Some(h) => (
            true,
            h.method.clone(),
            h.path.clone(),
            prost_header(h, "authorization"),
            prost_header(h, "api-token"),
        ),
    }
}

fn lean_read(c: &CheckCall) -> Read {
    (
        c.has_http(),
        c.method().to_string(),
        c.path().to_string(),
        c.authorization().map(String::from),
        c.api_token().map(String::from),
    )
}

/// A peer with everything set.
fn peer(name: &str) -> Peer {
    Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "10.0.0.1".into(),
                port_specifier: Some(
                    envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(443),
                ),
                ..Default::default()
            })),
        }),
        service: name.into(),
        labels: [("app".to_string(), name.to_string())].into(),
        principal: format!("spiffe://cluster.local/ns/default/sa/{name}"),
        certificate: "-----BEGIN CERTIFICATE-----\nMIIB...\n".into(),
    }
}

/// Every other field of a `CheckRequest` set, around `http`.
fn fat(http: HttpRequest) -> CheckRequest {
    let big = |n: usize| "x".repeat(n);
    let meta = Metadata {
        filter_metadata: [(
            "envoy.filters.http.jwt_authn".to_string(),
            Struct {
                fields: [(
                    "sub".to_string(),
                    Value {
                        kind: Some(ValueKind::StringValue(big(300))),
                    },
                )]
                .into(),
            },
        )]
        .into(),
        typed_filter_metadata: HashMap::new(),
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer("client")),
            destination: Some(peer("mail")),
            request: Some(Request {
                time: Some(Timestamp {
                    seconds: 1_800_000_000,
                    nanos: 5,
                }),
                http: Some(HttpRequest {
                    id: "1234567890".into(),
                    host: "mail.example".into(),
                    scheme: "https".into(),
                    query: "a=b".into(),
                    fragment: "f".into(),
                    size: 4096,
                    protocol: "HTTP/2".into(),
                    body: big(4096),
                    raw_body: vec![0xff; 1024],
                    ..http
                }),
            }),
            context_extensions: [("virtual_host".to_string(), big(100))].into(),
            metadata_context: Some(meta.clone()),
            route_metadata_context: Some(meta),
            tls_session: Some(TlsSession {
                sni: "mail.example".into(),
            }),
        }),
    }
}

fn http(method: &str, path: &str, headers: &[(&str, &str)]) -> HttpRequest {
    HttpRequest {
        method: method.into(),
        path: path.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// A request carrying everything else reads as the bare one.
#[test]
fn every_other_field_is_skipped() {
    let mut h = http(
        "POST",
        "/projects/p1?x=1",
        &[("authorization", "Bearer kw_a"), ("x-other", "1")],
    );
    h.header_map = Some(HeaderMap {
        headers: vec![
            HeaderValue {
                key: "Api-Token".into(),
                value: String::new(),
                raw_value: b"kw_b".to_vec(),
            },
            HeaderValue {
                key: "authorization".into(),
                value: "Bearer kw_c".into(),
                raw_value: Vec::new(),
            },
        ],
    });
    let bare = CheckCall::decode(
        &CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(h.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
        .encode_to_vec(),
    )
    .expect("bare");
    let full = fat(h);
    let bytes = full.encode_to_vec();
    assert!(bytes.len() > 6000, "the fat request is fat");
    let lean = CheckCall::decode(&bytes).expect("fat");
    assert_eq!(lean_read(&lean), lean_read(&bare));
    assert_eq!(lean_read(&lean), prost_read(&full));
    assert_eq!(lean.authorization(), Some("Bearer kw_a"));
    assert_eq!(lean.api_token(), Some("kw_b"));
    assert_eq!(lean.method(), "POST");
    assert_eq!(lean.path(), "/projects/p1?x=1");
}

/// No attributes, no request, no http: no HTTP request.
#[test]
fn a_missing_http_request_is_seen() {
    for req in [
        CheckRequest::default(),
        CheckRequest {
            attributes: Some(AttributeContext::default()),
        },
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request::default()),
                source: Some(peer("a")),
                ..Default::default()
            }),
        },
    ] {
        let lean = CheckCall::decode(&req.encode_to_vec()).expect("decodes");
        assert!(!lean.has_http());
        assert_eq!(lean_read(&lean), prost_read(&req));
    }
}

/// Bytes that are not a `CheckRequest` are an error, not a panic.
#[test]
fn bad_bytes_are_refused() {
    let good = fat(http("GET", "/p", &[("authorization", "Bearer kw_a")])).encode_to_vec();
    // Cut inside the attributes: a length past the end.
    assert!(CheckCall::decode(&good[..good.len() / 2]).is_err());
    // A varint where the attributes message should be.
    assert!(matches!(
        CheckCall::decode(&[0x08, 0x01]),
        Err(BadCheck::WireType(1, _))
    ));
    // A method that is not UTF-8.
    let mut bad = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(http("GET", "/p", &[])),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
    .encode_to_vec();
    let at = bad.windows(3).position(|w| w == b"GET").expect("method");
    bad[at] = 0xff;
    assert!(matches!(CheckCall::decode(&bad), Err(BadCheck::NotUtf8)));
    assert!(
        CheckRequest::decode(bad.as_slice()).is_err(),
        "prost agrees"
    );
    // A key with field number 0, an unterminated varint, an end group.
    for garbage in [&[0x00][..], &[0x0a, 0xff, 0xff], &[0x0c], &[0xff; 11]] {
        assert!(CheckCall::decode(garbage).is_err(), "{garbage:?}");
    }
}

fn header_value() -> impl Strategy<Value = HeaderValue> {
    (
        prop_oneof![
            Just("authorization".to_string()),
            Just("Authorization".to_string()),
            Just("API-TOKEN".to_string()),
            Just("api-token".to_string()),
            "[a-z-]{0,12}",
        ],
        prop_oneof![Just(String::new()), "[ -~]{0,20}"],
        prop_oneof![
            Just(Vec::new()),
            proptest::collection::vec(any::<u8>(), 0..8),
            Just(b"kw_raw".to_vec()),
        ],
    )
        .prop_map(|(key, value, raw_value)| HeaderValue {
            key,
            value,
            raw_value,
        })
}

fn check_request() -> impl Strategy<Value = CheckRequest> {
    let headers = proptest::collection::hash_map(
        prop_oneof![
            Just("authorization".to_string()),
            Just("api-token".to_string()),
            Just("Authorization".to_string()),
            "[a-z-]{1,12}",
        ],
        "[ -~]{0,20}",
        0..4,
    );
    let header_map = proptest::option::of(proptest::collection::vec(header_value(), 0..5));
    (
        "[A-Z]{0,7}",
        "/[ -~]{0,30}",
        headers,
        header_map,
        any::<bool>(),
        0..4u8,
    )
        .prop_map(|(method, path, headers, header_map, fat_one, depth)| {
            let h = HttpRequest {
                method,
                path,
                headers,
                header_map: header_map.map(|headers| HeaderMap { headers }),
                ..Default::default()
            };
            match (fat_one, depth) {
                (true, _) => fat(h),
                (false, 0) => CheckRequest::default(),
                (false, 1) => CheckRequest {
                    attributes: Some(AttributeContext::default()),
                },
                (false, _) => CheckRequest {
                    attributes: Some(AttributeContext {
                        request: Some(Request {
                            http: Some(h),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                },
            }
        })
}

proptest! {
    /// Any `CheckRequest`, and two of them back to back (which prost
    /// merges), reads as prost reads it.
    #[test]
    fn reads_what_prost_reads(a in check_request(), b in check_request()) {
        let one = a.encode_to_vec();
        prop_assert_eq!(lean_read(&CheckCall::decode(&one).expect("one")), prost_read(&a));
        let mut two = one;
        b.encode(&mut two).expect("encode");
        let merged = CheckRequest::decode(two.as_slice()).expect("prost");
        prop_assert_eq!(lean_read(&CheckCall::decode(&two).expect("two")), prost_read(&merged));
    }

    /// Arbitrary bytes never panic; whatever prost accepts is read alike.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let lean = CheckCall::decode(&bytes);
        if let Ok(full) = CheckRequest::decode(bytes.as_slice()) {
            prop_assert_eq!(lean_read(&lean.expect("prost accepts it")), prost_read(&full));
        }
    }
}

/// The allow as the builders made it before [`Allow`].
fn built(a: &Allow) -> CheckResponse {
    let mut http = OkHttpResponseBuilder::new();
    let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
    http.add_header(TOKEN_ID_HEADER, a.token_id.to_string(), overwrite, false);
    http.add_header(
        ACCOUNT_ID_HEADER,
        a.account_id.to_string(),
        overwrite,
        false,
    );
    match &a.expires_at {
        Some(e) => http.add_header(EXPIRES_AT_HEADER, e.clone(), overwrite, false),
        None => http.remove_header(EXPIRES_AT_HEADER),
    };
    if a.replaced_by == 0 {
        http.remove_header(REPLACED_BY_HEADER);
    } else {
        http.add_header(
            REPLACED_BY_HEADER,
            a.replaced_by.to_string(),
            overwrite,
            false,
        );
    }
    if let Some(n) = a.remaining {
        http.add_response_header("ratelimit-remaining", n.to_string(), overwrite, false);
    }
    if a.strip {
        http.remove_header("authorization")
            .remove_header("api-token");
    }
    let number = |n: u64| Value {
        kind: Some(ValueKind::NumberValue(n as f64)),
    };
    let fields = [
        ("token_id".to_string(), number(a.token_id)),
        ("account_id".to_string(), number(a.account_id)),
        (
            "route".to_string(),
            Value {
                kind: Some(ValueKind::StringValue(a.route.to_string())),
            },
        ),
    ]
    .into();
    let mut resp = CheckResponse::with_status(Status::ok(""));
    resp.set_http_response(http);
    if a.metadata {
        resp.set_dynamic_metadata(Some(Struct { fields }));
    }
    resp
}

fn decoded(answer: &Answer) -> CheckResponse {
    let mut bytes = Vec::new();
    answer.encode(&mut bytes);
    CheckResponse::decode(bytes.as_slice()).expect("decodes")
}

proptest! {
    /// Every shape of allow encodes to the builders' message.
    #[test]
    fn an_allow_encodes_as_the_builders_made_it(
        token_id in 1..u64::MAX,
        account_id in any::<u64>(),
        expires in proptest::option::of("[0-9TZ:.-]{20,30}"),
        replaced_by in prop_oneof![Just(0u64), any::<u64>()],
        remaining in proptest::option::of(any::<u64>()),
        strip in any::<bool>(),
        metadata in any::<bool>(),
        route in "/[ -~]{0,200}",
    ) {
        let a = Allow {
            token_id,
            account_id,
            expires_at: expires,
            replaced_by,
            remaining,
            strip,
            metadata,
            route: route.into(),
        };
        prop_assert_eq!(decoded(&Answer::Allow(a.clone())), built(&a));
    }
}

/// The unchecked pass removes every id header and sets nothing.
#[test]
fn the_unchecked_pass_removes_the_ids() {
    let mut http = OkHttpResponseBuilder::new();
    http.remove_header(TOKEN_ID_HEADER)
        .remove_header(ACCOUNT_ID_HEADER)
        .remove_header(EXPIRES_AT_HEADER)
        .remove_header(REPLACED_BY_HEADER);
    let mut want = CheckResponse::with_status(Status::ok(""));
    want.set_http_response(http);
    assert_eq!(decoded(&Answer::unchecked()), want);
    let deny = deny(true, "no");
    assert_eq!(decoded(&Answer::from(deny.clone())), deny);
}
