//! Moving a PostgreSQL store: [`PgExport`] reads every table in one
//! read-only REPEATABLE READ snapshot through server-side cursors (a chunk
//! at a time, whatever the nodes write meanwhile), and [`PgImport`] fills
//! an empty database in ONE transaction that is verified (read back in the
//! same transaction) before it commits: an interrupted or failed import
//! leaves the database as empty as it was. May import what `store` may.

use deadpool_postgres::Object;
use prost::Message;

use super::{big, db, get, unbig, PgStore};
use crate::pb::store::AuditRecord;
use crate::store::records::{verify_failed, Export, Import, Record, RecordKind, Tally, CHUNK};
use crate::store::{corrupt, BoxFuture, StoreError};

/// The cursors of an export, in order: name, kind, query.
const CURSORS: [(&str, RecordKind, &str); 4] = [
    (
        "kw_accounts",
        RecordKind::Account,
        "SELECT 0::bigint, record FROM keyward_accounts ORDER BY id",
    ),
    (
        "kw_resources",
        RecordKind::Resource,
        "SELECT 0::bigint, record FROM keyward_resources ORDER BY account_id, kind, id",
    ),
    (
        "kw_tokens",
        RecordKind::Token,
        "SELECT 0::bigint, record FROM keyward_tokens ORDER BY id",
    ),
    (
        "kw_audit",
        RecordKind::Audit,
        "SELECT id, record FROM keyward_audit ORDER BY id",
    ),
];

/// Declares the cursors in the open transaction of `client`; returns the
/// counters record (if any was ever written) and the records in all.
async fn declare(client: &tokio_postgres::Client) -> Result<(Option<Record>, u64), StoreError> {
    let e = |e| db("export", e);
    let row = client
        .query_one(
            "SELECT revision, next_account_id, next_token_id,
                    (SELECT count(*) FROM keyward_accounts) + (SELECT count(*) FROM keyward_resources)
                    + (SELECT count(*) FROM keyward_tokens) + (SELECT count(*) FROM keyward_audit)
             FROM keyward_meta",
            &[],
        )
        .await
        .map_err(e)?;
    let revision = unbig(row.get(0), "revision")?;
    // As the load: a database no node ever wrote holds no counters.
    let counters = (revision > 0).then_some(Record::Counters {
        next_account_id: unbig(row.get(1), "account counter")?,
        next_token_id: unbig(row.get(2), "token counter")?,
    });
    let total = unbig(row.get(3), "count")? + u64::from(counters.is_some());
    for (name, _, sql) in CURSORS {
        client
            .batch_execute(&format!("DECLARE {name} NO SCROLL CURSOR FOR {sql}"))
            .await
            .map_err(e)?;
    }
    Ok((counters, total))
}

/// The next rows of cursor `stage`, decoded.
async fn fetch(client: &tokio_postgres::Client, stage: usize) -> Result<Vec<Record>, StoreError> {
    let (name, kind, _) = CURSORS[stage];
    let rows = client
        .query(&format!("FETCH {CHUNK} FROM {name}"), &[])
        .await
        .map_err(|e| db("export", e))?;
    rows.iter()
        .map(|row| {
            let bytes: &[u8] = row.get(1);
            let table = name.trim_start_matches("kw_");
            match Record::decode(kind, bytes).map_err(|e| corrupt(table, e))? {
                // The id is the row's (the record holds 0).
                Record::Audit(mut r) => {
                    r.id = unbig(row.get(0), "audit id")?;
                    Ok(Record::Audit(r))
                }
                other => Ok(other),
            }
        })
        .collect()
}

/// Reads cursors from `stage` on until one yields rows (or all are done).
async fn next_rows(
    client: &tokio_postgres::Client,
    stage: &mut usize,
) -> Result<Vec<Record>, StoreError> {
    while *stage < CURSORS.len() {
        let rows = fetch(client, *stage).await?;
        if !rows.is_empty() {
            return Ok(rows);
        }
        *stage += 1;
    }
    Ok(Vec::new())
}

