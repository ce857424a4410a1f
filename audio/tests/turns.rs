//! Accuracy of the interaction figures on synthesised stereo calls with a known script of
//! turns (espeak-ng phrases at planned times, an overlapping backchannel, an interruption, a
//! long monologue, a one-word answer): every figure within a stated tolerance of the script.

mod scripted_call;

use callingest_audio::{analyze, RecordingFormat};
use scripted_call::{assert_close, render, support_call, wav_bytes};

#[test]
fn a_scripted_stereo_call_measures_as_its_script() {
    let dir = tempfile::tempdir().unwrap();
    let call = render(&support_call(), 1_000, dir.path());
    let truth = call.truth();
    // The script is what the test says it is: 4 agent turns, 3 customer turns, and the
    // backchannel inside the agent's explanation is not a turn.
    assert_eq!(
        (truth.agent_turns, truth.customer_turns),
        (Some(4), Some(3))
    );

    let path = dir.path().join("call.wav");
    std::fs::write(&path, wav_bytes(&[&call.planes[0], &call.planes[1]])).unwrap();
    let a = analyze(&path, RecordingFormat::Wav).unwrap();
    assert_eq!(a.detector_version, Some(callingest_audio::DETECTOR_VERSION));
    eprintln!("script:   {truth:?}\nmeasured: {:?}", a.interaction);
    assert_close(&a.interaction, &truth);

    let (agent_ms, customer_ms) = call.talk_ms();
    for (side, measured, script) in [
        ("agent", a.agent_talk_ms, agent_ms),
        ("customer", a.customer_talk_ms.unwrap(), customer_ms),
    ] {
        // Talk time excludes the pauses longer than 300 ms inside a phrase (between sentences),
        // which the script counts as talk: the measure is at most the script and close to it.
        assert!(
            measured <= script + 250 && measured + script / 10 >= script,
            "{side} talk: measured {measured} ms, script {script} ms"
        );
    }
}

#[test]
fn a_mono_mix_of_the_same_call_has_no_two_sided_figures() {
    let dir = tempfile::tempdir().unwrap();
    let call = render(&support_call(), 1_000, dir.path());
    let path = dir.path().join("mono.wav");
    std::fs::write(&path, wav_bytes(&[&call.mono()])).unwrap();
    let a = analyze(&path, RecordingFormat::Wav).unwrap();
    assert_eq!(a.interaction, Default::default(), "every figure null");
    assert!(a.agent_talk_ms > 0);
}
