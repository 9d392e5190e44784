//! Criterion benchmarks of single feature kernels over one 2000-bar synthetic symbol.

use criterion::{Criterion, criterion_group, criterion_main};
use kiln::features::{Plan, standard_plan};
use kiln::market::synth::owned_bars;

fn kernels(c: &mut Criterion) {
    let universe = owned_bars(1, 2000, 7);
    let bars = universe[0].view();
    let specs = [
        "sma(20)",
        "ema(26)",
        "wma(20)",
        "macd(12,26,9)",
        "bbands(20,2)",
        "rsi(14)",
        "atr(14)",
        "natr(14)",
        "trange",
        "roc(10)",
        "mom(10)",
        "stddev(20)",
        "logret",
        "volatility(20)",
        "vwap(20)",
        "obv",
    ];
    let mut group = c.benchmark_group("kernel_2000_bars");
    for spec in specs {
        let plan = Plan::parse(&[spec]).expect("valid spec");
        let mut frame = plan.new_frame();
        group.bench_function(spec, |b| {
            b.iter(|| {
                plan.compute(std::hint::black_box(bars), &mut frame)
                    .expect("compute")
            })
        });
    }
    group.finish();
    let plan = standard_plan().expect("bench plan");
    let mut frame = plan.new_frame();
    c.bench_function("bench_set_20_outputs_2000_bars", |b| {
        b.iter(|| {
            plan.compute(std::hint::black_box(bars), &mut frame)
                .expect("compute")
        })
    });
}

criterion_group!(benches, kernels);
criterion_main!(benches);
