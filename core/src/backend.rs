//! The storage seam: what the engine needs from a backend, as four traits
//! and their sum, [`Backend`]. The embedded store (sled and a value log,
//! one process) fills them; so can a backend behind a network (PostgreSQL,
//! many workers on many machines).
//!
//! Designed for the second kind: every call is fallible; the hot paths
//! come in batches (enqueue, claim and complete many jobs; read many
//! symbols' bars, data versions and series in one call), so submitting or
//! running a batch needs no round trip per job or per symbol (rarer paths,
//! a failure, a heartbeat, an ingest's refreshes, still go one by one);
//! and nothing borrows the backend's memory across the trait
//! but the associated view types ([`ResultStore::SeriesView`],
//! [`BarStore::BarsView`]): the embedded store hands out views of its
//! memory-mapped files, another backend may hand out owned data.
//!
//! Whatever a backend is, a job's results, its completion and its event
//! commit together, or not at all; an acknowledged call is durable.

use std::ops::{Range, RangeBounds};
use std::time::Duration;

use crate::bars::{BarIngest, BarsRead, DataVersion};
use crate::config::QueueConfig;
use crate::error::{Result, StoreError};
use crate::job::{
    CancelOutcome, Completion, Enqueued, Event, FailOutcome, Job, JobFilter, JobId, Lease,
    LeaseToken, NewJob, Priority, QueueStats,
};
use crate::names::{SeriesKey, Symbol};
use crate::series::{
    Coverage, FrameKey, FrameRead, FrameWrite, SeriesRead, SymbolStats, copy_rows,
};

/// The durable job queue.
pub trait JobQueue {
    /// Adds jobs in one commit, all or none; returns once they are durable.
    /// A job whose idempotency key belongs to an unfinished job is that job.
    fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>>;

    /// Adds one job; see [`JobQueue::enqueue_many`].
    fn enqueue(&self, job: NewJob) -> Result<Enqueued> {
        self.enqueue_many(vec![job])?
            .pop()
            .ok_or(StoreError::Closed)
    }

    /// Claims up to `max` due jobs in priority order under the default lease.
    fn claim(&self, max: usize) -> Result<Vec<Lease>>;

    /// Claims up to `max` due jobs under a lease of `lease_ms`.
    fn claim_with_lease(&self, max: usize, lease_ms: u64) -> Result<Vec<Lease>>;

    /// Extends a lease to `now + extend_ms`; returns the new expiry.
    fn heartbeat(&self, token: LeaseToken, extend_ms: u64) -> Result<u64>;

    /// Completes many jobs in one commit, each with its results; each gets
    /// its own outcome (a lost lease fails only that completion).
    fn complete_many(&self, completions: Vec<Completion>) -> Result<Vec<Result<()>>>;

    /// Marks a job succeeded and stores its results, atomically.
    fn complete(&self, token: LeaseToken, results: Vec<FrameWrite>) -> Result<()> {
        self.complete_many(vec![Completion { token, results }])?
            .pop()
            .ok_or(StoreError::Closed)?
    }

    /// Stores part of a running job's results under its lease, durably,
    /// without finishing the job: a job over many symbols checkpoints each
    /// finished group, so after a crash its next attempt can skip them.
    fn checkpoint(&self, token: LeaseToken, results: Vec<FrameWrite>) -> Result<()>;

    /// Records a failed attempt: a retry with backoff, or dead when exhausted.
    fn fail(&self, token: LeaseToken, error: &str) -> Result<FailOutcome>;

    /// Records a failure that no retry can fix (bad input): dead at once.
    fn fail_permanently(&self, token: LeaseToken, error: &str) -> Result<FailOutcome>;

    /// Cancels a queued (or awaiting-retry) job.
    fn cancel(&self, id: JobId) -> Result<CancelOutcome>;

    /// Stops (or restarts) claims of one priority.
    fn set_paused(&self, priority: Priority, paused: bool) -> Result<()>;

    /// A job by id, if it exists (finished jobs stay until history trims them).
    fn job(&self, id: JobId) -> Result<Option<Job>>;

