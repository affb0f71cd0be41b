//! The follower's lease source: `Replication/Lease` on the channel the
//! follower watches on (so its TLS settings apply), authenticated with the
//! replication secret. The engine's refill task
//! ([`Engine::refill_leases`]) drives it while the follower is connected;
//! cut off, the hot path spends what it holds, then refuses.
//!
//! Part of replication (layer L5): imports `engine` and `pb`.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::Request;

use crate::engine::{Engine, LeaseAsk, LeaseGrant, LeaseSource};
use crate::pb::replication::{self as rpb, replication_client::ReplicationClient};
use crate::store::BoxFuture;

use super::report::REPORT_TIMEOUT;

/// Asks per call (the primary's cap is twice this).
const ASKS_MAX: usize = super::serve::USES_MAX / 2;

/// Leases from the primary.
pub(super) struct PrimaryLeases {
    client: ReplicationClient<Channel>,
    bearer: MetadataValue<Ascii>,
}

impl PrimaryLeases {
    /// On `channel`, with the replication secret's `bearer`.
    pub(super) fn new(channel: Channel, bearer: MetadataValue<Ascii>) -> Self {
        PrimaryLeases {
            client: ReplicationClient::new(channel),
            bearer,
        }
    }
}

impl LeaseSource for PrimaryLeases {
    fn batch(&self) -> usize {
        ASKS_MAX
    }

    fn ask<'a>(
        &'a mut self,
        engine: &'a Engine,
        asks: &'a [LeaseAsk],
    ) -> BoxFuture<'a, Result<Vec<LeaseGrant>, String>> {
        Box::pin(async move {
            let mut req = Request::new(rpb::LeaseRequest {
                node: engine.node_name().to_string(),
                asks: asks
                    .iter()
                    .map(|a| rpb::LeaseAsk {
                        token_id: a.token_id,
                        want: a.want,
                        give_back: a.give_back,
                    })
                    .collect(),
            });
            req.metadata_mut()
                .insert("authorization", self.bearer.clone());
            req.set_timeout(REPORT_TIMEOUT);
            match tokio::time::timeout(REPORT_TIMEOUT, self.client.lease(req)).await {
                Ok(Ok(r)) => Ok(r
                    .into_inner()
                    .grants
                    .into_iter()
                    .map(|g| LeaseGrant {
                        token_id: g.token_id,
                        granted: g.granted,
                        remaining: g.remaining,
                    })
                    .collect()),
                Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
                Err(_) => Err("timed out".into()),
            }
        })
    }
}
