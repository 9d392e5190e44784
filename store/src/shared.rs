//! What the writer thread publishes after each commit for readers that do
//! not go through it: the counters and paused priorities (O(1) stats), the
//! data versions, the poison cause, the open ingest sessions, and the
//! [`Watermark`] that waiters block on instead of polling.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use kiln_core::{DataVersion, QueueStats, Symbol, Watermark};

use crate::record::Counters;

/// See the module docs.
#[derive(Default)]
pub(crate) struct Shared {
    by_state: [AtomicU64; 6],
    depth: [AtomicU64; 3],
    paused: [AtomicBool; 3],
    poisoned: AtomicBool,
    cause: Mutex<Option<String>>,
    /// Open bar-ingest sessions; compaction waits while their staged,
    /// not yet indexed value-log records exist.
    pub(crate) staging: AtomicUsize,
    /// Every symbol's data version, as committed: read without touching
    /// sled (whose batches block all its readers while they apply).
    pub(crate) versions: RwLock<HashMap<Symbol, DataVersion>>,
    /// The last commit's watermark, and the waiters for the next.
    watermark: Mutex<Watermark>,
    changed: Condvar,
}

impl Shared {
    /// What a commit changed: the counts, the paused priorities and the
    /// watermark (waking whoever waits for it).
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
        let mut w = self
            .watermark
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *w != watermark {
            *w = watermark;
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

    pub(crate) fn watermark(&self) -> Watermark {
        *self
            .watermark
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocks until the watermark is other than `seen`, or `timeout` passed.
    pub(crate) fn wait_for_change(&self, seen: Watermark, timeout: Duration) -> Watermark {
        let deadline = Instant::now() + timeout;
        let mut w = self
            .watermark
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while *w == seen {
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

    pub(crate) fn poison(&self, cause: &str) {
        if let Ok(mut c) = self.cause.lock() {
            c.get_or_insert_with(|| cause.to_owned());
        }
        self.poisoned.store(true, Ordering::SeqCst);
    }

    pub(crate) fn poison_cause(&self) -> Option<String> {
        if !self.poisoned.load(Ordering::SeqCst) {
            return None;
        }
        let cause = self.cause.lock().ok().and_then(|c| c.clone());
        Some(cause.unwrap_or_else(|| "unknown".into()))
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
            })
        };
        assert_eq!(shared.wait_for_change(seen, Duration::from_secs(10)), next);
        publisher.join().expect("publisher");
    }
}
