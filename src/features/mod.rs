//! Feature computation: the indicator catalog, exact TA-Lib-compatible kernels, the plan
//! that computes shared intermediates once, incremental continuation, and parallel batches.
//!
//! - [`spec`]: parse and print feature specs (`sma(20)`, `macd(12,26,9)`).
//! - kernel families, one file each: [`average`] (SMA, EMA, WMA), [`variance`] (VAR,
//!   STDDEV, Bollinger, volatility), [`momentum`] (RSI, MOM, ROC, log returns), [`range`]
//!   (TRANGE, ATR, NATR), [`volume`] (OBV, VWAP).
//! - [`plan`]: the dependency DAG over a set of specs, and per-symbol computation into a
//!   reusable [`Frame`]; also incremental continuation from a [`SymbolState`].
//! - [`state`]: the versioned byte encoding of a [`SymbolState`].
//! - [`batch`]: many symbols in parallel on rayon, and the bridge for tokio callers.
//!
//! # Conventions shared by every kernel
//! Inputs are contiguous `&[f64]` columns of equal length. A kernel starts at the first bar
//! where all of its inputs are non-NaN (earlier bars give NaN), as TA-Lib's Python wrapper
//! does; a NaN after that start flows through the arithmetic as it does in TA-Lib (for
//! example it poisons every later SMA value). Outputs are NaN during the lookback.
//!
//! ```
//! use kiln::features::{Bars, Plan};
//!
//! let close: Vec<f64> = (0..60).map(|i| 100.0 + (i as f64).sin()).collect();
//! let bars = Bars::close_only(&close);
//! let plan = Plan::parse(&["sma(20)", "bbands(20,2)", "rsi(14)"]).unwrap();
//! let mut frame = plan.new_frame();
//! plan.compute(bars, &mut frame).unwrap();
//! assert_eq!(plan.output_labels()[1], "bbands(20,2).upper");
//! // sma(20) and the middle band are the same intermediate, computed once.
//! let (sma, middle) = (frame.output(0).unwrap(), frame.output(2).unwrap());
//! assert!(std::ptr::eq(sma, middle));
//! // Lookback n-1: the first 19 bars are NaN.
//! assert!(sma[18].is_nan() && !sma[19].is_nan());
//! ```

pub mod average;
pub mod batch;
pub mod momentum;
pub mod plan;
pub mod range;
pub mod spec;
pub mod state;
pub mod variance;
pub mod volume;

pub use batch::{OwnedBars, compute_batch, compute_batch_async, compute_batch_into};
pub use plan::{Frame, Plan, Scratch, SymbolState};
pub use spec::{FeatureSpec, SpecError};
pub use state::StateError;

pub(crate) const NAN: f64 = f64::NAN;

/// The standard feature set: the 20 outputs the demo computes and the
/// benchmarks time (the set of the peers' `features.py`).
pub const STANDARD_SET: [&str; 16] = [
    "sma(5)",
    "sma(10)",
    "sma(20)",
    "sma(50)",
    "sma(200)",
    "ema(12)",
    "ema(26)",
    "ema(50)",
    "macd(12,26,9)",
    "bbands(20,2)",
    "rsi(14)",
    "mom(10)",
    "roc(10)",
    "volatility(20)",
    "atr(14)",
    "vwap(20)",
];

/// The plan of [`STANDARD_SET`].
pub fn standard_plan() -> Result<Plan, FeatureError> {
    Plan::parse(&STANDARD_SET)
}

/// One symbol's bar columns, borrowed. All columns must have the same length.
#[derive(Debug, Clone, Copy)]
pub struct Bars<'a> {
    /// Opening prices (no catalog kernel reads them; kept for completeness of the row).
    pub open: &'a [f64],
    /// High prices.
    pub high: &'a [f64],
    /// Low prices.
    pub low: &'a [f64],
    /// Closing prices.
    pub close: &'a [f64],
    /// Volumes.
    pub volume: &'a [f64],
}

impl<'a> Bars<'a> {
    /// Bars whose every column is `close`: enough for the close-only features (`sma`,
    /// `ema`, `rsi`, ...) in examples and tests. Range and volume features computed from
    /// them are meaningless.
    pub fn close_only(close: &'a [f64]) -> Self {
        Self {
            open: close,
            high: close,
            low: close,
            close,
            volume: close,
        }
    }

    /// The number of bars, after checking that the columns agree.
    pub fn checked_len(&self) -> Result<usize, FeatureError> {
        let n = self.close.len();
        let ok = self.open.len() == n
            && self.high.len() == n
            && self.low.len() == n
            && self.volume.len() == n;
        if ok {
            Ok(n)
        } else {
            Err(FeatureError::RaggedColumns {
                open: self.open.len(),
                high: self.high.len(),
                low: self.low.len(),
                close: self.close.len(),
                volume: self.volume.len(),
            })
        }
    }

    /// True when there are no bars.
    pub fn is_empty(&self) -> bool {
        self.close.is_empty()
    }
}

/// Everything that can go wrong computing features.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeatureError {
    /// A spec did not parse.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A symbol's columns differ in length.
    #[error(
        "bar columns differ in length: open {open}, high {high}, low {low}, close {close}, volume {volume}"
    )]
    RaggedColumns {
        /// Length of the open column.
        open: usize,
        /// Length of the high column.
        high: usize,
        /// Length of the low column.
        low: usize,
        /// Length of the close column.
        close: usize,
        /// Length of the volume column.
        volume: usize,
    },
    /// Saved state could not be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// `compute_batch_into` got a different number of frames than symbols.
    #[error("{frames} frames given for {symbols} symbols")]
    FrameCount {
        /// Frames given.
        frames: usize,
        /// Symbols given.
        symbols: usize,
    },
    /// The batch task on the rayon pool panicked (or was dropped) before answering.
    #[error("feature batch aborted: {0}")]
    BatchAborted(String),
}

/// Advance `i` (from `start`) over bars before a kernel's first valid bar, writing NaN.
///
/// Only while `seen == 0`: once a kernel has started, a NaN input is data, not a leading gap.
#[inline]
pub(crate) fn skip_leading(
    seen: u64,
    start: usize,
    len: usize,
    out: &mut [f64],
    invalid: impl Fn(usize) -> bool,
) -> usize {
    let mut i = start;
    if seen == 0 {
        while i < len && invalid(i) {
            out[i] = NAN;
            i += 1;
        }
    }
    i
}
