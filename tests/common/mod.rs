//! What the integration tests share: the bundled sample, running the `kiln`
//! binary as a user does, waiting for a condition, the I/O fault shim, and
//! a small HTTP client (`http`). Each test binary uses its own subset.
#![allow(dead_code)]

pub mod http;

use std::ffi::OsStr;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use kiln::market::{IngestOptions, parse_map};

/// Five real symbols of daily bars (gzip CSV, `Ticker` and `Date` columns).
pub const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/data/stocks-5-daily.csv.gz"
);

/// The `--map` that names the sample's columns.
pub const SAMPLE_MAP: &str = "Ticker=symbol,Date=ts";

/// Ingest options that read the sample.
pub fn sample_options() -> IngestOptions {
    IngestOptions {
        map: parse_map(SAMPLE_MAP).expect("the sample's map"),
        ..IngestOptions::default()
    }
}

/// A command for the `kiln` binary this build made. Under cargo, `kiln
/// bench` has cargo build `kiln-bench` first, with other features than the
/// test build's (minutes of compiling); `cargo test` has built it beside
/// `kiln` already (for `bench/tests`), so there the command runs without
/// cargo's variables and `kiln bench` runs that one.
pub fn kiln_command<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Command {
    let kiln = std::path::Path::new(env!("CARGO_BIN_EXE_kiln"));
    let mut command = Command::new(kiln);
    if kiln.with_file_name("kiln-bench").exists() {
        command.env_remove("CARGO");
    }
    command.args(args);
    command
}

/// Runs `kiln` to its end.
pub fn kiln(args: &[&str]) -> Output {
    kiln_command(args).output().expect("run kiln")
}

/// Runs `kiln`, which must succeed; the output.
pub fn kiln_ok(args: &[&str]) -> Output {
    let out = kiln(args);
    assert!(
        out.status.success(),
        "kiln {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `kiln`, which must fail with one line on stderr, `kiln: …`,
/// containing `needle`; the line.
pub fn kiln_fails(args: &[&str], needle: &str) -> String {
    let out = kiln(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "kiln {args:?} succeeded: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("kiln: "), "{err}");
    assert!(err.contains(needle), "no {needle:?} in: {err}");
    err
}

/// Sends SIGINT, as Ctrl-C does.
pub fn interrupt(child: &Child) {
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(sent.success(), "kill -INT {}", child.id());
}

/// Polls `done` every 10 ms until it holds; fails naming `what` after
/// `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "never {what} ({timeout:?})");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Builds the I/O fault shim (`tests/faults/io_fault.c`, preloaded with
/// `LD_PRELOAD`; its header says what its variables do) into `dir`.
pub fn fault_shim(dir: &std::path::Path) -> std::path::PathBuf {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/faults/io_fault.c");
    let lib = dir.join("io_fault.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(src)
        .arg("-ldl")
        .status()
        .expect("run cc (a C compiler builds the fault shim; Rust's linker is one)");
    assert!(status.success(), "cc failed to build {src}");
    lib
}
