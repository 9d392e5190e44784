//! The ingest driver: opens each file, hands its rows to the [`Loader`], which
//! validates them, buffers them per symbol, finds duplicates, and stages
//! them in one store session that commits after the last file.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;
use kiln_core::{
    Bar, BarColumns, BarIngest, BarStore, Conflict, Enqueued, FollowUp, IngestReport, Symbol,
};

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
    /// Which symbols those are.
    pub changed_symbols: Vec<Symbol>,
    /// The jobs the follow-up of [`ingest_files_with`] enqueued with the bars.
    pub follow_ups: Vec<Enqueued>,
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

/// What locating a row of a file needs.
struct FileInfo {
    path: PathBuf,
    /// Whether locations are CSV lines (else rows, with these batch starts).
    lines: bool,
    batch_starts: Vec<u64>,
}

/// Names invalid rows: rejects the ingest, or writes them to the report.
struct Rejects {
    report: Option<(PathBuf, csv::Writer<std::io::BufWriter<File>>)>,
    /// Every file so far, by source id in the session; the last is current.
    files: Vec<FileInfo>,
    rejected: u64,
}

impl Rejects {
    /// The file and location of ordinal `at` (a line or a row) of `source`.
    fn locate(&self, source: u32, at: u64) -> (PathBuf, Location) {
        let Some(f) = self.files.get(source as usize) else {
            return (PathBuf::new(), Location::Line(at));
        };
        if f.lines {
            return (f.path.clone(), Location::Line(at));
        }
        let batch = f
            .batch_starts
            .partition_point(|&s| s <= at)
            .saturating_sub(1);
        let start = f.batch_starts.get(batch).copied().unwrap_or(0);
        let location = Location::Row {
            row: at,
            batch: batch as u64,
            in_batch: at.saturating_sub(start),
        };
        (f.path.clone(), location)
    }

    /// An invalid row: rejects the ingest, or reports and skips it.
    fn invalid(&mut self, source: u32, at: u64, (column, reason): Cell) -> Result<(), MarketError> {
        let (path, location) = self.locate(source, at);
        let err = RowError {
            path,
            location,
            column,
            reason,
        };
        match &mut self.report {
            None => Err(MarketError::Row(Box::new(err))),
            Some((path, w)) => {
                self.rejected += 1;
                let record = [
                    err.path.display().to_string(),
                    err.location.to_string(),
                    err.column.to_owned(),
                    err.reason,
                ];
                w.write_record(&record)
                    .map_err(|e| MarketError::format(path, e))
            }
        }
    }
}

/// Validates rows, buffers them per symbol, stages full buffers.
pub(crate) struct Loader<'s, I: BarIngest> {
    session: I,
    opts: &'s IngestOptions,
    rejects: Rejects,
    index: HashMap<String, usize>,
    buffers: Vec<SymbolBuffer>,
    buffered: usize,
    source: u32,
    rows: u64,
}

impl<'s, I: BarIngest> Loader<'s, I> {
    fn new<B: BarStore<Ingest = I>>(
        store: &B,
        opts: &'s IngestOptions,
    ) -> Result<Self, MarketError> {
        let report = match (opts.on_error, &opts.report) {
            (OnError::Skip, Some(path)) => {
                let file = File::create(path).map_err(|e| MarketError::io(path, e))?;
                let mut w = csv::Writer::from_writer(std::io::BufWriter::new(file));
                w.write_record(["file", "location", "column", "reason"])
                    .map_err(|e| MarketError::format(path, e))?;
                Some((path.clone(), w))
            }
            (OnError::Skip, None) => {
                return Err(MarketError::Options(
                    "--on-error skip needs --report FILE for the skipped rows".into(),
                ));
            }
            (OnError::Reject, _) => None,
        };
        Ok(Loader {
            session: store.bar_ingest()?,
            opts,
            rejects: Rejects {
                report,
                files: Vec::new(),
                rejected: 0,
            },
            index: HashMap::new(),
            buffers: Vec::new(),
            buffered: 0,
            source: 0,
            rows: 0,
        })
    }

    fn begin_file(&mut self, path: &Path, lines: bool) {
        self.source = self.session.source(&path.display().to_string());
        self.rejects.files.push(FileInfo {
            path: path.to_path_buf(),
            lines,
            batch_starts: Vec::new(),
        });
    }

    /// Arrow and Parquet readers call this at each record batch.
    pub(crate) fn begin_batch(&mut self, first_row: u64) {
        if let Some(f) = self.rejects.files.last_mut() {
            f.batch_starts.push(first_row);
        }
    }

    /// An invalid row of the current file: rejects the ingest, or reports and skips it.
    pub(crate) fn invalid(&mut self, at: u64, cell: Cell) -> Result<(), MarketError> {
        self.rejects.invalid(self.source, at, cell)
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
        result?;
        // Into the value log: what is buffered is all the memory an ingest holds.
        self.session.flush()?;
        Ok(())
    }

