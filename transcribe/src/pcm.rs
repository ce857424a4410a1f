//! Recording → per-speaker 16 kHz mono PCM.
//!
//! Decoding streams block by block (`callingest_audio::decode`) straight into one resampler per
//! kept channel, so the source-rate audio is never held whole. From there, either
//! [`stream_speech`] passes the 16 kHz audio on through speech detection, holding only the
//! speech span being built (what the engines transcribe from), or [`load_channels`] collects
//! whole channels (64 KB/s per channel, about 230 MB per channel-hour) for callers that want
//! the samples themselves.
//!
//! Samples arrive already made ordinary by `callingest_audio::decode` (NaN → 0, ±inf and
//! |x| > 1 → ±1, subnormals → 0), so no NaN reaches the FFT, where one would smear over a whole
//! chunk; a recording made mostly of NaN or infinities is refused as undecodable audio.
//!
//! Resampling uses rubato's FFT resampler: the spectrum is cut at the new Nyquist frequency with
//! a windowed (Blackman-Harris) filter, so energy above 8 kHz in a 44.1/48 kHz recording does
//! not alias into the speech band.

use std::path::Path;

use callingest_audio::{AnalysisError, Bounds, PcmSink, RecordingFormat, Stop};
use rubato::audioadapter_buffers::direct::SequentialSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

use crate::speech::SpeechPieces;
use crate::{ChannelAudio, Speaker, TranscribeError, SAMPLE_RATE};

/// Input frames per FFT chunk: a power of two near 20 ms at 48 kHz keeps the FFTs cheap and the
/// pending buffer small.
const CHUNK_FRAMES: usize = 1024;

/// Decodes `path` and returns its channels at [`SAMPLE_RATE`].
///
/// Mono → one [`Speaker::Mono`] channel; stereo → channel 0 [`Speaker::Agent`], channel 1
/// [`Speaker::Customer`]; further channels are ignored. Undecodable or unsupported audio is
/// [`TranscribeError::Audio`]; failing to read the local file is transient.
pub fn load_channels(
    path: &Path,
    format: RecordingFormat,
) -> Result<Vec<ChannelAudio>, TranscribeError> {
    load(path, format, None, &Stop::new())
}

/// [`load_channels`], refusing recordings longer than `max_duration`
/// ([`TranscribeError::Permanent`]) before their audio outgrows memory: the 16 kHz output is
/// held whole, 230 MB per channel-hour. Decoding stops as soon as the limit is passed.
pub fn load_channels_up_to(
    path: &Path,
    format: RecordingFormat,
    max_duration: std::time::Duration,
) -> Result<Vec<ChannelAudio>, TranscribeError> {
    load(path, format, Some(max_duration), &Stop::new())
}

/// [`load_channels_up_to`], giving up with [`TranscribeError::Stopped`] as soon as `stop` is
/// requested (decoding and resampling look at it before every packet).
pub fn load_channels_until(
    path: &Path,
    format: RecordingFormat,
    max_duration: std::time::Duration,
    stop: &Stop,
) -> Result<Vec<ChannelAudio>, TranscribeError> {
    load(path, format, Some(max_duration), stop)
}

fn load(
    path: &Path,
    format: RecordingFormat,
    max_duration: Option<std::time::Duration>,
    stop: &Stop,
) -> Result<Vec<ChannelAudio>, TranscribeError> {
    let mut sink = ChannelSink::default();
    let bounds = Bounds {
        max_duration,
        stop: stop.clone(),
    };
    callingest_audio::decode_within(path, format, &mut sink, &bounds).map_err(decode_error)?;
    sink.finish()
}

/// Where pieces of speech go: `(speaker, start in 16 kHz samples, audio)`.
pub(crate) type OnPiece<'a> = dyn FnMut(Speaker, usize, &[f32]) -> Result<(), TranscribeError> + 'a;

