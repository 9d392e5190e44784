//! Market data round trips: write → ingest → read back → export → read with
//! the arrow-rs readers, per format; files in the shapes pyarrow and polars
//! write (int64 epochs, dictionary symbols, int volumes); the bundled real
//! sample; and ingest independence from chunking and file order.

mod common;

use common::{SAMPLE, sample_options};
use kiln::store::prelude::*;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, DictionaryArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampNanosecondArray, cast::AsArray, types::Int32Type,
};
use arrow_schema::{DataType, Field, Schema};
use kiln::market::export::{ExportFormat, write_bars};
use kiln::market::{ExportOptions, IngestOptions, ingest_files, synth};
use kiln::store::{BarColumns, FrameWrite, Store, StoreConfig, Symbol};
use proptest::prelude::*;

fn open(dir: &Path) -> Store {
    Store::open(dir, StoreConfig::default()).expect("open store")
}

fn ingest(store: &Store, files: &[PathBuf]) -> kiln::market::IngestSummary {
    ingest_files(store, files, &IngestOptions::default(), &mut |_| {}).expect("ingest")
}

fn assert_same_bars(store: &Store, universe: &[(Symbol, BarColumns)]) {
    let symbols: Vec<Symbol> = universe.iter().map(|(s, _)| s.clone()).collect();
    let stored: Vec<Symbol> = store
        .bar_symbols()
        .expect("symbols")
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(stored, symbols);
    for (symbol, want) in universe {
        let got = store
            .bars(symbol, ..)
            .expect("read")
            .expect("bars")
            .to_columns();
        assert_eq!(got.len(), want.len(), "{symbol}");
        for i in 0..want.len() {
            assert!(
                got.bar(i).same_as(&want.bar(i)),
                "{symbol} bar {i}: {:?} vs {:?}",
                got.bar(i),
                want.bar(i)
            );
        }
    }
}

/// Every batch of an exported Parquet or Arrow file, read by arrow-rs.
fn read_batches(path: &Path, format: ExportFormat) -> Vec<RecordBatch> {
    let file = File::open(path).expect("open export");
    match format {
        ExportFormat::Parquet => {
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .expect("parquet")
                .build()
                .expect("reader")
                .collect::<Result<_, _>>()
                .expect("batches")
        }
        ExportFormat::Arrow => arrow_ipc::reader::FileReader::try_new(file, None)
            .expect("ipc")
            .collect::<Result<_, _>>()
            .expect("batches"),
        ExportFormat::Csv => unreachable!("CSV is read back by ingesting it"),
    }
}

/// Compares an exported table with the universe, column by column.
fn assert_export_matches(batches: &[RecordBatch], universe: &[(Symbol, BarColumns)]) {
    let mut row = 0usize;
    let flat: Vec<(&Symbol, &BarColumns, usize)> = universe
        .iter()
        .flat_map(|(s, c)| (0..c.len()).map(move |i| (s, c, i)))
        .collect();
    for batch in batches {
        let names: Vec<&str> = batch
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(
            names,
            [
                "symbol", "ts", "open", "high", "low", "close", "volume", "vwap"
            ]
        );
        let symbol = batch.column(0).as_string::<i32>();
        let ts = batch
            .column(1)
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .expect("ts is a ns timestamp");
        let floats: Vec<&Float64Array> = (2..8)
            .map(|c| {
                batch
                    .column(c)
                    .as_primitive::<arrow_array::types::Float64Type>()
            })
            .collect();
        for i in 0..batch.num_rows() {
            let (s, c, k) = flat[row];
            assert_eq!(symbol.value(i), s.as_str());
            assert_eq!(ts.value(i), c.ts[k]);
            let want = [c.open[k], c.high[k], c.low[k], c.close[k], c.volume[k]];
            for (f, w) in floats.iter().zip(want) {
                assert_eq!(f.value(i).to_bits(), w.to_bits());
            }
            assert!(floats[5].is_null(i), "a NaN vwap exports as null");
            row += 1;
        }
    }
    assert_eq!(row, flat.len());
}

fn gzip(src: &Path, dst: &Path) {
    let mut enc = flate2::write::GzEncoder::new(
        File::create(dst).expect("create"),
        flate2::Compression::fast(),
    );
    std::io::copy(&mut File::open(src).expect("open"), &mut enc).expect("gzip");
    enc.finish().expect("finish");
}

