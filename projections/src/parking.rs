//! Parked events: what a projection could not decode or apply, kept out of its way.
//!
//! One bad event must not stop a projection for every partner. When a page fails, the projector
//! finds the culprit ([`crate::projector`]) and records it here (`projection_failure`,
//! migration 0008) instead of retrying the page for ever. Events of the same aggregate that come
//! later are recorded too, "held behind" the failed one, and not applied: a call's events are
//! only ever applied in order. `callingest projections retry` applies them again once the code
//! can; the event log itself is never touched.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::event_log::StoredEvent;

/// An aggregate, as `(aggregate_type, aggregate_id)`.
type AggregateKey = (String, String);

/// A `projection_failure` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ParkedEvent {
    pub projection: String,
    pub global_position: i64,
    pub tx_id: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    /// `None`: this event failed. Otherwise the global position of the failed event of the
    /// same aggregate it waits behind.
    pub held_behind: Option<i64>,
    /// Why it failed (for a held event: why the event it waits behind failed).
    pub error: String,
    pub failed_at: DateTime<Utc>,
}

/// The failed event an aggregate's later events wait behind.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub global_position: i64,
    pub error: String,
}

/// The aggregates parked for a projection, each with the failed event that holds it; looked up
/// without allocating, since every event of every page is checked while any is parked.
#[derive(Debug, Default)]
pub(crate) struct ParkedAggregates(HashMap<String, HashMap<String, Head>>);

impl ParkedAggregates {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The failed event `event`'s aggregate waits behind, if it is parked.
    pub fn get(&self, event: &StoredEvent) -> Option<&Head> {
        self.0
            .get(event.aggregate_type.as_str())?
            .get(event.aggregate_id.as_str())
    }

    pub fn insert(&mut self, event: &StoredEvent, head: Head) {
        self.0
            .entry(event.aggregate_type.clone())
            .or_default()
            .insert(event.aggregate_id.clone(), head);
    }
}

/// The aggregates parked for `projection`.
pub(crate) async fn parked_aggregates(
    conn: &mut PgConnection,
    projection: &str,
) -> Result<ParkedAggregates, sqlx::Error> {
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
        "select aggregate_type, aggregate_id, global_position, error from projection_failure
         where projection = $1 and held_behind is null",
    )
    .bind(projection)
    .fetch_all(conn)
    .await?;
    let mut parked = ParkedAggregates::default();
    for (kind, id, global_position, error) in rows {
        parked.0.entry(kind).or_default().insert(
            id,
            Head {
                global_position,
                error,
            },
        );
    }
    Ok(parked)
}

/// Records `event` as parked for `projection`: failed (`held_behind` `None`) or held behind
/// the failed event at that position.
pub(crate) async fn park(
    conn: &mut PgConnection,
    projection: &str,
    event: &StoredEvent,
    held_behind: Option<i64>,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into projection_failure
             (projection, global_position, tx_id, aggregate_type, aggregate_id, sequence,
              event_type, held_behind, error)
         values ($1, $2, $3::text::xid8, $4, $5, $6, $7, $8, $9)
         on conflict (projection, global_position) do update
         set held_behind = excluded.held_behind, error = excluded.error, failed_at = now()",
    )
    .bind(projection)
    .bind(event.global_position)
    .bind(event.tx_id.to_string())
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(event.sequence)
    .bind(&event.event_type)
    .bind(held_behind)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// The parked events of `projection`, with their events, grouped by aggregate in log order
/// (aggregates ordered by their first parked event).
pub(crate) async fn parked_events_by_aggregate(
    conn: &mut PgConnection,
    projection: &str,
) -> Result<Vec<Vec<StoredEvent>>, sqlx::Error> {
    let events: Vec<StoredEvent> = sqlx::query_as(
        "select e.global_position, e.tx_id::text::bigint as tx_id, e.aggregate_type,
                e.aggregate_id, e.sequence, e.event_type, e.event_version,
                e.payload::text as payload, e.recorded_at
         from projection_failure f join events e on e.global_position = f.global_position
         where f.projection = $1
         order by e.tx_id, e.global_position",
    )
    .bind(projection)
    .fetch_all(conn)
    .await?;
    let mut index: HashMap<AggregateKey, usize> = HashMap::new();
    let mut groups: Vec<Vec<StoredEvent>> = Vec::new();
    for event in events {
        let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
        let at = *index.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[at].push(event);
    }
    Ok(groups)
}

/// Removes the row of an event that now applied.
pub(crate) async fn unpark(
    conn: &mut PgConnection,
    projection: &str,
    global_position: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("delete from projection_failure where projection = $1 and global_position = $2")
        .bind(projection)
        .bind(global_position)
        .execute(conn)
        .await?;
    Ok(())
}

/// Removes every row of `projection` (a rebuild parks again what still fails).
pub(crate) async fn clear(conn: &mut PgConnection, projection: &str) -> Result<(), sqlx::Error> {
    sqlx::query("delete from projection_failure where projection = $1")
        .bind(projection)
        .execute(conn)
        .await?;
    Ok(())
}

/// Parked events, of one projection or all, by projection and log position; at most `limit`.
pub async fn list(
    pool: &PgPool,
    projection: Option<&str>,
    limit: i64,
) -> Result<Vec<ParkedEvent>, sqlx::Error> {
    sqlx::query_as(
        "select projection, global_position, tx_id::text::bigint as tx_id, aggregate_type,
                aggregate_id, sequence, event_type, held_behind, error, failed_at
         from projection_failure
         where $1::text is null or projection = $1
         order by projection, tx_id, global_position
         limit $2",
    )
    .bind(projection)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Sets the gauge `callingest_projection_parked_events{projection}`: events each projection has
/// parked (failed or held), 0 for those with none. Measured when `/metrics` is scraped.
pub async fn record_parked_gauge(pool: &PgPool) -> Result<(), sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "select c.name, (select count(*) from projection_failure f where f.projection = c.name)
         from projection_checkpoint c",
    )
    .fetch_all(pool)
    .await?;
    for (name, parked) in rows {
        metrics::gauge!("callingest_projection_parked_events", "projection" => name)
            .set(parked as f64);
    }
    Ok(())
}

/// The error and its causes, as one line: what an operator needs to see why an event failed.
pub fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
