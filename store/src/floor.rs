//! The benchmark floor: raw sled inserts with the same durability steps the
//! writer takes (flush, then our own fsync), without any queue logic. It
//! lives here because this is the only crate that touches sled.

use std::fs::File;
use std::path::Path;

use kiln_core::{Result, StoreError};

use crate::space::sled_error;

/// A bare sled database for measuring what the queue is built on.
pub struct SledFloor {
    db: sled::Db,
    file: File,
}

impl SledFloor {
    /// Opens (or creates) a bare sled database in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let db = sled::Config::new().path(dir).open().map_err(sled_error)?;
        let file = File::open(dir.join("db"))
            .map_err(|e| StoreError::io(format!("open {}", dir.display()), e))?;
        Ok(SledFloor { db, file })
    }

    /// Inserts `n` fresh 96-byte values (about a job record) in one batch,
    /// then flushes and fsyncs.
    pub fn insert_group(&self, group: u64, n: u64) -> Result<()> {
        let mut batch = sled::Batch::default();
        for i in 0..n {
            batch.insert(&(group * n + i).to_be_bytes(), &[7u8; 96][..]);
        }
        self.db.apply_batch(batch).map_err(sled_error)?;
        self.db.flush().map_err(sled_error)?;
        self.file
            .sync_data()
            .map_err(|e| StoreError::io("fsync the floor database", e))
    }
}
