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
//!
//! [`SpeechPieces`] does this as the audio streams in, holding only the audio of the span it is
//! building: a span longer than the engine's window (a monologue, music on hold) is handed on in
//! pieces of at most that length, cut in the middle of its last pause where it has one, so the
//! memory a channel needs does not grow with the call.

use std::ops::Range;

use callingest_audio::VoiceActivityDetector;

use crate::SAMPLE_RATE;

/// Runs of talk closer than this are one span.
pub const MERGE_GAP_MS: usize = 800;
/// Context kept before and after each span.
pub const PAD_MS: usize = 250;
/// Less speech than this in a span is not worth transcribing.
pub const MIN_SPEECH_MS: usize = 120;

// Padded neighbours never touch, so spans can be handed on as soon as they close.
const _: () = assert!(MERGE_GAP_MS >= 2 * PAD_MS);

const fn samples(ms: usize) -> usize {
    ms * SAMPLE_RATE as usize / 1000
}

/// Sample ranges of `samples` (16 kHz) that hold speech, sorted and non-overlapping.
pub fn speech_spans(samples_16k: &[f32]) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut pieces = SpeechPieces::new(usize::MAX);
    let mut keep = |start: usize, audio: &[f32]| {
        spans.push(start..start + audio.len());
        Ok::<(), std::convert::Infallible>(())
    };
    let kept = pieces
        .push(samples_16k, &mut keep)
        .and_then(|()| pieces.finish(&mut keep));
    kept.unwrap_or_else(|never| match never {});
    spans
}

/// The span being built: detector runs merged so far.
#[derive(Debug)]
struct OpenSpan {
    /// Where the next piece starts (the padded span start, then each cut).
    piece_start: usize,
    /// End of the last speech frame.
    end: usize,
    /// Speech samples since `piece_start`.
    speech: usize,
    /// Middle of the latest pause between runs, a place to cut a piece that grew too long.
    last_pause: Option<usize>,
    /// Speech samples after `last_pause`.
    speech_after_pause: usize,
}

/// Streaming [`speech_spans`] for one 16 kHz channel: audio goes in as it is decoded, and every
/// span (or piece of a long span, at most `max_piece` samples) comes out, with its audio and its
/// start in samples from the start of the channel, as soon as no later audio can change it
/// (0.8 s after its last speech).
///
/// Only the audio from the start of the open span (or the last [`PAD_MS`] when nobody talks)
/// to the newest sample is held: at most `max_piece` plus the detector's 0.3 s of look-ahead.
pub struct SpeechPieces {
    vad: VoiceActivityDetector,
    max_piece: usize,
    /// Samples the detector has settled.
    settled: usize,
    open: Option<OpenSpan>,
    /// Audio from `held_from` to the newest sample.
    held: Vec<f32>,
    held_from: usize,
    /// The detector's decisions for the current block, kept to reuse the allocation.
    decisions: Vec<(bool, u64)>,
}

impl SpeechPieces {
    /// `max_piece`: the longest piece handed on, in samples (`usize::MAX`: whole spans).
    pub fn new(max_piece: usize) -> Self {
        Self {
            vad: VoiceActivityDetector::new(SAMPLE_RATE),
            // A piece always holds at least its padding and one frame.
            max_piece: max_piece.max(samples(2 * PAD_MS + 40)),
            settled: 0,
            open: None,
            held: Vec::new(),
            held_from: 0,
            decisions: Vec::new(),
        }
    }

