//! Range kernels over high/low/close: true range, ATR and NATR (TA-Lib 0.8.x forms).
//!
//! - TR = the largest of `h − l`, `|c[−1] − h|`, `|c[−1] − l|`, compared in that order with
//!   `>` as TA-Lib does (so a NaN previous close leaves `h − l`); NaN at the first bar.
//! - ATR seeds with the sequential mean of TR over bars 1..=n (output at bar n), then steps
//!   `atr = wβ.mul_add(atr, wα·TR)` with `wβ = (n−1)/n`, `wα = 1 − wβ`. ATR(1) equals TR
//!   until a NaN, which (as in TA-Lib 0.8.1) it then keeps.
//! - NATR = `(atr / c)·100`, 0 when the close is 0.
//!
//! A bar counts once high, low and close are all non-NaN (TA-Lib's wrapper skips leading
//! bars where any input is NaN). ATR computes TR inline rather than reading a TR column:
//! it saves a pass, and the begin bar must be judged on the raw inputs anyway.

use super::{NAN, skip_leading};

#[inline]
fn true_range(h: f64, l: f64, prev_close: f64) -> f64 {
    let mut greatest = h - l;
    let up = (prev_close - h).abs();
    if up > greatest {
        greatest = up;
    }
    let down = (prev_close - l).abs();
    if down > greatest {
        greatest = down;
    }
    greatest
}

#[inline]
fn any_nan(h: &[f64], l: &[f64], c: &[f64], j: usize) -> bool {
    h[j].is_nan() || l[j].is_nan() || c[j].is_nan()
}

/// Skips leading bars with a NaN input, then gives NaN at the first valid
/// bar (it has no previous close, so no true range) and counts it as seen.
/// Returns the first bar with a true range.
fn first_range_bar(
    seen: &mut u64,
    h: &[f64],
    l: &[f64],
    c: &[f64],
    start: usize,
    out: &mut [f64],
) -> usize {
    let len = c.len();
    let mut i = skip_leading(*seen, start, len, out, |j| any_nan(h, l, c, j));
    if i < len && *seen == 0 {
        out[i] = NAN;
        *seen = 1;
        i += 1;
    }
    i
}

/// True range (TA-Lib `TRANGE`); lookback 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Trange {
    /// Bars processed since the first bar with all inputs non-NaN (0: not started).
    pub(crate) seen: u64,
}

impl Trange {
    /// A fresh kernel.
    pub fn new() -> Self {
        Self { seen: 0 }
    }

    /// Bars of input history `run` reads before `start`.
    pub fn history(&self) -> usize {
        1
    }

    /// Compute `out[start..]` from the high, low and close columns.
    pub fn run(&mut self, h: &[f64], l: &[f64], c: &[f64], start: usize, out: &mut [f64]) {
        let len = c.len();
        let i = first_range_bar(&mut self.seen, h, l, c, start, out);
        for j in i..len {
            out[j] = true_range(h[j], l[j], c[j - 1]);
        }
        self.seen += (len - i.min(len)) as u64;
    }
}

impl Default for Trange {
    fn default() -> Self {
        Self::new()
    }
}

/// Wilder's average true range (TA-Lib `ATR`); lookback n.
#[derive(Debug, Clone, PartialEq)]
pub struct Atr {
    n: usize,
    /// Bars processed since the first bar with all inputs non-NaN (0: not started).
    pub(crate) seen: u64,
    /// TR sum while warming up, then the last ATR.
    pub(crate) acc: f64,
}

impl Atr {
    /// A fresh kernel for period `n` (≥ 1).
    pub fn new(n: usize) -> Self {
        Self {
            n: n.max(1),
            seen: 0,
            acc: 0.0,
        }
    }

    /// Bars of input history `run` reads before `start`.
    pub fn history(&self) -> usize {
        1
    }

    /// Compute `out[start..]` from the high, low and close columns.
    pub fn run(&mut self, h: &[f64], l: &[f64], c: &[f64], start: usize, out: &mut [f64]) {
        let len = c.len();
        let mut i = first_range_bar(&mut self.seen, h, l, c, start, out);
        let n = self.n as u64;
        while i < len && self.seen <= n {
            self.acc += true_range(h[i], l[i], c[i - 1]);
            if self.seen == n {
                self.acc /= self.n as f64;
                out[i] = self.acc;
            } else {
                out[i] = NAN;
            }
            self.seen += 1;
            i += 1;
        }
        if i >= len {
            return;
        }
        // No special case for n = 1: TA-Lib 0.8.1 runs the recursion there too (wβ = 0, so
        // it equals TRANGE, except that a NaN stays NaN: 0·NaN is NaN).
        let beta = (self.n - 1) as f64 / self.n as f64;
        let alpha = 1.0 - beta;
        let mut prev = self.acc;
        for j in i..len {
            prev = beta.mul_add(prev, alpha * true_range(h[j], l[j], c[j - 1]));
            out[j] = prev;
        }
        self.acc = prev;
        self.seen += (len - i) as u64;
    }
}

/// Normalized ATR (TA-Lib `NATR`) from an ATR column; lookback n.
///
/// It tracks its own start bar on the raw inputs because TA-Lib applies the "close is 0"
/// rule at every bar after the lookback, even where the ATR is NaN.
#[derive(Debug, Clone, PartialEq)]
pub struct Natr {
    n: usize,
    /// Bars processed since the first bar with all inputs non-NaN (0: not started).
    pub(crate) seen: u64,
}

impl Natr {
    /// A fresh kernel for period `n` (≥ 1).
    pub fn new(n: usize) -> Self {
        Self {
            n: n.max(1),
            seen: 0,
        }
    }

    /// Compute `out[start..]` from the high, low, close and ATR(n) columns.
    pub fn run(
        &mut self,
        h: &[f64],
        l: &[f64],
        c: &[f64],
        atr: &[f64],
        start: usize,
        out: &mut [f64],
    ) {
        let len = c.len();
        let mut i = skip_leading(self.seen, start, len, out, |j| any_nan(h, l, c, j));
        while i < len && self.seen < self.n as u64 {
            out[i] = NAN;
            self.seen += 1;
            i += 1;
        }
        if i >= len {
            return;
        }
        for j in i..len {
            let close = c[j];
            out[j] = if close != 0.0 {
                (atr[j] / close) * 100.0
            } else {
                0.0
            };
        }
        self.seen += (len - i) as u64;
    }
}
