//! Bulk seeding of a data dir for benchmarks: one account with a project and
//! a domain, and N tokens written straight into the store (no admin calls,
//! so seeding 1 M tokens takes seconds, not hours of argon2).
//!
//! All seeded tokens share one random secret part, hashed once with argon2id
//! at the real cost: their token strings differ by id (and so by checksum and
//! digest), and each verifies for real if argon2 is asked. Never use a seeded
//! store for anything but benchmarks.

use std::path::Path;

use crate::index::{Change, Index, TokenState};
use crate::model::{Grant, Kind, Level, ResourceKey};
use crate::pb::store::{AccountRecord, ResourceRecord, TokenRecord};
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

/// Seeds `dir` (new, empty) with `n` tokens holding ADMIN on one project.
/// With `digests`, each token's verified digest is stored under the dir's
/// digest key (warm restart); without, every first use needs argon2 (the
/// storm after a key change).
pub async fn seed(dir: &Path, n: usize, digests: bool) -> Result<Seeded, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let key = DigestKey::load_or_create(&dir.join("digest.key"), true)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let store = SledStore::open(dir)?;
    let part = token::new_secret_part();
    let phc = token::hash_secret(&part).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let account_id = 1;
    let project = "bench-project".to_string();
    let index = Index::new(key.clone());
    let first_id = 1u64;
    let mut changes = vec![
        Change::Counters {
            next_account_id: account_id + 1,
            next_token_id: first_id + n as u64,
        },
        Change::PutAccount(AccountRecord {
            id: account_id,
            name: "bench".into(),
            created_at_ms: 0,
        }),
        Change::PutResource(ResourceRecord {
            account_id,
            resource_type: Kind::Project.to_wire(),
            id: project.clone(),
            parent_type: Kind::Account.to_wire(),
            parent_id: account_id.to_string(),
        }),
        Change::PutResource(ResourceRecord {
            account_id,
            resource_type: Kind::Domain.to_wire(),
            id: "bench.example".into(),
            parent_type: Kind::Account.to_wire(),
            parent_id: account_id.to_string(),
        }),
    ];
    let mut tokens = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let id = first_id + i;
        let full = token::assemble(id, &part);
        let mut state = TokenState::from_record(
            &TokenRecord {
                id,
                account_id,
                name: format!("bench token {id}"),
                phc_hash: phc.clone(),
                last_4_digits: token::last_4(&full),
                created_by: "keyward-bench".into(),
                created_at_ms: 1,
                ..Default::default()
            },
            &key,
        );
        state.grants = vec![Grant {
            resource: ResourceKey::new(Kind::Project, project.as_str()),
            level: Level::Admin,
        }];
        if digests {
            state.digest = Some(key.digest(full.expose()));
        }
        changes.push(Change::PutToken(state.to_record(index.key())));
        tokens.push(full);
        if changes.len() >= 10_000 {
            store.commit_batch(&changes).await?;
            changes.clear();
        }
    }
    store.commit_batch(&changes).await?;
    store.flush().await?;
    Ok(Seeded {
        account_id,
        project,
        tokens,
    })
}
