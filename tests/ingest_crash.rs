//! Ingest is all or nothing across a crash: `kiln ingest` is SIGKILLed at
//! random moments while it reads, stages and commits a 400-symbol file; after
//! each kill the store opens clean (`check`) and holds either none of the
//! file or all of it, bit for bit against the generated universe. 8 kills
//! by default; `KILN_INGEST_CRASH_ITERATIONS` sets more.

mod common;

use common::kiln_command;
use kiln::store::prelude::*;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln::market::export::{ExportFormat, write_bars};
use kiln::market::synth;
use kiln::store::{Store, StoreConfig};

fn ingest_cmd(data: &Path, file: &Path) -> Command {
    let mut c = kiln_command([
        OsStr::new("--data"),
        data.as_os_str(),
        OsStr::new("ingest"),
        file.as_os_str(),
    ]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

#[test]
fn a_killed_ingest_leaves_all_or_nothing() {
    let iterations: u64 = std::env::var("KILN_INGEST_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let dir = tempfile::tempdir().expect("dir");
    let universe = synth::universe(400, 500, 77);
    let file = dir.path().join("universe.csv");
    write_bars(
        &file,
        ExportFormat::Csv,
        universe.iter().map(|(s, c)| (s, c)),
    )
    .expect("write");

    // A clean run, for its duration and its result.
    let reference = dir.path().join("reference");
    let started = Instant::now();
    let status = ingest_cmd(&reference, &file).status().expect("run kiln");
    assert!(status.success());
    let full = started.elapsed();
    let want = Store::open(&reference, StoreConfig::default())
        .expect("open")
        .bar_symbols()
        .expect("symbols");
    assert_eq!(want.len(), 400);

    let mut state = 0x2545_f491_4f6c_dd1du64;
    let (mut none, mut all) = (0, 0);
    for i in 0..iterations {
        let data = dir.path().join(format!("run-{i}"));
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Anywhere from 30 % into a clean run to half again its length:
        // reading, staging, the commit and its fsync, and after the exit.
        let micros = full.as_micros() as u64;
        let delay = Duration::from_micros(micros * 3 / 10 + state % (micros * 12 / 10 + 1));
        let mut child = ingest_cmd(&data, &file).spawn().expect("spawn kiln");
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        let store = Store::open(&data, StoreConfig::default()).expect("reopen after the kill");
        let check = store.check().expect("check");
        assert!(
            check.problems.is_empty(),
            "kill {i} after {delay:?}: {:?}",
            check.problems
        );
        let got = store.bar_symbols().expect("symbols");
        if got.is_empty() {
            none += 1;
        } else {
            assert_eq!(
                got, want,
                "kill {i} after {delay:?}: a partial ingest is visible"
            );
            for (symbol, c) in &universe {
                let stored = store
                    .bars(symbol, ..)
                    .expect("read")
                    .expect("bars")
                    .to_columns();
                assert_eq!(stored.len(), c.len(), "kill {i}: {symbol}");
                for k in 0..c.len() {
                    assert!(
                        stored.bar(k).same_as(&c.bar(k)),
                        "kill {i}: {symbol} bar {k}"
                    );
                }
            }
            all += 1;
        }
    }
    eprintln!("{iterations} kills: {none} left nothing, {all} left everything");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("ls") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn a_killed_ingest_leaves_new_bars_with_their_refreshes_or_neither() {
    use kiln::config::Config;
    use kiln::engine::Engine;
    use kiln::features::standard_plan;
    use kiln::store::{BarColumns, JobState, Priority, Symbol};

    let iterations: u64 = std::env::var("KILN_INGEST_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let dir = tempfile::tempdir().expect("dir");
    // The base: 200 symbols of 300 bars, their features computed.
    let universe = synth::universe(200, 301, 78);
    let base = dir.path().join("base");
    let symbols: Vec<Symbol> = universe.iter().map(|(s, _)| s.clone()).collect();
    {
        let engine = Engine::open(&base, Config::default()).expect("open");
        let history: Vec<(Symbol, BarColumns)> = universe
            .iter()
            .map(|(s, c)| (s.clone(), c.slice(0, 300)))
            .collect();
        engine.ingest_columns("history", &history).expect("ingest");
        let plan = standard_plan().expect("plan");
        engine
            .submit(&symbols, plan.specs(), Priority::Normal)
            .expect("submit");
        engine.run_until_idle(&mut |_| {}).expect("run");
    }
    // The tick: one more bar per symbol, ingested by `kiln ingest`.
    let file = dir.path().join("tick.csv");
    let tick: Vec<(Symbol, BarColumns)> = universe
        .iter()
        .map(|(s, c)| (s.clone(), c.slice(300, 301)))
        .collect();
    write_bars(&file, ExportFormat::Csv, tick.iter().map(|(s, c)| (s, c))).expect("write");
    let reference = dir.path().join("reference");
    copy_dir(&base, &reference);
    let started = Instant::now();
    assert!(
        ingest_cmd(&reference, &file)
            .status()
            .expect("run")
            .success()
    );
    let full = started.elapsed();

    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let (mut none, mut all) = (0, 0);
    for i in 0..iterations {
        let data = dir.path().join(format!("tick-{i}"));
        copy_dir(&base, &data);
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let micros = full.as_micros() as u64;
        let delay = Duration::from_micros(micros * 3 / 10 + state % (micros * 12 / 10 + 1));
        let mut child = ingest_cmd(&data, &file).spawn().expect("spawn kiln");
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        let store = Store::open(&data, StoreConfig::default()).expect("reopen after the kill");
        assert!(
            store.check().expect("check").problems.is_empty(),
            "kill {i}"
        );
        let versions = store.data_versions(&symbols).expect("versions");
        let grown = versions
            .iter()
            .filter(|v| v.is_some_and(|v| v.bars == 301))
            .count();
        let refreshing: Vec<Symbol> = store
            .jobs(&Default::default(), 10_000)
            .expect("jobs")
            .into_iter()
            .filter(|j| j.kind == "refresh")
            .inspect(|j| assert_eq!(j.state, JobState::Queued, "kill {i}"))
            .flat_map(|j| j.symbols)
            .collect();
        match grown {
            0 => {
                assert!(
                    refreshing.is_empty(),
                    "kill {i}: refreshes without their bars"
                );
                none += 1;
            }
            200 => {
                let mut refreshing = refreshing;
                refreshing.sort();
                let mut want = symbols.clone();
                want.sort();
                assert_eq!(
                    refreshing, want,
                    "kill {i}: new bars without their refreshes"
                );
                all += 1;
            }
            n => panic!("kill {i}: {n} of 200 symbols have the new bar"),
        }
    }
    eprintln!("{iterations} kills: {none} left the tick out, {all} left it with its refreshes");
}
