//! The storage error type every backend reports. Expected outcomes (an
//! empty claim, a job that is not cancellable) are values, not errors;
//! these are the things that went wrong.

use std::path::PathBuf;

/// Everything that can go wrong in storage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An operating-system I/O error, with what the store was doing.
    #[error("{context}: {error}")]
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
    /// A write failed earlier; the store refuses writes until it is reopened.
    #[error("store is poisoned after a failed write ({cause}); reopen it to recover")]
    Poisoned {
        /// The first failure.
        cause: String,
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
                | StoreError::Backend { .. }
                | StoreError::Poisoned { .. }
                | StoreError::Closed
        )
    }
}

/// The storage result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
