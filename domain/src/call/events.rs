//! What happened to a call, in the past tense. Payloads carry the facts readers need
//! (attempt numbers, times, figures) so projections stay trivial.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::commands::{AudioAnalytics, ErasureReason, ErasureScope, TranscriptSegment};
use crate::interaction::TranscriptFigures;
use crate::personal::{Personal, Sealed};
use crate::submission::NewCall;
use crate::values::{PartnerId, TenantId};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CallEvent {
    CallAccepted(CallAccepted),
    DuplicateSubmissionReceived(DuplicateSubmissionReceived),
    RecordingFetchStarted(RecordingFetchStarted),
    RecordingFetched(RecordingFetched),
    RecordingFetchFailed(RecordingFetchFailed),
    RecordingFetchInterrupted(RecordingFetchInterrupted),
    RecordingAnalyzed(RecordingAnalyzed),
    TranscriptionStarted(TranscriptionStarted),
    TranscriptProduced(TranscriptProduced),
    TranscriptionFailed(TranscriptionFailed),
    TranscriptionInterrupted(TranscriptionInterrupted),
    ProcessingCompleted(ProcessingCompleted),
    ProcessingFailed(ProcessingFailed),
    CallbackAttemptFailed(CallbackAttemptFailed),
    CallbackDelivered(CallbackDelivered),
    CallbackAbandoned(CallbackAbandoned),
    CallbackRedeliveryRequested(CallbackRedeliveryRequested),
    PersonalDataErased(PersonalDataErased),
}

/// A call was taken in; it holds everything the partner submitted, extra fields included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallAccepted {
    pub partner_id: PartnerId,
    pub tenant_id: TenantId,
    pub sub_tenant_id: TenantId,
    pub batch_id: Uuid,
    pub accepted_at: DateTime<Utc>,
    /// Boxed: it dwarfs the other events (same JSON either way).
    pub call: Box<NewCall>,
    /// As stored: the personal fields of `call`, sealed (they are then absent from `call`).
    /// Readers get the event opened, with this `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Sealed>,
}

/// A known call id was submitted again. It is not processed again; this is the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuplicateSubmissionReceived {
    pub batch_id: Uuid,
    pub tenant_id: TenantId,
    pub sub_tenant_id: TenantId,
    pub received_at: DateTime<Utc>,
    /// Whether the resubmitted call differs from the one accepted (tenants included).
    pub payload_differs: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingFetchStarted {
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingFetched {
    pub attempt: u32,
    pub bytes: u64,
    pub sha256: String,
    pub content_type: Option<String>,
    /// `mp3`, `wav`, `aac`, `m4a` or `mp4`, identified from the bytes; `None` if none of them.
    pub format: Option<String>,
    pub fetched_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingFetchFailed {
    pub attempt: u32,
    pub error: String,
    pub retryable: bool,
    /// When the next attempt is due; `None` when there will be none.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub failed_at: DateTime<Utc>,
}

/// The attempt in progress (download or analysis) was stopped by a graceful shutdown before
/// it could report. It does not count: the next attempt takes the same number. Only attempts
/// that never report at all (a crash) count towards the limit without a failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingFetchInterrupted {
    /// The attempt given back.
    pub attempt: u32,
    pub reason: String,
    pub interrupted_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingAnalyzed {
    #[serde(flatten)]
    pub analytics: AudioAnalytics,
    pub analyzed_at: DateTime<Utc>,
    /// A transcript is to be made before the call completes. Absent in events recorded before
    /// transcription existed.
    #[serde(default)]
    pub transcription_due: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptionStarted {
    pub attempt: u32,
    pub engine: String,
    pub started_at: DateTime<Utc>,
}

/// The transcript of the call. The segments are part of the event so that the `transcript`
/// read model can be rebuilt from the event log like every other one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptProduced {
    pub attempt: u32,
    pub engine: String,
    pub model: String,
    pub language: String,
    pub segment_count: u64,
    pub word_count: u64,
    /// What was said: personal, sealed under the call's key like [`CallAccepted::call`].
    #[serde(default, skip_serializing_if = "Personal::is_erased")]
    pub segments: Personal<Vec<TranscriptSegment>>,
    pub produced_at: DateTime<Utc>,
    /// Words, pace and questions per side (all `None` for mono and before version 2).
    #[serde(flatten)]
    pub figures: TranscriptFigures,
    /// As stored: `segments` sealed (see [`CallAccepted::sealed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Sealed>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptionFailed {
    pub attempt: u32,
    pub error: String,
    pub retryable: bool,
    /// When the next attempt is due; `None` when there will be none (the call then completes
    /// without a transcript).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub failed_at: DateTime<Utc>,
}

/// The transcription in progress was stopped by a graceful shutdown; its attempt is given back
/// (see [`RecordingFetchInterrupted`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptionInterrupted {
    /// The attempt given back.
    pub attempt: u32,
    pub reason: String,
    pub interrupted_at: DateTime<Utc>,
}

/// What the callback reports under `results`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultsSummary {
    pub transcription_available: bool,
    pub analytics_available: bool,
    pub duration_ms: u64,
    pub agent_talk_ms: u64,
    pub customer_talk_ms: Option<u64>,
    pub silence_ratio: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessingCompleted {
    pub completed_at: DateTime<Utc>,
    /// The partner gave a `callback_url`: a callback is now due.
    #[serde(default)]
    pub callback_due: bool,
    /// From acceptance to completion.
    pub processing_time_ms: u64,
    pub results: ResultsSummary,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessingFailed {
    pub failed_at: DateTime<Utc>,
    /// The partner gave a `callback_url`: a callback is now due.
    #[serde(default)]
    pub callback_due: bool,
    pub processing_time_ms: u64,
    /// Said so a partner understands it; sent in the callback's `error`.
    pub reason: String,
}

/// A callback attempt that did not get a 2xx in time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackAttemptFailed {
    /// 1-based within the current series (a redelivery starts a new series).
    pub attempt: u32,
    pub status_code: Option<u16>,
    pub error: String,
    pub response_time_ms: u64,
    /// When the next attempt is due; `None` after the last one.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub failed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackDelivered {
    pub attempt: u32,
    pub status_code: u16,
    pub response_time_ms: u64,
    pub delivered_at: DateTime<Utc>,
}

/// Every attempt of the series failed; nothing more is sent unless support redelivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackAbandoned {
    pub attempts: u32,
    pub abandoned_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackRedeliveryRequested {
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
}

/// The keys of some of the call's personal data were destroyed: those fields now read as
/// erased in every event and every copy of the log. Holds no personal data itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalDataErased {
    pub scope: ErasureScope,
    pub reason: ErasureReason,
    /// How many fields the destroyed key sealed.
    pub fields: u32,
    pub erased_at: DateTime<Utc>,
}

