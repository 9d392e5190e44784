//! The `kiln` command-line front end: parses arguments, calls the library,
//! prints. Errors are one line on stderr and exit status 1.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use kiln::bench::BenchLine;
use kiln::bench::ingest::{IngestBenchOptions, run as run_ingest_bench};
use kiln::bench::queue::{QueueBenchSize, run as run_queue_bench};
use kiln::features::bench::{BenchOptions, run as run_features_bench};
use kiln::market::export::ExportFormat;
use kiln::market::{ExportOptions, Format, IngestOptions, OnError, TsUnit};
use kiln::store::{Store, StoreConfig, Symbol};

/// kiln: a durable, embedded feature-precompute engine for trading systems.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// The data directory (created if missing).
    #[arg(long, global = true, default_value = "./kiln-data")]
    data: PathBuf,
    /// Machine-readable output: JSON on stdout, no progress bars.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest OHLCV bars in long format (symbol, ts, open, high, low, close,
    /// volume[, vwap]) from CSV (plain or gzip), Arrow IPC or Parquet.
    ///
    /// Column names match case-insensitively; other columns are ignored.
    /// Timestamps are ISO-8601 dates or datetimes (UTC unless an offset is
    /// given) or integer epochs. All files are one all-or-nothing change:
    /// by default the first invalid row rejects everything, naming the file,
    /// row and column, and the store is left as it was. Re-ingesting stored
    /// bars changes nothing; a bar with a stored timestamp and new values
    /// replaces the old one.
    Ingest {
        /// Input files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Input format (default: from the extension, else the first bytes).
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Column renames, source=canonical, for example Ticker=symbol,Date=ts.
        #[arg(long, value_name = "FROM=TO,...")]
        map: Option<String>,
        /// Unit of integer timestamps (default: detected from the first value:
        /// below 1e11 seconds, then ms, us, ns).
        #[arg(long, value_enum)]
        ts_unit: Option<TsUnit>,
        /// reject: any invalid row rejects the ingest; skip: invalid rows go to --report.
        #[arg(long, value_enum, default_value = "reject")]
        on_error: OnError,
        /// CSV file listing each skipped row (file, location, column, reason).
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Export bars, or stored feature series, in long format: symbol, ts,
    /// then one column per bar field or feature output.
    Export {
        /// Output format.
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Output file (written beside it first, then renamed into place).
        #[arg(long)]
        out: PathBuf,
        /// Symbols to export, comma-separated (default: all).
        #[arg(long, value_name = "A,B,...")]
        symbols: Option<String>,
        /// Feature series to export instead of bars, e.g. "rsi(14),macd(12,26,9)".
        #[arg(long)]
        features: Option<String>,
    },
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
}

/// Writes one line; a closed pipe (`kiln bench … | head`) is an error, not a panic.
fn print_line(out: &mut impl Write, l: &BenchLine, json: bool) -> std::io::Result<()> {
    if json {
        writeln!(out, "{}", l.to_json())
    } else {
        writeln!(out, "{:<28} {:>16.1} {}", l.name, l.value, l.unit)
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: {e:#}");
            ExitCode::FAILURE
        }
    }
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

fn open_store(data: &std::path::Path) -> anyhow::Result<Store> {
    Store::open(data, StoreConfig::default())
        .with_context(|| format!("open the data directory {}", data.display()))
}

/// A progress bar on a terminal (stderr), hidden otherwise and under --json.
fn progress_bar(json: bool, message: &str) -> indicatif::ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {percent:>3}% {elapsed}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_owned());
    bar
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let json = cli.json;
    match cli.command {
        Command::Ingest {
            files,
            format,
            map,
            ts_unit,
            on_error,
            report,
        } => {
            if report.is_some() && on_error == OnError::Reject {
                anyhow::bail!("--report only applies with --on-error skip");
            }
            let opts = IngestOptions {
                format,
                map: map
                    .as_deref()
                    .map(kiln::market::parse_map)
                    .transpose()?
                    .unwrap_or_default(),
                ts_unit,
                on_error,
                report,
                ..IngestOptions::default()
            };
            let store = open_store(&cli.data)?;
            let bar = progress_bar(json, "ingest");
            let files_n = files.len() as u64;
            let summary = kiln::market::ingest_files(&store, &files, &opts, &mut |p| {
                // Whole files done, plus the fraction of this one, in 1/1000ths.
                let frac = (p.done.saturating_mul(1000))
                    .checked_div(p.total)
                    .map_or(0, |f| f.min(1000));
                bar.set_length(files_n * 1000);
                bar.set_position(p.file as u64 * 1000 + frac);
            });
            bar.finish_and_clear();
            let s = summary?;
            if json {
                let v = serde_json::json!({
                    "files": s.files, "rows": s.rows, "symbols": s.symbols,
                    "changed": s.changed, "rejected": s.rejected, "seconds": s.seconds,
                });
                writeln!(out, "{v}")?;
            } else {
                writeln!(
                    out,
                    "ingested {} rows of {} symbols from {} file(s) in {:.2} s: {} symbols changed, {} rows rejected",
                    s.rows, s.symbols, s.files, s.seconds, s.changed, s.rejected
                )?;
            }
        }
        Command::Export {
            format,
            out: path,
            symbols,
            features,
        } => {
            let symbols = symbols
                .map(|list| {
                    list.split(',')
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| Symbol::new(s.trim()))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?;
            let features = match features {
                Some(f) => kiln::features::spec::parse_list(&f)?,
                None => Vec::new(),
            };
            let store = open_store(&cli.data)?;
            let bar = progress_bar(json, "export");
            let summary = kiln::market::export(
                &store,
                &path,
                &ExportOptions {
                    format,
                    symbols,
                    features,
                },
                &mut |done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                },
            );
            bar.finish_and_clear();
            let s = summary?;
            if json {
                let v = serde_json::json!({
                    "out": path.display().to_string(), "rows": s.rows, "symbols": s.symbols,
                    "columns": s.columns, "seconds": s.seconds,
                });
                writeln!(out, "{v}")?;
            } else {
                writeln!(
                    out,
                    "exported {} rows of {} symbols ({} value columns) to {} in {:.2} s",
                    s.rows,
                    s.symbols,
                    s.columns.len(),
                    path.display(),
                    s.seconds
                )?;
            }
        }
        Command::Bench(Bench::Queue {
            jobs,
            symbols,
            bars,
            dir,
        }) => {
            let scratch = scratch_dir(dir)?;
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
            symbols,
            bars,
            runs,
        }) => {
            let opts = BenchOptions {
                symbols: to_usize(symbols)?,
                bars: to_usize(bars)?,
                runs: to_usize(runs)?,
            };
            for line in run_features_bench(opts).context("features benchmark")? {
                print_line(&mut out, &line, json)?;
            }
        }
        Command::Bench(Bench::Ingest {
            symbols,
            bars,
            runs,
            dir,
            polars,
        }) => {
            let scratch = scratch_dir(dir)?;
            let opts = IngestBenchOptions {
                symbols: to_usize(symbols)?,
                bars: to_usize(bars)?,
                runs: to_usize(runs)?,
                polars_python: polars,
            };
            let mut printed = Ok(());
            run_ingest_bench(scratch.path(), &opts, |l| {
                if printed.is_ok() {
                    printed = print_line(&mut out, l, json);
                }
            })
            .context("ingest benchmark")?;
            printed?;
        }
    }
    Ok(())
}
