//! What the runner reports to `/metrics`, per pool (label `pool`):
//!
//! - `callingest_jobs_claimed_total`, `..._succeeded_total`, `..._failed_total` (the step
//!   returned an error or ran past its maximum duration), `..._cancelled_total` (lease lost,
//!   or interrupted by a drain);
//! - `callingest_leases_renewed_total`, `callingest_jobs_taken_over_total` (claimed a row whose
//!   previous lease had expired: its holder died or hung);
//! - `callingest_jobs_in_flight` (gauge), `callingest_job_step_duration_seconds` (histogram);
//! - at scrape time: `callingest_queue_depth` (rows due and not leased) and
//!   `callingest_queue_oldest_due_seconds` (how long the longest-waiting of them has been due).

use std::time::Duration;

use sqlx::PgPool;

use super::{Queue, QUEUES};

pub(super) fn claimed(queue: &Queue, taken_over: bool) {
    metrics::counter!("callingest_jobs_claimed_total", "pool" => queue.name).increment(1);
    if taken_over {
        metrics::counter!("callingest_jobs_taken_over_total", "pool" => queue.name).increment(1);
    }
}

pub(super) fn succeeded(queue: &Queue) {
    metrics::counter!("callingest_jobs_succeeded_total", "pool" => queue.name).increment(1);
}

pub(super) fn failed(queue: &Queue) {
    metrics::counter!("callingest_jobs_failed_total", "pool" => queue.name).increment(1);
}

pub(super) fn cancelled(queue: &Queue) {
    metrics::counter!("callingest_jobs_cancelled_total", "pool" => queue.name).increment(1);
}

pub(super) fn renewed(queue: &Queue) {
    metrics::counter!("callingest_leases_renewed_total", "pool" => queue.name).increment(1);
}

pub(super) fn step_took(queue: &Queue, elapsed: Duration) {
    metrics::histogram!("callingest_job_step_duration_seconds", "pool" => queue.name)
        .record(elapsed.as_secs_f64());
}

/// Counts a job in flight for as long as it lives.
pub(super) struct InFlight(&'static str);

impl InFlight {
    pub fn start(queue: &Queue) -> Self {
        metrics::gauge!("callingest_jobs_in_flight", "pool" => queue.name).increment(1.0);
        Self(queue.name)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("callingest_jobs_in_flight", "pool" => self.0).decrement(1.0);
    }
}

/// Sets `callingest_queue_depth` and `callingest_queue_oldest_due_seconds` for every pool from
/// the queue tables (at most a second of waiting: a scrape must not hang on the database).
pub async fn record_queue_metrics(pool: &PgPool) {
    for queue in QUEUES {
        let sql = format!(
            "select count(*), coalesce(extract(epoch from now() - min(due_at)), 0)::float8
             from {} where {} and due_at <= now() and (lease_until is null or lease_until < now())",
            queue.table, queue.rows
        );
        let query = sqlx::query_as::<_, (i64, f64)>(&sql).fetch_one(pool);
        match tokio::time::timeout(Duration::from_secs(1), query).await {
            Ok(Ok((depth, oldest))) => {
                metrics::gauge!("callingest_queue_depth", "pool" => queue.name).set(depth as f64);
                metrics::gauge!("callingest_queue_oldest_due_seconds", "pool" => queue.name)
                    .set(oldest.max(0.0));
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, pool = queue.name, "could not measure the queue")
            }
            Err(_) => tracing::warn!(pool = queue.name, "measuring the queue timed out"),
        }
    }
}
