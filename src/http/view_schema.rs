//! The published shape of the read API's answers: documentation types, one per view of
//! `crate::queries` (same name, same fields), that describe in the OpenAPI spec what the views
//! serialise to. The views derive only serde and sqlx — the queries know nothing of HTTP — and
//! are answered with serde ([`SerdeJson`](super::serde_json_body::SerdeJson)); each is tied to
//! its documentation type by [`Documented`], and a test per type checks that the JSON a view
//! writes reads back through its documentation type unchanged, so the two cannot drift apart.

use chrono::{DateTime, NaiveDate, Utc};
use poem_openapi::{Enum, Object};
use serde_json::Value;
use uuid::Uuid;

use super::serde_json_body::Documented;
use crate::queries::calls::{CallbackStatus, TranscriptionStatus};
use crate::queries::{calls, transcripts};

/// Where a call is.
#[derive(Enum)]
#[oai(rename_all = "lowercase")]
pub enum CallStatus {
    Accepted,
    Fetching,
    Analysing,
    Completed,
    Failed,
}

/// A call with its processing state, analytics and callback state.
#[derive(Object)]
pub struct CallView {
    /// The call id as submitted.
    pub id: String,
    pub partner_id: String,
    pub status: CallStatus,
    pub tenant_id: String,
    pub sub_tenant_id: String,
    pub batch_id: Uuid,
    pub agent_id: String,
    pub customer_id: String,
    /// `null` once erased.
    #[oai(nullable)]
    pub contact_number: Option<String>,
    /// The call's personal data was erased at a data subject's request or by retention:
    /// personal fields read `null`.
    pub personal_data_erased: bool,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub accepted_at: DateTime<Utc>,
    #[oai(nullable)]
    pub fetch_started_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub fetched_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub completed_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub failed_at: Option<DateTime<Utc>>,
    /// From acceptance to completion or failure, in milliseconds.
    #[oai(nullable)]
    pub processing_time_ms: Option<i64>,
    pub fetch_attempts: i32,
    /// Times this call id was submitted again.
    pub duplicate_submissions: i32,
    /// Why processing (or its last attempt) failed.
    #[oai(nullable)]
    pub error: Option<String>,
    /// `mp3`, `wav`, `aac`, `m4a` or `mp4`.
    #[oai(nullable)]
    pub recording_format: Option<String>,
    #[oai(nullable)]
    pub recording_bytes: Option<i64>,
    #[oai(nullable)]
    pub recording_sha256: Option<String>,
    #[oai(nullable)]
    pub recording_duration_ms: Option<i64>,
    #[oai(nullable)]
    pub sample_rate: Option<i32>,
    #[oai(nullable)]
    pub channels: Option<i16>,
    #[oai(nullable)]
    pub codec: Option<String>,
    /// Talk time on the agent's channel (left, or the only one).
    #[oai(nullable)]
    pub agent_talk_ms: Option<i64>,
    /// Talk time on the customer's channel (right); none for mono recordings.
    #[oai(nullable)]
    pub customer_talk_ms: Option<i64>,
    /// Share (0 to 1) of the recording where nobody talks.
    #[oai(nullable)]
    pub silence_ratio: Option<f64>,
    #[oai(nullable)]
    pub longest_silence_ms: Option<i64>,
    /// Time both sides talk at once.
    #[oai(nullable)]
    pub overlap_ms: Option<i64>,
    /// RMS level over all samples, in dBFS (-120 to 0). Null before the analysis, and also
    /// after it when unknown: calls analysed before levels were always finite numbers.
    #[oai(nullable)]
    pub mean_dbfs: Option<f64>,
    /// Largest sample, in dBFS (-120 to 0; beyond full scale saturates at 0). Null as for
    /// `mean_dbfs`.
    #[oai(nullable)]
    pub peak_dbfs: Option<f64>,
    /// Share of samples at full scale.
    #[oai(nullable)]
    pub clipping_ratio: Option<f64>,
    // Documented by its schema (`crate::http::status_schema`): a description here would make
    // poem-openapi wrap it in an `allOf`.
    #[oai(nullable)]
    pub callback_status: Option<CallbackStatus>,
    pub callback_attempts: i32,
    #[oai(nullable)]
    pub callback_last_status_code: Option<i32>,
    #[oai(nullable)]
    pub callback_delivered_at: Option<DateTime<Utc>>,
    // Documented by its schema, as `callback_status`.
    #[oai(nullable)]
    pub transcription_status: Option<TranscriptionStatus>,
    pub transcription_attempts: i32,
    #[oai(nullable)]
    pub transcript_word_count: Option<i64>,
    /// Turn-taking and transcript figures.
    #[oai(flatten)]
    pub interaction: InteractionView,
}

