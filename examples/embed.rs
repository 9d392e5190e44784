//! kiln as a library: open a data directory, ingest the bundled sample,
//! submit features, run until idle, and read a series back in place.
//! Run with `cargo run --release --example embed`; `tests/examples.rs` runs
//! it in CI.

use kiln::store::prelude::*;
use std::path::Path;

use kiln::config::Config;
use kiln::engine::Engine;
use kiln::features::spec::parse_list;
use kiln::market::{IngestOptions, parse_map};
use kiln::store::{Priority, Symbol};

/// The example, callable from a test.
pub fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let engine = Engine::open(dir.path(), Config::default())?;

    // Bars in: the real sample names its columns Ticker and Date.
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/stocks-5-daily.csv.gz");
    let opts = IngestOptions {
        map: parse_map("Ticker=symbol,Date=ts")?,
        ..IngestOptions::default()
    };
    let (ingested, _) = engine.ingest(&[sample], &opts, &mut |_| {})?;
    println!(
        "ingested {} bars of {} symbols",
        ingested.rows, ingested.symbols
    );

    // Durable jobs: one per symbol, acknowledged once on disk.
    let symbols: Vec<Symbol> = ["AAPL", "MSFT"]
        .into_iter()
        .map(Symbol::new)
        .collect::<Result<_, _>>()?;
    let specs = parse_list("rsi(14),macd(12,26,9)")?;
    engine.submit(&symbols, &specs, Priority::High)?;
    let report = engine.run_until_idle(&mut |_| {})?;
    println!(
        "{} jobs succeeded, {} series stored",
        report.succeeded, report.series
    );

    // Read back without copying: `values()` is a slice of the mapped file.
    let aapl = &symbols[0];
    let rsi = engine
        .feature(aapl, "rsi(14)")?
        .ok_or("rsi(14) was not stored")?;
    let bars = engine.store().bars(aapl, ..)?.ok_or("AAPL has no bars")?;
    assert!(
        rsi.is_current(&bars.version()),
        "computed from the bars stored now"
    );
    let last = rsi.values().last().copied().unwrap_or(f64::NAN);
    println!(
        "AAPL rsi(14) over {} bars, last {last:.2}",
        rsi.values().len()
    );
    if !(0.0..=100.0).contains(&last) {
        return Err(format!("rsi(14) = {last} is outside 0..100").into());
    }
    Ok(())
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    run()
}
