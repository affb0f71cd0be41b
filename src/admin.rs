//! The admin rules: who may create, see, change and delete what. Every
//! mutation re-reads the caller under the writer lock, checks the rules
//! against the index, then commits (durable before visible).
//!
//! - A caller manages only tokens whose grants lie inside what it holds at
//!   ADMIN (and, if it is scope-restricted, whose scopes it holds), and can
//!   grant only that (no escalation). Scope-restricted callers need the
//!   `tokens` scope at ADMIN.
//! - Nothing crosses accounts; the root token manages every account.

use std::sync::atomic::Ordering;

use prost_types::Timestamp;

use crate::engine::{AuthnFailure, Engine};
use crate::error::{Error, Result};
use crate::index::{AccountState, Change, Index, Lookup, TokenState};
use crate::model::{self, limits, Grant, Kind, Level, ResourceKey, ScopeGrant};
use crate::pb::store::{AccountRecord, ResourceRecord, TokenRecord};
use crate::pb::v1 as pb;
use crate::token::{self, Secret};

/// Converts unix ms to a wire timestamp.
pub fn ts(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn ts_opt(ms: i64) -> Option<Timestamp> {
    (ms != 0).then(|| ts(ms))
}

/// Converts a wire timestamp to unix ms, checking it is well formed.
fn ms_from(field: &str, t: &Timestamp) -> Result<i64> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Error::invalid(field, "nanos must be in 0..1e9"));
    }
    t.seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(t.nanos / 1_000_000)))
        .ok_or_else(|| Error::invalid(field, "out of range"))
}

/// The metadata of a token, as served.
pub fn token_to_wire(t: &TokenState) -> pb::Token {
    pb::Token {
        id: t.id,
        account_id: t.account_id,
        name: t.name.clone(),
        last_4_digits: t.last_4.clone(),
        created_by: t.created_by.clone(),
        created_at: Some(ts(t.created_at_ms)),
        expires_at: t.expires_at_ms.map(ts),
        paused: t.paused,
        grants: t.grants.iter().map(Grant::to_wire).collect(),
        scopes: t.scopes.iter().map(ScopeGrant::to_wire).collect(),
        replaced_by: t.replaced_by,
        replaces: t.replaces,
        last_used_at: ts_opt(t.last_used_ms.load(Ordering::Relaxed)),
        root: t.root,
    }
}

fn account_to_wire(a: &AccountState) -> pb::Account {
    pb::Account {
        id: a.id,
        name: a.name.clone(),
        created_at: Some(ts(a.created_at_ms)),
    }
}

/// Most encoded bytes of the items of one listing page. Half the smallest
/// encoding limit of a service that lists (Accounts and Resources, 256 KiB
/// in `server.rs`), so a full page always fits with its page token and
/// framing; Tokens and Audit (1 MiB) page the same way. A page ends early,
/// with a `next_page_token`, when its next item would pass this.
pub const PAGE_BYTES_MAX: usize = 128 * 1024;

/// The number of items a page may hold: the default for 0, refused above
/// the maximum.
pub fn checked_page_size(page_size: u32) -> Result<usize> {
    match page_size {
        0 => Ok(limits::PAGE_DEFAULT as usize),
        n if n > limits::PAGE_MAX => Err(Error::invalid(
            "page_size",
            format!("must be at most {}", limits::PAGE_MAX),
        )),
        n => Ok(n as usize),
    }
}

/// Page size (default, max) and the id after which the page starts.
pub fn page_bounds(page_size: u32, page_token: &str) -> Result<(usize, u64)> {
    let size = checked_page_size(page_size)?;
    let after = if page_token.is_empty() {
        0
    } else {
        page_token
            .parse::<u64>()
            .map_err(|_| Error::invalid("page_token", "not a token from a previous page"))?
    };
    Ok((size, after))
}

/// The resource after which a ListResources page starts: the previous
/// page's token, `type:id` of its last resource (type as its wire number).
fn resource_cursor(page_token: &str) -> Result<Option<(Kind, &str)>> {
    if page_token.is_empty() {
        return Ok(None);
    }
    let bad = || Error::invalid("page_token", "not a token from a previous page");
    let (kind, id) = page_token.split_once(':').ok_or_else(bad)?;
    let kind = kind
        .parse::<i32>()
        .ok()
        .and_then(Kind::from_wire)
        .ok_or_else(bad)?;
    Ok(Some((kind, id)))
}

/// The caller's access, read from the index under the current lock.
struct Access<'a> {
    caller: &'a TokenState,
}

