//! `kiln bench e2e`: the end-to-end job the seed pipeline of the peers does
//! (`../shared/peers/celery/seed_pipeline.py`): a 1000-symbol × 2000-bar
//! universe already stored, then the 20-output feature set computed for
//! every symbol through the durable queue and stored.
//!
//! Figures: `ingest_s` (storing the universe, before the clock), `wall_s`
//! and `symbols_per_s` (from the first submission until every result is
//! stored, `Durability::Sync`), `symbols_per_s_relaxed` (the same with
//! `Durability::Relaxed`), `wall_s_100` (a 100-symbol universe, Sync) and
//! `floor_s`: writing and fsyncing as many bytes as the stored series hold
//! to one plain file. With `--seed-pipeline PYTHON SCRIPT` the peer runs in
//! the same invocation on the same universe size and the ratios are reported.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kiln_store::{Durability, Priority, StoreConfig, Symbol};

use crate::{BenchError, BenchLine};
use kiln::config::Config;
use kiln::engine::Engine;
use kiln::features::standard_plan;
use kiln::market::synth;

/// The sizes and the optional peer.
#[derive(Clone, Debug)]
pub struct E2eOptions {
    /// Symbols in the universe.
    pub symbols: usize,
    /// Bars per symbol.
    pub bars: usize,
    /// The peers' Python and `seed_pipeline.py`, to run beside kiln.
    pub seed_pipeline: Option<(PathBuf, PathBuf)>,
}

fn line(name: &'static str, value: f64, unit: &'static str) -> BenchLine {
    BenchLine {
        bench: "e2e",
        name,
        value,
        unit,
    }
}

/// Seconds from the first submission until every result is stored, and
/// the seconds the ingest before it took.
fn timed_run(
    dir: &Path,
    symbols: usize,
    bars: usize,
    durability: Durability,
) -> Result<(f64, f64, u64), BenchError> {
    let config = Config {
        store: StoreConfig {
            durability,
            ..StoreConfig::default()
        },
        ..Config::default()
    };
    let engine = Engine::open(dir, config)?;
    let universe = synth::universe(symbols, bars, 42);
    let t = Instant::now();
    engine.ingest_columns("synthetic", &universe)?;
    let ingest_s = t.elapsed().as_secs_f64();
    let names: Vec<Symbol> = universe.iter().map(|(s, _)| s.clone()).collect();
    drop(universe);
    let plan = standard_plan()?;
    let t = Instant::now();
    engine.submit(&names, plan.specs(), Priority::Normal)?;
    let report = engine.run_until_idle(&mut |_| {})?;
    let wall = t.elapsed().as_secs_f64();
    if report.succeeded != symbols as u64 {
        return Err(BenchError::Peer(format!(
            "{} of {symbols} jobs succeeded",
            report.succeeded
        )));
    }
    Ok((wall, ingest_s, report.series))
}

/// Writes and fsyncs `bytes` to a plain file, in 1 MiB writes.
pub(crate) fn floor(dir: &Path, bytes: u64) -> Result<f64, BenchError> {
    let path = dir.join("floor.bin");
    let io = |e| BenchError::Io(path.display().to_string(), e);
    let chunk = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    let mut f = std::fs::File::create(&path).map_err(io)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).map_err(io)?;
        left -= n as u64;
    }
    f.sync_all().map_err(io)?;
    let s = t.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path).map_err(io)?;
    Ok(s)
}

/// Runs the benchmark in `dir` (about 1.5 GB of scratch at the default size).
pub fn run(
    dir: &Path,
    opts: &E2eOptions,
    mut emit: impl FnMut(&BenchLine),
) -> Result<(), BenchError> {
    let (wall, ingest_s, _) =
        timed_run(&dir.join("sync"), opts.symbols, opts.bars, Durability::Sync)?;
    let sync_rate = opts.symbols as f64 / wall;
    emit(&line("ingest_s", ingest_s, "s"));
    emit(&line("wall_s", wall, "s"));
    emit(&line("symbols_per_s", sync_rate, "symbols/s"));
    let (wall_relaxed, _, _) = timed_run(
        &dir.join("relaxed"),
        opts.symbols,
        opts.bars,
        Durability::Relaxed,
    )?;
    let relaxed_rate = opts.symbols as f64 / wall_relaxed;
    emit(&line("symbols_per_s_relaxed", relaxed_rate, "symbols/s"));
    let (wall_100, _, _) = timed_run(&dir.join("hundred"), 100, opts.bars, Durability::Sync)?;
    emit(&line("wall_s_100", wall_100, "s"));
    // The stored feature values: 20 outputs of `bars` f64 per symbol.
    let stored = (opts.symbols * 20 * opts.bars * 8) as u64;
    let floor_s = floor(dir, stored)?;
    emit(&line("floor_s", floor_s, "s"));
    emit(&line("wall_vs_floor", wall / floor_s, "ratio"));

    if let Some((python, script)) = &opts.seed_pipeline {
        let out = Command::new(python)
            .arg(script)
            .args([
                "--syms",
                &opts.symbols.to_string(),
                "--bars",
                &opts.bars.to_string(),
            ])
            .output()
            .map_err(|e| BenchError::Io(python.display().to_string(), e))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .unwrap_or("");
        let v: serde_json::Value = serde_json::from_str(last).map_err(|_| {
            BenchError::Peer(format!(
                "seed_pipeline.py printed no JSON; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ))
        })?;
        let peer = v["symbols_per_s"]
            .as_f64()
            .ok_or_else(|| BenchError::Peer(format!("no symbols_per_s in {last}")))?;
        emit(&line("seed_pipeline_symbols_per_s", peer, "symbols/s"));
        emit(&line("sync_vs_seed_pipeline", sync_rate / peer, "ratio"));
        emit(&line(
            "relaxed_vs_seed_pipeline",
            relaxed_rate / peer,
            "ratio",
        ));
    }
    Ok(())
}
