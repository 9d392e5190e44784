//! `/ui/jobs`: jobs filtered by state, priority, kind and symbol (the
//! filters live in the URL, so a link reproduces the view), newest first
//! and paged, with retry and cancel per row and for everything the filter
//! matches; `/ui/jobs/{id}`: one job, its attempts and their errors from
//! the durable event log, its timings and its symbols.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use kiln_core::prelude::*;
use kiln_core::{Job, JobFilter, JobState, Priority, StoreError};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{
    Live, Nav, NoteQuery, NoteSeal, Page, first_line, now_ms, shell, span_ms, time_ms,
};
use crate::api::guard::query_escape;
use crate::api::jobs::{BULK_MAX, JobsQuery};
use crate::api::reply::{blocking, durable, job_id};
use crate::api::{ApiError, App};

/// Rows per page.
const PAGE_ROWS: usize = 50;

/// A [`JobsQuery`] and the note an action left.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    priority: Option<String>,
    kind: Option<String>,
    symbol: Option<String>,
    before: Option<u64>,
    note: Option<String>,
    seal: Option<String>,
}

impl ListQuery {
    /// The filter (what was typed into the form, without surrounding
    /// spaces) and the note, if sealed by `seal`.
    fn split(self, seal: &NoteSeal) -> (JobsQuery, Option<String>) {
        let typed = |v: Option<String>| v.map(|v| v.trim().to_owned());
        let q = JobsQuery {
            state: typed(self.state),
            priority: typed(self.priority),
            kind: typed(self.kind),
            symbol: typed(self.symbol),
            before: self.before,
            limit: None,
        };
        (q, seal.open(self.note, self.seal.as_deref()))
    }
}

/// The query string of `q`'s filters (without the cursor), for links and
/// the forms' `back`.
pub fn filter_query(q: &JobsQuery) -> String {
    let mut parts = Vec::new();
    for (name, v) in [
        ("state", &q.state),
        ("priority", &q.priority),
        ("kind", &q.kind),
        ("symbol", &q.symbol),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            parts.push(format!("{name}={}", query_escape(v)));
        }
    }
    parts.join("&")
}

/// `GET /ui/jobs?state=&priority=&kind=&symbol=&before=`.
pub async fn list<B: Backend>(
    State(app): State<Arc<App<B>>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Page {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (q, note) = q.split(&app.notes);
    let filter = q.filter()?;
    durable(app.engine.store()).await?;
    let engine = app.engine.clone();
    let f = filter.clone();
    let (jobs, matching) = blocking(move || {
        let jobs = engine.store().jobs(&f, PAGE_ROWS + 1)?;
        // What a bulk action would take, when the filter allows one.
        let all = JobFilter {
            before: None,
            ..f.clone()
        };
        let bulk = match f.state {
            Some(JobState::Dead | JobState::Cancelled) => {
                Some(engine.retry_candidates(&all, BULK_MAX)?)
            }
            Some(JobState::Queued | JobState::Failed) => {
                Some(engine.cancel_candidates(&all, BULK_MAX)?)
            }
            _ => None,
        };
        Ok((jobs, bulk.map(|(jobs, more)| (jobs.len(), more))))
    })
    .await?;
    let more = jobs.len() > PAGE_ROWS;
    let jobs = &jobs[..jobs.len().min(PAGE_ROWS)];
    let filters = filter_query(&q);
    let back = if filters.is_empty() {
        "/ui/jobs".to_owned()
    } else {
        format!("/ui/jobs?{filters}")
    };
    let body = html! {
        h1 { "Jobs" }
        (filter_form(&q, &filter))
        p #news .note { span data-count { "0" } " new events since this page loaded. " a href=(back) { "Reload" } }
        @if let Some(bulk) = matching {
            (bulk_actions(&filter, &q, bulk, &back))
        }
        @if jobs.is_empty() {
            p.muted { "No jobs match." }
        } @else {
            table #jobs {
                thead { tr {
                    th.num { "Id" } th { "State" } th { "Kind" } th { "Priority" } th.num { "Attempts" }
                    th { "Symbols" } th { "Last error" } th { "Age" } th {}
                } }
                tbody {
                    @for j in jobs { (job_row(j, &back)) }
                }
            }
        }
        div.pager {
            @if q.before.is_some() {
                a href=(back) { "← Newest" }
            }
            @if more {
                @if let Some(last) = jobs.last() {
                    a href={ "/ui/jobs?" (filters) @if !filters.is_empty() { "&" } "before=" (last.id) } { "Older →" }
                }
            }
        }
    };
    Ok(shell(
        "Jobs",
        Nav::Jobs,
        note.as_deref(),
        Live::follow("jobs"),
        body,
    ))
}

