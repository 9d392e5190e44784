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
//!
//! The value log is in play: segments are 64 KiB, every job writes one
//! 8 KB series and overwrites a shared one (so old segments go sparse), and
//! the child compacts every few rounds, so kills land in segment rolls and
//! compaction. Every other store keeps only `PURGE_HISTORY` finished jobs,
//! so kills land in retention purges too; and before a third of the checks
//! a child only opens the store and is killed within 30 ms, in recovery.

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
/// Set (to anything) for a child that only opens the store.
const OPEN_ONLY_ENV: &str = "KILN_CRASH_CHILD_OPEN_ONLY";
/// Set (to anything) for a store that purges its history.
const PURGE_ENV: &str = "KILN_CRASH_CHILD_PURGE";
/// Each job's series: two small ones (inline in sled), one of 1000 values
/// (in the value log).
const FEATURES: [&str; 3] = ["sma(5)", "macd(12,26,9).hist", "ema(200)"];
/// The shared series every job overwrites, one of `SHARED` symbols.
const SHARED: u64 = 4;
const SHARED_FEATURE: &str = "wma(30)";
const KILLS_PER_STORE: u64 = 25;
/// Finished jobs a purging store keeps.
const PURGE_HISTORY: u64 = 300;

fn config(purge: bool) -> StoreConfig {
    StoreConfig {
        queue: QueueConfig {
            history_max: if purge { PURGE_HISTORY } else { u64::MAX },
            retention_ms: None,
            lease_ms: 3_600_000,
            ..QueueConfig::default()
        },
        segment_bytes_max: 64 * 1024,
        ..StoreConfig::default()
    }
}

fn symbol_of(id: u64) -> Symbol {
    Symbol::new(format!("J{id}")).expect("valid symbol")
}

fn shared_symbol(id: u64) -> Symbol {
    Symbol::new(format!("SHARED{}", id % SHARED)).expect("valid symbol")
}

fn expected_values(id: u64, feature: usize) -> Vec<f64> {
    let len = if feature == 2 { 1000 } else { 64 };
    (0..len)
        .map(|i| id as f64 + feature as f64 * 0.5 + f64::from(i))
        .collect()
}