fn write_stream(dst: &Path, universe: &[(Symbol, BarColumns)]) {
    // Via the Arrow file writer's table, re-framed as an IPC stream.
    let tmp = dst.with_extension("arrow");
    write_bars(
        &tmp,
        ExportFormat::Arrow,
        universe.iter().map(|(s, c)| (s, c)),
    )
    .expect("write");
    let batches = read_batches(&tmp, ExportFormat::Arrow);
    let mut w = arrow_ipc::writer::StreamWriter::try_new(
        File::create(dst).expect("create"),
        &batches[0].schema(),
    )
    .expect("stream writer");
    for b in &batches {
        w.write(b).expect("write batch");
    }
    w.finish().expect("finish");
}

#[test]
fn every_format_round_trips_bit_for_bit() {
    let dir = tempfile::tempdir().expect("dir");
    let universe = synth::universe(7, 300, 3);
    let bars = || universe.iter().map(|(s, c)| (s, c));
    let inputs = {
        let csv = dir.path().join("in.csv");
        write_bars(&csv, ExportFormat::Csv, bars()).expect("csv");
        let gz = dir.path().join("in.csv.gz");
        gzip(&csv, &gz);
        let arrow = dir.path().join("in.arrow");
        write_bars(&arrow, ExportFormat::Arrow, bars()).expect("arrow");
        let stream = dir.path().join("in.arrows");
        write_stream(&stream, &universe);
        let parquet = dir.path().join("in.parquet");
        write_bars(&parquet, ExportFormat::Parquet, bars()).expect("parquet");
        [csv, gz, arrow, stream, parquet]
    };
    for (n, input) in inputs.iter().enumerate() {
        let store = open(&dir.path().join(format!("store-{n}")));
        let s = ingest(&store, std::slice::from_ref(input));
        assert_eq!(
            (s.rows, s.symbols, s.rejected),
            (2100, 7, 0),
            "{}",
            input.display()
        );
        assert_same_bars(&store, &universe);
        for format in [
            ExportFormat::Parquet,
            ExportFormat::Arrow,
            ExportFormat::Csv,
        ] {
            let out = dir.path().join(format!("out-{n}.{format:?}"));
            let opts = ExportOptions {
                format,
                symbols: None,
                features: Vec::new(),
            };
            let e = kiln::market::export(&store, &out, &opts, &mut |_, _| {}).expect("export");
            assert_eq!((e.rows, e.symbols), (2100, 7));
            if format == ExportFormat::Csv {
                let again = open(&dir.path().join(format!("again-{n}")));
                let opts = IngestOptions {
                    format: Some(kiln::market::Format::Csv),
                    ..IngestOptions::default()
                };
                ingest_files(&again, &[out], &opts, &mut |_| {}).expect("re-ingest the CSV export");
                assert_same_bars(&again, &universe);
            } else {
                assert_export_matches(&read_batches(&out, format), &universe);
            }
        }
    }
}

#[test]
fn pyarrow_shaped_parquet_with_epochs_dictionaries_and_int_volume_reads() {
    let dir = tempfile::tempdir().expect("dir");
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "Ticker",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            false,
        ),
        Field::new("TS", DataType::Int64, false),
        Field::new("open", DataType::Float64, false),
        Field::new("high", DataType::Float64, false),
        Field::new("low", DataType::Float64, false),
        Field::new("close", DataType::Float64, false),
        Field::new("volume", DataType::Int64, false),
        Field::new("ignored", DataType::Utf8, true),
    ]));
    let symbols: DictionaryArray<Int32Type> = vec!["B", "A", "B"].into_iter().collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(symbols),
        Arc::new(Int64Array::from(vec![86_400, 0, 0])),
        Arc::new(Float64Array::from(vec![2.0, 1.0, 3.0])),
        Arc::new(Float64Array::from(vec![2.5, 1.5, 3.5])),
        Arc::new(Float64Array::from(vec![1.5, 0.5, 2.5])),
        Arc::new(Float64Array::from(vec![2.25, 1.25, 3.25])),
        Arc::new(Int64Array::from(vec![10, 20, 30])),
        Arc::new(StringArray::from(vec![Some("x"), None, Some("z")])),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).expect("batch");
    let path = dir.path().join("py.parquet");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(File::create(&path).expect("create"), schema, None)
            .expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");

    let store = open(&dir.path().join("store"));
    let opts = IngestOptions {
        map: kiln::market::parse_map("ticker=symbol").expect("map"),
        ..IngestOptions::default()
    };
    ingest_files(&store, &[path], &opts, &mut |_| {}).expect("ingest");
    let b = store
        .bars(&Symbol::new("B").expect("sym"), ..)
        .expect("read")
        .expect("bars");
    // Sorted by time although the file is not; epoch seconds become ns.
    assert_eq!(b.ts(), &[0, 86_400_000_000_000]);
    assert_eq!(b.close(), &[3.25, 2.25]);
    assert_eq!(b.volume(), &[30.0, 10.0]);
    assert!(b.vwap().iter().all(|v| v.is_nan()));
}

