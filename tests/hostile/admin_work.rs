//! Hostile clients, work before permission: a caller who may not act is
//! refused before any argon2 hash, store read or writer lock, and argon2's
//! memory goes back after a burst.

use super::*;

/// A VIEWER token's flood of CreateAccount, ResetToken and
/// RegisterResource(DOMAIN) is refused (PERMISSION_DENIED) without a single
/// argon2 hash; meanwhile valid Authorize callers keep >= 99 % OK, with no
/// starvation (p99 within 4x + 200 ms of the baseline measured just before
/// in this same process), and an account admin's CreateToken keeps
/// succeeding. Then a burst of legitimate creates: RSS returns near
/// where it was once argon2's idle memory is trimmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_admin_calls_cost_no_argon2_and_argon2_memory_returns() {
    let _serial = super::SERIAL.lock().await;
    let dir = temp();
    let clock = Arc::new(keyward::clock::ManualClock::new());
    let s = TestServer::start_with(production_options(dir.path(), clock.clone()), clock)
        .await
        .expect("start");
    let Acme {
        account,
        admin,
        domain,
        viewer,
    } = acme(&s).await;
    let token = domain.secret.clone();
    let target = domain.token.expect("token").id;
    assert_eq!(
        Probe(s.channel.clone())
            .round(&viewer, account, target, 0)
            .await,
        vec![
            Code::PermissionDenied,
            Code::NotFound,
            Code::PermissionDenied
        ],
        "a VIEWER may do none of these (a token beyond its reach is NOT_FOUND to it)"
    );

    let load = Load::new();
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(valid_client(s.grpc, token.clone(), load.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The flood: 32 callers, each round three refused calls.
    let rss_before = rss_kib();
    let work_before = s.engine.work();
    load.phase.store(1, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let wrong = Arc::new(Mutex::new(Vec::new()));
    let flood: Vec<_> = (0..32)
        .map(|i| {
            let (s_grpc, viewer, stop, refused, wrong) = (
                s.channel.clone(),
                viewer.clone(),
                stop.clone(),
                refused.clone(),
                wrong.clone(),
            );
            tokio::spawn(async move {
                let mut n = i * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let probe = Probe(s_grpc.clone());
                    for code in probe.round(&viewer, account, target, n).await {
                        if matches!(code, Code::PermissionDenied | Code::NotFound) {
                            refused.fetch_add(1, Ordering::Relaxed);
                        } else {
                            wrong.lock().expect("lock").push(code);
                        }
                    }
                }
            })
        })
        .collect();
    // An account admin keeps creating tokens during the flood.
    let mut creates = Vec::new();
    let flood_end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < flood_end {
        let start = Instant::now();
        s.create(
            &admin,
            account,
            "legit",
            vec![grant(DOMAIN, "example.com", ADMIN)],
        )
        .await
        .expect("a legitimate CreateToken during the flood");
        creates.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.await.expect("flood task");
    }
    let work = s.engine.work();
    let rss_flood = rss_kib();
    load.phase.store(2, Ordering::Relaxed);
    load.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("valid client");
    }

    let refused = refused.load(Ordering::Relaxed);
    let wrong = wrong.lock().expect("lock").clone();
    assert!(
        wrong.is_empty(),
        "refused calls answered otherwise: {:?}",
        &wrong[..wrong.len().min(5)]
    );
    assert!(refused > 300, "the flood sent only {refused} calls");
    let hashes = work.hashes - work_before.hashes;
    assert_eq!(
        hashes,
        creates.len() as u64,
        "{refused} refused calls: argon2 hashed {hashes} secrets for {} legitimate creates",
        creates.len()
    );
    creates.sort();
    println!(
        "hostile: {refused} refused admin calls in 4 s, {hashes} hashes (all for the {} legitimate creates, p50 {:?}, max {:?}); RSS {} -> {} MiB",
        creates.len(),
        percentile(&creates, 0.5),
        creates.last(),
        rss_before / 1024,
        rss_flood / 1024
    );
    let (_, _, base_p99) = load.summary(0);
    let (ok, total, p99) = load.summary(1);
    println!(
        "hostile: valid Authorize during the refused flood: {ok}/{total} ok, p99 {p99:?} (baseline {base_p99:?}, {:.2}x)",
        p99.as_secs_f64() / base_p99.as_secs_f64().max(1e-9)
    );
    assert!(
        ok * 100 >= total * 99,
        "only {ok} of {total} valid Authorize calls OK"
    );
    // A starvation guard only: the attacker shares this debug process and
    // its two workers. The latency target (p99 <= 1.5x) is measured in
    // release by keyward-bench's attack scenario.
    assert!(
        p99 <= base_p99 * 4 + Duration::from_millis(200),
        "valid Authorize p99 {p99:?} against a baseline of {base_p99:?}"
    );
    assert!(
        rss_flood.saturating_sub(rss_before) < 64 * 1024,
        "RSS grew from {} to {} MiB during a refused flood",
        rss_before / 1024,
        rss_flood / 1024
    );

    // A burst of legitimate hashes, then argon2's idle memory is trimmed
    // (the server does this every few seconds for memory idle 30 s).
    keyward::token::trim_argon2_memory(Duration::ZERO);
    let rss_rest = rss_kib();
    let burst: Vec<_> = (0..24)
        .map(|i| {
            let (channel, admin) = (s.channel.clone(), admin.clone());
            tokio::spawn(async move {
                pb::tokens_client::TokensClient::new(channel)
                    .create_token(auth(
                        pb::CreateTokenRequest {
                            account_id: account,
                            name: format!("burst {i}"),
                            grants: vec![grant(DOMAIN, "example.com", ADMIN)],
                            ..Default::default()
                        },
                        &admin,
                    ))
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    for b in burst {
        b.await
            .expect("burst task")
            .expect("a legitimate create in a burst");
    }
    let rss_burst = rss_kib();
    keyward::token::trim_argon2_memory(Duration::ZERO);
    let rss_after = rss_kib();
    println!(
        "hostile: 24 concurrent creates: RSS {} MiB before, {} MiB after the burst, {} MiB once argon2's memory is trimmed",
        rss_rest / 1024,
        rss_burst / 1024,
        rss_after / 1024
    );
    assert!(
        rss_after.saturating_sub(rss_rest) < 24 * 1024,
        "RSS stayed {} MiB above its resting {} MiB after an argon2 burst",
        rss_after.saturating_sub(rss_rest) / 1024,
        rss_rest / 1024
    );
    s.stop().await.expect("clean stop");
}

/// The calls that used to hash a new secret before asking whether the
/// caller may: CreateAccount, ResetToken and RegisterResource(DOMAIN).
struct Probe(Channel);

impl Probe {
    /// One of each; returns the codes answered.
    async fn round(&self, viewer: &str, account: u64, target: u64, n: usize) -> Vec<Code> {
        let mut codes = Vec::with_capacity(3);
        let r = pb::accounts_client::AccountsClient::new(self.0.clone())
            .create_account(auth(
                pb::CreateAccountRequest {
                    name: format!("evil {n}"),
                },
                viewer,
            ))
            .await;
        codes.push(r.err().map_or(Code::Ok, |e| e.code()));
        let r = pb::tokens_client::TokensClient::new(self.0.clone())
            .reset_token(auth(
                pb::ResetTokenRequest {
                    account_id: account,
                    token_id: target,
                    ..Default::default()
                },
                viewer,
            ))
            .await;
        codes.push(r.err().map_or(Code::Ok, |e| e.code()));
        let r = pb::resources_client::ResourcesClient::new(self.0.clone())
            .register_resource(auth(
                pb::RegisterResourceRequest {
                    account_id: account,
                    resource: Some(rref(DOMAIN, &format!("evil-{n}.example"))),
                    parent: None,
                },
                viewer,
            ))
            .await;
        codes.push(r.err().map_or(Code::Ok, |e| e.code()));
        codes
    }
}
