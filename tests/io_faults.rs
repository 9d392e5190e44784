//! I/O fault injection at every kind of call kiln makes to its files:
//! `kiln run` and `kiln ingest` run with the shim `tests/faults/io_fault.c`
//! preloaded, failing one kind of call on the data directory's files at
//! random (seeded) — write, pwrite, fsync, fdatasync, sync_file_range,
//! open (create), rename, unlink, ftruncate, read, pread — with EIO, or
//! ENOSPC where a write can. For every trial: no panic and no signal;
//! then, in a clean process, the store opens, every job the faulty run
//! acknowledged as succeeded (its durable events, printed by `--watch
//! --json`) is still succeeded, an ingest that said it committed is there
//! whole, `kiln check` passes, and a clean run finishes the rest.
//!
//! `KILN_IO_FAULT_ROUNDS` (default 1) repeats the list with new seeds;
//! `KILN_IO_FAULT_SEED` fixes the first.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use common::{SAMPLE, SAMPLE_MAP, fault_shim, kiln_command, kiln_ok};

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

/// The calls failed, each with the errnos it returns and its probability
/// per call on the data directory's files (low enough that a run gets some
/// way first).
const POINTS: &[(&str, &[i32], f64)] = &[
    ("write", &[EIO, ENOSPC], 0.05),
    ("pwrite", &[EIO, ENOSPC], 0.02),
    ("fsync", &[EIO], 0.05),
    ("fdatasync", &[EIO], 0.03),
    ("sync_file_range", &[EIO], 0.05),
    ("open", &[EIO, ENOSPC], 0.02),
    ("rename", &[EIO, ENOSPC], 0.2),
    ("unlink", &[EIO], 0.2),
    ("ftruncate", &[EIO, ENOSPC], 0.2),
    ("read", &[EIO], 0.1),
    ("pread", &[EIO], 0.01),
];

const SPECS: &[&str] = &[
    "sma(5)",
    "ema(9)",
    "rsi(14)",
    "macd(12,26,9)",
    "bbands(20,2)",
    "atr(14)",
    "wma(7)",
    "roc(10)",
];

/// Retries come quickly and never end a job, so a run's outcome is only
/// what the faults did to the store. Segments of 64 KiB: a run's results
/// and an ingest's bars fill several, so faults land in segment rolls too.
const CONFIG: &str = "attempts_max = 1000\nretry_base_ms = 5\nretry_cap_ms = 50\n\
                      breaker_recovery_ms = 20\nsegment_bytes_max = 65536\n";

/// One faulty run of `kiln`.
struct Fault<'a> {
    shim: &'a Path,
    data: &'a str,
    call: &'a str,
    errno: i32,
    probability: f64,
    seed: u64,
}

impl Fault<'_> {
    fn run(&self, kiln_args: &[&str]) -> Output {
        kiln_command(kiln_args)
            .env("LD_PRELOAD", self.shim)
            .env("KILN_FAULT_PATH", self.data)
            .env("KILN_FAULT_CALLS", self.call)
            .env("KILN_FAULT_ERRNO", self.errno.to_string())
            .env("KILN_FAULT_PROBABILITY", self.probability.to_string())
            .env("KILN_FAULT_SEED", self.seed.to_string())
            .output()
            .expect("run kiln")
    }
}

/// `kiln` arguments for the store in `data` with `config`, then `args`.
fn with_store(config: &str, data: &str, args: &[&str]) -> Vec<String> {
    ["--config", config, "--data", data]
        .iter()
        .chain(args)
        .map(|s| (*s).to_owned())
        .collect()
}

/// Job ids that complete JSON event lines report succeeded.
fn acknowledged_succeeded(stderr: &str) -> BTreeSet<u64> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["state"] == "succeeded")
        .filter_map(|v| v["job"].as_u64())
        .collect()
}

