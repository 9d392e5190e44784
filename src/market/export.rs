//! Export of stored bars, or of stored feature series, to Parquet, Arrow IPC
//! or CSV in long format: `symbol, ts`, then one float column per bar field
//! or per feature output (named by its canonical label, `macd(12,26,9).signal`).
//! `ts` is a UTC nanosecond timestamp (ISO-8601 text in CSV); a NaN is a null
//! (an empty CSV field). The file is written beside its destination and
//! renamed into place when complete, so a failed export leaves no half file.
//!
//! A feature table read in memory (the HTTP query route, Python's
//! `features()`) comes from the same reader ([`feature_rows`] and
//! [`FeatureRows::read_outputs`]) as one record batch ([`feature_table`],
//! [`TableBuilder`]) in which warm-up values stay NaN.

use kiln_core::prelude::*;
use std::fs::File;
use std::io::BufWriter;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use kiln_core::{BarStore, Coverage, DataVersion, FrameRead, ResultStore, SeriesKey, Symbol};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::{MarketError, format_iso};
use crate::features::FeatureSpec;

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// Apache Parquet, snappy-compressed.
    Parquet,
    /// Arrow IPC file format.
    Arrow,
    /// Comma-separated text with a header row.
    Csv,
}

impl ExportFormat {
    /// Every format.
    pub const ALL: [ExportFormat; 3] = [
        ExportFormat::Parquet,
        ExportFormat::Arrow,
        ExportFormat::Csv,
    ];

    /// Its name as `--format` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Parquet => "parquet",
            ExportFormat::Arrow => "arrow",
            ExportFormat::Csv => "csv",
        }
    }
}

/// What to export.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// The output format.
    pub format: ExportFormat,
    /// Symbols to export; `None` exports every symbol with bars.
    pub symbols: Option<Vec<Symbol>>,
    /// Feature series to export instead of bars; empty exports the bars.
    pub features: Vec<FeatureSpec>,
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportSummary {
    /// Rows written.
    pub rows: u64,
    /// Symbols written.
    pub symbols: usize,
    /// Value columns after `symbol, ts`.
    pub columns: Vec<String>,
    /// Wall time, in seconds.
    pub seconds: f64,
}

/// The bar columns an export of bars writes after `symbol, ts`.
pub const BAR_COLUMNS: [&str; 6] = ["open", "high", "low", "close", "volume", "vwap"];

/// A window of time, both ends inclusive (epoch nanoseconds); `None` is
/// open on that side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// The first instant.
    pub from: Option<i64>,
    /// The last instant.
    pub to: Option<i64>,
}

impl TimeRange {
    /// The rows of sorted `ts` inside the window.
    pub fn rows(&self, ts: &[i64]) -> Range<usize> {
        let lo = self.from.map_or(0, |f| ts.partition_point(|&t| t < f));
        let hi = self
            .to
            .map_or(ts.len(), |t| ts.partition_point(|&x| x <= t))
            .max(lo);
        lo..hi
    }
}

/// One symbol's bars cut to a window: the rows of a feature table, whose
/// stored outputs [`FeatureRows::read_outputs`] copies. Every feature table
/// (`kiln export`, the HTTP query route, Python's `features()`) is read so.
pub struct FeatureRows<B: BarStore> {
    /// The symbol.
    pub symbol: Symbol,
    bars: B::BarsView,
    rows: Range<usize>,
}

