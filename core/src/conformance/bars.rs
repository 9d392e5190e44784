//! Market data through an ingest session: re-ingests, corrections,
//! conflicts between and within sources, merges, and sessions that are
//! dropped or refused.

// Each function is one behaviour, and its name says which.
#![allow(missing_docs)]

use super::{Harness, assert_bits_eq, cols, ingest, refuse, stored, sym, version_of};
use crate::{Backend, BarIngest, BarStore, Conflict, QueueConfig};

pub fn identical_reingest_is_a_no_op_and_a_correction_replaces<H: Harness>(harness: &mut H) {
    let store = harness.open(QueueConfig::default());
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
    assert_eq!(
        store
            .data_versions(&[sym("NONE"), sym("A")])
            .expect("versions"),
        [None, Some(version_of(&now))]
    );
}

pub fn a_conflict_within_one_source_is_reported_with_both_locations<H: Harness>(harness: &mut H) {
    let store = harness.open(QueueConfig::default());
    ingest(&store, &[("A", cols(0..10, 0.0))]).expect("first");
    let before = stored(&store, "A");
    let stage_two = |store: &H::Backend| {
        let mut s = store.bar_ingest().expect("session");
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
    let mut s = store.bar_ingest().expect("session");
    let (one, two) = (s.source("one"), s.source("two"));
    s.stage(&sym("A"), one, &cols(20..30, 0.0), &[])
        .expect("stage");
    s.stage(&sym("A"), two, &cols(25..26, 1.0), &[])
        .expect("stage");
    s.commit(&mut refuse).expect("commit");
    assert_eq!(stored(&store, "A").close[15], 36.0);
}

pub fn a_later_source_wins_even_between_pieces_of_an_earlier_one<H: Harness>(harness: &mut H) {
    let store = harness.open(QueueConfig::default());
    let mut s = store.bar_ingest().expect("session");
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

pub fn many_small_appends_and_back_fills_keep_versions_exact<H: Harness>(harness: &mut H) {
    let store = harness.open(QueueConfig::default());
    // Ten pieces of one source in one session, shuffled: the merge path.
    let mut s = store.bar_ingest().expect("session");
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

pub fn a_dropped_session_leaves_nothing_and_unsorted_input_is_refused<H: Harness>(harness: &mut H) {
    let store = harness.open(QueueConfig::default());
    {
        let mut s = store.bar_ingest().expect("session");
        let src = s.source("f");
        s.stage(&sym("A"), src, &cols(0..5000, 0.0), &[])
            .expect("stage");
        let mut bad = cols(0..3, 0.0);
        bad.ts.swap(0, 1);
        let e = s.stage(&sym("B"), src, &bad, &[]).expect_err("unsorted");
        assert!(e.to_string().contains("strictly increase"), "{e}");
    }
    assert!(store.bar_symbols().expect("symbols").is_empty());
    let store = harness.reopen(store, QueueConfig::default());
    assert!(store.bar_symbols().expect("symbols").is_empty());
    assert!(store.check().expect("check").problems.is_empty());
}

pub fn follow_up_jobs_commit_with_the_bars_or_the_ingest_is_refused<H: Harness>(harness: &mut H) {
    use crate::{JobQueue, JobState, NewJob, StoreError};
    let store = harness.open(QueueConfig {
        queue_depth_max: 2,
        ..QueueConfig::default()
    });
    let commit = |parts: &[(&str, crate::BarColumns)], jobs: usize| {
        let mut s = store.bar_ingest().expect("session");
        let src = s.source("test");
        for (name, c) in parts {
            s.stage(&sym(name), src, c, &[]).expect("stage");
        }
        s.commit_with(&mut refuse, &mut |changed| {
            assert!(!changed.is_empty());
            Ok((0..jobs)
                .map(|i| {
                    NewJob::new("refresh", vec![])
                        .symbols(vec![changed[i % changed.len()].0.clone()])
                })
                .collect())
        })
    };
    let r = commit(&[("A", cols(0..10, 0.0)), ("B", cols(0..5, 0.0))], 1).expect("ingest");
    assert_eq!(r.changed.len(), 2);
    assert_eq!(r.follow_ups.len(), 1);
    let job = store
        .job(r.follow_ups[0].id())
        .expect("read")
        .expect("enqueued with the bars");
    assert_eq!(job.state, JobState::Queued);
    let before = store.data_version(&sym("A")).expect("v");

    // A queue that cannot take the jobs refuses the ingest: no new bars.
    let e = commit(&[("A", cols(10..12, 0.0))], 5).expect_err("queue full");
    assert!(matches!(e, StoreError::QueueFull { .. }), "{e}");
    assert_eq!(store.data_version(&sym("A")).expect("v"), before);
    // So does an error from the follow-up.
    let mut s = store.bar_ingest().expect("session");
    let src = s.source("test");
    s.stage(&sym("A"), src, &cols(10..12, 0.0), &[])
        .expect("stage");
    let e = s
        .commit_with(&mut refuse, &mut |_| {
            Err(StoreError::invalid("follow-up", "no"))
        })
        .expect_err("refused");
    assert!(e.to_string().contains("no"), "{e}");
    assert_eq!(store.data_version(&sym("A")).expect("v"), before);
    assert_eq!(store.stats().expect("stats").waiting(), 1);
}
