//! Throughput of `analyze()` against ffmpeg's decode alone, on 10-minute call-like recordings.
//!
//! `cargo bench -p callingest-audio --bench analyze`
//!
//! Generates (with ffmpeg, into a temp dir that is removed afterwards) a 10-minute 16 kHz stereo
//! WAV and the same audio as a 64 kbit/s MP3: alternating turns of syllable-modulated noise
//! (left 0–5.5 s, right 5–10 s of every 10 s, so 0.5 s overlaps) over a faint noise floor.
//! Then times, single-threaded, best of 3:
//! - `analyze()` (demux + decode + all measurements), and
//! - `ffmpeg -v error -threads 1 -i FILE -f null -` (demux + decode only, plus process start-up),
//!
//! and prints each as "× realtime per core" (seconds of audio per second of one core).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use callingest_audio::{analyze, RecordingFormat};

const SECONDS: u32 = 600;
const RUNS: usize = 3;

fn ffmpeg_available() -> bool {
    Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Makes sure ffmpeg is there; installs it with apt-get only when running as root.
fn ensure_ffmpeg() -> bool {
    if ffmpeg_available() {
        return true;
    }
    eprintln!(
        "ffmpeg not found: it is needed to generate the bench recordings and as the baseline."
    );
    if !running_as_root() {
        eprintln!("not root, so not installing it; install ffmpeg (e.g. `apt-get install -y ffmpeg`) and rerun.");
        return false;
    }
    eprintln!("running as root: trying `apt-get install -y ffmpeg` …");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "ffmpeg"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    if !ok || !ffmpeg_available() {
        eprintln!("installing ffmpeg failed; bench skipped.");
        return false;
    }
    true
}

fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg {args:?} failed");
}

fn generate(dir: &Path) -> (PathBuf, PathBuf) {
    // Syllable envelope (3 Hz, squared so it dips to zero like the gaps between syllables),
    // white-noise carrier, and a -60 dBFS-ish noise floor that is always there.
    let side = |on: &str, seed: u32| {
        format!(
            "{on}*0.6*(random({seed})-0.5)*(0.5+0.5*sin(2*PI*3*t+{seed}))^2+0.002*(random({})-0.5)",
            seed + 2
        )
    };
    let left = side("lt(mod(t,10),5.5)", 0);
    let right = side("gte(mod(t,10),5)", 1);
    let src = format!("aevalsrc='{left}|{right}':s=16000:d={SECONDS}");
    let wav = dir.join("call.wav");
    let mp3 = dir.join("call.mp3");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &src,
        "-c:a",
        "pcm_s16le",
        wav.to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-i",
        wav.to_str().unwrap(),
        "-c:a",
        "libmp3lame",
        "-b:a",
        "64k",
        mp3.to_str().unwrap(),
    ]);
    (wav, mp3)
}

/// Peak resident set size of this process (Linux), to show that memory does not grow with
/// the length of the call.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn time_ffmpeg_decode(path: &Path) -> Duration {
    best_of(|| {
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-threads", "1", "-i"])
            .arg(path)
            .args(["-f", "null", "-"])
            .status()
            .expect("ffmpeg runs");
        assert!(status.success());
    })
}

fn best_of<F: FnMut()>(mut f: F) -> Duration {
    (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .expect("RUNS > 0")
}

fn report(what: &str, elapsed: Duration) -> f64 {
    let x = f64::from(SECONDS) / elapsed.as_secs_f64();
    println!(
        "  {what:<34} {:>8.3} s  → {x:>7.0}× realtime per core",
        elapsed.as_secs_f64()
    );
    x
}

fn main() {
    if !ensure_ffmpeg() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("callingest-audio-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (wav, mp3) = generate(&dir);
    // ffmpeg's figure includes starting a process; measure that on a 10 ms file to show it.
    let tiny = dir.join("tiny.wav");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "anullsrc=r=16000:cl=stereo:d=0.01",
        tiny.to_str().unwrap(),
    ]);
    let startup = time_ffmpeg_decode(&tiny);
    println!(
        "{SECONDS} s of 16 kHz stereo call audio, single thread, best of {RUNS} (wav {} KiB, mp3 {} KiB)",
        std::fs::metadata(&wav).map(|m| m.len() / 1024).unwrap_or(0),
        std::fs::metadata(&mp3).map(|m| m.len() / 1024).unwrap_or(0)
    );
    for (path, format) in [(&wav, RecordingFormat::Wav), (&mp3, RecordingFormat::Mp3)] {
        println!("{}:", format.as_str());
        let mut analysis = None;
        let ours = best_of(|| analysis = Some(analyze(path, format).expect("bench file analyses")));
        let a = analysis.expect("ran");
        let ours_x = report("callingest-audio analyze()", ours);
        let theirs = time_ffmpeg_decode(path);
        let theirs_x = report("ffmpeg -threads 1 decode to null", theirs);
        println!(
            "  analyze/ffmpeg speed ratio: {:.2} (agent {} ms, customer {:?} ms, overlap {} ms, silence {:.1}%)",
            ours_x / theirs_x,
            a.agent_talk_ms,
            a.customer_talk_ms,
            a.overlap_ms,
            a.silence_ratio * 100.0
        );
    }
    println!(
        "ffmpeg process start-up alone (10 ms file): {:.3} s; peak RSS of this bench process: {} KiB",
        startup.as_secs_f64(),
        peak_rss_kib().map_or_else(|| "n/a".to_string(), |k| k.to_string())
    );
    let _ = std::fs::remove_dir_all(&dir);
}