impl<'a> Access<'a> {
    /// The account, if the caller may act in it at all.
    fn account(&self, idx: &'a Index, account_id: u64) -> Result<&'a AccountState> {
        if !self.caller.root && self.caller.account_id != account_id {
            return Err(Error::PermissionDenied(format!(
                "this token has no access to account {account_id}"
            )));
        }
        idx.accounts
            .get(&account_id)
            .ok_or_else(|| Error::NotFound(format!("account {account_id} not found")))
    }

    /// The level the caller holds on a resource of `account`.
    fn level_on(
        &self,
        idx: &Index,
        account: &AccountState,
        resource: &ResourceKey,
    ) -> Option<Level> {
        if self.caller.root {
            return Some(Level::Admin);
        }
        idx.level_on(account, &self.caller.grants, resource)
    }

    /// Fails unless the caller may manage tokens at all: the `tokens`
    /// scope at ADMIN (or no scopes).
    fn require_token_admin(&self) -> Result<()> {
        self.require_scope("tokens")
    }

    /// Fails unless the caller is unrestricted by feature (root, or no
    /// scopes): for what no feature scope covers, `what` names it.
    fn require_unrestricted(&self, what: &str) -> Result<()> {
        if self.caller.root || self.caller.scopes.is_empty() {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "{what} needs a token unrestricted by scopes"
            )))
        }
    }

    /// Fails unless the caller is unrestricted or holds `scope` at ADMIN.
    fn require_scope(&self, scope: &str) -> Result<()> {
        if self.caller.root
            || self.caller.scopes.is_empty()
            || self
                .caller
                .scopes
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

    /// Whether the caller's scopes cover `scopes` (an unrestricted caller covers all).
    fn covers_scopes(&self, scopes: &[ScopeGrant]) -> bool {
        if self.caller.root || self.caller.scopes.is_empty() {
            return true;
        }
        !scopes.is_empty()
            && scopes.iter().all(|s| {
                self.caller
                    .scopes
                    .iter()
                    .any(|c| c.name == s.name && c.level >= s.level)
            })
    }

    /// Whether the caller may see and manage `target`.
    fn can_manage(&self, idx: &Index, account: &AccountState, target: &TokenState) -> bool {
        if self.caller.root {
            return true;
        }
        // A token left with no grants (its resources were deleted) belongs
        // to the account's admins only.
        let within = if target.grants.is_empty() {
            self.level_on(idx, account, &ResourceKey::account(account.id)) == Some(Level::Admin)
        } else {
            target
                .grants
                .iter()
                .all(|g| self.level_on(idx, account, &g.resource) == Some(Level::Admin))
        };
        !target.root && within && self.covers_scopes(&target.scopes)
    }

    /// A token of `account` the caller may manage. A token outside the
    /// caller's reach does not exist for it: the same NOT_FOUND as an id
    /// never issued, so that the answer does not tell them apart.
    fn target(
        &self,
        idx: &'a Index,
        account: &AccountState,
        token_id: u64,
    ) -> Result<&'a TokenState> {
        idx.tokens
            .get(&token_id)
            .filter(|t| t.account_id == account.id && self.can_manage(idx, account, t))
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "token {token_id} not found in account {}",
                    account.id
                ))
            })
    }

    /// Fails unless every grant is on a registered resource of `account` that
    /// the caller holds at ADMIN, and the scopes are within the caller's.
    fn check_grantable(
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
}

/// The first domain that `token` is the last live holder of at `level` or
/// above, among the domains it holds at that level that `keep` does not.
/// Holders that are expired, or that were reset (they are on their way out
/// and cannot be reset again), do not count.
fn last_holder_of<'a>(
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
        .grants
        .iter()
        .filter(|g| g.resource.kind == Kind::Domain && g.level >= level && !holds(keep, g))
        .find(|g| {
            !account.tokens.iter().any(|id| {
                *id != token.id
                    && idx.tokens.get(id).is_some_and(|t| {
                        !t.is_expired(now) && t.replaced_by == 0 && holds(&t.grants, g)
                    })
            })
        })
        .map(|g| &*g.resource.id)
}

/// Refuses a change that would leave a domain with no live token, or with
/// no live token holding ADMIN on it (sending needs ADMIN): `target` keeps
/// only `keep` (nothing, when it is deleted).
fn keeps_every_domain(
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
                target.id
            )));
        }
    }
    Ok(())
}

/// Checks an optional wire expiry against `now` (unix ms): well formed, in
/// the future, at most 5 years ahead. Pure: the fuzz targets call it.
pub fn check_expiry(field: &str, expires_at: Option<&Timestamp>, now: i64) -> Result<Option<i64>> {
    let Some(t) = expires_at else { return Ok(None) };
    let ms = ms_from(field, t)?;
    if ms <= now {
        return Err(Error::invalid(field, "must be in the future"));
    }
    if ms - now > limits::EXPIRY_MAX_MS {
        return Err(Error::invalid(field, "must be at most 5 years ahead"));
    }
    Ok(Some(ms))
}

