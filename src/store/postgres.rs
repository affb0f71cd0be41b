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

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use prost::Message;
use tokio_postgres::{IsolationLevel, NoTls};
use tokio_stream::StreamExt;

use super::{corrupt, Begun, BoxFuture, LoadCheck, Loaded, Revision, Store, StoreError, WriteTxn};
use crate::index::change::{from_wire, to_wire};
use crate::index::{Change, Index};
use crate::pb::replication::ChangeSet;
use crate::pb::store::{AccountRecord, AuditRecord, ResourceRecord, TokenRecord};
use crate::token::DigestKey;

/// The channel of `NOTIFY` after each commit.
pub const CHANNEL: &str = "keyward_changes";
/// Newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 1;
/// Serialises migrations of concurrently starting nodes.
const MIGRATION_LOCK: i64 = 0x6b65_7977_6172_6401;

/// Versioned migrations, applied in order at start under an advisory lock.
const MIGRATIONS: &[(i32, &str)] = &[(
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
)];

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

/// How connections are secured.
#[derive(Clone)]
pub enum Tls {
    /// Plaintext (`sslmode` disable or prefer, the default).
    Off,
    /// TLS, the server's certificate verified (`sslmode=require`).
    On(tokio_postgres_rustls::MakeRustlsConnect),
}

/// TLS for `sslmode=require`: the server's certificate must chain to the
/// system's roots or to `ca_file`, and name the host connected to (as
/// libpq's verify-full; keyward does not connect to a server it cannot
/// authenticate). Any other mode is plaintext.
pub fn tls_for(
    config: &tokio_postgres::Config,
    ca_file: Option<&std::path::Path>,
) -> Result<Tls, StoreError> {
    use rustls_pki_types::pem::PemObject;
    if config.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
        return Ok(Tls::Off);
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system root rustls cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| db(&format!("--pg-ca-file {}", path.display()), e))?;
        let mut n = 0;
        for cert in certs {
            let cert = cert.map_err(|e| db(&format!("--pg-ca-file {}", path.display()), e))?;
            roots
                .add(cert)
                .map_err(|e| db(&format!("--pg-ca-file {}", path.display()), e))?;
            n += 1;
        }
        if n == 0 {
            return Err(db(
                &format!("--pg-ca-file {}", path.display()),
                "no PEM certificate in it",
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| db("tls", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Tls::On(tokio_postgres_rustls::MakeRustlsConnect::new(tls)))
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

/// Applies the migrations this database lacks; returns the cluster id.
async fn migrate(conn: &mut Object) -> Result<u64, StoreError> {
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

fn decode_changes(revision: i64, bytes: &[u8]) -> Result<Revision, StoreError> {
    let set = ChangeSet::decode(bytes).map_err(|e| corrupt("keyward_changes", e))?;
    let changes = set
        .changes
        .into_iter()
        .map(from_wire)
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| corrupt("keyward_changes", "a change of an unknown kind"))?;
    Ok(Revision {
        revision: unbig(revision, "revision")?,
        changes,
    })
}

/// Up to `limit` commits after `applied`, checked to follow it with no gap.
async fn fetch_changes(
    client: &tokio_postgres::Client,
    applied: u64,
    limit: usize,
) -> Result<Vec<Revision>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "SELECT revision, changes FROM keyward_changes WHERE revision > $1
             ORDER BY revision LIMIT $2",
            &[&big(applied, "revision")?, &limit],
        )
        .await
        .map_err(|e| db("read changes", e))?;
    let mut out = Vec::with_capacity(rows.len());
    for (expect, row) in (applied + 1..).zip(rows) {
        let r = decode_changes(row.get(0), row.get(1))?;
        if r.revision != expect {
            // The rows between were pruned.
            return Err(StoreError::Horizon);
        }
        out.push(r);
    }
    Ok(out)
}

async fn revision(client: &tokio_postgres::Client, lock: bool) -> Result<u64, StoreError> {
    let sql = if lock {
        "SELECT revision FROM keyward_meta FOR UPDATE"
    } else {
        "SELECT revision FROM keyward_meta"
    };
    let row = client
        .query_one(sql, &[])
        .await
        .map_err(|e| db("read revision", e))?;
    unbig(row.get(0), "revision")
}

/// An open write on a pooled connection: `BEGIN` and the meta row lock.
struct PgTxn {
    conn: Option<Object>,
    base: u64,
}

impl Drop for PgTxn {
    fn drop(&mut self) {
        // Not committed (rules refused, or the request went away): roll
        // back so the meta row lock is released. A connection that cannot
        // roll back is not returned to the pool.
        if let Some(conn) = self.conn.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if conn.batch_execute("ROLLBACK").await.is_err() {
                        let _ = Object::take(conn);
                    }
                });
            } else {
                let _ = Object::take(conn);
            }
        }
    }
}

