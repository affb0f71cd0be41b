//! Scenario 9's envelope in process: reading an Envoy `CheckRequest` and
//! writing the allow's `CheckResponse`, with prost's full messages and
//! `envoy_types`' builders (how keyward did it before) against keyward's
//! lean forms ([`CheckCall`], [`Answer`]). Two requests: the harness's (one
//! header) and one shaped like Envoy's (peers, a dozen headers, metadata).
//!
//! `cargo bench --bench envelope`

use std::collections::HashMap;

use criterion::{criterion_group, criterion_main, Criterion};
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HeaderAppendAction};
use envoy_types::ext_authz::v3::{CheckResponseExt, OkHttpResponseBuilder};
use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::google::protobuf::{value::Kind as ValueKind, Struct, Timestamp, Value};
use keyward::service::ext_authz::{Allow, Answer, CheckCall};
use prost::Message;

const TOKEN: &str = "Bearer kw_0000000001AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjK9zXy12";

fn harness_request() -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: "/projects/p1".into(),
                    host: "mail.example".into(),
                    headers: [("authorization".to_string(), TOKEN.to_string())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn envoy_request() -> CheckRequest {
    let mut req = harness_request();
    let peer = |name: &str| Peer {
        service: name.into(),
        principal: format!("spiffe://cluster.local/ns/mail/sa/{name}"),
        ..Default::default()
    };
    let attrs = req.attributes.as_mut().expect("attributes");
    attrs.source = Some(peer("client"));
    attrs.destination = Some(peer("mail"));
    attrs.metadata_context = Some(Metadata::default());
    attrs.context_extensions = HashMap::new();
    let r = attrs.request.as_mut().expect("request");
    r.time = Some(Timestamp {
        seconds: 1_800_000_000,
        nanos: 0,
    });
    let http = r.http.as_mut().expect("http");
    http.id = "12345678901234567890".into();
    http.scheme = "https".into();
    http.protocol = "HTTP/1.1".into();
    for (k, v) in [
        (":authority", "mail.example"),
        (":method", "POST"),
        (":path", "/projects/p1"),
        (":scheme", "https"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("content-type", "application/json"),
        ("content-length", "512"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "8a1b2c3d-4e5f-6789-abcd-ef0123456789"),
        ("x-envoy-expected-rq-timeout-ms", "15000"),
    ] {
        http.headers.insert(k.into(), v.into());
    }
    req
}

/// The allow as keyward built it with the builders.
fn built_allow(token_id: u64, account_id: u64) -> CheckResponse {
    let mut http = OkHttpResponseBuilder::new();
    let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
    http.add_header("x-keyward-token-id", token_id.to_string(), overwrite, false);
    http.add_header(
        "x-keyward-account-id",
        account_id.to_string(),
        overwrite,
        false,
    );
    http.remove_header("x-keyward-token-expires-at");
    http.remove_header("x-keyward-token-replaced-by");
    http.remove_header("authorization")
        .remove_header("api-token");
    let number = |n: u64| Value {
        kind: Some(ValueKind::NumberValue(n as f64)),
    };
    let mut fields = HashMap::with_capacity(3);
    fields.insert("token_id".to_string(), number(token_id));
    fields.insert("account_id".to_string(), number(account_id));
    fields.insert(
        "route".to_string(),
        Value {
            kind: Some(ValueKind::StringValue("/projects/{project}".into())),
        },
    );
    let mut resp = CheckResponse::with_status(tonic::Status::ok(""));
    resp.set_http_response(http)
        .set_dynamic_metadata(Some(Struct { fields }));
    resp
}

fn envelope(c: &mut Criterion) {
    let route: std::sync::Arc<str> = "/projects/{project}".into();
    for (name, req) in [("harness", harness_request()), ("envoy", envoy_request())] {
        let bytes = req.encode_to_vec();
        c.bench_function(&format!("envelope/{name}/prost+builders"), |b| {
            let mut out = Vec::with_capacity(512);
            b.iter(|| {
                let req = CheckRequest::decode(bytes.as_slice()).expect("decode");
                let http = req
                    .attributes
                    .as_ref()
                    .and_then(|a| a.request.as_ref())
                    .and_then(|r| r.http.as_ref())
                    .expect("http");
                assert!(http.headers.contains_key("authorization"));
                out.clear();
                built_allow(4711, 42).encode(&mut out).expect("encode");
                std::hint::black_box(&out);
            });
        });
        c.bench_function(&format!("envelope/{name}/lean"), |b| {
            let mut out = Vec::with_capacity(512);
            b.iter(|| {
                let call = CheckCall::decode(&bytes).expect("decode");
                assert!(call.authorization().is_some());
                out.clear();
                Answer::Allow(Allow {
                    token_id: 4711,
                    account_id: 42,
                    expires_at: None,
                    replaced_by: 0,
                    remaining: None,
                    strip: true,
                    metadata: true,
                    route: route.clone(),
                })
                .encode(&mut out);
                std::hint::black_box(&out);
            });
        });
    }
}

criterion_group!(benches, envelope);
criterion_main!(benches);
