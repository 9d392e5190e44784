//! The HTTP service (`kiln serve`): an axum router over an [`Engine`] that
//! runs in the same process (its runner works the queue on its own
//! threads; handlers only read, or hand durable writes to tokio's blocking
//! pool). [`Service::start`] is the one way to run it: `kiln serve`,
//! `kiln bench http` and the API tests all start it so.
//!
//! This module owns the service, the shared [`App`] state and the router.
//! `guard` is what every request passes (rate limit, Host, origin, token or
//! dashboard session). The handlers are grouped by what they serve
//! (`jobs`, `features`, `bars`, `status`), and `ui` is the dashboard (its
//! pages under `/ui`); `error` maps errors to JSON bodies, `cache` keeps
//! feature-read answers, `openapi` documents the routes.

mod bars;
mod cache;
mod error;
mod features;
mod guard;
mod jobs;
pub mod openapi;
mod reply;
pub(crate) mod schema;
mod status;
mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use kiln_core::prelude::*;
use kiln_core::{JobState, Watermark};

pub use error::ApiError;
pub use features::ARROW_STREAM;
pub use ui::CSP as UI_CSP;

use crate::config::ServeConfig;
use crate::engine::guard::Admission;
use crate::engine::{Engine, EngineError, Runner};

/// Most feature outputs one read or submission may name.
pub const OUTPUTS_MAX: usize = 64;
/// Most values (rows × outputs) one read may answer; ask for a `tail` or a
/// `from`/`to` window beyond it.
pub const VALUES_MAX: usize = 2_000_000;

/// Bytes of feature-read answers kept (see `cache`).
const READ_CACHE_BYTES: usize = 64 << 20;

/// What every handler shares.
pub struct App<B: Backend> {
    engine: Engine<B>,
    config: ServeConfig,
    limiter: Admission,
    /// The queue's dispatcher, whose liveness `/health` reports.
    runner: Mutex<Option<Runner>>,
    throughput: Mutex<Throughput>,
    reads: cache::ReadCache,
    /// Permits for `POST /v1/bars` bodies in flight (`bars_uploads_max`).
    uploads: Arc<tokio::sync::Semaphore>,
    /// The store's watermark and whether the service is closing, as one
    /// broadcast: every event stream waits on it (one waiter on the store
    /// for all of them, not a poll per connection).
    news: tokio::sync::watch::Sender<News>,
    /// The dashboard's login sessions.
    sessions: guard::Sessions,
    /// Seals the notes the dashboard's actions leave.
    notes: ui::NoteSeal,
    /// The last stats snapshot the dashboard made, and when.
    snapshot: Mutex<Option<(Instant, Arc<serde_json::Value>)>>,
}

/// What event streams wait for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct News {
    watermark: Watermark,
    closing: bool,
}

/// The client a request is from (its address), for rate limits; the guard
/// puts it on every request.
#[derive(Clone, Debug)]
pub struct ClientKey(pub String);

/// Jobs finished per second: smoothed while there was work (for
/// completion estimates), and each second's figure for the last ten
/// minutes (the dashboard's chart).
#[derive(Default)]
struct Throughput {
    last: Option<(Instant, u64)>,
    jobs_per_s: Option<f64>,
    per_second: std::collections::VecDeque<f64>,
}

/// Seconds of throughput the dashboard shows.
const THROUGHPUT_SECONDS: usize = 600;

impl<B: Backend> App<B> {
    fn new(engine: Engine<B>, config: ServeConfig, runner: Runner, port: u16) -> Arc<App<B>> {
        let clock = engine.store().queue_config().clock.clone();
        let limiter = Admission::new(config.requests_per_s, config.requests_burst, clock);
        let uploads = Arc::new(tokio::sync::Semaphore::new(upload_places(&config)));
        let watermark = engine.store().watermark().unwrap_or_default();
        let (news, _) = tokio::sync::watch::channel(News {
            watermark,
            closing: false,
        });
        Arc::new(App {
            engine,
            config,
            limiter,
            runner: Mutex::new(Some(runner)),
            throughput: Mutex::new(Throughput::default()),
            reads: cache::ReadCache::new(READ_CACHE_BYTES),
            uploads,
            news,
            sessions: guard::Sessions::new(port),
            notes: ui::NoteSeal::default(),
            snapshot: Mutex::new(None),
        })
    }

    /// The engine underneath.
    pub fn engine(&self) -> &Engine<B> {
        &self.engine
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

    /// Stops the dispatcher, committing the batch in hand.
    fn stop_runner(&self) -> Result<(), EngineError> {
        let runner = self.runner.lock().ok().and_then(|mut r| r.take());
        match runner {
            Some(r) => r.stop().map(|_| ()),
            None => Ok(()),
        }
    }

    fn runner_alive(&self) -> bool {
        self.runner
            .lock()
            .ok()
            .is_some_and(|r| r.as_ref().is_some_and(Runner::is_running))
    }

    /// Samples finished jobs; called once a second by the service.
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
        if let Some((at, before)) = t.last {
            let rate =
                done.saturating_sub(before) as f64 / now.duration_since(at).as_secs_f64().max(1e-3);
            if busy && done > before {
                t.jobs_per_s = Some(t.jobs_per_s.map_or(rate, |r| 0.7 * r + 0.3 * rate));
            }
            if t.per_second.len() == THROUGHPUT_SECONDS {
                t.per_second.pop_front();
            }
            t.per_second.push_back(rate);
        }
        t.last = Some((now, done));
    }

