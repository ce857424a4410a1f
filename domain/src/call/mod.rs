//! The `Call` aggregate: one call of one partner, identified by `{partner_id}:{call_id}`.
//! That identity is what makes ingest idempotent: a call can be accepted once, and every later
//! submission of the same id is only recorded as a duplicate. It then goes through processing
//! (fetch, analysis) and ends completed or failed, exactly once.

mod commands;
mod events;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

pub use commands::*;
pub use events::*;

use crate::interaction::TranscriptFigures;
use crate::personal::Personal;
use crate::submission::NewCall;
use crate::values::{CallId, PartnerId, TenantId};

/// The reason given when the bytes of a recording are none of the supported formats.
pub const UNSUPPORTED_FORMAT: &str = "unsupported recording format";

/// The aggregate id of a partner's call. Partner ids never contain `:`, so the first colon
/// splits it back (see [`split_call_aggregate_id`]).
pub fn call_aggregate_id(partner_id: &PartnerId, call_id: &CallId) -> String {
    format!("{partner_id}:{call_id}")
}

/// `(partner_id, call_id)` of a call aggregate id.
pub fn split_call_aggregate_id(aggregate_id: &str) -> Option<(&str, &str)> {
    aggregate_id.split_once(':')
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// A guard on the identity rule: a call only ever belongs to the partner that sent it.
    #[error("call belongs to partner {owner}, not {requester}")]
    OtherPartnersCall { owner: String, requester: String },
    #[error("call was never accepted")]
    NotAccepted,
    #[error("call processing has already finished")]
    AlreadyFinished,
    #[error("no fetch of the recording is in progress")]
    NoFetchInProgress,
    #[error("the recording has not been fetched")]
    NotFetched,
    #[error("the recording has already been fetched")]
    AlreadyFetched,
    #[error("the call is not waiting for a transcript")]
    NotAwaitingTranscript,
    #[error("no transcription is in progress")]
    NoTranscriptionInProgress,
    #[error("call processing has not finished yet")]
    NotFinished,
    #[error("the call has no callback_url")]
    NoCallbackUrl,
    #[error("no callback is pending")]
    CallbackNotPending,
    #[error("a callback is already scheduled")]
    CallbackAlreadyPending,
    /// An analytics figure is NaN or infinite: it would be stored as `null` and could not be
    /// read back as the number it claims to be.
    #[error("the analytics figure {figure} is not a finite number")]
    NonFiniteAnalytics { figure: String },
}

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Nothing known yet (no `CallAccepted`).
    #[default]
    Unknown,
    Accepted,
    Fetching,
    Fetched,
    /// Analysed; waiting for a transcription worker.
    Analyzed,
    Transcribing,
    Completed,
    Failed,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    accepted: Option<AcceptedCall>,
    stage: Stage,
    fetch_attempts: u32,
    transcription_attempts: u32,
    analytics: Option<AudioAnalytics>,
    /// Figures from the transcript, once there is one.
    #[serde(default)]
    transcript_figures: Option<TranscriptFigures>,
    outcome: Option<Outcome>,
    callback: CallbackState,
}

/// How processing ended, as the callback reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Outcome {
    Completed {
        processing_time_ms: u64,
        transcription_available: bool,
    },
    Failed {
        processing_time_ms: u64,
        reason: String,
    },
}

/// The callback series in progress, if any.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct CallbackState {
    pending: bool,
    attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AcceptedCall {
    partner_id: PartnerId,
    tenant_id: TenantId,
    sub_tenant_id: TenantId,
    accepted_at: DateTime<Utc>,
    call: NewCall,
}

