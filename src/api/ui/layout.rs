//! The page shell every dashboard page shares (head, navigation, the note
//! an action left, the live-stream hook), the error page, and the
//! formatting the pages share.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use crate::api::ApiError;
use crate::engine::EngineError;

/// The sections of the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Jobs,
    Symbols,
    Events,
    Metrics,
    None,
}

const NAV: [(Nav, &str, &str); 5] = [
    (Nav::Overview, "/ui", "Overview"),
    (Nav::Jobs, "/ui/jobs", "Jobs"),
    (Nav::Symbols, "/ui/symbols", "Symbols"),
    (Nav::Events, "/ui/events", "Events"),
    (Nav::Metrics, "/ui/metrics", "Metrics"),
];

/// What a page's script follows on the live stream.
pub struct Live<'a> {
    /// `stats` (the overview), `jobs` (a banner on new events), `events`
    /// (rows added), or `symbol:NAME` (a reload when a job on it succeeds).
    pub follow: &'a str,
    /// The stream's events start after this sequence number (else: now).
    pub after: Option<u64>,
    /// Only events of this state are added.
    pub state: Option<&'a str>,
}

impl<'a> Live<'a> {
    /// Following `what` from now on.
    pub fn follow(what: &'a str) -> Option<Live<'a>> {
        Some(Live {
            follow: what,
            after: None,
            state: None,
        })
    }
}

/// Seals the notes actions leave in the URL they redirect to, so a page
/// shows only notes this service wrote: a link cannot make a page say
/// something (a keyed hash under a key drawn when the service starts).
#[derive(Default)]
pub struct NoteSeal(std::hash::RandomState);

impl NoteSeal {
    /// The seal of `note`.
    pub fn seal(&self, note: &str) -> String {
        use std::hash::BuildHasher;
        format!("{:016x}", self.0.hash_one(note))
    }

    /// `note` when `seal` is its seal.
    pub fn open(&self, note: Option<String>, seal: Option<&str>) -> Option<String> {
        let (note, seal) = (note?, seal?);
        crate::api::guard::same_secret(self.seal(&note).as_bytes(), seal.as_bytes()).then_some(note)
    }
}

/// A page's query that carries only an action's note.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteQuery {
    pub note: Option<String>,
    pub seal: Option<String>,
}

/// A whole page: `body` inside the shell, with an action's `note` and
/// what the page follows live, if anything.
pub fn shell(
    title: &str,
    nav: Nav,
    note: Option<&str>,
    live: Option<Live<'_>>,
    body: Markup,
) -> Response {
    let follow = live.as_ref().map(|l| l.follow);
    let after = live.as_ref().and_then(|l| l.after);
    let state = live.as_ref().and_then(|l| l.state);
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · kiln" }
                link rel="icon" href="/ui/assets/favicon.svg" type="image/svg+xml";
                link rel="stylesheet" href="/ui/assets/app.css";
                script src="/ui/assets/app.js" defer {}
            }
            body data-live=[follow] data-after=[after] data-state=[state] {
                header.top {
                    a.brand href="/ui" { "kiln" }
                    nav {
                        @for (n, href, label) in NAV {
                            a href=(href) class=[(n == nav).then_some("here")] { (label) }
                        }
                    }
                    span.live-state #live-state title="live updates" { "" }
                }
                main {
                    @if let Some(note) = note {
                        p.note role="status" { (note) }
                    }
                    (body)
                }
            }
        }
    };
    html_response(StatusCode::OK, markup)
}

/// An HTML answer.
pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// A page's failure, shown as a page with its status.
pub struct UiError(pub ApiError);

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        UiError(e)
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let title = e.status.canonical_reason().unwrap_or("Error");
        let mut r = shell(
            title,
            Nav::None,
            None,
            None,
            html! {
                h1 { (e.status.as_u16()) " " (title) }
                p.error { (e.detail) }
                p { a href="/ui" { "Back to the overview" } }
            },
        );
        *r.status_mut() = e.status;
        r
    }
}

/// A page handler's answer.
pub type Page = Result<Response, UiError>;

impl From<EngineError> for UiError {
    fn from(e: EngineError) -> Self {
        UiError(e.into())
    }
}

impl From<kiln_core::StoreError> for UiError {
    fn from(e: kiln_core::StoreError) -> Self {
        UiError(e.into())
    }
}

/// A timestamp (epoch ns) as a date, with the time when it is not midnight.
pub fn date(ns: i64) -> String {
    let s = crate::market::format_iso(ns);
    match s.strip_suffix("T00:00:00Z") {
        Some(day) => day.to_owned(),
        None => s,
    }
}

/// A time in ms since the epoch, to the second.
pub fn time_ms(ms: u64) -> String {
    let s = crate::market::format_iso((ms / 1000) as i64 * 1_000_000_000);
    s.replace('T', " ").replace('Z', " UTC")
}

/// A span of ms, short: `850 ms`, `4.2 s`, `3 min`, `5 h`, `2 d`.
pub fn span_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1e3),
        60_000..3_600_000 => format!("{} min", ms / 60_000),
        3_600_000..86_400_000 => format!("{} h", ms / 3_600_000),
        _ => format!("{} d", ms / 86_400_000),
    }
}

/// Now, in ms since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A byte count, short: `512 B`, `3.4 MB`, `1.2 GB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The first line of a message, at most 120 characters.
pub fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    match line.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_short() {
        assert_eq!(date(1_356_998_400_000_000_000), "2013-01-01");
        assert_eq!(
            date(1_356_998_400_000_000_000 + 3_600_000_000_000),
            "2013-01-01T01:00:00Z"
        );
        assert_eq!(time_ms(1_356_998_400_123), "2013-01-01 00:00:00 UTC");
        assert_eq!(span_ms(850), "850 ms");
        assert_eq!(span_ms(4_200), "4.2 s");
        assert_eq!(span_ms(180_000), "3 min");
        assert_eq!(span_ms(5 * 3_600_000), "5 h");
        assert_eq!(span_ms(2 * 86_400_000), "2 d");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3_400_000), "3.4 MB");
        assert_eq!(first_line("a\nb"), "a");
        assert_eq!(first_line(&"é".repeat(200)).chars().count(), 121);
    }
}
