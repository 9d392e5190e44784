//! Moving-average kernels: SMA, EMA (also the EMAs under MACD) and WMA.
//!
//! Every kernel here is a resumable state machine over one input column, written the way
//! TA-Lib 0.8.1 computes it so the bits agree (see `../shared/peers/README.md`):
//! - SMA: a running sum; add the new value, output `sum / n`, then subtract the value
//!   leaving the window (TA-Lib's `TA_INT_SMA` order; a per-window sum differs by ~1e-13).
//! - EMA: seeded at its first output with the sequential mean of the first `n` values, then
//!   `prev = (x - prev).mul_add(k, prev)` with `k = 2 / (n + 1)` (0.8.x uses `fma`).
//! - WMA: TA-Lib's running weighted sum and running plain sum.
//!
//! A kernel's `run(x, start, out)` writes `out[start..]`. `x[..start]` is history the
//! kernel may read (at most [`Sma::history`] bars back); in a full computation `start` is
//! 0, and when continuing from saved state it is the saved tail of earlier bars. The
//! kernel state plus that tail is everything needed to continue bit for bit.

use super::{NAN, skip_leading};

/// Simple moving average (TA-Lib `SMA`); lookback n−1.
#[derive(Debug, Clone, PartialEq)]
pub struct Sma {
    n: usize,
    /// Bars processed since the first non-NaN input (0: not started).
    pub(crate) seen: u64,
    /// Running sum of the window, without the bar that leaves next.
    pub(crate) sum: f64,
}

impl Sma {
    /// A fresh kernel for period `n` (≥ 1).
    pub fn new(n: usize) -> Self {
        Self {
            n: n.max(1),
            seen: 0,
            sum: 0.0,
        }
    }

    /// Bars of input history `run` reads before `start`.
    pub fn history(&self) -> usize {
        self.n - 1
    }

    /// Compute `out[start..]` from `x` (`out.len() == x.len()`).
    pub fn run(&mut self, x: &[f64], start: usize, out: &mut [f64]) {
        let len = x.len();
        let mut i = skip_leading(self.seen, start, len, out, |j| x[j].is_nan());
        let warm = (self.n - 1) as u64;
        while i < len && self.seen < warm {
            self.sum += x[i];
            out[i] = NAN;
            self.seen += 1;
            i += 1;
        }
        if i >= len {
            return;
        }
        let n = self.n as f64;
        let mut sum = self.sum;
        // `i + 1 - n` is at or after the first valid bar: `seen >= n - 1` bars precede `i`.
        let trailing = &x[i + 1 - self.n..];
        for ((o, &v), &old) in out[i..len].iter_mut().zip(&x[i..]).zip(trailing) {
            sum += v;
            *o = sum / n;
            sum -= old;
        }
        self.sum = sum;
        self.seen += (len - i) as u64;
    }
}

/// Exponential moving average (TA-Lib `EMA`), optionally seeded late.
///
/// `skip` ignores that many valid bars before the seed window starts. A plain `ema(n)` has
/// `skip = 0` (seed = mean of the first n values, output from bar n−1). MACD's fast EMA
/// has `skip = slow − fast`: TA-Lib seeds it at the same bar as the slow EMA, with the mean
/// of the `fast` values ending there.
#[derive(Debug, Clone, PartialEq)]
pub struct Ema {
    n: usize,
    skip: u64,
    k: f64,
    /// Bars processed since the first non-NaN input (0: not started).
    pub(crate) seen: u64,
    /// The seed sum while warming up, then the last EMA value.
    pub(crate) acc: f64,
}

impl Ema {
    /// A fresh kernel for period `n` (≥ 1) with `skip` ignored bars.
    pub fn new(n: usize, skip: usize) -> Self {
        let n = n.max(1);
        Self {
            n,
            skip: skip as u64,
            // TA-Lib's PER_TO_K: 2 / (n + 1) in double precision.
            k: 2.0 / (n as f64 + 1.0),
            seen: 0,
            acc: 0.0,
        }
    }

    /// Bars of input history `run` reads before `start` (none: the seed sum is state).
    pub fn history(&self) -> usize {
        0
    }

    /// Compute `out[start..]` from `x` (`out.len() == x.len()`).
    pub fn run(&mut self, x: &[f64], start: usize, out: &mut [f64]) {
        let len = x.len();
        let mut i = skip_leading(self.seen, start, len, out, |j| x[j].is_nan());
        let seed_at = self.skip + self.n as u64 - 1;
        while i < len && self.seen < self.skip {
            out[i] = NAN;
            self.seen += 1;
            i += 1;
        }
        while i < len && self.seen < seed_at {
            self.acc += x[i];
            out[i] = NAN;
            self.seen += 1;
            i += 1;
        }
        if i < len && self.seen == seed_at {
            self.acc += x[i];
            self.acc /= self.n as f64;
            out[i] = self.acc;
            self.seen += 1;
            i += 1;
        }
        if i >= len {
            return;
        }
        let k = self.k;
        let mut prev = self.acc;
        for (o, &v) in out[i..len].iter_mut().zip(&x[i..]) {
            prev = (v - prev).mul_add(k, prev);
            *o = prev;
        }
        self.acc = prev;
        self.seen += (len - i) as u64;
    }
}

