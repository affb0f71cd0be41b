//! The one way state changes: [`Engine::mutate`] takes the writer lock,
//! reads the caller's live access, runs the operation's plan (its rules,
//! then the changes) against the index as it stands, and commits; and the
//! audit log's two ends, [`Engine::append_audit`] and
//! [`Engine::read_audit`]. The operations themselves live in `admin/`.

use std::cell::RefCell;
use std::sync::atomic::Ordering;

use parking_lot::RwLockReadGuard;

use super::{store_unavailable, Engine};
use crate::access::Access;
use crate::error::{Error, Result};
use crate::index::{Change, Index, TokenState};
use crate::model::{Grant, ScopeGrant};
use crate::pb::store::{AuditRecord, TokenRecord};
use crate::token::{self, Secret};

/// What a new token needs besides its secret.
#[derive(Debug)]
pub struct NewToken {
    /// Its account.
    pub account_id: u64,
    /// Its name.
    pub name: String,
    /// The name of the token that made it.
    pub created_by: String,
    /// What it may reach.
    pub grants: Vec<Grant>,
    /// Which features it is limited to (none: all).
    pub scopes: Vec<ScopeGrant>,
    /// When it stops working (unix ms), if ever.
    pub expires_at_ms: Option<i64>,
    /// The token it replaces (a reset), or 0.
    pub replaces: u64,
}

/// Whether a mutation makes a new token: its secret is hashed (argon2,
/// under its own budget) after the early rules pass and before the writer
/// lock is taken, so a refused caller never costs a hash and the lock is
/// never held across one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mint {
    /// No new token.
    No,
    /// One new token, made with [`Plan::mint`].
    Token,
}

/// What an operation's plan sees: the index as it stands, the caller's
/// live access, and the time. The plan runs twice: once early, under the
/// read lock only (a caller who may not act is refused before any hash or
/// lock), then under the writer lock, where its changes are committed.
pub struct Plan<'a> {
    /// The index, current for this pass.
    pub idx: &'a Index,
    /// The caller's access, read from `idx`.
    pub access: Access<'a>,
    /// Now, unix ms.
    pub now: i64,
    /// The hashed secret of a minting mutation (under the writer lock).
    secret: Option<&'a (Secret, String)>,
    /// The token minted in this pass and its full secret.
    minted: RefCell<Option<(u64, Secret)>>,
}

impl Plan<'_> {
    /// The record of a new token with the next token id (the plan adds it
    /// to its changes with the counters). Its secret is the one hashed for
    /// this mutation; in the early pass, which commits nothing, there is
    /// none yet and the record carries no hash.
    pub fn mint(&self, t: NewToken) -> TokenRecord {
        let Some(secret) = self.secret else {
            return token_record(self.idx, None, t, self.now).0;
        };
        let (record, full) = token_record(self.idx, Some(secret), t, self.now);
        *self.minted.borrow_mut() = full.map(|full| (record.id, full));
        record
    }

    /// The counters after this mutation: `accounts` and `tokens` new ids
    /// taken.
    pub fn counters(&self, accounts: u64, tokens: u64) -> Change {
        Change::Counters {
            next_account_id: self.idx.next_account_id + accounts,
            next_token_id: self.idx.next_token_id + tokens,
        }
    }
}

/// The record of a new token with the next token id of `idx`, and its
/// full secret when `secret` (the hashed secret part) is given; without
/// it the record carries no hash (a plan's early pass).
pub(super) fn token_record(
    idx: &Index,
    secret: Option<&(Secret, String)>,
    t: NewToken,
    now: i64,
) -> (TokenRecord, Option<Secret>) {
    let id = idx.next_token_id;
    let key = idx.key();
    let mut record = TokenRecord {
        id,
        account_id: t.account_id,
        name: t.name,
        created_by: t.created_by,
        created_at_ms: now,
        expires_at_ms: t.expires_at_ms.unwrap_or(0),
        replaces: t.replaces,
        ..Default::default()
    };
    let full = secret.map(|(part, phc)| {
        let full = token::assemble(id, part);
        record.phc_hash.clone_from(phc);
        record.last_4_digits = token::last_4(&full);
        record.verified_digest = key.digest(full.expose()).to_vec();
        record.digest_key_id = key.id().to_vec();
        full
    });
    // Grants and scopes go through the same encoding as every update.
    let mut state = TokenState::from_record(&record, key);
    state.rights = crate::model::Rights::new(&t.grants, &t.scopes, &record.created_by);
    (state.to_record(key), full)
}

