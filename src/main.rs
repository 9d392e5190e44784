//! The `kiln` command-line front end: parses arguments, calls the library, prints.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use kiln::bench::BenchLine;
use kiln::bench::queue::{QueueBenchSize, run as run_queue_bench};
use kiln::features::bench::{BenchOptions, run as run_features_bench};

/// kiln: a durable, embedded feature-precompute engine for trading systems.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a benchmark and print its measurements.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand)]
enum Bench {
    /// The durable queue and result store: enqueue, claim, complete and
    /// series writes, each next to its floor (raw sled + fsync, plain file +
    /// fsync) measured in the same run. Writes scratch data (about 700 MB at
    /// the default size) under --dir and deletes it afterwards.
    Queue {
        /// Print one JSON object per line: {"bench","name","value","unit"}.
        #[arg(long)]
        json: bool,
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
        /// Print one JSON object per line: {"bench","name","value","unit"}.
        #[arg(long)]
        json: bool,
        /// Symbols in the synthetic universe.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        symbols: u64,
        /// Bars per symbol.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        bars: u64,
        /// Timed runs per measurement (the median is reported).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
        runs: u64,
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

fn main() -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match Cli::parse().command {
        Command::Bench(Bench::Queue {
            json,
            jobs,
            symbols,
            bars,
            dir,
        }) => {
            let parent = dir.unwrap_or_else(std::env::temp_dir);
            let scratch = tempfile::Builder::new()
                .prefix("kiln-bench-")
                .tempdir_in(&parent)
                .with_context(|| format!("create a scratch directory in {}", parent.display()))?;
            let mut printed = Ok(());
            run_queue_bench(
                scratch.path(),
                QueueBenchSize {
                    jobs,
                    symbols,
                    bars,
                },
                |l| {
                    if printed.is_ok() {
                        printed = print_line(&mut out, l, json);
                    }
                },
            )
            .context("queue benchmark")?;
            printed?;
        }
        Command::Bench(Bench::Features {
            json,
            symbols,
            bars,
            runs,
        }) => {
            let to_usize = |n: u64| usize::try_from(n).context("size does not fit this platform");
            let opts = BenchOptions {
                symbols: to_usize(symbols)?,
                bars: to_usize(bars)?,
                runs: to_usize(runs)?,
            };
            for line in run_features_bench(opts).context("features benchmark")? {
                print_line(&mut out, &line, json)?;
            }
        }
    }
    Ok(())
}
