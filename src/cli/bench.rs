//! `kiln bench …`: runs the `kiln-bench` binary that sits beside this one
//! (`cargo build` builds both), with the same arguments, in this process's
//! place (its output, exit status and signals are the benchmark's).

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
