//! Calls and batches as the read models hold them, with keyset pagination.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::queries::interaction::InteractionView;
use crate::queries::rfc3339;

/// Where a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type, serde::Serialize, serde::Deserialize)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum CallStatus {
    /// Waiting to be processed.
    Accepted,
    /// Recording download under way (including waits between retries).
    Fetching,
    /// Recording downloaded, being measured (and transcribed, when an engine is configured).
    Analysing,
    Completed,
    Failed,
}

impl CallStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            CallStatus::Accepted => "accepted",
            CallStatus::Fetching => "fetching",
            CallStatus::Analysing => "analysing",
            CallStatus::Completed => "completed",
            CallStatus::Failed => "failed",
        }
    }
}

/// Where the callback of a call is; none (null) for a call without a `callback_url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type, serde::Serialize)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum CallbackStatus {
    /// Due: the next attempt is scheduled.
    Pending,
    /// The callback URL answered 2xx.
    Delivered,
    /// Every attempt failed.
    Abandoned,
}

/// Where the transcript of a call is; none (null) when no transcript was due (no engine
/// configured, or the call failed before its analysis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type, serde::Serialize)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum TranscriptionStatus {
    /// Waiting for a transcription worker (also between attempts).
    Pending,
    Transcribing,
    /// See `/calls/{call_id}/transcript`.
    Available,
    /// Transcription failed; the call completed without a transcript.
    Unavailable,
}

impl CallbackStatus {
    pub const ALL: [Self; 3] = [Self::Pending, Self::Delivered, Self::Abandoned];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Abandoned => "abandoned",
        }
    }
}

impl TranscriptionStatus {
    pub const ALL: [Self; 4] = [
        Self::Pending,
        Self::Transcribing,
        Self::Available,
        Self::Unavailable,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Transcribing => "transcribing",
            Self::Available => "available",
            Self::Unavailable => "unavailable",
        }
    }
}

/// A call with its processing state, analytics and callback state (the `call` read model).
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct CallView {
    #[sqlx(rename = "call_id")]
    pub id: String,
    pub partner_id: String,
    pub status: CallStatus,
    pub tenant_id: String,
    pub sub_tenant_id: String,
    pub batch_id: Uuid,
    pub agent_id: String,
    pub customer_id: String,
    /// `null` once erased.
    pub contact_number: Option<String>,
    /// The call's personal data was erased at a data subject's request or by retention:
    /// personal fields read `null`.
    pub personal_data_erased: bool,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub start_time: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub end_time: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub accepted_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339::option")]
    pub fetch_started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339::option")]
    pub fetched_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339::option")]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339::option")]
    pub failed_at: Option<DateTime<Utc>>,
    pub processing_time_ms: Option<i64>,
    pub fetch_attempts: i32,
    pub duplicate_submissions: i32,
    pub error: Option<String>,
    pub recording_format: Option<String>,
    pub recording_bytes: Option<i64>,
    pub recording_sha256: Option<String>,
    pub recording_duration_ms: Option<i64>,
    pub sample_rate: Option<i32>,
    pub channels: Option<i16>,
    pub codec: Option<String>,
    pub agent_talk_ms: Option<i64>,
    pub customer_talk_ms: Option<i64>,
    pub silence_ratio: Option<f64>,
    pub longest_silence_ms: Option<i64>,
    pub overlap_ms: Option<i64>,
    pub mean_dbfs: Option<f64>,
    pub peak_dbfs: Option<f64>,
    pub clipping_ratio: Option<f64>,
    pub callback_status: Option<CallbackStatus>,
    pub callback_attempts: i32,
    pub callback_last_status_code: Option<i32>,
    #[serde(serialize_with = "rfc3339::option")]
    pub callback_delivered_at: Option<DateTime<Utc>>,
    pub transcription_status: Option<TranscriptionStatus>,
    pub transcription_attempts: i32,
    pub transcript_word_count: Option<i64>,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub interaction: InteractionView,
}

const CALL_COLUMNS: &str = "call_id, partner_id, status, tenant_id, sub_tenant_id, batch_id,
    agent_id, customer_id, contact_number, personal_data_erased, start_time, end_time, accepted_at, fetch_started_at,
    fetched_at, completed_at, failed_at, processing_time_ms, fetch_attempts,
    duplicate_submissions, error, recording_format, recording_bytes, recording_sha256,
    recording_duration_ms, sample_rate, channels, codec, agent_talk_ms, customer_talk_ms,
    silence_ratio, longest_silence_ms, overlap_ms, mean_dbfs, peak_dbfs, clipping_ratio,
    callback_status, callback_attempts, callback_last_status_code, callback_delivered_at,
    transcription_status, transcription_attempts, transcript_word_count, detector_version,
    talk_ratio, longest_monologue_ms, longest_customer_story_ms, interactivity, patience_ms,
    patience_switches, agent_turns, customer_turns, agent_words, customer_words,
    agent_words_per_minute, customer_words_per_minute, agent_questions, customer_questions,
    agent_word_share";

pub async fn get_call(
    pool: &PgPool,
    partner_id: &str,
    call_id: &str,
) -> Result<Option<CallView>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {CALL_COLUMNS} from call where partner_id = $1 and call_id = $2"
    ))
    .bind(partner_id)
    .bind(call_id)
    .fetch_optional(pool)
    .await
}

/// Most calls one page may hold.
pub const MAX_PAGE: i64 = 500;

