//! Many symbols at once: [`compute_batch`] runs one plan over many symbols in parallel on
//! rayon's pool, and [`compute_batch_async`] is the bridge for tokio callers.
//!
//! Why a bridge: feature computation is CPU-bound for milliseconds to seconds. Run on a
//! tokio worker it would stall every task scheduled on that worker, and
//! `spawn_blocking` would put CPU work on a pool sized for blocking I/O. Instead the batch
//! is handed to rayon with `rayon::spawn`, and the async caller awaits a
//! `tokio::sync::oneshot` that the rayon task completes; no tokio thread ever blocks.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use rayon::prelude::*;

use super::plan::Scratch;
use super::{Bars, FeatureError, Frame, Plan};

/// Compute `plan` for every symbol in parallel; one new [`Frame`] per symbol, in order.
/// Intermediate columns stay in per-worker scratch buffers; frames hold the outputs.
pub fn compute_batch(plan: &Plan, symbols: &[Bars<'_>]) -> Result<Vec<Frame>, FeatureError> {
    symbols
        .par_iter()
        .map_init(Scratch::default, |scratch, bars| {
            let mut frame = plan.new_frame();
            plan.compute_with_scratch(*bars, &mut frame, scratch)?;
            Ok(frame)
        })
        .collect()
}

/// Like [`compute_batch`], into caller-provided frames (`frames.len() == symbols.len()`).
/// Reusing warm frames avoids allocating and first-touching output memory.
pub fn compute_batch_into(
    plan: &Plan,
    symbols: &[Bars<'_>],
    frames: &mut [Frame],
) -> Result<(), FeatureError> {
    if frames.len() != symbols.len() {
        return Err(FeatureError::FrameCount {
            frames: frames.len(),
            symbols: symbols.len(),
        });
    }
    frames
        .par_iter_mut()
        .zip(symbols.par_iter())
        .try_for_each_init(Scratch::default, |scratch, (frame, bars)| {
            plan.compute_with_scratch(*bars, frame, scratch)
        })
}

/// One symbol's bar columns, owned (for handing a batch to another thread).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OwnedBars {
    /// Opening prices.
    pub open: Vec<f64>,
    /// High prices.
    pub high: Vec<f64>,
    /// Low prices.
    pub low: Vec<f64>,
    /// Closing prices.
    pub close: Vec<f64>,
    /// Volumes.
    pub volume: Vec<f64>,
}

impl OwnedBars {
    /// Keeps the first `bars` bars of every column.
    pub fn truncate(&mut self, bars: usize) {
        for col in [
            &mut self.open,
            &mut self.high,
            &mut self.low,
            &mut self.close,
            &mut self.volume,
        ] {
            col.truncate(bars);
        }
    }

    /// A borrowed view.
    pub fn view(&self) -> Bars<'_> {
        Bars {
            open: &self.open,
            high: &self.high,
            low: &self.low,
            close: &self.close,
            volume: &self.volume,
        }
    }
}

/// Compute a batch on the rayon pool from async code without blocking a tokio worker.
///
/// The work runs via `rayon::spawn`; the result comes back through a oneshot channel. A
/// panic inside the batch is caught and returned as [`FeatureError::BatchAborted`] (an
/// uncaught panic in `rayon::spawn` would abort the process).
pub async fn compute_batch_async(
    plan: Arc<Plan>,
    symbols: Arc<[OwnedBars]>,
) -> Result<Vec<Frame>, FeatureError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let result = catch_unwind(AssertUnwindSafe(|| {
            let views: Vec<Bars<'_>> = symbols.iter().map(OwnedBars::view).collect();
            compute_batch(&plan, &views)
        }));
        let answer = result.unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_owned());
            Err(FeatureError::BatchAborted(msg))
        });
        // The receiver may be gone (the caller's future was dropped); nothing to do then.
        let _ = tx.send(answer);
    });
    rx.await
        .map_err(|_| FeatureError::BatchAborted("result channel closed".to_owned()))?
}
