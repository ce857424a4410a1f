//! Analysis of the committed fixtures against their KNOWN content (see
//! `tests/fixtures/make-fixtures.sh` for exactly what each file holds).
//!
//! Tolerances: PCM WAV is exact to the 20 ms talk frame. MP3 durations are exact because
//! symphonia trims the encoder delay/padding recorded in LAME's Xing header. AAC (ADTS, M4A,
//! MP4) durations include the encoder's priming (1024 samples) and final-frame padding, so they
//! may be up to 2048 samples (128 ms at 16 kHz) long, never short. Lossy codecs smear burst
//! edges by a frame or so, hence ±100 ms on talk times.

use std::path::{Path, PathBuf};

use callingest_audio::{analyze, identify, AnalysisError, RecordingFormat};
use callingest_domain::call::AudioAnalytics;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn head(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("fixture readable");
    bytes[..bytes.len().min(64)].to_vec()
}

/// The levels the analysis always measures (only old events lack them).
fn mean(a: &AudioAnalytics) -> f64 {
    a.mean_dbfs.expect("the analysis measures the mean level")
}

fn peak(a: &AudioAnalytics) -> f64 {
    a.peak_dbfs.expect("the analysis measures the peak level")
}

fn analyze_fixture(name: &str) -> AudioAnalytics {
    let path = fixture(name);
    let format = identify(&head(&path)).unwrap_or_else(|| panic!("{name} not identified"));
    analyze(&path, format).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[track_caller]
fn assert_near(actual: u64, expected: u64, tolerance: u64, what: &str) {
    assert!(
        actual.abs_diff(expected) <= tolerance,
        "{what}: {actual} not within ±{tolerance} of {expected}"
    );
}

#[track_caller]
fn assert_aac_duration(actual: u64, expected: u64) {
    assert!(
        (expected..=expected + 128).contains(&actual),
        "AAC duration {actual} ms outside {expected}..={} ms (priming + padding)",
        expected + 128
    );
}

/// A scratch file in the system temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn with_bytes(tag: &str, bytes: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!(
            "callingest-audio-test-{}-{tag}",
            std::process::id()
        ));
        std::fs::write(&path, bytes).expect("temp file writable");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn every_fixture_is_identified_from_its_first_bytes() {
    use RecordingFormat::*;
    let expected = [
        ("left-only.wav", Some(Wav)),
        ("overlap.wav", Some(Wav)),
        ("clipped.wav", Some(Wav)),
        ("silence.wav", Some(Wav)),
        ("truncated.wav", Some(Wav)),
        ("mono.mp3", Some(Mp3)),   // ID3 tag first
        ("stereo.mp3", Some(Mp3)), // bare MPEG frame sync
        ("speech.mp3", Some(Mp3)),
        ("left-only.aac", Some(Aac)),
        ("mono.m4a", Some(M4a)),
        ("truncated.m4a", Some(M4a)),
        ("overlap.mp4", Some(Mp4)),
        ("not-audio.mp3", None),
    ];
    for (name, format) in expected {
        assert_eq!(identify(&head(&fixture(name))), format, "{name}");
    }
}

#[test]
fn left_only_wav_is_all_agent_talk() {
    let a = analyze_fixture("left-only.wav");
    assert_eq!(
        (a.sample_rate, a.channels, a.codec.as_str()),
        (8000, 2, "pcm_s16le")
    );
    assert_eq!(a.duration_ms, 4000);
    assert_near(a.agent_talk_ms, 2000, 20, "agent talk");
    assert_eq!(a.customer_talk_ms, Some(0));
    assert_eq!(a.overlap_ms, 0);
    assert!(
        (a.silence_ratio - 0.5).abs() < 0.01,
        "silence ratio {}",
        a.silence_ratio
    );
    assert_near(a.longest_silence_ms, 1500, 20, "longest silence");
    // -12 dBFS peak sine; RMS -15 dBFS on one channel for half the time → -15 - 3 - 3.
    assert!((peak(&a) + 12.0).abs() < 0.05, "peak {}", peak(&a));
    assert!((mean(&a) + 21.0).abs() < 0.1, "mean {}", mean(&a));
    assert_eq!(a.clipping_ratio, 0.0);
}

