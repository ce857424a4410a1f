//! The rows of the analyst read models and how each event changes them: pure functions, no IO.
//! Field names are the column names (rows travel to and from PostgreSQL as JSON records).

use callingest_domain::batch::BatchSubmitted;
use callingest_domain::call::{CallAccepted, CallEvent, ErasureScope};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallStatus {
    Accepted,
    Fetching,
    Analysing,
    Completed,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRow {
    pub partner_id: String,
    pub call_id: String,
    pub tenant_id: String,
    pub sub_tenant_id: String,
    pub batch_id: Uuid,
    pub agent_id: String,
    pub customer_id: String,
    /// `None` once erased.
    pub contact_number: Option<String>,
    /// The customer's side of the call was erased (issue 16).
    #[serde(default)]
    pub personal_data_erased: bool,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub call_duration_ms: i64,
    pub has_callback: bool,
    pub status: CallStatus,
    pub accepted_at: DateTime<Utc>,
    pub fetch_started_at: Option<DateTime<Utc>>,
    pub fetched_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub processing_time_ms: Option<i64>,
    pub fetch_attempts: i32,
    pub duplicate_submissions: i32,
    pub error: Option<String>,
    pub recording_bytes: Option<i64>,
    pub recording_sha256: Option<String>,
    pub recording_format: Option<String>,
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
    pub updated_at: DateTime<Utc>,
    pub callback_status: Option<CallbackStatus>,
    pub callback_attempts: i32,
    pub callback_last_status_code: Option<i32>,
    pub callback_delivered_at: Option<DateTime<Utc>>,
    pub transcription_status: Option<TranscriptionStatus>,
    pub transcription_attempts: i32,
    pub transcript_word_count: Option<i64>,
    pub transcribed_at: Option<DateTime<Utc>>,
    // Interaction figures (migration 0013); `None` before it and for mono recordings.
    pub detector_version: Option<i32>,
    pub talk_ratio: Option<f64>,
    pub longest_monologue_ms: Option<i64>,
    pub longest_customer_story_ms: Option<i64>,
    pub interactivity: Option<f64>,
    pub patience_ms: Option<i64>,
    pub patience_switches: Option<i32>,
    pub agent_turns: Option<i32>,
    pub customer_turns: Option<i32>,
    pub agent_words: Option<i64>,
    pub customer_words: Option<i64>,
    pub agent_words_per_minute: Option<f64>,
    pub customer_words_per_minute: Option<f64>,
    pub agent_questions: Option<i32>,
    pub customer_questions: Option<i32>,
    pub agent_word_share: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TranscriptionStatus {
    /// Analysed, waiting for a transcription worker (also between attempts).
    Pending,
    Transcribing,
    Available,
    /// Every attempt failed or the failure was permanent; the call completed without one.
    Unavailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallbackStatus {
    Pending,
    Delivered,
    Abandoned,
}

impl CallRow {
    pub fn accepted(e: &CallAccepted) -> Self {
        let call = &e.call;
        let start = call.call.start_time.as_datetime();
        let end = call.call.end_time.as_datetime();
        Self {
            partner_id: e.partner_id.to_string(),
            call_id: call.call.id.to_string(),
            tenant_id: e.tenant_id.to_string(),
            sub_tenant_id: e.sub_tenant_id.to_string(),
            batch_id: e.batch_id,
            agent_id: call.agent.id.to_string(),
            customer_id: call.customer.id.to_string(),
            contact_number: call.call.contact_number.clear().map(ToString::to_string),
            personal_data_erased: call.personal_data_erased(),
            start_time: start,
            end_time: end,
            call_duration_ms: (end - start).num_milliseconds(),
            has_callback: call.callback_url.is_some(),
            status: CallStatus::Accepted,
            accepted_at: e.accepted_at,
            fetch_started_at: None,
            fetched_at: None,
            completed_at: None,
            failed_at: None,
            processing_time_ms: None,
            fetch_attempts: 0,
            duplicate_submissions: 0,
            error: None,
            recording_bytes: None,
            recording_sha256: None,
            recording_format: None,
            recording_duration_ms: None,
            sample_rate: None,
            channels: None,
            codec: None,
            agent_talk_ms: None,
            customer_talk_ms: None,
            silence_ratio: None,
            longest_silence_ms: None,
            overlap_ms: None,
            mean_dbfs: None,
            peak_dbfs: None,
            clipping_ratio: None,
            updated_at: e.accepted_at,
            callback_status: None,
            callback_attempts: 0,
            callback_last_status_code: None,
            callback_delivered_at: None,
            transcription_status: None,
            transcription_attempts: 0,
            transcript_word_count: None,
            transcribed_at: None,
            detector_version: None,
            talk_ratio: None,
            longest_monologue_ms: None,
            longest_customer_story_ms: None,
            interactivity: None,
            patience_ms: None,
            patience_switches: None,
            agent_turns: None,
            customer_turns: None,
            agent_words: None,
            customer_words: None,
            agent_words_per_minute: None,
            customer_words_per_minute: None,
            agent_questions: None,
            customer_questions: None,
            agent_word_share: None,
        }
    }

    /// The day the call counts for in daily statistics: the UTC date it started.
    pub fn day(&self) -> NaiveDate {
        self.start_time.date_naive()
    }

    /// Folds one later event of this call into the row.
    pub fn apply(&mut self, event: &CallEvent, recorded_at: DateTime<Utc>) {
        self.updated_at = recorded_at;
        match event {
            CallEvent::CallAccepted(_) => {}
            CallEvent::DuplicateSubmissionReceived(_) => self.duplicate_submissions += 1,
            CallEvent::PersonalDataErased(e) => {
                if e.scope == ErasureScope::Call {
                    self.contact_number = None;
                    self.personal_data_erased = true;
                }
            }
            CallEvent::RecordingFetchStarted(e) => {
                self.status = CallStatus::Fetching;
                self.fetch_attempts = e.attempt as i32;
                self.fetch_started_at.get_or_insert(e.started_at);
            }
            CallEvent::RecordingFetched(e) => {
                self.status = CallStatus::Analysing;
                self.fetched_at = Some(e.fetched_at);
                self.recording_bytes = Some(e.bytes as i64);
                self.recording_sha256 = Some(e.sha256.clone());
                self.recording_format = e.format.clone();
            }
            // A failed attempt leaves the call `fetching` until it is retried or fails for good.
            CallEvent::RecordingFetchFailed(e) => self.error = Some(e.error.clone()),
            // Stopped by a graceful shutdown: the attempt was given back and starts again.
            CallEvent::RecordingFetchInterrupted(e) => {
                self.fetch_attempts = e.attempt.saturating_sub(1) as i32;
                if self.fetch_attempts == 0 {
                    self.status = CallStatus::Accepted;
                } else {
                    self.status = CallStatus::Fetching;
                }
            }
            CallEvent::RecordingAnalyzed(e) => {
                let a = &e.analytics;
                self.recording_duration_ms = Some(a.duration_ms as i64);
                self.sample_rate = Some(a.sample_rate as i32);
                self.channels = Some(a.channels as i16);
                self.codec = Some(a.codec.clone());
                self.agent_talk_ms = Some(a.agent_talk_ms as i64);
                self.customer_talk_ms = a.customer_talk_ms.map(|ms| ms as i64);
                self.silence_ratio = Some(a.silence_ratio);
                self.longest_silence_ms = Some(a.longest_silence_ms as i64);
                self.overlap_ms = Some(a.overlap_ms as i64);
                // `None` only in events written before analytics were always finite.
                self.mean_dbfs = a.mean_dbfs;
                self.peak_dbfs = a.peak_dbfs;
                self.clipping_ratio = Some(a.clipping_ratio);
                let i = &a.interaction;
                self.detector_version = a.detector_version.map(|v| v as i32);
                self.talk_ratio = i.talk_ratio;
                self.longest_monologue_ms = i.longest_monologue_ms.map(|ms| ms as i64);
                self.longest_customer_story_ms = i.longest_customer_story_ms.map(|ms| ms as i64);
                self.interactivity = i.interactivity;
                self.patience_ms = i.patience_ms.map(|ms| ms as i64);
                self.patience_switches = i.patience_switches.map(|n| n as i32);
                self.agent_turns = i.agent_turns.map(|n| n as i32);
                self.customer_turns = i.customer_turns.map(|n| n as i32);
                if e.transcription_due {
                    self.transcription_status = Some(TranscriptionStatus::Pending);
                }
            }
            CallEvent::TranscriptionStarted(e) => {
                self.transcription_status = Some(TranscriptionStatus::Transcribing);
                self.transcription_attempts = e.attempt as i32;
            }
            CallEvent::TranscriptProduced(e) => {
                self.transcription_status = Some(TranscriptionStatus::Available);
                self.transcript_word_count = Some(e.word_count as i64);
                self.transcribed_at = Some(e.produced_at);
                let f = &e.figures;
                self.agent_words = f.agent_words.map(|n| n as i64);
                self.customer_words = f.customer_words.map(|n| n as i64);
                self.agent_words_per_minute = f.agent_words_per_minute;
                self.customer_words_per_minute = f.customer_words_per_minute;
                self.agent_questions = f.agent_questions.map(|n| n as i32);
                self.customer_questions = f.customer_questions.map(|n| n as i32);
                self.agent_word_share = f.agent_word_share;
            }
            CallEvent::TranscriptionFailed(e) => {
                self.transcription_status = Some(if e.next_attempt_at.is_some() {
                    TranscriptionStatus::Pending
                } else {
                    TranscriptionStatus::Unavailable
                });
            }
            CallEvent::TranscriptionInterrupted(e) => {
                self.transcription_status = Some(TranscriptionStatus::Pending);
                self.transcription_attempts = e.attempt.saturating_sub(1) as i32;
            }
            CallEvent::ProcessingCompleted(e) => {
                self.status = CallStatus::Completed;
                self.completed_at = Some(e.completed_at);
                self.processing_time_ms = Some(e.processing_time_ms as i64);
                self.error = None;
                self.callback_status = e.callback_due.then_some(CallbackStatus::Pending);
            }
            CallEvent::ProcessingFailed(e) => {
                self.status = CallStatus::Failed;
                self.failed_at = Some(e.failed_at);
                self.processing_time_ms = Some(e.processing_time_ms as i64);
                self.error = Some(e.reason.clone());
                self.callback_status = e.callback_due.then_some(CallbackStatus::Pending);
            }
            CallEvent::CallbackAttemptFailed(e) => {
                self.callback_attempts += 1;
                self.callback_last_status_code = e.status_code.map(i32::from);
            }
            CallEvent::CallbackDelivered(e) => {
                self.callback_attempts += 1;
                self.callback_last_status_code = Some(i32::from(e.status_code));
                self.callback_status = Some(CallbackStatus::Delivered);
                self.callback_delivered_at = Some(e.delivered_at);
            }
            CallEvent::CallbackAbandoned(_) => {
                self.callback_status = Some(CallbackStatus::Abandoned)
            }
            CallEvent::CallbackRedeliveryRequested(_) => {
                self.callback_status = Some(CallbackStatus::Pending)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRow {
    pub batch_id: Uuid,
    pub partner_id: String,
    pub tenant_id: String,
    pub sub_tenant_id: String,
    pub received_at: Option<DateTime<Utc>>,
    pub call_count: i32,
    pub accepted_count: i32,
    pub fetching_count: i32,
    pub analysing_count: i32,
    pub completed_count: i32,
    pub failed_count: i32,
    pub duplicate_count: i32,
    pub updated_at: DateTime<Utc>,
}

impl BatchRow {
    pub fn new(
        batch_id: Uuid,
        partner_id: &str,
        tenant_id: &str,
        sub_tenant_id: &str,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            batch_id,
            partner_id: partner_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            sub_tenant_id: sub_tenant_id.to_owned(),
            received_at: None,
            call_count: 0,
            accepted_count: 0,
            fetching_count: 0,
            analysing_count: 0,
            completed_count: 0,
            failed_count: 0,
            duplicate_count: 0,
            updated_at: at,
        }
    }

    pub fn submitted(&mut self, e: &BatchSubmitted) {
        self.received_at = Some(e.received_at);
        self.call_count = e.call_ids.len() as i32;
        self.updated_at = e.received_at;
    }

    /// Moves one call between status counts (`from` is `None` for a call just accepted).
    pub fn count(&mut self, from: Option<CallStatus>, to: CallStatus, at: DateTime<Utc>) {
        if let Some(from) = from {
            *self.counter(from) -= 1;
        }
        *self.counter(to) += 1;
        self.updated_at = at;
    }

    fn counter(&mut self, status: CallStatus) -> &mut i32 {
        match status {
            CallStatus::Accepted => &mut self.accepted_count,
            CallStatus::Fetching => &mut self.fetching_count,
            CallStatus::Analysing => &mut self.analysing_count,
            CallStatus::Completed => &mut self.completed_count,
            CallStatus::Failed => &mut self.failed_count,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DailyTenantStatsRow {
    pub day: NaiveDate,
    pub partner_id: String,
    pub tenant_id: String,
    pub calls: i32,
    pub completed: i32,
    pub failed: i32,
    pub total_recording_minutes: f64,
    pub mean_recording_minutes: Option<f64>,
}

impl DailyTenantStatsRow {
    pub fn new(day: NaiveDate, partner_id: &str, tenant_id: &str) -> Self {
        Self {
            day,
            partner_id: partner_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            calls: 0,
            completed: 0,
            failed: 0,
            total_recording_minutes: 0.0,
            mean_recording_minutes: None,
        }
    }

    /// Counts a call reaching `status`; completed calls add their recording's minutes.
    pub fn count(&mut self, status: CallStatus, recording_duration_ms: Option<i64>) {
        match status {
            CallStatus::Accepted => self.calls += 1,
            CallStatus::Completed => {
                self.completed += 1;
                self.total_recording_minutes +=
                    recording_duration_ms.unwrap_or(0) as f64 / 60_000.0;
                self.mean_recording_minutes =
                    Some(self.total_recording_minutes / self.completed as f64);
            }
            CallStatus::Failed => self.failed += 1,
            CallStatus::Fetching | CallStatus::Analysing => {}
        }
    }
}

/// Sums, counts and maxima of one agent's calls on one day (of the call's start, UTC) within one
/// sub-tenant: rows add up across days, tenants and sub-tenants, and means are computed when read
/// (a figure's sum over its own count: calls without the figure, e.g. mono ones, count in
/// neither).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentDailyStatsRow {
    pub day: NaiveDate,
    pub partner_id: String,
    pub tenant_id: String,
    pub sub_tenant_id: String,
    pub agent_id: String,
    pub calls: i32,
    pub completed: i32,
    pub failed: i32,
    pub recording_ms: i64,
    pub agent_talk_ms: i64,
    pub customer_talk_ms: i64,
    pub talk_ratio_sum: f64,
    pub talk_ratio_calls: i32,
    pub longest_monologue_ms_sum: i64,
    pub longest_monologue_calls: i32,
    pub longest_monologue_ms_max: Option<i64>,
    pub longest_customer_story_ms_sum: i64,
    pub longest_customer_story_calls: i32,
    pub longest_customer_story_ms_max: Option<i64>,
    pub interactivity_sum: f64,
    pub interactivity_calls: i32,
    pub patience_ms_sum: i64,
    pub patience_calls: i32,
    pub agent_turns: i64,
    pub customer_turns: i64,
    pub transcribed_calls: i32,
    pub agent_words: i64,
    pub customer_words: i64,
    pub agent_questions: i64,
    pub customer_questions: i64,
    pub transcribed_agent_talk_minutes: f64,
    pub transcribed_customer_talk_minutes: f64,
}

impl AgentDailyStatsRow {
    pub fn new(call: &CallRow) -> Self {
        Self {
            day: call.day(),
            partner_id: call.partner_id.clone(),
            tenant_id: call.tenant_id.clone(),
            sub_tenant_id: call.sub_tenant_id.clone(),
            agent_id: call.agent_id.clone(),
            calls: 0,
            completed: 0,
            failed: 0,
            recording_ms: 0,
            agent_talk_ms: 0,
            customer_talk_ms: 0,
            talk_ratio_sum: 0.0,
            talk_ratio_calls: 0,
            longest_monologue_ms_sum: 0,
            longest_monologue_calls: 0,
            longest_monologue_ms_max: None,
            longest_customer_story_ms_sum: 0,
            longest_customer_story_calls: 0,
            longest_customer_story_ms_max: None,
            interactivity_sum: 0.0,
            interactivity_calls: 0,
            patience_ms_sum: 0,
            patience_calls: 0,
            agent_turns: 0,
            customer_turns: 0,
            transcribed_calls: 0,
            agent_words: 0,
            customer_words: 0,
            agent_questions: 0,
            customer_questions: 0,
            transcribed_agent_talk_minutes: 0.0,
            transcribed_customer_talk_minutes: 0.0,
        }
    }

    /// Counts a call reaching `status`; a completed call adds its figures.
    pub fn count(&mut self, status: CallStatus, call: &CallRow) {
        match status {
            CallStatus::Accepted => self.calls += 1,
            CallStatus::Failed => self.failed += 1,
            CallStatus::Completed => {
                self.completed += 1;
                self.add_figures(call);
            }
            CallStatus::Fetching | CallStatus::Analysing => {}
        }
    }

    fn add_figures(&mut self, c: &CallRow) {
        self.recording_ms += c.recording_duration_ms.unwrap_or(0);
        self.agent_talk_ms += c.agent_talk_ms.unwrap_or(0);
        self.customer_talk_ms += c.customer_talk_ms.unwrap_or(0);
        if let Some(ratio) = c.talk_ratio {
            self.talk_ratio_sum += ratio;
            self.talk_ratio_calls += 1;
        }
        if let Some(ms) = c.longest_monologue_ms {
            self.longest_monologue_ms_sum += ms;
            self.longest_monologue_calls += 1;
            self.longest_monologue_ms_max =
                Some(self.longest_monologue_ms_max.unwrap_or(0).max(ms));
        }
        if let Some(ms) = c.longest_customer_story_ms {
            self.longest_customer_story_ms_sum += ms;
            self.longest_customer_story_calls += 1;
            self.longest_customer_story_ms_max =
                Some(self.longest_customer_story_ms_max.unwrap_or(0).max(ms));
        }
        if let Some(per_minute) = c.interactivity {
            self.interactivity_sum += per_minute;
            self.interactivity_calls += 1;
        }
        if let Some(ms) = c.patience_ms {
            self.patience_ms_sum += ms;
            self.patience_calls += 1;
        }
        self.agent_turns += i64::from(c.agent_turns.unwrap_or(0));
        self.customer_turns += i64::from(c.customer_turns.unwrap_or(0));
        // Per-side transcript figures exist for transcribed stereo calls only.
        if let (Some(agent_words), Some(customer_words)) = (c.agent_words, c.customer_words) {
            self.transcribed_calls += 1;
            self.agent_words += agent_words;
            self.customer_words += customer_words;
            self.agent_questions += i64::from(c.agent_questions.unwrap_or(0));
            self.customer_questions += i64::from(c.customer_questions.unwrap_or(0));
            self.transcribed_agent_talk_minutes += c.agent_talk_ms.unwrap_or(0) as f64 / 60_000.0;
            self.transcribed_customer_talk_minutes +=
                c.customer_talk_ms.unwrap_or(0) as f64 / 60_000.0;
        }
    }
}
