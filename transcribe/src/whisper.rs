//! Whisper in-process, through whisper.cpp (`whisper-rs`).
//!
//! The ggml model is loaded once and shared; every call gets its own decoding state (states
//! hold the KV caches and are not shareable), on a blocking thread so the async runtime keeps
//! serving while the CPU works.
//!
//! Only the speech spans found by [`crate::speech_spans`] are decoded, each on its own:
//! Whisper makes up text for silence, and a stereo side is silent while the other talks.
//! A span shorter than Whisper's 30 s window is encoded with a proportionally shorter audio
//! context, which is most of the speed on conversational audio; a longer one is cut at a pause
//! into pieces of at most 30 s. A recording is streamed ([`Transcriber::transcribe_recording`]):
//! each piece is decoded as soon as the detector has closed it, both channels from one pass
//! over the file, so memory holds one piece per channel whatever the length of the call.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use callingest_audio::RecordingFormat;

use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

use crate::pcm::stream_speech;
use crate::speech::SpeechPieces;
use crate::{
    ChannelAudio, Segment, Speaker, Stop, TranscribeError, Transcriber, Transcript, SAMPLE_RATE,
};

const LANGUAGE: &str = "en";
/// Whisper's encoder produces 50 positions per second of audio (1500 for its 30 s window).
const AUDIO_CTX_PER_SECOND: f64 = 50.0;
const FULL_AUDIO_CTX: usize = 1500;
/// Trimmed contexts below this lose accuracy with tiny models more than they gain speed.
const MIN_AUDIO_CTX: usize = 256;
/// Spans are zero-padded to this length: whisper.cpp rejects inputs under 100 ms and decodes
/// very short ones poorly.
const MIN_SPAN_SAMPLES: usize = SAMPLE_RATE as usize;
/// Longest piece of speech decoded at once: Whisper's 30 s window. A longer span (a monologue)
/// is cut at a pause into pieces that each fit one encoder pass, and memory stays bounded.
const MAX_PIECE_SAMPLES: usize = 30 * SAMPLE_RATE as usize;
/// Segments Whisper itself rates this likely to be non-speech are dropped.
const MAX_NO_SPEECH_PROB: f32 = 0.8;

/// Whisper (whisper.cpp) engine. Cheap to share: clone the `Arc` it sits in.
pub struct WhisperEngine {
    ctx: Arc<WhisperContext>,
    model: String,
    settings: Settings,
}

/// How each piece is decoded.
#[derive(Debug, Clone, Copy)]
struct Settings {
    threads: usize,
    trim_audio_ctx: bool,
    temperature_fallback: bool,
}

impl WhisperEngine {
    /// Loads a ggml model file. `threads` is the number of CPU threads a piece of speech is
    /// decoded with; the pieces of a call (both channels) are decoded one after another, so a
    /// call uses at most `threads`.
    ///
    /// A missing or unreadable model is permanent: retrying will not make it appear.
    pub fn load(model_path: &Path, threads: usize) -> Result<Self, TranscribeError> {
        // whisper.cpp and ggml print model details to stderr; route them into `tracing`.
        whisper_rs::install_logging_hooks();
        if !model_path.is_file() {
            return Err(TranscribeError::Permanent(format!(
                "whisper model {} not found",
                model_path.display()
            )));
        }
        let ctx = WhisperContext::new_with_params(model_path, WhisperContextParameters::default())
            .map_err(|e| {
                TranscribeError::Permanent(format!(
                    "loading whisper model {}: {e}",
                    model_path.display()
                ))
            })?;
        let model = model_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "whisper".to_string());
        Ok(Self {
            ctx: Arc::new(ctx),
            model,
            settings: Settings {
                threads: threads.max(1),
                trim_audio_ctx: true,
                temperature_fallback: true,
            },
        })
    }

    /// Whether short spans are encoded with a trimmed audio context (the default, for speed).
    /// Off, every span is encoded as a full 30 s window, as reference Whisper does.
    pub fn with_trimmed_audio_ctx(mut self, trim: bool) -> Self {
        self.settings.trim_audio_ctx = trim;
        self
    }

    /// Whether a piece whose greedy decoding looks unreliable (low average log-probability, a
    /// repetition loop) is decoded again at rising temperatures, as reference Whisper does (the
    /// default). Off, the greedy result stands: never a second decoding.
    pub fn with_temperature_fallback(mut self, fallback: bool) -> Self {
        self.settings.temperature_fallback = fallback;
        self
    }
}

