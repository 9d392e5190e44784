//! The engine: jobs to stored features. It owns a [`Store`], turns
//! submissions into durable jobs, and runs them: claims a batch in priority
//! order, groups it by plan, reads every symbol's bars in one batch read,
//! computes on the rayon pool, and commits every result with its job's
//! completion through the store's group commit.
//!
//! Job kinds:
//! - `compute`: payload is the canonical spec list (`rsi(14),macd(12,26,9)`),
//!   symbols are the job's symbols. Each symbol's outputs are stored under
//!   their labels, with the data version they were computed from, and the
//!   plan's kernel state under `@state:<plan fingerprint>`.
//! - `refresh`: one symbol, empty payload. For every plan whose state is
//!   stored for the symbol: when the stored bars only grew, the saved state
//!   continues over the new bars (bit for bit what a full recompute gives);
//!   otherwise (a correction) the plan is recomputed in full.
//!
//! A job over many symbols stores each finished group of symbols with
//! [`Store::checkpoint`] as it goes; a later attempt skips symbols whose
//! outputs are already current. Bad data (no bars, a kernel error) ends the
//! job `dead` with a message naming the symbol; a failed read retries the
//! job with the store's backoff (see `run`).

pub mod config;
pub mod feed;
pub mod guard;
pub mod metrics;
mod run;
mod runner;

use kiln_store::prelude::*;
use std::path::Path;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kiln_store::{
    DataVersion, Enqueued, JobQueue, JobState, NewJob, Priority, ResultStore, SeriesKey,
    SeriesView, Store, StoreConfig, StoreError, Symbol,
};

use guard::{Admission, BreakerState, CircuitBreaker};
use metrics::{Metrics, ReadResult};

use crate::features::{FeatureError, FeatureSpec, Plan, SpecError};
use crate::market::{IngestOptions, IngestSummary, MarketError, ingest_files};

pub use run::{RunProgress, RunReport};
pub use runner::{RunObserver, Runner, run_reopening};

/// The engine's bounds and defaults (the store's are inside).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The store's configuration.
    pub store: StoreConfig,
    /// Jobs claimed and computed together.
    pub claim_jobs_max: usize,
    /// Symbols in one `compute` job made by [`Engine::submit`] (each symbol
    /// its own job keeps duplicate requests cheap to merge).
    pub job_symbols: usize,
    /// Symbols computed between two checkpoints of a many-symbol job.
    pub checkpoint_symbols: usize,
    /// Smallest claim the adaptive batch size goes down to.
    pub claim_jobs_min: usize,
    /// Most batches committing while the next one computes.
    pub inflight_batches_max: usize,
    /// Consecutive store write failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses before a trial call.
    pub breaker_recovery_ms: u64,
    /// Symbols per second one client key may submit (token bucket rate).
    pub submit_symbols_per_s: f64,
    /// Burst of symbols one client key may submit at once.
    pub submit_burst_symbols: f64,
    /// Waiting jobs beyond which submissions are refused with a retry-after
    /// hint (below the store's hard `queue_depth_max`).
    pub admit_depth_max: u64,
    /// In a service (`kiln serve`), whether the threads that compute (the
    /// runner, its committer and the compute pool) run under Linux's
    /// `SCHED_IDLE` policy: they then get only the CPU time no request
    /// thread wants, and a request thread that wakes takes the core from
    /// them at once. The store's writer threads stay at normal priority,
    /// since request threads wait on their locks (sled's, the data
    /// versions'). A service saturated with requests starves its batches;
    /// `false` runs them at normal priority.
    pub background_idle: bool,
    /// The HTTP service's bounds (`kiln serve`).
    pub serve: crate::api::ServeConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            store: StoreConfig::default(),
            claim_jobs_max: 256,
            job_symbols: 1,
            checkpoint_symbols: 64,
            claim_jobs_min: 16,
            inflight_batches_max: 2,
            breaker_failures: 5,
            breaker_recovery_ms: 5_000,
            submit_symbols_per_s: 50_000.0,
            submit_burst_symbols: 100_000.0,
            admit_depth_max: 500_000,
            background_idle: true,
            serve: crate::api::ServeConfig::default(),
        }
    }
}

