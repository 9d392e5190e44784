//! Submissions and jobs: `POST /v1/compute/batch`, `GET /v1/jobs` (filtered,
//! paged), `GET` and `DELETE /v1/jobs/{id}`, `POST /v1/jobs/{id}/retry`,
//! the bulk `POST /v1/jobs/retry` and `POST /v1/jobs/cancel`, and pausing a
//! priority. Cancel, retry and pause go through the engine, so admission
//! and the store's breaker apply to them.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use kiln_core::prelude::*;
use kiln_core::{CancelOutcome, JobFilter, JobState, Priority, StoreError, Symbol};
use serde::Deserialize;

use super::reply::{Reply, blocking, durable, job_id, json, priority, symbol};
use super::{ApiError, App, ClientKey, OUTPUTS_MAX};
use crate::engine::{RetryOutcome, resolve_features};
use crate::features::FeatureSpec;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    symbols: Vec<String>,
    features: Features,
    #[serde(default)]
    priority: Option<String>,
}

/// `"rsi(14),macd(12,26,9)"` or `["rsi(14)", "macd(12,26,9)"]`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Features {
    List(String),
    Array(Vec<String>),
}

impl Features {
    /// The spec list as one text.
    pub(crate) fn joined(&self) -> String {
        match self {
            Features::List(s) => s.clone(),
            Features::Array(a) => a.join(","),
        }
    }
}

/// Refuses more than [`OUTPUTS_MAX`] outputs in one request.
pub(crate) fn outputs_within_bound(n: usize) -> Result<(), ApiError> {
    if n > OUTPUTS_MAX {
        return Err(ApiError::bad_request(format!(
            "{n} feature outputs; at most {OUTPUTS_MAX} per request"
        )));
    }
    Ok(())
}

/// What a request asks for, checked.
pub(crate) struct Asked {
    pub symbols: Vec<Symbol>,
    /// The output labels.
    pub labels: Vec<String>,
    /// The specs that compute them.
    pub specs: Vec<FeatureSpec>,
}

/// A request's symbols (at most `max`) and features, checked.
pub(crate) fn symbols_and_features(
    symbols: &[String],
    features: &Features,
    max: usize,
) -> Result<Asked, ApiError> {
    if symbols.len() > max {
        return Err(ApiError::bad_request(format!(
            "{} symbols; at most batch_symbols_max = {max} per request",
            symbols.len()
        )));
    }
    let symbols = symbols
        .iter()
        .map(|s| symbol(s))
        .collect::<Result<Vec<_>, _>>()?;
    let (labels, specs) =
        resolve_features(&features.joined()).map_err(|e| ApiError::bad_request(e.to_string()))?;
    outputs_within_bound(labels.len())?;
    Ok(Asked {
        symbols,
        labels,
        specs,
    })
}

/// `POST /v1/compute/batch`.
pub async fn compute_batch<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Extension(ClientKey(client)): Extension<ClientKey>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let body = body.map_err(ApiError::rejection)?;
    let req: BatchRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a batch request: {e}")))?;
    let Asked { symbols, specs, .. } =
        symbols_and_features(&req.symbols, &req.features, app.config.batch_symbols_max)?;
    let priority = match req.priority.as_deref() {
        None => Priority::Normal,
        Some(p) => priority(p)?,
    };
    let jobs = app
        .engine
        .submit_async(client, symbols, specs, priority)
        .await?;
    let ids: Vec<u64> = jobs.iter().map(|j| j.id()).collect();
    let stats = app.engine.store().stats()?;
    let ahead = stats.count(JobState::Queued) + stats.count(JobState::Running);
    let estimate = app.jobs_per_s().map(|r| ahead as f64 / r);
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({"job_ids": ids, "estimated_completion_s": estimate}),
    ))
}

/// The filters of a job listing, as `GET /v1/jobs` and the dashboard's
/// jobs page take them in the query.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    pub state: Option<String>,
    pub priority: Option<String>,
    pub kind: Option<String>,
    pub symbol: Option<String>,
    /// Jobs with ids below this one (the last id of the previous page).
    pub before: Option<u64>,
    pub limit: Option<usize>,
}

/// Most jobs one `GET /v1/jobs` answers.
pub(crate) const JOBS_PAGE_MAX: usize = 10_000;

/// Jobs one bulk retry or cancel acts on at most.
pub(crate) const BULK_MAX: usize = 1_000;