impl DomainEvent for CallEvent {
    fn event_type(&self) -> String {
        match self {
            CallEvent::CallAccepted(_) => "CallAccepted",
            CallEvent::DuplicateSubmissionReceived(_) => "DuplicateSubmissionReceived",
            CallEvent::RecordingFetchStarted(_) => "RecordingFetchStarted",
            CallEvent::RecordingFetched(_) => "RecordingFetched",
            CallEvent::RecordingFetchFailed(_) => "RecordingFetchFailed",
            CallEvent::RecordingFetchInterrupted(_) => "RecordingFetchInterrupted",
            CallEvent::RecordingAnalyzed(_) => "RecordingAnalyzed",
            CallEvent::TranscriptionStarted(_) => "TranscriptionStarted",
            CallEvent::TranscriptProduced(_) => "TranscriptProduced",
            CallEvent::TranscriptionFailed(_) => "TranscriptionFailed",
            CallEvent::TranscriptionInterrupted(_) => "TranscriptionInterrupted",
            CallEvent::ProcessingCompleted(_) => "ProcessingCompleted",
            CallEvent::ProcessingFailed(_) => "ProcessingFailed",
            CallEvent::CallbackAttemptFailed(_) => "CallbackAttemptFailed",
            CallEvent::CallbackDelivered(_) => "CallbackDelivered",
            CallEvent::CallbackAbandoned(_) => "CallbackAbandoned",
            CallEvent::CallbackRedeliveryRequested(_) => "CallbackRedeliveryRequested",
            CallEvent::PersonalDataErased(_) => "PersonalDataErased",
        }
        .to_owned()
    }

    /// Version 2 of `RecordingAnalyzed` added `detector_version` and the interaction figures,
    /// version 2 of `TranscriptProduced` the transcript figures. Every added field is optional
    /// and absent from version 1 payloads, so a version 1 event reads as a version 2 one whose
    /// new figures are `null` (unknown): that is the whole upcast, done by serde's defaults.
    fn event_version(&self) -> String {
        match self {
            CallEvent::RecordingAnalyzed(_) | CallEvent::TranscriptProduced(_) => "2",
            _ => "1",
        }
        .to_owned()
    }
}
