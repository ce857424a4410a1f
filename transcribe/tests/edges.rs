//! Words at the edges: speech from the first sample of a recording, up to its last sample and
//! right after the other party stopped talking; and the times of short alternating turns
//! (issue 15).
//!
//! Needs what tests/whisper.rs needs (the `whisper` feature, espeak-ng, the model).
#![cfg(feature = "whisper")]

mod common;

use std::sync::OnceLock;

use callingest_audio::RecordingFormat;
use callingest_transcribe::whisper::WhisperEngine;
use callingest_transcribe::{
    load_channels, word_error_rate, ChannelAudio, Speaker, Transcriber, Transcript,
};
use common::{model_path, place, samples, speak, write_wav};

fn engine() -> &'static WhisperEngine {
    static ENGINE: OnceLock<WhisperEngine> = OnceLock::new();
    ENGINE.get_or_init(|| WhisperEngine::load(&model_path(), 2).expect("model loads"))
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// espeak-ng speech with its lead-in and trailing silence cut: sound from the first sample
/// to the last.
fn tight_speech(text: &str, dir: &std::path::Path) -> Vec<f32> {
    let clip = speak(text, dir);
    let first = clip.iter().position(|v| v.abs() > 1e-3).unwrap();
    let last = clip.iter().rposition(|v| v.abs() > 1e-3).unwrap();
    clip[first..=last].to_vec()
}

fn side(t: &Transcript, who: Speaker) -> String {
    t.segments
        .iter()
        .filter(|s| s.channel == who)
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `heard` starts with `first` (as words, case and punctuation aside).
fn starts_with(heard: &str, first: &str) -> bool {
    let (heard, first) = (words(heard), words(first));
    heard.len() >= first.len() && heard[..first.len()] == first[..]
}

fn ends_with(heard: &str, last: &str) -> bool {
    let (heard, last) = (words(heard), words(last));
    heard.len() >= last.len() && heard[heard.len() - last.len()..] == last[..]
}

async fn transcribe_mono(samples: Vec<f32>) -> Transcript {
    engine()
        .transcribe(vec![ChannelAudio {
            speaker: Speaker::Mono,
            samples,
        }])
        .await
        .unwrap()
}

#[tokio::test]
async fn speech_from_the_first_sample_keeps_its_opening_words() {
    let dir = tempfile::tempdir().unwrap();
    let text = "please send the invoice to our accounting department by the end of the week";
    let t = transcribe_mono(tight_speech(text, dir.path())).await;
    let heard = t.text();
    eprintln!("heard: {heard}");
    assert!(starts_with(&heard, "please send the invoice"), "{heard:?}");
    assert!(word_error_rate(text, &heard) <= 0.2, "{heard:?}");
    assert!(t.segments[0].start_ms <= 300, "{:?}", t.segments[0]);
}

/// Issue 15's clip: tiny.en mishears its first words ("The lones in the test call ...") under
/// faster-whisper too, so what is held here is that starting at sample 0 costs nothing: the
/// clip is heard as well as the same clip after a second of silence.
#[tokio::test]
async fn speech_from_the_first_sample_is_heard_as_well_as_after_silence() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        "hello this is a test call about pricing for the premium plan and the discount you offered";
    let clip = tight_speech(text, dir.path());
    let mut after_silence = vec![0.0; samples(1.0)];
    after_silence.extend(&clip);
    let at_once = word_error_rate(text, &transcribe_mono(clip).await.text());
    let later = word_error_rate(text, &transcribe_mono(after_silence).await.text());
    eprintln!("WER from sample 0: {at_once:.3}, after 1 s of silence: {later:.3}");
    // One word of 17 either way: the model's own variation, not a cut.
    assert!(at_once <= later + 0.06, "{at_once:.3} vs {later:.3}");
}

#[tokio::test]
async fn speech_up_to_the_last_sample_keeps_its_closing_words() {
    let dir = tempfile::tempdir().unwrap();
    let text = "please call me back tomorrow morning about the refund";
    // Silence first, then speech that runs to the very end of the file.
    let clip = tight_speech(text, dir.path());
    let mut audio = vec![0.0; samples(1.5)];
    audio.extend(&clip);
    let len_ms = audio.len() as u64 * 1000 / 16_000;
    let t = engine()
        .transcribe(vec![ChannelAudio {
            speaker: Speaker::Mono,
            samples: audio,
        }])
        .await
        .unwrap();
    let heard = t.text();
    eprintln!("heard: {heard}");
    assert!(ends_with(&heard, "about the refund"), "{heard:?}");
    assert!(word_error_rate(text, &heard) <= 0.2, "{heard:?}");
    let last = t.segments.last().unwrap();
    assert!(last.end_ms <= len_ms, "{last:?} beyond {len_ms} ms");
}

