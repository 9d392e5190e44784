//! The embedded store on disk: recovery at open, the durability modes and
//! a power loss, a poisoned store, the format file and the directory lock,
//! the value log (inline versus logged series, truncation, corruption,
//! compaction, crash leftovers) and sled's own leftovers. The behaviour
//! every backend shares is in `conformance.rs`.

use std::time::Duration;

use kiln_core::conformance::{job, series, sym};
use kiln_store::prelude::*;
use kiln_store::{
    Clock, Durability, Enqueued, EventLog, JobQueue, JobState, QueueConfig, ResultStore,
    RetryPolicy, SeriesKey, SeriesRead, Store, StoreConfig, StoreError, Symbol,
};

const T0: u64 = 1_700_000_000_000;

fn config(clock: &Clock) -> StoreConfig {
    StoreConfig {
        queue: QueueConfig {
            clock: clock.clone(),
            retry: RetryPolicy {
                base_ms: 1_000,
                cap_ms: 60_000,
            },
            ..QueueConfig::default()
        },
        ..StoreConfig::default()
    }
}

#[test]
fn running_jobs_of_a_dead_process_are_requeued_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(T0);
    let (a, b);
    {
        let store = Store::open(dir.path(), config(&clock)).expect("open");
        a = store.enqueue(job("a")).expect("e").id();
        b = store.enqueue(job("b").attempts_max(1)).expect("e").id();
        store.claim(2).expect("claim");
        // Dropped without completing: as if the process had died.
    }
    let store = Store::open(dir.path(), config(&clock)).expect("reopen");
    let r = store.recovery_report();
    assert_eq!((r.requeued, r.dead, r.counters_drift.clone()), (1, 1, None));
    let ja = store.job(a).expect("read").expect("exists");
    assert_eq!((ja.state, ja.attempts), (JobState::Queued, 1));
    assert!(
        ja.last_error
            .as_deref()
            .unwrap_or("")
            .contains("process ended")
    );
    assert_eq!(
        store.job(b).expect("read").expect("exists").state,
        JobState::Dead
    );
    assert_eq!(store.claim(5).expect("claim")[0].token.attempt, 2);
    assert!(store.check().expect("check").problems.is_empty());
}

#[test]
fn everything_acknowledged_survives_reopen_in_relaxed_mode_after_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        durability: Durability::Relaxed,
        ..StoreConfig::default()
    };
    let ids: Vec<u64> = {
        let store = Store::open(dir.path(), cfg.clone()).expect("open");
        let ids = store
            .enqueue_many((0..50).map(|i| job(&i.to_string())).collect())
            .expect("e");
        store.sync().expect("sync");
        ids.into_iter().map(Enqueued::id).collect()
    };
    let store = Store::open(dir.path(), cfg).expect("reopen");
    for id in ids {
        assert_eq!(
            store.job(id).expect("read").expect("exists").state,
            JobState::Queued
        );
    }
}

#[test]
fn a_power_loss_in_relaxed_mode_reruns_the_jobs_whose_results_did_not_reach_the_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let relaxed = StoreConfig {
        durability: Durability::Relaxed,
        // The background flusher never runs: only `sync` makes bytes durable.
        tick_ms: 3_600_000,
        ..StoreConfig::default()
    };
    // 4096 values archive to about 32 KiB: value-log records, not inline.
    let big = |k: &SeriesKey, x: f64| series(k, vec![x; 4096]);
    let key = |s: &str| SeriesKey::new(sym(s), "close").expect("key");
    let ids: Vec<u64> = {
        let store = Store::open(dir.path(), relaxed.clone()).expect("open");
        let ids: Vec<u64> = store
            .enqueue_many(vec![job("a"), job("b"), job("c")])
            .expect("enqueue")
            .into_iter()
            .map(Enqueued::id)
            .collect();
        let leases = store.claim(3).expect("claim");
        store
            .complete(leases[0].token, vec![big(&key("A"), 1.0)])
            .expect("complete a");
        store.sync().expect("sync");
        store
            .complete(leases[1].token, vec![big(&key("B"), 2.0)])
            .expect("complete b");
        store
            .complete(
                leases[2].token,
                vec![big(&key("C"), 3.0), big(&key("A"), 4.0)],
            )
            .expect("complete c");
        store.simulate_power_loss(true).expect("power loss");
        ids
    };
    // The next session may run in either mode.
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    let r = store.recovery_report();
    assert_eq!((r.vlog.lost_records, r.rerun_lost), (3, 2), "{r:?}");
    assert_eq!(
        store.job(ids[0]).expect("read").expect("a").state,
        JobState::Succeeded
    );
    assert_eq!(r.counters_drift, None, "the requeues are expected");
    for &id in &ids[1..] {
        let j = store.job(id).expect("read").expect("exists");
        assert_eq!(
            (j.state, j.attempts),
            (JobState::Queued, 0),
            "the lost attempt is not counted"
        );
        assert!(j.last_error.unwrap_or_default().contains("power loss"));
    }
    // A's newer series was lost with job c; its index entry is gone with it.
    assert!(store.series(&key("A")).expect("read").is_none());
    assert!(store.series(&key("B")).expect("read").is_none());
    assert!(store.check().expect("check").problems.is_empty());

    // The requeued jobs run again and their results are stored for good.
    let leases = store.claim(5).expect("claim");
    assert_eq!(leases.len(), 2);
    for l in &leases {
        let (s, x) = if l.job.id == ids[1] {
            ("B", 2.0)
        } else {
            ("C", 3.0)
        };
        store
            .complete(l.token, vec![big(&key(s), x)])
            .expect("complete");
    }
    drop(store);
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    assert_eq!(store.recovery_report().vlog.lost_records, 0);
    assert_eq!(store.stats().expect("stats").count(JobState::Succeeded), 3);
    for (s, x) in [("B", 2.0), ("C", 3.0)] {
        let view = store.series(&key(s)).expect("read").expect("stored");
        assert!(view.values().iter().all(|&v| v == x), "{s}");
    }
    assert!(store.check().expect("check").problems.is_empty());
}

