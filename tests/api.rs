//! `kiln serve`'s HTTP API against a real server on 127.0.0.1:0: every
//! route and error status, the 202-then-200 flow of a missing feature, SSE
//! resume, token auth, rate limiting, health turning degraded and
//! unhealthy, and hostile input (malformed JSON, wrong types, oversized
//! bodies, invalid UTF-8, odd symbols, unknown specs) that must never get a
//! 500. The client is a few lines of HTTP/1.1 over a std socket.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::http::{Reply, get, post_json, request};
use common::{SAMPLE, sample_options, wait_until};
use kiln::store::prelude::*;

use kiln::api::{App, Service};
use kiln::config::{Config, EngineConfig, ServeConfig};
use kiln::engine::Engine;
use kiln::store::{NewJob, Priority, Store, Symbol};

struct Server {
    addr: SocketAddr,
    service: Service<Store>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn app(&self) -> &App<Store> {
        self.service.app()
    }
}

/// A server over the bundled sample (five real symbols), as `kiln serve`
/// starts it; without `running`, every priority is paused, so the runner
/// leaves the queue as requests fill it.
fn server(mut config: Config, running: bool) -> Server {
    // Many servers share this process and a busy machine: computing at
    // SCHED_IDLE (what `kiln serve` does) could starve their runners.
    config.engine.background_idle = false;
    let dir = tempfile::tempdir().expect("dir");
    let engine = Engine::open(dir.path(), config.clone()).expect("open");
    engine
        .ingest(&[SAMPLE.into()], &sample_options(), &mut |_| {})
        .expect("ingest");
    if !running {
        for p in Priority::ALL {
            engine.store().set_paused(p, true).expect("pause");
        }
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

fn wait_succeeded(addr: SocketAddr, id: u64) {
    wait_until(
        &format!("job {id} succeeded"),
        Duration::from_secs(30),
        || get(addr, &format!("/v1/jobs/{id}")).json()["state"] == "succeeded",
    );
}

#[test]
fn every_documented_route_is_served() {
    let s = server(Config::default(), true);
    let doc = get(s.addr, "/openapi.json").json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented: Vec<String> = paths
        .iter()
        .flat_map(|(path, methods)| {
            let methods = methods.as_object().expect("methods");
            methods
                .keys()
                .map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .collect();
    documented.sort();
    // Every route the router has (the list in the README's table).
    let mut routes = vec![
        "POST /v1/compute/batch",
        "GET /v1/jobs",
        "POST /v1/jobs/retry",
        "POST /v1/jobs/cancel",
        "GET /v1/jobs/{id}",
        "DELETE /v1/jobs/{id}",
        "POST /v1/jobs/{id}/retry",
        "POST /v1/priorities/{priority}/pause",
        "POST /v1/priorities/{priority}/resume",
        "POST /v1/bars",
        "GET /v1/bars/{symbol}",
        "GET /v1/symbols",
        "POST /v1/features/query",
        "GET /v1/features/{symbol}",
        "GET /v1/features/{symbol}/{spec}",
        "GET /v1/events",
        "GET /v1/stats",
        "GET /health",
        "GET /metrics",
        "GET /openapi.json",
    ];
    routes.sort_unstable();
    assert_eq!(documented, routes);
    for (path, methods) in paths {
        for (method, op) in methods.as_object().expect("methods") {
            let answers = op["responses"].as_object().expect("responses");
            // The guard's answers are on every route; the token's on all
            // but /health.
            for code in ["421", "429", "500", "503"] {
                assert!(answers.contains_key(code), "{method} {path}: no {code}");
            }
            assert_eq!(
                answers.contains_key("401"),
                path != "/health",
                "{method} {path}: 401"
            );
            for (code, answer) in answers {
                assert!(
                    answer["content"].as_object().is_some_and(|c| !c.is_empty()),
                    "{method} {path}: answer {code} has no body schema"
                );
            }
        }
    }
    for (path, methods) in paths {
        let target = path
            .replace("{symbol}", "AAPL")
            .replace("{spec}", "sma(3)")
            .replace("{id}", "1")
            .replace("{priority}", "low");
        for method in methods.as_object().expect("methods").keys() {
            let target = if target == "/v1/events" {
                "/v1/events?after=999999".to_owned()
            } else {
                target.clone()
            };
            let reply = if target.starts_with("/v1/events") {
                // A stream: the head is enough.
                events_head(s.addr, &target)
            } else {
                request(s.addr, &method.to_uppercase(), &target, &[], b"")
            };
            assert!(reply.status < 500, "{method} {target}: {}", reply.status);
            if reply.status == 404 || reply.status == 405 {
                let v = reply.json();
                assert_ne!(v["error"], "method_not_allowed", "{method} {target}");
                assert!(
                    !v["detail"].as_str().unwrap_or("").contains("no such route"),
                    "{method} {target} is documented but not routed"
                );
            }
        }
    }
    let r = get(s.addr, "/v2/nothing");
    assert!(r.error(404).contains("no such route"));
    let r = request(s.addr, "PUT", "/health", &[], b"");
    r.error(405);
}

fn events_head(addr: SocketAddr, target: &str) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").expect("write");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    Reply {
        status,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

#[test]
fn a_missing_feature_is_computed_once_then_served() {
    // No dispatcher yet: concurrent requests all get the same job.
    let s = server(Config::default(), false);
    let target = "/v1/features/MSFT/macd(12,26,9)?tail=5";
    let ids: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| get(s.addr, target)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let r = h.join().expect("thread");
                assert_eq!(r.status, 202, "{}", r.text());
                assert_eq!(r.header("retry-after"), Some("1"));
                r.json()["job_id"].as_u64().expect("job id")
            })
            .collect()
    });
    assert!(ids.iter().all(|&id| id == ids[0]), "one job: {ids:?}");
    let job = get(s.addr, &format!("/v1/jobs/{}", ids[0])).json();
    assert_eq!(
        (job["state"].as_str(), job["priority"].as_str()),
        (Some("queued"), Some("high"))
    );
    drop(s);

    let s = server(Config::default(), true);
    let first = get(s.addr, target);
    assert_eq!(first.status, 202);
    let id = first.json()["job_id"].as_u64().expect("id");
    assert_eq!(
        first.header("location"),
        Some(format!("/v1/jobs/{id}").as_str())
    );
    wait_succeeded(s.addr, id);
    let r = get(s.addr, target);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let ts = v["ts"].as_array().expect("ts");
    assert_eq!(ts.len(), 5);
    let values = v["values"].as_object().expect("values");
    let keys: Vec<&str> = values.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "macd(12,26,9).hist",
            "macd(12,26,9).macd",
            "macd(12,26,9).signal"
        ]
    );
    // The values are the stored series' last five, bit for bit.
    let msft = Symbol::new("MSFT").expect("symbol");
    let stored = s
        .app()
        .engine()
        .feature(&msft, "macd(12,26,9).signal")
        .expect("read")
        .expect("stored");
    let want = &stored.values()[stored.values().len() - 5..];
    let got: Vec<f64> = values["macd(12,26,9).signal"]
        .as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect();
    assert_eq!(got, want);
    let bars = s
        .app()
        .engine()
        .store()
        .bars(&msft, ..)
        .expect("bars")
        .expect("some");
    let last_ts: Vec<i64> = ts.iter().map(|t| t.as_i64().expect("ns")).collect();
    assert_eq!(last_ts, bars.ts()[bars.len() - 5..]);

    // One output by its label; a window by time.
    let r = get(
        s.addr,
        "/v1/features/MSFT/macd(12,26,9).signal?from=2013-01-01&to=2013-01-31",
    );
    let v = r.json();
    let n = v["ts"].as_array().expect("ts").len();
    assert!((19..=22).contains(&n), "trading days in January 2013: {n}");
    assert_eq!(v["values"].as_object().expect("values").len(), 1);

    // The latest values of every stored feature.
    let v = get(s.addr, "/v1/features/MSFT").json();
    assert_eq!(v["features"].as_object().expect("features").len(), 3);
    assert_eq!(v["features"]["macd(12,26,9).signal"]["current"], true);

    // A kept answer goes with new bars: the feature is stale, then current
    // again with the new bar at its end.
    assert_eq!(get(s.addr, target).status, 200, "kept");
    let bar = "symbol,ts,open,high,low,close,volume\nMSFT,2013-03-04,28,28.5,27.5,28.2,1000\n";
    let r = request(
        s.addr,
        "POST",
        "/v1/bars",
        &[("Content-Type", "text/csv")],
        bar.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut v = serde_json::Value::Null;
    wait_until("the series refreshed", Duration::from_secs(30), || {
        let r = get(s.addr, target);
        if r.status == 200 {
            v = r.json();
        }
        v["ts"][4].as_i64() == Some(1_362_355_200_000_000_000)
    });
    assert_eq!(v["ts"].as_array().map(Vec::len), Some(5));
}

