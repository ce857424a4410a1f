//! Recording identification and call analytics, in pure Rust (symphonia; no ffmpeg at run time).
//!
//! - [`identify`] decides the [`RecordingFormat`] from a file's first bytes.
//! - [`analyze`] decodes the whole file once, streaming, and measures duration, levels and talk
//!   time per side (stereo: left = agent, right = customer), as the domain's [`AudioAnalytics`]
//!   (see it for units).
//! - [`decode`] streams the decoded samples to a caller's [`PcmSink`] (e.g. for transcription).
//!
//! # Talk and silence rule
//!
//! Channels 0 (left, agent) and 1 (right, customer) each go through the voice-activity
//! detector of [`vad`] (20 ms frames, a learnt noise floor capped by a certain-speech level,
//! 300 ms hangover between speech frames). Talk time is speech frames × frame length; silence
//! is where neither channel has speech; overlap is where both do. Further channels count
//! towards the levels only. In a stereo call the same frames feed the turn model of
//! `callingest_domain::interaction` (turns, monologues, interactivity, patience).
//!
//! # Hostile samples
//!
//! Every figure is a finite number whatever the file holds. Float samples are made ordinary
//! before anything measures them (NaN → 0, ±inf and |x| > 1 → ±1, subnormals → 0; see
//! [`sanitize_sample`]), and a recording whose samples are mostly NaN or infinite is refused
//! as [`AnalysisError::InvalidSamples`].

mod decode;
mod format;
mod meter;
mod samples;
mod stop;
pub mod vad;
pub mod wav;

#[cfg(test)]
mod test_signal;

use std::path::Path;
use std::time::Duration;

use callingest_domain::call::AudioAnalytics;

pub use format::{identify, RecordingFormat};
pub use samples::sanitize_sample;
pub use stop::Stop;
pub use vad::{speech_runs, VoiceActivityDetector, DETECTOR_VERSION};

/// Receives decoded audio block by block from [`decode`].
///
/// Per block, every channel's plane is pushed with [`PcmSink::push_plane`] (channel 0 first),
/// then the block is closed with [`PcmSink::end_block`].
pub trait PcmSink {
    /// Called once, before the first block, with the stream's rate (Hz) and channel count.
    fn start(&mut self, sample_rate: u32, channels: usize);
    /// One channel's samples of the current block, f32 in -1.0..=1.0 full scale. Always finite
    /// and never subnormal: hostile float samples are made ordinary before they get here
    /// ([`sanitize_sample`]).
    fn push_plane(&mut self, channel: usize, samples: &[f32]);
    /// Closes a block of `frames` sample frames.
    fn end_block(&mut self, frames: usize);
}

/// Decodes the whole file, streaming every block to `sink`, and returns the decoder's short
/// name (e.g. `pcm_s16le`).
///
/// Same demuxer choice, damaged-packet tolerance and errors as [`analyze`]; a decoder panic is
/// reported as [`AnalysisError::Undecodable`]. The sink may have received some blocks when an
/// error is returned. A stream whose rate or channel count changes midway is
/// [`AnalysisError::Unsupported`].
pub fn decode(
    path: &Path,
    format: RecordingFormat,
    sink: &mut dyn PcmSink,
) -> Result<String, AnalysisError> {
    decode_within(path, format, sink, &Bounds::default())
}

/// [`decode`], stopping with [`AnalysisError::TooLong`] as soon as the decoded audio passes
/// `max_duration` (the sink then has received at most that much).
pub fn decode_up_to(
    path: &Path,
    format: RecordingFormat,
    sink: &mut dyn PcmSink,
    max_duration: Duration,
) -> Result<String, AnalysisError> {
    decode_within(path, format, sink, &Bounds::up_to(max_duration))
}

/// [`decode`] within `bounds`: [`AnalysisError::TooLong`] past their duration,
/// [`AnalysisError::Stopped`] as soon as their stop is requested (looked at before every packet).
pub fn decode_within(
    path: &Path,
    format: RecordingFormat,
    sink: &mut dyn PcmSink,
    bounds: &Bounds,
) -> Result<String, AnalysisError> {
    // The sink is dropped by the caller if we fail, so a half-fed sink cannot be observed in a
    // broken state through this call.
    let sink = std::panic::AssertUnwindSafe(sink);
    catch_decoder_panic(format, move || {
        let sink = sink;
        decode::decode_into(path, format, sink.0, bounds)
    })
}

/// Runs the decoder, turning a panic (symphonia on hostile bytes) into `Undecodable`.
fn catch_decoder_panic<T>(
    format: RecordingFormat,
    run: impl FnOnce() -> Result<T, AnalysisError> + std::panic::UnwindSafe,
) -> Result<T, AnalysisError> {
    std::panic::catch_unwind(run).map_err(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".to_string());
        AnalysisError::Undecodable(format!("{}: decoder panicked: {msg}", format.as_str()))
    })?
}

