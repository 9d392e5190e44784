//! The job model: priorities, states, what is submitted, what a claim
//! hands out, what a completion carries, the retry policy, the clock, the
//! counts and the events a queue reports.

use std::sync::Arc;

use crate::config::{ATTEMPTS_MAX_LIMIT, QueueConfig};
use crate::error::{Result, StoreError};
use crate::names::{IDEMPOTENCY_KEY_BYTES_MAX, KIND_BYTES_MAX, Symbol, check_label};
use crate::series::FrameWrite;

/// A job id: allocated in enqueue order, so it is also the FIFO order.
pub type JobId = u64;

/// Strict priority: every due `High` job is claimed before any `Normal`, and so on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Claimed first (for example a feature a reader is waiting for).
    High = 0,
    /// The default.
    Normal = 1,
    /// Background work.
    Low = 2,
}

impl Priority {
    /// All priorities in claim order.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// Its position in [`Priority::ALL`] (its stored number).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The priority stored as `n`.
    pub fn from_u8(n: u8) -> Option<Self> {
        Priority::ALL.get(usize::from(n)).copied()
    }

    /// `high`, `normal` or `low`.
    pub fn as_str(self) -> &'static str {
        ["high", "normal", "low"][self.index()]
    }
}

impl std::str::FromStr for Priority {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                StoreError::invalid("priority", format!("{s:?}; use high, normal or low"))
            })
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobState {
    /// Waiting to be claimed (possibly not before its `run_at`).
    Queued = 0,
    /// Claimed under a lease.
    Running = 1,
    /// Finished; its results were stored in the same batch.
    Succeeded = 2,
    /// An attempt failed; a retry is scheduled at `run_at`.
    Failed = 3,
    /// Failed `attempts_max` times; the last error is kept.
    Dead = 4,
    /// Cancelled before it ran.
    Cancelled = 5,
}

impl JobState {
    /// All states, in counter order.
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// Its position in [`JobState::ALL`] (its stored number).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The state stored as `n`.
    pub fn from_u8(n: u8) -> Option<Self> {
        JobState::ALL.get(usize::from(n)).copied()
    }

    /// Succeeded, dead and cancelled jobs never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }

    /// Queued and failed (awaiting retry) jobs count toward queue depth.
    pub fn is_waiting(self) -> bool {
        matches!(self, JobState::Queued | JobState::Failed)
    }

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        [
            "queued",
            "running",
            "succeeded",
            "failed",
            "dead",
            "cancelled",
        ][self.index()]
    }
}

impl std::str::FromStr for JobState {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                StoreError::invalid(
                    "state",
                    format!("{s:?}; use queued, running, succeeded, failed, dead or cancelled"),
                )
            })
    }
}

/// A job to submit. Build with [`NewJob::new`] and the setters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJob {
    /// A short label of what the job does (`compute`, `refresh`), for people and stats.
    pub kind: String,
    /// Opaque bytes the worker interprets; at most `StoreConfig::payload_bytes_max`.
    pub payload: Vec<u8>,
    /// Symbols the job concerns; finished jobs are aggregated per symbol.
    pub symbols: Vec<Symbol>,
    /// Claim order class.
    pub priority: Priority,
    /// Not claimable before this time (ms since the Unix epoch); `None` = now.
    pub run_at_ms: Option<u64>,
    /// Submitting a key whose job is still queued, running or awaiting retry
    /// returns that job instead of creating another.
    pub idempotency_key: Option<String>,
    /// Attempts before the job is dead; `None` = `StoreConfig::attempts_max`.
    pub attempts_max: Option<u32>,
}

impl NewJob {
    /// A normal-priority job due now.
    pub fn new(kind: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        NewJob {
            kind: kind.into(),
            payload: payload.into(),
            symbols: Vec::new(),
            priority: Priority::Normal,
            run_at_ms: None,
            idempotency_key: None,
            attempts_max: None,
        }
    }

