//! What an erasure's transaction cannot do itself, done after it from rows it leaves behind:
//!
//! - **The `PersonalDataErased` events.** cqrs-es appends them in transactions of their own, so
//!   the erasure leaves one `erasure_event_pending` row per call and scope. Each row is recorded
//!   under a row lock, named in its event's metadata (`erasure_id`) and deleted in the same
//!   transaction; a crash before that delete leaves a row whose event the next pass finds in the
//!   log, so every erasure gets its event exactly once.
//! - **The spooled recordings.** Every worker instance has a spool of its own on local disk, so
//!   the erasure records the erased calls' recording digests in `erased_recording`, and each
//!   instance deletes those files within seconds ([`SpoolPurge`]).
//!
//! Worker processes run both every few seconds ([`run`]), and at start: an instance that was
//! down catches up with the erasures it missed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callingest_domain::call::{Call, CallCommand, CallError, ErasureReason, ErasureScope};
use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use sqlx::{PgConnection, PgPool};

use super::ErasureError;
use crate::event_store::{execute, Store};
use crate::transcription::spool::Spool;

/// How long a spool may hold a file: its hourly sweep removes files older than a day, so an
/// erased recording's row is needed for a day and an hour, no longer.
const SPOOL_HOLDS_FOR: &str = "25 hours";

/// How many erased recordings one query reads.
const PURGE_PAGE: i64 = 1_000;

/// The serde name of a scope or reason (`call`, `request`, ...): as stored in the rows.
pub(crate) fn text<T: serde::Serialize>(value: T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        other => unreachable!("a unit variant serialises as a string: {other:?}"),
    }
}

/// A scope or reason back from its stored name.
fn parse<T: serde::de::DeserializeOwned>(name: String) -> T {
    serde_json::from_value(serde_json::Value::String(name))
        .expect("the table's check constraints allow known names only")
}

/// In the erasure's transaction: the rows that make sure the erasure reaches the log and the
/// spools. Answers the pending events' ids.
pub(crate) async fn leave(
    tx: &mut PgConnection,
    aggregate_ids: &[String],
    scope: ErasureScope,
    reason: ErasureReason,
) -> Result<Vec<i64>, sqlx::Error> {
    if aggregate_ids.is_empty() {
        return Ok(Vec::new());
    }
    let pending: Vec<i64> = sqlx::query_scalar(
        "insert into erasure_event_pending (call_aggregate_id, scope, reason)
         select id, $2, $3 from unnest($1::text[]) as id
         returning id",
    )
    .bind(aggregate_ids)
    .bind(text(scope))
    .bind(text(reason))
    .fetch_all(&mut *tx)
    .await?;
    // The recording is the customer's side of the call: an agent's erasure keeps it. Only
    // recordings fetched recently enough to still be spooled somewhere are listed.
    if scope == ErasureScope::Call {
        sqlx::query(&format!(
            "insert into erased_recording (recording_sha256)
             select distinct payload->'RecordingFetched'->>'sha256' from events
             where aggregate_type = 'Call' and aggregate_id = any($1)
               and event_type = 'RecordingFetched'
               and recorded_at > now() - interval '{SPOOL_HOLDS_FOR}'"
        ))
        .bind(aggregate_ids)
        .execute(&mut *tx)
        .await?;
    }
    Ok(pending)
}

/// Records the events of these pending rows (left by [`leave`]), waiting for a row another
/// process is recording (then finding it done).
pub(crate) async fn record_events(
    pool: &PgPool,
    calls: &Store<Call>,
    pending: &[i64],
) -> Result<(), ErasureError> {
    for id in pending {
        record_one(pool, calls, Some(*id)).await?;
    }
    Ok(())
}

/// Records every pending event no other process is recording right now: those of erasures
/// interrupted by a crash or a failure. Answers how many rows it settled.
pub async fn record_missing_events(
    pool: &PgPool,
    calls: &Store<Call>,
) -> Result<usize, ErasureError> {
    let mut settled = 0;
    while record_one(pool, calls, None).await? {
        settled += 1;
    }
    Ok(settled)
}

