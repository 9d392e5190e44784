//! Power loss, with a filesystem that keeps only what was fsynced: the
//! `kiln` binary works on `kiln-powerfs` (FUSE, in memory), is killed at a
//! random moment, and the power is cut, so every file goes back to its last
//! fsync and every directory to its last fsync of itself. Then, in clean
//! processes on what survived: every acknowledged job (a `succeeded` event
//! that `run --watch` printed, which in `Sync` mode it does only once the
//! event is durable) has succeeded, every acknowledged submission and
//! ingest is there (an unacknowledged ingest all or not at all), and the
//! integrity check is clean. Finally one clean run finishes every job.
//! The child is a `run --until-idle --watch` (half of them claiming one or
//! two jobs at a time, a commit each) at every other cut, else an ingest
//! of new symbols or (every other one, once there are some) a tick: a few
//! bars after those of one of them, which go to bar tail slots and queue
//! refreshes that append to its frames. Segments are small (64 KiB), so
//! cuts land in segment rolls and compaction too. It is killed after a random delay drawn up to twice as
//! long as the last child of its kind lived (at most 300 ms), so kills land
//! all along its life: opening the store, claiming, committing, exiting.
//!
//! The `fresh_store_*` tests cut the power right after the first process
//! on a new store (they found that a new store's directory entries were
//! never fsynced, so its first process's work was lost).
//!
//! `KILN_POWER_CUTS` sets the number of cuts (default 12), `KILN_POWER_SEED`
//! repeats a run's choices (the seed is printed; the timing of a kill
//! against the child's progress still varies). Needs FUSE: `/dev/fuse`, and
//! root or `fusermount3` (Debian's `fuse3`); without it the test fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{SAMPLE, SAMPLE_MAP, kiln_command};
use kiln_powerfs::PowerFs;
use serde_json::Value;

/// Cuts when `KILN_POWER_CUTS` is not set.
const CUTS_DEFAULT: u64 = 12;
/// The longest wait before a kill.
const DELAY_MS_MAX: u64 = 300;
/// Every process's configuration: a kill during a job's attempt uses the
/// attempt up, and a job killed `attempts_max` times (4 by default) would
/// be dead, not finished, at the end. Segments of 64 KiB: results and bars
/// fill many, so cuts land in segment rolls (a new segment's file, rename
/// and directory entry) and compaction too.
const CONFIG: &str = "attempts_max = 1000\nsegment_bytes_max = 65536\n";
/// A run that claims one or two jobs at a time: a commit each, so a kill
/// lands between many acknowledgements.
const SMALL_CLAIMS: &str =
    "attempts_max = 1000\nsegment_bytes_max = 65536\nclaim_jobs_min = 1\nclaim_jobs_max = 2\n";

/// splitmix64: small, seeded, good enough to pick moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// The `kiln` binary on one data directory, with one configuration.
struct Kiln {
    data: PathBuf,
    config: PathBuf,
}

impl Kiln {
    /// `kiln --data <data> --config <config> <args…>`.
    fn command<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Command {
        let mut command = kiln_command([
            OsStr::new("--data"),
            self.data.as_os_str(),
            OsStr::new("--config"),
            self.config.as_os_str(),
        ]);
        command.args(args);
        command
    }

    /// Runs a clean process that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("run kiln");
        assert!(
            out.status.success(),
            "kiln {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("kiln {args:?}: {e}: {out}"))
    }

    /// Every job (the newest 100 000), or those in `state`: id to the job.
    fn jobs(&self, state: Option<&str>) -> BTreeMap<u64, Value> {
        let mut args = vec!["jobs", "list", "--limit", "100000"];
        if let Some(state) = state {
            args.extend(["--state", state]);
        }
        let list = self.json(&args);
        list.as_array()
            .expect("a JSON array of jobs")
            .iter()
            .map(|job| (job["id"].as_u64().expect("job id"), job.clone()))
            .collect()
    }

    /// A child process, stderr piped, to kill later.
    fn spawn(&self, args: &[&str]) -> Running {
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kiln");
        Running(Some(child))
    }
}

