//! The ingest driver: opens each file, hands its rows to the [`Loader`], which
//! validates them, buffers them per symbol, finds duplicates, and stages
//! them in one store session that commits after the last file.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln_store::{Bar, BarColumns, BarIngest, Store, Symbol};

use super::{Format, Location, MarketError, OnError, RowError, TsUnit};

/// How to read and check input files.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// The input format; `None` picks it from the extension, else the first bytes.
    pub format: Option<Format>,
    /// Column renames, source name → canonical name (`Ticker` → `symbol`).
    pub map: Vec<(String, String)>,
    /// Unit of integer timestamps; `None` detects it from the first value.
    pub ts_unit: Option<TsUnit>,
    /// Reject the ingest at the first invalid row, or skip and report them.
    pub on_error: OnError,
    /// Where skipped rows are written (required with [`OnError::Skip`]).
    pub report: Option<PathBuf>,
    /// Bars buffered in memory before they are staged in the store (bounds
    /// the memory an ingest holds, about 72 bytes per bar).
    pub buffer_rows: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            format: None,
            map: Vec::new(),
            ts_unit: None,
            on_error: OnError::Reject,
            report: None,
            buffer_rows: 1 << 20,
        }
    }
}

/// What an ingest did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IngestSummary {
    /// Files read.
    pub files: usize,
    /// Valid rows read.
    pub rows: u64,
    /// Invalid rows skipped (only with [`OnError::Skip`]).
    pub rejected: u64,
    /// Symbols in the input.
    pub symbols: usize,
    /// Symbols whose stored bars changed.
    pub changed: usize,
    /// Wall time, in seconds.
    pub seconds: f64,
}

/// Progress through the current file, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// 0-based index of the file being read.
    pub file: usize,
    /// Work done in this file (bytes for CSV, rows for Arrow and Parquet).
    pub done: u64,
    /// Work in this file, in the same unit.
    pub total: u64,
}

/// One row as a reader decoded it, before validation.
pub(crate) struct RawRow<'a> {
    pub symbol: &'a str,
    pub ts: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    /// `None` when the file has no vwap or the cell is empty.
    pub vwap: Option<f64>,
}

/// A row-level failure: the column and the reason.
pub(crate) type Cell = (&'static str, String);

struct SymbolBuffer {
    symbol: Symbol,
    cols: BarColumns,
    /// Each bar's location ordinal (see `Loader::locate`).
    at: Vec<u64>,
}

/// Validates rows, buffers them per symbol, stages full buffers.
pub(crate) struct Loader<'s> {
    session: BarIngest,
    opts: &'s IngestOptions,
    report: Option<csv::Writer<std::io::BufWriter<File>>>,
    index: HashMap<String, usize>,
    buffers: Vec<SymbolBuffer>,
    buffered: usize,
    /// The current file and its source id in the session.
    path: PathBuf,
    source: u32,
    /// Whether locations are CSV lines (else rows, with these batch starts).
    lines: bool,
    batch_starts: Vec<u64>,
    pub rows: u64,
    pub rejected: u64,
}

impl<'s> Loader<'s> {
    fn new(store: &Store, opts: &'s IngestOptions) -> Result<Self, MarketError> {
        let report = match (opts.on_error, &opts.report) {
            (OnError::Skip, Some(path)) => {
                let file = File::create(path).map_err(|e| MarketError::io(path, e))?;
                let mut w = csv::Writer::from_writer(std::io::BufWriter::new(file));
                w.write_record(["file", "location", "column", "reason"])
                    .map_err(|e| MarketError::format(path, e))?;
                Some(w)
            }
            (OnError::Skip, None) => {
                return Err(MarketError::Options(
                    "--on-error skip needs --report FILE for the skipped rows".into(),
                ));
            }
            (OnError::Reject, _) => None,
        };
        Ok(Loader {
            session: store.bar_ingest(),
            opts,
            report,
            index: HashMap::new(),
            buffers: Vec::new(),
            buffered: 0,
            path: PathBuf::new(),
            source: 0,
            lines: true,
            batch_starts: Vec::new(),
            rows: 0,
            rejected: 0,
        })
    }

