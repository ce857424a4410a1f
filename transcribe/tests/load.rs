//! `load_channels` on files, without any speech engine.

use callingest_audio::RecordingFormat;
use callingest_transcribe::{load_channels, load_channels_up_to, Speaker, TranscribeError};

#[path = "../../audio/tests/hostile/mod.rs"]
mod hostile;

#[test]
fn an_undecodable_file_is_an_audio_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.wav");
    // A WAV header that promises audio, followed by garbage instead of a format chunk.
    let mut bytes = b"RIFF\x24\x10\x00\x00WAVE".to_vec();
    bytes.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    std::fs::write(&path, bytes).unwrap();
    match load_channels(&path, RecordingFormat::Wav) {
        Err(e @ TranscribeError::Audio(_)) => assert!(!e.is_transient()),
        Err(other) => panic!("expected an audio error, got {other:?}"),
        Ok(ch) => panic!("decoded {} channels from garbage", ch.len()),
    }
}

#[test]
fn a_file_of_the_wrong_format_is_an_audio_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-audio.mp3");
    std::fs::write(
        &path,
        b"<html>this is an error page, not a recording</html>",
    )
    .unwrap();
    assert!(matches!(
        load_channels(&path, RecordingFormat::Mp3),
        Err(TranscribeError::Audio(_))
    ));
}

#[test]
fn a_stereo_wav_loads_as_agent_and_customer_at_16khz() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("call.wav");
    // 0.5 s of 8 kHz stereo, left 0.25, right -0.25 (16-bit PCM).
    let (left, right) = (vec![0.25f32; 4000], vec![-0.25f32; 4000]);
    std::fs::write(&path, callingest_audio::wav::pcm16(8000, &[&left, &right])).unwrap();
    let ch = load_channels(&path, RecordingFormat::Wav).unwrap();
    assert_eq!(ch.len(), 2);
    assert_eq!(
        (ch[0].speaker, ch[1].speaker),
        (Speaker::Agent, Speaker::Customer)
    );
    assert_eq!(ch[0].samples.len(), 8000);
    assert!((ch[0].samples[4000] - 0.25).abs() < 0.01);
    assert!((ch[1].samples[4000] + 0.25).abs() < 0.01);
}

#[test]
fn a_recording_over_the_length_limit_is_refused_not_loaded() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../audio/tests/fixtures/overlap.wav"
    );
    let path = std::path::Path::new(path);
    let whole = load_channels(path, RecordingFormat::Wav).unwrap();
    let seconds = whole[0].samples.len() as f64 / 16_000.0;
    assert!(seconds > 1.0, "fixture of {seconds} s");

    let short = std::time::Duration::from_secs_f64(seconds / 2.0);
    match load_channels_up_to(path, RecordingFormat::Wav, short) {
        Err(e @ TranscribeError::Permanent(_)) => {
            assert!(e.to_string().contains("longer than"), "{e}");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|c| c.len())),
    }
    let enough = std::time::Duration::from_secs_f64(seconds + 1.0);
    let loaded = load_channels_up_to(path, RecordingFormat::Wav, enough).unwrap();
    assert_eq!(loaded[0].samples.len(), whole[0].samples.len());
}

#[test]
fn hostile_float_samples_load_as_finite_audio_or_are_refused_as_invalid() {
    let dir = tempfile::tempdir().unwrap();
    for h in hostile::all() {
        let path = dir.path().join(h.name);
        std::fs::write(&path, &h.bytes).unwrap();
        match (load_channels(&path, RecordingFormat::Wav), h.expected) {
            (Ok(channels), hostile::Expected::Completes) => {
                for ch in &channels {
                    // 8 kHz → 16 kHz: one second of audio.
                    assert_eq!(ch.samples.len(), 16_000, "{}", h.name);
                    // The resampler's filter may ring a little past full scale; never NaN.
                    assert!(
                        ch.samples.iter().all(|s| s.is_finite() && s.abs() <= 2.0),
                        "{}",
                        h.name
                    );
                }
            }
            (Err(e @ TranscribeError::Audio(_)), hostile::Expected::InvalidSamples) => {
                assert!(e.to_string().contains("invalid samples"), "{}: {e}", h.name);
                assert!(!e.is_transient());
            }
            (outcome, expected) => panic!(
                "{}: expected {expected:?}, got {:?}",
                h.name,
                outcome.map(|c| c.len())
            ),
        }
    }
}
