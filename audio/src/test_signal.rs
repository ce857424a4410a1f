//! Signals the unit tests of the detector and the meter are built from.

/// `secs` of a 1 kHz tone at `amp` in the given `(start_s, end_s)` bursts, silence elsewhere.
pub fn tone_bursts(rate: u32, secs: f64, bursts: &[(f64, f64)], amp: f32) -> Vec<f32> {
    let n = (secs * f64::from(rate)) as usize;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            if bursts.iter().any(|&(a, b)| t >= a && t < b) {
                amp * (2.0 * std::f64::consts::PI * 1000.0 * t).sin() as f32
            } else {
                0.0
            }
        })
        .collect()
}