async fn write_change(
    client: &deadpool_postgres::ClientWrapper,
    change: &Change,
) -> Result<(), StoreError> {
    let w = |e| db("write", e);
    match change {
        Change::PutAccount(a) => {
            let stmt = client
                .prepare_cached(
                    "INSERT INTO keyward_accounts (id, record) VALUES ($1, $2)
                     ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
                )
                .await
                .map_err(w)?;
            client
                .execute(&stmt, &[&big(a.id, "account id")?, &a.encode_to_vec()])
                .await
                .map_err(w)?;
        }
        Change::PutResource(r) => {
            let stmt = client
                .prepare_cached(
                    "INSERT INTO keyward_resources (account_id, kind, id, record)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (account_id, kind, id) DO UPDATE SET record = EXCLUDED.record",
                )
                .await
                .map_err(w)?;
            client
                .execute(
                    &stmt,
                    &[
                        &big(r.account_id, "account id")?,
                        &r.resource_type,
                        &r.id,
                        &r.encode_to_vec(),
                    ],
                )
                .await
                .map_err(w)?;
        }
        Change::DeleteResource { account_id, key } => {
            let stmt = client
                .prepare_cached(
                    "DELETE FROM keyward_resources WHERE account_id = $1 AND kind = $2 AND id = $3",
                )
                .await
                .map_err(w)?;
            client
                .execute(
                    &stmt,
                    &[
                        &big(*account_id, "account id")?,
                        &key.kind.to_wire(),
                        &key.id.as_str(),
                    ],
                )
                .await
                .map_err(w)?;
        }
        Change::PutToken(t) => {
            let stmt = client
                .prepare_cached(
                    "INSERT INTO keyward_tokens (id, account_id, record) VALUES ($1, $2, $3)
                     ON CONFLICT (id) DO UPDATE
                     SET account_id = EXCLUDED.account_id, record = EXCLUDED.record",
                )
                .await
                .map_err(w)?;
            client
                .execute(
                    &stmt,
                    &[
                        &big(t.id, "token id")?,
                        &big(t.account_id, "account id")?,
                        &t.encode_to_vec(),
                    ],
                )
                .await
                .map_err(w)?;
        }
        Change::DeleteToken(id) => {
            let stmt = client
                .prepare_cached("DELETE FROM keyward_tokens WHERE id = $1")
                .await
                .map_err(w)?;
            client
                .execute(&stmt, &[&big(*id, "token id")?])
                .await
                .map_err(w)?;
        }
        Change::Counters {
            next_account_id,
            next_token_id,
        } => {
            let stmt = client
                .prepare_cached("UPDATE keyward_meta SET next_account_id = $1, next_token_id = $2")
                .await
                .map_err(w)?;
            client
                .execute(
                    &stmt,
                    &[
                        &big(*next_account_id, "account counter")?,
                        &big(*next_token_id, "token counter")?,
                    ],
                )
                .await
                .map_err(w)?;
        }
    }
    Ok(())
}

impl WriteTxn for PgTxn {
    fn commit<'a>(
        mut self: Box<Self>,
        changes: &'a [Change],
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let revision = self.base + 1;
            {
                let conn = self
                    .conn
                    .as_ref()
                    .ok_or_else(|| db("commit", "no connection"))?;
                for c in changes {
                    write_change(conn, c).await?;
                }
                let set = ChangeSet {
                    changes: changes.iter().map(to_wire).collect(),
                };
                let rev = big(revision, "revision")?;
                conn.execute(
                    "INSERT INTO keyward_changes (revision, changes) VALUES ($1, $2)",
                    &[&rev, &set.encode_to_vec()],
                )
                .await
                .map_err(|e| db("append change", e))?;
                conn.execute("UPDATE keyward_meta SET revision = $1", &[&rev])
                    .await
                    .map_err(|e| db("bump revision", e))?;
                conn.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &rev.to_string()])
                    .await
                    .map_err(|e| db("notify", e))?;
            }
            // From here the outcome is the database's: a lost connection
            // leaves it unknown to us (the change feed will tell).
            let conn = self
                .conn
                .take()
                .ok_or_else(|| db("commit", "no connection"))?;
            match conn.batch_execute("COMMIT").await {
                Ok(()) => Ok(revision),
                Err(e) => {
                    let closed = conn.is_closed();
                    let _ = Object::take(conn);
                    if closed || e.as_db_error().is_none() {
                        Err(StoreError::Ambiguous(e.to_string()))
                    } else {
                        Err(db("commit", e))
                    }
                }
            }
        })
    }
}

