//! `kiln bench queue`: the durable queue and result store under load, each
//! figure next to the floor it is built on (raw sled inserts with one flush
//! + fsync per group; plain file writes + fsync), measured in the same run.
//!
//! - `enqueue_single_concurrent`: 64 threads each enqueue one job at a time
//!   and wait for its acknowledgement (group commit batches them).
//! - `enqueue_batch100`: one caller enqueues batches of 100.
//! - `claim_complete_batch`: one worker claims 100 and completes them in one call.
//! - `lifecycle_sync`: a producer enqueues batches of 100 while two workers
//!   claim 100 and complete each with a small (8-value) series; `Sync` mode.
//! - `floor_sled_fsync`: as many raw sled inserts as `lifecycle_sync` has
//!   jobs, in groups of 100, each group flushed and fsynced.
//! - `results_mb_per_s`: 1000 symbols × 20 outputs × 2000 bars of series
//!   (320 MB) stored durably through job completions.
//! - `floor_file_mb_per_s`: the same bytes written to one file and fsynced.
//! - `idle_pickup_us`: an engine's runner waits on an empty queue; one job
//!   is submitted; the time from `submit` returning until the runner's
//!   claim of it returns (the median of 100, each submitted at a random
//!   moment). A claim is durable too, so it includes the claim's commit.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use kiln_store::{
    Completion, Coverage, FrameKey, FrameRows, FrameWrite, JobQueue, NewJob, Series, SeriesKey,
    Store, StoreConfig, StoreError, Symbol,
};

use crate::{BenchError, BenchLine};

/// How big a run is.
#[derive(Clone, Copy, Debug)]
pub struct QueueBenchSize {
    /// Jobs per queue benchmark.
    pub jobs: u64,
    /// Symbols in the results benchmark (20 outputs each).
    pub symbols: u64,
    /// Bars per series in the results benchmark.
    pub bars: u64,
}

impl Default for QueueBenchSize {
    fn default() -> Self {
        QueueBenchSize {
            jobs: 50_000,
            symbols: 1_000,
            bars: 2_000,
        }
    }
}

fn line(name: &'static str, value: f64, unit: &'static str) -> BenchLine {
    BenchLine {
        bench: "queue",
        name,
        value,
        unit,
    }
}

fn fresh_store(root: &Path, name: &str) -> Result<Store, StoreError> {
    Store::open(root.join(name), StoreConfig::default())
}

fn job() -> NewJob {
    NewJob::new("bench", b"payload".to_vec())
}

/// Runs every queue benchmark in `root` (a scratch directory), calling
/// `report` as each figure is measured.
pub fn run(
    root: &Path,
    size: QueueBenchSize,
    mut report: impl FnMut(&BenchLine),
) -> Result<Vec<BenchLine>, BenchError> {
    let mut lines = Vec::new();
    let mut emit = |l: BenchLine| {
        report(&l);
        lines.push(l);
    };
    let n = size.jobs.max(100);

    // enqueue_single_concurrent
    let store = fresh_store(root, "single")?;
    let callers = 64u64;
    let per = (n / 5 / callers).max(1);
    let t = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..callers)
            .map(|_| {
                let store = &store;
                s.spawn(move || (0..per).try_for_each(|_| store.enqueue(job()).map(drop)))
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or(Err(StoreError::Closed)))
    })?;
    emit(line(
        "enqueue_single_concurrent",
        (per * callers) as f64 / t.elapsed().as_secs_f64(),
        "jobs/s",
    ));
    drop(store);

    // enqueue_batch100, then claim_complete_batch over the same jobs
    let store = fresh_store(root, "batch")?;
    let t = Instant::now();
    for _ in 0..n / 100 {
        store.enqueue_many((0..100).map(|_| job()).collect())?;
    }
    emit(line(
        "enqueue_batch100",
        (n / 100 * 100) as f64 / t.elapsed().as_secs_f64(),
        "jobs/s",
    ));
    let t = Instant::now();
    let mut done = 0u64;
    loop {
        let leases = store.claim(100)?;
        if leases.is_empty() {
            break;
        }
        done += leases.len() as u64;
        let completions = leases
            .into_iter()
            .map(|l| Completion {
                token: l.token,
                results: vec![],
            })
            .collect();
        for r in store.complete_many(completions)? {
            r?;
        }
    }
    emit(line(
        "claim_complete_batch",
        done as f64 / t.elapsed().as_secs_f64(),
        "jobs/s",
    ));
    drop(store);

    // lifecycle_sync
    let store = fresh_store(root, "lifecycle")?;
    let completed = AtomicU64::new(0);
    let t = Instant::now();
    std::thread::scope(|s| -> Result<(), StoreError> {
        let producer = s.spawn(|| {
            (0..n / 100).try_for_each(|_| {
                store
                    .enqueue_many((0..100).map(|_| job()).collect())
                    .map(drop)
            })
        });
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let (store, completed) = (&store, &completed);
                s.spawn(move || lifecycle_worker(store, completed, n / 100 * 100, w))
            })
            .collect();
        producer.join().unwrap_or(Err(StoreError::Closed))?;
        workers
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or(Err(StoreError::Closed)))
    })?;
    let lifecycle_s = t.elapsed().as_secs_f64();
    emit(line(
        "lifecycle_sync",
        completed.load(Ordering::Relaxed) as f64 / lifecycle_s,
        "jobs/s",
    ));
    drop(store);

    emit(line(
        "floor_sled_fsync",
        floor_sled(&root.join("floor-sled"), n / 100 * 100)?,
        "jobs/s",
    ));

    let (mb_per_s, bytes) = results(root, size)?;
    emit(line("results_mb_per_s", mb_per_s, "MB/s"));
    emit(line(
        "floor_file_mb_per_s",
        floor_file(&root.join("floor.bin"), bytes)?,
        "MB/s",
    ));
    emit(line(
        "idle_pickup_us",
        idle_pickup_us(&root.join("pickup"))?,
        "us",
    ));
    Ok(lines)
}