/// A child that is killed if the test fails while it runs.
struct Running(Option<Child>);

impl Running {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("a running child")
    }

    /// Lets it run for `delay`, then kills it (SIGKILL) if it still runs,
    /// and reaps it: whether it had exited on its own, its status, and how
    /// long it lived.
    fn kill_after(mut self, delay: Duration) -> (bool, ExitStatus, Duration) {
        let mut child = self.0.take().expect("a running child");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return (true, status, start.elapsed());
            }
            if start.elapsed() >= delay {
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
        child.kill().expect("SIGKILL");
        (false, child.wait().expect("wait"), start.elapsed())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn fsync_dir(dir: &Path) {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .unwrap_or_else(|e| panic!("fsync {}: {e}", dir.display()));
}

/// Reads `run --watch`'s stderr as it comes: the ids of the jobs whose
/// `succeeded` event arrived whole, and the other lines (for messages).
fn watch_events(child: &mut Child) -> JoinHandle<(Vec<u64>, Vec<String>)> {
    let stderr = child.stderr.take().expect("piped stderr");
    thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let (mut succeeded, mut other) = (Vec::new(), Vec::new());
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            // A line cut short by the kill was never acknowledged.
            if line.last() != Some(&b'\n') {
                break;
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            match serde_json::from_str::<Value>(&text) {
                Ok(event) if event["state"] == "succeeded" => {
                    succeeded.push(event["job"].as_u64().expect("event job id"));
                }
                Ok(_) => {}
                Err(_) => other.push(text),
            }
        }
        (succeeded, other)
    })
}

/// Daily bars, `rows` for each of `symbols` from day `from`, as a CSV file.
fn new_bars(path: &Path, symbols: &[String], from: u64, rows: u64, rng: &mut Rng) {
    let mut out = String::from("symbol,ts,open,high,low,close,volume\n");
    for symbol in symbols {
        let mut close = 50.0 + rng.below(100) as f64;
        for day in from..from + rows {
            let open = close;
            close = (open + (rng.below(200) as f64 - 100.0) / 50.0).max(1.0);
            let high = open.max(close) + rng.below(100) as f64 / 100.0;
            let low = (open.min(close) - rng.below(100) as f64 / 100.0).max(0.5);
            let volume = 1000 + rng.below(100_000);
            let ts = 946_684_800 + day * 86_400;
            out.push_str(&format!(
                "{symbol},{ts},{open:.2},{high:.2},{low:.2},{close:.2},{volume}\n"
            ));
        }
    }
    fs::write(path, out).expect("write bars");
}

/// Bar rows per symbol in a CSV export.
fn rows_per_symbol(export: &Path) -> BTreeMap<String, u64> {
    let text = fs::read_to_string(export).expect("read export");
    let mut rows = BTreeMap::new();
    for line in text.lines().skip(1) {
        let symbol = line.split(',').next().unwrap_or_default();
        *rows.entry(symbol.to_owned()).or_insert(0) += 1;
    }
    rows
}

/// What must be there after a cut.
#[derive(Default)]
struct Expected {
    /// Every acknowledged submission: job id to its payload.
    submitted: BTreeMap<u64, String>,
    /// Jobs acknowledged as succeeded, or seen succeeded after a cut (what
    /// a reader saw once must stay).
    succeeded: BTreeSet<u64>,
    /// Symbols of acknowledged ingests (or of one seen after a cut) and
    /// their bar rows; the sample's are in `base_*` only.
    ingested: BTreeMap<String, u64>,
    base_symbols: u64,
    base_bars: u64,
}

impl Expected {
    fn symbols(&self) -> u64 {
        self.base_symbols + self.ingested.len() as u64
    }

    fn bars(&self) -> u64 {
        self.base_bars + self.ingested.values().sum::<u64>()
    }
}

/// An ingest that was under way at the cut: its symbols, rows each, new
/// symbols or (`appends`) bars after those of symbols ingested before.
struct Unacknowledged {
    symbols: Vec<String>,
    rows: u64,
    appends: bool,
}

