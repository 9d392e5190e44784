//! The behaviour suite every backend runs against the traits: one public
//! function per behaviour (its name says what it checks), generic over a
//! [`Harness`] that opens the backend under test, plus a model test
//! ([`model::run`]) that holds random operation sequences against a plain
//! in-memory model. A backend's test file runs them all with
//! [`conformance_tests!`](crate::conformance_tests), one `#[test]` each.
//!
//! Only for tests (the `conformance` feature): the functions panic on the
//! first broken expectation, as tests do.

pub mod bars;
pub mod events;
pub mod faults;
pub mod frames;
pub mod model;
pub mod queue;

use crate::{
    Backend, Bar, BarColumns, BarIngest, BarStore, BarsRead, Clock, Conflict, DataVersion,
    FrameWrite, IngestReport, NewJob, QueueConfig, Result, RetryPolicy, Series, SeriesKey,
    StoreError, Symbol,
};

/// Opens the backend under test.
pub trait Harness {
    /// The backend.
    type Backend: Backend;

    /// Whether reopening returns the jobs that were running to the queue at
    /// once. An embedded store's open does (its process ended, so its
    /// leases did); a server backend's jobs stay leased until their leases
    /// expire.
    const REOPEN_REQUEUES_RUNNING: bool;

    /// A new, empty backend with `config`.
    fn open(&mut self, config: QueueConfig) -> Self::Backend;

    /// Closes `backend` and opens the same data again with `config`.
    fn reopen(&mut self, backend: Self::Backend, config: QueueConfig) -> Self::Backend;

    /// Makes the backend's next commit fail as a failed write (or, with
    /// `fsync`, a failed fsync) would; after it the backend refuses every
    /// change until reopened. `false` where this harness cannot (the model
    /// test then skips the step).
    fn break_next_commit(&mut self, _backend: &Self::Backend, _fsync: bool) -> bool {
        false
    }

    /// Makes the `nth` next I/O call of kind `fault` (the harness maps the
    /// byte to the calls and errors it can inject) on the backend's files
    /// fail, until it has or the backend is reopened. `false` where this
    /// harness cannot (the model test then skips the step).
    fn fail_io(&mut self, _fault: u8, _nth: u8) -> bool {
        false
    }
}

/// Writes one `#[test]` per behaviour of the suite, each with a new harness
/// made by `$harness` (an expression).
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@tests $harness; queue:
            enqueued_job_is_queued_with_its_fields,
            job_listing_filters_and_pages_newest_first,
            claims_follow_strict_priority_then_fifo,
            claim_takes_at_most_max_and_empty_queue_gives_nothing,
            claimed_job_is_running_with_a_lease_and_an_attempt,
            delayed_job_is_not_claimable_before_run_at,
            expired_lease_returns_job_to_queue,
            heartbeat_extends_the_lease,
            heartbeat_after_expiry_is_lease_lost,
            lease_expiry_on_last_attempt_makes_the_job_dead,
            complete_stores_results_and_marks_succeeded_atomically,
            a_second_completion_replaces_the_series,
            complete_many_reports_each_outcome,
            failure_schedules_a_retry_with_backoff,
            exhausted_attempts_make_the_job_dead_with_the_last_error,
            idempotency_key_of_an_unfinished_job_returns_that_job,
            duplicate_keys_within_one_batch_make_one_job,
            cancel_removes_a_queued_job_and_refuses_a_running_one,
            cancel_stops_a_scheduled_retry,
            paused_priority_is_skipped_until_resumed,
            pause_survives_reopen,
            queue_full_refuses_submissions_beyond_the_bound,
            oversized_and_malformed_inputs_are_typed_errors_that_change_nothing,
            oversized_series_is_refused_and_the_job_stays_running,
            unknown_job_reads_as_none,
            history_keeps_only_the_most_recent_finished_jobs,
            purge_removes_finished_jobs_older_than_an_age,
            retention_purges_old_finished_jobs_by_itself,
            history_lists_finished_jobs_newest_first_and_survives_reopen,
            symbol_aggregates_survive_reopen_and_purge,
            a_complete_call_larger_than_its_bound_is_refused,
        );
        $crate::conformance_tests!(@tests $harness; frames:
            appends_add_rows_and_keep_the_state_until_one_is_saved,
            an_append_that_does_not_continue_the_frame_is_skipped,
            a_replace_moves_labels_and_removes_a_frame_left_without_any,
            remove_drops_the_frame_and_its_labels,
        );
        $crate::conformance_tests!(@tests $harness; events:
            every_outcome_is_an_event_in_order,
            the_log_is_trimmed_and_numbers_continue_after_a_restart,
            a_waiter_wakes_when_a_job_is_added,
        );
        $crate::conformance_tests!(@tests $harness; bars:
            identical_reingest_is_a_no_op_and_a_correction_replaces,
            a_conflict_within_one_source_is_reported_with_both_locations,
            a_later_source_wins_even_between_pieces_of_an_earlier_one,
            many_small_appends_and_back_fills_keep_versions_exact,
            a_dropped_session_leaves_nothing_and_unsorted_input_is_refused,
            follow_up_jobs_commit_with_the_bars_or_the_ingest_is_refused,
        );
    };
    (@tests $harness:expr; $module:ident: $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::conformance::$module::$name(&mut $harness);
            }
        )*
    };
}

