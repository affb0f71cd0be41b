//! Who may do what: every admin rule, as pure functions over the index.
//!
//! An [`Access`] is a caller's live token, read under whatever lock the
//! caller holds; its methods answer "may this caller see, grant, change or
//! delete this?" and name the refusal. Nothing here takes a lock, reads a
//! store or a clock (`now` is passed in), so each rule is tested on its own
//! in `access/tests.rs`.
//!
//! - A caller manages only tokens whose grants lie inside what it holds at
//!   ADMIN (and, if it is scope-restricted, whose scopes it holds), and can
//!   grant only that (no escalation). Scope-restricted callers need the
//!   `tokens` scope at ADMIN to manage tokens at all.
//! - Nothing crosses accounts; the root token manages every account.
//! - A token that was reset only authorizes (it cannot act as an admin),
//!   and a domain always keeps a live token holding ADMIN on it.
//!
//! Layer L3: imports the vocabulary (`error`, `model`) and `index` only.

use crate::error::{Denial, Error, Result};
use crate::index::{AccountState, Index, Lookup, TokenState};
use crate::model::{Grant, Kind, Level, ResourceKey, ScopeGrant};
use crate::pb::v1::DenyReason;

#[cfg(test)]
mod tests;

/// The feature scope that lets a scope-restricted token manage tokens.
pub const TOKENS_SCOPE: &str = "tokens";
/// The feature scope that lets a scope-restricted token manage domains.
pub const DOMAINS_SCOPE: &str = "domains";

/// A caller's access: its token, live when it was read.
#[derive(Clone, Copy)]
pub struct Access<'a> {
    /// The caller's token as the index holds it.
    caller: &'a TokenState,
}

impl std::fmt::Debug for Access<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("caller", &self.caller.id())
            .finish()
    }
}

impl<'a> Access<'a> {
    /// The access of authenticated token `caller_id`, if it may act at
    /// all: it exists, is not paused, not expired, and not reset (a token
    /// in its grace period only authorizes).
    pub fn of(idx: &'a Index, caller_id: u64, now: i64) -> Result<Self> {
        let state = idx
            .tokens
            .get(&caller_id)
            .ok_or_else(|| Denial::of(DenyReason::UnknownToken).error())?;
        if state.paused() {
            return Err(Denial::of(DenyReason::Paused).error());
        }
        if state.is_expired(now) {
            return Err(Denial::of(DenyReason::Expired).error());
        }
        // A reset token (possibly the leaked one) keeps authorizing during
        // its grace period, which is what the grace is for, but the admin
        // plane is for its replacement: it cannot mint, edit or delete.
        if state.replaced_by() != 0 {
            return Err(Error::PermissionDenied(format!(
                "this token was reset (replaced by token {}): during its grace period it only \
                 authorizes; use its replacement",
                state.replaced_by()
            )));
        }
        Ok(Access { caller: state })
    }