#[test]
fn the_relaxed_flusher_makes_results_durable_within_ticks_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let relaxed = StoreConfig {
        durability: Durability::Relaxed,
        tick_ms: 5,
        // About 32 KiB per series: a new segment every other record.
        segment_bytes_max: 64 * 1024,
        ..StoreConfig::default()
    };
    let key = |i: usize| SeriesKey::new(sym(&format!("S{i}")), "close").expect("key");
    {
        let store = Store::open(dir.path(), relaxed.clone()).expect("open");
        store
            .enqueue_many((0..12).map(|i| job(&i.to_string())).collect())
            .expect("enqueue");
        for (i, l) in store.claim(12).expect("claim").iter().enumerate() {
            store
                .complete(l.token, vec![series(&key(i), vec![i as f64; 4096])])
                .expect("complete");
        }
        // No explicit sync: the flusher fsyncs, the writer records the mark.
        std::thread::sleep(Duration::from_millis(500));
        store.simulate_power_loss(true).expect("power loss");
    }
    let store = Store::open(dir.path(), relaxed).expect("reopen");
    let r = store.recovery_report();
    assert_eq!((r.vlog.lost_records, r.rerun_lost), (0, 0), "{r:?}");
    assert_eq!(store.stats().expect("stats").count(JobState::Succeeded), 12);
    for i in 0..12 {
        let view = store.series(&key(i)).expect("read").expect("stored");
        assert!(view.values().iter().all(|&v| v == i as f64), "S{i}");
    }
    assert!(
        fs_segments(dir.path()) > 3,
        "the records span several segments"
    );
    assert!(store.check().expect("check").problems.is_empty());
}

#[test]
fn a_job_with_one_lost_record_loses_all_its_records_past_the_mark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let relaxed = StoreConfig {
        durability: Durability::Relaxed,
        tick_ms: 3_600_000,
        ..StoreConfig::default()
    };
    let key = |f: &str| SeriesKey::new(sym("X"), f).expect("key");
    let id = {
        let store = Store::open(dir.path(), relaxed.clone()).expect("open");
        let id = store.enqueue(job("x")).expect("enqueue").id();
        let l = store.claim(1).expect("claim").remove(0);
        let results = vec![
            series(&key("out"), vec![7.5; 4096]),
            series(&key("@state"), vec![9.25; 4096]),
        ];
        store.complete(l.token, results).expect("complete");
        store.simulate_power_loss(false).expect("power loss");
        id
    };
    // Only the output's bytes are damaged; the state's are intact.
    let needle = 7.5f64.to_le_bytes();
    let mut damaged = 0;
    for entry in std::fs::read_dir(dir.path().join("vlog")).expect("vlog") {
        let path = entry.expect("entry").path();
        let mut bytes = std::fs::read(&path).expect("read");
        if let Some(at) = bytes.windows(8).position(|w| w == needle) {
            bytes[at] ^= 0x01;
            std::fs::write(&path, bytes).expect("write");
            damaged += 1;
        }
    }
    assert_eq!(damaged, 1);
    let store = Store::open(dir.path(), relaxed).expect("reopen");
    let r = store.recovery_report();
    assert_eq!((r.vlog.lost_records, r.rerun_lost), (2, 1), "{r:?}");
    assert!(store.series(&key("out")).expect("read").is_none());
    assert!(
        store.series(&key("@state")).expect("read").is_none(),
        "the state must not outlive the outputs it belongs to"
    );
    assert_eq!(
        store.job(id).expect("read").expect("job").state,
        JobState::Queued
    );
    assert!(store.check().expect("check").problems.is_empty());
}

fn fs_segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("vlog")).expect("vlog").count()
}

#[test]
fn failed_commit_poisons_the_store_until_reopened() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
        store.enqueue(job("kept")).expect("enqueue");
        store.inject_commit_failure(false).expect("inject");
        let e = store.enqueue(job("lost")).expect_err("commit fails");
        assert!(matches!(e, StoreError::Poisoned { .. }), "{e}");
        let again = store.enqueue(job("refused")).expect_err("poisoned");
        assert!(
            again.to_string().contains("injected write failure"),
            "{again}"
        );
        assert!(store.poisoned().is_some());
        assert!(store.claim(1).is_err());
    }
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    assert!(store.poisoned().is_none());
    assert_eq!(store.stats().expect("stats").count(JobState::Queued), 1);
    store.enqueue(job("works")).expect("writes work again");
}

#[test]
fn format_version_mismatch_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Store::open(dir.path(), StoreConfig::default()).expect("open"));
    std::fs::write(dir.path().join(kiln_store::FORMAT_FILE), "kiln-store 999\n").expect("write");
    let e = Store::open(dir.path(), StoreConfig::default())
        .expect_err("mismatch")
        .to_string();
    assert!(
        e.contains("format version kiln-store 999")
            && e.contains(&format!("reads version {}", kiln_store::FORMAT_VERSION)),
        "{e}"
    );
}

