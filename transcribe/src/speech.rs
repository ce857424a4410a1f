//! Where on a channel someone is talking, by energy.
//!
//! Whisper invents text for audio without speech ("Thank you.", "you"), and in a stereo call
//! each side is silent about half the time. Engines therefore only get the stretches found here:
//! a side with no speech produces no segments at all, and no model time is spent on silence.
//!
//! Rule: 20 ms frames; a frame is speech when its RMS level is above
//! `max(`[`ABSOLUTE_THRESHOLD_DBFS`]`, noise floor + `[`NOISE_MARGIN_DB`]`)`, the noise floor being
//! the [`FLOOR_PERCENTILE`] of the channel's frame levels (steady hiss or hum is floor, not
//! talk). Speech frames less than [`MERGE_GAP_MS`] apart join one span, so a turn with pauses
//! between words stays whole; spans get [`PAD_MS`] on each side for soft word edges, and spans
//! with less than [`MIN_SPEECH_MS`] of speech frames (clicks, a cough) are dropped.

use std::ops::Range;

use crate::SAMPLE_RATE;

const FRAME_MS: usize = 20;
/// Nothing quieter is speech, however quiet the line (the same level the audio crate's talk
/// meter uses).
pub const ABSOLUTE_THRESHOLD_DBFS: f32 = -45.0;
/// How far above the noise floor a frame must be.
pub const NOISE_MARGIN_DB: f32 = 12.0;
/// Percentile of frame levels taken as the noise floor. Speech has pauses between words and
/// turns, so the quietest tenth of a channel is line noise even on a talkative side.
pub const FLOOR_PERCENTILE: f32 = 0.10;
/// Speech frames closer than this are one span.
pub const MERGE_GAP_MS: usize = 800;
/// Context kept before and after each span.
pub const PAD_MS: usize = 250;
/// Less speech than this in a span is not worth transcribing.
pub const MIN_SPEECH_MS: usize = 120;

const FRAME: usize = SAMPLE_RATE as usize * FRAME_MS / 1000;

/// Sample ranges of `samples` (16 kHz) that hold speech, sorted and non-overlapping.
pub fn speech_spans(samples: &[f32]) -> Vec<Range<usize>> {
    let levels: Vec<f32> = samples.chunks(FRAME).map(frame_dbfs).collect();
    if levels.is_empty() {
        return Vec::new();
    }
    let mut sorted = levels.clone();
    sorted.sort_by(f32::total_cmp);
    let floor = sorted[((sorted.len() - 1) as f32 * FLOOR_PERCENTILE) as usize];
    let threshold = ABSOLUTE_THRESHOLD_DBFS.max(floor + NOISE_MARGIN_DB);

    let merge_gap = MERGE_GAP_MS / FRAME_MS;
    // (first frame, last frame, speech frames) of each span.
    let mut spans: Vec<(usize, usize, usize)> = Vec::new();
    for (i, &level) in levels.iter().enumerate() {
        if level <= threshold {
            continue;
        }
        match spans.last_mut() {
            Some((_, last, count)) if i - *last <= merge_gap => {
                *last = i;
                *count += 1;
            }
            _ => spans.push((i, i, 1)),
        }
    }

    let pad = PAD_MS * SAMPLE_RATE as usize / 1000;
    let mut out: Vec<Range<usize>> = Vec::new();
    for (first, last, count) in spans {
        if count * FRAME_MS < MIN_SPEECH_MS {
            continue;
        }
        let start = (first * FRAME).saturating_sub(pad);
        let end = ((last + 1) * FRAME + pad).min(samples.len());
        match out.last_mut() {
            // Padding can make neighbours touch; keep the ranges disjoint.
            Some(prev) if start <= prev.end => prev.end = end,
            _ => out.push(start..end),
        }
    }
    out
}

fn frame_dbfs(frame: &[f32]) -> f32 {
    let ms = frame.iter().map(|v| v * v).sum::<f32>() / frame.len() as f32;
    if ms > 0.0 {
        (10.0 * ms.log10()).max(-120.0)
    } else {
        -120.0
    }
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
    fn loud_continuous_noise_raises_the_threshold() {
        // Hum at -30 dBFS everywhere, voice 20 dB above it for one second.
        let hum =
            |i: usize| 0.045 * (2.0 * std::f32::consts::PI * 50.0 * i as f32 / SR as f32).sin();
        let x = clip(8.0, &[(4.0, 5.0)], hum);
        let spans = speech_spans(&x);
        assert_eq!(spans.len(), 1, "{spans:?}");
    }
}