    /// Up to `limit` jobs that match `filter`, newest first.
    fn jobs(&self, filter: &JobFilter, limit: usize) -> Result<Vec<Job>>;

    /// The most recent finished jobs (at most `limit`), newest first.
    fn history(&self, limit: usize) -> Result<Vec<Job>>;

    /// Removes finished jobs older than `age_ms`; returns how many.
    fn purge_finished_older_than(&self, age_ms: u64) -> Result<u64>;

    /// Jobs per state, waiting jobs per priority, paused priorities.
    fn stats(&self) -> Result<QueueStats>;

    /// Aggregates over a symbol's finished jobs.
    fn symbol_stats(&self, symbol: &Symbol) -> Result<SymbolStats>;
}

/// Where completed jobs' frames are kept (see [`crate::series`]): written
/// by [`JobQueue::complete_many`] and [`JobQueue::checkpoint`] with the job
/// they belong to, read by frame or by one column's label.
pub trait ResultStore {
    /// One stored column as this backend reads it.
    type SeriesView: SeriesRead + Send + Sync + 'static;
    /// A stored frame's head as this backend reads it.
    type FrameView: FrameRead + Send + Sync + 'static;

    /// The column labelled `key.feature` of the symbol's frame that holds it.
    fn series(&self, key: &SeriesKey) -> Result<Option<Self::SeriesView>>;

    /// The series under each of `keys`, in order, in one call.
    fn series_batch(&self, keys: &[SeriesKey]) -> Result<Vec<Option<Self::SeriesView>>> {
        keys.iter().map(|k| self.series(k)).collect()
    }

    /// Copies rows `rows` of the series under each of `keys` into the
    /// matching slice of `out` (each `rows.len()` long; rows past a series'
    /// end are left as they were) and returns each one's coverage, `None`
    /// for a key with no series (its slice left as it was). The default
    /// copies from [`ResultStore::series_batch`]'s views; a backend may read
    /// straight into `out`.
    fn copy_series(
        &self,
        keys: &[SeriesKey],
        rows: Range<usize>,
        out: &mut [&mut [f64]],
    ) -> Result<Vec<Option<Coverage>>> {
        let views = self.series_batch(keys)?;
        Ok(views
            .iter()
            .zip(out.iter_mut())
            .map(|(view, out)| {
                let view = view.as_ref()?;
                copy_rows(&view.chunks(), rows.clone(), out);
                Some(view.covers())
            })
            .collect())
    }

    /// Every label stored for a symbol, in name order.
    fn series_keys(&self, symbol: &Symbol) -> Result<Vec<SeriesKey>>;

    /// The job whose completion wrote the newest rows of the frame that
    /// holds `key`.
    fn series_writer(&self, key: &SeriesKey) -> Result<Option<JobId>>;

    /// The head of a frame.
    fn frame(&self, key: &FrameKey) -> Result<Option<Self::FrameView>>;

    /// The heads of `keys`, in order, in one call.
    fn frames_batch(&self, keys: &[FrameKey]) -> Result<Vec<Option<Self::FrameView>>> {
        keys.iter().map(|k| self.frame(k)).collect()
    }

    /// Every frame stored for a symbol, in name order.
    fn frames(&self, symbol: &Symbol) -> Result<Vec<FrameKey>>;
}

/// Market data: each symbol's bars and its data version.
pub trait BarStore {
    /// A symbol's bars as this backend reads them.
    type BarsView: BarsRead + Send + Sync + 'static;
    /// An ingest session of this backend.
    type Ingest: BarIngest;

    /// The symbol's data version, if it has bars.
    fn data_version(&self, symbol: &Symbol) -> Result<Option<DataVersion>>;

    /// The data versions of `symbols`, in the order given, in one call. The
    /// default asks one at a time; a backend behind a network answers in
    /// one round trip.
    fn data_versions(&self, symbols: &[Symbol]) -> Result<Vec<Option<DataVersion>>> {
        symbols.iter().map(|s| self.data_version(s)).collect()
    }

