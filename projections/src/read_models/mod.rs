//! The analyst read models `call`, `batch`, `daily_tenant_stats` and `agent_daily_stats`, kept as
//! one projection so a call's status change and the counts that depend on it move together.
//!
//! Each page is applied set-wise: the rows it touches are loaded in one query per table, the
//! events are folded into them in memory ([`rows`]), and the rows are written back in one
//! statement per table. That keeps a rebuild fast (a handful of round trips per page of events).

pub mod rows;

use std::collections::HashMap;

use callingest_domain::batch::BatchEvent;
use callingest_domain::call::{split_call_aggregate_id, CallEvent};
use chrono::NaiveDate;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use callingest_privacy::Privacy;

use crate::event_log::StoredEvent;
use crate::opened::open_call_events;
use crate::projector::{Projection, ProjectionError};
use rows::{AgentDailyStatsRow, BatchRow, CallRow, CallStatus, DailyTenantStatsRow};

/// Opens call events for the `call` row's personal columns.
pub struct ReadModels(pub Privacy);

type CallKey = (String, String);
type DayKey = (NaiveDate, String, String);
/// Day, partner, tenant, sub-tenant, agent.
type AgentDayKey = (NaiveDate, String, String, String, String);

enum Decoded {
    Call(CallKey, CallEvent),
    Batch(BatchEvent),
}

#[async_trait::async_trait]
impl Projection for ReadModels {
    fn name(&self) -> &'static str {
        "read_models"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["call", "batch", "daily_tenant_stats", "agent_daily_stats"]
    }

    async fn apply_page(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let decoded = decode_all(&mut *conn, &self.0, events).await?;

        let mut call_keys: Vec<CallKey> = decoded
            .iter()
            .filter_map(|(_, d)| match d {
                Decoded::Call(key, _) => Some(key.clone()),
                Decoded::Batch(_) => None,
            })
            .collect();
        call_keys.sort_unstable();
        call_keys.dedup();
        let mut calls: HashMap<CallKey, CallRow> = load_calls(conn, &call_keys).await?;
        // Rows that exist are replaced; new ones (all of them in a rebuild) are only inserted.
        let existing: Vec<CallKey> = calls.keys().cloned().collect();

        let mut batch_ids: Vec<Uuid> = calls.values().map(|c| c.batch_id).collect();
        let mut day_keys: Vec<DayKey> = calls.values().map(day_key).collect();
        let mut agent_day_keys: Vec<AgentDayKey> = calls.values().map(agent_day_key).collect();
        for (_, d) in &decoded {
            match d {
                Decoded::Call(_, CallEvent::CallAccepted(e)) => {
                    batch_ids.push(e.batch_id);
                    let row = CallRow::accepted(e);
                    day_keys.push(day_key(&row));
                    agent_day_keys.push(agent_day_key(&row));
                }
                Decoded::Call(_, CallEvent::DuplicateSubmissionReceived(e)) => {
                    batch_ids.push(e.batch_id)
                }
                Decoded::Batch(BatchEvent::BatchSubmitted(e)) => batch_ids.push(e.batch_id),
                Decoded::Call(..) => {}
            }
        }
        let mut batches = load_batches(conn, &batch_ids).await?;
        let mut days = load_days(conn, &day_keys).await?;
        let mut agent_days = load_agent_days(conn, &agent_day_keys).await?;

        for (event, d) in decoded {
            let at = event.recorded_at;
            match d {
                Decoded::Batch(BatchEvent::BatchSubmitted(e)) => {
                    batches
                        .entry(e.batch_id)
                        .or_insert_with(|| {
                            BatchRow::new(
                                e.batch_id,
                                e.partner_id.as_str(),
                                e.tenant_id.as_str(),
                                e.sub_tenant_id.as_str(),
                                at,
                            )
                        })
                        .submitted(&e);
                }
                Decoded::Call(key, CallEvent::CallAccepted(e)) => {
                    if calls.contains_key(&key) {
                        continue;
                    }
                    let row = CallRow::accepted(&e);
                    batch_of(&mut batches, &row, row.batch_id).count(
                        None,
                        CallStatus::Accepted,
                        at,
                    );
                    day_of(&mut days, &row).count(CallStatus::Accepted, None);
                    agent_day_of(&mut agent_days, &row).count(CallStatus::Accepted, &row);
                    calls.insert(key, row);
                }
                Decoded::Call(key, event) => {
                    let Some(row) = calls.get_mut(&key) else {
                        // Later events of a call always follow its acceptance in the log.
                        continue;
                    };
                    let before = row.status;
                    row.apply(&event, at);
                    if let CallEvent::DuplicateSubmissionReceived(dup) = &event {
                        let batch = batch_of(&mut batches, row, dup.batch_id);
                        batch.duplicate_count += 1;
                        batch.updated_at = at;
                    }
                    if row.status != before {
                        batch_of(&mut batches, row, row.batch_id).count(
                            Some(before),
                            row.status,
                            at,
                        );
                        day_of(&mut days, row).count(row.status, row.recording_duration_ms);
                        agent_day_of(&mut agent_days, row).count(row.status, row);
                    }
                }
            }
        }

        store_calls(conn, &existing, calls.into_values().collect()).await?;
        store_batches(conn, batches.into_values().collect()).await?;
        store_days(conn, days.into_values().collect()).await?;
        store_agent_days(conn, agent_days.into_values().collect()).await?;
        Ok(())
    }
}

