//! Bar storage in the embedded store: chunks read in place (zero copy), how
//! appends and long inputs are chunked, and compaction of bar chunks. What
//! every backend shares (corrections, conflicts, merges, sessions) is in
//! `conformance.rs`.

use kiln_core::conformance::{assert_bits_eq, cols, ingest, refuse, stored, sym, version_of};
use kiln_store::prelude::*;
use kiln_store::{Store, StoreConfig};

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
fn long_inputs_are_cut_into_bounded_chunks_and_corrections_touch_one() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    let n = kiln_store::BAR_CHUNK_ROWS_MAX as i64 * 2 + 10;
    let all = cols(0..n, 0.0);
    ingest(&store, &[("L", all.clone())]).expect("ingest");
    assert_eq!(store.check().expect("check").bar_chunks, 3);
    let mut fix = cols(70_000..70_001, 0.0);
    fix.close[0] = 1.25;
    ingest(&store, &[("L", fix)]).expect("correct");
    let check = store.check().expect("check");
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    assert_eq!(
        check.bar_chunks, 3,
        "only the chunk holding the bar is rewritten"
    );
    let mut want = all;
    want.close[70_000] = 1.25;
    assert_bits_eq(&stored(&store, "L"), &want);
    assert_eq!(
        store.data_version(&sym("L")).expect("v"),
        Some(version_of(&want))
    );
    // A window read inside the second chunk is in place.
    let v = store
        .bars(&sym("L"), 70_000..70_010)
        .expect("read")
        .expect("bars");
    assert!(v.is_zero_copy());
    assert_eq!(v.version(), version_of(&want));
}

#[test]
fn compaction_waits_for_staged_records_of_an_open_session() {
    let dir = tempfile::tempdir().expect("dir");
    let config = StoreConfig {
        segment_bytes_max: 64 * 1024,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config).expect("open");
    for k in 0..4 {
        ingest(&store, &[("G", cols(0..1500, k as f64))]).expect("garbage maker");
    }
    let mut s = store.bar_ingest().expect("session");
    let src = s.source("f");
    s.stage(&sym("S"), src, &cols(0..3000, 0.0), &[])
        .expect("stage");
    s.flush().expect("into the value log");
    for k in 4..8 {
        ingest(&store, &[("G", cols(0..1500, k as f64))]).expect("more garbage");
    }
    assert_eq!(
        store.compact().expect("compact").removed_segments,
        0,
        "a session is open"
    );
    s.commit(&mut refuse).expect("commit");
    assert!(store.compact().expect("compact").removed_segments > 0);
    assert_bits_eq(&stored(&store, "S"), &cols(0..3000, 0.0));
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