impl<B: BarStore> FeatureRows<B> {
    /// The timestamps of the rows.
    pub fn ts(&self) -> &[i64] {
        &self.bars.ts()[self.rows.clone()]
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Copies the stored values of `labels` in these rows into `out` (one
    /// slice per label, as long as the rows): straight from the store into
    /// `out`, no other copy. A missing output, or one computed from other
    /// bars than these, is [`MarketError::NotReady`] naming it.
    pub fn read_outputs<S: ResultStore>(
        &self,
        store: &S,
        labels: &[String],
        out: &mut [&mut [f64]],
    ) -> Result<(), MarketError> {
        let keys = labels
            .iter()
            .map(|l| SeriesKey::new(self.symbol.clone(), l.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let version = self.bars.version();
        let covers = store.copy_series(&keys, self.rows.clone(), out)?;
        for (label, covers) in labels.iter().zip(covers) {
            match covers {
                None => return Err(not_stored(&self.symbol, label)),
                Some(c) if !c.is(&version) => return Err(stale(&self.symbol, label, c, &version)),
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// `symbol`'s bars cut to `range`; [`MarketError::NotReady`] when it has
/// none.
pub fn feature_rows<B: BarStore>(
    store: &B,
    symbol: &Symbol,
    range: TimeRange,
) -> Result<FeatureRows<B>, MarketError> {
    let bars = store.bars(symbol, ..)?.ok_or_else(|| no_bars(symbol))?;
    let rows = range.rows(bars.ts());
    Ok(FeatureRows {
        symbol: symbol.clone(),
        bars,
        rows,
    })
}

fn no_bars(symbol: &Symbol) -> MarketError {
    MarketError::NotReady(format!("{symbol} has no bars in this store"))
}

fn not_stored(symbol: &Symbol, label: &str) -> MarketError {
    MarketError::NotReady(format!("{symbol} has no stored {label}; compute it first"))
}

fn stale(symbol: &Symbol, label: &str, covers: Coverage, version: &DataVersion) -> MarketError {
    MarketError::NotReady(format!(
        "{symbol} {label} is stale: computed from {} bars up to {}, but the stored bars \
         ({} up to {}) are not those; recompute it first",
        covers.bars,
        format_iso(covers.last_ts),
        version.bars,
        format_iso(version.last_ts)
    ))
}

/// What [`FeatureRows::read_outputs`] would say of each of `symbols`, from
/// the frames' heads alone (no value is read): every label stored in a frame computed
/// from the stored bars, or the same error. A stream of many symbols checks
/// them all so before its first byte; a writer may still change one before
/// it is read, which the read then reports.
pub fn check_feature_rows<B: BarStore + ResultStore>(
    store: &B,
    symbols: &[Symbol],
    labels: &[String],
) -> Result<(), MarketError> {
    for (symbol, version) in symbols.iter().zip(store.data_versions(symbols)?) {
        let version = version.ok_or_else(|| no_bars(symbol))?;
        let heads = store.frames_batch(&store.frames(symbol)?)?;
        for label in labels {
            let mut holding = heads
                .iter()
                .flatten()
                .filter(|h| h.labels().iter().any(|l| l == label));
            let Some(first) = holding.next() else {
                return Err(not_stored(symbol, label));
            };
            if !first.is_current(&version) && !holding.any(|h| h.is_current(&version)) {
                return Err(stale(symbol, label, first.covers(), &version));
            }
        }
    }
    Ok(())
}

/// The schema of a feature table held in memory: `symbol` (a string view:
/// polars' own string layout, so it crosses to polars without a copy),
/// `ts` (timestamp ns, UTC), then one float64 column per label.
pub fn feature_schema(labels: &[String]) -> SchemaRef {
    long_schema(DataType::Utf8View, labels, false)
}

/// `symbol` of type `symbol`, `ts`, then `columns` as float64.
fn long_schema(symbol: DataType, columns: &[String], nullable: bool) -> SchemaRef {
    let mut fields = vec![
        Field::new("symbol", symbol, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
    ];
    fields.extend(
        columns
            .iter()
            .map(|c| Field::new(c, DataType::Float64, nullable)),
    );
    Arc::new(Schema::new(fields))
}

/// `labels` of every symbol in `symbols`, cut to `range`, as one record
/// batch in long format (see [`feature_schema`]; warm-up values are NaN,
/// not null), read [`TABLE_GROUP_SYMBOLS`] symbols at a time, in parallel,
/// straight into the batch's columns: the one copy between the store and
/// an Arrow consumer.
pub fn feature_table<B: BarStore + ResultStore + Sync>(
    store: &B,
    symbols: &[Symbol],
    labels: &[String],
    range: TimeRange,
) -> Result<RecordBatch, MarketError> {
    let mut table = TableBuilder::new(store, symbols, labels)?;
    for group in symbols.chunks(TABLE_GROUP_SYMBOLS) {
        table.push(store, group, range)?;
    }
    table.finish()
}

/// Symbols read together when a feature table is built.
pub const TABLE_GROUP_SYMBOLS: usize = 64;

/// A feature table being read, group by group of symbols, into columns
/// sized once.
pub struct TableBuilder<'a> {
    labels: &'a [String],
    /// Every symbol's view, made once: a symbol of up to 12 bytes is all in
    /// its view, a longer one points at its one copy in `names`' buffers.
    names: arrow_array::StringViewArray,
    index: std::collections::HashMap<&'a str, usize>,
    views: Vec<u128>,
    ts: Vec<i64>,
    /// The output columns, zeroed by the allocator (pages the reads never
    /// reach cost nothing), `filled` rows long so far.
    values: Vec<Vec<f64>>,
    filled: usize,
}

impl<'a> TableBuilder<'a> {
    /// A table of `labels` for rows of `symbols`, with room for all their
    /// bars.
    pub fn new<B: BarStore>(
        store: &B,
        symbols: &'a [Symbol],
        labels: &'a [String],
    ) -> Result<Self, MarketError> {
        let bars: u64 = store
            .data_versions(symbols)?
            .iter()
            .map(|v| v.as_ref().map_or(0, |v| v.bars))
            .sum();
        let room = usize::try_from(bars).unwrap_or(0);
        let mut names = arrow_array::builder::StringViewBuilder::with_capacity(symbols.len());
        let mut index = std::collections::HashMap::with_capacity(symbols.len());
        for s in symbols {
            let next = index.len();
            if let std::collections::hash_map::Entry::Vacant(e) = index.entry(s.as_str()) {
                names.append_value(s.as_str());
                e.insert(next);
            }
        }
        Ok(TableBuilder {
            labels,
            names: names.finish(),
            index,
            views: Vec::with_capacity(room),
            ts: Vec::with_capacity(room),
            values: (0..labels.len()).map(|_| vec![0.0; room]).collect(),
            filled: 0,
        })
    }

    /// Reads the rows of `group` (symbols given to [`TableBuilder::new`])
    /// in `range` into the table, the symbols in parallel.
    pub fn push<B: BarStore + ResultStore + Sync>(
        &mut self,
        store: &B,
        group: &[Symbol],
        range: TimeRange,
    ) -> Result<(), MarketError> {
        use rayon::prelude::*;
        let parts = group
            .par_iter()
            .map(|s| feature_rows(store, s, range))
            .collect::<Result<Vec<_>, _>>()?;
        let rows: usize = parts.iter().map(FeatureRows::len).sum();
        let end = self.filled + rows;
        for column in &mut self.values {
            if column.len() < end {
                column.resize(end, 0.0);
            }
        }
        for p in &parts {
            let view = self
                .index
                .get(p.symbol.as_str())
                .and_then(|&i| self.names.views().get(i))
                .copied()
                .unwrap_or_default();
            self.views.extend(std::iter::repeat_n(view, p.len()));
            self.ts.extend_from_slice(p.ts());
        }
        // Each symbol's rows of every column: disjoint slices, read into
        // in parallel.
        let mut outs: Vec<Vec<&mut [f64]>> = parts
            .iter()
            .map(|_| Vec::with_capacity(self.labels.len()))
            .collect();
        for column in &mut self.values {
            let mut rest = &mut column[self.filled..end];
            for (p, out) in parts.iter().zip(&mut outs) {
                let (mine, after) = rest.split_at_mut(p.len());
                out.push(mine);
                rest = after;
            }
        }
        let labels = self.labels;
        parts
            .par_iter()
            .zip(outs.par_iter_mut())
            .try_for_each(|(p, out)| p.read_outputs(store, labels, out))?;
        self.filled = end;
        Ok(())
    }

    /// The record batch of every row read (see [`feature_schema`]).
    pub fn finish(self) -> Result<RecordBatch, MarketError> {
        let fail = |e: arrow_schema::ArrowError| {
            MarketError::Options(format!("building the feature table: {e}"))
        };
        let names = arrow_array::StringViewArray::try_new(
            self.views.into(),
            self.names.data_buffers().to_vec(),
            None,
        )
        .map_err(fail)?;
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(names),
            Arc::new(TimestampNanosecondArray::from(self.ts).with_timezone("UTC")),
        ];
        let filled = self.filled;
        columns.extend(self.values.into_iter().map(|mut v| {
            v.truncate(filled);
            Arc::new(Float64Array::from(v)) as ArrayRef
        }));
        RecordBatch::try_new(feature_schema(self.labels), columns).map_err(fail)
    }
}

/// Writes `store`'s bars or feature series to `out`; `progress` hears
/// (symbols written, symbols in all) after each symbol.
pub fn export<B: BarStore + ResultStore>(
    store: &B,
    out: &Path,
    opts: &ExportOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ExportSummary, MarketError> {
    let started = Instant::now();
    let symbols = match &opts.symbols {
        Some(s) => s.clone(),
        None => store.bar_symbols()?.into_iter().map(|(s, _)| s).collect(),
    };
    let columns: Vec<String> = if opts.features.is_empty() {
        BAR_COLUMNS.iter().map(|c| (*c).to_owned()).collect()
    } else {
        opts.features
            .iter()
            .flat_map(FeatureSpec::output_labels)
            .collect()
    };
    let mut table = TableWriter::create(out, opts.format, &columns)?;
    let mut rows = 0u64;
    for (n, symbol) in symbols.iter().enumerate() {
        if opts.features.is_empty() {
            let bars = store.bars(symbol, ..)?.ok_or_else(|| no_bars(symbol))?;
            let values = [
                bars.open(),
                bars.high(),
                bars.low(),
                bars.close(),
                bars.volume(),
                bars.vwap(),
            ];
            table.write(symbol, bars.ts(), &values)?;
            rows += bars.ts().len() as u64;
        } else {
            let part = feature_rows(store, symbol, TimeRange::default())?;
            let mut assembled = vec![vec![0.0; part.len()]; columns.len()];
            let mut outs: Vec<&mut [f64]> = assembled.iter_mut().map(Vec::as_mut_slice).collect();
            part.read_outputs(store, &columns, &mut outs)?;
            let values: Vec<&[f64]> = assembled.iter().map(Vec::as_slice).collect();
            table.write(symbol, part.ts(), &values)?;
            rows += part.len() as u64;
        }
        progress(n + 1, symbols.len());
    }
    table.finish()?;
    Ok(ExportSummary {
        rows,
        symbols: symbols.len(),
        columns,
        seconds: started.elapsed().as_secs_f64(),
    })
}

enum Sink {
    Parquet(ArrowWriter<File>),
    Arrow(arrow_ipc::writer::FileWriter<BufWriter<File>>),
    Csv(csv::Writer<BufWriter<File>>),
}

/// A long-format table being written to a temporary file beside `out`.
pub struct TableWriter {
    out: PathBuf,
    tmp: PathBuf,
    schema: SchemaRef,
    sink: Option<Sink>,
}

impl TableWriter {
    /// Starts a table with `symbol, ts` and then `columns` (floats).
    pub fn create(
        out: &Path,
        format: ExportFormat,
        columns: &[String],
    ) -> Result<Self, MarketError> {
        let schema = long_schema(DataType::Utf8, columns, true);
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = out.with_file_name(format!(".{name}.kiln-tmp"));
        let file = File::create(&tmp).map_err(|e| MarketError::io(&tmp, e))?;
        let fail = |e: &dyn std::fmt::Display| MarketError::format(&tmp, e);
        let sink = match format {
            ExportFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .build();
                Sink::Parquet(
                    ArrowWriter::try_new(file, Arc::clone(&schema), Some(props))
                        .map_err(|e| fail(&e))?,
                )
            }
            ExportFormat::Arrow => Sink::Arrow(
                arrow_ipc::writer::FileWriter::try_new(BufWriter::new(file), &schema)
                    .map_err(|e| fail(&e))?,
            ),
            ExportFormat::Csv => {
                let mut w = csv::Writer::from_writer(BufWriter::with_capacity(1 << 20, file));
                let header: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                w.write_record(&header).map_err(|e| fail(&e))?;
                Sink::Csv(w)
            }
        };
        Ok(TableWriter {
            out: out.to_path_buf(),
            tmp,
            schema,
            sink: Some(sink),
        })
    }

    /// Appends one symbol's rows: `ts` and one slice per column, each as long as `ts`.
    pub fn write(
        &mut self,
        symbol: &Symbol,
        ts: &[i64],
        columns: &[&[f64]],
    ) -> Result<(), MarketError> {
        let tmp = self.tmp.clone();
        let fail = |e: &dyn std::fmt::Display| MarketError::format(&tmp, e);
        match self.sink.as_mut() {
            Some(Sink::Csv(w)) => {
                let mut record = csv::ByteRecord::new();
                let mut number = String::new();
                for (i, &t) in ts.iter().enumerate() {
                    record.clear();
                    record.push_field(symbol.as_str().as_bytes());
                    record.push_field(format_iso(t).as_bytes());
                    for c in columns {
                        number.clear();
                        let v = c.get(i).copied().unwrap_or(f64::NAN);
                        if !v.is_nan() {
                            use std::fmt::Write as _;
                            let _ = write!(number, "{v}");
                        }
                        record.push_field(number.as_bytes());
                    }
                    w.write_byte_record(&record).map_err(|e| fail(&e))?;
                }
            }
            Some(sink) => {
                let mut arrays: Vec<ArrayRef> = vec![
                    Arc::new(StringArray::from(vec![symbol.as_str(); ts.len()])),
                    Arc::new(TimestampNanosecondArray::from(ts.to_vec()).with_timezone("UTC")),
                ];
                for c in columns {
                    let values: Float64Array =
                        c.iter().map(|&v| (!v.is_nan()).then_some(v)).collect();
                    arrays.push(Arc::new(values));
                }
                let batch =
                    RecordBatch::try_new(Arc::clone(&self.schema), arrays).map_err(|e| fail(&e))?;
                match sink {
                    Sink::Parquet(w) => w.write(&batch).map_err(|e| fail(&e))?,
                    Sink::Arrow(w) => w.write(&batch).map_err(|e| fail(&e))?,
                    Sink::Csv(_) => {}
                }
            }
            None => {}
        }
        Ok(())
    }

    /// Completes the file, makes it durable and renames it into place.
    pub fn finish(mut self) -> Result<(), MarketError> {
        let tmp = self.tmp.clone();
        let fail = |e: &dyn std::fmt::Display| MarketError::format(&tmp, e);
        let file = match self.sink.take() {
            Some(Sink::Parquet(w)) => w.into_inner().map_err(|e| fail(&e))?,
            Some(Sink::Arrow(mut w)) => {
                w.finish().map_err(|e| fail(&e))?;
                w.into_inner()
                    .map_err(|e| fail(&e))?
                    .into_inner()
                    .map_err(|e| fail(&e.into_error()))?
            }
            Some(Sink::Csv(w)) => w
                .into_inner()
                .map_err(|e| fail(&e))?
                .into_inner()
                .map_err(|e| fail(&e.into_error()))?,
            None => return Ok(()),
        };
        file.sync_all().map_err(|e| MarketError::io(&tmp, e))?;
        std::fs::rename(&tmp, &self.out).map_err(|e| MarketError::io(&self.out, e))?;
        Ok(())
    }
}

impl Drop for TableWriter {
    fn drop(&mut self) {
        if self.sink.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes bars given in memory (the synthetic universe, say) as a table of
/// `symbol, ts, open, high, low, close, volume, vwap`.
pub fn write_bars<'a>(
    out: &Path,
    format: ExportFormat,
    bars: impl IntoIterator<Item = (&'a Symbol, &'a kiln_core::BarColumns)>,
) -> Result<u64, MarketError> {
    let columns: Vec<String> = BAR_COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    let mut table = TableWriter::create(out, format, &columns)?;
    let mut rows = 0;
    for (symbol, c) in bars {
        table.write(
            symbol,
            &c.ts,
            &[&c.open, &c.high, &c.low, &c.close, &c.volume, &c.vwap],
        )?;
        rows += c.len() as u64;
    }
    table.finish()?;
    Ok(rows)
}