/// Decodes `path` once and streams every channel through resampling and speech detection
/// ([`SpeechPieces`]), calling `on_piece(speaker, start, audio)` with each piece of speech (at
/// most `max_piece` samples, `start` in 16 kHz samples from the start of the recording) as soon
/// as it is complete, channels interleaved in the order their pieces close.
///
/// Nothing grows with the recording: each channel holds its resampler's chunk and the audio
/// of the speech span it is building (at most `max_piece`). The first error `on_piece` returns
/// stops the decoding and is returned; a `stop` request ends it with
/// [`TranscribeError::Stopped`]. Same channels and errors as [`load_channels_until`].
pub(crate) fn stream_speech(
    path: &Path,
    format: RecordingFormat,
    max_duration: Option<std::time::Duration>,
    stop: &Stop,
    max_piece: usize,
    on_piece: &mut OnPiece<'_>,
) -> Result<(), TranscribeError> {
    // The decoder stops on its own `Stop`, raised by the caller's or by a failed piece (the
    // sink protocol cannot return errors).
    let decoding = Stop::new();
    let mut sink = SpeechSink {
        channels: Vec::new(),
        max_piece,
        on_piece,
        error: None,
        caller: stop.clone(),
        decoding: decoding.clone(),
    };
    let bounds = Bounds {
        max_duration,
        stop: decoding,
    };
    let decoded = callingest_audio::decode_within(path, format, &mut sink, &bounds);
    if let Some(e) = sink.error.take() {
        return Err(e);
    }
    if stop.requested() {
        return Err(TranscribeError::Stopped);
    }
    decoded.map_err(decode_error)?;
    sink.finish()
}

fn decode_error(e: AnalysisError) -> TranscribeError {
    match e {
        AnalysisError::Unsupported(_)
        | AnalysisError::Undecodable(_)
        | AnalysisError::InvalidSamples { .. } => TranscribeError::Audio(e.to_string()),
        AnalysisError::TooLong { limit } => TranscribeError::Permanent(format!(
            "the recording is longer than {:.0} s, the longest transcribed",
            limit.as_secs_f64()
        )),
        AnalysisError::Io(_) => TranscribeError::Transient(e.to_string()),
        AnalysisError::Stopped => TranscribeError::Stopped,
    }
}

/// Speaker of each kept channel: mono → [`Speaker::Mono`]; stereo → channel 0
/// [`Speaker::Agent`], channel 1 [`Speaker::Customer`]; further channels are ignored.
fn speakers(channels: usize) -> &'static [Speaker] {
    if channels == 1 {
        &[Speaker::Mono]
    } else {
        &[Speaker::Agent, Speaker::Customer]
    }
}

/// Receives decoded blocks and resamples the first two channels into whole 16 kHz channels.
#[derive(Default)]
struct ChannelSink {
    channels: Vec<(ChannelResampler, Vec<f32>)>,
    speakers: Vec<Speaker>,
    /// The sink protocol cannot return errors; the first one is kept and reported at the end.
    error: Option<TranscribeError>,
}

impl PcmSink for ChannelSink {
    fn start(&mut self, sample_rate: u32, channels: usize) {
        self.speakers = speakers(channels).to_vec();
        for _ in &self.speakers {
            match ChannelResampler::new(sample_rate) {
                Ok(r) => self.channels.push((r, Vec::new())),
                Err(e) => {
                    self.error.get_or_insert(e);
                }
            }
        }
    }

    fn push_plane(&mut self, channel: usize, samples: &[f32]) {
        if self.error.is_some() {
            return;
        }
        if let Some((r, out)) = self.channels.get_mut(channel) {
            if let Err(e) = r.push(samples, &mut |s| {
                out.extend_from_slice(s);
                Ok(())
            }) {
                self.error = Some(e);
            }
        }
    }

    fn end_block(&mut self, _frames: usize) {}
}

impl ChannelSink {
    fn finish(self) -> Result<Vec<ChannelAudio>, TranscribeError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.channels
            .into_iter()
            .zip(self.speakers)
            .map(|((r, mut samples), speaker)| {
                r.finish(&mut |s| {
                    samples.extend_from_slice(s);
                    Ok(())
                })?;
                Ok(ChannelAudio { speaker, samples })
            })
            .collect()
    }
}

/// Receives decoded blocks and streams the first two channels through a resampler and
/// [`SpeechPieces`] each, handing every finished piece to `on_piece`.
struct SpeechSink<'a> {
    channels: Vec<(Speaker, ChannelResampler, SpeechPieces)>,
    max_piece: usize,
    on_piece: &'a mut OnPiece<'a>,
    /// The first error; decoding is stopped when it is set.
    error: Option<TranscribeError>,
    caller: Stop,
    decoding: Stop,
}

impl PcmSink for SpeechSink<'_> {
    fn start(&mut self, sample_rate: u32, channels: usize) {
        for &speaker in speakers(channels) {
            match ChannelResampler::new(sample_rate) {
                Ok(r) => self
                    .channels
                    .push((speaker, r, SpeechPieces::new(self.max_piece))),
                Err(e) => self.fail(e),
            }
        }
    }

    fn push_plane(&mut self, channel: usize, samples: &[f32]) {
        if self.caller.requested() {
            self.decoding.request();
        }
        if self.error.is_some() || self.decoding.requested() {
            return;
        }
        let on_piece = &mut *self.on_piece;
        let Some((speaker, resampler, pieces)) = self.channels.get_mut(channel) else {
            return;
        };
        let speaker = *speaker;
        let pushed = resampler.push(samples, &mut |audio| {
            pieces.push(audio, &mut |start, piece| on_piece(speaker, start, piece))
        });
        if let Err(e) = pushed {
            self.fail(e);
        }
    }

    fn end_block(&mut self, _frames: usize) {}
}

