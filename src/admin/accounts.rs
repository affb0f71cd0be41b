//! Accounts: created by the root token with an ADMIN token on them; seen
//! by their own tokens (root sees all).

use super::AuditSubject;
use crate::engine::{Engine, Mint, NewToken};
use crate::error::Result;
use crate::index::Change;
use crate::model::{self, Grant, Level, ResourceKey};
use crate::pb::store::AccountRecord;
use crate::pb::v1 as pb;
use crate::wire::{account_to_wire, page_bounds, Page};

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
                    let token = p.mint(NewToken {
                        account_id,
                        name: format!(
                            "{} admin token",
                            req.name.chars().take(80).collect::<String>()
                        ),
                        created_by: p.access.caller().name.clone(),
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
}
