//! A token as the hot path needs it ([`TokenState`]), and its conversion
//! to and from the stored record.
//!
//! Part of the index (layer L1).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;

use crate::model::Limits;
use crate::model::{Grant, Kind, Last4, Level, ResourceKey, Rights, ScopeGrant, SmallStr};
use crate::pb::store::{GrantRecord, ScopeRecord, TokenRecord};
use crate::ratelimit::Budget;
use crate::token::{Digest, DigestKey, Phc};

use super::nodes;

/// A token as the hot path needs it. Never holds the plaintext.
///
/// `repr(C)`, in this order: what Authorize reads comes first and together
/// (the first 99 bytes), and the fields pack with no padding, 176 bytes
/// (8-byte fields, then 4-byte ones, then those with no alignment), since
/// a follower holds a million of these.
#[repr(C)]
pub struct TokenState {
    /// Expiry, unix ms; [`NEVER`] when it has none (one word, and the hot
    /// path's check is one compare). Read through [`Self::expires_at_ms`].
    expires_at: i64,
    /// What it may access (grants and feature scopes) and who created it:
    /// one set shared by every token with the same ([`Rights`]).
    pub rights: Rights,
    /// Sending limits and what is left of them; `None` (one word, no
    /// allocation) for an unlimited token. Shared with the token it
    /// replaced by a reset, during the grace period.
    pub budget: Option<Arc<Budget>>,
    /// Last use, unix ms; written by the hot path without a lock.
    pub last_used_ms: AtomicI64,
    /// Token id ([`Self::id`]; ids are below [`ID_LIMIT`]: 4 bytes, not 8,
    /// in each of a million entries).
    id: u32,
    /// Owning account (0 for root): [`Self::account_id`].
    account_id: u32,
    /// The node that saw the last use ([`nodes`] id; 0 = unknown), so that
    /// an operator sees where a token is still used. An interned id, not a
    /// name: a follower holds a million tokens.
    pub last_used_by: AtomicU32,
    /// Last use as stored, in whole unix seconds (4 bytes, not 8: the
    /// writer's granularity is a minute), to know what the batch writer
    /// must persist ([`Self::use_unsaved`]). On a follower, which stores
    /// nothing: as reported to the primary.
    last_used_saved_s: AtomicU32,
    /// Successor by reset (0 = none): [`Self::replaced_by`].
    replaced_by: u32,
    /// Predecessor by reset (0 = none): [`Self::replaces`].
    replaces: u32,
    /// Creation time, unix ms.
    pub created_at_ms: i64,
    /// Keyed digest of the whole token, valid under the current key; `None`
    /// until known (then a verify costs one argon2).
    pub digest: Option<Digest>,
    /// [`PAUSED`] and [`ROOT`] ([`Self::paused`], [`Self::root`]): one
    /// byte for both.
    flags: u8,
    /// Set when `digest` was learnt by an argon2 verify and is not stored yet.
    pub digest_unsaved: AtomicBool,
    /// Last 4 characters of the token string (in place).
    pub last_4: Last4,
    /// argon2id PHC hash of the secret part (binary when keyward's shape).
    pub phc_hash: Phc,
    /// Display name (inline up to 22 bytes).
    pub name: SmallStr,
}

/// [`TokenState`] flag: paused tokens are denied.
const PAUSED: u8 = 1;
/// [`TokenState`] flag: the root token manages accounts; it has no grants.
const ROOT: u8 = 2;

/// A time in whole unix seconds, as [`TokenState`] keeps the last use
/// saved (before 1970: 0; after 2106: the last second that fits).
fn secs(ms: i64) -> u32 {
    u32::try_from(ms.div_euclid(1000).max(0)).unwrap_or(u32::MAX)
}

/// [`TokenState`]'s expiry when it has none.
const NEVER: i64 = i64::MAX;

/// Token and account ids at or above this are not held in the index
/// ([`TokenState::fits`]): keyward issues both densely from 1, so a
/// store would need four billion tokens (or accounts) to reach it, and
/// entries keep ids in 4 bytes.
pub const ID_LIMIT: u64 = u32::MAX as u64;

/// An id as an entry keeps it; one at or above [`ID_LIMIT`] (a record
/// [`TokenState::fits`] refuses) becomes [`ID_LIMIT`] (`u32::MAX`) itself,
/// never another real id.
fn id32(id: u64) -> u32 {
    u32::try_from(id).unwrap_or(u32::MAX)
}

