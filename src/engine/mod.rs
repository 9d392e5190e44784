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
//! job `dead` with a message naming the symbol; store errors retry with the
//! store's backoff.

pub mod config;
mod run;

use std::path::Path;

use kiln_store::{
    DataVersion, Enqueued, JobQueue, NewJob, Priority, ResultStore, SeriesKey, SeriesView, Store,
    StoreConfig, StoreError, Symbol,
};

use crate::features::{FeatureError, FeatureSpec, Plan, SpecError};
use crate::market::{IngestOptions, IngestSummary, MarketError, ingest_files};

pub use run::{RunProgress, RunReport};

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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            store: StoreConfig::default(),
            claim_jobs_max: 256,
            job_symbols: 1,
            checkpoint_symbols: 64,
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
        if config.claim_jobs_max == 0 || config.job_symbols == 0 || config.checkpoint_symbols == 0 {
            return Err(EngineError::Request(
                "claim_jobs_max, job_symbols and checkpoint_symbols must be positive".into(),
            ));
        }
        let store = Store::open(dir, config.store.clone())?;
        Ok(Engine { store, config })
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
        let mut session = self.store.bar_ingest();
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
        self.enqueue_chunked(jobs)
    }

    fn enqueue_chunked(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, EngineError> {
        let mut out = Vec::with_capacity(jobs.len());
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let batch: Vec<NewJob> = jobs
                .by_ref()
                .take(self.config.store.batch_jobs_max)
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

fn refresh_job(symbol: &Symbol, v: &DataVersion) -> NewJob {
    NewJob::new(REFRESH, Vec::new())
        .symbols(vec![symbol.clone()])
        .priority(Priority::Normal)
        .idempotency_key(format!("{REFRESH}:{symbol}@{:016x}", v.hash))
}

/// 64-bit FNV-1a, to shorten over-long idempotency keys.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
