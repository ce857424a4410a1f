//! Claiming the next job of a pool, fairly between partners.
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

/// Partners looked at per claim before falling back to the oldest due job of any partner.
pub const TURNS_PER_CLAIM: i64 = 8;

/// A claimable queue: a table of jobs keyed by `call_aggregate_id` with `partner_id`,
/// `due_at`, `lease_until`, `lease_owner` and `lease_token`, possibly one stage of it.
#[derive(Debug, Clone, Copy)]
pub struct ClaimTarget {
    pub table: &'static str,
    /// `processing_job.stage` of this pool; `None` when the whole table is the pool.
    pub stage: Option<&'static str>,
    /// The pool's name in `job_queue_partner.queue`.
    pub turns: &'static str,
}

/// A job leased to one worker: the lease holds while `token` is the row's `lease_token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub call_aggregate_id: String,
    pub token: Uuid,
    /// The job was leased before and its lease ran out (its worker died or hung).
    pub taken_over: bool,
}

/// Claims the next job of `target` for `owner`, leased for `lease`.
pub async fn claim_next(
    pool: &PgPool,
    target: ClaimTarget,
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
    .bind(target.turns)
    .bind(TURNS_PER_CLAIM)
    .fetch_all(&mut *tx)
    .await?;
    let mut claim = None;
    for partner in &turns {
        claim = lease_oldest_due(&mut tx, target, Some(partner), owner, lease_ms).await?;
        if claim.is_some() {
            sqlx::query(
                "update job_queue_partner set last_claimed_at = now(), idle_until = '-infinity'
                 where queue = $1 and partner_id = $2",
            )
            .bind(target.turns)
            .bind(partner)
            .execute(&mut *tx)
            .await?;
            break;
        }
        rest_until_due(&mut tx, target, partner).await?;
    }
    if claim.is_none() {
        claim = lease_oldest_due(&mut tx, target, None, owner, lease_ms).await?;
        if let Some((_, partner)) = &claim {
            // Back in the rotation (it was missing, e.g. left it just as work was queued).
            sqlx::query(
                "insert into job_queue_partner (queue, partner_id, last_claimed_at)
                 values ($1, $2, now()) on conflict do nothing",
            )
            .bind(target.turns)
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
    target: ClaimTarget,
    partner: Option<&str>,
    owner: &str,
    lease_ms: i64,
) -> Result<Option<(Claim, String)>, sqlx::Error> {
    let table = target.table;
    let stage = if target.stage.is_some() {
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
    if let Some(stage) = target.stage {
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
    target: ClaimTarget,
    partner: &str,
) -> Result<(), sqlx::Error> {
    let table = target.table;
    let stage = if target.stage.is_some() {
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
    let mut query = sqlx::query(&sql).bind(target.turns).bind(partner);
    if let Some(stage) = target.stage {
        query = query.bind(stage);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}
