//! A token as the hot path needs it ([`TokenState`]), and its conversion
//! to and from the stored record.
//!
//! Part of the index (layer L1).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;

use crate::model::Limits;
use crate::model::{Creator, Grant, Kind, Last4, Level, ResourceKey, Rights, ScopeGrant, SmallStr};
use crate::pb::store::{GrantRecord, ScopeRecord, TokenRecord};
use crate::ratelimit::Budget;
use crate::token::{Digest, DigestKey, Phc};

use super::nodes;

/// A token as the hot path needs it. Never holds the plaintext.
///
/// `repr(C)` keeps the fields Authorize reads first and together, so that a
/// lookup among a million tokens touches as few cache lines as possible.
#[repr(C)]
pub struct TokenState {
    /// Keyed digest of the whole token, valid under the current key; `None`
    /// until known (then a verify costs one argon2).
    pub digest: Option<Digest>,
    /// Paused tokens are denied.
    pub paused: bool,
    /// The root token manages accounts; it has no grants.
    pub root: bool,
    /// Set when `digest` was learnt by an argon2 verify and is not stored yet.
    pub digest_unsaved: AtomicBool,
    /// The node that saw the last use ([`nodes`] id; 0 = unknown), so that
    /// an operator sees where a token is still used. An interned id, not a
    /// name: a follower holds a million tokens. The flags above and this
    /// fill what would be padding after the 33-byte digest.
    pub last_used_by: AtomicU32,
    /// Token id.
    pub id: u64,
    /// Owning account (0 for root).
    pub account_id: u64,
    /// Expiry, unix ms; [`NEVER`] when it has none (one word, and the hot
    /// path's check is one compare). Read through [`Self::expires_at_ms`].
    expires_at: i64,
    /// What it may access (grants and feature scopes): one set shared by
    /// every token with the same ([`Rights`]).
    pub rights: Rights,
    /// Sending limits and what is left of them; `None` (one word, no
    /// allocation) for an unlimited token. Shared with the token it
    /// replaced by a reset, during the grace period.
    pub budget: Option<Arc<Budget>>,
    /// Last use, unix ms; written by the hot path without a lock.
    pub last_used_ms: AtomicI64,
    /// Last use as stored, to know what the batch writer must persist. On
    /// a follower, which stores nothing: as reported to the primary.
    pub last_used_saved_ms: AtomicI64,
    /// Display name (inline up to 22 bytes).
    pub name: SmallStr,
    /// argon2id PHC hash of the secret part (binary when keyward's shape).
    pub phc_hash: Phc,
    /// Name of the creating token (shared by the tokens it created).
    pub created_by: Creator,
    /// Creation time, unix ms.
    pub created_at_ms: i64,
    /// Successor by reset (0 = none).
    pub replaced_by: u64,
    /// Predecessor by reset (0 = none).
    pub replaces: u64,
    /// Last 4 characters of the token string (in place).
    pub last_4: Last4,
}

/// [`TokenState`]'s expiry when it has none.
const NEVER: i64 = i64::MAX;

impl std::fmt::Debug for TokenState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenState")
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .field("name", &self.name)
            .field("phc_hash", &"REDACTED")
            .field("digest", &self.digest.map(|_| "REDACTED"))
            .field("paused", &self.paused)
            .field("expires_at_ms", &self.expires_at_ms())
            .field("rights", &self.rights)
            .finish_non_exhaustive()
    }
}

impl TokenState {
    /// From a stored record; the digest is kept only if `key` made it.
    pub fn from_record(r: &TokenRecord, key: &DigestKey) -> Self {
        let digest = if r.digest_key_id.as_slice() == key.id() {
            <[u8; 32]>::try_from(r.verified_digest.as_slice()).ok()
        } else {
            None
        };
        Self {
            id: r.id,
            account_id: r.account_id,
            name: r.name.as_str().into(),
            phc_hash: Phc::new(&r.phc_hash),
            last_4: r.last_4_digits.as_str().into(),
            created_by: Creator::new(&r.created_by),
            created_at_ms: r.created_at_ms,
            expires_at: if r.expires_at_ms == 0 {
                NEVER
            } else {
                r.expires_at_ms
            },
            paused: r.paused,
            rights: Rights::new(
                &r.grants
                    .iter()
                    .filter_map(|g| {
                        Some(Grant {
                            resource: ResourceKey::new(
                                Kind::from_wire(g.resource_type)?,
                                g.resource_id.as_str(),
                            ),
                            level: Level::from_wire(g.level)?,
                        })
                    })
                    .collect::<Vec<_>>(),
                &r.scopes
                    .iter()
                    .filter_map(|s| {
                        Some(ScopeGrant {
                            name: crate::model::scope_index(&s.name)?,
                            level: Level::from_wire(s.level)?,
                        })
                    })
                    .collect::<Vec<_>>(),
            ),
            budget: Limits::from_records(&r.rate_limits)
                .budget(budget_key(r))
                .inspect(|b| {
                    if r.rate_full_at_ms.len() == b.specs().len() {
                        b.restore(&r.rate_full_at_ms);
                    }
                }),
            replaced_by: r.replaced_by,
            replaces: r.replaces,
            root: r.root,
            digest,
            digest_unsaved: AtomicBool::new(false),
            last_used_ms: AtomicI64::new(r.last_used_at_ms),
            last_used_by: AtomicU32::new(nodes::intern(&r.last_used_by)),
            last_used_saved_ms: AtomicI64::new(r.last_used_at_ms),
        }
    }