impl SpeechSink<'_> {
    fn fail(&mut self, e: TranscribeError) {
        self.error.get_or_insert(e);
        self.decoding.request();
    }

    /// The end of the recording: every channel's resampler tail and open span.
    fn finish(self) -> Result<(), TranscribeError> {
        let on_piece = self.on_piece;
        for (speaker, resampler, mut pieces) in self.channels {
            resampler.finish(&mut |audio| {
                pieces.push(audio, &mut |start, piece| on_piece(speaker, start, piece))
            })?;
            pieces.finish(&mut |start, piece| on_piece(speaker, start, piece))?;
        }
        Ok(())
    }
}

/// Output of a [`ChannelResampler`]: takes each block of 16 kHz samples as it is produced.
type Output<'a> = dyn FnMut(&[f32]) -> Result<(), TranscribeError> + 'a;

/// Streaming resampler for one channel, trimming rubato's start-up delay so that output sample
/// `n` lines up with input time `n / 16 kHz` (segment timestamps depend on it).
struct ChannelResampler {
    /// `None` when the input is already at [`SAMPLE_RATE`].
    fft: Option<Fft<f32>>,
    pending: Vec<f32>,
    scratch: Vec<f32>,
    delay_left: usize,
    frames_in: u64,
    frames_out: usize,
    source_rate: u32,
}

/// Rubato only fails on inconsistent buffer sizes: a bug here, not in the recording, but
/// retrying cannot fix it either.
fn resampling_failed(e: String) -> TranscribeError {
    TranscribeError::Permanent(format!("resampling failed: {e}"))
}

impl ChannelResampler {
    fn new(source_rate: u32) -> Result<Self, TranscribeError> {
        let fft = if source_rate == SAMPLE_RATE {
            None
        } else {
            Some(
                Fft::<f32>::new(
                    source_rate as usize,
                    SAMPLE_RATE as usize,
                    CHUNK_FRAMES,
                    1,
                    FixedSync::Input,
                )
                .map_err(|e| {
                    resampling_failed(format!("{source_rate} Hz → {SAMPLE_RATE} Hz: {e}"))
                })?,
            )
        };
        let delay_left = fft.as_ref().map_or(0, |f| f.output_delay());
        Ok(Self {
            fft,
            pending: Vec::new(),
            scratch: Vec::new(),
            delay_left,
            frames_in: 0,
            frames_out: 0,
            source_rate,
        })
    }

    fn push(&mut self, samples: &[f32], output: &mut Output<'_>) -> Result<(), TranscribeError> {
        self.frames_in += samples.len() as u64;
        let Some(fft) = &mut self.fft else {
            self.frames_out += samples.len();
            return output(samples);
        };
        self.pending.extend_from_slice(samples);
        let mut start = 0;
        while self.pending.len() - start >= fft.input_frames_next() {
            let n = fft.input_frames_next();
            let produced = run_chunk(
                fft,
                &self.pending[start..start + n],
                &mut self.scratch,
                None,
            )
            .map_err(resampling_failed)?;
            start += n;
            let skip = self.delay_left.min(produced);
            self.delay_left -= skip;
            self.frames_out += produced - skip;
            output(&self.scratch[skip..produced])?;
        }
        self.pending.drain(..start);
        Ok(())
    }

    fn finish(mut self, output: &mut Output<'_>) -> Result<(), TranscribeError> {
        let Some(fft) = &mut self.fft else {
            return Ok(());
        };
        let expected = (self.frames_in as u128 * u128::from(SAMPLE_RATE))
            .div_ceil(u128::from(self.source_rate)) as usize;
        // The tail shorter than one chunk, then silence until the delayed output is all out.
        let mut tail = std::mem::take(&mut self.pending);
        while self.frames_out < expected {
            let partial = Indexing::new().partial_len(tail.len());
            let produced = run_chunk(fft, &tail, &mut self.scratch, Some(&partial))
                .map_err(resampling_failed)?;
            let skip = self.delay_left.min(produced);
            self.delay_left -= skip;
            let keep = (produced - skip).min(expected - self.frames_out);
            self.frames_out += keep;
            output(&self.scratch[skip..skip + keep])?;
            tail.clear();
        }
        Ok(())
    }
}

