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
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::reply::{Reply, blocking, durable, job_id, json, priority, symbol, whole_or_none};
use super::schema::{
    FeatureList, PriorityFilter, PriorityName, StateFilter, SymbolFilter, SymbolName, Whole,
};
use super::{ApiError, App, ClientKey, OUTPUTS_MAX};
use crate::engine::{RetryOutcome, resolve_features};
use crate::features::FeatureSpec;
use crate::json::JobView;

/// What to compute: features of symbols, at a priority.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchRequest {
    /// At most `batch_symbols_max` (1,000 by default).
    #[schema(value_type = Vec<SymbolName>, min_items = 1)]
    symbols: Vec<String>,
    #[schema(value_type = FeatureList)]
    features: Features,
    /// `normal` when not given.
    #[serde(default)]
    #[schema(value_type = Option<PriorityName>)]
    priority: Option<String>,
}

/// The jobs a batch queued.
#[derive(Serialize, ToSchema)]
pub(crate) struct BatchQueued {
    /// One job per group of symbols, in the order given.
    job_ids: Vec<u64>,
    /// Seconds until the queue as it is now is worked off, at the recent
    /// rate (none before any job finished).
    estimated_completion_s: Option<f64>,
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
#[utoipa::path(post, path = "/v1/compute/batch", tag = "jobs", request_body = BatchRequest,
    responses(
        (status = 202, description = "Queued", body = BatchQueued),
        (status = 400, description = "Bad JSON, symbol, spec or priority, or too many symbols or outputs", body = ErrorBody),
        (status = 404, description = "A symbol has no bars", body = ErrorBody),
        (status = 413, description = "A body over body_bytes_max", body = ErrorBody),
        (status = 429, description = "The queue is full or admission refused (Retry-After)", body = ErrorBody),
    ))]
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
    let stats = app.engine.store().stats()?;
    let ahead = stats.count(JobState::Queued) + stats.count(JobState::Running);
    Ok(json(
        StatusCode::ACCEPTED,
        &BatchQueued {
            job_ids: jobs.iter().map(|j| j.id()).collect(),
            estimated_completion_s: app.jobs_per_s().map(|r| ahead as f64 / r),
        },
    ))
}

/// The filters of a job listing, as `GET /v1/jobs` and the dashboard's
/// jobs page take them in the query (and a bulk retry or cancel in its
/// body). An empty value is no filter.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    #[param(value_type = Option<StateFilter>)]
    pub state: Option<String>,
    #[param(value_type = Option<PriorityFilter>)]
    pub priority: Option<String>,
    /// The job's kind (`compute`, `refresh`, …); empty: any.
    pub kind: Option<String>,
    #[param(value_type = Option<SymbolFilter>)]
    pub symbol: Option<String>,
    /// Jobs with ids below this one (the last id of the previous page).
    #[param(value_type = Option<Whole>)]
    pub before: Option<u64>,
    /// At most this many (100 by default, 10,000 at most).
    #[param(value_type = Option<Whole>)]
    pub limit: Option<usize>,
}

/// The states a bulk retry takes.
#[derive(Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RetryState {
    Dead,
    Cancelled,
}

/// The states a bulk cancel takes.
#[derive(Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CancelState {
    Queued,
    Failed,
}

impl From<RetryState> for JobState {
    fn from(s: RetryState) -> JobState {
        match s {
            RetryState::Dead => JobState::Dead,
            RetryState::Cancelled => JobState::Cancelled,
        }
    }
}

impl From<CancelState> for JobState {
    fn from(s: CancelState) -> JobState {
        match s {
            CancelState::Queued => JobState::Queued,
            CancelState::Failed => JobState::Failed,
        }
    }
}