/// How a call went as a conversation. Every figure is null for mono recordings (one channel
/// mixes both sides, so nobody can tell who talks), for calls analysed before these figures
/// existed, and where the figure's own note says so. Transcript figures need a transcript.
#[derive(Object)]
pub struct InteractionView {
    /// Version of the voice-activity detector that measured talk times and turns (2 and up);
    /// null for calls analysed with the earlier rule.
    #[oai(nullable)]
    pub detector_version: Option<i32>,
    /// Share of the talking done by the agent: agent talk time / (agent + customer talk
    /// time), 0 to 1. Null when nobody talks.
    #[oai(nullable)]
    pub talk_ratio: Option<f64>,
    /// Longest agent turn, in milliseconds: from the agent taking the floor to the agent's last
    /// word before the customer takes it (customer backchannels of 1 s or less do not end it).
    /// Null when the agent never has the floor.
    #[oai(nullable)]
    pub longest_monologue_ms: Option<i64>,
    /// Longest customer turn, in milliseconds (as `longest_monologue_ms`, for the customer).
    /// Null when the customer never has the floor.
    #[oai(nullable)]
    pub longest_customer_story_ms: Option<i64>,
    /// Changes of speaker (the floor passing from one side to the other) per minute of
    /// recording.
    #[oai(nullable)]
    pub interactivity: Option<f64>,
    /// Mean silence, in milliseconds, between the customer finishing a turn and the agent
    /// starting theirs, over the changes where the agent did not cut in. Null without one.
    #[oai(nullable)]
    pub patience_ms: Option<i64>,
    /// Number of customer-to-agent changes `patience_ms` averages.
    #[oai(nullable)]
    pub patience_switches: Option<i32>,
    /// Turns the agent took.
    #[oai(nullable)]
    pub agent_turns: Option<i32>,
    /// Turns the customer took.
    #[oai(nullable)]
    pub customer_turns: Option<i32>,
    /// Words the agent said (transcript).
    #[oai(nullable)]
    pub agent_words: Option<i64>,
    /// Words the customer said (transcript).
    #[oai(nullable)]
    pub customer_words: Option<i64>,
    /// Agent words per minute of agent talk time. Null when the agent never talks.
    #[oai(nullable)]
    pub agent_words_per_minute: Option<f64>,
    /// Customer words per minute of customer talk time. Null when the customer never talks.
    #[oai(nullable)]
    pub customer_words_per_minute: Option<f64>,
    /// Agent sentences ending in `?`.
    #[oai(nullable)]
    pub agent_questions: Option<i32>,
    /// Customer sentences ending in `?`.
    #[oai(nullable)]
    pub customer_questions: Option<i32>,
    /// Agent words / all words, 0 to 1. Null when nobody said a word.
    #[oai(nullable)]
    pub agent_word_share: Option<f64>,
}

/// A batch with the number of its calls in each status.
#[derive(Object)]
pub struct BatchView {
    pub batch_id: Uuid,
    pub tenant_id: String,
    pub sub_tenant_id: String,
    #[oai(nullable)]
    pub received_at: Option<DateTime<Utc>>,
    /// Call ids in the request, repeats included.
    pub call_count: i32,
    pub accepted_count: i32,
    pub fetching_count: i32,
    pub analysing_count: i32,
    pub completed_count: i32,
    pub failed_count: i32,
    /// Call ids of this batch that were already known.
    pub duplicate_count: i32,
    /// The calls this batch brought in, with their status.
    pub calls: Vec<BatchCall>,
}

