//! Stereo calls with a known script of turns: espeak-ng phrases placed at planned times on the
//! agent (left) and customer (right) channels, and the truth of the script — each phrase's span
//! — to score the analysis against. Shared by the audio crate's accuracy test and the service's
//! end-to-end test.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use callingest_audio::{PcmSink, RecordingFormat};
use callingest_domain::interaction::{interaction_of_spans, Interaction};

/// espeak-ng's output rate, kept for the call.
pub const RATE: u32 = 22_050;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Agent,
    Customer,
}

/// When a line starts, relative to an earlier line (by index) of the script.
#[derive(Debug, Clone, Copy)]
pub enum At {
    /// Milliseconds from the start of the recording.
    Ms(u64),
    /// This many ms after line `k` ends (negative: talking over its end).
    AfterEnd(usize, i64),
    /// This many ms after line `k` starts (a backchannel during it).
    AfterStart(usize, u64),
}

#[derive(Debug, Clone, Copy)]
pub struct Line {
    pub side: Side,
    pub at: At,
    pub text: &'static str,
}

/// A rendered call: the two planes and the truth of its script.
pub struct ScriptedCall {
    pub planes: [Vec<f32>; 2],
    /// `(start_ms, end_ms)` of every agent phrase, as placed.
    pub agent: Vec<(u64, u64)>,
    /// `(start_ms, end_ms)` of every customer phrase, as placed.
    pub customer: Vec<(u64, u64)>,
    pub duration_ms: u64,
}

impl ScriptedCall {
    /// The figures of the script itself, by the turn model: what a perfect detector would give.
    pub fn truth(&self) -> Interaction {
        interaction_of_spans(&self.agent, &self.customer, self.duration_ms)
    }

    /// Talk time of each side in the script, in ms.
    pub fn talk_ms(&self) -> (u64, u64) {
        let sum = |spans: &[(u64, u64)]| spans.iter().map(|(a, b)| b - a).sum();
        (sum(&self.agent), sum(&self.customer))
    }

    /// Both sides mixed into one channel, as a mono recorder would.
    pub fn mono(&self) -> Vec<f32> {
        self.planes[0]
            .iter()
            .zip(&self.planes[1])
            .map(|(a, c)| (a + c).clamp(-1.0, 1.0))
            .collect()
    }
}

/// The script every accuracy test uses: a support call with a question, an answer, a long
/// agent explanation with a customer "mm hmm" inside it, the customer cutting in at its end, a
/// one-word answer followed by more from the customer, and a last short "goodbye".
pub fn support_call() -> Vec<Line> {
    use At::*;
    use Side::*;
    vec![
        Line { side: Agent, at: Ms(300), text: "Good morning, thank you for calling. How can I help you today?" },
        Line { side: Customer, at: AfterEnd(0, 700), text: "Hi, I was charged twice for my last order and I would like a refund please." },
        Line { side: Agent, at: AfterEnd(1, 500), text: "I am sorry to hear that. Let me look at your account." },
        Line { side: Agent, at: AfterEnd(2, 400), text: "I can see both payments here. The second one was taken by mistake when the page reloaded. I will cancel it now and you will see the money back within five days." },
        Line { side: Customer, at: AfterStart(3, 2_500), text: "Mm hmm." },
        Line { side: Customer, at: AfterEnd(3, -400), text: "Oh that is great, thank you so much for your help." },
        Line { side: Agent, at: AfterEnd(5, 900), text: "You are welcome. Is there anything else I can do for you?" },
        Line { side: Customer, at: AfterEnd(6, 600), text: "No." },
        Line { side: Customer, at: AfterEnd(7, 500), text: "That was all, have a nice day." },
        Line { side: Agent, at: AfterEnd(8, 300), text: "Goodbye." },
    ]
}

