//! The write path: [`begin`] takes the `keyward_meta` row lock and reads
//! the commits this node missed; a commit writes the rows, appends the
//! change set to `keyward_changes` under the next revision and notifies the
//! other nodes. Also the change log's reads (`fetch_changes`, `revision`).
//! May import what `store` may.

use deadpool_postgres::{Object, Pool};
use prost::Message;

use super::{big, db, get, unbig, CHANNEL};
use crate::index::change::{from_wire, to_wire};
use crate::index::Change;
use crate::pb::replication::ChangeSet;
use crate::store::{corrupt, Begun, BoxFuture, Revision, StoreError, WriteTxn};

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
pub(super) async fn fetch_changes(
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

pub(super) async fn revision(
    client: &tokio_postgres::Client,
    lock: bool,
) -> Result<u64, StoreError> {
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

/// Begins a write: `BEGIN`, the meta row lock, and the commits made after
/// `applied` (by other nodes) that this node must apply first.
pub(super) async fn begin(pool: &Pool, applied: u64) -> Result<Begun, StoreError> {
    let conn = get(pool).await?;
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
}