/// The page's events in order, call events opened (see [`open_call_events`]).
async fn decode_all<'e>(
    conn: &mut PgConnection,
    privacy: &Privacy,
    events: &'e [StoredEvent],
) -> Result<Vec<(&'e StoredEvent, Decoded)>, ProjectionError> {
    let is_call = |e: &&StoredEvent| {
        e.aggregate_type == "Call" && split_call_aggregate_id(&e.aggregate_id).is_some()
    };
    let mut calls = open_call_events(conn, privacy, events.iter().filter(is_call))
        .await?
        .into_iter();
    let mut decoded = Vec::with_capacity(events.len());
    for event in events {
        let d = match event.aggregate_type.as_str() {
            "Call" if is_call(&event) => {
                let (_, payload) = calls.next().expect("one opened event per call event");
                let (partner, call) =
                    split_call_aggregate_id(&event.aggregate_id).expect("checked by is_call");
                Decoded::Call((partner.to_owned(), call.to_owned()), payload)
            }
            "Batch" => Decoded::Batch(
                event
                    .decode()
                    .map_err(|e| ProjectionError::undecodable(event, e))?,
            ),
            _ => continue,
        };
        decoded.push((event, d));
    }
    Ok(decoded)
}

fn day_key(row: &CallRow) -> DayKey {
    (row.day(), row.partner_id.clone(), row.tenant_id.clone())
}

fn agent_day_key(row: &CallRow) -> AgentDayKey {
    (
        row.day(),
        row.partner_id.clone(),
        row.tenant_id.clone(),
        row.sub_tenant_id.clone(),
        row.agent_id.clone(),
    )
}

fn agent_day_of<'a>(
    days: &'a mut HashMap<AgentDayKey, AgentDailyStatsRow>,
    call: &CallRow,
) -> &'a mut AgentDailyStatsRow {
    days.entry(agent_day_key(call))
        .or_insert_with(|| AgentDailyStatsRow::new(call))
}

fn batch_of<'a>(
    batches: &'a mut HashMap<Uuid, BatchRow>,
    call: &CallRow,
    batch_id: Uuid,
) -> &'a mut BatchRow {
    batches.entry(batch_id).or_insert_with(|| {
        BatchRow::new(
            batch_id,
            &call.partner_id,
            &call.tenant_id,
            &call.sub_tenant_id,
            call.updated_at,
        )
    })
}

fn day_of<'a>(
    days: &'a mut HashMap<DayKey, DailyTenantStatsRow>,
    call: &CallRow,
) -> &'a mut DailyTenantStatsRow {
    days.entry(day_key(call))
        .or_insert_with(|| DailyTenantStatsRow::new(call.day(), &call.partner_id, &call.tenant_id))
}

fn rows_from_json<T: DeserializeOwned>(
    values: Vec<serde_json::Value>,
) -> Result<Vec<T>, ProjectionError> {
    values
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()
        .map_err(|e| ProjectionError::Database(sqlx::Error::Decode(Box::new(e))))
}

