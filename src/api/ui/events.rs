//! `/ui/events`: a live tail of the durable event log (the page's first
//! rows are read from the store, later ones arrive on the stream), and
//! `/ui/stream`, the one server-sent event stream every dashboard page
//! listens to: the log's events as `job` events, each with its sequence
//! number as id (a reconnect resumes after the last one), and for the
//! overview `stats` snapshots whenever the store commits (at most a few a
//! second, and every two seconds for the throughput chart).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use kiln_core::prelude::*;
use kiln_core::{Event, JobState};
use maud::html;
use serde::Deserialize;

use super::layout::{Live, Nav, Page, first_line, shell, time_ms};
use super::overview::snapshot;
use crate::api::reply::{blocking, durable};
use crate::api::{ApiError, App};

/// Rows the events page starts with.
const PAGE_ROWS: usize = 200;

/// Events the stream reads from the log at a time.
const STREAM_READ: usize = 256;

/// The least time between two `stats` snapshots.
const STATS_EVERY: Duration = Duration::from_millis(250);

/// The longest time between two `stats` snapshots (the throughput chart
/// moves with time even when nothing commits).
const STATS_AT_LEAST: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    state: Option<String>,
}

/// `GET /ui/events?state=`.
pub async fn page<B: Backend>(
    State(app): State<Arc<App<B>>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Page {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let state = q
        .state
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(str::parse::<JobState>)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    durable(app.engine.store()).await?;
    let engine = app.engine.clone();
    let (events, last) = blocking(move || latest_events(&engine, state)).await?;
    let body = html! {
        h1 { "Events" }
        form.filters method="get" action="/ui/events" {
            label { "State"
                select name="state" {
                    option value="" { "any" }
                    @for s in [JobState::Succeeded, JobState::Failed, JobState::Dead, JobState::Cancelled] {
                        option value=(s.as_str()) selected[state == Some(s)] { (s.as_str()) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        p.muted { "The durable event log, newest first; new events appear as they are committed." }
        table #events data-last=(last) {
            thead { tr {
                th.num { "Seq" } th { "When" } th.num { "Job" } th { "State" } th { "Kind" }
                th.num { "Attempt" } th { "Symbols" } th { "Error" }
            } }
            tbody {
                @for e in events.iter().rev() {
                    tr {
                        td.num { (e.seq) }
                        td { (time_ms(e.at_ms)) }
                        td.num { a href={ "/ui/jobs/" (e.job_id) } { (e.job_id) } }
                        td { span class={ "state " (e.state.as_str()) } { (e.state.as_str()) } }
                        td { (e.kind) }
                        td.num { (e.attempts) }
                        td {
                            (e.symbols.join(", "))
                            @if e.symbols_total as usize > e.symbols.len() { " +" (e.symbols_total as usize - e.symbols.len()) }
                        }
                        td.error { @if let Some(err) = &e.error { (first_line(err)) } }
                    }
                }
            }
        }
    };
    // The stream goes on after the last event shown, and filters the same.
    let live = Live {
        follow: "events",
        after: Some(last),
        state: state.map(JobState::as_str),
    };
    Ok(shell("Events", Nav::Events, None, Some(live), body))
}

/// The last [`PAGE_ROWS`] events (of `state`, if given), oldest first, and
/// the log's last sequence number.
fn latest_events<B: Backend>(
    engine: &crate::engine::Engine<B>,
    state: Option<JobState>,
) -> Result<(Vec<Event>, u64), ApiError> {
    let mut kept = std::collections::VecDeque::with_capacity(PAGE_ROWS);
    let last = engine.each_event(|e| {
        if state.is_none_or(|s| s == e.state) {
            if kept.len() == PAGE_ROWS {
                kept.pop_front();
            }
            kept.push_back(e);
        }
    })?;
    Ok((kept.into(), last))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    after: Option<u64>,
    /// Whether to send `stats` snapshots (the overview's), not only events.
    stats: Option<bool>,
}

/// Where a stream is.
struct Tail<B: Backend> {
    app: Arc<App<B>>,
    news: tokio::sync::watch::Receiver<crate::api::News>,
    after: u64,
    pending: std::collections::VecDeque<SseEvent>,
    stats_at: Option<std::time::Instant>,
    /// Something committed since the last snapshot.
    dirty: bool,
    /// Whether it sends snapshots at all.
    stats: bool,
}

/// `GET /ui/stream?after=&stats=`: the log's events after `after` (or
/// `Last-Event-ID`; from now on without either), and with `stats=true`
/// the overview's snapshots.
pub async fn stream<B: Backend>(
    State(app): State<Arc<App<B>>>,
    query: Result<Query<StreamQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let resume = crate::api::status::last_event_id(&headers)?;
    durable(app.engine.store()).await?;
    let now = app
        .engine
        .store()
        .watermark()?
        .next_event_seq
        .saturating_sub(1);
    let tail = Tail {
        news: app.news.subscribe(),
        app,
        after: resume.or(q.after).unwrap_or(now),
        pending: std::collections::VecDeque::new(),
        stats_at: None,
        dirty: true,
        stats: q.stats.unwrap_or(false),
    };
    let stream = futures_util::stream::unfold(tail, |mut t| async move {
        loop {
            if let Some(e) = t.pending.pop_front() {
                return Some((Ok::<_, Infallible>(e), t));
            }
            if t.news.borrow_and_update().closing {
                return None;
            }
            let since = t.stats_at.map(|at| at.elapsed());
            let due = t.stats
                && since.is_none_or(|s| (t.dirty && s >= STATS_EVERY) || s >= STATS_AT_LEAST);
            let app = Arc::clone(&t.app);
            let after = t.after;
            let read = tokio::task::spawn_blocking(move || {
                let stats = if due { Some(snapshot(&app)) } else { None };
                let events = app.engine.store().events(after, STREAM_READ);
                (stats, events)
            })
            .await;
            let Ok((stats, events)) = read else {
                return None;
            };
            match stats {
                Some(Ok(s)) => {
                    t.pending
                        .push_back(SseEvent::default().event("stats").data(s.to_string()));
                    t.stats_at = Some(std::time::Instant::now());
                    t.dirty = false;
                }
                // The store is failing: end; the browser reconnects.
                Some(Err(_)) => return None,
                None => {}
            }
            let Ok(events) = events else {
                return None;
            };
            for e in &events {
                t.after = e.seq;
                t.pending.push_back(
                    SseEvent::default()
                        .event("job")
                        .id(e.seq.to_string())
                        .data(crate::json::event(e).to_string()),
                );
            }
            if !t.pending.is_empty() {
                continue;
            }
            let since = t.stats_at.map_or(Duration::ZERO, |at| at.elapsed());
            let wait = if !t.stats {
                // Only events: nothing is due until the store commits.
                Duration::from_secs(3600)
            } else if t.dirty {
                STATS_EVERY.saturating_sub(since)
            } else {
                STATS_AT_LEAST.saturating_sub(since)
            };
            tokio::select! {
                changed = t.news.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    t.dirty = true;
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