/// The suite's start time (ms since the epoch), on a manual clock.
pub const T0: u64 = 1_700_000_000_000;

/// The suite's usual configuration: a manual clock and a known backoff.
pub fn config(clock: &Clock) -> QueueConfig {
    QueueConfig {
        clock: clock.clone(),
        retry: RetryPolicy {
            base_ms: 1_000,
            cap_ms: 60_000,
        },
        ..QueueConfig::default()
    }
}

/// A fresh backend on a manual clock at [`T0`].
pub fn open<H: Harness>(harness: &mut H) -> (Clock, H::Backend) {
    let clock = Clock::manual(T0);
    let backend = harness.open(config(&clock));
    (clock, backend)
}

/// A `compute` job with `name` as its payload.
pub fn job(name: &str) -> NewJob {
    NewJob::new("compute", name.as_bytes().to_vec())
}

/// A symbol that is known to be valid.
pub fn sym(s: &str) -> Symbol {
    Symbol::new(s).expect("symbol")
}

/// `key`'s one-column frame of `values` (see [`Series`]), from 42 as its
/// last timestamp, with state 1, 2, 3.
pub fn series(key: &SeriesKey, values: Vec<f64>) -> FrameWrite {
    let s = Series {
        bar_count: values.len() as u64,
        last_ts: 42,
        data_hash: 0,
        values,
        state: vec![1, 2, 3],
    };
    FrameWrite::from((key.clone(), s))
}

/// A bar at `ts` closing at `close`.
pub fn bar(ts: i64, close: f64) -> Bar {
    Bar {
        ts,
        open: close,
        high: close + 1.0,
        low: close - 0.5,
        close,
        volume: 100.0,
        vwap: f64::NAN,
    }
}

/// Bars at the timestamps of `range`, closing at `10 + ts + offset`.
pub fn cols(range: std::ops::Range<i64>, offset: f64) -> BarColumns {
    let mut c = BarColumns::default();
    for t in range {
        c.push(bar(t, 10.0 + t as f64 + offset));
    }
    c
}

/// Ingests `parts` (symbol, bars) from one source in one session.
pub fn ingest<B: BarStore>(store: &B, parts: &[(&str, BarColumns)]) -> Result<IngestReport> {
    let mut s = store.bar_ingest()?;
    let src = s.source("test");
    for (name, c) in parts {
        s.stage(&sym(name), src, c, &[])?;
    }
    s.commit(&mut refuse)
}

/// A conflict handler that rejects the ingest.
pub fn refuse(c: &Conflict) -> Result<()> {
    Err(StoreError::Conflict(format!("{} at ts {}", c.symbol, c.ts)))
}

/// All of a symbol's stored bars.
pub fn stored<B: BarStore>(store: &B, name: &str) -> BarColumns {
    store
        .bars(&sym(name), ..)
        .expect("read")
        .expect("has bars")
        .to_columns()
}

/// Asserts that two sets of bars carry the same bits.
pub fn assert_bits_eq(a: &BarColumns, b: &BarColumns) {
    assert_eq!(a.len(), b.len());
    for i in 0..a.len() {
        assert!(
            a.bar(i).same_as(&b.bar(i)),
            "bar {i}: {:?} vs {:?}",
            a.bar(i),
            b.bar(i)
        );
    }
}

/// The data version of `c`, computed here.
pub fn version_of(c: &BarColumns) -> DataVersion {
    DataVersion {
        bars: c.len() as u64,
        first_ts: c.ts[0],
        last_ts: c.ts[c.len() - 1],
        hash: c.digest(),
    }
}