#[test]
fn a_series_reads_as_an_arrow_stream() {
    let s = server(Config::default(), true);
    let first = get(s.addr, "/v1/features/AAPL/rsi(14)");
    wait_succeeded(s.addr, first.json()["job_id"].as_u64().expect("id"));
    let r = request(
        s.addr,
        "GET",
        "/v1/features/AAPL/rsi(14)?tail=10",
        &[("Accept", "application/vnd.apache.arrow.stream")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.apache.arrow.stream")
    );
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(r.body), None).expect("ipc");
    let batches: Vec<_> = reader.collect::<Result<_, _>>().expect("batches");
    assert_eq!(batches.len(), 1);
    let b = &batches[0];
    assert_eq!(b.num_rows(), 10);
    assert_eq!(b.schema().field(0).name(), "ts");
    assert_eq!(b.schema().field(1).name(), "rsi(14)");
}

#[test]
fn hostile_input_gets_a_json_error_never_a_500() {
    let config = Config {
        serve: ServeConfig {
            body_bytes_max: 4096,
            batch_symbols_max: 3,
            ..ServeConfig::default()
        },
        ..Config::default()
    };
    let s = server(config, false);
    let batch = "/v1/compute/batch";
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed JSON",
            b"{\"symbols\": [".to_vec(),
            400,
            "batch request",
        ),
        (
            "wrong type",
            br#"{"symbols": "AAPL", "features": "rsi(14)"}"#.to_vec(),
            400,
            "batch request",
        ),
        (
            "unknown field",
            br#"{"symbols": ["AAPL"], "features": "rsi(14)", "x": 1}"#.to_vec(),
            400,
            "unknown field",
        ),
        (
            "invalid UTF-8",
            b"{\"symbols\": [\"\xff\xfe\"], \"features\": \"rsi(14)\"}".to_vec(),
            400,
            "batch request",
        ),
        (
            "path symbol",
            br#"{"symbols": ["../x"], "features": "rsi(14)"}"#.to_vec(),
            400,
            "'/'",
        ),
        (
            "empty symbol",
            br#"{"symbols": [""], "features": "rsi(14)"}"#.to_vec(),
            400,
            "0 bytes",
        ),
        (
            "long symbol",
            format!(
                r#"{{"symbols": ["{}"], "features": "rsi(14)"}}"#,
                "A".repeat(33)
            )
            .into_bytes(),
            400,
            "33 bytes",
        ),
        (
            "control character",
            br#"{"symbols": ["AA\u0001"], "features": "rsi(14)"}"#.to_vec(),
            400,
            "contains",
        ),
        (
            "unknown spec",
            br#"{"symbols": ["AAPL"], "features": "rsx(14)"}"#.to_vec(),
            400,
            "unknown feature",
        ),
        (
            "bad parameter",
            br#"{"symbols": ["AAPL"], "features": "rsi(0)"}"#.to_vec(),
            400,
            "out of range",
        ),
        (
            "bad priority",
            br#"{"symbols": ["AAPL"], "features": "rsi(14)", "priority": "urgent"}"#.to_vec(),
            400,
            "urgent",
        ),
        (
            "unknown symbol",
            br#"{"symbols": ["ZZZZ"], "features": "rsi(14)"}"#.to_vec(),
            404,
            "no bars",
        ),
        (
            "too many symbols",
            br#"{"symbols": ["AAPL","MSFT","IBM","GE"], "features": "rsi(14)"}"#.to_vec(),
            400,
            "batch_symbols_max = 3",
        ),
        ("oversized body", vec![b' '; 5000], 413, ""),
    ];
    for (what, body, status, needle) in cases {
        let r = request(
            s.addr,
            "POST",
            batch,
            &[("Content-Type", "application/json")],
            &body,
        );
        let detail = r.error(status);
        assert!(detail.contains(needle), "{what}: {detail}");
    }
    // A good batch takes an array of specs too.
    let r = post_json(
        s.addr,
        batch,
        r#"{"symbols": ["AAPL", "MSFT"], "features": ["rsi(14)", "sma(5)"], "priority": "low"}"#,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["job_ids"].as_array().map(Vec::len), Some(2));

    for (target, status, needle) in [
        ("/v1/features/..%2Fx/rsi(14)", 400, "'/'"),
        ("/v1/features/%FF/rsi(14)", 400, ""),
        ("/v1/features/AA%01/rsi(14)", 400, "contains"),
        (
            &format!("/v1/features/{}/rsi(14)", "B".repeat(33)),
            400,
            "33 bytes",
        ),
        ("/v1/features/ZZZZ/rsi(14)", 404, "no bars"),
        ("/v1/features/ZZZZ", 404, "no bars"),
        ("/v1/features/AAPL/rsx(14)", 400, "unknown feature"),
        ("/v1/features/AAPL/macd(12,26,9).nope", 400, "no output"),
        ("/v1/features/AAPL/rsi(14)?tail=many", 400, ""),
        ("/v1/features/AAPL/rsi(14)?from=yesterday", 400, "from"),
        ("/v1/features/AAPL/rsi(14)?colour=red", 400, ""),
        ("/v1/jobs/abc", 400, "not a number"),
        ("/v1/jobs/99999", 404, "no job"),
        ("/v1/events?after=-1", 400, ""),
    ] {
        let r = get(s.addr, target);
        let detail = r.error(status);
        assert!(detail.contains(needle), "{target}: {detail}");
    }
    let r = request(s.addr, "GET", "/v1/events", &[("Last-Event-ID", "x")], b"");
    assert!(r.error(400).contains("Last-Event-ID"));
    // Many outputs in one request are refused; a repeated spec counts once.
    let many: Vec<String> = (2..70).map(|n| format!("sma({n})")).collect();
    let r = get(s.addr, &format!("/v1/features/AAPL/{}", many.join(",")));
    assert!(r.error(400).contains("at most 64"));
    let body = format!(
        r#"{{"symbols": ["AAPL"], "features": "{}"}}"#,
        many.join(",")
    );
    assert!(
        post_json(s.addr, batch, &body)
            .error(400)
            .contains("at most 64")
    );
    let repeated = vec!["sma(3)"; 200].join(",");
    assert_eq!(
        get(s.addr, &format!("/v1/features/AAPL/{repeated}")).status,
        202
    );
}