/// One pending row (`id`, or the oldest one free when `None`): its event recorded unless the
/// log holds it already, then the row deleted. Answers whether there was a row.
async fn record_one(
    pool: &PgPool,
    calls: &Store<Call>,
    id: Option<i64>,
) -> Result<bool, ErasureError> {
    // Held while the event is appended (in a transaction of its own): a concurrent pass skips
    // the row, or waits for it, and then finds it gone.
    let mut tx = pool.begin().await?;
    let row: Option<(i64, String, String, String, DateTime<Utc>)> = match id {
        Some(id) => sqlx::query_as(
            "select id, call_aggregate_id, scope, reason, erased_at from erasure_event_pending
             where id = $1 for update",
        )
        .bind(id),
        None => sqlx::query_as(
            "select id, call_aggregate_id, scope, reason, erased_at from erasure_event_pending
             order by id limit 1 for update skip locked",
        ),
    }
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, aggregate_id, scope, reason, at)) = row else {
        return Ok(false);
    };
    let recorded: bool = sqlx::query_scalar(
        "select exists (select 1 from events
                        where aggregate_type = 'Call' and aggregate_id = $1
                          and event_type = 'PersonalDataErased' and metadata->>'erasure_id' = $2)",
    )
    .bind(&aggregate_id)
    .bind(id.to_string())
    .fetch_one(&mut *tx)
    .await?;
    if !recorded {
        let (scope, reason) = (parse(scope), parse(reason));
        let metadata = HashMap::from([
            ("erasure".to_owned(), text::<ErasureReason>(reason)),
            ("erasure_id".to_owned(), id.to_string()),
        ]);
        let command = CallCommand::RecordErasure { scope, reason, at };
        match execute(calls, &aggregate_id, command, &metadata).await {
            Ok(_) => {}
            // A key row whose call was never accepted (its acceptance failed, or is still on
            // its way and then stores the fields as erased): no log to record it in.
            Err(AggregateError::UserError(CallError::NotAccepted)) => {
                tracing::info!(call = %aggregate_id, "erased keys of a call never accepted");
            }
            Err(err) => {
                return Err(ErasureError::Record {
                    call: aggregate_id,
                    source: Box::new(err),
                })
            }
        }
    }
    sqlx::query("delete from erasure_event_pending where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// One worker instance's progress through `erased_recording`: rows are read in `(tx_id, id)`
/// order and only below the oldest transaction still running (the projector's way of reading
/// the log), so no row can later appear behind what was read. It starts from the beginning:
/// a new instance deletes whatever an erasure of the last day left in its spool.
#[derive(Debug, Default)]
pub struct SpoolPurge {
    after: (i64, i64),
}

impl SpoolPurge {
    /// Deletes from `spool` the recordings erased since the last pass; answers how many
    /// digests it read.
    pub async fn pass(&mut self, pool: &PgPool, spool: &Arc<Spool>) -> Result<usize, sqlx::Error> {
        let mut read = 0;
        loop {
            let rows: Vec<(i64, i64, String)> = sqlx::query_as(
                "select tx_id::text::bigint, id, recording_sha256 from erased_recording
                 where (tx_id, id) > ($1::text::xid8, $2)
                   and tx_id < pg_snapshot_xmin(pg_current_snapshot())
                 order by erased_recording.tx_id, erased_recording.id
                 limit $3",
            )
            .bind(self.after.0.to_string())
            .bind(self.after.1)
            .bind(PURGE_PAGE)
            .fetch_all(pool)
            .await?;
            let Some((tx_id, id, _)) = rows.last() else {
                return Ok(read);
            };
            self.after = (*tx_id, *id);
            read += rows.len();
            let full = rows.len() as i64 == PURGE_PAGE;
            let spool = spool.clone();
            let digests: Vec<String> = rows.into_iter().map(|(_, _, sha)| sha).collect();
            let removed = tokio::task::spawn_blocking(move || {
                digests.iter().filter(|sha| spool.remove(sha)).count()
            })
            .await
            .unwrap_or_default();
            if removed > 0 {
                tracing::info!(removed, "spooled recordings of erased calls deleted");
            }
            if !full {
                return Ok(read);
            }
        }
    }
}

/// Deletes the rows of recordings no spool can hold any more.
pub async fn expire_erased_recordings(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(&format!(
        "delete from erased_recording where erased_at < now() - interval '{SPOOL_HOLDS_FOR}'"
    ))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// The follow-up of a worker process: every `every`, records missing erasure events and
/// purges its spool of erased recordings; hourly, expires old rows. Cheap when there is
/// nothing to do: two indexed queries that find nothing.
pub async fn run(pool: PgPool, calls: Store<Call>, spool: Arc<Spool>, every: Duration) {
    const EXPIRE_EVERY: Duration = Duration::from_secs(3600);
    let mut ticks = tokio::time::interval(every);
    let mut purge = SpoolPurge::default();
    let mut expired_at: Option<Instant> = None;
    loop {
        ticks.tick().await;
        match record_missing_events(&pool, &calls).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "missing erasure events recorded"),
            Err(err) => {
                tracing::warn!(error = %crate::error_chain::ErrorChain(&err), "could not record erasure events")
            }
        }
        if let Err(err) = purge.pass(&pool, &spool).await {
            tracing::warn!(error = %crate::error_chain::ErrorChain(&err), "could not read erased recordings");
        }
        if expired_at.is_none_or(|at| at.elapsed() >= EXPIRE_EVERY) {
            expired_at = Some(Instant::now());
            if let Err(err) = expire_erased_recordings(&pool).await {
                tracing::warn!(error = %crate::error_chain::ErrorChain(&err), "could not expire erased recordings");
            }
        }
    }
}
