//! Feature specs: the strings a request uses to name an indicator (`rsi(14)`,
//! `macd(12,26,9)`), parsed into [`FeatureSpec`] and printed back in canonical form.
//!
//! This module owns the catalog (which names exist, how many parameters each takes, which
//! ranges are valid) and the names of every output. The canonical form is lowercase, with no
//! spaces, integers in decimal and `k` in Rust's shortest round-trip float form, so
//! `parse(spec.to_string()) == spec` for every valid spec.

use std::fmt;
use std::str::FromStr;

/// Smallest valid period of any windowed feature.
pub const PERIOD_MIN: u32 = 1;
/// Largest valid period: bounds the history a kernel keeps (and so the incremental state).
pub const PERIOD_MAX: u32 = 10_000;

/// One requested feature with its parameters.
///
/// Periods are bar counts in `PERIOD_MIN..=PERIOD_MAX`; see each variant for what it means
/// and which TA-Lib function it reproduces. Where TA-Lib's own minimum is higher (it
/// rejects `SMA(1)`, `RSI(1)`, `STDDEV(1)`), kiln applies the same formulas to the
/// smaller period instead of refusing it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum FeatureSpec {
    /// `sma(n)`: simple moving average of the close (TA-Lib `SMA`).
    Sma(u32),
    /// `ema(n)`: exponential moving average of the close, SMA-seeded (TA-Lib `EMA`).
    Ema(u32),
    /// `wma(n)`: linearly weighted moving average of the close (TA-Lib `WMA`).
    Wma(u32),
    /// `macd(fast,slow,signal)`: outputs `macd`, `signal`, `hist` (TA-Lib `MACD`).
    Macd {
        /// Fast EMA period; strictly less than `slow`.
        fast: u32,
        /// Slow EMA period.
        slow: u32,
        /// Signal EMA period (over the MACD line).
        signal: u32,
    },
    /// `bbands(n,k)`: outputs `upper`, `middle`, `lower`; middle = SMA(n), bands at
    /// ±k population standard deviations (TA-Lib `BBANDS(n, k, k, SMA)`).
    Bbands {
        /// Window length.
        n: u32,
        /// Band width in standard deviations; finite and > 0.
        k: f64,
    },
    /// `rsi(n)`: Wilder's relative strength index of the close (TA-Lib `RSI`).
    Rsi(u32),
    /// `atr(n)`: Wilder's average true range (TA-Lib `ATR`).
    Atr(u32),
    /// `natr(n)`: ATR as a percentage of the close (TA-Lib `NATR`).
    Natr(u32),
    /// `trange`: true range (TA-Lib `TRANGE`).
    Trange,
    /// `roc(n)`: rate of change in percent, `((c / c[-n]) - 1) * 100` (TA-Lib `ROC`).
    Roc(u32),
    /// `mom(n)`: momentum, `c - c[-n]` (TA-Lib `MOM`).
    Mom(u32),
    /// `stddev(n)`: population standard deviation of the close (TA-Lib `STDDEV(n, 1)`).
    Stddev(u32),
    /// `logret`: `ln(c / c[-1])`; no TA-Lib equivalent.
    Logret,
    /// `volatility(n)`: sample standard deviation of the log returns over n bars; no TA-Lib
    /// equivalent. n must be at least 2 (a sample of one has no spread).
    Volatility(u32),
    /// `vwap(n)`: rolling Σ(typical price × volume) / Σ volume over n bars, typical price
    /// `(h + l + c) / 3`; no TA-Lib equivalent.
    Vwap(u32),
    /// `obv`: on-balance volume (TA-Lib `OBV`).
    Obv,
}

/// Why a spec string was rejected. Every variant names what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The string was empty (or only whitespace).
    #[error("empty feature spec")]
    Empty,
    /// The name is not in the catalog.
    #[error("unknown feature `{name}` (known: {known})", known = KNOWN_NAMES.join(", "))]
    UnknownName {
        /// The name as written.
        name: String,
    },
    /// The text is not `name` or `name(p1,p2,...)`.
    #[error("malformed feature spec `{spec}`: {reason}")]
    Syntax {
        /// The whole spec as written.
        spec: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The feature takes a different number of parameters.
    #[error("`{name}` takes {expected} parameter(s) ({usage}), got {got}")]
    WrongArity {
        /// Feature name.
        name: &'static str,
        /// Parameters it takes.
        expected: usize,
        /// Parameters given.
        got: usize,
        /// How it is written, e.g. `macd(fast,slow,signal)`.
        usage: &'static str,
    },
    /// A parameter is not a number of the right kind.
    #[error("`{name}` parameter `{param}`: `{text}` is not {expected}")]
    NotANumber {
        /// Feature name.
        name: &'static str,
        /// Parameter name.
        param: &'static str,
        /// The text given.
        text: String,
        /// What was expected ("an integer", "a number").
        expected: &'static str,
    },
    /// An integer parameter outside its range.
    #[error("`{name}` parameter `{param}` = {value} is out of range {min}..={max}")]
    OutOfRange {
        /// Feature name.
        name: &'static str,
        /// Parameter name.
        param: &'static str,
        /// The value given.
        value: u64,
        /// Smallest valid value.
        min: u32,
        /// Largest valid value.
        max: u32,
    },
    /// `k` of `bbands` must be finite and strictly positive.
    #[error("`bbands` parameter `k` = {value} must be finite and > 0")]
    KNotPositive {
        /// The value given.
        value: f64,
    },
    /// `macd` needs `fast < slow`.
    #[error("`macd` needs fast < slow, got fast = {fast}, slow = {slow}")]
    FastNotBelowSlow {
        /// Fast period given.
        fast: u32,
        /// Slow period given.
        slow: u32,
    },
}