/// Submits `ema(10)` for IBM; the job's id.
fn submit_ibm_ema(s: &Server) -> u64 {
    let r = post_json(
        s.addr,
        "/v1/compute/batch",
        r#"{"symbols": ["IBM"], "features": "ema(10)"}"#,
    );
    r.json()["job_ids"][0].as_u64().expect("id")
}

#[test]
fn jobs_are_shown_and_queued_ones_cancelled() {
    let s = server(Config::default(), false);
    let id = submit_ibm_ema(&s);
    let job = get(s.addr, &format!("/v1/jobs/{id}")).json();
    assert_eq!(
        (job["state"].as_str(), job["payload"].as_str()),
        (Some("queued"), Some("ema(10)"))
    );
    let r = request(s.addr, "DELETE", &format!("/v1/jobs/{id}"), &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["state"], "cancelled");
    let r = request(s.addr, "DELETE", &format!("/v1/jobs/{id}"), &[], b"");
    assert!(r.error(409).contains("cancelled"));
    let r = request(s.addr, "DELETE", "/v1/jobs/424242", &[], b"");
    r.error(404);
}

#[test]
fn cancelled_jobs_are_retried_as_new_ones() {
    let s = server(Config::default(), false);
    let id = submit_ibm_ema(&s);
    let r = request(s.addr, "DELETE", &format!("/v1/jobs/{id}"), &[], b"");
    assert_eq!(r.status, 200);
    // The cancelled job is queued again as a new one; the new one, queued,
    // is not retried; an unknown job is not found.
    let r = post_json(s.addr, &format!("/v1/jobs/{id}/retry"), "");
    assert_eq!(r.status, 202, "{}", r.text());
    let v = r.json();
    assert_eq!(v["id"].as_u64(), Some(id));
    let new = v["retried_as"].as_u64().expect("retried_as");
    assert_ne!(new, id);
    let job = get(s.addr, &format!("/v1/jobs/{new}")).json();
    assert_eq!(
        (job["state"].as_str(), job["payload"].as_str()),
        (Some("queued"), Some("ema(10)"))
    );
    assert_eq!(job["symbols"], serde_json::json!(["IBM"]));
    let r = post_json(s.addr, &format!("/v1/jobs/{new}/retry"), "");
    assert!(r.error(409).contains("queued"));
    let r = post_json(s.addr, "/v1/jobs/424242/retry", "");
    assert!(r.error(404).contains("424242"));
    assert_eq!(r.json()["error"], "not_found");
    assert_eq!(get(s.addr, "/v1/jobs/424242").json()["error"], "not_found");
    let r = post_json(s.addr, "/v1/jobs/nope/retry", "");
    r.error(400);
}