#[test]
fn a_foreign_non_empty_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("notes.txt"), "mine").expect("write");
    let e = Store::open(dir.path(), StoreConfig::default())
        .expect_err("foreign")
        .to_string();
    assert!(e.contains("not empty"), "{e}");
}

#[test]
fn a_directory_whose_creation_a_crash_interrupted_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path().join(format!("{}.tmp", kiln_store::FORMAT_FILE));
    std::fs::write(&tmp, "kiln-st").expect("write");
    std::fs::write(dir.path().join("LOCK"), "").expect("write");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    store.enqueue(job("a")).expect("enqueue");
    assert!(!tmp.exists(), "the half-written format file is replaced");
    assert_eq!(
        std::fs::read_to_string(dir.path().join(kiln_store::FORMAT_FILE)).expect("read"),
        format!("kiln-store {}\n", kiln_store::FORMAT_VERSION)
    );
}

#[test]
fn a_newest_segment_a_crash_left_without_its_header_is_discarded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = SeriesKey::new(sym("A"), "big").expect("key");
    {
        let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
        store.enqueue(job("a")).expect("enqueue");
        let lease = store.claim(1).expect("claim").remove(0);
        let values: Vec<f64> = (0..1000).map(f64::from).collect();
        store
            .complete(lease.token, vec![series(&key, values)])
            .expect("complete");
    }
    let vlog = dir.path().join("vlog");
    for (name, bytes) in [
        // A segment created in place and cut before its header was whole,
        // and one whose creation in a temporary file was cut.
        ("0000000002.seg", &b"KILNV"[..]),
        ("0000000003.seg.tmp", &[0u8; 16][..]),
    ] {
        std::fs::write(vlog.join(name), bytes).expect("write");
    }
    {
        let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
        assert_eq!(store.recovery_report().vlog.removed_segments, 2);
        let view = store.series(&key).expect("read").expect("kept");
        assert_eq!(view.values()[999], 999.0);
        store.enqueue(job("b")).expect("enqueue");
        let lease = store.claim(1).expect("claim").remove(0);
        let values: Vec<f64> = (0..1000).map(|i| f64::from(i) * 2.0).collect();
        let other = SeriesKey::new(sym("B"), "big").expect("key");
        store
            .complete(lease.token, vec![series(&other, values)])
            .expect("complete");
        assert!(store.check().expect("check").problems.is_empty());
    }
    // A newest segment with a whole header of another program is not
    // kiln's to keep either.
    std::fs::write(vlog.join("0000000009.seg"), [0xabu8; 16]).expect("write");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen again");
    assert_eq!(store.recovery_report().vlog.removed_segments, 1);
    let other = SeriesKey::new(sym("B"), "big").expect("key");
    assert_eq!(
        store.series(&other).expect("read").expect("kept").values()[999],
        1998.0
    );
    assert!(store.check().expect("check").problems.is_empty());
}

/// 20 series of 16 KB in 64 KB segments, most then overwritten: the
/// first segments are sparse; S0, S5, S10 and S15 live there still.
fn sparse_store(dir: &std::path::Path) -> Store {
    let cfg = StoreConfig {
        segment_bytes_max: 64 * 1024,
        ..StoreConfig::default()
    };
    let store = Store::open(dir, cfg).expect("open");
    for round in 0..2 {
        for i in 0..20 {
            if round == 1 && i % 5 == 0 {
                continue;
            }
            store.enqueue(job("a")).expect("e");
            let lease = store.claim(1).expect("claim").remove(0);
            let v = vec![(round * 100 + i) as f64; 2000];
            store
                .complete(lease.token, vec![series(&sparse_key(i), v)])
                .expect("complete");
        }
    }
    store
}

fn sparse_key(i: usize) -> SeriesKey {
    SeriesKey::new(sym(&format!("S{i}")), "sma(5)").expect("key")
}

/// The value `sparse_store` left in series `i`.
fn sparse_value(i: usize) -> f64 {
    (if i.is_multiple_of(5) { i } else { 100 + i }) as f64
}

fn vlog_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("vlog")).expect("ls").count()
}

#[test]
fn compaction_moves_live_series_and_deletes_sparse_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sparse_store(dir.path());
    let segments_before = vlog_files(dir.path());
    let report = store.compact().expect("compact");
    assert!(report.removed_segments > 0, "{report:?}");
    let segments_after = vlog_files(dir.path());
    assert!(
        segments_after < segments_before,
        "{segments_before} -> {segments_after}"
    );
    for i in 0..20 {
        let view = store.series(&sparse_key(i)).expect("read").expect("kept");
        assert!(view.values().iter().all(|&v| v == sparse_value(i)), "S{i}");
    }
    assert!(store.check().expect("check").problems.is_empty());
    drop(store);
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    assert_eq!(
        store
            .series(&sparse_key(3))
            .expect("read")
            .expect("kept")
            .values()[0],
        103.0
    );
}

