//! `kiln demo`: the whole path on a fresh machine, with no arguments. Creates
//! a demo data directory, ingests the bundled real sample and a synthetic
//! universe, submits the 20-output feature set of the peers' benchmark for
//! every symbol ([`kiln::features::STANDARD_SET`]), runs it to completion
//! and prints what happened.

use kiln::store::prelude::*;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use kiln::features::standard_plan;
use kiln::market::{IngestOptions, format_iso, parse_map, synth};
use kiln::store::{Durability, FORMAT_FILE, Priority, Symbol};

use super::Ctx;
use super::jobs::run_with_progress;

/// `kiln demo`'s options.
#[derive(clap::Args)]
pub struct Args {
    /// Symbols in the synthetic universe.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    symbols: u64,
    /// Bars per synthetic symbol.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=50_000))]
    bars: u64,
}

/// The real sample, built into the binary so the demo runs from anywhere.
const SAMPLE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/data/stocks-5-daily.csv.gz"
));

/// The demo's default directory.
pub const DEMO_DIR: &str = "./kiln-demo";

/// The file that marks a data directory as the demo's own.
const DEMO_MARKER: &str = "KILN_DEMO";

/// Starts from an empty directory: removes an earlier demo's, refuses anything else.
fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("list {}", dir.display()))?
            .next()
            .is_none();
        if !empty && !dir.join(DEMO_MARKER).exists() {
            let what = if dir.join(FORMAT_FILE).exists() {
                "a kiln data directory the demo did not create"
            } else {
                "not empty"
            };
            anyhow::bail!(
                "{} is {what}; the demo replaces only its own directory, choose another with --data",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("remove the old demo in {}", dir.display()))?;
    }
    Ok(())
}

pub fn run(ctx: &Ctx, out: &mut dyn Write, a: Args) -> anyhow::Result<()> {
    let (symbols, bars) = (a.symbols as usize, a.bars as usize);
    let dir = ctx.dir(DEMO_DIR);
    fresh_dir(&dir)?;
    let started = Instant::now();
    let engine = super::open_engine(&dir, &ctx.config)?;
    std::fs::write(
        dir.join(DEMO_MARKER),
        "created by kiln demo; replaced by the next one\n",
    )
    .with_context(|| format!("write {}", dir.join(DEMO_MARKER).display()))?;
    let say = |out: &mut dyn Write, line: String| -> anyhow::Result<()> {
        if !ctx.json {
            writeln!(out, "{line}")?;
        }
        Ok(())
    };

    // 1. The real sample, from a file as a user would ingest it.
    let sample = dir.join("stocks-5-daily.csv.gz");
    std::fs::write(&sample, SAMPLE).with_context(|| format!("write {}", sample.display()))?;
    let opts = IngestOptions {
        map: parse_map("Ticker=symbol,Date=ts")?,
        ..IngestOptions::default()
    };
    let (real, _) = engine.ingest(&[sample], &opts, &mut |_| {})?;
    say(
        out,
        format!(
            "ingested the real sample: {} daily bars of {} stocks (2000–2013) in {:.2} s",
            real.rows, real.symbols, real.seconds
        ),
    )?;

    // 2. The synthetic universe.
    let t = Instant::now();
    let universe = synth::universe(symbols, bars, 42);
    let (synthetic, _) = engine.ingest_columns("synthetic universe", &universe)?;
    drop(universe);
    let ingest_s = t.elapsed().as_secs_f64();
    say(
        out,
        format!(
            "ingested a synthetic universe: {} symbols × {} bars ({} rows) in {:.2} s",
            symbols, bars, synthetic.rows, ingest_s
        ),
    )?;

    // 3. The 20-output feature set for every symbol.
    let plan = standard_plan()?;
    let all: Vec<Symbol> = engine
        .store()
        .bar_symbols()?
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let jobs = engine.submit(&all, plan.specs(), Priority::Normal)?;
    say(
        out,
        format!(
            "submitted {} jobs: {} outputs ({}) for each of {} symbols",
            jobs.len(),
            plan.output_labels().len(),
            plan.specs()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            all.len()
        ),
    )?;

    // 4. Run to completion.
    let report = run_with_progress(ctx, &engine)?;
    let wall = started.elapsed().as_secs_f64();
    let durability = match engine.store().config().durability {
        Durability::Sync => "sync (every acknowledged write fsynced)",
        Durability::Relaxed => "relaxed (fsynced within tick_ms)",
    };
    let aapl = Symbol::new("AAPL")?;
    let bars_aapl = engine
        .store()
        .bars(&aapl, ..)?
        .context("AAPL has no bars")?;
    let last = bars_aapl.len().saturating_sub(1);
    let mut latest = Vec::new();
    for label in plan.output_labels() {
        let v = engine
            .feature(&aapl, label)?
            .with_context(|| format!("AAPL {label} was not stored"))?;
        latest.push((
            label.clone(),
            v.values().get(last).copied().unwrap_or(f64::NAN),
        ));
    }
    let (check, _) = engine.check()?;

    if ctx.json {
        let v = serde_json::json!({
            "data": dir.display().to_string(), "symbols": all.len(), "jobs": jobs.len(),
            "succeeded": report.succeeded, "dead": report.dead, "series": report.series,
            "compute_s": report.seconds, "symbols_per_s": report.symbols as f64 / report.seconds,
            "ingest_s": ingest_s, "wall_s": wall, "durability": durability,
            "check_problems": check.problems.len(),
            "aapl": latest.iter().map(|(l, v)| (l.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(out)?;
        writeln!(
            out,
            "done: {} jobs succeeded, {} dead; {} series stored",
            report.succeeded, report.dead, report.series
        )?;
        writeln!(
            out,
            "      compute + durable store {:.2} s ({:.0} symbols/s); {:.2} s in all",
            report.seconds,
            report.symbols as f64 / report.seconds,
            wall
        )?;
        writeln!(
            out,
            "      durability: {durability}; integrity check: {} problems",
            check.problems.len()
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "AAPL on {} (close {}):",
            format_iso(bars_aapl.ts()[last]),
            bars_aapl.close()[last]
        )?;
        for (label, v) in &latest {
            writeln!(out, "  {label:<26} {v:>14.4}")?;
        }
        let d = dir.display();
        writeln!(out)?;
        writeln!(out, "try next:")?;
        writeln!(
            out,
            "  cargo run --release -- --data {d} features AAPL \"macd(12,26,9)\" --tail 5"
        )?;
        writeln!(out, "  cargo run --release -- --data {d} stats")?;
        writeln!(out, "  cargo run --release -- --data {d} watch")?;
        writeln!(
            out,
            "  cargo run --release -- --data {d} export --format parquet --out aapl.parquet --symbols AAPL --features \"rsi(14),bbands(20,2)\""
        )?;
        writeln!(out, "  cargo run --release -- --data {d} check")?;
    }
    if !check.problems.is_empty() {
        anyhow::bail!("the integrity check found problems: {:?}", check.problems);
    }
    Ok(())
}
