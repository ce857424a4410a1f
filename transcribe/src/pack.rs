//! Packing a channel's speech spans into model windows, and mapping times back.
//!
//! Whisper reads audio in windows of up to 30 s. Decoding every speech span on its own costs
//! one encoder pass and one decoder start per span, and a conversational side has a span every
//! few seconds. Several short spans are therefore laid end to end in one window, each preceded
//! by a short stretch of silence ([`Packing::gap`]): the silence before the first span gives
//! the model a lead-in even when the span starts at sample 0 of the recording, and the ones
//! between spans give it a pause to end a segment at.
//!
//! A [`Window`] remembers where each span sits, so a time the model reports inside the window
//! maps back exactly to the recording ([`Window::to_recording`]). Pure arithmetic, no IO.

use std::ops::Range;

/// How spans are laid into windows (all lengths in samples).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packing {
    /// Longest window built from several spans. A span longer than this gets a window of its
    /// own (the model walks through it window by window itself).
    pub max_window: usize,
    /// Silence before each span in a window.
    pub gap: usize,
    /// Whether several spans may share a window; when false every span is a window.
    pub pack: bool,
}

/// One span of the recording placed in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Samples of the recording.
    pub source: Range<usize>,
    /// Where `source` starts in the window.
    pub at: usize,
}

impl Piece {
    fn window_range(&self) -> Range<usize> {
        self.at..self.at + self.source.len()
    }
}

/// Audio for one model pass: silence and spans of the recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub pieces: Vec<Piece>,
    /// Samples in the window, the silence after the last piece excluded.
    pub len: usize,
}

impl Window {
    /// The window's samples, taken from `channel` (the recording's channel the spans are in).
    pub fn audio_into(&self, channel: &[f32], out: &mut Vec<f32>) {
        out.clear();
        out.resize(self.len, 0.0);
        for p in &self.pieces {
            out[p.window_range()].copy_from_slice(&channel[p.source.clone()]);
        }
    }

    /// Index of the piece a window position belongs to: the piece holding it, else (in the
    /// silence between pieces) the nearest one.
    pub fn piece_at(&self, position: usize) -> usize {
        let distance = |p: &Piece| {
            let r = p.window_range();
            if position < r.start {
                r.start - position
            } else if position >= r.end {
                position + 1 - r.end
            } else {
                0
            }
        };
        (0..self.pieces.len())
            .min_by_key(|&i| distance(&self.pieces[i]))
            .unwrap_or(0)
    }

    /// Recording sample of window `position`, kept inside piece `piece`: positions in the
    /// silence around a piece map to its nearest edge, never into audio the window left out.
    pub fn to_recording(&self, piece: usize, position: usize) -> usize {
        let p = &self.pieces[piece];
        let offset = position.saturating_sub(p.at).min(p.source.len());
        p.source.start + offset
    }
}

/// Lays `spans` (sorted, disjoint ranges of one channel) into windows, in order.
pub fn pack(spans: &[Range<usize>], packing: Packing) -> Vec<Window> {
    let mut windows: Vec<Window> = Vec::new();
    for span in spans {
        let needed = packing.gap + span.len();
        match windows.last_mut() {
            Some(w) if packing.pack && w.len + needed <= packing.max_window => {
                w.pieces.push(Piece {
                    source: span.clone(),
                    at: w.len + packing.gap,
                });
                w.len += needed;
            }
            _ => windows.push(Window {
                pieces: vec![Piece {
                    source: span.clone(),
                    at: packing.gap,
                }],
                len: needed,
            }),
        }
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKED: Packing = Packing {
        max_window: 100,
        gap: 5,
        pack: true,
    };

    #[test]
    fn short_spans_share_a_window_until_it_is_full() {
        let w = pack(&[10..40, 50..80, 90..120, 130..140], PACKED);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(
            w[0].pieces,
            vec![
                Piece { source: 10..40, at: 5 },
                Piece { source: 50..80, at: 40 },
                Piece { source: 90..120, at: 75 }
            ]
        );
        assert_eq!(w[0].len, 105 - 5);
        assert_eq!(w[1].pieces, vec![Piece { source: 130..140, at: 5 }]);
        assert_eq!(w[1].len, 15);
    }

    #[test]
    fn a_span_longer_than_a_window_stands_alone() {
        let w = pack(&[0..10, 20..500, 510..520], PACKED);
        assert_eq!(w.len(), 3);
        assert_eq!(w[1].pieces, vec![Piece { source: 20..500, at: 5 }]);
        assert_eq!(w[1].len, 485);
    }

    #[test]
    fn without_packing_every_span_is_a_window_with_its_lead_in() {
        let w = pack(
            &[0..10, 20..30],
            Packing {
                pack: false,
                ..PACKED
            },
        );
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].pieces, vec![Piece { source: 0..10, at: 5 }]);
    }

    #[test]
    fn window_audio_is_the_spans_with_silence_between() {
        let channel: Vec<f32> = (0..200).map(|i| i as f32).collect();
        let w = &pack(&[10..13, 50..52], PACKED)[0];
        let mut out = Vec::new();
        w.audio_into(&channel, &mut out);
        assert_eq!(
            out,
            vec![0.0, 0.0, 0.0, 0.0, 0.0, 10.0, 11.0, 12.0, 0.0, 0.0, 0.0, 0.0, 0.0, 50.0, 51.0]
        );
    }

    #[test]
    fn times_map_back_exactly_and_stay_inside_their_piece() {
        let w = &pack(&[1000..1300, 5000..5400], PACKED.with_window(10_000))[0];
        // Piece 0 sits at 5..305, piece 1 at 310..710.
        assert_eq!(w.piece_at(5), 0);
        assert_eq!(w.to_recording(0, 5), 1000);
        assert_eq!(w.to_recording(0, 104), 1099);
        assert_eq!(w.piece_at(320), 1);
        assert_eq!(w.to_recording(1, 320), 5010);
        // The silence before a piece maps to its start, beyond its end to its end.
        assert_eq!(w.piece_at(0), 0);
        assert_eq!(w.to_recording(0, 0), 1000);
        assert_eq!(w.piece_at(306), 0);
        assert_eq!(w.piece_at(309), 1);
        assert_eq!(w.to_recording(0, 700), 1300);
        assert_eq!(w.piece_at(9_000), 1);
        assert_eq!(w.to_recording(1, 9_000), 5400);
    }

    impl Packing {
        fn with_window(self, max_window: usize) -> Self {
            Packing { max_window, ..self }
        }
    }
}
