//! Crash recovery, in sled's style: this test re-runs its own binary as a
//! child that enqueues, claims, completes and fails jobs as fast as it can,
//! SIGKILLs it at a random moment, reopens the store and checks everything the
//! child had been told was durable. `KILN_CRASH_ITERATIONS` sets the number
//! of kills (default 50); `KILN_CRASH_SEED` fixes the random schedule. Every
//! `KILLS_PER_STORE` kills the test starts over in a fresh directory, so that
//! the full scans each check makes stay bounded in long runs.
//!
//! The child writes an acknowledgement log (one line per answered call, in
//! append mode so a line written survives the kill) only *after* the store
//! answered; the parent checks each logged fact against the reopened store.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_store::prelude::*;
use kiln_store::{
    Completion, FailOutcome, JobState, NewJob, QueueConfig, Series, SeriesKey, Store, StoreConfig,
    Symbol,
};

const CHILD_ENV: &str = "KILN_CRASH_CHILD_DIR";
const FEATURES: [&str; 2] = ["sma(5)", "macd(12,26,9).hist"];
const KILLS_PER_STORE: u64 = 100;

fn config() -> StoreConfig {
    StoreConfig {
        queue: QueueConfig {
            history_max: u64::MAX,
            retention_ms: None,
            lease_ms: 3_600_000,
            ..QueueConfig::default()
        },
        segment_bytes_max: 1 << 20,
        ..StoreConfig::default()
    }
}

fn symbol_of(id: u64) -> Symbol {
    Symbol::new(format!("J{id}")).expect("valid symbol")
}

fn expected_values(id: u64, feature: usize) -> Vec<f64> {
    (0..64)
        .map(|i| id as f64 + feature as f64 * 0.5 + f64::from(i))
        .collect()
}

/// xorshift64*: a tiny deterministic generator, so a failing seed replays.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn log_line(file: &mut std::fs::File, line: &str) {
    // One write per line: O_APPEND makes it atomic, and it survives SIGKILL.
    file.write_all(line.as_bytes()).expect("ack log");
}

fn open_log(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .expect("open ack log")
}

fn child(dir: PathBuf, seed: u64) {
    let store = Store::open(dir.join("store"), config()).expect("child open");
    let producer = {
        let store = store.clone();
        let dir = dir.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(seed | 1);
            let mut log = open_log(&dir, "enqueued.log");
            loop {
                let n = 1 + rng.below(20);
                let jobs = (0..n)
                    .map(|i| NewJob::new("compute", i.to_be_bytes().to_vec()))
                    .collect();
                let ids = store.enqueue_many(jobs).expect("enqueue");
                let line: String = ids.iter().map(|e| format!("E {}\n", e.id())).collect();
                log_line(&mut log, &line);
            }
        })
    };
    let mut rng = Rng(seed.wrapping_mul(31) | 1);
    let mut log = open_log(&dir, "worked.log");
    loop {
        let leases = store.claim(1 + rng.below(16) as usize).expect("claim");
        let mut completions = Vec::new();
        for lease in leases {
            let id = lease.job.id;
            log_line(&mut log, &format!("C {id} {}\n", lease.token.attempt));
            match rng.below(10) {
                0..=6 => {
                    let results = FEATURES
                        .iter()
                        .enumerate()
                        .map(|(f, name)| {
                            let key = SeriesKey::new(symbol_of(id), *name).expect("key");
                            let values = expected_values(id, f);
                            let series = Series {
                                bar_count: 64,
                                last_ts: id as i64,
                                data_hash: 0,
                                values,
                                state: vec![f as u8],
                            };
                            (key, series).into()
                        })
                        .collect();
                    completions.push(Completion {
                        token: lease.token,
                        results,
                    });
                }
                7 | 8 => {
                    let outcome = store.fail(lease.token, "synthetic failure").expect("fail");
                    let word = if outcome == FailOutcome::Dead {
                        "dead"
                    } else {
                        "retry"
                    };
                    log_line(&mut log, &format!("F {id} {word}\n"));
                }
                _ => {} // left running: recovery must return it to the queue
            }
        }
        let ids: Vec<u64> = completions.iter().map(|c| c.token.job_id).collect();
        for (id, outcome) in ids
            .iter()
            .zip(store.complete_many(completions).expect("complete"))
        {
            outcome.expect("lease held");
            log_line(&mut log, &format!("S {id}\n"));
        }
        if producer.is_finished() {
            panic!("producer thread died");
        }
    }
}

/// What the logs say was acknowledged.
#[derive(Default)]
struct Acked {
    enqueued: Vec<u64>,
    succeeded: Vec<u64>,
    dead: Vec<u64>,
}

fn read_acks(dir: &Path) -> Acked {
    let mut acked = Acked::default();
    for name in ["enqueued.log", "worked.log"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        for line in text.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            let id = parts.get(1).and_then(|s| s.parse::<u64>().ok());
            match (parts.first(), id, parts.get(2)) {
                (Some(&"E"), Some(id), _) => acked.enqueued.push(id),
                (Some(&"S"), Some(id), _) => acked.succeeded.push(id),
                (Some(&"F"), Some(id), Some(&"dead")) => acked.dead.push(id),
                _ => {} // claims, retries, or a line cut short by the kill
            }
        }
    }
    acked
}

