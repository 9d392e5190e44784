//! The `kiln` binary as a user runs it.

mod common;

use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

use common::{SAMPLE, SAMPLE_MAP, interrupt, kiln, kiln_command, kiln_fails, kiln_ok, wait_until};

/// One bench at a time: each measures against the clock, and two at once
/// would take each other's cores.
static ONE_BENCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `kiln bench <args> --json --dir <scratch>`, checks it succeeded and
/// left nothing behind, and returns its lines, each one JSON object.
fn bench_json(args: &[&str]) -> Vec<serde_json::Value> {
    let _alone = ONE_BENCH
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().to_str().expect("utf-8 path");
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", "--dir", dir]);
    let out = kiln_ok(&all);
    let left: Vec<_> = std::fs::read_dir(scratch.path()).expect("ls").collect();
    assert!(left.is_empty(), "scratch data left behind: {left:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn bench_queue_json_prints_every_figure_once() {
    let lines = bench_json(&["queue", "--jobs", "200", "--symbols", "3", "--bars", "50"]);
    let names: Vec<&str> = lines
        .iter()
        .map(|v| {
            assert_eq!(v["bench"], "queue");
            assert!(v["value"].as_f64().expect("numeric value") > 0.0, "{v}");
            assert!(
                matches!(v["unit"].as_str(), Some("jobs/s" | "MB/s" | "us")),
                "{v}"
            );
            v["name"].as_str().expect("name")
        })
        .collect();
    assert_eq!(
        names,
        [
            "enqueue_single_concurrent",
            "enqueue_batch100",
            "claim_complete_batch",
            "lifecycle_sync",
            "floor_sled_fsync",
            "results_mb_per_s",
            "floor_file_mb_per_s",
            "idle_pickup_us",
        ]
    );
}

/// A small `kiln bench http` (1 s of 4 connections at 400 requests/s over
/// 20 symbols) with `extra` arguments: its figures by name.
fn bench_http_figures(extra: &[&str]) -> std::collections::BTreeMap<String, f64> {
    let mut args = vec![
        "http",
        "--seconds",
        "1",
        "--symbols",
        "20",
        "--bars",
        "300",
        "--connections",
        "4",
        "--rate",
        "400",
    ];
    args.extend_from_slice(extra);
    bench_json(&args)
        .iter()
        .map(|v| {
            assert_eq!(v["bench"], "http");
            let value = v["value"].as_f64().expect("numeric value");
            (v["name"].as_str().expect("name").to_owned(), value)
        })
        .collect()
}

/// The figures every run reports.
const HTTP_FIGURES: [&str; 11] = [
    "background_jobs",
    "capacity_p99_ms",
    "capacity_requests_per_s",
    "errors",
    "offered_per_s",
    "p50_ms",
    "p999_ms",
    "p99_ms",
    "requests",
    "requests_per_s",
    "warmup_p99_ms",
];

#[test]
fn bench_http_answers_every_request_it_offers() {
    let figures = bench_http_figures(&[]);
    // The batch's figures: its duration only when it finished, a p99 only
    // for a part with requests.
    let optional = ["after_batch_p99_ms", "batch_p99_ms", "batch_s"];
    let mut expected = HTTP_FIGURES.to_vec();
    expected.push("batch_requests");
    expected.sort_unstable();
    assert_eq!(
        figures
            .keys()
            .map(String::as_str)
            .filter(|k| !optional.contains(k))
            .collect::<Vec<_>>(),
        expected
    );
    assert!(figures["batch_requests"] <= figures["requests"]);
    assert_eq!(
        figures.contains_key("batch_p99_ms"),
        figures["batch_requests"] > 0.0,
        "{figures:?}"
    );
    match figures.get("batch_s") {
        // Unfinished: every request was sent while it ran.
        None => assert_eq!(figures["batch_requests"], figures["requests"]),
        Some(&s) => {
            assert!(s > 0.0, "{figures:?}");
            assert_eq!(figures["background_jobs"], 20.0, "{figures:?}");
            assert_eq!(
                figures.contains_key("after_batch_p99_ms"),
                figures["batch_requests"] < figures["requests"],
                "{figures:?}"
            );
        }
    }
    // Every request due in the second (4 connections, one every 10 ms
    // each) is sent and answered with 200, none more.
    assert_eq!(figures["requests"], 400.0, "{figures:?}");
    assert_eq!(figures["errors"], 0.0, "{figures:?}");
    assert!(figures["requests_per_s"] > 0.0, "{figures:?}");
    assert!(figures["capacity_requests_per_s"] > 0.0, "{figures:?}");
}

#[test]
fn bench_http_without_a_batch_runs_no_jobs_and_reports_no_batch_figures() {
    let figures = bench_http_figures(&["--no-batch"]);
    assert_eq!(
        figures.keys().map(String::as_str).collect::<Vec<_>>(),
        HTTP_FIGURES
    );
    assert_eq!(figures["background_jobs"], 0.0, "{figures:?}");
    assert_eq!(figures["requests"], 400.0, "{figures:?}");
    assert_eq!(figures["errors"], 0.0, "{figures:?}");
}

#[test]
fn out_of_range_sizes_are_refused_with_the_limit() {
    // clap's own error: several lines, with usage.
    let out = kiln(&["bench", "queue", "--jobs", "5"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--jobs") && err.contains("100"), "{err}");
}

#[test]
fn help_explains_the_bench() {
    let out = kiln_ok(&["bench", "queue", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--json") && text.contains("floor"), "{text}");
}

#[test]
fn ingest_then_export_round_trips_the_real_sample() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let data = scratch.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let out = kiln_ok(&[
        "--data", data, "--json", "ingest", "--map", SAMPLE_MAP, SAMPLE,
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(
        (
            v["rows"].as_u64(),
            v["symbols"].as_u64(),
            v["rejected"].as_u64()
        ),
        (Some(12_154), Some(5), Some(0))
    );

    let csv = scratch.path().join("ibm.csv");
    let out = kiln_ok(&[
        "--data",
        data,
        "export",
        "--format",
        "csv",
        "--symbols",
        "IBM",
        "--out",
        csv.to_str().expect("utf-8"),
    ]);
    let summary = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        summary.starts_with("exported 3270 rows of 1 symbols"),
        "{summary}"
    );
    let text = std::fs::read_to_string(&csv).expect("export");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("symbol,ts,open,high,low,close,volume,vwap")
    );
    assert_eq!(lines.count(), 3270);
}

#[test]
fn a_rejected_ingest_is_one_line_and_a_failure() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let data = scratch.path().join("data");
    let data = data.to_str().expect("utf-8");
    let bad = scratch.path().join("bad.csv");
    std::fs::write(
        &bad,
        "symbol,ts,open,high,low,close,volume\nA,2020-01-02,1,0.5,0.4,1,1\n",
    )
    .expect("write");
    let bad = bad.to_str().expect("utf-8");
    kiln_fails(
        &["--data", data, "ingest", bad],
        "bad.csv: line 2, column high: high 0.5 is below max(open, close) = 1",
    );
    kiln_fails(
        &["--data", data, "ingest", "--report", "r.csv", bad],
        "--on-error skip",
    );
}

/// An operating-system error is said once, after the file it concerns.
#[test]
fn a_missing_file_or_a_file_for_a_directory_is_named_once() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let data = scratch.path().join("data");
    let data = data.to_str().expect("utf-8");
    let missing = scratch.path().join("missing.csv");
    let missing = missing.to_str().expect("utf-8");
    let err = kiln_fails(&["--data", data, "ingest", missing], "missing.csv");
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "the cause once: {err}"
    );
    let config = scratch.path().join("missing.toml");
    let err = kiln_fails(
        &["--config", config.to_str().expect("utf-8"), "stats"],
        "missing.toml",
    );
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");

    let file = scratch.path().join("a-file");
    std::fs::write(&file, "not a data directory").expect("write");
    let file = file.to_str().expect("utf-8");
    kiln_fails(
        &["--data", file, "stats"],
        "a-file is a file, not a directory",
    );
    assert_eq!(
        std::fs::read_to_string(file).expect("read"),
        "not a data directory",
        "left as it was"
    );
}

/// stderr on a full disk (`/dev/full` fails every write with ENOSPC):
/// messages, warnings and logs are dropped, the commands still work.
#[test]
fn messages_that_cannot_be_written_never_crash_kiln() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let data = scratch.path().join("data");
    let data = data.to_str().expect("utf-8");
    let full = || {
        Stdio::from(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .expect("/dev/full"),
        )
    };
    let run = |args: &[&str]| {
        kiln_command(args)
            .env("KILN_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(full())
            .status()
            .expect("run kiln")
            .code()
    };
    let missing = scratch.path().join("missing.csv");
    let missing = missing.to_str().expect("utf-8");
    assert_eq!(
        run(&["--data", data, "ingest", missing]),
        Some(1),
        "an error"
    );
    kiln_ok(&["--data", data, "ingest", "--map", SAMPLE_MAP, SAMPLE]);
    assert_eq!(
        run(&[
            "--data",
            data,
            "submit",
            "--symbols",
            "AAPL",
            "--features",
            "sma(5)"
        ]),
        Some(0)
    );
    assert_eq!(
        run(&["--data", data, "run", "--until-idle", "--watch"]),
        Some(0)
    );
    // No process serves the events: said on stderr, which fails.
    assert_eq!(run(&["--data", data, "watch"]), Some(0));
    let out = kiln_ok(&["--data", data, "features", "AAPL", "sma(5)", "--tail", "1"]);
    assert!(!out.stdout.is_empty(), "the run's results are there");
}

#[test]
fn demo_runs_end_to_end_and_the_commands_read_its_results() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let data = scratch.path().join("demo");
    let data = data.to_str().expect("utf-8 path");
    let out = kiln_ok(&[
        "--data",
        data,
        "--json",
        "demo",
        "--symbols",
        "20",
        "--bars",
        "300",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["symbols"], 25);
    assert_eq!(v["succeeded"], 25);
    assert_eq!(v["dead"], 0);
    assert_eq!(
        v["series"],
        25 * 20,
        "20 outputs per symbol (the saved state is the frame's, not a series)"
    );
    assert_eq!(v["check_problems"], 0);
    // AAPL's last close is 430.47 (the sample's last AAPL row): its sma(5)
    // is the mean of the last five closes, 441.642 by hand.
    let sma5 = v["aapl"]["sma(5)"].as_f64().expect("sma(5)");
    assert!((sma5 - 441.642).abs() < 1e-9, "{sma5}");

    let out = kiln_ok(&[
        "--data", data, "features", "AAPL", "rsi(14)", "--format", "csv", "--tail", "2",
    ]);
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[2].starts_with("2013-03-01T00:00:00Z,"), "{text}");

    let out = kiln_ok(&["--data", data, "--json", "watch"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 25);

    kiln_fails(&["--data", data, "jobs", "show", "999"], "no job 999");
    kiln_fails(&["--data", data, "jobs", "retry", "999"], "no job 999");
    kiln_fails(
        &["--data", data, "jobs", "retry", "1"],
        "job 1 is succeeded",
    );

    let out = kiln(&["--data", data, "check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    kiln_fails(
        &[
            "--data",
            data,
            "submit",
            "--symbols",
            "NOPE",
            "--features",
            "sma(5)",
        ],
        "NOPE has no bars",
    );
}

#[test]
fn watch_follows_a_running_worker_from_another_process() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let data = scratch.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    kiln_ok(&["--data", data, "ingest", SAMPLE, "--map", SAMPLE_MAP]);
    kiln_ok(&["--data", data, "submit", "--all", "--features", "sma(3)"]);
    let mut worker = kiln_command(["--data", data, "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the worker");
    let socket = std::path::Path::new(data).join("events.sock");
    wait_until(
        "the worker serves an event feed",
        Duration::from_secs(30),
        || socket.exists(),
    );
    let mut watcher = kiln_command(["--data", data, "--json", "watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the watcher");
    let stdout = watcher.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.expect("line")).is_err() {
                return;
            }
        }
    });
    // The five jobs' events arrive while the worker still runs.
    let mut jobs = std::collections::BTreeSet::new();
    while jobs.len() < 5 {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("an event from the feed");
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON event");
        assert_eq!(v["state"], "succeeded", "{line}");
        assert_eq!(v["kind"], "compute", "{line}");
        jobs.insert(v["job"].as_u64().expect("job id"));
    }
    assert!(
        worker.try_wait().expect("poll").is_none(),
        "the worker still runs"
    );
    interrupt(&worker);
    let out = worker.wait_with_output().expect("worker");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The worker's end closes the feed, which ends the watcher.
    let status = watcher.wait().expect("watcher");
    assert!(status.success());
    assert!(
        rx.recv_timeout(Duration::from_secs(5)).is_err(),
        "no more events"
    );
    assert!(!socket.exists(), "the socket is removed");
}