fn rows_to_json<T: Serialize>(rows: &[T]) -> Result<String, ProjectionError> {
    serde_json::to_string(rows)
        .map_err(|e| ProjectionError::Database(sqlx::Error::Encode(Box::new(e))))
}

async fn load_calls(
    conn: &mut PgConnection,
    keys: &[CallKey],
) -> Result<HashMap<CallKey, CallRow>, ProjectionError> {
    // `= any` on both key columns is an index scan with array keys; it may also return pairs
    // nobody asked for (partner A's id of partner B's call), which the filter below drops.
    let mut partners: Vec<&str> = keys.iter().map(|(p, _)| p.as_str()).collect();
    partners.sort_unstable();
    partners.dedup();
    let ids: Vec<&str> = keys.iter().map(|(_, c)| c.as_str()).collect();
    let values: Vec<serde_json::Value> = sqlx::query_scalar(
        "select to_jsonb(c) from call c where c.partner_id = any($1) and c.call_id = any($2)",
    )
    .bind(&partners)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let wanted: std::collections::HashSet<&CallKey> = keys.iter().collect();
    let rows: Vec<CallRow> = rows_from_json(values)?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.partner_id.clone(), r.call_id.clone()), r))
        .filter(|(key, _)| wanted.contains(key))
        .collect())
}

async fn store_calls(
    conn: &mut PgConnection,
    existing: &[CallKey],
    rows: Vec<CallRow>,
) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    if !existing.is_empty() {
        let (partners, ids): (Vec<&str>, Vec<&str>) = existing
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .unzip();
        sqlx::query(
            "delete from call using unnest($1::text[], $2::text[]) as k(partner_id, call_id)
             where call.partner_id = k.partner_id and call.call_id = k.call_id",
        )
        .bind(&partners)
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    }
    copy_rows(conn, "call", &rows).await
}

/// Inserts rows with `COPY … (format csv)`: several times faster than an `insert`, which
/// matters when a rebuild writes every call again. Columns are the rows' field names.
async fn copy_rows<T: Serialize>(
    conn: &mut PgConnection,
    table: &str,
    rows: &[T],
) -> Result<(), ProjectionError> {
    let encode = |e: serde_json::Error| ProjectionError::Database(sqlx::Error::Encode(Box::new(e)));
    let rows: Vec<serde_json::Map<String, serde_json::Value>> = rows
        .iter()
        .map(|row| match serde_json::to_value(row).map_err(encode)? {
            serde_json::Value::Object(fields) => Ok(fields),
            _ => unreachable!("rows serialise as objects"),
        })
        .collect::<Result<_, ProjectionError>>()?;
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let columns: Vec<&str> = first.keys().map(String::as_str).collect();
    let mut csv = String::with_capacity(rows.len() * 600);
    for row in &rows {
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                csv.push(',');
            }
            match &row[*column] {
                // Unquoted nothing is NULL in PostgreSQL's CSV; an empty string is `""`.
                serde_json::Value::Null => {}
                serde_json::Value::String(text) => {
                    csv.push('"');
                    csv.push_str(&text.replace('"', "\"\""));
                    csv.push('"');
                }
                other => csv.push_str(&other.to_string()),
            }
        }
        csv.push('\n');
    }
    let statement = format!(
        "copy {table} ({}) from stdin (format csv)",
        columns.join(", ")
    );
    let mut copy = conn.copy_in_raw(&statement).await?;
    copy.send(csv.into_bytes()).await?;
    copy.finish().await?;
    Ok(())
}

