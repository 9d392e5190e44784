//! Running jobs: the claim → compute → commit pipeline. This thread claims
//! a batch in priority order, hands it to `compute` and `refresh` by kind,
//! and sends the completions to a committer thread, which commits one batch
//! while the next computes. The claim size and the batches in flight adapt
//! (additive increase, multiplicative decrease) to keep a batch near
//! [`BATCH_TARGET`] end to end. An idle runner waits on the store's
//! watermark, so a new job wakes it at once.
//!
//! A job whose data is wrong (bad bars, an unreadable saved state) ends
//! dead with a message naming the symbol; one whose reads failed (an I/O or
//! integrity error on the store's read path) fails its attempt and retries
//! with the store's backoff, so one bad record never stops the run. A
//! failure of the store's write path ends the run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kiln_core::{
    Backend, Completion, FailOutcome, FrameWrite, JobState, Lease, Priority, StoreError, Symbol,
};

use super::{COMPUTE, Engine, EngineError, REFRESH};

/// A job's results: a plan frame per symbol (or its new rows).
pub(super) type Results = Vec<FrameWrite>;

/// Progress of a run, for a progress bar.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunProgress {
    /// Jobs finished in this run.
    pub done: u64,
    /// Jobs finished plus jobs still queued or running.
    pub total: u64,
    /// Jobs the claim this progress follows handed out (0 when it found
    /// none).
    pub claimed: usize,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunReport {
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Jobs that ended dead (bad data or specs).
    pub dead: u64,
    /// Symbols computed.
    pub symbols: u64,
    /// Series stored (outputs and saved states).
    pub series: u64,
    /// Plans refreshed by continuing their saved state over new bars.
    pub continued: u64,
    /// Plans refreshed by a full recompute (the stored bars were corrected).
    pub recomputed: u64,
    /// Wall time, in seconds.
    pub seconds: f64,
}

impl RunReport {
    /// Adds another run's counts (the wall time is the caller's).
    pub(crate) fn add(&mut self, other: &RunReport) {
        self.succeeded += other.succeeded;
        self.dead += other.dead;
        self.symbols += other.symbols;
        self.series += other.series;
        self.continued += other.continued;
        self.recomputed += other.recomputed;
    }
}

/// Why a job's attempt produced no results.
pub(super) enum Setback {
    /// Its data is wrong: the job ends dead.
    Data(String),
    /// Reading the store failed: the attempt fails and the job retries.
    Read(String),
}

impl From<StoreError> for Setback {
    fn from(e: StoreError) -> Self {
        Setback::Read(e.to_string())
    }
}

impl From<EngineError> for Setback {
    fn from(e: EngineError) -> Self {
        Setback::Read(e.to_string())
    }
}

/// A batch of completions for the committer, with each job's priority.
struct Batch {
    completions: Vec<Completion>,
    priorities: Vec<Priority>,
}

/// What the run loop and its committer share.
#[derive(Default)]
struct Shared {
    succeeded: AtomicU64,
    /// Jobs whose results the store refused at commit (ended dead).
    refused: AtomicU64,
    /// The committer stopped on an error.
    failed: AtomicBool,
    /// Batches sent and not yet committed; the committer signals each commit.
    outstanding: Mutex<usize>,
    committed: Condvar,
    /// The last commit's duration, in microseconds.
    commit_us: AtomicU64,
}

impl Shared {
    fn outstanding(&self) -> usize {
        *self
            .outstanding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn add_outstanding(&self, n: isize) {
        let mut o = self
            .outstanding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *o = o.saturating_add_signed(n);
        self.committed.notify_all();
    }

    /// The committer stopped on an error: the claim loop stops at its next
    /// check.
    fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
        self.committed.notify_all();
    }