    /// The caller's token.
    pub fn caller(&self) -> &'a TokenState {
        self.caller
    }

    /// Fails unless the caller is the root token; `what` names the act
    /// ("create accounts").
    pub fn require_root(&self, what: &str) -> Result<()> {
        if self.caller.root() {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "only the root token can {what}"
            )))
        }
    }

    /// The account, if the caller may act in it at all.
    pub fn account(&self, idx: &'a Index, account_id: u64) -> Result<&'a AccountState> {
        if !self.caller.root() && self.caller.account_id() != account_id {
            return Err(Error::PermissionDenied(format!(
                "this token has no access to account {account_id}"
            )));
        }
        idx.accounts
            .get(&account_id)
            .ok_or_else(|| Error::NotFound(format!("account {account_id} not found")))
    }

    /// Whether the caller may see `account` in a listing.
    pub fn sees_account(&self, account: &AccountState) -> bool {
        self.caller.root() || account.id == self.caller.account_id()
    }

    /// The level the caller holds on a resource of `account`.
    pub fn level_on(
        &self,
        idx: &Index,
        account: &AccountState,
        resource: &ResourceKey,
    ) -> Option<Level> {
        if self.caller.root() {
            return Some(Level::Admin);
        }
        idx.level_on(account, self.caller.grants(), resource)
    }

    /// Fails unless the caller is unrestricted by feature (root, or no
    /// scopes): for what no feature scope covers, `what` names it.
    pub fn require_unrestricted(&self, what: &str) -> Result<()> {
        if self.caller.root() || self.caller.scopes().is_empty() {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "{what} needs a token unrestricted by scopes"
            )))
        }
    }

    /// Fails unless the caller is unrestricted or holds `scope` at ADMIN.
    pub fn require_scope(&self, scope: &str) -> Result<()> {
        if self.caller.root()
            || self.caller.scopes().is_empty()
            || self
                .caller
                .scopes()
                .iter()
                .any(|s| s.name() == scope && s.level == Level::Admin)
        {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "this token lacks the {scope} scope at ADMIN"
            )))
        }
    }

    /// Whether the caller's scopes cover `scopes` (an unrestricted caller
    /// covers all).
    pub fn covers_scopes(&self, scopes: &[ScopeGrant]) -> bool {
        if self.caller.root() || self.caller.scopes().is_empty() {
            return true;
        }
        !scopes.is_empty()
            && scopes.iter().all(|s| {
                self.caller
                    .scopes()
                    .iter()
                    .any(|c| c.name == s.name && c.level >= s.level)
            })
    }

    /// Whether the caller may see and manage `target`.
    pub fn can_manage(&self, idx: &Index, account: &AccountState, target: &TokenState) -> bool {
        if self.caller.root() {
            return true;
        }
        // A token left with no grants (its resources were deleted) belongs
        // to the account's admins only.
        let within = if target.grants().is_empty() {
            self.level_on(idx, account, &ResourceKey::account(account.id)) == Some(Level::Admin)
        } else {
            target
                .grants()
                .iter()
                .all(|g| self.level_on(idx, account, &g.resource) == Some(Level::Admin))
        };
        !target.root() && within && self.covers_scopes(target.scopes())
    }

    /// The account of a token call and the token in it, for a caller who
    /// may manage tokens (the `tokens` scope) and this one. A token outside
    /// the caller's reach does not exist for it: the same NOT_FOUND as an
    /// id never issued, so that the answer does not tell them apart.
    pub fn token(
        &self,
        idx: &'a Index,
        account_id: u64,
        token_id: u64,
    ) -> Result<(&'a AccountState, &'a TokenState)> {
        self.require_scope(TOKENS_SCOPE)?;
        let account = self.account(idx, account_id)?;
        let target = idx
            .tokens
            .get(&token_id)
            .filter(|t| t.account_id() == account.id && self.can_manage(idx, account, t))
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "token {token_id} not found in account {}",
                    account.id
                ))
            })?;
        Ok((account, target))
    }

    /// As [`Access::token`], for a change to the token: the root token
    /// cannot be `changed` ("edited", "paused", "deleted").
    pub fn token_to_change(
        &self,
        idx: &'a Index,
        account_id: u64,
        token_id: u64,
        changed: &str,
    ) -> Result<(&'a AccountState, &'a TokenState)> {
        let (account, target) = self.token(idx, account_id, token_id)?;
        if target.root() {
            return Err(Error::FailedPrecondition(format!(
                "the root token cannot be {changed}"
            )));
        }
        Ok((account, target))
    }

    /// The account a caller may create or list tokens in (the `tokens`
    /// scope, and the account).
    pub fn token_account(&self, idx: &'a Index, account_id: u64) -> Result<&'a AccountState> {
        self.require_scope(TOKENS_SCOPE)?;
        self.account(idx, account_id)
    }

    /// Fails unless every grant is on a registered resource of `account`
    /// that the caller holds at ADMIN, and the scopes are within the
    /// caller's.
    pub fn check_grantable(
        &self,
        idx: &Index,
        account: &AccountState,
        grants: &[Grant],
        scopes: &[ScopeGrant],
    ) -> Result<()> {
        for (i, g) in grants.iter().enumerate() {
            match idx.lookup(account, g.resource.kind, &g.resource.id) {
                Lookup::Found(_) => {}
                _ => {
                    return Err(Error::invalid(
                        format!("grants[{i}].resource"),
                        format!("{} is not a resource of account {}", g.resource, account.id),
                    ))
                }
            }
            if self.level_on(idx, account, &g.resource) != Some(Level::Admin) {
                return Err(Error::PermissionDenied(format!(
                    "cannot grant {}: this token does not hold ADMIN on it",
                    g.resource
                )));
            }
        }
        if !self.covers_scopes(scopes) {
            return Err(Error::PermissionDenied(
                "cannot grant scopes this token does not hold (a scope-restricted token cannot create an unrestricted one)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Who may reset which token: a live one the caller manages, not reset
    /// before.
    pub fn may_reset(
        &self,
        idx: &'a Index,
        account_id: u64,
        token_id: u64,
        now: i64,
    ) -> Result<(&'a AccountState, &'a TokenState)> {
        let (account, old) = self.token(idx, account_id, token_id)?;
        if old.replaced_by() != 0 {
            return Err(Error::FailedPrecondition(format!(
                "token {} was already reset (replaced by token {})",
                old.id(),
                old.replaced_by()
            )));
        }
        if old.is_expired(now) {
            return Err(Error::FailedPrecondition(format!(
                "token {} has expired and cannot be reset",
                old.id()
            )));
        }
        Ok((account, old))
    }

    /// Who may register `resource` under `parent` in `account_id`, and
    /// whether it is free.
    pub fn may_register(
        &self,
        idx: &'a Index,
        account_id: u64,
        resource: &ResourceKey,
        parent: &ResourceKey,
    ) -> Result<&'a AccountState> {
        let account = self.account(idx, account_id)?;
        if resource.kind == Kind::Domain {
            // A domain comes with a token: the caller must be allowed to
            // mint tokens, and the token gets no feature the caller lacks.
            self.require_scope(TOKENS_SCOPE)?;
            self.require_scope(DOMAINS_SCOPE)?;
        } else {
            self.require_unrestricted("registering a project or sandbox")?;
        }
        if let Lookup::Unknown | Lookup::OtherAccount = idx.lookup(account, parent.kind, &parent.id)
        {
            return Err(Error::NotFound(format!(
                "parent {parent} not found in account {}",
                account.id
            )));
        }
        if self.level_on(idx, account, parent) != Some(Level::Admin) {
            return Err(Error::PermissionDenied(format!(
                "registering under {parent} needs ADMIN on it"
            )));
        }
        // Resource ids are global names (a domain is a domain): one
        // account only, or another account's tokens could pass the SMTP
        // check for it.
        if idx.is_registered(resource.kind, &resource.id) {
            return Err(Error::AlreadyExists(format!(
                "{resource} is already registered"
            )));
        }
        Ok(account)
    }

    /// Who may delete `resource` of `account_id`: it exists there and the
    /// caller holds ADMIN on it.
    pub fn may_delete_resource(
        &self,
        idx: &'a Index,
        account_id: u64,
        resource: &ResourceKey,
    ) -> Result<&'a AccountState> {
        let account = self.account(idx, account_id)?;
        if resource.kind == Kind::Domain {
            self.require_scope(DOMAINS_SCOPE)?;
        } else {
            // Deleting a project deletes its sandboxes and drops other
            // tokens' grants on them: no feature scope covers that.
            self.require_unrestricted("deleting a project or sandbox")?;
        }
        if !account.resources[resource.kind.slot()].contains_key(resource.id.as_str()) {
            return Err(Error::NotFound(format!(
                "{resource} not found in account {}",
                account.id
            )));
        }
        if self.level_on(idx, account, resource) != Some(Level::Admin) {
            return Err(Error::PermissionDenied(format!(
                "deleting {resource} needs ADMIN on it"
            )));
        }
        Ok(account)
    }

    /// Who may read an account's audit log: root, or an ADMIN of the
    /// account unrestricted by scopes (the log spans every feature, so no
    /// feature scope covers it).
    pub fn may_read_audit(&self, idx: &'a Index, account_id: u64) -> Result<()> {
        self.account_admin(idx, account_id, "the audit log")
            .map(|_| ())
    }

    /// Who may rename an account or set its token policy: root, or an
    /// ADMIN of the account unrestricted by scopes (no feature scope covers
    /// the account's own settings).
    pub fn may_update_account(&self, idx: &'a Index, account_id: u64) -> Result<&'a AccountState> {
        self.account_admin(idx, account_id, "changing the account")
    }

    /// The account, if the caller is root or an ADMIN of it unrestricted by
    /// scopes; `what` names the thing refused.
    fn account_admin(
        &self,
        idx: &'a Index,
        account_id: u64,
        what: &str,
    ) -> Result<&'a AccountState> {
        self.require_unrestricted(what)?;
        let account = self.account(idx, account_id)?;
        if self.level_on(idx, account, &ResourceKey::account(account.id)) != Some(Level::Admin) {
            return Err(Error::PermissionDenied(format!(
                "{what} is for account admins"
            )));
        }
        Ok(account)
    }
}

/// The first domain that `token` is the last live holder of at `level` or
/// above, among the domains it holds at that level that `keep` does not.
/// Holders that are expired, or that were reset (they are on their way out
/// and cannot be reset again), do not count.
pub fn last_holder_of<'a>(
    idx: &'a Index,
    account: &AccountState,
    token: &'a TokenState,
    keep: &[Grant],
    level: Level,
    now: i64,
) -> Option<&'a str> {
    let holds = |grants: &[Grant], g: &Grant| {
        grants
            .iter()
            .any(|o| o.resource == g.resource && o.level >= level)
    };
    token
        .grants()
        .iter()
        .filter(|g| g.resource.kind == Kind::Domain && g.level >= level && !holds(keep, g))
        .find(|g| {
            !account.tokens.iter().any(|id| {
                id != token.id()
                    && idx.tokens.get(&id).is_some_and(|t| {
                        !t.is_expired(now) && t.replaced_by() == 0 && holds(t.grants(), g)
                    })
            })
        })
        .map(|g| &*g.resource.id)
}