#[tokio::test]
async fn the_first_words_after_a_channel_switch_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let agent_text = "your new card will arrive within five working days";
    let customer_text = "perfect that is exactly what I needed thank you";
    let agent = tight_speech(agent_text, dir.path());
    let customer = tight_speech(customer_text, dir.path());
    // The customer starts on the very sample after the agent's last one.
    let agent_at = samples(0.3);
    let customer_at = agent_at + agent.len();
    let len = customer_at + customer.len() + samples(0.5);
    let mut left = vec![0.0; len];
    let mut right = vec![0.0; len];
    place(&mut left, agent_at, &agent);
    place(&mut right, customer_at, &customer);
    let wav = dir.path().join("switch.wav");
    write_wav(&wav, &[left, right]);

    let t = engine()
        .transcribe(load_channels(&wav, RecordingFormat::Wav).unwrap())
        .await
        .unwrap();
    let (a, c) = (side(&t, Speaker::Agent), side(&t, Speaker::Customer));
    eprintln!("agent: {a}\ncustomer: {c}");
    assert!(ends_with(&a, "five working days"), "{a:?}");
    assert!(starts_with(&c, "perfect"), "{c:?}");
    // Measured 0.222: "that is" heard as "not", the model's own mishearing mid-sentence.
    assert!(word_error_rate(customer_text, &c) <= 0.25, "{c:?}");
    let first_customer = t
        .segments
        .iter()
        .find(|s| s.channel == Speaker::Customer)
        .unwrap();
    let switch_ms = customer_at as u64 * 1000 / 16_000;
    // The customer's words start at the switch (speech-detection padding is 250 ms).
    assert!(
        first_customer.start_ms + 300 >= switch_ms,
        "{first_customer:?} vs switch at {switch_ms} ms"
    );
}

/// Short turns taking turns on both sides: every segment lands inside the turn it came from,
/// and every turn is heard.
#[tokio::test]
async fn segments_of_alternating_turns_keep_their_own_turns_times() {
    let dir = tempfile::tempdir().unwrap();
    let turns = [
        "I would like to upgrade my plan.",
        "Which plan are you on right now?",
        "The basic one with ten gigabytes.",
        "The next one up has fifty gigabytes.",
        "How much does that cost per month?",
        "It is twenty dollars a month.",
        "Alright, please go ahead with it.",
        "Done, it is active from today.",
    ];
    let mut planes = [Vec::new(), Vec::new()];
    // (channel, start ms, end ms) of every turn.
    let mut spoken: Vec<(Speaker, u64, u64)> = Vec::new();
    let mut at = samples(0.4);
    let clips: Vec<Vec<f32>> = turns.iter().map(|t| speak(t, dir.path())).collect();
    let len = at + clips.iter().map(|c| c.len() + samples(1.2)).sum::<usize>();
    for p in &mut planes {
        p.resize(len, 0.0);
    }
    for (i, clip) in clips.iter().enumerate() {
        place(&mut planes[i % 2], at, clip);
        let who = [Speaker::Customer, Speaker::Agent][i % 2];
        let ms = |s: usize| s as u64 * 1000 / 16_000;
        spoken.push((who, ms(at), ms(at + clip.len())));
        at += clip.len() + samples(1.2);
    }
    let [customer, agent] = planes;
    let t = engine()
        .transcribe(vec![
            ChannelAudio {
                speaker: Speaker::Agent,
                samples: agent,
            },
            ChannelAudio {
                speaker: Speaker::Customer,
                samples: customer,
            },
        ])
        .await
        .unwrap();
    for s in &t.segments {
        eprintln!("{:?} {}-{} ms: {}", s.channel, s.start_ms, s.end_ms, s.text);
    }
    let heard_turns = |who: Speaker| {
        turns
            .iter()
            .enumerate()
            .filter(|(i, _)| [Speaker::Customer, Speaker::Agent][i % 2] == who)
            .map(|(_, t)| *t)
            .collect::<Vec<_>>()
            .join(" ")
    };
    for who in [Speaker::Agent, Speaker::Customer] {
        let wer = word_error_rate(&heard_turns(who), &side(&t, who));
        assert!(wer <= 0.25, "{who:?} WER {wer:.3}: {:?}", side(&t, who));
    }
    // Every segment lies within one turn of its own channel, give or take the 250 ms of
    // speech-detection padding: none runs over the other side's turn between two of them.
    for s in &t.segments {
        let turn = spoken.iter().find(|(who, from, to)| {
            *who == s.channel && s.start_ms + 300 >= *from && s.end_ms <= *to + 300
        });
        assert!(turn.is_some(), "segment outside every turn: {s:?}");
    }
    // And every turn is heard.
    for (who, from, to) in &spoken {
        assert!(
            t.segments
                .iter()
                .any(|s| s.channel == *who && s.start_ms < *to && s.end_ms > *from),
            "nothing heard in the {who:?} turn {from}-{to} ms"
        );
    }
}