fn filter_form(q: &JobsQuery, f: &JobFilter) -> Markup {
    html! {
        form.filters method="get" action="/ui/jobs" {
            label { "State"
                select name="state" {
                    option value="" { "any" }
                    @for s in JobState::ALL {
                        option value=(s.as_str()) selected[f.state == Some(s)] { (s.as_str()) }
                    }
                }
            }
            label { "Priority"
                select name="priority" {
                    option value="" { "any" }
                    @for p in Priority::ALL {
                        option value=(p.as_str()) selected[f.priority == Some(p)] { (p.as_str()) }
                    }
                }
            }
            label { "Kind"
                select name="kind" {
                    option value="" { "any" }
                    @for k in ["compute", "refresh"] {
                        option value=(k) selected[f.kind.as_deref() == Some(k)] { (k) }
                    }
                }
            }
            label { "Symbol" input name="symbol" value=[q.symbol.as_deref()] size="10"; }
            button type="submit" { "Filter" }
            a href="/ui/jobs" { "Clear" }
        }
    }
}

/// Hidden fields that carry a filter (and where to come back to) in a form.
fn filter_fields(q: &JobsQuery, back: &str) -> Markup {
    html! {
        @for (name, v) in [("state", &q.state), ("priority", &q.priority), ("kind", &q.kind), ("symbol", &q.symbol)] {
            @if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                input type="hidden" name=(name) value=(v);
            }
        }
        input type="hidden" name="back" value=(back);
    }
}