/// What can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A feature spec is wrong.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A plan could not be built or run.
    #[error(transparent)]
    Feature(#[from] FeatureError),
    /// Ingest failed.
    #[error(transparent)]
    Market(#[from] MarketError),
    /// A request is wrong (names what and why).
    #[error("{0}")]
    Request(String),
    /// A submission was refused for now: try again after `retry_after_ms`.
    #[error("{reason}; retry in {retry_after_ms} ms")]
    Refused {
        /// Which limit refused it.
        reason: String,
        /// When to try again.
        retry_after_ms: u64,
    },
}

/// The job kinds.
pub const COMPUTE: &str = "compute";
/// See [`COMPUTE`].
pub const REFRESH: &str = "refresh";
/// Prefix of the series key under which a plan's kernel state is stored.
pub const STATE_PREFIX: &str = "@state:";

/// An open data directory with its engine.
#[derive(Clone, Debug)]
pub struct Engine {
    store: Store,
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

/// The canonical payload of a compute job: the plan's specs, comma-separated.
fn plan_text(plan: &Plan) -> String {
    plan.specs()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The series key of a plan's saved state for `symbol`.
pub fn state_key(symbol: &Symbol, plan: &Plan) -> Result<SeriesKey, StoreError> {
    SeriesKey::new(
        symbol.clone(),
        format!("{STATE_PREFIX}{:016x}", plan.fingerprint()),
    )
}

impl Engine {
    /// Opens (or creates) the data directory.
    pub fn open(dir: impl AsRef<Path>, config: EngineConfig) -> Result<Engine, EngineError> {
        if config.claim_jobs_max == 0
            || config.claim_jobs_min == 0
            || config.job_symbols == 0
            || config.checkpoint_symbols == 0
            || config.inflight_batches_max == 0
        {
            return Err(EngineError::Request(
                "claim_jobs_max, claim_jobs_min, job_symbols, checkpoint_symbols and \
                 inflight_batches_max must be positive"
                    .into(),
            ));
        }
        if config.claim_jobs_max > config.store.queue.batch_jobs_max {
            return Err(EngineError::Request(format!(
                "claim_jobs_max = {} is above the store's batch_jobs_max = {}",
                config.claim_jobs_max, config.store.queue.batch_jobs_max
            )));
        }
        if config.inflight_batches_max > 64 {
            return Err(EngineError::Request(format!(
                "inflight_batches_max = {} is above 64",
                config.inflight_batches_max
            )));
        }
        for (name, v) in [
            ("submit_symbols_per_s", config.submit_symbols_per_s),
            ("submit_burst_symbols", config.submit_burst_symbols),
            ("requests_per_s", config.serve.requests_per_s),
            ("requests_burst", config.serve.requests_burst),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(EngineError::Request(format!(
                    "{name} = {v} must be a positive number"
                )));
            }
        }
        let store = Store::open(dir, config.store.clone())?;
        let runtime = Arc::new(Runtime {
            breaker: CircuitBreaker::new(
                config.breaker_failures,
                Duration::from_millis(config.breaker_recovery_ms),
            ),
            admission: Admission::new(config.submit_symbols_per_s, config.submit_burst_symbols),
            metrics: Metrics::default(),
            claim_jobs: AtomicUsize::new(config.claim_jobs_min.clamp(1, config.claim_jobs_max)),
            inflight: AtomicUsize::new(1),
        });
        Ok(Engine {
            store,
            config,
            runtime,
        })
    }

    /// The store underneath.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Ingests files (see [`ingest_files`]) and queues a `refresh` for every
    /// changed symbol that has stored features, so they follow the new bars.
    pub fn ingest(
        &self,
        paths: &[std::path::PathBuf],
        opts: &IngestOptions,
        progress: &mut dyn FnMut(crate::market::Progress),
    ) -> Result<(IngestSummary, Vec<Enqueued>), EngineError> {
        let summary = ingest_files(&self.store, paths, opts, progress)?;
        let enqueued = self.refresh_changed(&summary.changed_symbols)?;
        Ok((summary, enqueued))
    }

    /// Stores bars held in memory (the synthetic universe, say) as one
    /// all-or-nothing ingest, and queues refreshes like [`Engine::ingest`].
    pub fn ingest_columns(
        &self,
        source: &str,
        bars: &[(Symbol, kiln_store::BarColumns)],
    ) -> Result<(kiln_store::IngestReport, Vec<Enqueued>), EngineError> {
        let mut session = self.store.bar_ingest()?;
        let src = session.source(source);
        for (symbol, cols) in bars {
            session.stage(symbol, src, cols, &[])?;
        }
        let report = session.commit(&mut |c| {
            Err(StoreError::Conflict(format!(
                "{} at {} appears twice with different values",
                c.symbol, c.ts
            )))
        })?;
        let changed: Vec<Symbol> = report.changed.iter().map(|(s, _)| s.clone()).collect();
        let enqueued = self.refresh_changed(&changed)?;
        Ok((report, enqueued))
    }

    /// Warm-up: queues a refresh for every symbol whose stored features were
    /// computed from other bars than those stored now.
    pub fn warm_up(&self) -> Result<Vec<Enqueued>, EngineError> {
        let mut stale = Vec::new();
        for (symbol, version) in self.store.bar_symbols()? {
            for key in self.store.series_keys(&symbol)? {
                if !key.feature.starts_with(STATE_PREFIX) {
                    continue;
                }
                if let Some(view) = self.store.series(&key)?
                    && !view.is_current(&version)
                {
                    stale.push(symbol.clone());
                    break;
                }
            }
        }
        self.refresh_changed(&stale)
    }

    /// The engine's part of an integrity check: series written by a job
    /// that ended dead or cancelled (results without a succeeded job), as
    /// problems; and how many
    /// stored series are stale (computed from other bars than stored now),
    /// which `kiln run` refreshes and which are not a fault.
    pub fn check_results(&self) -> Result<(Vec<String>, u64), EngineError> {
        let (mut problems, mut stale) = (Vec::new(), 0);
        for (symbol, version) in self.store.bar_symbols()? {
            for key in self.store.series_keys(&symbol)? {
                if let Some(view) = self.store.series(&key)?
                    && !view.is_current(&version)
                {
                    stale += 1;
                }
                let Some(writer) = self.store.series_writer(&key)? else {
                    continue;
                };
                if let Some(job) = self.store.job(writer)?
                    && matches!(job.state, JobState::Dead | JobState::Cancelled)
                {
                    problems.push(format!(
                        "{}/{} was written by job {writer}, which is {}",
                        key.symbol,
                        key.feature,
                        job.state.as_str()
                    ));
                }
            }
        }
        Ok((problems, stale))
    }

    /// Queues a refresh for each of `symbols` that has stored features.
    fn refresh_changed(&self, symbols: &[Symbol]) -> Result<Vec<Enqueued>, EngineError> {
        let mut refresh = Vec::new();
        for symbol in symbols {
            let has_state = self
                .store
                .series_keys(symbol)?
                .iter()
                .any(|k| k.feature.starts_with(STATE_PREFIX));
            if has_state && let Some(v) = self.store.data_version(symbol)? {
                refresh.push(refresh_job(symbol, &v));
            }
        }
        self.enqueue_chunked(refresh)
    }

    /// Queues `compute` jobs for `specs` over `symbols` (all must have bars).
    /// The same (symbol, features, data version) asked for again while its
    /// job is unfinished is that job (the store's idempotency key).
    pub fn submit(
        &self,
        symbols: &[Symbol],
        specs: &[FeatureSpec],
        priority: Priority,
    ) -> Result<Vec<Enqueued>, EngineError> {
        self.submit_as("local", symbols, specs, priority)
    }

    /// [`Engine::submit`] on behalf of `client` (a key for rate limiting:
    /// an API token, an address): refused with a retry-after hint when the
    /// client's token bucket is empty, the queue is deeper than
    /// `admit_depth_max`, or the store's breaker is open.
    pub fn submit_as(
        &self,
        client: &str,
        symbols: &[Symbol],
        specs: &[FeatureSpec],
        priority: Priority,
    ) -> Result<Vec<Enqueued>, EngineError> {
        let jobs = self.compute_jobs(symbols, specs, priority)?;
        let refuse = |reason: String, wait: Duration| {
            self.runtime.metrics.refused();
            EngineError::Refused {
                reason,
                retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
            }
        };
        let depth: u64 = Priority::ALL
            .iter()
            .map(|&p| self.store.stats().map_or(0, |s| s.depth(p)))
            .sum();
        if depth + jobs.len() as u64 > self.config.admit_depth_max {
            return Err(refuse(
                format!(
                    "{depth} jobs are waiting, limit admit_depth_max = {}",
                    self.config.admit_depth_max
                ),
                Duration::from_secs(1),
            ));
        }
        if let Err(wait) = self.runtime.admission.take(client, symbols.len()) {
            return Err(refuse(
                format!(
                    "client {client:?} is over {} symbols/s (burst {})",
                    self.config.submit_symbols_per_s, self.config.submit_burst_symbols
                ),
                wait,
            ));
        }
        if let Err(wait) = self.runtime.breaker.admit() {
            return Err(refuse("the store's circuit breaker is open".into(), wait));
        }
        let result = self.enqueue_chunked(jobs);
        self.runtime
            .breaker
            .record(!matches!(&result, Err(EngineError::Store(e)) if is_outage(e)));
        result
    }

    /// The compute jobs of a submission, checked (every symbol has bars).
    fn compute_jobs(
        &self,
        symbols: &[Symbol],
        specs: &[FeatureSpec],
        priority: Priority,
    ) -> Result<Vec<NewJob>, EngineError> {
        if specs.is_empty() {
            return Err(EngineError::Request("no features given".into()));
        }
        if symbols.is_empty() {
            return Err(EngineError::Request("no symbols given".into()));
        }
        let plan = Plan::new(specs);
        let text = plan_text(&plan);
        let mut jobs = Vec::new();
        for chunk in symbols.chunks(self.config.job_symbols) {
            let mut key = format!("{COMPUTE}:{:016x}", plan.fingerprint());
            for s in chunk {
                let v = self.store.data_version(s)?.ok_or_else(|| {
                    EngineError::Request(format!("{s} has no bars; ingest them first"))
                })?;
                key.push_str(&format!(":{s}@{:016x}", v.hash));
            }
            if key.len() > kiln_store::IDEMPOTENCY_KEY_BYTES_MAX {
                key = format!("{COMPUTE}:{:016x}", fnv1a(key.as_bytes()));
            }
            jobs.push(
                NewJob::new(COMPUTE, text.clone().into_bytes())
                    .symbols(chunk.to_vec())
                    .priority(priority)
                    .idempotency_key(key),
            );
        }
        Ok(jobs)
    }

    fn enqueue_chunked(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, EngineError> {
        let mut out = Vec::with_capacity(jobs.len());
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let batch: Vec<NewJob> = jobs
                .by_ref()
                .take(self.config.store.queue.batch_jobs_max)
                .collect();
            out.extend(self.store.enqueue_many(batch)?);
        }
        Ok(out)
    }

    /// The stored series of one feature output, read in place; `None` if
    /// it was never computed.
    pub fn feature(&self, symbol: &Symbol, label: &str) -> Result<Option<SeriesView>, EngineError> {
        let key = SeriesKey::new(symbol.clone(), label)?;
        Ok(self.store.series(&key)?)
    }

    /// Reads a feature for a client: the series and whether it was computed
    /// from the bars stored now (counted in `kiln_feature_reads_total`).
    pub fn read_feature(
        &self,
        symbol: &Symbol,
        label: &str,
    ) -> Result<(Option<SeriesView>, ReadResult), EngineError> {
        let version = self.store.data_version(symbol)?;
        self.read_feature_of(symbol, label, version.as_ref())
    }

    /// [`Engine::read_feature`] against `version`, the symbol's data version
    /// the caller has already read (so several outputs are judged against
    /// the same bars).
    pub fn read_feature_of(
        &self,
        symbol: &Symbol,
        label: &str,
        version: Option<&kiln_store::DataVersion>,
    ) -> Result<(Option<SeriesView>, ReadResult), EngineError> {
        let view = self.feature(symbol, label)?;
        let result = match (&view, version) {
            (None, _) => ReadResult::Miss,
            (Some(v), Some(version)) if v.is_current(version) => ReadResult::Hit,
            (Some(_), _) => ReadResult::Stale,
        };
        self.runtime.metrics.read(result);
        Ok((view, result))
    }

    /// Counts a feature read answered without [`Engine::read_feature`] (a
    /// kept answer) in `kiln_feature_reads_total`.
    pub fn count_read(&self, result: ReadResult) {
        self.runtime.metrics.read(result);
    }

    /// The live guard and adaptive values.
    pub fn runtime_stats(&self) -> RuntimeStats {
        RuntimeStats {
            breaker: self.runtime.breaker.state(),
            claim_jobs: self.runtime.claim_jobs.load(Ordering::Relaxed),
            inflight_batches: self.runtime.inflight.load(Ordering::Relaxed),
        }
    }

    /// Prometheus text: job outcomes, compute durations, feature reads,
    /// refusals, queue depth, breaker state, adaptive sizes, store sizes.
    pub fn metrics(&self) -> String {
        let st = self.store.stats().unwrap_or_default();
        let rt = self.runtime_stats();
        let mut gauges: Vec<(&str, &str, String, f64)> = Vec::new();
        for p in Priority::ALL {
            let name = format!("{p:?}").to_lowercase();
            gauges.push((
                "kiln_queue_depth",
                "Jobs waiting (queued or awaiting a retry), by priority.",
                format!("priority=\"{name}\""),
                st.depth(p) as f64,
            ));
        }
        for s in JobState::ALL {
            gauges.push((
                "kiln_jobs",
                "Jobs in the store, by state.",
                format!("state=\"{}\"", s.as_str()),
                st.count(s) as f64,
            ));
        }
        for s in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ] {
            gauges.push((
                "kiln_breaker_state",
                "The store write path's circuit breaker (1 = current state).",
                format!("state=\"{}\"", s.as_str()),
                f64::from(u8::from(rt.breaker == s)),
            ));
        }
        gauges.push((
            "kiln_claim_jobs",
            "Jobs claimed per batch (adaptive).",
            String::new(),
            rt.claim_jobs as f64,
        ));
        gauges.push((
            "kiln_inflight_batches",
            "Batches committing while the next computes (adaptive).",
            String::new(),
            rt.inflight_batches as f64,
        ));
        for (part, bytes) in store_sizes(self.store.dir()) {
            gauges.push((
                "kiln_store_bytes",
                "Bytes on disk, by part of the data directory.",
                format!("part=\"{part}\""),
                bytes as f64,
            ));
        }
        self.runtime.metrics.render(&gauges)
    }

    pub(crate) fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Whether every output of `plan` stored for `symbol` was computed from
    /// `version`.
    pub fn is_current(
        &self,
        symbol: &Symbol,
        plan: &Plan,
        version: &DataVersion,
    ) -> Result<bool, EngineError> {
        for label in plan.output_labels() {
            match self.feature(symbol, label)? {
                Some(v) if v.is_current(version) => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }
}

/// Puts the calling thread under Linux's `SCHED_IDLE` policy (see
/// [`EngineConfig::background_idle`]); threads it starts inherit it. Warns
/// and carries on when refused.
pub fn run_in_background() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads `param` only during the call; pid 0
    // is the calling thread on Linux.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not move a background thread to SCHED_IDLE; it runs at normal priority"
        );
    }
}