/// The body of a bulk retry or cancel: the jobs of state `state` that
/// match the other filters (empty or absent: any), newest first, at most
/// `limit` (and 1,000).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkRequest<S> {
    state: S,
    #[serde(default)]
    #[schema(value_type = Option<PriorityFilter>)]
    priority: Option<String>,
    /// The job's kind; empty: any.
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<SymbolFilter>)]
    symbol: Option<String>,
    /// Jobs with ids below this one.
    #[serde(default, deserialize_with = "whole_or_none")]
    #[schema(value_type = Option<Whole>)]
    before: Option<u64>,
    /// At most this many (1,000 at most).
    #[serde(default, deserialize_with = "whole_or_none")]
    #[schema(value_type = Option<Whole>)]
    limit: Option<usize>,
}

/// Most jobs one `GET /v1/jobs` answers.
pub(crate) const JOBS_PAGE_MAX: usize = 10_000;

/// Jobs one bulk retry or cancel acts on at most.
pub(crate) const BULK_MAX: usize = 1_000;

impl JobsQuery {
    /// The filter it names (empty values are no filter), or 400.
    pub(crate) fn filter(&self) -> Result<JobFilter, ApiError> {
        fn given(v: &Option<String>) -> Option<&str> {
            v.as_deref().filter(|v| !v.is_empty())
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
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(JobsQuery),
    responses(
        (status = 200, description = "The jobs that match, newest first", body = Vec<JobView>),
        (status = 400, description = "A bad state, priority, symbol, before or limit", body = ErrorBody),
    ))]
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
    let v: Vec<_> = jobs.iter().map(JobView::of).collect();
    Ok(json(StatusCode::OK, &v))
}

/// The body of a bulk retry or cancel: the jobs it acts on, and at most
/// how many.
fn bulk_filter<S: serde::de::DeserializeOwned + Into<JobState>>(
    body: Result<Bytes, BytesRejection>,
) -> Result<(JobFilter, usize), ApiError> {
    let body = body.map_err(ApiError::rejection)?;
    let r: BulkRequest<S> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not a job filter {{state, priority, kind, symbol, before, limit}}: {e}"
        ))
    })?;
    let q = JobsQuery {
        state: Some(r.state.into().as_str().to_owned()),
        priority: r.priority,
        kind: r.kind,
        symbol: r.symbol,
        before: r.before,
        limit: None,
    };
    Ok((q.filter()?, r.limit.unwrap_or(BULK_MAX).min(BULK_MAX)))
}

/// A job queued again, as a new job.
#[derive(Serialize, ToSchema)]
pub(crate) struct Retried {
    /// The job retried.
    id: u64,
    /// The new job.
    retried_as: u64,
}

/// What a bulk retry did.
#[derive(Serialize, ToSchema)]
pub(crate) struct BulkRetried {
    retried: Vec<Retried>,
    /// More jobs match than one request acts on: send it again.
    more: bool,
}

/// What a bulk cancel did.
#[derive(Serialize, ToSchema)]
pub(crate) struct BulkCancelled {
    cancelled: Vec<u64>,
    /// Jobs that matched but had started meanwhile.
    not_cancellable: Vec<u64>,
    /// More jobs match than one request acts on: send it again.
    more: bool,
}

/// `POST /v1/jobs/retry {state, priority, kind, symbol, before, limit}`:
/// queues again every dead or cancelled job that matches (at most 1,000,
/// newest first), in one commit.
#[utoipa::path(post, path = "/v1/jobs/retry", tag = "jobs", request_body = BulkRequest<RetryState>,
    responses(
        (status = 202, description = "Queued again (each as a new job)", body = BulkRetried),
        (status = 400, description = "Bad JSON or filter; the state must be dead or cancelled", body = ErrorBody),
        (status = 413, description = "A body over body_bytes_max", body = ErrorBody),
        (status = 429, description = "The queue is full (Retry-After)", body = ErrorBody),
    ))]
pub async fn retry_matching<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Extension(ClientKey(client)): Extension<ClientKey>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let (filter, limit) = bulk_filter::<RetryState>(body)?;
    let engine = app.engine.clone();
    let bulk = blocking(move || Ok(engine.retry_matching(&client, &filter, limit)?)).await?;
    let retried = bulk
        .done
        .iter()
        .map(|(id, new)| Retried {
            id: *id,
            retried_as: new.id(),
        })
        .collect();
    Ok(json(
        StatusCode::ACCEPTED,
        &BulkRetried {
            retried,
            more: bulk.more,
        },
    ))
}