#[test]
fn a_token_guards_every_route_but_health() {
    let config = Config {
        serve: ServeConfig {
            token: Some("s3cret-token".into()),
            ..ServeConfig::default()
        },
        ..Config::default()
    };
    let s = server(config, true);
    assert_eq!(get(s.addr, "/health").status, 200);
    let doc = request(
        s.addr,
        "GET",
        "/openapi.json",
        &[("Authorization", "Bearer s3cret-token")],
        b"",
    )
    .json();
    let mut guarded = 0;
    for (path, methods) in doc["paths"].as_object().expect("paths") {
        if path == "/health" {
            continue;
        }
        let target = path
            .replace("{symbol}", "AAPL")
            .replace("{spec}", "sma(3)")
            .replace("{id}", "1")
            .replace("{priority}", "low");
        for method in methods.as_object().expect("methods").keys() {
            let r = request(s.addr, &method.to_uppercase(), &target, &[], b"");
            r.error(401);
            guarded += 1;
        }
    }
    assert_eq!(guarded, 19);
    for auth in [
        None,
        Some("Bearer wrong-token!"),
        Some("Basic s3cret-token"),
        Some("Bearer s3cret"),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let r = request(s.addr, "GET", "/metrics", &headers, b"");
        r.error(401);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    let r = request(
        s.addr,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer s3cret-token")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(r.text().contains("kiln_jobs_total"));
}

#[test]
fn a_client_over_its_request_rate_gets_429_with_retry_after() {
    let config = Config {
        serve: ServeConfig {
            requests_per_s: 0.5,
            requests_burst: 3.0,
            ..ServeConfig::default()
        },
        ..Config::default()
    };
    let s = server(config, false);
    for _ in 0..3 {
        assert_eq!(get(s.addr, "/health").status, 200);
    }
    let r = get(s.addr, "/health");
    assert!(r.error(429).contains("requests/s"));
    assert_eq!(r.header("retry-after"), Some("2"));
}

#[test]
fn health_turns_degraded_past_the_queue_bound_and_unhealthy_when_poisoned() {
    let config = Config {
        engine: EngineConfig {
            admit_depth_max: 2,
            ..EngineConfig::default()
        },
        ..Config::default()
    };
    let s = server(config, false);
    let v = get(s.addr, "/health").json();
    assert_eq!(v["status"], "healthy", "{v}");
    // Past the bound (the store's own enqueue does not ask admission).
    let store = s.app().engine().store();
    for i in 0..3 {
        store
            .enqueue(
                NewJob::new("compute", format!("sma({})", i + 2).into_bytes())
                    .symbols(vec![Symbol::new("AAPL").expect("symbol")]),
            )
            .expect("enqueue");
    }
    let r = get(s.addr, "/health");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], "degraded", "{v}");
    assert_eq!(
        (
            v["checks"]["queue"]["ok"].as_bool(),
            v["checks"]["queue"]["depth"].as_u64()
        ),
        (Some(false), Some(3))
    );
    store.inject_commit_failure(false).expect("inject");
    assert!(
        store
            .enqueue(NewJob::new("compute", b"sma(9)".to_vec()))
            .is_err()
    );
    let r = get(s.addr, "/health");
    assert_eq!(r.status, 503);
    let v = r.json();
    assert_eq!(v["status"], "unhealthy", "{v}");
    assert!(
        v["checks"]["store"]["poisoned"]
            .as_str()
            .is_some_and(|p| p.contains("injected"))
    );
}

