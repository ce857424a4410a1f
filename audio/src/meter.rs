//! Streaming level meter, talk times and turns.
//!
//! Everything here is fed one decoded block at a time and keeps O(1) state per channel (plus a
//! fixed-size hangover window), so memory stays bounded however long the call is.
//!
//! Each of the first two channels (0 = agent/left, 1 = customer/right) goes through the
//! voice-activity detector of [`crate::vad`] (same gate, same hangover as transcription uses).
//! Talk time is the number of speech samples per channel, silence is where no tracked channel
//! has speech, overlap is where both have; the settled frames of a stereo call also feed the
//! turn model (`callingest_domain::interaction::TurnTracker`). Channels beyond the second count
//! towards the levels only.

use callingest_domain::interaction::{Interaction, TurnTracker};

use crate::samples::sanitize_sample;
pub(crate) use crate::vad::SILENCE_DBFS;
use crate::vad::{frame_len, mean_square_to_dbfs, Hangover, SpeechGate};

/// A sample at or above this magnitude counts as clipped (full scale).
pub(crate) const CLIP_LEVEL: f32 = 0.999;

/// Sum of squares, peak magnitude and clipped-sample count of a block of samples.
///
/// Samples are made ordinary again ([`sanitize_sample`]) even though the decoder already did:
/// it costs a few vector instructions and keeps the meter's figures finite on its own, whoever
/// feeds it. Eight independent lanes let the compiler vectorise the loop (a single float accumulator
/// would force strictly sequential adds); f32 is exact enough for the ≤ 1 frame chunks this is
/// called on, and totals are accumulated in f64 by the caller.
fn block_stats(samples: &[f32]) -> (f64, f32, u64) {
    const LANES: usize = 8;
    let mut sq = [0f32; LANES];
    let mut peak = [0f32; LANES];
    let mut clip = [0u32; LANES];
    let chunks = samples.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for i in 0..LANES {
            let s = sanitize_sample(chunk[i]);
            let a = s.abs();
            sq[i] += s * s;
            peak[i] = peak[i].max(a);
            clip[i] += u32::from(a >= CLIP_LEVEL);
        }
    }
    for &s in rest {
        let s = sanitize_sample(s);
        let a = s.abs();
        sq[0] += s * s;
        peak[0] = peak[0].max(a);
        clip[0] += u32::from(a >= CLIP_LEVEL);
    }
    (
        sq.iter().map(|&v| f64::from(v)).sum(),
        peak.iter().copied().fold(0.0, f32::max),
        clip.iter().map(|&c| u64::from(c)).sum(),
    )
}

/// Frame accumulator for one tracked (talker) channel.
#[derive(Debug)]
struct TalkerChannel {
    /// Samples accumulated in the current, unfinished frame.
    fill: usize,
    sum_sq: f64,
    /// Levels (dBFS) of the frames completed during the current block.
    completed: Vec<f64>,
    gate: SpeechGate,
}

/// Turns per-frame speech masks into talk, overlap and silence totals and turns, bridging
/// short gaps ([`Hangover`]).
#[derive(Debug)]
struct Timeline {
    hangover: Hangover,
    totals: Totals,
}

#[derive(Debug)]
struct Totals {
    talkers: usize,
    talk: [u64; 2],
    overlap: u64,
    silence: u64,
    silence_run: u64,
    longest_silence: u64,
    /// Stereo only: who holds the floor.
    turns: Option<TurnTracker>,
}

impl Timeline {
    fn new(talkers: usize, sample_rate: u32) -> Self {
        Self {
            hangover: Hangover::new(talkers),
            totals: Totals {
                talkers,
                talk: [0; 2],
                overlap: 0,
                silence: 0,
                silence_run: 0,
                longest_silence: 0,
                turns: (talkers == 2).then(|| TurnTracker::new(sample_rate)),
            },
        }
    }

    fn push(&mut self, mask: u8, len: u64) {
        let totals = &mut self.totals;
        self.hangover
            .push(mask, len, &mut |mask, len| totals.settle(mask, len));
    }

    fn finish(&mut self) {
        let totals = &mut self.totals;
        self.hangover
            .finish(&mut |mask, len| totals.settle(mask, len));
    }
}

