//! How much faster than real time Whisper tiny.en transcribes a call on ONE thread, and how
//! well (WER per channel).
//!
//! Calls, built from espeak-ng sentences (agent on the left, customer on the right, taking
//! turns): `support` (60 s, the original benchmark call), `billing` (about a minute, other
//! sentences), `long` (10 minutes, turns separated by realistic silences of 0.5-6 s), and
//! `opening` (5.6 s mono clip speaking from its first sample). Every call is transcribed with
//! the default engine settings and the variants asked for, timing decode + resample +
//! transcription as the worker runs them (`Transcriber::transcribe_recording`, streaming; what
//! a worker spends between `TranscriptionStarted` and `TranscriptProduced`).
//!
//!     scripts/ensure-whisper-deps
//!     /work/bin/cargo-slot --quiet bench -p callingest-transcribe --features whisper --bench realtime
//!
//! Environment:
//! - `CALLINGEST_WHISPER_MODEL`: the ggml file (else fetched into target/whisper/ like the
//!   tests); `BENCH_MODELS`: several ggml files, comma-separated, benchmarked in turn.
//! - `BENCH_CALLS`: calls to run, comma-separated (default `support,billing,long,opening`).
//! - `BENCH_VARIANTS`: engine variants besides `default`, comma-separated: `full-ctx` (full
//!   30 s audio contexts, as reference Whisper; slow), `no-fallback` (no re-decoding at higher
//!   temperatures). Default: none.
//! - `BENCH_POOL=N`: also transcribe N copies of the first call as a pool would, for each
//!   threads-per-call × calls-at-once setting that fits two cores, and print calls per minute.
//! - `BENCH_VERBOSE=1` prints every segment.
//! - `BENCH_AUDIO_DIR`: keep the calls there (`<call>.wav`) with `references.tsv` (call,
//!   seconds, channel index, reference text), for scripts/bench-side-by-side.
//!
//! Figures: see README.md, "Transcription speed and accuracy".

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use callingest_audio::RecordingFormat;
use callingest_transcribe::whisper::WhisperEngine;
use callingest_transcribe::{word_error_rate, Speaker, Stop, Transcriber, SAMPLE_RATE};
use common::{model_path, place, samples, speak, write_wav, BILLING, SUPPORT};

const THREADS: usize = 1;
/// Longest recording transcribed: longer than any call here.
const LIMIT: Duration = Duration::from_secs(3600);

/// Speaks from the first sample: the words Whisper used to lose (issue 15).
const OPENING: &str =
    "hello this is a test call about pricing for the premium plan and the discount you offered";

struct Call {
    name: &'static str,
    wav: PathBuf,
    seconds: f64,
    /// Reference text per speaker on the call.
    references: Vec<(Speaker, String)>,
}

/// A stereo call of `seconds` from `turns` (repeated as needed), `gap(i)` seconds of silence
/// after turn `i`.
fn stereo_call(
    name: &'static str,
    dir: &Path,
    turns: &[&str],
    seconds: f64,
    gap: impl Fn(usize) -> f64,
) -> Call {
    let total = samples(seconds);
    let mut left = vec![0.0f32; total];
    let mut right = vec![0.0f32; total];
    let (mut agent, mut customer) = (Vec::new(), Vec::new());
    let mut at = samples(0.5);
    for (i, text) in turns.iter().cycle().enumerate() {
        let clip = speak(text, dir);
        if at + clip.len() + samples(0.5) > total {
            break;
        }
        let (plane, reference) = if i % 2 == 0 {
            (&mut left, &mut agent)
        } else {
            (&mut right, &mut customer)
        };
        place(plane, at, &clip);
        reference.push(*text);
        at += clip.len() + samples(gap(i));
    }
    let wav = dir.join(format!("{name}.wav"));
    write_wav(&wav, &[left, right]);
    Call {
        name,
        wav,
        seconds: total as f64 / f64::from(SAMPLE_RATE),
        references: vec![
            (Speaker::Agent, agent.join(" ")),
            (Speaker::Customer, customer.join(" ")),
        ],
    }
}

fn opening_call(dir: &Path) -> Call {
    let clip = speak(OPENING, dir);
    // Drop espeak-ng's few milliseconds of lead-in: speech from sample 0.
    let first = clip.iter().position(|v| v.abs() > 1e-3).unwrap_or(0);
    let clip = clip[first..].to_vec();
    let wav = dir.join("opening.wav");
    let seconds = clip.len() as f64 / f64::from(SAMPLE_RATE);
    write_wav(&wav, &[clip]);
    Call {
        name: "opening",
        wav,
        seconds,
        references: vec![(Speaker::Mono, OPENING.to_string())],
    }
}

fn calls(dir: &Path) -> Vec<Call> {
    let wanted = std::env::var("BENCH_CALLS").unwrap_or("support,billing,long,opening".into());
    wanted
        .split(',')
        .map(|name| match name.trim() {
            "support" => stereo_call("support", dir, SUPPORT, 60.0, |_| 0.6),
            "billing" => stereo_call("billing", dir, BILLING, 62.0, |i| {
                0.3 + (i % 3) as f64 * 0.4
            }),
            // Pauses of 0.5 to 6 s (thinking, looking things up, hold), deterministic.
            "long" => stereo_call("long", dir, &[SUPPORT, BILLING].concat(), 600.0, |i| {
                0.5 + ((i * 7919) % 23) as f64 / 4.0
            }),
            "opening" => opening_call(dir),
            other => panic!("unknown call {other:?} in BENCH_CALLS"),
        })
        .collect()
}

