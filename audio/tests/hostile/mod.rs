//! Hostile float WAVs (format tag 3), made in code so each sample is exactly what the test says.
//! Shared by the audio crate's tests, the transcription loader's and the service's end-to-end
//! tests (included there with `#[path]`).
#![allow(dead_code)]

/// What the service must make of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Measured with finite figures: the call completes.
    Completes,
    /// Refused as "recording holds invalid samples": the call fails.
    InvalidSamples,
}

/// One hostile recording: a file name (also its URL path in the end-to-end tests), its bytes
/// and what must become of it.
pub struct Hostile {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub expected: Expected,
}

const RATE: u32 = 8_000;

/// One second at 8 kHz: 0.25 s of silence, then a -12 dBFS 440 Hz tone (0.75 s of talk: a tone
/// from the very first frame would be learnt as the noise floor).
fn tone() -> Vec<f32> {
    (0..RATE)
        .map(|i| {
            let on = if i >= RATE / 4 { 0.25 } else { 0.0 };
            on * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / RATE as f32).sin()
        })
        .collect()
}

/// Every hostile recording the issue names, plus mixtures with real audio.
pub fn all() -> Vec<Hostile> {
    use Expected::*;
    let n = RATE as usize;
    let alternating =
        |v: f32| -> Vec<f32> { (0..n).map(|i| if i % 2 == 0 { v } else { -v }).collect() };
    // Within the tone only: a saturated sample in the leading silence would be a click, and
    // rightly measured as sound.
    let mut sprinkled = tone();
    for (i, s) in sprinkled.iter_mut().enumerate().skip(n / 4) {
        match i % 50 {
            0 => *s = f32::NAN,
            1 => *s = f32::INFINITY,
            2 => *s = f32::NEG_INFINITY,
            3 => *s = 1e20,
            _ => {}
        }
    }
    // Stereo: a tone on the agent's side, +inf on the customer's (exactly half invalid).
    let stereo: Vec<f32> = tone()
        .into_iter()
        .flat_map(|s| [s, f32::INFINITY])
        .collect();
    vec![
        Hostile {
            name: "positive-infinity.wav",
            bytes: float_wav(1, &vec![f32::INFINITY; n]),
            expected: InvalidSamples,
        },
        Hostile {
            name: "negative-infinity.wav",
            bytes: float_wav(1, &vec![f32::NEG_INFINITY; n]),
            expected: InvalidSamples,
        },
        Hostile {
            name: "nan.wav",
            bytes: float_wav(1, &vec![f32::NAN; n]),
            expected: InvalidSamples,
        },
        Hostile {
            name: "huge-1e20.wav",
            bytes: float_wav(1, &alternating(1e20)),
            expected: Completes,
        },
        Hostile {
            name: "denormals.wav",
            bytes: float_wav(1, &alternating(1.0e-40)),
            expected: Completes,
        },
        Hostile {
            name: "tone-sprinkled-with-nan-inf-1e20.wav",
            bytes: float_wav(1, &sprinkled),
            expected: Completes,
        },
        Hostile {
            name: "stereo-customer-infinite.wav",
            bytes: float_wav(2, &stereo),
            expected: Completes,
        },
        Hostile {
            name: "f64-nan.wav",
            bytes: double_wav(1, &vec![f64::NAN; n]),
            expected: InvalidSamples,
        },
        Hostile {
            name: "f64-1e300-and-nan.wav",
            bytes: double_wav(
                1,
                &(0..n)
                    .map(|i| match i % 3 {
                        0 => 1e300,
                        1 => f64::NAN,
                        _ => -1e300,
                    })
                    .collect::<Vec<_>>(),
            ),
            // A third NaN: counted as silence, the rest saturates.
            expected: Completes,
        },
    ]
}

/// A WAV of interleaved 32-bit float samples (format tag 3) at 8 kHz.
pub fn float_wav(channels: u16, interleaved: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = interleaved.iter().flat_map(|s| s.to_le_bytes()).collect();
    wav(3, channels, 32, &data)
}

/// A WAV of interleaved 64-bit float samples (format tag 3) at 8 kHz.
pub fn double_wav(channels: u16, interleaved: &[f64]) -> Vec<u8> {
    let data: Vec<u8> = interleaved.iter().flat_map(|s| s.to_le_bytes()).collect();
    wav(3, channels, 64, &data)
}

fn wav(format_tag: u16, channels: u16, bits: u16, data: &[u8]) -> Vec<u8> {
    callingest_audio::wav::wav(format_tag, channels, RATE, bits, data)
}
