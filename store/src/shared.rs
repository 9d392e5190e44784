//! What the writer thread publishes after each commit for readers that do
//! not go through it: the counters and paused priorities (O(1) stats), the
//! data versions and appended frames' ends, the poison cause, the open
//! ingest sessions, and the
//! [`Watermark`] that waiters block on instead of polling.
//!
//! Two watermarks: the applied one (the last commit's) and the revealed one,
//! which is all that readers of events and of the watermark see. In `Sync`
//! mode a commit is revealed only once the syncer has made it durable, so a
//! crash can never take back an event or a job id a client has seen; in
//! `Relaxed` mode at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use kiln_core::{Coverage, FrameKey, QueueStats, StoreError, Symbol, Watermark};

use crate::bars::VersionRecord;
use crate::record::Counters;

/// Most frame ends [`Shared::frame_ends`] keeps; beyond, it starts over.
pub(crate) const FRAME_ENDS_MAX: usize = 1 << 20;

/// Why the store refuses writes: the first failure, and whether it was a
/// failed fsync (then no reopen in this process, see
/// [`StoreError::FsyncFailed`]).
#[derive(Clone, Debug)]
pub(crate) struct Poison {
    pub(crate) cause: String,
    pub(crate) fatal: bool,
}

impl Poison {
    /// The poison a write-path error leaves.
    pub(crate) fn of(e: &StoreError) -> Poison {
        Poison {
            cause: e.to_string(),
            fatal: e.is_fatal(),
        }
    }

    /// A failure that is not an I/O error (a thread that could not start).
    pub(crate) fn other(cause: String) -> Poison {
        Poison {
            cause,
            fatal: false,
        }
    }

    /// The refusal every later write gets.
    pub(crate) fn error(&self) -> StoreError {
        StoreError::Poisoned {
            cause: self.cause.clone(),
            fatal: self.fatal,
        }
    }
}

/// See the module docs.
#[derive(Clone, Copy, Default)]
struct Watermarks {
    applied: Watermark,
    revealed: Watermark,
}

/// The data directories an fsync failed for in this process, with the
/// failure: what it covered may be gone from the disk while this process's
/// page cache still shows it, so no store of this process opens them again.
static FSYNC_FAILED: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());

/// Why `dir` (canonical) must not open again in this process, if it must not.
pub(crate) fn fsync_failed(dir: &Path) -> Option<String> {
    let failed = FSYNC_FAILED.lock().unwrap_or_else(PoisonError::into_inner);
    failed
        .iter()
        .find(|(d, _)| d == dir)
        .map(|(_, c)| c.clone())
}

/// Whether an fsync failed in this process (see [`fsync_error`]).
static FSYNC_FAILED_ANYWHERE: AtomicBool = AtomicBool::new(false);

/// The error of a failed fsync, which this process notes at once: from then
/// on it closes no sled handle (a close fsyncs again; see `SledHandle`).
pub(crate) fn fsync_error(context: impl Into<String>, error: std::io::Error) -> StoreError {
    note_fsync_failure();
    StoreError::fsync(context, error)
}

/// fsyncs the file or directory at `path`.
pub(crate) fn fsync_path(path: &Path) -> kiln_core::Result<()> {
    let file = std::fs::File::open(path)
        .map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
    file.sync_all()
        .map_err(|e| fsync_error(format!("fsync {}", path.display()), e))
}

/// Why a file's fsyncs ended, once one failed: a later one is refused
/// without touching the disk (a retried fsync can report success for pages
/// the kernel already dropped).
#[derive(Default)]
pub(crate) struct FsyncFailure(Option<String>);

impl FsyncFailure {
    /// Refuses when an fsync failed before.
    pub(crate) fn check(&self) -> kiln_core::Result<()> {
        match &self.0 {
            Some(cause) => Err(StoreError::Poisoned {
                cause: cause.clone(),
                fatal: true,
            }),
            None => Ok(()),
        }
    }