    /// Waits (on the committer's signal) until fewer than `limit` batches
    /// are outstanding or the committer has failed.
    fn wait_below(&self, limit: usize) {
        let mut o = self
            .outstanding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while *o >= limit && !self.failed.load(Ordering::SeqCst) {
            o = self
                .committed
                .wait(o)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A batch should take about this long, compute and commit.
const BATCH_TARGET: Duration = Duration::from_millis(250);

/// The longest an idle runner waits before it looks again: retries become
/// due without a new job or event to wake it.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// Where finished batches go: the committer thread of [`Engine::run`].
pub(super) struct Sink<'a> {
    tx: SyncSender<Batch>,
    shared: &'a Shared,
    /// Most series bytes in one batch (half the store's `complete_bytes_max`).
    bytes_max: usize,
}

/// About how many bytes a completion's frames store.
fn completion_bytes(c: &Completion) -> usize {
    c.results
        .iter()
        .map(|f| {
            f.columns.iter().map(|c| c.len() * 8).sum::<usize>()
                + f.state.as_ref().map_or(0, Vec::len)
                + 64
        })
        .sum()
}

impl Sink<'_> {
    /// Sends completions to the committer, cut into batches that stay
    /// within the store's per-call byte bound.
    pub(super) fn send(&self, completions: Vec<(Completion, Priority)>) -> Result<(), EngineError> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        for c in completions {
            let b = completion_bytes(&c.0);
            if !batch.is_empty() && bytes + b > self.bytes_max {
                self.send_one(std::mem::take(&mut batch))?;
                bytes = 0;
            }
            bytes += b;
            batch.push(c);
        }
        self.send_one(batch)
    }

    fn send_one(&self, completions: Vec<(Completion, Priority)>) -> Result<(), EngineError> {
        if completions.is_empty() {
            return Ok(());
        }
        let (completions, priorities) = completions.into_iter().unzip();
        self.shared.add_outstanding(1);
        // Closed only when the committer stopped on an error, which the
        // run reports when it joins it.
        self.tx
            .send(Batch {
                completions,
                priorities,
            })
            .map_err(|_| {
                self.shared.add_outstanding(-1);
                EngineError::Internal("the committer stopped".into())
            })
    }
}

/// A job's completion for the committer, counted in the report.
pub(super) fn done(
    lease: &Lease,
    results: Results,
    report: &mut RunReport,
) -> (Completion, Priority) {
    report.series += results.iter().map(|f| f.columns.len() as u64).sum::<u64>();
    report.symbols += lease.job.symbols.len().max(1) as u64;
    let completion = Completion {
        token: lease.token,
        results,
    };
    (completion, lease.job.priority)
}

impl<B: Backend> Engine<B> {
    /// Runs jobs until none is queued, running or waiting for a retry.
    pub fn run_until_idle(
        &self,
        progress: &mut dyn FnMut(RunProgress),
    ) -> Result<RunReport, EngineError> {
        self.run(&AtomicBool::new(false), true, progress)
    }

