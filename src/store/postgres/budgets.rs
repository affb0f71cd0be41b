//! Sending-limit budgets shared by the nodes of one database: each node
//! leases chunks of a budget in one short transaction (rows locked in id
//! order, so two nodes' rounds never deadlock), and spends them locally.
//! May import what `store` may.

use deadpool_postgres::Pool;

use super::{big, db, get};
use crate::ratelimit::shared;
use crate::store::{corrupt, BudgetAsk, BudgetGrant, StoreError};

/// Gives back, then leases, for each ask in order, in one transaction.
pub(super) async fn lease(
    pool: &Pool,
    now_ms: i64,
    asks: &[BudgetAsk],
) -> Result<Vec<BudgetGrant>, StoreError> {
    if asks.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = asks
        .iter()
        .map(|a| big(a.budget_id, "budget id"))
        .collect::<Result<Vec<i64>, _>>()?;
    ids.sort_unstable();
    ids.dedup();
    let mut conn = get(pool).await?;
    let tx = conn.transaction().await.map_err(|e| db("lease", e))?;
    // A budget nobody kept is full: its row is made (empty) so that it can
    // be locked; two nodes making it at once meet on the primary key.
    tx.execute(
        "INSERT INTO keyward_budgets (id, state, full_at_ms)
         SELECT unnest($1::bigint[]), ''::bytea, 0 ORDER BY 1
         ON CONFLICT (id) DO NOTHING",
        &[&ids],
    )
    .await
    .map_err(|e| db("lease", e))?;
    let rows = tx
        .query(
            "SELECT id, state FROM keyward_budgets WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&ids],
        )
        .await
        .map_err(|e| db("lease", e))?;
    let mut states = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.get(0);
        let entries = shared::decode(row.get::<_, &[u8]>(1))
            .map_err(|e| corrupt(&format!("keyward_budgets row {id}"), e))?;
        states.insert(id, (entries, 0i64));
    }
    let mut grants = Vec::with_capacity(asks.len());
    for a in asks {
        let id = big(a.budget_id, "budget id")?;
        let (entries, full_at) = states.entry(id).or_default();
        let out = shared::lease(entries, &a.specs, &a.floor, now_ms, a.want, a.give_back);
        *entries = out.entries;
        *full_at = out.full_at_ms;
        grants.push(BudgetGrant {
            granted: out.granted,
            remaining: out.remaining,
        });
    }
    let (mut ids, mut blobs, mut full) = (Vec::new(), Vec::new(), Vec::new());
    for (id, (entries, full_at)) in &states {
        ids.push(*id);
        blobs.push(shared::encode(entries));
        full.push(*full_at);
    }
    tx.execute(
        "UPDATE keyward_budgets AS b SET state = u.state, full_at_ms = u.full_at_ms
         FROM unnest($1::bigint[], $2::bytea[], $3::bigint[]) AS u(id, state, full_at_ms)
         WHERE b.id = u.id",
        &[&ids, &blobs, &full],
    )
    .await
    .map_err(|e| db("lease", e))?;
    tx.commit().await.map_err(|e| db("lease", e))?;
    Ok(grants)
}

/// Drops budgets full again before `now_ms`.
pub(super) async fn prune(pool: &Pool, now_ms: i64) -> Result<u64, StoreError> {
    let conn = get(pool).await?;
    conn.execute(
        "DELETE FROM keyward_budgets WHERE full_at_ms < $1",
        &[&now_ms],
    )
    .await
    .map_err(|e| db("prune budgets", e))
}