#[derive(Object)]
pub struct BatchCall {
    pub id: String,
    pub status: CallStatus,
}

/// One event of a call.
#[derive(Object)]
pub struct CallEventView {
    /// `CallAccepted`, `RecordingFetched`, `CallbackDelivered`, ...
    pub event_type: String,
    /// 1 for the first event of the call, then 2, 3, ...
    pub sequence: i64,
    pub recorded_at: DateTime<Utc>,
    /// The event's facts (the inner object of the stored event).
    pub payload: Value,
    /// For support only: request id, source IP and user agent of the request (or the worker)
    /// that caused the event.
    #[oai(skip_serializing_if_is_none)]
    pub metadata: Option<Value>,
}

/// One day of one agent's calls (all tenants and sub-tenants the filter lets through). Means
/// are over the calls that have the figure: mono calls and calls analysed before the figures
/// existed count in `calls`/`completed_calls` only.
#[derive(Object)]
pub struct AgentDayView {
    /// UTC date the calls started.
    pub day: NaiveDate,
    /// Calls accepted.
    pub calls: i64,
    /// Calls processed to the end.
    pub completed_calls: i64,
    /// Calls whose processing failed.
    pub failed_calls: i64,
    /// Agent talk time over the completed calls, in minutes.
    pub agent_talk_minutes: f64,
    /// Mean `talk_ratio` (0 to 1).
    #[oai(nullable)]
    pub mean_talk_ratio: Option<f64>,
    /// Mean of the calls' longest monologues, in milliseconds.
    #[oai(nullable)]
    pub mean_longest_monologue_ms: Option<f64>,
    /// Longest monologue of the day, in milliseconds.
    #[oai(nullable)]
    pub longest_monologue_ms: Option<i64>,
    /// Mean of the calls' longest customer stories, in milliseconds.
    #[oai(nullable)]
    pub mean_longest_customer_story_ms: Option<f64>,
    /// Mean changes of speaker per minute.
    #[oai(nullable)]
    pub mean_interactivity: Option<f64>,
    /// Mean of the calls' patience, in milliseconds.
    #[oai(nullable)]
    pub mean_patience_ms: Option<f64>,
    /// Agent questions per transcribed call.
    #[oai(nullable)]
    pub agent_questions_per_call: Option<f64>,
    /// Customer questions per transcribed call.
    #[oai(nullable)]
    pub customer_questions_per_call: Option<f64>,
    /// Agent words per minute of agent talk, over the transcribed calls.
    #[oai(nullable)]
    pub agent_words_per_minute: Option<f64>,
    /// Agent words / all words of the transcribed calls, 0 to 1.
    #[oai(nullable)]
    pub agent_word_share: Option<f64>,
}

/// Who spoke: the agent (left channel of a stereo recording), the customer (right), or either
/// (`mono`: one channel carries both).
#[derive(Enum)]
#[oai(rename_all = "lowercase")]
pub enum Channel {
    Agent,
    Customer,
    Mono,
}

/// One stretch of speech, in milliseconds from the start of the recording.
#[derive(Object)]
pub struct SegmentView {
    pub channel: Channel,
    pub start_ms: i64,
    pub end_ms: i64,
    pub text: String,
}

/// A call's transcript.
#[derive(Object)]
pub struct TranscriptView {
    pub call_id: String,
    /// All segments' texts in time order.
    pub text: String,
    pub segments: Vec<SegmentView>,
    /// `whisper` or `openai`.
    pub engine: String,
    pub model: String,
    /// ISO 639-1 code, e.g. `en`.
    pub language: String,
    pub word_count: i64,
    pub produced_at: DateTime<Utc>,
}

