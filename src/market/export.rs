//! Export of stored bars, or of stored feature series, to Parquet, Arrow IPC
//! or CSV in long format: `symbol, ts`, then one float column per bar field
//! or per feature output (named by its canonical label, `macd(12,26,9).signal`).
//! `ts` is a UTC nanosecond timestamp (ISO-8601 text in CSV); a NaN is a null
//! (an empty CSV field). The file is written beside its destination and
//! renamed into place when complete, so a failed export leaves no half file.

use kiln_core::prelude::*;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use kiln_core::{BarStore, ResultStore, SeriesKey, Symbol};
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
        let bars = store
            .bars(symbol, ..)?
            .ok_or_else(|| MarketError::Options(format!("{symbol} has no bars in this store")))?;
        let ts = bars.ts();
        if opts.features.is_empty() {
            let values = [
                bars.open(),
                bars.high(),
                bars.low(),
                bars.close(),
                bars.volume(),
                bars.vwap(),
            ];
            table.write(symbol, ts, &values)?;
        } else {
            let mut views = Vec::with_capacity(columns.len());
            for label in &columns {
                let key = SeriesKey::new(symbol.clone(), label.clone())?;
                let view = store.series(&key)?.ok_or_else(|| {
                    MarketError::Options(format!(
                        "{symbol} has no stored {label}; compute it first"
                    ))
                })?;
                let version = bars.version();
                if !view.is_current(&version) {
                    return Err(MarketError::Options(format!(
                        "{symbol} {label} is stale: computed from {} bars up to {}, but the stored bars \
                         ({} up to {}) are not those; recompute it first",
                        view.bar_count(),
                        format_iso(view.last_ts()),
                        version.bars,
                        format_iso(version.last_ts)
                    )));
                }
                views.push(view);
            }
            // Each column assembled once (in place when it is one chunk).
            let assembled: Vec<_> = views.iter().map(|v| v.values()).collect();
            let values: Vec<&[f64]> = assembled.iter().map(|v| &v[..]).collect();
            table.write(symbol, ts, &values)?;
        }
        rows += ts.len() as u64;
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
        let mut fields = vec![
            Field::new("symbol", DataType::Utf8, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
        ];
        fields.extend(
            columns
                .iter()
                .map(|c| Field::new(c, DataType::Float64, true)),
        );
        let schema = Arc::new(Schema::new(fields));
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
