//! Work in: submissions and the admission they pass (the queue-depth bound,
//! a token bucket per client, the store's circuit breaker), bars ingested
//! and the refreshes they imply, warm-up, and the caller's cancel and retry
//! of a job. Every write goes through the breaker.

use std::time::Duration;

use kiln_core::{
    Backend, BarColumns, BarIngest, CancelOutcome, DataVersion, Enqueued, FrameRead, IngestReport,
    Job, JobFilter, JobId, JobState, NewJob, Priority, StoreError, Symbol,
};

use super::{COMPUTE, Engine, EngineError, REFRESH, state};
use crate::features::{FeatureSpec, Plan};
use crate::market::{IngestOptions, IngestSummary, ingest_batches_with, ingest_files_with};

/// What a retry did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryOutcome {
    /// The job was dead or cancelled; a copy of it is queued.
    Retried(Enqueued),
    /// The job is in this state, which is not retried.
    NotRetryable(JobState),
}

impl<B: Backend> Engine<B> {
    /// Ingests files (see [`ingest_files_with`]) and, in the same commit,
    /// queues `refresh` jobs for every changed symbol that has stored
    /// features, so they follow the new bars (a crash keeps both or
    /// neither).
    pub fn ingest(
        &self,
        paths: &[std::path::PathBuf],
        opts: &IngestOptions,
        progress: &mut dyn FnMut(crate::market::Progress),
    ) -> Result<(IngestSummary, Vec<Enqueued>), EngineError> {
        let mut follow_up = |changed: &[(Symbol, DataVersion)]| self.refresh_jobs(changed);
        let mut summary = ingest_files_with(&self.store, paths, opts, progress, &mut follow_up)?;
        let enqueued = std::mem::take(&mut summary.follow_ups);
        Ok((summary, enqueued))
    }

    /// Ingests a table held in memory (record batches handed over through
    /// Arrow: Python's `ingest`), validated exactly like a file (`name`
    /// stands for it in errors), with refreshes like [`Engine::ingest`].
    pub fn ingest_batches(
        &self,
        name: &str,
        batches: &mut dyn Iterator<
            Item = Result<arrow_array::RecordBatch, arrow_schema::ArrowError>,
        >,
        opts: &IngestOptions,
    ) -> Result<(IngestSummary, Vec<Enqueued>), EngineError> {
        let mut follow_up = |changed: &[(Symbol, DataVersion)]| self.refresh_jobs(changed);
        let mut summary = ingest_batches_with(&self.store, name, batches, opts, &mut follow_up)?;
        let enqueued = std::mem::take(&mut summary.follow_ups);
        Ok((summary, enqueued))
    }

    /// Stores bars held in memory (the synthetic universe, a tick) as one
    /// all-or-nothing ingest, with refreshes like [`Engine::ingest`].
    pub fn ingest_columns(
        &self,
        source: &str,
        bars: &[(Symbol, BarColumns)],
    ) -> Result<(IngestReport, Vec<Enqueued>), EngineError> {
        let mut session = self.store.bar_ingest()?;
        let src = session.source(source);
        for (symbol, cols) in bars {
            session.stage(symbol, src, cols, &[])?;
        }
        let mut report = session.commit_with(
            &mut |c| {
                Err(StoreError::Conflict(format!(
                    "{} at {} appears twice with different values",
                    c.symbol, c.ts
                )))
            },
            &mut |changed| self.refresh_jobs(changed),
        )?;
        let enqueued = std::mem::take(&mut report.follow_ups);
        Ok((report, enqueued))
    }

    /// Warm-up: queues a refresh for every symbol whose stored plan frames
    /// were computed from other bars than those stored now.
    pub fn warm_up(&self) -> Result<Vec<Enqueued>, EngineError> {
        let mut stale = Vec::new();
        for (symbol, version) in self.store.bar_symbols()? {
            let keys: Vec<_> = self
                .store
                .frames(&symbol)?
                .into_iter()
                .filter(state::is_plan)
                .collect();
            let heads = self.store.frames_batch(&keys)?;
            let stale_frame = keys.iter().zip(&heads).any(|(k, h)| {
                h.as_ref()
                    .is_some_and(|h| !h.is_current(&version) || state::is_legacy(k))
            });
            if stale_frame {
                stale.push(symbol);
            }
        }
        self.refresh_changed(&stale)
    }

    /// Queues refreshes for those of `symbols` that have plan frames (see
    /// [`Engine::refresh_jobs`]).
    fn refresh_changed(&self, symbols: &[Symbol]) -> Result<Vec<Enqueued>, EngineError> {
        let versions = self.store.data_versions(symbols)?;
        let changed: Vec<(Symbol, DataVersion)> = symbols
            .iter()
            .zip(versions)
            .filter_map(|(s, v)| Some((s.clone(), v?)))
            .collect();
        // Not refused by an open breaker: the bars they follow are committed.
        Ok(self.enqueue_chunked(self.refresh_jobs(&changed)?)?)
    }

