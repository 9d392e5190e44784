//! Ingest validation: one test per error class. Each asserts that the message
//! names the file, the row and the column, and that the store is exactly as
//! it was before (the bad file is the second file of the ingest, so the good
//! first one must not land either).

use kiln::store::prelude::*;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use kiln::market::{IngestOptions, MarketError, OnError, ingest_files};
use kiln::store::{DataVersion, Store, StoreConfig, Symbol};

const HEADER: &str = "symbol,ts,open,high,low,close,volume\n";
const GOOD: &str = "AAA,2020-01-02,10,11,9,10.5,100\nAAA,2020-01-03,10.5,12,10,11,200\n";

struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
    before: Vec<(Symbol, DataVersion)>,
}

impl Fixture {
    /// A store holding one symbol already.
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path().join("store"), StoreConfig::default()).expect("open");
        let seed = write(
            dir.path(),
            "seed.csv",
            &format!("{HEADER}OLD,2019-12-31,1,2,0.5,1.5,10\n"),
        );
        ingest_files(&store, &[seed], &IngestOptions::default(), &mut |_| {}).expect("seed");
        let before = store.bar_symbols().expect("symbols");
        Fixture { dir, store, before }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Ingests a good file then `bad`; returns the error, checking nothing changed.
    fn reject(&self, bad: PathBuf) -> String {
        let good = write(self.dir.path(), "good.csv", &format!("{HEADER}{GOOD}"));
        let e = ingest_files(
            &self.store,
            &[good, bad],
            &IngestOptions::default(),
            &mut |_| {},
        )
        .expect_err("the bad file must be rejected");
        assert_eq!(
            self.store.bar_symbols().expect("symbols"),
            self.before,
            "store changed: {e}"
        );
        e.to_string()
    }

    /// A CSV body after the header; returns the error message.
    fn reject_csv(&self, rows: &str) -> String {
        let bad = write(self.dir.path(), "bad.csv", &format!("{HEADER}{GOOD}{rows}"));
        self.reject(bad)
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

/// Asserts the message names bad.csv, `line` and `column`, and says `what`.
fn assert_names(msg: &str, line: u64, column: &str, what: &str) {
    assert!(msg.contains("bad.csv"), "no file: {msg}");
    assert!(
        msg.contains(&format!("line {line},")),
        "no line {line}: {msg}"
    );
    assert!(
        msg.contains(&format!("column {column}:")),
        "no column {column}: {msg}"
    );
    assert!(msg.contains(what), "no {what:?}: {msg}");
    assert!(msg.contains("nothing was ingested"), "{msg}");
}

#[test]
fn a_missing_column_is_named_with_the_columns_found() {
    let f = Fixture::new();
    let bad = write(
        f.dir.path(),
        "bad.csv",
        "symbol,ts,open,high,low,close\nA,2020-01-02,1,1,1,1\n",
    );
    let msg = f.reject(bad);
    assert!(
        msg.contains("bad.csv") && msg.contains("no column volume") && msg.contains("--map"),
        "{msg}"
    );
}

#[test]
fn an_unparsable_number_is_rejected() {
    let f = Fixture::new();
    assert_names(
        &f.reject_csv("AAA,2020-01-06,10,1x,9,10,5\n"),
        4,
        "high",
        "\"1x\" is not a number",
    );
}

#[test]
fn a_missing_value_is_rejected() {
    let f = Fixture::new();
    assert_names(
        &f.reject_csv("AAA,2020-01-06,10,11,9,,5\n"),
        4,
        "close",
        "missing value",
    );
}

#[test]
fn an_unparsable_timestamp_is_rejected() {
    let f = Fixture::new();
    assert_names(
        &f.reject_csv("AAA,2020-02-30,10,11,9,10,5\n"),
        4,
        "ts",
        "not a calendar date",
    );
    assert_names(
        &f.reject_csv("AAA,yesterday,10,11,9,10,5\n"),
        4,
        "ts",
        "is not a timestamp",
    );
}

#[test]
fn nan_and_infinity_are_rejected() {
    let f = Fixture::new();
    assert_names(
        &f.reject_csv("AAA,2020-01-06,NaN,11,9,10,5\n"),
        4,
        "open",
        "not a finite number",
    );
    assert_names(
        &f.reject_csv("AAA,2020-01-06,10,11,9,10,inf\n"),
        4,
        "volume",
        "not a finite number",
    );
}

#[test]
fn a_price_at_or_below_zero_is_rejected() {
    let f = Fixture::new();
    assert_names(
        &f.reject_csv("AAA,2020-01-06,10,11,0,10,5\n"),
        4,
        "low",
        "price 0 must be positive",
    );
}

#[test]
fn high_below_open_or_close_is_rejected() {
    let f = Fixture::new();
    assert_names(
        &f.reject_csv("AAA,2020-01-06,10,10.5,9,11,5\n"),
        4,
        "high",
        "below max(open, close) = 11",
    );
}

#[test]
fn low_above_open_or_close_is_rejected() {
    let f = Fixture::new();
    assert_names(
        &f.reject_csv("AAA,2020-01-06,10,12,9.5,9,5\n"),
        4,
        "low",
        "above min(open, close) = 9",
    );
}

#[test]
fn negative_volume_is_rejected() {
    let f = Fixture::new();
    assert_names(
        &f.reject_csv("AAA,2020-01-06,10,11,9,10,-1\n"),
        4,
        "volume",
        "negative",
    );
}

#[test]
fn an_invalid_symbol_is_rejected() {
    let f = Fixture::new();
    assert_names(
        &f.reject_csv("../x,2020-01-06,10,11,9,10,5\n"),
        4,
        "symbol",
        "'/'",
    );
    assert_names(
        &f.reject_csv(&format!("{},2020-01-06,10,11,9,10,5\n", "A".repeat(33))),
        4,
        "symbol",
        "33 bytes",
    );
}

#[test]
fn a_duplicate_with_different_values_names_both_rows() {
    let f = Fixture::new();
    let msg = f.reject_csv("AAA,2020-01-02,10,11,9,10.75,100\n");
    assert_names(
        &msg,
        4,
        "ts",
        "appears again with different values (first at line 2)",
    );
    // The same bar twice is fine.
    let dup = write(
        f.dir.path(),
        "dup.csv",
        &format!("{HEADER}{GOOD}AAA,2020-01-02,10,11,9,10.5,100\n"),
    );
    let s = ingest_files(&f.store, &[dup], &IngestOptions::default(), &mut |_| {})
        .expect("identical duplicate");
    assert_eq!(s.rows, 3);
    let aaa = f
        .store
        .bars(&Symbol::new("AAA").expect("sym"), ..)
        .expect("read")
        .expect("bars");
    assert_eq!(aaa.len(), 2);
}

#[test]
fn parquet_errors_name_the_batch_and_row() {
    let f = Fixture::new();
    let schema = Arc::new(Schema::new(vec![
        Field::new("symbol", DataType::Utf8, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("open", DataType::Float64, false),
        Field::new("high", DataType::Float64, false),
        Field::new("low", DataType::Float64, false),
        Field::new("close", DataType::Float64, false),
        Field::new("volume", DataType::Float64, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["P", "P", "P"])),
        Arc::new(Int64Array::from(vec![
            1_600_000_000,
            1_600_086_400,
            1_600_172_800,
        ])),
        Arc::new(Float64Array::from(vec![1.0, 1.0, 1.0])),
        Arc::new(Float64Array::from(vec![2.0, 2.0, 2.0])),
        Arc::new(Float64Array::from(vec![0.5, 0.5, 0.5])),
        Arc::new(Float64Array::from(vec![1.5, f64::NAN, 1.5])),
        Arc::new(Float64Array::from(vec![Some(1.0), Some(1.0), None])),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).expect("batch");
    let path = f.path("bad.parquet");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(File::create(&path).expect("create"), schema, None)
            .expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    let msg = f.reject(path.clone());
    assert!(
        msg.contains(
            "bad.parquet: row 1 (batch 0, row 1), column close: NaN is not a finite number"
        ),
        "{msg}"
    );

    // Skipping reports both bad rows (the NaN and the null) and keeps the good one.
    let report = f.path("report.csv");
    let opts = IngestOptions {
        on_error: OnError::Skip,
        report: Some(report.clone()),
        ..IngestOptions::default()
    };
    let s = ingest_files(&f.store, &[path], &opts, &mut |_| {}).expect("skip");
    assert_eq!((s.rows, s.rejected), (1, 2));
    let text = std::fs::read_to_string(&report).expect("report");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "file,location,column,reason");
    assert!(
        lines[1].ends_with("\"row 1 (batch 0, row 1)\",close,NaN is not a finite number"),
        "{text}"
    );
    assert!(
        lines[2].ends_with("\"row 2 (batch 0, row 2)\",volume,missing value (null)"),
        "{text}"
    );
    let p = f
        .store
        .bars(&Symbol::new("P").expect("sym"), ..)
        .expect("read")
        .expect("bars");
    assert_eq!(p.ts(), &[1_600_000_000_000_000_000]);
}

#[test]
fn skip_needs_a_report_and_unknown_formats_are_named() {
    let f = Fixture::new();
    let opts = IngestOptions {
        on_error: OnError::Skip,
        ..IngestOptions::default()
    };
    let good = write(f.dir.path(), "g.csv", &format!("{HEADER}{GOOD}"));
    let e = ingest_files(&f.store, &[good], &opts, &mut |_| {}).expect_err("no report");
    assert!(matches!(e, MarketError::Options(_)), "{e}");
    let odd = write(f.dir.path(), "data.bin", "hello");
    let e = f.reject(odd).to_string();
    assert!(e.contains("data.bin") && e.contains("--format"), "{e}");
    let missing = f.path("nope.csv");
    let e = f.reject(missing).to_string();
    assert!(e.contains("nope.csv"), "{e}");
    let not_parquet = write(f.dir.path(), "fake.parquet", "symbol,ts\n");
    let e = f.reject(not_parquet).to_string();
    assert!(e.contains("fake.parquet") && e.contains("Parquet"), "{e}");
}

#[test]
fn duplicates_far_apart_in_one_file_name_both_lines() {
    let f = Fixture::new();
    // With a 2-row buffer the two AAA 2020-01-02 rows land in different
    // staged pieces; the conflict is found at commit and still named.
    let rows = format!(
        "{HEADER}{GOOD}BBB,2020-01-02,5,6,4,5,1\nBBB,2020-01-03,5,6,4,5,1\nAAA,2020-01-02,10,11,9,10.75,100\n"
    );
    let bad = write(f.dir.path(), "bad.csv", &rows);
    let opts = IngestOptions {
        buffer_rows: 2,
        ..IngestOptions::default()
    };
    let e = ingest_files(&f.store, std::slice::from_ref(&bad), &opts, &mut |_| {})
        .expect_err("conflict")
        .to_string();
    assert_names(
        &e,
        6,
        "ts",
        "appears again with different values (first at line 2)",
    );
    assert_eq!(f.store.bar_symbols().expect("symbols"), f.before);

    let report = f.path("report.csv");
    let skip = IngestOptions {
        buffer_rows: 2,
        on_error: OnError::Skip,
        report: Some(report.clone()),
        ..IngestOptions::default()
    };
    let s = ingest_files(&f.store, &[bad], &skip, &mut |_| {}).expect("skip");
    assert_eq!((s.rows, s.rejected), (4, 1));
    let text = std::fs::read_to_string(&report).expect("report");
    assert!(
        text.contains("line 6,ts,AAA at 2020-01-02T00:00:00Z appears again"),
        "{text}"
    );
    let aaa = f
        .store
        .bars(&Symbol::new("AAA").expect("sym"), ..)
        .expect("read")
        .expect("bars");
    assert_eq!(aaa.close(), &[10.5, 11.0], "the first row is kept");

    // The same file with the default buffer finds the duplicate while
    // reading, and counts it the same way.
    let again = f.path("again.csv");
    std::fs::write(&again, &rows).expect("write");
    let fresh = tempfile::tempdir().expect("dir");
    let store = Store::open(fresh.path(), StoreConfig::default()).expect("open");
    let default_skip = IngestOptions {
        on_error: OnError::Skip,
        report: Some(f.path("report2.csv")),
        ..IngestOptions::default()
    };
    let s = ingest_files(&store, &[again], &default_skip, &mut |_| {}).expect("skip");
    assert_eq!((s.rows, s.rejected), (4, 1));
}

/// Files the fuzz targets found (`fuzz/`, ingest_arrow and ingest_parquet):
/// arrow-ipc 60 and parquet 60 panic on the first two, and arrow-ipc
/// allocates the 800 MB the third's footer declares for a record batch
/// (checked before the reader now). Each ingest is an error that names the
/// file and what is wrong, and changes nothing.
#[test]
fn malformed_arrow_and_parquet_files_are_errors_not_panics() {
    let f = Fixture::new();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/malformed");
    for (name, batch, says) in [
        (
            "buffer-beyond-body.arrow",
            "record batch 1: not readable",
            "cannot exceed the existing length",
        ),
        (
            "negative-column-offset.parquet",
            "record batch 0: not readable",
            "should not be negative",
        ),
        (
            "block-beyond-end.arrow",
            "not a readable Arrow file",
            "record batch 0 declares bytes 480 to 838862320; the file has 2054",
        ),
    ] {
        let bad = f.path(name);
        std::fs::copy(fixtures.join(name), &bad).expect("copy the fixture");
        let msg = f.reject(bad);
        for part in [name, batch, says] {
            assert!(msg.contains(part), "{name}: {msg:?} lacks {part:?}");
        }
    }
}
