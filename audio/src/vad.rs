//! The one voice-activity detector of callingest: where on a channel someone is talking.
//!
//! The level meter ([`crate::analyze`]: talk time, silence, overlap, turns) and the
//! transcription crate (which stretches get transcribed) both use it, so talk time and
//! transcribed stretches follow the same rule. It is streaming, works at the stream's native
//! rate and keeps O(1) state per channel.
//!
//! # Rule (detector version [`DETECTOR_VERSION`])
//!
//! 1. The channel is cut into [`FRAME_MS`] frames (at the native rate; a trailing partial frame
//!    counts its real length).
//! 2. A frame is speech when its RMS level is above
//!    `max(`[`ABSOLUTE_THRESHOLD_DBFS`]`, min(noise floor + `[`NOISE_MARGIN_DB`]`, `[`CERTAIN_SPEECH_DBFS`]`))`.
//!    The noise floor is a running minimum of the channel's frame levels: it starts at the first
//!    frame, drops at once to any quieter frame and otherwise rises [`FLOOR_RISE_DB_PER_S`], so
//!    steady hum or line noise is learnt as floor. Because the threshold never rises above
//!    [`CERTAIN_SPEECH_DBFS`], a clip that is speech from its first sample, or nearly all speech
//!    (whose floor is learnt from the speech itself), still has its speech found.
//! 3. Gaps of at most [`HANGOVER_MS`] between speech frames are speech too (the pauses between
//!    syllables and words); no hangover is added after the last speech frame of a run.
//!
//! Version 1 (events without a `detector_version`) had no [`CERTAIN_SPEECH_DBFS`] cap, so
//! speech from the first sample of a channel was missed until its first pause, and transcription
//! used its own percentile rule on the whole channel.

use std::collections::VecDeque;
use std::ops::Range;

/// Recorded with every analysis (`RecordingAnalyzed.detector_version`).
pub const DETECTOR_VERSION: u32 = 2;
/// Analysis frame length. 20 ms is the usual speech-processing frame: long enough for a stable
/// RMS, short enough that talk-time quantisation stays well under the tolerances that matter.
pub const FRAME_MS: u32 = 20;
/// Nothing quieter than this is speech, however quiet the line is.
pub const ABSOLUTE_THRESHOLD_DBFS: f64 = -45.0;
/// How far above the learnt noise floor a frame must be to be speech.
pub const NOISE_MARGIN_DB: f64 = 12.0;
/// A frame this loud is speech whatever the learnt floor: telephone speech is normalised well
/// above it, while hum and line noise sit well below it.
pub const CERTAIN_SPEECH_DBFS: f64 = -26.0;
/// How fast the noise floor creeps up when every frame is louder than it.
pub const FLOOR_RISE_DB_PER_S: f64 = 5.0;
/// Longest gap between speech frames that is still counted as talk.
pub const HANGOVER_MS: u32 = 300;
/// Level reported for digital silence instead of -inf.
pub(crate) const SILENCE_DBFS: f64 = -120.0;

/// Samples in one frame at `sample_rate`.
pub fn frame_len(sample_rate: u32) -> usize {
    ((sample_rate as usize * FRAME_MS as usize) / 1000).max(1)
}

/// Converts a mean square to dBFS within [`SILENCE_DBFS`]..=0: digital silence (and, should
/// one ever get here, NaN) is [`SILENCE_DBFS`], anything at or beyond full scale is 0. The
/// result is always finite, so it can be stored and sent as JSON.
pub(crate) fn mean_square_to_dbfs(ms: f64) -> f64 {
    if ms > 0.0 {
        (10.0 * ms.log10()).clamp(SILENCE_DBFS, 0.0)
    } else {
        SILENCE_DBFS
    }
}

/// Per-channel running noise floor and the speech decision for one frame level (rule 2).
#[derive(Debug)]
pub(crate) struct SpeechGate {
    floor_db: Option<f64>,
    rise_per_frame_db: f64,
}

