//! What every request passes before its handler, in this order:
//! - the client address's token bucket (so guessing tokens is throttled too);
//! - its `Host`: an IP address, `localhost` or a name given with `kiln serve
//!   --host`, so a web page that rebinds its own name to this address
//!   cannot reach the service;
//! - for a request that changes state (any method but GET and HEAD): a
//!   browser's `Origin` and `Sec-Fetch-Site` must say the same origin (a
//!   dashboard form must carry one of them);
//! - with a token: `Authorization: Bearer <token>` on every route but
//!   `/health`, `/` and the dashboard's login and assets; the dashboard's
//!   pages, `/v1/events` and `/metrics` also take the session cookie
//!   `/ui/login` sets (a browser's EventSource cannot send a header). A
//!   page asked for without either is sent to the login form.
//!
//! Sessions ([`Sessions`]) are random ids kept in memory for
//! [`SESSION_TTL`]; a restart ends them. The cookie's name carries the
//! service's port, since browsers share cookies across the ports of one
//! host: logging in to a second kiln on the same machine does not end the
//! session with the first.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use kiln_core::Backend;

use super::{ApiError, App, ClientKey};

/// How long a dashboard session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Most sessions kept at once; the oldest goes first.
const SESSIONS_MAX: usize = 1024;

/// The session cookie's name, before the port.
const SESSION_COOKIE: &str = "kiln_session";

/// Every request: see the module docs.
pub async fn guard<B: Backend>(
    State(app): State<Arc<App<B>>>,
    mut req: Request,
    next: Next,
) -> Response {
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
    let headers = req.headers();
    if let Some(host) = foreign_host(headers, &app.config.hosts) {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "unknown_host",
            format!(
                "this service does not answer to Host {host:?}; use its IP address or \
                 localhost, or start it with --host {host}"
            ),
        )
        .into_response();
    }
    let path = req.uri().path();
    let dashboard = path == "/ui" || path.starts_with("/ui/");
    if !matches!(*req.method(), Method::GET | Method::HEAD)
        && let Err(why) = same_origin(headers, dashboard)
    {
        return ApiError::new(StatusCode::FORBIDDEN, "cross_origin", why).into_response();
    }
    if let Some(token) = &app.config.token
        && !public(path)
    {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let by_bearer = bearer.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes()));
        let by_cookie = (dashboard || path == "/v1/events" || path == "/metrics")
            && app
                .sessions
                .id_in(headers)
                .is_some_and(|id| app.sessions.valid(id));
        if !by_bearer && !by_cookie {
            // A page goes to the login form (a form posted after the
            // session ended, to the form and then the overview); the live
            // stream (an EventSource, not a page) is refused.
            if dashboard && path != "/ui/stream" {
                let back = match *req.method() {
                    Method::GET => req
                        .uri()
                        .path_and_query()
                        .map_or("/ui", |p| p.as_str())
                        .to_owned(),
                    _ => "/ui".to_owned(),
                };
                return Redirect::to(&format!("/ui/login?next={}", query_escape(&back)))
                    .into_response();
            }
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

/// Routes that need no token: health, and what the login page needs (and
/// `/`, which only leads to the dashboard).
fn public(path: &str) -> bool {
    matches!(path, "/" | "/health" | "/favicon.ico" | "/ui/login")
        || path.starts_with("/ui/assets/")
}

/// The request's `Host` when it names neither an IP address, nor
/// `localhost`, nor one of `hosts`; `None` when it is fine (or absent: only
/// a non-browser client sends none).
fn foreign_host(headers: &HeaderMap, hosts: &[String]) -> Option<String> {
    let host = headers.get(header::HOST)?;
    let Ok(host) = host.to_str() else {
        return Some(String::from_utf8_lossy(host.as_bytes()).into_owned());
    };
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => match rest.split_once(']') {
            Some((v6, _)) => {
                return v6
                    .parse::<std::net::Ipv6Addr>()
                    .is_err()
                    .then(|| host.to_owned());
            }
            None => return Some(host.to_owned()),
        },
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.to_ascii_lowercase();
    let known =
        name == "localhost" || name.parse::<std::net::Ipv4Addr>().is_ok() || hosts.contains(&name);
    (!known).then(|| host.to_owned())
}

/// Whether a state-changing request comes from this service's own pages
/// (or from a client that is not a browser: it sends neither header). A
/// dashboard form must send one of them: every browser does.
fn same_origin(headers: &HeaderMap, dashboard: bool) -> Result<(), String> {
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("(not text)").to_owned())
    };
    let site = text(header::HeaderName::from_static("sec-fetch-site"));
    let origin = text(header::ORIGIN);
    if let Some(site) = &site
        && site != "same-origin"
        && site != "none"
    {
        return Err(format!(
            "a {site} request may not change anything here (Sec-Fetch-Site)"
        ));
    }
    if let Some(origin) = &origin {
        let host = text(header::HOST).unwrap_or_default();
        let from = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if from != Some(host.as_str()) {
            return Err(format!(
                "a request from {origin} may not change anything on {host} (Origin)"
            ));
        }
    }
    if dashboard && site.is_none() && origin.is_none() {
        return Err("a dashboard form must come from the dashboard (no Origin)".into());
    }
    Ok(())
}

