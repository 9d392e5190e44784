//! Momentum kernels over the close: RSI (Wilder), MOM, ROC and log returns.
//!
//! - RSI (TA-Lib 0.8.x): the seed averages are the sums of the first n gains and losses
//!   times `1/n`, output from bar n; each later step is `avg = (avg·(n−1) + g)·(1/n)`.
//!   RSI = `100·(g/(g+l))`, and 0 when `g + l` is not positive (a constant series gives 0;
//!   once a NaN has poisoned the averages TA-Lib also gives 0, and so does kiln).
//! - MOM = `x − x[−n]`; ROC = `((x / x[−n]) − 1)·100`, 0 when the earlier price is 0.
//! - `logret` (not in TA-Lib) = `ln(x / x[−1])`, NaN at the first valid bar. It is the
//!   input of `volatility(n)`.

use super::{NAN, skip_leading};

/// Wilder's relative strength index (TA-Lib `RSI`); lookback n.
#[derive(Debug, Clone, PartialEq)]
pub struct Rsi {
    n: usize,
    /// Bars processed since the first non-NaN input (0: not started).
    pub(crate) seen: u64,
    /// Average gain (a plain sum while warming up).
    pub(crate) gain: f64,
    /// Average loss (a plain sum while warming up).
    pub(crate) loss: f64,
}

#[inline]
fn rsi_value(gain: f64, loss: f64) -> f64 {
    let total = gain + loss;
    if total > 0.0 {
        100.0 * (gain / total)
    } else {
        0.0
    }
}

impl Rsi {
    /// A fresh kernel for period `n` (≥ 1).
    pub fn new(n: usize) -> Self {
        Self {
            n: n.max(1),
            seen: 0,
            gain: 0.0,
            loss: 0.0,
        }
    }

    /// Bars of input history `run` reads before `start`.
    pub fn history(&self) -> usize {
        1
    }

    /// Compute `out[start..]` from `x` (`out.len() == x.len()`).
    pub fn run(&mut self, x: &[f64], start: usize, out: &mut [f64]) {
        let len = x.len();
        let mut i = skip_leading(self.seen, start, len, out, |j| x[j].is_nan());
        if i < len && self.seen == 0 {
            out[i] = NAN;
            self.seen = 1;
            i += 1;
        }
        let n = self.n as u64;
        let inv = 1.0 / self.n as f64;
        while i < len && self.seen <= n {
            let d = x[i] - x[i - 1];
            let up = if d > 0.0 { d } else { 0.0 };
            self.gain += up;
            self.loss += up - d;
            if self.seen == n {
                self.gain *= inv;
                self.loss *= inv;
                out[i] = rsi_value(self.gain, self.loss);
            } else {
                out[i] = NAN;
            }
            self.seen += 1;
            i += 1;
        }
        if i >= len {
            return;
        }
        let nm1 = (self.n - 1) as f64;
        let (mut gain, mut loss) = (self.gain, self.loss);
        for j in i..len {
            let d = x[j] - x[j - 1];
            let up = if d > 0.0 { d } else { 0.0 };
            gain = gain * nm1 + up;
            loss = loss * nm1 + (up - d);
            gain *= inv;
            loss *= inv;
            out[j] = rsi_value(gain, loss);
        }
        (self.gain, self.loss) = (gain, loss);
        self.seen += (len - i) as u64;
    }
}

/// Which difference a [`Lagged`] kernel takes between `x` and `x[−n]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagKind {
    /// MOM: `x − p`.
    Mom,
    /// ROC: `((x / p) − 1)·100`, 0 when `p == 0`.
    Roc,
    /// Log return: `ln(x / p)` (used with n = 1).
    LogRet,
}

/// MOM, ROC and log returns: a function of `x` and `x[−n]`; lookback n.
#[derive(Debug, Clone, PartialEq)]
pub struct Lagged {
    n: usize,
    kind: LagKind,
    /// Bars processed since the first non-NaN input (0: not started).
    pub(crate) seen: u64,
}

impl Lagged {
    /// A fresh kernel for lag `n` (≥ 1).
    pub fn new(kind: LagKind, n: usize) -> Self {
        Self {
            n: n.max(1),
            kind,
            seen: 0,
        }
    }

    /// Bars of input history `run` reads before `start`.
    pub fn history(&self) -> usize {
        self.n
    }

    /// Compute `out[start..]` from `x` (`out.len() == x.len()`).
    pub fn run(&mut self, x: &[f64], start: usize, out: &mut [f64]) {
        let len = x.len();
        let mut i = skip_leading(self.seen, start, len, out, |j| x[j].is_nan());
        while i < len && self.seen < self.n as u64 {
            out[i] = NAN;
            self.seen += 1;
            i += 1;
        }
        if i >= len {
            return;
        }
        let it = out[i..len].iter_mut().zip(&x[i..]).zip(&x[i - self.n..]);
        match self.kind {
            LagKind::Mom => {
                for ((o, &v), &p) in it {
                    *o = v - p;
                }
            }
            LagKind::Roc => {
                for ((o, &v), &p) in it {
                    *o = if p != 0.0 {
                        ((v / p) - 1.0) * 100.0
                    } else {
                        0.0
                    };
                }
            }
            LagKind::LogRet => {
                for ((o, &v), &p) in it {
                    *o = (v / p).ln();
                }
            }
        }
        self.seen += (len - i) as u64;
    }
}
