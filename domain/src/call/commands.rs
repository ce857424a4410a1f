//! What can be asked of a call. Every command carries the time it happened: the domain reads no
//! clock.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::interaction::Interaction;
use crate::submission::NewCall;
use crate::values::{PartnerId, TenantId};

#[derive(Debug, Clone, PartialEq)]
pub enum CallCommand {
    /// Take a submitted call in, or record it as a duplicate when it is already known.
    AcceptCall(Box<AcceptCall>),
    /// A worker begins fetching the recording (a new attempt) — unless `max_attempts` have
    /// started already: the call then fails (earlier attempts never reported back, e.g. the
    /// worker died each time).
    StartFetch {
        max_attempts: u32,
        at: DateTime<Utc>,
    },
    /// The fetch (or analysis) in progress was stopped by a graceful shutdown: it gives its
    /// attempt back, and the next worker starts it again under the same number.
    InterruptFetch { reason: String, at: DateTime<Utc> },
    /// The recording was downloaded; `format` is `None` when its bytes are no known format.
    RecordFetchSuccess(FetchSuccess),
    /// The download failed; the call decides whether and when it is tried again.
    RecordFetchFailure(FetchFailure),
    /// The audio was measured. Processing is complete unless `transcribe` asks for a
    /// transcript first (a transcription engine is configured).
    RecordAnalysis {
        analytics: AudioAnalytics,
        transcribe: bool,
        at: DateTime<Utc>,
    },
    /// A transcription worker begins transcribing the recording (a new attempt) — unless
    /// `max_attempts` have started already: the call then completes without a transcript.
    StartTranscription {
        engine: String,
        max_attempts: u32,
        at: DateTime<Utc>,
    },
    /// The transcription in progress was stopped by a graceful shutdown: it gives its attempt
    /// back.
    InterruptTranscription { reason: String, at: DateTime<Utc> },
    /// The transcript is ready: processing is complete.
    RecordTranscript(TranscriptDone),
    /// Transcription failed; the call decides whether to try again or to complete without a
    /// transcript (the analytics still stand).
    RecordTranscriptionFailure(TranscriptionFailure),
    /// Processing cannot go on (undecodable audio, ...).
    FailProcessing { reason: String, at: DateTime<Utc> },
    /// The partner's callback endpoint took the outcome (2xx).
    RecordCallbackSuccess(CallbackSuccess),
    /// A callback attempt failed; the call decides whether and when to try again.
    RecordCallbackFailure(CallbackFailure),
    /// Support asks for the outcome to be sent again (a fresh series of attempts).
    RequestCallbackRedelivery {
        requested_by: String,
        at: DateTime<Utc>,
    },
    /// The keys of the call's personal data in `scope` were destroyed: record it. Allowed at
    /// any stage; the call goes on (and calls back) without those fields.
    RecordErasure {
        scope: ErasureScope,
        reason: ErasureReason,
        at: DateTime<Utc>,
    },
}

/// Which personal data of a call an erasure destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErasureScope {
    /// Everything personal of the call (the subject is its customer: number or e-mail).
    Call,
    /// The agent's name, e-mail and unknown fields only (the subject is the agent).
    Agent,
}

impl ErasureScope {
    /// How many fields the scope's key sealed: the count the event records.
    pub fn field_count(self) -> u32 {
        match self {
            // Number, recording URL, customer name/e-mail/extra fields, call extra fields,
            // metadata, custom fields, top-level extra fields, transcript; and the agent's 3.
            ErasureScope::Call => 10 + 3,
            ErasureScope::Agent => 3,
        }
    }
}