    /// Sets the priority.
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }

    /// Sets the symbols the job concerns.
    pub fn symbols(mut self, symbols: Vec<Symbol>) -> Self {
        self.symbols = symbols;
        self
    }

    /// Delays the job until `run_at_ms`.
    pub fn run_at_ms(mut self, run_at_ms: u64) -> Self {
        self.run_at_ms = Some(run_at_ms);
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Overrides the attempt limit.
    pub fn attempts_max(mut self, n: u32) -> Self {
        self.attempts_max = Some(n);
        self
    }

    /// Checks every field against its bound.
    pub fn validate(&self, limits: &QueueConfig) -> Result<()> {
        check_label("kind", &self.kind, KIND_BYTES_MAX)?;
        if self.payload.len() > limits.payload_bytes_max {
            return Err(StoreError::invalid(
                "payload",
                format!(
                    "{} bytes, limit payload_bytes_max = {}",
                    self.payload.len(),
                    limits.payload_bytes_max
                ),
            ));
        }
        if self.symbols.len() > limits.job_symbols_max {
            return Err(StoreError::invalid(
                "symbols",
                format!(
                    "{} symbols, limit job_symbols_max = {}",
                    self.symbols.len(),
                    limits.job_symbols_max
                ),
            ));
        }
        if let Some(key) = &self.idempotency_key {
            check_label("idempotency_key", key, IDEMPOTENCY_KEY_BYTES_MAX)?;
        }
        if let Some(n) = self.attempts_max
            && !(1..=ATTEMPTS_MAX_LIMIT).contains(&n)
        {
            return Err(StoreError::invalid(
                "attempts_max",
                format!("{n}; allowed are 1 to {ATTEMPTS_MAX_LIMIT}"),
            ));
        }
        Ok(())
    }
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// See [`NewJob::kind`].
    pub kind: String,
    /// See [`NewJob::payload`].
    pub payload: Arc<[u8]>,
    /// See [`NewJob::symbols`].
    pub symbols: Vec<Symbol>,
    /// Its priority.
    pub priority: Priority,
    /// Its state.
    pub state: JobState,
    /// Attempts started so far (a claim starts one).
    pub attempts: u32,
    /// Attempts allowed.
    pub attempts_max: u32,
    /// Earliest claim time, ms since the epoch (the retry time when `Failed`).
    pub run_at_ms: u64,
    /// When it was enqueued.
    pub enqueued_ms: u64,
    /// When the latest attempt started, if any.
    pub started_ms: Option<u64>,
    /// When it reached a terminal state.
    pub finished_ms: Option<u64>,
    /// While running: when the lease runs out.
    pub lease_expires_ms: Option<u64>,
    /// The latest failure message.
    pub last_error: Option<String>,
    /// See [`NewJob::idempotency_key`].
    pub idempotency_key: Option<String>,
}

/// Which jobs a listing answers ([`crate::JobQueue::jobs`]): a job matches
/// when it matches every field that is set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Jobs in this state.
    pub state: Option<JobState>,
    /// Jobs of this priority.
    pub priority: Option<Priority>,
    /// Jobs of this kind (`compute`, `refresh`).
    pub kind: Option<String>,
    /// Jobs that cover this symbol.
    pub symbol: Option<Symbol>,
    /// Jobs older than this one (ids below it): the cursor of the next page.
    pub before: Option<JobId>,
}

impl JobFilter {
    /// Every job in `state` (every job for `None`).
    pub fn state(state: Option<JobState>) -> Self {
        JobFilter {
            state,
            ..JobFilter::default()
        }
    }

    /// Whether `job` matches every field but `symbol` (what a job's record
    /// tells without its input).
    pub fn matches_record(&self, job: &Job) -> bool {
        self.state.is_none_or(|s| s == job.state)
            && self.priority.is_none_or(|p| p == job.priority)
            && self.kind.as_ref().is_none_or(|k| *k == job.kind)
            && self.before.is_none_or(|b| job.id < b)
    }

    /// Whether `job` matches every field.
    pub fn matches(&self, job: &Job) -> bool {
        self.matches_record(job) && self.symbol.as_ref().is_none_or(|s| job.symbols.contains(s))
    }
}

/// Proof of a claim: complete, fail and heartbeat must present it, so a worker
/// whose lease expired (and whose job was handed to someone else) cannot
/// finish the job a second time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeaseToken {
    /// The job.
    pub job_id: JobId,
    /// The attempt this claim started.
    pub attempt: u32,
}

