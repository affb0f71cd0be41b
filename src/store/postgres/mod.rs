//! The PostgreSQL store: the store of record shared by any number of
//! keyward nodes.
//!
//! Records are the same protobuf bytes sled keeps, in one table per kind.
//! Every commit is one transaction that holds the `keyward_meta` row lock
//! (taken first, `SELECT ... FOR UPDATE`), so writers on all nodes are
//! serialised and each one checks its rules against the current state: the
//! lock is taken, the commits this node missed are read and applied, the
//! rules run, and only then are the rows written, the revision counter
//! bumped and the change appended to `keyward_changes` under that revision.
//! Revision order is therefore commit order with no gaps (a transaction
//! cannot take revision r+1 before r committed), and a node that reads the
//! change table sees a prefix of it. `NOTIFY keyward_changes` wakes the
//! other nodes; they poll as a fallback.
//!
//! The connection string carries a password: it is never logged, and
//! errors name only what failed.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use prost::Message;
use tokio_postgres::NoTls;

use super::{
    corrupt, Begun, BoxFuture, BudgetAsk, BudgetGrant, Loaded, Revision, Store, StoreError,
};
use crate::pb::store::AuditRecord;
use crate::token::DigestKey;

mod budgets;
mod listen;
mod load;
mod moves;
mod schema;
mod tls;
mod txn;

pub use listen::listen;
pub use moves::{PgExport, PgImport};
pub use schema::SCHEMA_VERSION;
pub use tls::{tls_for, Tls};

use schema::migrate;
use txn::{fetch_changes, revision};

/// The channel of `NOTIFY` after each commit.
pub const CHANNEL: &str = "keyward_changes";

/// How to reach the database.
#[derive(Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/db` (or key=value form).
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Change rows kept behind the newest revision.
    pub retain_changes: u64,
    /// PEM file of the CA(s) that sign the server's certificate, beside the
    /// system's roots (with `sslmode=require`).
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &"REDACTED")
            .field("pool_size", &self.pool_size)
            .field("retain_changes", &self.retain_changes)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    tls: Tls,
    cluster_id: u64,
    retain_changes: u64,
}

/// A database error as keyward reports it. The server's DETAIL (and the
/// HINT after it) is dropped: for a constraint violation it is "Failing row
/// contains (...)", which would carry a stored record, argon2 hash included,
/// into an error message and the log.
fn db(what: &str, e: impl std::fmt::Display) -> StoreError {
    let text = e.to_string();
    let text = text.split("\nDETAIL:").next().unwrap_or_default();
    StoreError::Database(format!("{what}: {text}"))
}

/// An error with its causes ("error connecting to server: Connection
/// refused"), none of which holds the connection string.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// A u64 id as a bigint column.
fn big(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| corrupt(what, format!("{v} does not fit a bigint")))
}

/// A bigint column as a u64 id.
fn unbig(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt(what, format!("negative value {v}")))
}

/// Parses a connection string, with bounded connect time. The error never
/// repeats the string (it may hold a password).
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|_| {
        StoreError::Database(
            "the connection string is not a valid postgres:// URL or key=value list".into(),
        )
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(3));
    }
    if config.get_application_name().is_none() {
        config.application_name("keyward");
    }
    Ok(config)
}

impl PgStore {
    /// Connects, applies migrations and returns the store.
    pub async fn connect(opts: &PgOptions) -> Result<PgStore, StoreError> {
        let config = parse_url(&opts.url)?;
        let tls = tls_for(&config, opts.ca_file.as_deref())?;
        let recycling = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Tls::Off => Manager::from_config(config.clone(), NoTls, recycling()),
            Tls::On(t) => Manager::from_config(config.clone(), t.clone(), recycling()),
        };
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(3)))
            .create_timeout(Some(Duration::from_secs(3)))
            .recycle_timeout(Some(Duration::from_secs(3)))
            .build()
            .map_err(|e| db("pool", e))?;
        let mut conn = get(&pool).await?;
        let cluster_id = migrate(&mut conn).await?;
        Ok(PgStore {
            pool,
            config,
            tls,
            cluster_id,
            retain_changes: opts.retain_changes.max(1),
        })
    }

    /// Records this node's digest key id; returns the one recorded before
    /// (None on a new database). Nodes with different keys still agree on
    /// every decision, but each verifies the tokens the others learnt with
    /// argon2 once, so the caller warns.
    pub async fn record_digest_key(&self, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = get(&self.pool).await?;
        let row = conn
            .query_one("SELECT digest_key_id FROM keyward_meta", &[])
            .await
            .map_err(|e| db("digest key", e))?;
        let before: Option<Vec<u8>> = row.get(0);
        if before.as_deref() != Some(id) {
            conn.execute("UPDATE keyward_meta SET digest_key_id = $1", &[&id])
                .await
                .map_err(|e| db("digest key", e))?;
        }
        Ok(before)
    }

    /// How to open a connection of its own (for `LISTEN`), outside the pool.
    pub fn listen_target(&self) -> (tokio_postgres::Config, Tls) {
        (self.config.clone(), self.tls.clone())
    }
}