#[test]
fn events_stream_and_resume_from_the_last_event_id() {
    let s = server(Config::default(), true);
    let r = post_json(
        s.addr,
        "/v1/compute/batch",
        r#"{"symbols": ["AAPL", "MSFT", "IBM"], "features": "sma(3)"}"#,
    );
    let ids: Vec<u64> = r.json()["job_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    for &id in &ids {
        wait_succeeded(s.addr, id);
    }
    let mut sock = TcpStream::connect(s.addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        sock,
        "GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nLast-Event-ID: 1\r\n\r\n"
    )
    .expect("write");
    let mut seen = Vec::new();
    let mut jobs = Vec::new();
    for line in BufReader::new(sock).lines() {
        let line = line.expect("line");
        if let Some(id) = line.strip_prefix("id: ") {
            seen.push(id.trim().parse::<u64>().expect("seq"));
        }
        if let Some(data) = line.strip_prefix("data: ") {
            let v: serde_json::Value = serde_json::from_str(data).expect("event JSON");
            assert_eq!(v["state"], "succeeded");
            jobs.push(v["job"].as_u64().expect("job"));
        }
        if seen.len() == 2 && jobs.len() == 2 {
            break;
        }
    }
    assert_eq!(seen, [2, 3], "resumed after event 1");
    assert!(jobs.iter().all(|j| ids.contains(j)), "{jobs:?} of {ids:?}");
}

