//! Tokens: created with grants inside what the caller holds at ADMIN,
//! seen and changed only by callers who could have made them, reset with a
//! grace period, paused, deleted; a domain always keeps a live ADMIN token.

use super::AuditSubject;
use crate::access::{derived_name, keeps_every_domain, may_change_expiry};
use crate::engine::{Engine, Mint, NewToken};
use crate::error::{Error, Result};
use crate::index::{Change, TokenState};
use crate::model;
use crate::pb::v1 as pb;
use crate::wire::{
    check_expiry, check_grace, mask_paths, ms_from, page_bounds, token_to_wire, Page,
};

impl Engine {
    /// CreateToken.
    pub async fn create_token(
        &self,
        caller: u64,
        req: pb::CreateTokenRequest,
    ) -> Result<pb::TokenWithSecret> {
        let subject = AuditSubject::token(req.account_id, 0);
        let result = self.create_token_now(caller, &req).await;
        let created = |t: &pb::TokenWithSecret| (0, t.token.as_ref().map_or(0, |t| t.id));
        self.audit(caller, "CreateToken", subject, result, created)
            .await
    }

    async fn create_token_now(
        &self,
        caller: u64,
        req: &pb::CreateTokenRequest,
    ) -> Result<pb::TokenWithSecret> {
        model::validate_name("name", &req.name)?;
        let grants = model::grants_from_wire("grants", &req.grants)?;
        let scopes = model::scopes_from_wire("scopes", &req.scopes)?;
        let expires_at_ms = check_expiry("expires_at", req.expires_at.as_ref(), self.now_ms())?;
        let limits = model::rate_limits_from_wire("rate_limits", &req.rate_limits)?;
        let done = self
            .mutate(caller, Mint::Token, |p| {
                let account = p.access.token_account(p.idx, req.account_id)?;
                p.access.check_grantable(p.idx, account, &grants, &scopes)?;
                account.policy.check("expires_at", expires_at_ms, p.now)?;
                let mut token = p.mint(NewToken {
                    account_id: account.id,
                    name: req.name.clone(),
                    created_by: p.access.caller().name.to_string(),
                    grants: grants.clone(),
                    scopes: scopes.clone(),
                    expires_at_ms,
                    replaces: 0,
                });
                token.rate_limits = limits.to_records();
                Ok((vec![p.counters(0, 1), Change::PutToken(token)], ()))
            })
            .await?;
        if crate::logs::ADMIN_CHANGES.admit() {
            let id = done.secret.as_ref().map_or(0, |(id, _)| *id);
            tracing::info!(account.id = req.account_id, token.id = id, "token created");
        }
        self.with_secret(done.secret)
    }

    /// GetToken.
    pub fn get_token(&self, caller: u64, req: &pb::GetTokenRequest) -> Result<pb::Token> {
        let idx = self.view();
        let (_, token) = self
            .access(&idx, caller)?
            .token(&idx, req.account_id, req.token_id)?;
        Ok(token_to_wire(token))
    }

    /// ListTokens: the account's tokens the caller may manage, by id, paged.
    pub fn list_tokens(
        &self,
        caller: u64,
        req: &pb::ListTokensRequest,
    ) -> Result<pb::ListTokensResponse> {
        let (size, after) = page_bounds(req.page_size, &req.page_token)?;
        let idx = self.view();
        let access = self.access(&idx, caller)?;
        let account = access.token_account(&idx, req.account_id)?;
        let before = match &req.expiring_before {
            Some(t) => Some(ms_from("expiring_before", t)?),
            None => None,
        };
        let mut page = Page::new(size);
        let visible = account
            .tokens
            .starting_at(after.saturating_add(1))
            .filter_map(|id| idx.tokens.get(&id))
            .filter(|t| before.is_none_or(|b| t.expires_at_ms().is_some_and(|e| e < b)))
            .filter(|t| access.can_manage(&idx, account, t));
        for t in visible {
            if !page.push(token_to_wire(t)) {
                break;
            }
        }
        let next_page_token = page.next_token(|t| t.id.to_string());
        Ok(pb::ListTokensResponse {
            tokens: page.items,
            next_page_token,
        })
    }

