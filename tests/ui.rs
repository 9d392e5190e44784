//! The dashboard and the routes it needs, against a real server on
//! 127.0.0.1:0, without a browser (tests/browser/ drives Chromium): every
//! page renders with its security headers and every link on it resolves, a
//! job's error is shown escaped, actions need the same origin, a foreign
//! Host is refused, a token makes pages ask for a session; the job filters,
//! bulk retry and cancel, pausing, symbols and bars as JSON; the chart's
//! RSI against TA-Lib's golden values.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::http::{Reply, get, post_json, request};
use common::{SAMPLE, sample_options, wait_until};
use kiln::api::Service;
use kiln::config::{Config, ServeConfig};
use kiln::engine::Engine;
use kiln::store::prelude::*;
use kiln::store::{JobState, NewJob, Priority, Store, Symbol};

struct Server {
    addr: SocketAddr,
    service: Service<Store>,
    _dir: tempfile::TempDir,
}

/// A server over the sample with AAPL's `sma(20)` and `rsi(14)` computed
/// and `dead` dead jobs on AAPL whose error is a script tag; every
/// priority paused, so what the tests queue stays queued.
fn server(config: Config, dead: usize) -> Server {
    let mut config = config;
    config.engine.background_idle = false;
    let dir = tempfile::tempdir().expect("dir");
    let engine = Engine::open(dir.path(), config.clone()).expect("open");
    engine
        .ingest(&[SAMPLE.into()], &sample_options(), &mut |_| {})
        .expect("ingest");
    let aapl = Symbol::new("AAPL").expect("symbol");
    let (_, specs) = kiln::engine::resolve_features("sma(20),rsi(14)").expect("specs");
    engine
        .submit(std::slice::from_ref(&aapl), &specs, Priority::Normal)
        .expect("submit");
    engine.run_until_idle(&mut |_| {}).expect("run to idle");
    let store = engine.store();
    for _ in 0..dead {
        store
            .enqueue(NewJob::new("compute", b"sma(3)".to_vec()).symbols(vec![aapl.clone()]))
            .expect("enqueue");
        let lease = store.claim(1).expect("claim").pop().expect("a lease");
        store
            .fail_permanently(lease.token, "<script>alert(1)</script> went wrong")
            .expect("fail");
    }
    for p in Priority::ALL {
        store.set_paused(p, true).expect("pause");
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let service = Service::start(engine, config.serve, listener, std::future::pending())
        .expect("start the service");
    Server {
        addr: service.addr(),
        service,
        _dir: dir,
    }
}

fn page(addr: SocketAddr, target: &str) -> String {
    let r = get(addr, target);
    assert_eq!(r.status, 200, "GET {target}: {}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/html; charset=utf-8"),
        "GET {target}"
    );
    assert_eq!(
        r.header("content-security-policy"),
        Some(kiln::api::UI_CSP),
        "GET {target}"
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let html = r.text();
    // Scripts only from the server's own file, none inline.
    for tag in html.split("<script").skip(1) {
        assert!(
            tag.starts_with(" src=\"/ui/assets/app.js\""),
            "GET {target}: an inline script: {tag:.80}"
        );
    }
    assert!(!html.contains(" style="), "GET {target}: inline style");
    html
}

/// The `href`s of a page that stay on the server.
fn links(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .filter(|h| h.starts_with('/'))
        .map(|h| h.replace("&amp;", "&"))
        .collect()
}

fn dead_ids(s: &Server) -> Vec<u64> {
    let r = get(s.addr, "/v1/jobs?state=dead");
    r.json()
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["id"].as_u64().expect("id"))
        .collect()
}

