//! Volume kernels: on-balance volume (TA-Lib `OBV`) and rolling VWAP (kiln's own).
//!
//! - OBV starts at the first bar where close and volume are both non-NaN with that bar's
//!   volume; afterwards it adds the volume on an up-close and subtracts it on a down-close,
//!   comparing with the previous bar's close exactly as TA-Lib does (a NaN close compares
//!   false both ways and leaves OBV unchanged).
//! - `vwap(n)` has no TA-Lib function. Definition: with typical price
//!   `tp = (h + l + c) / 3`, `vwap = Σ(tp·v) / Σ v` over the last n bars, both sums kept
//!   as running sums in TA-Lib's `SUM` order (add the new bar, output, subtract the bar
//!   leaving). The window starts at the first bar where high, low, close and volume are all
//!   non-NaN; lookback n−1. A window with zero total volume gives NaN (0/0).

use super::{NAN, skip_leading};

/// On-balance volume (TA-Lib `OBV`); lookback 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Obv {
    /// Bars processed since the first bar with close and volume non-NaN (0: not started).
    pub(crate) seen: u64,
    /// The running OBV.
    pub(crate) obv: f64,
}

impl Obv {
    /// A fresh kernel.
    pub fn new() -> Self {
        Self { seen: 0, obv: 0.0 }
    }

    /// Bars of input history `run` reads before `start`.
    pub fn history(&self) -> usize {
        1
    }

    /// Compute `out[start..]` from the close and volume columns.
    pub fn run(&mut self, c: &[f64], v: &[f64], start: usize, out: &mut [f64]) {
        let len = c.len();
        let mut i = skip_leading(self.seen, start, len, out, |j| {
            c[j].is_nan() || v[j].is_nan()
        });
        if i < len && self.seen == 0 {
            self.obv = v[i];
            out[i] = self.obv;
            self.seen = 1;
            i += 1;
        }
        if i >= len {
            return;
        }
        let mut obv = self.obv;
        for j in i..len {
            let (now, prev) = (c[j], c[j - 1]);
            if now > prev {
                obv += v[j];
            } else if now < prev {
                obv -= v[j];
            }
            out[j] = obv;
        }
        self.obv = obv;
        self.seen += (len - i) as u64;
    }
}

impl Default for Obv {
    fn default() -> Self {
        Self::new()
    }
}

/// Rolling volume-weighted average price over n bars; lookback n−1.
#[derive(Debug, Clone, PartialEq)]
pub struct Vwap {
    n: usize,
    /// Bars processed since the first bar with all inputs non-NaN (0: not started).
    pub(crate) seen: u64,
    /// Running Σ tp·v, without the bar that leaves next.
    pub(crate) pv: f64,
    /// Running Σ v, without the bar that leaves next.
    pub(crate) vol: f64,
}

#[inline]
fn price_volume(h: f64, l: f64, c: f64, v: f64) -> f64 {
    // TA-Lib's TYPPRICE order: (h + l + c) / 3.
    ((h + l + c) / 3.0) * v
}

impl Vwap {
    /// A fresh kernel for period `n` (≥ 1).
    pub fn new(n: usize) -> Self {
        Self {
            n: n.max(1),
            seen: 0,
            pv: 0.0,
            vol: 0.0,
        }
    }

    /// Bars of input history `run` reads before `start`.
    pub fn history(&self) -> usize {
        self.n - 1
    }

    /// Compute `out[start..]` from the high, low, close and volume columns.
    pub fn run(
        &mut self,
        h: &[f64],
        l: &[f64],
        c: &[f64],
        v: &[f64],
        start: usize,
        out: &mut [f64],
    ) {
        let len = c.len();
        let mut i = skip_leading(self.seen, start, len, out, |j| {
            h[j].is_nan() || l[j].is_nan() || c[j].is_nan() || v[j].is_nan()
        });
        let warm = (self.n - 1) as u64;
        while i < len && self.seen < warm {
            self.pv += price_volume(h[i], l[i], c[i], v[i]);
            self.vol += v[i];
            out[i] = NAN;
            self.seen += 1;
            i += 1;
        }
        if i >= len {
            return;
        }
        let (mut pv, mut vol) = (self.pv, self.vol);
        let lag = self.n - 1;
        for j in i..len {
            pv += price_volume(h[j], l[j], c[j], v[j]);
            vol += v[j];
            out[j] = pv / vol;
            let k = j - lag;
            pv -= price_volume(h[k], l[k], c[k], v[k]);
            vol -= v[k];
        }
        (self.pv, self.vol) = (pv, vol);
        self.seen += (len - i) as u64;
    }
}
