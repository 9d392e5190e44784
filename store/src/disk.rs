//! Making applied sled writes durable. sled's `flush` writes its buffers and
//! ends in `sync_file_range`, which does not survive power loss; after it we
//! fsync sled's data file ourselves. sled writes a value too large for its
//! log pages (a page over about 128 KiB: a job with a large payload or
//! thousands of symbols) to a blob file, which it never fsyncs; kiln
//! fsyncs every blob a commit made *before* the flush that writes the log
//! entries pointing at it: the writer thread, which makes sled write them,
//! lists them after each commit (whole by then), and each flush lists again
//! and fsyncs any blob whose length changed since its last fsync (a blob
//! another of sled's threads is writing is fsynced again once grown).
//! sled's own background flush is off (`generation`), so no flush outside
//! kiln's can make a pointer to a blob durable before the blob, and
//! nothing fsyncs sled after a failed fsync. Left open: a log buffer sled
//! fills writes itself out without a flush, and the kernel may write that
//! back before the blob it points at is fsynced (milliseconds later).
//! Every commit is numbered; after a flush, the number of the last commit
//! it covered goes to `COMMITTED` (see `generation`).
//!
//! sled 0.34 loses a wakeup: when a log buffer that one of its own threads
//! writes fails (a full disk), it records the error without waking a flush
//! already waiting for that buffer, which then waits forever (found by
//! fuzz/'s queue_model). A flush that has waited [`NUDGE_AFTER`] is nudged:
//! the nudger thread flushes too, which finds the error and wakes it, so
//! the waiting flush fails with the full disk's error instead of hanging.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_core::{Result, StoreError};

use crate::generation::CommitRecord;
use crate::shared::FsyncFailure;
use crate::space::{SledHandle, sled_error};

/// sled's database and the files under it that must be fsynced.
pub(crate) struct Disk {
    db: SledHandle<sled::Db>,
    dir: PathBuf,
    file: File,
    /// Blob files written whole and not yet fsynced, and those fsynced
    /// (a blob is written once, never changed).
    blobs: Mutex<Blobs>,
    /// The number of the last commit applied.
    applied: AtomicU64,
    /// The number of the last commit a flush made durable.
    durable: AtomicU64,
    record: CommitRecord,
    /// Flushes under way, and since when some has been.
    flushing: Mutex<(u32, Option<Instant>)>,
    /// Held through a flush and its fsyncs, one at a time (Linux reports a
    /// write-back error to one fsync of a file, not to one running beside
    /// it); the failure that ended this store's fsyncs, once one failed.
    fsync: Mutex<FsyncFailure>,
    /// Whether an fsync failed (what the nudger reads, not waiting on a
    /// flush under way).
    fsync_failed: AtomicBool,
    /// The nudger thread, and whether it is to stop.
    nudger: Mutex<Option<JoinHandle<()>>>,
    stopping: AtomicBool,
}

/// How long a sled flush waits before it is nudged (see the module docs).
pub(crate) const NUDGE_AFTER: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Blobs {
    /// Blob files seen with a length they were not fsynced at.
    pending: HashMap<OsString, u64>,
    /// The length each blob was fsynced at.
    synced: HashMap<OsString, u64>,
}

impl Blobs {
    /// Notes every blob whose length differs from the one it was fsynced at.
    fn note(&mut self, dir: &Path) -> Result<()> {
        let list = |e| StoreError::io(format!("list {}", dir.display()), e);
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(list(e)),
        };
        for entry in entries {
            let entry = entry.map_err(list)?;
            let len = match entry.metadata() {
                Ok(m) => m.len(),
                // sled collected it meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(list(e)),
            };
            let name = entry.file_name();
            if self.synced.get(&name) != Some(&len) {
                self.pending.insert(name, len);
            }
        }
        Ok(())
    }
}

impl Disk {
    /// sled in generation directory `dir`, whose last commit was `commit`.
    pub(crate) fn new(
        db: SledHandle<sled::Db>,
        dir: &Path,
        record: CommitRecord,
        commit: u64,
    ) -> Result<Self> {
        let path = dir.join("db");
        let file =
            File::open(&path).map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
        Ok(Disk {
            db,
            dir: dir.to_path_buf(),
            file,
            blobs: Mutex::new(Blobs::default()),
            applied: AtomicU64::new(commit),
            durable: AtomicU64::new(commit),
            record,
            flushing: Mutex::new((0, None)),
            fsync: Mutex::new(FsyncFailure::default()),
            fsync_failed: AtomicBool::new(false),
            nudger: Mutex::new(None),
            stopping: AtomicBool::new(false),
        })
    }

