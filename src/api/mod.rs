//! The HTTP service (`kiln serve`): an axum router over an [`Engine`] that
//! runs in the same process (its runner works the queue on its own threads;
//! handlers only read, or hand durable writes to tokio's blocking pool).
//!
//! This module owns the router, the shared [`App`] state, the guards every
//! request passes (bearer token, per-client rate limit, body size) and the
//! mapping of errors to JSON bodies `{"error": code, "detail": text}` with
//! the right status. The handlers are in `handlers`, the OpenAPI document
//! in `openapi`.

mod cache;
mod handlers;
pub mod openapi;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kiln_store::{JobQueue, JobState, StoreError};

use crate::engine::guard::Admission;
use crate::engine::{Engine, EngineError, Runner};

/// The service's bounds and defaults (`kiln serve` flags and `[serve]`).
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// When set, every route but `/health` needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Most symbols in one `POST /v1/compute/batch`.
    pub batch_symbols_max: usize,
    /// Largest request body, except `POST /v1/bars`.
    pub body_bytes_max: usize,
    /// Largest `POST /v1/bars` body.
    pub bars_body_bytes_max: usize,
    /// Most `POST /v1/bars` bodies read and ingested at once (each may hold
    /// `bars_body_bytes_max` in memory); one more gets 429. 0 turns uploads
    /// off (403).
    pub bars_uploads_max: usize,
    /// Most seconds a `POST /v1/bars` body may take to arrive (408 past it),
    /// so a stalled upload cannot hold its place for good.
    pub bars_body_seconds_max: u64,
    /// Requests per second one client address may make (token bucket rate).
    pub requests_per_s: f64,
    /// Burst of requests one client address may make at once.
    pub requests_burst: f64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            token: None,
            batch_symbols_max: 1000,
            body_bytes_max: 1 << 20,
            bars_body_bytes_max: 256 << 20,
            bars_uploads_max: 2,
            bars_body_seconds_max: 120,
            requests_per_s: 100_000.0,
            requests_burst: 20_000.0,
        }
    }
}

/// What every handler shares.
pub struct App {
    engine: Engine,
    config: ServeConfig,
    limiter: Admission,
    runner: Mutex<Option<Runner>>,
    throughput: Mutex<Throughput>,
    reads: cache::ReadCache,
    /// Permits for `POST /v1/bars` bodies in flight (`bars_uploads_max`).
    uploads: Arc<tokio::sync::Semaphore>,
    /// Set when the server begins to shut down: event streams end.
    closing: std::sync::atomic::AtomicBool,
}

/// The client a request is from (its address), for rate limits; the guard
/// puts it on every request.
#[derive(Clone, Debug)]
pub struct ClientKey(pub String);

/// Most feature outputs one read or submission may name.
pub const OUTPUTS_MAX: usize = 64;
/// Most values (rows × outputs) one read may answer; ask for a `tail` or a
/// `from`/`to` window beyond it.
pub const VALUES_MAX: usize = 2_000_000;

/// Bytes of feature-read answers kept (see `cache`).
const READ_CACHE_BYTES: usize = 64 << 20;

/// Jobs finished per second while there was work, for completion estimates.
#[derive(Default)]
struct Throughput {
    last: Option<(Instant, u64)>,
    jobs_per_s: Option<f64>,
}

impl App {
    /// The state for [`router`], bounded by the engine's `serve` config;
    /// `runner` is the queue's dispatcher, whose liveness `/health` reports.
    pub fn new(engine: Engine, runner: Option<Runner>) -> Arc<App> {
        let config = engine.config().serve.clone();
        let limiter = Admission::new(config.requests_per_s, config.requests_burst);
        let uploads = Arc::new(tokio::sync::Semaphore::new(upload_places(&config)));
        Arc::new(App {
            engine,
            config,
            limiter,
            runner: Mutex::new(runner),
            throughput: Mutex::new(Throughput::default()),
            reads: cache::ReadCache::new(READ_CACHE_BYTES),
            uploads,
            closing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// One of the `bars_uploads_max` places for a `POST /v1/bars`, held
    /// until its ingest ends.
    fn upload_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        let max = self.config.bars_uploads_max;
        if max == 0 {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "uploads_off",
                "bar uploads are off here (bars_uploads_max = 0); use kiln ingest",
            ));
        }
        Arc::clone(&self.uploads).try_acquire_owned().map_err(|_| {
            let mut busy = ApiError::too_many(
                format!("{max} bar uploads are in progress, the most at once (bars_uploads_max)"),
                Duration::from_secs(1),
            );
            busy.error = "uploads_busy";
            busy
        })
    }

    /// `POST /v1/bars` bodies being read or ingested now.
    pub fn uploads_in_progress(&self) -> usize {
        upload_places(&self.config).saturating_sub(self.uploads.available_permits())
    }