#[test]
fn compaction_quarantines_a_record_that_fails_its_checksum_and_moves_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sparse_store(dir.path());
    // S0 is the first record of the first segment: its payload starts after
    // the segment's and the record's 16-byte headers.
    let first = dir.path().join("vlog").join("0000000001.seg");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .expect("open");
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xAB; 8], 32 + 4000).expect("damage");
    drop(f);

    let report = store.compact().expect("compaction goes on");
    assert_eq!(report.quarantined_records, 1, "{report:?}");
    assert!(
        report.moved_records > 0 && report.removed_segments > 0,
        "{report:?}"
    );
    assert!(store.poisoned().is_none());
    assert!(first.exists(), "the quarantined segment is kept");
    let e = store
        .series(&sparse_key(0))
        .expect_err("damaged")
        .to_string();
    assert!(e.contains("checksum mismatch"), "{e}");
    for i in 1..20 {
        let view = store.series(&sparse_key(i)).expect("read").expect("kept");
        assert!(view.values().iter().all(|&v| v == sparse_value(i)), "S{i}");
    }
    let problems = store.check().expect("check").problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("checksum mismatch"), "{problems:?}");
    // Compaction leaves the quarantined segment alone from now on.
    assert_eq!(store.compact().expect("again").quarantined_records, 0);
    drop(store);
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    assert_eq!(
        store
            .series(&sparse_key(5))
            .expect("read")
            .expect("kept")
            .values()[0],
        5.0
    );
}

#[test]
fn a_compaction_that_runs_out_of_space_gives_up_cleanly_and_tries_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sparse_store(dir.path());
    let segments_before = vlog_files(dir.path());
    // The second copy fails: the first is already appended.
    store.inject_append_failure(1).expect("inject");
    let e = store.compact().expect_err("out of space").to_string();
    assert!(e.contains("the disk is full"), "{e}");
    assert!(e.contains("vlog"), "names the file: {e}");
    assert!(store.poisoned().is_none(), "a full disk does not poison");
    assert_eq!(vlog_files(dir.path()), segments_before);
    for i in 0..20 {
        let view = store.series(&sparse_key(i)).expect("read").expect("kept");
        assert!(view.values().iter().all(|&v| v == sparse_value(i)), "S{i}");
    }
    // Writes go on where the copies were undone, and a retry compacts.
    store.enqueue(job("b")).expect("e");
    let lease = store.claim(1).expect("claim").remove(0);
    store
        .complete(lease.token, vec![series(&sparse_key(1), vec![7.0; 2000])])
        .expect("complete after the failure");
    let report = store.compact().expect("compact");
    assert!(report.removed_segments > 0, "{report:?}");
    assert!(store.check().expect("check").problems.is_empty());
    drop(store);
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    assert_eq!(
        store
            .series(&sparse_key(1))
            .expect("read")
            .expect("kept")
            .values()[0],
        7.0
    );
    assert_eq!(
        store
            .series(&sparse_key(2))
            .expect("read")
            .expect("kept")
            .values()[0],
        102.0
    );
    assert!(store.check().expect("check").problems.is_empty());
}

/// Stores one 1000-value series (so it goes to the value log) in a store at
/// `dir`, closes it, and returns the key and the segment file.
fn store_one_large_series(dir: &std::path::Path) -> (SeriesKey, std::path::PathBuf) {
    let key = SeriesKey::new(sym("A"), "sma(5)").expect("key");
    let store = Store::open(dir, StoreConfig::default()).expect("open");
    store.enqueue(job("a")).expect("e");
    let lease = store.claim(1).expect("claim").remove(0);
    store
        .complete(lease.token, vec![series(&key, vec![1.0; 1000])])
        .expect("complete");
    let seg = std::fs::read_dir(dir.join("vlog"))
        .expect("ls")
        .next()
        .expect("one segment")
        .expect("entry")
        .path();
    (key, seg)
}

#[test]
fn unindexed_value_log_tail_is_truncated_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, seg) = store_one_large_series(dir.path());
    let len = std::fs::metadata(&seg).expect("stat").len();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open");
    std::io::Write::write_all(&mut f, &[7u8; 1000]).expect("append garbage");
    drop(f);
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    assert_eq!(store.recovery_report().vlog.truncated_bytes, 1000);
    assert_eq!(std::fs::metadata(&seg).expect("stat").len(), len);
    assert_eq!(
        &*store.series(&key).expect("read").expect("kept").values(),
        &[1.0; 1000]
    );
}

#[test]
fn corrupted_series_bytes_are_reported_not_returned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, seg) = store_one_large_series(dir.path());
    let mut bytes = std::fs::read(&seg).expect("read");
    let last = bytes.len() - 40;
    bytes[last] ^= 0xff;
    std::fs::write(&seg, bytes).expect("write");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    let e = store.series(&key).expect_err("corrupt").to_string();
    assert!(e.contains("checksum mismatch"), "{e}");
    assert_eq!(store.check().expect("check").problems.len(), 1);
}

#[test]
fn second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    let e = Store::open(dir.path(), StoreConfig::default()).expect_err("locked");
    match &e {
        kiln_store::StoreError::InUse { dir: d, holder } => {
            assert_eq!(d, dir.path());
            assert_eq!(
                *holder,
                Some(std::process::id()),
                "the pid the holder wrote"
            );
        }
        other => panic!("not InUse: {other}"),
    }
    let text = e.to_string();
    assert!(
        text.contains(&format!("is in use by process {}", std::process::id())),
        "{text}"
    );
}

