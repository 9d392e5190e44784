//! The `kiln-bench` binary as `kiln bench` runs it. (That this test exists
//! also makes `cargo test` build the binary, beside `kiln`, with the test
//! build's features: `tests/cli.rs` then runs `kiln bench` against it.)

use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln-bench"))
        .args(args)
        .output()
        .expect("run kiln-bench")
}

#[test]
fn help_lists_every_benchmark() {
    let out = bench(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["queue", "features", "e2e", "http", "live"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(name)),
            "{name} is not listed:\n{text}"
        );
    }
}

#[test]
fn an_unknown_benchmark_is_refused_with_usage() {
    let out = bench(&["nosuch"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nosuch") && err.contains("Usage"), "{err}");
}