impl JobsQuery {
    /// The filter it names (empty values are no filter), or 400.
    pub(crate) fn filter(&self) -> Result<JobFilter, ApiError> {
        fn given(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        let bad = |e: StoreError| ApiError::bad_request(e.to_string());
        Ok(JobFilter {
            state: given(&self.state)
                .map(str::parse::<JobState>)
                .transpose()
                .map_err(bad)?,
            priority: given(&self.priority)
                .map(str::parse::<Priority>)
                .transpose()
                .map_err(bad)?,
            kind: given(&self.kind).map(str::to_owned),
            symbol: given(&self.symbol).map(symbol).transpose()?,
            before: self.before,
        })
    }
}

/// `GET /v1/jobs?state=&priority=&kind=&symbol=&before=&limit=`: the
/// jobs that match, newest first (at most `limit`, 100 by default); the
/// next page is `before=` the last id.
pub async fn list_jobs<B: Backend>(
    State(app): State<Arc<App<B>>>,
    query: Result<Query<JobsQuery>, QueryRejection>,
) -> Reply {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = q.filter()?;
    let limit = q.limit.unwrap_or(100).min(JOBS_PAGE_MAX);
    durable(app.engine.store()).await?;
    let engine = app.engine.clone();
    let jobs = blocking(move || Ok(engine.store().jobs(&filter, limit)?)).await?;
    let v: Vec<_> = jobs.iter().map(crate::json::job).collect();
    Ok(json(StatusCode::OK, &serde_json::Value::Array(v)))
}

/// The body of a bulk retry or cancel (a [`JobsQuery`] as JSON): the
/// jobs it acts on, and at most how many.
fn bulk_filter(body: Result<Bytes, BytesRejection>) -> Result<(JobFilter, usize), ApiError> {
    let body = body.map_err(ApiError::rejection)?;
    let q: JobsQuery = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not a job filter {{state, priority, kind, symbol, before, limit}}: {e}"
        ))
    })?;
    let limit = q.limit.unwrap_or(BULK_MAX).min(BULK_MAX);
    Ok((q.filter()?, limit))
}

/// `POST /v1/jobs/retry {state, priority, kind, symbol, before, limit}`:
/// queues again every dead or cancelled job that matches (at most 1,000,
/// newest first), in one commit.
pub async fn retry_matching<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Extension(ClientKey(client)): Extension<ClientKey>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let (filter, limit) = bulk_filter(body)?;
    let engine = app.engine.clone();
    let bulk = blocking(move || Ok(engine.retry_matching(&client, &filter, limit)?)).await?;
    let retried: Vec<_> = bulk
        .done
        .iter()
        .map(|(id, new)| serde_json::json!({"id": id, "retried_as": new.id()}))
        .collect();
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({"retried": retried, "more": bulk.more}),
    ))
}

/// `POST /v1/jobs/cancel {state, priority, kind, symbol, before, limit}`:
/// cancels every queued (or failed, awaiting a retry) job that matches (at
/// most 1,000, newest first).
pub async fn cancel_matching<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Extension(ClientKey(client)): Extension<ClientKey>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let (filter, limit) = bulk_filter(body)?;
    let engine = app.engine.clone();
    let bulk = blocking(move || Ok(engine.cancel_matching(&client, &filter, limit)?)).await?;
    let (cancelled, missed): (Vec<_>, Vec<_>) = bulk
        .done
        .iter()
        .partition(|(_, o)| *o == CancelOutcome::Cancelled);
    let ids = |v: Vec<&(u64, CancelOutcome)>| v.iter().map(|(id, _)| *id).collect::<Vec<_>>();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "cancelled": ids(cancelled), "not_cancellable": ids(missed), "more": bulk.more,
        }),
    ))
}

/// `POST /v1/priorities/{priority}/pause`: stops claims of one priority.
pub async fn pause_priority<B: Backend>(
    State(app): State<Arc<App<B>>>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    set_paused(app, path, true).await
}

/// `POST /v1/priorities/{priority}/resume`: restarts claims of one priority.
pub async fn resume_priority<B: Backend>(
    State(app): State<Arc<App<B>>>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    set_paused(app, path, false).await
}

async fn set_paused<B: Backend>(
    app: Arc<App<B>>,
    path: Result<Path<String>, PathRejection>,
    paused: bool,
) -> Reply {
    let Path(name) = path.map_err(ApiError::rejection)?;
    let priority = priority(&name)?;
    let engine = app.engine.clone();
    blocking(move || Ok(engine.set_paused(priority, paused)?)).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"priority": priority.as_str(), "paused": paused}),
    ))
}

/// `GET /v1/jobs/{id}`.
pub async fn get_job<B: Backend>(
    State(app): State<Arc<App<B>>>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let id = job_id(path)?;
    durable(app.engine.store()).await?;
    let job = app
        .engine
        .store()
        .job(id)?
        .ok_or(StoreError::UnknownJob(id))?;
    Ok(json(StatusCode::OK, &crate::json::job(&job)))
}

/// `DELETE /v1/jobs/{id}`: cancels a queued job (or one awaiting a retry).
pub async fn cancel_job<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Extension(ClientKey(client)): Extension<ClientKey>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let id = job_id(path)?;
    let engine = app.engine.clone();
    let outcome = blocking(move || Ok(engine.cancel_as(&client, id)?)).await?;
    match outcome {
        CancelOutcome::Cancelled => Ok(json(
            StatusCode::OK,
            &serde_json::json!({"id": id, "state": "cancelled"}),
        )),
        CancelOutcome::NotCancellable(state) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_cancellable",
            format!(
                "job {id} is {}; only queued jobs can be cancelled",
                state.as_str()
            ),
        )),
    }
}

/// `POST /v1/jobs/{id}/retry`: queues a dead or cancelled job again, as a
/// new job.
pub async fn retry_job<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Extension(ClientKey(client)): Extension<ClientKey>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let id = job_id(path)?;
    let engine = app.engine.clone();
    let outcome = blocking(move || Ok(engine.retry_as(&client, id)?)).await?;
    match outcome {
        RetryOutcome::Retried(job) => Ok(json(
            StatusCode::ACCEPTED,
            &serde_json::json!({"id": id, "retried_as": job.id()}),
        )),
        RetryOutcome::NotRetryable(state) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_retryable",
            format!(
                "job {id} is {}; only dead or cancelled jobs are retried",
                state.as_str()
            ),
        )),
    }
}