#[test]
fn an_open_that_fails_for_another_reason_does_not_blame_another_kiln() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Store::open(dir.path(), StoreConfig::default()).expect("open"));
    // sled's data file is a directory now: its open fails with an I/O
    // error while kiln's own lock is free.
    let db = kiln_store::sled_dir(dir.path()).expect("sled").join("db");
    std::fs::remove_file(&db).expect("rm");
    std::fs::create_dir(&db).expect("mkdir");
    let e = Store::open(dir.path(), StoreConfig::default())
        .expect_err("sled cannot open a directory as its file")
        .to_string();
    assert!(e.contains("sled"), "{e}");
    assert!(!e.contains("in use"), "{e}");
}

#[test]
fn small_series_stay_in_sled_and_large_ones_go_to_the_value_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    let vlog_bytes = || -> u64 {
        std::fs::read_dir(dir.path().join("vlog"))
            .expect("ls")
            .map(|e| e.expect("entry").metadata().expect("stat").len())
            .sum()
    };
    let empty = vlog_bytes();
    let small = SeriesKey::new(sym("A"), "rsi(14)").expect("key");
    let large = SeriesKey::new(sym("A"), "sma(200)").expect("key");
    store.enqueue(job("a")).expect("enqueue");
    let lease = store.claim(1).expect("claim").remove(0);
    store
        .complete(lease.token, vec![series(&small, vec![0.5; 16])])
        .expect("complete");
    assert_eq!(vlog_bytes(), empty, "a 16-value series is kept inline");
    store.enqueue(job("b")).expect("enqueue");
    let lease = store.claim(1).expect("claim").remove(0);
    store
        .complete(lease.token, vec![series(&large, vec![0.25; 2000])])
        .expect("complete");
    assert!(
        vlog_bytes() >= empty + 16_000,
        "a 2000-value series goes to the value log"
    );
    assert_eq!(
        store
            .series(&small)
            .expect("read")
            .expect("stored")
            .values()[..],
        [0.5; 16]
    );
    assert_eq!(
        store
            .series(&large)
            .expect("read")
            .expect("stored")
            .values()[..],
        [0.25; 2000][..]
    );
    assert_eq!(
        store.series_keys(&sym("A")).expect("keys"),
        vec![small, large]
    );
}

#[test]
fn the_store_counts_the_bytes_it_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    let key = SeriesKey::new(sym("A"), "sma(200)").expect("key");
    let before = store.bytes_written();
    store.enqueue(job("a")).expect("enqueue");
    let lease = store.claim(1).expect("claim").remove(0);
    let enqueued_and_claimed = store.bytes_written() - before;
    // Two job records and the queue's meta: small.
    assert!(
        (100..2_000).contains(&enqueued_and_claimed),
        "{enqueued_and_claimed}"
    );
    let before = store.bytes_written();
    store
        .complete(lease.token, vec![series(&key, vec![0.25; 2000])])
        .expect("complete");
    let completed = store.bytes_written() - before;
    // 16,000 bytes of values in the value log, with a record header, and
    // a few small records in sled (head, chunk pointer, job, event, meta).
    assert!((16_000..17_500).contains(&completed), "{completed}");
}

#[test]
fn a_half_written_sled_snapshot_left_by_a_kill_does_not_stop_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    let id = store.enqueue(job("kept")).expect("enqueue").id();
    drop(store);
    // Twice more: the store lives in a copied generation, the first gone.
    drop(Store::open(dir.path(), StoreConfig::default()).expect("reopen"));
    drop(Store::open(dir.path(), StoreConfig::default()).expect("reopen"));
    // What a kill between sled's snapshot write and its rename leaves: a
    // `.generating` file that sorts after every complete snapshot.
    let partial = kiln_store::sled_dir(dir.path())
        .expect("sled")
        .join("snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&partial, b"half a snapshot").expect("write");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    assert_eq!(store.recovery_report().partial_snapshots_removed, 1);
    assert!(!partial.exists());
    assert_eq!(
        store.job(id).expect("job").map(|j| j.state),
        Some(JobState::Queued)
    );
}

#[test]
fn a_checkpoint_stores_results_and_keeps_the_job_running() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    let id = store
        .enqueue(job("A").symbols(vec![sym("A")]))
        .expect("enqueue")
        .id();
    let l = store.claim(1).expect("claim").remove(0);
    let key = SeriesKey::new(Symbol::new("A").expect("symbol"), "sma(3)").expect("key");
    store
        .checkpoint(l.token, vec![series(&key, (0..5).map(f64::from).collect())])
        .expect("checkpoint");
    assert_eq!(
        store.job(id).expect("job").map(|j| j.state),
        Some(JobState::Running)
    );
    assert_eq!(
        store.series(&key).expect("read").map(|v| v.values().len()),
        Some(5)
    );
    assert!(
        store.events(0, 10).expect("events").is_empty(),
        "no outcome yet"
    );
    // Survives a restart; the job is requeued with its checkpoint kept.
    drop(store);
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    assert_eq!(
        store.series(&key).expect("read").map(|v| v.values().len()),
        Some(5)
    );
    let again = store.claim(1).expect("claim").remove(0);
    // The old lease is gone.
    let e = store.checkpoint(l.token, vec![]).expect_err("stale lease");
    assert!(matches!(e, StoreError::LeaseLost { .. }), "{e}");
    store.complete(again.token, vec![]).expect("complete");
    assert_eq!(
        store.job(id).expect("job").map(|j| j.state),
        Some(JobState::Succeeded)
    );
}

