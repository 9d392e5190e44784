//! Making applied sled writes durable. sled's `flush` writes its buffers and
//! ends in `sync_file_range`, which does not survive power loss; after it we
//! fsync sled's data file ourselves, and any blob files sled created for
//! large values (which it never fsyncs). Every commit is numbered; after a
//! flush, the number of the last commit it covered goes to `COMMITTED`
//! (see `generation`).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_core::{Result, StoreError};

use crate::generation::CommitRecord;
use crate::space::sled_error;

/// sled's database and the files under it that must be fsynced.
pub(crate) struct Disk {
    db: sled::Db,
    dir: PathBuf,
    file: File,
    /// Blob files already fsynced (they are written once, never changed).
    synced_blobs: Mutex<HashSet<OsString>>,
    /// The number of the last commit applied.
    applied: AtomicU64,
    record: CommitRecord,
}

impl Disk {
    /// sled in generation directory `dir`, whose last commit was `commit`.
    pub(crate) fn new(db: sled::Db, dir: &Path, record: CommitRecord, commit: u64) -> Result<Self> {
        let path = dir.join("db");
        let file =
            File::open(&path).map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
        Ok(Disk {
            db,
            dir: dir.to_path_buf(),
            file,
            synced_blobs: Mutex::new(HashSet::new()),
            applied: AtomicU64::new(commit),
            record,
        })
    }

    /// The number of the last commit applied.
    pub(crate) fn applied(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    /// Commit `commit` was applied (the writer thread's, in order).
    pub(crate) fn set_applied(&self, commit: u64) {
        self.applied.store(commit, Ordering::SeqCst);
    }

    /// Everything applied so far is on disk when this returns Ok.
    /// A failed sled flush is a failed fsync (it ends in `sync_file_range`)
    /// unless the disk was full, which sled reports from its write first.
    pub(crate) fn flush_and_fsync(&self) -> Result<()> {
        // Every commit up to this one was applied before the flush began.
        let covered = self.applied();
        self.db.flush().map_err(|e| match e {
            sled::Error::Io(error) if error.kind() == std::io::ErrorKind::StorageFull => {
                StoreError::io(format!("write {}", self.dir.display()), error)
            }
            sled::Error::Io(error) => {
                StoreError::fsync(format!("flush {}", self.dir.display()), error)
            }
            other => sled_error(other),
        })?;
        self.file.sync_data().map_err(|e| {
            StoreError::fsync(format!("fsync {}", self.dir.join("db").display()), e)
        })?;
        self.fsync_blobs()?;
        self.record.flushed(covered);
        Ok(())
    }

    /// fsyncs blob files not fsynced yet, then their directory.
    fn fsync_blobs(&self) -> Result<()> {
        let blobs = self.dir.join("blobs");
        let Ok(entries) = std::fs::read_dir(&blobs) else {
            return Ok(());
        };
        let mut synced = self.synced_blobs.lock().map_err(|_| StoreError::Backend {
            backend: "sled",
            detail: "blob bookkeeping lock poisoned".into(),
        })?;
        let mut new_blob = false;
        for entry in entries.flatten() {
            if synced.contains(&entry.file_name()) {
                continue;
            }
            File::open(entry.path())
                .and_then(|f| f.sync_all())
                .map_err(|e| StoreError::fsync(format!("fsync {}", entry.path().display()), e))?;
            synced.insert(entry.file_name());
            new_blob = true;
        }
        if new_blob {
            File::open(&blobs)
                .and_then(|d| d.sync_all())
                .map_err(|e| StoreError::fsync(format!("fsync {}", blobs.display()), e))?;
        }
        Ok(())
    }
}
