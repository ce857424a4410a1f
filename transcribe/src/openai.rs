//! An OpenAI-compatible transcription service over HTTP (`POST {base}/v1/audio/transcriptions`,
//! multipart, `response_format=verbose_json`), for operators who run speech-to-text on GPUs.
//!
//! Like the in-process engine, only the speech spans of each channel are sent (one request per
//! span, as 16 kHz 16-bit WAV): a silent side produces nothing, and segment times are shifted
//! by the span's start so they count from the start of the recording. Spans are found as the
//! recording streams, and each is sent as soon as it is complete.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use callingest_audio::RecordingFormat;

use serde::Deserialize;

use crate::pcm::{stream_speech, OnPiece};
use crate::speech::SpeechPieces;
use crate::{
    stop_requested, ChannelAudio, Segment, Speaker, Stop, TranscribeError, Transcriber, Transcript,
    SAMPLE_RATE,
};

/// How to reach the service. The API key is sent as a bearer token and never printed.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// Scheme, host and optional path prefix, e.g. `https://stt.internal:8000`.
    pub base_url: String,
    pub api_key: Option<String>,
    /// The `model` form field, e.g. `whisper-1` or `tiny.en`.
    pub model: String,
    /// Longest wait for one span's answer.
    pub timeout: Duration,
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .finish()
    }
}

pub struct OpenAiEngine {
    config: OpenAiConfig,
    endpoint: String,
    client: reqwest::Client,
}

impl OpenAiEngine {
    /// `http` is the application's client builder: it carries the TLS setup (crypto provider,
    /// trusted roots), which this crate leaves to the application. The engine adds its timeout
    /// and refuses redirects.
    pub fn new(
        config: OpenAiConfig,
        http: reqwest::ClientBuilder,
    ) -> Result<Self, TranscribeError> {
        let base = config.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(TranscribeError::Permanent(format!(
                "transcription URL must be http(s), got {base:?}"
            )));
        }
        let endpoint = format!("{base}/v1/audio/transcriptions");
        let client = http
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| TranscribeError::Permanent(format!("HTTP client: {e}")))?;
        Ok(Self {
            config,
            endpoint,
            client,
        })
    }

    async fn transcribe_span(
        &self,
        samples: &[f32],
    ) -> Result<VerboseTranscription, TranscribeError> {
        let file = reqwest::multipart::Part::bytes(wav_16k_mono(samples))
            .file_name("span.wav")
            .mime_str("audio/wav")
            .expect("a valid MIME type");
        let form = reqwest::multipart::Form::new()
            .part("file", file)
            .text("model", self.config.model.clone())
            .text("response_format", "verbose_json")
            .text("timestamp_granularities[]", "segment");
        let mut request = self.client.post(&self.endpoint).multipart(form);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| {
            // Connection refused, reset, timed out: the service may be back soon.
            TranscribeError::Transient(format!(
                "transcription service unreachable: {}",
                e.without_url()
            ))
        })?;
        let status = response.status();
        if !status.is_success() {
            // The answer's body is for the operator's log only: the message is recorded on the
            // call, where the partner reads it.
            let detail: String = response
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(500)
                .collect();
            tracing::warn!(%status, %detail, "transcription service refused a request");
            let message = format!("transcription service answered {status}");
            return Err(
                if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
                    TranscribeError::Transient(message)
                } else {
                    TranscribeError::Permanent(message)
                },
            );
        }
        response.json().await.map_err(|e| {
            TranscribeError::Transient(format!(
                "transcription service sent an unreadable answer: {}",
                e.without_url()
            ))
        })
    }
}

#[async_trait::async_trait]
impl Transcriber for OpenAiEngine {
    fn engine(&self) -> &'static str {
        "openai"
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    async fn transcribe_until(
        &self,
        audio: Vec<ChannelAudio>,
        stop: &Stop,
    ) -> Result<Transcript, TranscribeError> {
        self.transcribe_pieces(
            move |on_piece| {
                for channel in &audio {
                    let mut pieces = SpeechPieces::new(MAX_REQUEST_SAMPLES);
                    let mut on_piece =
                        |start: usize, piece: &[f32]| on_piece(channel.speaker, start, piece);
                    pieces.push(&channel.samples, &mut on_piece)?;
                    pieces.finish(&mut on_piece)?;
                }
                Ok(())
            },
            stop,
        )
        .await
    }