impl Call {
    pub fn stage(&self) -> Stage {
        self.stage
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.stage, Stage::Completed | Stage::Failed)
    }

    pub fn fetch_attempts(&self) -> u32 {
        self.fetch_attempts
    }

    /// The call as first submitted.
    pub fn submission(&self) -> Option<&NewCall> {
        self.accepted.as_ref().map(|a| &a.call)
    }

    /// Whether a callback attempt is due (processing ended, callback not yet delivered or
    /// abandoned in the current series).
    pub fn callback_pending(&self) -> bool {
        self.callback.pending
    }

    /// The callback body: the outcome, the analytics figures and the partner's metadata,
    /// echoed unchanged. The same bytes for every attempt of every series, unless the call's
    /// personal data is erased in between: then `metadata` is `null` and
    /// `personal_data_erased` `true`.
    pub fn callback_payload(&self) -> Option<serde_json::Value> {
        let call = &self.accepted.as_ref()?.call;
        let (status, processing_time_ms, error, results) = match self.outcome.as_ref()? {
            Outcome::Completed {
                processing_time_ms,
                transcription_available,
            } => {
                let mut results = serde_json::json!({
                    "transcription_available": transcription_available,
                    "analytics_available": self.analytics.is_some(),
                });
                if let Some(serde_json::Value::Object(figures)) = self
                    .analytics
                    .as_ref()
                    .and_then(|a| serde_json::to_value(a).ok())
                {
                    results.as_object_mut().expect("an object").extend(figures);
                }
                if let Some(serde_json::Value::Object(figures)) = self
                    .transcript_figures
                    .as_ref()
                    .and_then(|f| serde_json::to_value(f).ok())
                {
                    results.as_object_mut().expect("an object").extend(figures);
                }
                ("completed", *processing_time_ms, None, results)
            }
            Outcome::Failed {
                processing_time_ms,
                reason,
            } => (
                "failed",
                *processing_time_ms,
                Some(reason.clone()),
                serde_json::Value::Null,
            ),
        };
        let mut payload = serde_json::json!({
            "call_id": call.call.id,
            "status": status,
            "processing_time": processing_time_ms as f64 / 1000.0,
            "error": error,
            "results": results,
            "metadata": call.metadata,
        });
        // Erased before the callback went out: the partner's metadata went with it.
        if call.personal_data_erased() {
            payload["metadata"] = serde_json::Value::Null;
            payload["personal_data_erased"] = serde_json::Value::Bool(true);
        }
        Some(payload)
    }
}

impl Aggregate for Call {
    const TYPE: &'static str = "Call";
    type Command = CallCommand;
    type Event = CallEvent;
    type Error = CallError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CallEvent::CallAccepted(e) => {
                self.accepted = Some(AcceptedCall {
                    partner_id: e.partner_id,
                    tenant_id: e.tenant_id,
                    sub_tenant_id: e.sub_tenant_id,
                    accepted_at: e.accepted_at,
                    call: *e.call,
                });
                self.stage = Stage::Accepted;
            }
            CallEvent::DuplicateSubmissionReceived(_) => {}
            // A call loaded before its keys were destroyed drops the fields here too.
            CallEvent::PersonalDataErased(e) => {
                if let Some(accepted) = self.accepted.as_mut() {
                    if e.scope == ErasureScope::Call {
                        accepted.call.take_call_personal();
                    }
                    accepted.call.take_agent_personal();
                }
            }
            CallEvent::RecordingFetchStarted(e) => {
                self.fetch_attempts = e.attempt;
                self.stage = Stage::Fetching;
            }
            CallEvent::RecordingFetched(_) => self.stage = Stage::Fetched,
            CallEvent::RecordingFetchFailed(_) => self.stage = Stage::Accepted,
            CallEvent::RecordingFetchInterrupted(e) => {
                self.fetch_attempts = e.attempt.saturating_sub(1);
                self.stage = Stage::Accepted;
            }
            CallEvent::RecordingAnalyzed(e) => {
                self.analytics = Some(e.analytics);
                if e.transcription_due {
                    self.stage = Stage::Analyzed;
                }
            }
            CallEvent::TranscriptionStarted(e) => {
                self.transcription_attempts = e.attempt;
                self.stage = Stage::Transcribing;
            }
            CallEvent::TranscriptProduced(e) => self.transcript_figures = Some(e.figures),
            CallEvent::TranscriptionFailed(_) => self.stage = Stage::Analyzed,
            CallEvent::TranscriptionInterrupted(e) => {
                self.transcription_attempts = e.attempt.saturating_sub(1);
                self.stage = Stage::Analyzed;
            }
            CallEvent::ProcessingCompleted(e) => {
                self.stage = Stage::Completed;
                self.outcome = Some(Outcome::Completed {
                    processing_time_ms: e.processing_time_ms,
                    transcription_available: e.results.transcription_available,
                });
                self.callback = CallbackState {
                    pending: e.callback_due,
                    attempts: 0,
                };
            }
            CallEvent::ProcessingFailed(e) => {
                self.stage = Stage::Failed;
                self.outcome = Some(Outcome::Failed {
                    processing_time_ms: e.processing_time_ms,
                    reason: e.reason,
                });
                self.callback = CallbackState {
                    pending: e.callback_due,
                    attempts: 0,
                };
            }
            CallEvent::CallbackAttemptFailed(e) => self.callback.attempts = e.attempt,
            CallEvent::CallbackDelivered(_) | CallEvent::CallbackAbandoned(_) => {
                self.callback.pending = false;
            }
            CallEvent::CallbackRedeliveryRequested(_) => {
                self.callback = CallbackState {
                    pending: true,
                    attempts: 0,
                };
            }
        }
    }
}

