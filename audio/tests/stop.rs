//! Decoding gives up when asked to stop (a job lost its lease, the process drains).

use std::path::PathBuf;

use callingest_audio::{analyze_within, AnalysisError, Bounds, RecordingFormat, Stop};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn a_requested_stop_ends_the_analysis_with_stopped() {
    let stop = Stop::new();
    let bounds = Bounds {
        max_duration: None,
        stop: stop.clone(),
    };
    let path = fixture("left-only.wav");
    assert!(analyze_within(&path, RecordingFormat::Wav, &bounds).is_ok());
    stop.request();
    assert!(matches!(
        analyze_within(&path, RecordingFormat::Wav, &bounds),
        Err(AnalysisError::Stopped)
    ));
}
