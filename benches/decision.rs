//! Scenario 8: the in-process decision (parse, checksum, keyed digest,
//! lookup, grant evaluation) with 1 M tokens loaded, cache hit. Target < 1 µs.
//!
//! `cargo bench --bench decision` (set KEYWARD_BENCH_TOKENS to change 1 M).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use keyward::authz::Check;
use keyward::clock::SystemClock;
use keyward::engine::{Cached, Engine, Settings};
use keyward::model::{Kind, Level};
use keyward::store::{SledStore, Store};
use keyward::token::DigestKey;

fn decision(c: &mut Criterion) {
    let n: usize = std::env::var("KEYWARD_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, tokens, project) = rt.block_on(async {
        let seeded = keyward::seed::seed(dir.path(), n, true)
            .await
            .expect("seed");
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("open"));
        let key = DigestKey::load_or_create(&dir.path().join("digest.key"), false).expect("key");
        let engine = Engine::new(store, key, Arc::new(SystemClock), Settings::default());
        engine.load(false).await.expect("load");
        (engine, seeded.tokens, seeded.project)
    });
    let allowed = Check {
        kind: Kind::Project,
        id: &project,
        level: Level::Admin,
        scope: "",
        cost: 1,
    };
    // Tokens in a scattered order (every 7919th), laid out one after the
    // other: each call looks up a different token among the n (index access
    // is random, as in production), while the token bytes themselves stream
    // in like a request buffer would.
    let order: Vec<&str> = (0..tokens.len())
        .map(|k| tokens[(k * 7919) % tokens.len()].expose())
        .collect();
    let blob: String = order.concat();
    let len = keyward::token::TOKEN_LEN;
    let mut i = 0usize;
    c.bench_function(&format!("authorize_cached, {n} tokens, allowed"), |b| {
        b.iter(|| {
            i = (i + 1) % n;
            match engine.authorize_cached(&blob[i * len..(i + 1) * len], &allowed) {
                Cached::Decided(d) => assert!(d.allowed),
                Cached::NeedsArgon2 { .. } => panic!("cache miss"),
            }
        });
    });
    let mut bad = tokens[0].expose().to_string().into_bytes();
    bad[20] = if bad[20] == b'a' { b'b' } else { b'a' };
    let bad = String::from_utf8(bad).expect("ascii");
    c.bench_function("authorize_cached, malformed (bad checksum)", |b| {
        b.iter(|| match engine.authorize_cached(&bad, &allowed) {
            Cached::Decided(d) => assert!(!d.allowed),
            Cached::NeedsArgon2 { .. } => panic!("malformed reached argon2"),
        });
    });
}

criterion_group!(benches, decision);
criterion_main!(benches);
