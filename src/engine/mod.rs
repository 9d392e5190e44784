//! The engine: jobs to stored features, over a storage backend it reaches
//! only through the traits of `kiln-core` ([`Backend`]). It turns
//! submissions into durable jobs and runs them: claims a batch in priority
//! order, groups it by plan, reads every symbol's bars in one batch read,
//! computes on the rayon pool, and commits every result with its job's
//! completion in one call.
//!
//! Job kinds:
//! - `compute`: payload is the canonical spec list (`rsi(14),macd(12,26,9)`),
//!   symbols are the job's symbols. Each symbol's outputs are stored under
//!   their labels, with the data version they were computed from, and the
//!   plan's kernel state beside them (see `state`).
//! - `refresh`: one symbol, empty payload. For every plan whose state is
//!   stored for the symbol: when the stored bars only grew, the saved state
//!   continues over the new bars (bit for bit what a full recompute gives);
//!   otherwise (a correction) the plan is recomputed in full.
//!
//! The parts, one file each:
//! - `submit`: submissions and admission, ingest and the refreshes it
//!   implies, warm-up, cancel and retry;
//! - `run`: the claim → compute → commit pipeline and its adaptive sizes;
//! - `compute` and `refresh`: executing the two job kinds;
//! - `state`: the saved-state convention;
//! - `read`: feature reads (ready or not), the stored outputs, and the
//!   engine's part of an integrity check;
//! - `guard`: the circuit breaker and the token buckets;
//! - `metrics`: counters and their Prometheus text;
//! - `runner`: a background runner, async entry points, the reopening worker;
//! - `feed`: the live event feed of a data directory (`kiln watch`);
//! - `serve_file`: where a running `kiln serve` listens, for openers its
//!   lock refuses.

mod compute;
pub mod feed;
pub mod guard;
mod live;
pub mod metrics;
mod read;
mod refresh;
mod run;
mod runner;
pub mod serve_file;
pub mod state;
mod submit;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kiln_core::{Backend, StoreError};
use kiln_store::Store;

use guard::{Admission, BreakerState, CircuitBreaker};
use metrics::Metrics;

use crate::config::{Config, EngineConfig};
use crate::features::{FeatureError, SpecError};
use crate::market::MarketError;

pub use read::{FeatureRead, Output, SymbolSummary, resolve_features};
pub use run::{RunProgress, RunReport};
pub use runner::{RunObserver, Runner, run_reopening};
pub use submit::{Bulk, RetryOutcome};

/// What can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another process has the data directory open; when it is `kiln
    /// serve`, `server` is the URL to talk to it at.
    #[error("{}", directory_in_use(dir, *pid, server.as_deref()))]
    DirectoryInUse {
        /// The data directory.
        dir: std::path::PathBuf,
        /// The process holding it, when known.
        pid: Option<u32>,
        /// The URL of the `kiln serve` holding it.
        server: Option<String>,
    },
    /// A feature spec is wrong.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A plan could not be built or run.
    #[error(transparent)]
    Feature(#[from] FeatureError),
    /// Ingest failed.
    #[error(transparent)]
    Market(#[from] MarketError),
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A request is wrong (names what and why).
    #[error("{0}")]
    Request(String),
    /// A request names a symbol that has no bars.
    #[error("{0} has no bars; ingest them first")]
    NoBars(kiln_core::Symbol),
    /// A submission was refused for now: try again after `retry_after_ms`.
    #[error("{reason}; retry in {retry_after_ms} ms")]
    Refused {
        /// Which limit refused it.
        reason: String,
        /// When to try again.
        retry_after_ms: u64,
    },
    /// Something inside the engine failed (a thread or task that died): not
    /// the caller's doing.
    #[error("internal failure: {0}")]
    Internal(String),
}

fn directory_in_use(dir: &Path, pid: Option<u32>, server: Option<&str>) -> String {
    let by = pid.map_or_else(|| "another process".to_owned(), |p| format!("process {p}"));
    match server {
        Some(url) => format!(
            "{} is in use by kiln serve ({by}) at {url}; talk to it there (kiln.connect({url:?}) in \
             Python), or stop it first",
            dir.display()
        ),
        None => format!(
            "{} is in use by {by} (a kiln data directory is open in one process at a time)",
            dir.display()
        ),
    }
}

/// The job kinds.
pub const COMPUTE: &str = "compute";
/// See [`COMPUTE`].
pub const REFRESH: &str = "refresh";

/// An open backend with its engine. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Engine<B: Backend = Store> {
    store: B,
    config: EngineConfig,
    runtime: Arc<Runtime>,
}