fn lifecycle_worker(
    store: &Store,
    completed: &AtomicU64,
    total: u64,
    worker: u64,
) -> Result<(), StoreError> {
    let symbol = Symbol::new(format!("W{worker}"))?;
    while completed.load(Ordering::Relaxed) < total {
        let leases = store.claim(100)?;
        if leases.is_empty() {
            std::thread::yield_now();
            continue;
        }
        let count = leases.len() as u64;
        let completions = leases
            .into_iter()
            .map(|l| {
                let key = SeriesKey::new(symbol.clone(), format!("j{}", l.job.id))?;
                let series = Series {
                    bar_count: 8,
                    last_ts: 0,
                    data_hash: 0,
                    values: vec![1.0; 8],
                    state: vec![],
                };
                Ok(Completion {
                    token: l.token,
                    results: vec![(key, series).into()],
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        for r in store.complete_many(completions)? {
            r?;
        }
        completed.fetch_add(count, Ordering::Relaxed);
    }
    Ok(())
}

/// Durable series writes: one job per symbol, each completed with a frame
/// of 20 outputs,
/// from two workers so that archiving overlaps the writer's I/O.
fn results(root: &Path, size: QueueBenchSize) -> Result<(f64, u64), BenchError> {
    // The 20 outputs of `kiln bench features` (and of the peers' bench.py).
    let plan = kiln::features::standard_plan()?;
    let outputs = plan.output_labels();
    let store = fresh_store(root, "results")?;
    let symbols: Vec<Symbol> = (0..size.symbols)
        .map(|i| Symbol::new(format!("S{i:04}")))
        .collect::<Result<_, _>>()?;
    let jobs = symbols
        .iter()
        .map(|s| job().symbols(vec![s.clone()]))
        .collect::<Vec<_>>();
    for chunk in jobs.chunks(1000) {
        store.enqueue_many(chunk.to_vec())?;
    }
    let values: Arc<Vec<f64>> = Arc::new((0..size.bars).map(|i| 100.0 + i as f64 * 0.01).collect());
    let t = Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (store, values) = (&store, &values);
                s.spawn(move || -> Result<(), StoreError> {
                    loop {
                        let leases = store.claim(4)?;
                        if leases.is_empty() {
                            return Ok(());
                        }
                        let mut completions = Vec::with_capacity(leases.len());
                        for l in leases {
                            let symbol =
                                l.job.symbols.first().cloned().ok_or(StoreError::Closed)?;
                            // One frame of the 20 outputs, as the engine writes.
                            let results = vec![FrameWrite {
                                key: FrameKey::new(symbol, "@plan:bench")?,
                                rows: FrameRows::Replace {
                                    labels: outputs.to_vec(),
                                },
                                covers: Coverage {
                                    bars: values.len() as u64,
                                    last_ts: 0,
                                    hash: 0,
                                },
                                columns: vec![values.to_vec(); outputs.len()],
                                state: None,
                            }];
                            completions.push(Completion {
                                token: l.token,
                                results,
                            });
                        }
                        for r in store.complete_many(completions)? {
                            r?;
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or(Err(StoreError::Closed)))
    })?;
    let secs = t.elapsed().as_secs_f64();
    let bytes = size.symbols * outputs.len() as u64 * size.bars * 8;
    Ok((bytes as f64 / 1e6 / secs, bytes))
}

/// Submissions timed by `idle_pickup_us`.
const PICKUPS: usize = 100;

/// The median time from `submit` returning to the claim of its job by a
/// runner that was waiting on an empty queue, in microseconds.
fn idle_pickup_us(dir: &Path) -> Result<f64, BenchError> {
    use kiln::config::Config;
    use kiln::engine::Engine;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    let engine = Engine::open(dir, Config::default())?;
    let universe = kiln::market::synth::universe(1, 50, 3);
    engine.ingest_columns("pickup", &universe)?;
    let symbols: Vec<Symbol> = universe.into_iter().map(|(s, _)| s).collect();
    let specs =
        kiln::features::spec::parse_list("sma(3)").map_err(kiln::engine::EngineError::from)?;
    let stop = AtomicBool::new(false);
    let (claims, claimed) = std::sync::mpsc::channel::<Instant>();
    let mut samples = Vec::with_capacity(PICKUPS);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    std::thread::scope(|s| -> Result<(), BenchError> {
        let runner = s.spawn(|| {
            engine.run(&stop, false, &mut |p| {
                if p.claimed > 0 {
                    let _ = claims.send(Instant::now());
                }
            })
        });
        let result = (|| -> Result<(), BenchError> {
            for _ in 0..PICKUPS {
                // A random moment in the runner's wait.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                std::thread::sleep(Duration::from_micros(2_000 + seed % 10_000));
                let before = engine
                    .store()
                    .stats()?
                    .count(kiln_store::JobState::Succeeded);
                engine.submit(&symbols, &specs, kiln_store::Priority::Normal)?;
                let submitted = Instant::now();
                let at = claimed
                    .recv_timeout(Duration::from_secs(10))
                    .map_err(|_| BenchError::Peer("the runner claimed nothing in 10 s".into()))?;
                samples.push(at.saturating_duration_since(submitted).as_secs_f64() * 1e6);
                // The job finishes before the next submission (a new job:
                // the idempotency key is free once it has succeeded).
                while engine
                    .store()
                    .stats()?
                    .count(kiln_store::JobState::Succeeded)
                    == before
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Ok(())
        })();
        stop.store(true, Ordering::SeqCst);
        let ran = runner
            .join()
            .map_err(|_| BenchError::Peer("the runner panicked".into()))?;
        result.and(ran.map(drop).map_err(BenchError::from))
    })?;
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// Raw sled: `n` inserts of job-sized values, one batch + flush + fsync per 100.
fn floor_sled(dir: &Path, n: u64) -> Result<f64, StoreError> {
    let db = kiln_store::SledFloor::open(dir)?;
    let t = Instant::now();
    for group in 0..n / 100 {
        db.insert_group(group, 100)?;
    }
    Ok((n / 100 * 100) as f64 / t.elapsed().as_secs_f64())
}

/// The same bytes as `results`, written in 1 MiB pieces and fsynced once.
fn floor_file(path: &Path, bytes: u64) -> Result<f64, StoreError> {
    let chunk = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    let mut f = std::fs::File::create(path).map_err(|e| StoreError::io("create floor file", e))?;
    let mut left = bytes;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..k])
            .map_err(|e| StoreError::io("write floor file", e))?;
        left -= k as u64;
    }
    f.sync_all()
        .map_err(|e| StoreError::io("fsync floor file", e))?;
    let secs = t.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(path);
    Ok(bytes as f64 / 1e6 / secs)
}
