//! Rolling variance and what is built on it: STDDEV, Bollinger bands, and the volatility
//! of log returns.
//!
//! [`Var`] reproduces TA-Lib 0.8.x's population variance (ddof = 0), which keeps running
//! sums of `x − shift` instead of `x` and `x²` so that prices far from zero do not cancel
//! catastrophically. The shift starts as the first value of the first window. The sums are
//! rebuilt from the window (shift = window mean, two fresh passes) when the variance falls
//! below 1e-6 of the mean squared deviation, when an outlier leaves the window (its squared
//! deviation exceeds 1e6 times what remains), or every 32·n bars. After a rebuild a
//! variance below 1e-12 of the mean squared deviation is exactly 0. Because the periodic
//! rebuild starts from fresh sums, a NaN that has left the window stops poisoning the
//! output within 32·n bars, as in TA-Lib.
//!
//! Outputs built on [`Var`]:
//! - `stddev(n)` = `√VAR(close, n)` (TA-Lib `STDDEV(n, 1)`).
//! - `bbands(n,k)` = SMA(n) ± k·√VAR(close, n) (TA-Lib `BBANDS(n, k, k, SMA)`).
//! - `volatility(n)` (kiln's own, no TA-Lib function) = the sample standard deviation
//!   (ddof = 1) of the last n log returns, computed as `√VAR(logret, n) · √(n/(n−1))`:
//!   the population variance from the same TA-Lib-style kernel, rescaled. This is exactly
//!   the peer pipeline's `STDDEV(logret, n) * sqrt(n/(n-1))`; it is tested against a
//!   two-pass sample standard deviation. It starts n bars after the first valid close
//!   (the first log return needs two closes).

use super::{NAN, skip_leading};

/// Rebuild period in units of n bars.
const REBUILD_WINDOWS: i64 = 32;

/// Population variance over n bars (TA-Lib `VAR(n)`); lookback n−1.
#[derive(Debug, Clone, PartialEq)]
pub struct Var {
    n: usize,
    /// Bars processed since the first non-NaN input (0: not started).
    pub(crate) seen: u64,
    /// Current shift subtracted from every value.
    pub(crate) shift: f64,
    /// Σ (x − shift) over the window, without the bar that leaves next.
    pub(crate) p1: f64,
    /// Σ (x − shift)² over the window, without the bar that leaves next.
    pub(crate) p2: f64,
    /// Output bars left until the periodic rebuild.
    pub(crate) since: i64,
}

impl Var {
    /// A fresh kernel for period `n` (≥ 1).
    pub fn new(n: usize) -> Self {
        let n = n.max(1);
        Self {
            n,
            seen: 0,
            shift: 0.0,
            p1: 0.0,
            p2: 0.0,
            since: REBUILD_WINDOWS * n as i64,
        }
    }

    /// Bars of input history `run` reads before `start` (the window, for rebuilds).
    pub fn history(&self) -> usize {
        self.n - 1
    }

    /// Compute `out[start..]` from `x` (`out.len() == x.len()`).
    pub fn run(&mut self, x: &[f64], start: usize, out: &mut [f64]) {
        let len = x.len();
        let mut i = skip_leading(self.seen, start, len, out, |j| x[j].is_nan());
        if i < len && self.seen == 0 {
            self.shift = x[i];
        }
        let nb = self.n - 1;
        let inv = 1.0 / self.n as f64;
        while i < len && self.seen < nb as u64 {
            let t = x[i] - self.shift;
            self.p1 += t;
            self.p2 += t * t;
            out[i] = NAN;
            self.seen += 1;
            i += 1;
        }
        if i >= len {
            return;
        }
        let (mut shift, mut p1, mut p2, mut since) = (self.shift, self.p1, self.p2, self.since);
        let period = REBUILD_WINDOWS * self.n as i64;
        for j in i..len {
            let t = x[j] - shift;
            p1 += t;
            p2 += t * t;
            let m1 = p1 * inv;
            let mut var = p2 * inv - m1 * m1;
            let t = x[j - nb] - shift;
            p1 -= t;
            let t2 = t * t;
            p2 -= t2;
            since -= 1;
            // Non-short-circuit `|`: one well-predicted branch instead of three.
            let rebuild = (var < 1e-6 * (p2 * inv)) | (t2 > 1e6 * p2) | (since <= 0);
            if rebuild {
                since = period;
                let window = &x[j - nb..=j];
                let mut s = 0.0;
                for &v in window {
                    s += v;
                }
                shift = s * inv;
                p1 = 0.0;
                p2 = 0.0;
                for &v in window {
                    let t = v - shift;
                    p1 += t;
                    p2 += t * t;
                }
                let m1 = p1 * inv;
                var = p2 * inv - m1 * m1;
                if var < 1e-12 * (p2 * inv) {
                    var = 0.0;
                }
                let t = x[j - nb] - shift;
                p1 -= t;
                p2 -= t * t;
            }
            out[j] = var;
        }
        (self.shift, self.p1, self.p2, self.since) = (shift, p1, p2, since);
        self.seen += (len - i) as u64;
    }
}

/// Standard deviation from a variance, as TA-Lib's STDDEV takes it: `√var`, with a
/// (theoretically impossible) negative variance read as 0 and NaN kept.
#[inline]
pub fn std_from_var(var: f64) -> f64 {
    if var < 0.0 { 0.0 } else { var.sqrt() }
}

/// `out[i] = sd[i] · scale` for `i >= start`, where `sd` is [`std_from_var`] of a
/// variance: STDDEV(n) with scale 1, and `volatility(n)` with scale √(n/(n−1))
/// (population → sample standard deviation).
pub fn scaled_std(sd: &[f64], scale: f64, start: usize, out: &mut [f64]) {
    for (o, &s) in out[start..].iter_mut().zip(&sd[start..]) {
        *o = s * scale;
    }
}

/// One Bollinger band: `mid ± k·σ` for `i >= start` (TA-Lib BBANDS with an SMA middle),
/// from the standard deviation column `sd`.
pub fn band(mid: &[f64], sd: &[f64], k: f64, upper: bool, start: usize, out: &mut [f64]) {
    let it = out[start..].iter_mut().zip(&mid[start..]).zip(&sd[start..]);
    if upper {
        for ((o, &m), &s) in it {
            *o = m + s * k;
        }
    } else {
        for ((o, &m), &s) in it {
            *o = m - s * k;
        }
    }
}

/// The scale that turns a population standard deviation over n values into a sample one.
pub fn sample_scale(n: usize) -> f64 {
    let n = n.max(2) as f64;
    (n / (n - 1.0)).sqrt()
}
