//! Work queues kept by projections (`processing_job`, `callback_delivery`) as workers see them.
//!
//! A claim is one short statement (its own transaction) that sets a lease: no transaction stays
//! open across a download or a callback, which would hold back every reader of the event log.
//! A worker that dies keeps its row only until the lease expires; then another claims it.

use std::time::Duration;

use callingest_projections::notifications::{wait_for, Wakeup};
use sqlx::PgPool;

use crate::jobs::claim::{claim_next, ClaimTarget};

/// Longest sleep between looks at a queue when nothing notifies.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

pub struct WorkQueue {
    /// Where and how its jobs are claimed (fairly between partners).
    target: ClaimTarget,
    table: &'static str,
    /// SQL condition on the table that selects this queue's rows (`true` for all of them).
    rows: &'static str,
    /// Channel the table's trigger notifies when a row is created or rescheduled.
    channel: &'static str,
}

/// Calls to fetch and analyse.
pub const PROCESSING_JOBS: WorkQueue = WorkQueue {
    target: ClaimTarget {
        table: "processing_job",
        stage: Some("fetch"),
        turns: "fetch",
    },
    table: "processing_job",
    rows: "stage = 'fetch'",
    channel: "callingest_jobs",
};
/// Analysed calls waiting for their transcript: the same table, its own pool of workers.
pub const TRANSCRIPTION_JOBS: WorkQueue = WorkQueue {
    target: ClaimTarget {
        table: "processing_job",
        stage: Some("transcribe"),
        turns: "transcribe",
    },
    table: "processing_job",
    rows: "stage = 'transcribe'",
    channel: "callingest_jobs",
};
pub const CALLBACK_DELIVERIES: WorkQueue = WorkQueue {
    target: ClaimTarget {
        table: "callback_delivery",
        stage: None,
        turns: "callback",
    },
    table: "callback_delivery",
    rows: "true",
    channel: "callingest_callbacks",
};

#[derive(Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// A row was claimed and its work taken to its next recorded step.
    Processed,
    /// Nothing could be claimed.
    EmptyQueue,
}

impl WorkQueue {
    /// Claims the row due longest ago that no live lease holds; returns its call aggregate id.
    pub async fn claim(
        &self,
        pool: &PgPool,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<String>, sqlx::Error> {
        let claim = claim_next(pool, self.target, owner, lease).await?;
        Ok(claim.map(|claim| claim.call_aggregate_id))
    }

    /// How long until some row can be claimed (due, or its lease expired).
    async fn next_due_in(&self, pool: &PgPool) -> Result<Option<Duration>, sqlx::Error> {
        let ms: Option<f64> = sqlx::query_scalar(&format!(
            "select (extract(epoch from min(greatest(due_at, coalesce(lease_until, due_at))) - now()) * 1000)::float8
             from {} where {}",
            self.table, self.rows
        ))
        .fetch_one(pool)
        .await?;
        Ok(ms.map(|ms| Duration::from_millis(ms.max(0.0).ceil() as u64)))
    }

    /// The channel the table's trigger notifies on.
    pub fn channel(&self) -> &'static str {
        self.channel
    }

    /// Sleeps until the next row is due, a notification arrives, or the poll interval passes.
    pub async fn wait(&self, pool: &PgPool, wakeup: &mut Wakeup) {
        let wait = match self.next_due_in(pool).await {
            Ok(Some(due)) => due.min(POLL_INTERVAL),
            Ok(None) => POLL_INTERVAL,
            Err(err) => {
                tracing::warn!(error = %err, queue = self.table, "cannot read the next due time");
                POLL_INTERVAL
            }
        };
        wait_for(wakeup, wait).await;
    }

    /// Claims and handles rows until the task is dropped. Dropping it mid-job is safe: the
    /// lease expires and another worker takes the row.
    pub async fn run<F, Fut, E>(&self, pool: &PgPool, mut wakeup: Wakeup, mut try_next: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<JobOutcome, E>>,
        E: std::error::Error + 'static,
    {
        loop {
            match try_next().await {
                Ok(JobOutcome::Processed) => continue,
                Ok(JobOutcome::EmptyQueue) => self.wait(pool, &mut wakeup).await,
                Err(err) => {
                    tracing::error!(error = %crate::http::ErrorChain(&err), queue = self.table, "step failed");
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
        }
    }
}