/// Builds the global compute pool (rayon), its threads in the background
/// when `background` is set, for a process that also serves requests; call
/// it before any compute. Does nothing when the pool already exists.
pub fn build_compute_pool(background: bool) {
    let _ = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("kiln-compute-{i}"))
        .start_handler(move |_| {
            if background {
                run_in_background();
            }
        })
        .build_global();
}

/// A job as JSON: the one rendering `kiln jobs --json` and the HTTP API share.
pub fn job_json(j: &kiln_store::Job) -> serde_json::Value {
    serde_json::json!({
        "id": j.id, "state": j.state.as_str(), "kind": j.kind,
        "priority": format!("{:?}", j.priority).to_lowercase(),
        "attempts": j.attempts, "symbols": j.symbols.iter().map(Symbol::as_str).collect::<Vec<_>>(),
        "payload": String::from_utf8_lossy(&j.payload), "last_error": j.last_error,
        "enqueued_ms": j.enqueued_ms, "finished_ms": j.finished_ms,
    })
}

/// What a feature request names: a spec list (`rsi(14),macd(12,26,9)`: all
/// their outputs) or one output label (`macd(12,26,9).signal`). Returns the
/// labels to read and the specs that compute them, each once.
pub fn resolve_features(text: &str) -> Result<(Vec<String>, Vec<FeatureSpec>), SpecError> {
    match crate::features::spec::parse_list(text) {
        Ok(mut specs) => {
            let mut seen = std::collections::HashSet::new();
            specs.retain(|s| seen.insert(s.to_string()));
            Ok((
                specs.iter().flat_map(|s| s.output_labels()).collect(),
                specs,
            ))
        }
        Err(e) => {
            let spec = match text.rsplit_once('.') {
                Some((base, _)) => crate::features::spec::parse(base).map_err(|_| e)?,
                None => return Err(e),
            };
            if !spec.output_labels().iter().any(|l| l == text.trim()) {
                return Err(SpecError::Syntax {
                    spec: text.to_owned(),
                    reason: "the feature has no output of that name",
                });
            }
            Ok((vec![text.trim().to_owned()], vec![spec]))
        }
    }
}