/// A committed mutation: the plan's answer, and the new token's id and
/// secret when it minted one (the only time the secret exists outside the
/// caller's hands).
#[derive(Debug)]
pub struct Done<T> {
    /// What the plan answered.
    pub answer: T,
    /// The minted token's id and full secret.
    pub secret: Option<(u64, Secret)>,
}

impl Engine {
    /// Runs one admin mutation for `caller_id`: `plan` returns the changes
    /// and the answer, or the refusal. Durable before visible; mutations
    /// are serialised, and on a shared store the writer lock keeps every
    /// other node's writers out, so the rules see the state the commit
    /// follows.
    pub(crate) async fn mutate<T>(
        &self,
        caller_id: u64,
        mint: Mint,
        plan: impl Fn(&Plan<'_>) -> Result<(Vec<Change>, T)>,
    ) -> Result<Done<T>> {
        self.ids_left(mint)?;
        self.plan_once(caller_id, None, &plan)?;
        let secret = match mint {
            Mint::Token => Some(self.hash_new_secret().await?),
            Mint::No => None,
        };
        let w = self.write_lock().await?;
        self.ids_left(mint)?;
        let (changes, answer, minted) = self.plan_once(caller_id, secret.as_ref(), &plan)?;
        if mint == Mint::Token && minted.is_none() {
            return Err(Error::Internal("a minting mutation made no token".into()));
        }
        self.commit(w, changes).await?;
        Ok(Done {
            answer,
            secret: minted,
        })
    }

    /// Runs one mutation that no caller's access decides (a leak report:
    /// whoever reports a token proves only that they hold its secret):
    /// `plan` sees the index under the writer lock and returns the changes
    /// and the answer; no changes, no commit. Durable before visible, and
    /// published to followers and the other nodes, as every commit.
    pub(crate) async fn mutate_unattended<T>(
        &self,
        plan: impl FnOnce(&Index, i64) -> (Vec<Change>, T),
    ) -> Result<T> {
        let w = self.write_lock().await?;
        let (changes, answer) = {
            let idx = self.index.read();
            plan(&idx, self.now_ms())
        };
        if !changes.is_empty() {
            self.commit(w, changes).await?;
        }
        Ok(answer)
    }

    /// A minting mutation is refused once the next token id would not fit
    /// an index entry ([`crate::index::ID_LIMIT`]: four billion tokens
    /// issued), rather than minting a token no node would hold.
    fn ids_left(&self, mint: Mint) -> Result<()> {
        if mint == Mint::Token && self.index.read().next_token_id >= crate::index::ID_LIMIT {
            return Err(Error::FailedPrecondition(
                "token ids are exhausted (4,294,967,294 issued)".into(),
            ));
        }
        Ok(())
    }

    /// One pass of a plan against the index as it stands.
    #[allow(clippy::type_complexity)]
    fn plan_once<T>(
        &self,
        caller_id: u64,
        secret: Option<&(Secret, String)>,
        plan: &impl Fn(&Plan<'_>) -> Result<(Vec<Change>, T)>,
    ) -> Result<(Vec<Change>, T, Option<(u64, Secret)>)> {
        let idx = self.index.read();
        let now = self.now_ms();
        let pass = Plan {
            idx: &idx,
            access: Access::of(&idx, caller_id, now)?,
            now,
            secret,
            minted: RefCell::new(None),
        };
        let (changes, answer) = plan(&pass)?;
        let minted = pass.minted.into_inner();
        Ok((changes, answer, minted))
    }

    /// The index as it stands, under the read lock (hold it briefly: a
    /// commit waits for it).
    pub(crate) fn view(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read()
    }

    /// Appends `event` to the audit log with the next event id. A failed
    /// append is logged, never the caller's failure: the change it records
    /// is committed already.
    pub(crate) async fn append_audit(&self, mut event: AuditRecord) {
        event.id = self.audit_seq.fetch_add(1, Ordering::AcqRel) + 1;
        if let Err(e) = self.store.append_audit(&event).await {
            tracing::error!(error = %e, action = %event.action, "could not append the audit event");
        }
    }

    /// Up to `limit` audit events of `account_id` after event `after`.
    pub(crate) async fn read_audit(
        &self,
        account_id: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        self.store
            .list_audit(account_id, after, limit)
            .await
            .map_err(|e| store_unavailable(&e))
    }
}
