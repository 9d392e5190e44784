//! The JSON renderings the faces share: a job as `kiln jobs --json` and the
//! HTTP API show it, an event as the event feed, `kiln watch --json` and the
//! HTTP event stream send it.

use kiln_core::{Event, Job, Symbol};

/// A job as JSON.
pub fn job(j: &Job) -> serde_json::Value {
    serde_json::json!({
        "id": j.id, "state": j.state.as_str(), "kind": j.kind,
        "priority": j.priority.as_str(),
        "attempts": j.attempts, "symbols": j.symbols.iter().map(Symbol::as_str).collect::<Vec<_>>(),
        "payload": String::from_utf8_lossy(&j.payload), "last_error": j.last_error,
        "enqueued_ms": j.enqueued_ms, "finished_ms": j.finished_ms,
    })
}

/// An event as JSON.
pub fn event(e: &Event) -> serde_json::Value {
    serde_json::json!({
        "seq": e.seq, "job": e.job_id, "state": e.state.as_str(), "kind": e.kind,
        "attempts": e.attempts, "at_ms": e.at_ms, "symbols": e.symbols,
        "symbols_total": e.symbols_total, "error": e.error,
    })
}

/// The engine's state as `kiln stats --json`, `GET /v1/stats` and Python's
/// `stats()` show it: jobs by state, waiting jobs by priority and which
/// priorities are paused, the market data held, the store's bytes on disk,
/// the breaker and the adaptive sizes.
pub fn stats<B: kiln_core::Backend>(
    engine: &crate::engine::Engine<B>,
) -> Result<serde_json::Value, crate::engine::EngineError> {
    use kiln_core::{JobState, Priority};
    let rt = engine.runtime_stats();
    let store = engine.store();
    let st = store.stats()?;
    let symbols = store.bar_symbols()?;
    let bars: u64 = symbols.iter().map(|(_, v)| v.bars).sum();
    let by_state: serde_json::Map<String, serde_json::Value> = JobState::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), st.count(*s).into()))
        .collect();
    let depth: serde_json::Map<String, serde_json::Value> = Priority::ALL
        .iter()
        .map(|p| (p.as_str().to_owned(), st.depth(*p).into()))
        .collect();
    let paused: serde_json::Map<String, serde_json::Value> = Priority::ALL
        .iter()
        .map(|p| (p.as_str().to_owned(), st.paused[*p as usize].into()))
        .collect();
    let store_bytes: u64 = store.sizes()?.iter().map(|(_, n)| n).sum();
    Ok(serde_json::json!({
        "jobs": by_state, "depth": depth, "paused": paused,
        "symbols": symbols.len(), "bars": bars, "store_bytes": store_bytes,
        "poisoned": store.poisoned(), "breaker": rt.breaker.as_str(),
        "claim_jobs": rt.claim_jobs, "inflight_batches": rt.inflight_batches,
    }))
}