/// A page of calls, newest first.
#[derive(Object)]
pub struct CallPage {
    pub calls: Vec<CallView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

/// The events of one call, oldest first.
#[derive(Object)]
pub struct CallHistory {
    pub call_id: String,
    pub events: Vec<CallEventView>,
}

/// One agent's interaction statistics, per day.
#[derive(Object)]
pub struct AgentStats {
    pub agent_id: String,
    /// First day reported (UTC).
    pub from: NaiveDate,
    /// Last day reported (UTC), included.
    pub to: NaiveDate,
    /// Days with at least one call of the agent, oldest first.
    pub days: Vec<AgentDayView>,
}

impl From<CallStatus> for calls::CallStatus {
    fn from(status: CallStatus) -> Self {
        match status {
            CallStatus::Accepted => Self::Accepted,
            CallStatus::Fetching => Self::Fetching,
            CallStatus::Analysing => Self::Analysing,
            CallStatus::Completed => Self::Completed,
            CallStatus::Failed => Self::Failed,
        }
    }
}

impl Documented for calls::CallView {
    type Schema = CallView;
}

impl Documented for calls::BatchView {
    type Schema = BatchView;
}

impl Documented for transcripts::TranscriptView {
    type Schema = TranscriptView;
}

impl Documented for super::calls::CallPage {
    type Schema = CallPage;
}

impl Documented for super::calls::CallHistory {
    type Schema = CallHistory;
}

impl Documented for super::agents::AgentStats {
    type Schema = AgentStats;
}

#[cfg(test)]
mod tests {
    use poem_openapi::types::{ParseFromJSON, ToJSON};

    use super::*;
    use crate::queries::calls::{BatchCall, BatchView};
    use crate::queries::history::CallEventView;
    use crate::queries::interaction::AgentDayView;
    use crate::queries::transcripts::{Channel, SegmentView};

