//! The storage error type every backend reports. Expected outcomes (an
//! empty claim, a job that is not cancellable) are values, not errors;
//! these are the things that went wrong.

use std::path::PathBuf;

/// Everything that can go wrong in storage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An operating-system I/O error, with what the store was doing (a
    /// full disk says so: the write was refused and nothing acknowledged is
    /// lost).
    #[error("{context}: {error}{}", full_disk_hint(error))]
    Io {
        /// What the store was doing, naming the file where there is one.
        context: String,
        /// The underlying error (in the message, so not also a `source`).
        error: std::io::Error,
    },
    /// The backend's own engine reported an error (sled, a database).
    #[error("{backend}: {detail}")]
    Backend {
        /// Which engine (`sled`, `postgres`).
        backend: &'static str,
        /// What it said.
        detail: String,
    },
    /// The data was written by another format version.
    #[error(
        "{path}: store format version {found} but this kiln reads version {expected}; \
         export with the kiln that wrote it, or use a new data directory"
    )]
    FormatVersion {
        /// The format file.
        path: PathBuf,
        /// The version found on disk.
        found: String,
        /// The version this build reads and writes.
        expected: u32,
    },
    /// An fsync failed. What was written since the last good fsync may be
    /// lost whatever a retry says (the kernel drops the failed pages), so
    /// the process that saw it must not write to the store again: the store
    /// is poisoned for good and only a new process, whose recovery reads
    /// what the disk kept, may reopen it.
    #[error(
        "{context}: {error} (an fsync failed: what was written since the last fsync may be \
         lost, so this process stops writing to the store; restart kiln, whose recovery reads \
         what the disk kept)"
    )]
    FsyncFailed {
        /// What was being made durable, naming the file.
        context: String,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A write failed earlier; the store refuses writes until it is reopened
    /// (`fatal`: the failure was an fsync, and only a new process may).
    #[error("{}", poisoned_message(cause, *fatal))]
    Poisoned {
        /// The first failure.
        cause: String,
        /// Whether it was a failed fsync ([`StoreError::FsyncFailed`]).
        fatal: bool,
    },
    /// The store has been closed.
    #[error("store is closed")]
    Closed,
    /// An input value broke a rule; `field` names it.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which input: `symbol`, `feature`, `payload`, ….
        field: &'static str,
        /// What is wrong, with the offending value or limit.
        reason: String,
    },
    /// A job's result series is larger than `series_bytes_max`: it can
    /// never be stored, so the job cannot succeed.
    #[error("{key} stores {bytes} bytes, limit series_bytes_max = {max}")]
    TooLarge {
        /// The series (`symbol/feature`).
        key: String,
        /// Its encoded size.
        bytes: usize,
        /// The bound.
        max: usize,
    },
    /// Admission control: the queue already holds its configured maximum.
    #[error("queue is full: {depth} jobs waiting or running, limit queue_depth_max = {max}")]
    QueueFull {
        /// Jobs not yet finished.
        depth: u64,
        /// The configured bound.
        max: u64,
    },
    /// No job has this id (it never existed or was purged from history).
    #[error("no job {0} (finished jobs are kept up to history_max)")]
    UnknownJob(u64),
    /// The caller's lease is no longer valid: it expired and the job went back
    /// to the queue, or the job was claimed again since.
    #[error("lease on job {job_id} (attempt {attempt}) is no longer held")]
    LeaseLost {
        /// The job.
        job_id: u64,
        /// The attempt the caller's lease was for.
        attempt: u32,
    },
    /// Another writer changed what an ingest was planned against; plan again.
    #[error("conflicting concurrent change: {0}")]
    Conflict(String),
    /// Another process has the data directory open (one process at a
    /// time: the store's lock); `holder` is its pid when it wrote one.
    #[error("{}", in_use_message(dir, *holder))]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// The holding process's pid, as it wrote it in the lock file.
        holder: Option<u32>,
    },
    /// Stored bytes failed validation (checksum, format check, length).
    #[error("corrupt record in {location}: {reason}")]
    Corrupt {
        /// Table and key, or file and offset.
        location: String,
        /// What failed.
        reason: String,
    },
}

impl StoreError {
    /// An I/O error while doing `context`.
    pub fn io(context: impl Into<String>, error: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            error,
        }
    }

    /// An fsync of `context` that failed (see [`StoreError::FsyncFailed`]).
    pub fn fsync(context: impl Into<String>, error: std::io::Error) -> Self {
        StoreError::FsyncFailed {
            context: context.into(),
            error,
        }
    }

    /// Whether this process must not use the store again (a failed fsync).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            StoreError::FsyncFailed { .. } | StoreError::Poisoned { fatal: true, .. }
        )
    }

    /// A bad input: `field` and why.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        StoreError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// Stored bytes at `location` that failed validation, and why.
    pub fn corrupt(location: impl Into<String>, reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            location: location.into(),
            reason: reason.into(),
        }
    }

    /// Whether the error means the store itself is failing (an I/O or
    /// backend error, poisoned or closed), not that one request was wrong:
    /// what a circuit breaker counts.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            StoreError::Io { .. }
                | StoreError::FsyncFailed { .. }
                | StoreError::Backend { .. }
                | StoreError::Poisoned { .. }
                | StoreError::Closed
        )
    }
}

fn full_disk_hint(error: &std::io::Error) -> &'static str {
    if error.kind() == std::io::ErrorKind::StorageFull {
        " (the disk is full: this write was refused and nothing acknowledged is lost; \
         free space, and the store works again once reopened)"
    } else {
        ""
    }
}

fn in_use_message(dir: &std::path::Path, holder: Option<u32>) -> String {
    let by = holder.map_or_else(|| "another process".to_owned(), |p| format!("process {p}"));
    format!(
        "{} is in use by {by} (a kiln data directory is open in one process at a time)",
        dir.display()
    )
}

fn poisoned_message(cause: &str, fatal: bool) -> String {
    if fatal {
        format!("store is poisoned for this process after a failed fsync ({cause}); restart kiln")
    } else {
        format!("store is poisoned after a failed write ({cause}); reopen it to recover")
    }
}

/// The storage result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
