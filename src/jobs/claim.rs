//! Claiming, renewing and releasing rows of a [`Queue`]. Every statement is its own short
//! transaction: nothing stays open across a step's work.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::Queue;

/// A row claimed by this worker, until its lease expires or another claim replaces the token.
#[derive(Debug, Clone)]
pub struct Claim {
    pub call_aggregate_id: String,
    /// Held by the row for as long as this claim owns it; renewal, recording and release all
    /// check it.
    pub token: Uuid,
    /// The row's previous lease had expired: its last holder died or hung (or ended without
    /// the queue being updated).
    pub taken_over: bool,
}

/// Claims the row due longest ago that no live lease holds, with a fresh token and a lease of
/// `lease`.
pub async fn claim_next(
    pool: &PgPool,
    queue: &Queue,
    owner: &str,
    lease: Duration,
) -> Result<Option<Claim>, sqlx::Error> {
    let (table, rows) = (queue.table, queue.rows);
    let mut tx = pool.begin().await?;
    // A claim need not survive a crash (its row would just be claimable again at once), so it
    // does not wait for the WAL flush. What the step records is durable as usual, and its flush
    // also covers this claim's.
    sqlx::query("set local synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    let claimed: Option<(String, Uuid, bool)> = sqlx::query_as(&format!(
        "with next as (
             select call_aggregate_id, lease_until from {table}
             where {rows} and due_at <= now() and (lease_until is null or lease_until < now())
             order by due_at
             limit 1
             for update skip locked)
         update {table} t
         set lease_until = now() + $2 * interval '1 millisecond', lease_owner = $1,
             lease_token = gen_random_uuid()
         from next
         where t.call_aggregate_id = next.call_aggregate_id
         returning t.call_aggregate_id, t.lease_token, next.lease_until is not null"
    ))
    .bind(owner)
    .bind(lease.as_millis() as i64)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(claimed.map(|(call_aggregate_id, token, taken_over)| Claim {
        call_aggregate_id,
        token,
        taken_over,
    }))
}

/// Extends the claim's lease to `lease` from now. `false` when the row no longer carries the
/// claim's token (taken over) or its lease was let go (the queue moved the row on, or it is
/// gone): the claim is over either way.
pub async fn renew(
    pool: &PgPool,
    queue: &Queue,
    claim: &Claim,
    lease: Duration,
) -> Result<bool, sqlx::Error> {
    let renewed = sqlx::query(&format!(
        "update {} set lease_until = now() + $3 * interval '1 millisecond'
         where call_aggregate_id = $1 and lease_token = $2 and lease_until is not null",
        queue.table
    ))
    .bind(&claim.call_aggregate_id)
    .bind(claim.token)
    .bind(lease.as_millis() as i64)
    .execute(pool)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// Lets the row go at once (if the claim still holds it) and wakes the pool's workers, here and
/// in other instances, so one of them takes it.
pub async fn release(pool: &PgPool, queue: &Queue, claim: &Claim) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let released = sqlx::query(&format!(
        "update {} set lease_until = null, lease_owner = null
         where call_aggregate_id = $1 and lease_token = $2",
        queue.table
    ))
    .bind(&claim.call_aggregate_id)
    .bind(claim.token)
    .execute(&mut *tx)
    .await?;
    sqlx::query("select pg_notify($1, '')")
        .bind(queue.channel)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(released.rows_affected() == 1)
}

/// How long until some row of the queue can be claimed (due, or its lease expired).
pub async fn next_due_in(pool: &PgPool, queue: &Queue) -> Result<Option<Duration>, sqlx::Error> {
    let ms: Option<f64> = sqlx::query_scalar(&format!(
        "select (extract(epoch from min(greatest(due_at, coalesce(lease_until, due_at))) - now()) * 1000)::float8
         from {} where {}",
        queue.table, queue.rows
    ))
    .fetch_one(pool)
    .await?;
    Ok(ms.map(|ms| Duration::from_millis(ms.max(0.0).ceil() as u64)))
}
