//! Speech to text for call recordings.
//!
//! - [`load_channels`] decodes a recording (with `callingest-audio`) and resamples each side of
//!   the call to 16 kHz mono f32, the input every speech model here expects.
//! - [`Transcriber`] is the engine interface ([`Transcriber::transcribe_recording`] streams a
//!   file through it in pieces of speech, in memory that does not grow with the call); [`whisper::WhisperEngine`] (cargo feature
//!   `whisper`) runs Whisper in-process through whisper.cpp; [`openai::OpenAiEngine`] calls an
//!   OpenAI-compatible transcription service over HTTP.
//! - [`word_error_rate`] scores a transcript against known text (tests and benchmarks).
//!
//! Stereo recordings keep their sides apart (left = agent, right = customer) so every segment
//! is attributed to a speaker without diarisation.

pub mod openai;
mod pcm;
mod speech;
mod wer;
#[cfg(feature = "whisper")]
pub mod whisper;

use std::path::Path;
use std::time::Duration;

use callingest_audio::RecordingFormat;

pub use callingest_audio::Stop;
pub use pcm::{load_channels, load_channels_until, load_channels_up_to};
pub use speech::speech_spans;
pub use wer::word_error_rate;

/// Sample rate of [`ChannelAudio::samples`], in Hz (Whisper's input rate).
pub const SAMPLE_RATE: u32 = 16_000;

/// Who is talking on a channel: the domain's one `Speaker` (left = agent, right = customer,
/// mono = both mixed), so segments need no translation on their way into events.
pub use callingest_domain::call::Speaker;

/// One channel of a call, 16 kHz mono f32 in -1..1.
pub struct ChannelAudio {
    pub speaker: Speaker,
    pub samples: Vec<f32>,
}

/// A stretch of recognised speech on one channel. Times are from the start of the recording.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    pub channel: Speaker,
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: String,
}

/// What an engine heard. `segments` are sorted by `start_ms` across channels, so reading them in
/// order follows the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// ISO 639-1 code of the language transcribed, e.g. `en`.
    pub language: String,
    pub segments: Vec<Segment>,
}

impl Transcript {
    /// Segment texts in order, joined by single spaces and trimmed.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for s in &self.segments {
            let t = s.text.trim();
            if t.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(t);
        }
        out
    }

    /// Whitespace-separated words over all segments.
    pub fn word_count(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.text.split_whitespace().count() as u64)
            .sum()
    }
}

/// Why a transcription failed. The worker retries only [`TranscribeError::is_transient`] ones.
#[derive(Debug, thiserror::Error)]
pub enum TranscribeError {
    /// Permanent: the recording cannot be decoded (corrupt, unsupported codec, no audio).
    #[error("{0}")]
    Audio(String),
    /// Permanent: the same input would fail again (e.g. the model file is unusable, the engine
    /// rejected the request as invalid).
    #[error("{0}")]
    Permanent(String),
    /// Worth retrying later: resources, IO, an engine that is briefly unavailable.
    #[error("{0}")]
    Transient(String),
    /// The caller asked to stop (see [`Stop`]); says nothing about the recording.
    #[error("stopped before the transcription finished")]
    Stopped,
}

impl TranscribeError {
    pub fn is_transient(&self) -> bool {
        matches!(self, TranscribeError::Transient(_))
    }
}

/// A speech-to-text engine. Implementations are shared across calls (`Send + Sync`) and
/// load their model once.
#[async_trait::async_trait]
pub trait Transcriber: Send + Sync {
    /// Engine kind, stored with the transcript: `"whisper"` or `"openai"`.
    fn engine(&self) -> &'static str;
    /// Model identifier, e.g. `ggml-tiny.en` (file stem of the ggml file).
    fn model(&self) -> &str;
    /// Transcribes every channel; segments come back sorted by start time.
    async fn transcribe(&self, audio: Vec<ChannelAudio>) -> Result<Transcript, TranscribeError> {
        self.transcribe_until(audio, &Stop::new()).await
    }

    /// [`Transcriber::transcribe`], giving up with [`TranscribeError::Stopped`] within a
    /// second or so once `stop` is requested (a job whose lease was lost, a shutdown).
    async fn transcribe_until(
        &self,
        audio: Vec<ChannelAudio>,
        stop: &Stop,
    ) -> Result<Transcript, TranscribeError>;

    /// Decodes and transcribes the recording at `path` (of `format`, from
    /// [`callingest_audio::identify`]), refusing one longer than `max_duration` as
    /// [`TranscribeError::Permanent`] and stopping like [`Transcriber::transcribe_until`].
    ///
    /// The engines here stream it: each channel goes through decoding, resampling, speech
    /// detection and the engine in pieces of speech, so memory does not grow with the length of
    /// the call (the default, for other engines, loads whole channels first).
    async fn transcribe_recording(
        &self,
        path: &Path,
        format: RecordingFormat,
        max_duration: Duration,
        stop: &Stop,
    ) -> Result<Transcript, TranscribeError> {
        let (path, loading) = (path.to_path_buf(), stop.clone());
        let channels = tokio::task::spawn_blocking(move || {
            load_channels_until(&path, format, max_duration, &loading)
        })
        .await
        .map_err(|e| TranscribeError::Permanent(format!("decoding failed: {e}")))??;
        self.transcribe_until(channels, stop).await
    }
}

/// Resolves once `stop` is requested (looked at every 50 ms), for `select!`s around requests.
pub async fn stop_requested(stop: &Stop) {
    while !stop.requested() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(channel: Speaker, start_ms: u64, text: &str) -> Segment {
        Segment {
            channel,
            start_ms,
            end_ms: start_ms + 500,
            text: text.to_string(),
        }
    }

    #[test]
    fn transcript_text_joins_segments_with_single_spaces() {
        let t = Transcript {
            language: "en".into(),
            segments: vec![
                seg(Speaker::Agent, 0, " Hello there. "),
                seg(Speaker::Customer, 900, ""),
                seg(Speaker::Customer, 1000, "Hi, how are you?"),
            ],
        };
        assert_eq!(t.text(), "Hello there. Hi, how are you?");
        assert_eq!(t.word_count(), 6);
    }

    #[test]
    fn only_transient_errors_are_retried() {
        assert!(TranscribeError::Transient("x".into()).is_transient());
        assert!(!TranscribeError::Permanent("x".into()).is_transient());
        assert!(!TranscribeError::Audio("x".into()).is_transient());
    }

    #[test]
    fn speakers_serialise_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&Speaker::Customer).unwrap(),
            "\"customer\""
        );
        let s: Speaker = serde_json::from_str("\"agent\"").unwrap();
        assert_eq!(s, Speaker::Agent);
    }
}