/// Why personal data was erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErasureReason {
    /// The partner (or support for it) asked, for a data subject.
    Request,
    /// The partner's retention period passed.
    Retention,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallbackSuccess {
    pub status_code: u16,
    pub response_time_ms: u64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallbackFailure {
    /// The answer's status, when there was one.
    pub status_code: Option<u16>,
    /// What went wrong: `status 500`, `timeout`, `connect`, `redirect not followed`, ...
    pub error: String,
    pub response_time_ms: u64,
    /// A `Retry-After` the receiver sent (honoured on 429 and 503).
    pub retry_after_ms: Option<u64>,
    pub policy: RetryPolicy,
    /// Spread of the next wait, within ±0.1 (the caller draws it: the domain has no randomness).
    pub jitter_ratio: f64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptDone {
    /// `whisper` or `openai`.
    pub engine: String,
    /// The model the engine ran, e.g. `ggml-tiny.en`.
    pub model: String,
    pub language: String,
    /// In time order across channels.
    pub segments: Vec<TranscriptSegment>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptionFailure {
    pub error: String,
    /// The engine may succeed later (unreachable, overloaded) rather than never (bad audio).
    pub retryable: bool,
    pub policy: RetryPolicy,
    pub at: DateTime<Utc>,
}

/// Who speaks on a channel: stereo calls carry the agent on the left and the customer on the
/// right; a mono recording mixes both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    Agent,
    Customer,
    Mono,
}

impl Speaker {
    pub fn as_str(&self) -> &'static str {
        match self {
            Speaker::Agent => "agent",
            Speaker::Customer => "customer",
            Speaker::Mono => "mono",
        }
    }
}

/// One stretch of speech on one channel, times from the start of the recording.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TranscriptSegment {
    pub channel: Speaker,
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AcceptCall {
    pub partner_id: PartnerId,
    pub tenant_id: TenantId,
    pub sub_tenant_id: TenantId,
    pub batch_id: Uuid,
    pub call: NewCall,
    /// When the request carrying the call arrived.
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FetchSuccess {
    pub bytes: u64,
    pub sha256: String,
    pub content_type: Option<String>,
    pub format: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FetchFailure {
    /// For the partner: "recording URL answered 404 Not Found".
    pub error: String,
    /// Transient (timeout, 5xx, 429) rather than permanent (4xx, too large).
    pub retryable: bool,
    /// What the server asked for (a `Retry-After`), if anything.
    pub retry_after_ms: Option<u64>,
    pub policy: RetryPolicy,
    pub at: DateTime<Utc>,
}

/// How often and how patiently a recording fetch is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Wait before retry n is `backoff_base_ms × 2^(n-1)`.
    pub backoff_base_ms: u64,
}

impl RetryPolicy {
    /// Milliseconds to wait after failed attempt `attempt` (1-based): the backoff spread by
    /// `jitter_ratio` (clamped to ±0.1), or a longer `Retry-After`, at most one hour.
    pub fn delay_ms(&self, attempt: u32, retry_after_ms: Option<u64>, jitter_ratio: f64) -> u64 {
        const MAX_DELAY_MS: u64 = 3_600_000;
        let exponent = attempt.saturating_sub(1).min(30);
        let backoff = self.backoff_base_ms.saturating_mul(1u64 << exponent) as f64;
        let jittered = (backoff * (1.0 + jitter_ratio.clamp(-0.1, 0.1))).round() as u64;
        jittered.max(retry_after_ms.unwrap_or(0)).min(MAX_DELAY_MS)
    }
}

/// The figures measured on a recording, named for analysts: what `callingest_audio::analyze`
/// produces and `RecordAnalysis` records, one type for both (the audio crate depends on this
/// one). Durations are in milliseconds of decoded audio, levels in dBFS (0 dBFS = digital full
/// scale).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AudioAnalytics {
    /// Decoded sample frames / sample rate (not container metadata). For MP3 the encoder
    /// delay/padding recorded in a LAME/Xing header is trimmed; for AAC it is not (up to ~2048
    /// extra samples of priming and padding).
    pub duration_ms: u64,
    /// Sample rate of the decoded audio, in Hz.
    pub sample_rate: u32,
    /// Number of decoded channels.
    pub channels: u16,
    /// Decoder short name, e.g. `mp3`, `aac`, `pcm_s16le`.
    pub codec: String,
    /// Talk time on the agent's channel (left of a stereo call; the only one of a mono call).
    pub agent_talk_ms: u64,
    /// Talk time on the customer's channel (right); `None` for a mono recording.
    pub customer_talk_ms: Option<u64>,
    /// Share of the call, 0 to 1, where nobody talks (on any tracked channel).
    pub silence_ratio: f64,
    /// Longest stretch where nobody talks.
    pub longest_silence_ms: u64,
    /// Time both sides talk at once (0 for mono).
    pub overlap_ms: u64,
    /// RMS level over all samples of all channels, in dBFS: -120 (digital silence) to 0.
    /// Always measured by the analysis; `None` means unknown: events recorded
    /// before analytics were always finite hold `null` here (JSON has no infinity, so an
    /// infinite level was stored as `null`), and must still load.
    #[serde(default)]
    pub mean_dbfs: Option<f64>,
    /// Largest absolute sample, in dBFS: -120 to 0 (samples beyond full scale, e.g. a lossy
    /// decoder's overshoot, are saturated at it); `None` as for `mean_dbfs`.
    #[serde(default)]
    pub peak_dbfs: Option<f64>,
    /// Share (0 to 1) of all samples with |s| >= 0.999 of full scale.
    pub clipping_ratio: f64,
    /// Version of the voice-activity detector that measured the talk times and turns
    /// (`callingest_audio::DETECTOR_VERSION`); `None` in events recorded before version 2,
    /// whose talk times came from the meter's earlier rule.
    #[serde(default)]
    pub detector_version: Option<u32>,
    /// Turn-taking figures (all `None` for mono and in events recorded before them).
    #[serde(flatten)]
    pub interaction: Interaction,
}

impl AudioAnalytics {
    /// The name of the first figure that is not a finite number, if any. Such a figure cannot
    /// be stored faithfully (serde_json writes NaN and infinity as `null`), so the call refuses
    /// it. The ratios are integer counts over a non-zero count, so even the events written
    /// before this check hold finite ones; only the levels could be `null` there.
    pub fn non_finite_figure(&self) -> Option<&'static str> {
        [
            ("silence_ratio", Some(self.silence_ratio)),
            ("mean_dbfs", self.mean_dbfs),
            ("peak_dbfs", self.peak_dbfs),
            ("clipping_ratio", Some(self.clipping_ratio)),
        ]
        .into_iter()
        .find(|(_, figure)| figure.is_some_and(|f| !f.is_finite()))
        .map(|(name, _)| name)
        .or_else(|| self.interaction.non_finite_figure())
    }
}
