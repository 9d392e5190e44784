//! Errors as the API answers them: a status and a JSON body
//! `{"error": code, "detail": text}`, with `Retry-After` on a refusal. What
//! the caller did wrong is a 4xx; what failed inside is a 5xx (503 when the
//! store is failing, 500 otherwise).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_core::StoreError;

use crate::engine::EngineError;
use crate::market::MarketError;

/// The body of every error answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    /// What kind of error, as a code (`bad_request`, `not_found`,
    /// `rate_limited`, `queue_full`, `unauthorized`, `store`, …).
    pub error: &'a str,
    /// What is wrong, in words: the field, row or limit it names.
    pub detail: &'a str,
}

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) error: &'static str,
    pub(crate) detail: String,
    pub(crate) retry_after_s: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            detail: detail.into(),
            retry_after_s: None,
        }
    }

    pub(crate) fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub(crate) fn internal(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }

    pub(crate) fn too_many(detail: impl Into<String>, wait: Duration) -> Self {
        ApiError {
            retry_after_s: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail)
        }
    }

    /// An extractor's rejection (bad path, query or body), with its status.
    pub(crate) fn rejection(r: impl IntoResponse) -> Self {
        let r = r.into_response();
        let status = r.status();
        let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "bad_request"
        };
        ApiError::new(
            status,
            error,
            status.canonical_reason().unwrap_or("rejected"),
        )
    }

    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_string(&ErrorBody {
            error: self.error,
            detail: &self.detail,
        })
        .unwrap_or_default();
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(s) = self.retry_after_s {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Refused {
                reason,
                retry_after_ms,
            } => ApiError::too_many(reason, Duration::from_millis(retry_after_ms)),
            EngineError::Store(s) => s.into(),
            EngineError::Market(MarketError::Store(s)) => s.into(),
            EngineError::NoBars(_) => ApiError::not_found(e.to_string()),
            EngineError::Market(MarketError::NotReady(detail)) => {
                ApiError::new(StatusCode::CONFLICT, "not_ready", detail)
            }
            EngineError::Request(_)
            | EngineError::Spec(_)
            | EngineError::Market(_)
            | EngineError::Config(_) => ApiError::bad_request(e.to_string()),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::Invalid { .. } | StoreError::TooLarge { .. } => StatusCode::BAD_REQUEST,
            StoreError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            StoreError::Conflict(_) => StatusCode::CONFLICT,
            StoreError::UnknownJob(_) => StatusCode::NOT_FOUND,
            e if e.is_outage() => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut err = ApiError::new(status, "store", e.to_string());
        match status {
            StatusCode::TOO_MANY_REQUESTS => {
                err.error = "queue_full";
                err.retry_after_s = Some(1);
            }
            StatusCode::NOT_FOUND => err.error = "not_found",
            _ => {}
        }
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    #[tokio::test]
    async fn an_internal_failure_is_a_500_with_a_json_error() {
        let e = ApiError::from(EngineError::Internal(
            "the submit task failed: panicked".into(),
        ));
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let v = body(r).await;
        assert_eq!(v["error"], "internal");
        assert_eq!(
            v["detail"],
            "internal failure: the submit task failed: panicked"
        );
    }

    #[tokio::test]
    async fn a_caller_mistake_is_a_4xx_and_a_failing_store_a_503() {
        let bad = ApiError::from(EngineError::Request("no symbols given".into()));
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        let gone = ApiError::from(EngineError::Store(StoreError::Closed));
        assert_eq!(gone.status(), StatusCode::SERVICE_UNAVAILABLE);
        let v = body(gone.into_response()).await;
        assert_eq!(v["error"], "store");
    }
}
