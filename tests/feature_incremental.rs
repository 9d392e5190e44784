//! Incremental continuation: saving a symbol's state after some bars and continuing with
//! the appended bars gives bit for bit what a full recompute gives — for every kernel,
//! random series (with leading NaNs, NaN gaps and flat stretches) and random split points,
//! and with the state passed through its byte encoding at every split.

// A test reports failure by panicking; unwrap is the point here.
#![allow(clippy::unwrap_used)]

use kiln::features::{Bars, Plan, StateError};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Series {
    cols: [Vec<f64>; 5],
}

impl Series {
    fn bars(&self, r: std::ops::Range<usize>) -> Bars<'_> {
        let [o, h, l, c, v] = &self.cols;
        Bars {
            open: &o[r.clone()],
            high: &h[r.clone()],
            low: &l[r.clone()],
            close: &c[r.clone()],
            volume: &v[r],
        }
    }
    fn len(&self) -> usize {
        self.cols[3].len()
    }
}

/// Random OHLCV: a random walk, with optional leading NaNs, a NaN gap, a flat stretch.
fn series() -> impl Strategy<Value = Series> {
    (
        0usize..300,
        any::<u64>(),
        0usize..6,
        proptest::option::of((0usize..300, 1usize..4)),
        proptest::option::of((0usize..300, 1usize..40)),
    )
        .prop_map(|(len, seed, lead, gap, flat)| {
            let mut s = seed | 1;
            let mut next = move || {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64
            };
            let mut cols: [Vec<f64>; 5] = Default::default();
            let mut price = 50.0 + 100.0 * next();
            for i in 0..len {
                price *= 1.0 + 0.04 * (next() - 0.5);
                if let Some((at, n)) = flat
                    && i >= at
                    && i < at + n
                {
                    price = 42.0;
                }
                let c = price;
                let h = c * (1.0 + 0.01 * next());
                let l = c * (1.0 - 0.01 * next());
                let o = l + (h - l) * next();
                let v = (1000.0 * next()).round();
                for (col, x) in cols.iter_mut().zip([o, h, l, c, v]) {
                    col.push(x);
                }
            }
            for col in &mut cols {
                for x in col.iter_mut().take(lead) {
                    *x = f64::NAN;
                }
                if let Some((at, n)) = gap {
                    for x in col.iter_mut().skip(at).take(n) {
                        *x = f64::NAN;
                    }
                }
            }
            Series { cols }
        })
}

/// One spec per catalog kernel, with small random periods.
fn kernel_spec() -> impl Strategy<Value = String> {
    let n = 1u32..30;
    prop_oneof![
        n.clone().prop_map(|n| format!("sma({n})")),
        n.clone().prop_map(|n| format!("ema({n})")),
        n.clone().prop_map(|n| format!("wma({n})")),
        (1u32..10, 1u32..15, 1u32..10).prop_map(|(f, d, s)| format!("macd({f},{},{s})", f + d)),
        (n.clone(), 1u32..4).prop_map(|(n, k)| format!("bbands({n},{k})")),
        n.clone().prop_map(|n| format!("rsi({n})")),
        n.clone().prop_map(|n| format!("atr({n})")),
        n.clone().prop_map(|n| format!("natr({n})")),
        Just("trange".to_owned()),
        n.clone().prop_map(|n| format!("roc({n})")),
        n.clone().prop_map(|n| format!("mom({n})")),
        n.clone().prop_map(|n| format!("stddev({n})")),
        Just("logret".to_owned()),
        (2u32..30).prop_map(|n| format!("volatility({n})")),
        n.clone().prop_map(|n| format!("vwap({n})")),
        Just("obv".to_owned()),
    ]
}

/// The spec of an output label: `macd(12,26,9).signal` -> `macd(12,26,9)`.
fn spec_of(label: &str) -> &str {
    match label.rfind(").") {
        Some(i) => &label[..=i],
        None => label,
    }
}

