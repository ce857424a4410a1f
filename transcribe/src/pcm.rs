//! Recording → per-speaker 16 kHz mono PCM.
//!
//! Decoding streams block by block (`callingest_audio::decode`) straight into one resampler per
//! kept channel, so the source-rate audio is never held whole: only the 16 kHz output grows
//! with the call (64 KB/s per channel, about 230 MB per channel-hour).
//!
//! Resampling uses rubato's FFT resampler: the spectrum is cut at the new Nyquist frequency with
//! a windowed (Blackman-Harris) filter, so energy above 8 kHz in a 44.1/48 kHz recording does
//! not alias into the speech band.

use std::path::Path;

use callingest_audio::{AnalysisError, PcmSink, RecordingFormat, Stop};
use rubato::audioadapter_buffers::direct::SequentialSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

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
/// held whole, 230 MB per channel-hour.
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
    let mut sink = ChannelSink {
        max_duration,
        ..ChannelSink::default()
    };
    callingest_audio::decode_until(path, format, &mut sink, stop).map_err(|e| match e {
        AnalysisError::Unsupported(_) | AnalysisError::Undecodable(_) => {
            TranscribeError::Audio(e.to_string())
        }
        AnalysisError::Io(_) => TranscribeError::Transient(e.to_string()),
        AnalysisError::Stopped => TranscribeError::Stopped,
    })?;
    sink.finish()
}

/// Receives decoded blocks and resamples the first two channels.
#[derive(Default)]
struct ChannelSink {
    channels: Vec<ChannelResampler>,
    speakers: Vec<Speaker>,
    /// The sink protocol cannot return errors; the first one is kept and reported at the end.
    error: Option<String>,
    max_duration: Option<std::time::Duration>,
    /// Source frames allowed by `max_duration`, once the rate is known.
    max_frames: Option<u64>,
    frames: u64,
    too_long: bool,
}

impl PcmSink for ChannelSink {
    fn start(&mut self, sample_rate: u32, channels: usize) {
        self.max_frames = self
            .max_duration
            .map(|d| (d.as_secs_f64() * f64::from(sample_rate)) as u64);
        self.speakers = if channels == 1 {
            vec![Speaker::Mono]
        } else {
            vec![Speaker::Agent, Speaker::Customer]
        };
        for _ in &self.speakers {
            match ChannelResampler::new(sample_rate) {
                Ok(r) => self.channels.push(r),
                Err(e) => {
                    self.error.get_or_insert(e);
                }
            }
        }
    }

    fn push_plane(&mut self, channel: usize, samples: &[f32]) {
        if self.error.is_some() || self.too_long {
            return;
        }
        if let Some(r) = self.channels.get_mut(channel) {
            if let Err(e) = r.push(samples) {
                self.error = Some(e);
            }
        }
    }

    fn end_block(&mut self, frames: usize) {
        self.frames += frames as u64;
        if self.max_frames.is_some_and(|max| self.frames > max) && !self.too_long {
            // Keep nothing more (decoding still runs to the end; the audio is dropped).
            self.too_long = true;
            self.channels.iter_mut().for_each(ChannelResampler::clear);
        }
    }
}

impl ChannelSink {
    fn finish(self) -> Result<Vec<ChannelAudio>, TranscribeError> {
        if let (true, Some(max)) = (self.too_long, self.max_duration) {
            return Err(TranscribeError::Permanent(format!(
                "the recording is longer than {:.0} s, the longest transcribed",
                max.as_secs_f64()
            )));
        }
        if let Some(e) = self.error {
            // Rubato only fails on inconsistent buffer sizes: a bug here, not in the recording,
            // but retrying cannot fix it either.
            return Err(TranscribeError::Permanent(format!(
                "resampling failed: {e}"
            )));
        }
        self.channels
            .into_iter()
            .zip(self.speakers)
            .map(|(r, speaker)| {
                Ok(ChannelAudio {
                    speaker,
                    samples: r.finish().map_err(|e| {
                        TranscribeError::Permanent(format!("resampling failed: {e}"))
                    })?,
                })
            })
            .collect()
    }
}

/// Streaming resampler for one channel, trimming rubato's start-up delay so that output sample
/// `n` lines up with input time `n / 16 kHz` (segment timestamps depend on it).
struct ChannelResampler {
    /// `None` when the input is already at [`SAMPLE_RATE`].
    fft: Option<Fft<f32>>,
    pending: Vec<f32>,
    scratch: Vec<f32>,
    output: Vec<f32>,
    delay_left: usize,
    frames_in: u64,
    source_rate: u32,
}

impl ChannelResampler {
    fn new(source_rate: u32) -> Result<Self, String> {
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
                .map_err(|e| format!("{source_rate} Hz → {SAMPLE_RATE} Hz: {e}"))?,
            )
        };
        let delay_left = fft.as_ref().map_or(0, |f| f.output_delay());
        Ok(Self {
            fft,
            pending: Vec::new(),
            scratch: Vec::new(),
            output: Vec::new(),
            delay_left,
            frames_in: 0,
            source_rate,
        })
    }

    /// Lets go of everything produced so far.
    fn clear(&mut self) {
        self.pending = Vec::new();
        self.output = Vec::new();
    }

    fn push(&mut self, samples: &[f32]) -> Result<(), String> {
        self.frames_in += samples.len() as u64;
        let Some(fft) = &mut self.fft else {
            self.output.extend_from_slice(samples);
            return Ok(());
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
            )?;
            start += n;
            emit(
                &self.scratch[..produced],
                &mut self.delay_left,
                &mut self.output,
            );
        }
        self.pending.drain(..start);
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<f32>, String> {
        let Some(fft) = &mut self.fft else {
            return Ok(self.output);
        };
        let expected = (self.frames_in as u128 * u128::from(SAMPLE_RATE))
            .div_ceil(u128::from(self.source_rate)) as usize;
        // The tail shorter than one chunk, then silence until the delayed output is all out.
        let mut tail = std::mem::take(&mut self.pending);
        loop {
            if self.output.len() >= expected {
                break;
            }
            let partial = Indexing::new().partial_len(tail.len());
            let produced = run_chunk(fft, &tail, &mut self.scratch, Some(&partial))?;
            emit(
                &self.scratch[..produced],
                &mut self.delay_left,
                &mut self.output,
            );
            tail.clear();
        }
        self.output.truncate(expected);
        Ok(self.output)
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

fn emit(chunk: &[f32], delay_left: &mut usize, output: &mut Vec<f32>) {
    let skip = (*delay_left).min(chunk.len());
    *delay_left -= skip;
    output.extend_from_slice(&chunk[skip..]);
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
        for block in input.chunks(1152) {
            r.push(block).unwrap();
        }
        r.finish().unwrap()
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
}
