//! kiln-core: the job model, the plain record types and the storage traits
//! ([`Backend`] and its parts) that every kiln backend implements and the
//! engine is written against. No I/O lives here.
//!
//! - [`job`]: priorities, states, jobs, leases, completions, queue counts
//!   and events;
//! - [`names`]: validated symbols and series keys;
//! - [`bars`]: bars, bar columns, data versions, ingest sessions;
//! - [`series`]: stored frames and series (feature outputs) and per-symbol
//!   aggregates;
//! - [`config`]: the job model's bounds, the retry policy and the clock;
//! - [`backend`]: the traits;
//! - `conformance` (feature `conformance`): the behaviour suite a backend
//!   runs against the traits.
//!
//! ```
//! use kiln_core::{NewJob, Priority, QueueConfig, Symbol};
//!
//! let job = NewJob::new("compute", b"sma(20)".to_vec())
//!     .symbols(vec![Symbol::new("AAPL")?])
//!     .priority(Priority::High);
//! job.validate(&QueueConfig::default())?;
//! assert!(NewJob::new("has space", vec![]).validate(&QueueConfig::default()).is_err());
//! # Ok::<(), kiln_core::StoreError>(())
//! ```

pub mod backend;
pub mod bars;
pub mod config;
mod error;
pub mod job;
pub mod names;
pub mod series;

#[cfg(feature = "conformance")]
pub mod conformance;

/// The traits, to bring their methods into scope at once:
/// `use kiln_core::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Backend, BarIngest, BarStore, BarsRead, EventLog, FrameRead, JobQueue, ResultStore,
        SeriesRead,
    };
}

pub use backend::{Backend, BarStore, CheckReport, EventLog, JobQueue, ResultStore, Watermark};
pub use bars::{
    Bar, BarColumns, BarIngest, BarsRead, Conflict, DataVersion, FollowUp, IngestReport,
};
pub use config::{ATTEMPTS_MAX_LIMIT, Clock, QueueConfig, RetryPolicy};
pub use error::{Result, StoreError};
pub use job::{
    CancelOutcome, Completion, ERROR_BYTES_MAX, EVENT_SYMBOLS_MAX, Enqueued, Event, FailOutcome,
    Job, JobFilter, JobId, JobState, Lease, LeaseToken, NewJob, Priority, QueueStats,
};
pub use names::{
    FEATURE_BYTES_MAX, IDEMPOTENCY_KEY_BYTES_MAX, KIND_BYTES_MAX, SYMBOL_BYTES_MAX, SeriesKey,
    Symbol, check_label,
};
pub use series::{
    Coverage, FrameKey, FrameRead, FrameRows, FrameWrite, Series, SeriesRead, SymbolStats,
};
