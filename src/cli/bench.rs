//! `kiln bench …`: runs the `kiln-bench` binary that sits beside this one
//! (`cargo build` builds both), with the same arguments, in this process's
//! place (its output, exit status and signals are the benchmark's). Under
//! `cargo run`, cargo first builds `kiln-bench` for the same profile, so it
//! is never missing or older than the code.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

use anyhow::Context;

use super::Ctx;

/// `kiln bench`'s arguments: the benchmark and its options, passed on.
#[derive(clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// The benchmark and its options (`kiln bench --help` lists them).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// The benchmark binary's name.
const BENCH_BIN: &str = "kiln-bench";

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("find the kiln binary")?;
    let bench = me.with_file_name(BENCH_BIN);
    if let (Some(cargo), Some(manifest)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) {
        build_under_cargo(&cargo, manifest.as_ref(), &me)?;
    }
    if !bench.exists() {
        anyhow::bail!(
            "kiln bench runs {BENCH_BIN}, which is not beside this kiln ({}); \
             `cargo build --release` builds both",
            bench.display()
        );
    }
    let mut args = a.args;
    if ctx.json && !args.iter().any(|a| a == "--json") {
        args.push("--json".into());
    }
    // Only returns if the program could not be started.
    let e = std::process::Command::new(&bench).args(&args).exec();
    Err(e).with_context(|| format!("run {}", bench.display()))
}

/// Has cargo (which ran this kiln) build `kiln-bench` into the same profile
/// directory as `me`.
fn build_under_cargo(
    cargo: &std::ffi::OsStr,
    manifest_dir: &std::path::Path,
    me: &std::path::Path,
) -> anyhow::Result<()> {
    let profile = match me.parent().and_then(|d| d.file_name()) {
        Some(d) if d == "debug" => OsString::from("dev"),
        Some(d) => d.to_owned(),
        None => anyhow::bail!("{} is not in a cargo profile directory", me.display()),
    };
    let status = std::process::Command::new(cargo)
        .arg("build")
        .arg("--manifest-path")
        .arg(manifest_dir.join("Cargo.toml"))
        .arg("--profile")
        .arg(&profile)
        .args(["--package", BENCH_BIN, "--bin", BENCH_BIN])
        .stdout(std::process::Stdio::null())
        .status()
        .context("run cargo to build kiln-bench")?;
    if !status.success() {
        anyhow::bail!("cargo could not build {BENCH_BIN} ({status})");
    }
    Ok(())
}
