//! Master-key rotation (`callingest privacy rotate-master-key`): every key row wrapped by the
//! previous master key is wrapped again by the new one, and its blind indexes are computed
//! again under the new index key (derived from the master key, so a leaked master key leaks
//! the index key too). The data keys themselves do not change, so no event is touched.
//!
//! The command runs with the new key as `CALLINGEST_MASTER_KEY` and the old one as
//! `CALLINGEST_PREVIOUS_MASTER_KEY`, after every instance has been given both. It first makes
//! the new key current (instances holding both then wrap new rows with it), then walks
//! `keyring.call_key` in key order, a batch per transaction, and finally deletes the previous
//! key's row from `keyring.master_key`: from then on the new key alone opens everything. Any
//! step may be interrupted; running the command again goes on where it stopped, and once the
//! rotation is done it changes nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use callingest_domain::call::CallEvent;
use callingest_domain::submission::NewCall;
use callingest_privacy::keys::Part;
use callingest_privacy::{keyring, seal, Privacy};
use sqlx::PgPool;

use crate::stored_rewrite_error::StoredRewriteError;

/// Key rows re-wrapped per transaction.
const BATCH: i64 = 500;

/// A key row is written before its call's first event on the call-by-call path: a row without
/// a `CallAccepted` may be a call being accepted this instant. Past this age it is a leftover
/// of a failed acceptance (its call never existed) and is re-wrapped without indexes.
const ORPHAN_AFTER_SECONDS: f64 = 60.0;

/// What a run did: the command's JSON summary.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RotationSummary {
    /// Whether a rotation was under way (false: nothing to do, the keyring has one key).
    pub rotated: bool,
    /// The version of the master key that now wraps every row.
    pub master_key_version: i32,
    /// The version retired, when `rotated`.
    pub previous_version: Option<i32>,
    pub calls_rewrapped: u64,
    /// Rows of calls that never got their first event, re-wrapped without indexes.
    pub orphan_rows: u64,
    pub seconds: f64,
}

/// Rotates to the configured master key from the previous one (see the module documentation).
pub async fn rotate(
    pool: &PgPool,
    privacy: &Privacy,
) -> Result<RotationSummary, StoredRewriteError> {
    let started = Instant::now();
    let to = privacy.current_version();
    let Some(from) = privacy.previous_version() else {
        return Ok(RotationSummary {
            master_key_version: to,
            ..Default::default()
        });
    };
    make_current(pool, to).await?;
    privacy
        .set_writing_version(to)
        .expect("the configured version is held");
    let mut summary = RotationSummary {
        rotated: true,
        master_key_version: to,
        previous_version: Some(from),
        ..Default::default()
    };
    let total = remaining(pool, from).await?;
    let mut last_report = Instant::now();
    loop {
        let mut cursor = String::new();
        while let Some(last) = rewrap_batch(pool, privacy, from, &cursor, &mut summary).await? {
            cursor = last;
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                eprintln!("{}", progress(&summary, total));
            }
        }
        // Rows skipped (young ones without an event, rows an erasure held) or written under
        // the previous key behind the cursor by an instance that had not seen the switch.
        if remaining(pool, from).await? > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        match retire(pool, from).await {
            Ok(()) => break,
            // A row under the previous key committed since the count: walk again.
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    eprintln!("{}", progress(&summary, total));
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn progress(summary: &RotationSummary, total: i64) -> String {
    format!(
        "rotate-master-key: {}/{} key rows re-wrapped ({} orphan rows)",
        summary.calls_rewrapped, total, summary.orphan_rows
    )
}

/// The new key wraps new rows from now on (in one transaction, so there is always exactly one
/// current key).
async fn make_current(pool: &PgPool, version: i32) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "update keyring.master_key set is_current = false where is_current and version <> $1",
    )
    .bind(version)
    .execute(&mut *tx)
    .await?;
    sqlx::query("update keyring.master_key set is_current = true where version = $1")
        .bind(version)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

async fn remaining(pool: &PgPool, version: i32) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select count(*) from keyring.call_key where master_key_version = $1")
        .bind(version)
        .fetch_one(pool)
        .await
}

/// The previous key is forgotten: a start holding only it is refused, and a row wrapped by it
/// can no longer be written (the key-version triggers of migration 0019 refuse it, as they
/// refuse this delete while a row still uses the key).
async fn retire(pool: &PgPool, version: i32) -> Result<(), sqlx::Error> {
    sqlx::query("delete from keyring.master_key where version = $1 and not is_current")
        .bind(version)
        .execute(pool)
        .await?;
    Ok(())
}

/// A key row as the rotation reads it.
type Row = (String, String, Option<Vec<u8>>, Option<Vec<u8>>, f64);

