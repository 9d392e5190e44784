//! The `kiln` command-line front end: parses arguments and hands each
//! command to its handler in `cli`. Errors are one line on stderr and exit
//! status 1.

mod cli;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use cli::Ctx;
use cli::data::{FeaturesFormat, IngestArgs};
use cli::jobs::JobsAction;
use kiln::bench::BenchLine;
use kiln::bench::ingest::{IngestBenchOptions, run as run_ingest_bench};
use kiln::bench::queue::{QueueBenchSize, run as run_queue_bench};
use kiln::engine::EngineConfig;
use kiln::features::bench::{BenchOptions, run as run_features_bench};
use kiln::market::export::ExportFormat;
use kiln::market::{Format, OnError, TsUnit};
use kiln::store::{JobState, Priority};

/// mimalloc, not glibc's malloc: the request threads free buffers that
/// other threads allocated, and glibc's per-arena locks made them wait on
/// each other (futex calls on most requests).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// kiln: a durable, embedded feature-precompute engine for trading systems.
///
/// Start with `kiln demo`. Every command works on one data directory
/// (--data, default ./kiln-data); nothing else is needed.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// The data directory (created if missing; `kiln demo` defaults to ./kiln-demo).
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    /// A TOML file with bounds and defaults (`kiln config` prints them all).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Machine-readable output: JSON on stdout, no progress bars.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// Job priorities on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum PriorityArg {
    High,
    Normal,
    Low,
}

impl From<PriorityArg> for Priority {
    fn from(p: PriorityArg) -> Self {
        match p {
            PriorityArg::High => Priority::High,
            PriorityArg::Normal => Priority::Normal,
            PriorityArg::Low => Priority::Low,
        }
    }
}

/// Job states on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum StateArg {
    Queued,
    Running,
    Succeeded,
    Failed,
    Dead,
    Cancelled,
}

