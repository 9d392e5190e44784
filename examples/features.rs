//! Embedding kiln's feature kernels: compute a plan for a batch of symbols, then append
//! bars to one symbol incrementally from its saved (encoded) state.
//!
//! Run: `cargo run --release --example features`

use kiln::features::{Bars, FeatureError, OwnedBars, Plan, compute_batch};
use kiln::market::synth::owned_bars;

fn main() -> Result<(), FeatureError> {
    let plan = Plan::parse(&[
        "sma(20)",
        "bbands(20,2)",
        "macd(12,26,9)",
        "rsi(14)",
        "vwap(20)",
    ])?;
    let universe = owned_bars(4, 500, 1);
    let views: Vec<Bars<'_>> = universe.iter().map(OwnedBars::view).collect();

    // Full history of every symbol, in parallel on rayon.
    let frames = compute_batch(&plan, &views)?;
    for (label, col) in plan.output_labels().iter().zip(0..) {
        let last = frames[0].output(col).and_then(|c| c.last()).copied();
        println!("{label:22} last = {last:?}");
    }

    // Incremental: 480 bars now, state stored as bytes, 20 bars appended later.
    let sym = &universe[0];
    let (old, new) = (0..480, 480..500);
    let cut = |r: std::ops::Range<usize>| Bars {
        open: &sym.open[r.clone()],
        high: &sym.high[r.clone()],
        low: &sym.low[r.clone()],
        close: &sym.close[r.clone()],
        volume: &sym.volume[r],
    };
    let mut state = plan.new_state();
    let mut frame = plan.new_frame();
    plan.advance(&mut state, cut(old), &mut frame)?;
    let stored: Vec<u8> = plan.encode_state(&state);
    println!("state after 480 bars: {} bytes", stored.len());

    let mut state = plan.decode_state(&stored)?;
    plan.advance(&mut state, cut(new), &mut frame)?;
    let appended = frame.output(0).unwrap_or_default();
    let full = frames[0].output(0).unwrap_or_default();
    assert_eq!(appended, &full[480..], "continuation equals full recompute");
    println!("appended 20 bars; sma(20) matches the full recompute bit for bit");
    Ok(())
}
