//! The store's configuration: every knob and bound, units last in each
//! name, with its defaults and its validation, and what "acknowledged"
//! means ([`Durability`]).

use crate::error::{Result, StoreError};
use crate::job::{Clock, RetryPolicy};

/// What "acknowledged" means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged = on disk: every group is flushed and fsynced before any
    /// caller in it is answered. Survives a process crash and power loss.
    #[default]
    Sync,
    /// Acknowledged = applied: visible to readers at once, flushed and fsynced
    /// in the background within about `tick_ms`. A process crash or power
    /// loss can lose that window of acknowledged writes (never a torn group:
    /// what survives is always a prefix of whole groups). Feature series go
    /// to the value log without an fsync on the commit path; after a power
    /// loss, open finds the results whose bytes did not reach the disk and
    /// takes back their jobs' completions (results dropped, job queued
    /// again), each job's completion staying all or nothing.
    Relaxed,
}

/// Every knob and bound of the store. Units are last in each name.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// See [`Durability`].
    pub durability: Durability,
    /// Attempts a job gets unless it says otherwise.
    pub attempts_max: u32,
    /// Backoff between attempts.
    pub retry: RetryPolicy,
    /// Lease length of [`JobQueue::claim`].
    pub lease_ms: u64,
    /// Unfinished jobs allowed at once; beyond it enqueue answers `QueueFull`.
    pub queue_depth_max: u64,
    /// Largest job payload.
    pub payload_bytes_max: usize,
    /// Most symbols on one job.
    pub job_symbols_max: usize,
    /// Most jobs in one enqueue, claim or complete call.
    pub batch_jobs_max: usize,
    /// Largest archived series.
    pub series_bytes_max: usize,
    /// Most archived series bytes in one complete call (bounds the memory a
    /// call holds and the size of one commit).
    pub complete_bytes_max: usize,
    /// Archived series up to this size are kept inline in sled (no value-log
    /// fsync); larger ones go to the value log.
    pub inline_series_bytes_max: usize,
    /// Most operations the writer commits as one group.
    pub group_ops_max: usize,
    /// How long the writer waits for more callers' ops before committing a
    /// group, when the previous group had more callers than have arrived.
    pub group_linger_us: u64,
    /// Capacity of the channel to the writer (callers block beyond it).
    pub channel_ops_max: usize,
    /// Finished jobs kept; older ones are purged.
    pub history_max: u64,
    /// Events kept in the event log; older ones are dropped.
    pub events_max: u64,
    /// Finished jobs older than this are purged; `None` keeps them (up to `history_max`).
    pub retention_ms: Option<u64>,
    /// A value-log segment is sealed when it reaches this size.
    pub segment_bytes_max: u64,
    /// Sealed segments with a smaller live fraction are compacted.
    pub compact_live_fraction_min: f64,
    /// sled's page cache.
    pub cache_bytes_max: u64,
    /// Writer housekeeping period: lease expiry when idle, relaxed flushes.
    pub tick_ms: u64,
    /// Where "now" comes from.
    pub clock: Clock,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            durability: Durability::Sync,
            attempts_max: 4,
            retry: RetryPolicy::default(),
            lease_ms: 30_000,
            queue_depth_max: 1_000_000,
            payload_bytes_max: 64 * 1024,
            job_symbols_max: 10_000,
            batch_jobs_max: 10_000,
            series_bytes_max: 64 * 1024 * 1024,
            complete_bytes_max: 1024 * 1024 * 1024,
            inline_series_bytes_max: 2048,
            group_ops_max: 256,
            group_linger_us: 200,
            channel_ops_max: 4096,
            history_max: 100_000,
            events_max: 100_000,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            segment_bytes_max: 256 * 1024 * 1024,
            compact_live_fraction_min: 0.5,
            cache_bytes_max: 64 * 1024 * 1024,
            tick_ms: 50,
            clock: Clock::System,
        }
    }
}

/// Checks every bound; the error names the key.
pub(crate) fn check_config(c: &StoreConfig) -> Result<()> {
    let bad =
        |field: &'static str, reason: &str| Err(StoreError::invalid(field, reason.to_owned()));
    if c.attempts_max == 0 || c.attempts_max > crate::job::ATTEMPTS_MAX_LIMIT {
        return bad("attempts_max", "must be 1 to 1000");
    }
    if c.group_ops_max == 0 || c.batch_jobs_max == 0 || c.queue_depth_max == 0 {
        return bad(
            "config",
            "group_ops_max, batch_jobs_max and queue_depth_max must be positive",
        );
    }
    if !(0.0..=1.0).contains(&c.compact_live_fraction_min) {
        return bad("compact_live_fraction_min", "must be within 0 and 1");
    }
    if c.inline_series_bytes_max > 64 * 1024 {
        // sled moves values above 128 KiB to blob files; keep well below.
        return bad("inline_series_bytes_max", "must be at most 65536");
    }
    if c.segment_bytes_max < 4096 {
        return bad("segment_bytes_max", "must be at least 4096");
    }
    Ok(())
}
