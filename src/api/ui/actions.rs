//! The dashboard's actions: same-origin form POSTs (the guard checks the
//! origin, and the session when there is a token) that call the engine as
//! the JSON routes do and answer with a redirect back to the page they
//! came from, carrying a note of what happened (or why nothing did).

use std::sync::Arc;

use axum::Form;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use kiln_core::{Backend, CancelOutcome, Priority};
use serde::Deserialize;

use super::layout::NoteSeal;
use super::login::local_target;
use crate::api::guard::query_escape;
use crate::api::jobs::{BULK_MAX, JobsQuery, symbols_and_features};
use crate::api::reply::{blocking, job_id, priority, symbol};
use crate::api::{ApiError, App, ClientKey};
use crate::engine::RetryOutcome;

/// Back to `back` (a dashboard page) with the outcome of an action as its
/// note (what it did, or the refusal), sealed by `seal`.
fn noted(seal: &NoteSeal, back: Option<&str>, outcome: Result<String, ApiError>) -> Response {
    let note = match outcome {
        Ok(note) => note,
        Err(e) => format!("Not done: {}", e.detail),
    };
    let back = local_target(back);
    let sep = if back.contains('?') { '&' } else { '?' };
    Redirect::to(&format!(
        "{back}{sep}note={}&seal={}",
        query_escape(&note),
        seal.seal(&note)
    ))
    .into_response()
}

fn form_error(e: FormRejection) -> ApiError {
    ApiError::bad_request(e.body_text())
}

#[derive(Deserialize)]
pub struct Back {
    back: Option<String>,
}

/// `POST /ui/jobs/{id}/retry`.
pub async fn retry<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Extension(ClientKey(client)): Extension<ClientKey>,
    path: Result<Path<String>, PathRejection>,
    form: Result<Form<Back>, FormRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(path)?;
    let Form(f) = form.map_err(form_error)?;
    let engine = app.engine.clone();
    let outcome = blocking(move || Ok(engine.retry_as(&client, id)?))
        .await
        .map(|o| match o {
            RetryOutcome::Retried(new) => format!("Job {id} is queued again as job {}.", new.id()),
            RetryOutcome::NotRetryable(s) => {
                format!(
                    "Job {id} is {}; only dead or cancelled jobs are retried.",
                    s.as_str()
                )
            }
        });
    Ok(noted(&app.notes, f.back.as_deref(), outcome))
}

/// `POST /ui/jobs/{id}/cancel`.
pub async fn cancel<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Extension(ClientKey(client)): Extension<ClientKey>,
    path: Result<Path<String>, PathRejection>,
    form: Result<Form<Back>, FormRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(path)?;
    let Form(f) = form.map_err(form_error)?;
    let engine = app.engine.clone();
    let outcome = blocking(move || Ok(engine.cancel_as(&client, id)?))
        .await
        .map(|o| match o {
            CancelOutcome::Cancelled => format!("Job {id} is cancelled."),
            CancelOutcome::NotCancellable(s) => {
                format!(
                    "Job {id} is {}; only waiting jobs are cancelled.",
                    s.as_str()
                )
            }
        });
    Ok(noted(&app.notes, f.back.as_deref(), outcome))
}

/// A bulk action's form: the filter, and the page to come back to.
#[derive(Deserialize)]
pub struct BulkForm {
    state: Option<String>,
    priority: Option<String>,
    kind: Option<String>,
    symbol: Option<String>,
    back: Option<String>,
}

impl BulkForm {
    fn query(&self) -> JobsQuery {
        JobsQuery {
            state: self.state.clone(),
            priority: self.priority.clone(),
            kind: self.kind.clone(),
            symbol: self.symbol.clone(),
            before: None,
            limit: None,
        }
    }
}

/// `POST /ui/jobs/retry`: every dead or cancelled job the filter matches.
pub async fn retry_matching<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Extension(ClientKey(client)): Extension<ClientKey>,
    form: Result<Form<BulkForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let Form(f) = form.map_err(form_error)?;
    let filter = f.query().filter()?;
    let engine = app.engine.clone();
    let outcome = blocking(move || Ok(engine.retry_matching(&client, &filter, BULK_MAX)?))
        .await
        .map(|b| {
            let more = if b.more {
                " More match: retry again."
            } else {
                ""
            };
            format!("{} jobs are queued again.{more}", b.done.len())
        });
    Ok(noted(&app.notes, f.back.as_deref(), outcome))
}