    fn begin_file(&mut self, path: &Path, lines: bool) {
        self.path = path.to_path_buf();
        self.source = self.session.source(path.display().to_string());
        self.lines = lines;
        self.batch_starts.clear();
    }

    /// Arrow and Parquet readers call this at each record batch.
    pub(crate) fn begin_batch(&mut self, first_row: u64) {
        self.batch_starts.push(first_row);
    }

    fn locate(&self, at: u64) -> Location {
        if self.lines {
            return Location::Line(at);
        }
        let batch = self
            .batch_starts
            .partition_point(|&s| s <= at)
            .saturating_sub(1);
        let start = self.batch_starts.get(batch).copied().unwrap_or(0);
        Location::Row {
            row: at,
            batch: batch as u64,
            in_batch: at - start,
        }
    }

    /// An invalid row: rejects the ingest, or reports and skips it.
    pub(crate) fn invalid(&mut self, at: u64, (column, reason): Cell) -> Result<(), MarketError> {
        let err = RowError {
            path: self.path.clone(),
            location: self.locate(at),
            column,
            reason,
        };
        match &mut self.report {
            None => Err(MarketError::Row(Box::new(err))),
            Some(w) => {
                self.rejected += 1;
                let record = [
                    err.path.display().to_string(),
                    err.location.to_string(),
                    err.column.to_owned(),
                    err.reason,
                ];
                let path = self.opts.report.clone().unwrap_or_default();
                w.write_record(&record)
                    .map_err(|e| MarketError::format(&path, e))
            }
        }
    }

    /// One decoded row at location ordinal `at` (a CSV line or a file row).
    pub(crate) fn row(
        &mut self,
        at: u64,
        row: Result<RawRow<'_>, Cell>,
    ) -> Result<(), MarketError> {
        let checked = row.and_then(|r| {
            let b = check_bar(&r)?;
            Ok((r.symbol, b))
        });
        let (symbol, bar) = match checked {
            Ok(v) => v,
            Err(cell) => return self.invalid(at, cell),
        };
        let slot = match self.index.get(symbol) {
            Some(&i) => i,
            None => match Symbol::new(symbol) {
                Ok(s) => {
                    self.buffers.push(SymbolBuffer {
                        symbol: s,
                        cols: BarColumns::default(),
                        at: Vec::new(),
                    });
                    self.index.insert(symbol.to_owned(), self.buffers.len() - 1);
                    self.buffers.len() - 1
                }
                Err(e) => return self.invalid(at, ("symbol", e.to_string())),
            },
        };
        let buf = &mut self.buffers[slot];
        buf.cols.push(bar);
        buf.at.push(at);
        self.rows += 1;
        self.buffered += 1;
        if self.buffered >= self.opts.buffer_rows {
            self.flush()?;
        }
        Ok(())
    }

    /// Sorts each buffer by time, resolves duplicates, stages it.
    pub(crate) fn flush(&mut self) -> Result<(), MarketError> {
        let mut buffers = std::mem::take(&mut self.buffers);
        let result = buffers
            .iter_mut()
            .filter(|b| !b.cols.is_empty())
            .try_for_each(|b| self.stage(b));
        for b in &mut buffers {
            b.cols = BarColumns::default();
            b.at.clear();
        }
        self.buffers = buffers;
        self.buffered = 0;
        result
    }

    fn stage(&mut self, buf: &mut SymbolBuffer) -> Result<(), MarketError> {
        let sorted = buf.cols.ts.windows(2).all(|w| w[0] < w[1]);
        let cols = if sorted {
            std::mem::take(&mut buf.cols)
        } else {
            let mut order: Vec<usize> = (0..buf.cols.len()).collect();
            order.sort_by_key(|&i| (buf.cols.ts[i], buf.at[i]));
            let mut out = BarColumns::with_capacity(order.len());
            let mut kept: Option<(usize, Bar)> = None;
            for &i in &order {
                let bar = buf.cols.bar(i);
                if let Some((first, prev)) = kept
                    && prev.ts == bar.ts
                {
                    if !prev.same_as(&bar) {
                        let reason = format!(
                            "{} at {} appears again with different values (first at {})",
                            buf.symbol,
                            super::format_iso(bar.ts),
                            self.locate(buf.at[first])
                        );
                        self.invalid(buf.at[i], ("ts", reason))?;
                    }
                    continue;
                }
                out.push(bar);
                kept = Some((i, bar));
            }
            out
        };
        self.session.stage(&buf.symbol, self.source, &cols)?;
        Ok(())
    }
}

