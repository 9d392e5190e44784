//! The serve file, `serve.json` in the data directory: where a running
//! `kiln serve` listens (`{"url": "http://127.0.0.1:7070", "pid": 1234}`).
//! The server writes it once it listens and removes it when it stops, so an
//! opener that the directory's lock refuses can name the server to talk to
//! instead (the CLI's error, Python's `kiln.DirectoryInUse`). A file left
//! by a server that was killed counts only when the lock's holder wrote the
//! same pid, and the next process to hold the lock removes it.

use std::path::{Path, PathBuf};

/// The file's name in the data directory.
pub const SERVE_FILE: &str = "serve.json";

/// A running server, as its serve file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeFile {
    /// Its base URL (`http://127.0.0.1:7070`).
    pub url: String,
    /// Its process.
    pub pid: u32,
}

impl ServeFile {
    /// The path of `dir`'s serve file.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(SERVE_FILE)
    }

    /// Writes it into `dir` (beside, then renamed into place, so a reader
    /// never sees half of it).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let path = ServeFile::path(dir);
        let tmp = dir.join(format!(".{SERVE_FILE}.tmp"));
        let body = serde_json::json!({"url": self.url, "pid": self.pid});
        std::fs::write(&tmp, format!("{body}\n"))?;
        std::fs::rename(&tmp, &path)
    }

    /// The serve file of `dir`, if there is a readable one.
    pub fn read(dir: &Path) -> Option<ServeFile> {
        let text = std::fs::read_to_string(ServeFile::path(dir)).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(ServeFile {
            url: v.get("url")?.as_str()?.to_owned(),
            pid: u32::try_from(v.get("pid")?.as_u64()?).ok()?,
        })
    }

    /// Removes `dir`'s serve file, whoever wrote it (the opener that holds
    /// the directory's lock does: the server that wrote it is gone).
    pub fn remove(dir: &Path) {
        let _ = std::fs::remove_file(ServeFile::path(dir));
    }

    /// Removes `dir`'s serve file if it is this process's.
    pub fn remove_own(dir: &Path) {
        if ServeFile::read(dir).is_some_and(|f| f.pid == std::process::id()) {
            let _ = std::fs::remove_file(ServeFile::path(dir));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ServeFile;

    #[test]
    fn round_trips_and_is_removed_only_by_its_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(ServeFile::read(dir.path()), None);
        let other = ServeFile {
            url: "http://127.0.0.1:9".into(),
            pid: std::process::id().wrapping_add(1),
        };
        other.write(dir.path()).expect("write");
        assert_eq!(ServeFile::read(dir.path()), Some(other.clone()));
        ServeFile::remove_own(dir.path());
        assert_eq!(
            ServeFile::read(dir.path()),
            Some(other),
            "not this process's"
        );
        let own = ServeFile {
            url: "http://127.0.0.1:7070".into(),
            pid: std::process::id(),
        };
        own.write(dir.path()).expect("write");
        ServeFile::remove_own(dir.path());
        assert_eq!(ServeFile::read(dir.path()), None);
        std::fs::write(ServeFile::path(dir.path()), "{\"url\": 3}").expect("write");
        assert_eq!(ServeFile::read(dir.path()), None, "unreadable is none");
    }
}
