//! Bar storage: staging, append, merge, corrections, data versions, reads.

use kiln_store::{Bar, BarColumns, DataVersion, Store, StoreConfig, Symbol};

fn sym(s: &str) -> Symbol {
    Symbol::new(s).expect("symbol")
}

fn bar(ts: i64, close: f64) -> Bar {
    Bar {
        ts,
        open: close,
        high: close + 1.0,
        low: close - 0.5,
        close,
        volume: 100.0,
        vwap: f64::NAN,
    }
}

fn cols(range: std::ops::Range<i64>, offset: f64) -> BarColumns {
    let mut c = BarColumns::default();
    for t in range {
        c.push(bar(t, 10.0 + t as f64 + offset));
    }
    c
}

fn ingest(
    store: &Store,
    parts: &[(&str, BarColumns)],
) -> kiln_store::Result<kiln_store::IngestReport> {
    let mut s = store.bar_ingest();
    let src = s.source("test");
    for (name, c) in parts {
        s.stage(&sym(name), src, c)?;
    }
    s.commit()
}

fn stored(store: &Store, name: &str) -> BarColumns {
    store
        .bars(&sym(name), ..)
        .expect("read")
        .expect("has bars")
        .to_columns()
}

fn assert_bits_eq(a: &BarColumns, b: &BarColumns) {
    assert_eq!(a.len(), b.len());
    for i in 0..a.len() {
        assert!(
            a.bar(i).same_as(&b.bar(i)),
            "bar {i}: {:?} vs {:?}",
            a.bar(i),
            b.bar(i)
        );
    }
}

fn version_of(c: &BarColumns) -> DataVersion {
    DataVersion {
        bars: c.len() as u64,
        first_ts: c.ts[0],
        last_ts: c.ts[c.len() - 1],
        hash: c.digest(),
    }
}

#[test]
fn ingested_bars_read_back_in_place_with_their_version() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    let big = cols(0..2000, 0.0);
    let report = ingest(&store, &[("AAA", big.clone()), ("B", cols(5..8, 0.0))]).expect("ingest");
    assert_eq!(report.rows, 2003);
    assert_eq!(report.changed.len(), 2);
    let view = store.bars(&sym("AAA"), ..).expect("read").expect("bars");
    assert!(view.is_zero_copy());
    assert_bits_eq(&view.to_columns(), &big);
    assert_eq!(
        store.data_version(&sym("AAA")).expect("v"),
        Some(version_of(&big))
    );
    assert_eq!(
        store.bars(&sym("NONE"), ..).expect("read").map(|v| v.len()),
        None
    );
    let names: Vec<String> = store
        .bar_symbols()
        .expect("symbols")
        .into_iter()
        .map(|(s, _)| s.to_string())
        .collect();
    assert_eq!(names, ["AAA", "B"]);
    drop(store);
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    assert_bits_eq(&stored(&store, "AAA"), &big);
    let check = store.check().expect("check");
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    assert_eq!(check.bar_chunks, 2);
}

#[test]
fn ranges_and_lookbacks_cut_the_right_bars() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    ingest(&store, &[("A", cols(0..100, 0.0))]).expect("first");
    ingest(&store, &[("A", cols(100..150, 0.0))]).expect("append");
    let v = store.bars(&sym("A"), 40..60).expect("read").expect("bars");
    assert_eq!(v.ts(), (40..60).collect::<Vec<i64>>().as_slice());
    assert!(v.is_zero_copy(), "inside one chunk");
    let v = store
        .bars(&sym("A"), 90..=110)
        .expect("read")
        .expect("bars");
    assert_eq!(v.ts(), (90..=110).collect::<Vec<i64>>().as_slice());
    assert_eq!(v.close()[0], 100.0);
    let batch = store
        .bars_batch(&[sym("A"), sym("Z")], Some(30))
        .expect("batch");
    let a = batch[0].as_ref().expect("A");
    assert_eq!(a.ts(), (120..150).collect::<Vec<i64>>().as_slice());
    assert!(a.is_zero_copy(), "the last chunk alone covers the lookback");
    assert!(batch[1].is_none());
}

