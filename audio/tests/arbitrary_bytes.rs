//! Format identification + analysis of arbitrary bytes: never a panic, never a non-finite
//! figure, always an answer in bounded time.
//!
//! Three generators: bytes of any kind; the committed fixtures with bytes overwritten and the
//! file cut short (to get deep into each demuxer and decoder); float WAVs whose samples are
//! arbitrary bit patterns (NaN payloads, infinities, subnormals, huge values).
//!
//! The run is deterministic (fixed seed, 64 cases per generator) so it belongs in the normal
//! suite. A longer search: `PROPTEST_CASES=20000 PROPTEST_RNG_SEED=7 cargo test -p
//! callingest-audio --release --test arbitrary_bytes -- --nocapture` (prints what it saw).

mod hostile;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use callingest_audio::{analyze_up_to, identify, AnalysisError};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

/// Generous for a debug build on a shared 2-core machine; a release build answers in
/// milliseconds. The point is that nothing loops or decodes for ever.
const TIME_BOUND: Duration = Duration::from_secs(10);
/// The same limit as the service's default, so a hostile header claiming hours is bounded.
const MAX_AUDIO: Duration = Duration::from_secs(600 * 60);

const FIXTURES: [&str; 8] = [
    "clipped.wav",
    "silence.wav",
    "left-only.aac",
    "mono.m4a",
    "mono.mp3",
    "speech.mp3",
    "overlap.mp4",
    "truncated.m4a",
];

fn config() -> Config {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    Config {
        cases: env("PROPTEST_CASES").unwrap_or(64) as u32,
        rng_seed: RngSeed::Fixed(env("PROPTEST_RNG_SEED").unwrap_or(20_261_201)),
        failure_persistence: None,
        ..Config::default()
    }
}

/// What the cases came to, printed with `--nocapture` (how much of the search reached a
/// decoder at all, and how it ended).
#[derive(Default)]
struct Tally(BTreeMap<String, u64>, Duration);

impl Tally {
    fn count(&self) -> u64 {
        self.0.values().sum()
    }
}

/// Identifies and analyses `bytes`; fails the case on a panic, a non-finite figure or an
/// answer slower than [`TIME_BOUND`].
fn check(bytes: &[u8], tally: &Mutex<Tally>) -> Result<(), TestCaseError> {
    let head = &bytes[..bytes.len().min(64)];
    let Some(format) = identify(head) else {
        *tally
            .lock()
            .unwrap()
            .0
            .entry("not identified".into())
            .or_default() += 1;
        return Ok(());
    };
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(|| analyze_up_to(file.path(), format, MAX_AUDIO));
    let took = started.elapsed();
    let Ok(outcome) = outcome else {
        return Err(TestCaseError::fail(format!(
            "{format}: analysis panicked outside the decoder"
        )));
    };
    prop_assert!(took < TIME_BOUND, "{format}: {took:?}");
    let kind = match &outcome {
        Ok(a) => {
            for (what, figure) in [
                ("silence_ratio", a.silence_ratio),
                ("mean_dbfs", a.mean_dbfs.unwrap_or(f64::NAN)),
                ("peak_dbfs", a.peak_dbfs.unwrap_or(f64::NAN)),
                ("clipping_ratio", a.clipping_ratio),
            ] {
                prop_assert!(figure.is_finite(), "{format}: {what} = {figure}");
            }
            prop_assert!((0.0..=1.0).contains(&a.silence_ratio));
            prop_assert!((0.0..=1.0).contains(&a.clipping_ratio));
            for level in [a.mean_dbfs, a.peak_dbfs] {
                prop_assert!(level.is_some_and(|l| (-120.0..=0.0).contains(&l)), "{a:?}");
            }
            "analysed"
        }
        Err(AnalysisError::Undecodable(m)) if m.contains("decoder panicked") => {
            "undecodable (decoder panic caught)"
        }
        Err(AnalysisError::Undecodable(_)) => "undecodable",
        Err(AnalysisError::Unsupported(_)) => "unsupported",
        Err(AnalysisError::InvalidSamples { .. }) => "invalid samples",
        Err(AnalysisError::TooLong { .. }) => "too long",
        Err(AnalysisError::Io(e)) => {
            return Err(TestCaseError::fail(format!("{format}: io error {e}")))
        }
        Err(AnalysisError::Stopped) => {
            return Err(TestCaseError::fail(format!("{format}: stopped unasked")))
        }
    };
    let mut tally = tally.lock().unwrap();
    *tally.0.entry(format!("{format}: {kind}")).or_default() += 1;
    tally.1 = tally.1.max(took);
    Ok(())
}

