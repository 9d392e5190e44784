//! The engine in a service: a runner on its own threads (claim and compute
//! on one, rayon for the kernels, commits on the committer thread, a
//! bounded channel between them) that stops gracefully, and async entry
//! points for tokio callers (the HTTP API), which run the store's blocking
//! calls on tokio's blocking pool so no compute or fsync wait ever occupies
//! a tokio worker thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use kiln_store::{Enqueued, Priority, Symbol};

use super::{Engine, EngineError, RunReport};
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
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(EngineError::Request("the runner thread panicked".into()))),
            None => Ok(RunReport::default()),
        }
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

impl Engine {
    /// Starts a runner on its own thread: it works the queue as jobs
    /// arrive until [`Runner::stop`].
    pub fn spawn_runner(&self) -> Result<Runner, EngineError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, flag) = (self.clone(), Arc::clone(&stop));
        let handle = std::thread::Builder::new()
            .name("kiln-runner".into())
            .spawn(move || engine.run(&flag, false, &mut |_| {}))
            .map_err(|e| EngineError::Request(format!("cannot start the runner thread: {e}")))?;
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
            .map_err(|e| EngineError::Request(format!("the submit task failed: {e}")))?
    }
}
