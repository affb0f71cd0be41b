//! Bulk seeding of a data dir for benchmarks: one account with a project and
//! a domain, and N tokens written straight into the store (no admin calls,
//! so seeding 1 M tokens takes seconds, not hours of argon2).
//!
//! All seeded tokens share one random secret part, hashed once with argon2id
//! at the real cost: their token strings differ by id (and so by checksum and
//! digest), and each verifies for real if argon2 is asked. Never use a seeded
//! store for anything but benchmarks.

use std::path::Path;

use crate::index::{Change, TokenState};
use crate::model::{Grant, Kind, Level, ResourceKey};
use crate::pb::store::{AccountRecord, RateLimitRecord, ResourceRecord, TokenRecord};
use crate::store::{SledStore, Store, StoreError};
use crate::token::{self, DigestKey, Secret};

/// What a seeded store holds.
pub struct Seeded {
    /// The account id.
    pub account_id: u64,
    /// The project id every token holds ADMIN on.
    pub project: String,
    /// The token strings, by token id order.
    pub tokens: Vec<Secret>,
}

/// Changes per commit.
const CHUNK: usize = 10_000;

/// The seed's changes, `CHUNK` at a time (the account and its resources
/// first), and the token strings made so far.
struct Chunks {
    key: DigestKey,
    digests: bool,
    part: Secret,
    phc: String,
    project: String,
    n: u64,
    next: u64,
    started: bool,
    tokens: Vec<Secret>,
    /// Sending limits on every token: (limit, period ms).
    limits: Vec<(u64, i64)>,
}

const ACCOUNT_ID: u64 = 1;
const FIRST_ID: u64 = 1;

impl Chunks {
    fn new(key: &DigestKey, n: usize, digests: bool) -> Result<Self, StoreError> {
        let part = token::new_secret_part();
        let phc = token::hash_secret(&part).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Chunks {
            key: key.clone(),
            digests,
            part,
            phc,
            project: "bench-project".into(),
            n: n as u64,
            next: 0,
            started: false,
            tokens: Vec::with_capacity(n),
            limits: Vec::new(),
        })
    }

    /// The next commit's changes; None when all are out.
    fn next_chunk(&mut self) -> Option<Vec<Change>> {
        if self.started && self.next >= self.n {
            return None;
        }
        let mut changes = Vec::with_capacity(CHUNK);
        if !self.started {
            self.started = true;
            changes.extend([
                Change::Counters {
                    next_account_id: ACCOUNT_ID + 1,
                    next_token_id: FIRST_ID + self.n,
                },
                Change::PutAccount(AccountRecord {
                    id: ACCOUNT_ID,
                    name: "bench".into(),
                    created_at_ms: 0,
                    ..AccountRecord::default()
                }),
                Change::PutResource(ResourceRecord {
                    account_id: ACCOUNT_ID,
                    resource_type: Kind::Project.to_wire(),
                    id: self.project.clone(),
                    parent_type: Kind::Account.to_wire(),
                    parent_id: ACCOUNT_ID.to_string(),
                }),
                Change::PutResource(ResourceRecord {
                    account_id: ACCOUNT_ID,
                    resource_type: Kind::Domain.to_wire(),
                    id: "bench.example".into(),
                    parent_type: Kind::Account.to_wire(),
                    parent_id: ACCOUNT_ID.to_string(),
                }),
            ]);
        }
        while self.next < self.n && changes.len() < CHUNK {
            let id = FIRST_ID + self.next;
            self.next += 1;
            let full = token::assemble(id, &self.part);
            let mut state = TokenState::from_record(
                &TokenRecord {
                    id,
                    account_id: ACCOUNT_ID,
                    name: format!("bench token {id}"),
                    phc_hash: self.phc.clone(),
                    last_4_digits: token::last_4(&full),
                    created_by: "keyward-bench".into(),
                    created_at_ms: 1,
                    rate_limits: self
                        .limits
                        .iter()
                        .enumerate()
                        .map(|(i, &(limit, period_ms))| RateLimitRecord {
                            name: format!("l{i}"),
                            limit,
                            period_ms,
                        })
                        .collect(),
                    ..Default::default()
                },
                &self.key,
            );
            state.set_grants(&[Grant {
                resource: ResourceKey::new(Kind::Project, self.project.as_str()),
                level: Level::Admin,
            }]);
            if self.digests {
                state.digest = Some(self.key.digest(full.expose()));
            }
            changes.push(Change::PutToken(state.to_record(&self.key)));
            self.tokens.push(full);
        }
        Some(changes)
    }

    fn done(self) -> Seeded {
        Seeded {
            account_id: ACCOUNT_ID,
            project: self.project,
            tokens: self.tokens,
        }
    }
}

/// Seeds `dir` (new, empty) with `n` tokens holding ADMIN on one project.
/// With `digests`, each token's verified digest is stored under the dir's
/// digest key (warm restart); without, every first use needs argon2 (the
/// storm after a key change).
pub async fn seed(dir: &Path, n: usize, digests: bool) -> Result<Seeded, StoreError> {
    seed_limited(dir, n, digests, &[]).await
}

/// [`seed`], every token with the sending limits `limits` (limit, period
/// ms; each within the bounds of [`crate::ratelimit`]).
pub async fn seed_limited(
    dir: &Path,
    n: usize,
    digests: bool,
    limits: &[(u64, i64)],
) -> Result<Seeded, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let key = DigestKey::load_or_create(&dir.join("digest.key"), true)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let store = SledStore::open(dir)?;
    let mut chunks = Chunks::new(&key, n, digests)?;
    chunks.limits = limits.to_vec();
    while let Some(changes) = chunks.next_chunk() {
        store.commit_batch(&changes).await?;
    }
    store.flush().await?;
    Ok(chunks.done())
}

/// Seeds a new, empty shared store (PostgreSQL) like [`seed`], through the
/// ordinary write path: one [`Store::begin`] + [`crate::store::WriteTxn::commit`]
/// per 10,000 changes (so each chunk is also one row of the change table).
/// Digests are made with `key`, which the nodes serving the store must use.
pub async fn seed_store(
    store: &dyn Store,
    key: &DigestKey,
    n: usize,
    digests: bool,
) -> Result<Seeded, StoreError> {
    let mut chunks = Chunks::new(key, n, digests)?;
    let mut applied = 0;
    while let Some(changes) = chunks.next_chunk() {
        let (txn, missed) = store.begin(applied).await?;
        if !missed.is_empty() {
            return Err(StoreError::Corrupt(
                "the store being seeded is not empty (or another writer is on it)".into(),
            ));
        }
        applied = txn.commit(&changes).await?;
    }
    Ok(chunks.done())
}