/// Why a recording could not be analysed. All but `Io` are permanent (the same bytes will fail
/// again); `Io` is about reading the local file.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// More of the samples are NaN or infinite than not: a float file that holds no audio a
    /// recorder could have made. (Fewer are counted as silence or full scale and measured.)
    #[error("recording holds invalid samples ({invalid} of {total} samples are NaN or infinite)")]
    InvalidSamples { invalid: u64, total: u64 },
    /// The decoded audio is longer than the limit the caller set; decoding stopped there.
    #[error("recording longer than {}", in_minutes(*.limit))]
    TooLong { limit: Duration },
    /// The container or codec is one this crate cannot demux/decode (e.g. an MP4 whose only
    /// track is video, or a codec other than AAC inside MP4).
    #[error("unsupported audio: {0}")]
    Unsupported(String),
    /// The bytes are not valid audio of the given format, are corrupt, or hold no audio.
    #[error("undecodable audio: {0}")]
    Undecodable(String),
    /// Reading the file failed.
    #[error("reading the recording failed: {0}")]
    Io(#[from] std::io::Error),
    /// The caller asked to stop (see [`Stop`]); says nothing about the recording.
    #[error("stopped before the end of the recording")]
    Stopped,
}

/// Decodes the whole file, streaming, and measures it.
///
/// Memory is bounded whatever the call's length: samples are measured block by block as they
/// are decoded and never collected. `format` is what [`identify`] returned for the file's first
/// bytes; the matching demuxer is used directly.
///
/// A panic inside the decoder on hostile input (symphonia parses untrusted bytes) is caught
/// and reported as [`AnalysisError::Undecodable`], so one bad upload cannot take a worker down.
pub fn analyze(path: &Path, format: RecordingFormat) -> Result<AudioAnalytics, AnalysisError> {
    analyze_within(path, format, &Bounds::default())
}

/// [`analyze`], stopping with [`AnalysisError::TooLong`] as soon as the decoded audio passes
/// `max_duration`: the time spent on a recording is bounded by the limit, not by what its
/// header claims or how well it compresses.
pub fn analyze_up_to(
    path: &Path,
    format: RecordingFormat,
    max_duration: Duration,
) -> Result<AudioAnalytics, AnalysisError> {
    analyze_within(path, format, &Bounds::up_to(max_duration))
}

/// A limit as partners read it: "600 minutes", "1 minute", "0.05 minutes".
fn in_minutes(limit: Duration) -> String {
    let secs = limit.as_secs();
    match (
        secs / 60,
        secs.is_multiple_of(60) && limit.subsec_nanos() == 0,
    ) {
        (1, true) => "1 minute".to_owned(),
        (minutes, true) => format!("{minutes} minutes"),
        _ => format!("{:.2} minutes", limit.as_secs_f64() / 60.0),
    }
}

/// How far decoding may go: at most `max_duration` of audio, and no further once `stop` is
/// requested (a job runner that lost its lease, a drain).
#[derive(Debug, Clone, Default)]
pub struct Bounds {
    pub max_duration: Option<Duration>,
    pub stop: Stop,
}

impl Bounds {
    pub fn up_to(max_duration: Duration) -> Self {
        Self {
            max_duration: Some(max_duration),
            stop: Stop::new(),
        }
    }
}

/// [`analyze`] within `bounds` ([`AnalysisError::TooLong`], [`AnalysisError::Stopped`]).
pub fn analyze_within(
    path: &Path,
    format: RecordingFormat,
    bounds: &Bounds,
) -> Result<AudioAnalytics, AnalysisError> {
    let decoded = catch_decoder_panic(format, || decode::decode_and_measure(path, format, bounds))?;
    let m = &decoded.measurements;
    let stereo = m.channels >= 2;
    let silence_ratio = if m.frames == 0 {
        0.0
    } else {
        m.silence_samples as f64 / m.frames as f64
    };
    Ok(AudioAnalytics {
        duration_ms: m.samples_to_ms(m.frames),
        sample_rate: m.sample_rate,
        channels: m.channels,
        codec: decoded.codec,
        agent_talk_ms: m.samples_to_ms(m.talk_samples[0]),
        customer_talk_ms: stereo.then(|| m.samples_to_ms(m.talk_samples[1])),
        silence_ratio,
        longest_silence_ms: m.samples_to_ms(m.longest_silence_samples),
        overlap_ms: m.samples_to_ms(m.overlap_samples),
        mean_dbfs: Some(m.mean_dbfs),
        peak_dbfs: Some(m.peak_dbfs),
        clipping_ratio: m.clipping_ratio,
        detector_version: Some(DETECTOR_VERSION),
        interaction: m.interaction.clone(),
    })
}
