//! The Arrow IPC and Parquet readers: record batch by record batch (Parquet
//! decodes only the columns kiln reads), each column viewed through a typed
//! accessor, rows decoded from the columns.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, TimeUnit};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use kiln_core::BarIngest;

use super::ingest::{Cell, IngestOptions, Loader, RawRow};
use super::time::{EpochReader, parse_iso};
use super::untrusted;
use super::{COLUMNS, Format, MarketError, col, resolve_columns};

/// Rows per record batch read from Parquet.
const BATCH_ROWS: usize = 64 * 1024;

pub(crate) fn read(
    path: &Path,
    format: Format,
    opts: &IngestOptions,
    loader: &mut Loader<'_, impl BarIngest>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), MarketError> {
    let file = File::open(path).map_err(|e| MarketError::io(path, e))?;
    let bad = |e: &dyn std::fmt::Display| {
        MarketError::format(path, format!("not a readable {format:?} file: {e}"))
    };
    // The readers' own panics on malformed bytes become errors (see
    // `untrusted`).
    let (mut batches, total): (
        Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>>>,
        u64,
    ) = match format {
        Format::Parquet => {
            let builder = untrusted::decode(|| ParquetRecordBatchReaderBuilder::try_new(file))
                .map_err(|e| bad(&e))?
                .map_err(|e| bad(&e))?;
            let total = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
            let names = field_names(builder.schema());
            let cols = resolve_columns(path, &names, &opts.map)?;
            let wanted: Vec<usize> = cols.iter().flatten().copied().collect();
            let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
            let reader = untrusted::decode(|| {
                builder
                    .with_projection(mask)
                    .with_batch_size(BATCH_ROWS)
                    .build()
            })
            .map_err(|e| bad(&e))?
            .map_err(|e| bad(&e))?;
            (Box::new(reader), total)
        }
        Format::Arrow => {
            let mut file = file;
            check_ipc_blocks(&mut file).map_err(|e| bad(&e))?;
            let reader = untrusted::decode(|| {
                arrow_ipc::reader::FileReader::try_new(BufReader::new(file), None)
            })
            .map_err(|e| bad(&e))?
            .map_err(|e| bad(&e))?;
            let total = reader.num_batches() as u64;
            (Box::new(reader), total)
        }
        _ => {
            let reader = untrusted::decode(|| {
                arrow_ipc::reader::StreamReader::try_new(BufReader::new(file), None)
            })
            .map_err(|e| bad(&e))?
            .map_err(|e| bad(&e))?;
            (Box::new(reader), 0)
        }
    };
    load(path, format, opts, loader, &mut batches, total, progress)
}

/// Hands every row of `batches` to `loader`; `path` names them in errors
/// (a file, or what stands for a table held in memory).
pub(crate) fn load(
    path: &Path,
    format: Format,
    opts: &IngestOptions,
    loader: &mut Loader<'_, impl BarIngest>,
    batches: &mut dyn Iterator<Item = Result<RecordBatch, ArrowError>>,
    total: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), MarketError> {
    let mut epoch = EpochReader::new(opts.ts_unit);
    let mut first_row = 0u64;
    for batch_no in 0.. {
        let in_batch = |e: &dyn std::fmt::Display| {
            MarketError::format(path, format!("record batch {batch_no}: {e}"))
        };
        let next = untrusted::decode(|| batches.next());
        let Some(batch) = next.map_err(|e| in_batch(&format!("not readable: {e}")))? else {
            break;
        };
        let batch = batch.map_err(|e| in_batch(&e))?;
        let cols = resolve_columns(path, &field_names(&batch.schema()), &opts.map)?;
        loader.begin_batch(first_row);
        let get = |c: usize| cols[c].map(|i| batch.column(i));
        let column = |c: usize| -> Result<Column<'_>, MarketError> {
            let Some(array) = get(c) else {
                return Ok(Column::Absent);
            };
            Column::new(array, c == col::TS).ok_or_else(|| {
                MarketError::format(
                    path,
                    format!(
                        "column {} has type {}; kiln reads {}",
                        COLUMNS[c],
                        array.data_type(),
                        if c == col::SYMBOL {
                            "strings"
                        } else if c == col::TS {
                            "integers, timestamps, dates or ISO-8601 strings"
                        } else {
                            "floats or integers"
                        }
                    ),
                )
            })
        };
        let columns: Vec<Column<'_>> = (0..COLUMNS.len()).map(column).collect::<Result<_, _>>()?;
        for i in 0..batch.num_rows() {
            let row = decode(&columns, i, &mut epoch);
            loader.row(first_row + i as u64, row)?;
        }
        first_row += batch.num_rows() as u64;
        progress(
            if total > 0 && format == Format::Arrow {
                batch_no as u64 + 1
            } else {
                first_row
            },
            total,
        );
    }
    Ok(())
}

