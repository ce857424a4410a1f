//! Recordings waiting for their transcript, kept on local disk by content digest.
//!
//! The processing worker hands the file it analysed over to the transcription pool here, so a
//! recording is normally downloaded once. The spool is only a cache: a transcription worker on
//! another machine, or after the file was lost, downloads the recording again.

use std::io;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The default place: a directory in the system's temporary directory.
    pub fn default_dir() -> PathBuf {
        std::env::temp_dir().join("callingest-spool")
    }

    /// Where the recording with this digest is kept; `None` for anything but a SHA-256 in hex
    /// (the name must never leave the directory).
    fn path(&self, sha256: &str) -> Option<PathBuf> {
        let valid = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| {
            self.dir
                .join(format!("{}.recording", sha256.to_ascii_lowercase()))
        })
    }

    /// Keeps a downloaded recording (moved when on the same file system, copied otherwise).
    pub fn keep(&self, file: NamedTempFile, sha256: &str) -> io::Result<()> {
        let Some(target) = self.path(sha256) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a SHA-256 digest",
            ));
        };
        if let Err(err) = file.persist(&target) {
            // Another file system: copy to a temporary name there, then rename atomically so
            // a reader never sees half a file.
            let mut staged = NamedTempFile::new_in(&self.dir)?;
            io::copy(
                &mut std::fs::File::open(err.file.path())?,
                staged.as_file_mut(),
            )?;
            staged.persist(&target).map_err(|e| e.error)?;
        }
        Ok(())
    }

    /// The kept recording with this digest, if it is here.
    pub fn get(&self, sha256: &str) -> Option<PathBuf> {
        self.path(sha256).filter(|p| p.is_file())
    }

    /// Removes recordings kept longer than `max_age`: left behind by a crash between the
    /// hand-over and the transcript. Removing one too many only costs a second download.
    /// Returns how many were removed.
    pub fn sweep(&self, max_age: std::time::Duration) -> io::Result<usize> {
        let now = std::time::SystemTime::now();
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .map(|modified| now.duration_since(modified).unwrap_or_default() > max_age)
                .unwrap_or(false);
            if old && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Forgets a recording once its transcription has ended, or its call was erased. Missing
    /// files are fine. Answers whether a file was removed.
    pub fn remove(&self, sha256: &str) -> bool {
        let Some(path) = self.path(sha256) else {
            return false;
        };
        match std::fs::remove_file(&path) {
            Ok(()) => true,
            Err(err) => {
                if err.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(error = %err, "could not remove a spooled recording");
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn a_kept_recording_is_found_by_digest_then_removed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let mut file = NamedTempFile::new().unwrap();
        file.write_all(b"test").unwrap();
        spool.keep(file, DIGEST).unwrap();
        let path = spool.get(DIGEST).expect("kept");
        assert_eq!(std::fs::read(&path).unwrap(), b"test");
        assert!(spool.remove(DIGEST));
        assert!(spool.get(DIGEST).is_none());
        assert!(!spool.remove(DIGEST));
    }

    #[test]
    fn a_sweep_removes_only_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let other = DIGEST.replace('9', "8");
        spool.keep(NamedTempFile::new().unwrap(), DIGEST).unwrap();
        spool.keep(NamedTempFile::new().unwrap(), &other).unwrap();
        let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(48 * 3600);
        std::fs::File::options()
            .write(true)
            .open(spool.get(DIGEST).unwrap())
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
        let removed = spool
            .sweep(std::time::Duration::from_secs(24 * 3600))
            .unwrap();
        assert_eq!(removed, 1);
        assert!(spool.get(DIGEST).is_none());
        assert!(spool.get(&other).is_some());
    }

    #[test]
    fn names_that_are_not_digests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert!(spool.get("../../etc/passwd").is_none());
        assert!(spool
            .keep(NamedTempFile::new().unwrap(), "../escape")
            .is_err());
    }
}
