//! Names: market symbols and series keys, validated here, once, so that no
//! name can contain a separator or confuse a backend's key encoding (no
//! 0x00, no spaces, bounded lengths).

use crate::error::{Result, StoreError};

/// Longest symbol, in bytes.
pub const SYMBOL_BYTES_MAX: usize = 32;
/// Longest feature name (a canonical spec string such as `bbands(20,2).upper`), in bytes.
pub const FEATURE_BYTES_MAX: usize = 128;
/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 256;
/// Longest job kind label, in bytes.
pub const KIND_BYTES_MAX: usize = 32;

/// A validated market symbol: 1–32 bytes of `[A-Za-z0-9._:-]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Symbol(String);

impl Symbol {
    /// Checks `s` and wraps it.
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        if s.is_empty() || s.len() > SYMBOL_BYTES_MAX {
            return Err(StoreError::invalid(
                "symbol",
                format!(
                    "{s:?} is {} bytes; a symbol has 1 to {SYMBOL_BYTES_MAX}",
                    s.len()
                ),
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(StoreError::invalid(
                "symbol",
                format!("{s:?} contains {c:?}; allowed are A-Z a-z 0-9 . _ : -"),
            ));
        }
        Ok(Symbol(s))
    }

    /// The symbol text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Symbol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Symbol {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        Symbol::new(s)
    }
}

/// Checks a printable-ASCII label (feature name, idempotency key, job kind).
pub fn check_label(field: &'static str, s: &str, bytes_max: usize) -> Result<()> {
    if s.is_empty() || s.len() > bytes_max {
        return Err(StoreError::invalid(
            field,
            format!("{s:?} is {} bytes; allowed are 1 to {bytes_max}", s.len()),
        ));
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(StoreError::invalid(
            field,
            format!("{s:?} contains {c:?}; only printable ASCII without spaces is allowed"),
        ));
    }
    Ok(())
}

/// Identifies one stored series: a symbol and a feature output name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    /// The symbol.
    pub symbol: Symbol,
    /// The feature output, for example `sma(20)` or `macd(12,26,9).signal`.
    pub feature: String,
}

impl SeriesKey {
    /// Checks the feature name and builds the key.
    pub fn new(symbol: Symbol, feature: impl Into<String>) -> Result<Self> {
        let feature = feature.into();
        check_label("feature", &feature, FEATURE_BYTES_MAX)?;
        Ok(SeriesKey { symbol, feature })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_accepts_the_allowed_alphabet() {
        for s in [
            "AAPL",
            "BRK.B",
            "ES_F",
            "BTC-USD",
            "X:Y",
            "a",
            &"Z".repeat(32),
        ] {
            assert_eq!(Symbol::new(s).expect(s).as_str(), s);
        }
    }

    #[test]
    fn symbol_rejects_bad_names_with_a_reason() {
        for (s, needle) in [
            ("", "0 bytes"),
            (&"A".repeat(33), "33 bytes"),
            ("../x", "'/'"),
            ("A B", "' '"),
            ("A\u{0}", "'\\0'"),
            ("É", "'É'"),
        ] {
            let e = Symbol::new(s).expect_err(s).to_string();
            assert!(
                e.contains("invalid symbol") && e.contains(needle),
                "{s:?}: {e}"
            );
        }
    }

    #[test]
    fn feature_names_must_be_printable() {
        let s = Symbol::new("A").expect("sym");
        assert!(SeriesKey::new(s.clone(), "").is_err());
        assert!(SeriesKey::new(s.clone(), "a b").is_err());
        assert!(SeriesKey::new(s.clone(), "x".repeat(129)).is_err());
        assert!(SeriesKey::new(s, "x".repeat(128)).is_ok());
    }
}
