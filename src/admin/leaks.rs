//! Leak reports: a reported string that is a live keyward token (its whole
//! secret proven, as every caller's is: the digest, or argon2 under a
//! budget) is paused at once through the one commit path, so every node
//! and follower denies it from its next call; the pause is audited as
//! `ReportLeak` in the token's account, with who reported it and where it
//! was found. GitHub's reports (`http/leak_reports.rs`) and
//! `Tokens/ReportLeak` both end here.
//!
//! A reported string is never logged, audited or put in an error; the
//! audit event names the token by id.

use crate::engine::{AuthnFailure, Engine};
use crate::error::{Error, Result};
use crate::index::Change;
use crate::leak_report::{clean_text, SOURCE_MAX, URL_MAX};
use crate::pb::store::AuditRecord;
use crate::pb::v1 as pb;

/// The audit action of a leak report.
pub const REPORT_LEAK: &str = "ReportLeak";

/// Who reported a leak and where it was found, as the audit event says.
#[derive(Debug, Clone, Default)]
pub struct LeakReporter {
    /// The reporting caller's token; 0 for a signed GitHub report.
    pub actor_token_id: u64,
    /// The caller's token name, or who signed the report.
    pub actor_name: String,
    /// Where the token was found: GitHub's `source` (`content`, `commit`,
    /// ...), or `grpc`.
    pub source: String,
    /// The report's `url`.
    pub url: String,
}

/// A live token a report named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Live {
    token_id: u64,
    account_id: u64,
    /// It was paused before this report.
    was_paused: bool,
}

impl Engine {
    /// Judges one reported string: `Ok(true)` when it is a live keyward
    /// token (not expired; paused, or in a reset's grace period, counts),
    /// which is then paused and audited; `Ok(false)` for anything else.
    /// Counted in `keyward_leak_reports_total`. Err when it could not be
    /// judged: `argon2_left` ran out or argon2 is shed (UNAVAILABLE), the
    /// store failed, or this node is a follower.
    pub async fn judge_leak(
        &self,
        token: &str,
        reporter: &LeakReporter,
        argon2_left: &mut usize,
    ) -> Result<bool> {
        if let Some(f) = self.follower() {
            return Err(Error::FailedPrecondition(format!(
                "this keyward is a read-only follower of {}: report leaks to the primary",
                f.primary
            )));
        }
        self.ensure_ready()?;
        let proven = match self.authenticate_within(token, argon2_left).await {
            Err(AuthnFailure::Unknown) if self.unseen_token(token) => {
                // Made on another node of the shared store a moment ago.
                self.catch_up_unseen().await;
                self.authenticate_within(token, argon2_left).await
            }
            other => other,
        };
        let id =
            match proven {
                Ok(id) => Some(id),
                Err(AuthnFailure::Malformed | AuthnFailure::Unknown) => None,
                Err(AuthnFailure::Overloaded) => return Err(Error::Unavailable(
                    "token verification is overloaded; the report was not judged, retry shortly"
                        .into(),
                )),
            };
        let live = match id {
            Some(id) => self.pause_leaked(id).await?,
            None => None,
        };
        let leaks = &self.metrics().leaks;
        let Some(live) = live else {
            leaks.false_positive.increment(1);
            return Ok(false);
        };
        leaks.true_positive.increment(1);
        if crate::logs::ADMIN_CHANGES.admit() {
            tracing::info!(
                account.id = live.account_id,
                token.id = live.token_id,
                was_paused = live.was_paused,
                source = %clean_text(&reporter.source, SOURCE_MAX),
                "leaked token reported; paused"
            );
        }
        let state = if live.was_paused {
            "already paused"
        } else {
            "paused"
        };
        let detail = format!(
            "true_positive, {state}; source: {}; url: {}",
            clean_text(&reporter.source, SOURCE_MAX),
            clean_text(&reporter.url, URL_MAX),
        );
        self.append_audit(AuditRecord {
            id: 0,
            account_id: live.account_id,
            at_ms: self.now_ms(),
            actor_token_id: reporter.actor_token_id,
            actor_name: reporter.actor_name.clone(),
            action: REPORT_LEAK.into(),
            token_id: live.token_id,
            resource: String::new(),
            outcome: "OK".into(),
            detail,
        })
        .await;
        Ok(true)
    }

    /// Pauses token `id` unless it is gone or expired (then `None`: not a
    /// live token); a token paused already is left as it is.
    async fn pause_leaked(&self, id: u64) -> Result<Option<Live>> {
        let now = self.now_ms();
        {
            // Most reports name a token paused already (GitHub reports a
            // secret again from every copy found): no writer lock for those.
            let idx = self.view();
            match idx.tokens.get(&id) {
                None => return Ok(None),
                Some(t) if t.is_expired(now) => return Ok(None),
                Some(t) if t.paused() => {
                    return Ok(Some(Live {
                        token_id: id,
                        account_id: t.account_id(),
                        was_paused: true,
                    }))
                }
                Some(_) => {}
            }
        }
        self.mutate_unattended(|idx, now| {
            let Some(t) = idx.tokens.get(&id).filter(|t| !t.is_expired(now)) else {
                return (vec![], None);
            };
            let live = Live {
                token_id: id,
                account_id: t.account_id(),
                was_paused: t.paused(),
            };
            if t.paused() {
                return (vec![], Some(live));
            }
            let mut record = t.to_record(idx.key());
            record.paused = true;
            (vec![Change::PutToken(record)], Some(live))
        })
        .await
    }

    /// `Tokens/ReportLeak` by authenticated `caller`: the secret judged
    /// with one argon2 verify at most. A true positive is audited in the
    /// token's account (its admins must see why it stopped); anything else
    /// in the caller's own, with no token named.
    pub async fn report_leak(
        &self,
        caller: u64,
        req: &pb::ReportLeakRequest,
    ) -> Result<pb::ReportLeakResponse> {
        let (actor_name, actor_account) = {
            let idx = self.view();
            let caller = self.access(&idx, caller)?.caller();
            (caller.name.clone(), caller.account_id())
        };
        let reporter = LeakReporter {
            actor_token_id: caller,
            actor_name: actor_name.to_string(),
            source: "grpc".into(),
            url: req.url.clone(),
        };
        let mut argon2_left = 1;
        let true_positive = self
            .judge_leak(&req.secret, &reporter, &mut argon2_left)
            .await?;
        if !true_positive {
            self.append_audit(AuditRecord {
                id: 0,
                account_id: actor_account,
                at_ms: self.now_ms(),
                actor_token_id: caller,
                actor_name: reporter.actor_name,
                action: REPORT_LEAK.into(),
                token_id: 0,
                resource: String::new(),
                outcome: "OK".into(),
                detail: format!(
                    "false_positive; source: grpc; url: {}",
                    clean_text(&reporter.url, URL_MAX)
                ),
            })
            .await;
        }
        Ok(pb::ReportLeakResponse { true_positive })
    }
}
