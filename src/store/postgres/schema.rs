//! The PostgreSQL schema: versioned migrations, applied at start under an
//! advisory lock so that nodes starting together migrate once. May import
//! what `store` may.

use deadpool_postgres::Object;

use super::{big, db, unbig};
use crate::store::StoreError;

/// Newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 2;
/// Serialises migrations of concurrently starting nodes.
const MIGRATION_LOCK: i64 = 0x6b65_7977_6172_6401;

/// Versioned migrations, applied in order at start under an advisory lock.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE keyward_meta (
         singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
         cluster_id bigint NOT NULL,
         revision bigint NOT NULL,
         next_account_id bigint NOT NULL,
         next_token_id bigint NOT NULL,
         digest_key_id bytea
     );
     CREATE TABLE keyward_accounts (
         id bigint PRIMARY KEY,
         record bytea NOT NULL
     );
     CREATE TABLE keyward_resources (
         account_id bigint NOT NULL,
         kind integer NOT NULL,
         id text NOT NULL,
         record bytea NOT NULL,
         PRIMARY KEY (account_id, kind, id)
     );
     CREATE TABLE keyward_tokens (
         id bigint PRIMARY KEY,
         account_id bigint NOT NULL,
         record bytea NOT NULL
     );
     CREATE TABLE keyward_changes (
         revision bigint PRIMARY KEY,
         committed_at timestamptz NOT NULL DEFAULT now(),
         changes bytea NOT NULL
     );
     CREATE TABLE keyward_audit (
         id bigserial PRIMARY KEY,
         account_id bigint NOT NULL,
         record bytea NOT NULL
     );
     CREATE INDEX keyward_audit_by_account ON keyward_audit (account_id, id);",
    ),
    (
        2,
        // Sending-limit budgets that nodes lease from (ratelimit::shared):
        // no row is a full budget; full_at_ms says when a row may go.
        "CREATE TABLE keyward_budgets (
             id bigint PRIMARY KEY,
             state bytea NOT NULL,
             full_at_ms bigint NOT NULL
         );",
    ),
];

/// Applies the migrations this database lacks; returns the cluster id.
pub(super) async fn migrate(conn: &mut Object) -> Result<u64, StoreError> {
    let tx = conn.transaction().await.map_err(|e| db("migrate", e))?;
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(|e| db("migrate", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| db("migration lock", e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS keyward_schema (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(|e| db("migrate", e))?;
    let current: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM keyward_schema", &[])
        .await
        .map_err(|e| db("migrate", e))?
        .get(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError::Version {
            found: u64::try_from(current).unwrap_or(0),
            supported: u64::try_from(SCHEMA_VERSION).unwrap_or(0),
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| db(&format!("migration {version}"), e))?;
        tx.execute(
            "INSERT INTO keyward_schema (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(|e| db("migrate", e))?;
        tracing::info!(version, "applied schema migration");
    }
    let fresh = (rand::random::<u64>() >> 1) | 1;
    tx.execute(
        "INSERT INTO keyward_meta (cluster_id, revision, next_account_id, next_token_id)
         VALUES ($1, 0, 1, 1) ON CONFLICT (singleton) DO NOTHING",
        &[&big(fresh, "cluster id")?],
    )
    .await
    .map_err(|e| db("migrate", e))?;
    let id: i64 = tx
        .query_one("SELECT cluster_id FROM keyward_meta", &[])
        .await
        .map_err(|e| db("migrate", e))?
        .get(0);
    tx.commit().await.map_err(|e| db("migrate", e))?;
    unbig(id, "cluster id")
}
