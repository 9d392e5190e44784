//! The plan computes shared intermediates once, and batches give the same results as
//! per-symbol computation, including through the tokio bridge.

// A test reports failure by panicking; unwrap is the point here.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use kiln::features::standard_plan;
use kiln::features::{
    Bars, FeatureError, OwnedBars, Plan, compute_batch, compute_batch_async, compute_batch_into,
};
use kiln::market::synth::owned_bars;

#[test]
fn sma_and_bbands_middle_share_one_node() {
    let alone = Plan::parse(&["bbands(20,2)"]).unwrap().node_count();
    let both = Plan::parse(&["sma(20)", "bbands(20,2)"])
        .unwrap()
        .node_count();
    assert_eq!(alone, both);
}

#[test]
fn bbands_and_stddev_share_the_standard_deviation() {
    let bb = Plan::parse(&["bbands(20,2)"]).unwrap().node_count();
    let both = Plan::parse(&["bbands(20,2)", "stddev(20)"])
        .unwrap()
        .node_count();
    assert_eq!(both, bb, "stddev is the bands' standard deviation column");
}

#[test]
fn macd_shares_the_slow_ema_and_macds_share_their_line() {
    let macd = Plan::parse(&["macd(12,26,9)"]).unwrap().node_count();
    assert_eq!(
        Plan::parse(&["macd(12,26,9)", "ema(26)"])
            .unwrap()
            .node_count(),
        macd
    );
    // ema(12) is NOT the fast EMA of macd: TA-Lib seeds that one later.
    assert_eq!(
        Plan::parse(&["macd(12,26,9)", "ema(12)"])
            .unwrap()
            .node_count(),
        macd + 1
    );
    // Another signal period reuses both EMAs and the line: signal, masked line, hist.
    assert_eq!(
        Plan::parse(&["macd(12,26,9)", "macd(12,26,5)"])
            .unwrap()
            .node_count(),
        macd + 3
    );
}

#[test]
fn volatilities_share_the_log_returns() {
    let one = Plan::parse(&["volatility(20)"]).unwrap().node_count();
    assert_eq!(
        Plan::parse(&["volatility(20)", "logret"])
            .unwrap()
            .node_count(),
        one
    );
    assert_eq!(
        Plan::parse(&["volatility(20)", "volatility(10)"])
            .unwrap()
            .node_count(),
        one + 2
    );
}

#[test]
fn natr_shares_the_atr_and_duplicates_are_computed_once() {
    assert_eq!(
        Plan::parse(&["atr(14)", "natr(14)"]).unwrap().node_count(),
        2
    );
    let p = Plan::parse(&["rsi(14)", "rsi(14)"]).unwrap();
    assert_eq!(p.output_labels(), ["rsi(14)"]);
    assert_eq!(p.node_count(), 1);
}

#[test]
fn benchmark_plan_has_twenty_outputs() {
    let p = standard_plan().unwrap();
    assert_eq!(p.output_labels().len(), 20);
    assert!(p.node_count() < 30);
}

#[test]
fn plan_parse_reports_the_bad_spec() {
    assert!(matches!(
        Plan::parse(&["sma(20)", "nope(3)"]),
        Err(FeatureError::Spec(_))
    ));
}

#[test]
fn ragged_columns_are_rejected() {
    let plan = Plan::parse(&["sma(2)"]).unwrap();
    let a = [1.0, 2.0, 3.0];
    let b = [1.0, 2.0];
    let bars = Bars {
        open: &a,
        high: &a,
        low: &b,
        close: &a,
        volume: &a,
    };
    let mut f = plan.new_frame();
    assert!(matches!(
        plan.compute(bars, &mut f),
        Err(FeatureError::RaggedColumns { low: 2, .. })
    ));
}

fn per_symbol(plan: &Plan, u: &[OwnedBars]) -> Vec<Vec<Vec<u64>>> {
    u.iter()
        .map(|b| {
            let mut f = plan.new_frame();
            plan.compute(b.view(), &mut f).unwrap();
            (0..f.output_count())
                .map(|o| f.output(o).unwrap().iter().map(|x| x.to_bits()).collect())
                .collect()
        })
        .collect()
}

fn bits(frames: &[kiln::features::Frame]) -> Vec<Vec<Vec<u64>>> {
    frames
        .iter()
        .map(|f| {
            (0..f.output_count())
                .map(|o| f.output(o).unwrap().iter().map(|x| x.to_bits()).collect())
                .collect()
        })
        .collect()
}

#[test]
fn batch_equals_per_symbol_computation() {
    let plan = standard_plan().unwrap();
    let u = owned_bars(17, 300, 5);
    let views: Vec<Bars<'_>> = u.iter().map(OwnedBars::view).collect();
    let want = per_symbol(&plan, &u);
    assert_eq!(bits(&compute_batch(&plan, &views).unwrap()), want);
    let mut frames: Vec<_> = (0..u.len()).map(|_| plan.new_frame()).collect();
    compute_batch_into(&plan, &views, &mut frames).unwrap();
    assert_eq!(bits(&frames), want);
    // Warm frames are reused: a second run gives the same.
    compute_batch_into(&plan, &views, &mut frames).unwrap();
    assert_eq!(bits(&frames), want);
}

#[test]
fn batch_into_needs_one_frame_per_symbol() {
    let plan = standard_plan().unwrap();
    let u = owned_bars(2, 10, 5);
    let views: Vec<Bars<'_>> = u.iter().map(OwnedBars::view).collect();
    let mut frames = vec![plan.new_frame()];
    assert!(matches!(
        compute_batch_into(&plan, &views, &mut frames),
        Err(FeatureError::FrameCount {
            frames: 1,
            symbols: 2
        })
    ));
}

#[tokio::test(flavor = "current_thread")]
async fn async_bridge_returns_the_batch_without_blocking_the_runtime() {
    let plan = Arc::new(standard_plan().unwrap());
    let u = owned_bars(9, 250, 6);
    let want = per_symbol(&plan, &u);
    let symbols: Arc<[OwnedBars]> = u.into();
    // On a single-threaded runtime, a concurrent task still runs while the batch computes
    // on rayon: the bridge never blocks the runtime's only thread.
    let ticker = tokio::spawn(async { 7 });
    let frames = compute_batch_async(plan, symbols).await.unwrap();
    assert_eq!(ticker.await.unwrap(), 7);
    assert_eq!(bits(&frames), want);
}

#[tokio::test(flavor = "current_thread")]
async fn async_bridge_reports_errors() {
    let plan = Arc::new(Plan::parse(&["sma(3)"]).unwrap());
    let bad = OwnedBars {
        close: vec![1.0, 2.0],
        ..OwnedBars::default()
    };
    let res = compute_batch_async(plan, vec![bad].into()).await;
    assert!(matches!(res, Err(FeatureError::RaggedColumns { .. })));
}

#[test]
fn scratch_and_frames_reused_across_symbols_of_different_lengths_give_fresh_results() {
    let plan = standard_plan().unwrap();
    let mut u = owned_bars(3, 500, 8);
    u[1].truncate(120);
    let want = per_symbol(&plan, &u);
    let mut scratch = kiln::features::Scratch::default();
    let mut frame = plan.new_frame();
    for (b, w) in u.iter().zip(&want) {
        plan.compute_with_scratch(b.view(), &mut frame, &mut scratch)
            .unwrap();
        assert_eq!(&bits(std::slice::from_ref(&frame))[0], w);
    }
}
