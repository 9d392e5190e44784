//! Market data in and out: ingest of long-format OHLCV bars from CSV (plain
//! or gzip), Arrow IPC (file and stream) and Parquet with strict validation;
//! export of bars and stored feature series to the same formats; and a
//! seeded synthetic universe for the demo, tests and benchmarks.
//!
//! Ingest streams each file in bounded memory: rows are validated as they
//! are read and buffered per symbol, and full buffers are staged in the
//! store's value log (see [`kiln_core::BarIngest`]). Nothing is visible
//! until every file has been read: by default one invalid row rejects the
//! whole ingest and leaves the store exactly as it was; with
//! [`OnError::Skip`] invalid rows are written, with their reasons, to a
//! report file and the rest is ingested.

mod columnar;
mod csv;
pub mod export;
mod ingest;
pub mod synth;
mod time;
pub mod untrusted;

use std::fmt;
use std::path::PathBuf;

pub use export::{ExportFormat, ExportOptions, ExportSummary, export};
pub use ingest::{
    IngestOptions, IngestSummary, Progress, ingest_batches_with, ingest_files, ingest_files_with,
};
pub use time::{TsUnit, format_iso, parse_iso};

/// Input file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated text with a header row; gzip-compressed when the file
    /// starts with the gzip magic bytes (for example `.csv.gz`).
    Csv,
    /// Arrow IPC file format (`.arrow`, `.ipc`, `.feather`).
    Arrow,
    /// Arrow IPC stream format (`.arrows`).
    ArrowStream,
    /// Apache Parquet (`.parquet`, `.pq`).
    Parquet,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 4] = [
        Format::Csv,
        Format::Arrow,
        Format::ArrowStream,
        Format::Parquet,
    ];

    /// Its name as `--format` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Arrow => "arrow",
            Format::ArrowStream => "arrow-stream",
            Format::Parquet => "parquet",
        }
    }

    /// The format a file name's extension names, if any.
    pub fn from_path(path: &std::path::Path) -> Option<Format> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        let ext = name.rsplit_once('.')?.1;
        match ext {
            "csv" | "txt" => Some(Format::Csv),
            "arrow" | "ipc" | "feather" => Some(Format::Arrow),
            "arrows" => Some(Format::ArrowStream),
            "parquet" | "pq" => Some(Format::Parquet),
            _ => None,
        }
    }

    /// The format a file's first bytes show, if they show one.
    pub fn from_magic(head: &[u8]) -> Option<Format> {
        if head.starts_with(b"PAR1") {
            Some(Format::Parquet)
        } else if head.starts_with(b"ARROW1") {
            Some(Format::Arrow)
        } else if head.starts_with(&[0xff, 0xff, 0xff, 0xff]) {
            Some(Format::ArrowStream)
        } else if head.starts_with(&[0x1f, 0x8b]) {
            Some(Format::Csv)
        } else {
            None
        }
    }
}

/// What to do with invalid rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnError {
    /// Reject the whole ingest at the first invalid row; the store is unchanged.
    #[default]
    Reject,
    /// Skip invalid rows, write each with its reason to the report file, and
    /// ingest the rest.
    Skip,
}

impl OnError {
    /// Both choices.
    pub const ALL: [OnError; 2] = [OnError::Reject, OnError::Skip];

    /// Its name as `--on-error` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Reject => "reject",
            OnError::Skip => "skip",
        }
    }
}

/// Where a row is in its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// A CSV line (1-based, the header is line 1).
    Line(u64),
    /// A row of an Arrow or Parquet file: the 0-based row over the whole
    /// file, and the record batch and the row within it.
    Row {
        /// 0-based row over the whole file.
        row: u64,
        /// 0-based record batch.
        batch: u64,
        /// 0-based row within the batch.
        in_batch: u64,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Row {
                row,
                batch,
                in_batch,
            } => write!(f, "row {row} (batch {batch}, row {in_batch})"),
        }
    }
}

