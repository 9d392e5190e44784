//! Running jobs: claim a batch, group it by plan, read bars in one batch,
//! compute on rayon, commit with the store's group commit.
//!
//! A job whose data is wrong (bad bars, an unreadable saved state) ends
//! dead with a message naming the symbol; one whose reads failed (an I/O or
//! integrity error on the store's read path) fails its attempt and retries
//! with the store's backoff, so one bad record never stops the run. A
//! failure of the store's write path poisons the store and ends the run.

use kiln_store::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use kiln_store::{
    Bar, BarsView, Completion, DataVersion, FailOutcome, JobQueue, JobState, Lease, Priority,
    ResultStore, Series, SeriesKey, StoreError, Symbol,
};
use rayon::prelude::*;

use super::{COMPUTE, Engine, EngineError, REFRESH, STATE_PREFIX, state_key};
use crate::features::{Bars, FeatureError, Plan, spec::parse_list};

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

type Results = Vec<(SeriesKey, Series)>;

/// Why a job's attempt produced no results.
enum Setback {
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
    /// The committer stopped on an error.
    failed: AtomicBool,
    /// Batches sent and not yet committed.
    outstanding: AtomicUsize,
    /// The last commit's duration, in microseconds.
    commit_us: AtomicU64,
}

/// A batch should take about this long, compute and commit.
const BATCH_TARGET: Duration = Duration::from_millis(250);

/// Where finished batches go: the committer thread of [`Engine::run`].
struct Sink<'a> {
    tx: SyncSender<Batch>,
    outstanding: &'a AtomicUsize,
    /// Most series bytes in one batch (half the store's `complete_bytes_max`).
    bytes_max: usize,
}

/// About how many bytes a completion's series archive to.
fn completion_bytes(c: &Completion) -> usize {
    c.results
        .iter()
        .map(|(_, s)| s.values.len() * 8 + s.state.len() + 64)
        .sum()
}

impl Sink<'_> {
    /// Sends completions to the committer, cut into batches that stay
    /// within the store's per-call byte bound.
    fn send(&self, completions: Vec<(Completion, Priority)>) -> Result<(), EngineError> {
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
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        // Closed only when the committer stopped on an error, which the
        // run reports when it joins it.
        self.tx
            .send(Batch {
                completions,
                priorities,
            })
            .map_err(|_| {
                self.outstanding.fetch_sub(1, Ordering::SeqCst);
                EngineError::Request("the committer stopped".into())
            })
    }
}

/// What refreshing one symbol produced.
#[derive(Default)]
struct Refreshed {
    results: Results,
    continued: u64,
    recomputed: u64,
}

/// `text` and the plan's state bytes, as one saved-state payload.
fn state_payload(text: &str, state: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + text.len() + state.len());
    v.extend_from_slice(&(text.len() as u32).to_le_bytes());
    v.extend_from_slice(text.as_bytes());
    v.extend_from_slice(state);
    v
}

fn split_state_payload(p: &[u8]) -> Option<(&str, &[u8])> {
    let len = u32::from_le_bytes(p.get(..4)?.try_into().ok()?) as usize;
    let text = std::str::from_utf8(p.get(4..4 + len)?).ok()?;
    Some((text, p.get(4 + len..)?))
}

fn series(v: &DataVersion, values: Vec<f64>, state: Vec<u8>) -> Series {
    Series {
        bar_count: v.bars,
        last_ts: v.last_ts,
        data_hash: v.hash,
        values,
        state,
    }
}

fn bars_of(v: &BarsView, from: usize) -> Bars<'_> {
    Bars {
        open: v.open().get(from..).unwrap_or(&[]),
        high: v.high().get(from..).unwrap_or(&[]),
        low: v.low().get(from..).unwrap_or(&[]),
        close: v.close().get(from..).unwrap_or(&[]),
        volume: v.volume().get(from..).unwrap_or(&[]),
    }
}