/// Full recompute vs. continuation over `splits`; returns the first differing output.
fn check(plan: &Plan, s: &Series, splits: &[usize]) -> Result<(), String> {
    let len = s.len();
    let mut full = plan.new_frame();
    plan.compute(s.bars(0..len), &mut full)
        .map_err(|e| e.to_string())?;
    let mut cuts: Vec<usize> = splits.iter().map(|&x| x % (len + 1)).collect();
    cuts.push(0);
    cuts.push(len);
    cuts.sort_unstable();
    let mut state = plan.new_state();
    let mut part = plan.new_frame();
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        // Through the byte encoding at every split, as the engine will store it.
        let bytes = plan.encode_state(&state);
        state = plan.decode_state(&bytes).map_err(|e| e.to_string())?;
        plan.advance(&mut state, s.bars(a..b), &mut part)
            .map_err(|e| e.to_string())?;
        for (o, label) in plan.output_labels().iter().enumerate() {
            let want = &full.output(o).ok_or("output")?[a..b];
            let got = part.output(o).ok_or("output")?;
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                if g.to_bits() != w.to_bits() {
                    return Err(format!(
                        "{label} bar {}: continued {g} vs full {w} (cuts {cuts:?})",
                        a + i
                    ));
                }
            }
        }
    }
    if state.bars() != len as u64 {
        return Err(format!("state counted {} bars, not {len}", state.bars()));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn every_kernel_continues_bit_for_bit(
        spec in kernel_spec(),
        s in series(),
        splits in proptest::collection::vec(any::<usize>(), 1..4),
    ) {
        let plan = Plan::parse(&[spec.as_str()]).unwrap();
        prop_assert_eq!(check(&plan, &s, &splits), Ok(()));
    }

    #[test]
    fn fused_sma_and_ema_groups_continue_bit_for_bit(
        ns in proptest::collection::vec(1u32..40, 2..7),
        macd in (1u32..10, 1u32..15, 1u32..10),
        s in series(),
        splits in proptest::collection::vec(any::<usize>(), 1..4),
    ) {
        // Two or more close SMAs (and EMAs) are computed by one fused pass.
        let mut specs: Vec<String> = ns.iter().map(|n| format!("sma({n})")).collect();
        specs.extend(ns.iter().map(|n| format!("ema({n})")));
        let (f, d, sig) = macd;
        specs.push(format!("macd({f},{},{sig})", f + d));
        let plan = Plan::parse(&specs).unwrap();
        prop_assert_eq!(check(&plan, &s, &splits), Ok(()));
        // And the fused pass equals each kernel computed alone, bit for bit.
        let len = s.len();
        let mut together = plan.new_frame();
        plan.compute(s.bars(0..len), &mut together).unwrap();
        for (o, label) in plan.output_labels().iter().enumerate() {
            let alone_plan = Plan::parse(&[spec_of(label)]).unwrap();
            let mut alone = alone_plan.new_frame();
            alone_plan.compute(s.bars(0..len), &mut alone).unwrap();
            let idx = alone_plan.output_labels().iter().position(|l| l == label).unwrap();
            let a: Vec<u64> = alone.output(idx).unwrap().iter().map(|x| x.to_bits()).collect();
            let b: Vec<u64> = together.output(o).unwrap().iter().map(|x| x.to_bits()).collect();
            prop_assert_eq!(a, b, "{}", label);
        }
    }

    #[test]
    fn a_plan_of_many_specs_continues_bit_for_bit(
        specs in proptest::collection::vec(kernel_spec(), 1..8),
        s in series(),
        splits in proptest::collection::vec(any::<usize>(), 1..5),
    ) {
        let plan = Plan::parse(&specs).unwrap();
        prop_assert_eq!(check(&plan, &s, &splits), Ok(()));
    }
}

#[test]
fn bar_by_bar_continuation_of_the_benchmark_set_equals_full_compute() {
    let plan = kiln::features::standard_plan().unwrap();
    let u = kiln::market::synth::owned_bars(1, 400, 3);
    let b = &u[0];
    let s = Series {
        cols: [
            b.open.clone(),
            b.high.clone(),
            b.low.clone(),
            b.close.clone(),
            b.volume.clone(),
        ],
    };
    let splits: Vec<usize> = (1..400).collect();
    assert_eq!(check(&plan, &s, &splits), Ok(()));
}

fn sample_state() -> (Plan, Vec<u8>) {
    let plan = Plan::parse(&[
        "macd(12,26,9)",
        "bbands(20,2)",
        "volatility(5)",
        "wma(4)",
        "obv",
    ])
    .unwrap();
    let u = kiln::market::synth::owned_bars(1, 50, 9);
    let mut state = plan.new_state();
    let mut frame = plan.new_frame();
    plan.advance(&mut state, u[0].view(), &mut frame).unwrap();
    let bytes = plan.encode_state(&state);
    (plan, bytes)
}

#[test]
fn state_round_trips_through_its_encoding() {
    let (plan, bytes) = sample_state();
    let state = plan.decode_state(&bytes).unwrap();
    assert_eq!(state.bars(), 50);
    assert_eq!(plan.encode_state(&state), bytes);
    assert_eq!(&bytes[..4], b"KFST");
}

#[test]
fn every_truncation_of_the_state_is_rejected() {
    let (plan, bytes) = sample_state();
    for cut in 0..bytes.len() {
        match plan.decode_state(&bytes[..cut]) {
            Err(StateError::Truncated { .. }) => {}
            other => panic!("cut at {cut}: expected Truncated, got {other:?}"),
        }
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let (plan, mut bytes) = sample_state();
    bytes.push(0);
    assert_eq!(plan.decode_state(&bytes), Err(StateError::TrailingBytes(1)));
}

#[test]
fn bad_magic_is_rejected() {
    let (plan, mut bytes) = sample_state();
    bytes[0] = b'X';
    assert_eq!(plan.decode_state(&bytes), Err(StateError::BadMagic));
}

#[test]
fn another_version_is_rejected() {
    let (plan, mut bytes) = sample_state();
    bytes[4] = 99;
    assert_eq!(
        plan.decode_state(&bytes),
        Err(StateError::UnsupportedVersion { found: 99 })
    );
}

#[test]
fn state_of_another_plan_is_rejected() {
    let (_, bytes) = sample_state();
    let other = Plan::parse(&["sma(20)"]).unwrap();
    assert!(matches!(
        other.decode_state(&bytes),
        Err(StateError::PlanMismatch { .. })
    ));
}

#[test]
fn inconsistent_fields_are_rejected() {
    let (plan, bytes) = sample_state();
    // Bar count (offset 14..22) larger than the tail kept: tail length no longer matches.
    let mut b = bytes.clone();
    b[14..22].copy_from_slice(&5u64.to_le_bytes());
    assert!(matches!(plan.decode_state(&b), Err(StateError::Invalid(_))));
    // Tail length field (offset 22..26) changed.
    let mut b = bytes.clone();
    b[22..26].copy_from_slice(&7u32.to_le_bytes());
    assert!(matches!(
        plan.decode_state(&b),
        Err(StateError::Invalid(_) | StateError::Truncated { .. })
    ));
    // Flipping any single byte never panics; it is either rejected or decodes to a state.
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0xA5;
        let _ = plan.decode_state(&b);
    }
}
