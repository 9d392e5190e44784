//! A FORMAT_VERSION 4 directory (sled without generations) opens as it is
//! and becomes the current format's. A data directory written by
//! FORMAT_VERSION 3
//! (`tests/fixtures/format-3`, made as its README says) opens with every
//! later kiln and is migrated:
//! its jobs in every state, its series (inline and in the value log), its
//! bars, events, aggregates (stored with a format-5-sized `Meta`, which has
//! no `stats_through`) and paused priorities read back as written,
//! the job a killed process left running is recovered, and the store takes
//! new work. A FORMAT_VERSION 7 directory (`tests/fixtures/format-7`),
//! whose bar tails carry no data version, reads back and takes ticks.
//! Expected values come from the formulas the fixtures were written with,
//! not from reading them.

use std::path::Path;

use kiln_store::prelude::*;
use kiln_store::{
    Bar, BarColumns, Clock, Coverage, FrameKey, JobState, NewJob, Priority, QueueConfig, SeriesKey,
    Store, StoreConfig, Symbol,
};

const T0: u64 = 1_700_000_000_000;
const DAY_NS: i64 = 86_400_000_000_000;
const TS0: i64 = 1_600_000_000_000_000_000;

/// The bars the fixture stored: bar `i` closes at `base + i / 4`.
fn bars(n: usize, base: f64, vwap: bool) -> BarColumns {
    let mut c = BarColumns::default();
    for i in 0..n {
        let close = base + i as f64 * 0.25;
        c.push(Bar {
            ts: TS0 + i as i64 * DAY_NS,
            open: close - 0.1,
            high: close + 1.0,
            low: close - 1.0,
            close,
            volume: 1000.0 + i as f64,
            vwap: if vwap { close } else { f64::NAN },
        });
    }
    c
}

fn sym(s: &str) -> Symbol {
    Symbol::new(s).expect("symbol")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("ls fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "README.md" {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A fixture, copied (opening writes: recovery, the lock file).
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture, dir.path());
    dir
}

/// The format-3 fixture, opened.
fn open_fixture() -> (tempfile::TempDir, Store) {
    let dir = copy_fixture("format-3");
    let config = StoreConfig {
        queue: QueueConfig {
            clock: Clock::manual(T0 + 10),
            ..QueueConfig::default()
        },
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config).expect("a format-3 directory opens");
    (dir, store)
}

/// The jobs' payloads and symbols read back after a second open too (the
/// first rewrote the records it recovered in this format).
#[test]
fn its_jobs_keep_their_payloads_and_symbols_after_a_second_open() {
    let (dir, store) = open_fixture();
    drop(store);
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    let job = |id| store.job(id).expect("read").expect("the job is kept");
    assert_eq!(
        (&*job(1).payload, job(1).symbols),
        (&b"sma(5)"[..], vec![sym("AAA")])
    );
    assert_eq!(&*job(4).payload, b"retry-me");
    assert!(job(8).payload.is_empty());
    assert!(store.check().expect("check").problems.is_empty());
}