/// `POST /ui/jobs/cancel`: every waiting job the filter matches.
pub async fn cancel_matching<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Extension(ClientKey(client)): Extension<ClientKey>,
    form: Result<Form<BulkForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let Form(f) = form.map_err(form_error)?;
    let filter = f.query().filter()?;
    let engine = app.engine.clone();
    let outcome = blocking(move || Ok(engine.cancel_matching(&client, &filter, BULK_MAX)?))
        .await
        .map(|b| {
            let done = b
                .done
                .iter()
                .filter(|(_, o)| *o == CancelOutcome::Cancelled)
                .count();
            let missed = b.done.len() - done;
            let missed = if missed > 0 {
                format!(" {missed} had started meanwhile.")
            } else {
                String::new()
            };
            let more = if b.more {
                " More match: cancel again."
            } else {
                ""
            };
            format!("{done} jobs are cancelled.{missed}{more}")
        });
    Ok(noted(&app.notes, f.back.as_deref(), outcome))
}

#[derive(Deserialize)]
pub struct PauseForm {
    paused: bool,
}

/// `POST /ui/priorities/{priority}`: pauses or resumes claims.
pub async fn pause<B: Backend>(
    State(app): State<Arc<App<B>>>,
    path: Result<Path<String>, PathRejection>,
    form: Result<Form<PauseForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let Path(p) = path.map_err(ApiError::rejection)?;
    let priority = priority(&p)?;
    let Form(f) = form.map_err(form_error)?;
    let engine = app.engine.clone();
    let paused = f.paused;
    let outcome = blocking(move || Ok(engine.set_paused(priority, paused)?))
        .await
        .map(|()| {
            let what = if paused { "paused" } else { "resumed" };
            format!("Claims of {} jobs are {what}.", priority.as_str())
        });
    Ok(noted(&app.notes, Some("/ui"), outcome))
}

#[derive(Deserialize)]
pub struct ComputeForm {
    symbols: String,
    features: String,
    priority: Option<String>,
}

/// `POST /ui/compute`: queues features for symbols, as `POST
/// /v1/compute/batch` does.
pub async fn compute<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Extension(ClientKey(client)): Extension<ClientKey>,
    form: Result<Form<ComputeForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let Form(f) = form.map_err(form_error)?;
    let symbols: Vec<String> = f
        .symbols
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let outcome = async {
        let features = crate::api::jobs::Features::List(f.features.clone());
        let asked = symbols_and_features(&symbols, &features, app.config.batch_symbols_max)?;
        let priority = match f.priority.as_deref().filter(|p| !p.is_empty()) {
            None => Priority::Normal,
            Some(p) => priority(p)?,
        };
        let jobs = app
            .engine
            .submit_async(client, asked.symbols, asked.specs, priority)
            .await?;
        Ok::<_, ApiError>(format!(
            "{} jobs are queued for {} symbols.",
            jobs.len(),
            symbols.len()
        ))
    }
    .await;
    Ok(noted(&app.notes, Some("/ui/jobs"), outcome))
}

#[derive(Deserialize)]
pub struct RefreshForm {
    feature: String,
}

/// `POST /ui/symbols/{symbol}/refresh`: computes a feature of the symbol
/// again, at high priority.
pub async fn refresh<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Extension(ClientKey(client)): Extension<ClientKey>,
    path: Result<Path<String>, PathRejection>,
    form: Result<Form<RefreshForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let Path(sym) = path.map_err(ApiError::rejection)?;
    let symbol = symbol(&sym)?;
    let Form(f) = form.map_err(form_error)?;
    let back = format!("/ui/symbols/{}", query_escape(symbol.as_str()));
    let outcome = async {
        let features = crate::api::jobs::Features::List(f.feature.clone());
        let asked = symbols_and_features(std::slice::from_ref(&sym), &features, 1)?;
        let jobs = app
            .engine
            .submit_async(client, asked.symbols, asked.specs, Priority::High)
            .await?;
        let ids: Vec<String> = jobs.iter().map(|j| j.id().to_string()).collect();
        Ok::<_, ApiError>(format!(
            "{} of {symbol} is being computed (job {}).",
            f.feature,
            ids.join(", ")
        ))
    }
    .await;
    Ok(noted(&app.notes, Some(&back), outcome))
}
