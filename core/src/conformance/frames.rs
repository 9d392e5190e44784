//! Frames: a replace writes a frame whole and moves its labels to it; an
//! append adds rows after exactly the frame's coverage (or is skipped when
//! the frame has moved on), keeping the saved state unless it brings one;
//! a remove drops the frame and its labels.

use super::{Harness, job, open, sym};
use crate::{
    Backend, Coverage, FrameKey, FrameRead, FrameRows, FrameWrite, JobQueue, JobState, ResultStore,
    SeriesKey, SeriesRead, StoreError,
};

fn covers(bars: u64) -> Coverage {
    Coverage {
        bars,
        last_ts: 100 + bars as i64,
        hash: bars * 31,
    }
}

fn frame(name: &str) -> FrameKey {
    FrameKey::new(sym("A"), name).expect("key")
}

fn label(l: &str) -> SeriesKey {
    SeriesKey::new(sym("A"), l).expect("key")
}

/// Column `c` of rows `from..to`: `c * 1000 + row`.
fn rows(columns: usize, from: u64, to: u64) -> Vec<Vec<f64>> {
    (0..columns)
        .map(|c| (from..to).map(|r| (c * 1000) as f64 + r as f64).collect())
        .collect()
}

fn replace(name: &str, labels: &[&str], bars: u64, state: Option<&[u8]>) -> FrameWrite {
    FrameWrite {
        key: frame(name),
        rows: FrameRows::Replace {
            labels: labels.iter().map(|l| l.to_string()).collect(),
        },
        covers: covers(bars),
        columns: rows(labels.len(), 0, bars),
        state: state.map(<[u8]>::to_vec),
    }
}

fn append(name: &str, columns: usize, from: u64, to: u64, state: Option<&[u8]>) -> FrameWrite {
    FrameWrite {
        key: frame(name),
        rows: FrameRows::Append {
            after: covers(from),
        },
        covers: covers(to),
        columns: rows(columns, from, to),
        state: state.map(<[u8]>::to_vec),
    }
}

/// Runs one job whose completion writes `writes`; returns its id.
fn write<B: Backend>(store: &B, writes: Vec<FrameWrite>) -> crate::Result<u64> {
    let id = store.enqueue(job("w")).expect("enqueue").id();
    let lease = store.claim(1).expect("claim").remove(0);
    store.complete(lease.token, writes).map(|()| id)
}

fn values<B: Backend>(store: &B, l: &str) -> Vec<f64> {
    store
        .series(&label(l))
        .expect("read")
        .map(|s| s.values().to_vec())
        .unwrap_or_default()
}

/// An append adds rows after the frame's coverage; the state stays until an append saves one.
pub fn appends_add_rows_and_keep_the_state_until_one_is_saved<H: Harness>(harness: &mut H) {
    let (_c, store) = open(harness);
    write(&store, vec![replace("p", &["a", "b"], 3, Some(&[1]))]).expect("replace");
    let second = write(&store, vec![append("p", 2, 3, 5, None)]).expect("append");
    assert_eq!(values(&store, "a"), vec![0.0, 1.0, 2.0, 3.0, 4.0]);
    assert_eq!(
        values(&store, "b"),
        vec![1000.0, 1001.0, 1002.0, 1003.0, 1004.0]
    );
    let view = store.series(&label("b")).expect("read").expect("stored");
    assert_eq!(view.covers(), covers(5));
    assert_eq!(view.chunks().concat(), values(&store, "b"));
    let head = store.frame(&frame("p")).expect("read").expect("stored");
    assert_eq!(head.labels(), &["a".to_string(), "b".to_string()]);
    assert_eq!(head.covers(), covers(5));
    assert_eq!(head.state(), Some((covers(3), &[1u8][..])), "kept");
    assert_eq!(
        store.series_writer(&label("a")).expect("read"),
        Some(second)
    );

    write(&store, vec![append("p", 2, 5, 6, Some(&[2, 2]))]).expect("append");
    let head = store.frame(&frame("p")).expect("read").expect("stored");
    assert_eq!(head.state(), Some((covers(6), &[2u8, 2][..])));
    assert_eq!(values(&store, "a").len(), 6);
    // A state alone (no new rows) is an append too.
    write(&store, vec![append("p", 2, 6, 6, Some(&[3]))]).expect("append");
    let head = store.frame(&frame("p")).expect("read").expect("stored");
    assert_eq!(head.state(), Some((covers(6), &[3u8][..])));
    assert_eq!(values(&store, "a").len(), 6);
}

