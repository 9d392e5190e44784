//! Signing in to the dashboard when the service has a token: the token is
//! asked for once and exchanged for a session cookie (`HttpOnly`,
//! `SameSite=Strict`), which the pages and the live stream then carry.

use std::sync::Arc;

use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use kiln_core::Backend;
use maud::html;
use serde::Deserialize;

use super::layout::{Nav, shell};
use crate::api::guard::same_secret;
use crate::api::{ApiError, App};

#[derive(Deserialize)]
pub struct Next {
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct Login {
    token: String,
    next: Option<String>,
}

/// Where to go after signing in or acting: a dashboard page (printable
/// ASCII, no backslash), never elsewhere.
pub fn local_target(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if (n == "/ui" || n.starts_with("/ui/") || n.starts_with("/ui?"))
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            n
        }
        _ => "/ui",
    }
}

/// `GET /ui/login`: the form.
pub async fn form(query: Result<Query<Next>, QueryRejection>) -> Response {
    let next = query.ok().and_then(|Query(q)| q.next);
    login_page(local_target(next.as_deref()), None)
}

fn login_page(next: &str, failed: Option<&str>) -> Response {
    shell(
        "Sign in",
        Nav::None,
        failed,
        None,
        html! {
            h1 { "Sign in" }
            p.muted { "This service needs its token (kiln serve --token or KILN_TOKEN)." }
            form.stack method="post" action="/ui/login" {
                input type="hidden" name="next" value=(next);
                label { "Token" input type="password" name="token" autocomplete="current-password" required autofocus; }
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// `POST /ui/login`: the token for a session cookie.
pub async fn login<B: Backend>(
    State(app): State<Arc<App<B>>>,
    form: Result<Form<Login>, FormRejection>,
) -> Result<Response, ApiError> {
    let Form(f) = form.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let next = local_target(f.next.as_deref()).to_owned();
    let Some(token) = &app.config.token else {
        return Ok(Redirect::to(&next).into_response());
    };
    if !same_secret(f.token.as_bytes(), token.as_bytes()) {
        let mut r = login_page(&next, Some("That is not the token."));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(r);
    }
    let id = app.sessions.start()?;
    let mut r = Redirect::to(&next).into_response();
    let cookie = HeaderValue::try_from(app.sessions.cookie(Some(&id)))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(r)
}

/// `POST /ui/logout`: ends the session.
pub async fn logout<B: Backend>(State(app): State<Arc<App<B>>>, headers: HeaderMap) -> Response {
    if let Some(id) = app.sessions.id_in(&headers) {
        app.sessions.end(id);
    }
    let mut r = Redirect::to("/ui/login").into_response();
    if let Ok(v) = HeaderValue::try_from(app.sessions.cookie(None)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::local_target;

    #[test]
    fn only_dashboard_pages_are_targets() {
        for ok in ["/ui", "/ui/jobs?state=dead", "/ui?note=x"] {
            assert_eq!(local_target(Some(ok)), ok);
        }
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/uinot",
            "/ui/\\evil",
            "/ui/jobs\r\nSet-Cookie: x",
            "/ui/a b",
        ] {
            assert_eq!(local_target(Some(bad)), "/ui", "{bad:?}");
        }
        assert_eq!(local_target(None), "/ui");
    }
}
