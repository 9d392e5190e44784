//! The engine's guards: a circuit breaker around the store's write path,
//! and admission control for submissions (a token bucket per client key and
//! a bound on queue depth), each refusing with a retry-after hint instead of
//! letting work pile up. Both keep the store's clock, so tests move time
//! instead of sleeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kiln_core::Clock;

/// A breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls are refused until the recovery timeout has passed.
    Open,
    /// One trial call goes through: success closes, failure opens again.
    HalfOpen,
}

impl BreakerState {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

struct BreakerInner {
    state: BreakerState,
    failures: u32,
    /// When it opened (the clock's ms).
    opened_ms: Option<u64>,
    trial_out: bool,
}

/// Closed / open / half-open around a dependency: after `threshold`
/// consecutive failures it opens and refuses calls for `recovery`, then lets
/// one trial through.
pub struct CircuitBreaker {
    threshold: u32,
    recovery: Duration,
    clock: Clock,
    inner: Mutex<BreakerInner>,
}

impl CircuitBreaker {
    /// A closed breaker keeping `clock`'s time.
    pub fn new(threshold: u32, recovery: Duration, clock: Clock) -> Self {
        CircuitBreaker {
            threshold: threshold.max(1),
            recovery,
            clock,
            inner: Mutex::new(BreakerInner {
                state: BreakerState::Closed,
                failures: 0,
                opened_ms: None,
                trial_out: false,
            }),
        }
    }

    /// How long ago it opened (`recovery` when it never did).
    fn since_opened(&self, g: &BreakerInner) -> Duration {
        g.opened_ms.map_or(self.recovery, |t| {
            Duration::from_millis(self.clock.now_ms().saturating_sub(t))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current state (an open breaker past its timeout reads half-open).
    pub fn state(&self) -> BreakerState {
        let g = self.lock();
        match g.state {
            BreakerState::Open if self.since_opened(&g) >= self.recovery => BreakerState::HalfOpen,
            s => s,
        }
    }

    /// Asks to make a call: `Err(retry_after)` while open (or while the
    /// half-open trial is out).
    pub fn admit(&self) -> Result<(), Duration> {
        let mut g = self.lock();
        match g.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open => {
                let elapsed = self.since_opened(&g);
                if elapsed < self.recovery {
                    return Err(self.recovery - elapsed);
                }
                g.state = BreakerState::HalfOpen;
                g.trial_out = true;
                Ok(())
            }
            BreakerState::HalfOpen if g.trial_out => Err(self.recovery),
            BreakerState::HalfOpen => {
                g.trial_out = true;
                Ok(())
            }
        }
    }

    /// Records an admitted call's outcome.
    pub fn record(&self, ok: bool) {
        let mut g = self.lock();
        g.trial_out = false;
        if ok {
            g.state = BreakerState::Closed;
            g.failures = 0;
            g.opened_ms = None;
            return;
        }
        g.failures = g.failures.saturating_add(1);
        if g.state == BreakerState::HalfOpen || g.failures >= self.threshold {
            if g.state != BreakerState::Open {
                tracing::warn!(failures = g.failures, "circuit breaker opens");
            }
            g.state = BreakerState::Open;
            g.opened_ms = Some(self.clock.now_ms());
        }
    }
}

/// A token bucket: `rate` tokens per second up to `burst`.
struct Bucket {
    tokens: f64,
    /// When it was last filled (the clock's ms).
    at_ms: u64,
}

/// Admission control for submissions.
pub struct Admission {
    rate: f64,
    burst: f64,
    clock: Clock,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Most distinct client keys tracked; the idlest are forgotten beyond it.
const CLIENTS_MAX: usize = 10_000;

impl Admission {
    /// `rate` submissions (symbols) per second per client, bursts up to
    /// `burst`, keeping `clock`'s time. `rate` must be finite and positive
    /// (the configuration checks it).
    pub fn new(rate: f64, burst: f64, clock: Clock) -> Self {
        Admission {
            clock,
            rate: if rate.is_finite() && rate > 0.0 {
                rate
            } else {
                1.0
            },
            burst: if burst.is_finite() {
                burst.max(1.0)
            } else {
                1.0
            },
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `n` tokens from `client`'s bucket, or says how long until there
    /// are enough.
    pub fn take(&self, client: &str, n: usize) -> Result<(), Duration> {
        let n = n as f64;
        let now = self.clock.now_ms();
        let secs = |from: u64| now.saturating_sub(from) as f64 / 1000.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= CLIENTS_MAX && !buckets.contains_key(client) {
            // Forget buckets that have refilled: they hold no debt.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + secs(b.at_ms) * rate < burst);
        }
        let b = buckets.entry(client.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at_ms: now,
        });
        b.tokens = (b.tokens + secs(b.at_ms) * self.rate).min(self.burst);
        b.at_ms = now;
        // A request larger than a burst is let through on a full bucket and
        // leaves it in debt, so the client then waits for it to refill.
        let need = n.min(self.burst);
        if b.tokens >= need {
            b.tokens -= n;
            Ok(())
        } else {
            Err(Duration::try_from_secs_f64((need - b.tokens) / self.rate).unwrap_or(Duration::MAX))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_recovers_half_open_and_closes() {
        let clock = Clock::manual(1_000);
        let b = CircuitBreaker::new(2, Duration::from_millis(30), clock.clone());
        b.record(false);
        assert_eq!(b.state(), BreakerState::Closed);
        b.record(false);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.admit().is_err());
        clock.advance_ms(40);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.admit().is_ok(), "one trial");
        assert!(b.admit().is_err(), "only one");
        b.record(false);
        assert_eq!(b.state(), BreakerState::Open, "a failed trial opens again");
        clock.advance_ms(40);
        assert!(b.admit().is_ok());
        b.record(true);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.admit().is_ok());
    }

    #[test]
    fn buckets_refill_at_their_rate_and_keep_clients_apart() {
        let clock = Clock::manual(1_000);
        let a = Admission::new(100.0, 10.0, clock.clone());
        assert!(a.take("x", 10).is_ok());
        let wait = a.take("x", 5).expect_err("empty");
        assert!(
            wait > Duration::from_millis(30) && wait <= Duration::from_millis(50),
            "{wait:?}"
        );
        assert!(a.take("y", 10).is_ok(), "another client has its own bucket");
        clock.advance_ms(60);
        assert!(a.take("x", 5).is_ok());
        assert!(
            a.take("x", 11).is_err(),
            "more than a burst needs a full bucket"
        );
        clock.advance_ms(110);
        assert!(a.take("x", 30).is_ok(), "a full bucket lets it through");
        assert!(a.take("x", 1).is_err(), "and owes the rest");
    }
}