/// arrow-ipc's file reader allocates the size a footer declares, and each
/// block's, before it reads them: a footer or block that ends past the end
/// of the file is refused here first, so a small file cannot make kiln
/// allocate gigabytes (found by `fuzz/`'s ingest_arrow: 2 KB asking for
/// 800 MB). Anything else wrong is left for the reader to report. Leaves
/// `file` at its start.
fn check_ipc_blocks(file: &mut File) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let len = file.seek(SeekFrom::End(0)).map_err(io)?;
    let mut tail = [0u8; 10];
    let has_footer = len >= 10 && {
        file.seek(SeekFrom::End(-10)).map_err(io)?;
        file.read_exact(&mut tail).map_err(io)?;
        &tail[4..] == b"ARROW1"
    };
    if has_footer {
        let footer_len = i64::from(i32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        if footer_len < 0 || footer_len as u64 > len - 10 {
            return Err(format!(
                "the footer declares {footer_len} bytes; the file has {len}"
            ));
        }
        let mut footer = vec![0u8; footer_len as usize];
        file.seek(SeekFrom::End(-10 - footer_len)).map_err(io)?;
        file.read_exact(&mut footer).map_err(io)?;
        if let Ok(footer) = arrow_ipc::root_as_footer(&footer) {
            let kinds = [
                ("dictionary", footer.dictionaries()),
                ("record batch", footer.recordBatches()),
            ];
            for (kind, blocks) in kinds {
                for (i, b) in blocks.iter().flatten().enumerate() {
                    let (at, meta, body) = (b.offset(), b.metaDataLength(), b.bodyLength());
                    let end = i128::from(at) + i128::from(meta) + i128::from(body);
                    if at < 0 || meta < 0 || body < 0 || end > i128::from(len) {
                        return Err(format!(
                            "{kind} {i} declares bytes {at} to {end}; the file has {len}"
                        ));
                    }
                }
            }
        }
    }
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    Ok(())
}

fn field_names(schema: &arrow_schema::Schema) -> Vec<String> {
    schema.fields().iter().map(|f| f.name().clone()).collect()
}

