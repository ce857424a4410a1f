//! A call's event history, for partners debugging their integration and for support audits.

use callingest_domain::call::CallEvent;
use callingest_privacy::{keyring, seal, Privacy};
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

/// The events of `{partner_id}:{call_id}` in order, personal fields opened (or shown erased,
/// with `"personal_data_erased": true`); empty for an unknown call. Metadata is included only
/// when `with_metadata` (support), never for partners.
pub async fn call_history(
    pool: &PgPool,
    privacy: &Privacy,
    aggregate_id: &str,
    with_metadata: bool,
) -> Result<Vec<CallEventView>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "select event_type, sequence, recorded_at, payload, metadata from events
         where aggregate_type = 'Call' and aggregate_id = $1 order by sequence",
    )
    .bind(aggregate_id)
    .fetch_all(pool)
    .await?;
    let rows = open_payloads(pool, privacy, aggregate_id, rows).await?;
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

type Row = (String, i64, DateTime<Utc>, Value, Value);

/// The rows with their sealed events opened through the shared path
/// ([`callingest_privacy::seal::open_event`]), keys loaded in one query.
async fn open_payloads(
    pool: &PgPool,
    privacy: &Privacy,
    aggregate_id: &str,
    mut rows: Vec<Row>,
) -> Result<Vec<Row>, sqlx::Error> {
    let decode = |e: Box<dyn std::error::Error + Send + Sync>| sqlx::Error::Decode(e);
    let is_personal = |t: &str| matches!(t, "CallAccepted" | "TranscriptProduced");
    if !rows.iter().any(|r| is_personal(&r.0)) {
        return Ok(rows);
    }
    let keys = keyring::load(pool, privacy, &[aggregate_id.to_owned()])
        .await
        .map_err(|e| decode(Box::new(e)))?;
    for row in rows.iter_mut().filter(|r| is_personal(&r.0)) {
        let event: CallEvent =
            serde_json::from_value(row.3.take()).map_err(|e| decode(Box::new(e)))?;
        let opened = seal::open_event(privacy, aggregate_id, event, keys.get(aggregate_id))
            .map_err(|e| decode(Box::new(e)))?;
        let erased = match &opened {
            CallEvent::CallAccepted(e) => {
                e.call.personal_data_erased() || e.call.agent_data_erased()
            }
            CallEvent::TranscriptProduced(e) => e.segments.is_erased(),
            _ => false,
        };
        row.3 = serde_json::to_value(&opened).map_err(|e| decode(Box::new(e)))?;
        if erased {
            if let Some(inner) = row.3.get_mut(&row.0).and_then(Value::as_object_mut) {
                inner.insert("personal_data_erased".into(), Value::Bool(true));
            }
        }
    }
    Ok(rows)
}
