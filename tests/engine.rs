//! The engine end to end: submit, run, stored features equal to a direct
//! computation, idempotent submissions, refresh after new bars (continued)
//! and after a correction (recomputed), many-symbol jobs with checkpoints,
//! and bad input ending a job dead with a message naming the symbol.

mod common;

use common::{SAMPLE, sample_options};
use kiln::store::prelude::*;
use std::path::{Path, PathBuf};

use kiln::config::{Config, EngineConfig};
use kiln::engine::{Engine, RetryOutcome};
use kiln::features::{Bars, Plan, spec::parse_list};
use kiln::market::IngestOptions;
use kiln::store::{
    BarColumns, CancelOutcome, JobQueue, JobState, NewJob, Priority, ResultStore, SeriesKey, Store,
    Symbol,
};

const SPECS: &str = "sma(20),ema(12),rsi(14),macd(12,26,9),bbands(20,2),atr(14),obv";

fn sym(s: &str) -> Symbol {
    Symbol::new(s).expect("symbol")
}

/// Every output computed directly by the plan over `cols`.
fn direct(plan: &Plan, cols: &BarColumns) -> Vec<Vec<f64>> {
    let mut frame = plan.new_frame();
    let bars = Bars {
        open: &cols.open,
        high: &cols.high,
        low: &cols.low,
        close: &cols.close,
        volume: &cols.volume,
    };
    plan.compute(bars, &mut frame).expect("compute");
    (0..plan.output_labels().len())
        .map(|i| frame.output(i).expect("output").to_vec())
        .collect()
}

fn assert_stored_equals_direct(engine: &Engine, symbol: &str, plan: &Plan) {
    let s = sym(symbol);
    let bars = engine.store().bars(&s, ..).expect("read").expect("bars");
    let want = direct(plan, &bars.to_columns());
    for (label, want) in plan.output_labels().iter().zip(want) {
        let got = engine.feature(&s, label).expect("read").expect("stored");
        assert!(got.is_current(&bars.version()), "{symbol} {label} is stale");
        assert_eq!(got.values().len(), want.len(), "{symbol} {label}");
        for (i, (g, w)) in got.values().iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{symbol} {label} bar {i}: {g} vs {w}"
            );
        }
    }
}

#[test]
fn submitted_features_are_stored_equal_to_a_direct_computation() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = Engine::open(dir.path(), Config::default()).expect("open");
    engine
        .ingest(&[SAMPLE.into()], &sample_options(), &mut |_| {})
        .expect("ingest");
    let specs = parse_list(SPECS).expect("specs");
    let symbols: Vec<Symbol> = ["AAPL", "FB", "GOOG", "IBM", "MSFT"].map(sym).to_vec();
    let first = engine
        .submit(&symbols, &specs, Priority::Normal)
        .expect("submit");
    let again = engine
        .submit(&symbols, &specs, Priority::High)
        .expect("submit again");
    let ids = |v: &[kiln::store::Enqueued]| v.iter().map(|e| e.id()).collect::<Vec<_>>();
    assert_eq!(
        ids(&first),
        ids(&again),
        "the same request while queued is the same job"
    );
    let report = engine.run_until_idle(&mut |_| {}).expect("run");
    assert_eq!((report.succeeded, report.dead, report.symbols), (5, 0, 5));
    let plan = Plan::new(&specs);
    for s in ["AAPL", "FB", "MSFT"] {
        assert_stored_equals_direct(&engine, s, &plan);
    }
    let events = engine.store().events(0, 100).expect("events");
    assert_eq!(events.len(), 5);
    assert!(events.iter().all(|e| e.state == JobState::Succeeded));
}

/// The sample cut to its first `n` rows per symbol, as a CSV in `dir`.
fn cut_sample(dir: &Path, keep: impl Fn(usize) -> bool) -> PathBuf {
    let text = {
        use std::io::Read;
        let mut s = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(SAMPLE).expect("open"))
            .read_to_string(&mut s)
            .expect("gunzip");
        s
    };
    let mut lines = text.lines();
    let mut out = String::new();
    out.push_str(lines.next().expect("header"));
    out.push('\n');
    for (i, l) in lines.enumerate() {
        if keep(i) {
            out.push_str(l);
            out.push('\n');
        }
    }
    let p = dir.join(format!("cut-{}.csv", out.len()));
    std::fs::write(&p, out).expect("write");
    p
}

