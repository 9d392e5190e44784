//! The engine in a service: a runner on its own threads (claim and compute
//! on one, rayon for the kernels, commits on the committer thread, a
//! bounded channel between them) that stops gracefully, and async entry
//! points for tokio callers (the HTTP API), which run the store's blocking
//! calls on tokio's blocking pool so no compute or fsync wait ever occupies
//! a tokio worker thread.
//!
//! [`run_reopening`] is the long-running worker's loop (`kiln run`): when
//! the store's write path fails, the store is poisoned until reopened, so it
//! closes the engine, waits, reopens the directory (recovery returns the
//! interrupted jobs to the queue) and goes on — except after a failed
//! fsync, which ends the process's use of the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_core::{Backend, Enqueued, Priority, Symbol};

use super::{Engine, EngineError, RunProgress, RunReport};
use crate::config::Config;
use crate::features::FeatureSpec;

/// A runner working the queue in the background until stopped.
pub struct Runner {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<RunReport, EngineError>>>,
}

impl Runner {
    /// Stops claiming, finishes and commits the batch in hand, and returns
    /// what the runner did.
    pub fn stop(mut self) -> Result<RunReport, EngineError> {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take() {
            Some(h) => h.join().unwrap_or_else(|_| {
                Err(EngineError::Internal("the runner thread panicked".into()))
            }),
            None => Ok(RunReport::default()),
        }
    }
}

impl Runner {
    /// Whether the runner thread still works the queue (it ends on a store
    /// failure).
    pub fn is_running(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl<B: Backend> Engine<B> {
    /// Starts a runner on its own thread: it works the queue as jobs
    /// arrive until [`Runner::stop`]. Its threads run in the background
    /// with `background_idle` (see [`super::build_compute_pool`] for the
    /// compute pool's).
    pub fn spawn_runner(&self) -> Result<Runner, EngineError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, flag) = (self.clone(), Arc::clone(&stop));
        let handle = std::thread::Builder::new()
            .name("kiln-runner".into())
            .spawn(move || {
                // The committer it starts inherits this.
                if engine.config().background_idle {
                    crate::sys::run_in_background();
                }
                engine.run(&flag, false, &mut |_| {})
            })
            .map_err(|e| EngineError::Internal(format!("cannot start the runner thread: {e}")))?;
        Ok(Runner {
            stop,
            handle: Some(handle),
        })
    }

    /// [`Engine::submit_as`] for async callers: the durable enqueue runs on
    /// tokio's blocking pool.
    pub async fn submit_async(
        &self,
        client: String,
        symbols: Vec<Symbol>,
        specs: Vec<FeatureSpec>,
        priority: Priority,
    ) -> Result<Vec<Enqueued>, EngineError> {
        let engine = self.clone();
        tokio::task::spawn_blocking(move || engine.submit_as(&client, &symbols, &specs, priority))
            .await
            .map_err(|e| EngineError::Internal(format!("the submit task failed: {e}")))?
    }
}

/// What [`run_reopening`] tells its caller.
pub trait RunObserver {
    /// Progress of the run, with the engine doing it.
    fn progress(&mut self, engine: &Engine, progress: RunProgress);
    /// The store failed with `error`; the engine is about to close (drop
    /// anything holding it now) and reopen after `wait`.
    fn reopening(&mut self, error: &EngineError, attempt: u32, wait: Duration);
}

/// Whether the store's failure is one a reopen may cure: an outage (I/O,
/// sled, poisoned by a failed write) or the directory still locked, never a
/// failed fsync.
fn reopenable(e: &EngineError) -> bool {
    match e {
        EngineError::Store(s) => s.is_outage() && !s.is_fatal(),
        // A lock still held a moment after its holder let go.
        EngineError::DirectoryInUse { .. } => true,
        _ => false,
    }
}

/// The longest wait between reopening attempts.
const REOPEN_WAIT_MAX: Duration = Duration::from_secs(30);

/// Runs like [`Engine::run`]; when the store fails (an I/O or sled error,
/// or the store poisoned by a failed write, but never a failed fsync: that
/// ends the run, as the process must not use the store again), closes the
/// engine, waits
/// (`breaker_recovery_ms`, doubling, at most 30 s), reopens the data
/// directory and goes on, up to `reopens_max` times in a row (a run that
/// gets jobs done in between starts the count again). Returns the engine
/// last used and what every run did together.
pub fn run_reopening(
    mut engine: Engine,
    stop: &AtomicBool,
    until_idle: bool,
    reopens_max: u32,
    observer: &mut dyn RunObserver,
) -> Result<(Engine, RunReport), EngineError> {
    let started = Instant::now();
    let mut total = RunReport::default();
    let mut attempt = 0;
    loop {
        let mut done = 0;
        let result = engine.run(stop, until_idle, &mut |p| {
            done = p.done;
            observer.progress(&engine, p);
        });
        let report = match result {
            Ok(report) => report,
            Err(e) if reopenable(&e) && !stop.load(Ordering::SeqCst) => {
                attempt = if done > 0 { 1 } else { attempt + 1 };
                let dir = engine.dir().to_path_buf();
                let config = Config {
                    store: engine.store().config().clone(),
                    engine: engine.config().clone(),
                    ..Config::default()
                };
                drop(engine);
                // Until a reopen works (a full disk may take a while to
                // clear), or the attempts run out.
                let mut failure = e;
                engine = loop {
                    if attempt > reopens_max {
                        return Err(failure);
                    }
                    let base = Duration::from_millis(config.engine.breaker_recovery_ms.max(1));
                    let wait = base
                        .saturating_mul(1 << (attempt - 1).min(16))
                        .min(REOPEN_WAIT_MAX);
                    observer.reopening(&failure, attempt, wait);
                    let deadline = Instant::now() + wait;
                    while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
                        // The stop flag (a signal) is checked every 20 ms.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    match Engine::open(&dir, config.clone()) {
                        Ok(engine) => break engine,
                        Err(e) if reopenable(&e) && !stop.load(Ordering::SeqCst) => {
                            failure = e;
                            attempt += 1;
                        }
                        Err(e) => return Err(e),
                    }
                };
                continue;
            }
            Err(e) => return Err(e),
        };
        total.add(&report);
        total.seconds = started.elapsed().as_secs_f64();
        return Ok((engine, total));
    }
}
