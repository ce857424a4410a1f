//! The fetch step: fetch a claimed call's recording, identify and analyse it, and record each
//! stage on the call (the job runner in [`crate::jobs`] claims, keeps the lease and cancels).

use std::sync::Arc;
use std::time::Duration;

use callingest_audio::{Bounds, RecordingFormat};
use callingest_domain::call::{
    AudioAnalytics, Call, CallCommand, FetchFailure, FetchSuccess, RetryPolicy, Stage,
};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::fetch::{FetchError, FetchedRecording, Fetcher};
use crate::jobs::{GiveUp, Job, JobError, Recorded, Step};
use crate::transcription::spool::Spool;

/// `CALLINGEST_MAX_RECORDING_MINUTES`' default: 600 minutes.
pub const DEFAULT_MAX_RECORDING: Duration = Duration::from_secs(600 * 60);

pub struct Worker {
    pool: PgPool,
    fetcher: Arc<Fetcher>,
    retry: RetryPolicy,
    /// Set when a transcription engine is configured: analysed recordings are left here for
    /// the transcription pool, and calls wait for their transcript before completing.
    handover: Option<Arc<Spool>>,
    /// Longest decoded audio analysed; a longer recording fails the call for good.
    max_recording: Duration,
}

impl Worker {
    pub fn new(pool: PgPool, fetcher: Arc<Fetcher>, retry: RetryPolicy) -> Self {
        Self {
            pool,
            fetcher,
            retry,
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
}

#[async_trait::async_trait]
impl Step for Worker {
    /// Takes the job through fetch and analysis (or to its next retry).
    async fn run(&self, job: &Job) -> Result<(), JobError> {
        let now = chrono::Utc::now;
        let recording_url: String = sqlx::query_scalar(
            "select recording_url from processing_job where call_aggregate_id = $1",
        )
        .bind(job.call_aggregate_id())
        .fetch_one(&self.pool)
        .await?;
        let start = CallCommand::StartFetch {
            max_attempts: self.retry.max_attempts,
            at: now(),
        };
        match job.record(start).await? {
            Recorded::Refused(reason) => {
                // Finished meanwhile: the projection is about to remove the job.
                tracing::info!(%reason, "job skipped");
                return Ok(());
            }
            // Every attempt was used up by attempts that never reported: the call failed.
            finished if finished.finished_the_call() => {
                tracing::warn!("fetch attempts exhausted");
                return Ok(());
            }
            Recorded::Applied(_) => {}
        }
        let fetched = tokio::select! {
            fetched = self.fetcher.fetch(&recording_url) => fetched,
            // Dropping the download closes its connection and deletes its temporary file.
            () = job.cancel().cancelled() => return Err(JobError::Cancelled),
        };
        let recording = match fetched {
            Ok(recording) => recording,
            Err(err) => {
                tracing::info!(error = %err, retryable = err.is_retryable(), "recording fetch failed");
                let failure = fetch_failure(&err, self.retry);
                job.record(CallCommand::RecordFetchFailure(failure)).await?;
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
        if let Recorded::Refused(_) = job.record(CallCommand::RecordFetchSuccess(fetched)).await? {
            return Ok(());
        }
        // Without a known format the call has just failed ("unsupported recording format").
        let Some(format) = format else {
            return Ok(());
        };
        let bounds = Bounds {
            max_duration: Some(self.max_recording),
            stop: job.cancel().stop().clone(),
        };
        let (analysis, recording) = analyse(recording, format, bounds).await;
        let command = match analysis {
            Ok(analytics) => {
                let transcribe = match &self.handover {
                    Some(spool) => hand_over(&self.pool, spool, recording, job).await?,
                    None => false,
                };
                CallCommand::RecordAnalysis {
                    analytics,
                    transcribe,
                    at: now(),
                }
            }
            Err(Analysis::Stopped) => return Err(JobError::Cancelled),
            Err(Analysis::Failed(reason)) => CallCommand::FailProcessing { reason, at: now() },
        };
        job.record(command).await?;
        Ok(())
    }

    fn give_up(&self, call: &Call, why: GiveUp, at: DateTime<Utc>) -> Option<CallCommand> {
        give_up_fetch(call.stage(), why, self.retry, at)
    }
}

/// Keeps the analysed recording in the spool for the transcription pool; answers whether the
/// call is to be transcribed: not once its personal data is erased (the file is then deleted
/// again). Kept before the hand-over is recorded, so the transcription worker finds it; if
/// keeping fails, that worker downloads the recording again.
async fn hand_over(
    pool: &PgPool,
    spool: &Arc<Spool>,
    recording: FetchedRecording,
    job: &Job,
) -> Result<bool, JobError> {
    let sha256 = recording.sha256.clone();
    let kept = {
        let (spool, sha256) = (spool.clone(), sha256.clone());
        tokio::task::spawn_blocking(move || spool.keep(recording.file, &sha256)).await
    };
    if !matches!(kept, Ok(Ok(()))) {
        tracing::warn!("could not keep the recording for transcription");
    }
    // Asked after the file is kept: an erasure that commits later lists this recording for
    // every spool to delete (see `erasure::call_erased`).
    if crate::erasure::call_erased(pool, job.call_aggregate_id()).await? {
        tracing::info!("the call was erased meanwhile: not kept, not transcribed");
        let spool = spool.clone();
        let _ = tokio::task::spawn_blocking(move || spool.remove(&sha256)).await;
        return Ok(false);
    }
    Ok(true)
}

/// What a fetch step given up by the runner leaves on the call: a drained attempt is given
/// back; one that ran too long is a failed attempt (retried while attempts remain) during the
/// download, and fails the call during the analysis (the same bytes would take as long again).
fn give_up_fetch(
    stage: Stage,
    why: GiveUp,
    retry: RetryPolicy,
    at: DateTime<Utc>,
) -> Option<CallCommand> {
    match (stage, why) {
        (Stage::Fetching | Stage::Fetched, GiveUp::Drained) => Some(CallCommand::InterruptFetch {
            reason: "the worker shut down before the attempt finished".to_owned(),
            at,
        }),
        (Stage::Fetching, GiveUp::TimedOut { limit }) => {
            Some(CallCommand::RecordFetchFailure(FetchFailure {
                error: format!(
                    "recording download did not finish within {} s",
                    limit.as_secs()
                ),
                retryable: true,
                retry_after_ms: None,
                policy: retry,
                at,
            }))
        }
        (Stage::Fetched, GiveUp::TimedOut { limit }) => Some(CallCommand::FailProcessing {
            reason: format!(
                "recording analysis did not finish within {} s",
                limit.as_secs()
            ),
            at,
        }),
        _ => None,
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

/// Why a recording has no analytics.
enum Analysis {
    /// A reason a partner understands.
    Failed(String),
    /// The job was cancelled meanwhile.
    Stopped,
}

/// Decodes and measures the recording on the blocking pool (it is CPU-bound), within `bounds`
/// (at most so much decoded audio; the decoder looks at the stop request before every packet),
/// and gives the recording back (its temporary file is deleted when it is dropped).
async fn analyse(
    recording: FetchedRecording,
    format: RecordingFormat,
    bounds: Bounds,
) -> (Result<AudioAnalytics, Analysis>, FetchedRecording) {
    let path = recording.file.path().to_path_buf();
    let outcome = tokio::task::spawn_blocking(move || {
        callingest_audio::analyze_within(&path, format, &bounds)
    })
    .await;
    if matches!(outcome, Ok(Err(callingest_audio::AnalysisError::Stopped))) {
        return (Err(Analysis::Stopped), recording);
    }
    (
        analytics(outcome, format).map_err(Analysis::Failed),
        recording,
    )
}

/// The figures to record, or the reason the call fails. Figures the call would refuse (not
/// finite numbers; the audio crate never measures such, this is the domain's own rule checked
/// before asking) fail the call with a reason rather than leaving it unrecorded.
fn analytics(
    outcome: Result<
        Result<AudioAnalytics, callingest_audio::AnalysisError>,
        tokio::task::JoinError,
    >,
    format: RecordingFormat,
) -> Result<AudioAnalytics, String> {
    use callingest_audio::AnalysisError;
    match outcome {
        Ok(Ok(analytics)) => match analytics.non_finite_figure() {
            None => Ok(analytics),
            Some(figure) => {
                tracing::error!(figure, "analysis measured a figure that is not finite");
                Err(format!(
                    "recording holds invalid samples ({figure} could not be measured)"
                ))
            }
        },
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
    use callingest_audio::AnalysisError;
    use std::time::Duration;

    const RETRY: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        backoff_base_ms: 10_000,
    };

    #[test]
    fn a_drained_fetch_or_analysis_gives_its_attempt_back() {
        for stage in [Stage::Fetching, Stage::Fetched] {
            let command = give_up_fetch(stage, GiveUp::Drained, RETRY, Utc::now());
            assert!(
                matches!(command, Some(CallCommand::InterruptFetch { .. })),
                "{command:?}"
            );
        }
    }

    #[test]
    fn a_download_past_the_limit_is_a_failed_attempt_and_an_analysis_fails_the_call() {
        let limit = GiveUp::TimedOut {
            limit: Duration::from_secs(900),
        };
        match give_up_fetch(Stage::Fetching, limit, RETRY, Utc::now()) {
            Some(CallCommand::RecordFetchFailure(f)) => {
                assert!(f.retryable);
                assert_eq!(f.error, "recording download did not finish within 900 s");
            }
            other => panic!("{other:?}"),
        }
        match give_up_fetch(Stage::Fetched, limit, RETRY, Utc::now()) {
            Some(CallCommand::FailProcessing { reason, .. }) => {
                assert_eq!(reason, "recording analysis did not finish within 900 s")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nothing_is_recorded_for_a_call_that_moved_on() {
        for stage in [
            Stage::Accepted,
            Stage::Analyzed,
            Stage::Completed,
            Stage::Failed,
        ] {
            assert_eq!(
                give_up_fetch(stage, GiveUp::Drained, RETRY, Utc::now()),
                None
            );
        }
    }

    fn measured(mean_dbfs: f64) -> AudioAnalytics {
        AudioAnalytics {
            duration_ms: 1_000,
            sample_rate: 8_000,
            channels: 1,
            codec: "pcm_f32le".into(),
            agent_talk_ms: 0,
            customer_talk_ms: None,
            silence_ratio: 1.0,
            longest_silence_ms: 1_000,
            overlap_ms: 0,
            mean_dbfs: Some(mean_dbfs),
            peak_dbfs: Some(0.0),
            clipping_ratio: 1.0,
            detector_version: Some(callingest_audio::DETECTOR_VERSION),
            interaction: Default::default(),
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
