//! `callingest privacy encrypt-existing`: seals the personal fields of events written before
//! sealing existed, in place.
//!
//! This is the one exception to the append-only event log (README, "Personal data"). The
//! trigger of migration 0017 lets an update through only in a transaction that names this
//! rewrite, only from a clear `CallAccepted` or `TranscriptProduced` payload to its sealed form,
//! and only the payload: ids, sequences, positions, metadata and times stay. Each run is
//! recorded in `event_rewrite` (who, from which host, how many calls and events, which
//! positions), its counts updated in each batch's transaction.
//!
//! Calls are taken in id order, a batch per transaction: each call without a key row gets one
//! (with the blind indexes of its number and e-mails, so erasure finds it), and its clear
//! events are sealed with its keys. A call whose keys were erased meanwhile loses the clear
//! fields instead. Safe while the service runs: new events are sealed already, the rewritten
//! rows are locked while a batch runs (a second run waits, then finds them sealed), and an
//! interrupted run is simply run again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use callingest_domain::call::CallEvent;
use callingest_privacy::{keyring, seal, CallKeyRow, CallKeys, Privacy};
use sqlx::PgPool;

use crate::stored_rewrite_error::StoredRewriteError;

/// Calls per transaction unless told otherwise.
pub const DEFAULT_BATCH_CALLS: i64 = 200;

/// What a run did: the command's JSON summary.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RewriteSummary {
    /// The run's row in `event_rewrite`.
    pub run_id: i64,
    pub calls_rewritten: u64,
    pub events_rewritten: u64,
    /// Calls with clear events but neither a key row nor a clear `CallAccepted` to make one
    /// from (a log damaged otherwise): left as they are, their ids on stderr.
    pub calls_skipped: u64,
    pub first_position: Option<i64>,
    pub last_position: Option<i64>,
    pub seconds: f64,
}

/// The clear events of the calls of one batch, as read.
struct ClearEvent {
    aggregate_id: String,
    sequence: i64,
    global_position: i64,
    event: CallEvent,
}

/// The condition of an event still holding personal fields in clear.
const CLEAR: &str = "aggregate_type = 'Call'
     and event_type in ('CallAccepted', 'TranscriptProduced')
     and not (payload -> event_type ? 'sealed')";

pub async fn encrypt_existing(
    pool: &PgPool,
    privacy: &Privacy,
    batch_calls: i64,
) -> Result<RewriteSummary, StoredRewriteError> {
    let started = Instant::now();
    let run_id: i64 = sqlx::query_scalar(
        "insert into event_rewrite (kind, host) values ('encrypt-existing', $1) returning run_id",
    )
    .bind(host_name())
    .fetch_one(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!(
        "select count(distinct aggregate_id) from events where {CLEAR}"
    ))
    .fetch_one(pool)
    .await?;
    let mut summary = RewriteSummary {
        run_id,
        ..Default::default()
    };
    let mut cursor = String::new();
    let mut last_report = Instant::now();
    while let Some(last) =
        rewrite_batch(pool, privacy, run_id, &cursor, batch_calls, &mut summary).await?
    {
        cursor = last;
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            eprintln!("{}", progress(&summary, total));
        }
    }
    sqlx::query("update event_rewrite set finished_at = now() where run_id = $1")
        .bind(run_id)
        .execute(pool)
        .await?;
    eprintln!("{}", progress(&summary, total));
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn progress(summary: &RewriteSummary, total: i64) -> String {
    format!(
        "encrypt-existing: {}/{} calls sealed ({} events)",
        summary.calls_rewritten, total, summary.events_rewritten
    )
}