    /// Starts the thread that nudges a flush waiting longer than
    /// [`NUDGE_AFTER`]; [`Disk::stop_nudger`] ends it (or `disk` being gone).
    pub(crate) fn start_nudger(disk: &Arc<Disk>) -> Result<()> {
        let weak: Weak<Disk> = Arc::downgrade(disk);
        let handle = std::thread::Builder::new()
            .name("kiln-store-nudger".into())
            .spawn(move || {
                loop {
                    std::thread::park_timeout(NUDGE_AFTER);
                    let Some(disk) = weak.upgrade() else { return };
                    if disk.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let since = disk
                        .flushing
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .1;
                    if since.is_some_and(|t| t.elapsed() >= NUDGE_AFTER)
                        && !disk.fsync_failed.load(Ordering::SeqCst)
                    {
                        // Its own outcome is the waiting flush's.
                        let _ = disk.db.flush();
                    }
                }
            })
            .map_err(|e| StoreError::io("start the flush nudger thread", e))?;
        *disk.nudger.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        Ok(())
    }

    /// Ends the nudger thread (once the store has stopped flushing).
    pub(crate) fn stop_nudger(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let handle = self
            .nudger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }

    /// sled's flush, counted for the nudger.
    fn sled_flush(&self) -> sled::Result<usize> {
        {
            let mut f = self.flushing.lock().unwrap_or_else(PoisonError::into_inner);
            f.0 += 1;
            f.1.get_or_insert_with(Instant::now);
        }
        let flushed = self.db.flush();
        let mut f = self.flushing.lock().unwrap_or_else(PoisonError::into_inner);
        f.0 = f.0.saturating_sub(1);
        if f.0 == 0 {
            f.1 = None;
        }
        flushed
    }

    /// The number of the last commit applied.
    pub(crate) fn applied(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    /// The number of the last commit a flush made durable.
    pub(crate) fn durable(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }

    /// Commit `commit` was applied (the writer thread's, in order): every
    /// blob file sled wrote for it is whole now, and noted for the next
    /// flush; a failure to list them fails the commit.
    pub(crate) fn set_applied(&self, commit: u64) -> Result<()> {
        self.blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .note(&self.dir.join("blobs"))?;
        self.applied.store(commit, Ordering::SeqCst);
        Ok(())
    }

    /// Everything applied so far is on disk when this returns Ok. Once an
    /// fsync failed, every later call fails without touching the disk (a
    /// retried fsync can report success for pages the kernel dropped).
    pub(crate) fn flush_and_fsync(&self) -> Result<()> {
        let mut failed = self.fsync.lock().unwrap_or_else(PoisonError::into_inner);
        failed.check()?;
        let flushed = failed.note(self.flush_and_fsync_once());
        self.fsync_failed.store(failed.failed(), Ordering::SeqCst);
        flushed
    }

    /// [`Disk::flush_and_fsync`]'s work. A failed sled flush is a failed
    /// fsync (it ends in `sync_file_range`) unless the disk was full, which
    /// sled reports from its write first.
    fn flush_and_fsync_once(&self) -> Result<()> {
        // Every commit up to this one was applied before the flush began,
        // and its blobs listed.
        let covered = self.applied();
        self.fsync_blobs()?;
        self.sled_flush().map_err(|e| match e {
            sled::Error::Io(error) if error.kind() == std::io::ErrorKind::StorageFull => {
                StoreError::io(format!("write {}", self.dir.display()), error)
            }
            sled::Error::Io(error) => {
                crate::shared::fsync_error(format!("flush {}", self.dir.display()), error)
            }
            other => sled_error(other),
        })?;
        self.file.sync_data().map_err(|e| {
            crate::shared::fsync_error(format!("fsync {}", self.dir.join("db").display()), e)
        })?;
        self.durable.fetch_max(covered, Ordering::SeqCst);
        self.record.flushed(covered)
    }

    /// fsyncs the blob files noted, and any other thread of sled's wrote
    /// since (its page rewrites), each again whenever its length changed,
    /// then their directory.
    fn fsync_blobs(&self) -> Result<()> {
        let dir = self.dir.join("blobs");
        let mut blobs = self.blobs.lock().unwrap_or_else(PoisonError::into_inner);
        blobs.note(&dir)?;
        if blobs.pending.is_empty() {
            return Ok(());
        }
        for (name, len) in std::mem::take(&mut blobs.pending) {
            let path = dir.join(&name);
            match File::open(&path) {
                Ok(f) => f.sync_all().map_err(|e| {
                    crate::shared::fsync_error(format!("fsync {}", path.display()), e)
                })?,
                // sled collected it meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(format!("open {}", path.display()), e)),
            }
            blobs.synced.insert(name, len);
        }
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| crate::shared::fsync_error(format!("fsync {}", dir.display()), e))
    }
}
