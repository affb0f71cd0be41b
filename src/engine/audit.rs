//! The audit log (appending an event for an admin call, reading an
//! account's events) and the live-caller check, as they stood in
//! `engine.rs`: these move to `admin` and `access`, and this file goes.

use std::sync::atomic::Ordering;

use super::{store_unavailable, Engine};
use crate::error::{Error, Result};
use crate::index::{Index, TokenState};

/// What an audited admin call was about.
#[derive(Debug, Clone, Default)]
pub struct AuditSubject {
    /// The account acted on.
    pub account_id: u64,
    /// The token acted on (0 if none or not known before the call).
    pub token_id: u64,
    /// The resource acted on, "type/id".
    pub resource: String,
}

impl Engine {
    /// Appends an audit event for an admin call by `caller` and returns its
    /// result unchanged. `created` names a token (or account) the call made,
    /// when the subject did not know it yet.
    pub async fn audited<T>(
        &self,
        caller: u64,
        action: &'static str,
        mut subject: AuditSubject,
        result: Result<T>,
        created: impl Fn(&T) -> (u64, u64),
    ) -> Result<T> {
        let (outcome, detail) = match &result {
            Ok(v) => {
                let (account, token) = created(v);
                if subject.account_id == 0 {
                    subject.account_id = account;
                }
                if subject.token_id == 0 {
                    subject.token_id = token;
                }
                ("OK".to_string(), String::new())
            }
            Err(Error::Internal(_)) => ("INTERNAL".to_string(), "internal error".to_string()),
            Err(e) => (e.code_name().to_string(), e.to_string()),
        };
        let (actor_name, actor_account, actor_root) = {
            let idx = self.index.read();
            idx.tokens
                .get(&caller)
                .map_or((String::new(), 0, false), |t| {
                    (t.name.clone(), t.account_id, t.root)
                })
        };
        // A caller refused in another account is recorded in its own
        // account's log: nobody can write into a log they cannot read.
        if !actor_root && subject.account_id != actor_account {
            subject.account_id = actor_account;
        }
        let event = crate::pb::store::AuditRecord {
            id: self.audit_seq.fetch_add(1, Ordering::AcqRel) + 1,
            account_id: subject.account_id,
            at_ms: self.now_ms(),
            actor_token_id: caller,
            actor_name,
            action: action.to_string(),
            token_id: subject.token_id,
            resource: subject.resource,
            outcome,
            detail,
        };
        if let Err(e) = self.store.append_audit(&event).await {
            tracing::error!(error = %e, action, "could not append the audit event");
        }
        result
    }

    /// Lists audit events of an account for an account admin (or root).
    pub async fn list_audit(
        &self,
        caller: u64,
        req: &crate::pb::v1::ListAuditEventsRequest,
    ) -> Result<crate::pb::v1::ListAuditEventsResponse> {
        let (size, after) = crate::admin::page_bounds(req.page_size, &req.page_token)?;
        self.audit_rules(&self.index.read(), caller, req.account_id)?;
        let records = self
            .store
            .list_audit(req.account_id, after, size + 1)
            .await
            .map_err(|e| store_unavailable(&e))?;
        // `size + 1` records: a page that fills up knows whether more follow.
        let mut page = crate::admin::Page::new(size);
        for r in records {
            let event = crate::pb::v1::AuditEvent {
                id: r.id,
                account_id: r.account_id,
                at: Some(crate::admin::ts(r.at_ms)),
                actor_token_id: r.actor_token_id,
                actor_name: r.actor_name,
                action: r.action,
                token_id: r.token_id,
                resource: r.resource,
                outcome: r.outcome,
                detail: r.detail,
            };
            if !page.push(event) {
                break;
            }
        }
        let next_page_token = page.next_token(|e| e.id.to_string());
        Ok(crate::pb::v1::ListAuditEventsResponse {
            events: page.items,
            next_page_token,
        })
    }
}

impl Engine {
    /// Looks up an authenticated caller's live state: not paused, not expired, not
    /// reset (a token in its grace period only authorizes).
    pub(crate) fn live_caller<'a>(&self, idx: &'a Index, id: u64) -> Result<&'a TokenState> {
        let state = idx
            .tokens
            .get(&id)
            .ok_or_else(|| Error::Unauthenticated("invalid token".into()))?;
        if state.paused {
            return Err(Error::Unauthenticated("token is paused".into()));
        }
        if state.is_expired(self.now_ms()) {
            return Err(Error::Unauthenticated("token has expired".into()));
        }
        // A reset token (possibly the leaked one) keeps authorizing during
        // its grace period, which is what the grace is for, but the admin
        // plane is for its replacement: it cannot mint, edit or delete.
        if state.replaced_by != 0 {
            return Err(Error::PermissionDenied(format!(
                "this token was reset (replaced by token {}): during its grace period it only \
                 authorizes; use its replacement",
                state.replaced_by
            )));
        }
        Ok(state)
    }
}