#[test]
fn overlap_wav_measures_both_sides_and_their_overlap() {
    let a = analyze_fixture("overlap.wav");
    assert_eq!(a.duration_ms, 6000);
    assert_near(a.agent_talk_ms, 2500, 20, "agent talk");
    // 2.5 s burst including a 150 ms gap that the hangover bridges.
    assert_near(
        a.customer_talk_ms.expect("stereo"),
        2500,
        20,
        "customer talk",
    );
    assert_near(a.overlap_ms, 1000, 20, "overlap");
    assert!(
        (a.silence_ratio - 2.0 / 6.0).abs() < 0.01,
        "silence ratio {}",
        a.silence_ratio
    );
    assert_near(a.longest_silence_ms, 1500, 20, "longest silence");
}

#[test]
fn mono_mp3_has_no_customer_side() {
    let a = analyze_fixture("mono.mp3");
    assert_eq!(
        (a.sample_rate, a.channels, a.codec.as_str()),
        (16000, 1, "mp3")
    );
    assert_near(a.duration_ms, 3000, 50, "duration");
    assert_near(a.agent_talk_ms, 1500, 100, "agent talk");
    assert_eq!(a.customer_talk_ms, None);
    assert_eq!(a.overlap_ms, 0);
    assert!((a.silence_ratio - 0.5).abs() < 0.05);
    assert!((peak(&a) + 12.0).abs() < 1.0, "peak {}", peak(&a));
}

#[test]
fn stereo_mp3_matches_the_overlap_content() {
    let a = analyze_fixture("stereo.mp3");
    assert_eq!((a.sample_rate, a.channels), (16000, 2));
    assert_near(a.duration_ms, 6000, 50, "duration");
    assert_near(a.agent_talk_ms, 2500, 100, "agent talk");
    assert_near(
        a.customer_talk_ms.expect("stereo"),
        2500,
        100,
        "customer talk",
    );
    assert_near(a.overlap_ms, 1000, 100, "overlap");
    assert_near(a.longest_silence_ms, 1500, 100, "longest silence");
}

#[test]
fn adts_aac_left_only() {
    let a = analyze_fixture("left-only.aac");
    assert_eq!(
        (a.sample_rate, a.channels, a.codec.as_str()),
        (16000, 2, "aac")
    );
    assert_aac_duration(a.duration_ms, 4000);
    assert_near(a.agent_talk_ms, 2000, 100, "agent talk");
    assert_eq!(a.customer_talk_ms, Some(0));
    assert_eq!(a.overlap_ms, 0);
}

#[test]
fn m4a_mono() {
    let a = analyze_fixture("mono.m4a");
    assert_eq!(
        (a.sample_rate, a.channels, a.codec.as_str()),
        (16000, 1, "aac")
    );
    assert_aac_duration(a.duration_ms, 3000);
    assert_near(a.agent_talk_ms, 1500, 100, "agent talk");
    assert_eq!(a.customer_talk_ms, None);
}

#[test]
fn mp4_stereo_matches_the_overlap_content() {
    let a = analyze_fixture("overlap.mp4");
    assert_eq!(
        (a.sample_rate, a.channels, a.codec.as_str()),
        (16000, 2, "aac")
    );
    assert_aac_duration(a.duration_ms, 6000);
    assert_near(a.agent_talk_ms, 2500, 100, "agent talk");
    assert_near(
        a.customer_talk_ms.expect("stereo"),
        2500,
        100,
        "customer talk",
    );
    assert_near(a.overlap_ms, 1000, 100, "overlap");
}

#[test]
fn clipped_wav_reports_full_scale_and_clipping() {
    let a = analyze_fixture("clipped.wav");
    assert!(peak(&a) > -0.01, "peak {}", peak(&a));
    // 0.8 s of a 2× overdriven sine: |sin| >= 0.4995 for 2/3 of the time → 0.8 * 2/3.
    assert!(
        (a.clipping_ratio - 0.533).abs() < 0.02,
        "clipping {}",
        a.clipping_ratio
    );
    assert!(mean(&a) > -3.0, "mean {}", mean(&a));
    assert_near(a.agent_talk_ms, 800, 20, "agent talk");
}

#[test]
fn digital_silence_is_all_silence_at_the_floor_level() {
    let a = analyze_fixture("silence.wav");
    assert_eq!(a.duration_ms, 1000);
    assert_eq!(a.agent_talk_ms, 0);
    assert_eq!(a.silence_ratio, 1.0);
    assert_eq!(a.longest_silence_ms, 1000);
    assert_eq!(
        (mean(&a), peak(&a), a.clipping_ratio),
        (-120.0, -120.0, 0.0)
    );
}

