//! Float WAVs holding NaN, ±infinity, 1e20 and subnormals: every one is either measured with
//! finite figures or refused with a clear reason, never measured into a non-finite number.

mod hostile;

use std::time::Duration;

use callingest_audio::{analyze, analyze_up_to, identify, AnalysisError, RecordingFormat};
use hostile::Expected;

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn every_hostile_recording_is_measured_finite_or_refused_as_invalid_samples() {
    let dir = tempfile::tempdir().unwrap();
    for h in hostile::all() {
        let path = write(&dir, h.name, &h.bytes);
        assert_eq!(
            identify(&h.bytes[..64]),
            Some(RecordingFormat::Wav),
            "{}",
            h.name
        );
        match (analyze(&path, RecordingFormat::Wav), h.expected) {
            (Ok(a), Expected::Completes) => {
                for (what, figure) in [
                    ("silence_ratio", a.silence_ratio),
                    ("mean_dbfs", a.mean_dbfs.unwrap_or(f64::NAN)),
                    ("peak_dbfs", a.peak_dbfs.unwrap_or(f64::NAN)),
                    ("clipping_ratio", a.clipping_ratio),
                ] {
                    assert!(figure.is_finite(), "{}: {what} = {figure}", h.name);
                }
                let levels = [a.mean_dbfs, a.peak_dbfs];
                assert!(
                    levels
                        .iter()
                        .all(|l| l.is_some_and(|l| (-120.0..=0.0).contains(&l))),
                    "{}: {a:?}",
                    h.name
                );
                assert_eq!(a.duration_ms, 1000, "{}", h.name);
            }
            (Err(e @ AnalysisError::InvalidSamples { .. }), Expected::InvalidSamples) => {
                assert!(
                    e.to_string().starts_with("recording holds invalid samples"),
                    "{}: {e}",
                    h.name
                );
            }
            (outcome, expected) => panic!("{}: expected {expected:?}, got {outcome:?}", h.name),
        }
    }
}

#[test]
fn samples_beyond_full_scale_saturate_and_subnormals_are_silence() {
    let dir = tempfile::tempdir().unwrap();
    let by_name = |name: &str| {
        let h = hostile::all().into_iter().find(|h| h.name == name).unwrap();
        analyze(&write(&dir, name, &h.bytes), RecordingFormat::Wav).unwrap()
    };
    let huge = by_name("huge-1e20.wav");
    assert_eq!(
        (huge.peak_dbfs, huge.clipping_ratio),
        (Some(0.0), 1.0),
        "{huge:?}"
    );
    assert!(huge.mean_dbfs.is_some_and(|l| l.abs() < 1e-6), "{huge:?}");

    let tiny = by_name("denormals.wav");
    assert_eq!(
        (tiny.mean_dbfs, tiny.peak_dbfs),
        (Some(-120.0), Some(-120.0)),
        "{tiny:?}"
    );
    assert_eq!(tiny.agent_talk_ms, 0);

    // A tone with 8 % hostile samples is still that tone: its talk is measured.
    let sprinkled = by_name("tone-sprinkled-with-nan-inf-1e20.wav");
    assert_eq!(sprinkled.peak_dbfs, Some(0.0), "the infinities saturate");
    assert!(
        (700..=800).contains(&sprinkled.agent_talk_ms),
        "{sprinkled:?}"
    );
}

#[test]
fn analysis_stops_with_a_reason_once_the_decoded_audio_passes_the_limit() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/overlap.wav");
    let whole = analyze(&path, RecordingFormat::Wav).unwrap();
    assert_eq!(whole.duration_ms, 6_000);

    match analyze_up_to(&path, RecordingFormat::Wav, Duration::from_secs(3)) {
        Err(e @ AnalysisError::TooLong { .. }) => {
            assert_eq!(e.to_string(), "recording longer than 0.05 minutes")
        }
        other => panic!("expected TooLong, got {other:?}"),
    }
    let limited = analyze_up_to(&path, RecordingFormat::Wav, Duration::from_secs(6)).unwrap();
    assert_eq!(limited, whole, "exactly at the limit is within it");
    let default_limit = AnalysisError::TooLong {
        limit: Duration::from_secs(600 * 60),
    };
    assert_eq!(
        default_limit.to_string(),
        "recording longer than 600 minutes"
    );
}
