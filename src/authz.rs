//! The pure decision: given a token's live state and the index, may it act
//! on this resource at this level (and scope)? No I/O, no clock reads, no
//! allocation; the caller has already proven the token authentic.

use crate::index::{Index, Lookup, TokenState};
use crate::model::{scope_index, Kind, Level};
use crate::pb::v1::DenyReason;

/// One question to decide.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    /// Kind of the resource.
    pub kind: Kind,
    /// Id of the resource.
    pub id: &'a str,
    /// Level needed.
    pub level: Level,
    /// Feature scope the request names (empty = none).
    pub scope: &'a str,
    /// Units an allowed decision takes from each of the token's sending
    /// limits (0: check without taking); unlimited tokens ignore it.
    pub cost: u64,
}

/// Decides `check` for an authentic `token` at `now_ms`.
pub fn decide(
    index: &Index,
    token: &TokenState,
    check: &Check<'_>,
    now_ms: i64,
) -> Result<(), DenyReason> {
    if token.paused() {
        return Err(DenyReason::Paused);
    }
    if token.is_expired(now_ms) {
        return Err(DenyReason::Expired);
    }
    // The root token manages accounts; it holds no grants on any resource.
    let Some(account) = index.accounts.get(&token.account_id()) else {
        return Err(DenyReason::NoGrant);
    };
    let chain = match index.lookup(account, check.kind, check.id) {
        Lookup::Found(chain) => chain,
        Lookup::OtherAccount => return Err(DenyReason::WrongAccount),
        Lookup::Unknown => return Err(DenyReason::UnknownResource),
    };
    if chain
        .level_from(token.grants())
        .is_none_or(|held| held < check.level)
    {
        return Err(DenyReason::NoGrant);
    }
    if !token.scopes().is_empty() && !holds_scope(token, check.scope, check.level) {
        return Err(DenyReason::Scope);
    }
    Ok(())
}

/// Whether a scope-restricted token holds `scope` at `level` or more.
fn holds_scope(token: &TokenState, scope: &str, level: Level) -> bool {
    scope_index(scope).is_some_and(|name| {
        token
            .scopes()
            .iter()
            .any(|s| s.name == name && s.level >= level)
    })
}