#[test]
fn real_speech_is_detected_as_talk_with_its_pauses() {
    // espeak-ng sentence of ~4.3 s after 0.5 s of silence; the exact talk time depends on the
    // voice, so only bounds are asserted: most of the sentence is talk, the lead-in is not.
    let a = analyze_fixture("speech.mp3");
    assert!(
        (2500..=4400).contains(&a.agent_talk_ms),
        "talk {}",
        a.agent_talk_ms
    );
    assert!(
        a.longest_silence_ms >= 450,
        "longest silence {}",
        a.longest_silence_ms
    );
    assert!(
        a.silence_ratio > 0.1 && a.silence_ratio < 0.5,
        "{}",
        a.silence_ratio
    );
}

#[test]
fn a_pdf_named_mp3_is_rejected_by_identify_and_by_every_decoder() {
    let path = fixture("not-audio.mp3");
    assert_eq!(identify(&head(&path)), None);
    use RecordingFormat::*;
    for format in [Mp3, Wav, Aac, M4a, Mp4] {
        let err = analyze(&path, format).expect_err("a PDF is not audio");
        assert!(
            matches!(
                err,
                AnalysisError::Undecodable(_) | AnalysisError::Unsupported(_)
            ),
            "{format}: {err:?}"
        );
    }
}

#[test]
fn truncated_headers_are_errors() {
    let err = analyze(&fixture("truncated.wav"), RecordingFormat::Wav).unwrap_err();
    assert!(matches!(err, AnalysisError::Undecodable(_)), "{err:?}");
    // mdat without the moov box that indexes it: nothing to decode.
    let err = analyze(&fixture("truncated.m4a"), RecordingFormat::M4a).unwrap_err();
    assert!(
        matches!(
            err,
            AnalysisError::Unsupported(_) | AnalysisError::Undecodable(_)
        ),
        "{err:?}"
    );
}

#[test]
fn a_missing_file_is_an_io_error() {
    let err = analyze(Path::new("/nonexistent/call.wav"), RecordingFormat::Wav).unwrap_err();
    assert!(matches!(err, AnalysisError::Io(_)), "{err:?}");
}

#[test]
fn a_recording_cut_mid_stream_measures_the_audio_that_is_there() {
    let bytes = std::fs::read(fixture("stereo.mp3")).unwrap();
    let cut = TempFile::with_bytes("cut.mp3", &bytes[..bytes.len() / 2]);
    let a = analyze(&cut.0, RecordingFormat::Mp3).expect("first half decodes");
    assert_near(a.duration_ms, 3000, 150, "duration of the first half");

    let bytes = std::fs::read(fixture("overlap.wav")).unwrap();
    // Drop the last 3 s of 8 kHz stereo s16 data (4 bytes per sample frame).
    let cut = TempFile::with_bytes("cut.wav", &bytes[..bytes.len() - 8000 * 4 * 3]);
    let a = analyze(&cut.0, RecordingFormat::Wav).expect("first 3 s decode");
    assert_eq!(a.duration_ms, 3000);
}

#[test]
fn no_prefix_or_corruption_of_any_fixture_panics() {
    let fixtures = [
        ("left-only.wav", RecordingFormat::Wav),
        ("stereo.mp3", RecordingFormat::Mp3),
        ("mono.mp3", RecordingFormat::Mp3),
        ("left-only.aac", RecordingFormat::Aac),
        ("mono.m4a", RecordingFormat::M4a),
        ("overlap.mp4", RecordingFormat::Mp4),
    ];
    for (name, format) in fixtures {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let n = bytes.len();
        for len in [0, 1, 4, 12, 40, 64, 200, 1000, 4096, n / 3, n / 2, n - 1] {
            let f = TempFile::with_bytes(&format!("prefix-{len}-{name}"), &bytes[..len.min(n)]);
            // Either outcome is fine; a panic fails the test.
            let _ = analyze(&f.0, format);
        }
        // Overwrite stretches of the body with junk of several shapes.
        for (i, junk) in [0x00u8, 0xFF, 0x55].into_iter().enumerate() {
            let mut bad = bytes.clone();
            let start = n / 4 + i * 97;
            for b in &mut bad[start..(start + 2048).min(n)] {
                *b = junk;
            }
            let f = TempFile::with_bytes(&format!("corrupt-{i}-{name}"), &bad);
            let _ = analyze(&f.0, format);
        }
    }
}