/// Resamples one chunk into `scratch`; returns the frames produced.
fn run_chunk(
    fft: &mut Fft<f32>,
    input: &[f32],
    scratch: &mut Vec<f32>,
    indexing: Option<&Indexing>,
) -> Result<usize, String> {
    let out_len = fft.output_frames_next();
    scratch.resize(out_len, 0.0);
    let input_adapter =
        SequentialSlice::new(input, 1, input.len()).map_err(|e| format!("input buffer: {e:?}"))?;
    let mut output_adapter = SequentialSlice::new_mut(scratch.as_mut_slice(), 1, out_len)
        .map_err(|e| format!("output buffer: {e:?}"))?;
    let (_, produced) = fft
        .process_into_buffer(&input_adapter, &mut output_adapter, indexing)
        .map_err(|e| e.to_string())?;
    Ok(produced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::PI;

    fn tone(freq: f32, rate: u32, seconds: f32, amplitude: f32) -> Vec<f32> {
        let n = (rate as f32 * seconds) as usize;
        (0..n)
            .map(|i| amplitude * (2.0 * PI * freq * i as f32 / rate as f32).sin())
            .collect()
    }

    /// Resamples in uneven blocks, like a decoder's packets.
    fn resample(input: &[f32], rate: u32) -> Vec<f32> {
        let mut r = ChannelResampler::new(rate).unwrap();
        let mut out = Vec::new();
        for block in input.chunks(1152) {
            r.push(block, &mut |s| {
                out.extend_from_slice(s);
                Ok(())
            })
            .unwrap();
        }
        r.finish(&mut |s| {
            out.extend_from_slice(s);
            Ok(())
        })
        .unwrap();
        out
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
    }

    /// Amplitude of `freq` in `x` (single-bin DFT), for a signal sampled at 16 kHz.
    fn amplitude_at(x: &[f32], freq: f32) -> f32 {
        let (mut re, mut im) = (0f64, 0f64);
        for (i, &v) in x.iter().enumerate() {
            let ph = 2.0 * std::f64::consts::PI * freq as f64 * i as f64 / SAMPLE_RATE as f64;
            re += v as f64 * ph.cos();
            im += v as f64 * ph.sin();
        }
        (2.0 * (re * re + im * im).sqrt() / x.len() as f64) as f32
    }

    #[test]
    fn a_1khz_sine_at_44_1khz_keeps_its_frequency_and_level() {
        let input = tone(1000.0, 44_100, 1.0, 0.5);
        let out = resample(&input, 44_100);
        assert_eq!(out.len(), 16_000);
        // Skip the edges, where the filter sees the signal start and stop.
        let mid = &out[800..15_200];
        assert!(
            (rms(mid) - 0.5 / 2f32.sqrt()).abs() < 0.01,
            "rms {}",
            rms(mid)
        );
        assert!((amplitude_at(mid, 1000.0) - 0.5).abs() < 0.01);
        // Nothing leaked to a neighbouring frequency.
        assert!(amplitude_at(mid, 1100.0) < 0.01);
        // Positive-going zero crossings: 1000 per second.
        let crossings = mid.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
        assert!(
            (899..=901).contains(&crossings),
            "{crossings} crossings in 0.9 s"
        );
    }

    #[test]
    fn resampling_does_not_shift_audio_in_time() {
        // A click at 0.5 s must come out at 0.5 s, or segment timestamps drift.
        let mut input = vec![0.0f32; 48_000];
        input[24_000] = 1.0;
        let out = resample(&input, 48_000);
        let peak = out
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap()
            .0;
        assert!((7_998..=8_002).contains(&peak), "click at sample {peak}");
    }

    #[test]
    fn a_10khz_tone_at_48khz_is_removed_not_aliased() {
        // 10 kHz is above the new 8 kHz Nyquist: without a low-pass it would fold to 6 kHz.
        let input = tone(10_000.0, 48_000, 1.0, 0.5);
        let out = resample(&input, 48_000);
        let mid = &out[800..15_200];
        assert!(rms(mid) < 0.005, "rms after resampling {}", rms(mid));
        assert!(amplitude_at(mid, 6_000.0) < 0.002);
    }

    #[test]
    fn audio_at_16khz_passes_through_unchanged() {
        let input = tone(440.0, 16_000, 0.3, 0.25);
        assert_eq!(resample(&input, 16_000), input);
    }

    #[test]
    fn stereo_becomes_agent_and_customer_and_mono_stays_mono() {
        let mut s = ChannelSink::default();
        s.start(8_000, 3);
        for _ in 0..10 {
            s.push_plane(0, &[0.1; 800]);
            s.push_plane(1, &[-0.1; 800]);
            s.push_plane(2, &[0.9; 800]);
            s.end_block(800);
        }
        let ch = s.finish().unwrap();
        assert_eq!(ch.len(), 2);
        assert_eq!(ch[0].speaker, Speaker::Agent);
        assert_eq!(ch[1].speaker, Speaker::Customer);
        assert_eq!(ch[0].samples.len(), 16_000);
        assert!((ch[1].samples[8_000] + 0.1).abs() < 0.01);

        let mut s = ChannelSink::default();
        s.start(16_000, 1);
        s.push_plane(0, &[0.2; 160]);
        s.end_block(160);
        let ch = s.finish().unwrap();
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].speaker, Speaker::Mono);
    }

    /// A stereo 8 kHz WAV: agent bursts of a 300 Hz tone at the given seconds on the left,
    /// customer bursts on the right.
    fn stereo_wav(dir: &Path, agent: &[(f32, f32)], customer: &[(f32, f32)]) -> std::path::PathBuf {
        let plane = |bursts: &[(f32, f32)]| -> Vec<f32> {
            (0..8_000 * 40)
                .map(|i| {
                    let t = i as f32 / 8_000.0;
                    if bursts.iter().any(|&(a, b)| t >= a && t < b) {
                        0.3 * (2.0 * PI * 300.0 * t).sin()
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        let path = dir.join("call.wav");
        let (left, right) = (plane(agent), plane(customer));
        std::fs::write(&path, callingest_audio::wav::pcm16(8_000, &[&left, &right])).unwrap();
        path
    }

    #[test]
    fn streamed_pieces_are_the_spans_of_the_loaded_channels_with_their_audio() {
        let dir = tempfile::tempdir().unwrap();
        let wav = stereo_wav(
            dir.path(),
            &[(1.0, 3.0), (20.0, 22.5)],
            &[(4.0, 6.0), (30.0, 39.9)],
        );
        let channels = load_channels(&wav, RecordingFormat::Wav).unwrap();
        let mut expected = Vec::new();
        for c in &channels {
            for span in crate::speech_spans(&c.samples) {
                expected.push((c.speaker, span.start, c.samples[span].to_vec()));
            }
        }
        let mut got = Vec::new();
        stream_speech(
            &wav,
            RecordingFormat::Wav,
            None,
            &Stop::new(),
            usize::MAX,
            &mut |who, start, audio| {
                got.push((who, start, audio.to_vec()));
                Ok(())
            },
        )
        .unwrap();
        // Handed on in the order they close, both channels from one pass.
        let order: Vec<(Speaker, usize)> = got.iter().map(|(w, s, _)| (*w, *s / 16_000)).collect();
        assert_eq!(
            order,
            [
                (Speaker::Agent, 0),
                (Speaker::Customer, 3),
                (Speaker::Agent, 19),
                (Speaker::Customer, 29)
            ]
        );
        got.sort_by_key(|(who, start, _)| (*who != Speaker::Agent, *start));
        assert_eq!(got, expected);
    }

    #[test]
    fn a_failed_piece_stops_the_stream_and_a_stop_request_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let wav = stereo_wav(dir.path(), &[(1.0, 3.0), (20.0, 22.5)], &[(4.0, 6.0)]);
        let mut pieces = 0;
        let err = stream_speech(
            &wav,
            RecordingFormat::Wav,
            None,
            &Stop::new(),
            usize::MAX,
            &mut |_, _, _| {
                pieces += 1;
                Err(TranscribeError::Transient("engine away".into()))
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, TranscribeError::Transient(ref m) if m == "engine away"),
            "{err}"
        );
        assert_eq!(pieces, 1, "nothing after the failure");

        let stop = Stop::new();
        stop.request();
        let err = stream_speech(
            &wav,
            RecordingFormat::Wav,
            None,
            &stop,
            usize::MAX,
            &mut |_, _, _| panic!("no piece once stopped"),
        )
        .unwrap_err();
        assert!(matches!(err, TranscribeError::Stopped), "{err}");

        let err = stream_speech(
            &wav,
            RecordingFormat::Wav,
            Some(std::time::Duration::from_secs(10)),
            &Stop::new(),
            usize::MAX,
            &mut |_, _, _| Ok(()),
        )
        .unwrap_err();
        assert!(matches!(err, TranscribeError::Permanent(_)), "{err}");
    }
}