/// Checks the store after a cut against what was acknowledged; folds in
/// what the cut turned out to keep.
fn verify(
    kiln: &Kiln,
    work: &Path,
    at: &str,
    expected: &mut Expected,
    unacknowledged: Option<Unacknowledged>,
) {
    let succeeded = kiln.jobs(Some("succeeded"));
    let lost: Vec<u64> = expected
        .succeeded
        .iter()
        .filter(|id| !succeeded.contains_key(id))
        .copied()
        .collect();
    if !lost.is_empty() {
        let all = kiln.jobs(None);
        let now: Vec<&Value> = lost.iter().filter_map(|id| all.get(id)).collect();
        panic!(
            "{at}: acknowledged jobs {lost:?} are not succeeded after the power cut; \
             they are now: {now:?}"
        );
    }
    expected.succeeded.extend(succeeded.keys());

    let all = kiln.jobs(None);
    for (id, payload) in &expected.submitted {
        match all.get(id) {
            Some(job) => assert_eq!(
                job["payload"].as_str(),
                Some(payload.as_str()),
                "{at}: job {id} holds another payload (an id reused?): {job}"
            ),
            None => panic!("{at}: the acknowledged submission of job {id} ({payload}) is lost"),
        }
    }

    let stats = kiln.json(&["stats"]);
    let (symbols, bars) = (
        stats["symbols"].as_u64().expect("stats symbols"),
        stats["bars"].as_u64().expect("stats bars"),
    );
    if let Some(pending) = unacknowledged {
        let count = pending.symbols.len() as u64;
        let new_symbols = if pending.appends { 0 } else { count };
        let with = (
            expected.symbols() + new_symbols,
            expected.bars() + count * pending.rows,
        );
        if (symbols, bars) == with {
            for symbol in pending.symbols {
                *expected.ingested.entry(symbol).or_insert(0) += pending.rows;
            }
        }
    }
    assert_eq!(
        (symbols, bars),
        (expected.symbols(), expected.bars()),
        "{at}: (symbols, bars) after the power cut: an acknowledged ingest lost, or an \
         unacknowledged one half there; stats: {stats}"
    );
    if !expected.ingested.is_empty() {
        let export = work.join("export.csv");
        let list: Vec<&str> = expected.ingested.keys().map(String::as_str).collect();
        let list = list.join(",");
        let out = export.to_str().expect("utf-8 path");
        kiln.ok(&[
            "export",
            "--format",
            "csv",
            "--out",
            out,
            "--symbols",
            &list,
        ]);
        assert_eq!(
            rows_per_symbol(&export),
            expected.ingested,
            "{at}: bars of the acknowledged ingests"
        );
        fs::remove_file(&export).expect("remove export");
    }

    kiln.ok(&["check"]);
}

fn mount(tmp: &Path) -> PowerFs {
    let mnt = tmp.join("mnt");
    fs::create_dir(&mnt).expect("mkdir mnt");
    PowerFs::mount(&mnt).unwrap_or_else(|e| {
        panic!("cannot mount the power-loss filesystem, so this test cannot run: {e}")
    })
}

/// The first process on a new store: an acknowledged ingest, then the
/// power cut, before any other process opened the store.
fn fresh_store_ingest_then_cut(dir_exists: bool) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fs = mount(tmp.path());
    let data = fs.mountpoint().join("kiln");
    if dir_exists {
        fs::create_dir(&data).expect("mkdir data");
        fsync_dir(fs.mountpoint());
    }
    let config = tmp.path().join("kiln.toml");
    fs::write(&config, CONFIG).expect("write config");
    let kiln = Kiln { data, config };
    kiln.ok(&["ingest", "--map", SAMPLE_MAP, SAMPLE]);
    fs.power_cut();
    let listed = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let (root, inside) = (listed(fs.mountpoint()), listed(&kiln.data));
    let stats = kiln.json(&["stats"]);
    assert_eq!(
        (stats["symbols"].as_u64(), stats["bars"].as_u64()),
        (Some(5), Some(12_154)),
        "an acknowledged ingest into a new store is lost by a power cut; after it the \
         mount holds {root:?}, the data directory {inside:?}; stats: {stats}"
    );
}

