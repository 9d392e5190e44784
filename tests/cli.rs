//! The `kiln` binary as a user runs it.

use std::process::Command;

fn kiln(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("run kiln")
}

#[test]
fn bench_queue_json_prints_every_figure_once() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().to_str().expect("utf-8 path");
    let out = kiln(&[
        "bench",
        "queue",
        "--json",
        "--jobs",
        "200",
        "--symbols",
        "3",
        "--bars",
        "50",
        "--dir",
        dir,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let names: Vec<String> = stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object per line");
            assert_eq!(v["bench"], "queue");
            assert!(v["value"].as_f64().expect("numeric value") > 0.0, "{l}");
            assert!(matches!(v["unit"].as_str(), Some("jobs/s" | "MB/s")), "{l}");
            v["name"].as_str().expect("name").to_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "enqueue_single_concurrent",
            "enqueue_batch100",
            "claim_complete_batch",
            "lifecycle_sync",
            "floor_sled_fsync",
            "results_mb_per_s",
            "floor_file_mb_per_s",
        ]
    );
    let left: Vec<_> = std::fs::read_dir(scratch.path()).expect("ls").collect();
    assert!(left.is_empty(), "scratch data left behind: {left:?}");
}

#[test]
fn out_of_range_sizes_are_refused_with_the_limit() {
    let out = kiln(&["bench", "queue", "--jobs", "5"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--jobs") && stderr.contains("100"),
        "{stderr}"
    );
}

#[test]
fn help_explains_the_bench() {
    let out = kiln(&["bench", "queue", "--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--json") && text.contains("floor"), "{text}");
}