    /// The engine underneath.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Stops the dispatcher, committing the batch in hand.
    pub fn stop_runner(&self) -> Result<(), EngineError> {
        let runner = self.runner.lock().ok().and_then(|mut r| r.take());
        match runner {
            Some(r) => r.stop().map(|_| ()),
            None => Ok(()),
        }
    }

    fn runner_alive(&self) -> Option<bool> {
        let runner = self.runner.lock().ok()?;
        runner.as_ref().map(Runner::is_running)
    }

    /// Samples finished jobs; called once a second by [`serve`].
    fn sample_throughput(&self) {
        let Ok(stats) = self.engine.store().stats() else {
            return;
        };
        let done = stats.count(JobState::Succeeded) + stats.count(JobState::Dead);
        let busy = stats.count(JobState::Queued) + stats.count(JobState::Running) > 0;
        let now = Instant::now();
        let Ok(mut t) = self.throughput.lock() else {
            return;
        };
        if let Some((at, before)) = t.last
            && busy
            && done > before
        {
            let rate = (done - before) as f64 / now.duration_since(at).as_secs_f64().max(1e-3);
            t.jobs_per_s = Some(t.jobs_per_s.map_or(rate, |r| 0.7 * r + 0.3 * rate));
        }
        t.last = Some((now, done));
    }

    fn jobs_per_s(&self) -> Option<f64> {
        self.throughput.lock().ok().and_then(|t| t.jobs_per_s)
    }
}

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    detail: String,
    retry_after_s: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            detail: detail.into(),
            retry_after_s: None,
        }
    }

    fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    fn not_found(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    fn too_many(detail: impl Into<String>, wait: Duration) -> Self {
        ApiError {
            retry_after_s: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail)
        }
    }

    /// An extractor's rejection (bad path, query or body), with its status.
    fn rejection(r: impl IntoResponse) -> Self {
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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.error, "detail": self.detail}).to_string();
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
            EngineError::Request(_) | EngineError::Spec(_) | EngineError::Market(_) => {
                ApiError::bad_request(e.to_string())
            }
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::Invalid { .. } => StatusCode::BAD_REQUEST,
            StoreError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            StoreError::Conflict(_) => StatusCode::CONFLICT,
            StoreError::UnknownJob(_) => StatusCode::NOT_FOUND,
            StoreError::Poisoned { .. }
            | StoreError::Closed
            | StoreError::Io { .. }
            | StoreError::Backend { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut err = ApiError::new(status, "store", e.to_string());
        if status == StatusCode::TOO_MANY_REQUESTS {
            err.error = "queue_full";
            err.retry_after_s = Some(1);
        }
        err
    }
}

/// Places for `POST /v1/bars` bodies: `bars_uploads_max`, within what a
/// semaphore can hold.
fn upload_places(config: &ServeConfig) -> usize {
    config
        .bars_uploads_max
        .min(tokio::sync::Semaphore::MAX_PERMITS)
}

/// The router with every route and guard.
pub fn router(app: Arc<App>) -> Router {
    let body_limit = app.config.body_bytes_max;
    Router::new()
        .route("/v1/compute/batch", post(handlers::compute_batch))
        .route(
            "/v1/jobs/{id}",
            get(handlers::get_job).delete(handlers::cancel_job),
        )
        .route("/v1/features/{symbol}", get(handlers::latest_features))
        .route("/v1/features/{symbol}/{spec}", get(handlers::get_feature))
        .route(
            "/v1/bars",
            // The handler bounds its body itself (`bars_body_bytes_max`).
            post(handlers::post_bars),
        )
        .route("/v1/events", get(handlers::events))
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.json", get(handlers::openapi))
        .fallback(handlers::no_route)
        .method_not_allowed_fallback(handlers::no_method)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), guard))
        .with_state(app)
}

/// Every request: the client address's token bucket (so guessing tokens is
/// throttled too), then the bearer token (all routes but `/health`).
async fn guard(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "local".to_owned(), |c| c.0.ip().to_string());
    if let Err(wait) = app.limiter.take(&client, 1) {
        return ApiError::too_many(
            format!(
                "client {client} is over {} requests/s (burst {})",
                app.config.requests_per_s, app.config.requests_burst
            ),
            wait,
        )
        .into_response();
    }
    if let Some(token) = &app.config.token
        && req.uri().path() != "/health"
    {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes())) {
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: Bearer <token>",
            )
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    req.extensions_mut().insert(ClientKey(client));
    next.run(req).await
}

/// Compares secrets in time that depends only on their lengths.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves `app` on `listener` until `shutdown` resolves, sampling the
/// throughput behind completion estimates once a second.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sampler = {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                app.sample_throughput();
            }
        })
    };
    use axum::serve::ListenerExt;
    // Answers go out at once, not after the client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY refused");
        }
    });
    let closing = Arc::clone(&app);
    let shutdown = async move {
        shutdown.await;
        // Event streams end, so the graceful shutdown does not wait on them.
        closing
            .closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let service = router(app).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await;
    sampler.abort();
    served
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
        assert!(!same_secret(b"", b"a"));
    }
}
