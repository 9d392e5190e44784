//! The embedded store's configuration: the job model's bounds
//! ([`QueueConfig`], which every backend shares) beside the knobs of sled,
//! the value log and the writer, units last in each name, with defaults and
//! validation; and what "acknowledged" means here ([`Durability`]).

use kiln_core::{QueueConfig, Result, StoreError};

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

impl Durability {
    /// Both modes.
    pub const ALL: [Durability; 2] = [Durability::Sync, Durability::Relaxed];

    /// `sync` or `relaxed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Relaxed => "relaxed",
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Durability {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        Durability::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| StoreError::invalid("durability", format!("{s:?}; use sync or relaxed")))
    }
}

/// Every knob and bound of the embedded store. Units are last in each name.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The job model's bounds and clock (what every backend enforces).
    pub queue: QueueConfig,
    /// See [`Durability`].
    pub durability: Durability,
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
    /// A value-log segment is sealed when it reaches this size.
    pub segment_bytes_max: u64,
    /// Sealed segments with a smaller live fraction are compacted.
    pub compact_live_fraction_min: f64,
    /// sled's page cache.
    pub cache_bytes_max: u64,
    /// Writer housekeeping period: lease expiry when idle, relaxed flushes.
    pub tick_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            queue: QueueConfig::default(),
            durability: Durability::Sync,
            inline_series_bytes_max: 2048,
            group_ops_max: 256,
            group_linger_us: 200,
            channel_ops_max: 4096,
            segment_bytes_max: 256 * 1024 * 1024,
            compact_live_fraction_min: 0.5,
            cache_bytes_max: 64 * 1024 * 1024,
            tick_ms: 50,
        }
    }
}

impl StoreConfig {
    /// Checks every bound (the store does when it opens); the error is
    /// [`StoreError::Invalid`] naming the key.
    pub fn check(&self) -> Result<()> {
        self.queue.check()?;
        let bad =
            |field: &'static str, reason: &str| Err(StoreError::invalid(field, reason.to_owned()));
        if self.group_ops_max == 0 {
            return bad("group_ops_max", "must be positive");
        }
        if !(0.0..=1.0).contains(&self.compact_live_fraction_min) {
            return bad("compact_live_fraction_min", "must be within 0 and 1");
        }
        if self.inline_series_bytes_max > 64 * 1024 {
            // sled moves values above 128 KiB to blob files; keep well below.
            return bad("inline_series_bytes_max", "must be at most 65536");
        }
        if self.segment_bytes_max < 4096 {
            return bad("segment_bytes_max", "must be at least 4096");
        }
        Ok(())
    }
}
