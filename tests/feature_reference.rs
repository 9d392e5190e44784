//! `logret`, `volatility(n)` and `vwap(n)` have no TA-Lib function. Their definitions
//! (see `kiln::features::{momentum, variance, volume}`) are checked here against
//! independent, straightforward implementations: per-window sums and two-pass variance,
//! within |kiln − reference| ≤ 1e-9 × max(1, |reference|), NaN at the same bars.

// A test reports failure by panicking; unwrap is the point here.
#![allow(clippy::unwrap_used)]

use kiln::features::{Bars, OwnedBars, Plan};
use kiln::market::synth::owned_bars;

fn close_enough(got: &[f64], want: &[f64]) -> Result<(), String> {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g.is_nan() != w.is_nan() {
            return Err(format!("bar {i}: kiln {g} vs reference {w} (NaN mask)"));
        }
        if !w.is_nan() && (g - w).abs() > 1e-9 * w.abs().max(1.0) {
            return Err(format!("bar {i}: kiln {g} vs reference {w}"));
        }
    }
    Ok(())
}

/// First bar where every given column is non-NaN.
fn first_valid(cols: &[&[f64]]) -> usize {
    let len = cols[0].len();
    (0..len)
        .find(|&i| cols.iter().all(|c| !c[i].is_nan()))
        .unwrap_or(len)
}

fn ref_logret(c: &[f64]) -> Vec<f64> {
    let b = first_valid(&[c]);
    (0..c.len())
        .map(|i| {
            if i <= b {
                f64::NAN
            } else {
                (c[i] / c[i - 1]).ln()
            }
        })
        .collect()
}

/// Sample standard deviation (ddof = 1), two-pass, of the n log returns ending at each bar.
fn ref_volatility(c: &[f64], n: usize) -> Vec<f64> {
    let lr = ref_logret(c);
    let b = first_valid(&[&lr]);
    (0..c.len())
        .map(|i| {
            if i + 1 < b + n {
                return f64::NAN;
            }
            let w = &lr[i + 1 - n..=i];
            let mean = w.iter().sum::<f64>() / n as f64;
            let ss: f64 = w.iter().map(|x| (x - mean) * (x - mean)).sum();
            (ss / (n as f64 - 1.0)).sqrt()
        })
        .collect()
}

/// Σ(tp·v)/Σv over each n-bar window, summed afresh per window.
fn ref_vwap(h: &[f64], l: &[f64], c: &[f64], v: &[f64], n: usize) -> Vec<f64> {
    let b = first_valid(&[h, l, c, v]);
    (0..c.len())
        .map(|i| {
            if i + 1 < b + n {
                return f64::NAN;
            }
            let (mut pv, mut vol) = (0.0, 0.0);
            for j in i + 1 - n..=i {
                pv += (h[j] + l[j] + c[j]) / 3.0 * v[j];
                vol += v[j];
            }
            pv / vol
        })
        .collect()
}

fn universe() -> Vec<OwnedBars> {
    let mut u = owned_bars(6, 700, 11);
    // Leading NaNs in some inputs only, and a price level far from 1.
    for x in u[1].close.iter_mut().take(4) {
        *x = f64::NAN;
    }
    for x in u[2].volume.iter_mut().take(9) {
        *x = f64::NAN;
    }
    let far = &mut u[3];
    for col in [&mut far.open, &mut far.high, &mut far.low, &mut far.close] {
        for x in col.iter_mut() {
            *x *= 1e4;
        }
    }
    // A short symbol and an empty one.
    u[4].truncate(15);
    u[5] = OwnedBars::default();
    u
}

fn compute(spec: &str, bars: Bars<'_>) -> Vec<f64> {
    let plan = Plan::parse(&[spec]).unwrap();
    let mut f = plan.new_frame();
    plan.compute(bars, &mut f).unwrap();
    f.output(0).unwrap().to_vec()
}

#[test]
fn logret_is_the_log_of_the_close_ratio() {
    for b in universe() {
        let got = compute("logret", b.view());
        close_enough(&got, &ref_logret(&b.close)).unwrap();
    }
}

#[test]
fn volatility_is_the_sample_stddev_of_log_returns() {
    for n in [2, 5, 20, 60] {
        for b in universe() {
            let got = compute(&format!("volatility({n})"), b.view());
            close_enough(&got, &ref_volatility(&b.close, n))
                .unwrap_or_else(|e| panic!("n={n}: {e}"));
        }
    }
}

#[test]
fn vwap_is_the_volume_weighted_typical_price_of_the_window() {
    for n in [1, 3, 20, 100] {
        for b in universe() {
            let got = compute(&format!("vwap({n})"), b.view());
            let want = ref_vwap(&b.high, &b.low, &b.close, &b.volume, n);
            close_enough(&got, &want).unwrap_or_else(|e| panic!("n={n}: {e}"));
        }
    }
}

#[test]
fn constant_prices_have_zero_volatility() {
    let c = vec![42.0; 50];
    let got = compute("volatility(10)", Bars::close_only(&c));
    assert!(got[..10].iter().all(|x| x.is_nan()));
    assert!(got[10..].iter().all(|&x| x == 0.0));
}

#[test]
fn the_reference_check_can_fail() {
    assert!(close_enough(&[1.0, 2.0], &[1.0, 2.0 + 1e-6]).is_err());
    assert!(close_enough(&[f64::NAN], &[0.0]).is_err());
}