impl Store for PgStore {
    fn load(&self, key: DigestKey) -> BoxFuture<'_, Result<Loaded, StoreError>> {
        Box::pin(async move {
            let mut conn = get(&self.pool).await?;
            let tx = conn
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(|e| db("snapshot", e))?;
            let row = tx
                .query_one(
                    "SELECT revision, next_account_id, next_token_id FROM keyward_meta",
                    &[],
                )
                .await
                .map_err(|e| db("snapshot", e))?;
            let revision = unbig(row.get(0), "revision")?;
            let mut index = Index::new(key);
            let mut check = LoadCheck::new();
            if revision > 0 {
                index.apply(&check.counters(
                    unbig(row.get(1), "account counter")?,
                    unbig(row.get(2), "token counter")?,
                )?);
            }
            let none: [i64; 0] = [];
            // Each record with its row's key, which must agree with it.
            for (table, key, order) in [
                ("keyward_accounts", "id", "id"),
                ("keyward_resources", "account_id", "account_id, kind, id"),
                ("keyward_tokens", "id", "id"),
            ] {
                let sql = format!("SELECT record, {key} FROM {table} ORDER BY {order}");
                let rows = tx
                    .query_raw(sql.as_str(), none.iter())
                    .await
                    .map_err(|e| db("snapshot", e))?;
                tokio::pin!(rows);
                // Rows are applied as they stream: no copy of the whole
                // table in memory.
                while let Some(row) = rows.next().await {
                    let row = row.map_err(|e| db("snapshot", e))?;
                    let bytes: &[u8] = row.get(0);
                    let row_key = unbig(row.get(1), table)?;
                    let (record_key, change) = match table {
                        "keyward_accounts" => {
                            let r = AccountRecord::decode(bytes).map_err(|e| corrupt(table, e))?;
                            (r.id, Change::PutAccount(r))
                        }
                        "keyward_resources" => {
                            let r = ResourceRecord::decode(bytes).map_err(|e| corrupt(table, e))?;
                            (r.account_id, Change::PutResource(r))
                        }
                        _ => {
                            let r = TokenRecord::decode(bytes).map_err(|e| corrupt(table, e))?;
                            (r.id, check.token(r)?)
                        }
                    };
                    if row_key != record_key {
                        return Err(corrupt(
                            table,
                            format!("row {row_key} holds the record of {record_key}"),
                        ));
                    }
                    index.apply(&change);
                }
            }
            tx.commit().await.map_err(|e| db("snapshot", e))?;
            index.check_domain_ids().map_err(StoreError::DomainIds)?;
            Ok(Loaded { index, revision })
        })
    }

    fn begin(&self, applied: u64) -> BoxFuture<'_, Result<Begun, StoreError>> {
        Box::pin(async move {
            let conn = get(&self.pool).await?;
            conn.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED")
                .await
                .map_err(|e| db("begin", e))?;
            let mut txn = PgTxn {
                conn: Some(conn),
                base: 0,
            };
            let conn = txn
                .conn
                .as_ref()
                .ok_or_else(|| db("begin", "no connection"))?;
            let current = revision(conn, true).await?;
            if current < applied {
                tracing::warn!(
                    database = current,
                    node = applied,
                    "the database is behind this node (restored from a backup?): reloading"
                );
                return Err(StoreError::Horizon);
            }
            let missed = if current > applied {
                let n = usize::try_from(current - applied).unwrap_or(usize::MAX);
                let missed = fetch_changes(conn, applied, n).await?;
                if missed.len() != n {
                    return Err(StoreError::Horizon);
                }
                missed
            } else {
                Vec::new()
            };
            txn.base = current;
            let txn: Box<dyn WriteTxn> = Box::new(txn);
            Ok((txn, missed))
        })
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
}

/// Wakes `notify` on every `NOTIFY keyward_changes`, over a connection of
/// its own; reconnects with backoff until `stop` resolves. The poll in the
/// node's sync loop covers the gaps while it is down.
pub async fn listen(
    config: tokio_postgres::Config,
    tls: Tls,
    notify: Arc<tokio::sync::Notify>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut backoff = Duration::from_millis(100);
    loop {
        let once = async {
            match &tls {
                Tls::Off => listen_once(&config, NoTls, &notify).await,
                Tls::On(t) => listen_once(&config, t.clone(), &notify).await,
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            r = once => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, retry_in = ?backoff, "LISTEN connection failed; polling meanwhile");
                }
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One `LISTEN` connection, until it fails.
async fn listen_once<T>(
    config: &tokio_postgres::Config,
    tls: T,
    notify: &tokio::sync::Notify,
) -> Result<(), StoreError>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + Unpin + 'static,
{
    let (client, mut connection) = config
        .connect(tls)
        .await
        .map_err(|e| db("listen", chain(&e)))?;
    let driver = async {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => {
                    notify.notify_one();
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return db("listen", e),
                None => return db("listen", "connection closed"),
            }
        }
    };
    let subscribe = async {
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| db("listen", e))?;
        // Whatever was committed while we were not listening.
        notify.notify_one();
        std::future::pending::<Result<(), StoreError>>().await
    };
    tokio::select! {
        e = driver => Err(e),
        r = subscribe => r,
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