impl Call {
    /// The events a command yields in the current state; no state changes here.
    fn decide(&self, command: CallCommand) -> Result<Vec<CallEvent>, CallError> {
        let accepted = match (&command, &self.accepted) {
            (CallCommand::AcceptCall(_), _) => None,
            (_, Some(accepted)) => Some(accepted),
            (_, None) => return Err(CallError::NotAccepted),
        };
        match command {
            CallCommand::AcceptCall(cmd) => self.accept(*cmd).map(|e| vec![e]),
            CallCommand::RecordErasure { scope, reason, at } => {
                Ok(vec![CallEvent::PersonalDataErased(PersonalDataErased {
                    scope,
                    reason,
                    fields: scope.field_count(),
                    erased_at: at,
                })])
            }
            CallCommand::RecordCallbackSuccess(success) => {
                self.require_pending_callback()?;
                Ok(vec![CallEvent::CallbackDelivered(CallbackDelivered {
                    attempt: self.callback.attempts + 1,
                    status_code: success.status_code,
                    response_time_ms: success.response_time_ms,
                    delivered_at: success.at,
                })])
            }
            CallCommand::RecordCallbackFailure(failure) => {
                self.require_pending_callback()?;
                let attempt = self.callback.attempts + 1;
                let again = attempt < failure.policy.max_attempts;
                let next_attempt_at = again.then(|| {
                    let delay = failure.policy.delay_ms(
                        attempt,
                        failure.retry_after_ms,
                        failure.jitter_ratio,
                    );
                    failure.at + chrono::Duration::milliseconds(delay as i64)
                });
                let mut events = vec![CallEvent::CallbackAttemptFailed(CallbackAttemptFailed {
                    attempt,
                    status_code: failure.status_code,
                    error: failure.error,
                    response_time_ms: failure.response_time_ms,
                    next_attempt_at,
                    failed_at: failure.at,
                })];
                if !again {
                    events.push(CallEvent::CallbackAbandoned(CallbackAbandoned {
                        attempts: attempt,
                        abandoned_at: failure.at,
                    }));
                }
                Ok(events)
            }
            CallCommand::RequestCallbackRedelivery { requested_by, at } => {
                if !self.is_finished() {
                    return Err(CallError::NotFinished);
                }
                let call = &accepted.expect("checked above").call;
                if call.callback_url.is_none() {
                    return Err(CallError::NoCallbackUrl);
                }
                if self.callback.pending {
                    return Err(CallError::CallbackAlreadyPending);
                }
                Ok(vec![CallEvent::CallbackRedeliveryRequested(
                    CallbackRedeliveryRequested {
                        requested_by,
                        requested_at: at,
                    },
                )])
            }
            processing => self.decide_processing(processing, accepted.expect("checked above")),
        }
    }