async fn load_batches(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, BatchRow>, ProjectionError> {
    let values: Vec<serde_json::Value> =
        sqlx::query_scalar("select to_jsonb(b) from batch b where batch_id = any($1)")
            .bind(ids)
            .fetch_all(&mut *conn)
            .await?;
    let rows: Vec<BatchRow> = rows_from_json(values)?;
    Ok(rows.into_iter().map(|r| (r.batch_id, r)).collect())
}

async fn store_batches(
    conn: &mut PgConnection,
    rows: Vec<BatchRow>,
) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.batch_id).collect();
    sqlx::query("delete from batch where batch_id = any($1)")
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    sqlx::query("insert into batch select * from json_populate_recordset(null::batch, $1::json)")
        .bind(rows_to_json(&rows)?)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn load_days(
    conn: &mut PgConnection,
    keys: &[DayKey],
) -> Result<HashMap<DayKey, DailyTenantStatsRow>, ProjectionError> {
    let days: Vec<NaiveDate> = keys.iter().map(|k| k.0).collect();
    let partners: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
    let tenants: Vec<&str> = keys.iter().map(|k| k.2.as_str()).collect();
    let values: Vec<serde_json::Value> = sqlx::query_scalar(
        "select to_jsonb(d) from daily_tenant_stats d
         where (day, partner_id, tenant_id) in (select * from unnest($1::date[], $2::text[], $3::text[]))",
    )
    .bind(&days)
    .bind(&partners)
    .bind(&tenants)
    .fetch_all(&mut *conn)
    .await?;
    let rows: Vec<DailyTenantStatsRow> = rows_from_json(values)?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.day, r.partner_id.clone(), r.tenant_id.clone()), r))
        .collect())
}

async fn store_days(
    conn: &mut PgConnection,
    rows: Vec<DailyTenantStatsRow>,
) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    let days: Vec<NaiveDate> = rows.iter().map(|r| r.day).collect();
    let partners: Vec<&str> = rows.iter().map(|r| r.partner_id.as_str()).collect();
    let tenants: Vec<&str> = rows.iter().map(|r| r.tenant_id.as_str()).collect();
    sqlx::query(
        "delete from daily_tenant_stats
         where (day, partner_id, tenant_id) in (select * from unnest($1::date[], $2::text[], $3::text[]))",
    )
    .bind(&days)
    .bind(&partners)
    .bind(&tenants)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "insert into daily_tenant_stats select * from json_populate_recordset(null::daily_tenant_stats, $1::json)",
    )
    .bind(rows_to_json(&rows)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn load_agent_days(
    conn: &mut PgConnection,
    keys: &[AgentDayKey],
) -> Result<HashMap<AgentDayKey, AgentDailyStatsRow>, ProjectionError> {
    let days: Vec<NaiveDate> = keys.iter().map(|k| k.0).collect();
    let column = |i: fn(&AgentDayKey) -> &str| keys.iter().map(i).collect::<Vec<&str>>();
    let values: Vec<serde_json::Value> = sqlx::query_scalar(
        "select to_jsonb(d) from agent_daily_stats d
         where (day, partner_id, tenant_id, sub_tenant_id, agent_id) in
               (select * from unnest($1::date[], $2::text[], $3::text[], $4::text[], $5::text[]))",
    )
    .bind(&days)
    .bind(column(|k| &k.1))
    .bind(column(|k| &k.2))
    .bind(column(|k| &k.3))
    .bind(column(|k| &k.4))
    .fetch_all(&mut *conn)
    .await?;
    let rows: Vec<AgentDailyStatsRow> = rows_from_json(values)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let key = (
                r.day,
                r.partner_id.clone(),
                r.tenant_id.clone(),
                r.sub_tenant_id.clone(),
                r.agent_id.clone(),
            );
            (key, r)
        })
        .collect())
}

async fn store_agent_days(
    conn: &mut PgConnection,
    rows: Vec<AgentDailyStatsRow>,
) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    let days: Vec<NaiveDate> = rows.iter().map(|r| r.day).collect();
    let column = |f: fn(&AgentDailyStatsRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    sqlx::query(
        "delete from agent_daily_stats
         where (day, partner_id, tenant_id, sub_tenant_id, agent_id) in
               (select * from unnest($1::date[], $2::text[], $3::text[], $4::text[], $5::text[]))",
    )
    .bind(&days)
    .bind(column(|r| &r.partner_id))
    .bind(column(|r| &r.tenant_id))
    .bind(column(|r| &r.sub_tenant_id))
    .bind(column(|r| &r.agent_id))
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "insert into agent_daily_stats
         select * from json_populate_recordset(null::agent_daily_stats, $1::json)",
    )
    .bind(rows_to_json(&rows)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