impl Totals {
    fn settle(&mut self, mask: u8, len: u64) {
        for c in 0..self.talkers {
            if mask & (1 << c) != 0 {
                self.talk[c] += len;
            }
        }
        if self.talkers == 2 && mask & 0b11 == 0b11 {
            self.overlap += len;
        }
        if mask == 0 {
            self.silence += len;
            self.silence_run += len;
            self.longest_silence = self.longest_silence.max(self.silence_run);
        } else {
            self.silence_run = 0;
        }
        if let Some(turns) = &mut self.turns {
            turns.push(mask & 1 != 0, mask & 2 != 0, len);
        }
    }
}

/// Everything measured, in samples (per channel) and raw level sums; converted to the public
/// `AudioAnalytics` by the caller, which knows the codec.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Measurements {
    pub sample_rate: u32,
    pub channels: u16,
    /// Sample frames (one sample per channel) decoded.
    pub frames: u64,
    pub talk_samples: [u64; 2],
    pub overlap_samples: u64,
    pub silence_samples: u64,
    pub longest_silence_samples: u64,
    pub mean_dbfs: f64,
    pub peak_dbfs: f64,
    pub clipping_ratio: f64,
    /// Turn-taking figures; all `None` unless the stream has two or more channels.
    pub interaction: Interaction,
}

impl Measurements {
    pub fn samples_to_ms(&self, samples: u64) -> u64 {
        // Rounded to the nearest millisecond; u128 so hours of 192 kHz audio cannot overflow.
        ((u128::from(samples) * 1000 + u128::from(self.sample_rate) / 2)
            / u128::from(self.sample_rate)) as u64
    }
}

/// The streaming meter. Feed every channel's plane of a decoded block with
/// [`Meter::push_plane`], then close the block with [`Meter::end_block`].
#[derive(Debug)]
pub(crate) struct Meter {
    sample_rate: u32,
    channels: usize,
    frame_len: usize,
    talkers: Vec<TalkerChannel>,
    timeline: Timeline,
    frames: u64,
    sum_sq: f64,
    peak: f32,
    clipped: u64,
}

impl Meter {
    pub fn new(sample_rate: u32, channels: usize) -> Self {
        assert!(
            sample_rate > 0 && channels > 0,
            "meter needs a rate and channels"
        );
        let frame_len = frame_len(sample_rate);
        let frame_secs = frame_len as f64 / f64::from(sample_rate);
        let n_talkers = channels.min(2);
        let talkers = (0..n_talkers)
            .map(|_| TalkerChannel {
                fill: 0,
                sum_sq: 0.0,
                completed: Vec::new(),
                gate: SpeechGate::new(frame_secs),
            })
            .collect();
        Self {
            sample_rate,
            channels,
            frame_len,
            talkers,
            timeline: Timeline::new(n_talkers, sample_rate),
            frames: 0,
            sum_sq: 0.0,
            peak: 0.0,
            clipped: 0,
        }
    }

    /// Adds one channel's samples of the current block (samples in -1.0..=1.0 full scale).
    pub fn push_plane(&mut self, channel: usize, samples: &[f32]) {
        let Some(t) = self.talkers.get_mut(channel) else {
            let (sq, pk, cl) = block_stats(samples);
            self.sum_sq += sq;
            self.peak = self.peak.max(pk);
            self.clipped += cl;
            return;
        };
        let mut rest = samples;
        while !rest.is_empty() {
            let take = rest.len().min(self.frame_len - t.fill);
            let (chunk, tail) = rest.split_at(take);
            let (sq, pk, cl) = block_stats(chunk);
            self.sum_sq += sq;
            self.peak = self.peak.max(pk);
            self.clipped += cl;
            t.sum_sq += sq;
            t.fill += take;
            if t.fill == self.frame_len {
                t.completed
                    .push(mean_square_to_dbfs(t.sum_sq / self.frame_len as f64));
                t.fill = 0;
                t.sum_sq = 0.0;
            }
            rest = tail;
        }
    }