/// Percent-escapes `s` for a query value.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Compares secrets in time that depends only on their lengths.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The dashboard's sessions: random ids, each until it expires, and the
/// name of the cookie that carries them.
pub struct Sessions {
    cookie: String,
    ids: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    /// The sessions of the service on `port`.
    pub fn new(port: u16) -> Sessions {
        Sessions {
            cookie: format!("{SESSION_COOKIE}_{port}"),
            ids: Mutex::default(),
        }
    }

    /// The session id in a request's cookies.
    pub fn id_in<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix(&self.cookie)?.strip_prefix('='))
    }

    /// The `Set-Cookie` value of a session (`None`: one that ends it).
    pub fn cookie(&self, id: Option<&str>) -> String {
        let name = &self.cookie;
        match id {
            Some(id) => format!(
                "{name}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
                SESSION_TTL.as_secs()
            ),
            None => format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        }
    }

    /// A new session; its id goes into the cookie.
    pub fn start(&self) -> Result<String, ApiError> {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|e| ApiError::internal(format!("no random bytes for a session: {e}")))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut ids = self
            .ids
            .lock()
            .map_err(|_| ApiError::internal("sessions"))?;
        ids.retain(|_, until| *until > now);
        if ids.len() >= SESSIONS_MAX
            && let Some(oldest) = ids.iter().min_by_key(|(_, u)| **u).map(|(k, _)| k.clone())
        {
            ids.remove(&oldest);
        }
        ids.insert(id.clone(), now + SESSION_TTL);
        Ok(id)
    }

    /// Whether `id` is a live session.
    pub fn valid(&self, id: &str) -> bool {
        let Ok(ids) = self.ids.lock() else {
            return false;
        };
        ids.iter()
            .any(|(k, until)| same_secret(k.as_bytes(), id.as_bytes()) && *until > Instant::now())
    }

    /// Ends `id`'s session.
    pub fn end(&self, id: &str) {
        if let Ok(mut ids) = self.ids.lock() {
            ids.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
        assert!(!same_secret(b"", b"a"));
    }

    fn with(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hosts_are_addresses_localhost_or_named() {
        let named = vec!["kiln.internal".to_owned()];
        for ok in [
            "127.0.0.1:7070",
            "127.0.0.1",
            "localhost:7070",
            "LOCALHOST",
            "[::1]:7070",
            "10.1.2.3:80",
            "kiln.internal:7070",
        ] {
            assert_eq!(foreign_host(&with(&[("host", ok)]), &named), None, "{ok}");
        }
        for bad in [
            "evil.example:7070",
            "evil.example",
            "localhost.evil.example:7070",
            "[::1",
            "[nope]:1",
            "127.0.0.1.nip.io:7070",
        ] {
            assert_eq!(
                foreign_host(&with(&[("host", bad)]), &named).as_deref(),
                Some(bad),
                "{bad}"
            );
        }
        assert_eq!(foreign_host(&HeaderMap::new(), &named), None);
    }

    #[test]
    fn changes_come_from_the_same_origin() {
        let host = ("host", "127.0.0.1:7070");
        assert!(same_origin(&with(&[host]), false).is_ok(), "a script");
        assert!(
            same_origin(&with(&[host]), true).is_err(),
            "a form with no origin"
        );
        assert!(same_origin(&with(&[host, ("origin", "http://127.0.0.1:7070")]), true).is_ok());
        assert!(same_origin(&with(&[host, ("sec-fetch-site", "same-origin")]), true).is_ok());
        for foreign in [
            ("origin", "http://evil.example"),
            ("origin", "null"),
            ("origin", "http://127.0.0.1:7071"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            assert!(
                same_origin(&with(&[host, foreign]), false).is_err(),
                "{foreign:?}"
            );
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let s = Sessions::new(7070);
        let h = with(&[("cookie", "a=1; kiln_session_7070=abc; b=2")]);
        assert_eq!(s.id_in(&h), Some("abc"));
        for other in [
            "kiln_session_70701=1",
            "kiln_session_7071=1",
            "kiln_session=1",
        ] {
            assert_eq!(s.id_in(&with(&[("cookie", other)])), None, "{other}");
        }
        assert!(s.cookie(Some("abc")).starts_with("kiln_session_7070=abc; "));
        let id = s.start().expect("start");
        assert_eq!(id.len(), 64);
        assert!(s.valid(&id));
        assert!(!s.valid("abc"));
        s.end(&id);
        assert!(!s.valid(&id));
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(
            query_escape("/ui/jobs?state=dead&x=a b"),
            "/ui/jobs%3Fstate%3Ddead%26x%3Da%20b"
        );
    }
}
