//! Where on a channel someone is talking, for the engines.
//!
//! Whisper invents text for audio without speech ("Thank you.", "you"), and in a stereo call
//! each side is silent about half the time. Engines therefore only get the stretches found here:
//! a side with no speech produces no segments at all, and no model time is spent on silence.
//!
//! Talk is found by the same voice-activity detector that measures talk time and turns
//! ([`callingest_audio::vad`]), so what is transcribed is what was counted as talk. This module
//! only shapes its runs for an engine: runs less than [`MERGE_GAP_MS`] apart join one span (a
//! turn with pauses stays one piece of context), spans with less than [`MIN_SPEECH_MS`] of talk
//! (clicks, a cough) are dropped, and the rest get [`PAD_MS`] on each side for soft word edges.

use std::ops::Range;

use crate::SAMPLE_RATE;

/// Runs of talk closer than this are one span.
pub const MERGE_GAP_MS: usize = 800;
/// Context kept before and after each span.
pub const PAD_MS: usize = 250;
/// Less speech than this in a span is not worth transcribing.
pub const MIN_SPEECH_MS: usize = 120;

const fn samples(ms: usize) -> usize {
    ms * SAMPLE_RATE as usize / 1000
}

/// Sample ranges of `samples` (16 kHz) that hold speech, sorted and non-overlapping.
pub fn speech_spans(samples_16k: &[f32]) -> Vec<Range<usize>> {
    let runs = callingest_audio::speech_runs(samples_16k, SAMPLE_RATE);
    // (span, speech samples in it) after merging close runs.
    let mut merged: Vec<(Range<usize>, usize)> = Vec::new();
    for run in runs {
        let len = run.len();
        match merged.last_mut() {
            Some((span, speech)) if run.start - span.end < samples(MERGE_GAP_MS) => {
                span.end = run.end;
                *speech += len;
            }
            _ => merged.push((run, len)),
        }
    }
    let mut out: Vec<Range<usize>> = Vec::new();
    for (span, speech) in merged {
        if speech < samples(MIN_SPEECH_MS) {
            continue;
        }
        let start = span.start.saturating_sub(samples(PAD_MS));
        let end = (span.end + samples(PAD_MS)).min(samples_16k.len());
        match out.last_mut() {
            // Padding can make neighbours touch; keep the ranges disjoint.
            Some(prev) if start <= prev.end => prev.end = end,
            _ => out.push(start..end),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SR: usize = SAMPLE_RATE as usize;

    /// A 200 Hz "voice" between `from` and `to` seconds on `seconds` of background.
    fn clip(seconds: f32, bursts: &[(f32, f32)], background: impl Fn(usize) -> f32) -> Vec<f32> {
        let n = (seconds * SR as f32) as usize;
        (0..n)
            .map(|i| {
                let t = i as f32 / SR as f32;
                let voice = bursts.iter().any(|&(a, b)| t >= a && t < b);
                let v = if voice {
                    0.3 * (2.0 * std::f32::consts::PI * 200.0 * t).sin()
                } else {
                    0.0
                };
                v + background(i)
            })
            .collect()
    }

    /// Deterministic white-ish noise of the given peak amplitude.
    fn noise(amplitude: f32) -> impl Fn(usize) -> f32 {
        move |i| {
            let x = (i as u32).wrapping_mul(2_654_435_761).rotate_left(13) ^ 0x9e37_79b9;
            let x = x.wrapping_mul(0x85eb_ca6b);
            amplitude * ((x >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0)
        }
    }

    #[test]
    fn digital_silence_has_no_speech() {
        assert!(speech_spans(&vec![0.0; SR * 5]).is_empty());
        assert!(speech_spans(&[]).is_empty());
    }

    #[test]
    fn quiet_line_noise_has_no_speech() {
        assert!(speech_spans(&clip(5.0, &[], noise(0.003))).is_empty());
    }

    #[test]
    fn a_burst_is_found_with_padding() {
        let x = clip(6.0, &[(2.0, 3.0)], noise(0.001));
        let spans = speech_spans(&x);
        assert_eq!(spans.len(), 1);
        let (s, e) = (
            spans[0].start as f32 / SR as f32,
            spans[0].end as f32 / SR as f32,
        );
        assert!((s - 1.75).abs() < 0.03, "start {s}");
        assert!((e - 3.25).abs() < 0.03, "end {e}");
    }

    #[test]
    fn short_pauses_join_and_long_ones_split() {
        let x = clip(10.0, &[(1.0, 2.0), (2.5, 3.0), (6.0, 7.0)], |_| 0.0);
        let spans = speech_spans(&x);
        assert_eq!(spans.len(), 2, "{spans:?}");
    }

    #[test]
    fn a_click_is_not_speech() {
        let mut x = vec![0.0; SR * 3];
        for v in &mut x[SR..SR + 800] {
            *v = 0.5;
        }
        assert!(speech_spans(&x).is_empty());
    }

    #[test]
    fn speech_from_the_first_sample_and_without_pauses_is_found() {
        // Issue 15: the opening words were lost when the clip began with speech. A 12 s clip
        // that is speech from its first sample to its last is one span, whole.
        let x = clip(12.0, &[(0.0, 12.0)], |_| 0.0);
        assert_eq!(speech_spans(&x), vec![0..x.len()]);
    }

    #[test]
    fn loud_continuous_noise_raises_the_threshold() {
        // Hum at -30 dBFS everywhere, voice 20 dB above it for one second.
        let hum =
            |i: usize| 0.045 * (2.0 * std::f32::consts::PI * 50.0 * i as f32 / SR as f32).sin();
        let x = clip(8.0, &[(4.0, 5.0)], hum);
        let spans = speech_spans(&x);
        assert_eq!(spans.len(), 1, "{spans:?}");
    }
}