#[test]
fn every_page_renders_safely_and_every_link_on_it_resolves() {
    let s = server(Config::default(), 2);
    let dead = dead_ids(&s);
    assert_eq!(dead.len(), 2);
    let start = [
        "/ui".to_owned(),
        "/ui/jobs".to_owned(),
        "/ui/jobs?state=dead&symbol=AAPL".to_owned(),
        format!("/ui/jobs/{}", dead[0]),
        "/ui/symbols".to_owned(),
        "/ui/symbols/AAPL".to_owned(),
        "/ui/symbols/AAPL?bars=40&features=rsi(14)".to_owned(),
        "/ui/events".to_owned(),
        "/ui/events?state=dead".to_owned(),
        "/ui/metrics".to_owned(),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for target in &start {
        let html = page(s.addr, target);
        // The error is text, never markup.
        assert!(!html.contains("<script>alert"), "GET {target}");
        for link in links(&html) {
            if seen.insert(link.clone()) {
                let r = get(s.addr, &link);
                assert_eq!(r.status, 200, "{target} links to {link}: {}", r.text());
            }
        }
    }
    assert!(
        seen.contains("/ui/assets/app.css") && seen.contains("/metrics"),
        "{seen:?}"
    );
    let job = page(s.addr, &format!("/ui/jobs/{}", dead[0]));
    assert!(
        job.contains("&lt;script&gt;alert(1)&lt;/script&gt; went wrong"),
        "{job}"
    );
    assert!(job.contains("id=\"timeline\""), "the job's events: {job}");
    let list = page(s.addr, "/ui/jobs?state=dead");
    assert!(list.contains("Retry all 2 matching jobs"), "{list}");
    // The favicon, so a browser logs no 404.
    assert_eq!(get(s.addr, "/favicon.ico").status, 200);
    assert_eq!(get(s.addr, "/ui/assets/app.js").status, 200);
    assert_eq!(get(s.addr, "/ui/assets/nothing.js").status, 404);
    // `/` leads to the dashboard.
    let root = get(s.addr, "/");
    assert_eq!((root.status, root.header("location")), (303, Some("/ui")));
    // A missing job or symbol is a page with its status, not a 500.
    assert_eq!(get(s.addr, "/ui/jobs/999999").status, 404);
    assert_eq!(get(s.addr, "/ui/symbols/NOPE").status, 404);
    assert_eq!(get(s.addr, "/ui/symbols/bad%20name").status, 400);
    assert_eq!(get(s.addr, "/ui/jobs?state=sleeping").status, 400);
}

#[test]
fn the_chart_draws_candles_and_an_rsi_pane_ending_at_talibs_value() {
    let s = server(Config::default(), 0);
    let html = page(s.addr, "/ui/symbols/AAPL?bars=100");
    assert_eq!(html.matches("class=\"candle ").count(), 100);
    assert!(html.contains("data-pane=\"rsi(14)\""), "an RSI pane");
    assert!(
        !html.contains("data-pane=\"sma(20)\""),
        "sma is drawn over the candles"
    );
    // The last RSI value, against TA-Lib's (tests/fixtures/talib, the last
    // 1200 AAPL bars of the sample; Wilder's smoothing has long forgotten
    // the bars before them).
    let last: f64 = html
        .split("data-label=\"rsi(14)\" data-last=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the RSI's last value")
        .parse()
        .expect("a number");
    let golden = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/talib/real_aapl.tsv"
    ))
    .expect("fixture");
    let mut rows = golden.lines();
    let column = rows
        .next()
        .expect("a header")
        .split('\t')
        .position(|c| c == "rsi(14)")
        .expect("an rsi(14) column");
    let want: f64 = rows
        .last()
        .and_then(|r| r.split('\t').nth(column))
        .expect("a last row")
        .parse()
        .expect("a number");
    assert!((last - want).abs() < 1e-9, "chart {last}, TA-Lib {want}");
    assert!(html.contains("<span class=\"badge\">current</span>"));
}