#[async_trait::async_trait]
impl Transcriber for WhisperEngine {
    fn engine(&self) -> &'static str {
        "whisper"
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn transcribe_until(
        &self,
        audio: Vec<ChannelAudio>,
        stop: &Stop,
    ) -> Result<Transcript, TranscribeError> {
        let mut decoder = self.piece_decoder(stop);
        let segments = run_blocking(move || {
            for channel in &audio {
                let mut pieces = SpeechPieces::new(MAX_PIECE_SAMPLES);
                let mut on_piece =
                    |start: usize, piece: &[f32]| decoder.decode(channel.speaker, start, piece);
                pieces.push(&channel.samples, &mut on_piece)?;
                pieces.finish(&mut on_piece)?;
            }
            Ok(decoder.segments)
        })
        .await?;
        Ok(transcript(segments))
    }

    async fn transcribe_recording(
        &self,
        path: &Path,
        format: RecordingFormat,
        max_duration: Duration,
        stop: &Stop,
    ) -> Result<Transcript, TranscribeError> {
        let mut decoder = self.piece_decoder(stop);
        let (path, stop) = (path.to_path_buf(), stop.clone());
        let segments = run_blocking(move || {
            stream_speech(
                &path,
                format,
                Some(max_duration),
                &stop,
                MAX_PIECE_SAMPLES,
                &mut |speaker, start, piece| decoder.decode(speaker, start, piece),
            )?;
            Ok(decoder.segments)
        })
        .await?;
        Ok(transcript(segments))
    }
}

impl WhisperEngine {
    fn piece_decoder(&self, stop: &Stop) -> PieceDecoder {
        PieceDecoder {
            ctx: Arc::clone(&self.ctx),
            settings: self.settings,
            stop: stop.clone(),
            state: None,
            padded: Vec::new(),
            segments: Vec::new(),
        }
    }
}

/// Runs whisper work on a blocking thread, so the async runtime keeps serving meanwhile.
async fn run_blocking(
    work: impl FnOnce() -> Result<Vec<Segment>, TranscribeError> + Send + 'static,
) -> Result<Vec<Segment>, TranscribeError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        // A panic inside whisper.cpp on this audio would happen again.
        TranscribeError::Permanent(format!("whisper worker failed: {e}"))
    })?
}

fn transcript(mut segments: Vec<Segment>) -> Transcript {
    // The channels' pieces arrive interleaved: on equal start times the agent comes first; the
    // stable sort keeps each channel's own order.
    segments.sort_by_key(|s| (s.start_ms, s.channel != Speaker::Agent));
    Transcript {
        language: LANGUAGE.to_string(),
        segments,
    }
}

/// Decodes the pieces of speech of one call, one after another, with one decoding state (the
/// KV caches; created with the first piece, so a call without speech needs none).
struct PieceDecoder {
    ctx: Arc<WhisperContext>,
    settings: Settings,
    stop: Stop,
    state: Option<WhisperState>,
    padded: Vec<f32>,
    segments: Vec<Segment>,
}

impl PieceDecoder {
    /// Transcribes one piece of `speaker`'s channel that starts `start` samples into the
    /// recording.
    fn decode(
        &mut self,
        speaker: Speaker,
        start: usize,
        piece: &[f32],
    ) -> Result<(), TranscribeError> {
        if self.stop.requested() {
            return Err(TranscribeError::Stopped);
        }
        if self.state.is_none() {
            let state = self
                .ctx
                .create_state()
                .map_err(|e| TranscribeError::Transient(format!("creating whisper state: {e}")))?;
            self.state = Some(state);
        }
        let state = self.state.as_mut().expect("created above");
        let audio = pad_span(piece, &mut self.padded);
        decode_span(state, self.settings, audio, &self.stop)?;
        collect_segments(
            state,
            speaker,
            &(start..start + piece.len()),
            &mut self.segments,
        )
    }
}

fn pad_span<'a>(span: &'a [f32], padded: &'a mut Vec<f32>) -> &'a [f32] {
    if span.len() >= MIN_SPAN_SAMPLES {
        return span;
    }
    padded.clear();
    padded.extend_from_slice(span);
    padded.resize(MIN_SPAN_SAMPLES, 0.0);
    padded
}