/// One invalid row: where, which column, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    /// The file.
    pub path: PathBuf,
    /// The row.
    pub location: Location,
    /// The column (canonical name: symbol, ts, open, …).
    pub column: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}, column {}: {}",
            self.path.display(),
            self.location,
            self.column,
            self.reason
        )
    }
}

/// What can stop an ingest or an export.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MarketError {
    /// Reading or writing a file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure (in the message, so not also a `source`).
        error: std::io::Error,
    },
    /// The file is not what its format says (bad Parquet or Arrow, bad CSV
    /// structure), or its format cannot be told.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A required column is missing.
    #[error(
        "{path}: no column {column} (columns are {found}); name it with --map, for example --map Ticker=symbol,Date=ts"
    )]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The canonical column name.
        column: &'static str,
        /// The columns the file has.
        found: String,
    },
    /// A row is invalid; the ingest was rejected whole.
    #[error("{0} (nothing was ingested)")]
    Row(Box<RowError>),
    /// An option is wrong.
    #[error("{0}")]
    Options(String),
    /// What an export or a feature read asks for is not stored, or not
    /// computed from the stored bars (names the symbol and feature).
    #[error("{0}")]
    NotReady(String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] kiln_core::StoreError),
}

impl MarketError {
    pub(crate) fn io(path: &std::path::Path, error: std::io::Error) -> Self {
        MarketError::Io {
            path: path.to_path_buf(),
            error,
        }
    }

    pub(crate) fn format(path: &std::path::Path, reason: impl fmt::Display) -> Self {
        MarketError::Format {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// The canonical input columns, in order; `vwap` is optional.
pub const COLUMNS: [&str; 8] = [
    "symbol", "ts", "open", "high", "low", "close", "volume", "vwap",
];

/// Indices into [`COLUMNS`].
pub(crate) mod col {
    pub const SYMBOL: usize = 0;
    pub const TS: usize = 1;
    pub const VWAP: usize = 7;
}

/// Resolves the canonical columns against a file's header: names match
/// case-insensitively after `map` renames (source name → canonical name);
/// other columns are ignored. Returns each canonical column's index.
pub(crate) fn resolve_columns(
    path: &std::path::Path,
    header: &[String],
    map: &[(String, String)],
) -> Result<[Option<usize>; 8], MarketError> {
    let mut found = [None; 8];
    for (i, name) in header.iter().enumerate() {
        let name = name.trim();
        let canonical = map
            .iter()
            .find(|(from, _)| from.eq_ignore_ascii_case(name))
            .map_or(name, |(_, to)| to.as_str());
        if let Some(c) = COLUMNS
            .iter()
            .position(|c| c.eq_ignore_ascii_case(canonical))
        {
            if found[c].is_some() {
                return Err(MarketError::format(
                    path,
                    format!("two columns map to {}", COLUMNS[c]),
                ));
            }
            found[c] = Some(i);
        }
    }
    if let Some(c) = (0..col::VWAP).find(|&c| found[c].is_none()) {
        return Err(MarketError::MissingColumn {
            path: path.to_path_buf(),
            column: COLUMNS[c],
            found: header.join(", "),
        });
    }
    Ok(found)
}

/// Parses a `--map` value: `Ticker=symbol,Date=ts`.
pub fn parse_map(s: &str) -> Result<Vec<(String, String)>, MarketError> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (from, to) = pair
                .split_once('=')
                .ok_or_else(|| MarketError::Options(format!("--map: {pair:?} is not FROM=TO")))?;
            let to = to.trim();
            if !COLUMNS.iter().any(|c| c.eq_ignore_ascii_case(to)) {
                return Err(MarketError::Options(format!(
                    "--map: {to:?} is not a column kiln reads ({})",
                    COLUMNS.join(", ")
                )));
            }
            Ok((from.trim().to_owned(), to.to_ascii_lowercase()))
        })
        .collect()
}