/// `POST /v1/jobs/cancel {state, priority, kind, symbol, before, limit}`:
/// cancels every queued (or failed, awaiting a retry) job that matches (at
/// most 1,000, newest first).
#[utoipa::path(post, path = "/v1/jobs/cancel", tag = "jobs", request_body = BulkRequest<CancelState>,
    responses(
        (status = 200, description = "Cancelled", body = BulkCancelled),
        (status = 400, description = "Bad JSON or filter; the state must be queued or failed", body = ErrorBody),
        (status = 413, description = "A body over body_bytes_max", body = ErrorBody),
    ))]
pub async fn cancel_matching<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Extension(ClientKey(client)): Extension<ClientKey>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let (filter, limit) = bulk_filter::<CancelState>(body)?;
    let engine = app.engine.clone();
    let bulk = blocking(move || Ok(engine.cancel_matching(&client, &filter, limit)?)).await?;
    let (cancelled, missed): (Vec<_>, Vec<_>) = bulk
        .done
        .iter()
        .partition(|(_, o)| *o == CancelOutcome::Cancelled);
    let ids = |v: Vec<&(u64, CancelOutcome)>| v.iter().map(|(id, _)| *id).collect::<Vec<_>>();
    Ok(json(
        StatusCode::OK,
        &BulkCancelled {
            cancelled: ids(cancelled),
            not_cancellable: ids(missed),
            more: bulk.more,
        },
    ))
}

/// Whether claims of a priority are paused.
#[derive(Serialize, ToSchema)]
pub(crate) struct Paused {
    #[schema(value_type = PriorityName)]
    priority: &'static str,
    paused: bool,
}

/// `POST /v1/priorities/{priority}/pause`: stops claims of one priority.
#[utoipa::path(post, path = "/v1/priorities/{priority}/pause", tag = "jobs",
    params(("priority" = PriorityName, Path, description = "The priority")),
    responses(
        (status = 200, description = "Paused (jobs of it stay queued)", body = Paused),
        (status = 400, description = "An unknown priority", body = ErrorBody),
    ))]
pub async fn pause_priority<B: Backend>(
    State(app): State<Arc<App<B>>>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    set_paused(app, path, true).await
}

/// `POST /v1/priorities/{priority}/resume`: restarts claims of one priority.
#[utoipa::path(post, path = "/v1/priorities/{priority}/resume", tag = "jobs",
    params(("priority" = PriorityName, Path, description = "The priority")),
    responses(
        (status = 200, description = "Claimed again", body = Paused),
        (status = 400, description = "An unknown priority", body = ErrorBody),
    ))]
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
        &Paused {
            priority: priority.as_str(),
            paused,
        },
    ))
}

/// `GET /v1/jobs/{id}`.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = Whole, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    ))]
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
    Ok(json(StatusCode::OK, &JobView::of(&job)))
}

/// A job cancelled.
#[derive(Serialize, ToSchema)]
pub(crate) struct Cancelled {
    id: u64,
    /// Always `cancelled`.
    state: &'static str,
}

/// `DELETE /v1/jobs/{id}`: cancels a queued job (or one awaiting a retry).
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = Whole, Path, description = "The job's id")),
    responses(
        (status = 200, description = "Cancelled", body = Cancelled),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "Running or finished: not cancellable", body = ErrorBody),
    ))]
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
            &Cancelled {
                id,
                state: JobState::Cancelled.as_str(),
            },
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
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs",
    params(("id" = Whole, Path, description = "The job's id")),
    responses(
        (status = 202, description = "Queued again, as a new job", body = Retried),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "Not dead or cancelled: not retryable", body = ErrorBody),
        (status = 429, description = "The queue is full (Retry-After)", body = ErrorBody),
    ))]
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
            &Retried {
                id,
                retried_as: job.id(),
            },
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