    /// UpdateToken: rename, replace grants, replace scopes, set or clear
    /// the expiry (FieldMask).
    pub async fn update_token(
        &self,
        caller: u64,
        req: pb::UpdateTokenRequest,
    ) -> Result<pb::Token> {
        let subject = AuditSubject::token(req.account_id, req.token_id);
        let result = self.update_token_now(caller, &req).await;
        self.audit(caller, "UpdateToken", subject, result, |_| (0, 0))
            .await
    }

    async fn update_token_now(
        &self,
        caller: u64,
        req: &pb::UpdateTokenRequest,
    ) -> Result<pb::Token> {
        let paths = mask_paths(
            req.update_mask.as_ref(),
            "name, grants, scopes, expires_at, rate_limits",
        )?;
        let (mut name, mut grants, mut scopes, mut limits) = (None, None, None, None);
        // Some(None): the path is given and the field unset, so the expiry
        // is cleared.
        let mut expiry: Option<Option<i64>> = None;
        for (i, p) in paths.iter().enumerate() {
            match p.as_str() {
                "name" => {
                    model::validate_name("name", &req.name)?;
                    name = Some(req.name.clone());
                }
                "grants" => grants = Some(model::grants_from_wire("grants", &req.grants)?),
                "scopes" => scopes = Some(model::scopes_from_wire("scopes", &req.scopes)?),
                "expires_at" => {
                    let now = self.now_ms();
                    expiry = Some(check_expiry("expires_at", req.expires_at.as_ref(), now)?);
                }
                "rate_limits" => {
                    limits = Some(model::rate_limits_from_wire(
                        "rate_limits",
                        &req.rate_limits,
                    )?);
                }
                _ => {
                    return Err(Error::invalid(
                        format!("update_mask.paths[{i}]"),
                        "must be name, grants, scopes, expires_at or rate_limits",
                    ))
                }
            }
        }
        self.mutate(caller, Mint::No, |p| {
            let (account, target) =
                p.access
                    .token_to_change(p.idx, req.account_id, req.token_id, "edited")?;
            let new_grants = grants.as_deref().unwrap_or(target.grants());
            let new_scopes = scopes.as_deref().unwrap_or(target.scopes());
            p.access
                .check_grantable(p.idx, account, new_grants, new_scopes)?;
            keeps_every_domain(p.idx, account, target, new_grants, p.now)?;
            if let Some(e) = expiry {
                may_change_expiry(target, e, p.now)?;
                account.policy.check("expires_at", e, p.now)?;
            }
            let key = p.idx.key();
            let mut next = TokenState::from_record(&target.to_record(key), key);
            if let Some(n) = &name {
                next.name = n.as_str().into();
            }
            next.rights = crate::model::Rights::new(new_grants, new_scopes, target.created_by());
            if let Some(e) = expiry {
                next.set_expires_at_ms(e);
            }
            let mut record = next.to_record(key);
            if let Some(l) = &limits {
                // Unchanged limits keep what was spent (the index carries
                // the live state; the record says the same).
                record.rate_limits = l.to_records();
                record.rate_full_at_ms = match (&target.budget, l.is_empty()) {
                    (Some(b), false) => b.carried(&l.specs).full_at_ms(),
                    _ => Vec::new(),
                };
            }
            Ok((vec![Change::PutToken(record)], ()))
        })
        .await?;
        if crate::logs::ADMIN_CHANGES.admit() {
            tracing::info!(account.id = req.account_id, token.id = req.token_id, fields = ?paths, "token updated");
        }
        self.token_view(req.token_id)
    }

    /// ResetToken: the old token expires after the grace period (the
    /// request's, never above the server's; the server's when unset); a new
    /// one with the same grants and scopes is returned once.
    pub async fn reset_token(
        &self,
        caller: u64,
        req: pb::ResetTokenRequest,
    ) -> Result<pb::TokenWithSecret> {
        let subject = AuditSubject::token(req.account_id, req.token_id);
        let result = self.reset_token_now(caller, &req).await;
        self.audit(caller, "ResetToken", subject, result, |_| (0, 0))
            .await
    }