/// The first bar from `from` on whose prices or volume are not finite (the
/// store's own ingest refuses them, but bars staged through the library
/// API are only checked for order): the error names the symbol and bar.
fn check_bars(symbol: &Symbol, v: &BarsView, from: usize) -> Result<(), String> {
    let columns = [
        ("open", v.open()),
        ("high", v.high()),
        ("low", v.low()),
        ("close", v.close()),
        ("volume", v.volume()),
    ];
    for (name, column) in columns {
        if let Some(i) = column.iter().skip(from).position(|x| !x.is_finite()) {
            let i = from + i;
            return Err(format!(
                "{symbol}: bar {i} ({}) has {name} {}; fix the bars and submit again",
                crate::market::format_iso(v.ts()[i]),
                column[i]
            ));
        }
    }
    Ok(())
}

/// Every output of `plan` over a symbol's full history, and its state; the
/// error names the symbol.
fn compute_symbol(
    plan: &Plan,
    text: &str,
    symbol: &Symbol,
    bars: &BarsView,
) -> Result<Results, String> {
    let fail = |e: &dyn std::fmt::Display| format!("{symbol}: {e}");
    check_bars(symbol, bars, 0)?;
    let mut state = plan.new_state();
    let mut frame = plan.new_frame();
    plan.advance(&mut state, bars_of(bars, 0), &mut frame)
        .map_err(|e: FeatureError| fail(&e))?;
    let v = bars.version();
    let mut out = Vec::with_capacity(plan.output_labels().len() + 1);
    for (i, label) in plan.output_labels().iter().enumerate() {
        let values = frame.output(i).unwrap_or(&[]).to_vec();
        let key = SeriesKey::new(symbol.clone(), label.clone()).map_err(|e| fail(&e))?;
        out.push((key, series(&v, values, Vec::new())));
    }
    let key = state_key(symbol, plan).map_err(|e| fail(&e))?;
    out.push((
        key,
        series(
            &v,
            Vec::new(),
            state_payload(text, &plan.encode_state(&state)),
        ),
    ));
    Ok(out)
}

/// A job's completion for the committer, counted in the report.
fn done(lease: &Lease, results: Results, report: &mut RunReport) -> (Completion, Priority) {
    report.series += results.len() as u64;
    report.symbols += 1;
    let completion = Completion {
        token: lease.token,
        results,
    };
    (completion, lease.job.priority)
}

/// The digest sum of a view's first `n` bars (see `DataVersion::hash`).
fn prefix_digest(v: &BarsView, n: usize) -> u64 {
    (0..n).fold(0u64, |h, i| {
        let bar = Bar {
            ts: v.ts()[i],
            open: v.open()[i],
            high: v.high()[i],
            low: v.low()[i],
            close: v.close()[i],
            volume: v.volume()[i],
            vwap: v.vwap()[i],
        };
        h.wrapping_add(bar.digest())
    })
}

