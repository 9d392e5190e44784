//! The JSON renderings the faces share: a job as `kiln jobs --json` and the
//! HTTP API show it, an event as the event feed, `kiln watch --json` and the
//! HTTP event stream send it, the engine's state as `kiln stats --json` and
//! `GET /v1/stats` show it. Each is a type (with the schema
//! `/openapi.json` gives for it) and a function that renders it as a JSON
//! value.

use std::collections::BTreeMap;

use kiln_core::{Event, Job, JobState, Priority};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::schema::{PriorityName, StateName, SymbolName};

/// A job.
#[derive(Serialize, ToSchema)]
#[schema(as = Job)]
pub struct JobView {
    /// Its id (ids grow: a newer job has a larger one).
    pub id: u64,
    /// Its state now.
    #[schema(value_type = StateName)]
    pub state: &'static str,
    /// What it computes (`compute` for features).
    pub kind: String,
    /// Its priority.
    #[schema(value_type = PriorityName)]
    pub priority: &'static str,
    /// Attempts made so far.
    pub attempts: u32,
    /// The symbols it covers.
    #[schema(value_type = Vec<SymbolName>)]
    pub symbols: Vec<String>,
    /// What it was asked to do (for `compute`, the feature specs).
    pub payload: String,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
    /// When it was queued, epoch milliseconds.
    pub enqueued_ms: u64,
    /// When it ended, epoch milliseconds.
    pub finished_ms: Option<u64>,
}

impl JobView {
    /// The view of `j`.
    pub fn of(j: &Job) -> JobView {
        JobView {
            id: j.id,
            state: j.state.as_str(),
            kind: j.kind.clone(),
            priority: j.priority.as_str(),
            attempts: j.attempts,
            symbols: j.symbols.iter().map(|s| s.as_str().to_owned()).collect(),
            payload: String::from_utf8_lossy(&j.payload).into_owned(),
            last_error: j.last_error.clone(),
            enqueued_ms: j.enqueued_ms,
            finished_ms: j.finished_ms,
        }
    }
}

/// A job as JSON.
pub fn job(j: &Job) -> serde_json::Value {
    value(&JobView::of(j))
}

/// An event of the durable event log: a job changed state.
#[derive(Serialize, ToSchema)]
#[schema(as = Event)]
pub struct EventView {
    /// Its sequence number (an event stream's `id`).
    pub seq: u64,
    /// The job's id.
    pub job: u64,
    /// The state the job entered.
    #[schema(value_type = StateName)]
    pub state: &'static str,
    /// The job's kind.
    pub kind: String,
    /// The job's attempts so far.
    pub attempts: u32,
    /// When, epoch milliseconds.
    pub at_ms: u64,
    /// The job's first symbols (at most 16).
    #[schema(value_type = Vec<SymbolName>)]
    pub symbols: Vec<String>,
    /// How many symbols the job has.
    pub symbols_total: u32,
    /// The error, when an attempt failed.
    pub error: Option<String>,
}

impl EventView {
    /// The view of `e`.
    pub fn of(e: &Event) -> EventView {
        EventView {
            seq: e.seq,
            job: e.job_id,
            state: e.state.as_str(),
            kind: e.kind.clone(),
            attempts: e.attempts,
            at_ms: e.at_ms,
            symbols: e.symbols.clone(),
            symbols_total: e.symbols_total,
            error: e.error.clone(),
        }
    }
}

/// An event as JSON.
pub fn event(e: &Event) -> serde_json::Value {
    value(&EventView::of(e))
}

/// The engine's state.
#[derive(Serialize, ToSchema)]
#[schema(as = Stats)]
pub struct StatsView {
    /// Jobs by state (every state).
    pub jobs: BTreeMap<&'static str, u64>,
    /// Jobs waiting, by priority (every priority).
    pub depth: BTreeMap<&'static str, u64>,
    /// Whether claims of each priority are paused.
    pub paused: BTreeMap<&'static str, bool>,
    /// Symbols with bars.
    pub symbols: usize,
    /// Bars held, all symbols.
    pub bars: u64,
    /// The data directory's bytes on disk.
    pub store_bytes: u64,
    /// Why the store stopped taking writes, if it did.
    pub poisoned: Option<String>,
    /// The circuit breaker: `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// Jobs claimed at once (adaptive).
    pub claim_jobs: usize,
    /// Batches computing now.
    pub inflight_batches: usize,
}

impl StatsView {
    /// The state of `engine` now.
    pub fn of<B: kiln_core::Backend>(
        engine: &crate::engine::Engine<B>,
    ) -> Result<StatsView, crate::engine::EngineError> {
        let rt = engine.runtime_stats();
        let store = engine.store();
        let st = store.stats()?;
        let symbols = store.bar_symbols()?;
        Ok(StatsView {
            jobs: JobState::ALL
                .iter()
                .map(|s| (s.as_str(), st.count(*s)))
                .collect(),
            depth: Priority::ALL
                .iter()
                .map(|p| (p.as_str(), st.depth(*p)))
                .collect(),
            paused: Priority::ALL
                .iter()
                .map(|p| (p.as_str(), st.paused[*p as usize]))
                .collect(),
            symbols: symbols.len(),
            bars: symbols.iter().map(|(_, v)| v.bars).sum(),
            store_bytes: store.sizes()?.iter().map(|(_, n)| n).sum(),
            poisoned: store.poisoned(),
            breaker: rt.breaker.as_str(),
            claim_jobs: rt.claim_jobs,
            inflight_batches: rt.inflight_batches,
        })
    }
}

/// The engine's state as `kiln stats --json`, `GET /v1/stats` and Python's
/// `stats()` show it: jobs by state, waiting jobs by priority and which
/// priorities are paused, the market data held, the store's bytes on disk,
/// the breaker and the adaptive sizes.
pub fn stats<B: kiln_core::Backend>(
    engine: &crate::engine::Engine<B>,
) -> Result<serde_json::Value, crate::engine::EngineError> {
    Ok(value(&StatsView::of(engine)?))
}

/// `v` as a JSON value (these views always render).
fn value(v: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