/// Weighted moving average (TA-Lib `WMA`, weights 1..=n, newest heaviest); lookback n−1.
///
/// Running weighted and plain sums, rebuilt from the window every 8·n output bars. TA-Lib
/// 0.8.1 rebuilds on that schedule too: the golden fixtures show a NaN leaving the window
/// stops poisoning the output exactly at those bars, and with the rebuild kiln's WMA is
/// bit-identical to TA-Lib's on every fixture (without it, ~1e-13 relative apart).
#[derive(Debug, Clone, PartialEq)]
pub struct Wma {
    n: usize,
    /// Bars processed since the first non-NaN input (0: not started).
    pub(crate) seen: u64,
    /// Running weighted sum (after removing the plain sum for the next bar).
    pub(crate) sum: f64,
    /// Running plain sum of the window.
    pub(crate) sub: f64,
    /// The value that leaves the plain sum at the next bar.
    pub(crate) trailing: f64,
    /// Output bars left until the periodic rebuild.
    pub(crate) since: i64,
}

/// WMA's rebuild period in units of n bars.
const WMA_REBUILD_WINDOWS: i64 = 8;

impl Wma {
    /// A fresh kernel for period `n` (≥ 1).
    pub fn new(n: usize) -> Self {
        Self {
            n: n.max(1),
            seen: 0,
            sum: 0.0,
            sub: 0.0,
            trailing: 0.0,
            since: WMA_REBUILD_WINDOWS * n.max(1) as i64,
        }
    }

    /// Bars of input history `run` reads before `start`.
    pub fn history(&self) -> usize {
        self.n - 1
    }

    /// Compute `out[start..]` from `x` (`out.len() == x.len()`).
    pub fn run(&mut self, x: &[f64], start: usize, out: &mut [f64]) {
        let len = x.len();
        let mut i = skip_leading(self.seen, start, len, out, |j| x[j].is_nan());
        let warm = (self.n - 1) as u64;
        while i < len && self.seen < warm {
            self.sub += x[i];
            self.sum += x[i] * (self.seen + 1) as f64;
            out[i] = NAN;
            self.seen += 1;
            i += 1;
        }
        if i >= len {
            return;
        }
        let n = self.n as f64;
        let divider = (self.n * (self.n + 1) / 2) as f64;
        let (mut sum, mut sub, mut trailing, mut since) =
            (self.sum, self.sub, self.trailing, self.since);
        let nb = self.n - 1;
        for j in i..len {
            since -= 1;
            if since <= 0 {
                since = WMA_REBUILD_WINDOWS * self.n as i64;
                let window = &x[j - nb..=j];
                sub = 0.0;
                sum = 0.0;
                for (w, &v) in window.iter().enumerate() {
                    sub += v;
                    sum += v * (w + 1) as f64;
                }
                trailing = window[0];
            } else {
                let v = x[j];
                sub += v;
                sub -= trailing;
                sum += v * n;
                trailing = x[j - nb];
            }
            out[j] = sum / divider;
            sum -= sub;
        }
        (self.sum, self.sub, self.trailing, self.since) = (sum, sub, trailing, since);
        self.seen += (len - i) as u64;
    }
}

/// First bar at or after `start` with a non-NaN value (`x.len()` if none).
fn first_valid(x: &[f64], start: usize) -> usize {
    x[start..]
        .iter()
        .position(|v| !v.is_nan())
        .map_or(x.len(), |p| p + start)
}

/// A close-price kernel that can run interleaved with others of its kind:
/// each runs its own warm-up alone up to the bar where all are steady, then
/// the steady phases run side by side (see [`run_sma_group`]).
trait Fused: Sized {
    /// First bar (≥ `start`) of the steady phase, given the state at `start`.
    fn steady_from(&self, x: &[f64], start: usize) -> usize;
    /// The kernel alone (warm-up included).
    fn run_alone(&mut self, x: &[f64], start: usize, out: &mut [f64]);
    /// `K` steady kernels side by side from bar `from`.
    fn fused<const K: usize>(ks: &mut [&mut Self], x: &[f64], from: usize, outs: &mut [&mut [f64]]);
}