impl Engine {
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
    ///
    /// Commits are pipelined: a committer thread hands finished batches to
    /// the store's group commit while this thread claims, reads and
    /// computes the next. The claim size and the number of batches
    /// committing at once adapt (additive increase, multiplicative
    /// decrease) to keep a batch near `BATCH_TARGET` end to end.
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
                    // The claim loop stops at its next check.
                    shared.failed.store(true, Ordering::SeqCst);
                }
                result
            });
            let sink = Sink {
                tx,
                outstanding: &shared.outstanding,
                bytes_max: self.config.store.queue.complete_bytes_max / 2,
            };
            let claimed = self.claim_loop(&sink, &mut report, shared, stop, until_idle, progress);
            drop(sink);
            let committed = committer.join().unwrap_or_else(|_| {
                Err(EngineError::Request("the committer thread panicked".into()))
            });
            // The committer's error is the cause when both stopped.
            committed.and(claimed)
        });
        committed?;
        report.succeeded = shared.succeeded.load(Ordering::Relaxed);
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// The committer: commits each batch it is sent, in order.
    fn commit_loop(&self, rx: &Receiver<Batch>, shared: &Shared) -> Result<(), EngineError> {
        for batch in rx {
            let t = Instant::now();
            let outcomes = self.guarded(|| self.store.complete_many(batch.completions));
            shared.outstanding.fetch_sub(1, Ordering::SeqCst);
            shared
                .commit_us
                .store(t.elapsed().as_micros() as u64, Ordering::Relaxed);
            for (outcome, priority) in outcomes?.into_iter().zip(batch.priorities) {
                match outcome {
                    Ok(()) => {
                        shared.succeeded.fetch_add(1, Ordering::Relaxed);
                        self.runtime().metrics.job(JobState::Succeeded, priority);
                    }
                    // The lease expired and the job went back to the queue.
                    Err(StoreError::LeaseLost { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Calls the store's write path through the circuit breaker, waiting
    /// while it is open (the run loop waits; submissions are refused).
    fn guarded<T>(&self, call: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let breaker = &self.runtime().breaker;
        while let Err(wait) = breaker.admit() {
            std::thread::sleep(wait.min(Duration::from_millis(100)));
        }
        let result = call();
        breaker.record(!matches!(&result, Err(e) if super::is_outage(e)));
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
            while shared.outstanding.load(Ordering::SeqCst) >= rt.inflight.load(Ordering::Relaxed)
                && !shared.failed.load(Ordering::SeqCst)
            {
                std::thread::sleep(Duration::from_micros(500));
            }
            let waited = waited.elapsed();
            if shared.failed.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst) {
                // The committer's error (if any) is reported when it is joined.
                return Ok(());
            }
            let claim = rt.claim_jobs.load(Ordering::Relaxed).clamp(min, max);
            let leases = self.store.claim(claim)?;
            let st = self.store.stats()?;
            let pending = st.unfinished();
            let done = shared.succeeded.load(Ordering::Relaxed) + report.dead;
            progress(RunProgress {
                done,
                total: done + pending,
                claimed: leases.len(),
            });
            if leases.is_empty() {
                if until_idle && pending == 0 && shared.outstanding.load(Ordering::SeqCst) == 0 {
                    return Ok(());
                }
                // Retries waiting for their time, completions in flight, or
                // leases held elsewhere.
                std::thread::sleep(Duration::from_millis(5));
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
    fn kill(&self, lease: &Lease, why: &str, report: &mut RunReport) -> Result<(), EngineError> {
        self.settle(lease, Setback::Data(why.to_owned()), report)
    }

    /// Ends a job's attempt without results: dead for bad data; failed, to
    /// retry after the store's backoff (dead once its attempts are used
    /// up), when a read failed.
    fn settle(
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
    fn read_bars(&self, symbols: &[Symbol]) -> Vec<Result<Option<BarsView>, StoreError>> {
        match self.store.bars_batch(symbols, None) {
            Ok(views) => views.into_iter().map(Ok).collect(),
            Err(_) => symbols.iter().map(|s| self.store.bars(s, ..)).collect(),
        }
    }

    fn run_compute(
        &self,
        payload: &[u8],
        leases: Vec<Lease>,
        report: &mut RunReport,
        sink: &Sink,
    ) -> Result<(), EngineError> {
        let text = String::from_utf8_lossy(payload).into_owned();
        let plan = match parse_list(&text) {
            Ok(specs) => Plan::new(&specs),
            Err(e) => {
                for l in &leases {
                    self.kill(l, &format!("bad feature list {text:?}: {e}"), report)?;
                }
                return Ok(());
            }
        };
        let (empty, leases): (Vec<Lease>, Vec<Lease>) =
            leases.into_iter().partition(|l| l.job.symbols.is_empty());
        for l in &empty {
            self.kill(l, "a compute job without a symbol", report)?;
        }
        let (single, many): (Vec<Lease>, Vec<Lease>) =
            leases.into_iter().partition(|l| l.job.symbols.len() == 1);
        // One-symbol jobs: one batch read, one parallel compute, one commit.
        let symbols: Vec<Symbol> = single
            .iter()
            .filter_map(|l| l.job.symbols.first().cloned())
            .collect();
        let views = self.read_bars(&symbols);
        let computed: Vec<Result<Results, Setback>> = single
            .par_iter()
            .zip(views.par_iter())
            .map(|(l, view)| {
                let _span = tracing::debug_span!("job", id = l.job.id).entered();
                let (symbol, view) = match (l.job.symbols.first(), view) {
                    (Some(s), Ok(Some(v))) => (s, v),
                    (Some(s), Ok(None)) => return Err(Setback::Data(format!("{s} has no bars"))),
                    (Some(s), Err(e)) => return Err(Setback::Read(format!("{s}: {e}"))),
                    (None, _) => {
                        return Err(Setback::Data("a compute job without a symbol".into()));
                    }
                };
                let t = Instant::now();
                let results = compute_symbol(&plan, &text, symbol, view);
                self.runtime()
                    .metrics
                    .compute(&text, t.elapsed().as_secs_f64());
                results.map_err(Setback::Data)
            })
            .collect();
        let mut completions = Vec::with_capacity(single.len());
        for (l, result) in single.iter().zip(computed) {
            match result {
                Ok(results) => {
                    completions.push(done(l, results, report));
                }
                Err(setback) => self.settle(l, setback, report)?,
            }
        }
        sink.send(completions)?;
        for l in many {
            self.run_many(&plan, &text, l, report, sink)?;
        }
        Ok(())
    }

    /// A job over many symbols: groups of `checkpoint_symbols`, each stored
    /// as it finishes; symbols already current are skipped.
    fn run_many(
        &self,
        plan: &Plan,
        text: &str,
        lease: Lease,
        report: &mut RunReport,
        sink: &Sink,
    ) -> Result<(), EngineError> {
        let _span =
            tracing::debug_span!("job", id = lease.job.id, symbols = lease.job.symbols.len())
                .entered();
        let todo = match self.not_current(plan, &lease.job.symbols) {
            Ok(todo) => todo,
            Err(setback) => return self.settle(&lease, setback, report),
        };
        let chunks: Vec<&[Symbol]> = todo.chunks(self.config.checkpoint_symbols).collect();
        let mut last = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            // Keep the lease while a long job runs.
            match self
                .store
                .heartbeat(lease.token, self.config.store.queue.lease_ms)
            {
                Ok(_) => {}
                Err(StoreError::LeaseLost { .. }) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            let views = self.read_bars(chunk);
            let computed: Result<Vec<Results>, Setback> = chunk
                .par_iter()
                .zip(views.par_iter())
                .map(|(s, view)| match view {
                    Ok(Some(v)) => compute_symbol(plan, text, s, v).map_err(Setback::Data),
                    Ok(None) => Err(Setback::Data(format!("{s} has no bars"))),
                    Err(e) => Err(Setback::Read(format!("{s}: {e}"))),
                })
                .collect();
            let results: Results = match computed {
                Ok(r) => r.into_iter().flatten().collect(),
                Err(setback) => return self.settle(&lease, setback, report),
            };
            report.symbols += chunk.len() as u64;
            report.series += results.len() as u64;
            if i + 1 < chunks.len() {
                match self.guarded(|| self.store.checkpoint(lease.token, results)) {
                    Ok(()) => {}
                    Err(StoreError::LeaseLost { .. }) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            } else {
                last = results;
            }
        }
        sink.send(vec![(
            Completion {
                token: lease.token,
                results: last,
            },
            lease.job.priority,
        )])
    }

    /// The symbols whose outputs of `plan` are missing or stale.
    fn not_current(&self, plan: &Plan, symbols: &[Symbol]) -> Result<Vec<Symbol>, Setback> {
        let mut todo = Vec::new();
        for s in symbols {
            let current = match self.store.data_version(s)? {
                Some(v) => self.is_current(s, plan, &v)?,
                None => false,
            };
            if !current {
                todo.push(s.clone());
            }
        }
        Ok(todo)
    }

    /// Refresh jobs: continue each stored plan's state over new bars.
    fn run_refresh(
        &self,
        leases: Vec<Lease>,
        report: &mut RunReport,
        sink: &Sink,
    ) -> Result<(), EngineError> {
        let computed: Vec<Result<Refreshed, Setback>> = leases
            .par_iter()
            .map(|l| {
                let _span = tracing::debug_span!("job", id = l.job.id, kind = REFRESH).entered();
                self.refresh_one(l)
            })
            .collect();
        let mut completions = Vec::new();
        for (l, result) in leases.iter().zip(computed) {
            match result {
                Ok(Refreshed {
                    results,
                    continued,
                    recomputed,
                }) => {
                    report.continued += continued;
                    report.recomputed += recomputed;
                    completions.push(done(l, results, report));
                }
                Err(setback) => self.settle(l, setback, report)?,
            }
        }
        sink.send(completions)
    }

    /// The results of refreshing one symbol.
    fn refresh_one(&self, lease: &Lease) -> Result<Refreshed, Setback> {
        let Some(symbol) = lease.job.symbols.first() else {
            return Err(Setback::Data("a refresh job without a symbol".into()));
        };
        let Some(bars) = self.store.bars(symbol, ..)? else {
            return Err(Setback::Data(format!("{symbol} has no bars")));
        };
        let version = bars.version();
        check_bars(symbol, &bars, 0).map_err(Setback::Data)?;
        let mut out = Refreshed::default();
        for key in self.store.series_keys(symbol)? {
            if !key.feature.starts_with(STATE_PREFIX) {
                continue;
            }
            let Some(saved) = self.store.series(&key)? else {
                continue;
            };
            if saved.is_current(&version) {
                continue;
            }
            let Some((text, state_bytes)) = split_state_payload(saved.state()) else {
                return Err(Setback::Data(format!(
                    "{symbol}: saved state {} is unreadable",
                    key.feature
                )));
            };
            let plan = match parse_list(text) {
                Ok(specs) => Plan::new(&specs),
                Err(e) => {
                    return Err(Setback::Data(format!("{symbol}: saved plan {text:?}: {e}")));
                }
            };
            let old_n = usize::try_from(saved.bar_count()).unwrap_or(usize::MAX);
            let grew = old_n > 0
                && old_n <= bars.len()
                && bars.ts()[old_n - 1] == saved.last_ts()
                && prefix_digest(&bars, old_n) == saved.data_hash();
            let continued = if grew {
                self.continue_plan(
                    symbol,
                    &plan,
                    text,
                    state_bytes,
                    &bars,
                    saved.data_hash(),
                    old_n,
                )?
            } else {
                None
            };
            let results = match continued {
                Some(r) => {
                    out.continued += 1;
                    r
                }
                // A correction, or outputs missing: recompute in full.
                None => match compute_symbol(&plan, text, symbol, &bars) {
                    Ok(r) => {
                        out.recomputed += 1;
                        r
                    }
                    Err(why) => return Err(Setback::Data(why)),
                },
            };
            out.results.extend(results);
        }
        Ok(out)
    }

    /// Continues a saved state over bars `old_n..`; `None` if any stored
    /// output is not the one the state belongs to.
    #[allow(clippy::too_many_arguments)]
    fn continue_plan(
        &self,
        symbol: &Symbol,
        plan: &Plan,
        text: &str,
        state_bytes: &[u8],
        bars: &BarsView,
        old_hash: u64,
        old_n: usize,
    ) -> Result<Option<Results>, StoreError> {
        let Ok(mut state) = plan.decode_state(state_bytes) else {
            return Ok(None);
        };
        let mut frame = plan.new_frame();
        if plan
            .advance(&mut state, bars_of(bars, old_n), &mut frame)
            .is_err()
        {
            return Ok(None);
        }
        let v = bars.version();
        let mut out = Vec::with_capacity(plan.output_labels().len() + 1);
        for (i, label) in plan.output_labels().iter().enumerate() {
            let key = SeriesKey::new(symbol.clone(), label.clone())?;
            let Some(old) = self.store.series(&key)? else {
                return Ok(None);
            };
            if old.values().len() != old_n || old.data_hash() != old_hash {
                return Ok(None);
            }
            let mut values = Vec::with_capacity(bars.len());
            values.extend_from_slice(old.values());
            values.extend_from_slice(frame.output(i).unwrap_or(&[]));
            out.push((key, series(&v, values, Vec::new())));
        }
        out.push((
            state_key(symbol, plan)?,
            series(
                &v,
                Vec::new(),
                state_payload(text, &plan.encode_state(&state)),
            ),
        ));
        Ok(Some(out))
    }
}
