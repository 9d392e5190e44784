//! Submissions and jobs: `POST /v1/compute/batch`, `GET` and `DELETE
//! /v1/jobs/{id}`, `POST /v1/jobs/{id}/retry`. Cancel and retry go through
//! the engine, so admission and the store's breaker apply to them.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use kiln_core::prelude::*;
use kiln_core::{CancelOutcome, JobState, Priority, StoreError, Symbol};
use serde::Deserialize;

use super::reply::{Reply, blocking, durable, job_id, json, symbol};
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
        Some(p) => p
            .parse::<Priority>()
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    state: Option<String>,
    limit: Option<usize>,
}

/// Most jobs one `GET /v1/jobs` answers.
const JOBS_PAGE_MAX: usize = 10_000;

/// `GET /v1/jobs?state=&limit=`: jobs, newest first (at most `limit`,
/// 100 by default).
pub async fn list_jobs<B: Backend>(
    State(app): State<Arc<App<B>>>,
    query: Result<axum::extract::Query<JobsQuery>, axum::extract::rejection::QueryRejection>,
) -> Reply {
    let axum::extract::Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let state = q
        .state
        .as_deref()
        .map(|s| {
            s.parse::<JobState>()
                .map_err(|e| ApiError::bad_request(e.to_string()))
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(100).min(JOBS_PAGE_MAX);
    durable(app.engine.store()).await?;
    let engine = app.engine.clone();
    let jobs = blocking(move || Ok(engine.store().jobs(state, limit)?)).await?;
    let v: Vec<_> = jobs.iter().map(crate::json::job).collect();
    Ok(json(StatusCode::OK, &serde_json::Value::Array(v)))
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