fn decode_span(
    state: &mut WhisperState,
    settings: Settings,
    audio: &[f32],
    stop: &Stop,
) -> Result<(), TranscribeError> {
    let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
    // whisper.cpp asks this between steps of its encoder and decoder graphs, so a stop request
    // ends the decoding within milliseconds. (The raw callback rather than whisper-rs 0.16's
    // `set_abort_callback_safe`, whose trampoline reads its boxed closure back as the wrong
    // type.)
    // SAFETY: the user data points at the `AtomicBool` inside `stop`, which the caller keeps
    // alive for the whole of `state.full` below; the callback only loads it.
    unsafe {
        params.set_abort_callback(Some(stop_requested));
        params.set_abort_callback_user_data(
            stop.as_atomic() as *const AtomicBool as *mut std::ffi::c_void
        );
    }
    params.set_n_threads(settings.threads as i32);
    if !settings.temperature_fallback {
        params.set_temperature_inc(0.0);
    }
    params.set_language(Some(LANGUAGE));
    params.set_translate(false);
    // Each span stands alone: text from an earlier span must not prompt (or, after a
    // mis-hearing, derail) the next one.
    params.set_no_context(true);
    params.set_no_timestamps(false);
    params.set_single_segment(false);
    // "[MUSIC]", "(laughs)" and the like are not words anyone said.
    params.set_suppress_nst(true);
    params.set_print_special(false);
    params.set_print_progress(false);
    params.set_print_realtime(false);
    params.set_print_timestamps(false);
    if settings.trim_audio_ctx {
        params.set_audio_ctx(audio_ctx_for(audio.len()) as i32);
    }
    state.full(params, audio).map_err(|e| {
        if stop.requested() {
            TranscribeError::Stopped
        } else {
            TranscribeError::Transient(format!("whisper decoding failed: {e}"))
        }
    })
}

/// whisper.cpp's abort callback: whether the [`Stop`] behind `data` was requested.
unsafe extern "C" fn stop_requested(data: *mut std::ffi::c_void) -> bool {
    // SAFETY: `data` is the `AtomicBool` of a live `Stop` (see `decode_span`).
    let flag = unsafe { &*(data as *const AtomicBool) };
    flag.load(Ordering::Acquire)
}

/// Encoder positions needed to cover `samples`, with a margin; 0 (whisper.cpp's default, the
/// full window) once the piece fills a 30 s window anyway.
fn audio_ctx_for(samples: usize) -> usize {
    let seconds = samples as f64 / f64::from(SAMPLE_RATE);
    let needed = (seconds * AUDIO_CTX_PER_SECOND).ceil() as usize + 32;
    if needed >= FULL_AUDIO_CTX {
        0
    } else {
        needed.max(MIN_AUDIO_CTX)
    }
}

fn collect_segments(
    state: &WhisperState,
    speaker: Speaker,
    span: &Range<usize>,
    out: &mut Vec<Segment>,
) -> Result<(), TranscribeError> {
    let span_start_ms = span.start as u64 * 1000 / u64::from(SAMPLE_RATE);
    let span_end_ms = span.end as u64 * 1000 / u64::from(SAMPLE_RATE);
    for seg in state.as_iter() {
        let text = seg
            .to_str_lossy()
            .map_err(|e| TranscribeError::Transient(format!("reading whisper segment: {e}")))?
            .trim()
            .to_string();
        if text.is_empty() || seg.no_speech_probability() > MAX_NO_SPEECH_PROB {
            tracing::debug!(
                text,
                no_speech = seg.no_speech_probability(),
                "whisper segment dropped"
            );
            continue;
        }
        // whisper.cpp timestamps are in centiseconds from the start of the span; with a
        // trimmed context they can overshoot the span, so clamp.
        let start_ms = (span_start_ms + seg.start_timestamp().max(0) as u64 * 10).min(span_end_ms);
        let end_ms =
            (span_start_ms + seg.end_timestamp().max(0) as u64 * 10).clamp(start_ms, span_end_ms);
        out.push(Segment {
            channel: speaker,
            start_ms,
            end_ms,
            text,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_ctx_covers_the_span_and_falls_back_to_the_full_window() {
        assert_eq!(audio_ctx_for(16_000), MIN_AUDIO_CTX);
        assert_eq!(audio_ctx_for(16_000 * 10), 532);
        assert_eq!(audio_ctx_for(16_000 * 30), 0);
        assert_eq!(audio_ctx_for(16_000 * 90), 0);
    }
}