    /// Closes a block of `frames` sample frames once every channel's plane has been pushed.
    pub fn end_block(&mut self, frames: usize) {
        self.frames += frames as u64;
        // All planes of a block have the same length, so every talker completed the same frames.
        let completed = self.talkers.first().map_or(0, |t| t.completed.len());
        for i in 0..completed {
            let mut mask = 0u8;
            for (c, t) in self.talkers.iter_mut().enumerate() {
                if t.gate.is_speech(t.completed[i]) {
                    mask |= 1 << c;
                }
            }
            self.timeline.push(mask, self.frame_len as u64);
        }
        for t in &mut self.talkers {
            t.completed.clear();
        }
    }

    /// Settles the last, possibly partial, frame and returns the totals.
    pub fn finish(mut self) -> Measurements {
        let partial = self.talkers.first().map_or(0, |t| t.fill);
        if partial > 0 {
            let mut mask = 0u8;
            for (c, t) in self.talkers.iter_mut().enumerate() {
                if t.gate
                    .is_speech(mean_square_to_dbfs(t.sum_sq / partial as f64))
                {
                    mask |= 1 << c;
                }
            }
            self.timeline.push(mask, partial as u64);
        }
        self.timeline.finish();
        let samples = self.frames * self.channels as u64;
        let (mean_dbfs, clipping_ratio) = if samples == 0 {
            (SILENCE_DBFS, 0.0)
        } else {
            (
                mean_square_to_dbfs(self.sum_sq / samples as f64),
                self.clipped as f64 / samples as f64,
            )
        };
        Measurements {
            sample_rate: self.sample_rate,
            channels: self.channels as u16,
            frames: self.frames,
            talk_samples: self.timeline.totals.talk,
            overlap_samples: self.timeline.totals.overlap,
            silence_samples: self.timeline.totals.silence,
            longest_silence_samples: self.timeline.totals.longest_silence,
            interaction: self
                .timeline
                .totals
                .turns
                .take()
                .map_or_else(Interaction::default, TurnTracker::finish),
            mean_dbfs,
            peak_dbfs: mean_square_to_dbfs(f64::from(self.peak) * f64::from(self.peak)),
            clipping_ratio,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 8000;

    /// Builds a channel: `(start_s, end_s)` bursts of a 1 kHz sine at `amp`, silence elsewhere.
    fn channel(secs: f64, bursts: &[(f64, f64)], amp: f32) -> Vec<f32> {
        crate::test_signal::tone_bursts(RATE, secs, bursts, amp)
    }

    /// Feeds planes in blocks of `block` frames, like a decoder would.
    fn measure(planes: &[Vec<f32>], block: usize) -> Measurements {
        let mut m = Meter::new(RATE, planes.len());
        let n = planes[0].len();
        let mut start = 0;
        while start < n {
            let end = (start + block).min(n);
            for (c, p) in planes.iter().enumerate() {
                m.push_plane(c, &p[start..end]);
            }
            m.end_block(end - start);
            start = end;
        }
        m.finish()
    }

    #[test]
    fn a_burst_on_one_channel_is_talk_for_that_channel_only() {
        let planes = vec![channel(4.0, &[(0.5, 2.5)], 0.25), channel(4.0, &[], 0.0)];
        let m = measure(&planes, 1152);
        assert_eq!(m.frames, 32_000);
        assert_eq!(m.samples_to_ms(m.talk_samples[0]), 2000);
        assert_eq!(m.talk_samples[1], 0);
        assert_eq!(m.overlap_samples, 0);
        assert_eq!(m.samples_to_ms(m.silence_samples), 2000);
        assert_eq!(m.samples_to_ms(m.longest_silence_samples), 1500);
    }

    #[test]
    fn results_do_not_depend_on_block_size() {
        let planes = vec![
            channel(3.0, &[(0.3, 1.7), (1.9, 2.2)], 0.3),
            channel(3.0, &[(1.0, 2.9)], 0.1),
        ];
        let reference = measure(&planes, 160);
        for block in [1, 7, 100, 161, 1024, 4096, 100_000] {
            let m = measure(&planes, block);
            assert_eq!(m.talk_samples, reference.talk_samples, "block {block}");
            assert_eq!(
                m.overlap_samples, reference.overlap_samples,
                "block {block}"
            );
            assert_eq!(m.longest_silence_samples, reference.longest_silence_samples);
            assert!(
                (m.mean_dbfs - reference.mean_dbfs).abs() < 1e-6,
                "block {block}"
            );
        }
    }

    #[test]
    fn short_gaps_are_bridged_and_long_gaps_are_not() {
        // After 0.5 s of silence: a 200 ms gap (bridged) then a 500 ms gap (not bridged).
        let planes = vec![channel(3.5, &[(0.5, 1.5), (1.7, 2.0), (2.5, 3.0)], 0.3)];
        let m = measure(&planes, 512);
        assert_eq!(m.samples_to_ms(m.talk_samples[0]), 1000 + 200 + 300 + 500);
        assert_eq!(m.samples_to_ms(m.longest_silence_samples), 500);
    }

    #[test]
    fn overlap_counts_both_channels_talking() {
        let planes = vec![
            channel(6.0, &[(0.5, 3.0)], 0.25),
            channel(6.0, &[(2.0, 4.5)], 0.25),
        ];
        let m = measure(&planes, 1024);
        assert_eq!(m.samples_to_ms(m.overlap_samples), 1000);
        assert_eq!(m.samples_to_ms(m.silence_samples), 2000);
    }

    #[test]
    fn steady_noise_is_learnt_as_floor_not_talk() {
        // A constant -30 dBFS hum for 10 s with a -10 dBFS burst in the middle.
        let n = 10 * RATE as usize;
        let hum: Vec<f32> = (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(RATE);
                let a = if (5.0..6.0).contains(&t) { 0.45 } else { 0.045 };
                (a * (2.0 * std::f64::consts::PI * 50.0 * t).sin()) as f32
            })
            .collect();
        let m = measure(&[hum], 800);
        let talk = m.samples_to_ms(m.talk_samples[0]);
        assert!((900..=1100).contains(&talk), "talk {talk}");
    }

    #[test]
    fn levels_of_a_full_scale_square_wave() {
        let sq: Vec<f32> = (0..8000)
            .map(|i| if i % 16 < 8 { 1.0 } else { -1.0 })
            .collect();
        let m = measure(&[sq], 333);
        assert!(m.mean_dbfs.abs() < 1e-6);
        assert!(m.peak_dbfs.abs() < 1e-6);
        assert_eq!(m.clipping_ratio, 1.0);
    }

    #[test]
    fn digital_silence_is_clamped_not_minus_infinity() {
        let m = measure(&[vec![0.0; 8000]], 1000);
        assert_eq!(m.mean_dbfs, SILENCE_DBFS);
        assert_eq!(m.peak_dbfs, SILENCE_DBFS);
        assert_eq!(m.talk_samples, [0, 0]);
        assert_eq!(m.silence_samples, 8000);
    }

    #[test]
    fn hostile_samples_fed_straight_to_the_meter_give_finite_figures() {
        let hostile = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e20,
            -1e20,
            1e-40,
        ];
        for value in hostile {
            let m = measure(&[vec![value; 8000], vec![0.1; 8000]], 1000);
            for (what, figure) in [
                ("mean", m.mean_dbfs),
                ("peak", m.peak_dbfs),
                ("clipping", m.clipping_ratio),
            ] {
                assert!(figure.is_finite(), "{value}: {what} {figure}");
            }
            assert!((-120.0..=0.0).contains(&m.mean_dbfs), "{value}: {m:?}");
            assert!((-120.0..=0.0).contains(&m.peak_dbfs), "{value}: {m:?}");
        }
        let m = measure(&[vec![f32::INFINITY; 8000]], 1000);
        assert_eq!((m.peak_dbfs, m.clipping_ratio), (0.0, 1.0), "saturated");
        let m = measure(&[vec![f32::NAN; 8000]], 1000);
        assert_eq!(m.mean_dbfs, SILENCE_DBFS, "NaN is silence");
    }

    #[test]
    fn a_partial_last_frame_counts_its_real_length() {
        // 1.01 s of tone after 0.5 s silence: the last 10 ms are a partial 80-sample frame.
        let planes = vec![channel(1.51, &[(0.5, 1.51)], 0.3)];
        let m = measure(&planes, 999);
        assert_eq!(m.frames, 12_080);
        assert_eq!(m.samples_to_ms(m.talk_samples[0]), 1010);
    }
}