    /// Feeds the next samples; `on_piece(start, audio)` gets every piece that became final.
    pub fn push<E>(
        &mut self,
        samples_16k: &[f32],
        on_piece: &mut impl FnMut(usize, &[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.held.extend_from_slice(samples_16k);
        let mut decisions = std::mem::take(&mut self.decisions);
        decisions.clear();
        self.vad.push(samples_16k, &mut |speech, len| {
            decisions.push((speech, len))
        });
        let result = self.settle(&decisions, on_piece);
        self.decisions = decisions;
        result?;
        self.forget_old_audio();
        Ok(())
    }

    /// The end of the channel: the last frames are decided and the open span handed on.
    pub fn finish<E>(
        mut self,
        on_piece: &mut impl FnMut(usize, &[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut decisions = Vec::new();
        let vad = std::mem::replace(&mut self.vad, VoiceActivityDetector::new(SAMPLE_RATE));
        vad.finish(&mut |speech, len| decisions.push((speech, len)));
        self.settle(&decisions, on_piece)?;
        if let Some(open) = self.open.take() {
            self.close(open, on_piece)?;
        }
        Ok(())
    }

    fn received(&self) -> usize {
        self.held_from + self.held.len()
    }

    fn settle<E>(
        &mut self,
        decisions: &[(bool, u64)],
        on_piece: &mut impl FnMut(usize, &[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        for &(speech, len) in decisions {
            let (at, len) = (self.settled, len as usize);
            self.settled += len;
            if speech {
                match &mut self.open {
                    Some(open) if at - open.end < samples(MERGE_GAP_MS) => {
                        if at > open.end {
                            open.last_pause = Some(open.end + (at - open.end) / 2);
                            open.speech_after_pause = 0;
                        }
                        open.end = at + len;
                        open.speech += len;
                        open.speech_after_pause += len;
                    }
                    _ => {
                        if let Some(done) = self.open.take() {
                            self.close(done, on_piece)?;
                        }
                        self.open = Some(OpenSpan {
                            piece_start: at.saturating_sub(samples(PAD_MS)),
                            end: at + len,
                            speech: len,
                            last_pause: None,
                            speech_after_pause: len,
                        });
                    }
                }
            } else if self
                .open
                .as_ref()
                .is_some_and(|open| self.settled - open.end >= samples(MERGE_GAP_MS))
            {
                // No later run can join it: every later run starts at least a merge gap away.
                let done = self.open.take().expect("checked");
                self.close(done, on_piece)?;
            }
            self.cut_if_too_long(on_piece)?;
        }
        Ok(())
    }

    /// Hands on the front of an open span that has grown to `max_piece`, so the audio held
    /// stays bounded: up to the middle of its last pause when that keeps at least half a piece,
    /// else everything settled.
    fn cut_if_too_long<E>(
        &mut self,
        on_piece: &mut impl FnMut(usize, &[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        let settled = self.settled;
        let max_piece = self.max_piece;
        let Some(open) = &mut self.open else {
            return Ok(());
        };
        // Checked every frame (20 ms), so one frame of margin keeps pieces within max_piece.
        if settled - open.piece_start + samples(20) < max_piece {
            return Ok(());
        }
        let (cut, speech_after) = match open.last_pause {
            Some(pause) if pause - open.piece_start >= max_piece / 2 => {
                (pause, open.speech_after_pause)
            }
            _ => (settled, 0),
        };
        let piece = open.piece_start..cut;
        open.piece_start = cut;
        open.speech = speech_after;
        open.last_pause = None;
        open.speech_after_pause = speech_after;
        self.hand_on(piece, on_piece)
    }

    fn close<E>(
        &mut self,
        open: OpenSpan,
        on_piece: &mut impl FnMut(usize, &[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        if open.speech < samples(MIN_SPEECH_MS) {
            return Ok(());
        }
        let end = (open.end + samples(PAD_MS)).min(self.received());
        self.hand_on(open.piece_start..end, on_piece)
    }

    fn hand_on<E>(
        &self,
        piece: Range<usize>,
        on_piece: &mut impl FnMut(usize, &[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        let audio = &self.held[piece.start - self.held_from..piece.end - self.held_from];
        on_piece(piece.start, audio)
    }

    /// Drops audio no piece can need any more: before the open span's next piece, or before
    /// the padding of a span that could start at the first unsettled frame. Done once a second
    /// of it has gathered, so the copy is rare.
    fn forget_old_audio(&mut self) {
        let needed_from = match &self.open {
            Some(open) => open.piece_start,
            None => self.settled.saturating_sub(samples(PAD_MS)),
        };
        let droppable = needed_from.saturating_sub(self.held_from);
        if droppable >= samples(1000) && droppable * 2 >= self.held.len() {
            self.held.drain(..droppable);
            self.held_from += droppable;
        }
    }

    /// Samples of audio held right now (for tests of the memory bound).
    #[cfg(test)]
    fn held_len(&self) -> usize {
        self.held.len()
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

    /// Every piece `SpeechPieces` hands on for `x` fed in blocks of `block` samples, with the
    /// most audio it held at any time.
    fn pieces(x: &[f32], block: usize, max_piece: usize) -> (Vec<Range<usize>>, usize) {
        let mut pieces = SpeechPieces::new(max_piece);
        let mut out = Vec::new();
        let mut most_held = 0;
        let mut keep = |start: usize, audio: &[f32]| {
            // The audio handed on is the recording's, at the place it says.
            assert_eq!(audio, &x[start..start + audio.len()]);
            out.push(start..start + audio.len());
            Ok::<(), ()>(())
        };
        for b in x.chunks(block) {
            pieces.push(b, &mut keep).unwrap();
            most_held = most_held.max(pieces.held_len());
        }
        pieces.finish(&mut keep).unwrap();
        (out, most_held)
    }

    #[test]
    fn streamed_in_blocks_the_spans_are_those_of_the_whole_channel() {
        let x = clip(
            40.0,
            &[
                (0.0, 1.5),
                (2.0, 4.0),
                (9.0, 9.05),
                (12.0, 20.0),
                (39.5, 40.0),
            ],
            noise(0.001),
        );
        let whole = speech_spans(&x);
        assert_eq!(whole.len(), 3, "{whole:?}");
        for block in [1, 160, 1152, 44_100, x.len()] {
            assert_eq!(pieces(&x, block, usize::MAX).0, whole, "blocks of {block}");
        }
    }

    #[test]
    fn a_long_span_comes_in_pieces_cut_at_its_pauses() {
        // 100 s of talk in 4.5 s phrases with 0.5 s pauses: one span, far longer than a piece.
        let phrases: Vec<(f32, f32)> = (0..20)
            .map(|i| (i as f32 * 5.0, i as f32 * 5.0 + 4.5))
            .collect();
        let x = clip(101.0, &phrases, |_| 0.0);
        let whole = speech_spans(&x);
        assert_eq!(whole.len(), 1, "{whole:?}");
        let max = 30 * SR;
        let (got, _) = pieces(&x, 1152, max);
        assert!(got.len() >= 4, "{got:?}");
        // Back to back, covering exactly the span, none longer than a piece.
        assert_eq!(got.first().unwrap().start, whole[0].start);
        assert_eq!(got.last().unwrap().end, whole[0].end);
        for pair in got.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        for piece in &got {
            assert!(piece.len() <= max, "{piece:?}");
        }
        // Every cut falls in a pause, not inside a phrase.
        for piece in &got[..got.len() - 1] {
            let at = piece.end as f32 / SR as f32 % 5.0;
            assert!(
                (4.5..5.0).contains(&at),
                "cut at {} s",
                piece.end as f32 / SR as f32
            );
        }
    }

    #[test]
    fn talk_without_any_pause_is_cut_at_the_piece_length() {
        let x = clip(70.0, &[(0.0, 70.0)], |_| 0.0);
        let max = 30 * SR;
        let (got, most_held) = pieces(&x, 1152, max);
        assert_eq!(got.first().unwrap().start, 0);
        assert_eq!(got.last().unwrap().end, x.len());
        assert!(got.iter().all(|p| p.len() <= max), "{got:?}");
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(most_held <= max + SR, "held {most_held} samples");
    }

    #[test]
    fn the_audio_held_does_not_grow_with_the_channel() {
        // Ten minutes: a phrase every 7 s, and a 3-minute monologue in the middle.
        let mut bursts: Vec<(f32, f32)> = (0..85)
            .map(|i| (i as f32 * 7.0, i as f32 * 7.0 + 3.0))
            .collect();
        bursts.retain(|&(a, _)| !(200.0..380.0).contains(&a));
        bursts.push((200.0, 380.0));
        let x = clip(600.0, &bursts, noise(0.001));
        let max = 30 * SR;
        let (got, most_held) = pieces(&x, 1152, max);
        assert!(got.len() > 60, "{} pieces", got.len());
        assert!(most_held <= max + SR, "held {most_held} samples");
        // Without a monologue, what is held is about one phrase.
        let (_, most_held) = pieces(&x[..150 * SR], 1152, max);
        assert!(most_held < 6 * SR, "held {most_held} samples");
    }
}