#[test]
fn bars_posted_as_csv_are_ingested_all_or_nothing() {
    let s = server(Config::default(), true);
    let good = "symbol,ts,open,high,low,close,volume\nNEWCO,2024-01-02,10,11,9,10.5,1000\nNEWCO,2024-01-03,10.5,12,10,11.5,1200\n";
    let r = request(
        s.addr,
        "POST",
        "/v1/bars",
        &[("Content-Type", "text/csv")],
        good.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["rows"].as_u64(), v["symbols"].as_u64()),
        (Some(2), Some(1))
    );
    let v = get(s.addr, "/v1/features/NEWCO").json();
    assert_eq!(v["bars"], 2);

    let bad = "symbol,ts,open,high,low,close,volume\nBADCO,2024-01-02,10,11,9,10.5,1000\nBADCO,2024-01-03,10,9,12,11,1200\n";
    let r = request(
        s.addr,
        "POST",
        "/v1/bars",
        &[("Content-Type", "text/csv")],
        bad.as_bytes(),
    );
    let detail = r.error(400);
    assert!(
        detail.contains("request body") && detail.contains("high"),
        "{detail}"
    );
    assert!(!detail.contains(".upload"), "no server paths: {detail}");
    get(s.addr, "/v1/features/BADCO").error(404);
    let r = request(s.addr, "POST", "/v1/bars?map=Ticker", &[], good.as_bytes());
    r.error(400);
    let r = request(s.addr, "POST", "/v1/bars", &[], b"");
    assert!(r.error(400).contains("empty"));
    let r = request(
        s.addr,
        "POST",
        "/v1/bars",
        &[("Content-Type", "image/png")],
        good.as_bytes(),
    );
    assert!(r.error(415).contains("image/png"));
}

/// The `kiln_bar_uploads_in_progress` gauge, once it reads `want`.
fn wait_uploads_in_progress(addr: SocketAddr, want: u32) {
    let line = format!("kiln_bar_uploads_in_progress {want}\n");
    wait_until(&line, Duration::from_secs(10), || {
        get(addr, "/metrics").text().contains(&line)
    });
}

/// Sends a `POST /v1/bars` head promising 1000 bytes and only a few.
fn start_slow_upload(addr: SocketAddr) -> TcpStream {
    let mut slow = TcpStream::connect(addr).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    slow.write_all(
        b"POST /v1/bars HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/csv\r\nContent-Length: 1000\r\n\r\nsymbol,ts,",
    )
    .expect("write");
    slow
}

#[test]
fn a_bar_upload_past_the_bound_gets_429_until_one_ends() {
    let config = Config {
        serve: ServeConfig {
            bars_uploads_max: 1,
            ..ServeConfig::default()
        },
        ..Config::default()
    };
    let s = server(config, false);
    let good = "symbol,ts,open,high,low,close,volume\nNEWCO,2024-01-02,10,11,9,10.5,1000\n";
    let upload = || {
        request(
            s.addr,
            "POST",
            "/v1/bars",
            &[("Content-Type", "text/csv")],
            good.as_bytes(),
        )
    };
    // An upload whose body is cut short holds the one place.
    let slow = start_slow_upload(s.addr);
    wait_uploads_in_progress(s.addr, 1);
    let refused = upload();
    assert!(refused.error(429).contains("bars_uploads_max"));
    assert_eq!(refused.json()["error"], "uploads_busy");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // Closing it frees the place.
    drop(slow);
    wait_uploads_in_progress(s.addr, 0);
    assert_eq!(upload().status, 200);
    assert_eq!(get(s.addr, "/v1/features/NEWCO").json()["bars"], 1);
}