#[test]
fn a_format_3_directory_opens_with_its_jobs_in_every_state() {
    let (_dir, store) = open_fixture();
    let report = store.recovery_report();
    assert_eq!((report.requeued, report.dead), (1, 0), "job 6 was running");

    let job = |id| store.job(id).expect("read").expect("the job is kept");
    let expect = [
        (1, JobState::Succeeded, Priority::High, "sma(5)", 1),
        (2, JobState::Succeeded, Priority::Normal, "rsi(3)", 1),
        (3, JobState::Dead, Priority::Normal, "fail-me", 1),
        (4, JobState::Failed, Priority::Normal, "retry-me", 1),
        (5, JobState::Cancelled, Priority::Normal, "cancel-me", 0),
        (6, JobState::Queued, Priority::Normal, "interrupted", 1),
        (7, JobState::Queued, Priority::Normal, "waiting", 0),
        (8, JobState::Queued, Priority::Low, "", 0),
    ];
    for (id, state, priority, payload, attempts) in expect {
        let j = job(id);
        assert_eq!(
            (j.state, j.priority, &*j.payload, j.attempts),
            (state, priority, payload.as_bytes(), attempts),
            "job {id}"
        );
    }
    assert!(store.job(9).expect("read").is_none());
    assert_eq!(job(1).symbols, vec![sym("AAA")]);
    assert_eq!(job(1).idempotency_key.as_deref(), Some("k1"));
    assert_eq!(job(1).finished_ms, Some(T0 + 7));
    assert_eq!(job(3).last_error.as_deref(), Some("boom"));
    assert_eq!(job(3).attempts_max, 1);
    let retry = job(4);
    assert_eq!(retry.last_error.as_deref(), Some("try again"));
    assert!(
        (T0 + 7 + 500..=T0 + 7 + 1000).contains(&retry.run_at_ms),
        "{}",
        retry.run_at_ms
    );
    assert_eq!(
        job(6).last_error.as_deref(),
        Some("the process ended during attempt 1")
    );
    assert_eq!(job(7).idempotency_key.as_deref(), Some("k7"));
    assert_eq!(
        (job(8).kind.as_str(), job(8).run_at_ms),
        ("refresh", T0 + 3_600_000)
    );

    let stats = store.stats().expect("stats");
    let counts: Vec<u64> = JobState::ALL.iter().map(|&s| stats.count(s)).collect();
    assert_eq!(counts, vec![3, 0, 2, 1, 1, 1]);
    let depth: Vec<u64> = Priority::ALL.iter().map(|&p| stats.depth(p)).collect();
    assert_eq!(depth, vec![0, 3, 1]);
    assert_eq!(stats.paused, [false, false, true]);

    let history: Vec<u64> = store
        .history(10)
        .expect("history")
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(history, vec![5, 3, 2, 1], "newest first");
    let aaa = store.symbol_stats(&sym("AAA")).expect("stats");
    assert_eq!((aaa.jobs, aaa.failures, aaa.duration_ms_total), (2, 1, 14));
    let bbb = store.symbol_stats(&sym("BBB")).expect("stats");
    assert_eq!((bbb.jobs, bbb.failures, bbb.duration_ms_total), (1, 1, 7));

    let events: Vec<(u64, u64, JobState, Option<String>)> = store
        .events(0, 100)
        .expect("events")
        .into_iter()
        .map(|e| (e.seq, e.job_id, e.state, e.error))
        .collect();
    assert_eq!(
        events,
        vec![
            (1, 1, JobState::Succeeded, None),
            (2, 2, JobState::Succeeded, None),
            (3, 3, JobState::Dead, Some("boom".into())),
            (4, 4, JobState::Failed, Some("try again".into())),
            (5, 5, JobState::Cancelled, None),
        ]
    );
    assert!(store.check().expect("check").problems.is_empty());
}