    fn stage(&mut self, buf: &mut SymbolBuffer) -> Result<(), MarketError> {
        let sorted = buf.cols.ts.windows(2).all(|w| w[0] < w[1]);
        let (cols, at) = if sorted {
            (std::mem::take(&mut buf.cols), std::mem::take(&mut buf.at))
        } else {
            let mut order: Vec<usize> = (0..buf.cols.len()).collect();
            order.sort_by_key(|&i| (buf.cols.ts[i], buf.at[i]));
            let mut out = BarColumns::with_capacity(order.len());
            let mut out_at = Vec::with_capacity(order.len());
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
                            self.rejects.locate(self.source, buf.at[first]).1
                        );
                        self.invalid(buf.at[i], ("ts", reason))?;
                        self.rows -= 1;
                    }
                    continue;
                }
                out.push(bar);
                out_at.push(buf.at[i]);
                kept = Some((i, bar));
            }
            (out, out_at)
        };
        self.session.stage(&buf.symbol, self.source, &cols, &at)?;
        Ok(())
    }

    /// Commits the session. A conflict the store finds between rows staged
    /// in different buffers rejects the ingest, or is reported and skipped.
    /// Returns the store's report, the rows kept and the rows rejected.
    fn commit(self, follow_up: &mut FollowUp<'_>) -> Result<(IngestReport, u64, u64), MarketError> {
        let Loader {
            session,
            mut rejects,
            rows,
            ..
        } = self;
        let mut first_error: Option<MarketError> = None;
        let mut on_conflict = |c: &Conflict| {
            let first = c.first_at.map_or_else(
                || "an earlier row".to_owned(),
                |a| rejects.locate(c.source, a).1.to_string(),
            );
            let reason = format!(
                "{} at {} appears again with different values (first at {first})",
                c.symbol,
                super::format_iso(c.ts)
            );
            rejects
                .invalid(c.source, c.at.unwrap_or(0), ("ts", reason))
                .map_err(|e| {
                    let text = e.to_string();
                    first_error.get_or_insert(e);
                    kiln_core::StoreError::Conflict(text)
                })
        };
        let committed = session.commit_with(&mut on_conflict, follow_up);
        let report = match (committed, first_error) {
            (Ok(r), _) => r,
            (Err(_), Some(e)) => return Err(e),
            (Err(e), None) => return Err(e.into()),
        };
        if let Some((path, mut w)) = rejects.report.take() {
            w.flush().map_err(|e| MarketError::io(&path, e))?;
        }
        let kept = rows - report.conflicts;
        Ok((report, kept, rejects.rejected))
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
/// commit that applies every bar (on disk when it returns, under the
/// store's default `Durability::Sync`), or with an error and nothing
/// changed (rows skipped under [`OnError::Skip`] aside).
pub fn ingest_files<B: BarStore>(
    store: &B,
    paths: &[PathBuf],
    opts: &IngestOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<IngestSummary, MarketError> {
    ingest_files_with(store, paths, opts, progress, &mut |_| Ok(Vec::new()))
}

/// [`ingest_files`], with the jobs `follow_up` makes from the symbols whose
/// bars change enqueued in the same commit (see `BarIngest::commit_with`).
pub fn ingest_files_with<B: BarStore>(
    store: &B,
    paths: &[PathBuf],
    opts: &IngestOptions,
    progress: &mut dyn FnMut(Progress),
    follow_up: &mut FollowUp<'_>,
) -> Result<IngestSummary, MarketError> {
    let started = Instant::now();
    if opts.buffer_rows == 0 {
        return Err(MarketError::Options("buffer_rows must be positive".into()));
    }
    if let Some(report) = &opts.report
        && let Ok(report) = report.canonicalize()
        && paths
            .iter()
            .any(|p| p.canonicalize().is_ok_and(|p| p == report))
    {
        return Err(MarketError::Options(format!(
            "the report file {} is one of the inputs",
            report.display()
        )));
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
    summarize(loader, paths.len(), started, follow_up)
}

/// Ingests record batches held in memory (a table handed over through
/// Arrow) like one Arrow file, with the same validation and the same
/// all-or-nothing commit as [`ingest_files_with`]; `name` stands for the
/// file in errors (`table: row 3 (batch 0, row 3), column close: …`).
pub fn ingest_batches_with<B: BarStore>(
    store: &B,
    name: &str,
    batches: &mut dyn Iterator<Item = Result<RecordBatch, ArrowError>>,
    opts: &IngestOptions,
    follow_up: &mut FollowUp<'_>,
) -> Result<IngestSummary, MarketError> {
    let started = Instant::now();
    if opts.report.is_some() {
        return Err(MarketError::Options(
            "a report file is for files; skip rows in the table before ingesting it".into(),
        ));
    }
    let mut loader = Loader::new(store, opts)?;
    let path = Path::new(name);
    loader.begin_file(path, false);
    super::columnar::load(
        path,
        Format::ArrowStream,
        opts,
        &mut loader,
        batches,
        0,
        &mut |_, _| {},
    )?;
    loader.flush()?;
    summarize(loader, 1, started, follow_up)
}

/// Commits what `loader` staged and says what the ingest did.
fn summarize<I: BarIngest>(
    loader: Loader<'_, I>,
    files: usize,
    started: Instant,
    follow_up: &mut FollowUp<'_>,
) -> Result<IngestSummary, MarketError> {
    let (report, rows, rejected) = loader.commit(follow_up)?;
    Ok(IngestSummary {
        files,
        rows,
        rejected,
        symbols: report.changed.len() + report.unchanged.len(),
        changed: report.changed.len(),
        changed_symbols: report.changed.iter().map(|(s, _)| s.clone()).collect(),
        follow_ups: report.follow_ups,
        seconds: started.elapsed().as_secs_f64(),
    })
}
