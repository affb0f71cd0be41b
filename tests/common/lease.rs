//! Sending-limit helpers of the lease suites: a limited token, a node
//! that knows it, and load on several nodes at once.

use std::time::{Duration, Instant};

use keyward::pb::v1 as pb;
use pb::DenyReason;

use keyward::clock::ManualClock;

use super::*;

pub fn req(token: &str) -> pb::AuthorizeRequest {
    pb::AuthorizeRequest {
        token: token.into(),
        resource: Some(rref(PROJECT, "p1")),
        level: VIEWER,
        scope: String::new(),
        cost: None,
    }
}

/// A limited token, and who made it.
pub struct Limited {
    pub acct: u64,
    pub admin: String,
    pub id: u64,
    pub secret: String,
}

/// A limited token on `p` (a primary, a PostgreSQL node): `limit` per
/// 1000 s, in a new account.
pub async fn limited(p: &TestServer, limit: u64) -> Limited {
    let (acct, admin) = p.account("Acme").await;
    p.register(&admin, acct, PROJECT, "p1", None).await;
    let t = p
        .tokens()
        .create_token(auth(
            pb::CreateTokenRequest {
                account_id: acct,
                name: "sender".into(),
                grants: vec![grant(PROJECT, "p1", VIEWER)],
                scopes: vec![],
                expires_at: None,
                rate_limits: vec![pb::RateLimit {
                    name: "slow".into(),
                    limit,
                    period: Some(prost_types::Duration {
                        seconds: 1000,
                        nanos: 0,
                    }),
                }],
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    Limited {
        acct,
        admin,
        id: t.token.as_ref().unwrap().id,
        secret: t.secret,
    }
}

/// The secret of [`limited`].
pub async fn token(p: &TestServer, limit: u64) -> String {
    limited(p, limit).await.secret
}

/// Allowed decisions of `n` calls on `node`, one at a time.
pub async fn allowed_of(node: &TestServer, secret: &str, n: usize) -> u64 {
    let mut client = node.authorizer();
    let mut allowed = 0;
    for _ in 0..n {
        let d = client.authorize(req(secret)).await.unwrap().into_inner();
        if d.allowed {
            allowed += 1;
        } else {
            assert_eq!(d.reason, DenyReason::RateLimited as i32, "{d:?}");
            assert!(d.retry_after.is_some(), "{d:?}");
        }
    }
    allowed
}

/// Waits (≤ 10 s) until `f` knows the token (a check of cost 0).
pub async fn knows(f: &TestServer, secret: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut r = req(secret);
        r.cost = Some(0);
        if let Ok(d) = f.authorizer().authorize(r).await {
            if d.get_ref().reason != DenyReason::UnknownToken as i32 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "follower never saw the token");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Load on every node at once, 3 callers each, until each caller saw 10
/// refusals in a row: allowed decisions per node.
pub async fn load(nodes: &[&TestServer], secret: &str) -> Vec<u64> {
    let mut tasks = Vec::new();
    for n in nodes {
        for _ in 0..3 {
            let mut client = n.authorizer();
            let secret = secret.to_string();
            tasks.push(tokio::spawn(async move {
                let (mut allowed, mut refused) = (0u64, 0);
                for _ in 0..5_000 {
                    match client.authorize(req(&secret)).await {
                        Ok(d) if d.get_ref().allowed => {
                            allowed += 1;
                            refused = 0;
                        }
                        Ok(d) => {
                            assert_eq!(d.get_ref().reason, DenyReason::RateLimited as i32);
                            refused += 1;
                        }
                        Err(_) => refused += 1,
                    }
                    if refused >= 10 {
                        break;
                    }
                }
                allowed
            }));
        }
    }
    let mut per_node = vec![0; nodes.len()];
    for (i, t) in tasks.into_iter().enumerate() {
        per_node[i / 3] += t.await.unwrap();
    }
    per_node
}

/// Load on `nodes` in two phases, half a period (of 1000 s) apart on
/// `clock`: the first allows at most `first_max` and at least the limit
/// less a chunk per leasing node, the whole run at most the stated bound
/// (`limit + limit / 2 + leasing × chunk`), and the budget refills in
/// between. Returns allowed per node in the first phase.
pub async fn two_phases(
    nodes: &[&TestServer],
    secret: &str,
    clock: &ManualClock,
    (limit, chunk, leasing): (u64, u64, u64),
    first_max: u64,
    label: &str,
) -> Vec<u64> {
    let first = load(nodes, secret).await;
    let total: u64 = first.iter().sum();
    println!("{label}: phase 1 allowed per node {first:?}, total {total}");
    assert!(total <= first_max, "allowed {total} > {first_max}");
    assert!(total >= limit - leasing * chunk, "allowed only {total}");
    // Half a period later (the nodes hear from their source again within
    // a poll or a heartbeat).
    clock.advance_ms(500_000);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let second = load(nodes, secret).await;
    let whole: u64 = total + second.iter().sum::<u64>();
    println!("{label}: phase 2 allowed per node {second:?}, whole run {whole}");
    let bound = limit + limit / 2 + leasing * chunk;
    assert!(
        whole <= bound,
        "allowed {whole} over the run > bound {bound}"
    );
    assert!(whole > total, "the budget refilled");
    let m = http(nodes[0].http, "GET", "/metrics", None, None).await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(metric(&text, "keyward_lease_units_total{dir=\"taken\"}") > 0.0);
    first
}