#[test]
fn new_bars_refresh_stored_features_incrementally_and_exactly() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = Engine::open(dir.path().join("data"), Config::default()).expect("open");
    // AAPL is the first 3270 rows: ingest 3000 of them, compute, then the rest.
    let early = cut_sample(dir.path(), |i| i < 3000);
    engine
        .ingest(&[early], &sample_options(), &mut |_| {})
        .expect("ingest");
    let specs = parse_list(SPECS).expect("specs");
    engine
        .submit(&[sym("AAPL")], &specs, Priority::Normal)
        .expect("submit");
    engine.run_until_idle(&mut |_| {}).expect("run");
    let (summary, refresh) = engine
        .ingest(&[SAMPLE.into()], &sample_options(), &mut |_| {})
        .expect("ingest all");
    assert!(summary.changed_symbols.contains(&sym("AAPL")));
    assert_eq!(
        refresh.len(),
        1,
        "one refresh for the one symbol with features"
    );
    let report = engine.run_until_idle(&mut |_| {}).expect("refresh");
    assert_eq!(
        (report.succeeded, report.continued, report.recomputed),
        (1, 1, 0)
    );
    assert_stored_equals_direct(&engine, "AAPL", &Plan::new(&specs));

    // A correction of an early bar: the refresh recomputes in full.
    let fix = dir.path().join("fix.csv");
    std::fs::write(&fix, "Ticker,Date,Open,High,Low,Close,Volume\nAAPL,2000-03-02,127.0,127.94,120.69,123.0,2779100\n")
        .expect("write");
    let (_, refresh) = engine
        .ingest(&[fix], &sample_options(), &mut |_| {})
        .expect("correct");
    assert_eq!(refresh.len(), 1);
    let report = engine.run_until_idle(&mut |_| {}).expect("refresh");
    assert_eq!((report.continued, report.recomputed), (0, 1));
    assert_stored_equals_direct(&engine, "AAPL", &Plan::new(&specs));
}

#[test]
fn a_many_symbol_job_checkpoints_and_completes() {
    let dir = tempfile::tempdir().expect("dir");
    let config = Config {
        engine: EngineConfig {
            submit_job_symbols: 5,
            checkpoint_symbols: 2,
            ..EngineConfig::default()
        },
        ..Config::default()
    };
    let engine = Engine::open(dir.path(), config).expect("open");
    engine
        .ingest(&[SAMPLE.into()], &sample_options(), &mut |_| {})
        .expect("ingest");
    let specs = parse_list("rsi(14),sma(5)").expect("specs");
    let symbols: Vec<Symbol> = ["AAPL", "FB", "GOOG", "IBM", "MSFT"].map(sym).to_vec();
    let jobs = engine
        .submit(&symbols, &specs, Priority::Low)
        .expect("submit");
    assert_eq!(jobs.len(), 1);
    let report = engine.run_until_idle(&mut |_| {}).expect("run");
    assert_eq!((report.succeeded, report.symbols), (1, 5));
    let plan = Plan::new(&specs);
    for s in ["AAPL", "GOOG", "MSFT"] {
        assert_stored_equals_direct(&engine, s, &plan);
    }
}

#[test]
fn bad_requests_and_bad_jobs_are_named() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = Engine::open(dir.path(), Config::default()).expect("open");
    engine
        .ingest(&[SAMPLE.into()], &sample_options(), &mut |_| {})
        .expect("ingest");
    let specs = parse_list("sma(5)").expect("specs");
    let e = engine
        .submit(&[sym("NOPE")], &specs, Priority::Normal)
        .expect_err("no bars");
    assert!(e.to_string().contains("NOPE has no bars"), "{e}");
    // A job written by hand with a bad feature list ends dead, named.
    let store: &Store = engine.store();
    let id = store
        .enqueue(NewJob::new("compute", b"sma(0)".to_vec()).symbols(vec![sym("AAPL")]))
        .expect("enqueue")
        .id();
    let report = engine.run_until_idle(&mut |_| {}).expect("run");
    assert_eq!(report.dead, 1);
    let job = store.job(id).expect("job").expect("exists");
    assert_eq!(job.state, JobState::Dead);
    assert!(
        job.last_error.as_deref().unwrap_or("").contains("sma(0)"),
        "{:?}",
        job.last_error
    );
    // A job for a symbol without bars too.
    let id = store
        .enqueue(NewJob::new("compute", b"sma(5)".to_vec()).symbols(vec![sym("GONE")]))
        .expect("enqueue")
        .id();
    engine.run_until_idle(&mut |_| {}).expect("run");
    let job = store.job(id).expect("job").expect("exists");
    assert_eq!(job.last_error.as_deref(), Some("GONE has no bars"));
    assert!(store.series_keys(&sym("GONE")).expect("keys").is_empty());
}

