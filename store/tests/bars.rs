//! Bar storage: staging, append, merge, corrections, data versions, reads.

use kiln_store::{Bar, BarColumns, Conflict, DataVersion, Store, StoreConfig, StoreError, Symbol};

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
        s.stage(&sym(name), src, c, &[])?;
    }
    s.commit(&mut refuse)
}

/// A conflict handler that rejects the ingest.
fn refuse(c: &Conflict) -> kiln_store::Result<()> {
    Err(StoreError::Conflict(format!("{} at ts {}", c.symbol, c.ts)))
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
fn a_conflict_within_one_source_is_reported_with_both_locations() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    ingest(&store, &[("A", cols(0..10, 0.0))]).expect("first");
    let before = stored(&store, "A");
    let stage_two = |store: &Store| {
        let mut s = store.bar_ingest();
        let src = s.source("file.csv");
        let at: Vec<u64> = (100..110).collect();
        s.stage(&sym("A"), src, &cols(20..30, 0.0), &at)
            .expect("stage");
        s.stage(&sym("A"), src, &cols(25..26, 1.0), &[500])
            .expect("stage");
        s
    };
    let mut seen = Vec::new();
    let e = stage_two(&store)
        .commit(&mut |c| {
            seen.push(c.clone());
            refuse(c)
        })
        .expect_err("conflict");
    assert!(e.to_string().contains("A at ts 25"), "{e}");
    assert_eq!(
        seen,
        [Conflict {
            symbol: sym("A"),
            source: 0,
            ts: 25,
            at: Some(500),
            first_at: Some(105)
        }]
    );
    assert_bits_eq(&stored(&store, "A"), &before);

    // Going on keeps the first bar and drops the later one.
    let report = stage_two(&store).commit(&mut |_| Ok(())).expect("skip");
    assert_eq!(report.conflicts, 1);
    assert_eq!(stored(&store, "A").close[15], 35.0);

    // From a later source the same timestamp is a correction.
    let mut s = store.bar_ingest();
    let (one, two) = (s.source("one"), s.source("two"));
    s.stage(&sym("A"), one, &cols(20..30, 0.0), &[])
        .expect("stage");
    s.stage(&sym("A"), two, &cols(25..26, 1.0), &[])
        .expect("stage");
    s.commit(&mut refuse).expect("commit");
    assert_eq!(stored(&store, "A").close[15], 36.0);
}

#[test]
fn a_later_source_wins_even_between_pieces_of_an_earlier_one() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    let mut s = store.bar_ingest();
    let (a, b) = (s.source("a"), s.source("b"));
    s.stage(&sym("I"), a, &cols(0..3, 0.0), &[1, 2, 3])
        .expect("stage");
    s.stage(&sym("I"), b, &cols(1..2, 5.0), &[7])
        .expect("stage");
    s.stage(&sym("I"), a, &cols(1..2, 9.0), &[4])
        .expect("stage");
    let mut seen = Vec::new();
    s.commit(&mut |c| {
        seen.push(c.clone());
        Ok(())
    })
    .expect("commit");
    assert_eq!(
        seen,
        [Conflict {
            symbol: sym("I"),
            source: a,
            ts: 1,
            at: Some(4),
            first_at: Some(2)
        }]
    );
    assert_eq!(
        stored(&store, "I").close,
        [10.0, 16.0, 12.0],
        "b's bar stands"
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
fn many_small_appends_and_back_fills_keep_versions_exact() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    // Ten pieces of one source in one session, shuffled: the merge path.
    let mut s = store.bar_ingest();
    let src = s.source("shuffled");
    for k in [3i64, 0, 7, 1, 9, 2, 8, 4, 6, 5] {
        s.stage(&sym("M"), src, &cols(100 + k * 10..110 + k * 10, 0.0), &[])
            .expect("stage");
    }
    s.commit(&mut refuse).expect("commit");
    // Then a back-fill before everything stored.
    ingest(&store, &[("M", cols(0..100, 0.0))]).expect("back-fill");
    let all = cols(0..200, 0.0);
    assert_bits_eq(&stored(&store, "M"), &all);
    assert_eq!(
        store.data_version(&sym("M")).expect("v"),
        Some(version_of(&all))
    );
    assert!(store.check().expect("check").problems.is_empty());
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
    let mut s = store.bar_ingest();
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
fn the_bar_digest_matches_an_independent_implementation() {
    // Computed by a separate Python implementation of FORMAT.md's
    // description (multiply-xorshift over the seven words, then
    // splitmix64's finalizer), not by this crate.
    let b = Bar {
        ts: 1_420_156_800_000_000_000,
        open: 10.0,
        high: 11.5,
        low: 9.25,
        close: 10.5,
        volume: 1000.0,
        vwap: f64::NAN,
    };
    assert_eq!(b.digest(), DIGEST_OF_B);
    let z = Bar {
        ts: 0,
        open: 0.0,
        high: 0.0,
        low: 0.0,
        close: 0.0,
        volume: 0.0,
        vwap: 0.0,
    };
    assert_eq!(z.digest(), DIGEST_OF_ZERO);
}

#[test]
fn a_dropped_session_leaves_nothing_and_unsorted_input_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    {
        let mut s = store.bar_ingest();
        let src = s.source("f");
        s.stage(&sym("A"), src, &cols(0..5000, 0.0), &[])
            .expect("stage");
        let mut bad = cols(0..3, 0.0);
        bad.ts.swap(0, 1);
        let e = s.stage(&sym("B"), src, &bad, &[]).expect_err("unsorted");
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

const DIGEST_OF_B: u64 = 0x9a9a_9891_60c0_87da;
const DIGEST_OF_ZERO: u64 = 0x6805_6948_53e2_4b77;
