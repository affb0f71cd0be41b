//! Timing revocations: the time from a delete's acknowledgement by the
//! writing node to each watched node's first denial (scenarios 11 and 12).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keyward::pb::v1 as pb;
use tonic::transport::Channel;

use crate::bench::request;
use crate::load::{new_hist, Conn};

/// Times `n` revocations: each creates a token through `tokens` (with the
/// ADMIN token `admin` on `project` of `account`), waits until every one of
/// `conns` allows it, then polls each of them about once a millisecond while
/// `tokens` deletes it, and records the time from the delete's
/// acknowledgement to each one's first denial. Returns the latencies, the
/// worst, and how many denials were not seen within `give_up`.
pub(crate) async fn time_revocations(
    tokens: &mut pb::tokens_client::TokensClient<Channel>,
    admin: &str,
    (account_id, project): (u64, &str),
    conns: &[Conn],
    n: usize,
    give_up: Duration,
    label: &str,
) -> (Histogram<u64>, Duration, u64) {
    let mut lat = new_hist();
    let mut worst = Duration::ZERO;
    let mut timeouts = 0u64;
    for trial in 0..n {
        eprint!("\r  {label} revocation {}/{n}   ", trial + 1);
        let mut req = tonic::Request::new(pb::CreateTokenRequest {
            rate_limits: Default::default(),
            account_id,
            name: format!("victim {trial}"),
            grants: vec![pb::Grant {
                resource: Some(pb::ResourceRef {
                    r#type: pb::ResourceType::Project as i32,
                    id: project.to_string(),
                }),
                level: pb::AccessLevel::Admin as i32,
            }],
            scopes: vec![],
            expires_at: None,
        });
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {admin}").parse().expect("ascii"),
        );
        let victim = tokens.create_token(req).await.expect("create").into_inner();
        let id = victim.token.as_ref().map_or(0, |t| t.id);
        let check = request(&victim.secret, project);
        // Every watched node allows it first.
        for c in conns {
            let mut c = c.clone();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !c
                .authorizer
                .authorize(check.clone())
                .await
                .is_ok_and(|r| r.get_ref().allowed)
            {
                assert!(
                    Instant::now() < deadline,
                    "{label} a node never saw the new token"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // Pollers, 1 ms apart each, then the delete; each watched node's
        // first denial is timed from the writer's acknowledgement.
        let acked: Arc<parking_lot::Mutex<Option<Instant>>> = Arc::default();
        let pollers: Vec<_> = conns
            .iter()
            .map(|c| {
                let (mut c, check, acked) = (c.clone(), check.clone(), acked.clone());
                tokio::spawn(async move {
                    let deadline = Instant::now() + give_up;
                    while Instant::now() < deadline {
                        let denied = c
                            .authorizer
                            .authorize(check.clone())
                            .await
                            .is_ok_and(|r| !r.get_ref().allowed);
                        if denied {
                            let seen = Instant::now();
                            loop {
                                if let Some(at) = *acked.lock() {
                                    return Some(seen.saturating_duration_since(at));
                                }
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    None
                })
            })
            .collect();
        let mut req = tonic::Request::new(pb::DeleteTokenRequest {
            account_id,
            token_id: id,
        });
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {admin}").parse().expect("ascii"),
        );
        tokens.delete_token(req).await.expect("delete");
        *acked.lock() = Some(Instant::now());
        for p in pollers {
            match p.await.ok().flatten() {
                Some(d) => {
                    let _ = lat.record((d.as_nanos() as u64).max(1));
                    worst = worst.max(d);
                }
                None => timeouts += 1,
            }
        }
    }
    eprint!("\r{:<60}\r", "");
    (lat, worst, timeouts)
}