#[test]
fn results_the_store_refuses_end_their_job_dead_and_the_run_goes_on() {
    let dir = tempfile::tempdir().expect("dir");
    let mut config = Config::default();
    // AAPL's sma(5) is 3270 values: over this bound; FB's 300 fit.
    config.store.queue.series_bytes_max = 8 * 1024;
    let engine = Engine::open(dir.path(), config).expect("open");
    engine
        .ingest(&[SAMPLE.into()], &sample_options(), &mut |_| {})
        .expect("ingest");
    let specs = parse_list("sma(5)").expect("specs");
    let big = engine
        .submit(&[sym("AAPL")], &specs, Priority::Normal)
        .expect("submit")[0]
        .id();
    let small = engine
        .submit(&[sym("FB")], &specs, Priority::Low)
        .expect("submit")[0]
        .id();
    let report = engine.run_until_idle(&mut |_| {}).expect("the run goes on");
    assert_eq!((report.succeeded, report.dead), (1, 1), "{report:?}");
    let store: &Store = engine.store();
    let job = store.job(big).expect("job").expect("exists");
    assert_eq!(job.state, JobState::Dead);
    let error = job.last_error.unwrap_or_default();
    assert!(error.contains("series_bytes_max = 8192"), "{error}");
    assert!(store.series_keys(&sym("AAPL")).expect("keys").is_empty());
    assert_eq!(
        store.job(small).expect("job").map(|j| j.state),
        Some(JobState::Succeeded)
    );
}

#[test]
fn a_checkpoint_the_store_refuses_ends_its_job_dead_too() {
    let dir = tempfile::tempdir().expect("dir");
    let mut config = Config {
        engine: EngineConfig {
            submit_job_symbols: 5,
            checkpoint_symbols: 1,
            ..EngineConfig::default()
        },
        ..Config::default()
    };
    config.store.queue.series_bytes_max = 8 * 1024;
    let engine = Engine::open(dir.path(), config).expect("open");
    engine
        .ingest(&[SAMPLE.into()], &sample_options(), &mut |_| {})
        .expect("ingest");
    let specs = parse_list("sma(5)").expect("specs");
    // One job: AAPL's chunk (too large) is checkpointed before FB's.
    let id = engine
        .submit(&[sym("AAPL"), sym("FB")], &specs, Priority::Normal)
        .expect("submit")[0]
        .id();
    let report = engine.run_until_idle(&mut |_| {}).expect("the run goes on");
    assert_eq!((report.succeeded, report.dead), (0, 1), "{report:?}");
    let job = engine.store().job(id).expect("job").expect("exists");
    assert_eq!(job.state, JobState::Dead);
    assert!(
        job.last_error
            .as_deref()
            .unwrap_or("")
            .contains("series_bytes_max = 8192"),
        "{:?}",
        job.last_error
    );
}