#[test]
fn a_format_3_directory_keeps_its_series_and_bars() {
    let (_dir, store) = open_fixture();
    let (aaa, bbb) = (sym("AAA"), sym("BBB"));
    for (symbol, want) in [
        (&aaa, bars(300, 100.0, false)),
        (&bbb, bars(40, 50.0, true)),
    ] {
        let view = store.bars(symbol, ..).expect("read").expect("has bars");
        let got = view.to_columns();
        assert_eq!(got.len(), want.len(), "{symbol}");
        for i in 0..want.len() {
            assert!(got.bar(i).same_as(&want.bar(i)), "{symbol} bar {i}");
        }
        let version = store.data_version(symbol).expect("read").expect("version");
        assert_eq!(
            (
                version.bars,
                version.first_ts,
                version.last_ts,
                version.hash
            ),
            (
                want.len() as u64,
                want.ts[0],
                want.ts[want.len() - 1],
                want.digest()
            ),
            "{symbol}"
        );
        assert_eq!(view.version(), version);
    }
    let symbols: Vec<Symbol> = store
        .bar_symbols()
        .expect("symbols")
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(symbols, vec![aaa.clone(), bbb.clone()]);

    let key = |s: &Symbol, f: &str| SeriesKey::new(s.clone(), f).expect("key");
    let sma = store
        .series(&key(&aaa, "sma(5)"))
        .expect("read")
        .expect("stored in the value log");
    assert_eq!(sma.values().len(), 300);
    for (i, v) in sma.values().iter().enumerate() {
        if i < 4 {
            assert!(v.is_nan(), "sma(5)[{i}] = {v}");
        } else {
            assert_eq!(*v, i as f64 * 0.5, "sma(5)[{i}]");
        }
    }
    let version = store.data_version(&aaa).expect("read").expect("version");
    assert!(sma.is_current(&version));
    // A series without values kept only a state: it is now a frame with
    // no column, and its state.
    let frame = |s: &Symbol, name: &str| {
        store
            .frame(&FrameKey::new(s.clone(), name).expect("key"))
            .expect("read")
            .expect("migrated into a frame")
    };
    let state = frame(&aaa, "@state:00000000000000aa");
    assert!(state.labels().is_empty());
    assert_eq!(
        state.state(),
        Some((Coverage::of(&version), &[1u8, 2, 3, 4][..]))
    );
    assert!(
        store
            .series(&key(&aaa, "@state:00000000000000aa"))
            .expect("read")
            .is_none(),
        "a frame without columns has no label"
    );
    let rsi = store
        .series(&key(&bbb, "rsi(3)"))
        .expect("read")
        .expect("stored inline");
    let want: Vec<Option<f64>> = (0..40)
        .map(|i| (i >= 3).then_some(100.0 - i as f64))
        .collect();
    let got: Vec<Option<f64>> = rsi
        .values()
        .iter()
        .map(|v| (!v.is_nan()).then_some(*v))
        .collect();
    assert_eq!(got, want);
    let rsi_frame = frame(&bbb, "rsi(3)");
    assert_eq!(rsi_frame.labels(), &["rsi(3)".to_string()]);
    assert_eq!(rsi_frame.state().map(|(_, s)| s), Some(&[9u8][..]));
    assert_eq!(
        store.series_keys(&aaa).expect("keys"),
        vec![key(&aaa, "sma(5)")]
    );
    assert_eq!(
        store.frames(&aaa).expect("frames"),
        vec![
            FrameKey::new(aaa.clone(), "@state:00000000000000aa").expect("key"),
            FrameKey::new(aaa.clone(), "sma(5)").expect("key"),
        ]
    );
    assert_eq!(store.recovery_report().migrated_series, 3);
    let format = std::fs::read_to_string(store.dir().join("FORMAT_VERSION")).expect("read");
    assert_eq!(
        format,
        format!("kiln-store {}\n", kiln_store::FORMAT_VERSION),
        "the migration is recorded"
    );
    assert_eq!(
        store.series_writer(&key(&aaa, "sma(5)")).expect("read"),
        Some(1)
    );
    assert_eq!(
        store.series_writer(&key(&bbb, "rsi(3)")).expect("read"),
        Some(2)
    );
}

#[test]
fn a_format_3_directory_takes_new_work() {
    let (_dir, store) = open_fixture();
    let id = store
        .enqueue(NewJob::new("compute", b"new".to_vec()))
        .expect("enqueue")
        .id();
    assert_eq!(id, 9, "ids continue after the stored ones");
    let dup = store
        .enqueue(NewJob::new("compute", b"again".to_vec()).idempotency_key("k7"))
        .expect("enqueue")
        .id();
    assert_eq!(dup, 7, "the unfinished job's idempotency key is known");
    // Strict priority, FIFO: the retry (job 4) is not due yet and low
    // priority (job 8) is paused.
    let claimed: Vec<u64> = store
        .claim(10)
        .expect("claim")
        .iter()
        .map(|l| l.job.id)
        .collect();
    assert_eq!(claimed, vec![6, 7, 9]);
    assert!(store.check().expect("check").problems.is_empty());
}

/// A FORMAT_VERSION 4 directory differs from 5 in its layout alone: sled in
/// `sled/`, no `CURRENT` and no `COMMITTED`. It opens as it is, sled's
/// first copy makes it the current format's, and the format file says so.
#[test]
fn a_format_4_directory_opens_and_becomes_the_current_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    let id = store
        .enqueue(NewJob::new("compute", b"kept".to_vec()))
        .expect("enqueue")
        .id();
    drop(store);
    // Make it what format 4 wrote.
    let generation = kiln_store::sled_dir(dir.path()).expect("sled");
    if generation != dir.path().join("sled") {
        std::fs::rename(&generation, dir.path().join("sled")).expect("rename");
    }
    for file in ["CURRENT", "COMMITTED"] {
        let _ = std::fs::remove_file(dir.path().join(file));
    }
    std::fs::write(dir.path().join("FORMAT_VERSION"), "kiln-store 4\n").expect("write");

    let store = Store::open(dir.path(), StoreConfig::default()).expect("open format 4");
    assert_eq!(
        store.job(id).expect("read").map(|j| j.payload.to_vec()),
        Some(b"kept".to_vec())
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("FORMAT_VERSION")).expect("read"),
        format!("kiln-store {}\n", kiln_store::FORMAT_VERSION)
    );
    assert!(dir.path().join("CURRENT").exists(), "sled was copied");
    assert!(
        !dir.path().join("sled").exists(),
        "removed once the format file says the current format"
    );
    assert!(store.check().expect("check").problems.is_empty());
}

