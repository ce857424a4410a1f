//! What a decoded sample may be before anything measures or resamples it.
//!
//! Integer PCM always converts into -1.0..=1.0, but float WAVs (format tag 3) carry whatever
//! 32- or 64-bit values the file holds: NaN, ±infinity, 1e20, subnormals. One such value turns
//! a sum of squares into infinity or NaN, and a non-finite level cannot be stored (JSON has no
//! infinity), so every sample is made ordinary here, once, for every consumer:
//!
//! | sample                         | becomes             | why |
//! |--------------------------------|---------------------|-----|
//! | NaN                            | 0.0 (silence)       | no level can be read from it; dropping it instead would shorten the call and shift every later frame |
//! | +inf, -inf                     | +1.0, -1.0          | the sign is still meaningful: a DAC saturates at full scale |
//! | \|x\| > 1 (1e20, lossy overshoot) | ±1.0                | same saturation; counted as clipped by the meter |
//! | subnormal (\|x\| < 1.18e-38)   | 0.0                 | inaudible (below -750 dBFS) and slow to compute with |
//!
//! NaN and ±infinity are *invalid* (no recorder produces them); [`SampleCheck`] counts them so
//! a recording made mostly of them can be refused instead of measured as silence.

/// The ordinary value of one decoded sample (see the module table).
#[inline]
pub fn sanitize_sample(s: f32) -> f32 {
    if s.is_nan() || s.abs() < f32::MIN_POSITIVE {
        0.0
    } else {
        s.clamp(-1.0, 1.0)
    }
}

/// [`sanitize_sample`] for 64-bit float input: the range is judged before narrowing, so a
/// finite 1e300 saturates like 1e20 rather than becoming an "invalid" f32 infinity.
#[inline]
pub(crate) fn sanitize_f64(s: f64) -> f32 {
    if s.is_nan() {
        0.0
    } else {
        sanitize_sample(s.clamp(-1.0, 1.0) as f32)
    }
}

/// True when the sample is already what [`sanitize_sample`] would make of it. Written with
/// comparisons only, which are false for NaN, so the check vectorises.
#[inline]
fn is_ordinary(s: f32) -> bool {
    let a = s.abs();
    a == 0.0 || (f32::MIN_POSITIVE..=1.0).contains(&a)
}

/// Counts the invalid (NaN or infinite) samples of a stream and makes float planes ordinary.
#[derive(Debug, Default)]
pub(crate) struct SampleCheck {
    pub invalid: u64,
    pub total: u64,
}

impl SampleCheck {
    /// Returns `plane` itself when every sample is ordinary (the usual case: no copy), else a
    /// sanitised copy in `scratch`.
    pub fn f32_plane<'a>(&mut self, plane: &'a [f32], scratch: &'a mut Vec<f32>) -> &'a [f32] {
        self.total += plane.len() as u64;
        if plane.iter().all(|&s| is_ordinary(s)) {
            return plane;
        }
        self.invalid += plane.iter().filter(|s| !s.is_finite()).count() as u64;
        scratch.clear();
        scratch.extend(plane.iter().map(|&s| sanitize_sample(s)));
        scratch
    }

    /// A sanitised f32 copy of a 64-bit float plane, in `scratch`.
    pub fn f64_plane<'a>(&mut self, plane: &[f64], scratch: &'a mut Vec<f32>) -> &'a [f32] {
        self.total += plane.len() as u64;
        self.invalid += plane.iter().filter(|s| !s.is_finite()).count() as u64;
        scratch.clear();
        scratch.extend(plane.iter().map(|&s| sanitize_f64(s)));
        scratch
    }

    /// Integer samples are always in range; they count towards the total only.
    pub fn integer_plane(&mut self, len: usize) {
        self.total += len as u64;
    }

    /// More invalid samples than valid ones: the recording is not audio to be measured (the
    /// same judgement as for damaged packets, where more bad than good fails the file).
    pub fn mostly_invalid(&self) -> bool {
        self.invalid > self.total - self.invalid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_hostile_sample_becomes_an_ordinary_one() {
        let cases = [
            (f32::NAN, 0.0),
            (f32::INFINITY, 1.0),
            (f32::NEG_INFINITY, -1.0),
            (1e20, 1.0),
            (-1e20, -1.0),
            (1.0e-40, 0.0),
            (-1.0e-40, 0.0),
            (0.5, 0.5),
            (-1.0, -1.0),
            (-0.0, -0.0),
        ];
        for (input, expected) in cases {
            assert_eq!(sanitize_sample(input), expected, "{input}");
        }
        assert_eq!(sanitize_f64(1e300), 1.0);
        assert_eq!(sanitize_f64(f64::NEG_INFINITY), -1.0);
        assert_eq!(sanitize_f64(f64::NAN), 0.0);
        assert_eq!(sanitize_f64(1e-300), 0.0);
    }

    #[test]
    fn ordinary_planes_pass_without_a_copy_and_hostile_ones_are_counted() {
        let mut check = SampleCheck::default();
        let mut scratch = Vec::new();
        let clean = [0.0, 0.25, -1.0, 1.0];
        assert!(std::ptr::eq(
            check.f32_plane(&clean, &mut scratch),
            &clean[..]
        ));
        let hostile = [f32::NAN, f32::INFINITY, 2.0, 1e-42];
        assert_eq!(
            check.f32_plane(&hostile, &mut scratch),
            &[0.0, 1.0, 1.0, 0.0]
        );
        assert_eq!((check.invalid, check.total), (2, 8));
        assert!(!check.mostly_invalid());
        check.f32_plane(&[f32::NAN; 5], &mut scratch);
        assert!(check.mostly_invalid(), "7 of 13");
    }
}