#[test]
fn an_appended_frame_reads_in_place_per_chunk_across_folds_compaction_and_reopen() {
    use kiln_store::{Coverage, FrameKey, FrameRead, FrameRows, FrameWrite};
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = || StoreConfig {
        segment_bytes_max: 64 * 1024,
        // Every chunk and state in the value log.
        inline_series_bytes_max: 0,
        ..StoreConfig::default()
    };
    let covers = |bars: u64| Coverage {
        bars,
        last_ts: bars as i64,
        hash: bars,
    };
    let key = FrameKey::new(sym("A"), "@plan:1").expect("key");
    // Column c, row r: c * 1e6 + r.
    let rows = |from: u64, to: u64| -> Vec<Vec<f64>> {
        (0..2)
            .map(|c| (from..to).map(|r| c as f64 * 1e6 + r as f64).collect())
            .collect()
    };
    let run = |store: &Store, write: FrameWrite| {
        store.enqueue(job("w")).expect("e");
        let lease = store.claim(1).expect("claim").remove(0);
        store.complete(lease.token, vec![write]).expect("complete");
    };
    let store = Store::open(dir.path(), cfg()).expect("open");
    run(
        &store,
        FrameWrite {
            key: key.clone(),
            rows: FrameRows::Replace {
                labels: vec!["a".into(), "b".into()],
            },
            covers: covers(3000),
            columns: rows(0, 3000),
            state: Some(vec![0; 20_000]),
        },
    );
    for n in 3000..3100u64 {
        run(
            &store,
            FrameWrite {
                key: key.clone(),
                rows: FrameRows::Append { after: covers(n) },
                covers: covers(n + 1),
                columns: rows(n, n + 1),
                state: (n % 10 == 9).then(|| vec![(n % 256) as u8; 20_000]),
            },
        );
    }
    let expect = |store: &Store| {
        let b = SeriesKey::new(sym("A"), "b").expect("key");
        let view = store.series(&b).expect("read").expect("stored");
        // 96 tails folded into three 32-row chunks; the last 4 still tails.
        assert_eq!(view.chunks().len(), 1 + 3 + 4);
        let values = view.values();
        assert_eq!(values.len(), 3100);
        assert!(values.iter().enumerate().all(|(r, &v)| v == 1e6 + r as f64));
        let head = store.frame(&key).expect("read").expect("stored");
        assert_eq!(head.covers(), covers(3100));
        let (at, state) = head.state().expect("a state");
        assert_eq!(
            (at, state.len(), state[0]),
            (covers(3100), 20_000, (3099 % 256) as u8)
        );
    };
    expect(&store);
    // The states rewritten every 10 appends left garbage to compact.
    let report = store.compact().expect("compact");
    assert!(report.removed_segments > 0, "{report:?}");
    expect(&store);
    assert_eq!(store.check().expect("check").problems, Vec::<String>::new());
    drop(store);
    let store = Store::open(dir.path(), cfg()).expect("reopen");
    expect(&store);
    assert_eq!(store.check().expect("check").problems, Vec::<String>::new());
}

#[test]
fn appends_beyond_every_tail_slot_go_to_chunks_after_the_tails_and_read_in_order() {
    use kiln_store::{Coverage, FrameKey, FrameRead, FrameRows, FrameWrite};
    let dir = tempfile::tempdir().expect("tempdir");
    let covers = |bars: u64| Coverage {
        bars,
        last_ts: bars as i64,
        hash: bars,
    };
    let key = FrameKey::new(sym("A"), "@plan:1").expect("key");
    let run = |store: &Store, rows: FrameRows, from: u64, to: u64| {
        store.enqueue(job("w")).expect("e");
        let lease = store.claim(1).expect("claim").remove(0);
        let write = FrameWrite {
            key: key.clone(),
            rows,
            covers: covers(to),
            columns: vec![(from..to).map(|r| r as f64).collect()],
            state: None,
        };
        store.complete(lease.token, vec![write]).expect("complete");
    };
    let append =
        |store: &Store, n: u64| run(store, FrameRows::Append { after: covers(n) }, n, n + 1);
    let expect = |store: &Store, n: u64| {
        let a = SeriesKey::new(sym("A"), "a").expect("key");
        let view = store.series(&a).expect("read").expect("stored");
        let values = view.values();
        assert_eq!(values.len() as u64, n);
        assert!(values.iter().enumerate().all(|(r, &v)| v == r as f64));
        let head = store.frame(&key).expect("read").expect("stored");
        assert_eq!(head.covers(), covers(n));
        assert_eq!(store.check().expect("check").problems, Vec::<String>::new());
    };
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    run(
        &store,
        FrameRows::Replace {
            labels: vec!["a".into()],
        },
        0,
        10,
    );
    // Folds fall behind: 256 appends fill every tail slot, 20 more go to
    // chunks of their own after the tails.
    store.pause_folds(true).expect("pause");
    for n in 10..286 {
        append(&store, n);
    }
    expect(&store, 286);
    // The writer finds the frame's end after those chunks when it reads it
    // anew: later appends are not taken for stale ones.
    drop(store);
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    store.pause_folds(true).expect("pause");
    for n in 286..290 {
        append(&store, n);
    }
    expect(&store, 290);
    // A fold takes the tails and the chunks after them.
    store.pause_folds(false).expect("resume");
    for n in 290..300 {
        append(&store, n);
    }
    expect(&store, 300);
    let a = SeriesKey::new(sym("A"), "a").expect("key");
    let view = store.series(&a).expect("read").expect("stored");
    let sizes: Vec<usize> = view.chunks().iter().map(|c| c.len()).collect();
    // The body, rows 10 to 290 folded, then ten tails.
    let mut want = vec![10, 280];
    want.extend([1; 10]);
    assert_eq!(sizes, want);
    // A replace with fewer rows: the frame covers those, not the appends'.
    run(
        &store,
        FrameRows::Replace {
            labels: vec!["a".into()],
        },
        0,
        5,
    );
    expect(&store, 5);
}

