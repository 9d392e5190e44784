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
    for k in 0..40 {
        ingest(&store, &[("A", cols(k * 10..k * 10 + 10, 0.0))]).expect("append");
    }
    let all = cols(0..400, 0.0);
    assert_bits_eq(&stored(&store, "A"), &all);
    assert_eq!(
        store.data_version(&sym("A")).expect("v"),
        Some(version_of(&all))
    );
    let check = store.check().expect("check");
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    // 32 appends of 10 bars merge into one chunk; 8 follow it.
    assert_eq!(check.bar_chunks, 9, "partial chunks are merged");
}

/// Bars 0..n, read back, equal to `want`, with its version.
fn assert_bars(store: &Store, symbol: &str, want: &kiln_store::BarColumns) {
    assert_bits_eq(&stored(store, symbol), want);
    assert_eq!(
        store.data_version(&sym(symbol)).expect("v"),
        Some(version_of(want))
    );
}

fn chunks_checked(store: &Store) -> u64 {
    let check = store.check().expect("check");
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    check.bar_chunks
}

#[test]
fn single_bar_appends_fill_the_tail_slots_and_merge_every_thirty_two() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    ingest(&store, &[("T", cols(0..100, 0.0))]).expect("history");
    for t in 100..140 {
        ingest(&store, &[("T", cols(t..t + 1, 0.0))]).expect("tick");
        assert_bars(&store, "T", &cols(0..t + 1, 0.0));
        let ticks = (t - 99) as u64;
        // The history, a merged chunk per 32 ticks, the ticks since.
        let want = 1 + ticks / 32 + ticks % 32;
        assert_eq!(chunks_checked(&store), want, "after {ticks} ticks");
    }
    // A lookback inside the tails reads them alone, and across them all.
    let last = store
        .bars_batch(&[sym("T")], Some(3))
        .expect("batch")
        .pop()
        .flatten()
        .expect("bars");
    assert_eq!(last.ts(), &[137, 138, 139]);
    let from = store.bars(&sym("T"), 120..).expect("read").expect("bars");
    assert_eq!(from.ts(), (120..140).collect::<Vec<i64>>().as_slice());
    drop(store);
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    assert_bars(&store, "T", &cols(0..140, 0.0));
    assert_eq!(chunks_checked(&store), 1 + 1 + 8);
    ingest(&store, &[("T", cols(140..141, 0.0))]).expect("tick after reopen");
    assert_bars(&store, "T", &cols(0..141, 0.0));
}

#[test]
fn a_correction_inside_the_tails_takes_them_all_into_one_chunk() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    ingest(&store, &[("C", cols(0..100, 0.0))]).expect("history");
    for t in 100..105 {
        ingest(&store, &[("C", cols(t..t + 1, 0.0))]).expect("tick");
    }
    assert_eq!(chunks_checked(&store), 6);
    let mut fix = cols(102..103, 0.0);
    fix.close[0] = 9.5;
    ingest(&store, &[("C", fix)]).expect("correct");
    let mut want = cols(0..105, 0.0);
    want.close[102] = 9.5;
    assert_bars(&store, "C", &want);
    assert_eq!(chunks_checked(&store), 2, "the history and the five ticks");
    // Ticks go on into the freed slots.
    for t in 105..110 {
        ingest(&store, &[("C", cols(t..t + 1, 0.0))]).expect("tick");
    }
    let mut want = cols(0..110, 0.0);
    want.close[102] = 9.5;
    assert_bars(&store, "C", &want);
    assert_eq!(chunks_checked(&store), 7);
}

#[test]
fn an_append_too_large_for_a_slot_merges_the_tails_first() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    ingest(&store, &[("L", cols(0..100, 0.0))]).expect("history");
    for t in 100..103 {
        ingest(&store, &[("L", cols(t..t + 1, 0.0))]).expect("tick");
    }
    ingest(&store, &[("L", cols(103..143, 0.0))]).expect("40 bars");
    assert_bars(&store, "L", &cols(0..143, 0.0));
    assert_eq!(chunks_checked(&store), 2, "the history and 43 bars");
    // A first ingest of a few bars starts in the tails.
    ingest(&store, &[("N", cols(0..3, 0.0))]).expect("new symbol");
    assert_bars(&store, "N", &cols(0..3, 0.0));
    assert_eq!(chunks_checked(&store), 3);
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
