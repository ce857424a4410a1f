//! Claiming, renewing and releasing jobs of a [`Queue`]: the claim is fair between partners.
//! Every statement is its own short transaction: nothing stays open across a step's work.
//!
//! What it does: a worker that asks for work gets the oldest due job of the partner whose turn
//! it is — the partner with claimable work whose job was taken least recently — so a partner's
//! backlog of thousands of calls is served one job per turn, like every other partner's, and a
//! call of another partner starts at the next free worker slot instead of after the backlog.
//!
//! How it works: one short transaction (no IO inside, so it holds back no reader of the event
//! log for long), two statements in the usual case:
//! 1. the turns: up to [`TURNS_PER_CLAIM`] partners of `job_queue_partner` that are not idle,
//!    least recently served first (index `job_queue_partner_turn_idx`), each row locked
//!    `skip locked` so concurrent claimers serve different partners;
//! 2. that partner's oldest due job whose lease is free or expired (index
//!    `processing_job_partner_due_idx` / `callback_delivery_partner_due_idx`), leased with a
//!    new token.
//!
//! A partner whose turn finds nothing claimable is marked idle until its next due job (or for a
//! moment when its jobs are all in flight), or leaves the rotation when it has no job left; the
//! projections that queue work put partners back (and wake idle ones). When no turn yields a
//! job — all turns taken by concurrent claimers, or a partner missing from the rotation — the
//! claim falls back to the oldest due job of any partner (indexes `processing_job_stage_due_idx`, `callback_delivery_due_idx`), so
//! fairness bookkeeping can never hold work back.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::Queue;

/// Partners looked at per claim before falling back to the oldest due job of any partner.
pub const TURNS_PER_CLAIM: i64 = 8;

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

/// Claims the next job of `queue` for `owner` — the oldest due job of the partner whose turn it
/// is — with a fresh token and a lease of `lease`.
pub async fn claim_next(
    pool: &PgPool,
    queue: &Queue,
    owner: &str,
    lease: Duration,
) -> Result<Option<Claim>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // A claim need not survive a crash (its row would just be claimable again at once), so it
    // does not wait for the WAL flush; what the work records is durable as usual.
    sqlx::query("set local synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    let lease_ms = lease.as_millis() as i64;
    let turns: Vec<String> = sqlx::query_scalar(
        "select partner_id from job_queue_partner
         where queue = $1 and idle_until <= now()
         order by last_claimed_at
         limit $2
         for update skip locked",
    )
    .bind(queue.name)
    .bind(TURNS_PER_CLAIM)
    .fetch_all(&mut *tx)
    .await?;
    let mut claim = None;
    for partner in &turns {
        claim = lease_oldest_due(&mut tx, queue, Some(partner), owner, lease_ms).await?;
        if claim.is_some() {
            sqlx::query(
                "update job_queue_partner set last_claimed_at = now(), idle_until = '-infinity'
                 where queue = $1 and partner_id = $2",
            )
            .bind(queue.name)
            .bind(partner)
            .execute(&mut *tx)
            .await?;
            break;
        }
        rest_until_due(&mut tx, queue, partner).await?;
    }
    if claim.is_none() {
        claim = lease_oldest_due(&mut tx, queue, None, owner, lease_ms).await?;
        if let Some((_, partner)) = &claim {
            // Back in the rotation (it was missing, e.g. left it just as work was queued).
            sqlx::query(
                "insert into job_queue_partner (queue, partner_id, last_claimed_at)
                 values ($1, $2, now()) on conflict do nothing",
            )
            .bind(queue.name)
            .bind(partner)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(claim.map(|(claim, _)| claim))
}

/// Leases the oldest due job whose lease is free or expired, of one partner or of anyone.
async fn lease_oldest_due(
    conn: &mut PgConnection,
    queue: &Queue,
    partner: Option<&str>,
    owner: &str,
    lease_ms: i64,
) -> Result<Option<(Claim, String)>, sqlx::Error> {
    let table = queue.table;
    let stage = if queue.stage.is_some() {
        "stage = $4 and"
    } else {
        ""
    };
    // Two statements rather than `($1 is null or partner_id = $1)`: a prepared statement's
    // generic plan could not use the partner index for the latter.
    let whose = if partner.is_some() {
        "partner_id = $1"
    } else {
        "$1::text is null"
    };
    let sql = format!(
        "update {table} j
         set lease_until = now() + $3 * interval '1 millisecond', lease_owner = $2,
             lease_token = gen_random_uuid()
         from (select call_aggregate_id, lease_until as previous_lease from {table}
               where {stage} {whose}
                 and due_at <= now() and (lease_until is null or lease_until < now())
               order by due_at
               limit 1
               for update skip locked) due
         where j.call_aggregate_id = due.call_aggregate_id
         returning j.call_aggregate_id, j.lease_token, due.previous_lease is not null, j.partner_id"
    );
    let mut query = sqlx::query_as(&sql)
        .bind(partner)
        .bind(owner)
        .bind(lease_ms);
    if let Some(stage) = queue.stage {
        query = query.bind(stage);
    }
    let row: Option<(String, Uuid, bool, String)> = query.fetch_optional(&mut *conn).await?;
    Ok(row.map(|(call_aggregate_id, token, taken_over, partner)| {
        (
            Claim {
                call_aggregate_id,
                token,
                taken_over,
            },
            partner,
        )
    }))
}

/// A partner whose turn found nothing to claim rests until its next due job — or briefly, when
/// its due jobs are all in flight — and leaves the rotation when it has no job at all.
async fn rest_until_due(
    conn: &mut PgConnection,
    queue: &Queue,
    partner: &str,
) -> Result<(), sqlx::Error> {
    let table = queue.table;
    let stage = if queue.stage.is_some() {
        "stage = $3 and"
    } else {
        ""
    };
    let sql = format!(
        "with next as (select min(due_at) as due_at from {table} where {stage} partner_id = $2),
         gone as (delete from job_queue_partner
                  where queue = $1 and partner_id = $2 and (select due_at from next) is null)
         update job_queue_partner
         set idle_until = greatest((select due_at from next), now() + interval '200 milliseconds')
         where queue = $1 and partner_id = $2 and (select due_at from next) is not null"
    );
    let mut query = sqlx::query(&sql).bind(queue.name).bind(partner);
    if let Some(stage) = queue.stage {
        query = query.bind(stage);
    }
    query.execute(&mut *conn).await?;
    Ok(())
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
    // The partner may be resting in the rotation (its jobs were all in flight): wake it.
    sqlx::query(&format!(
        "update job_queue_partner set idle_until = '-infinity'
         where queue = $1
           and partner_id = (select partner_id from {} where call_aggregate_id = $2)",
        queue.table
    ))
    .bind(queue.name)
    .bind(&claim.call_aggregate_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("select pg_notify($1, '')")
        .bind(queue.channel)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(released.rows_affected() == 1)
}

/// How long until the next unleased row of the queue is due (an index lookup, however long
/// the queue). Expired leases are not looked at: the runner looks again within its poll
/// interval anyway.
pub async fn next_due_in(pool: &PgPool, queue: &Queue) -> Result<Option<Duration>, sqlx::Error> {
    let ms: Option<f64> = sqlx::query_scalar(&format!(
        "select (extract(epoch from due_at - now()) * 1000)::float8 from {}
         where {} and lease_until is null
         order by due_at
         limit 1",
        queue.table, queue.rows
    ))
    .fetch_optional(pool)
    .await?;
    Ok(ms.map(|ms| Duration::from_millis(ms.max(0.0).ceil() as u64)))
}
