//! Whisper in-process, through whisper.cpp (`whisper-rs`).
//!
//! The ggml model is loaded once and shared; every channel of a call gets a decoding state
//! (states hold the KV caches and are not shareable), on a blocking thread so the async
//! runtime keeps serving while the CPU works.
//!
//! Only the speech spans found by [`crate::speech_spans`] are decoded: Whisper makes up text
//! for silence, and a stereo side is silent while the other talks. Short spans of a channel are
//! packed into one window ([`crate::pack`]) so a turn of a few seconds does not cost an encoder
//! pass and a decoder start of its own, and every window is encoded with an audio context
//! trimmed to its length, which is most of the speed on conversational audio.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

use crate::pack::{pack, Packing, Window};
use crate::{
    speech_spans, ChannelAudio, Segment, Speaker, Stop, TranscribeError, Transcriber, Transcript,
    SAMPLE_RATE,
};

const LANGUAGE: &str = "en";
/// Whisper's encoder produces 50 positions per second of audio (1500 for its 30 s window).
const AUDIO_CTX_PER_SECOND: f64 = 50.0;
const FULL_AUDIO_CTX: usize = 1500;
/// Trimmed contexts below this lose accuracy with tiny models more than they gain speed.
const MIN_AUDIO_CTX: usize = 256;
/// Windows are zero-padded to this length: whisper.cpp rejects inputs under 100 ms and decodes
/// very short ones poorly.
const MIN_WINDOW_SAMPLES: usize = SAMPLE_RATE as usize;
/// Segments Whisper itself rates this likely to be non-speech are dropped.
const MAX_NO_SPEECH_PROB: f32 = 0.8;
/// Samples per whisper.cpp timestamp unit (10 ms).
const SAMPLES_PER_CENTISECOND: usize = SAMPLE_RATE as usize / 100;

/// How spans become windows by default: packed up to 28 s (Whisper's window is 30 s; the rest
/// is margin for the trimmed context), 0.4 s of silence before each span.
const DEFAULT_PACKING: Packing = Packing {
    max_window: 28 * SAMPLE_RATE as usize,
    gap: 2 * SAMPLE_RATE as usize / 5,
    pack: true,
};

/// Whisper (whisper.cpp) engine. Cheap to share: clone the `Arc` it sits in.
pub struct WhisperEngine {
    ctx: Arc<WhisperContext>,
    model: String,
    options: DecodeOptions,
}

/// Settings of one decoding, fixed per engine.
#[derive(Debug, Clone, Copy)]
struct DecodeOptions {
    threads: usize,
    trim_audio_ctx: bool,
    packing: Packing,
    temperature_fallback: bool,
}

impl WhisperEngine {
    /// Loads a ggml model file (f16, q8_0 or q5_1 weights). `threads` is the number of CPU
    /// threads one channel decodes with; channels of a call run one after another, so a call
    /// uses at most `threads`.
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
            options: DecodeOptions {
                threads: threads.max(1),
                trim_audio_ctx: true,
                packing: DEFAULT_PACKING,
                temperature_fallback: true,
            },
        })
    }

    /// Whether windows are encoded with an audio context trimmed to their length (the
    /// default, for speed). Off, every window is encoded as a full 30 s window, as reference
    /// Whisper does.
    pub fn with_trimmed_audio_ctx(mut self, trim: bool) -> Self {
        self.options.trim_audio_ctx = trim;
        self
    }

    /// Whether short speech spans of a channel share a window (the default). Off, every span
    /// is decoded on its own.
    pub fn with_packing(mut self, pack: bool) -> Self {
        self.options.packing.pack = pack;
        self
    }

    /// Longest window several spans are packed into, in seconds (default 28; at most 30,
    /// Whisper's window).
    pub fn with_window_seconds(mut self, seconds: u32) -> Self {
        self.options.packing.max_window = seconds.min(30) as usize * SAMPLE_RATE as usize;
        self
    }

    /// Silence before every span in its window, in milliseconds (default 400). 0 hands each
    /// span to the model as it is in the recording, as versions before packing did.
    pub fn with_span_gap_ms(mut self, ms: u32) -> Self {
        self.options.packing.gap = ms as usize * SAMPLE_RATE as usize / 1000;
        self
    }

    /// Whether whisper.cpp decodes again at a higher temperature when a result looks
    /// degenerate (repetition, low confidence). On by default.
    pub fn with_temperature_fallback(mut self, fallback: bool) -> Self {
        self.options.temperature_fallback = fallback;
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
        let mut segments = Vec::new();
        for channel in audio {
            let ctx = Arc::clone(&self.ctx);
            let options = self.options;
            let stop = stop.clone();
            let found = tokio::task::spawn_blocking(move || {
                transcribe_channel(&ctx, options, &channel, &stop)
            })
            .await
            .map_err(|e| {
                // A panic inside whisper.cpp on this audio would happen again.
                TranscribeError::Permanent(format!("whisper worker failed: {e}"))
            })??;
            segments.extend(found);
        }
        // Stable sort: on equal start times, the agent (first channel) speaks first.
        segments.sort_by_key(|s| s.start_ms);
        Ok(Transcript {
            language: LANGUAGE.to_string(),
            segments,
        })
    }
}

