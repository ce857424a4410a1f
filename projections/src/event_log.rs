//! Reading the event log in commit order.
//!
//! `global_position` alone is not a safe cursor: identity values are taken before commit, so a
//! transaction can commit position 10 after another committed 11. Each event also stores the
//! id of its writing transaction (`tx_id`), and readers only read events whose transaction is
//! below the oldest transaction still running (`pg_snapshot_xmin`): every such transaction has
//! ended, so no event can later appear behind a `(tx_id, global_position)` checkpoint.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// A position in the log: the last event a reader has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPosition {
    pub tx_id: i64,
    pub global_position: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    pub global_position: i64,
    pub tx_id: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The payload as stored, JSON text: decoding straight into the event type skips building
    /// a `serde_json::Value` first, which dominates the cost of a replay.
    pub payload: String,
    pub recorded_at: DateTime<Utc>,
}

impl StoredEvent {
    pub fn position(&self) -> LogPosition {
        LogPosition {
            tx_id: self.tx_id,
            global_position: self.global_position,
        }
    }

    /// The payload as an event of aggregate type `E`.
    pub fn decode<E: serde::de::DeserializeOwned>(&self) -> Result<E, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }
}

/// Up to `limit` events after `after` whose writers have all finished, in commit order.
pub async fn read_page(
    conn: &mut PgConnection,
    after: LogPosition,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as(
        "select global_position, tx_id::text::bigint as tx_id, aggregate_type, aggregate_id,
                sequence, event_type, event_version, payload::text as payload, recorded_at
         from events
         where (tx_id, global_position) > ($1::text::xid8, $2)
           and tx_id < pg_snapshot_xmin(pg_current_snapshot())
         -- Qualified: a bare `tx_id` here would mean the bigint output column, and sorting
         -- by that expression cannot use the (tx_id, global_position) index.
         order by events.tx_id, events.global_position
         limit $3",
    )
    .bind(after.tx_id.to_string())
    .bind(after.global_position)
    .bind(limit)
    .fetch_all(conn)
    .await
}