    async fn transcribe_recording(
        &self,
        path: &Path,
        format: RecordingFormat,
        max_duration: Duration,
        stop: &Stop,
    ) -> Result<Transcript, TranscribeError> {
        let (path, finding) = (path.to_path_buf(), stop.clone());
        self.transcribe_pieces(
            move |on_piece| {
                stream_speech(
                    &path,
                    format,
                    Some(max_duration),
                    &finding,
                    MAX_REQUEST_SAMPLES,
                    on_piece,
                )
            },
            stop,
        )
        .await
    }
}

impl OpenAiEngine {
    /// Runs `find` on a blocking thread (it reads every sample) and sends one request per piece
    /// it hands over, from here. At most one piece waits while another is being sent, so memory
    /// holds two pieces whatever the length of the call.
    async fn transcribe_pieces(
        &self,
        find: impl FnOnce(&mut OnPiece<'_>) -> Result<(), TranscribeError> + Send + 'static,
        stop: &Stop,
    ) -> Result<Transcript, TranscribeError> {
        let (pieces, mut found) = tokio::sync::mpsc::channel::<(Speaker, usize, Vec<f32>)>(1);
        let finder = tokio::task::spawn_blocking(move || {
            find(&mut |speaker, start, piece| {
                // Fails only once the receiving side has given up, with an error of its own.
                pieces
                    .blocking_send((speaker, start, piece.to_vec()))
                    .map_err(|_| TranscribeError::Stopped)
            })
        });
        let mut segments = Vec::new();
        let mut language = None;
        let sent = async {
            while let Some((speaker, start, piece)) = found.recv().await {
                let span = start..start + piece.len();
                // A request in flight is dropped (its connection closed) when stopped.
                let answer = tokio::select! {
                    answer = self.transcribe_span(&piece) => answer?,
                    () = stop_requested(stop) => return Err(TranscribeError::Stopped),
                };
                if language.is_none() {
                    language = answer.language.as_deref().map(language_code);
                }
                segments.extend(answer.segments(speaker, &span));
            }
            Ok(())
        }
        .await;
        // Unblocks the finder when sending stopped early.
        drop(found);
        let finished = finder
            .await
            .map_err(|e| TranscribeError::Permanent(format!("finding speech failed: {e}")))?;
        sent?;
        finished?;
        segments.sort_by_key(|s| (s.start_ms, s.channel != Speaker::Agent));
        Ok(Transcript {
            language: language.unwrap_or_else(|| "en".to_owned()),
            segments,
        })
    }
}

/// The parts of a `verbose_json` answer we use. Servers that omit `segments` but give `text`
/// are taken as one segment over the whole span.
#[derive(Debug, Deserialize)]
struct VerboseTranscription {
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    text: String,
    #[serde(default)]
    segments: Option<Vec<VerboseSegment>>,
}

#[derive(Debug, Deserialize)]
struct VerboseSegment {
    start: f64,
    end: f64,
    text: String,
}

impl VerboseTranscription {
    fn segments(self, speaker: Speaker, span: &Range<usize>) -> Vec<Segment> {
        let offset_ms = samples_to_ms(span.start);
        let span_ms = samples_to_ms(span.end) - offset_ms;
        let to_ms = |seconds: f64| ((seconds.max(0.0) * 1000.0).round() as u64).min(span_ms);
        let parts: Vec<(u64, u64, String)> = match self.segments {
            Some(segments) => segments
                .into_iter()
                .map(|s| (to_ms(s.start), to_ms(s.end), s.text))
                .collect(),
            None => vec![(0, span_ms, self.text)],
        };
        parts
            .into_iter()
            .filter_map(|(start, end, text)| {
                let text = text.trim();
                (!text.is_empty()).then(|| Segment {
                    channel: speaker,
                    start_ms: offset_ms + start,
                    end_ms: offset_ms + end.max(start),
                    text: text.to_owned(),
                })
            })
            .collect()
    }
}

/// Longest audio sent in one request: 5 minutes of 16 kHz 16-bit mono is 9.6 MB, well under
/// the 25 MB OpenAI accepts, and bounds each request's time. A longer span of speech (a long
/// monologue on a mono recording) is sent in pieces cut at pauses.
const MAX_REQUEST_SAMPLES: usize = 300 * SAMPLE_RATE as usize;

fn samples_to_ms(samples: usize) -> u64 {
    samples as u64 * 1000 / SAMPLE_RATE as u64
}

/// OpenAI answers the language's English name (`english`); others answer the ISO 639-1 code.
fn language_code(language: &str) -> String {
    let lower = language.trim().to_ascii_lowercase();
    let code = match lower.as_str() {
        "english" => "en",
        "spanish" => "es",
        "french" => "fr",
        "german" => "de",
        "italian" => "it",
        "portuguese" => "pt",
        "dutch" => "nl",
        "hindi" => "hi",
        "japanese" => "ja",
        "chinese" => "zh",
        other => other,
    };
    code.to_owned()
}

/// A RIFF/WAVE file of 16-bit PCM, 16 kHz mono.
pub fn wav_16k_mono(samples: &[f32]) -> Vec<u8> {
    callingest_audio::wav::pcm16(SAMPLE_RATE, &[samples])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_header_describes_16k_mono_pcm() {
        let wav = wav_16k_mono(&[0.0, 1.0, -1.0]);
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(wav[4..8].try_into().unwrap()), 36 + 6);
        assert_eq!(u32::from_le_bytes(wav[24..28].try_into().unwrap()), 16_000);
        assert_eq!(u32::from_le_bytes(wav[40..44].try_into().unwrap()), 6);
        assert_eq!(i16::from_le_bytes([wav[46], wav[47]]), i16::MAX);
        assert_eq!(i16::from_le_bytes([wav[48], wav[49]]), -i16::MAX);
        assert_eq!(wav.len(), 50);
    }