fn transcribe_channel(
    ctx: &WhisperContext,
    options: DecodeOptions,
    channel: &ChannelAudio,
    stop: &Stop,
) -> Result<Vec<Segment>, TranscribeError> {
    let spans = speech_spans(&channel.samples);
    if spans.is_empty() {
        return Ok(Vec::new());
    }
    let mut state = ctx
        .create_state()
        .map_err(|e| TranscribeError::Transient(format!("creating whisper state: {e}")))?;
    let eot = ctx.token_eot();
    let mut out = Vec::new();
    let mut audio = Vec::new();
    for window in pack(&spans, options.packing) {
        if stop.requested() {
            return Err(TranscribeError::Stopped);
        }
        window.audio_into(&channel.samples, &mut audio);
        if audio.len() < MIN_WINDOW_SAMPLES {
            audio.resize(MIN_WINDOW_SAMPLES, 0.0);
        }
        // Token times place the words of a segment that runs across two packed pieces.
        let token_times = window.pieces.len() > 1;
        decode_window(&mut state, options, token_times, &audio, stop)?;
        collect_segments(&state, eot, channel.speaker, &window, &mut out)?;
    }
    Ok(out)
}

fn decode_window(
    state: &mut WhisperState,
    options: DecodeOptions,
    token_times: bool,
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
    params.set_n_threads(options.threads as i32);
    params.set_language(Some(LANGUAGE));
    params.set_translate(false);
    // Each window stands alone: text from an earlier one must not prompt (or, after a
    // mis-hearing, derail) the next one.
    params.set_no_context(true);
    params.set_no_timestamps(false);
    params.set_single_segment(false);
    params.set_token_timestamps(token_times);
    // "[MUSIC]", "(laughs)" and the like are not words anyone said.
    params.set_suppress_nst(true);
    params.set_print_special(false);
    params.set_print_progress(false);
    params.set_print_realtime(false);
    params.set_print_timestamps(false);
    if !options.temperature_fallback {
        params.set_temperature_inc(0.0);
    }
    if options.trim_audio_ctx {
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
/// full window) once the span fills a 30 s window anyway.
fn audio_ctx_for(samples: usize) -> usize {
    let seconds = samples as f64 / f64::from(SAMPLE_RATE);
    let needed = (seconds * AUDIO_CTX_PER_SECOND).ceil() as usize + 32;
    if needed >= FULL_AUDIO_CTX {
        0
    } else {
        needed.max(MIN_AUDIO_CTX)
    }
}

/// Turns the decoded segments of `window` into recording segments. In a window of several
/// pieces a segment's words are split by the piece their timestamps fall in, so a segment
/// never spans the silence (or the other party's turn) left out between two pieces.
fn collect_segments(
    state: &WhisperState,
    eot: i32,
    speaker: Speaker,
    window: &Window,
    out: &mut Vec<Segment>,
) -> Result<(), TranscribeError> {
    let to_ms = |sample: usize| sample as u64 * 1000 / u64::from(SAMPLE_RATE);
    let position = |centiseconds: i64| centiseconds.max(0) as usize * SAMPLES_PER_CENTISECOND;
    for seg in state.as_iter() {
        let no_speech = seg.no_speech_probability();
        if no_speech > MAX_NO_SPEECH_PROB {
            tracing::debug!(no_speech, "whisper segment dropped as non-speech");
            continue;
        }
        // (piece, first window position, last window position, text bytes) per run of words.
        let mut runs: Vec<(usize, usize, usize, Vec<u8>)> = Vec::new();
        if window.pieces.len() == 1 {
            let bytes = seg
                .to_bytes()
                .map_err(|e| TranscribeError::Transient(format!("reading whisper segment: {e}")))?;
            runs.push((
                0,
                position(seg.start_timestamp()),
                position(seg.end_timestamp()),
                bytes.to_vec(),
            ));
        } else {
            for i in 0..seg.n_tokens() {
                let Some(token) = seg.get_token(i) else { continue };
                if token.token_id() >= eot {
                    continue; // timestamps and other special tokens
                }
                let data = token.token_data();
                let (t0, t1) = (position(data.t0), position(data.t1.max(data.t0)));
                let piece = window.piece_at((t0 + t1) / 2);
                let bytes = token.to_bytes().map_err(|e| {
                    TranscribeError::Transient(format!("reading whisper token: {e}"))
                })?;
                match runs.last_mut() {
                    Some(run) if run.0 == piece => {
                        run.2 = t1;
                        run.3.extend_from_slice(bytes);
                    }
                    _ => runs.push((piece, t0, t1, bytes.to_vec())),
                }
            }
        }
        for (piece, first, last, bytes) in runs {
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            if text.is_empty() {
                continue;
            }
            let start_ms = to_ms(window.to_recording(piece, first));
            let end_ms = to_ms(window.to_recording(piece, last)).max(start_ms);
            out.push(Segment {
                channel: speaker,
                start_ms,
                end_ms,
                text,
            });
        }
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
