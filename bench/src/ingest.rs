//! `kiln bench ingest`: durable ingest of a synthetic universe (default 1000
//! symbols × 2000 bars, 2 M rows) from Parquet and from CSV into a fresh
//! store each time, and one batch read of every symbol's bars.
//!
//! The files are written first (untimed) by the export writer. Each ingest
//! figure is the median of `runs` runs, each into a new store with
//! `Durability::Sync`, timed from the first byte read to the acknowledged
//! commit. `bars_batch_ms` is the median of `runs` reads of all symbols'
//! full history through `Store::bars_batch`. For scale, when given the
//! peers' Python (`--polars PYTHON`), the same run times `polars.read_csv` of
//! the same CSV (median of `runs`) and reports the ratio.

use kiln_store::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kiln_store::{Store, StoreConfig};

use crate::{BenchError, BenchLine};
use kiln::market::export::{ExportFormat, write_bars};
use kiln::market::{IngestOptions, ingest_files, synth};

/// The size of the ingest benchmark.
#[derive(Clone, Debug)]
pub struct IngestBenchOptions {
    /// Symbols in the universe.
    pub symbols: usize,
    /// Bars per symbol.
    pub bars: usize,
    /// Timed runs per figure (the median is reported).
    pub runs: usize,
    /// A Python with polars (the peers' venv) to time `polars.read_csv` beside kiln.
    pub polars_python: Option<PathBuf>,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn line(name: &'static str, value: f64, unit: &'static str) -> BenchLine {
    BenchLine {
        bench: "ingest",
        name,
        value,
        unit,
    }
}

/// Seconds of one durable ingest of `file` into a new store under `dir`.
fn time_ingest(dir: &Path, file: &Path, run: usize) -> Result<f64, BenchError> {
    let store_dir = dir.join(format!("store-{run}"));
    let store = Store::open(&store_dir, StoreConfig::default())?;
    let started = Instant::now();
    ingest_files(
        &store,
        &[file.to_path_buf()],
        &IngestOptions::default(),
        &mut |_| {},
    )?;
    let seconds = started.elapsed().as_secs_f64();
    drop(store);
    std::fs::remove_dir_all(&store_dir)
        .map_err(|e| BenchError::Io(store_dir.display().to_string(), e))?;
    Ok(seconds)
}

/// Runs the benchmark in `dir` (scratch space, about 400 MB at the default
/// size), calling `emit` with each figure as it is measured.
pub fn run(
    dir: &Path,
    opts: &IngestBenchOptions,
    mut emit: impl FnMut(&BenchLine),
) -> Result<(), BenchError> {
    let universe = synth::universe(opts.symbols, opts.bars, 42);
    let rows = (opts.symbols * opts.bars) as f64;
    let parquet = dir.join("universe.parquet");
    let csv = dir.join("universe.csv");
    write_bars(
        &parquet,
        ExportFormat::Parquet,
        universe.iter().map(|(s, c)| (s, c)),
    )?;
    write_bars(
        &csv,
        ExportFormat::Csv,
        universe.iter().map(|(s, c)| (s, c)),
    )?;
    drop(universe);

    let runs = opts.runs.max(1);
    let mut csv_rate = 0.0;
    for (file, name) in [(&parquet, "parquet_rows_per_s"), (&csv, "csv_rows_per_s")] {
        let times = (0..runs)
            .map(|r| time_ingest(dir, file, r))
            .collect::<Result<Vec<_>, _>>()?;
        let rate = rows / median(times);
        if file == &csv {
            csv_rate = rate;
        }
        emit(&line(name, rate, "rows/s"));
    }

    let store_dir = dir.join("store-read");
    let store = Store::open(&store_dir, StoreConfig::default())?;
    ingest_files(
        &store,
        std::slice::from_ref(&parquet),
        &IngestOptions::default(),
        &mut |_| {},
    )?;
    let symbols: Vec<_> = store.bar_symbols()?.into_iter().map(|(s, _)| s).collect();
    let mut times = Vec::with_capacity(runs);
    let mut zero_copy = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let views = store.bars_batch(&symbols, None)?;
        let checksum: f64 = views
            .iter()
            .flatten()
            .map(|v| v.close().last().copied().unwrap_or(0.0))
            .sum();
        times.push(started.elapsed().as_secs_f64() * 1e3);
        zero_copy = views.iter().flatten().filter(|v| v.is_zero_copy()).count();
        std::hint::black_box(checksum);
    }
    emit(&line("bars_batch_ms", median(times), "ms"));
    emit(&line(
        "bars_batch_zero_copy_symbols",
        zero_copy as f64,
        "symbols",
    ));

    if let Some(python) = &opts.polars_python {
        let script = "import sys, time, polars as pl\nt = time.perf_counter()\ndf = pl.read_csv(sys.argv[1])\nprint(time.perf_counter() - t, df.height)";
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let out = Command::new(python)
                .arg("-c")
                .arg(script)
                .arg(&csv)
                .output()
                .map_err(|e| BenchError::Io(python.display().to_string(), e))?;
            let text = String::from_utf8_lossy(&out.stdout);
            let seconds: f64 = text
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    BenchError::Peer(format!(
                        "polars printed {text:?}; stderr: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))
                })?;
            times.push(seconds);
        }
        let polars = rows / median(times);
        emit(&line("polars_read_csv_rows_per_s", polars, "rows/s"));
        emit(&line(
            "csv_ingest_vs_polars_read_csv",
            csv_rate / polars,
            "ratio",
        ));
    }
    Ok(())
}