#[test]
fn dead_and_cancelled_jobs_are_retried_as_new_jobs() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = Engine::open(dir.path(), Config::default()).expect("open");
    engine
        .ingest(&[SAMPLE.into()], &sample_options(), &mut |_| {})
        .expect("ingest");
    let store: &Store = engine.store();
    // Dead: a symbol whose bars arrive only after the job ended.
    let dead = store
        .enqueue(
            NewJob::new("compute", b"sma(5)".to_vec())
                .symbols(vec![sym("LATE")])
                .priority(Priority::High),
        )
        .expect("enqueue")
        .id();
    engine.run_until_idle(&mut |_| {}).expect("run");
    assert_eq!(
        store.job(dead).expect("job").expect("exists").state,
        JobState::Dead
    );
    // Cancelled: a queued job for AAPL.
    let cancelled = engine
        .submit(
            &[sym("AAPL")],
            &parse_list("ema(3)").expect("specs"),
            Priority::Low,
        )
        .expect("submit")[0]
        .id();
    assert_eq!(
        engine.cancel_as("test", cancelled).expect("cancel"),
        CancelOutcome::Cancelled
    );

    // A job that is not dead or cancelled is not retried, and says why.
    let queued = store
        .enqueue(NewJob::new("compute", b"sma(2)".to_vec()).symbols(vec![sym("IBM")]))
        .expect("enqueue")
        .id();
    assert_eq!(
        engine.retry_as("test", queued).expect("retry"),
        RetryOutcome::NotRetryable(JobState::Queued)
    );
    let e = engine.retry_as("test", 424_242).expect_err("no such job");
    assert!(e.to_string().contains("424242"), "{e}");

    let csv = dir.path().join("late.csv");
    std::fs::write(
        &csv,
        "symbol,ts,open,high,low,close,volume\n\
         LATE,2020-01-02,1,1,1,1,1\nLATE,2020-01-03,2,2,2,2,1\nLATE,2020-01-06,3,3,3,3,1\n\
         LATE,2020-01-07,4,4,4,4,1\nLATE,2020-01-08,5,5,5,5,1\n",
    )
    .expect("write");
    engine
        .ingest(&[csv], &IngestOptions::default(), &mut |_| {})
        .expect("ingest LATE");
    let mut again = Vec::new();
    for id in [dead, cancelled] {
        let RetryOutcome::Retried(new) = engine.retry_as("test", id).expect("retry") else {
            panic!("job {id} was not retried");
        };
        assert_ne!(new.id(), id, "a new job");
        let (old, copy) = (
            store.job(id).expect("job").expect("exists"),
            store.job(new.id()).expect("job").expect("exists"),
        );
        assert_eq!(copy.state, JobState::Queued);
        assert_eq!(
            (
                copy.kind,
                copy.payload,
                copy.symbols,
                copy.priority,
                copy.attempts
            ),
            (old.kind, old.payload, old.symbols, old.priority, 0)
        );
        again.push(new.id());
    }
    engine.run_until_idle(&mut |_| {}).expect("run");
    for id in again {
        assert_eq!(
            store.job(id).expect("job").expect("exists").state,
            JobState::Succeeded
        );
    }
    // sma(5) of closes 1..=5 is 3, by hand.
    let late = engine
        .feature(&sym("LATE"), "sma(5)")
        .expect("read")
        .expect("stored");
    assert_eq!(late.values().last().copied(), Some(3.0));
}

/// The integrity check's problems and stale series.
fn check(engine: &Engine) -> (Vec<String>, u64) {
    let (report, stale) = engine.check().expect("check");
    (report.problems, stale)
}

#[test]
fn warm_up_refreshes_what_went_stale_behind_the_engine() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = Engine::open(dir.path(), Config::default()).expect("open");
    engine
        .ingest(&[SAMPLE.into()], &sample_options(), &mut |_| {})
        .expect("ingest");
    let specs = parse_list("sma(5),rsi(14)").expect("specs");
    engine
        .submit(&[sym("IBM")], &specs, Priority::Normal)
        .expect("submit");
    engine.run_until_idle(&mut |_| {}).expect("run");
    assert_eq!(check(&engine), (vec![], 0));
    // New bars through the store directly: no refresh is queued for them.
    let bars = engine
        .store()
        .bars(&sym("IBM"), ..)
        .expect("read")
        .expect("bars");
    let mut next = bars.to_columns().slice(bars.len() - 1, bars.len());
    next.ts[0] += 86_400_000_000_000;
    let mut session = engine.store().bar_ingest().expect("session");
    let src = session.source("direct");
    session.stage(&sym("IBM"), src, &next, &[]).expect("stage");
    session.commit(&mut |_| Ok(())).expect("commit");
    let (problems, stale) = check(&engine);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(stale, 2, "two outputs");
    assert_eq!(engine.warm_up().expect("warm up").len(), 1);
    let report = engine.run_until_idle(&mut |_| {}).expect("run");
    assert_eq!(report.continued, 1);
    assert_eq!(check(&engine), (vec![], 0));
    assert_stored_equals_direct(&engine, "IBM", &Plan::new(&specs));
}