#[test]
fn a_power_loss_in_relaxed_mode_cuts_a_frame_back_to_its_rows_on_disk() {
    use kiln_store::{Coverage, FrameKey, FrameRead, FrameRows, FrameWrite};
    let dir = tempfile::tempdir().expect("tempdir");
    let relaxed = StoreConfig {
        durability: Durability::Relaxed,
        tick_ms: 3_600_000,
        // Tails and states in the value log, where a power loss reaches them.
        inline_series_bytes_max: 0,
        ..StoreConfig::default()
    };
    let covers = |bars: u64| Coverage {
        bars,
        last_ts: bars as i64,
        hash: bars,
    };
    let key = FrameKey::new(sym("A"), "@plan:1").expect("key");
    let write = |rows: FrameRows, from: u64, to: u64, state: Option<u8>| FrameWrite {
        key: key.clone(),
        rows,
        covers: covers(to),
        columns: vec![(from..to).map(|r| r as f64).collect()],
        state: state.map(|s| vec![s; 100]),
    };
    let run = |store: &Store, w: FrameWrite| {
        store.enqueue(job("w")).expect("e");
        let lease = store.claim(1).expect("claim").remove(0);
        store.complete(lease.token, vec![w]).expect("complete");
    };
    {
        let store = Store::open(dir.path(), relaxed.clone()).expect("open");
        let labels = vec!["a".to_string()];
        run(&store, write(FrameRows::Replace { labels }, 0, 10, Some(1)));
        run(
            &store,
            write(FrameRows::Append { after: covers(10) }, 10, 11, None),
        );
        store.sync().expect("sync");
        // Past the synced mark: two tails, the second with a state.
        run(
            &store,
            write(FrameRows::Append { after: covers(11) }, 11, 12, None),
        );
        run(
            &store,
            write(FrameRows::Append { after: covers(12) }, 12, 13, Some(2)),
        );
        store.simulate_power_loss(true).expect("power loss");
    }
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    let r = store.recovery_report();
    assert_eq!((r.vlog.lost_records, r.rerun_lost), (3, 2), "{r:?}");
    let view = store
        .series(&SeriesKey::new(sym("A"), "a").expect("key"))
        .expect("read")
        .expect("kept");
    assert_eq!(
        &*view.values(),
        &(0..11).map(|r| r as f64).collect::<Vec<_>>()[..]
    );
    let head = store.frame(&key).expect("read").expect("kept");
    assert_eq!(head.covers(), covers(11), "cut back to the rows on disk");
    // The head had moved to the lost state (the one before was released):
    // the frame keeps its rows and no state (the engine recomputes it).
    assert_eq!(head.state(), None, "the lost state is gone");
    assert_eq!(store.check().expect("check").problems, Vec::<String>::new());
    // The frame takes appends again from where it now ends.
    run(
        &store,
        write(FrameRows::Append { after: covers(11) }, 11, 12, None),
    );
    assert_eq!(
        store.frame(&key).expect("read").expect("kept").covers(),
        covers(12)
    );
}

/// `Sync` mode: what a group applied is revealed to readers (events, the
/// watermark) only once the syncer has made it durable, so a crash cannot
/// take back an event or a job id a reader saw.
#[test]
fn in_sync_mode_readers_see_a_commit_only_once_it_is_durable() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    let first = store.enqueue(job("A")).expect("enqueue").id();
    let l = store.claim(1).expect("claim").remove(0);
    let before = store.watermark().expect("watermark");
    assert!(store.wait_durable(Duration::ZERO).expect("durable"));

    store.hold_syncer(true);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            store.complete(l.token, vec![]).expect("complete");
            store.enqueue(job("B")).expect("enqueue").id()
        });
        // Applied (the counters say so) but not durable: nothing revealed.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.stats().expect("stats").count(JobState::Succeeded) == 0 {
            assert!(std::time::Instant::now() < deadline, "never applied");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(store.watermark().expect("watermark"), before);
        assert!(store.events(0, 10).expect("events").is_empty());
        assert!(!store.wait_durable(Duration::from_millis(5)).expect("wait"));

        store.hold_syncer(false);
        let second = writer.join().expect("writer");
        assert!(second > first);
        assert!(store.wait_durable(Duration::from_secs(10)).expect("wait"));
        let after = store.watermark().expect("watermark");
        assert_eq!(after.next_job_id, second + 1);
        let events = store.events(0, 10).expect("events");
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].job_id, events[0].state),
            (first, JobState::Succeeded)
        );
    });
}

