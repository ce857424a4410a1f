//! The memory bound of issue 15: how much the process's resident memory grows while one
//! two-hour stereo call is transcribed, the model excluded (bound: 256 MiB).
//!
//!     scripts/ensure-whisper-deps
//!     /work/bin/cargo-slot bench -p callingest-transcribe --features whisper --bench memory
//!
//! The call is written to a temporary directory as the worker would find it: 16-bit WAV at
//! 8 kHz (telephone audio, so the resampler runs), agent left and customer right taking turns
//! with espeak-ng sentences and pauses of 0.5–6 s, and from minute 10 on, every 20 minutes, a
//! 3-minute agent monologue without a pause long enough to end a speech span (so spans longer
//! than the model's window are cut). It is never held in memory whole, here or in the engine.
//!
//! The model is loaded first; then the peak is reset (`/proc/self/clear_refs`) and the bench
//! prints resident memory before, the peak during `Transcriber::transcribe_recording` (what the
//! worker runs) and the difference, with the time taken and what was heard.
//!
//! Environment: `BENCH_MINUTES` (default 120); `BENCH_WHOLE=1` transcribes from whole channels
//! instead (`load_channels` + `Transcriber::transcribe`, what the worker did before streaming),
//! for comparison; `CALLINGEST_WHISPER_MODEL` as for the tests.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use callingest_audio::RecordingFormat;
use callingest_transcribe::whisper::WhisperEngine;
use callingest_transcribe::{load_channels, Speaker, Stop, Transcriber};
use common::{model_path, speak, BILLING, SUPPORT};

/// Rate of the recording written.
const RATE: u32 = 8_000;
const BOUND_MIB: f64 = 256.0;

/// One stretch of speech on one side of the call, from `start` (samples at [`RATE`]).
struct Turn {
    start: usize,
    speaker: usize,
    clip: usize,
}

fn main() {
    let minutes: u64 = std::env::var("BENCH_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(120);
    let whole = std::env::var_os("BENCH_WHOLE").is_some();
    let engine = WhisperEngine::load(&model_path(), 1).expect("model loads");
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("two-hours.wav");
    let spoken = write_call(&wav, dir.path(), minutes * 60);

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    reset_peak();
    let before = status_kib("VmRSS");
    let t0 = Instant::now();
    let transcript = if whole {
        let channels = load_channels(&wav, RecordingFormat::Wav).unwrap();
        rt.block_on(engine.transcribe(channels))
    } else {
        rt.block_on(engine.transcribe_recording(
            &wav,
            RecordingFormat::Wav,
            Duration::from_secs(minutes * 60 + 60),
            &Stop::new(),
        ))
    }
    .expect("transcribes");
    let wall = t0.elapsed().as_secs_f64();
    let peak = status_kib("VmHWM");
    let growth_mib = (peak - before) as f64 / 1024.0;

    let heard = |who: Speaker| -> usize {
        transcript
            .segments
            .iter()
            .filter(|s| s.channel == who)
            .map(|s| s.text.split_whitespace().count())
            .sum()
    };
    let last_ms = transcript.segments.iter().map(|s| s.end_ms).max();
    println!(
        "{} min stereo call at {RATE} Hz, {}, 1 thread",
        minutes,
        if whole {
            "whole channels (load_channels + transcribe)"
        } else {
            "streamed (transcribe_recording)"
        }
    );
    println!(
        "  RSS before {:.1} MiB (model loaded), peak during {:.1} MiB: growth {growth_mib:.1} MiB \
         (bound {BOUND_MIB} MiB: {})",
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        if growth_mib < BOUND_MIB {
            "within"
        } else {
            "EXCEEDED"
        }
    );
    println!(
        "  {wall:.1} s, {:.1}x realtime; {} segments, words heard agent {} / customer {} of \
         {} / {} spoken; last segment ends at {:.1} s of {} s",
        (minutes * 60) as f64 / wall,
        transcript.segments.len(),
        heard(Speaker::Agent),
        heard(Speaker::Customer),
        spoken[0],
        spoken[1],
        last_ms.unwrap_or(0) as f64 / 1000.0,
        minutes * 60
    );
}

/// Writes the call (see the module comment) block by block and returns the words spoken per
/// side.
fn write_call(path: &Path, dir: &Path, seconds: u64) -> [usize; 2] {
    let sentences: Vec<&str> = [SUPPORT, BILLING].concat();
    let clips: Vec<Vec<f32>> = sentences.iter().map(|s| to_8k(&speak(s, dir))).collect();
    let total = seconds as usize * RATE as usize;
    let at_rate = |s: f64| (s * f64::from(RATE)) as usize;
    let mut turns = Vec::new();
    let mut words = [0usize; 2];
    let mut at = at_rate(0.5);
    let mut next_monologue = at_rate(600.0);
    for i in 0.. {
        if at >= next_monologue {
            // The agent explains at length: sentences 0.5 s apart, one span of 3 minutes.
            let end = at + at_rate(180.0);
            let mut k = i;
            while at < end {
                let clip = k % clips.len();
                turns.push(Turn {
                    start: at,
                    speaker: 0,
                    clip,
                });
                at += clips[clip].len() + at_rate(0.5);
                k += 1;
            }
            at += at_rate(1.5);
            next_monologue += at_rate(1200.0);
        }
        let clip = i % clips.len();
        turns.push(Turn {
            start: at,
            speaker: i % 2,
            clip,
        });
        at += clips[clip].len() + at_rate(0.5 + ((i * 7919) % 23) as f64 / 4.0);
        if at >= total {
            break;
        }
    }
    turns.retain(|t| t.start + clips[t.clip].len() <= total);
    for t in &turns {
        words[t.speaker] += sentences[t.clip].split_whitespace().count();
    }

    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    out.write_all(&callingest_audio::wav::header(
        1,
        2,
        RATE,
        16,
        (total * 4) as u32,
    ))
    .unwrap();
    let mut frame = |left: f32, right: f32| {
        for v in [left, right] {
            let v = (v.clamp(-1.0, 1.0) * f32::from(i16::MAX)).round() as i16;
            out.write_all(&v.to_le_bytes()).unwrap();
        }
    };
    let mut written = 0;
    for t in &turns {
        for _ in written..t.start {
            frame(0.0, 0.0);
        }
        for &v in &clips[t.clip] {
            if t.speaker == 0 {
                frame(v, 0.0);
            } else {
                frame(0.0, v);
            }
        }
        written = t.start + clips[t.clip].len();
    }
    for _ in written..total {
        frame(0.0, 0.0);
    }
    drop(out);
    words
}

/// 16 kHz → 8 kHz by averaging pairs (a crude low-pass; espeak-ng has little above 4 kHz).
fn to_8k(x: &[f32]) -> Vec<f32> {
    x.chunks(2)
        .map(|p| p.iter().sum::<f32>() / p.len() as f32)
        .collect()
}

/// Resets the peak resident size (VmHWM) to the current one.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("Linux resets VmHWM through clear_refs");
}

/// A `kB` line of /proc/self/status, e.g. `VmRSS`.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}
