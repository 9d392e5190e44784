//! Making applied sled writes durable. sled's `flush` writes its buffers and
//! ends in `sync_file_range`, which does not survive power loss; after it we
//! fsync sled's data file ourselves, and any blob files sled created for
//! large values (which it never fsyncs).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiln_core::{Result, StoreError};

use crate::space::sled_error;

/// sled's database and the files under it that must be fsynced.
pub(crate) struct Disk {
    db: sled::Db,
    dir: PathBuf,
    file: File,
    /// Blob files already fsynced (they are written once, never changed).
    synced_blobs: Mutex<HashSet<OsString>>,
}

impl Disk {
    pub(crate) fn new(db: sled::Db, dir: &Path) -> Result<Self> {
        let path = dir.join("db");
        let file =
            File::open(&path).map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
        Ok(Disk {
            db,
            dir: dir.to_path_buf(),
            file,
            synced_blobs: Mutex::new(HashSet::new()),
        })
    }

    /// Everything applied so far is on disk when this returns Ok.
    pub(crate) fn flush_and_fsync(&self) -> Result<()> {
        self.db.flush().map_err(sled_error)?;
        self.file
            .sync_data()
            .map_err(|e| StoreError::io(format!("fsync {}", self.dir.join("db").display()), e))?;
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
                .map_err(|e| StoreError::io(format!("fsync {}", entry.path().display()), e))?;
            synced.insert(entry.file_name());
            new_blob = true;
        }
        if new_blob {
            File::open(&blobs)
                .and_then(|d| d.sync_all())
                .map_err(|e| StoreError::io(format!("fsync {}", blobs.display()), e))?;
        }
        Ok(())
    }
}