#[test]
fn serve_answers_on_loopback_and_stops_cleanly_on_sigint() {
    use common::http::{get, request};
    use std::io::{Read, Write};

    let scratch = tempfile::tempdir().expect("tempdir");
    let data = scratch.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let mut server = kiln_command(["--data", data, "--json", "serve", "--addr", "127.0.0.1:0"])
        .env("KILN_TOKEN", "t0ken")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let mut stdout = std::io::BufReader::new(server.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("the listening line");
    let v: serde_json::Value = serde_json::from_str(&first).expect("JSON");
    let addr: std::net::SocketAddr = v["listening"]
        .as_str()
        .expect("address")
        .parse()
        .expect("an address");
    assert!(addr.ip().is_loopback());
    let bearer = [("Authorization", "Bearer t0ken")];
    assert_eq!(get(addr, "/health").status, 200);
    assert_eq!(
        get(addr, "/metrics").status,
        401,
        "the token from KILN_TOKEN"
    );
    let metrics = request(addr, "GET", "/metrics", &bearer, b"");
    assert!(metrics.text().contains("kiln_jobs_total"));
    // Another kiln on the same directory is sent to the server.
    let held = kiln_fails(&["--data", data, "stats"], "is in use by kiln serve");
    assert!(
        held.contains(&format!("(process {}) at http://{addr}", server.id())),
        "{held}"
    );
    // An open event stream does not keep the server from stopping.
    let mut events = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        events,
        "GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer t0ken\r\n\r\n"
    )
    .expect("write");
    let mut head = [0u8; 12];
    events.read_exact(&mut head).expect("the stream's head");
    assert_eq!(&head, b"HTTP/1.1 200");
    interrupt(&server);
    let status = server.wait().expect("wait");
    let mut err = String::new();
    server
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert!(status.success(), "{err}");
    assert!(!std::path::Path::new(data).join("events.sock").exists());
    assert!(
        !std::path::Path::new(data).join("serve.json").exists(),
        "the serve file goes with the server"
    );
    // One left by a server killed with SIGKILL (its pid perhaps reused) is
    // removed by the next process that holds the directory.
    let left = std::path::Path::new(data).join("serve.json");
    std::fs::write(&left, r#"{"url": "http://127.0.0.1:9", "pid": 1}"#).expect("write");
    kiln_ok(&["--data", data, "stats"]);
    assert!(!left.exists(), "a dead server's serve file is removed");
}
