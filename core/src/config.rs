//! The job model's bounds: what every backend enforces, whatever it keeps
//! its data in. Units are last in each name.

use crate::error::{Result, StoreError};
use crate::job::{ATTEMPTS_MAX_LIMIT, Clock, RetryPolicy};

/// Every bound of the queue and the result store, and the clock.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// Attempts a job gets unless it says otherwise.
    pub attempts_max: u32,
    /// Backoff between attempts.
    pub retry: RetryPolicy,
    /// Lease length of a claim that names none.
    pub lease_ms: u64,
    /// Unfinished jobs allowed at once; beyond it enqueue answers `QueueFull`.
    pub queue_depth_max: u64,
    /// Largest job payload.
    pub payload_bytes_max: usize,
    /// Most symbols on one job.
    pub job_symbols_max: usize,
    /// Most jobs in one enqueue, claim or complete call.
    pub batch_jobs_max: usize,
    /// Largest stored series (as the backend encodes it).
    pub series_bytes_max: usize,
    /// Most series bytes in one complete call (bounds the memory a call
    /// holds and the size of one commit).
    pub complete_bytes_max: usize,
    /// Finished jobs kept; older ones are purged.
    pub history_max: u64,
    /// Events kept in the event log; older ones are dropped.
    pub events_max: u64,
    /// Finished jobs older than this are purged; `None` keeps them (up to
    /// `history_max`).
    pub retention_ms: Option<u64>,
    /// Where "now" comes from.
    pub clock: Clock,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            attempts_max: 4,
            retry: RetryPolicy::default(),
            lease_ms: 30_000,
            queue_depth_max: 1_000_000,
            payload_bytes_max: 64 * 1024,
            job_symbols_max: 10_000,
            batch_jobs_max: 10_000,
            series_bytes_max: 64 * 1024 * 1024,
            complete_bytes_max: 1024 * 1024 * 1024,
            history_max: 100_000,
            events_max: 100_000,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            clock: Clock::System,
        }
    }
}

impl QueueConfig {
    /// Checks every bound; the error names the key.
    pub fn check(&self) -> Result<()> {
        let bad = |field: &'static str, reason: &str| Err(StoreError::invalid(field, reason));
        if self.attempts_max == 0 || self.attempts_max > ATTEMPTS_MAX_LIMIT {
            return bad("attempts_max", "must be 1 to 1000");
        }
        if self.batch_jobs_max == 0 {
            return bad("batch_jobs_max", "must be positive");
        }
        if self.queue_depth_max == 0 {
            return bad("queue_depth_max", "must be positive");
        }
        Ok(())
    }
}
