//! One processing worker: claim a job, run it to its next recorded step, repeat.

use std::sync::Arc;
use std::time::Duration;

use callingest_audio::RecordingFormat;
use callingest_domain::call::{
    AudioAnalytics, Call, CallCommand, FetchFailure, FetchSuccess, RetryPolicy,
};
use sqlx::PgPool;
use tracing::Instrument;

use super::fetch::{FetchError, FetchedRecording, Fetcher};
use super::job::{claim_job, ClaimedJob};
use super::recorded::{record_step, Recorded};
use crate::event_store::{self, Store};
use crate::queue::{JobOutcome, PROCESSING_JOBS};
use crate::transcription::spool::Spool;
use callingest_projections::notifications::Wakeup;

/// `CALLINGEST_MAX_RECORDING_MINUTES`' default: 600 minutes.
pub const DEFAULT_MAX_RECORDING: Duration = Duration::from_secs(600 * 60);

pub struct Worker {
    pool: PgPool,
    calls: Store<Call>,
    fetcher: Arc<Fetcher>,
    retry: RetryPolicy,
    lease: Duration,
    owner: String,
    /// Set when a transcription engine is configured: analysed recordings are left here for
    /// the transcription pool, and calls wait for their transcript before completing.
    handover: Option<Arc<Spool>>,
    /// Longest decoded audio analysed; a longer recording fails the call for good.
    max_recording: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("could not record the outcome of call {call}")]
    Record {
        call: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Worker {
    pub fn new(
        pool: PgPool,
        fetcher: Arc<Fetcher>,
        retry: RetryPolicy,
        lease: Duration,
        owner: String,
    ) -> Self {
        Self {
            calls: event_store::store(pool.clone()),
            pool,
            fetcher,
            retry,
            lease,
            owner,
            handover: None,
            max_recording: DEFAULT_MAX_RECORDING,
        }
    }

    /// Recordings whose decoded audio runs longer than `limit` fail instead of being analysed
    /// to the end (default [`DEFAULT_MAX_RECORDING`]).
    pub fn with_max_recording(mut self, limit: Duration) -> Self {
        self.max_recording = limit;
        self
    }

    /// Analysed calls go on to transcription, their recordings kept in `spool`.
    pub fn handing_over_to(mut self, spool: Arc<Spool>) -> Self {
        self.handover = Some(spool);
        self
    }

    /// Runs until the task is dropped. Dropping it mid-job is safe: the lease expires and
    /// another worker retries the job.
    pub async fn run(self, wakeup: Wakeup) {
        PROCESSING_JOBS
            .run(&self.pool, wakeup, || self.try_execute_job())
            .await;
    }

    /// Claims one job and takes it through fetch and analysis (or to its next retry).
    pub async fn try_execute_job(&self) -> Result<JobOutcome, WorkerError> {
        let Some(job) = claim_job(&PROCESSING_JOBS, &self.pool, &self.owner, self.lease).await?
        else {
            return Ok(JobOutcome::EmptyQueue);
        };
        let span = tracing::info_span!("job", call = %job.call_aggregate_id);
        self.process(&job).instrument(span).await?;
        Ok(JobOutcome::Processed)
    }

    async fn process(&self, job: &ClaimedJob) -> Result<(), WorkerError> {
        let now = chrono::Utc::now;
        if let Recorded::Refused(reason) = self
            .record(job, CallCommand::StartFetch { at: now() })
            .await?
        {
            // Finished meanwhile: the projection is about to remove the job.
            tracing::info!(%reason, "job skipped");
            return Ok(());
        }
        let recording = match self.fetcher.fetch(&job.recording_url).await {
            Ok(recording) => recording,
            Err(err) => {
                tracing::info!(error = %err, retryable = err.is_retryable(), "recording fetch failed");
                let failure = fetch_failure(&err, self.retry);
                self.record(job, CallCommand::RecordFetchFailure(failure))
                    .await?;
                return Ok(());
            }
        };
        let format = callingest_audio::identify(&recording.header);
        let fetched = FetchSuccess {
            bytes: recording.bytes,
            sha256: recording.sha256.clone(),
            content_type: recording.content_type.clone(),
            format: format.map(|f| f.as_str().to_owned()),
            at: now(),
        };
        if let Recorded::Refused(_) = self
            .record(job, CallCommand::RecordFetchSuccess(fetched))
            .await?
        {
            return Ok(());
        }
        // Without a known format the call has just failed ("unsupported recording format").
        let Some(format) = format else {
            return Ok(());
        };
        let (analysis, recording) = analyse(recording, format, self.max_recording).await;
        let command = match analysis {
            Ok(analytics) => {
                if let Some(spool) = &self.handover {
                    // Kept before the hand-over is recorded, so the transcription worker finds
                    // it; if keeping fails, that worker downloads the recording again.
                    let sha256 = recording.sha256.clone();
                    let spool = spool.clone();
                    let kept =
                        tokio::task::spawn_blocking(move || spool.keep(recording.file, &sha256))
                            .await;
                    if !matches!(kept, Ok(Ok(()))) {
                        tracing::warn!("could not keep the recording for transcription");
                    }
                }
                CallCommand::RecordAnalysis {
                    analytics,
                    transcribe: self.handover.is_some(),
                    at: now(),
                }
            }
            Err(reason) => CallCommand::FailProcessing { reason, at: now() },
        };
        self.record(job, command).await?;
        Ok(())
    }

    async fn record(
        &self,
        job: &ClaimedJob,
        command: CallCommand,
    ) -> Result<Recorded, WorkerError> {
        record_step(&self.calls, &job.call_aggregate_id, command, &self.owner)
            .await
            .map_err(|source| WorkerError::Record {
                call: job.call_aggregate_id.clone(),
                source: Box::new(source),
            })
    }
}

fn fetch_failure(err: &FetchError, retry: RetryPolicy) -> FetchFailure {
    FetchFailure {
        error: err.to_string(),
        retryable: err.is_retryable(),
        retry_after_ms: err.retry_after().map(|d| d.as_millis() as u64),
        policy: retry,
        at: chrono::Utc::now(),
    }
}

/// Decodes and measures the recording on the blocking pool (it is CPU-bound), at most
/// `max_duration` of decoded audio, and gives the recording back (its temporary file is deleted
/// when it is dropped). The error is a reason a partner understands.
async fn analyse(
    recording: FetchedRecording,
    format: RecordingFormat,
    max_duration: Duration,
) -> (Result<AudioAnalytics, String>, FetchedRecording) {
    let path = recording.file.path().to_path_buf();
    let outcome = tokio::task::spawn_blocking(move || {
        callingest_audio::analyze_up_to(&path, format, max_duration)
    })
    .await;
    (analytics(outcome, format), recording)
}

/// The figures to record, or the reason the call fails. Figures the call would refuse (not
/// finite numbers; the audio crate never measures such, this is the domain's own rule checked
/// before asking) fail the call with a reason rather than leaving it unrecorded.
fn analytics(
    outcome: Result<
        Result<callingest_audio::Analysis, callingest_audio::AnalysisError>,
        tokio::task::JoinError,
    >,
    format: RecordingFormat,
) -> Result<AudioAnalytics, String> {
    use callingest_audio::AnalysisError;
    match outcome {
        Ok(Ok(a)) => {
            let analytics = AudioAnalytics {
                duration_ms: a.duration_ms,
                sample_rate: a.sample_rate,
                channels: a.channels,
                codec: a.codec,
                agent_talk_ms: a.agent_talk_ms,
                customer_talk_ms: a.customer_talk_ms,
                silence_ratio: a.silence_ratio,
                longest_silence_ms: a.longest_silence_ms,
                overlap_ms: a.overlap_ms,
                mean_dbfs: Some(a.mean_dbfs),
                peak_dbfs: Some(a.peak_dbfs),
                clipping_ratio: a.clipping_ratio,
            };
            match analytics.non_finite_figure() {
                None => Ok(analytics),
                Some(figure) => {
                    tracing::error!(figure, "analysis measured a figure that is not finite");
                    Err(format!(
                        "recording holds invalid samples ({figure} could not be measured)"
                    ))
                }
            }
        }
        // Reasons that stand on their own: "recording holds invalid samples (…)",
        // "recording longer than 600 minutes".
        Ok(Err(err @ (AnalysisError::InvalidSamples { .. } | AnalysisError::TooLong { .. }))) => {
            tracing::info!(error = %err, "recording refused");
            Err(err.to_string())
        }
        Ok(Err(err)) => {
            tracing::info!(error = %err, "recording could not be analysed");
            Err(format!(
                "recording could not be decoded as {}: {err}",
                format.as_str()
            ))
        }
        Err(join) => {
            tracing::error!(error = %join, "analysis panicked");
            Err("recording could not be analysed".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callingest_audio::{Analysis, AnalysisError};

    fn measured(mean_dbfs: f64) -> Analysis {
        Analysis {
            duration_ms: 1_000,
            sample_rate: 8_000,
            channels: 1,
            codec: "pcm_f32le".into(),
            agent_talk_ms: 0,
            customer_talk_ms: None,
            silence_ratio: 1.0,
            longest_silence_ms: 1_000,
            overlap_ms: 0,
            mean_dbfs,
            peak_dbfs: 0.0,
            clipping_ratio: 1.0,
        }
    }

    #[test]
    fn figures_the_call_would_refuse_fail_it_with_a_reason_instead() {
        let reason =
            analytics(Ok(Ok(measured(f64::INFINITY))), RecordingFormat::Wav).expect_err("refused");
        assert_eq!(
            reason,
            "recording holds invalid samples (mean_dbfs could not be measured)"
        );
        let figures = analytics(Ok(Ok(measured(-20.0))), RecordingFormat::Wav).unwrap();
        assert_eq!(figures.mean_dbfs, Some(-20.0));
    }

    #[test]
    fn refusals_of_the_audio_crate_are_the_reason_as_they_stand() {
        let too_long = AnalysisError::TooLong {
            limit: DEFAULT_MAX_RECORDING,
        };
        assert_eq!(
            analytics(Ok(Err(too_long)), RecordingFormat::Mp3).unwrap_err(),
            "recording longer than 600 minutes"
        );
        let invalid = AnalysisError::InvalidSamples {
            invalid: 8_000,
            total: 8_000,
        };
        assert_eq!(
            analytics(Ok(Err(invalid)), RecordingFormat::Wav).unwrap_err(),
            "recording holds invalid samples (8000 of 8000 samples are NaN or infinite)"
        );
        let undecodable = AnalysisError::Undecodable("wav: no audio could be decoded".into());
        assert_eq!(
            analytics(Ok(Err(undecodable)), RecordingFormat::Wav).unwrap_err(),
            "recording could not be decoded as wav: undecodable audio: wav: no audio could be decoded"
        );
    }
}