#[derive(Debug, Default, Clone)]
pub struct CallFilter {
    /// Required for partners (their own calls only); optional for support.
    pub partner_id: Option<String>,
    pub status: Option<CallStatus>,
    pub tenant_id: Option<String>,
    pub sub_tenant_id: Option<String>,
    pub batch_id: Option<Uuid>,
    pub accepted_after: Option<DateTime<Utc>>,
    pub accepted_before: Option<DateTime<Utc>>,
}

/// Where a page ends: the last call's `(accepted_at, partner_id, call_id)`. Newest first, so
/// calls accepted later never shift the pages after this one.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    accepted_at: DateTime<Utc>,
    partner_id: String,
    call_id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let text = serde_json::json!([
            self.accepted_at.timestamp_micros(),
            self.partner_id,
            self.call_id
        ])
        .to_string();
        URL_SAFE_NO_PAD.encode(text)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let (micros, partner_id, call_id): (i64, String, String) =
            serde_json::from_slice(&bytes).ok()?;
        Some(Self {
            accepted_at: DateTime::from_timestamp_micros(micros)?,
            partner_id,
            call_id,
        })
    }
}

/// One page of calls, newest first, and the cursor of the next page if there may be one.
///
/// The SQL holds only the filters given, so each shape of query gets a plan that walks one
/// index in order: `(partner_id, [status,] accepted_at, call_id)` for a partner's calls,
/// `(accepted_at, partner_id, call_id)` across partners.
pub async fn list_calls(
    pool: &PgPool,
    filter: &CallFilter,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<(Vec<CallView>, Option<Cursor>), sqlx::Error> {
    let limit = limit.clamp(1, MAX_PAGE);
    let mut sql = sqlx::QueryBuilder::new(format!("select {CALL_COLUMNS} from call where true"));
    if let Some(partner_id) = &filter.partner_id {
        sql.push(" and partner_id = ").push_bind(partner_id);
    }
    if let Some(status) = filter.status {
        sql.push(" and status = ").push_bind(status);
    }
    if let Some(tenant_id) = &filter.tenant_id {
        sql.push(" and tenant_id = ").push_bind(tenant_id);
    }
    if let Some(sub_tenant_id) = &filter.sub_tenant_id {
        sql.push(" and sub_tenant_id = ").push_bind(sub_tenant_id);
    }
    if let Some(batch_id) = filter.batch_id {
        sql.push(" and batch_id = ").push_bind(batch_id);
    }
    if let Some(after) = filter.accepted_after {
        sql.push(" and accepted_at > ").push_bind(after);
    }
    if let Some(before) = filter.accepted_before {
        sql.push(" and accepted_at < ").push_bind(before);
    }
    let one_partner = filter.partner_id.is_some();
    if let Some(cursor) = after {
        if one_partner {
            sql.push(" and (accepted_at, call_id) < (")
                .push_bind(cursor.accepted_at)
                .push(", ")
                .push_bind(&cursor.call_id)
                .push(")");
        } else {
            sql.push(" and (accepted_at, partner_id, call_id) < (")
                .push_bind(cursor.accepted_at)
                .push(", ")
                .push_bind(&cursor.partner_id)
                .push(", ")
                .push_bind(&cursor.call_id)
                .push(")");
        }
    }
    sql.push(if one_partner {
        " order by accepted_at desc, call_id desc limit "
    } else {
        " order by accepted_at desc, partner_id desc, call_id desc limit "
    });
    sql.push_bind(limit);
    let calls: Vec<CallView> = sql.build_query_as().fetch_all(pool).await?;
    let next = (calls.len() as i64 == limit)
        .then(|| calls.last())
        .flatten()
        .map(|last| Cursor {
            accepted_at: last.accepted_at,
            partner_id: last.partner_id.clone(),
            call_id: last.id.clone(),
        });
    Ok((calls, next))
}

/// A batch with the number of its calls in each status.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct BatchView {
    pub batch_id: Uuid,
    pub tenant_id: String,
    pub sub_tenant_id: String,
    #[serde(serialize_with = "rfc3339::option")]
    pub received_at: Option<DateTime<Utc>>,
    pub call_count: i32,
    pub accepted_count: i32,
    pub fetching_count: i32,
    pub analysing_count: i32,
    pub completed_count: i32,
    pub failed_count: i32,
    pub duplicate_count: i32,
    #[sqlx(skip)]
    pub calls: Vec<BatchCall>,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct BatchCall {
    #[sqlx(rename = "call_id")]
    pub id: String,
    pub status: CallStatus,
}

pub async fn get_batch(
    pool: &PgPool,
    partner_id: &str,
    batch_id: Uuid,
) -> Result<Option<BatchView>, sqlx::Error> {
    let batch: Option<BatchView> = sqlx::query_as(
        "select batch_id, tenant_id, sub_tenant_id, received_at, call_count, accepted_count,
                fetching_count, analysing_count, completed_count, failed_count, duplicate_count
         from batch where partner_id = $1 and batch_id = $2",
    )
    .bind(partner_id)
    .bind(batch_id)
    .fetch_optional(pool)
    .await?;
    let Some(mut batch) = batch else {
        return Ok(None);
    };
    batch.calls = sqlx::query_as(
        "select call_id, status from call where partner_id = $1 and batch_id = $2 order by call_id",
    )
    .bind(partner_id)
    .bind(batch_id)
    .fetch_all(pool)
    .await?;
    Ok(Some(batch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = Cursor {
            accepted_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            partner_id: "p".into(),
            call_id: "a:b\"c".into(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(Cursor::decode("not a cursor"), None);
        assert_eq!(Cursor::decode(""), None);
    }
}
