//! One transcription worker: claim an analysed call, transcribe its recording, record the
//! transcript (or the failure) on the call, repeat. Workers of this pool never take fetch jobs
//! and the other way round, so a slow model cannot hold up downloads and analysis.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use callingest_domain::call::{
    Call, CallCommand, RetryPolicy, Stage, TranscriptDone, TranscriptSegment, TranscriptionFailure,
};
use callingest_transcribe::{Stop, TranscribeError, Transcriber};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::spool::Spool;
use crate::jobs::{GiveUp, Job, JobError, Recorded, Step};
use crate::processing::fetch::Fetcher;

pub struct TranscriptionWorker {
    pool: PgPool,
    engine: Arc<dyn Transcriber>,
    fetcher: Arc<Fetcher>,
    spool: Arc<Spool>,
    retry: RetryPolicy,
    max_duration: Duration,
}

/// What the step needs from the claimed row.
struct ClaimedJob {
    recording_url: String,
    /// The spool key of the analysed recording.
    recording_sha256: Option<String>,
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
            pool,
            engine,
            fetcher,
            spool,
            retry: settings.retry,
            max_duration: settings.max_duration,
        }
    }
}

#[async_trait::async_trait]
impl Step for TranscriptionWorker {
    /// Takes the job to a transcript, a failure, or its next retry.
    async fn run(&self, job: &Job) -> Result<(), JobError> {
        let now = chrono::Utc::now;
        let (recording_url, recording_sha256) = sqlx::query_as(
            "select recording_url, recording_sha256 from processing_job where call_aggregate_id = $1",
        )
        .bind(job.call_aggregate_id())
        .fetch_one(&self.pool)
        .await?;
        let claimed = ClaimedJob {
            recording_url,
            recording_sha256,
        };
        let engine = &self.engine;
        let start = CallCommand::StartTranscription {
            engine: engine.engine().to_owned(),
            max_attempts: self.retry.max_attempts,
            at: now(),
        };
        match job.record(start).await? {
            Recorded::Refused(reason) => {
                tracing::info!(%reason, "transcription skipped");
                return Ok(());
            }
            // Every attempt was used up (earlier ones never reported back): the call completed.
            finished if finished.finished_the_call() => {
                tracing::warn!("transcription attempts exhausted");
                self.forget_recording(&claimed);
                return Ok(());
            }
            Recorded::Applied(_) => {}
        }
        let erased = || crate::erasure::call_erased(&self.pool, job.call_aggregate_id());
        if erased().await? {
            return self.refuse_erased(job, &claimed).await;
        }
        let outcome = self
            .transcribe(engine.as_ref(), &claimed, job.cancel().stop())
            .await;
        let command = match outcome {
            // Erased while it was being transcribed: what was said is not written down. (An
            // erasure just after this question leaves nothing readable either: the text is
            // sealed under a key that is gone, or not stored when the key was gone first.)
            Ok(_) if erased().await? => return self.refuse_erased(job, &claimed).await,
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
            Err(TranscribeError::Stopped) => return Err(JobError::Cancelled),
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
        if job.record(command).await?.finished_the_call() {
            self.forget_recording(&claimed);
        }
        Ok(())
    }

    fn give_up(&self, call: &Call, why: GiveUp, at: DateTime<Utc>) -> Option<CallCommand> {
        give_up_transcription(call.stage(), why, self.retry, at)
    }
}

/// A drained transcription gives its attempt back; one that ran too long is a failed attempt
/// (retried while attempts remain, then the call completes without a transcript).
fn give_up_transcription(
    stage: Stage,
    why: GiveUp,
    retry: RetryPolicy,
    at: DateTime<Utc>,
) -> Option<CallCommand> {
    if stage != Stage::Transcribing {
        return None;
    }
    Some(match why {
        GiveUp::Drained => CallCommand::InterruptTranscription {
            reason: "the worker shut down before the transcription finished".to_owned(),
            at,
        },
        GiveUp::TimedOut { limit } => {
            CallCommand::RecordTranscriptionFailure(TranscriptionFailure {
                error: format!("transcription did not finish within {} s", limit.as_secs()),
                retryable: true,
                policy: retry,
                at,
            })
        }
    })
}

/// Why an erased call has no transcript.
const ERASED: &str = "not transcribed: the call's personal data was erased";

impl TranscriptionWorker {
    /// An erased call is not transcribed: the attempt fails for good (the call completes with
    /// its analytics) and the spooled recording goes.
    async fn refuse_erased(&self, job: &Job, claimed: &ClaimedJob) -> Result<(), JobError> {
        tracing::info!("the call's personal data was erased: not transcribed");
        let failure = self.failure(ERASED.to_owned(), false);
        job.record(CallCommand::RecordTranscriptionFailure(failure))
            .await?;
        self.forget_recording(claimed);
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
        stop: &Stop,
    ) -> Result<callingest_transcribe::Transcript, TranscribeError> {
        let recording = self.recording(job, stop).await?;
        let header = read_header(recording.path())
            .map_err(|e| TranscribeError::Transient(format!("reading the recording: {e}")))?;
        let format = callingest_audio::identify(&header).ok_or_else(|| {
            TranscribeError::Audio("the recording is no longer a supported format".into())
        })?;
        // Streamed from the file (decoding, resampling, speech detection and the model in
        // pieces), which must stay until the transcript is made.
        let transcript = engine
            .transcribe_recording(recording.path(), format, self.max_duration, stop)
            .await;
        drop(recording);
        transcript
    }

    /// The spooled file, or the recording downloaded again (same SSRF rules as the first time).
    async fn recording(&self, job: &ClaimedJob, stop: &Stop) -> Result<Recording, TranscribeError> {
        if let Some(path) = job
            .recording_sha256
            .as_deref()
            .and_then(|s| self.spool.get(s))
        {
            return Ok(Recording::Spooled(path));
        }
        let fetched = tokio::select! {
            fetched = self.fetcher.fetch(&job.recording_url) => fetched,
            () = callingest_transcribe::stop_requested(stop) => return Err(TranscribeError::Stopped),
        };
        let fetched = fetched.map_err(|err| {
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
        channel: s.channel,
        start_ms: s.start_ms,
        end_ms: s.end_ms,
        text: s.text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        backoff_base_ms: 30_000,
    };

    #[test]
    fn a_drained_transcription_gives_its_attempt_back_and_a_hung_one_fails_it() {
        let now = Utc::now();
        assert!(matches!(
            give_up_transcription(Stage::Transcribing, GiveUp::Drained, RETRY, now),
            Some(CallCommand::InterruptTranscription { .. })
        ));
        let limit = GiveUp::TimedOut {
            limit: Duration::from_secs(3_600),
        };
        match give_up_transcription(Stage::Transcribing, limit, RETRY, now) {
            Some(CallCommand::RecordTranscriptionFailure(f)) => {
                assert_eq!(f.error, "transcription did not finish within 3600 s");
                assert!(f.retryable);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            give_up_transcription(Stage::Completed, limit, RETRY, now),
            None
        );
    }
}
