//! The commands of the `kiln` binary: each module declares its commands'
//! arguments (clap derives live here, never in the library) and handles
//! them: opens what it needs, calls the library and prints a summary (one
//! JSON object with `--json`).

pub mod admin;
pub mod bench;
pub mod data;
pub mod demo;
pub mod jobs;
pub mod serve;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use kiln::config::Config;
use kiln::engine::Engine;
use kiln::store::Symbol;

/// The options every command takes.
#[derive(clap::Args)]
pub struct Global {
    /// The data directory (created if missing; `kiln demo` defaults to ./kiln-demo).
    #[arg(long, global = true)]
    pub data: Option<PathBuf>,
    /// A TOML file with bounds and defaults (`kiln config` prints them all).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Machine-readable output: JSON on stdout, no progress bars.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The commands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// The whole path in one command: ingest the bundled real sample and a
    /// synthetic universe, compute the 20-output feature set for every
    /// symbol through the durable queue, and print what happened. Replaces
    /// an earlier demo directory.
    Demo(demo::Args),
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
    Ingest(data::IngestArgs),
    /// Export bars, or stored feature series, in long format: symbol, ts,
    /// then one column per bar field or feature output.
    Export(data::ExportArgs),
    /// Queue feature computations: one durable job per symbol. Asking again
    /// for the same symbol, features and bars while the job is unfinished
    /// gives the same job.
    Submit(jobs::SubmitArgs),
    /// Run queued jobs: until the queue is idle, or as a worker until killed
    /// (every acknowledged write is durable; a kill loses nothing).
    Run(jobs::RunArgs),
    /// List, show, cancel or retry jobs.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Print a stored feature series: a label (`macd(12,26,9).signal`) or a
    /// spec (all its outputs), with the bar timestamps.
    Features(data::FeaturesArgs),
    /// Job counters, queue depth per priority, market data, durability
    /// mode, breaker state and adaptive sizes.
    Stats(admin::StatsArgs),
    /// Full integrity scan: every record validated and checksummed, counters
    /// against a scan, bars against their data versions. Exit status 1 on
    /// any problem.
    Check,
    /// Follow the event log (succeeded, failed, dead, cancelled) of the kiln
    /// process using the data directory (`kiln run`, `kiln serve`) until it
    /// ends; with none running, print the stored log.
    Watch(jobs::WatchArgs),
    /// Serve the HTTP API (features, submissions, bars, events, health,
    /// metrics; GET /openapi.json lists the routes) and work the queue,
    /// until SIGINT or SIGTERM.
    Serve(serve::Args),
    /// Print the effective configuration as a documented TOML file.
    Config,
    /// Run a benchmark and print its measurements (`kiln bench --help`
    /// lists them; they are the `kiln-bench` binary's).
    Bench(bench::Args),
}

/// Runs `command` with the global options.
pub fn run(global: Global, command: Command) -> anyhow::Result<()> {
    let config = match &global.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let ctx = Ctx {
        data: global.data,
        config,
        json: global.json,
    };
    let mut out = std::io::stdout().lock();
    let out: &mut dyn Write = &mut out;
    match command {
        Command::Demo(a) => demo::run(&ctx, out, a),
        Command::Ingest(a) => data::ingest(&ctx, out, a),
        Command::Export(a) => data::export(&ctx, out, a),
        Command::Submit(a) => jobs::submit(&ctx, out, a),
        Command::Run(a) => jobs::run(&ctx, out, a),
        Command::Jobs(c) => jobs::jobs(&ctx, out, c),
        Command::Features(a) => data::features(&ctx, out, a),
        Command::Stats(a) => admin::stats(&ctx, out, a),
        Command::Check => admin::check(&ctx, out),
        Command::Watch(a) => jobs::watch(&ctx, out, a),
        Command::Serve(a) => serve::run(&ctx, out, a),
        Command::Config => admin::config(&ctx, out),
        Command::Bench(a) => bench::run(&ctx, a),
    }
}

/// What every command gets: the data directory, the configuration, the output mode.
pub struct Ctx {
    /// `--data`, if given.
    pub data: Option<PathBuf>,
    /// The effective configuration (defaults, then `--config`).
    pub config: Config,
    /// `--json`.
    pub json: bool,
}

/// The default data directory.
pub const DATA_DEFAULT: &str = "./kiln-data";

impl Ctx {
    /// The data directory: `--data`, else `default`.
    pub fn dir(&self, default: &str) -> PathBuf {
        self.data.clone().unwrap_or_else(|| PathBuf::from(default))
    }

    /// Opens the engine on the data directory.
    pub fn engine(&self) -> anyhow::Result<Engine> {
        let dir = self.dir(DATA_DEFAULT);
        open_engine(&dir, &self.config)
    }

    /// A progress bar on a terminal (stderr), hidden otherwise and under --json.
    pub fn progress_bar(&self, message: &str) -> indicatif::ProgressBar {
        if self.json || !std::io::stderr().is_terminal() {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} {elapsed}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(message.to_owned());
        bar
    }
}

/// Opens an engine, naming the directory in the error.
pub fn open_engine(dir: &Path, config: &Config) -> anyhow::Result<Engine> {
    Engine::open(dir, config.clone())
        .with_context(|| format!("open the data directory {}", dir.display()))
}

/// Parses `A,B,C` into symbols, naming a bad one.
pub fn symbols(list: &str) -> anyhow::Result<Vec<Symbol>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Symbol::new(s).map_err(anyhow::Error::from))
        .collect()
}

/// A library enum the command line offers by name (the library derives no
/// clap traits).
pub trait Choice: Copy + Send + Sync + 'static {
    /// Every value.
    fn all() -> &'static [Self];
    /// Its name on the command line.
    fn name(self) -> &'static str;
}

/// A clap parser for a [`Choice`]: `--help` lists the names.
pub fn choice<T: Choice>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(T::all().iter().map(|t| t.name())).try_map(|s: String| {
        T::all()
            .iter()
            .copied()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("{s:?} is not one of the choices"))
    })
}

macro_rules! choices {
    ($($t:ty),*) => {$(
        impl Choice for $t {
            fn all() -> &'static [Self] {
                &<$t>::ALL
            }
            fn name(self) -> &'static str {
                self.as_str()
            }
        }
    )*};
}
choices!(
    kiln::market::Format,
    kiln::market::OnError,
    kiln::market::TsUnit,
    kiln::market::ExportFormat,
    kiln::store::Priority,
    kiln::store::JobState
);
