//! The engine survives SIGKILL: `kiln run --until-idle` is killed at random
//! moments (while it claims, computes, checkpoints and commits) and
//! restarted until the queue is idle. Then every submitted job has
//! succeeded exactly once (one `succeeded` event each), every stored series
//! is byte-identical to an uninterrupted run's, and the integrity check is
//! clean. Every other round runs in `Relaxed` mode, where a kill loses the
//! unflushed window and its jobs run again. At least 20 kills by default;
//! `KILN_ENGINE_CRASH_KILLS` sets more.

mod common;

use common::kiln_command;
use kiln::store::prelude::*;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln::config::{Config, EngineConfig};
use kiln::engine::Engine;
use kiln::features::spec::parse_list;
use kiln::features::standard_plan;
use kiln::market::synth;
use kiln::store::{JobState, Priority, QueueConfig, SeriesKey, Store, StoreConfig, Symbol};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn worker(data: &Path, config: &Path) -> Command {
    let mut c = kiln_command([
        OsStr::new("--data"),
        data.as_os_str(),
        OsStr::new("--config"),
        config.as_os_str(),
        OsStr::new("run"),
        OsStr::new("--until-idle"),
    ]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

/// One stored series, every part that must match exactly.
#[derive(Debug, PartialEq)]
struct Stored {
    name: String,
    values: Vec<u64>,
    state: Vec<u8>,
    version: (u64, i64, u64),
}

/// Every stored frame of every symbol: each column's values, its state.
fn snapshot(store: &Store, symbols: &[Symbol]) -> Vec<Stored> {
    let mut out = Vec::new();
    for s in symbols {
        for frame in store.frames(s).expect("frames") {
            let head = store.frame(&frame).expect("read").expect("stored");
            let covers = head.covers();
            out.push(Stored {
                name: frame.to_string(),
                values: Vec::new(),
                state: head.state().map(|(_, b)| b.to_vec()).unwrap_or_default(),
                version: (covers.bars, covers.last_ts, covers.hash),
            });
            for label in head.labels() {
                let key = SeriesKey::new(s.clone(), label.as_str()).expect("key");
                let v = store.series(&key).expect("read").expect("stored");
                out.push(Stored {
                    name: format!("{frame}/{label}"),
                    values: v.values().iter().map(|x| x.to_bits()).collect(),
                    state: Vec::new(),
                    version: (v.bar_count(), v.last_ts(), v.data_hash()),
                });
            }
        }
    }
    out
}

#[test]
fn killed_runs_resume_to_exactly_the_clean_result() {
    let kills_min: u32 = std::env::var("KILN_ENGINE_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("kiln.toml");
    // Small claims and checkpoints, so a kill lands in every phase.
    let bounds = "claim_jobs_max = 16\ncheckpoint_symbols = 3\nlease_ms = 60000\n";
    std::fs::write(&config, bounds).expect("config");
    let relaxed = dir.path().join("relaxed.toml");
    std::fs::write(&relaxed, format!("{bounds}durability = \"relaxed\"\n")).expect("config");

    // The base: bars ingested, jobs submitted, nothing run.
    let base = dir.path().join("base");
    let universe = synth::universe(120, 800, 5);
    let symbols: Vec<Symbol> = universe.iter().map(|(s, _)| s.clone()).collect();
    {
        // A kill counts as an attempt: allow many, so crashes cannot kill a job.
        let patient = StoreConfig {
            queue: QueueConfig {
                attempts_max: 100,
                ..QueueConfig::default()
            },
            ..StoreConfig::default()
        };
        let config = Config {
            store: patient,
            ..Config::default()
        };
        let engine = Engine::open(&base, config.clone()).expect("open");
        engine
            .ingest_columns("synthetic", &universe)
            .expect("ingest");
        let plan = standard_plan().expect("plan");
        engine
            .submit(&symbols, plan.specs(), Priority::Normal)
            .expect("submit one-symbol jobs");
        drop(engine);
        let many = Engine::open(
            &base,
            Config {
                engine: EngineConfig {
                    submit_job_symbols: 12,
                    ..config.engine.clone()
                },
                ..config
            },
        )
        .expect("reopen");
        many.submit(
            &symbols,
            &parse_list("rsi(7),sma(3)").expect("specs"),
            Priority::Low,
        )
        .expect("submit many-symbol jobs");
    }
    let jobs_total = 120 + 10;

    // The uninterrupted run.
    let clean = dir.path().join("clean");
    copy_dir(&base, &clean);
    let started = Instant::now();
    assert!(worker(&clean, &config).status().expect("run").success());
    let full = started.elapsed();
    let want = snapshot(
        &Store::open(&clean, StoreConfig::default()).expect("open"),
        &symbols,
    );
    assert_eq!(
        want.len(),
        120 * (21 + 3),
        "20 outputs + state, and 2 outputs + state"
    );

    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n.max(1)
    };
    let (mut kills, mut rounds) = (0u32, 0u32);
    while kills < kills_min {
        rounds += 1;
        let run = dir.path().join(format!("round-{rounds}"));
        copy_dir(&base, &run);
        let config = if rounds % 2 == 0 { &relaxed } else { &config };
        // Kill a few times, then let it finish.
        for _ in 0..1 + random(4) {
            let mut child = worker(&run, config).spawn().expect("spawn");
            std::thread::sleep(Duration::from_micros(random(full.as_micros() as u64 + 1)));
            if child.try_wait().expect("poll").is_none() {
                child.kill().expect("kill");
                kills += 1;
            }
            child.wait().expect("reap");
        }
        let last = worker(&run, config)
            .stderr(Stdio::piped())
            .output()
            .expect("run");
        assert!(
            last.status.success(),
            "round {rounds}: the final run failed: {}",
            String::from_utf8_lossy(&last.stderr)
        );
        let store = Store::open(&run, StoreConfig::default()).expect("open");
        let check = store.check().expect("check");
        assert!(
            check.problems.is_empty(),
            "round {rounds}: {:?}",
            check.problems
        );
        let jobs = store.jobs(&Default::default(), 10_000).expect("jobs");
        assert_eq!(jobs.len(), jobs_total);
        assert!(
            jobs.iter().all(|j| j.state == JobState::Succeeded),
            "round {rounds}: not all succeeded"
        );
        let mut succeeded = std::collections::HashMap::new();
        for e in store.events(0, 100_000).expect("events") {
            if e.state == JobState::Succeeded {
                *succeeded.entry(e.job_id).or_insert(0u32) += 1;
            }
        }
        assert_eq!(
            succeeded.len(),
            jobs_total,
            "round {rounds}: a job without its succeeded event"
        );
        assert!(
            succeeded.values().all(|&n| n == 1),
            "round {rounds}: a job succeeded twice"
        );
        let got = snapshot(&store, &symbols);
        assert_eq!(got.len(), want.len(), "round {rounds}");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                g == w,
                "round {rounds}: {} differs from the clean run",
                g.name
            );
        }
        assert_eq!(store.stats().expect("stats").count(JobState::Running), 0);
        drop(store);
        std::fs::remove_dir_all(&run).expect("clean up");
    }
    eprintln!(
        "{kills} kills over {rounds} rounds; every round matched the clean run ({full:?} uninterrupted)"
    );
}