/// The largest job, event and checkpoint the bounds allow make sled write
/// blob files (pages over about 128 KiB); kiln fsyncs them before the sled
/// flush that points at them, and a reopen (a copy of sled's directory,
/// every page read back) finds them whole.
#[test]
fn the_largest_job_event_and_checkpoint_survive_reopen_through_sled_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        inline_series_bytes_max: 64 * 1024,
        ..StoreConfig::default()
    };
    let q = cfg.queue.clone();
    let store = Store::open(dir.path(), cfg.clone()).expect("open");
    let symbols: Vec<Symbol> = (0..q.job_symbols_max)
        .map(|i| sym(&format!("{i:0>32}")))
        .collect();
    let big = kiln_store::NewJob::new(
        "k".repeat(kiln_store::KIND_BYTES_MAX),
        vec![0xA5; q.payload_bytes_max],
    )
    .symbols(symbols.clone())
    .idempotency_key("i".repeat(kiln_store::IDEMPOTENCY_KEY_BYTES_MAX));
    let id = store.enqueue(big).expect("the largest job").id();
    let lease = store.claim(1).expect("claim").remove(0);
    // The largest inline series: 64 KiB of values, in sled.
    let key = SeriesKey::new(symbols[0].clone(), "sma(5)").expect("key");
    let values: Vec<f64> = (0..8000).map(f64::from).collect();
    store
        .checkpoint(lease.token, vec![series(&key, values.clone())])
        .expect("the largest checkpoint");
    let error = "e".repeat(kiln_store::ERROR_BYTES_MAX);
    store
        .fail(lease.token, &error)
        .expect("fail: the largest event");
    let sled_dir = kiln_store::sled_dir(dir.path()).expect("sled");
    let blobs = std::fs::read_dir(sled_dir.join("blobs"))
        .expect("blobs")
        .count();
    assert!(
        blobs > 0,
        "no blob written: the test does not reach sled's blobs"
    );
    drop(store);

    let store = Store::open(dir.path(), cfg).expect("reopen");
    let job = store.job(id).expect("read").expect("job");
    assert_eq!(job.symbols, symbols);
    assert_eq!(job.payload.len(), q.payload_bytes_max);
    assert_eq!(job.last_error.as_deref(), Some(error.as_str()));
    let events = store.events(0, 10).expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].error.as_deref(), Some(error.as_str()));
    assert_eq!(
        &*store.series(&key).expect("read").expect("kept").values(),
        values.as_slice()
    );
    assert!(store.check().expect("check").problems.is_empty());
}

/// A store whose sled directory is gone (a restore that left it out, say)
/// is refused with nothing changed, not opened as a new, empty store whose
/// open would then delete the value log nothing indexes.
#[test]
fn a_store_whose_sled_directory_is_missing_is_refused_not_emptied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, seg) = store_one_large_series(dir.path());
    // Two opens: the store now lives in a copied generation.
    drop(Store::open(dir.path(), StoreConfig::default()).expect("reopen"));
    let generation = kiln_store::sled_dir(dir.path()).expect("sled");
    std::fs::remove_file(dir.path().join("CURRENT")).expect("rm CURRENT");
    let e = Store::open(dir.path(), StoreConfig::default())
        .expect_err("refused")
        .to_string();
    assert!(e.contains("nothing was changed"), "{e}");
    assert!(generation.exists(), "the generation is kept");
    assert!(seg.exists(), "the value log is kept");
}

/// A failed fsync may have lost what it covered while this process's page
/// cache still shows it: the directory does not open again in this
/// process, even once the poisoned store is gone; another directory does.
#[test]
fn a_directory_whose_fsync_failed_does_not_open_again_in_this_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    store.enqueue(job("before")).expect("enqueue");
    store.inject_commit_failure(true).expect("inject");
    let e = store.enqueue(job("after")).expect_err("the commit fails");
    assert!(e.is_fatal(), "{e}");
    drop(store);
    // Through another spelling of the same directory too.
    let other_spelling = dir.path().join(".");
    for path in [dir.path(), other_spelling.as_path()] {
        let e = Store::open(path, StoreConfig::default()).expect_err("refused");
        assert!(e.is_fatal(), "{e}");
        assert!(e.to_string().contains("restart kiln"), "{e}");
        assert!(e.to_string().contains("injected fsync failure"), "{e}");
    }
    let elsewhere = tempfile::tempdir().expect("tempdir");
    drop(Store::open(elsewhere.path(), StoreConfig::default()).expect("another directory opens"));
}

/// Under steady load the writer never idles (here its idle tick is an hour
/// away): compaction runs between groups all the same, and the garbage of
/// a series replaced over and over does not pile up.
#[test]
fn compaction_runs_under_steady_load_not_only_when_idle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig {
        tick_ms: 3_600_000,
        // About 32 KiB per series: eight to a segment.
        segment_bytes_max: 256 * 1024,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config).expect("open");
    let key = SeriesKey::new(sym("S"), "close").expect("key");
    let first_segment = dir.path().join("vlog/0000000001.seg");
    assert!(first_segment.exists());
    // The load: longer than the second the writer waits without idling.
    let started = std::time::Instant::now();
    let mut written = 0usize;
    while written < 200 || started.elapsed() < Duration::from_millis(2500) {
        store.enqueue(job(&written.to_string())).expect("enqueue");
        let lease = store.claim(1).expect("claim").pop().expect("a job");
        store
            .complete(lease.token, vec![series(&key, vec![written as f64; 4096])])
            .expect("complete");
        written += 1;
    }
    // Every record but the last is garbage: without compaction about
    // written / 8 segments would be left.
    let segments = fs_segments(dir.path());
    assert!(!first_segment.exists(), "the first segment was compacted");
    assert!(
        segments * 2 < written / 8,
        "{segments} segments left after {written} series"
    );
    let view = store.series(&key).expect("read").expect("stored");
    assert!(view.values().iter().all(|&v| v == (written - 1) as f64));
    assert!(store.check().expect("check").problems.is_empty());
}
