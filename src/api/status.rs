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
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::reply::json;
use super::schema::Whole;
use super::{ApiError, App};
use crate::engine::guard::BreakerState;
use crate::json::{EventView, StatsView};

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Events after this sequence number (`Last-Event-ID` wins).
    #[param(value_type = Option<Whole>)]
    after: Option<u64>,
    /// A JSON page's length (256 by default, 10,000 at most).
    #[param(value_type = Option<Whole>)]
    limit: Option<usize>,
}

/// Most events one `Accept: application/json` page answers.
const EVENTS_PAGE_MAX: usize = 10_000;

/// Events read from the log at a time.
const EVENTS_PER_READ: usize = 256;

/// One server-sent event of `GET /v1/events`, as a client parses it (this
/// type only documents it).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct SseMessage {
    /// An [`EventView`] as JSON text.
    #[schema(content_media_type = "application/json")]
    data: String,
    /// The event's sequence number (send it back as `Last-Event-ID`).
    id: String,
    /// Always `message`.
    event: String,
}

/// `GET /v1/events`: server-sent events from the durable log, each with its
/// sequence number as `id`, resumable with `Last-Event-ID` (or `?after=`);
/// with `Accept: application/json`, one page of up to `limit` events
/// after `after` as a JSON array instead.
#[utoipa::path(get, path = "/v1/events", tag = "status",
    params(
        EventsQuery,
        ("Last-Event-ID" = Option<Whole>, Header, nullable = false, description = "Resume after this event"),
    ),
    responses(
        (status = 200, description = "Server-sent events (each data an Event, its id the sequence number) \
            until the service closes; with Accept: application/json, one page of events instead",
            content((SseMessage = "text/event-stream"), (Vec<EventView> = "application/json"))),
        (status = 400, description = "A bad after, limit or Last-Event-ID", body = ErrorBody),
    ))]
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
        let v: Vec<_> = events.iter().map(EventView::of).collect();
        return Ok(json(StatusCode::OK, &v));
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
#[utoipa::path(get, path = "/v1/stats", tag = "status",
    responses((status = 200, description = "The engine's state", body = StatsView)))]
pub async fn stats<B: Backend>(State(app): State<Arc<App<B>>>) -> Result<Response, ApiError> {
    super::reply::durable(app.engine.store()).await?;
    Ok(json(StatusCode::OK, &StatsView::of(&app.engine)?))
}

/// The service's health.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// `healthy`, `degraded` or `unhealthy`.
    #[schema(example = "healthy")]
    status: &'static str,
    checks: HealthChecks,
}

/// Each check behind [`Health`].
#[derive(Serialize, ToSchema)]
pub(crate) struct HealthChecks {
    store: StoreCheck,
    breaker: BreakerCheck,
    queue: QueueCheck,
    dispatcher: DispatcherCheck,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct StoreCheck {
    ok: bool,
    /// Why the store stopped taking writes, if it did.
    poisoned: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct BreakerCheck {
    ok: bool,
    /// `closed`, `open` or `half_open`.
    state: &'static str,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct QueueCheck {
    ok: bool,
    /// Jobs waiting.
    depth: u64,
    /// admit_depth_max.
    limit: u64,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct DispatcherCheck {
    ok: bool,
    running: bool,
}

/// `GET /health`: `healthy`, `degraded` (breaker not closed, queue past its
/// bound) or `unhealthy` (store poisoned, dispatcher stopped; status 503).
#[utoipa::path(get, path = "/health", tag = "status", security(()),
    responses(
        (status = 200, description = "Healthy or degraded", body = Health),
        (status = 503, description = "Unhealthy", body = Health),
    ))]
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
    let body = Health {
        status,
        checks: HealthChecks {
            store: StoreCheck {
                ok: poisoned.is_none(),
                poisoned,
            },
            breaker: BreakerCheck {
                ok: breaker == BreakerState::Closed,
                state: breaker.as_str(),
            },
            queue: QueueCheck {
                ok: depth <= limit,
                depth,
                limit,
            },
            dispatcher: DispatcherCheck {
                ok: dispatcher,
                running: dispatcher,
            },
        },
    };
    let code = if unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(code, &body)
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "status",
    responses((status = 200, description = "Prometheus text metrics", content_type = "text/plain", body = String)))]
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
#[utoipa::path(get, path = "/openapi.json", tag = "status",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object)))]
pub async fn openapi<B: Backend>(State(app): State<Arc<App<B>>>) -> Response {
    json(StatusCode::OK, &super::openapi::document(&app.config))
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
