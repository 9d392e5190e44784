//! The CSV reader: plain or gzip (told by the magic bytes), a header row,
//! fields decoded without copying (`csv::ByteRecord`), one row at a time.

use std::cell::Cell as Counter;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use kiln_core::BarIngest;

use super::ingest::{Cell, IngestOptions, Loader, RawRow};
use super::time::{EpochReader, parse_iso};
use super::{COLUMNS, MarketError, col, resolve_columns};

/// Counts the bytes read from the file (before decompression), for progress.
struct Counting<R> {
    inner: R,
    read: Rc<Counter<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// Rows between progress reports.
const PROGRESS_ROWS: u64 = 1 << 16;

pub(crate) fn read(
    path: &Path,
    opts: &IngestOptions,
    loader: &mut Loader<'_, impl BarIngest>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), MarketError> {
    let file = File::open(path).map_err(|e| MarketError::io(path, e))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let read = Rc::new(Counter::new(0));
    let mut buffered = BufReader::with_capacity(
        1 << 20,
        Counting {
            inner: file,
            read: Rc::clone(&read),
        },
    );
    let gzip = buffered
        .fill_buf()
        .map_err(|e| MarketError::io(path, e))?
        .starts_with(&[0x1f, 0x8b]);
    let input: Box<dyn Read> = if gzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(input);
    let header: Vec<String> = reader
        .byte_headers()
        .map_err(|e| MarketError::format(path, e))?
        .iter()
        .map(|h| {
            String::from_utf8_lossy(h)
                .trim_start_matches('\u{feff}')
                .to_owned()
        })
        .collect();
    let cols = resolve_columns(path, &header, &opts.map)?;
    let mut epoch = EpochReader::new(opts.ts_unit);
    let mut record = csv::ByteRecord::new();
    let mut n = 0u64;
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                if e.is_io_error() {
                    return Err(MarketError::format(path, format!("line {line}: {e}")));
                }
                loader.invalid(line, ("(row)", e.to_string()))?;
                continue;
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        let row = decode(&record, &cols, &mut epoch);
        loader.row(line, row)?;
        n += 1;
        if n.is_multiple_of(PROGRESS_ROWS) {
            progress(read.get(), total);
        }
    }
    progress(read.get(), total);
    Ok(())
}

fn field<'r>(
    record: &'r csv::ByteRecord,
    cols: &[Option<usize>; 8],
    c: usize,
) -> Result<&'r [u8], Cell> {
    let i = cols[c].unwrap_or(usize::MAX);
    record
        .get(i)
        .ok_or_else(|| (COLUMNS[c], "missing: the row has too few fields".to_owned()))
}

fn number(record: &csv::ByteRecord, cols: &[Option<usize>; 8], c: usize) -> Result<f64, Cell> {
    let raw = field(record, cols, c)?;
    let text = std::str::from_utf8(raw)
        .map_err(|_| (COLUMNS[c], "is not valid UTF-8".to_owned()))?
        .trim();
    if text.is_empty() {
        return Err((COLUMNS[c], "missing value".to_owned()));
    }
    text.parse::<f64>()
        .map_err(|_| (COLUMNS[c], format!("{text:?} is not a number")))
}

fn decode<'r>(
    record: &'r csv::ByteRecord,
    cols: &[Option<usize>; 8],
    epoch: &mut EpochReader,
) -> Result<RawRow<'r>, Cell> {
    let symbol = std::str::from_utf8(field(record, cols, col::SYMBOL)?)
        .map_err(|_| ("symbol", "is not valid UTF-8".to_owned()))?;
    let ts_raw = std::str::from_utf8(field(record, cols, col::TS)?)
        .map_err(|_| ("ts", "is not valid UTF-8".to_owned()))?
        .trim();
    let digits = ts_raw.strip_prefix('-').unwrap_or(ts_raw);
    let integer = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    let ts = if integer {
        let v: i64 = ts_raw
            .parse()
            .map_err(|_| ("ts", format!("{ts_raw:?} is not a timestamp")))?;
        epoch.read(v)
    } else {
        parse_iso(ts_raw)
    }
    .map_err(|reason| ("ts", reason))?;
    let vwap = match cols[col::VWAP] {
        Some(i) if record.get(i).is_some_and(|f| !f.trim_ascii().is_empty()) => {
            Some(number(record, cols, col::VWAP)?)
        }
        _ => None,
    };
    Ok(RawRow {
        symbol,
        ts,
        open: number(record, cols, 2)?,
        high: number(record, cols, 3)?,
        low: number(record, cols, 4)?,
        close: number(record, cols, 5)?,
        volume: number(record, cols, 6)?,
        vwap,
    })
}
