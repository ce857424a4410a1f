//! One transcription worker: claim an analysed call, transcribe its recording, record the
//! transcript (or the failure) on the call, repeat. Workers of this pool never take fetch jobs
//! and the other way round, so a slow model cannot hold up downloads and analysis.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use callingest_domain::call::{
    Call, CallCommand, RetryPolicy, Speaker, TranscriptDone, TranscriptSegment,
    TranscriptionFailure,
};
use callingest_transcribe::{TranscribeError, Transcriber};
use sqlx::PgPool;
use tracing::Instrument;

use super::spool::Spool;
use crate::event_store::{self, Store};
use crate::processing::fetch::Fetcher;
use crate::processing::job::{claim_job, ClaimedJob};
use crate::processing::recorded::{record_step, Recorded};
use crate::queue::{JobOutcome, TRANSCRIPTION_JOBS};
use callingest_projections::notifications::Wakeup;

pub struct TranscriptionWorker {
    pool: PgPool,
    calls: Store<Call>,
    engine: Arc<dyn Transcriber>,
    fetcher: Arc<Fetcher>,
    spool: Arc<Spool>,
    retry: RetryPolicy,
    max_duration: Duration,
    lease: Duration,
    owner: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TranscriptionWorkerError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("could not record the transcription outcome of call {call}")]
    Record {
        call: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The recording to transcribe: kept in the spool, or downloaded again.
enum Recording {
    Spooled(PathBuf),
    Fetched(crate::processing::fetch::FetchedRecording),
}

impl Recording {
    fn path(&self) -> &std::path::Path {
        match self {
            Recording::Spooled(path) => path,
            Recording::Fetched(fetched) => fetched.file.path(),
        }
    }
}

pub struct TranscriptionWorkerSettings {
    pub retry: RetryPolicy,
    /// Longer recordings are not transcribed (memory grows with the length: 64 KB/s/channel).
    pub max_duration: Duration,
    pub lease: Duration,
    pub owner: String,
}

impl TranscriptionWorker {
    pub fn new(
        pool: PgPool,
        engine: Arc<dyn Transcriber>,
        fetcher: Arc<Fetcher>,
        spool: Arc<Spool>,
        settings: TranscriptionWorkerSettings,
    ) -> Self {
        Self {
            calls: event_store::store(pool.clone()),
            pool,
            engine,
            fetcher,
            spool,
            retry: settings.retry,
            max_duration: settings.max_duration,
            lease: settings.lease,
            owner: settings.owner,
        }
    }

    /// Runs until the task is dropped; a job dropped mid-way is retried once its lease expires.
    pub async fn run(self, wakeup: Wakeup) {
        TRANSCRIPTION_JOBS
            .run(&self.pool, wakeup, || self.try_execute_job())
            .await;
    }

    /// Claims one job and takes it to a transcript, a failure, or its next retry.
    pub async fn try_execute_job(&self) -> Result<JobOutcome, TranscriptionWorkerError> {
        let Some(job) = claim_job(&TRANSCRIPTION_JOBS, &self.pool, &self.owner, self.lease).await?
        else {
            return Ok(JobOutcome::EmptyQueue);
        };
        let span = tracing::info_span!("transcription", call = %job.call_aggregate_id);
        self.process(&job).instrument(span).await?;
        Ok(JobOutcome::Processed)
    }

    async fn process(&self, job: &ClaimedJob) -> Result<(), TranscriptionWorkerError> {
        let now = chrono::Utc::now;
        let engine = &self.engine;
        let start = CallCommand::StartTranscription {
            engine: engine.engine().to_owned(),
            max_attempts: self.retry.max_attempts,
            at: now(),
        };
        match self.record(job, start).await? {
            Recorded::Refused(reason) => {
                tracing::info!(%reason, "transcription skipped");
                return Ok(());
            }
            // Every attempt was used up (earlier ones never reported back): the call completed.
            finished if finished.finished_the_call() => {
                tracing::warn!("transcription attempts exhausted");
                self.forget_recording(job);
                return Ok(());
            }
            Recorded::Applied(_) => {}
        }
        let outcome = self.transcribe(engine.as_ref(), job).await;
        let command = match outcome {
            Ok(transcript) => {
                tracing::info!(
                    segments = transcript.segments.len(),
                    words = transcript.word_count(),
                    "transcript produced"
                );
                CallCommand::RecordTranscript(TranscriptDone {
                    engine: engine.engine().to_owned(),
                    model: engine.model().to_owned(),
                    language: transcript.language,
                    segments: transcript.segments.into_iter().map(segment).collect(),
                    at: now(),
                })
            }
            Err(err) => {
                tracing::warn!(error = %err, transient = err.is_transient(), "transcription failed");
                let message = match &err {
                    TranscribeError::Audio(detail) => {
                        format!("recording could not be decoded for transcription: {detail}")
                    }
                    other => other.to_string(),
                };
                CallCommand::RecordTranscriptionFailure(self.failure(message, err.is_transient()))
            }
        };
        // The spooled recording is kept for a retry, and only for one.
        if self.record(job, command).await?.finished_the_call() {
            self.forget_recording(job);
        }
        Ok(())
    }

    fn forget_recording(&self, job: &ClaimedJob) {
        if let Some(sha) = &job.recording_sha256 {
            self.spool.remove(sha);
        }
    }

    async fn transcribe(
        &self,
        engine: &dyn Transcriber,
        job: &ClaimedJob,
    ) -> Result<callingest_transcribe::Transcript, TranscribeError> {
        let recording = self.recording(job).await?;
        let header = read_header(recording.path())
            .map_err(|e| TranscribeError::Transient(format!("reading the recording: {e}")))?;
        let format = callingest_audio::identify(&header).ok_or_else(|| {
            TranscribeError::Audio("the recording is no longer a supported format".into())
        })?;
        let max_duration = self.max_duration;
        let channels = tokio::task::spawn_blocking(move || {
            let channels =
                callingest_transcribe::load_channels_up_to(recording.path(), format, max_duration);
            drop(recording);
            channels
        })
        .await
        .map_err(|e| TranscribeError::Permanent(format!("decoding failed: {e}")))??;
        engine.transcribe(channels).await
    }

    /// The spooled file, or the recording downloaded again (same SSRF rules as the first time).
    async fn recording(&self, job: &ClaimedJob) -> Result<Recording, TranscribeError> {
        if let Some(path) = job
            .recording_sha256
            .as_deref()
            .and_then(|s| self.spool.get(s))
        {
            return Ok(Recording::Spooled(path));
        }
        let fetched = self
            .fetcher
            .fetch(&job.recording_url)
            .await
            .map_err(|err| {
                let message = format!("recording download for transcription failed: {err}");
                if err.is_retryable() {
                    TranscribeError::Transient(message)
                } else {
                    TranscribeError::Permanent(message)
                }
            })?;
        if job.recording_sha256.as_deref() != Some(fetched.sha256.as_str()) {
            tracing::warn!(
                "the recording changed since it was analysed; transcribing it as it is now"
            );
        }
        Ok(Recording::Fetched(fetched))
    }

    fn failure(&self, error: String, retryable: bool) -> TranscriptionFailure {
        TranscriptionFailure {
            error,
            retryable,
            policy: self.retry,
            at: chrono::Utc::now(),
        }
    }

    async fn record(
        &self,
        job: &ClaimedJob,
        command: CallCommand,
    ) -> Result<Recorded, TranscriptionWorkerError> {
        record_step(&self.calls, &job.call_aggregate_id, command, &self.owner)
            .await
            .map_err(|source| TranscriptionWorkerError::Record {
                call: job.call_aggregate_id.clone(),
                source: Box::new(source),
            })
    }
}

fn read_header(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut header = Vec::with_capacity(64);
    std::fs::File::open(path)?
        .take(64)
        .read_to_end(&mut header)?;
    Ok(header)
}

fn segment(s: callingest_transcribe::Segment) -> TranscriptSegment {
    TranscriptSegment {
        channel: match s.channel {
            callingest_transcribe::Speaker::Agent => Speaker::Agent,
            callingest_transcribe::Speaker::Customer => Speaker::Customer,
            callingest_transcribe::Speaker::Mono => Speaker::Mono,
        },
        start_ms: s.start_ms,
        end_ms: s.end_ms,
        text: s.text,
    }
}
