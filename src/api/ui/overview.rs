//! `/ui`: the engine at a glance, kept current by the live stream's
//! `stats` snapshots (no polling): jobs by state, waiting jobs and pause
//! per priority, throughput over the last ten minutes, the breaker, the
//! market data and the store's size; a form that queues features.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use kiln_core::{Backend, JobState, Priority};
use maud::{Markup, html};

use super::layout::{Live, Nav, NoteQuery, Page, bytes, shell};
use crate::api::App;
use crate::api::reply::{blocking, durable};

/// What the overview shows, as the live stream sends it: `GET /v1/stats`
/// with the throughput of each of the last seconds and its smoothed rate.
/// Made at most every [`SNAPSHOT_EVERY`] however many pages ask (each
/// reads every symbol's data version and the store's sizes).
pub fn snapshot<B: Backend>(app: &App<B>) -> Result<Arc<serde_json::Value>, crate::api::ApiError> {
    let mut kept = app
        .snapshot
        .lock()
        .map_err(|_| crate::api::ApiError::internal("the stats snapshot"))?;
    if let Some((at, v)) = kept.as_ref()
        && at.elapsed() < SNAPSHOT_EVERY
    {
        return Ok(Arc::clone(v));
    }
    let mut v = crate::json::stats(&app.engine)?;
    v["throughput"] = app.throughput_history().into();
    v["jobs_per_s"] = app.jobs_per_s().into();
    let v = Arc::new(v);
    *kept = Some((std::time::Instant::now(), Arc::clone(&v)));
    Ok(v)
}

/// How long a stats snapshot serves every page that asks.
const SNAPSHOT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// `GET /ui`.
pub async fn page<B: Backend>(
    State(app): State<Arc<App<B>>>,
    query: Result<Query<NoteQuery>, QueryRejection>,
) -> Page {
    let note = query
        .ok()
        .and_then(|Query(q)| app.notes.open(q.note, q.seal.as_deref()));
    durable(app.engine.store()).await?;
    let shared = Arc::clone(&app);
    let s = blocking(move || snapshot(&shared)).await?;
    let s: &serde_json::Value = &s;
    let count = |path: &str| -> String {
        let mut v = s;
        for k in path.split('.') {
            v = &v[k];
        }
        match v {
            serde_json::Value::Null => "–".into(),
            serde_json::Value::String(t) => t.clone(),
            other => other.to_string(),
        }
    };
    let throughput: Vec<f64> = s["throughput"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    let rate = s["jobs_per_s"]
        .as_f64()
        .map_or_else(|| "–".into(), |r| format!("{r:.1}"));
    let store_bytes = s["store_bytes"].as_u64().unwrap_or(0);
    let body = html! {
        h1 { "Overview" }
        div.tiles {
            @for state in JobState::ALL {
                div class={ "tile " (state.as_str()) } {
                    div.label { (state_label(state)) }
                    div.value data-stat={ "jobs." (state.as_str()) } { (count(&format!("jobs.{}", state.as_str()))) }
                }
            }
        }
        h2 { "Queue" }
        table {
            thead { tr { th { "Priority" } th.num { "Waiting" } th { "Claims" } th {} } }
            tbody {
                @for p in Priority::ALL {
                    @let paused = s["paused"][p.as_str()].as_bool().unwrap_or(false);
                    tr {
                        td { (p.as_str()) }
                        td.num data-stat={ "depth." (p.as_str()) } { (count(&format!("depth.{}", p.as_str()))) }
                        td data-stat={ "paused." (p.as_str()) } { @if paused { "paused" } @else { "running" } }
                        td {
                            form.inline method="post" action={ "/ui/priorities/" (p.as_str()) } {
                                input type="hidden" name="paused" value=(if paused { "false" } else { "true" }) data-pause-input=(p.as_str());
                                button type="submit" data-pause-button=(p.as_str()) { @if paused { "Resume" } @else { "Pause" } }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Throughput" }
        div.card {
            p { span data-stat="jobs_per_s" data-format="rate" { (rate) } " jobs/s while busy · jobs finished each second, last 10 minutes" }
            (sparkline(&throughput))
        }
        h2 { "Engine" }
        div.card {
            dl.fields {
                dt { "Breaker" } dd data-stat="breaker" { (count("breaker")) }
                dt { "Claim size" } dd { span data-stat="claim_jobs" { (count("claim_jobs")) } " jobs" }
                dt { "Batches in flight" } dd data-stat="inflight_batches" { (count("inflight_batches")) }
                dt { "Symbols" } dd data-stat="symbols" { (count("symbols")) }
                dt { "Bars" } dd data-stat="bars" { (count("bars")) }
                dt { "Store on disk" } dd data-stat="store_bytes" data-format="bytes" { (bytes(store_bytes)) }
                @if let Some(cause) = s["poisoned"].as_str() {
                    dt { "Store" } dd.error { "poisoned: " (cause) }
                }
            }
        }
        h2 { "Compute" }
        form.stack method="post" action="/ui/compute" {
            label { "Symbols (comma-separated)" input name="symbols" placeholder="AAPL,MSFT" required; }
            label { "Features" input name="features" placeholder="rsi(14),macd(12,26,9)" required; }
            label { "Priority"
                select name="priority" {
                    @for p in Priority::ALL {
                        option value=(p.as_str()) selected[p == Priority::Normal] { (p.as_str()) }
                    }
                }
            }
            button type="submit" { "Queue" }
        }
    };
    Ok(shell(
        "Overview",
        Nav::Overview,
        note.as_deref(),
        Live::follow("stats"),
        body,
    ))
}

/// What a state's tile says.
fn state_label(state: JobState) -> &'static str {
    match state {
        JobState::Failed => "failed (retrying)",
        other => other.as_str(),
    }
}

/// Jobs finished each second as a line (the script redraws it the same
/// way from each snapshot).
fn sparkline(values: &[f64]) -> Markup {
    html! {
        svg.spark viewBox="0 0 600 60" preserveAspectRatio="none" role="img" aria-label="jobs finished per second" {
            line.base x1="0" y1="60" x2="600" y2="60" {}
            polyline #throughput points=(spark_points(values)) {}
        }
    }
}

/// The points of [`sparkline`]: 600 × 60, the top a little above the
/// highest value (at least 1).
fn spark_points(values: &[f64]) -> String {
    let n = values.len();
    let max = values.iter().copied().fold(1.0, f64::max);
    let mut out = String::new();
    for (i, v) in values.iter().enumerate() {
        let x = if n > 1 {
            i as f64 * 600.0 / (n - 1) as f64
        } else {
            0.0
        };
        let y = 60.0 - v / max * 56.0;
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&format!("{x:.1},{y:.1}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::spark_points;

    #[test]
    fn the_sparkline_spans_the_box() {
        assert_eq!(spark_points(&[]), "");
        assert_eq!(spark_points(&[0.0]), "0.0,60.0");
        assert_eq!(
            spark_points(&[0.0, 2.0, 1.0]),
            "0.0,60.0 300.0,4.0 600.0,32.0"
        );
    }
}