impl std::fmt::Debug for TokenState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenState")
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .field("name", &self.name)
            .field("phc_hash", &"REDACTED")
            .field("digest", &self.digest.map(|_| "REDACTED"))
            .field("paused", &self.paused())
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
            id: id32(r.id),
            account_id: id32(r.account_id),
            name: r.name.as_str().into(),
            phc_hash: Phc::new(&r.phc_hash),
            last_4: r.last_4_digits.as_str().into(),
            created_at_ms: r.created_at_ms,
            expires_at: if r.expires_at_ms == 0 {
                NEVER
            } else {
                r.expires_at_ms
            },
            flags: if r.paused { PAUSED } else { 0 } | if r.root { ROOT } else { 0 },
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
                &r.created_by,
            ),
            budget: Limits::from_records(&r.rate_limits)
                .budget(budget_key(r))
                .inspect(|b| {
                    if r.rate_full_at_ms.len() == b.specs().len() {
                        b.restore(&r.rate_full_at_ms);
                    }
                }),
            replaced_by: id32(r.replaced_by),
            replaces: id32(r.replaces),
            digest,
            digest_unsaved: AtomicBool::new(false),
            last_used_ms: AtomicI64::new(r.last_used_at_ms),
            last_used_by: AtomicU32::new(nodes::intern(&r.last_used_by)),
            last_used_saved_s: AtomicU32::new(secs(r.last_used_at_ms)),
        }
    }

    /// To a record for the store, with the current last use and digest.
    pub fn to_record(&self, key: &DigestKey) -> TokenRecord {
        TokenRecord {
            id: self.id(),
            account_id: self.account_id(),
            name: self.name.to_string(),
            phc_hash: self.phc_hash.to_string(),
            last_4_digits: self.last_4.to_string(),
            created_by: self.created_by().to_string(),
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms().unwrap_or(0),
            paused: self.paused(),
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
            replaced_by: self.replaced_by(),
            replaces: self.replaces(),
            last_used_at_ms: self.last_used_ms.load(Ordering::Relaxed),
            last_used_by: nodes::name(self.last_used_by.load(Ordering::Relaxed)),
            root: self.root(),
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
            budget_id: self.budget.as_ref().map_or(0, |b| {
                if b.key() == self.id() {
                    0
                } else {
                    b.key()
                }
            }),
        }
    }

    /// Whether a record's ids fit an entry (all below [`ID_LIMIT`]); the
    /// index holds no token whose record does not.
    pub fn fits(r: &TokenRecord) -> bool {
        [r.id, r.account_id, r.replaced_by, r.replaces]
            .iter()
            .all(|&id| id < ID_LIMIT)
    }

    /// Whether it is paused (denied).
    pub fn paused(&self) -> bool {
        self.flags & PAUSED != 0
    }

    /// Pauses or resumes it.
    pub fn set_paused(&mut self, paused: bool) {
        self.set_flag(PAUSED, paused);
    }

    /// Whether it is the root token (manages accounts; has no grants).
    pub fn root(&self) -> bool {
        self.flags & ROOT != 0
    }

    /// Makes it the root token, or not.
    pub fn set_root(&mut self, root: bool) {
        self.set_flag(ROOT, root);
    }

    fn set_flag(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// Whether its last use is newer than the last one saved by more than
    /// `granularity_ms` (0: newer at all), to the second: a use in the
    /// second of the saved one counts as saved.
    pub fn use_unsaved(&self, granularity_ms: i64) -> bool {
        let used = secs(self.last_used_ms.load(Ordering::Relaxed));
        let saved = self.last_used_saved_s.load(Ordering::Relaxed);
        i64::from(used) > i64::from(saved) + granularity_ms.max(0) / 1000
    }

    /// Marks the use at `at_ms` saved (stored, or reported to the
    /// primary); an older mark never replaces a newer one.
    pub fn mark_use_saved(&self, at_ms: i64) {
        self.last_used_saved_s
            .fetch_max(secs(at_ms), Ordering::Relaxed);
    }

    /// Takes over what `old` (the entry it replaces) had saved, if newer.
    pub fn keep_saved_mark(&self, old: &TokenState) {
        self.last_used_saved_s.fetch_max(
            old.last_used_saved_s.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }

    /// Token id.
    pub fn id(&self) -> u64 {
        u64::from(self.id)
    }

    /// Owning account (0 for root).
    pub fn account_id(&self) -> u64 {
        u64::from(self.account_id)
    }

    /// Successor by reset (0 = none).
    pub fn replaced_by(&self) -> u64 {
        u64::from(self.replaced_by)
    }

    /// Predecessor by reset (0 = none).
    pub fn replaces(&self) -> u64 {
        u64::from(self.replaces)
    }

    /// Sets its successor by reset (0 = none; an id at or above
    /// [`ID_LIMIT`] is never issued).
    pub fn set_replaced_by(&mut self, id: u64) {
        self.replaced_by = id32(id);
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

    /// The name of the token that created it.
    pub fn created_by(&self) -> &str {
        self.rights.creator()
    }

    /// Replaces its grants, keeping its scopes.
    pub fn set_grants(&mut self, grants: &[Grant]) {
        self.rights = self.rights.with_grants(grants);
    }

    /// Replaces its scopes, keeping its grants.
    pub fn set_scopes(&mut self, scopes: &[ScopeGrant]) {
        self.rights = self.rights.with_scopes(scopes);
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