/// Speaks every line with espeak-ng (into `dir`) and places it; `tail_ms` of silence follow
/// the last line.
pub fn render(script: &[Line], tail_ms: u64, dir: &Path) -> ScriptedCall {
    let clips: Vec<Vec<f32>> = script
        .iter()
        .enumerate()
        .map(|(i, line)| trim(speak(line.text, &dir.join(format!("line-{i}.wav")))))
        .collect();
    let ms_of = |samples: usize| (samples as u64 * 1000 + u64::from(RATE) / 2) / u64::from(RATE);
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for (line, clip) in script.iter().zip(&clips) {
        let start = match line.at {
            At::Ms(ms) => ms,
            At::AfterEnd(k, delta) => (spans[k].1 as i64 + delta) as u64,
            At::AfterStart(k, delta) => spans[k].0 + delta,
        };
        spans.push((start, start + ms_of(clip.len())));
    }
    let duration_ms = spans.iter().map(|s| s.1).max().unwrap_or(0) + tail_ms;
    let len = (duration_ms * u64::from(RATE) / 1000) as usize + 1;
    let mut planes = [vec![0.0f32; len], vec![0.0f32; len]];
    let (mut agent, mut customer) = (Vec::new(), Vec::new());
    for ((line, clip), span) in script.iter().zip(&clips).zip(spans) {
        let at = (span.0 * u64::from(RATE) / 1000) as usize;
        let (plane, truth) = match line.side {
            Side::Agent => (&mut planes[0], &mut agent),
            Side::Customer => (&mut planes[1], &mut customer),
        };
        for (slot, sample) in plane[at..at + clip.len()].iter_mut().zip(clip) {
            *slot += sample;
        }
        truth.push(span);
    }
    ScriptedCall {
        planes,
        agent,
        customer,
        duration_ms,
    }
}

/// espeak-ng (US English, 150 wpm) output for `text`, decoded.
fn speak(text: &str, wav: &Path) -> Vec<f32> {
    let out = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(wav)
        .arg(text)
        .output()
        .unwrap_or_else(|e| panic!("espeak-ng is needed to make test speech ({e})"));
    assert!(
        out.status.success(),
        "espeak-ng failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sink = Collect::default();
    callingest_audio::decode(wav, RecordingFormat::Wav, &mut sink).expect("espeak-ng WAV");
    assert_eq!(sink.rate, RATE, "espeak-ng's rate");
    sink.samples
}

/// The phrase without espeak-ng's leading and trailing silence: its span is the speech.
fn trim(clip: Vec<f32>) -> Vec<f32> {
    let audible = |s: &f32| s.abs() > 0.001;
    let first = clip.iter().position(audible).unwrap_or(0);
    let last = clip.iter().rposition(audible).map_or(0, |i| i + 1);
    clip[first..last.max(first)].to_vec()
}

#[derive(Default)]
struct Collect {
    rate: u32,
    samples: Vec<f32>,
}

impl PcmSink for Collect {
    fn start(&mut self, sample_rate: u32, _channels: usize) {
        self.rate = sample_rate;
    }
    fn push_plane(&mut self, channel: usize, samples: &[f32]) {
        if channel == 0 {
            self.samples.extend_from_slice(samples);
        }
    }
    fn end_block(&mut self, _frames: usize) {}
}

/// 16-bit PCM WAV at [`RATE`], one plane per channel.
pub fn wav_bytes(planes: &[&[f32]]) -> Vec<u8> {
    callingest_audio::wav::pcm16(RATE, planes)
}

/// Tolerances the analysis is held to against the script.
pub const DURATION_TOLERANCE_MS: i64 = 250;
pub const RATIO_TOLERANCE: f64 = 0.05;

/// Asserts every interaction figure of `measured` is within tolerance of `truth`: durations
/// ±250 ms, ratios ±0.05, turn counts exact, interactivity exact up to rounding.
pub fn assert_close(measured: &Interaction, truth: &Interaction) {
    let ms = |name: &str, m: Option<u64>, t: Option<u64>| {
        let (m, t) = (
            m.unwrap_or_else(|| panic!("{name} measured null")),
            t.unwrap(),
        );
        assert!(
            (m as i64 - t as i64).abs() <= DURATION_TOLERANCE_MS,
            "{name}: measured {m} ms, script {t} ms"
        );
    };
    ms(
        "longest_monologue_ms",
        measured.longest_monologue_ms,
        truth.longest_monologue_ms,
    );
    ms(
        "longest_customer_story_ms",
        measured.longest_customer_story_ms,
        truth.longest_customer_story_ms,
    );
    ms("patience_ms", measured.patience_ms, truth.patience_ms);
    assert_eq!(measured.agent_turns, truth.agent_turns, "agent_turns");
    assert_eq!(
        measured.customer_turns, truth.customer_turns,
        "customer_turns"
    );
    assert_eq!(
        measured.patience_switches, truth.patience_switches,
        "patience_switches"
    );
    let (m, t) = (measured.talk_ratio.unwrap(), truth.talk_ratio.unwrap());
    assert!(
        (m - t).abs() <= RATIO_TOLERANCE,
        "talk_ratio: measured {m}, script {t}"
    );
    let (m, t) = (
        measured.interactivity.unwrap(),
        truth.interactivity.unwrap(),
    );
    assert!(
        (m - t).abs() < 0.05,
        "interactivity: measured {m}, script {t}"
    );
}