    /// To a record for the store, with the current last use and digest.
    pub fn to_record(&self, key: &DigestKey) -> TokenRecord {
        TokenRecord {
            id: self.id,
            account_id: self.account_id,
            name: self.name.to_string(),
            phc_hash: self.phc_hash.to_string(),
            last_4_digits: self.last_4.to_string(),
            created_by: self.created_by.to_string(),
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms().unwrap_or(0),
            paused: self.paused,
            grants: self
                .grants()
                .iter()
                .map(|g| GrantRecord {
                    resource_type: g.resource.kind.to_wire(),
                    resource_id: g.resource.id.to_string(),
                    level: g.level.to_wire(),
                })
                .collect(),
            scopes: self
                .scopes()
                .iter()
                .map(|s| ScopeRecord {
                    name: s.name().to_string(),
                    level: s.level.to_wire(),
                })
                .collect(),
            replaced_by: self.replaced_by,
            replaces: self.replaces,
            last_used_at_ms: self.last_used_ms.load(Ordering::Relaxed),
            last_used_by: nodes::name(self.last_used_by.load(Ordering::Relaxed)),
            root: self.root,
            verified_digest: self.digest.map(|d| d.to_vec()).unwrap_or_default(),
            digest_key_id: if self.digest.is_some() {
                key.id().to_vec()
            } else {
                Vec::new()
            },
            rate_limits: self.limits().to_records(),
            // Read, not marked saved: only the usage writer marks a
            // budget saved, once its record is committed.
            rate_full_at_ms: self
                .budget
                .as_ref()
                .map(|b| b.full_at_ms())
                .unwrap_or_default(),
            budget_id: self
                .budget
                .as_ref()
                .map_or(0, |b| if b.key() == self.id { 0 } else { b.key() }),
        }
    }

    /// Its sending limits (empty when unlimited).
    pub fn limits(&self) -> Limits {
        match &self.budget {
            Some(b) => Limits {
                names: b.names().to_vec(),
                specs: b.specs().to_vec(),
            },
            None => Limits::default(),
        }
    }

    /// Whether the token is past its expiry at `now_ms`.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_at <= now_ms
    }

    /// Its expiry, unix ms, if it has one.
    pub fn expires_at_ms(&self) -> Option<i64> {
        (self.expires_at != NEVER).then_some(self.expires_at)
    }

    /// Sets its expiry (`None`: never).
    pub fn set_expires_at_ms(&mut self, at_ms: Option<i64>) {
        self.expires_at = at_ms.unwrap_or(NEVER);
    }

    /// What it may access, in the order granted.
    pub fn grants(&self) -> &[Grant] {
        self.rights.grants()
    }

    /// Its feature scopes; empty = unrestricted.
    pub fn scopes(&self) -> &[ScopeGrant] {
        self.rights.scopes()
    }

    /// Replaces its grants, keeping its scopes.
    pub fn set_grants(&mut self, grants: &[Grant]) {
        self.rights = Rights::new(grants, self.scopes());
    }

    /// Replaces its scopes, keeping its grants.
    pub fn set_scopes(&mut self, scopes: &[ScopeGrant]) {
        self.rights = Rights::new(self.grants(), scopes);
    }

    /// Records a use at `now_ms` seen by `node` (this node's [`nodes`] id);
    /// at most one store per second per token so that hot tokens do not
    /// bounce a cache line between cores. No lock, no allocation.
    pub fn touch(&self, now_ms: i64, node: u32) {
        if now_ms - self.last_used_ms.load(Ordering::Relaxed) >= 1000 {
            self.last_used_ms.store(now_ms, Ordering::Relaxed);
            self.last_used_by.store(node, Ordering::Relaxed);
        }
    }

    /// The last use and the node that saw it. The two are separate
    /// atomics: a report racing a local use may pair one's time with the
    /// other's node, within the same second; both are uses.
    pub fn last_use(&self) -> (i64, u32) {
        (
            self.last_used_ms.load(Ordering::Relaxed),
            self.last_used_by.load(Ordering::Relaxed),
        )
    }

    /// Records a use another node saw (a follower's report, clamped by the
    /// caller): it becomes the last use, with `node`, only if newer than
    /// the last use known here. Returns whether it did.
    pub fn record_use(&self, at_ms: i64, node: u32) -> bool {
        let before = self.last_used_ms.fetch_max(at_ms, Ordering::Relaxed);
        if at_ms > before {
            self.last_used_by.store(node, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

/// Of two last uses `(unix ms, node)`, the newer, with the node that saw
/// it; a tie keeps `ours`. How a node merges a record written elsewhere
/// (another PostgreSQL node, the primary) with what it saw itself.
pub fn newer_use(ours: (i64, u32), theirs: (i64, u32)) -> (i64, u32) {
    if theirs.0 > ours.0 {
        theirs
    } else {
        ours
    }
}

/// Where a shared store keeps the budget of the token written as `r`.
pub fn budget_key(r: &TokenRecord) -> u64 {
    if r.budget_id == 0 {
        r.id
    } else {
        r.budget_id
    }
}