    fn jobs_per_s(&self) -> Option<f64> {
        self.throughput.lock().ok().and_then(|t| t.jobs_per_s)
    }

    /// Jobs finished in each of the last seconds (at most ten minutes),
    /// oldest first.
    fn throughput_history(&self) -> Vec<f64> {
        self.throughput
            .lock()
            .map(|t| t.per_second.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Forwards the store's watermark to the event streams until the
    /// service closes (a blocking loop: run it on a thread of its own).
    fn forward_news(&self) {
        let mut seen = self.news.borrow().watermark;
        while !self.news.borrow().closing {
            let Ok(now) = self
                .engine
                .store()
                .wait_for_change(seen, Duration::from_millis(250))
            else {
                return;
            };
            if now != seen {
                seen = now;
                self.news.send_modify(|n| n.watermark = now);
            }
        }
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
fn router<B: Backend>(app: Arc<App<B>>) -> Router {
    let body_limit = app.config.body_bytes_max;
    Router::new()
        .route("/v1/compute/batch", post(jobs::compute_batch::<B>))
        .route("/v1/jobs", get(jobs::list_jobs::<B>))
        .route("/v1/stats", get(status::stats::<B>))
        .route(
            "/v1/jobs/{id}",
            get(jobs::get_job::<B>).delete(jobs::cancel_job::<B>),
        )
        .route("/v1/jobs/{id}/retry", post(jobs::retry_job::<B>))
        .route("/v1/jobs/retry", post(jobs::retry_matching::<B>))
        .route("/v1/jobs/cancel", post(jobs::cancel_matching::<B>))
        .route(
            "/v1/priorities/{priority}/pause",
            post(jobs::pause_priority::<B>),
        )
        .route(
            "/v1/priorities/{priority}/resume",
            post(jobs::resume_priority::<B>),
        )
        .route("/v1/symbols", get(bars::list_symbols::<B>))
        .route("/v1/bars/{symbol}", get(bars::get_bars::<B>))
        .route("/v1/features/query", post(features::query_features::<B>))
        .route("/v1/features/{symbol}", get(features::latest_features::<B>))
        .route(
            "/v1/features/{symbol}/{spec}",
            get(features::get_feature::<B>),
        )
        .route(
            "/v1/bars",
            // The handler bounds its body itself (`bars_body_bytes_max`).
            post(bars::post_bars::<B>),
        )
        .route("/v1/events", get(status::events::<B>))
        .route("/health", get(status::health::<B>))
        .route("/metrics", get(status::metrics::<B>))
        .route("/openapi.json", get(status::openapi::<B>))
        .merge(ui::routes::<B>())
        .fallback(status::no_route)
        .method_not_allowed_fallback(status::no_method)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            guard::guard::<B>,
        ))
        .with_state(app)
}

/// A running service: the API on its listener, the engine's runner working
/// the queue, on threads of their own (a tokio runtime for the requests).
pub struct Service<B: Backend> {
    app: Arc<App<B>>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl<B: Backend> Service<B> {
    /// Serves `engine` under `config` on `listener` until `shutdown`
    /// resolves or [`Service::stop`] is called; meanwhile a runner works the
    /// queue (its threads in the background with `background_idle`). On
    /// the way out, event streams end, answers in flight are sent, and the
    /// runner commits the batch in hand.
    pub fn start(
        engine: Engine<B>,
        config: ServeConfig,
        listener: std::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Service<B>, EngineError> {
        let io = |what: &str, e: std::io::Error| EngineError::Internal(format!("{what}: {e}"));
        let addr = listener.local_addr().map_err(|e| io("the listener", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| io("the listener", e))?;
        crate::engine::build_compute_pool(engine.config().background_idle);
        let runner = engine.spawn_runner()?;
        let app = App::new(engine, config, runner, addr.port());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = Arc::clone(&app);
        let thread = std::thread::Builder::new()
            .name("kiln-service".into())
            .spawn(move || -> std::io::Result<()> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    serve(listener, served, async move {
                        tokio::select! {
                            () = shutdown => {}
                            _ = stopped => {}
                        }
                    })
                    .await
                })
            })
            .map_err(|e| io("start the service thread", e))?;
        Ok(Service {
            app,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (the engine, the upload places in use).
    pub fn app(&self) -> &App<B> {
        &self.app
    }

    /// Stops it now (as `shutdown` resolving would) and waits for the end.
    pub fn stop(mut self) -> Result<(), EngineError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.finish()
    }

    /// Waits until `shutdown` resolves and the service has ended.
    pub fn wait(mut self) -> Result<(), EngineError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), EngineError> {
        let served = match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the service thread panicked"))),
            None => Ok(()),
        };
        // Stop claiming, commit the batch in hand.
        let stopped = self.app.stop_runner();
        served.map_err(|e| EngineError::Internal(format!("serving HTTP: {e}")))?;
        stopped
    }
}

impl<B: Backend> Drop for Service<B> {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.finish();
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, sampling the
/// throughput behind completion estimates once a second and forwarding the
/// store's news to the event streams.
async fn serve<B: Backend>(
    listener: tokio::net::TcpListener,
    app: Arc<App<B>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
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
    let forwarder = {
        let app = Arc::clone(&app);
        tokio::task::spawn_blocking(move || app.forward_news())
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
        closing.news.send_modify(|n| n.closing = true);
    };
    let service = router(Arc::clone(&app)).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await;
    sampler.abort();
    app.news.send_modify(|n| n.closing = true);
    let _ = forwarder.await;
    served
}
