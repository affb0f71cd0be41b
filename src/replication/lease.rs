//! The follower's lease refills: tokens whose lease fell under half a
//! chunk (queued by the hot path, once each) get it topped up to one chunk
//! by `Replication/Lease` on the channel the follower watches on; leases
//! unspent for [`IDLE_ROUNDS`] rounds go back. Runs while the follower is
//! connected; cut off, the hot path spends what it holds, then refuses.
//!
//! Part of replication (layer L5): imports `engine` and `pb`.

use std::convert::Infallible;

use tonic::transport::Channel;
use tonic::Request;

use crate::engine::{Engine, Held, LeaseAsk, ROUND_EVERY};
use crate::pb::replication::{self as rpb, replication_client::ReplicationClient};

use super::report::REPORT_TIMEOUT;

/// Asks per call (the primary's cap is twice this).
const ASKS_MAX: usize = super::serve::USES_MAX / 2;

/// Refills leases until dropped (when the connection ends).
pub(super) async fn refill_leases(engine: &Engine, channel: Channel, secret: &str) -> Infallible {
    let mut queue = engine.lease_queue().lock().await;
    let mut client = ReplicationClient::new(channel);
    let bearer: Option<tonic::metadata::MetadataValue<_>> = format!("Bearer {secret}").parse().ok();
    let mut held = Held::new();
    let mut tick = tokio::time::interval(ROUND_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut wanted: Vec<u64> = Vec::new();
    loop {
        tokio::select! {
            Some(id) = queue.recv() => wanted.push(id),
            _ = tick.tick() => {}
        }
        while let Ok(id) = queue.try_recv() {
            wanted.push(id);
        }
        wanted.sort_unstable();
        wanted.dedup();
        let asks = engine.lease_plan(&wanted, &mut held);
        wanted.clear();
        for batch in asks.chunks(ASKS_MAX) {
            match ask(&mut client, bearer.as_ref(), engine.node_name(), batch).await {
                Ok(grants) => engine.lease_granted(&grants, &mut held),
                Err(e) => {
                    engine.lease_failed(batch);
                    tracing::warn!(error = %e, "leasing sending-limit budget from the primary failed");
                }
            }
        }
        engine.lease_round_done();
    }
}

async fn ask(
    client: &mut ReplicationClient<Channel>,
    bearer: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    node: &str,
    asks: &[LeaseAsk],
) -> Result<Vec<(u64, u64)>, String> {
    let mut req = Request::new(rpb::LeaseRequest {
        node: node.to_string(),
        asks: asks
            .iter()
            .map(|a| rpb::LeaseAsk {
                token_id: a.token_id,
                want: a.want,
                give_back: a.give_back,
            })
            .collect(),
    });
    if let Some(b) = bearer {
        req.metadata_mut().insert("authorization", b.clone());
    }
    req.set_timeout(REPORT_TIMEOUT);
    match tokio::time::timeout(REPORT_TIMEOUT, client.lease(req)).await {
        Ok(Ok(r)) => Ok(r
            .into_inner()
            .grants
            .into_iter()
            .map(|g| (g.token_id, g.granted))
            .collect()),
        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        Err(_) => Err("timed out".into()),
    }
}
