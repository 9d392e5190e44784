//! `kiln bench live`: the live path. A universe fully computed (the
//! 20-output standard set), then ticks of one new bar for every symbol
//! through the library API, each timed from the ingest until every refresh
//! it implies is durable (`Durability::Sync`).
//!
//! Figures, for the main universe (1,000 × 2,000 by default):
//! - `tick_ms_p50`, `tick_ms_p99`: one tick, ingest to durable features,
//!   over `ticks` ticks after `warm_ticks` that are not counted;
//! - `bytes_written_per_tick`: bytes the process passed to `write` calls
//!   (sled's log and the value log; `/proc/self/io` `wchar`) per tick, and
//!   `dir_growth_per_tick`: the data directory's growth per tick, and
//!   `store_bytes_per_tick`: the bytes the store counts itself (value-log
//!   records, sled batches' keys and values: `Store::bytes_written`), all over
//!   the `byte_ticks` ticks after those: the store's periodic work (a
//!   frame's tails fold every 32 appends and its 32-row chunks merge every
//!   1,024 rows, a symbol's bar tails every 32 bars and its 32-bar chunks
//!   every 1,024, states are saved every 256 bars, and the value log's
//!   compaction follows) comes in waves, all symbols at once, so a window of a whole
//!   number of every period (1,024 by default) counts each its share, where
//!   the 20 timed ticks would count a wave's bytes over 20 ticks or none
//!   (and a window of 256 ticks, this bench's default until the merges
//!   were counted, leaves the 1,024-row merges out);
//! - `new_value_bytes_per_tick`: the new feature values (symbols × 20 × 8);
//! - `floor_ms`: writing and fsyncing that many bytes to a plain file;
//! - `tick_vs_floor`, `written_vs_new`: the ratios.
//!
//! Then `steady_written_vs_new`: the bytes written per symbol and tick over
//! the new values' 160, over `steady_ticks` ticks (1,024 by default) of
//! `steady_symbols` symbols (100), after the same warm-up: the same waves
//! with the per-job costs of a small universe.
//!
//! Then `history_ratio`: the median tick of 200 symbols with 50,000 bars
//! of history over that with 2,000 (`tick_ms_short`, `tick_ms_long`).

use std::path::Path;
use std::time::Instant;

use kiln_store::{BarColumns, Durability, Priority, StoreConfig, Symbol};

use crate::{BenchError, BenchLine};
use kiln::config::Config;
use kiln::engine::Engine;
use kiln::features::standard_plan;
use kiln::market::synth;

/// The sizes.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Symbols in the main universe.
    pub symbols: usize,
    /// Bars of history per symbol.
    pub bars: usize,
    /// Ticks measured.
    pub ticks: usize,
    /// Ticks run before measuring (not counted).
    pub warm_ticks: usize,
    /// Ticks after the timed ones over which the bytes are counted.
    pub byte_ticks: usize,
    /// Symbols of the steady-state run.
    pub steady_symbols: usize,
    /// Ticks of the steady-state run, counted after the warm-up.
    pub steady_ticks: usize,
    /// Symbols of the history-length comparison.
    pub ratio_symbols: usize,
    /// Bars of history of its long run.
    pub long_bars: usize,
}

fn line(name: &'static str, value: f64, unit: &'static str) -> BenchLine {
    BenchLine {
        bench: "live",
        name,
        value,
        unit,
    }
}

