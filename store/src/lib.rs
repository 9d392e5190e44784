//! kiln-store: kiln's durable job queue and result store.
//!
//! Jobs, indexes and small records live in sled; large feature series live
//! in a value log beside it (checksummed segment files, read zero-copy
//! through memory maps). One writer thread applies every mutation and
//! commits callers' operations in groups: value log fsynced, one sled
//! batch, sled flushed and its files fsynced, then every caller of the
//! group is answered. With [`Durability::Sync`] (the default) an answered
//! call is on disk. See `FORMAT.md` for the on-disk layout.
//!
//! This is the only crate that touches sled and rkyv.
//!
//! ```
//! use kiln_store::{JobQueue, NewJob, ResultStore, SeriesKey, Series, Store, StoreConfig, Symbol};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path(), StoreConfig::default())?;
//! let aapl = Symbol::new("AAPL")?;
//! store.enqueue(NewJob::new("compute", b"sma(20)".to_vec()).symbols(vec![aapl.clone()]))?;
//!
//! let lease = store.claim(1)?.remove(0);
//! let key = SeriesKey::new(aapl, "sma(20)")?;
//! let series = Series { bar_count: 3, last_ts: 1_700_000_000, data_hash: 0, values: vec![f64::NAN, 1.5, 2.5], state: vec![] };
//! store.complete(lease.token, vec![(key.clone(), series)])?;
//!
//! let view = store.series(&key)?.expect("stored with the completion");
//! assert_eq!(&view.values()[1..], &[1.5, 2.5]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

/// `debug_assert!` that also holds in test builds made with `--release`
/// (they enable the `test-hooks` feature): an invariant break panics in the
/// tests that reach it, and is clamped, as before, in a release binary.
macro_rules! invariant {
    ($($arg:tt)*) => {
        if cfg!(any(debug_assertions, feature = "test-hooks")) {
            assert!($($arg)*);
        }
    };
}

mod bars;
mod config;
mod disk;
mod error;
mod events;
mod floor;
mod ingest;
mod job;
mod keys;
mod record;
mod series;
mod space;
mod store;
mod vlog;
mod writer;

pub use bars::{BAR_CHUNK_ROWS_MAX, Bar, BarColumns, BarsView, DataVersion};
pub use config::{Durability, StoreConfig};
pub use error::{Result, StoreError};
pub use events::Event;
pub use floor::SledFloor;
pub use ingest::{BarIngest, Conflict, IngestReport};
pub use job::{
    ATTEMPTS_MAX_LIMIT, CancelOutcome, Clock, Enqueued, FailOutcome, Job, JobId, JobState, Lease,
    LeaseToken, NewJob, Priority, RetryPolicy,
};
pub use keys::{
    FEATURE_BYTES_MAX, IDEMPOTENCY_KEY_BYTES_MAX, KIND_BYTES_MAX, SYMBOL_BYTES_MAX, SeriesKey,
    Symbol,
};
pub use record::{FORMAT_VERSION, Series, SymbolStats};
pub use series::SeriesView;
pub use store::{Completion, FORMAT_FILE, QueueStats, Store};
pub use vlog::VlogRecovery;
pub use writer::queue::ERROR_BYTES_MAX;
pub use writer::{CheckReport, CompactReport, RecoveryReport};

/// A durable job queue. The sled-backed [`Store`] implements it; a backend
/// for multi-node deployments can implement it later.
pub trait JobQueue {
    /// Adds one job; returns after it is durable.
    fn enqueue(&self, job: NewJob) -> Result<Enqueued>;
    /// Adds many jobs in one commit, all or none.
    fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>>;
    /// Claims up to `max` due jobs in priority order under the default lease.
    fn claim(&self, max: usize) -> Result<Vec<Lease>>;
    /// Claims up to `max` due jobs under a lease of `lease_ms`.
    fn claim_with_lease(&self, max: usize, lease_ms: u64) -> Result<Vec<Lease>>;
    /// Extends a lease to `now + extend_ms`; returns the new expiry.
    fn heartbeat(&self, token: LeaseToken, extend_ms: u64) -> Result<u64>;
    /// Marks a job succeeded and stores its results, atomically.
    fn complete(&self, token: LeaseToken, results: Vec<(SeriesKey, Series)>) -> Result<()>;
    /// Completes many jobs in one commit; each gets its own outcome (a lost
    /// lease fails only that completion).
    fn complete_many(&self, completions: Vec<Completion>) -> Result<Vec<Result<()>>>;
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
    /// Counters per state and depth per priority, O(1).
    fn stats(&self) -> QueueStats;
}

/// Where completed jobs' series are kept.
pub trait ResultStore {
    /// The stored series under `key`, read in place.
    fn series(&self, key: &SeriesKey) -> Result<Option<SeriesView>>;
    /// Every series key stored for a symbol.
    fn series_keys(&self, symbol: &Symbol) -> Result<Vec<SeriesKey>>;
    /// The job whose completion wrote the series under `key`.
    fn series_writer(&self, key: &SeriesKey) -> Result<Option<JobId>>;
}
