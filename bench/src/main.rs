//! `kiln-bench`: the benchmarks, as `kiln bench …` runs them (the `kiln`
//! binary hands its `bench` arguments to this one). Each prints its figures
//! as they are measured, as JSON lines with `--json`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kiln_bench::BenchLine;
use kiln_bench::features::{BenchOptions, run as run_features_bench};
use kiln_bench::ingest::{IngestBenchOptions, run as run_ingest_bench};
use kiln_bench::live::{LiveOptions, run as run_live_bench};
use kiln_bench::queue::{QueueBenchSize, run as run_queue_bench};

/// The allocator `kiln` runs with (see its `main.rs`), so that what is
/// measured here is what runs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run a benchmark and print its measurements.
#[derive(Parser)]
#[command(name = "kiln bench", bin_name = "kiln bench", version)]
struct Cli {
    /// Machine-readable output: JSON lines on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// The durable queue and result store: enqueue, claim, complete and
    /// series writes, each next to its floor (raw sled + fsync, plain file +
    /// fsync) measured in the same run. Writes scratch data (about 700 MB at
    /// the default size) under --dir and deletes it afterwards.
    Queue {
        /// Jobs per queue benchmark.
        #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(100..=10_000_000))]
        jobs: u64,
        /// Symbols in the results benchmark (20 series each).
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        symbols: u64,
        /// Bars per series in the results benchmark.
        #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        bars: u64,
        /// Directory for scratch data (default: the system temp directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The 20-output feature set (the peers' bench.py set) over a seeded
    /// synthetic universe, on all cores and on one thread, in bar·features/s.
    Features {
        /// Symbols in the synthetic universe.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        symbols: u64,
        /// Bars per symbol.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=50_000))]
        bars: u64,
        /// Timed runs per measurement (the median is reported).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
        runs: u64,
    },
    /// End to end, like the peers' seed pipeline: a stored universe, then the
    /// 20-output set computed for every symbol through the durable queue
    /// (Sync and Relaxed), a 100-symbol run, and the write+fsync floor.
    /// Writes about 1.5 GB of scratch data under --dir.
    E2e {
        /// Symbols in the synthetic universe.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        symbols: u64,
        /// Bars per symbol.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=50_000))]
        bars: u64,
        /// Directory for scratch data (default: the system temp directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The peers' Python and seed_pipeline.py, run on the same universe size.
        #[arg(long, num_args = 2, value_names = ["PYTHON", "SCRIPT"])]
        seed_pipeline: Option<Vec<PathBuf>>,
    },
    /// Feature reads over HTTP on loopback (`GET /v1/features/{symbol}/rsi(14)?tail=100`
    /// from many keep-alive connections) against `kiln serve`'s router: a 2 s
    /// warm-up, latency quantiles at an offered rate while a background batch
    /// computes (also split into the requests sent during the batch and
    /// after it), then 5 s of closed-loop capacity. Builds a demo-sized store
    /// (about 700 MB) under --dir first; stops by itself.
    Http {
        /// Symbols in the synthetic universe.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        symbols: u64,
        /// Bars per symbol.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=50_000))]
        bars: u64,
        /// Seconds of load.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
        seconds: u64,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
        connections: u64,
        /// Requests per second offered (open loop: each connection sends one
        /// request per period, the connections spread evenly over it).
        #[arg(long, default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        rate: u64,
        /// No background batch: the window measures the serving path alone
        /// (compare with --json's batch_p99_ms and after_batch_p99_ms).
        #[arg(long)]
        no_batch: bool,
        /// Directory for scratch data (default: the system temp directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Durable ingest of a synthetic universe from Parquet and from CSV (rows/s,
    /// each into a fresh store) and a batch read of every symbol's bars (ms).
    /// Writes scratch files (about 400 MB at the default size) under --dir.
    Ingest {
        /// Symbols in the synthetic universe.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        symbols: u64,
        /// Bars per symbol.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=50_000))]
        bars: u64,
        /// Timed runs per figure (the median is reported).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
        runs: u64,
        /// Directory for scratch data (default: the system temp directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A Python with polars (the peers' venv) to time polars.read_csv of the same CSV.
        #[arg(long, value_name = "PYTHON")]
        polars: Option<PathBuf>,
    },
    /// The live path: a universe computed in full (the 20-output set), then
    /// ticks of one new bar per symbol through the library API, each timed
    /// from the ingest until its refreshes are durable (Sync); the bytes a
    /// tick writes against the new values' bytes and a plain file's
    /// write+fsync of them; and a tick's time with 50,000 bars of history
    /// against 2,000. Writes about 3 GB of scratch data under --dir.
    Live {
        /// Symbols in the main universe.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        symbols: u64,
        /// Bars of history per symbol.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=1_000_000))]
        bars: u64,
        /// Ticks measured.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        ticks: u64,
        /// Ticks run first, not measured.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(0..=100_000))]
        warm_ticks: u64,
        /// Ticks after the timed ones over which the bytes written are
        /// counted: a whole number of the store's periods (see the docs of
        /// `kiln_bench::live`).
        #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        byte_ticks: u64,
        /// Symbols of the steady-state run (bytes per symbol and tick).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        steady_symbols: u64,
        /// Ticks of the steady-state run, counted after the warm-up.
        #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        steady_ticks: u64,
        /// Symbols in the history-length comparison.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        ratio_symbols: u64,
        /// Bars of history in its long run.
        #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(100..=1_000_000))]
        long_bars: u64,
        /// Directory for scratch data (default: the system temp directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Writes one line; a closed pipe (`kiln bench … | head`) is an error, not a panic.
fn print_line(out: &mut impl Write, l: &BenchLine, json: bool) -> std::io::Result<()> {
    if json {
        writeln!(out, "{}", l.to_json())
    } else {
        writeln!(out, "{:<28} {:>16.1} {}", l.name, l.value, l.unit)
    }
}

/// Runs a benchmark that reports each figure as it is measured, printing
/// each at once; a closed pipe stops the printing, not the benchmark.
fn print_streamed<E: std::error::Error + Send + Sync + 'static>(
    out: &mut impl Write,
    json: bool,
    what: &'static str,
    run: impl FnOnce(&mut dyn FnMut(&BenchLine)) -> Result<(), E>,
) -> anyhow::Result<()> {
    let mut printed = Ok(());
    run(&mut |l| {
        if printed.is_ok() {
            printed = print_line(out, l, json);
        }
    })
    .context(what)?;
    Ok(printed?)
}

fn to_usize(n: u64) -> anyhow::Result<usize> {
    usize::try_from(n).context("size does not fit this platform")
}

fn scratch_dir(dir: Option<PathBuf>) -> anyhow::Result<tempfile::TempDir> {
    let parent = dir.unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("kiln-bench-")
        .tempdir_in(&parent)
        .with_context(|| format!("create a scratch directory in {}", parent.display()))
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!, which panics when stderr cannot be written.
            let _ = writeln!(std::io::stderr(), "kiln: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let json = cli.json;
    match cli.bench {
        Bench::Queue {
            jobs,
            symbols,
            bars,
            dir,
        } => {
            let scratch = scratch_dir(dir)?;
            let size = QueueBenchSize {
                jobs,
                symbols,
                bars,
            };
            print_streamed(&mut out, json, "queue benchmark", |emit| {
                run_queue_bench(scratch.path(), size, emit).map(drop)
            })?;
        }
        Bench::Features {
            symbols,
            bars,
            runs,
        } => {
            let opts = BenchOptions {
                symbols: to_usize(symbols)?,
                bars: to_usize(bars)?,
                runs: to_usize(runs)?,
            };
            for line in run_features_bench(opts).context("features benchmark")? {
                print_line(&mut out, &line, json)?;
            }
        }
        Bench::E2e {
            symbols,
            bars,
            dir,
            seed_pipeline,
        } => {
            let scratch = scratch_dir(dir)?;
            let opts = kiln_bench::e2e::E2eOptions {
                symbols: to_usize(symbols)?,
                bars: to_usize(bars)?,
                seed_pipeline: seed_pipeline.and_then(|v| match v.as_slice() {
                    [python, script] => Some((python.clone(), script.clone())),
                    _ => None,
                }),
            };
            print_streamed(&mut out, json, "end-to-end benchmark", |emit| {
                kiln_bench::e2e::run(scratch.path(), &opts, emit)
            })?;
        }
        Bench::Http {
            symbols,
            bars,
            seconds,
            connections,
            rate,
            no_batch,
            dir,
        } => {
            let scratch = scratch_dir(dir)?;
            let opts = kiln_bench::http::HttpOptions {
                symbols: to_usize(symbols)?,
                bars: to_usize(bars)?,
                seconds: seconds as f64,
                connections: to_usize(connections)?,
                rate: rate as f64,
                batch: !no_batch,
            };
            print_streamed(&mut out, json, "HTTP benchmark", |emit| {
                kiln_bench::http::run(scratch.path(), &opts, emit)
            })?;
        }
        Bench::Ingest {
            symbols,
            bars,
            runs,
            dir,
            polars,
        } => {
            let scratch = scratch_dir(dir)?;
            let opts = IngestBenchOptions {
                symbols: to_usize(symbols)?,
                bars: to_usize(bars)?,
                runs: to_usize(runs)?,
                polars_python: polars,
            };
            print_streamed(&mut out, json, "ingest benchmark", |emit| {
                run_ingest_bench(scratch.path(), &opts, emit)
            })?;
        }
        Bench::Live {
            symbols,
            bars,
            ticks,
            warm_ticks,
            byte_ticks,
            steady_symbols,
            steady_ticks,
            ratio_symbols,
            long_bars,
            dir,
        } => {
            let scratch = scratch_dir(dir)?;
            let opts = LiveOptions {
                symbols: to_usize(symbols)?,
                bars: to_usize(bars)?,
                ticks: to_usize(ticks)?,
                warm_ticks: to_usize(warm_ticks)?,
                byte_ticks: to_usize(byte_ticks)?,
                steady_symbols: to_usize(steady_symbols)?,
                steady_ticks: to_usize(steady_ticks)?,
                ratio_symbols: to_usize(ratio_symbols)?,
                long_bars: to_usize(long_bars)?,
            };
            print_streamed(&mut out, json, "live benchmark", |emit| {
                run_live_bench(scratch.path(), &opts, emit)
            })?;
        }
    }
    Ok(())
}