impl SpeechGate {
    pub fn new(frame_secs: f64) -> Self {
        Self {
            floor_db: None,
            rise_per_frame_db: FLOOR_RISE_DB_PER_S * frame_secs,
        }
    }

    pub fn is_speech(&mut self, level_db: f64) -> bool {
        let floor = match self.floor_db {
            Some(f) if level_db >= f => f + self.rise_per_frame_db,
            _ => level_db,
        }
        .min(level_db);
        self.floor_db = Some(floor);
        let threshold = (floor + NOISE_MARGIN_DB).min(CERTAIN_SPEECH_DBFS);
        level_db > threshold.max(ABSOLUTE_THRESHOLD_DBFS)
    }
}

/// Rule 3 for up to two channels at once: bridges gaps of at most `max_gap` frames and hands
/// each frame on, with its final speech mask, once no later frame can change it.
///
/// A frame waits in `pending` until `max_gap` newer frames exist: that delay is the whole
/// look-ahead and keeps memory fixed.
#[derive(Debug)]
pub(crate) struct Hangover {
    talkers: usize,
    max_gap: usize,
    /// (speech mask, length in samples) of frames not yet final; bit c = channel c talking.
    pending: VecDeque<(u8, u64)>,
    next_index: u64,
    last_speech: [Option<u64>; 2],
}

impl Hangover {
    pub fn new(talkers: usize) -> Self {
        let max_gap = (HANGOVER_MS / FRAME_MS) as usize;
        Self {
            talkers,
            max_gap,
            pending: VecDeque::with_capacity(max_gap + 1),
            next_index: 0,
            last_speech: [None; 2],
        }
    }

    pub fn push(&mut self, mask: u8, len: u64, settled: &mut impl FnMut(u8, u64)) {
        let idx = self.next_index;
        // Index of pending[0]; every frame within `max_gap` of `idx` is still pending.
        let first_pending = idx - self.pending.len() as u64;
        for c in 0..self.talkers {
            if mask & (1 << c) == 0 {
                continue;
            }
            if let Some(last) = self.last_speech[c] {
                let gap = idx - last - 1;
                if gap > 0 && gap as usize <= self.max_gap {
                    for j in last + 1..idx {
                        self.pending[(j - first_pending) as usize].0 |= 1 << c;
                    }
                }
            }
            self.last_speech[c] = Some(idx);
        }
        self.pending.push_back((mask, len));
        self.next_index += 1;
        while self.pending.len() > self.max_gap {
            let (mask, len) = self.pending.pop_front().expect("len checked");
            settled(mask, len);
        }
    }

    pub fn finish(&mut self, settled: &mut impl FnMut(u8, u64)) {
        while let Some((mask, len)) = self.pending.pop_front() {
            settled(mask, len);
        }
    }
}

/// The detector for one channel, fed samples in blocks of any size.
#[derive(Debug)]
pub struct VoiceActivityDetector {
    frame_len: usize,
    fill: usize,
    sum_sq: f64,
    gate: SpeechGate,
    hangover: Hangover,
}

impl VoiceActivityDetector {
    pub fn new(sample_rate: u32) -> Self {
        let frame_len = frame_len(sample_rate.max(1));
        Self {
            frame_len,
            fill: 0,
            sum_sq: 0.0,
            gate: SpeechGate::new(frame_len as f64 / f64::from(sample_rate.max(1))),
            hangover: Hangover::new(1),
        }
    }

    /// Feeds samples (-1.0..=1.0); every frame whose decision is final is passed to `settled`
    /// as `(is speech, length in samples)`, in order.
    pub fn push(&mut self, samples: &[f32], settled: &mut impl FnMut(bool, u64)) {
        let mut forward = |mask: u8, len: u64| settled(mask & 1 == 1, len);
        for &s in samples {
            let s = f64::from(crate::sanitize_sample(s));
            self.sum_sq += s * s;
            self.fill += 1;
            if self.fill == self.frame_len {
                let speech = self
                    .gate
                    .is_speech(mean_square_to_dbfs(self.sum_sq / self.frame_len as f64));
                self.hangover
                    .push(u8::from(speech), self.frame_len as u64, &mut forward);
                self.fill = 0;
                self.sum_sq = 0.0;
            }
        }
    }