fn variant(model: &Path, name: &str) -> WhisperEngine {
    let engine = WhisperEngine::load(model, THREADS).expect("model loads");
    match name {
        "default" => engine,
        "full-ctx" => engine.with_trimmed_audio_ctx(false),
        "no-fallback" => engine.with_temperature_fallback(false),
        other => panic!("unknown variant {other:?} in BENCH_VARIANTS"),
    }
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("BENCH_AUDIO_DIR").map_or(tmp.path().to_path_buf(), PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();
    let calls = calls(&dir);
    write_references(&dir, &calls);
    let models: Vec<PathBuf> = match std::env::var("BENCH_MODELS") {
        Ok(list) => list.split(',').map(PathBuf::from).collect(),
        Err(_) => vec![model_path()],
    };
    let mut variants = vec!["default".to_string()];
    if let Ok(list) = std::env::var("BENCH_VARIANTS") {
        variants.extend(list.split(',').map(|v| v.trim().to_string()));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    println!("threads: {THREADS}");
    for call in &calls {
        let words: usize = call
            .references
            .iter()
            .map(|(_, r)| r.split_whitespace().count())
            .sum();
        println!("call {}: {:.1} s, {words} words", call.name, call.seconds);
    }
    for model in &models {
        let t0 = Instant::now();
        drop(WhisperEngine::load(model, THREADS).expect("model loads"));
        println!(
            "\nmodel {} (load {:.2} s)",
            model.display(),
            t0.elapsed().as_secs_f64()
        );
        for name in &variants {
            let engine = variant(model, name);
            for call in &calls {
                run(&rt, &engine, name, call);
            }
        }
        if let Some(n) = std::env::var("BENCH_POOL")
            .ok()
            .and_then(|n| n.parse().ok())
        {
            for (threads, concurrency) in [(1, 1), (2, 1), (1, 2), (2, 2)] {
                pool(model, &calls[0], n, threads, concurrency);
            }
        }
    }
}

/// Transcribes `n` copies of `call`, `concurrency` at a time with `threads` each (what the
/// service's pool does with CALLINGEST_WHISPER_THREADS and CALLINGEST_TRANSCRIBE_CONCURRENCY).
fn pool(model: &Path, call: &Call, n: usize, threads: usize, concurrency: usize) {
    let engine = std::sync::Arc::new(WhisperEngine::load(model, threads).expect("model loads"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let t0 = Instant::now();
    rt.block_on(async {
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut jobs = tokio::task::JoinSet::new();
        for _ in 0..n {
            let (engine, permits, wav) = (engine.clone(), permits.clone(), call.wav.clone());
            jobs.spawn(async move {
                let _permit = permits.acquire_owned().await.unwrap();
                engine
                    .transcribe_recording(&wav, RecordingFormat::Wav, LIMIT, &Stop::new())
                    .await
                    .expect("transcribes");
            });
        }
        while let Some(done) = jobs.join_next().await {
            done.unwrap();
        }
    });
    let wall = t0.elapsed().as_secs_f64();
    println!(
        "  pool: {n} x {} with {threads} thread(s) per call, {concurrency} at once: {wall:.1} s, \
         {:.1} calls/minute, {:.0} call-minutes per hour",
        call.name,
        n as f64 * 60.0 / wall,
        n as f64 * call.seconds * 60.0 / wall
    );
}

/// `references.tsv`: one line per channel of every call.
fn write_references(dir: &Path, calls: &[Call]) {
    let mut tsv = String::new();
    for call in calls {
        for (i, (_, reference)) in call.references.iter().enumerate() {
            tsv += &format!("{}\t{:.3}\t{i}\t{reference}\n", call.name, call.seconds);
        }
    }
    std::fs::write(dir.join("references.tsv"), tsv).unwrap();
}

/// CPU seconds this process has used (user + system), from /proc/self/stat: on a shared
/// machine the CPU a call costs is steadier than its wall time.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ, 100 on Linux
}

fn run(rt: &tokio::runtime::Runtime, engine: &WhisperEngine, variant: &str, call: &Call) {
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let t = rt
        .block_on(engine.transcribe_recording(&call.wav, RecordingFormat::Wav, LIMIT, &Stop::new()))
        .expect("transcribes");
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let wers: Vec<String> = call
        .references
        .iter()
        .map(|(who, reference)| {
            let heard = t
                .segments
                .iter()
                .filter(|s| s.channel == *who)
                .map(|s| s.text.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            format!("{who:?} {:.3}", word_error_rate(reference, &heard))
        })
        .collect();
    println!(
        "  {variant:<12} {:<8} {wall:6.2} s {:6.1}x realtime (CPU {cpu:6.2} s, {:6.1}x)  WER {}  ({} segments)",
        call.name,
        call.seconds / wall,
        call.seconds / cpu,
        wers.join(", "),
        t.segments.len()
    );
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        for s in &t.segments {
            println!(
                "    {:?} {:>6}-{:>6} ms  {}",
                s.channel, s.start_ms, s.end_ms, s.text
            );
        }
    }
}
