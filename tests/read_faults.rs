//! A read error while kiln opens a store never destroys it and never rolls
//! it back. sled 0.34 takes a failed read during its recovery for the end
//! of its log (then zeroes, truncates and snapshots); kiln opens a copy of
//! sled's directory and checks it first (`store/src/generation.rs`).
//!
//! A finished store is opened by `kiln stats` with the k-th read of sled's
//! files failing (the LD_PRELOAD shim `tests/faults/io_fault.c`, built
//! here with `cc`), for every k from 1 to `KILN_READ_FAULTS` (default 40:
//! the reads of sled's recovery and the first page reads after it). After
//! each: the faulty open either failed or saw every job; a clean open then
//! sees every job succeeded and `kiln check` passes.
//!
//! And a read error in the value log (read with `pread`, not a memory map,
//! whose error would be a SIGBUS) fails that read, or that job's attempt,
//! never the process.

mod common;

use std::path::Path;

use common::{SAMPLE, SAMPLE_MAP, fault_shim, kiln_command, kiln_ok};
use kiln_store::prelude::*;
use kiln_store::{FrameWrite, NewJob, Series, SeriesKey, Store, StoreConfig, Symbol};

const JOBS: u64 = 300;

/// A store with `JOBS` succeeded jobs, each with a small result, written
/// over several sessions so that sled's log spans several segments.
fn finished_store(dir: &Path) {
    for session in 0..3 {
        let store = Store::open(dir, StoreConfig::default()).expect("open");
        let per = JOBS / 3;
        let mut jobs = Vec::new();
        for i in 0..per {
            let n = session * per + i;
            let symbol = Symbol::new(format!("S{n:04}")).expect("symbol");
            jobs.push(
                NewJob::new("compute", format!("job {n}").into_bytes()).symbols(vec![symbol]),
            );
        }
        store.enqueue_many(jobs).expect("enqueue");
        loop {
            let leases = store.claim(32).expect("claim");
            if leases.is_empty() {
                break;
            }
            for lease in leases {
                let symbol = lease.job.symbols[0].clone();
                let key = SeriesKey::new(symbol, "sma(3)").expect("key");
                let values: Vec<f64> = (0..40).map(f64::from).collect();
                let series = Series {
                    bar_count: values.len() as u64,
                    last_ts: 42,
                    data_hash: 0,
                    values,
                    state: vec![1, 2, 3],
                };
                store
                    .complete(lease.token, vec![FrameWrite::from((key, series))])
                    .expect("complete");
            }
        }
    }
}

fn succeeded(out: &std::process::Output) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats json");
    v["jobs"]["succeeded"].as_u64().expect("succeeded count")
}

#[test]
fn a_read_error_while_opening_never_loses_or_rolls_back_acknowledged_work() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let shim = fault_shim(scratch.path());
    let data = scratch.path().join("data");
    finished_store(&data);
    let data = data.to_str().expect("utf-8");
    let trials: u64 = std::env::var("KILN_READ_FAULTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let (mut failed_opens, mut retried) = (0, 0);
    for k in 1..=trials {
        let faulty = kiln_command(["--data", data, "--json", "stats"])
            .env("LD_PRELOAD", &shim)
            .env("KILN_FAULT_NTH", k.to_string())
            .env("KILN_FAULT_PATH", "/data/sled")
            .output()
            .expect("run kiln");
        let stderr = String::from_utf8_lossy(&faulty.stderr);
        assert_ne!(faulty.status.code(), Some(101), "k={k}: a panic: {stderr}");
        if faulty.status.success() {
            assert_eq!(succeeded(&faulty), JOBS, "k={k}: an open that lost work");
            retried += u64::from(stderr.contains("opening a copy of sled failed"));
        } else {
            failed_opens += 1;
        }
        let clean = kiln_command(["--data", data, "--json", "stats"])
            .output()
            .expect("run kiln");
        assert!(
            clean.status.success(),
            "k={k}: the store no longer opens: {}",
            String::from_utf8_lossy(&clean.stderr)
        );
        assert_eq!(
            succeeded(&clean),
            JOBS,
            "k={k}: acknowledged work rolled back"
        );
        let check = kiln_command(["--data", data, "check"])
            .output()
            .expect("run kiln");
        assert!(
            check.status.success(),
            "k={k}: check: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    eprintln!(
        "read faults: {trials} opens with one failed read: {failed_opens} refused, {retried} retried on a fresh copy"
    );
    assert!(
        failed_opens + retried > 0,
        "no injected fault reached sled: the shim matched no reads"
    );
}

#[test]
fn a_read_error_in_the_value_log_fails_that_read_or_that_job_never_the_process() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let shim = fault_shim(scratch.path());
    let data = scratch.path().join("data");
    let data = data.to_str().expect("utf-8");
    kiln_ok(&["--data", data, "ingest", "--map", SAMPLE_MAP, SAMPLE]);
    kiln_ok(&[
        "--data",
        data,
        "submit",
        "--symbols",
        "AAPL",
        "--features",
        "sma(5)",
    ]);
    kiln_ok(&["--data", data, "run", "--until-idle"]);
    let faulty = |args: &[&str], k: u32, count: u32| {
        kiln_command(["--data", data].iter().chain(args))
            .env("LD_PRELOAD", &shim)
            .env("KILN_FAULT_NTH", k.to_string())
            .env("KILN_FAULT_COUNT", count.to_string())
            .env("KILN_FAULT_PATH", "/data/vlog/")
            .output()
            .expect("run kiln")
    };
    let mut failed_reads = 0;
    for k in 1..=4 {
        let out = faulty(&["features", "AAPL", "sma(5)", "--tail", "1"], k, 1);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {}
            Some(1) => {
                assert!(stderr.contains("Input/output error"), "k={k}: {stderr}");
                assert!(stderr.contains("vlog"), "k={k}: names the file: {stderr}");
                failed_reads += 1;
            }
            other => panic!("k={k}: the process died ({other:?}): {stderr}"),
        }
    }
    assert!(
        failed_reads > 0,
        "no injected read error reached the value log"
    );

    // Two reads in a row fail: the batch read of the bars and the single
    // read after it; the job's attempt fails and its retry succeeds.
    let mut failed_attempts = 0;
    for (k, period) in (1..=4).zip([7, 8, 9, 10]) {
        let spec = format!("ema({period})");
        kiln_ok(&[
            "--data",
            data,
            "submit",
            "--symbols",
            "AAPL",
            "--features",
            &spec,
        ]);
        let out = faulty(&["run", "--until-idle", "--watch"], k, 2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {
                failed_attempts += stderr
                    .lines()
                    .filter(|l| l.contains(" failed ") && l.contains("Input/output error"))
                    .count();
            }
            // The value log's header check at open: the run never started.
            Some(1) => assert!(stderr.contains("Input/output error"), "k={k}: {stderr}"),
            other => panic!("k={k}: the process died ({other:?}): {stderr}"),
        }
    }
    assert!(
        failed_attempts > 0,
        "no job attempt met an injected read error"
    );
    kiln_ok(&["--data", data, "run", "--until-idle"]);
    let stats = kiln_ok(&["--data", data, "--json", "stats"]);
    assert_eq!(succeeded(&stats), 5, "every job succeeded in the end");
    kiln_ok(&["--data", data, "check"]);
}
