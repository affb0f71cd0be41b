//! The audit log of admin calls: every operation in `admin/` records its
//! outcome here itself, so gRPC and the REST facades write the same
//! events; and the log's reading, for account admins.

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::Kind;
use crate::pb::store::AuditRecord;
use crate::pb::v1 as pb;
use crate::wire::{page_bounds, ts, Page};

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

impl AuditSubject {
    /// A call on one token (0: the token it makes).
    pub fn token(account_id: u64, token_id: u64) -> Self {
        AuditSubject {
            account_id,
            token_id,
            resource: String::new(),
        }
    }

    /// A call on a resource, named as it is stored: a domain in its
    /// canonical spelling, so that one domain's events read alike whatever
    /// spelling the call used; anything else clipped to 100 characters.
    pub fn resource(account_id: u64, r: Option<&pb::ResourceRef>) -> Self {
        let resource = r
            .map(|r| {
                let kind = Kind::from_wire(r.r#type);
                let id = match kind {
                    Some(Kind::Domain) => crate::model::canonical_host(&r.id).ok(),
                    _ => None,
                };
                let id = id.unwrap_or_else(|| r.id.chars().take(100).collect::<String>().into());
                format!("{}/{id}", kind.map_or("unspecified", Kind::as_str))
            })
            .unwrap_or_default();
        AuditSubject {
            account_id,
            token_id: 0,
            resource,
        }
    }
}

impl Engine {
    /// Appends an audit event for an admin call by `caller` and returns its
    /// result unchanged. `created` names the account and token the call
    /// made, when the subject did not know them yet.
    pub(crate) async fn audit<T>(
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
            let idx = self.view();
            idx.tokens
                .get(&caller)
                .map_or((String::new(), 0, false), |t| {
                    (t.name.to_string(), t.account_id(), t.root())
                })
        };
        // A caller refused in another account is recorded in its own
        // account's log: nobody can write into a log they cannot read.
        if !actor_root && subject.account_id != actor_account {
            subject.account_id = actor_account;
        }
        self.append_audit(AuditRecord {
            id: 0,
            account_id: subject.account_id,
            at_ms: self.now_ms(),
            actor_token_id: caller,
            actor_name,
            action: action.to_string(),
            token_id: subject.token_id,
            resource: subject.resource,
            outcome,
            detail,
        })
        .await;
        result
    }

    /// ListAuditEvents: an account's events, for an account admin (or
    /// root), by id, paged.
    pub async fn list_audit_events(
        &self,
        caller: u64,
        req: &pb::ListAuditEventsRequest,
    ) -> Result<pb::ListAuditEventsResponse> {
        let (size, after) = page_bounds(req.page_size, &req.page_token)?;
        {
            let idx = self.view();
            crate::access::Access::of(&idx, caller, self.now_ms())?
                .may_read_audit(&idx, req.account_id)?;
        }
        // `size + 1` records: a page that fills up knows whether more follow.
        let records = self.read_audit(req.account_id, after, size + 1).await?;
        let mut page = Page::new(size);
        for r in records {
            let event = pb::AuditEvent {
                id: r.id,
                account_id: r.account_id,
                at: Some(ts(r.at_ms)),
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
        Ok(pb::ListAuditEventsResponse {
            events: page.items,
            next_page_token,
        })
    }
}
