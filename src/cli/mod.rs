//! The command handlers of the `kiln` binary: each opens what it needs,
//! calls the library and prints a summary (one JSON object with `--json`).

pub mod admin;
pub mod data;
pub mod demo;
pub mod jobs;
pub mod serve;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use kiln::engine::{Engine, EngineConfig};
use kiln::store::Symbol;

/// What every command gets: the data directory, the configuration, the output mode.
pub struct Ctx {
    /// `--data`, if given.
    pub data: Option<PathBuf>,
    /// The effective configuration (defaults, then `--config`).
    pub config: EngineConfig,
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
pub fn open_engine(dir: &Path, config: &EngineConfig) -> anyhow::Result<Engine> {
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
