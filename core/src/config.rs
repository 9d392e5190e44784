//! The job model's bounds and policies: what every backend enforces,
//! whatever it keeps its data in (limits, retry backoff, the clock). Units
//! are last in each name.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Result, StoreError};

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

/// The largest `attempts_max` a job may ask for.
pub const ATTEMPTS_MAX_LIMIT: u32 = 1000;

/// Exponential backoff with "equal jitter": attempt `a` waits a deterministic
/// pseudo-random time in `[d/2, d]` with `d = min(base_ms * 2^(a-1), cap_ms)`.
/// Deterministic in (job, attempt) so a replay or a model can predict it; the
/// job id spreads jobs that failed together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first retry's full delay.
    pub base_ms: u64,
    /// The largest delay.
    pub cap_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_ms: 1_000,
            cap_ms: 300_000,
        }
    }
}

impl RetryPolicy {
    /// The delay before the retry that follows failed attempt `attempt` (1-based).
    pub fn delay_ms(&self, job_id: u64, attempt: u32) -> u64 {
        let shift = attempt.saturating_sub(1).min(63);
        let full = self.base_ms.saturating_mul(1u64 << shift).min(self.cap_ms);
        let half = full / 2;
        half + splitmix64(job_id ^ (u64::from(attempt) << 48)) % (full - half + 1)
    }
}

/// A fixed, well-mixed hash (SplitMix64's finaliser).
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where "now" comes from. `Manual` lets tests move time (lease expiry,
/// delayed jobs, backoff) without sleeping.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// Wall-clock milliseconds since the Unix epoch.
    #[default]
    System,
    /// A shared counter the test advances.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A manual clock starting at `start_ms`.
    pub fn manual(start_ms: u64) -> Self {
        Clock::Manual(Arc::new(AtomicU64::new(start_ms)))
    }

    /// Milliseconds since the epoch.
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            Clock::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward; no effect on the system clock.
    pub fn advance_ms(&self, ms: u64) {
        if let Clock::Manual(t) = self {
            t.fetch_add(ms, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_equal_jitter_bounds_and_caps() {
        let p = RetryPolicy {
            base_ms: 100,
            cap_ms: 1_000,
        };
        for id in 0..200 {
            // Hand-computed full delays: 100, 200, 400, 800, then capped at 1000.
            for (attempt, full) in [
                (1, 100),
                (2, 200),
                (3, 400),
                (4, 800),
                (5, 1000),
                (40, 1000),
            ] {
                let d = p.delay_ms(id, attempt);
                assert!(d >= full / 2 && d <= full, "id {id} attempt {attempt}: {d}");
            }
        }
    }

    #[test]
    fn backoff_jitter_spreads_jobs() {
        let p = RetryPolicy::default();
        let distinct: std::collections::HashSet<u64> =
            (0..100).map(|id| p.delay_ms(id, 3)).collect();
        assert!(
            distinct.len() > 50,
            "only {} distinct delays",
            distinct.len()
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = Clock::manual(1_000);
        assert_eq!(c.now_ms(), 1_000);
        c.advance_ms(5);
        assert_eq!(c.now_ms(), 1_005);
    }
}