/// Every feature name a spec may use.
pub const KNOWN_NAMES: [&str; 16] = [
    "sma",
    "ema",
    "wma",
    "macd",
    "bbands",
    "rsi",
    "atr",
    "natr",
    "trange",
    "roc",
    "mom",
    "stddev",
    "logret",
    "volatility",
    "vwap",
    "obv",
];

impl FeatureSpec {
    /// The catalog name (`"macd"`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sma(_) => "sma",
            Self::Ema(_) => "ema",
            Self::Wma(_) => "wma",
            Self::Macd { .. } => "macd",
            Self::Bbands { .. } => "bbands",
            Self::Rsi(_) => "rsi",
            Self::Atr(_) => "atr",
            Self::Natr(_) => "natr",
            Self::Trange => "trange",
            Self::Roc(_) => "roc",
            Self::Mom(_) => "mom",
            Self::Stddev(_) => "stddev",
            Self::Logret => "logret",
            Self::Volatility(_) => "volatility",
            Self::Vwap(_) => "vwap",
            Self::Obv => "obv",
        }
    }

    /// Whether its values are prices (drawn over the candles) rather than
    /// an oscillator or a count (drawn in a pane of their own).
    pub fn on_price_scale(&self) -> bool {
        matches!(
            self,
            Self::Sma(_) | Self::Ema(_) | Self::Wma(_) | Self::Bbands { .. } | Self::Vwap(_)
        )
    }

    /// Names of the outputs, in order. A single-output feature's one output carries the
    /// feature's own name (`sma`); `macd` gives `macd, signal, hist`; `bbands` gives
    /// `upper, middle, lower`.
    pub fn outputs(&self) -> &'static [&'static str] {
        match self {
            Self::Macd { .. } => &["macd", "signal", "hist"],
            Self::Bbands { .. } => &["upper", "middle", "lower"],
            Self::Sma(_) => &["sma"],
            Self::Ema(_) => &["ema"],
            Self::Wma(_) => &["wma"],
            Self::Rsi(_) => &["rsi"],
            Self::Atr(_) => &["atr"],
            Self::Natr(_) => &["natr"],
            Self::Trange => &["trange"],
            Self::Roc(_) => &["roc"],
            Self::Mom(_) => &["mom"],
            Self::Stddev(_) => &["stddev"],
            Self::Logret => &["logret"],
            Self::Volatility(_) => &["volatility"],
            Self::Vwap(_) => &["vwap"],
            Self::Obv => &["obv"],
        }
    }

    /// Column label of output `i`: the canonical spec for single-output features
    /// (`sma(20)`), `spec.output` for multi-output ones (`macd(12,26,9).signal`).
    pub fn output_label(&self, i: usize) -> String {
        let outs = self.outputs();
        match outs.get(i) {
            Some(o) if outs.len() > 1 => format!("{self}.{o}"),
            _ => self.to_string(),
        }
    }

    /// Every output label of this spec, in output order.
    pub fn output_labels(&self) -> Vec<String> {
        (0..self.outputs().len())
            .map(|i| self.output_label(i))
            .collect()
    }
}

impl fmt::Display for FeatureSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name();
        match *self {
            Self::Sma(n)
            | Self::Ema(n)
            | Self::Wma(n)
            | Self::Rsi(n)
            | Self::Atr(n)
            | Self::Natr(n)
            | Self::Roc(n)
            | Self::Mom(n)
            | Self::Stddev(n)
            | Self::Volatility(n)
            | Self::Vwap(n) => write!(f, "{name}({n})"),
            Self::Macd { fast, slow, signal } => write!(f, "{name}({fast},{slow},{signal})"),
            // `{}` on f64 is the shortest string that parses back to the same bits.
            Self::Bbands { n, k } => write!(f, "{name}({n},{k})"),
            Self::Trange | Self::Logret | Self::Obv => f.write_str(name),
        }
    }
}

impl FromStr for FeatureSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

/// Parse a comma-separated list of specs, `rsi(14),macd(12,26,9)`: commas
/// inside parentheses belong to a spec.
pub fn parse_list(s: &str) -> Result<Vec<FeatureSpec>, SpecError> {
    let mut specs = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                specs.push(parse(&s[start..i])?);
                start = i + 1;
            }
            _ => {}
        }
    }
    specs.push(parse(&s[start..])?);
    Ok(specs)
}