#[test]
fn appends_add_chunks_and_keep_the_version_equal_to_one_ingest() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    for k in 0..20 {
        ingest(&store, &[("A", cols(k * 10..k * 10 + 10, 0.0))]).expect("append");
    }
    let all = cols(0..200, 0.0);
    assert_bits_eq(&stored(&store, "A"), &all);
    assert_eq!(
        store.data_version(&sym("A")).expect("v"),
        Some(version_of(&all))
    );
    let check = store.check().expect("check");
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    assert!(
        check.bar_chunks <= 9,
        "partial chunks are merged: {}",
        check.bar_chunks
    );
}

#[test]
fn identical_reingest_is_a_no_op_and_a_correction_replaces() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    ingest(&store, &[("A", cols(0..50, 0.0))]).expect("first");
    let before = store.data_version(&sym("A")).expect("v");
    let again = ingest(&store, &[("A", cols(10..20, 0.0))]).expect("again");
    assert_eq!(again.unchanged, [sym("A")]);
    assert_eq!(store.data_version(&sym("A")).expect("v"), before);

    let mut fix = cols(20..21, 0.0);
    fix.close[0] = 31.5;
    let r = ingest(&store, &[("A", fix)]).expect("correction");
    assert_eq!(r.changed.len(), 1);
    let now = stored(&store, "A");
    assert_eq!(now.len(), 50);
    assert_eq!(now.close[20], 31.5);
    assert_ne!(store.data_version(&sym("A")).expect("v"), before);
    assert_eq!(
        store.data_version(&sym("A")).expect("v"),
        Some(version_of(&now))
    );
}

#[test]
fn a_conflicting_duplicate_within_one_source_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    ingest(&store, &[("A", cols(0..10, 0.0))]).expect("first");
    let before = stored(&store, "A");
    let e = ingest(
        &store,
        &[("A", cols(20..30, 0.0)), ("A", cols(25..26, 1.0))],
    )
    .expect_err("conflict");
    let msg = e.to_string();
    assert!(msg.contains("A at ts 25") && msg.contains("test"), "{msg}");
    assert_bits_eq(&stored(&store, "A"), &before);

    // From a later source the same bar is a correction.
    let mut s = store.bar_ingest();
    let (one, two) = (s.source("one"), s.source("two"));
    s.stage(&sym("A"), one, &cols(20..30, 0.0)).expect("stage");
    s.stage(&sym("A"), two, &cols(25..26, 1.0)).expect("stage");
    s.commit().expect("commit");
    assert_eq!(stored(&store, "A").close[15], 36.0);
}

#[test]
fn a_dropped_session_leaves_nothing_and_unsorted_input_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    {
        let mut s = store.bar_ingest();
        let src = s.source("f");
        s.stage(&sym("A"), src, &cols(0..5000, 0.0)).expect("stage");
        let mut bad = cols(0..3, 0.0);
        bad.ts.swap(0, 1);
        let e = s.stage(&sym("B"), src, &bad).expect_err("unsorted");
        assert!(e.to_string().contains("strictly increase"), "{e}");
    }
    assert!(store.bar_symbols().expect("symbols").is_empty());
    drop(store);
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    assert!(store.bar_symbols().expect("symbols").is_empty());
    assert!(store.check().expect("check").problems.is_empty());
}

#[test]
fn compaction_moves_bar_chunks_and_they_still_read_back() {
    let dir = tempfile::tempdir().expect("dir");
    let config = StoreConfig {
        segment_bytes_max: 64 * 1024,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config.clone()).expect("open");
    // Each rewrite of A makes its old chunk garbage.
    for k in 0..6 {
        ingest(&store, &[("A", cols(0..1500, k as f64))]).expect("ingest A");
        ingest(&store, &[("B", cols(k * 100..k * 100 + 100, 0.0))]).expect("ingest B");
    }
    let report = store.compact().expect("compact");
    assert!(report.removed_segments > 0, "{report:?}");
    assert_bits_eq(&stored(&store, "A"), &cols(0..1500, 5.0));
    assert_bits_eq(&stored(&store, "B"), &cols(0..600, 0.0));
    drop(store);
    let store = Store::open(dir.path(), config).expect("reopen");
    assert_bits_eq(&stored(&store, "A"), &cols(0..1500, 5.0));
    let check = store.check().expect("check");
    assert!(check.problems.is_empty(), "{:?}", check.problems);
}