fn run<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value, &Mutex<Tally>) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let tally = Mutex::new(Tally::default());
    let mut runner = TestRunner::new(config());
    let result = runner.run(&strategy, |value| test(value, &tally));
    let tally = tally.into_inner().unwrap();
    eprintln!(
        "{name}: {} cases, slowest {:?}: {:?}",
        tally.count(),
        tally.1,
        tally.0
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

#[test]
fn arbitrary_bytes_are_identified_and_analysed_without_panic_or_non_finite_figures() {
    // Half the cases start with a real format's magic so they reach a demuxer.
    let magic = prop_oneof![
        Just(Vec::new()),
        Just(b"RIFF\x24\x00\x00\x00WAVEfmt ".to_vec()),
        Just(b"\x00\x00\x00\x20ftypM4A ".to_vec()),
        Just(b"\x00\x00\x00\x20ftypisom".to_vec()),
        Just(b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec()),
        Just(vec![0xFF, 0xF1, 0x50, 0x80]),
        Just(vec![0xFF, 0xFB, 0x90, 0x64]),
    ];
    let strategy = (magic, proptest::collection::vec(any::<u8>(), 0..4096));
    run("arbitrary bytes", strategy, |(magic, tail), tally| {
        let mut bytes = magic;
        bytes.extend(tail);
        check(&bytes, tally)
    });
}

#[test]
fn damaged_real_recordings_are_analysed_without_panic_or_non_finite_figures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let files: Vec<Vec<u8>> = FIXTURES
        .iter()
        .map(|name| std::fs::read(dir.join(name)).unwrap())
        .chain(hostile::all().into_iter().map(|h| h.bytes))
        .collect();
    let n = files.len();
    let strategy = (
        0..n,
        // (near the start?, position, byte): headers are where demuxers decide most.
        proptest::collection::vec((any::<bool>(), any::<usize>(), any::<u8>()), 0..24),
        proptest::option::of(any::<usize>()),
    );
    run("damaged fixtures", strategy, |(file, edits, cut), tally| {
        let mut bytes = files[file].clone();
        for (near_start, pos, byte) in edits {
            let span = if near_start {
                bytes.len().min(512)
            } else {
                bytes.len()
            };
            if span > 0 {
                bytes[pos % span] = byte;
            }
        }
        if let Some(cut) = cut {
            bytes.truncate(cut % (bytes.len() + 1));
        }
        check(&bytes, tally)
    });
}

#[test]
fn float_wavs_of_any_bit_patterns_are_measured_finite_or_refused() {
    let strategy = (
        1u16..=2,
        proptest::collection::vec(any::<u32>(), 0..4000),
        any::<bool>(),
    );
    run(
        "float samples",
        strategy,
        |(channels, bits, wide), tally| {
            let bytes = if wide {
                let samples: Vec<f64> = bits
                    .iter()
                    .map(|&b| f64::from_bits(u64::from(b) << 32 | u64::from(b)))
                    .collect();
                hostile::double_wav(channels, &samples)
            } else {
                let samples: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
                hostile::float_wav(channels, &samples)
            };
            check(&bytes, tally)
        },
    );
}