fn series_of(values: Vec<f64>, id: u64, f: usize) -> Series {
    Series {
        bar_count: values.len() as u64,
        last_ts: id as i64,
        data_hash: 0,
        values,
        state: vec![f as u8],
    }
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

fn child(dir: PathBuf, seed: u64, purge: bool) {
    let store = Store::open(dir.join("store"), config(purge)).expect("child open");
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
                    let mut results: Vec<_> = FEATURES
                        .iter()
                        .enumerate()
                        .map(|(f, name)| {
                            let key = SeriesKey::new(symbol_of(id), *name).expect("key");
                            (key, series_of(expected_values(id, f), id, f)).into()
                        })
                        .collect();
                    let shared = SeriesKey::new(shared_symbol(id), SHARED_FEATURE).expect("key");
                    results.push((shared, series_of(expected_values(id, 2), id, 2)).into());
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
        if rng.below(8) == 0 {
            store.compact().expect("compact");
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
/// In a purging store a job may be gone, if it was acknowledged finished.
fn verify(
    dir: &Path,
    checked_up_to: &mut HashMap<&'static str, usize>,
    purge: bool,
) -> (u64, u64, u64) {
    let store = Store::open(dir.join("store"), config(purge)).expect("reopen after kill");
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
    // Purging keeps the newest PURGE_HISTORY finished jobs: one gone is
    // older than all of them (recovery may have ended it dead unlogged).
    let history_full = [JobState::Succeeded, JobState::Dead, JobState::Cancelled]
        .iter()
        .map(|&s| stats.count(s))
        .sum::<u64>()
        >= PURGE_HISTORY;
    let newest_finished = acked.succeeded.iter().max().copied().unwrap_or(0);
    let purged = |id: u64| purge && history_full && id < newest_finished;
    // Every acknowledged enqueue is present (checked once; later states may move on).
    let from = checked_up_to.get("E").copied().unwrap_or(0);
    for &id in &acked.enqueued[from..] {
        assert!(
            store.job(id).expect("read").is_some() || purged(id),
            "acknowledged job {id} lost"
        );
    }
    if !purge {
        checked_up_to.insert("E", acked.enqueued.len());
    }
    let from = checked_up_to.get("D").copied().unwrap_or(0);
    for &id in &acked.dead[from..] {
        match store.job(id).expect("read") {
            Some(j) => assert_eq!(j.state, JobState::Dead, "job {id} acknowledged dead"),
            None => assert!(purge, "dead job {id} lost"),
        }
    }
    checked_up_to.insert("D", acked.dead.len());
    // Acknowledged completions are succeeded, with exactly their results.
    for &id in &acked.succeeded {
        match store.job(id).expect("read") {
            Some(j) => assert_eq!(
                j.state,
                JobState::Succeeded,
                "job {id} acknowledged succeeded"
            ),
            None => assert!(purge, "succeeded job {id} lost"),
        }
    }
    // Every succeeded job has its results; every result belongs to a succeeded job.
    let max_id = acked.enqueued.iter().copied().max().unwrap_or(0) + 64;
    let mut succeeded = 0;
    for id in 1..=max_id {
        let state = store.job(id).expect("read").map(|j| j.state);
        let keys = store.series_keys(&symbol_of(id)).expect("keys");
        // In a purging store, a job gone with results had succeeded.
        if state == Some(JobState::Succeeded) || (purge && state.is_none() && !keys.is_empty()) {
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
    // Each shared series is the last completion's that wrote it.
    for k in 0..SHARED {
        let key = SeriesKey::new(shared_symbol(k), SHARED_FEATURE).expect("key");
        let Some(writer) = store.series_writer(&key).expect("read") else {
            continue;
        };
        let state = store.job(writer).expect("read").map(|j| j.state);
        assert!(
            state == Some(JobState::Succeeded) || (purge && state.is_none()),
            "shared series {k} written by job {writer}, which is {state:?}"
        );
        let view = store.series(&key).expect("read").expect("present");
        assert_eq!(
            view.values(),
            expected_values(writer, 2).as_slice(),
            "shared {k}"
        );
    }
    (check.jobs, succeeded, report.requeued + report.dead)
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let purge = std::env::var_os(PURGE_ENV).is_some();
        if std::env::var_os(OPEN_ONLY_ENV).is_some() {
            let _store = Store::open(Path::new(&dir).join("store"), config(purge));
            std::thread::sleep(Duration::from_secs(60));
            return;
        }
        let seed = std::env::var("KILN_CRASH_CHILD_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        child(PathBuf::from(dir), seed, purge);
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
    let mut recovery_kills = 0;
    let mut dir = tempfile::tempdir().expect("tempdir");
    let mut checked = HashMap::new();
    for i in 0..iterations {
        if i > 0 && i % KILLS_PER_STORE == 0 {
            acked_enqueues += read_acks(dir.path()).enqueued.len();
            dir = tempfile::tempdir().expect("tempdir");
            checked.clear();
        }
        // Stores alternate between keeping every finished job and purging.
        let purge = (i / KILLS_PER_STORE) % 2 == 1;
        let spawn = |open_only: bool, seed: u64| {
            let mut c = Command::new(&exe);
            c.env(CHILD_ENV, dir.path())
                .env("KILN_CRASH_CHILD_SEED", seed.to_string())
                .stdout(Stdio::null());
            if open_only {
                c.env(OPEN_ONLY_ENV, "1");
            }
            if purge {
                c.env(PURGE_ENV, "1");
            }
            c.spawn().expect("spawn child")
        };
        let mut child = spawn(false, rng.next());
        std::thread::sleep(Duration::from_millis(30 + rng.below(270)));
        if let Ok(Some(status)) = child.try_wait() {
            panic!("child exited by itself before the kill (iteration {i}): {status}");
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        if rng.below(3) == 0 {
            // A kill in the middle of recovery itself.
            let mut opener = spawn(true, 0);
            std::thread::sleep(Duration::from_millis(rng.below(30)));
            opener.kill().expect("SIGKILL");
            opener.wait().expect("reap");
            recovery_kills += 1;
        }
        let (j, s, r) = verify(dir.path(), &mut checked, purge);
        (jobs, succeeded, recovered) = (j, s, recovered + r);
    }
    acked_enqueues += read_acks(dir.path()).enqueued.len();
    assert!(
        acked_enqueues > iterations as usize,
        "the child barely ran: {acked_enqueues} enqueues"
    );
    println!(
        "crash_recovery: {iterations} kills (and {recovery_kills} during recovery) in {:.1} s; \
         {acked_enqueues} acknowledged enqueues, {recovered} running jobs recovered; last store: \
         {jobs} jobs, {succeeded} succeeded; all verified",
        started.elapsed().as_secs_f64(),
    );
    println!("1 passed, 0 failed");
}