/// Bytes this process has passed to write calls so far.
fn written() -> Result<u64, BenchError> {
    let io = std::fs::read_to_string("/proc/self/io")
        .map_err(|e| BenchError::Io("/proc/self/io".into(), e))?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| BenchError::Peer("/proc/self/io has no wchar".into()))
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> Result<u64, BenchError> {
    let io = |e| BenchError::Io(dir.display().to_string(), e);
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let meta = entry.metadata().map_err(io)?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// The value at quantile `q` of `v` (sorted here).
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

/// A universe computed in full, ready for ticks.
struct Live {
    engine: Engine,
    full: Vec<(Symbol, BarColumns)>,
    next: usize,
}

impl Live {
    /// What the store counts it wrote since it opened.
    fn store_bytes(&self) -> u64 {
        self.engine.store().bytes_written()
    }

    fn new(dir: &Path, symbols: usize, bars: usize, ticks: usize) -> Result<Self, BenchError> {
        let config = Config {
            store: StoreConfig {
                durability: Durability::Sync,
                ..StoreConfig::default()
            },
            ..Config::default()
        };
        let engine = Engine::open(dir, config)?;
        let full = synth::universe(symbols, bars + ticks, 42);
        let history: Vec<(Symbol, BarColumns)> = full
            .iter()
            .map(|(s, c)| (s.clone(), c.slice(0, bars)))
            .collect();
        engine.ingest_columns("history", &history)?;
        drop(history);
        let names: Vec<Symbol> = full.iter().map(|(s, _)| s.clone()).collect();
        engine.submit(&names, standard_plan()?.specs(), Priority::Normal)?;
        engine.run_until_idle(&mut |_| {})?;
        Ok(Live {
            engine,
            full,
            next: bars,
        })
    }

    /// One tick: a bar per symbol, ingested, refreshed, durable; its ms.
    fn tick(&mut self) -> Result<f64, BenchError> {
        let i = self.next;
        let bars: Vec<(Symbol, BarColumns)> = self
            .full
            .iter()
            .map(|(s, c)| (s.clone(), c.slice(i, i + 1)))
            .collect();
        let t = Instant::now();
        self.engine.ingest_columns("tick", &bars)?;
        let report = self.engine.run_until_idle(&mut |_| {})?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if report.continued + report.recomputed != self.full.len() as u64 {
            return Err(BenchError::Peer(format!(
                "tick {i}: {} of {} symbols refreshed",
                report.continued + report.recomputed,
                self.full.len()
            )));
        }
        self.next += 1;
        Ok(ms)
    }
}

/// Runs the benchmark in `dir`.
pub fn run(
    dir: &Path,
    opts: &LiveOptions,
    mut emit: impl FnMut(&BenchLine),
) -> Result<(), BenchError> {
    let data = dir.join("main");
    let mut live = Live::new(
        &data,
        opts.symbols,
        opts.bars,
        opts.warm_ticks + opts.ticks + opts.byte_ticks,
    )?;
    for _ in 0..opts.warm_ticks {
        live.tick()?;
    }
    let mut ms = Vec::with_capacity(opts.ticks);
    for _ in 0..opts.ticks {
        ms.push(live.tick()?);
    }
    let (w0, d0, s0) = (written()?, dir_bytes(&data)?, live.store_bytes());
    for _ in 0..opts.byte_ticks {
        live.tick()?;
    }
    let (w1, d1, s1) = (written()?, dir_bytes(&data)?, live.store_bytes());
    drop(live);
    let ticks = opts.byte_ticks.max(1) as f64;
    emit(&line("tick_ms_p50", quantile(&mut ms, 0.5), "ms"));
    emit(&line("tick_ms_p99", quantile(&mut ms, 0.99), "ms"));
    let new_bytes = (opts.symbols * 20 * 8) as f64;
    let per_tick = (w1 - w0) as f64 / ticks;
    emit(&line("bytes_written_per_tick", per_tick, "bytes"));
    emit(&line(
        "dir_growth_per_tick",
        (d1 as f64 - d0 as f64) / ticks,
        "bytes",
    ));
    emit(&line(
        "store_bytes_per_tick",
        (s1 - s0) as f64 / ticks,
        "bytes",
    ));
    emit(&line("new_value_bytes_per_tick", new_bytes, "bytes"));
    emit(&line("written_vs_new", per_tick / new_bytes, "ratio"));
    let mut floors = (0..opts.ticks.max(1))
        .map(|_| crate::e2e::floor(dir, new_bytes as u64).map(|s| s * 1e3))
        .collect::<Result<Vec<f64>, _>>()?;
    let floor_ms = quantile(&mut floors, 0.5);
    emit(&line("floor_ms", floor_ms, "ms"));
    emit(&line(
        "tick_vs_floor",
        quantile(&mut ms, 0.5) / floor_ms,
        "ratio",
    ));
    std::fs::remove_dir_all(&data).map_err(|e| BenchError::Io(data.display().to_string(), e))?;

    let data = dir.join("steady");
    let mut live = Live::new(
        &data,
        opts.steady_symbols,
        opts.bars,
        opts.warm_ticks + opts.steady_ticks,
    )?;
    for _ in 0..opts.warm_ticks {
        live.tick()?;
    }
    let w0 = written()?;
    for _ in 0..opts.steady_ticks {
        live.tick()?;
    }
    let w1 = written()?;
    drop(live);
    std::fs::remove_dir_all(&data).map_err(|e| BenchError::Io(data.display().to_string(), e))?;
    let symbol_ticks = (opts.steady_symbols * opts.steady_ticks).max(1) as f64;
    emit(&line(
        "steady_written_vs_new",
        (w1 - w0) as f64 / symbol_ticks / (20.0 * 8.0),
        "ratio",
    ));

    let mut medians = Vec::new();
    for (name, bars) in [("short", opts.bars), ("long", opts.long_bars)] {
        let data = dir.join(name);
        let mut live = Live::new(
            &data,
            opts.ratio_symbols,
            bars,
            opts.warm_ticks + opts.ticks,
        )?;
        for _ in 0..opts.warm_ticks {
            live.tick()?;
        }
        let mut ms = (0..opts.ticks)
            .map(|_| live.tick())
            .collect::<Result<Vec<f64>, _>>()?;
        drop(live);
        std::fs::remove_dir_all(&data)
            .map_err(|e| BenchError::Io(data.display().to_string(), e))?;
        medians.push(quantile(&mut ms, 0.5));
    }
    emit(&line("tick_ms_short", medians[0], "ms"));
    emit(&line("tick_ms_long", medians[1], "ms"));
    emit(&line("history_ratio", medians[1] / medians[0], "ratio"));
    Ok(())
}