async fn get(pool: &Pool) -> Result<Object, StoreError> {
    pool.get().await.map_err(|e| db("connect", chain(&e)))
}

impl Store for PgStore {
    fn load(&self, key: DigestKey) -> BoxFuture<'_, Result<Loaded, StoreError>> {
        Box::pin(load::load(&self.pool, key))
    }

    fn begin(&self, applied: u64) -> BoxFuture<'_, Result<Begun, StoreError>> {
        Box::pin(txn::begin(&self.pool, applied))
    }

    fn changes_since(
        &self,
        applied: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Revision>, StoreError>> {
        Box::pin(async move {
            let conn = get(&self.pool).await?;
            let out = fetch_changes(&conn, applied, limit).await?;
            if out.is_empty() {
                let current = revision(&conn, false).await?;
                if current != applied {
                    // Ahead with no rows to get there (pruned), or behind
                    // (a restored database): reload either way.
                    return Err(StoreError::Horizon);
                }
            }
            Ok(out)
        })
    }

    fn cluster_id(&self) -> Option<u64> {
        Some(self.cluster_id)
    }

    fn prune(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let conn = get(&self.pool).await?;
            let current = revision(&conn, false).await?;
            let horizon = current.saturating_sub(self.retain_changes);
            if horizon == 0 {
                return Ok(0);
            }
            let n = conn
                .execute(
                    "DELETE FROM keyward_changes WHERE revision <= $1",
                    &[&big(horizon, "revision")?],
                )
                .await
                .map_err(|e| db("prune", e))?;
            Ok(n)
        })
    }

    fn lease<'a>(
        &'a self,
        now_ms: i64,
        asks: &'a [BudgetAsk],
    ) -> BoxFuture<'a, Result<Vec<BudgetGrant>, StoreError>> {
        Box::pin(budgets::lease(&self.pool, now_ms, asks))
    }

    fn prune_budgets(&self, now_ms: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(budgets::prune(&self.pool, now_ms))
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        // Every commit is durable when PostgreSQL acknowledges it.
        Box::pin(async { Ok(()) })
    }

    fn append_audit<'a>(&'a self, event: &'a AuditRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let conn = get(&self.pool).await?;
            // The id is the database's: unique across nodes.
            let record = AuditRecord {
                id: 0,
                ..event.clone()
            };
            conn.execute(
                "INSERT INTO keyward_audit (account_id, record) VALUES ($1, $2)",
                &[
                    &big(event.account_id, "account id")?,
                    &record.encode_to_vec(),
                ],
            )
            .await
            .map_err(|e| db("audit", e))?;
            Ok(())
        })
    }

    fn list_audit(
        &self,
        account_id: u64,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<AuditRecord>, StoreError>> {
        Box::pin(async move {
            let conn = get(&self.pool).await?;
            let rows = conn
                .query(
                    "SELECT id, record FROM keyward_audit WHERE account_id = $1 AND id > $2
                     ORDER BY id LIMIT $3",
                    &[
                        &big(account_id, "account id")?,
                        &big(after.min(i64::MAX as u64), "audit id")?,
                        &i64::try_from(limit).unwrap_or(i64::MAX),
                    ],
                )
                .await
                .map_err(|e| db("audit", e))?;
            rows.iter()
                .map(|row| {
                    let mut r = AuditRecord::decode(row.get::<_, &[u8]>(1))
                        .map_err(|e| corrupt("keyward_audit", e))?;
                    r.id = unbig(row.get(0), "audit id")?;
                    Ok(r)
                })
                .collect()
        })
    }

    fn last_audit_id(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let conn = get(&self.pool).await?;
            let row = conn
                .query_one("SELECT coalesce(max(id), 0) FROM keyward_audit", &[])
                .await
                .map_err(|e| db("audit", e))?;
            unbig(row.get(0), "audit id")
        })
    }

    fn export_all(
        &self,
    ) -> BoxFuture<'_, Result<Box<dyn crate::store::records::Export>, StoreError>> {
        Box::pin(async move {
            let e: Box<dyn crate::store::records::Export> = Box::new(self.export().await?);
            Ok(e)
        })
    }
}

#[cfg(test)]
mod tests {
    /// A record in a server's DETAIL never reaches the error text.
    #[test]
    fn database_errors_drop_the_detail() {
        let server = "ERROR: null value in column \"record\" violates not-null constraint\n\
                      DETAIL: Failing row contains (5, \\x0801121a246172676f6e32).\nHINT: x";
        let e = super::db("put token", server).to_string();
        assert!(e.contains("violates not-null constraint"), "{e}");
        assert!(
            !e.contains("Failing row") && !e.contains("0801") && !e.contains("HINT"),
            "{e}"
        );
    }
}
