//! A deterministic, seedable synthetic universe: geometric Brownian motion
//! with consistent OHLC (high ≥ max(open, close), low ≤ min(open, close),
//! all positive) and log-normal whole-number volume, on consecutive weekdays
//! from 2015-01-02 (UTC midnight), like the peers' `gen_ohlcv.py` (same
//! model, not the same bits). Symbols are `S0000`, `S0001`, ….

use kiln_core::{Bar, BarColumns, Symbol};

/// Deterministic pseudo-random numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box–Muller; one of the pair is enough here).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]: ln is finite
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// The synthetic symbol name of index `i`.
pub fn symbol(i: usize) -> Symbol {
    // At most 32 bytes for any usize: "S" + 20 digits.
    Symbol::new(format!("S{i:04}")).unwrap_or_else(|_| unreachable!("S and digits are valid"))
}

/// `bars` consecutive weekdays from 2015-01-02, as epoch ns.
pub fn weekdays(bars: usize) -> Vec<i64> {
    const DAY: i64 = 86_400 * 1_000_000_000;
    let mut ts = Vec::with_capacity(bars);
    let mut t = super::time::date_ns(2015, 1, 2);
    while ts.len() < bars {
        // 1970-01-01 was a Thursday: day 0 → Thursday, day 2 → Saturday.
        let weekday = (t / DAY).rem_euclid(7);
        if weekday != 2 && weekday != 3 {
            ts.push(t);
        }
        // Past 2262 (about 64,000 weekdays) i64 nanoseconds end: the
        // benches bound --bars far below that.
        t = t.saturating_add(DAY);
    }
    ts
}

/// `symbols` × `bars` of seeded geometric Brownian motion.
pub fn universe(symbols: usize, bars: usize, seed: u64) -> Vec<(Symbol, BarColumns)> {
    let mut rng = Rng(seed);
    let dt: f64 = 1.0 / 252.0;
    let ts = weekdays(bars);
    (0..symbols)
        .map(|s| {
            let mu = -0.10 + 0.30 * rng.uniform();
            let sigma = 0.15 + 0.45 * rng.uniform();
            let mut prev = 10.0 + 490.0 * rng.uniform();
            let step = sigma * dt.sqrt();
            let mut cols = BarColumns::with_capacity(bars);
            for &t in &ts {
                let close = prev * ((mu - 0.5 * sigma * sigma) * dt + step * rng.normal()).exp();
                let open = prev * (rng.normal() * step * 0.2).exp();
                let high = open.max(close) * (rng.normal().abs() * step * 0.5).exp();
                let low = open.min(close) * (-rng.normal().abs() * step * 0.5).exp();
                let volume = (1e6f64.ln() + 0.5 * rng.normal()).exp().round();
                cols.push(Bar {
                    ts: t,
                    open,
                    high,
                    low,
                    close,
                    volume,
                    vwap: f64::NAN,
                });
                prev = close;
            }
            (symbol(s), cols)
        })
        .collect()
}

/// [`universe`] as the kernels' input: each symbol's owned columns.
pub fn owned_bars(symbols: usize, bars: usize, seed: u64) -> Vec<crate::features::OwnedBars> {
    universe(symbols, bars, seed)
        .into_iter()
        .map(|(_, c)| crate::features::OwnedBars {
            open: c.open,
            high: c.high,
            low: c.low,
            close: c.close,
            volume: c.volume,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_consistent_and_seeded() {
        let u = universe(3, 300, 9);
        let again = universe(3, 300, 9);
        for ((s, a), (t, b)) in u.iter().zip(&again) {
            assert_eq!(
                (s, a.len(), a.digest()),
                (t, b.len(), b.digest()),
                "same seed, same bits"
            );
        }
        assert_ne!(u[0].1.close, universe(3, 300, 10)[0].1.close);
        for (_, c) in &u {
            for i in 0..c.len() {
                let b = c.bar(i);
                assert!(b.low > 0.0 && b.low <= b.open.min(b.close));
                assert!(b.high >= b.open.max(b.close));
                assert!(b.volume >= 0.0 && b.volume.fract() == 0.0);
            }
        }
        assert_eq!(u[1].0.as_str(), "S0001");
    }

    #[test]
    fn weekdays_skip_weekends() {
        let ts = weekdays(3);
        // Fri 2015-01-02, then Mon 01-05 and Tue 01-06.
        assert_eq!(ts[0], 1_420_156_800 * 1_000_000_000);
        assert_eq!(ts[1] - ts[0], 3 * 86_400 * 1_000_000_000);
        assert_eq!(ts[2] - ts[1], 86_400 * 1_000_000_000);
    }
}