/// An append after other bars than the frame covers is skipped; a misshapen one is refused whole.
pub fn an_append_that_does_not_continue_the_frame_is_skipped<H: Harness>(harness: &mut H) {
    let (_c, store) = open(harness);
    write(&store, vec![replace("p", &["a"], 3, Some(&[1]))]).expect("replace");
    // Written after other bars than the frame covers: skipped, not an error.
    write(&store, vec![append("p", 1, 2, 4, Some(&[9]))]).expect("skipped");
    write(&store, vec![append("gone", 1, 3, 4, None)]).expect("skipped");
    assert_eq!(values(&store, "a"), vec![0.0, 1.0, 2.0]);
    let head = store.frame(&frame("p")).expect("read").expect("stored");
    assert_eq!(head.state(), Some((covers(3), &[1u8][..])));
    assert!(store.frame(&frame("gone")).expect("read").is_none());

    // The wrong number of columns is an error, and nothing of the
    // completion is stored.
    store.enqueue(job("w")).expect("enqueue");
    let lease = store.claim(1).expect("claim").remove(0);
    let e = store
        .complete(
            lease.token,
            vec![replace("q", &["c"], 2, None), append("p", 2, 3, 4, None)],
        )
        .expect_err("two columns onto one");
    assert!(
        matches!(e, StoreError::Invalid { .. }) && e.to_string().contains("A/p"),
        "{e}"
    );
    assert!(store.frame(&frame("q")).expect("read").is_none());
    assert_eq!(store.stats().expect("stats").count(JobState::Running), 1);
    // A misshapen write is refused before anything is stored.
    let mut short = append("p", 1, 3, 5, None);
    short.columns[0].pop();
    let e = store
        .complete(lease.token, vec![short])
        .expect_err("a column too short");
    assert!(e.to_string().contains("column 0 has 1 rows"), "{e}");
    assert_eq!(values(&store, "a").len(), 3);
}

/// A replace takes over labels, and a frame left with none is removed.
pub fn a_replace_moves_labels_and_removes_a_frame_left_without_any<H: Harness>(harness: &mut H) {
    let (_c, store) = open(harness);
    write(&store, vec![replace("g", &["x"], 2, None)]).expect("g");
    write(&store, vec![replace("f", &["x", "y"], 3, None)]).expect("f");
    assert!(
        store.frame(&frame("g")).expect("read").is_none(),
        "g lost its only label"
    );
    assert_eq!(values(&store, "x"), vec![0.0, 1.0, 2.0]);
    write(&store, vec![replace("h", &["z", "y"], 4, None)]).expect("h");
    assert_eq!(values(&store, "y"), vec![1000.0, 1001.0, 1002.0, 1003.0]);
    assert!(
        store.frame(&frame("f")).expect("read").is_some(),
        "f keeps x"
    );
    // Replacing f with other labels drops the ones it had.
    write(&store, vec![replace("f", &["w"], 1, None)]).expect("f again");
    let labels: Vec<String> = store
        .series_keys(&sym("A"))
        .expect("keys")
        .into_iter()
        .map(|k| k.feature)
        .collect();
    assert_eq!(labels, vec!["w", "y", "z"]);
    assert_eq!(values(&store, "w"), vec![0.0]);
    let frames: Vec<String> = store
        .frames(&sym("A"))
        .expect("frames")
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(frames, vec!["f", "h"]);
}

/// A remove drops the frame and its labels, and nothing else.
pub fn remove_drops_the_frame_and_its_labels<H: Harness>(harness: &mut H) {
    let (_c, store) = open(harness);
    write(
        &store,
        vec![
            replace("p", &["a", "b"], 3, Some(&[1])),
            replace("q", &["c"], 3, None),
        ],
    )
    .expect("replace");
    let remove = FrameWrite {
        key: frame("p"),
        rows: FrameRows::Remove,
        covers: Coverage::default(),
        columns: Vec::new(),
        state: None,
    };
    write(&store, vec![remove]).expect("remove");
    assert!(store.frame(&frame("p")).expect("read").is_none());
    assert!(store.series(&label("a")).expect("read").is_none());
    assert_eq!(
        store.series_keys(&sym("A")).expect("keys"),
        vec![label("c")]
    );
    assert_eq!(values(&store, "c").len(), 3);
}
