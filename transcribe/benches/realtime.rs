//! How much faster than real time Whisper tiny.en transcribes a two-speaker call on ONE thread.
//!
//! Builds a 60 s stereo call from espeak-ng sentences (agent on the left, customer on the
//! right, taking turns), transcribes it with the default engine settings and, for comparison,
//! with full 30 s audio contexts, and prints wall time, × realtime and WER against the text.
//!
//!     scripts/ensure-whisper-deps
//!     CARGO_TARGET_DIR=... cargo bench -p callingest-transcribe --features whisper --bench realtime
//!
//! Model: `CALLINGEST_WHISPER_MODEL`, else fetched into target/whisper/ like the tests.
//!
//! Measured (2-core VM, otherwise idle, 1 thread): default 5.9-6.0 s for the 60 s call =
//! 10.0-10.1x realtime, WER 0.059; full 30 s audio contexts 30 s = 2.0x, WER 0.074. Tried and
//! not adopted: flash attention (10.6x but WER 0.169); no temperature fallback (10.9x, same WER
//! here, but loses whisper.cpp's recovery from repetition loops on hard audio).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use callingest_audio::RecordingFormat;
use callingest_transcribe::whisper::WhisperEngine;
use callingest_transcribe::{load_channels, word_error_rate, Speaker, Transcriber, SAMPLE_RATE};
use common::{model_path, place, samples, speak, write_wav};

const CALL_SECONDS: f64 = 60.0;
const THREADS: usize = 1;

/// Turns of a support call, agent first, alternating.
const TURNS: &[&str] = &[
    "Good morning, thank you for calling the support line, my name is Sarah, how can I help?",
    "Hello, I am having trouble logging into my account since yesterday evening.",
    "I am sorry to hear that. Could you tell me the email address on the account?",
    "Sure, it is the same address I used when I signed up last spring.",
    "Thank you. I can see a lock on the account after several failed attempts.",
    "That makes sense, I think I typed an old password a few times.",
    "No problem. I have sent a reset link to your inbox, it is valid for one hour.",
    "Great, I just received it and the new password works now.",
    "Wonderful. Is there anything else I can help you with today?",
    "No, that was everything. Thank you very much for your help.",
    "You are welcome. Have a lovely day and goodbye.",
    "Goodbye.",
];

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let total = samples(CALL_SECONDS);
    let gap = samples(0.6);
    let mut left = vec![0.0f32; total];
    let mut right = vec![0.0f32; total];
    let (mut agent_ref, mut customer_ref, mut all_ref) = (Vec::new(), Vec::new(), Vec::new());
    let mut at = samples(0.5);
    for (i, text) in TURNS.iter().cycle().enumerate() {
        let clip = speak(text, dir.path());
        if at + clip.len() + samples(0.5) > total {
            break;
        }
        let (plane, reference) = if i % 2 == 0 {
            (&mut left, &mut agent_ref)
        } else {
            (&mut right, &mut customer_ref)
        };
        place(plane, at, &clip);
        reference.push(*text);
        all_ref.push(*text);
        at += clip.len() + gap;
    }
    let wav = dir.path().join("call.wav");
    write_wav(&wav, &[left, right]);
    let audio_seconds = total as f64 / f64::from(SAMPLE_RATE);
    println!(
        "call: {audio_seconds:.1} s stereo, {} turns ({} words), threads: {THREADS}",
        all_ref.len(),
        all_ref
            .iter()
            .map(|t| t.split_whitespace().count())
            .sum::<usize>()
    );

    let model = model_path();
    let t0 = Instant::now();
    let engine = WhisperEngine::load(&model, THREADS).expect("model loads");
    println!(
        "model load: {:.2} s ({})",
        t0.elapsed().as_secs_f64(),
        model.display()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    for (label, engine) in [
        ("default (trimmed audio_ctx)", engine),
        (
            "full 30 s audio_ctx",
            WhisperEngine::load(&model, THREADS)
                .unwrap()
                .with_trimmed_audio_ctx(false),
        ),
    ] {
        let t0 = Instant::now();
        let channels = load_channels(&wav, RecordingFormat::Wav).unwrap();
        let decode_s = t0.elapsed().as_secs_f64();
        let t = rt
            .block_on(engine.transcribe(channels))
            .expect("transcribes");
        let wall = t0.elapsed().as_secs_f64();
        let side = |who: Speaker| {
            t.segments
                .iter()
                .filter(|s| s.channel == who)
                .map(|s| s.text.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let wer_all = word_error_rate(&all_ref.join(" "), &t.text());
        let wer_agent = word_error_rate(&agent_ref.join(" "), &side(Speaker::Agent));
        let wer_customer = word_error_rate(&customer_ref.join(" "), &side(Speaker::Customer));
        println!(
            "{label}: {wall:.2} s wall (decode+resample {decode_s:.3} s), {:.1}x realtime, \
             WER {wer_all:.3} (agent {wer_agent:.3}, customer {wer_customer:.3}), {} segments",
            audio_seconds / wall,
            t.segments.len()
        );
        if std::env::var_os("BENCH_VERBOSE").is_some() {
            for s in &t.segments {
                println!(
                    "  {:?} {:>6}-{:>6} ms  {}",
                    s.channel, s.start_ms, s.end_ms, s.text
                );
            }
        }
    }
}