/// Checks the reopened store; returns (jobs, succeeded jobs, jobs recovery requeued or killed).
fn verify(dir: &Path, checked_up_to: &mut HashMap<&'static str, usize>) -> (u64, u64, u64) {
    let store = Store::open(dir.join("store"), config()).expect("reopen after kill");
    let report = store.recovery_report().clone();
    assert_eq!(report.counters_drift, None, "counters drifted: {report:?}");
    let stats = store.stats().expect("stats");
    assert_eq!(
        stats.count(JobState::Running),
        0,
        "running jobs survived recovery"
    );
    let check = store.check().expect("check");
    assert!(
        check.problems.is_empty(),
        "integrity problems: {:#?}",
        check.problems
    );

    let acked = read_acks(dir);
    // Every acknowledged enqueue is present (checked once; later states may move on).
    let from = checked_up_to.get("E").copied().unwrap_or(0);
    for &id in &acked.enqueued[from..] {
        assert!(
            store.job(id).expect("read").is_some(),
            "acknowledged job {id} lost"
        );
    }
    checked_up_to.insert("E", acked.enqueued.len());
    let from = checked_up_to.get("D").copied().unwrap_or(0);
    for &id in &acked.dead[from..] {
        let j = store.job(id).expect("read").expect("dead job present");
        assert_eq!(j.state, JobState::Dead, "job {id} acknowledged dead");
    }
    checked_up_to.insert("D", acked.dead.len());
    // Acknowledged completions are succeeded, with exactly their results.
    for &id in &acked.succeeded {
        let j = store.job(id).expect("read").expect("succeeded job present");
        assert_eq!(
            j.state,
            JobState::Succeeded,
            "job {id} acknowledged succeeded"
        );
    }
    // Every succeeded job has its results; every result belongs to a succeeded job.
    let max_id = acked.enqueued.iter().copied().max().unwrap_or(0) + 64;
    let mut succeeded = 0;
    for id in 1..=max_id {
        let state = store.job(id).expect("read").map(|j| j.state);
        let keys = store.series_keys(&symbol_of(id)).expect("keys");
        if state == Some(JobState::Succeeded) {
            succeeded += 1;
            assert_eq!(
                keys.len(),
                FEATURES.len(),
                "succeeded job {id} lacks results"
            );
            for (f, key) in FEATURES.iter().enumerate() {
                let key = SeriesKey::new(symbol_of(id), *key).expect("key");
                let view = store.series(&key).expect("read").expect("present");
                assert_eq!(
                    view.values(),
                    expected_values(id, f).as_slice(),
                    "job {id} series {f}"
                );
                assert_eq!(store.series_writer(&key).expect("read"), Some(id));
            }
        } else {
            assert!(keys.is_empty(), "job {id} is {state:?} but has results");
        }
    }
    (check.jobs, succeeded, report.requeued + report.dead)
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let seed = std::env::var("KILN_CRASH_CHILD_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        child(PathBuf::from(dir), seed);
        return;
    }
    let iterations: u64 = std::env::var("KILN_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("KILN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        });
    println!("crash_recovery: {iterations} kills, KILN_CRASH_SEED={seed}");
    let exe = std::env::current_exe().expect("own binary");
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let (mut acked_enqueues, mut jobs, mut succeeded, mut recovered) = (0, 0, 0, 0);
    let mut dir = tempfile::tempdir().expect("tempdir");
    let mut checked = HashMap::new();
    for i in 0..iterations {
        if i > 0 && i % KILLS_PER_STORE == 0 {
            acked_enqueues += read_acks(dir.path()).enqueued.len();
            dir = tempfile::tempdir().expect("tempdir");
            checked.clear();
        }
        let mut child = Command::new(&exe)
            .env(CHILD_ENV, dir.path())
            .env("KILN_CRASH_CHILD_SEED", rng.next().to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn child");
        std::thread::sleep(Duration::from_millis(30 + rng.below(270)));
        if let Ok(Some(status)) = child.try_wait() {
            panic!("child exited by itself before the kill (iteration {i}): {status}");
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        let (j, s, r) = verify(dir.path(), &mut checked);
        (jobs, succeeded, recovered) = (j, s, recovered + r);
    }
    acked_enqueues += read_acks(dir.path()).enqueued.len();
    assert!(
        acked_enqueues > iterations as usize,
        "the child barely ran: {acked_enqueues} enqueues"
    );
    println!(
        "crash_recovery: {iterations} kills in {:.1} s; {acked_enqueues} acknowledged enqueues, \
         {recovered} running jobs recovered; last store: {jobs} jobs, {succeeded} succeeded; all verified",
        started.elapsed().as_secs_f64(),
    );
    println!("1 passed, 0 failed");
}