impl Fused for Sma {
    fn steady_from(&self, x: &[f64], start: usize) -> usize {
        let warm = self.n - 1;
        if self.seen == 0 {
            first_valid(x, start).saturating_add(warm)
        } else {
            start + warm.saturating_sub(usize::try_from(self.seen).unwrap_or(usize::MAX))
        }
    }

    fn run_alone(&mut self, x: &[f64], start: usize, out: &mut [f64]) {
        self.run(x, start, out);
    }

    fn fused<const K: usize>(
        ks: &mut [&mut Self],
        x: &[f64],
        from: usize,
        outs: &mut [&mut [f64]],
    ) {
        sma_fused::<K>(ks, x, from, outs);
    }
}

impl Fused for Ema {
    fn steady_from(&self, x: &[f64], start: usize) -> usize {
        let seeded = usize::try_from(self.skip).unwrap_or(usize::MAX) + self.n;
        if self.seen == 0 {
            first_valid(x, start).saturating_add(seeded)
        } else {
            start + seeded.saturating_sub(usize::try_from(self.seen).unwrap_or(usize::MAX))
        }
    }

    fn run_alone(&mut self, x: &[f64], start: usize, out: &mut [f64]) {
        self.run(x, start, out);
    }

    fn fused<const K: usize>(
        ks: &mut [&mut Self],
        x: &[f64],
        from: usize,
        outs: &mut [&mut [f64]],
    ) {
        ema_fused::<K>(ks, x, from, outs);
    }
}

/// Runs kernels of one kind over the same column: each alone up to the bar
/// where all are steady, then in interleaved chunks of up to four.
fn run_group<T: Fused>(ks: &mut [&mut T], x: &[f64], start: usize, outs: &mut [&mut [f64]]) {
    let len = x.len();
    let steady = ks
        .iter()
        .map(|k| k.steady_from(x, start))
        .fold(start, usize::max)
        .min(len);
    for (k, o) in ks.iter_mut().zip(outs.iter_mut()) {
        k.run_alone(&x[..steady], start, &mut o[..steady]);
    }
    for (kc, oc) in ks.chunks_mut(4).zip(outs.chunks_mut(4)) {
        match kc.len() {
            4 => T::fused::<4>(kc, x, steady, oc),
            3 => T::fused::<3>(kc, x, steady, oc),
            2 => T::fused::<2>(kc, x, steady, oc),
            _ => T::fused::<1>(kc, x, steady, oc),
        }
    }
}

/// Run several SMAs over the same column in one pass.
///
/// Each SMA's running sum is a chain of dependent additions, so one SMA per loop leaves
/// the CPU waiting on add latency; interleaving up to four independent chains keeps it
/// busy. Each kernel still performs exactly its own sequence of operations, so the
/// results are bit-identical to running them one by one. Warm-up and leading NaNs are
/// handled by each kernel's own `run` up to the bar where all are steady.
pub fn run_sma_group(ks: &mut [&mut Sma], x: &[f64], start: usize, outs: &mut [&mut [f64]]) {
    run_group(ks, x, start, outs);
}

fn sma_fused<const K: usize>(ks: &mut [&mut Sma], x: &[f64], from: usize, outs: &mut [&mut [f64]]) {
    let len = x.len();
    if from >= len {
        return;
    }
    let mut sum = [0.0; K];
    let mut n = [0.0; K];
    let mut lag = [0usize; K];
    for s in 0..K {
        sum[s] = ks[s].sum;
        n[s] = ks[s].n as f64;
        lag[s] = ks[s].n - 1;
    }
    for j in from..len {
        let v = x[j];
        for s in 0..K {
            sum[s] += v;
            outs[s][j] = sum[s] / n[s];
            sum[s] -= x[j - lag[s]];
        }
    }
    for s in 0..K {
        ks[s].sum = sum[s];
        ks[s].seen += (len - from) as u64;
    }
}

/// Run several EMAs over the same column in one pass; see [`run_sma_group`] for why.
pub fn run_ema_group(ks: &mut [&mut Ema], x: &[f64], start: usize, outs: &mut [&mut [f64]]) {
    run_group(ks, x, start, outs);
}

fn ema_fused<const K: usize>(ks: &mut [&mut Ema], x: &[f64], from: usize, outs: &mut [&mut [f64]]) {
    let len = x.len();
    if from >= len {
        return;
    }
    let mut prev = [0.0; K];
    let mut k = [0.0; K];
    for s in 0..K {
        prev[s] = ks[s].acc;
        k[s] = ks[s].k;
    }
    for j in from..len {
        let v = x[j];
        for s in 0..K {
            prev[s] = (v - prev[s]).mul_add(k[s], prev[s]);
            outs[s][j] = prev[s];
        }
    }
    for s in 0..K {
        ks[s].acc = prev[s];
        ks[s].seen += (len - from) as u64;
    }
}
