//! The job queue as workers see it. A claim is one short statement (its own transaction) that
//! sets a lease: no transaction stays open across a download, which would hold back every
//! reader of the event log.

use std::time::Duration;

use sqlx::PgPool;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedJob {
    pub call_aggregate_id: String,
    pub recording_url: String,
}

/// Claims the job due longest ago that no live lease holds, for `lease`.
pub async fn claim_next(
    pool: &PgPool,
    owner: &str,
    lease: Duration,
) -> Result<Option<ClaimedJob>, sqlx::Error> {
    sqlx::query_as(
        "update processing_job
         set lease_until = now() + $2 * interval '1 millisecond', lease_owner = $1
         where call_aggregate_id = (
             select call_aggregate_id from processing_job
             where due_at <= now() and (lease_until is null or lease_until < now())
             order by due_at
             limit 1
             for update skip locked)
         returning call_aggregate_id, recording_url",
    )
    .bind(owner)
    .bind(lease.as_millis() as i64)
    .fetch_optional(pool)
    .await
}

/// How long until some job can be claimed (due, or its lease expired); `None` if none waits.
pub async fn next_due_in(pool: &PgPool) -> Result<Option<Duration>, sqlx::Error> {
    let ms: Option<f64> = sqlx::query_scalar(
        "select extract(epoch from min(greatest(due_at, coalesce(lease_until, due_at))) - now()) * 1000
         from processing_job",
    )
    .fetch_one(pool)
    .await?;
    Ok(ms.map(|ms| Duration::from_millis(ms.max(0.0) as u64)))
}
