//! Loading the whole database into a fresh index, in one read-only
//! repeatable-read snapshot, every row checked against the key it is
//! stored under and through `LoadCheck` like every backend's load. May
//! import what `store` may.

use deadpool_postgres::Pool;
use prost::Message;
use tokio_postgres::IsolationLevel;
use tokio_stream::StreamExt;

use super::{db, get, unbig};
use crate::index::{Change, Index};
use crate::pb::store::{AccountRecord, ResourceRecord, TokenRecord};
use crate::store::{corrupt, LoadCheck, Loaded, StoreError};
use crate::token::DigestKey;

/// Everything in the database, read in one repeatable-read snapshot into
/// a fresh index keyed with `key`, with the revision it is at.
pub(super) async fn load(pool: &Pool, key: DigestKey) -> Result<Loaded, StoreError> {
    let mut conn = get(pool).await?;
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
}