fn bulk_actions(f: &JobFilter, q: &JobsQuery, (n, more): (usize, bool), back: &str) -> Markup {
    let count = if more {
        format!("the newest {n} of more than {n}")
    } else {
        format!("all {n}")
    };
    html! {
        @if n > 0 {
            div.bulk {
                @if matches!(f.state, Some(JobState::Dead | JobState::Cancelled)) {
                    span.muted { "(jobs already retried are left out)" }
                }
                @match f.state {
                    Some(JobState::Dead | JobState::Cancelled) => {
                        form.inline method="post" action="/ui/jobs/retry" {
                            (filter_fields(q, back))
                            button #retry-all type="submit" { "Retry " (count) " matching jobs" }
                        }
                    }
                    Some(JobState::Queued | JobState::Failed) => {
                        form.inline method="post" action="/ui/jobs/cancel" {
                            (filter_fields(q, back))
                            button.danger #cancel-all type="submit" { "Cancel " (count) " matching jobs" }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

fn job_row(j: &Job, back: &str) -> Markup {
    html! {
        tr data-job=(j.id) {
            td.num { a href={ "/ui/jobs/" (j.id) } { (j.id) } }
            td { span class={ "state " (j.state.as_str()) } { (j.state.as_str()) } }
            td { (j.kind) }
            td { (j.priority.as_str()) }
            td.num { (j.attempts) "/" (j.attempts_max) }
            td { (symbols_short(j)) }
            td.error { @if let Some(e) = &j.last_error { (first_line(e)) } }
            td.muted { (span_ms(now_ms().saturating_sub(j.enqueued_ms))) }
            td { (row_actions(j, back)) }
        }
    }
}

fn symbols_short(j: &Job) -> String {
    let shown: Vec<&str> = j.symbols.iter().take(3).map(|s| s.as_str()).collect();
    let mut s = shown.join(", ");
    if j.symbols.len() > 3 {
        s.push_str(&format!(" +{}", j.symbols.len() - 3));
    }
    s
}

/// Retry for a dead or cancelled job, cancel for a waiting one.
fn row_actions(j: &Job, back: &str) -> Markup {
    html! {
        @match j.state {
            JobState::Dead | JobState::Cancelled => {
                form.inline method="post" action={ "/ui/jobs/" (j.id) "/retry" } {
                    input type="hidden" name="back" value=(back);
                    button.retry type="submit" { "Retry" }
                }
            }
            JobState::Queued | JobState::Failed => {
                form.inline method="post" action={ "/ui/jobs/" (j.id) "/cancel" } {
                    input type="hidden" name="back" value=(back);
                    button.danger.cancel type="submit" { "Cancel" }
                }
            }
            _ => {}
        }
    }
}

/// `GET /ui/jobs/{id}`.
pub async fn page<B: Backend>(
    State(app): State<Arc<App<B>>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<NoteQuery>, QueryRejection>,
) -> Page {
    let id = job_id(path)?;
    let note = query
        .ok()
        .and_then(|Query(q)| app.notes.open(q.note, q.seal.as_deref()));
    durable(app.engine.store()).await?;
    let engine = app.engine.clone();
    let (job, events) = blocking(move || {
        let job = engine
            .store()
            .job(id)?
            .ok_or(StoreError::UnknownJob(id))
            .map_err(ApiError::from)?;
        Ok((job, engine.job_events(id)?))
    })
    .await?;
    let back = format!("/ui/jobs/{id}");
    let ran = match (job.started_ms, job.finished_ms) {
        (Some(s), Some(f)) => Some(span_ms(f.saturating_sub(s))),
        _ => None,
    };
    let body = html! {
        h1 { "Job " (job.id) " " span class={ "state " (job.state.as_str()) } #job-state { (job.state.as_str()) } }
        div.card {
            dl.fields {
                dt { "Kind" } dd { (job.kind) }
                dt { "Priority" } dd { (job.priority.as_str()) }
                dt { "Attempts" } dd { (job.attempts) " of " (job.attempts_max) }
                dt { "Features" } dd { @if job.payload.is_empty() { span.muted { "every stored plan (refresh)" } } @else { code { (String::from_utf8_lossy(&job.payload)) } } }
                dt { "Enqueued" } dd { (time_ms(job.enqueued_ms)) }
                @if job.state == JobState::Failed || job.state == JobState::Queued {
                    dt { "Runs at" } dd { (time_ms(job.run_at_ms)) }
                }
                @if let Some(s) = job.started_ms { dt { "Last attempt started" } dd { (time_ms(s)) } }
                @if let Some(f) = job.finished_ms { dt { "Finished" } dd { (time_ms(f)) } }
                @if let Some(r) = ran { dt { "Last attempt took" } dd { (r) } }
                @if let Some(l) = job.lease_expires_ms { dt { "Lease until" } dd { (time_ms(l)) } }
                @if let Some(k) = &job.idempotency_key { dt { "Idempotency key" } dd { code { (k) } } }
            }
            p { (row_actions(&job, &back)) }
        }
        @if let Some(e) = &job.last_error {
            h2 { "Last error" }
            pre.error #last-error { (e) }
        }
        h2 { "Attempts and outcomes" }
        @if events.is_empty() {
            p.muted { "No events yet (a job's events appear when an attempt ends; old events are trimmed by events_max)." }
        } @else {
            table #timeline {
                thead { tr { th.num { "Event" } th { "When" } th { "State" } th.num { "Attempt" } th { "Error" } } }
                tbody {
                    @for e in &events {
                        tr {
                            td.num { (e.seq) }
                            td { (time_ms(e.at_ms)) }
                            td { span class={ "state " (e.state.as_str()) } { (e.state.as_str()) } }
                            td.num { (e.attempts) }
                            td.error { @if let Some(err) = &e.error { (err) } }
                        }
                    }
                }
            }
        }
        h2 { "Symbols (" (job.symbols.len()) ")" }
        p {
            @for (i, s) in job.symbols.iter().enumerate() {
                @if i > 0 { ", " }
                a href={ "/ui/symbols/" (query_escape(s.as_str())) } { (s.as_str()) }
            }
        }
    };
    Ok(shell(
        &format!("Job {id}"),
        Nav::Jobs,
        note.as_deref(),
        Live::follow("jobs"),
        body,
    ))
}