#[test]
fn a_stalled_bar_upload_is_cut_off_and_uploads_can_be_turned_off() {
    let config = Config {
        serve: ServeConfig {
            bars_body_seconds_max: 1,
            bars_body_bytes_max: 64,
            ..ServeConfig::default()
        },
        ..Config::default()
    };
    let s = server(config, false);
    let mut slow = start_slow_upload(s.addr);
    let mut raw = Vec::new();
    let _ = slow.read_to_end(&mut raw);
    let head = String::from_utf8_lossy(&raw);
    assert!(
        head.starts_with("HTTP/1.1 408") && head.contains("bars_body_seconds_max"),
        "{head}"
    );
    wait_uploads_in_progress(s.addr, 0);
    let r = request(s.addr, "POST", "/v1/bars", &[], &[b'x'; 100]);
    assert!(r.error(413).contains("bars_body_bytes_max"));

    let off = Config {
        serve: ServeConfig {
            bars_uploads_max: 0,
            ..ServeConfig::default()
        },
        ..Config::default()
    };
    let s = server(off, false);
    let r = request(s.addr, "POST", "/v1/bars", &[], b"symbol,ts\n");
    assert!(r.error(403).contains("bars_uploads_max = 0"));
}

fn query(addr: SocketAddr, body: &str) -> Reply {
    post_json(addr, "/v1/features/query", body)
}

fn ipc_batches(r: &Reply) -> Vec<arrow_array::RecordBatch> {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.apache.arrow.stream")
    );
    arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(r.body.clone()), None)
        .expect("an Arrow stream")
        .collect::<Result<_, _>>()
        .expect("batches")
}