fn refresh_job(symbol: &Symbol, v: &DataVersion) -> NewJob {
    NewJob::new(REFRESH, Vec::new())
        .symbols(vec![symbol.clone()])
        .priority(Priority::Normal)
        .idempotency_key(format!("{REFRESH}:{symbol}@{:016x}", v.hash))
}

/// Whether a store error means the store itself is failing (what the
/// breaker counts), not that one request was wrong.
pub(crate) fn is_outage(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Io { .. }
            | StoreError::Backend { .. }
            | StoreError::Poisoned { .. }
            | StoreError::Closed
    )
}

/// Bytes under `sled/` and `vlog/` of a data directory.
fn store_sizes(dir: &std::path::Path) -> Vec<(&'static str, u64)> {
    fn walk(p: &std::path::Path) -> u64 {
        std::fs::read_dir(p).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
    }
    vec![
        ("sled", walk(&dir.join("sled"))),
        ("vlog", walk(&dir.join("vlog"))),
    ]
}

/// 64-bit FNV-1a, to shorten over-long idempotency keys.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> i32 {
        // SAFETY: sched_getscheduler only reads its argument; 0 is the
        // calling thread.
        #[allow(unsafe_code)]
        unsafe {
            libc::sched_getscheduler(0)
        }
    }

    #[test]
    fn a_background_thread_and_the_threads_it_starts_run_idle() {
        let here = policy();
        let (inside, child) = std::thread::spawn(|| {
            run_in_background();
            let child = std::thread::spawn(policy).join().expect("child thread");
            (policy(), child)
        })
        .join()
        .expect("background thread");
        assert_eq!((inside, child), (libc::SCHED_IDLE, libc::SCHED_IDLE));
        assert_eq!(policy(), here, "the starting thread keeps its policy");
    }
}