/// A claimed job.
#[derive(Clone, Debug)]
pub struct Lease {
    /// The job, in state `Running`.
    pub job: Job,
    /// Present it to complete, fail or heartbeat.
    pub token: LeaseToken,
    /// When the lease runs out unless extended.
    pub expires_ms: u64,
}

/// What an enqueue did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// A new job.
    Created(JobId),
    /// The idempotency key belonged to this unfinished job; nothing was added.
    Existing(JobId),
}

impl Enqueued {
    /// The job id either way.
    pub fn id(self) -> JobId {
        match self {
            Enqueued::Created(id) | Enqueued::Existing(id) => id,
        }
    }
}

/// What a failure report did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOutcome {
    /// Another attempt is scheduled.
    Retry {
        /// Not before this time.
        run_at_ms: u64,
    },
    /// Attempts are exhausted; the job is dead.
    Dead,
}

/// What a cancel did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was queued (or awaiting retry) and is now cancelled.
    Cancelled,
    /// The job was in this state, which cannot be cancelled.
    NotCancellable(JobState),
}

/// Longest error message kept on a job, in bytes (longer ones are cut).
pub const ERROR_BYTES_MAX: usize = 4096;

/// A job's completion: the lease and the series it produced.
#[derive(Clone, Debug)]
pub struct Completion {
    /// The claim being completed.
    pub token: LeaseToken,
    /// Result frames, stored in the same commit that marks the job succeeded.
    pub results: Vec<FrameWrite>,
}

/// Jobs per state and waiting jobs per priority.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Jobs per [`JobState`], indexed by `state as usize`.
    pub by_state: [u64; 6],
    /// Waiting jobs (queued or awaiting retry) per [`Priority`].
    pub depth: [u64; 3],
    /// Paused priorities.
    pub paused: [bool; 3],
}

impl QueueStats {
    /// Jobs in `state`.
    pub fn count(&self, state: JobState) -> u64 {
        self.by_state[state as usize]
    }

    /// Waiting jobs of priority `p`.
    pub fn depth(&self, p: Priority) -> u64 {
        self.depth[p as usize]
    }

    /// Jobs waiting at any priority.
    pub fn waiting(&self) -> u64 {
        self.depth.iter().sum()
    }

    /// Jobs not finished: queued, running or waiting for a retry.
    pub fn unfinished(&self) -> u64 {
        self.count(JobState::Queued) + self.count(JobState::Running) + self.count(JobState::Failed)
    }
}

/// One job outcome in the durable event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Position in the log (strictly increasing, never reused).
    pub seq: u64,
    /// The job.
    pub job_id: JobId,
    /// The state it entered: succeeded, failed (a retry is scheduled), dead or cancelled.
    pub state: JobState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The job kind.
    pub kind: String,
    /// The job's first symbols (at most [`EVENT_SYMBOLS_MAX`]).
    pub symbols: Vec<String>,
    /// How many symbols the job has.
    pub symbols_total: u32,
    /// The error of a failed or dead job.
    pub error: Option<String>,
}

/// Symbols an event names (a job's first ones); `symbols_total` has the count.
pub const EVENT_SYMBOLS_MAX: usize = 16;

impl Event {
    /// The event of `job` entering `state` at `at_ms`, numbered `seq`.
    pub fn of(seq: u64, job: &Job, state: JobState, at_ms: u64) -> Event {
        Event {
            seq,
            job_id: job.id,
            state,
            attempts: job.attempts,
            at_ms,
            kind: job.kind.clone(),
            symbols: job
                .symbols
                .iter()
                .take(EVENT_SYMBOLS_MAX)
                .map(|s| s.as_str().to_owned())
                .collect(),
            symbols_total: u32::try_from(job.symbols.len()).unwrap_or(u32::MAX),
            error: match state {
                JobState::Failed | JobState::Dead => job.last_error.clone(),
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_and_state_names_round_trip() {
        for p in Priority::ALL {
            assert_eq!(p.as_str().parse::<Priority>().expect("parse"), p);
            assert_eq!(Priority::from_u8(p as u8), Some(p));
        }
        assert!("urgent".parse::<Priority>().is_err());
        for s in JobState::ALL {
            assert_eq!(JobState::from_u8(s as u8), Some(s));
        }
        assert_eq!(JobState::from_u8(6), None);
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().expect("parse"), s);
        }
        assert!("done".parse::<JobState>().is_err());
    }
}