/// "<base> token <id>", with an earlier " token <n>" suffix of `base` dropped
/// so that names do not grow with every reset.
fn derived_name(base: &str, id: u64) -> String {
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

/// A hashed secret, made before taking the writer lock.
struct Prepared {
    part: Secret,
    phc: String,
}

/// What a new token needs besides its secret.
struct NewToken {
    account_id: u64,
    name: String,
    created_by: String,
    grants: Vec<Grant>,
    scopes: Vec<ScopeGrant>,
    expires_at_ms: Option<i64>,
    replaces: u64,
}

impl Engine {
    /// Runs a mutation's rules against the index as it stands, before any
    /// argon2 hash, store read or writer lock: a caller who may not act is
    /// refused for the price of a read lock. The same rules run again under
    /// the writer lock, against the state the commit follows.
    fn refuse_early<T>(&self, rules: impl FnOnce(&Index) -> Result<T>) -> Result<()> {
        rules(&self.index.read()).map(drop)
    }

    async fn prepare_secret(&self) -> Result<Prepared> {
        let (part, phc) = self.hash_new_secret().await?;
        Ok(Prepared { part, phc })
    }

    /// Authenticates an admin caller's credential; returns its token id.
    pub async fn authenticate_caller(&self, credential: Option<&str>) -> Result<u64> {
        if let Some(f) = self.follower() {
            return Err(Error::FailedPrecondition(format!(
                "this keyward is a read-only follower of {}: send admin calls to the primary",
                f.primary
            )));
        }
        self.ensure_ready()?;
        let credential = credential.ok_or_else(|| {
            Error::Unauthenticated(
                "missing credential: send `authorization: Bearer <token>` or `api-token: <token>`"
                    .into(),
            )
        })?;
        let id = match self.authenticate(credential).await {
            Err(AuthnFailure::Unknown) if self.unseen_token(credential) => {
                // A token made on another node of the shared store a
                // moment ago: read what this node missed (shared with other
                // such callers, rate-bounded), and retry.
                self.catch_up_unseen().await;
                self.authenticate(credential).await
            }
            other => other,
        };
        let id = match id {
            Ok(id) => id,
            Err(AuthnFailure::Malformed | AuthnFailure::Unknown) => {
                return Err(Error::Unauthenticated("invalid token".into()))
            }
            Err(AuthnFailure::Overloaded) => {
                return Err(Error::Unavailable(
                    "token verification is overloaded; retry shortly".into(),
                ))
            }
        };
        let idx = self.index.read();
        let state = self.live_caller(&idx, id)?;
        state.touch(self.now_ms());
        Ok(id)
    }

    /// The account a caller belongs to; `None` for the root token.
    pub fn home_account(&self, caller_id: u64) -> Result<Option<u64>> {
        let idx = self.index.read();
        let caller = self.live_caller(&idx, caller_id)?;
        Ok((!caller.root).then_some(caller.account_id))
    }

    /// Builds the record and changes of a new token; `idx` must be current
    /// under the writer lock.
    fn new_token(
        &self,
        idx: &Index,
        prepared: &Prepared,
        t: NewToken,
        id: u64,
    ) -> (TokenRecord, Secret) {
        let full = token::assemble(id, &prepared.part);
        let state = TokenRecord {
            id,
            account_id: t.account_id,
            name: t.name,
            phc_hash: prepared.phc.clone(),
            last_4_digits: token::last_4(&full),
            created_by: t.created_by,
            created_at_ms: self.now_ms(),
            expires_at_ms: t.expires_at_ms.unwrap_or(0),
            grants: Vec::new(),
            scopes: Vec::new(),
            replaces: t.replaces,
            verified_digest: self.key().digest(full.expose()).to_vec(),
            digest_key_id: self.key().id().to_vec(),
            ..Default::default()
        };
        // Grants and scopes go through the same encoding as every update.
        let mut tmp = TokenState::from_record(&state, idx.key());
        tmp.grants = t.grants;
        tmp.scopes = t.scopes;
        (tmp.to_record(idx.key()), full)
    }

    fn secret_response(&self, id: u64, full: Secret) -> Result<pb::TokenWithSecret> {
        let idx = self.index.read();
        let t = idx
            .tokens
            .get(&id)
            .ok_or_else(|| Error::Internal("new token missing after commit".into()))?;
        Ok(pb::TokenWithSecret {
            token: Some(token_to_wire(t)),
            secret: full.expose().to_string(),
        })
    }

    // ---------------------------------------------------------- accounts

    /// CreateAccount: root only; the account and an ADMIN token on it.
    pub async fn create_account(
        &self,
        caller_id: u64,
        req: pb::CreateAccountRequest,
    ) -> Result<pb::CreateAccountResponse> {
        model::validate_name("name", &req.name)?;
        let rules = |idx: &Index| -> Result<String> {
            let caller = self.live_caller(idx, caller_id)?;
            if !caller.root {
                return Err(Error::PermissionDenied(
                    "only the root token can create accounts".into(),
                ));
            }
            Ok(caller.name.clone())
        };
        self.refuse_early(rules)?;
        let prepared = self.prepare_secret().await?;
        let w = self.write_lock().await?;
        let (account_id, token_id, changes, full) = {
            let idx = self.index.read();
            let created_by = rules(&idx)?;
            let account_id = idx.next_account_id;
            let token_id = idx.next_token_id;
            let account = AccountRecord {
                id: account_id,
                name: req.name.clone(),
                created_at_ms: self.now_ms(),
            };
            let (record, full) = self.new_token(
                &idx,
                &prepared,
                NewToken {
                    account_id,
                    name: format!(
                        "{} admin token",
                        req.name.chars().take(80).collect::<String>()
                    ),
                    created_by,
                    grants: vec![Grant {
                        resource: ResourceKey::account(account_id),
                        level: Level::Admin,
                    }],
                    scopes: Vec::new(),
                    expires_at_ms: None,
                    replaces: 0,
                },
                token_id,
            );
            let changes = vec![
                Change::Counters {
                    next_account_id: account_id + 1,
                    next_token_id: token_id + 1,
                },
                Change::PutAccount(account),
                Change::PutToken(record),
            ];
            (account_id, token_id, changes, full)
        };
        self.commit(w, changes).await?;
        if crate::logs::ADMIN_CHANGES.admit() {
            tracing::info!(
                account.id = account_id,
                token.id = token_id,
                "account created"
            );
        }
        let admin_token = self.secret_response(token_id, full)?;
        let idx = self.index.read();
        let account = idx.accounts.get(&account_id).map(account_to_wire);
        Ok(pb::CreateAccountResponse {
            account,
            admin_token: Some(admin_token),
        })
    }

    /// GetAccount: the caller's own account, or any for root.
    pub fn get_account(&self, caller_id: u64, req: &pb::GetAccountRequest) -> Result<pb::Account> {
        let idx = self.index.read();
        let access = Access {
            caller: self.live_caller(&idx, caller_id)?,
        };
        access.account(&idx, req.account_id).map(account_to_wire)
    }

    /// ListAccounts: all for root, the caller's own otherwise.
    pub fn list_accounts(
        &self,
        caller_id: u64,
        req: &pb::ListAccountsRequest,
    ) -> Result<pb::ListAccountsResponse> {
        let (size, after) = page_bounds(req.page_size, &req.page_token)?;
        let idx = self.index.read();
        let caller = self.live_caller(&idx, caller_id)?;
        let mut page = Page::new(size);
        let visible = idx
            .accounts
            .range(after.saturating_add(1)..)
            .map(|(_, a)| a)
            .filter(|a| caller.root || a.id == caller.account_id);
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

    /// Who may read an account's audit log: root, or an ADMIN of the
    /// account unrestricted by scopes (the log spans every feature, so no
    /// feature scope covers it).
    pub(crate) fn audit_rules(&self, idx: &Index, caller_id: u64, account_id: u64) -> Result<()> {
        let access = Access {
            caller: self.live_caller(idx, caller_id)?,
        };
        access.require_unrestricted("the audit log")?;
        let account = access.account(idx, account_id)?;
        if access.level_on(idx, account, &ResourceKey::account(account.id)) != Some(Level::Admin) {
            return Err(Error::PermissionDenied(
                "the audit log is for account admins".into(),
            ));
        }
        Ok(())
    }

    // --------------------------------------------------------- resources

    /// RegisterResource: a project, sandbox or domain; a domain gets a token.
    pub async fn register_resource(
        &self,
        caller_id: u64,
        req: pb::RegisterResourceRequest,
    ) -> Result<pb::RegisterResourceResponse> {
        let resource = model::resource_from_wire("resource", req.resource.as_ref())?;
        let parent = match (resource.kind, req.parent.as_ref()) {
            (Kind::Account, _) => {
                return Err(Error::invalid(
                    "resource.type",
                    "accounts are created with CreateAccount",
                ))
            }
            (Kind::Sandbox, None) => {
                return Err(Error::invalid(
                    "parent",
                    "a sandbox needs its project as parent",
                ))
            }
            (Kind::Sandbox, Some(p)) => {
                let p = model::resource_from_wire("parent", Some(p))?;
                if p.kind != Kind::Project {
                    return Err(Error::invalid(
                        "parent.type",
                        "the parent of a sandbox must be a PROJECT",
                    ));
                }
                p
            }
            (_, Some(p)) => {
                let p = model::resource_from_wire("parent", Some(p))?;
                if p != ResourceKey::account(req.account_id) {
                    return Err(Error::invalid(
                        "parent",
                        "the parent of a project or domain is its account; leave it unset",
                    ));
                }
                p
            }
            (_, None) => ResourceKey::account(req.account_id),
        };
        self.refuse_early(|idx| {
            self.register_rules(idx, caller_id, req.account_id, &resource, &parent)
                .map(drop)
        })?;
        let prepared = if resource.kind == Kind::Domain {
            Some(self.prepare_secret().await?)
        } else {
            None
        };
        let w = self.write_lock().await?;
        let (changes, token) = {
            let idx = self.index.read();
            let (access, account) =
                self.register_rules(&idx, caller_id, req.account_id, &resource, &parent)?;
            let mut changes = vec![Change::PutResource(ResourceRecord {
                account_id: account.id,
                resource_type: resource.kind.to_wire(),
                id: resource.id.to_string(),
                parent_type: parent.kind.to_wire(),
                parent_id: parent.id.to_string(),
            })];
            let mut token = None;
            if let Some(prepared) = &prepared {
                let id = idx.next_token_id;
                let (record, full) = self.new_token(
                    &idx,
                    prepared,
                    NewToken {
                        account_id: account.id,
                        name: derived_name(&resource.id, id),
                        created_by: access.caller.name.clone(),
                        grants: vec![Grant {
                            resource: resource.clone(),
                            level: Level::Admin,
                        }],
                        scopes: access.caller.scopes.clone(),
                        expires_at_ms: None,
                        replaces: 0,
                    },
                    id,
                );
                changes.insert(
                    0,
                    Change::Counters {
                        next_account_id: idx.next_account_id,
                        next_token_id: id + 1,
                    },
                );
                changes.push(Change::PutToken(record));
                token = Some((id, full));
            }
            (changes, token)
        };
        self.commit(w, changes).await?;
        if crate::logs::ADMIN_CHANGES.admit() {
            tracing::info!(account.id = req.account_id, resource = %resource, "resource registered");
        }
        let domain_token = token
            .map(|(id, full)| self.secret_response(id, full))
            .transpose()?;
        Ok(pb::RegisterResourceResponse {
            resource: Some(resource.to_wire()),
            domain_token,
        })
    }

    /// Who may register `resource` under `parent` in `account_id`, and
    /// whether it is free.
    fn register_rules<'i>(
        &self,
        idx: &'i Index,
        caller_id: u64,
        account_id: u64,
        resource: &ResourceKey,
        parent: &ResourceKey,
    ) -> Result<(Access<'i>, &'i AccountState)> {
        let access = Access {
            caller: self.live_caller(idx, caller_id)?,
        };
        let account = access.account(idx, account_id)?;
        if resource.kind == Kind::Domain {
            // A domain comes with a token: the caller must be allowed to
            // mint tokens, and the token gets no feature the caller lacks.
            access.require_token_admin()?;
            access.require_scope("domains")?;
        } else {
            access.require_unrestricted("registering a project or sandbox")?;
        }
        if let Lookup::Unknown | Lookup::OtherAccount = idx.lookup(account, parent.kind, &parent.id)
        {
            return Err(Error::NotFound(format!(
                "parent {parent} not found in account {}",
                account.id
            )));
        }
        if access.level_on(idx, account, parent) != Some(Level::Admin) {
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
        Ok((access, account))
    }

    /// DeleteResource: the resource, its descendants, and every grant on them.
    pub async fn delete_resource(
        &self,
        caller_id: u64,
        req: pb::DeleteResourceRequest,
    ) -> Result<pb::DeleteResourceResponse> {
        let resource = model::resource_from_wire("resource", req.resource.as_ref())?;
        if resource.kind == Kind::Account {
            return Err(Error::invalid(
                "resource.type",
                "an account cannot be deleted as a resource",
            ));
        }
        let rules = |idx: &Index| -> Result<()> {
            let access = Access {
                caller: self.live_caller(idx, caller_id)?,
            };
            let account = access.account(idx, req.account_id)?;
            if resource.kind == Kind::Domain {
                access.require_scope("domains")?;
            } else {
                // Deleting a project deletes its sandboxes and drops other
                // tokens' grants on them: no feature scope covers that.
                access.require_unrestricted("deleting a project or sandbox")?;
            }
            if !account.resources[resource.kind.slot()].contains_key(resource.id.as_str()) {
                return Err(Error::NotFound(format!(
                    "{resource} not found in account {}",
                    account.id
                )));
            }
            if access.level_on(idx, account, &resource) != Some(Level::Admin) {
                return Err(Error::PermissionDenied(format!(
                    "deleting {resource} needs ADMIN on it"
                )));
            }
            Ok(())
        };
        self.refuse_early(rules)?;
        let w = self.write_lock().await?;
        let (changes, deleted, dropped) = {
            let idx = self.index.read();
            rules(&idx)?;
            let account = idx
                .accounts
                .get(&req.account_id)
                .ok_or_else(|| Error::Internal("account missing after its check".into()))?;
            let mut deleted = vec![resource.clone()];
            if resource.kind == Kind::Project {
                deleted.extend(
                    account.resources[Kind::Sandbox.slot()]
                        .iter()
                        .filter(|(_, node)| node.parent.as_deref() == Some(&*resource.id))
                        .map(|(id, _)| ResourceKey::new(Kind::Sandbox, id.clone())),
                );
            }
            let mut changes: Vec<Change> = deleted
                .iter()
                .map(|key| Change::DeleteResource {
                    account_id: account.id,
                    key: key.clone(),
                })
                .collect();
            let mut dropped = 0u32;
            for id in &account.tokens {
                let Some(t) = idx.tokens.get(id) else {
                    continue;
                };
                let before = t.grants.len();
                if !t.grants.iter().any(|g| deleted.contains(&g.resource)) {
                    continue;
                }
                let mut record = t.to_record(idx.key());
                record.grants.retain(|g| {
                    !deleted
                        .iter()
                        .any(|d| d.kind.to_wire() == g.resource_type && *d.id == g.resource_id)
                });
                dropped += u32::try_from(before - record.grants.len()).unwrap_or(u32::MAX);
                changes.push(Change::PutToken(record));
            }
            (changes, deleted, dropped)
        };
        self.commit(w, changes).await?;
        if crate::logs::ADMIN_CHANGES.admit() {
            tracing::info!(account.id = req.account_id, resource = %resource, grants_dropped = dropped, "resource deleted");
        }
        Ok(pb::DeleteResourceResponse {
            deleted: deleted.iter().map(ResourceKey::to_wire).collect(),
            grants_dropped: dropped,
        })
    }

    /// ListResources: those the caller holds any grant covering, by type
    /// then id, paged (the page token is the last resource's `type:id`).
    pub fn list_resources(
        &self,
        caller_id: u64,
        req: &pb::ListResourcesRequest,
    ) -> Result<pb::ListResourcesResponse> {
        let size = checked_page_size(req.page_size)?;
        let after = resource_cursor(&req.page_token)?;
        let idx = self.index.read();
        let access = Access {
            caller: self.live_caller(&idx, caller_id)?,
        };
        let account = access.account(&idx, req.account_id)?;
        let mut page = Page::new(size);
        let account_key = ResourceKey::account(account.id);
        'kinds: for kind in [Kind::Project, Kind::Sandbox, Kind::Domain] {
            let from = match after {
                Some((k, _)) if k.slot() > kind.slot() => continue,
                Some((k, id)) if k == kind => Some(id),
                _ => None,
            };
            let mut ids: Vec<_> = account.resources[kind.slot()]
                .iter()
                .filter(|(id, _)| from.is_none_or(|from| &***id > from))
                .collect();
            ids.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (id, node) in ids {
                let key = ResourceKey::new(kind, id.clone());
                if access.level_on(&idx, account, &key).is_none() {
                    continue;
                }
                let parent = match &node.parent {
                    Some(p) => ResourceKey::new(Kind::Project, p.clone()),
                    None => account_key.clone(),
                };
                let info = pb::ResourceInfo {
                    resource: Some(key.to_wire()),
                    parent: Some(parent.to_wire()),
                };
                if !page.push(info) {
                    break 'kinds;
                }
            }
        }
        let next_page_token = page.next_token(|r| {
            r.resource
                .as_ref()
                .map(|k| format!("{}:{}", k.r#type, k.id))
                .unwrap_or_default()
        });
        Ok(pb::ListResourcesResponse {
            resources: page.items,
            next_page_token,
        })
    }

    // ------------------------------------------------------------ tokens

    /// CreateToken.
    pub async fn create_token(
        &self,
        caller_id: u64,
        req: pb::CreateTokenRequest,
    ) -> Result<pb::TokenWithSecret> {
        model::validate_name("name", &req.name)?;
        let grants = model::grants_from_wire("grants", &req.grants)?;
        let scopes = model::scopes_from_wire("scopes", &req.scopes)?;
        let expires_at_ms = check_expiry("expires_at", req.expires_at.as_ref(), self.now_ms())?;
        let rules = |idx: &Index| -> Result<(String, u64)> {
            let access = Access {
                caller: self.live_caller(idx, caller_id)?,
            };
            access.require_token_admin()?;
            let account = access.account(idx, req.account_id)?;
            access.check_grantable(idx, account, &grants, &scopes)?;
            Ok((access.caller.name.clone(), account.id))
        };
        self.refuse_early(rules)?;
        let prepared = self.prepare_secret().await?;
        let w = self.write_lock().await?;
        let (id, changes, full) = {
            let idx = self.index.read();
            let (created_by, account_id) = rules(&idx)?;
            let id = idx.next_token_id;
            let (record, full) = self.new_token(
                &idx,
                &prepared,
                NewToken {
                    account_id,
                    name: req.name.clone(),
                    created_by,
                    grants,
                    scopes,
                    expires_at_ms,
                    replaces: 0,
                },
                id,
            );
            (
                id,
                vec![
                    Change::Counters {
                        next_account_id: idx.next_account_id,
                        next_token_id: id + 1,
                    },
                    Change::PutToken(record),
                ],
                full,
            )
        };
        self.commit(w, changes).await?;
        if crate::logs::ADMIN_CHANGES.admit() {
            tracing::info!(account.id = req.account_id, token.id = id, "token created");
        }
        self.secret_response(id, full)
    }

    /// GetToken.
    pub fn get_token(&self, caller_id: u64, req: &pb::GetTokenRequest) -> Result<pb::Token> {
        let idx = self.index.read();
        let access = Access {
            caller: self.live_caller(&idx, caller_id)?,
        };
        access.require_token_admin()?;
        let account = access.account(&idx, req.account_id)?;
        access
            .target(&idx, account, req.token_id)
            .map(token_to_wire)
    }

    /// ListTokens: the account's tokens the caller may manage, by id, paged.
    pub fn list_tokens(
        &self,
        caller_id: u64,
        req: &pb::ListTokensRequest,
    ) -> Result<pb::ListTokensResponse> {
        let (size, after) = page_bounds(req.page_size, &req.page_token)?;
        let idx = self.index.read();
        let access = Access {
            caller: self.live_caller(&idx, caller_id)?,
        };
        access.require_token_admin()?;
        let account = access.account(&idx, req.account_id)?;
        let mut page = Page::new(size);
        let visible = account
            .tokens
            .range(after.saturating_add(1)..)
            .filter_map(|id| idx.tokens.get(id))
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

    /// UpdateToken: rename, replace grants, replace scopes (FieldMask).
    pub async fn update_token(
        &self,
        caller_id: u64,
        req: pb::UpdateTokenRequest,
    ) -> Result<pb::Token> {
        let paths = req
            .update_mask
            .as_ref()
            .map(|m| m.paths.as_slice())
            .unwrap_or_default();
        if paths.is_empty() {
            return Err(Error::invalid(
                "update_mask",
                "name at least one of: name, grants, scopes",
            ));
        }
        let (mut name, mut grants, mut scopes) = (None, None, None);
        for (i, p) in paths.iter().enumerate() {
            match p.as_str() {
                "name" => {
                    model::validate_name("name", &req.name)?;
                    name = Some(req.name.clone());
                }
                "grants" => grants = Some(model::grants_from_wire("grants", &req.grants)?),
                "scopes" => scopes = Some(model::scopes_from_wire("scopes", &req.scopes)?),
                _ => {
                    return Err(Error::invalid(
                        format!("update_mask.paths[{i}]"),
                        "must be name, grants or scopes",
                    ))
                }
            }
        }
        let plan = |idx: &Index| -> Result<Change> {
            let access = Access {
                caller: self.live_caller(idx, caller_id)?,
            };
            access.require_token_admin()?;
            let account = access.account(idx, req.account_id)?;
            let target = access.target(idx, account, req.token_id)?;
            if target.root {
                return Err(Error::FailedPrecondition(
                    "the root token cannot be edited".into(),
                ));
            }
            let new_grants = grants.as_deref().unwrap_or(&target.grants);
            let new_scopes = scopes.as_deref().unwrap_or(&target.scopes);
            access.check_grantable(idx, account, new_grants, new_scopes)?;
            keeps_every_domain(idx, account, target, new_grants, self.now_ms())?;
            let mut next = TokenState::from_record(&target.to_record(idx.key()), idx.key());
            if let Some(n) = &name {
                next.name = n.clone();
            }
            next.grants = new_grants.to_vec();
            next.scopes = new_scopes.to_vec();
            Ok(Change::PutToken(next.to_record(idx.key())))
        };
        self.refuse_early(plan)?;
        let w = self.write_lock().await?;
        let change = plan(&self.index.read())?;
        self.commit(w, vec![change]).await?;
        if crate::logs::ADMIN_CHANGES.admit() {
            tracing::info!(account.id = req.account_id, token.id = req.token_id, fields = ?paths, "token updated");
        }
        self.token_view(req.token_id)
    }

    fn token_view(&self, id: u64) -> Result<pb::Token> {
        let idx = self.index.read();
        idx.tokens
            .get(&id)
            .map(token_to_wire)
            .ok_or_else(|| Error::NotFound(format!("token {id} not found")))
    }

    /// ResetToken: the old token expires after the grace period; a new one
    /// with the same grants and scopes is returned once.
    pub async fn reset_token(
        &self,
        caller_id: u64,
        req: pb::ResetTokenRequest,
    ) -> Result<pb::TokenWithSecret> {
        let expires_at_ms = check_expiry("expires_at", req.expires_at.as_ref(), self.now_ms())?;
        self.refuse_early(|idx| {
            self.reset_rules(idx, caller_id, &req, self.now_ms())
                .map(drop)
        })?;
        let prepared = self.prepare_secret().await?;
        let w = self.write_lock().await?;
        let now = self.now_ms();
        let (id, changes, full) = {
            let idx = self.index.read();
            let (access, account, old) = self.reset_rules(&idx, caller_id, &req, now)?;
            let id = idx.next_token_id;
            let (mut record, full) = self.new_token(
                &idx,
                &prepared,
                NewToken {
                    account_id: account.id,
                    name: derived_name(&old.name, id),
                    created_by: access.caller.name.clone(),
                    grants: old.grants.clone(),
                    scopes: old.scopes.clone(),
                    expires_at_ms,
                    replaces: old.id,
                },
                id,
            );
            // A reset never resumes: a paused token's replacement is paused.
            record.paused = old.paused;
            let grace = crate::clock::duration_ms(self.settings.reset_grace);
            let mut old_record = old.to_record(idx.key());
            let grace_end = now.saturating_add(grace);
            old_record.expires_at_ms = if old_record.expires_at_ms == 0 {
                grace_end
            } else {
                old_record.expires_at_ms.min(grace_end)
            };
            old_record.replaced_by = id;
            let changes = vec![
                Change::Counters {
                    next_account_id: idx.next_account_id,
                    next_token_id: id + 1,
                },
                Change::PutToken(old_record),
                Change::PutToken(record),
            ];
            (id, changes, full)
        };
        self.commit(w, changes).await?;
        if crate::logs::ADMIN_CHANGES.admit() {
            tracing::info!(
                account.id = req.account_id,
                token.id = req.token_id,
                new_token.id = id,
                "token reset"
            );
        }
        self.secret_response(id, full)
    }

    /// Who may reset which token: a live one the caller manages, not reset
    /// before.
    fn reset_rules<'i>(
        &self,
        idx: &'i Index,
        caller_id: u64,
        req: &pb::ResetTokenRequest,
        now: i64,
    ) -> Result<(Access<'i>, &'i AccountState, &'i TokenState)> {
        let access = Access {
            caller: self.live_caller(idx, caller_id)?,
        };
        access.require_token_admin()?;
        let account = access.account(idx, req.account_id)?;
        let old = access.target(idx, account, req.token_id)?;
        if old.replaced_by != 0 {
            return Err(Error::FailedPrecondition(format!(
                "token {} was already reset (replaced by token {})",
                old.id, old.replaced_by
            )));
        }
        if old.is_expired(now) {
            return Err(Error::FailedPrecondition(format!(
                "token {} has expired and cannot be reset",
                old.id
            )));
        }
        Ok((access, account, old))
    }

    /// PauseToken / ResumeToken.
    pub async fn set_paused(
        &self,
        caller_id: u64,
        account_id: u64,
        token_id: u64,
        paused: bool,
    ) -> Result<pb::Token> {
        let plan = |idx: &Index| -> Result<Change> {
            let access = Access {
                caller: self.live_caller(idx, caller_id)?,
            };
            access.require_token_admin()?;
            let account = access.account(idx, account_id)?;
            let target = access.target(idx, account, token_id)?;
            if target.root {
                return Err(Error::FailedPrecondition(
                    "the root token cannot be paused".into(),
                ));
            }
            let mut record = target.to_record(idx.key());
            record.paused = paused;
            Ok(Change::PutToken(record))
        };
        self.refuse_early(plan)?;
        let w = self.write_lock().await?;
        let change = plan(&self.index.read())?;
        self.commit(w, vec![change]).await?;
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

    /// DeleteToken: at once; refused for the last token on a domain.
    pub async fn delete_token(
        &self,
        caller_id: u64,
        req: &pb::DeleteTokenRequest,
    ) -> Result<pb::DeleteTokenResponse> {
        let rules = |idx: &Index| -> Result<()> {
            let access = Access {
                caller: self.live_caller(idx, caller_id)?,
            };
            access.require_token_admin()?;
            let account = access.account(idx, req.account_id)?;
            let target = access.target(idx, account, req.token_id)?;
            if target.root {
                return Err(Error::FailedPrecondition(
                    "the root token cannot be deleted".into(),
                ));
            }
            keeps_every_domain(idx, account, target, &[], self.now_ms())?;
            Ok(())
        };
        self.refuse_early(rules)?;
        let w = self.write_lock().await?;
        rules(&self.index.read())?;
        self.commit(w, vec![Change::DeleteToken(req.token_id)])
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
}

/// One listing page being filled, in cursor order: at most `size` items
/// and at most [`PAGE_BYTES_MAX`] encoded bytes of them (the first item
/// always goes in, so paging makes progress; one item is far smaller).
pub(crate) struct Page<T> {
    /// The items so far.
    pub(crate) items: Vec<T>,
    /// Their encoded size as a repeated field of the response.
    bytes: usize,
    /// Items the caller asked for.
    size: usize,
    /// Whether an item was left for the next page.
    more: bool,
}

impl<T: prost::Message> Page<T> {
    /// An empty page of at most `size` items.
    pub(crate) fn new(size: usize) -> Self {
        Page {
            items: Vec::new(),
            bytes: 0,
            size,
            more: false,
        }
    }

    /// Adds `item` if the page has room for it; otherwise notes that more
    /// follow and returns false: the page is full, stop filling it.
    pub(crate) fn push(&mut self, item: T) -> bool {
        let len = item.encoded_len();
        // Field key (one byte: fields 1..15), length, message.
        let bytes = 1 + prost::length_delimiter_len(len) + len;
        let full = self.items.len() >= self.size
            || (!self.items.is_empty() && self.bytes + bytes > PAGE_BYTES_MAX);
        if full {
            self.more = true;
            return false;
        }
        self.bytes += bytes;
        self.items.push(item);
        true
    }

    /// The next page's token, from the last item; empty on the last page.
    pub(crate) fn next_token(&self, cursor: impl Fn(&T) -> String) -> String {
        if !self.more {
            return String::new();
        }
        self.items.last().map(cursor).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::{derived_name, Page, PAGE_BYTES_MAX};
    use crate::pb::v1 as pb;
    use prost::Message;

    /// The largest account the input limits allow: 100 four-byte characters.
    fn widest_account(id: u64) -> pb::Account {
        pb::Account {
            id,
            name: "\u{1F4E8}".repeat(100),
            created_at: Some(prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 999_999_999,
            }),
        }
    }

    #[test]
    fn a_page_stops_at_its_size_or_its_byte_budget() {
        let mut page = Page::new(3);
        assert!(page.push(widest_account(1)));
        assert!(page.push(widest_account(2)));
        assert!(page.push(widest_account(3)));
        assert!(!page.push(widest_account(4)));
        assert_eq!(page.next_token(|a| a.id.to_string()), "3");

        // 1,000 of the widest accounts (~420 KB) would pass the Accounts
        // limit (256 KiB): the page ends under the budget instead.
        let mut page = Page::new(1000);
        let mut id = 0;
        while page.push(widest_account(id + 1)) {
            id += 1;
        }
        let resp = pb::ListAccountsResponse {
            accounts: page.items.clone(),
            next_page_token: page.next_token(|a| a.id.to_string()),
        };
        assert!(page.items.len() < 1000);
        assert!(resp.encoded_len() <= PAGE_BYTES_MAX + 64);
        assert_eq!(resp.next_page_token, id.to_string());

        // A short last page ends the listing.
        let mut page = Page::new(10);
        assert!(page.push(widest_account(1)));
        assert_eq!(page.next_token(|a| a.id.to_string()), "");
    }

    #[test]
    fn derived_names_do_not_grow_with_resets() {
        assert_eq!(derived_name("example.com", 7), "example.com token 7");
        assert_eq!(
            derived_name("example.com token 7", 9),
            "example.com token 9"
        );
        assert_eq!(derived_name("ci token", 9), "ci token token 9");
        assert_eq!(derived_name("a token b", 9), "a token b token 9");
    }
}