    #[test]
    fn segments_are_shifted_to_recording_time_and_clamped_to_their_span() {
        let answer: VerboseTranscription = serde_json::from_str(
            r#"{"language":"english","text":"Hi there. Bye.","segments":[
                {"id":0,"start":0.0,"end":1.2,"text":" Hi there."},
                {"id":1,"start":1.2,"end":9.9,"text":" Bye."},
                {"id":2,"start":2.0,"end":2.5,"text":"  "}]}"#,
        )
        .unwrap();
        // The span starts 2 s into the recording and lasts 3 s.
        let segments = answer.segments(Speaker::Customer, &(32_000..80_000));
        assert_eq!(
            segments,
            vec![
                Segment {
                    channel: Speaker::Customer,
                    start_ms: 2_000,
                    end_ms: 3_200,
                    text: "Hi there.".into()
                },
                Segment {
                    channel: Speaker::Customer,
                    start_ms: 3_200,
                    end_ms: 5_000,
                    text: "Bye.".into()
                },
            ]
        );
    }

    #[test]
    fn an_answer_without_segments_is_one_segment_over_the_span() {
        let answer: VerboseTranscription = serde_json::from_str(r#"{"text":" Hello."}"#).unwrap();
        let segments = answer.segments(Speaker::Mono, &(0..16_000));
        assert_eq!(segments.len(), 1);
        assert_eq!((segments[0].start_ms, segments[0].end_ms), (0, 1_000));
    }

    #[test]
    fn language_names_become_codes() {
        assert_eq!(language_code("English"), "en");
        assert_eq!(language_code("en"), "en");
    }

    #[test]
    fn the_api_key_is_not_in_debug_output() {
        let config = OpenAiConfig {
            base_url: "http://127.0.0.1:1".into(),
            api_key: Some("sk-secret-value".into()),
            model: "tiny.en".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(!format!("{config:?}").contains("sk-secret-value"));
    }

    #[test]
    fn only_http_urls_are_accepted() {
        let config = OpenAiConfig {
            base_url: "ftp://example".into(),
            api_key: None,
            model: "m".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(matches!(
            // Refused before the builder is used.
            OpenAiEngine::new(config, reqwest::Client::builder()),
            Err(TranscribeError::Permanent(_))
        ));
    }
}