/// kiln creates the data directory (`--data` is created if missing).
#[test]
fn fresh_store_in_a_new_directory_survives_a_power_cut() {
    fresh_store_ingest_then_cut(false);
}

/// The data directory exists, durably; kiln creates everything in it.
#[test]
fn fresh_store_in_an_existing_directory_survives_a_power_cut() {
    fresh_store_ingest_then_cut(true);
}

#[test]
fn acknowledged_work_survives_power_cuts() {
    let seed = env_u64("KILN_POWER_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let cuts = env_u64("KILN_POWER_CUTS").unwrap_or(CUTS_DEFAULT);
    println!("power_loss: seed {seed}, {cuts} cuts (KILN_POWER_SEED={seed} repeats the choices)");
    let mut rng = Rng(seed);
    let started = Instant::now();

    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path().join("work");
    fs::create_dir(&work).expect("mkdir work");
    let fs = mount(tmp.path());
    // The data directory is made durable here (an operator's mkdir), and
    // the first cut comes after a second process opened the store: a new
    // store's first process is the `fresh_store_*` tests' case.
    let data = fs.mountpoint().join("kiln");
    fs::create_dir(&data).expect("mkdir data");
    fsync_dir(fs.mountpoint());
    let (config, small_claims) = (work.join("kiln.toml"), work.join("small-claims.toml"));
    fs::write(&config, CONFIG).expect("write config");
    fs::write(&small_claims, SMALL_CLAIMS).expect("write config");
    let kiln = Kiln {
        data: data.clone(),
        config,
    };
    let kiln_small = Kiln {
        data,
        config: small_claims,
    };

    kiln.ok(&["ingest", "--map", SAMPLE_MAP, SAMPLE]);
    let stats = kiln.json(&["stats"]);
    let mut expected = Expected {
        base_symbols: stats["symbols"].as_u64().expect("symbols"),
        base_bars: stats["bars"].as_u64().expect("bars"),
        ..Expected::default()
    };
    assert_eq!(expected.base_symbols, 5, "the sample's symbols: {stats}");

    // Kills spread over a child's life: the delay is drawn up to twice as
    // long as the last child of its kind was seen to live (a killed one
    // lived at least that long).
    let (mut run_life, mut ingest_life) = (DELAY_MS_MAX / 2, DELAY_MS_MAX / 2);
    let mut acknowledged = BTreeSet::new();
    let (mut killed_runs, mut killed_ingests, mut ingests, mut ticks) = (0u64, 0u64, 0u64, 0u64);
    for cut in 0..cuts {
        let at = format!("cut {cut} (KILN_POWER_SEED={seed})");
        // New jobs every round: specs never asked for before.
        let n = cut + 2;
        for spec in [format!("sma({n})"), format!("ema({n}),rsi({n})")] {
            let out = kiln.json(&["submit", "--all", "--features", &spec]);
            for id in out["jobs"].as_array().expect("job ids") {
                expected
                    .submitted
                    .insert(id.as_u64().expect("job id"), spec.clone());
            }
        }

        let mut unacknowledged = None;
        // Cuts go through four kinds of child in turn: an ingest of new
        // symbols, a run, a tick (a few bars after those of one of the new
        // symbols: the live path, bar tail slots, and refreshes appended to
        // its computed frames), a run.
        if cut % 2 == 0 {
            ingests += 1;
            let ticked = match expected.ingested.len() as u64 {
                n if n > 0 && cut % 4 == 2 => expected.ingested.iter().nth(rng.below(n) as usize),
                _ => None,
            };
            let (symbols, from, rows) = match ticked {
                Some((symbol, &stored)) => (vec![symbol.clone()], stored, 1 + rng.below(3)),
                None => (
                    (0..1 + rng.below(3))
                        .map(|i| format!("NEW{cut}.{i}"))
                        .collect(),
                    0,
                    50 + rng.below(2000),
                ),
            };
            let appends = ticked.is_some();
            ticks += u64::from(appends);
            let csv = work.join("bars.csv");
            new_bars(&csv, &symbols, from, rows, &mut rng);
            let delay = rng.below(2 * ingest_life + 1).min(DELAY_MS_MAX);
            let mut child = kiln.spawn(&["ingest", csv.to_str().expect("utf-8 path")]);
            let mut stderr = child.child().stderr.take().expect("stderr");
            let (on_its_own, status, lived) = child.kill_after(Duration::from_millis(delay));
            let mut message = String::new();
            let _ = stderr.read_to_string(&mut message);
            let lived = (lived.as_millis() as u64).clamp(1, DELAY_MS_MAX);
            if on_its_own {
                assert!(status.success(), "{at}: kiln ingest failed: {message}");
                ingest_life = lived;
                for symbol in symbols {
                    *expected.ingested.entry(symbol).or_insert(0) += rows;
                }
            } else {
                killed_ingests += 1;
                ingest_life = ingest_life.max(lived);
                unacknowledged = Some(Unacknowledged {
                    symbols,
                    rows,
                    appends,
                });
            }
        } else {
            let delay = rng.below(2 * run_life + 1).min(DELAY_MS_MAX);
            let runner = if rng.below(2) == 0 {
                &kiln
            } else {
                &kiln_small
            };
            let mut child = runner.spawn(&["--json", "run", "--until-idle", "--watch"]);
            let events = watch_events(child.child());
            let (on_its_own, status, lived) = child.kill_after(Duration::from_millis(delay));
            let (succeeded, other) = events.join().expect("the event reader");
            let lived = (lived.as_millis() as u64).clamp(1, DELAY_MS_MAX);
            if on_its_own {
                assert!(
                    status.success(),
                    "{at}: kiln run failed: {}",
                    other.join("\n")
                );
                run_life = lived;
            } else {
                killed_runs += 1;
                run_life = run_life.max(lived);
            }
            acknowledged.extend(succeeded.iter().copied());
            expected.succeeded.extend(succeeded);
        }

        fs.power_cut();
        verify(&kiln, &work, &at, &mut expected, unacknowledged);
    }

    // One clean run finishes everything that was ever submitted.
    kiln.ok(&["run", "--until-idle"]);
    let all = kiln.jobs(None);
    let unfinished: Vec<&Value> = expected
        .submitted
        .keys()
        .filter_map(|id| all.get(id))
        .filter(|job| job["state"] != "succeeded")
        .collect();
    assert!(
        unfinished.is_empty(),
        "jobs not succeeded after a clean run (seed {seed}): {unfinished:?}"
    );
    let not_succeeded: Vec<&Value> = all
        .values()
        .filter(|job| job["state"] != "succeeded")
        .collect();
    assert!(
        not_succeeded.is_empty(),
        "jobs not succeeded after a clean run (seed {seed}): {not_succeeded:?}"
    );
    // The rest are the refreshes the ticks queued.
    let submitted: BTreeSet<u64> = all
        .iter()
        .filter(|(_, job)| job["kind"] != "refresh")
        .map(|(&id, _)| id)
        .collect();
    assert_eq!(
        submitted,
        expected.submitted.keys().copied().collect(),
        "every job but the ticks' refreshes is one that was submitted"
    );
    kiln.ok(&["check"]);

    let usage = fs.usage();
    fs.unmount().expect("unmount");
    println!(
        "power_loss: {cuts} cuts ({killed_runs} runs and {killed_ingests} of {ingests} ingests, \
         {ticks} of them ticks, killed mid-work), {} acknowledged jobs checked, {} jobs submitted, {} bars, \
         {} inodes at the end, seed {seed}, {:.1} s",
        acknowledged.len(),
        expected.submitted.len(),
        expected.bars(),
        usage.inodes,
        started.elapsed().as_secs_f64()
    );
}
