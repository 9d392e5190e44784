//! What handlers share: JSON answers, checked path parameters, running a
//! blocking engine call off tokio's worker threads, and the wait before a
//! read for what is committed to be durable.

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_core::{Backend, Symbol};

use super::ApiError;

/// A handler's answer.
pub(crate) type Reply = Result<Response, ApiError>;

/// A JSON answer.
pub(crate) fn json(status: StatusCode, v: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// A symbol from a path or body, or 400 naming what is wrong with it.
pub(crate) fn symbol(s: &str) -> Result<Symbol, ApiError> {
    Symbol::new(s).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// A priority (`high`, `normal`, `low`), or 400.
pub(crate) fn priority(s: &str) -> Result<kiln_core::Priority, ApiError> {
    s.parse()
        .map_err(|e: kiln_core::StoreError| ApiError::bad_request(e.to_string()))
}

/// A job id from the path, or 400.
pub(crate) fn job_id(path: Result<Path<String>, PathRejection>) -> Result<u64, ApiError> {
    let Path(id) = path.map_err(ApiError::rejection)?;
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("job id {id:?} is not a number")))
}

/// Runs a blocking engine call on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a blocking task failed: {e}")))?
}

/// How long a read waits for the commits before it to become durable.
const DURABLE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Before a read: waits (off the worker threads, and only when something
/// committed is not durable yet) until everything committed is durable, so
/// the reader sees nothing a crash could take back; 503 when the store
/// failed meanwhile.
pub(crate) async fn durable<B: Backend>(store: &B) -> Result<(), ApiError> {
    if store.wait_durable(std::time::Duration::ZERO)? {
        return Ok(());
    }
    let store = store.clone();
    blocking(move || {
        if store.wait_durable(DURABLE_WAIT)? {
            return Ok(());
        }
        let cause = store.poisoned().unwrap_or_else(|| "still flushing".into());
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store",
            format!("the commits before this read are not durable: {cause}"),
        ))
    })
    .await
}