    /// What `value` answers (serde) reads through its documentation type and is written back
    /// unchanged: same fields, same types, same nullability, same date format.
    fn answers_as_documented<T: Documented>(value: &T)
    where
        T::Schema: ParseFromJSON + ToJSON,
    {
        let answered = serde_json::to_value(value).unwrap();
        let documented = T::Schema::parse_from_json(Some(answered.clone())).unwrap_or_else(|err| {
            panic!(
                "{answered} does not read as documented: {}",
                err.into_message()
            )
        });
        assert_eq!(documented.to_json().unwrap(), answered);
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn view(filled: bool) -> calls::CallView {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let some = |s: &str| filled.then(|| at(s));
        calls::CallView {
            id: "c1".into(),
            partner_id: "p".into(),
            status: calls::CallStatus::Completed,
            tenant_id: "t".into(),
            sub_tenant_id: "s".into(),
            batch_id: Uuid::from_u128(7),
            agent_id: "a".into(),
            customer_id: "cu".into(),
            contact_number: Some("+1234567890".into()),
            personal_data_erased: false,
            start_time: at("2024-05-01T12:00:00Z"),
            end_time: at("2024-05-01T12:30:00.5Z"),
            accepted_at: at("2024-05-01T12:31:00.123456Z"),
            fetch_started_at: some("2024-05-01T12:31:00.1Z"),
            fetched_at: some("2024-05-01T12:31:01.123456789Z"),
            completed_at: some("2024-05-01T12:31:02Z"),
            failed_at: None,
            processing_time_ms: filled.then_some(2_000),
            fetch_attempts: 1,
            duplicate_submissions: 0,
            error: filled.then(|| "a \"quoted\" reason".into()),
            recording_format: filled.then(|| "wav".into()),
            recording_bytes: filled.then_some(1 << 40),
            recording_sha256: None,
            recording_duration_ms: filled.then_some(1),
            sample_rate: filled.then_some(8_000),
            channels: filled.then_some(2),
            codec: None,
            agent_talk_ms: filled.then_some(5),
            customer_talk_ms: None,
            silence_ratio: filled.then_some(0.1),
            longest_silence_ms: None,
            overlap_ms: None,
            mean_dbfs: filled.then_some(-20.25),
            peak_dbfs: filled.then_some(-1e-9),
            clipping_ratio: filled.then_some(0.0),
            callback_status: filled.then_some(CallbackStatus::Delivered),
            callback_attempts: 1,
            callback_last_status_code: filled.then_some(200),
            callback_delivered_at: some("2024-05-01T12:31:03.000001Z"),
            transcription_status: filled.then_some(TranscriptionStatus::Available),
            transcription_attempts: 0,
            transcript_word_count: filled.then_some(12),
            interaction: crate::queries::interaction::InteractionView {
                talk_ratio: filled.then_some(0.625),
                agent_turns: filled.then_some(3),
                ..Default::default()
            },
        }
    }

    #[test]
    fn calls_and_pages_answer_as_documented() {
        for filled in [true, false] {
            answers_as_documented(&view(filled));
            for next_cursor in [None, Some("abc".to_owned())] {
                answers_as_documented(&super::super::calls::CallPage {
                    calls: vec![view(filled), view(!filled)],
                    next_cursor,
                });
            }
        }
    }

    #[test]
    fn batches_histories_transcripts_and_agent_stats_answer_as_documented() {
        for received_at in [None, Some(at("2024-05-01T12:00:00.25Z"))] {
            answers_as_documented(&BatchView {
                batch_id: Uuid::from_u128(9),
                tenant_id: "t".into(),
                sub_tenant_id: "s".into(),
                received_at,
                call_count: 2,
                accepted_count: 1,
                fetching_count: 0,
                analysing_count: 0,
                completed_count: 1,
                failed_count: 0,
                duplicate_count: 0,
                calls: vec![BatchCall {
                    id: "c1".into(),
                    status: calls::CallStatus::Analysing,
                }],
            });
        }
        for metadata in [None, Some(serde_json::json!({"request_id": "r"}))] {
            answers_as_documented(&super::super::calls::CallHistory {
                call_id: "c1".into(),
                events: vec![CallEventView {
                    event_type: "CallAccepted".into(),
                    sequence: 1,
                    recorded_at: at("2024-05-01T12:00:00.123456Z"),
                    payload: serde_json::json!({"call_id": "c1", "n": [1, 2.5, null]}),
                    metadata,
                }],
            });
        }
        answers_as_documented(&transcripts::TranscriptView {
            call_id: "c1".into(),
            text: "hello there".into(),
            segments: vec![SegmentView {
                channel: Channel::Customer,
                start_ms: 0,
                end_ms: 1_250,
                text: "hello there".into(),
            }],
            engine: "whisper".into(),
            model: "tiny.en".into(),
            language: "en".into(),
            word_count: 2,
            produced_at: at("2024-05-01T12:00:00Z"),
        });
        let day = |filled: bool| AgentDayView {
            day: "2024-05-01".parse().unwrap(),
            calls: 3,
            completed_calls: 2,
            failed_calls: 1,
            agent_talk_minutes: 4.5,
            mean_talk_ratio: filled.then_some(0.5),
            mean_longest_monologue_ms: filled.then_some(1_500.5),
            longest_monologue_ms: filled.then_some(3_000),
            mean_longest_customer_story_ms: None,
            mean_interactivity: filled.then_some(2.0),
            mean_patience_ms: None,
            agent_questions_per_call: filled.then_some(1.5),
            customer_questions_per_call: None,
            agent_words_per_minute: filled.then_some(120.0),
            agent_word_share: None,
        };
        answers_as_documented(&super::super::agents::AgentStats {
            agent_id: "a1".into(),
            from: "2024-04-02".parse().unwrap(),
            to: "2024-05-01".parse().unwrap(),
            days: vec![day(true), day(false)],
        });
    }

    #[test]
    fn a_field_the_documentation_lacks_is_caught() {
        let mut answered = serde_json::to_value(view(true)).unwrap();
        answered["undocumented"] = Value::from(1);
        let documented = CallView::parse_from_json(Some(answered.clone())).ok();
        assert_ne!(documented.and_then(|d| d.to_json()), Some(answered));
    }
}