/// Parse a spec such as `sma(20)`, `bbands(20, 2)` or `obv`.
///
/// Surrounding whitespace and whitespace around parameters are allowed; the name is
/// case-insensitive. A feature without parameters may be written with empty parentheses.
pub fn parse(s: &str) -> Result<FeatureSpec, SpecError> {
    let spec = s.trim();
    if spec.is_empty() {
        return Err(SpecError::Empty);
    }
    let syntax = |reason| SpecError::Syntax {
        spec: spec.to_owned(),
        reason,
    };
    let (name, params): (&str, Vec<&str>) = match spec.find('(') {
        None => {
            if spec.contains(')') {
                return Err(syntax("`)` without `(`"));
            }
            (spec, Vec::new())
        }
        Some(open) => {
            let inner = spec[open + 1..]
                .strip_suffix(')')
                .ok_or_else(|| syntax("missing `)` at the end"))?;
            if inner.contains('(') || inner.contains(')') {
                return Err(syntax("nested or extra parentheses"));
            }
            let params = if inner.trim().is_empty() {
                Vec::new()
            } else {
                inner.split(',').map(str::trim).collect()
            };
            if params.iter().any(|p| p.is_empty()) {
                return Err(syntax("empty parameter"));
            }
            (spec[..open].trim_end(), params)
        }
    };
    if name.is_empty() {
        return Err(syntax("missing feature name"));
    }
    let lower = name.to_ascii_lowercase();
    let Some(&name) = KNOWN_NAMES.iter().find(|k| **k == lower) else {
        return Err(SpecError::UnknownName {
            name: name.to_owned(),
        });
    };
    let arity = |expected: usize, usage: &'static str| {
        if params.len() == expected {
            Ok(())
        } else {
            Err(SpecError::WrongArity {
                name,
                expected,
                got: params.len(),
                usage,
            })
        }
    };
    let period = |i: usize, param: &'static str, min: u32| -> Result<u32, SpecError> {
        parse_int(name, param, params.get(i).copied().unwrap_or(""), min)
    };
    let one = |usage| -> Result<u32, SpecError> {
        arity(1, usage)?;
        period(0, "n", PERIOD_MIN)
    };
    Ok(match name {
        "sma" => FeatureSpec::Sma(one("sma(n)")?),
        "ema" => FeatureSpec::Ema(one("ema(n)")?),
        "wma" => FeatureSpec::Wma(one("wma(n)")?),
        "rsi" => FeatureSpec::Rsi(one("rsi(n)")?),
        "atr" => FeatureSpec::Atr(one("atr(n)")?),
        "natr" => FeatureSpec::Natr(one("natr(n)")?),
        "roc" => FeatureSpec::Roc(one("roc(n)")?),
        "mom" => FeatureSpec::Mom(one("mom(n)")?),
        "stddev" => FeatureSpec::Stddev(one("stddev(n)")?),
        "vwap" => FeatureSpec::Vwap(one("vwap(n)")?),
        "volatility" => {
            arity(1, "volatility(n)")?;
            FeatureSpec::Volatility(period(0, "n", 2)?)
        }
        "trange" | "logret" | "obv" => {
            arity(0, "no parameters")?;
            match name {
                "trange" => FeatureSpec::Trange,
                "logret" => FeatureSpec::Logret,
                _ => FeatureSpec::Obv,
            }
        }
        "macd" => {
            arity(3, "macd(fast,slow,signal)")?;
            let fast = period(0, "fast", PERIOD_MIN)?;
            let slow = period(1, "slow", PERIOD_MIN)?;
            let signal = period(2, "signal", PERIOD_MIN)?;
            if fast >= slow {
                return Err(SpecError::FastNotBelowSlow { fast, slow });
            }
            FeatureSpec::Macd { fast, slow, signal }
        }
        _ => {
            // "bbands", the only name left.
            arity(2, "bbands(n,k)")?;
            let n = period(0, "n", PERIOD_MIN)?;
            let text = params.get(1).copied().unwrap_or("");
            let k: f64 = text.parse().map_err(|_| SpecError::NotANumber {
                name,
                param: "k",
                text: text.to_owned(),
                expected: "a number",
            })?;
            if !(k.is_finite() && k > 0.0) {
                return Err(SpecError::KNotPositive { value: k });
            }
            FeatureSpec::Bbands { n, k }
        }
    })
}

fn parse_int(
    name: &'static str,
    param: &'static str,
    text: &str,
    min: u32,
) -> Result<u32, SpecError> {
    // Only plain decimal digits: `+5`, `5.0` and `1e3` are rejected so each period has
    // exactly one spelling.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SpecError::NotANumber {
            name,
            param,
            text: text.to_owned(),
            expected: "a whole number",
        });
    }
    // Saturate huge values: they are out of range either way and the error shows the bound.
    let value = text.parse::<u64>().unwrap_or(u64::MAX);
    if value < u64::from(min) || value > u64::from(PERIOD_MAX) {
        return Err(SpecError::OutOfRange {
            name,
            param,
            value,
            min,
            max: PERIOD_MAX,
        });
    }
    // In range, so it fits in u32.
    Ok(value as u32)
}