    /// Remembers `r` if it is a failed fsync; returns it.
    pub(crate) fn note(&mut self, r: kiln_core::Result<()>) -> kiln_core::Result<()> {
        if let Err(e) = &r
            && e.is_fatal()
        {
            self.0 = Some(e.to_string());
        }
        r
    }

    pub(crate) fn failed(&self) -> bool {
        self.0.is_some()
    }
}

/// Notes that an fsync failed in this process (see [`fsync_error`]).
pub(crate) fn note_fsync_failure() {
    FSYNC_FAILED_ANYWHERE.store(true, Ordering::SeqCst);
}

/// Whether an fsync failed in this process.
pub(crate) fn any_fsync_failed() -> bool {
    FSYNC_FAILED_ANYWHERE.load(Ordering::SeqCst)
}

/// Marks `dir` (canonical) as one whose fsync failed in this process.
pub(crate) fn mark_fsync_failed(dir: &Path, cause: String) {
    note_fsync_failure();
    let mut failed = FSYNC_FAILED.lock().unwrap_or_else(PoisonError::into_inner);
    if !failed.iter().any(|(d, _)| d == dir) {
        failed.push((dir.to_path_buf(), cause));
    }
}

/// Test support: forgets every failed fsync, as a new process would.
#[cfg(feature = "test-hooks")]
pub(crate) fn forget_failed_fsyncs() {
    FSYNC_FAILED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    FSYNC_FAILED_ANYWHERE.store(false, Ordering::SeqCst);
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct Shared {
    /// The data directory (canonical), which a failed fsync marks.
    pub(crate) dir: PathBuf,
    /// Bytes the writer handed to the store's files (see
    /// `Store::bytes_written`).
    pub(crate) bytes_written: AtomicU64,
    by_state: [AtomicU64; 6],
    depth: [AtomicU64; 3],
    paused: [AtomicBool; 3],
    poisoned: AtomicBool,
    cause: Mutex<Option<Poison>>,
    /// Open bar-ingest sessions; compaction waits while their staged,
    /// not yet indexed value-log records exist.
    pub(crate) staging: AtomicUsize,
    /// Every symbol's data version record, as committed: read without
    /// touching sled (whose batches block all its readers while they
    /// apply).
    pub(crate) versions: RwLock<HashMap<Symbol, VersionRecord>>,
    /// What the frames appended to since the open cover, as committed (at
    /// most [`FRAME_ENDS_MAX`]): a reader learns a frame's end without
    /// scanning its chunks and tail slots.
    pub(crate) frame_ends: RwLock<HashMap<FrameKey, Coverage>>,
    /// The last commit's watermark and the revealed one, and the waiters
    /// for the next reveal.
    watermarks: Mutex<Watermarks>,
    changed: Condvar,
    /// Test support: the syncer waits before its flush while set.
    #[cfg(feature = "test-hooks")]
    pub(crate) hold_syncer: AtomicBool,
}

impl Shared {
    /// The shared state of the store in `dir` (canonical).
    pub(crate) fn new(dir: PathBuf) -> Shared {
        Shared {
            dir,
            ..Shared::default()
        }
    }

    /// What a commit changed: the counts, the paused priorities and the
    /// applied watermark (waking workers; revealed to readers by
    /// [`Shared::reveal`]).
    pub(crate) fn publish(&self, c: &Counters, paused: &[bool; 3], watermark: Watermark) {
        for (a, n) in self.by_state.iter().zip(c.by_state) {
            a.store(n, Ordering::Relaxed);
        }
        for (a, n) in self.depth.iter().zip(c.depth) {
            a.store(n, Ordering::Relaxed);
        }
        for (a, p) in self.paused.iter().zip(paused) {
            a.store(*p, Ordering::Relaxed);
        }
        let mut w = self.watermarks();
        if w.applied != watermark {
            w.applied = watermark;
            self.changed.notify_all();
        }
    }

    fn watermarks(&self) -> std::sync::MutexGuard<'_, Watermarks> {
        self.watermarks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Readers may see every commit up to `watermark` now (waking whoever
    /// waits for it).
    pub(crate) fn reveal(&self, watermark: Watermark) {
        let mut w = self.watermarks();
        // Field by field, never back (groups may be revealed out of order).
        let revealed = Watermark {
            next_job_id: w.revealed.next_job_id.max(watermark.next_job_id),
            next_event_seq: w.revealed.next_event_seq.max(watermark.next_event_seq),
        };
        if w.revealed != revealed {
            w.revealed = revealed;
            self.changed.notify_all();
        }
    }

    /// The counts as the last commit left them.
    pub(crate) fn stats(&self) -> QueueStats {
        QueueStats {
            by_state: std::array::from_fn(|i| self.by_state[i].load(Ordering::Relaxed)),
            depth: std::array::from_fn(|i| self.depth[i].load(Ordering::Relaxed)),
            paused: std::array::from_fn(|i| self.paused[i].load(Ordering::Relaxed)),
        }
    }

    /// The revealed watermark.
    pub(crate) fn watermark(&self) -> Watermark {
        self.watermarks().revealed
    }

    /// The applied watermark (for workers).
    pub(crate) fn applied_watermark(&self) -> Watermark {
        self.watermarks().applied
    }

    /// Blocks until the applied watermark is other than `seen`, or
    /// `timeout` passed.
    pub(crate) fn wait_for_applied_change(&self, seen: Watermark, timeout: Duration) -> Watermark {
        self.wait_until(timeout, |w| w.applied != seen).applied
    }

    /// Blocks until the revealed watermark is other than `seen`, or
    /// `timeout` passed.
    pub(crate) fn wait_for_change(&self, seen: Watermark, timeout: Duration) -> Watermark {
        self.wait_until(timeout, |w| w.revealed != seen).revealed
    }

    /// The watermarks once `done` holds of them, or `timeout` passed.
    fn wait_until(&self, timeout: Duration, done: impl Fn(&Watermarks) -> bool) -> Watermarks {
        let deadline = Instant::now() + timeout;
        let mut w = self.watermarks();
        while !done(&w) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            w = self
                .changed
                .wait_timeout(w, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *w
    }

    /// Poisons the store: the first cause stays, but a failed fsync after
    /// it still makes the poison fatal.
    pub(crate) fn poison(&self, poison: Poison) {
        if poison.fatal {
            mark_fsync_failed(&self.dir, poison.cause.clone());
        }
        let mut cause = self.cause.lock().unwrap_or_else(PoisonError::into_inner);
        match cause.as_mut() {
            Some(first) => first.fatal |= poison.fatal,
            None => *cause = Some(poison),
        }
        self.poisoned.store(true, Ordering::SeqCst);
    }

    pub(crate) fn poisoned(&self) -> Option<Poison> {
        if !self.poisoned.load(Ordering::SeqCst) {
            return None;
        }
        let poison = self
            .cause
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Some(poison.unwrap_or_else(|| Poison::other("unknown".into())))
    }

    pub(crate) fn poison_cause(&self) -> Option<String> {
        self.poisoned().map(|p| p.cause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_wakes_on_a_new_watermark_and_times_out_without_one() {
        let shared = std::sync::Arc::new(Shared::default());
        let seen = shared.watermark();
        let t = Instant::now();
        assert_eq!(
            shared.wait_for_change(seen, Duration::from_millis(20)),
            seen
        );
        assert!(t.elapsed() >= Duration::from_millis(20));
        let next = Watermark {
            next_job_id: 2,
            next_event_seq: 1,
        };
        let publisher = {
            let shared = std::sync::Arc::clone(&shared);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(10));
                shared.publish(&Counters::default(), &[false; 3], next);
                assert_eq!(shared.watermark(), seen, "applied, not yet revealed");
                // Workers see it applied.
                assert_eq!(
                    shared.wait_for_applied_change(seen, Duration::from_secs(10)),
                    next
                );
                shared.reveal(next);
            })
        };
        assert_eq!(shared.wait_for_change(seen, Duration::from_secs(10)), next);
        publisher.join().expect("publisher");
    }
}