#[test]
fn non_finite_bars_staged_through_the_library_end_the_job_naming_symbol_and_bar() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = Engine::open(dir.path(), Config::default()).expect("open");
    // The store's own session checks order, not values: a NaN gets in.
    let mut cols = kiln::market::synth::universe(1, 30, 9).remove(0).1;
    cols.close[17] = f64::NAN;
    let mut session = engine.store().bar_ingest().expect("session");
    let src = session.source("library");
    session
        .stage(&sym("NANCO"), src, &cols, &[])
        .expect("stage");
    session.commit(&mut |_| Ok(())).expect("commit");
    let specs = parse_list("sma(3)").expect("specs");
    let id = engine
        .submit(&[sym("NANCO")], &specs, Priority::Normal)
        .expect("submit")[0]
        .id();
    let report = engine.run_until_idle(&mut |_| {}).expect("run");
    assert_eq!(report.dead, 1);
    let job = engine.store().job(id).expect("job").expect("exists");
    assert_eq!(job.state, JobState::Dead);
    let error = job.last_error.unwrap_or_default();
    assert!(
        error.starts_with("NANCO: bar 17 (2015-01-27T00:00:00Z) has close NaN"),
        "{error}"
    );
}

#[test]
fn an_engine_claiming_more_than_its_backend_takes_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(
        dir.path(),
        kiln::store::StoreConfig {
            queue: kiln::store::QueueConfig {
                batch_jobs_max: 10,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .expect("open");
    let config = EngineConfig {
        claim_jobs_max: 20,
        claim_jobs_min: 1,
        ..EngineConfig::default()
    };
    let e = Engine::with_backend(store, config).expect_err("over the bound");
    assert!(
        e.to_string()
            .contains("claim_jobs_max = 20 is above the store's batch_jobs_max = 10"),
        "{e}"
    );
}

#[test]
fn ticks_append_only_their_rows_and_stay_equal_to_a_direct_computation() {
    use kiln::store::{Coverage, FrameKey, FrameRead, SeriesRead};
    let dir = tempfile::tempdir().expect("dir");
    let engine = Engine::open(dir.path(), Config::default()).expect("open");
    // 30 symbols of 400 bars, then 300 more bars each, one per tick.
    let full = kiln::market::synth::universe(30, 700, 3);
    let head: Vec<(Symbol, BarColumns)> = full
        .iter()
        .map(|(s, c)| (s.clone(), c.slice(0, 400)))
        .collect();
    engine.ingest_columns("history", &head).expect("ingest");
    let specs = parse_list(SPECS).expect("specs");
    let plan = Plan::new(&specs);
    let symbols: Vec<Symbol> = full.iter().map(|(s, _)| s.clone()).collect();
    engine
        .submit(&symbols, &specs, Priority::Normal)
        .expect("submit");
    engine.run_until_idle(&mut |_| {}).expect("run");
    let (mut continued, mut state_saves) = (0, 0);
    let frame_key = |s: &Symbol| {
        FrameKey::new(s.clone(), format!("@plan:{:016x}", plan.fingerprint())).expect("key")
    };
    for tick in 400..700 {
        let bars: Vec<(Symbol, BarColumns)> = full
            .iter()
            .map(|(s, c)| (s.clone(), c.slice(tick, tick + 1)))
            .collect();
        let (_, queued) = engine.ingest_columns("tick", &bars).expect("ingest");
        assert_eq!(queued.len(), 1, "one refresh job for the tick's 30 symbols");
        let before = engine
            .store()
            .frame(&frame_key(&symbols[0]))
            .expect("read")
            .expect("stored")
            .state()
            .map(|(c, _)| c);
        let report = engine.run_until_idle(&mut |_| {}).expect("run");
        assert_eq!(
            (report.continued, report.recomputed),
            (30, 0),
            "tick {tick}"
        );
        continued += report.continued;
        let after = engine
            .store()
            .frame(&frame_key(&symbols[0]))
            .expect("read")
            .expect("stored");
        assert_eq!(after.covers().bars, tick as u64 + 1);
        let (saved_at, _) = after.state().expect("a state");
        if Some(saved_at) != before {
            state_saves += 1;
            // Saved once the last save is 256 bars behind.
            assert_eq!(saved_at.bars - before.map_or(0, |c: Coverage| c.bars), 256);
        }
    }
    assert_eq!(continued, 30 * 300);
    assert_eq!(state_saves, 300 / 256);
    for s in &symbols {
        assert_stored_equals_direct(&engine, s.as_str(), &plan);
    }
    // Each tick appended a tail; folds gathered every 32 into a chunk.
    let view = engine
        .feature(&symbols[0], "rsi(14)")
        .expect("read")
        .expect("stored");
    let chunks = view.chunks().len();
    assert_eq!(
        chunks,
        1 + 300 / 32 + 300 % 32,
        "the body, 9 folds, 12 tails"
    );
    assert_eq!(check(&engine), (vec![], 0));
    drop(engine);
    // Rows copied straight into a caller's buffers (`copy_series`: a
    // checksummed read of each record first, then `preadv` into the
    // buffers) are the rows of the views, over the body, folds and tails.
    let engine = Engine::open(dir.path(), Config::default()).expect("reopen");
    let unique = ["macd(12,26,9).signal", "sma(20)", "rsi(14)", "nope"];
    let twice = ["rsi(14)", "sma(20)", "rsi(14)", "nope"];
    for (pass, labels) in [
        ("records not yet checked", unique),
        ("records checked", unique),
        ("a label asked twice", twice),
    ] {
        for s in &symbols[..5] {
            let keys: Vec<SeriesKey> = labels
                .iter()
                .map(|l| SeriesKey::new(s.clone(), *l).expect("key"))
                .collect();
            for rows in [0..700, 0..1, 650..700, 390..430, 695..705, 699..700] {
                let mut bufs = vec![vec![-1.0; rows.len()]; keys.len()];
                let mut outs: Vec<&mut [f64]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
                let covers = engine
                    .store()
                    .copy_series(&keys, rows.clone(), &mut outs)
                    .expect("copy");
                assert_eq!(covers[3], None, "no series, no coverage");
                assert!(bufs[3].iter().all(|&v| v == -1.0), "left as it was");
                for (k, key) in keys[..3].iter().enumerate() {
                    let view = engine.store().series(key).expect("read").expect("stored");
                    assert_eq!(covers[k], Some(view.covers()), "{pass}");
                    let values = view.values();
                    for (i, got) in bufs[k].iter().enumerate() {
                        let row = rows.start + i;
                        let want: f64 = values.get(row).copied().unwrap_or(-1.0);
                        assert!(
                            got.to_bits() == want.to_bits(),
                            "{pass}: {s} {} row {row}: {got} vs {want}",
                            key.feature
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn a_plan_frame_whose_state_was_lost_is_recomputed_from_its_labels() {
    use kiln::store::{FrameKey, FrameRead, FrameRows, FrameWrite, SeriesRead};
    let dir = tempfile::tempdir().expect("dir");
    let engine = Engine::open(dir.path(), Config::default()).expect("open");
    let full = kiln::market::synth::universe(1, 201, 5);
    let (s, cols) = &full[0];
    engine
        .ingest_columns("history", &[(s.clone(), cols.slice(0, 200))])
        .expect("ingest");
    let specs = parse_list(SPECS).expect("specs");
    let plan = Plan::new(&specs);
    engine
        .submit(std::slice::from_ref(s), &specs, Priority::Normal)
        .expect("submit");
    engine.run_until_idle(&mut |_| {}).expect("run");
    // The frame as a power loss in relaxed mode can leave it: rows, no state.
    let key = FrameKey::new(s.clone(), format!("@plan:{:016x}", plan.fingerprint())).expect("key");
    let head = engine.store().frame(&key).expect("read").expect("stored");
    let columns: Vec<Vec<f64>> = plan
        .output_labels()
        .iter()
        .map(|l| {
            engine
                .feature(s, l)
                .expect("read")
                .expect("stored")
                .values()
                .to_vec()
        })
        .collect();
    let store = engine.store();
    store.enqueue(NewJob::new("test", vec![])).expect("enqueue");
    let lease = store.claim(1).expect("claim").remove(0);
    let stateless = FrameWrite {
        key: key.clone(),
        rows: FrameRows::Replace {
            labels: plan.output_labels().to_vec(),
        },
        covers: head.covers(),
        columns,
        state: None,
    };
    store
        .complete(lease.token, vec![stateless])
        .expect("complete");
    assert!(
        store
            .frame(&key)
            .expect("read")
            .expect("stored")
            .state()
            .is_none()
    );

    let (_, queued) = engine
        .ingest_columns("tick", &[(s.clone(), cols.slice(200, 201))])
        .expect("ingest");
    assert_eq!(queued.len(), 1);
    let report = engine.run_until_idle(&mut |_| {}).expect("run");
    assert_eq!((report.continued, report.recomputed), (0, 1));
    assert_stored_equals_direct(&engine, s.as_str(), &plan);
    assert!(
        store
            .frame(&key)
            .expect("read")
            .expect("stored")
            .state()
            .is_some()
    );
}
