//! Accounts: created by the root token with an ADMIN token on them; seen
//! by their own tokens (root sees all).

use super::AuditSubject;
use crate::engine::{Engine, Mint, NewToken};
use crate::error::{Error, Result};
use crate::index::Change;
use crate::model::{self, Grant, Level, ResourceKey};
use crate::pb::store::AccountRecord;
use crate::pb::v1 as pb;
use crate::wire::{account_to_wire, mask_paths, page_bounds, policy_from_wire, Page};

impl Engine {
    /// CreateAccount: root only; the account and an ADMIN token on it.
    pub async fn create_account(
        &self,
        caller: u64,
        req: pb::CreateAccountRequest,
    ) -> Result<pb::CreateAccountResponse> {
        let result = async {
            model::validate_name("name", &req.name)?;
            let done = self
                .mutate(caller, Mint::Token, |p| {
                    p.access.require_root("create accounts")?;
                    let account_id = p.idx.next_account_id;
                    if account_id >= crate::index::ID_LIMIT {
                        // Tokens keep account ids in 4 bytes.
                        return Err(Error::FailedPrecondition(
                            "account ids are exhausted (4,294,967,294 issued)".into(),
                        ));
                    }
                    let token = p.mint(NewToken {
                        account_id,
                        name: format!(
                            "{} admin token",
                            req.name.chars().take(80).collect::<String>()
                        ),
                        created_by: p.access.caller().name.to_string(),
                        grants: vec![Grant {
                            resource: ResourceKey::account(account_id),
                            level: Level::Admin,
                        }],
                        scopes: Vec::new(),
                        expires_at_ms: None,
                        replaces: 0,
                    });
                    let changes = vec![
                        p.counters(1, 1),
                        Change::PutAccount(AccountRecord {
                            id: account_id,
                            name: req.name.clone(),
                            created_at_ms: p.now,
                            ..AccountRecord::default()
                        }),
                        Change::PutToken(token),
                    ];
                    Ok((changes, account_id))
                })
                .await?;
            let account_id = done.answer;
            if crate::logs::ADMIN_CHANGES.admit() {
                tracing::info!(
                    account.id = account_id,
                    token.id = done.secret.as_ref().map_or(0, |(id, _)| *id),
                    "account created"
                );
            }
            let admin_token = self.with_secret(done.secret)?;
            let account = self.view().accounts.get(&account_id).map(account_to_wire);
            Ok(pb::CreateAccountResponse {
                account,
                admin_token: Some(admin_token),
            })
        }
        .await;
        let created = |r: &pb::CreateAccountResponse| {
            let token = r.admin_token.as_ref().and_then(|t| t.token.as_ref());
            (
                r.account.as_ref().map_or(0, |a| a.id),
                token.map_or(0, |t| t.id),
            )
        };
        self.audit(
            caller,
            "CreateAccount",
            AuditSubject::default(),
            result,
            created,
        )
        .await
    }

    /// GetAccount: the caller's own account, or any for root.
    pub fn get_account(&self, caller: u64, req: &pb::GetAccountRequest) -> Result<pb::Account> {
        let idx = self.view();
        self.access(&idx, caller)?
            .account(&idx, req.account_id)
            .map(account_to_wire)
    }

    /// ListAccounts: all for root, the caller's own otherwise.
    pub fn list_accounts(
        &self,
        caller: u64,
        req: &pb::ListAccountsRequest,
    ) -> Result<pb::ListAccountsResponse> {
        let (size, after) = page_bounds(req.page_size, &req.page_token)?;
        let idx = self.view();
        let access = self.access(&idx, caller)?;
        let mut page = Page::new(size);
        let visible = idx
            .accounts
            .range(after.saturating_add(1)..)
            .map(|(_, a)| a)
            .filter(|a| access.sees_account(a));
        for a in visible {
            if !page.push(account_to_wire(a)) {
                break;
            }
        }
        let next_page_token = page.next_token(|a| a.id.to_string());
        Ok(pb::ListAccountsResponse {
            accounts: page.items,
            next_page_token,
        })
    }

    /// UpdateAccount: rename, or set the token policy (FieldMask); root or
    /// an unrestricted ADMIN of the account.
    pub async fn update_account(
        &self,
        caller: u64,
        req: pb::UpdateAccountRequest,
    ) -> Result<pb::Account> {
        let subject = AuditSubject::token(req.account_id, 0);
        let result = self.update_account_now(caller, &req).await;
        self.audit(caller, "UpdateAccount", subject, result, |_| (0, 0))
            .await
    }

    async fn update_account_now(
        &self,
        caller: u64,
        req: &pb::UpdateAccountRequest,
    ) -> Result<pb::Account> {
        let paths = mask_paths(
            req.update_mask.as_ref(),
            "name, policy, policy.max_token_lifetime, policy.require_expiry",
        )?;
        let asked = policy_from_wire("policy", &req.policy.unwrap_or_default())?;
        let (mut name, mut lifetime, mut require) = (None, None, None);
        for (i, p) in paths.iter().enumerate() {
            match p.as_str() {
                "name" => {
                    model::validate_name("name", &req.name)?;
                    name = Some(req.name.clone());
                }
                "policy" => {
                    lifetime = Some(asked.max_token_lifetime_ms);
                    require = Some(asked.require_expiry);
                }
                "policy.max_token_lifetime" => lifetime = Some(asked.max_token_lifetime_ms),
                "policy.require_expiry" => require = Some(asked.require_expiry),
                _ => {
                    return Err(Error::invalid(
                        format!("update_mask.paths[{i}]"),
                        "must be name, policy, policy.max_token_lifetime or policy.require_expiry",
                    ))
                }
            }
        }
        self.mutate(caller, Mint::No, |p| {
            let account = p.access.may_update_account(p.idx, req.account_id)?;
            let mut next = account.to_record();
            if let Some(n) = &name {
                next.name.clone_from(n);
            }
            let mut policy = account.policy;
            if let Some(l) = lifetime {
                policy.max_token_lifetime_ms = l;
            }
            if let Some(r) = require {
                policy.require_expiry = r;
            }
            policy.store(&mut next);
            Ok((vec![Change::PutAccount(next)], ()))
        })
        .await?;
        if crate::logs::ADMIN_CHANGES.admit() {
            tracing::info!(account.id = req.account_id, fields = ?paths, "account updated");
        }
        self.get_account(
            caller,
            &pb::GetAccountRequest {
                account_id: req.account_id,
            },
        )
    }
}