    /// The refresh jobs for those of `changed` that have plan frames, up to
    /// `refresh_job_symbols` symbols per job (more when that would make
    /// more jobs than one store call takes): one tick of many symbols is a
    /// few jobs, not one per symbol. The same symbols at the same data
    /// versions while the job is unfinished are that job.
    fn refresh_jobs(&self, changed: &[(Symbol, DataVersion)]) -> Result<Vec<NewJob>, StoreError> {
        let mut with_frames = Vec::new();
        for (symbol, version) in changed {
            if self.store.frames(symbol)?.iter().any(state::is_plan) {
                with_frames.push((symbol, version));
            }
        }
        let batch = self.store.queue_config().batch_jobs_max.max(1);
        let size = self
            .config
            .refresh_job_symbols
            .max(with_frames.len().div_ceil(batch))
            .max(1);
        Ok(with_frames
            .chunks(size)
            .map(|chunk| {
                let mut key = String::from(REFRESH);
                for (s, v) in chunk {
                    key.push_str(&format!(":{s}@{:016x}", v.hash));
                }
                if key.len() > kiln_core::IDEMPOTENCY_KEY_BYTES_MAX {
                    key = format!("{REFRESH}:{:016x}", fnv1a(key.as_bytes()));
                }
                NewJob::new(REFRESH, Vec::new())
                    .symbols(chunk.iter().map(|(s, _)| (*s).clone()).collect())
                    .priority(Priority::Normal)
                    .idempotency_key(key)
            })
            .collect())
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
        self.admit(client, symbols.len(), jobs.len())?;
        self.through_breaker(|| self.enqueue_chunked(jobs))
    }

    /// Cancels a queued job (or one awaiting a retry) for `client`.
    pub fn cancel_as(&self, client: &str, id: JobId) -> Result<CancelOutcome, EngineError> {
        self.admit(client, 1, 0)?;
        self.through_breaker(|| self.store.cancel(id))
    }

    /// Queues a dead or cancelled job again, as a new job, for `client`
    /// (admitted like a submission of its symbols).
    pub fn retry_as(&self, client: &str, id: JobId) -> Result<RetryOutcome, EngineError> {
        let job = self.store.job(id)?.ok_or(StoreError::UnknownJob(id))?;
        if !matches!(job.state, JobState::Dead | JobState::Cancelled) {
            return Ok(RetryOutcome::NotRetryable(job.state));
        }
        self.admit(client, job.symbols.len().max(1), 1)?;
        let enqueued = self.through_breaker(|| self.store.enqueue(again(job)))?;
        Ok(RetryOutcome::Retried(enqueued))
    }

    /// Queues again every job `filter` matches (its state must be dead or
    /// cancelled) that was not retried yet, newest first, at most `max`,
    /// in one commit, for
    /// `client` (admitted like a submission of all their symbols). Returns
    /// each retried job's id with its copy, and whether more jobs match.
    pub fn retry_matching(
        &self,
        client: &str,
        filter: &JobFilter,
        max: usize,
    ) -> Result<Bulk<Enqueued>, EngineError> {
        if !matches!(filter.state, Some(JobState::Dead | JobState::Cancelled)) {
            return Err(EngineError::Request(
                "a bulk retry takes the jobs of state dead or cancelled; give state".into(),
            ));
        }
        let (jobs, more) = self.retry_candidates(filter, max)?;
        if jobs.is_empty() {
            return Ok(Bulk::default());
        }
        let symbols: usize = jobs.iter().map(|j| j.symbols.len().max(1)).sum();
        self.admit(client, symbols, jobs.len())?;
        let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
        let copies = jobs.into_iter().map(again).collect();
        let enqueued = self.through_breaker(|| self.enqueue_chunked(copies))?;
        Ok(Bulk {
            done: ids.into_iter().zip(enqueued).collect(),
            more,
        })
    }

    /// Cancels every job `filter` matches (its state must be queued or
    /// failed, awaiting a retry), newest first, at most `max`, for
    /// `client`. Returns each job's outcome (one may have been claimed
    /// meanwhile) and whether more jobs match.
    pub fn cancel_matching(
        &self,
        client: &str,
        filter: &JobFilter,
        max: usize,
    ) -> Result<Bulk<CancelOutcome>, EngineError> {
        if !matches!(filter.state, Some(JobState::Queued | JobState::Failed)) {
            return Err(EngineError::Request(
                "a bulk cancel takes the jobs of state queued or failed; give state".into(),
            ));
        }
        let (jobs, more) = self.cancel_candidates(filter, max)?;
        if jobs.is_empty() {
            return Ok(Bulk::default());
        }
        self.admit(client, jobs.len(), 0)?;
        let mut done = Vec::with_capacity(jobs.len());
        for job in jobs {
            done.push((job.id, self.through_breaker(|| self.store.cancel(job.id))?));
        }
        Ok(Bulk { done, more })
    }

    /// What a bulk cancel of `filter` would take: the newest `max` jobs it
    /// matches, and whether more match.
    pub fn cancel_candidates(
        &self,
        filter: &JobFilter,
        max: usize,
    ) -> Result<(Vec<Job>, bool), EngineError> {
        let mut jobs = self.store.jobs(filter, max.saturating_add(1))?;
        let more = jobs.len() > max;
        jobs.truncate(max);
        Ok((jobs, more))
    }