    async fn reset_token_now(
        &self,
        caller: u64,
        req: &pb::ResetTokenRequest,
    ) -> Result<pb::TokenWithSecret> {
        let expires_at_ms = check_expiry("expires_at", req.expires_at.as_ref(), self.now_ms())?;
        let grace = check_grace("grace", req.grace.as_ref(), self.settings().reset_grace)?;
        let done = self
            .mutate(caller, Mint::Token, |p| {
                let (account, old) =
                    p.access
                        .may_reset(p.idx, req.account_id, req.token_id, p.now)?;
                account.policy.check("expires_at", expires_at_ms, p.now)?;
                let id = p.idx.next_token_id;
                let mut record = p.mint(NewToken {
                    account_id: account.id,
                    name: derived_name(&old.name, id),
                    created_by: p.access.caller().name.to_string(),
                    grants: old.grants().to_vec(),
                    scopes: old.scopes().to_vec(),
                    expires_at_ms,
                    replaces: old.id(),
                });
                // A reset never resumes: a paused token's replacement is paused.
                record.paused = old.paused();
                let mut old_record = old.to_record(p.idx.key());
                // The new token inherits the limits and, in the index, the
                // old token's very budget (shared during the grace).
                record.rate_limits.clone_from(&old_record.rate_limits);
                record
                    .rate_full_at_ms
                    .clone_from(&old_record.rate_full_at_ms);
                if !old_record.rate_limits.is_empty() {
                    record.budget_id = crate::index::budget_key(&old_record);
                }
                let grace_end = p.now.saturating_add(grace);
                old_record.expires_at_ms = if old_record.expires_at_ms == 0 {
                    grace_end
                } else {
                    old_record.expires_at_ms.min(grace_end)
                };
                old_record.replaced_by = id;
                let changes = vec![
                    p.counters(0, 1),
                    Change::PutToken(old_record),
                    Change::PutToken(record),
                ];
                Ok((changes, ()))
            })
            .await?;
        if crate::logs::ADMIN_CHANGES.admit() {
            tracing::info!(
                account.id = req.account_id,
                token.id = req.token_id,
                new_token.id = done.secret.as_ref().map_or(0, |(id, _)| *id),
                "token reset"
            );
        }
        self.with_secret(done.secret)
    }

    /// PauseToken (`paused`) or ResumeToken.
    pub async fn set_paused(
        &self,
        caller: u64,
        account_id: u64,
        token_id: u64,
        paused: bool,
    ) -> Result<pb::Token> {
        let result = async {
            self.mutate(caller, Mint::No, |p| {
                let (_, target) = p
                    .access
                    .token_to_change(p.idx, account_id, token_id, "paused")?;
                let mut record = target.to_record(p.idx.key());
                record.paused = paused;
                Ok((vec![Change::PutToken(record)], ()))
            })
            .await?;
            if crate::logs::ADMIN_CHANGES.admit() {
                tracing::info!(
                    account.id = account_id,
                    token.id = token_id,
                    paused,
                    "token pause state set"
                );
            }
            self.token_view(token_id)
        }
        .await;
        let action = if paused { "PauseToken" } else { "ResumeToken" };
        let subject = AuditSubject::token(account_id, token_id);
        self.audit(caller, action, subject, result, |_| (0, 0))
            .await
    }

    /// DeleteToken: at once; refused for the last token on a domain.
    pub async fn delete_token(
        &self,
        caller: u64,
        req: &pb::DeleteTokenRequest,
    ) -> Result<pb::DeleteTokenResponse> {
        let result = async {
            self.mutate(caller, Mint::No, |p| {
                let (account, target) =
                    p.access
                        .token_to_change(p.idx, req.account_id, req.token_id, "deleted")?;
                keeps_every_domain(p.idx, account, target, &[], p.now)?;
                Ok((vec![Change::DeleteToken(req.token_id)], ()))
            })
            .await?;
            if crate::logs::ADMIN_CHANGES.admit() {
                tracing::info!(
                    account.id = req.account_id,
                    token.id = req.token_id,
                    "token deleted"
                );
            }
            Ok(pb::DeleteTokenResponse {
                token_id: req.token_id,
            })
        }
        .await;
        let subject = AuditSubject::token(req.account_id, req.token_id);
        self.audit(caller, "DeleteToken", subject, result, |_| (0, 0))
            .await
    }
}