/// A raw request whose `Host` and other headers we choose.
fn raw(addr: SocketAddr, head: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(head.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn a_request_naming_another_host_is_refused() {
    let s = server(Config::default(), 0);
    for host in ["evil.example", "evil.example:80", "localhost.evil.example"] {
        let r = raw(
            s.addr,
            &format!("GET /ui HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        );
        assert!(r.starts_with("HTTP/1.1 421"), "{host}: {r}");
        assert!(r.contains("--host"), "says how to allow it: {r}");
    }
    for host in ["localhost:7070", "127.0.0.1", "[::1]:7070"] {
        let r = raw(
            s.addr,
            &format!("GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        );
        assert!(r.starts_with("HTTP/1.1 200"), "{host}: {r}");
    }
}

#[test]
fn actions_come_only_from_the_dashboard_itself() {
    let s = server(Config::default(), 1);
    let id = dead_ids(&s)[0];
    let target = format!("/ui/jobs/{id}/retry");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let with = |extra: (&'static str, &'static str)| -> Reply {
        let mut h = form.to_vec();
        h.push(extra);
        request(s.addr, "POST", &target, &h, b"back=/ui/jobs")
    };
    // No origin at all: not a browser form.
    request(s.addr, "POST", &target, &form, b"").error(403);
    with(("Origin", "http://evil.example")).error(403);
    with(("Origin", "null")).error(403);
    with(("Sec-Fetch-Site", "cross-site")).error(403);
    // The JSON API refuses a browser's cross-origin request too.
    request(
        s.addr,
        "POST",
        &format!("/v1/jobs/{id}/retry"),
        &[("Origin", "http://evil.example")],
        b"",
    )
    .error(403);
    assert_eq!(
        get(s.addr, "/v1/jobs?state=queued").json(),
        serde_json::json!([])
    );
    // From the dashboard: done, and back with a note.
    let r = with(("Origin", "http://127.0.0.1"));
    assert_eq!(r.status, 303, "{}", r.text());
    let location = r.header("location").expect("location");
    assert!(location.starts_with("/ui/jobs?note=Job%20"), "{location}");
    // The page shows the note; one a link made up (or changed) it does not.
    let shown = r#"<p class="note" role="status">Job "#;
    assert!(get(s.addr, location).text().contains(shown), "{location}");
    let changed = location.replacen("note=Job%20", "note=Jab%20", 1);
    assert!(!get(s.addr, &changed).text().contains("role=\"status\""));
    let made_up = get(s.addr, "/ui/jobs?note=Hello%20there").text();
    assert!(!made_up.contains("Hello there"));
    let queued = get(s.addr, "/v1/jobs?state=queued").json();
    assert_eq!(queued.as_array().map(Vec::len), Some(1), "{queued}");
    // `back` never leaves the dashboard.
    let r = request(
        s.addr,
        "POST",
        &format!("/ui/jobs/{id}/cancel"),
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        b"back=https://evil.example/",
    );
    assert_eq!(r.status, 303);
    assert!(
        r.header("location")
            .expect("location")
            .starts_with("/ui?note=")
    );
}

#[test]
fn with_a_token_pages_need_a_session_from_the_login_form() {
    let config = Config {
        serve: ServeConfig {
            token: Some("s3cret-token".into()),
            ..ServeConfig::default()
        },
        ..Config::default()
    };
    let s = server(config, 0);
    let r = get(s.addr, "/ui/jobs?state=dead");
    assert_eq!(r.status, 303, "refused without a session");
    assert_eq!(
        r.header("location"),
        Some("/ui/login?next=/ui/jobs%3Fstate%3Ddead")
    );
    get(s.addr, "/ui/stream").error(401);
    // What the login form needs is open.
    assert!(page(s.addr, "/ui/login?next=/ui/jobs").contains("name=\"token\""));
    assert_eq!(get(s.addr, "/ui/assets/app.css").status, 200);
    let login = |token: &str| {
        request(
            s.addr,
            "POST",
            "/ui/login",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Origin", "http://127.0.0.1"),
            ],
            format!("token={token}&next=/ui/jobs").as_bytes(),
        )
    };
    let wrong = login("guess");
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
    let ok = login("s3cret-token");
    assert_eq!((ok.status, ok.header("location")), (303, Some("/ui/jobs")));
    let cookie = ok.header("set-cookie").expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().expect("name=value").to_owned();
    // Named for this service's port: browsers share cookies across ports.
    let name = format!("kiln_session_{}", s.addr.port());
    let id = session
        .strip_prefix(&format!("{name}="))
        .unwrap_or_else(|| panic!("{session} is not named {name}"));
    let with_session = [("Cookie", session.as_str())];
    let r = request(s.addr, "GET", "/ui", &with_session, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    // The session opens the event log to the browser's EventSource...
    let r = request(
        s.addr,
        "GET",
        "/v1/events",
        &[("Cookie", session.as_str()), ("Accept", "application/json")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // ...and the metrics the metrics page links to...
    assert_eq!(
        request(s.addr, "GET", "/metrics", &with_session, b"").status,
        200
    );
    // ...but the API still wants the token.
    request(s.addr, "GET", "/v1/jobs", &with_session, b"").error(401);
    // A form posted without a session goes to the login form, not JSON.
    let r = request(
        s.addr,
        "POST",
        "/ui/jobs/1/retry",
        &[("Origin", "http://127.0.0.1")],
        b"",
    );
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/ui/login?next=/ui"))
    );
    // `/` and the icon need nothing.
    assert_eq!(get(s.addr, "/").status, 303);
    assert_eq!(get(s.addr, "/favicon.ico").status, 200);
    let forged = format!("{name}=00");
    let another_port = format!("kiln_session_{}={id}", s.addr.port().wrapping_add(1));
    for cookie in [forged.as_str(), another_port.as_str()] {
        let r = request(s.addr, "GET", "/ui", &[("Cookie", cookie)], b"");
        assert_eq!(r.status, 303, "{cookie}");
    }
    // Signing out ends it.
    let out = request(
        s.addr,
        "POST",
        "/ui/logout",
        &[("Cookie", session.as_str()), ("Origin", "http://127.0.0.1")],
        b"",
    );
    assert_eq!(out.status, 303);
    assert_eq!(
        request(s.addr, "GET", "/ui", &with_session, b"").status,
        303
    );
}

#[test]
fn jobs_filter_page_and_act_in_bulk() {
    let s = server(Config::default(), 3);
    let dead = dead_ids(&s);
    assert_eq!(dead.len(), 3);
    // Newest first; before= pages on.
    assert!(dead.windows(2).all(|w| w[0] > w[1]), "{dead:?}");
    let page2 = get(
        s.addr,
        &format!("/v1/jobs?state=dead&limit=2&before={}", dead[1]),
    )
    .json();
    assert_eq!(page2[0]["id"].as_u64(), Some(dead[2]));
    assert_eq!(
        get(s.addr, "/v1/jobs?state=dead&symbol=MSFT").json(),
        serde_json::json!([])
    );
    assert_eq!(
        get(
            s.addr,
            "/v1/jobs?kind=compute&priority=normal&symbol=AAPL&state=dead"
        )
        .json()
        .as_array()
        .map(Vec::len),
        Some(3)
    );
    get(s.addr, "/v1/jobs?priority=urgent").error(400);
    get(s.addr, "/v1/jobs?before=x").error(400);
    // A bulk retry names the state it retries.
    post_json(s.addr, "/v1/jobs/retry", "{}").error(400);
    post_json(s.addr, "/v1/jobs/retry", r#"{"state":"queued"}"#).error(400);
    post_json(s.addr, "/v1/jobs/retry", r#"{"state":"dead","colour":1}"#).error(400);
    let r = post_json(s.addr, "/v1/jobs/retry", r#"{"state":"dead","limit":2}"#);
    assert_eq!(r.status, 202, "{}", r.text());
    let v = r.json();
    assert_eq!(v["more"], true);
    let first: Vec<(u64, u64)> = v["retried"]
        .as_array()
        .expect("retried")
        .iter()
        .map(|x| {
            (
                x["id"].as_u64().expect("id"),
                x["retried_as"].as_u64().expect("new"),
            )
        })
        .collect();
    assert_eq!(first.iter().map(|p| p.0).collect::<Vec<_>>(), dead[..2]);
    // Asked again, a bulk retry leaves the retried jobs out and moves on.
    let again = post_json(s.addr, "/v1/jobs/retry", r#"{"state":"dead"}"#).json();
    assert_eq!(again["more"], false);
    let ids: Vec<u64> = again["retried"]
        .as_array()
        .expect("retried")
        .iter()
        .map(|x| x["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, vec![dead[2]]);
    let third = post_json(s.addr, "/v1/jobs/retry", r#"{"state":"dead"}"#).json();
    assert_eq!(third, serde_json::json!({"retried": [], "more": false}));
    // One at a time, asked twice while the copy waits, it is the same copy.
    let one = post_json(s.addr, &format!("/v1/jobs/{}/retry", dead[0]), "").json();
    assert_eq!(one["retried_as"].as_u64(), Some(first[0].1));
    // Every dead job is retried: the page offers no bulk retry.
    let dead_page = page(s.addr, "/ui/jobs?state=dead");
    assert_eq!(dead_page.matches("data-job=").count(), 3, "{dead_page}");
    assert!(!dead_page.contains("id=\"retry-all\""), "{dead_page}");
    // A bulk cancel takes waiting jobs only, and what the filter names.
    post_json(s.addr, "/v1/jobs/cancel", r#"{"state":"dead"}"#).error(400);
    let none = post_json(
        s.addr,
        "/v1/jobs/cancel",
        r#"{"state":"queued","priority":"low"}"#,
    );
    assert_eq!(none.json()["cancelled"], serde_json::json!([]));
    let all = post_json(
        s.addr,
        "/v1/jobs/cancel",
        r#"{"state":"queued","symbol":"AAPL"}"#,
    );
    assert_eq!(all.status, 200, "{}", all.text());
    assert_eq!(all.json()["cancelled"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        get(s.addr, "/v1/jobs?state=queued").json(),
        serde_json::json!([])
    );
    // The same through the dashboard's form.
    let r = request(
        s.addr,
        "POST",
        "/ui/jobs/retry",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", "http://127.0.0.1"),
        ],
        b"state=cancelled&back=/ui/jobs%3Fstate%3Dcancelled",
    );
    assert_eq!(r.status, 303);
    let to = r.header("location").expect("location");
    assert!(
        to.starts_with("/ui/jobs?state=cancelled&note=3%20jobs"),
        "{to}"
    );
    assert_eq!(
        get(s.addr, "/v1/jobs?state=queued")
            .json()
            .as_array()
            .map(Vec::len),
        Some(3)
    );
}

#[test]
fn a_priority_pauses_and_resumes() {
    let s = server(Config::default(), 0);
    let r = post_json(s.addr, "/v1/priorities/low/resume", "");
    assert_eq!(
        r.json(),
        serde_json::json!({"priority": "low", "paused": false})
    );
    assert_eq!(get(s.addr, "/v1/stats").json()["paused"]["low"], false);
    assert_eq!(get(s.addr, "/v1/stats").json()["paused"]["high"], true);
    post_json(s.addr, "/v1/priorities/low/pause", "");
    assert_eq!(get(s.addr, "/v1/stats").json()["paused"]["low"], true);
    post_json(s.addr, "/v1/priorities/urgent/pause", "").error(400);
    let store = &s.service.app().engine().store().clone();
    assert!(store.stats().expect("stats").paused[Priority::Low as usize]);
}

/// Per ticker of the sample, its rows in file order (read here with the
/// csv and flate2 crates, not kiln's reader).
fn sample_rows() -> std::collections::BTreeMap<String, Vec<Vec<String>>> {
    let file = std::fs::File::open(SAMPLE).expect("sample");
    let mut csv = csv::Reader::from_reader(flate2::read::GzDecoder::new(file));
    let mut out: std::collections::BTreeMap<String, Vec<Vec<String>>> = Default::default();
    for row in csv.records() {
        let row = row.expect("row");
        out.entry(row[0].to_owned())
            .or_default()
            .push(row.iter().map(str::to_owned).collect());
    }
    out
}

#[test]
fn symbols_and_bars_read_as_json() {
    let s = server(Config::default(), 0);
    let rows = sample_rows();
    let symbols = get(s.addr, "/v1/symbols").json();
    let names: Vec<&str> = symbols
        .as_array()
        .expect("symbols")
        .iter()
        .map(|v| v["symbol"].as_str().expect("name"))
        .collect();
    assert_eq!(names, rows.keys().map(String::as_str).collect::<Vec<_>>());
    for v in symbols.as_array().expect("symbols") {
        let name = v["symbol"].as_str().expect("name");
        assert_eq!(v["bars"].as_u64(), Some(rows[name].len() as u64), "{name}");
    }
    let aapl = &symbols[0];
    assert_eq!(
        (aapl["outputs"].as_u64(), aapl["stale"].as_u64()),
        (Some(2), Some(0))
    );
    let next = get(s.addr, "/v1/symbols?after=AAPL&limit=2").json();
    let next: Vec<&str> = next
        .as_array()
        .expect("symbols")
        .iter()
        .map(|v| v["symbol"].as_str().expect("name"))
        .collect();
    assert_eq!(next, names[1..3]);
    // The last three AAPL bars, as the file has them.
    let bars = get(s.addr, "/v1/bars/AAPL?tail=3").json();
    let want = &rows["AAPL"][rows["AAPL"].len() - 3..];
    for (i, row) in want.iter().enumerate() {
        for (col, field) in [
            (2, "open"),
            (3, "high"),
            (4, "low"),
            (5, "close"),
            (6, "volume"),
        ] {
            let expected: f64 = row[col].parse().expect("number");
            assert_eq!(bars[field][i].as_f64(), Some(expected), "{field} {i}");
        }
        let ts = kiln::market::parse_iso(&row[1]).expect("date");
        assert_eq!(bars["ts"][i].as_i64(), Some(ts));
    }
    let window = get(s.addr, "/v1/bars/AAPL?from=2013-01-02&to=2013-01-04").json();
    assert_eq!(
        window["close"].as_array().map(Vec::len),
        Some(3),
        "{window}"
    );
    get(s.addr, "/v1/bars/NOPE").error(404);
    get(s.addr, "/v1/bars/AAPL?from=yesterday").error(400);
    get(s.addr, "/v1/symbols?after=bad%20name").error(400);
}

#[test]
fn the_live_stream_starts_with_a_snapshot_then_sends_new_events() {
    let s = server(Config::default(), 0);
    let mut c = TcpStream::connect(s.addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c.write_all(b"GET /ui/stream?stats=true HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("write");
    let mut got = String::new();
    let mut buf = [0u8; 8192];
    let mut read_until = |needle: &str, got: &mut String| {
        wait_until(needle, Duration::from_secs(10), || {
            if let Ok(n) = c.read(&mut buf) {
                got.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            got.contains(needle)
        });
    };
    read_until("event: stats", &mut got);
    assert!(got.contains("text/event-stream"), "{got}");
    read_until("\"jobs\":", &mut got);
    // A job cancelled now arrives as a `job` event.
    let store = s.service.app().engine().store().clone();
    let aapl = Symbol::new("AAPL").expect("symbol");
    let id = store
        .enqueue(NewJob::new("compute", b"sma(3)".to_vec()).symbols(vec![aapl]))
        .expect("enqueue")
        .id();
    assert_eq!(
        store.job(id).expect("job").map(|j| j.state),
        Some(JobState::Queued)
    );
    assert_eq!(
        store.cancel(id).expect("cancel"),
        kiln::store::CancelOutcome::Cancelled
    );
    read_until("event: job", &mut got);
    read_until(&format!("\"job\":{id}"), &mut got);
    read_until("\"state\":\"cancelled\"", &mut got);
}
