//! A call's transcript as the `transcript` and `transcript_segment` read models hold it.

use callingest_domain::call::{call_aggregate_id, CallEvent, Speaker};
use callingest_domain::values::{CallId, PartnerId};
use callingest_privacy::{keyring, seal, Privacy};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Who spoke: the agent (left channel of a stereo recording), the customer (right), or either
/// (`mono`: one channel carries both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type, serde::Serialize)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Agent,
    Customer,
    Mono,
}

/// One stretch of speech, in milliseconds from the start of the recording.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct SegmentView {
    pub channel: Channel,
    pub start_ms: i64,
    pub end_ms: i64,
    pub text: String,
}

/// A call's transcript.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TranscriptView {
    pub call_id: String,
    pub text: String,
    pub segments: Vec<SegmentView>,
    pub engine: String,
    pub model: String,
    pub language: String,
    pub word_count: i64,
    #[serde(serialize_with = "crate::queries::rfc3339::serialize")]
    pub produced_at: DateTime<Utc>,
}

pub async fn get_transcript(
    pool: &PgPool,
    partner_id: &str,
    call_id: &str,
) -> Result<Option<TranscriptView>, sqlx::Error> {
    let header: Option<(String, String, String, String, i64, DateTime<Utc>)> = sqlx::query_as(
        "select text, engine, model, language, word_count, produced_at from transcript
         where partner_id = $1 and call_id = $2",
    )
    .bind(partner_id)
    .bind(call_id)
    .fetch_optional(pool)
    .await?;
    let Some((text, engine, model, language, word_count, produced_at)) = header else {
        return Ok(None);
    };
    let segments = sqlx::query_as(
        "select channel, start_ms, end_ms, text from transcript_segment
         where partner_id = $1 and call_id = $2 order by seq",
    )
    .bind(partner_id)
    .bind(call_id)
    .fetch_all(pool)
    .await?;
    Ok(Some(TranscriptView {
        call_id: call_id.to_owned(),
        text,
        segments,
        engine,
        model,
        language,
        word_count,
        produced_at,
    }))
}

/// The transcript straight from the call's `TranscriptProduced` event, for the moment between
/// the event and its projection: a partner told by the callback that a transcript is available
/// gets it at once.
pub async fn transcript_from_events(
    pool: &PgPool,
    privacy: &Privacy,
    partner_id: &str,
    call_id: &str,
) -> Result<Option<TranscriptView>, sqlx::Error> {
    let (Ok(partner_id), Ok(call_id)) = (PartnerId::parse(partner_id), CallId::parse(call_id))
    else {
        return Ok(None);
    };
    let aggregate_id = call_aggregate_id(&partner_id, &call_id);
    let payload: Option<serde_json::Value> = sqlx::query_scalar(
        "select payload from events
         where aggregate_type = 'Call' and aggregate_id = $1 and event_type = 'TranscriptProduced'
         order by sequence desc limit 1",
    )
    .bind(&aggregate_id)
    .fetch_optional(pool)
    .await?;
    let Some(payload) = payload else {
        return Ok(None);
    };
    let decode = |e: Box<dyn std::error::Error + Send + Sync>| sqlx::Error::Decode(e);
    let event: CallEvent = serde_json::from_value(payload).map_err(|e| decode(Box::new(e)))?;
    let keys = keyring::load(pool, privacy, std::slice::from_ref(&aggregate_id))
        .await
        .map_err(|e| decode(Box::new(e)))?;
    let CallEvent::TranscriptProduced(produced) =
        seal::open_event(privacy, &aggregate_id, event, keys.get(&aggregate_id))
            .map_err(|e| decode(Box::new(e)))?
    else {
        return Ok(None);
    };
    Ok(Some(TranscriptView {
        call_id: call_id.to_string(),
        text: callingest_projections::transcripts::transcript_text(&produced),
        segments: callingest_projections::transcripts::segments(&produced)
            .iter()
            .map(|s| SegmentView {
                channel: match s.channel {
                    Speaker::Agent => Channel::Agent,
                    Speaker::Customer => Channel::Customer,
                    Speaker::Mono => Channel::Mono,
                },
                start_ms: s.start_ms as i64,
                end_ms: s.end_ms as i64,
                text: s.text.trim().to_owned(),
            })
            .collect(),
        engine: produced.engine,
        model: produced.model,
        language: produced.language,
        word_count: produced.word_count as i64,
        produced_at: produced.produced_at,
    }))
}