#[test]
fn many_symbols_read_as_one_arrow_table() {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, TimestampNanosecondType};
    let s = server(Config::default(), true);
    let symbols = ["AAPL", "FB", "GOOG", "IBM", "MSFT"];
    let r = post_json(
        s.addr,
        "/v1/compute/batch",
        r#"{"symbols": ["AAPL", "FB", "GOOG", "IBM", "MSFT"], "features": "sma(3),rsi(14)"}"#,
    );
    for id in r.json()["job_ids"].as_array().expect("ids") {
        wait_succeeded(s.addr, id.as_u64().expect("id"));
    }
    let store = s.app().engine().store();
    let batches = ipc_batches(&query(
        s.addr,
        r#"{"symbols": ["AAPL", "FB", "GOOG", "IBM", "MSFT"], "features": ["sma(3)", "rsi(14)"]}"#,
    ));
    let schema = batches[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["symbol", "ts", "sma(3)", "rsi(14)"]);
    let mut rows = Vec::new(); // (symbol, ts, sma(3)) over every batch
    for b in &batches {
        let sym = b.column(0).as_string_view();
        let ts = b.column(1).as_primitive::<TimestampNanosecondType>();
        let sma = b.column(2).as_primitive::<Float64Type>();
        assert_eq!(b.column(3).null_count(), 0, "warm-up is NaN, not null");
        for i in 0..b.num_rows() {
            rows.push((sym.value(i).to_owned(), ts.value(i), sma.value(i)));
        }
    }
    let mut at = 0;
    for symbol in symbols {
        let bars = store
            .bars(&Symbol::new(symbol).expect("symbol"), ..)
            .expect("read")
            .expect("bars");
        let close = bars.close();
        for (i, &t) in bars.ts().iter().enumerate() {
            let (sym, ts, sma) = &rows[at + i];
            assert_eq!((sym.as_str(), *ts), (symbol, t), "row {}", at + i);
            if i < 2 {
                assert!(sma.is_nan(), "{symbol} row {i} warms up");
            } else {
                // By hand: the mean of the last three closes.
                let want = (close[i - 2] + close[i - 1] + close[i]) / 3.0;
                assert!(
                    (sma - want).abs() <= 1e-9 * want,
                    "{symbol} row {i}: {sma} vs {want}"
                );
            }
        }
        at += bars.ts().len();
    }
    assert_eq!(at, rows.len(), "every row once, in the order asked");

    // A window, as text or as epoch ns, both ends included.
    let window = |from: &str, to: &str| -> usize {
        let body = format!(
            r#"{{"symbols": ["IBM", "FB"], "features": "sma(3)", "from": {from}, "to": {to}}}"#
        );
        ipc_batches(&query(s.addr, &body))
            .iter()
            .map(|b| b.num_rows())
            .sum()
    };
    // 2013-01-01 and 2013-01-31, 00:00 UTC: the bars in between, counted here.
    let (from, to) = (1_356_998_400_000_000_000_i64, 1_359_590_400_000_000_000_i64);
    let inside: usize = ["IBM", "FB"]
        .iter()
        .map(|sym| {
            let bars = store
                .bars(&Symbol::new(*sym).expect("symbol"), ..)
                .expect("read")
                .expect("bars");
            bars.ts()
                .iter()
                .filter(|&&t| (from..=to).contains(&t))
                .count()
        })
        .sum();
    assert_eq!(inside, 2 * 21, "January 2013 had 21 trading days");
    assert_eq!(window(r#""2013-01-01""#, r#""2013-01-31""#), inside);
    assert_eq!(window(&from.to_string(), &to.to_string()), inside);

    // What is not there or not asked well: named, never a 500.
    let e = query(
        s.addr,
        r#"{"symbols": ["IBM", "NOPE"], "features": "sma(3)"}"#,
    )
    .error(409);
    assert!(e.contains("NOPE has no bars"), "{e}");
    let e = query(s.addr, r#"{"symbols": ["IBM"], "features": "sma(4)"}"#).error(409);
    assert!(
        e.contains("IBM has no stored sma(4); compute it first"),
        "{e}"
    );
    let e = query(s.addr, r#"{"symbols": ["IBM"], "features": "sma(x)"}"#).error(400);
    assert!(e.contains("sma"), "{e}");
    let e = query(
        s.addr,
        r#"{"symbols": ["IBM"], "features": "sma(3)", "from": "2013-02-30"}"#,
    )
    .error(400);
    assert!(e.contains("from"), "{e}");
    let e = query(s.addr, r#"{"symbols": "IBM", "features": "sma(3)"}"#).error(400);
    assert!(e.contains("not a feature query"), "{e}");
    let many: Vec<String> = (0..1001).map(|i| format!("\"S{i}\"")).collect();
    let body = format!(
        r#"{{"symbols": [{}], "features": "sma(3)"}}"#,
        many.join(",")
    );
    let e = query(s.addr, &body).error(400);
    assert!(e.contains("batch_symbols_max = 1000"), "{e}");
}

#[test]
fn jobs_stats_and_event_pages_read_as_json() {
    let s = server(Config::default(), true);
    let id = submit_ibm_ema(&s);
    wait_succeeded(s.addr, id);
    let stats = get(s.addr, "/v1/stats").json();
    assert_eq!(stats["jobs"]["succeeded"], 1);
    assert_eq!(stats["jobs"]["queued"], 0);
    assert_eq!(stats["symbols"], 5);
    assert_eq!(stats["depth"]["high"], 0);
    let jobs = get(s.addr, "/v1/jobs?state=succeeded&limit=5").json();
    assert_eq!(jobs.as_array().map(Vec::len), Some(1));
    assert_eq!(jobs[0]["id"], id);
    assert_eq!(jobs[0]["symbols"][0], "IBM");
    assert_eq!(
        get(s.addr, "/v1/jobs?state=dead").json(),
        serde_json::json!([])
    );
    get(s.addr, "/v1/jobs?state=sleeping").error(400);
    get(s.addr, "/v1/jobs?limit=-1").error(400);
    let page = |target: &str| {
        request(
            s.addr,
            "GET",
            target,
            &[("Accept", "application/json")],
            b"",
        )
        .json()
    };
    let events = page("/v1/events?after=0");
    assert_eq!(events[0]["seq"], 1);
    assert_eq!(events[0]["job"], id);
    assert_eq!(events[0]["state"], "succeeded");
    assert_eq!(page("/v1/events?after=1"), serde_json::json!([]));
    assert_eq!(page("/v1/events?after=0&limit=0"), serde_json::json!([]));
}
