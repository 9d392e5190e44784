//! CSV input, plain or gzip (told by the first bytes, as `kiln ingest`
//! does), ingested into a fresh store; accepted bars equal what the `csv`
//! crate read directly makes of the file (see `kiln_fuzz`).
#![no_main]

use std::io::Read;

use kiln::store::Bar;
use kiln_fuzz::{check_ingest, columns, date_ns};
use libfuzzer_sys::fuzz_target;

/// The rows as the reference reads them; `None` when it cannot read one.
fn reference(bytes: &[u8]) -> Option<Vec<(String, Bar)>> {
    let text = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .ok()?;
        out
    } else {
        bytes.to_vec()
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(text.as_slice());
    let header: Vec<String> = reader
        .byte_headers()
        .ok()?
        .iter()
        .map(|h| {
            String::from_utf8_lossy(h)
                .trim_start_matches('\u{feff}')
                .to_owned()
        })
        .collect();
    let cols = columns(&header)?;
    let mut rows = Vec::new();
    for record in reader.byte_records() {
        let record = record.ok()?;
        let field = |c: usize| -> Option<&str> { std::str::from_utf8(record.get(cols[c]?)?).ok() };
        let number = |c: usize| -> Option<f64> { field(c)?.trim().parse().ok() };
        let ts_text = field(1)?.trim();
        let ts = match ts_text.parse::<i64>() {
            Ok(ns) if !ts_text.starts_with('+') => ns,
            _ => date_ns(ts_text)?,
        };
        let vwap = match cols[7] {
            None => f64::NAN,
            Some(_) if field(7)?.trim().is_empty() => f64::NAN,
            Some(_) => number(7)?,
        };
        let bar = Bar {
            ts,
            open: number(2)?,
            high: number(3)?,
            low: number(4)?,
            close: number(5)?,
            volume: number(6)?,
            vwap,
        };
        rows.push((field(0)?.to_owned(), bar));
    }
    Some(rows)
}

fuzz_target!(|data: &[u8]| {
    check_ingest(data, "csv", || reference(data));
});