fn succeeded_now(data: &str) -> BTreeSet<u64> {
    let out = kiln_ok(&[
        "--data",
        data,
        "--json",
        "jobs",
        "list",
        "--state",
        "succeeded",
        "--limit",
        "100000",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .flat_map(|v| match v {
            serde_json::Value::Array(items) => items,
            other => vec![other],
        })
        .filter_map(|j| j["id"].as_u64())
        .collect()
}

fn symbols_now(data: &str) -> u64 {
    let out = kiln_ok(&["--data", data, "--json", "stats"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats json");
    v["symbols"].as_u64().expect("symbols")
}

fn assert_no_crash(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{what}: a crash ({:?}): {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
}

/// A CSV of `n` new symbols, 30 daily bars each, named after `tag`.
fn new_symbols_csv(dir: &Path, tag: usize, n: usize) -> String {
    let mut csv = String::from("symbol,ts,open,high,low,close,volume\n");
    for s in 0..n {
        for d in 0..30u64 {
            let close = 100.0 + (d as f64) * 0.5 + s as f64;
            csv.push_str(&format!(
                "N{tag}X{s},{},{close},{},{},{close},1000\n",
                1_600_000_000 + d * 86_400,
                close + 1.0,
                close - 1.0
            ));
        }
    }
    let path = dir.join(format!("new-{tag}.csv"));
    std::fs::write(&path, csv).expect("write csv");
    path.to_str().expect("utf-8").to_owned()
}

#[test]
fn every_injected_io_fault_leaves_a_store_that_reopens_with_everything_acknowledged() {
    let rounds: usize = std::env::var("KILN_IO_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut seed: u64 = std::env::var("KILN_IO_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        });
    eprintln!("io faults: KILN_IO_FAULT_SEED={seed}");
    let scratch = tempfile::tempdir().expect("tempdir");
    let shim = fault_shim(scratch.path());
    let config = scratch.path().join("kiln.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let config = config.to_str().expect("utf-8");
    let (mut trials, mut faulted_runs, mut acked_then_failed) = (0, 0, 0);
    for round in 0..rounds {
        for (p, &(call, errnos, probability)) in POINTS.iter().enumerate() {
            for &errno in errnos {
                trials += 1;
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let data = scratch.path().join(format!("data-{round}-{p}-{errno}"));
                let data = data.to_str().expect("utf-8");
                let with = |args: &[&str]| with_store(config, data, args);
                kiln_ok(
                    &with(&["ingest", "--map", SAMPLE_MAP, SAMPLE])
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                );
                for spec in SPECS {
                    kiln_ok(
                        &with(&["submit", "--all", "--features", spec])
                            .iter()
                            .map(String::as_str)
                            .collect::<Vec<_>>(),
                    );
                }
                let what = format!("{call} errno {errno} seed {seed}");
                let fault = Fault {
                    shim: &shim,
                    data,
                    call,
                    errno,
                    probability,
                    seed,
                };

                // A run under the fault.
                let args = with(&["--json", "run", "--until-idle", "--watch"]);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let run = fault.run(&args);
                assert_no_crash(&run, &format!("run, {what}"));
                let acked = acknowledged_succeeded(&String::from_utf8_lossy(&run.stderr));
                faulted_runs += usize::from(!run.status.success());
                acked_then_failed += usize::from(!run.status.success() && !acked.is_empty());

                // An ingest under the fault: all of it, or none.
                let csv = new_symbols_csv(scratch.path(), trials, 20);
                let before = symbols_now(data);
                let args = with(&["ingest", &csv]);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let ingest = fault.run(&args);
                assert_no_crash(&ingest, &format!("ingest, {what}"));

                let said = |o: &Output| {
                    let e = String::from_utf8_lossy(&o.stderr);
                    e.lines()
                        .find(|l| l.starts_with("kiln: "))
                        .unwrap_or("ok")
                        .to_owned()
                };
                eprintln!(
                    "{what}: run {} ({} acknowledged), ingest {}",
                    said(&run),
                    acked.len(),
                    said(&ingest)
                );

                // A clean process: the store opens and kept what was said.
                let after = symbols_now(data);
                if ingest.status.success() {
                    assert_eq!(after, before + 20, "{what}: an acknowledged ingest lost");
                } else {
                    assert!(
                        after == before || after == before + 20,
                        "{what}: half an ingest ({before} -> {after} symbols)"
                    );
                }
                let now = succeeded_now(data);
                let lost: Vec<_> = acked.difference(&now).collect();
                assert!(lost.is_empty(), "{what}: acknowledged jobs lost: {lost:?}");
                let check = kiln_command(with(&["check"])).output().expect("check");
                assert!(
                    check.status.success(),
                    "{what}: check: {}{}",
                    String::from_utf8_lossy(&check.stdout),
                    String::from_utf8_lossy(&check.stderr)
                );
                kiln_ok(
                    &with(&["run", "--until-idle"])
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                );
                assert_eq!(
                    succeeded_now(data).len(),
                    SPECS.len() * 5,
                    "{what}: a clean run finishes every job"
                );
            }
        }
    }
    eprintln!(
        "io faults: {trials} trials, {faulted_runs} runs ended by a fault, {acked_then_failed} of them after acknowledging jobs"
    );
    assert!(
        faulted_runs > 0,
        "no fault ever ended a run: the injection does nothing"
    );
}

/// A failed fsync is fatal for the process that saw it: `kiln run` stops
/// and fsyncs nothing after it, not even at shutdown (a retried fsync can
/// report success for pages the kernel already dropped). The shim fails
/// the n-th fsync-like call on the data directory and every one after it,
/// and reports each as it fails: only the first may fail, but for sled's
/// `sync_file_range` of its log, which its I/O threads issue for their own
/// buffers at once (in flight when the first fails).
#[test]
fn a_failed_fsync_is_never_retried_by_the_process_that_saw_it() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let shim = fault_shim(scratch.path());
    let config = scratch.path().join("kiln.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let config = config.to_str().expect("utf-8");
    let mut hit = 0;
    let mut trials = 0;
    let all = "fsync,fdatasync,sync_file_range";
    for call in ["fsync", "fdatasync", "sync_file_range", all] {
        for nth in [1, 3, 9, 27, 81] {
            trials += 1;
            let data = scratch
                .path()
                .join(format!("data-{}-{nth}", call.replace(',', "+")));
            let data = data.to_str().expect("utf-8");
            let with = |args: &[&str]| with_store(config, data, args);
            let ok = |args: &[&str]| {
                let args = with(args);
                kiln_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
            };
            ok(&["ingest", "--map", SAMPLE_MAP, SAMPLE]);
            ok(&["submit", "--all", "--features", "sma(5),rsi(14)"]);
            let what = format!("{call} from the {nth}th on");
            let run = kiln_command(with(&["run", "--until-idle"]))
                .env("LD_PRELOAD", &shim)
                .env("KILN_FAULT_PATH", data)
                .env("KILN_FAULT_CALLS", call)
                .env("KILN_FAULT_NTH", nth.to_string())
                .env("KILN_FAULT_COUNT", "1000000")
                .env("KILN_FAULT_REPORT", "1")
                .output()
                .expect("run kiln");
            assert_no_crash(&run, &what);
            let stderr = String::from_utf8_lossy(&run.stderr);
            let lines: Vec<&str> = stderr.lines().collect();
            let failed: Vec<&str> = lines
                .iter()
                .filter_map(|l| l.strip_prefix("kiln-fault: "))
                .collect();
            eprintln!("{what}: failed on {failed:?}, exit {:?}", run.status.code());
            if failed.is_empty() {
                // The run made fewer such calls.
                assert!(run.status.success(), "{what}: {stderr}");
                continue;
            }
            hit += 1;
            let later: Vec<&&str> = failed
                .iter()
                .skip(1)
                .filter(|l| !(l.starts_with("sync_file_range ") && l.ends_with("/db")))
                .collect();
            assert!(
                later.is_empty(),
                "{what}: fsynced after a failure: {later:?}: {stderr}"
            );
            assert!(!run.status.success(), "{what}: the run went on: {stderr}");
            // Poisoned ("restart kiln"), or refused at open (the open's
            // copy of sled is fsynced before the store is used).
            assert!(stderr.contains("Input/output error"), "{what}: {stderr}");
            // A new process finds the store sound and finishes the work.
            kiln_ok(
                &with(&["check"])
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            );
            ok(&["run", "--until-idle"]);
        }
    }
    assert!(
        hit * 2 >= trials,
        "only {hit} of {trials} runs reached the failing call"
    );
}
