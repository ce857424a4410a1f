//! A call's event history, for partners debugging their integration and for support audits.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

/// One event of a call.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct CallEventView {
    pub event_type: String,
    pub sequence: i64,
    #[serde(serialize_with = "crate::queries::rfc3339::serialize")]
    pub recorded_at: DateTime<Utc>,
    pub payload: Value,
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// The events of `{partner_id}:{call_id}` in order; empty for an unknown call. Metadata is
/// included only when `with_metadata` (support), never for partners.
pub async fn call_history(
    pool: &PgPool,
    aggregate_id: &str,
    with_metadata: bool,
) -> Result<Vec<CallEventView>, sqlx::Error> {
    let rows: Vec<(String, i64, DateTime<Utc>, Value, Value)> = sqlx::query_as(
        "select event_type, sequence, recorded_at, payload, metadata from events
         where aggregate_type = 'Call' and aggregate_id = $1 order by sequence",
    )
    .bind(aggregate_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(event_type, sequence, recorded_at, payload, metadata)| CallEventView {
                // Stored payloads are `{"EventType": {...}}`: show the inner object.
                payload: payload.get(&event_type).cloned().unwrap_or(payload),
                event_type,
                sequence,
                recorded_at,
                metadata: with_metadata.then_some(metadata),
            },
        )
        .collect())
}
