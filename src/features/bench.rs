//! `kiln bench features`: throughput of the 20-output feature set that the Python peer
//! (`../shared/peers/features/bench.py`) times, over a synthetic universe.
//!
//! The universe is geometric Brownian motion from a fixed-seed generator (SplitMix64 +
//! Box–Muller), the same model as the peer's `gen_ohlcv.py` (per-symbol drift and
//! volatility, open gaps, intrabar high/low, log-normal volume) but not the same bits:
//! throughput does not depend on the exact values. Each measurement is one unmeasured
//! warm-up run (it also first-touches the output frames), then the median of `runs` timed
//! runs. Reported in bar·features per second, counting the 20 outputs as 20 features, like
//! the peer.
//!
//! Measured side by side on the project's 2-core AMD EPYC VM (quiet: 1-min load 0.00–0.08),
//! `kiln bench features --json` then `python bench.py --only talib --json --prefault-gb 1
//! --runs 5` from `../shared/peers/features`: kiln `all_cores` 691–755 M bar·features/s,
//! `one_thread` 357–365 M; TA-Lib (1 thread, per-symbol loop) 153 M — 4.5–4.9× and
//! 2.3–2.4×. Single symbol, cache-warm (criterion): 80 µs for all 20 outputs × 2000 bars.

use std::time::Instant;

use super::{FeatureError, Frame, OwnedBars, Plan, Scratch, compute_batch_into};
use crate::bench::BenchLine;

/// The benchmark set: 20 outputs, as in the peer's `features.py`.
pub const BENCH_SPECS: [&str; 15] = [
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
];

/// Options of one benchmark run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchOptions {
    /// Symbols in the universe.
    pub symbols: usize,
    /// Bars per symbol.
    pub bars: usize,
    /// Timed runs per measurement (the median is reported).
    pub runs: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            symbols: 1000,
            bars: 2000,
            runs: 5,
        }
    }
}

/// The benchmark plan: [`BENCH_SPECS`] plus `vwap(20)` (20 outputs).
pub fn bench_plan() -> Result<Plan, FeatureError> {
    let mut specs: Vec<&str> = BENCH_SPECS.to_vec();
    specs.push("vwap(20)");
    Plan::parse(&specs)
}

/// Deterministic pseudo-random numbers (SplitMix64), so every run benchmarks the same data.
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

/// A synthetic OHLCV universe: `symbols` × `bars` of geometric Brownian motion, seeded.
pub fn synthetic_universe(symbols: usize, bars: usize, seed: u64) -> Vec<OwnedBars> {
    let mut rng = Rng(seed);
    let dt: f64 = 1.0 / 252.0;
    (0..symbols)
        .map(|_| {
            let mu = -0.10 + 0.30 * rng.uniform();
            let sigma = 0.15 + 0.45 * rng.uniform();
            let mut prev = 10.0 + 490.0 * rng.uniform();
            let step = sigma * dt.sqrt();
            let mut b = OwnedBars {
                open: Vec::with_capacity(bars),
                high: Vec::with_capacity(bars),
                low: Vec::with_capacity(bars),
                close: Vec::with_capacity(bars),
                volume: Vec::with_capacity(bars),
            };
            for _ in 0..bars {
                let close = prev * ((mu - 0.5 * sigma * sigma) * dt + step * rng.normal()).exp();
                let open = prev * (rng.normal() * step * 0.2).exp();
                let high = open.max(close) * (rng.normal().abs() * step * 0.5).exp();
                let low = open.min(close) * (-rng.normal().abs() * step * 0.5).exp();
                let volume = (1e6f64.ln() + 0.5 * rng.normal()).exp().round();
                b.open.push(open);
                b.high.push(high);
                b.low.push(low);
                b.close.push(close);
                b.volume.push(volume);
                prev = close;
            }
            b
        })
        .collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => 0.5 * (xs[n / 2 - 1] + xs[n / 2]),
    }
}

fn time_runs(
    runs: usize,
    mut f: impl FnMut() -> Result<(), FeatureError>,
) -> Result<f64, FeatureError> {
    f()?; // warm-up: first touch of the frames, caches, the rayon pool
    let mut secs = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        let t0 = Instant::now();
        f()?;
        secs.push(t0.elapsed().as_secs_f64());
    }
    Ok(median(secs))
}

/// Run the benchmark; prints nothing, returns the lines to print.
pub fn run(opts: BenchOptions) -> Result<Vec<BenchLine>, FeatureError> {
    let plan = bench_plan()?;
    let outputs = plan.output_labels().len();
    let universe = synthetic_universe(opts.symbols, opts.bars, 42);
    let views: Vec<_> = universe.iter().map(OwnedBars::view).collect();
    let mut frames: Vec<Frame> = (0..views.len()).map(|_| plan.new_frame()).collect();
    let cells = (opts.symbols * opts.bars * outputs) as f64;

    let all = time_runs(opts.runs, || compute_batch_into(&plan, &views, &mut frames))?;
    let mut scratch = Scratch::default();
    let one = time_runs(opts.runs, || {
        for (bars, frame) in views.iter().zip(frames.iter_mut()) {
            plan.compute_with_scratch(*bars, frame, &mut scratch)?;
        }
        Ok(())
    })?;
    let line = |name: &'static str, value: f64, unit| BenchLine {
        bench: "features",
        name,
        value,
        unit,
    };
    Ok(vec![
        line("all_cores", (cells / all).round(), "bar_features/s"),
        line("one_thread", (cells / one).round(), "bar_features/s"),
        line("all_cores_median", all, "s"),
        line("one_thread_median", one, "s"),
        line("threads", rayon::current_num_threads() as f64, "threads"),
        line("outputs", outputs as f64, "features"),
        line("cells", cells, "bar_features"),
    ])
}