    /// What a bulk retry of `filter` would take: the newest `max` jobs it
    /// matches that were not retried yet (no job is their copy), and
    /// whether more match. So a bulk retry moves on to older jobs, and
    /// asking twice does not queue a job twice.
    pub fn retry_candidates(
        &self,
        filter: &JobFilter,
        max: usize,
    ) -> Result<(Vec<Job>, bool), EngineError> {
        let mut retried = std::collections::HashSet::new();
        self.each_job(&JobFilter::default(), |j| {
            if let Some(id) = j.idempotency_key.as_deref().and_then(retried_from) {
                retried.insert(id);
            }
            true
        })?;
        let mut out = Vec::new();
        let mut more = false;
        self.each_job(filter, |j| {
            if retried.contains(&j.id) {
                return true;
            }
            if out.len() == max {
                more = true;
                return false;
            }
            out.push(j);
            true
        })?;
        Ok((out, more))
    }

    /// Calls `f` with every job `filter` matches, newest first, until it
    /// returns false.
    fn each_job(
        &self,
        filter: &JobFilter,
        mut f: impl FnMut(Job) -> bool,
    ) -> Result<(), EngineError> {
        const PAGE: usize = 1024;
        let mut page_filter = filter.clone();
        loop {
            let page = self.store.jobs(&page_filter, PAGE)?;
            let full = page.len() == PAGE;
            let Some(last) = page.last().map(|j| j.id) else {
                return Ok(());
            };
            for j in page {
                if !f(j) {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
            page_filter.before = Some(last);
        }
    }

    /// Stops (or restarts) claims of `priority`.
    pub fn set_paused(&self, priority: Priority, paused: bool) -> Result<(), EngineError> {
        self.through_breaker(|| self.store.set_paused(priority, paused))
    }

    /// Admission: `jobs` more (if any: a cancel adds none, and is never
    /// refused for a deep queue) must fit under `admit_depth_max`, and
    /// `client`'s bucket must hold `symbols` tokens.
    fn admit(&self, client: &str, symbols: usize, jobs: usize) -> Result<(), EngineError> {
        if jobs > 0 {
            let depth = self.store.stats()?.waiting();
            if depth + jobs as u64 > self.config.admit_depth_max {
                return Err(self.refuse(
                    format!(
                        "{depth} jobs are waiting, limit admit_depth_max = {}",
                        self.config.admit_depth_max
                    ),
                    Duration::from_secs(1),
                ));
            }
        }
        if let Err(wait) = self.runtime.admission.take(client, symbols) {
            return Err(self.refuse(
                format!(
                    "client {client:?} is over {} symbols/s (burst {})",
                    self.config.submit_symbols_per_s, self.config.submit_burst_symbols
                ),
                wait,
            ));
        }
        Ok(())
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
        let text = plan.text();
        let versions = self.store.data_versions(symbols)?;
        let mut jobs = Vec::new();
        let size = self.config.submit_job_symbols;
        for (chunk, versions) in symbols.chunks(size).zip(versions.chunks(size)) {
            let mut key = format!("{COMPUTE}:{:016x}", plan.fingerprint());
            for (s, v) in chunk.iter().zip(versions) {
                let v = v.as_ref().ok_or_else(|| EngineError::NoBars(s.clone()))?;
                key.push_str(&format!(":{s}@{:016x}", v.hash));
            }
            if key.len() > kiln_core::IDEMPOTENCY_KEY_BYTES_MAX {
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

    /// Enqueues in calls of at most the store's `batch_jobs_max`.
    fn enqueue_chunked(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, StoreError> {
        let mut out = Vec::with_capacity(jobs.len());
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let batch: Vec<NewJob> = jobs
                .by_ref()
                .take(self.store.queue_config().batch_jobs_max)
                .collect();
            out.extend(self.store.enqueue_many(batch)?);
        }
        Ok(out)
    }
}

/// What a bulk retry or cancel did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bulk<T> {
    /// Each job acted on, with what became of it.
    pub done: Vec<(JobId, T)>,
    /// Whether more jobs match than were acted on (`max`).
    pub more: bool,
}

impl<T> Default for Bulk<T> {
    fn default() -> Self {
        Bulk {
            done: Vec::new(),
            more: false,
        }
    }
}

/// The idempotency key of a retried job's copy.
const RETRY_KEY: &str = "retry:";

/// A dead or cancelled job's copy to queue again; asked twice while the
/// copy is unfinished, it is that copy (an idempotency key per retried job).
fn again(job: Job) -> NewJob {
    NewJob::new(job.kind, job.payload.to_vec())
        .symbols(job.symbols)
        .priority(job.priority)
        .idempotency_key(format!("{RETRY_KEY}{}", job.id))
}

/// The job a copy was retried from, by its idempotency key.
fn retried_from(key: &str) -> Option<JobId> {
    key.strip_prefix(RETRY_KEY)?.parse().ok()
}

/// 64-bit FNV-1a, to shorten over-long idempotency keys.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
