//! The follower's use reports: every `--use-report-interval`, the tokens
//! used through this follower since its last report go to the primary
//! (`Replication/ReportUse`, on the channel the follower watches on, so its
//! TLS settings apply), in batches of [`BATCH`], off the hot path: the
//! index's read lock is held only to collect and to mark, never across a
//! call. A batch is marked reported only once the primary acknowledged it;
//! a failed one is sent again the next round.
//!
//! Part of replication (layer L5): imports `engine` and `pb`.

use std::convert::Infallible;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::Request;

use crate::engine::Engine;
use crate::pb::replication::{replication_client::ReplicationClient, Use, UseReport};

use super::serve::USES_MAX;

/// Uses per report: half the primary's cap, so a report stays far within
/// the message limit whatever the ids and times.
pub(super) const BATCH: usize = USES_MAX / 2;

/// How long one report may take before it counts as failed.
pub(super) const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reports every use not reported yet; returns how many were reported.
/// Err (with what failed) at the first batch the primary did not
/// acknowledge: it and the rest stay unreported for the next round.
pub(super) async fn report_uses(
    engine: &Engine,
    channel: &Channel,
    secret: &str,
) -> Result<usize, String> {
    let due = engine.unreported_uses();
    if due.is_empty() {
        return Ok(0);
    }
    let mut client = ReplicationClient::new(channel.clone());
    let bearer = super::bearer(secret)?;
    let mut reported = 0;
    for batch in due.chunks(BATCH) {
        let mut req = Request::new(UseReport {
            node: engine.node_name().to_string(),
            uses: batch
                .iter()
                .map(|&(token_id, at_ms)| Use { token_id, at_ms })
                .collect(),
        });
        req.metadata_mut().insert("authorization", bearer.clone());
        req.set_timeout(REPORT_TIMEOUT);
        match tokio::time::timeout(REPORT_TIMEOUT, client.report_use(req)).await {
            Ok(Ok(_)) => {}
            Ok(Err(s)) => return Err(format!("{:?}: {}", s.code(), s.message())),
            Err(_) => return Err("timed out".into()),
        }
        engine.mark_reported(batch);
        reported += batch.len();
    }
    Ok(reported)
}

/// Reports every `every` on `channel`, forever (the caller drops it when
/// the connection ends); a failed round is logged and retried the next.
pub(super) async fn report_every(
    engine: &Engine,
    channel: Channel,
    secret: &str,
    every: Duration,
) -> Infallible {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: nothing to report yet.
    tick.tick().await;
    loop {
        tick.tick().await;
        match report_uses(engine, &channel, secret).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(uses = n, "last uses reported to the primary"),
            Err(e) => {
                tracing::warn!(error = %e, "reporting last uses to the primary failed; will retry");
            }
        }
    }
}