/// Re-wraps the next batch of rows under the previous key after `cursor`, in one transaction;
/// answers the last id looked at, or `None` at the end of the table.
async fn rewrap_batch(
    pool: &PgPool,
    privacy: &Privacy,
    from: i32,
    cursor: &str,
    summary: &mut RotationSummary,
) -> Result<Option<String>, StoredRewriteError> {
    let to = privacy.current_version();
    let mut tx = pool.begin().await?;
    // Rows an erasure holds are skipped: the next walk takes them.
    let rows: Vec<Row> = sqlx::query_as(
        "select call_aggregate_id, partner_id, call_key, agent_key,
                extract(epoch from now() - created_at)::float8
         from keyring.call_key
         where master_key_version = $1 and call_aggregate_id > $2
         order by call_aggregate_id limit $3
         for update skip locked",
    )
    .bind(from)
    .bind(cursor)
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    let Some(last) = rows.last().map(|r| r.0.clone()) else {
        return Ok(None);
    };
    let ids: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let calls = accepted_calls(&mut tx, privacy, &ids).await?;

    let mut update = Update::default();
    for (id, partner_id, call_key, agent_key, age) in rows {
        let indexes = match calls.get(&id) {
            Some(call) => {
                let [number, customer_email, agent_email] = privacy
                    .call_indexes(to, &partner_id, call)
                    .expect("the configured version is held");
                // An erased key's indexes stay null, whatever the event still shows (a clear
                // event of before sealing).
                let if_kept = |key: &Option<Vec<u8>>, index| key.as_ref().and(index);
                [
                    if_kept(&call_key, number),
                    if_kept(&call_key, customer_email),
                    if_kept(&agent_key, agent_email),
                ]
            }
            None if age > ORPHAN_AFTER_SECONDS => {
                summary.orphan_rows += 1;
                [None, None, None]
            }
            None => continue,
        };
        let rewrap = |part, wrapped: Option<Vec<u8>>| {
            wrapped
                .map(|w| privacy.rewrap(&id, part, from, &w, to))
                .transpose()
                .map_err(|_| StoredRewriteError::DoesNotOpen(id.clone()))
        };
        update.call_key.push(rewrap(Part::Call, call_key)?);
        update.agent_key.push(rewrap(Part::Agent, agent_key)?);
        let [number, customer_email, agent_email] = indexes;
        update.contact_number_index.push(number);
        update.customer_email_index.push(customer_email);
        update.agent_email_index.push(agent_email);
        update.id.push(id);
    }
    sqlx::query(
        "update keyring.call_key k set
             call_key = u.call_key, agent_key = u.agent_key,
             contact_number_index = u.contact_number_index,
             customer_email_index = u.customer_email_index,
             agent_email_index = u.agent_email_index,
             master_key_version = $7
         from unnest($1::text[], $2::bytea[], $3::bytea[], $4::bytea[], $5::bytea[], $6::bytea[])
              as u(id, call_key, agent_key, contact_number_index, customer_email_index,
                   agent_email_index)
         where k.call_aggregate_id = u.id",
    )
    .bind(&update.id)
    .bind(&update.call_key)
    .bind(&update.agent_key)
    .bind(&update.contact_number_index)
    .bind(&update.customer_email_index)
    .bind(&update.agent_email_index)
    .bind(to)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    summary.calls_rewrapped += update.id.len() as u64;
    Ok(Some(last))
}

/// The new values of a batch's rows, column by column.
#[derive(Default)]
struct Update {
    id: Vec<String>,
    call_key: Vec<Option<Vec<u8>>>,
    agent_key: Vec<Option<Vec<u8>>>,
    contact_number_index: Vec<Option<Vec<u8>>>,
    customer_email_index: Vec<Option<Vec<u8>>>,
    agent_email_index: Vec<Option<Vec<u8>>>,
}

/// The submitted calls of these call aggregates, opened with their keys as they are now
/// (erased fields stay erased).
async fn accepted_calls(
    tx: &mut sqlx::PgConnection,
    privacy: &Privacy,
    ids: &[String],
) -> Result<HashMap<String, NewCall>, StoredRewriteError> {
    let events: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "select aggregate_id, payload from events
         where aggregate_type = 'Call' and event_type = 'CallAccepted' and aggregate_id = any($1)",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    let keys = keyring::load(&mut *tx, privacy, ids).await?;
    let mut calls = HashMap::with_capacity(events.len());
    for (id, payload) in events {
        let event: CallEvent = serde_json::from_value(payload).map_err(|e| {
            StoredRewriteError::Decode(format!("the CallAccepted event of {id}"), e)
        })?;
        if let CallEvent::CallAccepted(accepted) =
            seal::open_event(privacy, &id, event, keys.get(&id))?
        {
            calls.insert(id, *accepted.call);
        }
    }
    Ok(calls)
}