/// Refuses a change that would leave a domain with no live token, or with
/// no live token holding ADMIN on it (sending needs ADMIN): `target` keeps
/// only `keep` (nothing, when it is deleted).
pub fn keeps_every_domain(
    idx: &Index,
    account: &AccountState,
    target: &TokenState,
    keep: &[Grant],
    now: i64,
) -> Result<()> {
    for (level, what) in [(Level::Viewer, "access to"), (Level::Admin, "ADMIN on")] {
        if let Some(domain) = last_holder_of(idx, account, target, keep, level, now) {
            return Err(Error::FailedPrecondition(format!(
                "token {} is the last token with {what} domain {domain}; it must keep it",
                target.id()
            )));
        }
    }
    Ok(())
}

/// Refuses an expiry change that would bring back a token: an expired
/// token stays expired (it is purged later), and a reset token may only
/// have its grace cut short (its expiry moved earlier), never lengthened
/// or cleared.
pub fn may_change_expiry(target: &TokenState, expires_at_ms: Option<i64>, now: i64) -> Result<()> {
    if target.is_expired(now) {
        return Err(Error::FailedPrecondition(format!(
            "token {} has expired; its expiry cannot change",
            target.id()
        )));
    }
    let Some(deadline) = target.expires_at_ms().filter(|_| target.replaced_by() != 0) else {
        return Ok(());
    };
    if expires_at_ms.is_some_and(|e| e <= deadline) {
        return Ok(());
    }
    Err(Error::FailedPrecondition(format!(
        "token {} was reset (replaced by token {}); its expiry can only move earlier",
        target.id(),
        target.replaced_by()
    )))
}

/// "<base> token <id>", with an earlier " token <n>" suffix of `base` dropped
/// so that names do not grow with every reset.
pub fn derived_name(base: &str, id: u64) -> String {
    let stem = match base.rsplit_once(" token ") {
        Some((stem, n))
            if !stem.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            stem
        }
        _ => base,
    };
    format!("{stem} token {id}")
}