/// The machine's name for the audit row (the database adds its user and the client address).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Seals the clear events of the next `batch_calls` calls after `cursor` in one transaction;
/// answers the last call id looked at, or `None` when no call after `cursor` has any.
async fn rewrite_batch(
    pool: &PgPool,
    privacy: &Privacy,
    run_id: i64,
    cursor: &str,
    batch_calls: i64,
    summary: &mut RewriteSummary,
) -> Result<Option<String>, StoredRewriteError> {
    let mut tx = pool.begin().await?;
    sqlx::query("set local callingest.rewrite = 'encrypt-existing'")
        .execute(&mut *tx)
        .await?;
    let ids: Vec<String> = sqlx::query_scalar(&format!(
        "select aggregate_id from events where {CLEAR} and aggregate_id > $1
         group by aggregate_id order by aggregate_id limit $2"
    ))
    .bind(cursor)
    .bind(batch_calls)
    .fetch_all(&mut *tx)
    .await?;
    let Some(last) = ids.last().cloned() else {
        return Ok(None);
    };
    // Locked, and read again under the lock: a concurrent run that sealed them first leaves
    // nothing here.
    let rows: Vec<(String, i64, i64, serde_json::Value)> = sqlx::query_as(&format!(
        "select aggregate_id, sequence, global_position, payload from events
         where {CLEAR} and aggregate_id = any($1)
         order by aggregate_id, sequence
         for update"
    ))
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut events = Vec::with_capacity(rows.len());
    for (aggregate_id, sequence, global_position, payload) in rows {
        let event = serde_json::from_value(payload)
            .map_err(|e| StoredRewriteError::Decode(format!("event {global_position}"), e))?;
        events.push(ClearEvent {
            aggregate_id,
            sequence,
            global_position,
            event,
        });
    }

    let keys = call_keys(&mut tx, privacy, &ids, &events, summary).await?;
    let (mut id, mut sequence, mut payload) = (Vec::new(), Vec::new(), Vec::new());
    let mut positions = Vec::new();
    for e in &events {
        let Some(keys) = keys.get(&e.aggregate_id) else {
            continue;
        };
        let sealed = seal::seal_event(privacy, &e.aggregate_id, &e.event, keys)?;
        payload.push(serde_json::to_string(sealed.as_ref()).map_err(|err| {
            StoredRewriteError::Decode(format!("event {}", e.global_position), err)
        })?);
        id.push(e.aggregate_id.clone());
        sequence.push(e.sequence);
        positions.push(e.global_position);
    }
    sqlx::query(
        "update events e set payload = u.payload::jsonb
         from unnest($1::text[], $2::bigint[], $3::text[]) as u(aggregate_id, sequence, payload)
         where e.aggregate_type = 'Call' and e.aggregate_id = u.aggregate_id
           and e.sequence = u.sequence",
    )
    .bind(&id)
    .bind(&sequence)
    .bind(&payload)
    .execute(&mut *tx)
    .await?;
    let calls = keys.len() as i64;
    let (first, last_position) = (
        positions.iter().min().copied(),
        positions.iter().max().copied(),
    );
    sqlx::query(
        "update event_rewrite set
             calls_rewritten = calls_rewritten + $2, events_rewritten = events_rewritten + $3,
             first_position = least(first_position, $4), last_position = greatest(last_position, $5)
         where run_id = $1",
    )
    .bind(run_id)
    .bind(calls)
    .bind(id.len() as i64)
    .bind(first)
    .bind(last_position)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    summary.calls_rewritten += calls as u64;
    summary.events_rewritten += id.len() as u64;
    summary.first_position = summary.first_position.into_iter().chain(first).min();
    summary.last_position = summary.last_position.into_iter().chain(last_position).max();
    Ok(Some(last))
}

/// The keys to seal each call's events with: its key row's, or a new row's (inserted here)
/// made from its clear `CallAccepted`. Calls with neither are left out, and counted.
async fn call_keys(
    tx: &mut sqlx::PgConnection,
    privacy: &Privacy,
    ids: &[String],
    events: &[ClearEvent],
    summary: &mut RewriteSummary,
) -> Result<HashMap<String, CallKeys>, StoredRewriteError> {
    let with_events: Vec<String> = ids
        .iter()
        .filter(|id| events.iter().any(|e| &e.aggregate_id == *id))
        .cloned()
        .collect();
    let mut keys = keyring::load(&mut *tx, privacy, &with_events).await?;
    keyring::refresh_writing_version(&mut *tx, privacy).await?;
    let mut rows: Vec<CallKeyRow> = Vec::new();
    let without_row: Vec<&String> = with_events
        .iter()
        .filter(|id| !keys.contains_key(*id))
        .collect();
    for id in without_row {
        let accepted = events.iter().find_map(|e| match &e.event {
            CallEvent::CallAccepted(a) if &e.aggregate_id == id => Some(a),
            _ => None,
        });
        let Some(accepted) = accepted else {
            eprintln!("encrypt-existing: {id} has clear events but no key row and no clear CallAccepted: skipped");
            summary.calls_skipped += 1;
            continue;
        };
        let (call_keys, row) =
            privacy.new_key_row(accepted.partner_id.as_str(), id, &accepted.call);
        keys.insert(id.clone(), call_keys);
        rows.push(row);
    }
    keyring::bind_rows(sqlx::query(keyring::INSERT_ROWS), &rows)
        .execute(&mut *tx)
        .await?;
    Ok(keys)
}