/// The fixture's data versions are 40 bytes (no bar tails): new bars after
/// the stored ones go to tail slots, and the longer record replaces it.
#[test]
fn a_format_3_directory_takes_ticks_into_bar_tails() {
    let (dir, store) = open_fixture();
    let aaa = sym("AAA");
    let all = bars(303, 100.0, false);
    for i in 300..303 {
        let mut s = store.bar_ingest().expect("session");
        let src = s.source("tick");
        s.stage(&aaa, src, &all.slice(i, i + 1), &[])
            .expect("stage");
        let report = s.commit(&mut |_| Ok(())).expect("commit");
        assert_eq!(report.changed.len(), 1);
    }
    let read = |store: &Store| {
        let view = store.bars(&aaa, ..).expect("read").expect("has bars");
        assert_eq!(view.ts(), all.ts.as_slice());
        assert_eq!(view.close(), all.close.as_slice());
        assert_eq!(view.version().bars, 303);
        let check = store.check().expect("check");
        assert!(check.problems.is_empty(), "{:?}", check.problems);
        check.bar_chunks
    };
    let chunks = read(&store);
    drop(store);
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    assert_eq!(read(&store), chunks, "the same chunks after a reopen");
}

/// Format 7's tails carry no version (its data version records stay
/// current): its bars read back, then single-bar ticks fill its slots past
/// a merge of its old tails, and all of it survives a reopen.
#[test]
fn a_format_7_directory_reads_its_bar_tails_and_takes_ticks() {
    let dir = copy_fixture("format-7");
    let store =
        Store::open(dir.path(), StoreConfig::default()).expect("a format-7 directory opens");
    let (aaa, bbb) = (sym("AAA"), sym("BBB"));
    let (all_a, all_b) = (bars(341, 100.0, false), bars(90, 50.0, true));
    let read = |store: &Store, s: &Symbol, all: &BarColumns, n: usize| {
        let view = store.bars(s, ..).expect("read").expect("has bars");
        assert_eq!(view.ts(), &all.ts[..n], "{s}");
        assert_eq!(view.close(), &all.close[..n], "{s}");
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(view.vwap()), bits(&all.vwap[..n]), "{s}");
        let version = store.data_version(s).expect("version").expect("has one");
        assert_eq!(version, view.version(), "{s}");
        assert_eq!(
            (version.bars, version.first_ts, version.last_ts),
            (n as u64, all.ts[0], all.ts[n - 1]),
            "{s}"
        );
        version
    };
    read(&store, &aaa, &all_a, 305);
    read(&store, &bbb, &all_b, 80);
    let check = store.check().expect("check");
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    assert_eq!(check.bar_chunks, 17, "as the program that wrote it counted");

    let tick = |store: &Store, s: &Symbol, all: &BarColumns, i: usize| {
        let mut session = store.bar_ingest().expect("session");
        let src = session.source("tick");
        session
            .stage(s, src, &all.slice(i, i + 1), &[])
            .expect("stage");
        let report = session.commit(&mut |_| Ok(())).expect("commit");
        assert_eq!(report.changed.len(), 1);
    };
    for i in 305..340 {
        tick(&store, &aaa, &all_a, i);
        read(&store, &aaa, &all_a, i + 1);
    }
    for i in 80..90 {
        tick(&store, &bbb, &all_b, i);
    }
    let before = (
        read(&store, &aaa, &all_a, 340),
        read(&store, &bbb, &all_b, 90),
    );
    let check = store.check().expect("check");
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    drop(store);

    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("FORMAT_VERSION")).expect("read"),
        format!("kiln-store {}\n", kiln_store::FORMAT_VERSION)
    );
    let after = (
        read(&store, &aaa, &all_a, 340),
        read(&store, &bbb, &all_b, 90),
    );
    assert_eq!(after, before, "the same versions after a reopen");
    tick(&store, &aaa, &all_a, 340);
    read(&store, &aaa, &all_a, 341);
    let check = store.check().expect("check");
    assert!(check.problems.is_empty(), "{:?}", check.problems);
}