    /// Every symbol with bars, in name order, with its data version.
    fn bar_symbols(&self) -> Result<Vec<(Symbol, DataVersion)>>;

    /// The symbol's bars with timestamps (epoch ns) in `range`; `None` when
    /// the symbol has no bars at all.
    fn bars(&self, symbol: &Symbol, range: impl RangeBounds<i64>)
    -> Result<Option<Self::BarsView>>;

    /// The last `lookback` bars (all with `None`) of each symbol, in the
    /// order given, in one call; `None` for a symbol without bars.
    fn bars_batch(
        &self,
        symbols: &[Symbol],
        lookback: Option<usize>,
    ) -> Result<Vec<Option<Self::BarsView>>>;

    /// Starts an ingest session; nothing is visible until it commits.
    fn bar_ingest(&self) -> Result<Self::Ingest>;
}

/// How far the store has come: published after every commit, so waiters
/// wake on change instead of polling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watermark {
    /// The id the next new job gets.
    pub next_job_id: JobId,
    /// The sequence number the next event gets.
    pub next_event_seq: u64,
}

/// The durable event log: one record per job outcome, appended in the
/// commit of the state change it reports, bounded (the oldest dropped).
pub trait EventLog {
    /// Up to `limit` events with a sequence number above `after`, oldest
    /// first (`after = 0` starts at the oldest kept).
    fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>>;

    /// Where the store is now, as far as readers may see: a backend whose
    /// commits are applied before they are durable shows (here and in
    /// [`EventLog::events`]) only what is durable, so a crash never takes
    /// back an event or a job id that a reader has seen.
    fn watermark(&self) -> Result<Watermark>;

    /// Waits until the watermark is other than `seen` (a job was added or
    /// an event appended) or `timeout` passed; returns it either way.
    fn wait_for_change(&self, seen: Watermark, timeout: Duration) -> Result<Watermark>;

    /// Waits until everything committed so far is durable, `timeout` passed
    /// or the store failed; returns whether it is. A reader that calls it
    /// first then reads nothing a crash could take back.
    fn wait_durable(&self, timeout: Duration) -> Result<bool>;

    /// For workers, not readers: the watermark of what is committed, durable
    /// or not yet. A worker may act on a job before its enqueue is durable:
    /// whatever it then does is acknowledged only once durable, after it.
    /// (The default is [`EventLog::watermark`], for backends that reveal a
    /// commit as soon as it is durable.)
    fn work_watermark(&self) -> Result<Watermark> {
        self.watermark()
    }

    /// Waits until [`EventLog::work_watermark`] is other than `seen`, or
    /// `timeout` passed; returns it either way.
    fn wait_for_work(&self, seen: Watermark, timeout: Duration) -> Result<Watermark> {
        self.wait_for_change(seen, timeout)
    }
}

/// What an integrity scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Jobs scanned.
    pub jobs: u64,
    /// Series scanned (each read back and verified).
    pub series: u64,
    /// Bar chunks scanned (each read back, verified, and summed against its
    /// symbol's data version).
    pub bar_chunks: u64,
    /// Jobs per state, by the scan.
    pub counters_by_state: [u64; 6],
    /// Every inconsistency, in words; empty when the store is sound.
    pub problems: Vec<String>,
}

/// A whole backend: the four parts and what the engine asks of the store
/// as a whole. Cheap to clone (a handle).
pub trait Backend:
    JobQueue + ResultStore + BarStore + EventLog + Clone + Send + Sync + 'static
{
    /// The bounds it enforces (the engine sizes its calls by them) and its
    /// clock (the engine's guards keep its time).
    fn queue_config(&self) -> &QueueConfig;

    /// Why writes are refused, if they are (a failed write poisoned it).
    fn poisoned(&self) -> Option<String>;

    /// Scans everything and reports every inconsistency.
    fn check(&self) -> Result<CheckReport>;

    /// Bytes held, by part (for metrics).
    fn sizes(&self) -> Result<Vec<(&'static str, u64)>>;
}
