//! Arbitrary bytes through `identify` and `analyze_up_to`: the fuzzer reports a crash on any
//! panic outside the decoder, a non-finite or out-of-range figure, or an I/O error.
//!
//! A decoder panic is caught by the crate (and reported as `Undecodable`, which is what the
//! service records); each distinct one is printed once so a run shows what symphonia trips on.
//! `FUZZ_DECODER_PANICS_ARE_CRASHES=1` makes them crashes instead, to collect their inputs.
#![no_main]

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use callingest_audio::{analyze_up_to, identify, AnalysisError};
use libfuzzer_sys::fuzz_target;

fn scratch_file() -> &'static std::path::Path {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // tmpfs when there is one: every input is written to a file (the crate reads paths).
        let dir = std::path::Path::new("/dev/shm");
        let dir = if dir.is_dir() {
            dir.to_owned()
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("callingest-audio-fuzz-{}", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(format) = identify(&data[..data.len().min(64)]) else {
        return;
    };
    std::fs::write(scratch_file(), data).expect("scratch file writable");
    match analyze_up_to(scratch_file(), format, Duration::from_secs(600 * 60)) {
        Ok(a) => {
            let (mean_dbfs, peak_dbfs) = (
                a.mean_dbfs.unwrap_or(f64::NAN),
                a.peak_dbfs.unwrap_or(f64::NAN),
            );
            for figure in [a.silence_ratio, mean_dbfs, peak_dbfs, a.clipping_ratio] {
                assert!(figure.is_finite(), "{format}: {a:?}");
            }
            assert!((0.0..=1.0).contains(&a.silence_ratio), "{a:?}");
            assert!((0.0..=1.0).contains(&a.clipping_ratio), "{a:?}");
            assert!((-120.0..=0.0).contains(&mean_dbfs), "{a:?}");
            assert!((-120.0..=0.0).contains(&peak_dbfs), "{a:?}");
        }
        Err(AnalysisError::Undecodable(m)) if m.contains("decoder panicked") => {
            if std::env::var_os("FUZZ_DECODER_PANICS_ARE_CRASHES").is_some() {
                panic!("{m}");
            }
            static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
            let mut seen = SEEN.lock().unwrap();
            if seen.get_or_insert_with(HashSet::new).insert(m.clone()) {
                eprintln!("caught decoder panic: {m}");
            }
        }
        Err(AnalysisError::Io(e)) => panic!("{format}: I/O error on a local file: {e}"),
        Err(_) => {}
    }
});
