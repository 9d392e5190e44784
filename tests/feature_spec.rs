//! Feature specs parse from and print to one canonical string, and every kind of bad
//! spec is rejected with an error that says what is wrong.

// A test reports failure by panicking; unwrap is the point here.
#![allow(clippy::unwrap_used)]

use kiln::features::spec::{PERIOD_MAX, parse};
use kiln::features::{FeatureSpec, SpecError};
use proptest::prelude::*;

#[test]
fn every_catalog_feature_round_trips_through_its_canonical_string() {
    let canonical = [
        "sma(20)",
        "ema(12)",
        "wma(9)",
        "macd(12,26,9)",
        "bbands(20,2)",
        "bbands(20,2.5)",
        "bbands(5,0.001)",
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
    for text in canonical {
        let spec = parse(text).expect(text);
        assert_eq!(spec.to_string(), text);
        assert_eq!(parse(&spec.to_string()), Ok(spec));
    }
}

#[test]
fn whitespace_case_and_empty_parentheses_are_accepted_and_canonicalised() {
    assert_eq!(
        parse("  SMA( 20 ) ").map(|s| s.to_string()),
        Ok("sma(20)".to_owned())
    );
    assert_eq!(
        parse("Macd(12, 26, 9)").map(|s| s.to_string()),
        Ok("macd(12,26,9)".to_owned())
    );
    assert_eq!(
        parse("bbands(20, 2.0)").map(|s| s.to_string()),
        Ok("bbands(20,2)".to_owned())
    );
    assert_eq!(parse("obv()"), Ok(FeatureSpec::Obv));
    assert_eq!("rsi(14)".parse::<FeatureSpec>(), Ok(FeatureSpec::Rsi(14)));
}

#[test]
fn multi_output_features_name_their_outputs() {
    let macd = parse("macd(12,26,9)").unwrap();
    assert_eq!(macd.outputs(), ["macd", "signal", "hist"]);
    assert_eq!(
        macd.output_labels(),
        [
            "macd(12,26,9).macd",
            "macd(12,26,9).signal",
            "macd(12,26,9).hist"
        ]
    );
    let bb = parse("bbands(20,2)").unwrap();
    assert_eq!(bb.outputs(), ["upper", "middle", "lower"]);
    assert_eq!(parse("sma(5)").unwrap().output_labels(), ["sma(5)"]);
    assert_eq!(parse("obv").unwrap().outputs(), ["obv"]);
}

#[test]
fn empty_spec_is_rejected() {
    assert_eq!(parse(""), Err(SpecError::Empty));
    assert_eq!(parse("   "), Err(SpecError::Empty));
}

#[test]
fn unknown_name_is_rejected_and_named() {
    let err = parse("smaa(20)").unwrap_err();
    assert_eq!(
        err,
        SpecError::UnknownName {
            name: "smaa".into()
        }
    );
    let msg = err.to_string();
    assert!(msg.contains("smaa") && msg.contains("sma"), "{msg}");
}

#[test]
fn malformed_syntax_is_rejected_with_the_reason() {
    for (text, reason) in [
        ("sma(20", "missing `)` at the end"),
        ("sma20)", "`)` without `(`"),
        ("sma((20))", "nested or extra parentheses"),
        ("sma(20)x", "missing `)` at the end"),
        ("macd(12,,9)", "empty parameter"),
        ("sma(20,)", "empty parameter"),
        ("(20)", "missing feature name"),
    ] {
        match parse(text) {
            Err(SpecError::Syntax { reason: r, .. }) => assert_eq!(r, reason, "{text}"),
            other => panic!("{text}: expected a syntax error, got {other:?}"),
        }
    }
}

#[test]
fn wrong_parameter_count_is_rejected_with_usage() {
    let err = parse("sma(20,3)").unwrap_err();
    assert_eq!(
        err,
        SpecError::WrongArity {
            name: "sma",
            expected: 1,
            got: 2,
            usage: "sma(n)"
        }
    );
    assert!(err.to_string().contains("sma(n)"));
    assert!(matches!(
        parse("sma"),
        Err(SpecError::WrongArity { got: 0, .. })
    ));
    assert!(matches!(
        parse("macd(12,26)"),
        Err(SpecError::WrongArity {
            expected: 3,
            got: 2,
            ..
        })
    ));
    assert!(matches!(
        parse("bbands(20)"),
        Err(SpecError::WrongArity {
            expected: 2,
            got: 1,
            ..
        })
    ));
    assert!(matches!(
        parse("obv(3)"),
        Err(SpecError::WrongArity {
            expected: 0,
            got: 1,
            ..
        })
    ));
    assert!(matches!(
        parse("trange(1)"),
        Err(SpecError::WrongArity { expected: 0, .. })
    ));
    assert!(matches!(
        parse("logret(1)"),
        Err(SpecError::WrongArity { expected: 0, .. })
    ));
}

#[test]
fn non_numeric_parameters_are_rejected() {
    for text in [
        "sma(x)",
        "sma(-5)",
        "sma(5.0)",
        "sma(+5)",
        "sma(1e3)",
        "macd(12,26,nine)",
    ] {
        assert!(
            matches!(parse(text), Err(SpecError::NotANumber { .. })),
            "{text}: {:?}",
            parse(text)
        );
    }
    assert!(matches!(
        parse("bbands(20,two)"),
        Err(SpecError::NotANumber { param: "k", .. })
    ));
}

#[test]
fn periods_outside_1_to_10000_are_rejected() {
    assert_eq!(
        parse("sma(0)"),
        Err(SpecError::OutOfRange {
            name: "sma",
            param: "n",
            value: 0,
            min: 1,
            max: PERIOD_MAX
        })
    );
    assert!(matches!(
        parse("ema(10001)"),
        Err(SpecError::OutOfRange { value: 10001, .. })
    ));
    assert!(matches!(
        parse("rsi(99999999999999999999999)"),
        Err(SpecError::OutOfRange {
            value: u64::MAX,
            ..
        })
    ));
    assert!(matches!(
        parse("macd(0,26,9)"),
        Err(SpecError::OutOfRange { param: "fast", .. })
    ));
    assert!(matches!(
        parse("macd(12,26,0)"),
        Err(SpecError::OutOfRange {
            param: "signal",
            ..
        })
    ));
    assert!(matches!(
        parse("bbands(0,2)"),
        Err(SpecError::OutOfRange { param: "n", .. })
    ));
    assert_eq!(parse("sma(1)"), Ok(FeatureSpec::Sma(1)));
    assert_eq!(parse("sma(10000)"), Ok(FeatureSpec::Sma(10_000)));
}

#[test]
fn volatility_needs_at_least_two_bars() {
    assert!(matches!(
        parse("volatility(1)"),
        Err(SpecError::OutOfRange { min: 2, .. })
    ));
    assert_eq!(parse("volatility(2)"), Ok(FeatureSpec::Volatility(2)));
}

#[test]
fn bbands_k_must_be_finite_and_positive() {
    for text in [
        "bbands(20,0)",
        "bbands(20,-1)",
        "bbands(20,inf)",
        "bbands(20,NaN)",
    ] {
        assert!(
            matches!(parse(text), Err(SpecError::KNotPositive { .. })),
            "{text}"
        );
    }
}

#[test]
fn macd_fast_must_be_below_slow() {
    assert_eq!(
        parse("macd(26,12,9)"),
        Err(SpecError::FastNotBelowSlow { fast: 26, slow: 12 })
    );
    assert_eq!(
        parse("macd(12,12,9)"),
        Err(SpecError::FastNotBelowSlow { fast: 12, slow: 12 })
    );
}

fn any_spec() -> impl Strategy<Value = FeatureSpec> {
    let n = 1u32..=PERIOD_MAX;
    prop_oneof![
        n.clone().prop_map(FeatureSpec::Sma),
        n.clone().prop_map(FeatureSpec::Ema),
        n.clone().prop_map(FeatureSpec::Wma),
        (1u32..PERIOD_MAX, 1u32..=PERIOD_MAX).prop_flat_map(|(fast, signal)| {
            (fast + 1..=PERIOD_MAX).prop_map(move |slow| FeatureSpec::Macd { fast, slow, signal })
        }),
        (n.clone(), 1e-6f64..1e6).prop_map(|(n, k)| FeatureSpec::Bbands { n, k }),
        n.clone().prop_map(FeatureSpec::Rsi),
        n.clone().prop_map(FeatureSpec::Atr),
        n.clone().prop_map(FeatureSpec::Natr),
        Just(FeatureSpec::Trange),
        n.clone().prop_map(FeatureSpec::Roc),
        n.clone().prop_map(FeatureSpec::Mom),
        n.clone().prop_map(FeatureSpec::Stddev),
        Just(FeatureSpec::Logret),
        (2u32..=PERIOD_MAX).prop_map(FeatureSpec::Volatility),
        n.clone().prop_map(FeatureSpec::Vwap),
        Just(FeatureSpec::Obv),
    ]
}

proptest! {
    #[test]
    fn any_valid_spec_round_trips(spec in any_spec()) {
        let text = spec.to_string();
        prop_assert_eq!(parse(&text), Ok(spec));
        prop_assert_eq!(parse(&text).map(|s| s.to_string()), Ok(text));
    }
}