    /// Decides the last, partial frame and settles every frame still pending.
    pub fn finish(mut self, settled: &mut impl FnMut(bool, u64)) {
        let mut forward = |mask: u8, len: u64| settled(mask & 1 == 1, len);
        if self.fill > 0 {
            let speech = self
                .gate
                .is_speech(mean_square_to_dbfs(self.sum_sq / self.fill as f64));
            self.hangover
                .push(u8::from(speech), self.fill as u64, &mut forward);
        }
        self.hangover.finish(&mut forward);
    }
}

/// Sample ranges of a whole channel at `sample_rate` where someone talks: the detector's runs,
/// sorted and disjoint.
pub fn speech_runs(samples: &[f32], sample_rate: u32) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    let mut at = 0usize;
    let mut collect = |speech: bool, len: u64| {
        let end = at + len as usize;
        if speech {
            match runs.last_mut() {
                Some(last) if last.end == at => last.end = end,
                _ => runs.push(at..end),
            }
        }
        at = end;
    };
    let mut detector = VoiceActivityDetector::new(sample_rate);
    detector.push(samples, &mut collect);
    detector.finish(&mut collect);
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 16_000;

    /// A 1 kHz tone at `amp` in the given `(start_s, end_s)` bursts, silence elsewhere.
    fn channel(secs: f64, bursts: &[(f64, f64)], amp: f32) -> Vec<f32> {
        crate::test_signal::tone_bursts(RATE, secs, bursts, amp)
    }

    fn secs(r: &Range<usize>) -> (f64, f64) {
        (
            r.start as f64 / f64::from(RATE),
            r.end as f64 / f64::from(RATE),
        )
    }

    #[test]
    fn speech_from_the_first_sample_is_found() {
        let runs = speech_runs(&channel(3.0, &[(0.0, 2.0)], 0.1), RATE);
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(secs(&runs[0]), (0.0, 2.0));
    }

    #[test]
    fn a_clip_that_is_all_speech_is_all_speech() {
        // -23 dBFS of uninterrupted "voice" for 20 s: the learnt floor climbs to it, yet the
        // certain-speech level keeps every frame speech.
        let runs = speech_runs(&channel(20.0, &[(0.0, 20.0)], 0.1), RATE);
        assert_eq!(runs, vec![0..20 * RATE as usize]);
    }

    #[test]
    fn steady_hum_below_the_certain_speech_level_is_floor() {
        let n = 10 * RATE as usize;
        let hum: Vec<f32> = (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(RATE);
                let a = if (5.0..6.0).contains(&t) { 0.45 } else { 0.045 };
                (a * (2.0 * std::f64::consts::PI * 50.0 * t).sin()) as f32
            })
            .collect();
        let runs = speech_runs(&hum, RATE);
        assert_eq!(runs.len(), 1, "{runs:?}");
        let (a, b) = secs(&runs[0]);
        assert!((a - 5.0).abs() < 0.03 && (b - 6.0).abs() < 0.03, "{a}..{b}");
    }

    #[test]
    fn short_gaps_are_bridged_and_long_ones_are_not() {
        let runs = speech_runs(
            &channel(4.0, &[(0.5, 1.5), (1.7, 2.0), (2.5, 3.0)], 0.3),
            RATE,
        );
        let runs: Vec<_> = runs.iter().map(secs).collect();
        assert_eq!(runs, vec![(0.5, 2.0), (2.5, 3.0)]);
    }

    #[test]
    fn quiet_sound_under_the_absolute_threshold_is_not_speech() {
        // -50 dBFS tone on digital silence: 12 dB over the floor, but under -45 dBFS.
        assert!(speech_runs(&channel(3.0, &[(1.0, 2.0)], 0.0045), RATE).is_empty());
    }
}
