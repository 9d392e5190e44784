//! Following and watching the service: `GET /v1/events` (server-sent
//! events from the durable event log, woken by the one broadcast of the
//! store's watermark), `GET /health`, `GET /metrics`, `GET /openapi.json`,
//! and the answers to unknown routes and methods.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use kiln_core::Backend;
use serde::Deserialize;

use super::reply::json;
use super::{ApiError, App};
use crate::engine::guard::BreakerState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

/// Most events one `Accept: application/json` page answers.
const EVENTS_PAGE_MAX: usize = 10_000;

/// Events read from the log at a time.
const EVENTS_PER_READ: usize = 256;

/// `GET /v1/events`: server-sent events from the durable log, each with its
/// sequence number as `id`, resumable with `Last-Event-ID` (or `?after=`);
/// with `Accept: application/json`, one page of up to `limit` events
/// after `after` as a JSON array instead.
pub async fn events<B: Backend>(
    State(app): State<Arc<App<B>>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let resume = last_event_id(&headers)?;
    let after = resume.or(q.after).unwrap_or(0);
    if headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
    {
        let limit = q.limit.unwrap_or(EVENTS_PER_READ).min(EVENTS_PAGE_MAX);
        super::reply::durable(app.engine.store()).await?;
        let engine = app.engine.clone();
        let events =
            super::reply::blocking(move || Ok(engine.store().events(after, limit)?)).await?;
        let v: Vec<_> = events.iter().map(crate::json::event).collect();
        return Ok(json(StatusCode::OK, &serde_json::Value::Array(v)).into_response());
    }
    let news = app.news.subscribe();
    let stream = futures_util::stream::unfold(
        (app, news, after, std::collections::VecDeque::new()),
        |(app, mut news, mut after, mut pending)| async move {
            loop {
                if let Some(e) = pending.pop_front() {
                    return Some((Ok::<_, Infallible>(e), (app, news, after, pending)));
                }
                if news.borrow_and_update().closing {
                    return None;
                }
                let read = {
                    let engine = app.engine.clone();
                    tokio::task::spawn_blocking(move || {
                        engine.store().events(after, EVENTS_PER_READ)
                    })
                    .await
                };
                match read {
                    Ok(Ok(events)) if !events.is_empty() => {
                        for e in &events {
                            after = e.seq;
                            pending.push_back(
                                SseEvent::default()
                                    .id(e.seq.to_string())
                                    .data(crate::json::event(e).to_string()),
                            );
                        }
                    }
                    // Nothing new: wait for the next commit (or the end).
                    Ok(Ok(_)) => {
                        if news.changed().await.is_err() {
                            return None;
                        }
                    }
                    // The store is closing or failing: end the stream; the
                    // client resumes from its last id.
                    _ => return None,
                }
            }
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The `Last-Event-ID` a reconnecting event stream sends, if any.
pub(crate) fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Last-Event-ID is not a sequence number"))
        })
        .transpose()
}

/// `GET /v1/stats`: the engine's state (see [`crate::json::stats`]).
pub async fn stats<B: Backend>(State(app): State<Arc<App<B>>>) -> Result<Response, ApiError> {
    super::reply::durable(app.engine.store()).await?;
    Ok(json(StatusCode::OK, &crate::json::stats(&app.engine)?))
}

/// `GET /health`: `healthy`, `degraded` (breaker not closed, queue past its
/// bound) or `unhealthy` (store poisoned, dispatcher stopped; status 503).
pub async fn health<B: Backend>(State(app): State<Arc<App<B>>>) -> Response {
    let engine = &app.engine;
    let poisoned = engine.store().poisoned();
    let breaker = engine.runtime_stats().breaker;
    let depth = engine.store().stats().unwrap_or_default().waiting();
    let limit = engine.config().admit_depth_max;
    let dispatcher = app.runner_alive();
    let unhealthy = poisoned.is_some() || !dispatcher;
    let degraded = breaker != BreakerState::Closed || depth > limit;
    let status = if unhealthy {
        "unhealthy"
    } else if degraded {
        "degraded"
    } else {
        "healthy"
    };
    let body = serde_json::json!({
        "status": status,
        "checks": {
            "store": {"ok": poisoned.is_none(), "poisoned": poisoned},
            "breaker": {"ok": breaker == BreakerState::Closed, "state": breaker.as_str()},
            "queue": {"ok": depth <= limit, "depth": depth, "limit": limit},
            "dispatcher": {"ok": dispatcher, "running": dispatcher},
        },
    });
    let code = if unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(code, &body)
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics<B: Backend>(State(app): State<Arc<App<B>>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_text(&app),
    )
        .into_response()
}

/// The service's metrics as Prometheus text: the engine's and the service's.
pub(crate) fn metrics_text<B: Backend>(app: &App<B>) -> String {
    let mut text = app.engine.metrics();
    let _ = write!(
        text,
        "# HELP kiln_bar_uploads_in_progress POST /v1/bars bodies being read or ingested\n\
         # TYPE kiln_bar_uploads_in_progress gauge\n\
         kiln_bar_uploads_in_progress {}\n",
        app.uploads_in_progress()
    );
    text
}

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    json(StatusCode::OK, &super::openapi::document())
}

/// Any other path.
pub async fn no_route() -> ApiError {
    ApiError::not_found("no such route; GET /openapi.json lists them")
}

/// A known path with another method.
pub async fn no_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; GET /openapi.json lists them",
    )
}