    /// Commands of the processing pipeline: only valid until the call has finished.
    fn decide_processing(
        &self,
        command: CallCommand,
        accepted: &AcceptedCall,
    ) -> Result<Vec<CallEvent>, CallError> {
        if self.is_finished() {
            return Err(CallError::AlreadyFinished);
        }
        let callback_due = accepted.call.callback_url.is_some();
        let elapsed_ms =
            |at: DateTime<Utc>| (at - accepted.accepted_at).num_milliseconds().max(0) as u64;
        let completed = |analytics: Option<&AudioAnalytics>,
                         transcription_available: bool,
                         at: DateTime<Utc>| {
            CallEvent::ProcessingCompleted(ProcessingCompleted {
                completed_at: at,
                callback_due,
                processing_time_ms: elapsed_ms(at),
                results: ResultsSummary {
                    transcription_available,
                    analytics_available: analytics.is_some(),
                    duration_ms: analytics.map_or(0, |a| a.duration_ms),
                    agent_talk_ms: analytics.map_or(0, |a| a.agent_talk_ms),
                    customer_talk_ms: analytics.and_then(|a| a.customer_talk_ms),
                    silence_ratio: analytics.map_or(0.0, |a| a.silence_ratio),
                },
            })
        };
        let failed = |reason: String, at: DateTime<Utc>| {
            CallEvent::ProcessingFailed(ProcessingFailed {
                failed_at: at,
                callback_due,
                processing_time_ms: elapsed_ms(at),
                reason,
            })
        };
        match command {
            CallCommand::StartFetch { max_attempts, at } => {
                // Again from `Fetching` or `Fetched` (a worker died before the analysis was
                // recorded), but never once the call is analysed: a stale claim must not
                // fetch it again.
                if !matches!(
                    self.stage,
                    Stage::Accepted | Stage::Fetching | Stage::Fetched
                ) {
                    return Err(CallError::AlreadyFetched);
                }
                // Attempts that never reported (the worker died, e.g. killed or out of memory
                // on this recording) count too: the call must not be retried for ever.
                // Reported failures end the call themselves once the attempts are used up.
                if self.fetch_attempts >= max_attempts.max(1) {
                    let error = format!(
                        "recording fetch and analysis did not finish in {} attempts",
                        self.fetch_attempts
                    );
                    return Ok(vec![
                        CallEvent::RecordingFetchFailed(RecordingFetchFailed {
                            attempt: self.fetch_attempts,
                            error: error.clone(),
                            retryable: false,
                            next_attempt_at: None,
                            failed_at: at,
                        }),
                        failed(error, at),
                    ]);
                }
                Ok(vec![CallEvent::RecordingFetchStarted(
                    RecordingFetchStarted {
                        attempt: self.fetch_attempts + 1,
                        started_at: at,
                    },
                )])
            }
            CallCommand::InterruptFetch { reason, at } => {
                if !matches!(self.stage, Stage::Fetching | Stage::Fetched) {
                    return Err(CallError::NoFetchInProgress);
                }
                Ok(vec![CallEvent::RecordingFetchInterrupted(
                    RecordingFetchInterrupted {
                        attempt: self.fetch_attempts,
                        reason,
                        interrupted_at: at,
                    },
                )])
            }
            CallCommand::RecordFetchSuccess(fetch) => {
                self.require(Stage::Fetching, CallError::NoFetchInProgress)?;
                let supported = fetch.format.is_some();
                let mut events = vec![CallEvent::RecordingFetched(RecordingFetched {
                    attempt: self.fetch_attempts,
                    bytes: fetch.bytes,
                    sha256: fetch.sha256,
                    content_type: fetch.content_type,
                    format: fetch.format,
                    fetched_at: fetch.at,
                })];
                if !supported {
                    events.push(failed(UNSUPPORTED_FORMAT.to_owned(), fetch.at));
                }
                Ok(events)
            }
            CallCommand::RecordFetchFailure(failure) => {
                self.require(Stage::Fetching, CallError::NoFetchInProgress)?;
                let attempt = self.fetch_attempts;
                let again = failure.retryable && attempt < failure.policy.max_attempts;
                let next_attempt_at = again.then(|| {
                    let delay = failure
                        .policy
                        .delay_ms(attempt, failure.retry_after_ms, 0.0);
                    failure.at + chrono::Duration::milliseconds(delay as i64)
                });
                let mut events = vec![CallEvent::RecordingFetchFailed(RecordingFetchFailed {
                    attempt,
                    error: failure.error.clone(),
                    retryable: failure.retryable,
                    next_attempt_at,
                    failed_at: failure.at,
                })];
                if !again {
                    events.push(failed(failure.error, failure.at));
                }
                Ok(events)
            }
            CallCommand::RecordAnalysis {
                analytics,
                transcribe,
                at,
            } => {
                self.require(Stage::Fetched, CallError::NotFetched)?;
                if let Some(figure) = analytics.non_finite_figure() {
                    return Err(CallError::NonFiniteAnalytics {
                        figure: figure.to_owned(),
                    });
                }
                let mut events = vec![CallEvent::RecordingAnalyzed(RecordingAnalyzed {
                    analytics: analytics.clone(),
                    analyzed_at: at,
                    transcription_due: transcribe,
                })];
                if !transcribe {
                    events.push(completed(Some(&analytics), false, at));
                }
                Ok(events)
            }
            CallCommand::StartTranscription {
                engine,
                max_attempts,
                at,
            } => {
                // From `Transcribing` too: a worker that died mid-transcription leaves the
                // call there, and the next one starts a new attempt.
                if !matches!(self.stage, Stage::Analyzed | Stage::Transcribing) {
                    return Err(CallError::NotAwaitingTranscript);
                }
                // Attempts that never reported (the process died, e.g. out of memory on this
                // recording) count too: the call must not be retried for ever.
                if self.transcription_attempts >= max_attempts {
                    return Ok(vec![
                        CallEvent::TranscriptionFailed(TranscriptionFailed {
                            attempt: self.transcription_attempts,
                            error: format!(
                                "transcription did not finish in {} attempts",
                                self.transcription_attempts
                            ),
                            retryable: false,
                            next_attempt_at: None,
                            failed_at: at,
                        }),
                        completed(self.analytics.as_ref(), false, at),
                    ]);
                }
                Ok(vec![CallEvent::TranscriptionStarted(
                    TranscriptionStarted {
                        attempt: self.transcription_attempts + 1,
                        engine,
                        started_at: at,
                    },
                )])
            }
            CallCommand::InterruptTranscription { reason, at } => {
                self.require(Stage::Transcribing, CallError::NoTranscriptionInProgress)?;
                Ok(vec![CallEvent::TranscriptionInterrupted(
                    TranscriptionInterrupted {
                        attempt: self.transcription_attempts,
                        reason,
                        interrupted_at: at,
                    },
                )])
            }
            CallCommand::RecordTranscript(done) => {
                self.require(Stage::Transcribing, CallError::NoTranscriptionInProgress)?;
                let word_count = done
                    .segments
                    .iter()
                    .map(|s| s.text.split_whitespace().count() as u64)
                    .sum();
                let talk_ms = self
                    .analytics
                    .as_ref()
                    .and_then(|a| Some((a.agent_talk_ms, a.customer_talk_ms?)));
                let figures = TranscriptFigures::measure(
                    done.segments.iter().map(|s| (s.channel, s.text.as_str())),
                    talk_ms,
                );
                Ok(vec![
                    CallEvent::TranscriptProduced(TranscriptProduced {
                        attempt: self.transcription_attempts,
                        engine: done.engine,
                        model: done.model,
                        language: done.language,
                        segment_count: done.segments.len() as u64,
                        word_count,
                        segments: Personal::Clear(done.segments),
                        sealed: None,
                        produced_at: done.at,
                        figures,
                    }),
                    completed(self.analytics.as_ref(), true, done.at),
                ])
            }
            CallCommand::RecordTranscriptionFailure(failure) => {
                self.require(Stage::Transcribing, CallError::NoTranscriptionInProgress)?;
                let attempt = self.transcription_attempts;
                let again = failure.retryable && attempt < failure.policy.max_attempts;
                let next_attempt_at = again.then(|| {
                    let delay = failure.policy.delay_ms(attempt, None, 0.0);
                    failure.at + chrono::Duration::milliseconds(delay as i64)
                });
                let mut events = vec![CallEvent::TranscriptionFailed(TranscriptionFailed {
                    attempt,
                    error: failure.error,
                    retryable: failure.retryable,
                    next_attempt_at,
                    failed_at: failure.at,
                })];
                // The analytics stand without a transcript: the call completes and says
                // `transcription_available: false` rather than failing outright.
                if !again {
                    events.push(completed(self.analytics.as_ref(), false, failure.at));
                }
                Ok(events)
            }
            CallCommand::FailProcessing { reason, at } => Ok(vec![failed(reason, at)]),
            other => unreachable!("not a processing command: {other:?}"),
        }
    }