/// What an engine shares across clones: guards, counters, adaptive sizes.
pub(crate) struct Runtime {
    pub breaker: CircuitBreaker,
    pub admission: Admission,
    pub metrics: Metrics,
    /// The adaptive claim size and in-flight batch limit, now.
    pub claim_jobs: AtomicUsize,
    pub inflight: AtomicUsize,
    /// The plan states refreshes ended with.
    pub live: live::LiveStates,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

/// The engine's live values, for stats and health.
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeStats {
    /// The store write path's circuit breaker.
    pub breaker: BreakerState,
    /// Jobs claimed per batch now (adaptive).
    pub claim_jobs: usize,
    /// Batches allowed to commit while the next computes, now (adaptive).
    pub inflight_batches: usize,
}

impl Engine {
    /// Opens (or creates) the data directory: the embedded store with
    /// `config.store`, the engine with `config.engine`.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Engine, EngineError> {
        // The store's own bounds are checked as it opens; the engine's, and
        // the bounds between them, first.
        config.check()?;
        let store = Store::open(dir, config.store).map_err(|e| match e {
            StoreError::InUse { dir, holder } => {
                let server = serve_file::ServeFile::read(&dir)
                    .filter(|f| holder == Some(f.pid))
                    .map(|f| f.url);
                EngineError::DirectoryInUse {
                    dir,
                    pid: holder,
                    server,
                }
            }
            e => e.into(),
        })?;
        // Holding the lock, any serve file is a dead server's (its pid may
        // be reused, so it is removed rather than trusted).
        serve_file::ServeFile::remove(store.dir());
        Engine::with_backend(store, config.engine)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.store.dir()
    }
}

impl<B: Backend> Engine<B> {
    /// The engine over an open backend.
    pub fn with_backend(store: B, config: EngineConfig) -> Result<Engine<B>, EngineError> {
        config.check()?;
        let batch_jobs_max = store.queue_config().batch_jobs_max;
        if config.claim_jobs_max > batch_jobs_max {
            return Err(crate::config::ConfigError::Bounds(format!(
                "claim_jobs_max = {} is above the store's batch_jobs_max = {batch_jobs_max}",
                config.claim_jobs_max
            ))
            .into());
        }
        let clock = store.queue_config().clock.clone();
        let runtime = Arc::new(Runtime {
            breaker: CircuitBreaker::new(
                config.breaker_failures,
                Duration::from_millis(config.breaker_recovery_ms),
                clock.clone(),
            ),
            admission: Admission::new(
                config.submit_symbols_per_s,
                config.submit_burst_symbols,
                clock,
            ),
            metrics: Metrics::default(),
            claim_jobs: AtomicUsize::new(config.claim_jobs_min.clamp(1, config.claim_jobs_max)),
            inflight: AtomicUsize::new(1),
            live: live::LiveStates::new(config.live_states_max),
        });
        Ok(Engine {
            store,
            config,
            runtime,
        })
    }

    /// The backend underneath (reads; writes go through the engine).
    pub fn store(&self) -> &B {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The live guard and adaptive values.
    pub fn runtime_stats(&self) -> RuntimeStats {
        RuntimeStats {
            breaker: self.runtime.breaker.state(),
            claim_jobs: self.runtime.claim_jobs.load(Ordering::Relaxed),
            inflight_batches: self.runtime.inflight.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Calls the store's write path through the circuit breaker: refused
    /// while it is open.
    pub(crate) fn through_breaker<T>(
        &self,
        call: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, EngineError> {
        if let Err(wait) = self.runtime.breaker.admit() {
            return Err(self.refuse("the store's circuit breaker is open".into(), wait));
        }
        let result = call();
        self.runtime
            .breaker
            .record(!matches!(&result, Err(e) if e.is_outage()));
        Ok(result?)
    }

    /// A refusal with its retry-after hint, counted.
    pub(crate) fn refuse(&self, reason: String, wait: Duration) -> EngineError {
        self.runtime.metrics.refused();
        EngineError::Refused {
            reason,
            retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
        }
    }
}

/// Builds the global compute pool (rayon), its threads in the background
/// when `background` is set (see [`EngineConfig::background_idle`]), for a
/// process that also serves requests; call it before any compute. Does
/// nothing when the pool already exists.
pub fn build_compute_pool(background: bool) {
    let _ = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("kiln-compute-{i}"))
        .start_handler(move |_| {
            if background {
                crate::sys::run_in_background();
            }
        })
        .build_global();
}
