//! A claimed row of the `processing_job` queue, as both worker pools (fetch and transcribe)
//! take it.

use std::time::Duration;

use sqlx::PgPool;

use crate::queue::WorkQueue;

pub struct ClaimedJob {
    pub call_aggregate_id: String,
    pub recording_url: String,
    /// Set once the recording was downloaded (the spool key of the transcription worker).
    pub recording_sha256: Option<String>,
}

/// Claims the next due job of `queue` (a stage of `processing_job`) and reads what the worker
/// needs from its row.
pub async fn claim_job(
    queue: &WorkQueue,
    pool: &PgPool,
    owner: &str,
    lease: Duration,
) -> Result<Option<ClaimedJob>, sqlx::Error> {
    let Some(call_aggregate_id) = queue.claim(pool, owner, lease).await? else {
        return Ok(None);
    };
    let (recording_url, recording_sha256) = sqlx::query_as(
        "select recording_url, recording_sha256 from processing_job where call_aggregate_id = $1",
    )
    .bind(&call_aggregate_id)
    .fetch_one(pool)
    .await?;
    Ok(Some(ClaimedJob {
        call_aggregate_id,
        recording_url,
        recording_sha256,
    }))
}
