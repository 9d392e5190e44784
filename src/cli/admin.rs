//! `kiln stats`, `kiln check`, `kiln config`.

use kiln::store::prelude::*;
use std::io::Write;

use kiln::config::render;
use kiln::store::{JobState, Priority};

use super::Ctx;

/// `kiln stats`' options.
#[derive(clap::Args)]
pub struct StatsArgs {
    /// Print Prometheus text metrics instead.
    #[arg(long)]
    metrics: bool,
}

pub fn stats(ctx: &Ctx, out: &mut dyn Write, a: StatsArgs) -> anyhow::Result<()> {
    let engine = ctx.engine()?;
    if a.metrics {
        write!(out, "{}", engine.metrics())?;
        return Ok(());
    }
    let rt = engine.runtime_stats();
    let store = engine.store();
    let st = store.stats()?;
    let symbols = store.bar_symbols()?;
    let bars: u64 = symbols.iter().map(|(_, v)| v.bars).sum();
    let durability = store.config().durability.as_str();
    let depth = |p: Priority| st.depth(p);
    if ctx.json {
        let mut v = kiln::json::stats(&engine)?;
        v["durability"] = durability.into();
        writeln!(out, "{v}")?;
    } else {
        let jobs: Vec<String> = JobState::ALL
            .iter()
            .map(|s| format!("{} {}", s.as_str(), st.count(*s)))
            .collect();
        writeln!(out, "jobs        {}", jobs.join(", "))?;
        writeln!(
            out,
            "waiting     high {}, normal {}, low {}",
            depth(Priority::High),
            depth(Priority::Normal),
            depth(Priority::Low)
        )?;
        writeln!(out, "market data {} symbols, {} bars", symbols.len(), bars)?;
        writeln!(out, "durability  {durability}")?;
        writeln!(
            out,
            "engine      breaker {}, claim {} jobs, {} batches in flight",
            rt.breaker.as_str(),
            rt.claim_jobs,
            rt.inflight_batches
        )?;
        if let Some(cause) = store.poisoned() {
            writeln!(out, "POISONED    {cause}")?;
        }
    }
    Ok(())
}

pub fn check(ctx: &Ctx, out: &mut dyn Write) -> anyhow::Result<()> {
    let engine = ctx.engine()?;
    let (report, stale) = engine.check()?;
    if ctx.json {
        let v = serde_json::json!({
            "jobs": report.jobs, "series": report.series, "bar_chunks": report.bar_chunks,
            "stale_series": stale, "problems": report.problems,
        });
        writeln!(out, "{v}")?;
    } else {
        let verdict = if report.problems.is_empty() {
            "no problems".to_owned()
        } else {
            format!("{} problems", report.problems.len())
        };
        writeln!(
            out,
            "checked {} jobs, {} series, {} bar chunks: {verdict}",
            report.jobs, report.series, report.bar_chunks
        )?;
        for p in &report.problems {
            writeln!(out, "  {p}")?;
        }
        if stale > 0 {
            writeln!(
                out,
                "{stale} series are stale (the bars changed since); kiln run --warm-up --until-idle refreshes them"
            )?;
        }
    }
    if !report.problems.is_empty() {
        anyhow::bail!(
            "the integrity check found {} problems",
            report.problems.len()
        );
    }
    Ok(())
}

pub fn config(ctx: &Ctx, out: &mut dyn Write) -> anyhow::Result<()> {
    write!(out, "{}", render(&ctx.config))?;
    Ok(())
}
