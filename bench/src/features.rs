//! `kiln bench features`: throughput of the standard feature set
//! ([`kiln::features::STANDARD_SET`], 20 outputs) that the Python peer
//! (`../shared/peers/features/bench.py`) times, over a synthetic universe.
//!
//! The universe is `market::synth`'s geometric Brownian motion from a fixed-seed
//! generator (SplitMix64 + Box–Muller), the same model as the peer's `gen_ohlcv.py` (per-symbol drift and
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

use kiln::features::{FeatureError, Frame, OwnedBars, Scratch, compute_batch_into, standard_plan};

use crate::BenchLine;

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
    let plan = standard_plan()?;
    let outputs = plan.output_labels().len();
    let universe = kiln::market::synth::owned_bars(opts.symbols, opts.bars, 42);
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