/// Range and consistency checks of one decoded row.
fn check_bar(r: &RawRow<'_>) -> Result<Bar, Cell> {
    for (name, v) in [
        ("open", r.open),
        ("high", r.high),
        ("low", r.low),
        ("close", r.close),
    ] {
        if !v.is_finite() {
            return Err((name, format!("{v} is not a finite number")));
        }
        if v <= 0.0 {
            return Err((name, format!("price {v} must be positive")));
        }
    }
    if !r.volume.is_finite() {
        return Err(("volume", format!("{} is not a finite number", r.volume)));
    }
    if r.volume < 0.0 {
        return Err(("volume", format!("volume {} is negative", r.volume)));
    }
    let top = r.open.max(r.close);
    if r.high < top {
        return Err((
            "high",
            format!("high {} is below max(open, close) = {top}", r.high),
        ));
    }
    let bottom = r.open.min(r.close);
    if r.low > bottom {
        return Err((
            "low",
            format!("low {} is above min(open, close) = {bottom}", r.low),
        ));
    }
    let vwap = match r.vwap {
        None => f64::NAN,
        Some(v) if !v.is_finite() => return Err(("vwap", format!("{v} is not a finite number"))),
        Some(v) if v <= 0.0 => return Err(("vwap", format!("price {v} must be positive"))),
        Some(v) => v,
    };
    Ok(Bar {
        ts: r.ts,
        open: r.open,
        high: r.high,
        low: r.low,
        close: r.close,
        volume: r.volume,
        vwap,
    })
}

/// The format of `path`: the option, else the extension, else the magic bytes.
fn format_of(path: &Path, declared: Option<Format>) -> Result<Format, MarketError> {
    if let Some(f) = declared.or_else(|| Format::from_path(path)) {
        return Ok(f);
    }
    let mut head = [0u8; 8];
    let mut file = File::open(path).map_err(|e| MarketError::io(path, e))?;
    let n = file.read(&mut head).map_err(|e| MarketError::io(path, e))?;
    Format::from_magic(&head[..n]).ok_or_else(|| {
        MarketError::format(
            path,
            "cannot tell the format from the name or the first bytes; pass --format",
        )
    })
}

/// Ingests `paths` as one all-or-nothing change: returns after the group
/// commit that makes every bar durable, or with an error and nothing changed
/// (rows skipped under [`OnError::Skip`] aside).
pub fn ingest_files(
    store: &Store,
    paths: &[PathBuf],
    opts: &IngestOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<IngestSummary, MarketError> {
    let started = Instant::now();
    if opts.buffer_rows == 0 {
        return Err(MarketError::Options("buffer_rows must be positive".into()));
    }
    let mut loader = Loader::new(store, opts)?;
    for (file, path) in paths.iter().enumerate() {
        let format = format_of(path, opts.format)?;
        loader.begin_file(path, format == Format::Csv);
        let mut report = |done, total| progress(Progress { file, done, total });
        match format {
            Format::Csv => super::csv::read(path, opts, &mut loader, &mut report)?,
            Format::Arrow | Format::ArrowStream | Format::Parquet => {
                super::columnar::read(path, format, opts, &mut loader, &mut report)?
            }
        }
        loader.flush()?;
    }
    if let Some(mut w) = loader.report.take() {
        let path = opts.report.clone().unwrap_or_default();
        w.flush().map_err(|e| MarketError::io(&path, e))?;
    }
    let (rows, rejected) = (loader.rows, loader.rejected);
    let report = loader.session.commit()?;
    Ok(IngestSummary {
        files: paths.len(),
        rows,
        rejected,
        symbols: report.changed.len() + report.unchanged.len(),
        changed: report.changed.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