/// Every record of the database, in one snapshot.
pub struct PgExport {
    /// The connection holding the snapshot (dropped, not returned to the
    /// pool: closing it ends the transaction).
    conn: Option<Object>,
    counters: Option<Record>,
    stage: usize,
    total: u64,
}

impl Drop for PgExport {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(Object::take(conn));
        }
    }
}

impl Export for PgExport {
    fn total(&self) -> u64 {
        self.total
    }

    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Vec<Record>, StoreError>> {
        Box::pin(async move {
            let conn = self
                .conn
                .as_ref()
                .ok_or_else(|| db("export", "no connection"))?;
            let mut rows = next_rows(conn, &mut self.stage).await?;
            if let Some(c) = self.counters.take() {
                rows.insert(0, c);
            }
            Ok(rows)
        })
    }
}

/// Records going into an empty database, in one transaction.
pub struct PgImport {
    conn: Option<Object>,
    counters: Option<(u64, u64)>,
    digest_key_id: Option<Vec<u8>>,
}

impl Drop for PgImport {
    fn drop(&mut self) {
        // Not finished: the connection goes, and its transaction with it.
        if let Some(conn) = self.conn.take() {
            drop(Object::take(conn));
        }
    }
}

impl PgStore {
    /// Every record, in one read-only REPEATABLE READ snapshot taken now.
    pub async fn export(&self) -> Result<PgExport, StoreError> {
        let conn = get(&self.pool).await?;
        conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| db("export", e))?;
        let mut export = PgExport {
            conn: Some(conn),
            counters: None,
            stage: 0,
            total: 0,
        };
        let conn = export
            .conn
            .as_ref()
            .ok_or_else(|| db("export", "no connection"))?;
        let (counters, total) = declare(conn).await?;
        export.counters = counters;
        export.total = total;
        Ok(export)
    }

    /// Starts filling this database, which must hold no keyward records,
    /// in one transaction that also holds the writers' lock (the meta
    /// row). `digest_key_id` is recorded as the nodes' key when known.
    pub async fn begin_import(
        &self,
        digest_key_id: Option<Vec<u8>>,
    ) -> Result<PgImport, StoreError> {
        let conn = get(&self.pool).await?;
        conn.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(|e| db("import", e))?;
        let import = PgImport {
            conn: Some(conn),
            counters: None,
            digest_key_id,
        };
        let conn = import
            .conn
            .as_ref()
            .ok_or_else(|| db("import", "no connection"))?;
        let row = conn
            .query_one(
                "SELECT revision, (SELECT count(*) FROM keyward_accounts),
                        (SELECT count(*) FROM keyward_resources),
                        (SELECT count(*) FROM keyward_tokens), (SELECT count(*) FROM keyward_audit)
                 FROM keyward_meta FOR UPDATE",
                &[],
            )
            .await
            .map_err(|e| db("import", e))?;
        let revision: i64 = row.get(0);
        let counts: Vec<i64> = (1..5).map(|i| row.get(i)).collect();
        if revision > 0 || counts.iter().any(|n| *n > 0) {
            return Err(StoreError::NotEmpty(format!(
                "the database already holds a keyward store (revision {revision}: {} accounts, \
                 {} resources, {} tokens, {} audit events): a copy or restore goes into an \
                 empty database only",
                counts[0], counts[1], counts[2], counts[3]
            )));
        }
        Ok(import)
    }
}