    /// Runs jobs until `stop` is set, or (with `until_idle`) until nothing
    /// is queued, running or waiting for a retry. On `stop` it claims no
    /// more, finishes the batch in hand and commits everything computed
    /// before returning (a graceful shutdown).
    pub fn run(
        &self,
        stop: &AtomicBool,
        until_idle: bool,
        progress: &mut dyn FnMut(RunProgress),
    ) -> Result<RunReport, EngineError> {
        let started = Instant::now();
        let mut report = RunReport::default();
        let shared = Shared::default();
        let (tx, rx) = sync_channel::<Batch>(self.config.inflight_batches_max);
        let committed = std::thread::scope(|scope| {
            let shared = &shared;
            let committer = scope.spawn(move || -> Result<(), EngineError> {
                let result = self.commit_loop(&rx, shared);
                if result.is_err() {
                    shared.fail();
                }
                result
            });
            let sink = Sink {
                tx,
                shared,
                bytes_max: self.store.queue_config().complete_bytes_max / 2,
            };
            let claimed = self.claim_loop(&sink, &mut report, shared, stop, until_idle, progress);
            drop(sink);
            let committed = committer.join().unwrap_or_else(|_| {
                Err(EngineError::Internal(
                    "the committer thread panicked".into(),
                ))
            });
            // The committer's error is the cause when both stopped.
            committed.and(claimed)
        });
        committed?;
        report.succeeded = shared.succeeded.load(Ordering::Relaxed);
        report.dead += shared.refused.load(Ordering::Relaxed);
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// The committer: commits each batch it is sent, in order.
    fn commit_loop(&self, rx: &Receiver<Batch>, shared: &Shared) -> Result<(), EngineError> {
        for batch in rx {
            let t = Instant::now();
            let tokens: Vec<_> = batch.completions.iter().map(|c| c.token).collect();
            let outcomes = self.guarded(|| self.store.complete_many(batch.completions));
            shared
                .commit_us
                .store(t.elapsed().as_micros() as u64, Ordering::Relaxed);
            shared.add_outstanding(-1);
            let outcomes = outcomes?.into_iter().zip(batch.priorities).zip(tokens);
            for ((outcome, priority), token) in outcomes {
                match outcome {
                    Ok(()) => {
                        shared.succeeded.fetch_add(1, Ordering::Relaxed);
                        self.runtime().metrics.job(JobState::Succeeded, priority);
                    }
                    // The lease expired and the job went back to the queue.
                    Err(StoreError::LeaseLost { .. }) => {}
                    // The store refused this job's results (a series over
                    // its bound): they never will fit, so the job is dead
                    // with the reason, and the run goes on.
                    Err(e @ StoreError::TooLarge { .. }) => {
                        let dead =
                            self.guarded(|| self.store.fail_permanently(token, &e.to_string()));
                        match dead {
                            Ok(_) => {
                                tracing::warn!(job = token.job_id, error = %e, "job is dead");
                                shared.refused.fetch_add(1, Ordering::Relaxed);
                                self.runtime().metrics.job(JobState::Dead, priority);
                            }
                            Err(StoreError::LeaseLost { .. }) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Calls the store's write path through the circuit breaker, waiting
    /// while it is open (the run loop waits; submissions are refused).
    pub(super) fn guarded<T>(
        &self,
        call: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let breaker = &self.runtime().breaker;
        while let Err(wait) = breaker.admit() {
            std::thread::sleep(wait.min(Duration::from_millis(100)));
        }
        let result = call();
        breaker.record(!matches!(&result, Err(e) if e.is_outage()));
        result
    }

    fn claim_loop(
        &self,
        sink: &Sink,
        report: &mut RunReport,
        shared: &Shared,
        stop: &AtomicBool,
        until_idle: bool,
        progress: &mut dyn FnMut(RunProgress),
    ) -> Result<(), EngineError> {
        let rt = self.runtime();
        let (min, max) = (
            self.config.claim_jobs_min.min(self.config.claim_jobs_max),
            self.config.claim_jobs_max,
        );
        while !stop.load(Ordering::SeqCst) {
            // Backpressure: no more batches committing than allowed now.
            let waited = Instant::now();
            shared.wait_below(rt.inflight.load(Ordering::Relaxed));
            let waited = waited.elapsed();
            if shared.failed.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst) {
                // The committer's error (if any) is reported when it is joined.
                return Ok(());
            }
            let claim = rt.claim_jobs.load(Ordering::Relaxed).clamp(min, max);
            // Read before the claim: anything added after it wakes the wait.
            let seen = self.store.work_watermark()?;
            let leases = self.store.claim(claim)?;
            let pending = self.store.stats()?.unfinished();
            let done = shared.succeeded.load(Ordering::Relaxed)
                + shared.refused.load(Ordering::Relaxed)
                + report.dead;
            progress(RunProgress {
                done,
                total: done + pending,
                claimed: leases.len(),
            });
            if leases.is_empty() {
                if until_idle && pending == 0 {
                    if shared.outstanding() == 0 {
                        return Ok(());
                    }
                    // Only our own commits are left: wait for them, not
                    // for the store's next change (which they may already
                    // have made).
                    shared.wait_below(1);
                    continue;
                }
                // Nothing due: wait for a new job or event (a commit of
                // ours, a job finished elsewhere), or for retries to come
                // due.
                self.store.wait_for_work(seen, IDLE_WAIT)?;
                continue;
            }
            let full = leases.len() == claim;
            let t = Instant::now();
            self.run_batch(leases, report, sink)?;
            let compute = t.elapsed();
            let commit = Duration::from_micros(shared.commit_us.load(Ordering::Relaxed));
            // AIMD on the claim size: grow while a batch stays under target,
            // halve when it takes twice as long.
            let latency = compute + commit;
            let next = if latency > BATCH_TARGET * 2 {
                (claim / 2).max(min)
            } else if full && latency < BATCH_TARGET {
                (claim + min).min(max)
            } else {
                claim
            };
            rt.claim_jobs.store(next, Ordering::Relaxed);
            // In-flight batches: one more while computing waits on commits
            // that are still quick; back to one when commits get slow.
            let inflight = rt.inflight.load(Ordering::Relaxed);
            let inflight = if commit > BATCH_TARGET * 2 {
                1
            } else if waited > compute / 4 && commit < BATCH_TARGET {
                (inflight + 1).min(self.config.inflight_batches_max)
            } else {
                inflight
            };
            rt.inflight.store(inflight, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Runs one claimed batch.
    fn run_batch(
        &self,
        leases: Vec<Lease>,
        report: &mut RunReport,
        sink: &Sink,
    ) -> Result<(), EngineError> {
        let _span = tracing::info_span!("batch", jobs = leases.len()).entered();
        let mut compute: BTreeMap<Vec<u8>, Vec<Lease>> = BTreeMap::new();
        let mut refresh = Vec::new();
        for l in leases {
            match l.job.kind.as_str() {
                COMPUTE => compute.entry(l.job.payload.to_vec()).or_default().push(l),
                REFRESH => refresh.push(l),
                other => {
                    let msg = format!("unknown job kind {other:?}");
                    self.kill(&l, &msg, report)?;
                }
            }
        }
        for (payload, group) in compute {
            self.run_compute(&payload, group, report, sink)?;
        }
        if !refresh.is_empty() {
            self.run_refresh(refresh, report, sink)?;
        }
        Ok(())
    }

    /// Ends a job dead with `why`.
    pub(super) fn kill(
        &self,
        lease: &Lease,
        why: &str,
        report: &mut RunReport,
    ) -> Result<(), EngineError> {
        self.settle(lease, Setback::Data(why.to_owned()), report)
    }

    /// Ends a job's attempt without results: dead for bad data; failed, to
    /// retry after the store's backoff (dead once its attempts are used
    /// up), when a read failed.
    pub(super) fn settle(
        &self,
        lease: &Lease,
        setback: Setback,
        report: &mut RunReport,
    ) -> Result<(), EngineError> {
        let outcome = match &setback {
            Setback::Data(why) => {
                tracing::warn!(job = lease.job.id, error = %why, "job is dead");
                self.guarded(|| self.store.fail_permanently(lease.token, why))
            }
            Setback::Read(why) => {
                tracing::warn!(job = lease.job.id, error = %why, "reading failed; the job retries");
                self.guarded(|| self.store.fail(lease.token, why))
            }
        };
        let state = match outcome {
            Ok(FailOutcome::Dead) => JobState::Dead,
            Ok(FailOutcome::Retry { .. }) => JobState::Failed,
            // The lease expired meanwhile: the job is back in the queue.
            Err(StoreError::LeaseLost { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        self.runtime().metrics.job(state, lease.job.priority);
        if state == JobState::Dead {
            report.dead += 1;
        }
        Ok(())
    }

    /// Each symbol's bars; when the batch read fails, each symbol's on its
    /// own, so a bad record only fails the jobs that need it.
    pub(super) fn read_bars(
        &self,
        symbols: &[Symbol],
    ) -> Vec<Result<Option<B::BarsView>, StoreError>> {
        match self.store.bars_batch(symbols, None) {
            Ok(views) => views.into_iter().map(Ok).collect(),
            Err(_) => symbols.iter().map(|s| self.store.bars(s, ..)).collect(),
        }
    }
}
