//! Admission control, rate limiting, the circuit breaker, metrics, and a
//! graceful stop on SIGINT.

mod common;

use common::{interrupt, kiln_command};
use kiln::store::prelude::*;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use kiln::config::{Config, EngineConfig};
use kiln::engine::guard::BreakerState;
use kiln::engine::{Engine, EngineError, RunObserver, run_reopening};
use kiln::features::spec::parse_list;
use kiln::market::synth;
use kiln::store::{
    CancelOutcome, JobState, NewJob, Priority, QueueConfig, RetryPolicy, Store, StoreConfig, Symbol,
};

fn engine(dir: &Path, config: Config, symbols: usize) -> (Engine, Vec<Symbol>) {
    let engine = Engine::open(dir, config).expect("open");
    let universe = synth::universe(symbols, 50, 3);
    engine
        .ingest_columns("synthetic", &universe)
        .expect("ingest");
    let names = universe.into_iter().map(|(s, _)| s).collect();
    (engine, names)
}

#[test]
fn a_client_over_its_rate_is_refused_with_a_retry_hint() {
    let dir = tempfile::tempdir().expect("dir");
    let config = Config {
        engine: EngineConfig {
            submit_symbols_per_s: 1.0,
            submit_burst_symbols: 3.0,
            ..EngineConfig::default()
        },
        ..Config::default()
    };
    let (engine, symbols) = engine(dir.path(), config, 5);
    let specs = parse_list("sma(3)").expect("specs");
    engine
        .submit_as("a", &symbols[..3], &specs, Priority::Normal)
        .expect("within the burst");
    match engine.submit_as("a", &symbols[3..4], &specs, Priority::Normal) {
        Err(EngineError::Refused {
            reason,
            retry_after_ms,
        }) => {
            assert!(reason.contains("client \"a\""), "{reason}");
            assert!((500..=1000).contains(&retry_after_ms), "{retry_after_ms}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    engine
        .submit_as("b", &symbols[3..4], &specs, Priority::Normal)
        .expect("another client");
    assert!(
        engine
            .metrics()
            .contains("kiln_submissions_refused_total 1\n")
    );
}

#[test]
fn a_deep_queue_refuses_submissions_instead_of_growing() {
    let dir = tempfile::tempdir().expect("dir");
    let config = Config {
        engine: EngineConfig {
            admit_depth_max: 4,
            ..EngineConfig::default()
        },
        ..Config::default()
    };
    let (engine, symbols) = engine(dir.path(), config, 6);
    let specs = parse_list("sma(3)").expect("specs");
    let queued = engine
        .submit(&symbols[..3], &specs, Priority::Normal)
        .expect("room");
    let e = engine
        .submit(&symbols[3..5], &specs, Priority::Normal)
        .expect_err("full");
    assert!(
        e.to_string().contains("admit_depth_max = 4") && e.to_string().contains("retry in"),
        "{e}"
    );
    assert_eq!(
        engine
            .store()
            .stats()
            .expect("stats")
            .depth(Priority::Normal),
        3,
        "nothing was added"
    );
    // Past the bound (jobs the store took directly), a cancel still works:
    // it adds no job.
    for s in &symbols[3..5] {
        engine
            .store()
            .enqueue(NewJob::new("compute", b"sma(3)".to_vec()).symbols(vec![s.clone()]))
            .expect("enqueue");
    }
    assert_eq!(
        engine.cancel_as("test", queued[0].id()).expect("cancel"),
        CancelOutcome::Cancelled
    );
    engine.run_until_idle(&mut |_| {}).expect("run");
    engine
        .submit(&symbols[3..5], &specs, Priority::Normal)
        .expect("room again");
}

#[test]
fn store_outages_open_the_breaker_and_it_shows() {
    let dir = tempfile::tempdir().expect("dir");
    let config = Config {
        engine: EngineConfig {
            breaker_failures: 2,
            breaker_recovery_ms: 60_000,
            ..EngineConfig::default()
        },
        ..Config::default()
    };
    let (engine, symbols) = engine(dir.path(), config, 3);
    let specs = parse_list("sma(3)").expect("specs");
    engine.store().inject_commit_failure(false).expect("inject");
    for _ in 0..2 {
        let e = engine
            .submit(&symbols[..1], &specs, Priority::Normal)
            .expect_err("poisoned");
        assert!(matches!(e, EngineError::Store(_)), "{e}");
    }
    assert_eq!(engine.runtime_stats().breaker, BreakerState::Open);
    let e = engine
        .submit(&symbols[..1], &specs, Priority::Normal)
        .expect_err("open");
    assert!(e.to_string().contains("circuit breaker is open"), "{e}");
    let metrics = engine.metrics();
    assert!(
        metrics.contains("kiln_breaker_state{state=\"open\"} 1\n"),
        "{metrics}"
    );
}

#[test]
fn metrics_count_what_a_run_did() {
    let dir = tempfile::tempdir().expect("dir");
    let (engine, symbols) = engine(dir.path(), Config::default(), 4);
    let specs = parse_list("rsi(3)").expect("specs");
    engine
        .submit(&symbols, &specs, Priority::High)
        .expect("submit");
    engine.run_until_idle(&mut |_| {}).expect("run");
    for label in ["rsi(3)", "rsi(4)"] {
        engine
            .read_features(&symbols[0], &[label.to_owned()])
            .expect("read")
            .expect("bars");
    }
    let m = engine.metrics();
    for line in [
        "kiln_jobs_total{status=\"succeeded\",priority=\"high\"} 4\n",
        "kiln_feature_reads_total{result=\"hit\"} 1\n",
        "kiln_feature_reads_total{result=\"miss\"} 1\n",
        "kiln_compute_duration_seconds_count{feature=\"rsi(3)\"} 4\n",
        "kiln_queue_depth{priority=\"high\"} 0\n",
        "kiln_jobs{state=\"succeeded\"} 4\n",
    ] {
        assert!(m.contains(line), "missing {line:?} in\n{m}");
    }
    assert!(m.contains("kiln_store_bytes{part=\"vlog\"}"));
}

#[test]
fn sigint_stops_a_worker_cleanly() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let symbols = {
        let (engine, symbols) = engine(&data, Config::default(), 300);
        let specs = parse_list("sma(3),rsi(14),macd(12,26,9)").expect("specs");
        engine
            .submit(&symbols, &specs, Priority::Normal)
            .expect("submit");
        symbols
    };
    let child = kiln_command([OsStr::new("--data"), data.as_os_str(), OsStr::new("run")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(300));
    interrupt(&child);
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Store::open(&data, StoreConfig::default()).expect("open");
    assert_eq!(
        store.recovery_report().requeued,
        0,
        "nothing was left running"
    );
    assert_eq!(store.stats().expect("stats").count(JobState::Running), 0);
    assert!(store.check().expect("check").problems.is_empty());
    assert_eq!(symbols.len(), 300);
}

#[tokio::test]
async fn async_submissions_and_a_background_runner() {
    let dir = tempfile::tempdir().expect("dir");
    let (engine, symbols) = engine(dir.path(), Config::default(), 8);
    let runner = engine.spawn_runner().expect("runner");
    let specs = parse_list("ema(5)").expect("specs");
    let jobs = engine
        .submit_async("async".into(), symbols.clone(), specs, Priority::High)
        .await
        .expect("submit");
    assert_eq!(jobs.len(), 8);
    // The runner picks them up by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engine
        .store()
        .stats()
        .expect("stats")
        .count(JobState::Succeeded)
        < 8
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the runner did not finish"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let report = runner.stop().expect("stop");
    assert_eq!(report.succeeded, 8);
    assert!(
        engine
            .feature(&symbols[7], "ema(5)")
            .expect("read")
            .is_some()
    );
}

#[test]
fn a_store_failure_during_a_run_ends_it_with_the_error() {
    let dir = tempfile::tempdir().expect("dir");
    let (engine, symbols) = engine(dir.path(), Config::default(), 40);
    let specs = parse_list("sma(3),rsi(5)").expect("specs");
    engine
        .submit(&symbols, &specs, Priority::Normal)
        .expect("submit");
    engine.store().inject_commit_failure(false).expect("inject");
    let e = engine.run_until_idle(&mut |_| {}).expect_err("poisoned");
    assert!(
        e.to_string().contains("poisoned") || e.to_string().contains("injected"),
        "{e}"
    );
    // Reopening recovers: the jobs run.
    drop(engine);
    let engine = Engine::open(dir.path(), Config::default()).expect("reopen");
    let report = engine.run_until_idle(&mut |_| {}).expect("run");
    assert_eq!(
        engine
            .store()
            .stats()
            .expect("stats")
            .count(JobState::Succeeded),
        40,
        "{report:?}"
    );
}

#[test]
fn a_read_failure_fails_only_its_job_which_retries_then_ends_dead() {
    let dir = tempfile::tempdir().expect("dir");
    let config = Config {
        store: StoreConfig {
            queue: QueueConfig {
                attempts_max: 3,
                retry: RetryPolicy {
                    base_ms: 1,
                    cap_ms: 5,
                },
                ..QueueConfig::default()
            },
            ..StoreConfig::default()
        },
        ..Config::default()
    };
    let (engine, symbols) = engine(dir.path(), config.clone(), 8);
    // Corrupt one stored close price of the fourth symbol in the value log.
    let bad = symbols[3].clone();
    let needle = engine
        .store()
        .bars(&bad, ..)
        .expect("read")
        .expect("bars")
        .close()[10]
        .to_le_bytes();
    drop(engine);
    let mut hit = false;
    for entry in std::fs::read_dir(dir.path().join("vlog")).expect("vlog") {
        let path = entry.expect("entry").path();
        let mut bytes = std::fs::read(&path).expect("read segment");
        if let Some(at) = bytes.windows(8).position(|w| w == needle) {
            bytes[at] ^= 0xff;
            std::fs::write(&path, bytes).expect("write segment");
            hit = true;
        }
    }
    assert!(hit, "the close price is in a segment");

    let engine = Engine::open(dir.path(), config).expect("reopen");
    let specs = parse_list("sma(3)").expect("specs");
    let ids: Vec<u64> = engine
        .submit(&symbols, &specs, Priority::Normal)
        .expect("submit")
        .into_iter()
        .map(|e| e.id())
        .collect();
    let report = engine
        .run_until_idle(&mut |_| {})
        .expect("the run goes on past the bad record");
    assert_eq!((report.succeeded, report.dead), (7, 1), "{report:?}");
    let dead = engine.store().job(ids[3]).expect("read").expect("job");
    assert_eq!((dead.state, dead.attempts), (JobState::Dead, 3));
    let why = dead.last_error.unwrap_or_default();
    assert!(
        why.contains(bad.as_str()) && why.contains("checksum"),
        "{why}"
    );
    let failed = engine
        .store()
        .events(0, 1000)
        .expect("events")
        .iter()
        .filter(|e| e.job_id == ids[3] && e.state == JobState::Failed)
        .count();
    assert_eq!(failed, 2, "two retries before it ended dead");
    assert!(
        engine
            .metrics()
            .contains("kiln_jobs_total{status=\"failed\",priority=\"normal\"} 2\n")
    );
}

struct Recorder {
    reopens: Vec<(String, u32)>,
}

impl RunObserver for Recorder {
    fn progress(&mut self, _: &Engine, _: kiln::engine::RunProgress) {}
    fn reopening(&mut self, error: &EngineError, attempt: u32, wait: Duration) {
        assert!(wait >= Duration::from_millis(10), "{wait:?}");
        self.reopens.push((error.to_string(), attempt));
    }
}

#[test]
fn a_worker_reopens_the_store_after_a_write_failure_and_finishes() {
    let dir = tempfile::tempdir().expect("dir");
    let config = Config {
        engine: EngineConfig {
            breaker_recovery_ms: 10,
            ..EngineConfig::default()
        },
        ..Config::default()
    };
    let (engine, symbols) = engine(dir.path(), config, 40);
    let specs = parse_list("sma(3),rsi(5)").expect("specs");
    engine
        .submit(&symbols, &specs, Priority::Normal)
        .expect("submit");
    engine.store().inject_commit_failure(false).expect("inject");
    let mut recorder = Recorder {
        reopens: Vec::new(),
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (engine, _) =
        run_reopening(engine, &stop, true, 3, &mut recorder).expect("the worker recovers");
    assert_eq!(recorder.reopens.len(), 1, "{:?}", recorder.reopens);
    assert!(
        recorder.reopens[0].0.contains("injected"),
        "{:?}",
        recorder.reopens
    );
    assert!(engine.store().poisoned().is_none());
    assert_eq!(
        engine
            .store()
            .stats()
            .expect("stats")
            .count(JobState::Succeeded),
        40
    );
    assert!(engine.store().check().expect("check").problems.is_empty());
}

#[test]
fn a_failed_fsync_ends_the_worker_with_no_reopen_in_the_same_process() {
    let dir = tempfile::tempdir().expect("dir");
    let config = Config {
        engine: EngineConfig {
            breaker_recovery_ms: 10,
            ..EngineConfig::default()
        },
        ..Config::default()
    };
    let (engine, symbols) = engine(dir.path(), config.clone(), 40);
    let specs = parse_list("sma(3),rsi(5)").expect("specs");
    engine
        .submit(&symbols, &specs, Priority::Normal)
        .expect("submit");
    engine.store().inject_commit_failure(true).expect("inject");
    let mut recorder = Recorder {
        reopens: Vec::new(),
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let Err(e) = run_reopening(engine, &stop, true, 3, &mut recorder) else {
        panic!("the worker went on after a failed fsync");
    };
    assert!(recorder.reopens.is_empty(), "{:?}", recorder.reopens);
    let message = e.to_string();
    assert!(message.contains("injected fsync failure"), "{message}");
    assert!(message.contains("restart kiln"), "{message}");
    // Not in this process, not even once the old store is gone.
    let again = Engine::open(dir.path(), config.clone()).expect_err("refused");
    assert!(again.to_string().contains("restart kiln"), "{again}");
    // A new process (here: the same one, forgetting the failure) recovers.
    Store::forget_failed_fsyncs();
    let engine = Engine::open(dir.path(), config).expect("reopen");
    engine.run_until_idle(&mut |_| {}).expect("run");
    assert_eq!(
        engine
            .store()
            .stats()
            .expect("stats")
            .count(JobState::Succeeded),
        40
    );
}