/// A column seen through the accessor its type needs.
enum Column<'a> {
    Absent,
    Utf8(&'a arrow_array::StringArray),
    LargeUtf8(&'a arrow_array::LargeStringArray),
    Utf8View(&'a arrow_array::StringViewArray),
    /// A dictionary of strings: keys resolved to value indices.
    Dictionary {
        keys: &'a dyn Array,
        index: Vec<usize>,
        values: Box<Column<'a>>,
    },
    /// Numbers, as f64 (or as i64 for integer epochs).
    F64(&'a [f64], &'a dyn Array),
    F32(&'a [f32], &'a dyn Array),
    I64(&'a [i64], &'a dyn Array),
    /// Any narrower integer, widened.
    Int(Vec<i64>, &'a dyn Array),
    U64(&'a [u64], &'a dyn Array),
    /// Timestamps already in a unit: values and nanoseconds per unit.
    Time(&'a [i64], i64, &'a dyn Array),
    Date32(&'a [i32], &'a dyn Array),
}

macro_rules! widened {
    ($array:expr, $t:ty) => {
        $array.as_primitive_opt::<$t>().map(|a| {
            Column::Int(
                a.values().iter().map(|&v| i64::from(v)).collect(),
                $array.as_ref(),
            )
        })
    };
}

impl<'a> Column<'a> {
    fn new(array: &'a ArrayRef, ts: bool) -> Option<Self> {
        let any: &'a dyn Array = array.as_ref();
        Some(match array.data_type() {
            DataType::Utf8 => Column::Utf8(array.as_string::<i32>()),
            DataType::LargeUtf8 => Column::LargeUtf8(array.as_string::<i64>()),
            DataType::Utf8View => Column::Utf8View(array.as_string_view()),
            DataType::Dictionary(..) => {
                let dict = array.as_any_dictionary_opt()?;
                let values = Column::new(dict.values(), false)?;
                if !matches!(
                    values,
                    Column::Utf8(_) | Column::LargeUtf8(_) | Column::Utf8View(_)
                ) {
                    return None;
                }
                Column::Dictionary {
                    keys: dict.keys(),
                    index: dict.normalized_keys(),
                    values: Box::new(values),
                }
            }
            DataType::Float64 => Column::F64(array.as_primitive::<Float64Type>().values(), any),
            DataType::Float32 => Column::F32(array.as_primitive::<Float32Type>().values(), any),
            DataType::Int64 => Column::I64(array.as_primitive::<Int64Type>().values(), any),
            DataType::UInt64 => Column::U64(array.as_primitive::<UInt64Type>().values(), any),
            DataType::Int32 => widened!(array, Int32Type)?,
            DataType::Int16 => widened!(array, Int16Type)?,
            DataType::Int8 => widened!(array, Int8Type)?,
            DataType::UInt32 => widened!(array, UInt32Type)?,
            DataType::UInt16 => widened!(array, UInt16Type)?,
            DataType::UInt8 => widened!(array, UInt8Type)?,
            DataType::Timestamp(unit, _) if ts => {
                let (values, nanos) = match unit {
                    TimeUnit::Second => (
                        array
                            .as_primitive::<TimestampSecondType>()
                            .values()
                            .as_ref(),
                        1_000_000_000,
                    ),
                    TimeUnit::Millisecond => (
                        array
                            .as_primitive::<TimestampMillisecondType>()
                            .values()
                            .as_ref(),
                        1_000_000,
                    ),
                    TimeUnit::Microsecond => (
                        array
                            .as_primitive::<TimestampMicrosecondType>()
                            .values()
                            .as_ref(),
                        1_000,
                    ),
                    TimeUnit::Nanosecond => (
                        array
                            .as_primitive::<TimestampNanosecondType>()
                            .values()
                            .as_ref(),
                        1,
                    ),
                };
                Column::Time(values, nanos, any)
            }
            DataType::Date64 if ts => {
                Column::Time(array.as_primitive::<Date64Type>().values(), 1_000_000, any)
            }
            DataType::Date32 if ts => {
                Column::Date32(array.as_primitive::<Date32Type>().values(), any)
            }
            _ => return None,
        })
    }

    /// Number of values (for a dictionary: of its keys).
    fn len(&self) -> usize {
        match self {
            Column::Absent => 0,
            Column::Utf8(a) => a.len(),
            Column::LargeUtf8(a) => a.len(),
            Column::Utf8View(a) => a.len(),
            Column::Dictionary { index, .. } => index.len(),
            Column::F64(v, _) => v.len(),
            Column::F32(v, _) => v.len(),
            Column::I64(v, _) | Column::Time(v, _, _) => v.len(),
            Column::Int(v, _) => v.len(),
            Column::U64(v, _) => v.len(),
            Column::Date32(v, _) => v.len(),
        }
    }

    fn is_null(&self, i: usize) -> bool {
        match self {
            Column::Absent => true,
            Column::Utf8(a) => a.is_null(i),
            Column::LargeUtf8(a) => a.is_null(i),
            Column::Utf8View(a) => a.is_null(i),
            Column::Dictionary { keys, .. } => keys.is_null(i),
            Column::F64(_, a)
            | Column::F32(_, a)
            | Column::I64(_, a)
            | Column::Int(_, a)
            | Column::U64(_, a)
            | Column::Time(_, _, a)
            | Column::Date32(_, a) => a.is_null(i),
        }
    }

    fn text(&self, i: usize) -> Option<&'a str> {
        match self {
            Column::Utf8(a) => Some(a.value(i)),
            Column::LargeUtf8(a) => Some(a.value(i)),
            Column::Utf8View(a) => Some(a.value(i)),
            Column::Dictionary { index, values, .. } => {
                let k = *index.get(i)?;
                (k < values.len()).then(|| values.text(k)).flatten()
            }
            _ => None,
        }
    }

    fn number(&self, i: usize) -> Option<f64> {
        Some(match self {
            Column::F64(v, _) => v[i],
            Column::F32(v, _) => f64::from(v[i]),
            Column::I64(v, _) => v[i] as f64,
            Column::Int(v, _) => v[i] as f64,
            Column::U64(v, _) => v[i] as f64,
            _ => return None,
        })
    }
}

fn cell(columns: &[Column<'_>], c: usize, i: usize) -> Result<f64, Cell> {
    let column = &columns[c];
    if column.is_null(i) {
        return Err((COLUMNS[c], "missing value (null)".to_owned()));
    }
    column
        .number(i)
        .ok_or_else(|| (COLUMNS[c], "is not a number".to_owned()))
}

fn timestamp(column: &Column<'_>, i: usize, epoch: &mut EpochReader) -> Result<i64, String> {
    if column.is_null(i) {
        return Err("missing value (null)".to_owned());
    }
    match column {
        Column::Time(v, nanos, _) => EpochReader::scaled(v[i], *nanos),
        Column::Date32(v, _) => EpochReader::scaled(i64::from(v[i]), 86_400_000_000_000),
        Column::I64(v, _) => epoch.read(v[i]),
        Column::Int(v, _) => epoch.read(v[i]),
        Column::U64(v, _) => {
            epoch.read(i64::try_from(v[i]).map_err(|_| format!("{} is out of range", v[i]))?)
        }
        other => match other.text(i) {
            Some(s) => parse_iso(s),
            None => Err("is not a timestamp".to_owned()),
        },
    }
}

fn decode<'a>(
    columns: &[Column<'a>],
    i: usize,
    epoch: &mut EpochReader,
) -> Result<RawRow<'a>, Cell> {
    let symbol = if columns[col::SYMBOL].is_null(i) {
        return Err(("symbol", "missing value (null)".to_owned()));
    } else {
        columns[col::SYMBOL]
            .text(i)
            .ok_or_else(|| ("symbol", "is not a string".to_owned()))?
    };
    let ts = timestamp(&columns[col::TS], i, epoch).map_err(|r| ("ts", r))?;
    let vwap = if columns[col::VWAP].is_null(i) {
        None
    } else {
        Some(cell(columns, col::VWAP, i)?)
    };
    Ok(RawRow {
        symbol,
        ts,
        open: cell(columns, 2, i)?,
        high: cell(columns, 3, i)?,
        low: cell(columns, 4, i)?,
        close: cell(columns, 5, i)?,
        volume: cell(columns, 6, i)?,
        vwap,
    })
}
