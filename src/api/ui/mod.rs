//! The dashboard: HTML pages under `/ui`, rendered by the server from the
//! durable store (nothing is kept in memory but sessions, so a restart
//! loses no history), with one stylesheet and one small script served from
//! the binary (`assets/`) and charts drawn as SVG by the server (`chart`).
//! Every action is a same-origin form POST that answers with a redirect
//! back; the guard checks its origin and, with a token, the session.
//!
//! One noun per file: `layout` (the page shell and the shared formatting),
//! `overview`, `jobs`, `symbols`, `events` (the page and the one live
//! stream every page listens to), `metrics`, `actions` (the form posts),
//! `login`, `chart`, `assets`.

mod actions;
mod assets;
mod chart;
mod events;
mod jobs;
mod layout;
mod login;
mod metrics;
mod overview;
mod symbols;

pub(crate) use layout::NoteSeal;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::map_response;
use axum::response::{Redirect, Response};
use axum::routing::{get, post};
use kiln_core::Backend;

use super::App;

/// The content security policy of every dashboard answer: nothing from
/// elsewhere, no inline script or style.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
    frame-ancestors 'none'";

/// The dashboard's routes.
pub fn routes<B: Backend>() -> Router<Arc<App<B>>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/favicon.ico", get(assets::favicon))
        .route("/ui", get(overview::page::<B>))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/assets/{name}", get(assets::asset))
        .route("/ui/login", get(login::form).post(login::login::<B>))
        .route("/ui/logout", post(login::logout::<B>))
        .route("/ui/stream", get(events::stream::<B>))
        .route("/ui/jobs", get(jobs::list::<B>))
        .route("/ui/jobs/retry", post(actions::retry_matching::<B>))
        .route("/ui/jobs/cancel", post(actions::cancel_matching::<B>))
        .route("/ui/jobs/{id}", get(jobs::page::<B>))
        .route("/ui/jobs/{id}/retry", post(actions::retry::<B>))
        .route("/ui/jobs/{id}/cancel", post(actions::cancel::<B>))
        .route("/ui/priorities/{priority}", post(actions::pause::<B>))
        .route("/ui/compute", post(actions::compute::<B>))
        .route("/ui/symbols", get(symbols::list::<B>))
        .route("/ui/symbols/{symbol}", get(symbols::page::<B>))
        .route("/ui/symbols/{symbol}/refresh", post(actions::refresh::<B>))
        .route("/ui/events", get(events::page::<B>))
        .route("/ui/metrics", get(metrics::page::<B>))
        .layer(map_response(security_headers))
}

/// The headers of every dashboard answer.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}