    fn require_pending_callback(&self) -> Result<(), CallError> {
        if self.callback.pending {
            Ok(())
        } else {
            Err(CallError::CallbackNotPending)
        }
    }

    fn require(&self, stage: Stage, otherwise: CallError) -> Result<(), CallError> {
        if self.stage == stage {
            Ok(())
        } else {
            Err(otherwise)
        }
    }

    fn accept(&self, cmd: AcceptCall) -> Result<CallEvent, CallError> {
        let Some(known) = &self.accepted else {
            return Ok(CallEvent::CallAccepted(CallAccepted {
                partner_id: cmd.partner_id,
                tenant_id: cmd.tenant_id,
                sub_tenant_id: cmd.sub_tenant_id,
                batch_id: cmd.batch_id,
                accepted_at: cmd.received_at,
                call: Box::new(cmd.call),
                sealed: None,
            }));
        };
        if known.partner_id != cmd.partner_id {
            return Err(CallError::OtherPartnersCall {
                owner: known.partner_id.to_string(),
                requester: cmd.partner_id.to_string(),
            });
        }
        let payload_differs = known.call != cmd.call
            || known.tenant_id != cmd.tenant_id
            || known.sub_tenant_id != cmd.sub_tenant_id;
        Ok(CallEvent::DuplicateSubmissionReceived(
            DuplicateSubmissionReceived {
                batch_id: cmd.batch_id,
                tenant_id: cmd.tenant_id,
                sub_tenant_id: cmd.sub_tenant_id,
                received_at: cmd.received_at,
                payload_differs,
            },
        ))
    }
}
