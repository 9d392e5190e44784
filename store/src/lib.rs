//! kiln-store: kiln's durable job queue and result store.
//!
//! Jobs, indexes and small records live in sled; feature frames (a
//! symbol's outputs of one computation, grown by appended chunks) and bar
//! chunks live in a value log beside it (checksummed segment files; a read
//! is one `pread` into an aligned buffer, read in place from there). One
//! writer thread applies every mutation and
//! commits callers' operations in groups: value log fsynced, one sled
//! batch, sled flushed and its files fsynced, then every caller of the
//! group is answered. With [`Durability::Sync`] (the default) an answered
//! call is on disk. See `FORMAT.md` for the on-disk layout.
//!
//! This is the only crate that touches sled and rkyv. It implements the
//! storage traits of `kiln-core` ([`Backend`] and its parts) and re-exports
//! the core's types, so one `use kiln_store::…` is enough to embed it.
//!
//! ```
//! use kiln_store::prelude::*;
//! use kiln_store::{NewJob, SeriesKey, Series, Store, StoreConfig, Symbol};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path(), StoreConfig::default())?;
//! let aapl = Symbol::new("AAPL")?;
//! store.enqueue(NewJob::new("compute", b"sma(20)".to_vec()).symbols(vec![aapl.clone()]))?;
//!
//! let lease = store.claim(1)?.remove(0);
//! let key = SeriesKey::new(aapl, "sma(20)")?;
//! let series = Series { bar_count: 3, last_ts: 1_700_000_000, data_hash: 0, values: vec![f64::NAN, 1.5, 2.5], state: vec![] };
//! // A single series is a frame of one column (see `FrameWrite`).
//! store.complete(lease.token, vec![(key.clone(), series).into()])?;
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
mod events;
mod floor;
mod frame;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod generation;
mod ingest;
mod keys;
mod leveling;
mod record;
mod series;
mod shared;
mod space;
mod store;
mod view;
mod vlog;
mod writer;

pub use bars::{BAR_CHUNK_ROWS_MAX, BarsView};
pub use config::{Durability, StoreConfig};
pub use floor::SledFloor;
pub use generation::sled_dir;
pub use ingest::IngestSession;
pub use kiln_core::prelude;
pub use kiln_core::{
    ATTEMPTS_MAX_LIMIT, Backend, Bar, BarColumns, BarIngest, BarStore, BarsRead, CancelOutcome,
    CheckReport, Clock, Completion, Conflict, Coverage, DataVersion, ERROR_BYTES_MAX, Enqueued,
    Event, EventLog, FEATURE_BYTES_MAX, FailOutcome, FrameKey, FrameRead, FrameRows, FrameWrite,
    IDEMPOTENCY_KEY_BYTES_MAX, IngestReport, Job, JobFilter, JobId, JobQueue, JobState,
    KIND_BYTES_MAX, Lease, LeaseToken, NewJob, Priority, QueueConfig, QueueStats, Result,
    ResultStore, RetryPolicy, SYMBOL_BYTES_MAX, Series, SeriesKey, SeriesRead, StoreError, Symbol,
    SymbolStats, Watermark,
};
pub use record::FORMAT_VERSION;
pub use series::{FrameView, SeriesView};
pub use store::{FORMAT_FILE, Store};
pub use vlog::VlogRecovery;
pub use writer::{CompactReport, RecoveryReport};