impl From<StateArg> for JobState {
    fn from(s: StateArg) -> Self {
        match s {
            StateArg::Queued => JobState::Queued,
            StateArg::Running => JobState::Running,
            StateArg::Succeeded => JobState::Succeeded,
            StateArg::Failed => JobState::Failed,
            StateArg::Dead => JobState::Dead,
            StateArg::Cancelled => JobState::Cancelled,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// The whole path in one command: ingest the bundled real sample and a
    /// synthetic universe, compute the 20-output feature set for every
    /// symbol through the durable queue, and print what happened. Replaces
    /// an earlier demo directory.
    Demo {
        /// Symbols in the synthetic universe.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=100_000))]
        symbols: u64,
        /// Bars per synthetic symbol.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=50_000))]
        bars: u64,
    },
    /// Ingest OHLCV bars in long format (symbol, ts, open, high, low, close,
    /// volume[, vwap]) from CSV (plain or gzip), Arrow IPC or Parquet.
    ///
    /// Column names match case-insensitively; other columns are ignored.
    /// Timestamps are ISO-8601 dates or datetimes (UTC unless an offset is
    /// given) or integer epochs. All files are one all-or-nothing change:
    /// by default the first invalid row rejects everything, naming the file,
    /// row and column, and the store is left as it was. Re-ingesting stored
    /// bars changes nothing; a bar with a stored timestamp and new values
    /// replaces the old one. Symbols with stored features get a refresh job.
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
    /// Queue feature computations: one durable job per symbol. Asking again
    /// for the same symbol, features and bars while the job is unfinished
    /// gives the same job.
    Submit {
        /// Symbols, comma-separated.
        #[arg(long, value_name = "A,B,...", conflicts_with = "all")]
        symbols: Option<String>,
        /// Every symbol with bars.
        #[arg(long)]
        all: bool,
        /// Feature specs, e.g. "rsi(14),macd(12,26,9),bbands(20,2)".
        #[arg(long)]
        features: String,
        /// Queue priority (strict: high before normal before low).
        #[arg(long, value_enum, default_value = "normal")]
        priority: PriorityArg,
        /// Run the queue until idle before returning.
        #[arg(long)]
        wait: bool,
    },
    /// Run queued jobs: until the queue is idle, or as a worker until killed
    /// (every acknowledged write is durable; a kill loses nothing).
    Run {
        /// Stop when nothing is queued, running or waiting for a retry.
        #[arg(long)]
        until_idle: bool,
        /// First queue a refresh for every symbol whose stored features are stale.
        #[arg(long)]
        warm_up: bool,
        /// Stream the event log to stderr while running.
        #[arg(long)]
        watch: bool,
    },
    /// List, show, cancel or retry jobs.
    #[command(subcommand)]
    Jobs(JobsCmd),
    /// Print a stored feature series: a label (`macd(12,26,9).signal`) or a
    /// spec (all its outputs), with the bar timestamps.
    Features {
        /// The symbol.
        symbol: String,
        /// The feature, e.g. "rsi(14)" or "macd(12,26,9).signal".
        spec: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: FeaturesFormat,
        /// Only the last N bars.
        #[arg(long)]
        tail: Option<usize>,
    },
    /// Job counters, queue depth per priority, market data, durability
    /// mode, breaker state and adaptive sizes.
    Stats {
        /// Print Prometheus text metrics instead.
        #[arg(long)]
        metrics: bool,
    },
    /// Full integrity scan: every record validated and checksummed, counters
    /// against a scan, bars against their data versions. Exit status 1 on
    /// any problem.
    Check,
    /// Follow the event log (succeeded, failed, dead, cancelled) of the kiln
    /// process using the data directory (`kiln run`, `kiln serve`) until it
    /// ends; with none running, print the stored log.
    Watch {
        /// Start after this sequence number (0: the oldest kept).
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// Serve the HTTP API (features, submissions, bars, events, health,
    /// metrics; GET /openapi.json lists the routes) and work the queue,
    /// until SIGINT or SIGTERM.
    Serve {
        /// Address to listen on; loopback unless you say otherwise.
        #[arg(long, default_value = "127.0.0.1:7070")]
        addr: String,
        /// Bearer token every route but /health requires (default: the
        /// KILN_TOKEN environment variable; neither: no token).
        #[arg(long)]
        token: Option<String>,
    },
    /// Print the effective configuration as a documented TOML file.
    Config,
    /// Run a benchmark and print its measurements.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand)]
enum JobsCmd {
    /// The newest jobs, optionally in one state.
    List {
        /// Only jobs in this state.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One job.
    Show {
        /// Job id.
        id: u64,
    },
    /// Cancel a queued (or awaiting-retry) job.
    Cancel {
        /// Job id.
        id: u64,
    },
    /// Queue a dead or cancelled job again, as a new job.
    Retry {
        /// Job id.
        id: u64,
    },
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
}

/// Writes one line; a closed pipe (`kiln bench … | head`) is an error, not a panic.
fn print_line(out: &mut impl Write, l: &BenchLine, json: bool) -> std::io::Result<()> {
    if json {
        writeln!(out, "{}", l.to_json())
    } else {
        writeln!(out, "{:<28} {:>16.1} {}", l.name, l.value, l.unit)
    }
}

/// Logs to stderr at the level `KILN_LOG` names (error, warn, info, debug,
/// trace; default warn).
fn init_logging() -> anyhow::Result<()> {
    let level = match std::env::var("KILN_LOG").as_deref() {
        Err(_) | Ok("") | Ok("warn") => tracing::Level::WARN,
        Ok("error") => tracing::Level::ERROR,
        Ok("info") => tracing::Level::INFO,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("trace") => tracing::Level::TRACE,
        Ok(other) => anyhow::bail!("KILN_LOG={other:?}: want error, warn, info, debug or trace"),
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
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

fn main() -> ExitCode {
    if let Err(e) = init_logging() {
        eprintln!("kiln: {e:#}");
        return ExitCode::FAILURE;
    }
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

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<EngineConfig> {
    let Some(path) = path else {
        return Ok(EngineConfig::default());
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    kiln::engine::config::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let json = cli.json;
    let ctx = Ctx {
        data: cli.data,
        config: load_config(cli.config.as_ref())?,
        json,
    };
    match cli.command {
        Command::Demo { symbols, bars } => {
            cli::demo::demo(&ctx, &mut out, to_usize(symbols)?, to_usize(bars)?)?
        }
        Command::Ingest {
            files,
            format,
            map,
            ts_unit,
            on_error,
            report,
        } => cli::data::ingest(
            &ctx,
            &mut out,
            IngestArgs {
                files,
                format,
                map,
                ts_unit,
                on_error,
                report,
            },
        )?,
        Command::Export {
            format,
            out: path,
            symbols,
            features,
        } => cli::data::export(&ctx, &mut out, format, path, symbols, features)?,
        Command::Submit {
            symbols,
            all,
            features,
            priority,
            wait,
        } => cli::jobs::submit(
            &ctx,
            &mut out,
            symbols,
            all,
            &features,
            priority.into(),
            wait,
        )?,
        Command::Run {
            until_idle,
            warm_up,
            watch,
        } => cli::jobs::run(&ctx, &mut out, until_idle, warm_up, watch)?,
        Command::Jobs(cmd) => {
            let action = match cmd {
                JobsCmd::List { state, limit } => JobsAction::List {
                    state: state.map(Into::into),
                    limit,
                },
                JobsCmd::Show { id } => JobsAction::Show(id),
                JobsCmd::Cancel { id } => JobsAction::Cancel(id),
                JobsCmd::Retry { id } => JobsAction::Retry(id),
            };
            cli::jobs::jobs(&ctx, &mut out, action)?;
        }
        Command::Features {
            symbol,
            spec,
            format,
            tail,
        } => cli::data::features(&ctx, &mut out, &symbol, &spec, format, tail)?,
        Command::Stats { metrics } => cli::admin::stats(&ctx, &mut out, metrics)?,
        Command::Check => cli::admin::check(&ctx, &mut out)?,
        Command::Watch { from } => cli::jobs::watch(&ctx, &mut out, from)?,
        Command::Serve { addr, token } => cli::serve::serve(&ctx, &mut out, &addr, token)?,
        Command::Config => cli::admin::config(&ctx, &mut out)?,
        Command::Bench(Bench::Queue {
            jobs,
            symbols,
            bars,
            dir,
        }) => {
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
        Command::Bench(Bench::E2e {
            symbols,
            bars,
            dir,
            seed_pipeline,
        }) => {
            let scratch = scratch_dir(dir)?;
            let opts = kiln::bench::e2e::E2eOptions {
                symbols: to_usize(symbols)?,
                bars: to_usize(bars)?,
                seed_pipeline: seed_pipeline.and_then(|v| match v.as_slice() {
                    [python, script] => Some((python.clone(), script.clone())),
                    _ => None,
                }),
            };
            print_streamed(&mut out, json, "end-to-end benchmark", |emit| {
                kiln::bench::e2e::run(scratch.path(), &opts, emit)
            })?;
        }
        Command::Bench(Bench::Http {
            symbols,
            bars,
            seconds,
            connections,
            rate,
            no_batch,
            dir,
        }) => {
            let scratch = scratch_dir(dir)?;
            let opts = kiln::bench::http::HttpOptions {
                symbols: to_usize(symbols)?,
                bars: to_usize(bars)?,
                seconds: seconds as f64,
                connections: to_usize(connections)?,
                rate: rate as f64,
                batch: !no_batch,
            };
            print_streamed(&mut out, json, "HTTP benchmark", |emit| {
                kiln::bench::http::run(scratch.path(), &opts, emit)
            })?;
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
            print_streamed(&mut out, json, "ingest benchmark", |emit| {
                run_ingest_bench(scratch.path(), &opts, emit)
            })?;
        }
    }
    Ok(())
}
