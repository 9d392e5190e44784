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