async fn insert(
    client: &tokio_postgres::Client,
    records: &[Record],
) -> Result<Option<(u64, u64)>, StoreError> {
    let w = |e| db("import", e);
    let mut counters = None;
    let (mut a_id, mut a_rec) = (Vec::new(), Vec::new());
    let (mut r_acc, mut r_kind, mut r_id, mut r_rec) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut t_id, mut t_acc, mut t_rec) = (Vec::new(), Vec::new(), Vec::new());
    let (mut e_id, mut e_acc, mut e_rec) = (Vec::new(), Vec::new(), Vec::new());
    for r in records {
        match r {
            Record::Counters {
                next_account_id,
                next_token_id,
            } => counters = Some((*next_account_id, *next_token_id)),
            Record::Account(a) => {
                a_id.push(big(a.id, "account id")?);
                a_rec.push(r.encode());
            }
            Record::Resource(res) => {
                r_acc.push(big(res.account_id, "account id")?);
                r_kind.push(res.resource_type);
                r_id.push(res.id.clone());
                r_rec.push(r.encode());
            }
            Record::Token(t) => {
                t_id.push(big(t.id, "token id")?);
                t_acc.push(big(t.account_id, "account id")?);
                t_rec.push(r.encode());
            }
            Record::Audit(e) => {
                e_id.push(big(e.id, "audit id")?);
                e_acc.push(big(e.account_id, "account id")?);
                // As append_audit stores it: the id is the row's.
                e_rec.push(AuditRecord { id: 0, ..e.clone() }.encode_to_vec());
            }
        }
    }
    if !a_id.is_empty() {
        client
            .execute(
                "INSERT INTO keyward_accounts (id, record)
                 SELECT * FROM unnest($1::bigint[], $2::bytea[])",
                &[&a_id, &a_rec],
            )
            .await
            .map_err(w)?;
    }
    if !r_acc.is_empty() {
        client
            .execute(
                "INSERT INTO keyward_resources (account_id, kind, id, record)
                 SELECT * FROM unnest($1::bigint[], $2::int4[], $3::text[], $4::bytea[])",
                &[&r_acc, &r_kind, &r_id, &r_rec],
            )
            .await
            .map_err(w)?;
    }
    if !t_id.is_empty() {
        client
            .execute(
                "INSERT INTO keyward_tokens (id, account_id, record)
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[])",
                &[&t_id, &t_acc, &t_rec],
            )
            .await
            .map_err(w)?;
    }
    if !e_id.is_empty() {
        client
            .execute(
                "INSERT INTO keyward_audit (id, account_id, record)
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[])",
                &[&e_id, &e_acc, &e_rec],
            )
            .await
            .map_err(w)?;
    }
    Ok(counters)
}

impl Import for PgImport {
    fn put(&mut self, records: Vec<Record>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let conn = self
                .conn
                .as_ref()
                .ok_or_else(|| db("import", "no connection"))?;
            if let Some(c) = insert(conn, &records).await? {
                self.counters = Some(c);
            }
            Ok(())
        })
    }

    fn finish(
        mut self: Box<Self>,
        expected: Tally,
    ) -> BoxFuture<'static, Result<Tally, StoreError>> {
        Box::pin(async move {
            let conn = self
                .conn
                .take()
                .ok_or_else(|| db("import", "no connection"))?;
            let w = |e| db("import", e);
            // Revision 1: the copy is the first commit of the new store
            // (nodes load it and write on from there).
            let (accounts, tokens) = self.counters.unwrap_or((1, 1));
            conn.execute(
                "UPDATE keyward_meta SET revision = 1, next_account_id = $1, next_token_id = $2,
                        digest_key_id = coalesce($3, digest_key_id)",
                &[
                    &big(accounts, "account counter")?,
                    &big(tokens, "token counter")?,
                    &self.digest_key_id,
                ],
            )
            .await
            .map_err(w)?;
            conn.batch_execute(
                "SELECT setval(pg_get_serial_sequence('keyward_audit', 'id'),
                               greatest(coalesce(max(id), 1), 1), max(id) IS NOT NULL)
                 FROM keyward_audit",
            )
            .await
            .map_err(w)?;
            // Read back in the same transaction: commit only what verifies.
            let (counters, _) = declare(&conn).await?;
            let mut tally = Tally::default();
            if let Some(c) = &counters {
                tally.add(c);
            }
            let mut stage = 0;
            loop {
                let rows = next_rows(&conn, &mut stage).await?;
                if rows.is_empty() {
                    break;
                }
                for r in &rows {
                    tally.add(r);
                }
            }
            if let Err(why) = expected.check(&tally) {
                drop(Object::take(conn));
                return Err(verify_failed("the database (nothing was committed)", &why));
            }
            conn.batch_execute("COMMIT").await.map_err(w)?;
            Ok(tally)
        })
    }
}
