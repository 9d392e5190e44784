//! The store's error type. Expected outcomes (an empty claim, a job that is not
//! cancellable) are values, not errors; these are the things that went wrong.

use std::path::PathBuf;

/// Everything that can go wrong in kiln-store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An operating-system I/O error, with what the store was doing.
    #[error("{context}: {source}")]
    Io {
        /// What the store was doing, naming the file where there is one.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// sled reported an error.
    #[error("sled: {0}")]
    Sled(String),
    /// The data directory was written by another format version.
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
    /// The store has been closed (its writer thread is gone).
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
    #[error("no job with id {0}")]
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
    /// Stored bytes failed validation (checksum, rkyv check, length).
    #[error("corrupt record in {location}: {reason}")]
    Corrupt {
        /// Tree and key, or segment and offset.
        location: String,
        /// What failed.
        reason: String,
    },
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        StoreError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(location: impl Into<String>, reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            location: location.into(),
            reason: reason.into(),
        }
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(source) => StoreError::Io {
                context: "sled".into(),
                source,
            },
            other => StoreError::Sled(other.to_string()),
        }
    }
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