#[test]
fn the_bundled_real_sample_ingests_with_its_values() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path());
    let s = ingest_files(&store, &[SAMPLE.into()], &sample_options(), &mut |_| {}).expect("ingest");
    assert_eq!((s.rows, s.symbols, s.rejected), (12_154, 5, 0));
    let aapl = store
        .bars(&Symbol::new("AAPL").expect("sym"), ..)
        .expect("read")
        .expect("bars");
    assert_eq!(aapl.len(), 3270);
    // The file's first AAPL row: 2000-03-01,118.56,132.06,118.5,130.31,9616100.
    assert_eq!(aapl.ts()[0], 951_868_800 * 1_000_000_000);
    assert_eq!(
        [
            aapl.open()[0],
            aapl.high()[0],
            aapl.low()[0],
            aapl.close()[0],
            aapl.volume()[0]
        ],
        [118.56, 132.06, 118.5, 130.31, 9_616_100.0]
    );
    let fb = store
        .data_version(&Symbol::new("FB").expect("sym"))
        .expect("v")
        .expect("FB");
    assert_eq!(fb.bars, 196);
    assert!(store.check().expect("check").problems.is_empty());
}

/// Writes `rows` (indices into the flattened universe) as one CSV file.
fn write_rows(path: &Path, universe: &[(Symbol, BarColumns)], rows: &[(usize, usize)]) {
    let mut w = csv::Writer::from_path(path).expect("csv");
    w.write_record(["symbol", "ts", "open", "high", "low", "close", "volume"])
        .expect("header");
    for &(s, i) in rows {
        let (sym, c) = &universe[s];
        let b = c.bar(i);
        w.write_record([
            sym.as_str().to_owned(),
            kiln::market::format_iso(b.ts),
            b.open.to_string(),
            b.high.to_string(),
            b.low.to_string(),
            b.close.to_string(),
            b.volume.to_string(),
        ])
        .expect("row");
    }
    w.flush().expect("flush");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// The same bars, cut into files at random, shuffled, ingested in random
    /// file order, one call or several, with tiny buffers (so rows are staged
    /// in many pieces), give the same stored bars and data versions.
    #[test]
    fn chunking_and_order_do_not_change_what_is_stored(
        seed in 0u64..1000,
        files in 1usize..5,
        calls in 1usize..4,
        buffer_rows in prop_oneof![Just(7usize), Just(64), Just(1 << 20)],
    ) {
        let universe = synth::universe(4, 120, seed);
        let dir = tempfile::tempdir().expect("dir");
        let reference = open(&dir.path().join("reference"));
        let all = dir.path().join("all.csv");
        let every: Vec<(usize, usize)> = (0..4).flat_map(|s| (0..120).map(move |i| (s, i))).collect();
        write_rows(&all, &universe, &every);
        ingest(&reference, &[all]);

        // A seeded shuffle and cut.
        let mut rows = every.clone();
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for i in (1..rows.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            rows.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let per = rows.len().div_ceil(files);
        let mut paths: Vec<PathBuf> = rows
            .chunks(per)
            .enumerate()
            .map(|(k, chunk)| {
                let p = dir.path().join(format!("part-{k}.csv"));
                write_rows(&p, &universe, chunk);
                p
            })
            .collect();
        paths.reverse();
        let store = open(&dir.path().join("store"));
        let opts = IngestOptions { buffer_rows, ..IngestOptions::default() };
        for group in paths.chunks(paths.len().div_ceil(calls)) {
            ingest_files(&store, group, &opts, &mut |_| {}).expect("ingest");
        }
        assert_same_bars(&store, &universe);
        prop_assert_eq!(store.bar_symbols().expect("v"), reference.bar_symbols().expect("v"));
        prop_assert!(store.check().expect("check").problems.is_empty());
    }
}

#[test]
fn stored_feature_series_export_by_label_and_stale_ones_are_refused() {
    use kiln::store::{JobQueue, NewJob, Series, SeriesKey};
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir.path().join("store"));
    let universe = synth::universe(2, 50, 11);
    let input = dir.path().join("in.parquet");
    write_bars(
        &input,
        ExportFormat::Parquet,
        universe.iter().map(|(s, c)| (s, c)),
    )
    .expect("write");
    ingest(&store, &[input]);

    let specs = kiln::features::spec::parse_list("sma(3),macd(2,3,2)").expect("specs");
    let labels: Vec<String> = specs.iter().flat_map(|s| s.output_labels()).collect();
    assert_eq!(
        labels,
        [
            "sma(3)",
            "macd(2,3,2).macd",
            "macd(2,3,2).signal",
            "macd(2,3,2).hist"
        ]
    );
    let mut results = Vec::new();
    for (k, (symbol, c)) in universe.iter().enumerate() {
        for (j, label) in labels.iter().enumerate() {
            let values: Vec<f64> = (0..c.len())
                .map(|i| {
                    if i == 0 {
                        f64::NAN
                    } else {
                        (k * 1000 + j * 100 + i) as f64
                    }
                })
                .collect();
            let series = Series {
                bar_count: c.len() as u64,
                last_ts: c.ts[c.len() - 1],
                data_hash: c.digest(),
                values,
                state: Vec::new(),
            };
            let key = SeriesKey::new(symbol.clone(), label.clone()).expect("key");
            results.push(FrameWrite::from((key, series)));
        }
    }
    store
        .enqueue(NewJob::new("compute", b"test".to_vec()))
        .expect("enqueue");
    let lease = store.claim(1).expect("claim").remove(0);
    store.complete(lease.token, results).expect("complete");

    let out = dir.path().join("features.arrow");
    let opts = ExportOptions {
        format: ExportFormat::Arrow,
        symbols: None,
        features: specs.clone(),
    };
    let s = kiln::market::export(&store, &out, &opts, &mut |_, _| {}).expect("export");
    assert_eq!((s.rows, s.columns.clone()), (100, labels.clone()));
    let batches = read_batches(&out, ExportFormat::Arrow);
    let names: Vec<String> = batches[0]
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(&names[2..], labels.as_slice());
    let second = &batches[1];
    let signal = second
        .column(4)
        .as_primitive::<arrow_array::types::Float64Type>();
    assert!(signal.is_null(0), "NaN exports as null");
    assert_eq!(signal.value(7), 1207.0);

    // One more bar makes every series stale.
    let (symbol, c) = &universe[0];
    let mut next = c.bar(c.len() - 1);
    next.ts += 86_400_000_000_000;
    let mut more = BarColumns::default();
    more.push(next);
    let mut session = store.bar_ingest().expect("session");
    let src = session.source("test");
    session.stage(symbol, src, &more, &[]).expect("stage");
    session.commit(&mut |_| Ok(())).expect("commit");
    let e = kiln::market::export(&store, &out, &opts, &mut |_, _| {})
        .expect_err("stale")
        .to_string();
    assert!(
        e.contains("S0000 sma(3) is stale: computed from 50 bars") && e.contains("(51 up to"),
        "{e}"
    );

    // So does a correction of an earlier bar of the other symbol, which
    // keeps its count and last timestamp.
    let (symbol, c) = &universe[1];
    let mut fixed = c.slice(10, 11);
    fixed.close[0] = fixed.high[0];
    let mut session = store.bar_ingest().expect("session");
    let src = session.source("correction");
    session.stage(symbol, src, &fixed, &[]).expect("stage");
    session.commit(&mut |_| Ok(())).expect("commit");
    let only_s1 = ExportOptions {
        symbols: Some(vec![symbol.clone()]),
        ..opts
    };
    let e = kiln::market::export(&store, &out, &only_s1, &mut |_, _| {})
        .expect_err("stale")
        .to_string();
    assert!(
        e.contains("S0001 sma(3) is stale: computed from 50 bars"),
        "{e}"
    );
}
