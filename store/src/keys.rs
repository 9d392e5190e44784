//! Names and key encoding. Every sled key is a big-endian composite byte
//! string, so that byte order is numeric order and a prefix scan finds exactly
//! one symbol's entries. Symbols and feature names are validated here, once,
//! so that no name can contain the separator or confuse the encoding.

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
pub(crate) fn check_label(field: &'static str, s: &str, bytes_max: usize) -> Result<()> {
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

/// A series key as stored: `symbol 0x00 feature`. Symbols never contain
/// 0x00, so a scan of `symbol 0x00` lists exactly that symbol's features.
pub(crate) fn series_key_bytes(key: &SeriesKey) -> Vec<u8> {
    let mut k = symbol_prefix(&key.symbol);
    k.extend_from_slice(key.feature.as_bytes());
    k
}

/// A stored series key, checked.
pub(crate) fn series_key_from_bytes(key: &[u8]) -> Result<SeriesKey> {
    let bad = || StoreError::corrupt("results key", format!("{key:?}"));
    let sep = key.iter().position(|&b| b == 0).ok_or_else(bad)?;
    let symbol = std::str::from_utf8(&key[..sep]).map_err(|_| bad())?;
    let feature = std::str::from_utf8(&key[sep + 1..]).map_err(|_| bad())?;
    SeriesKey::new(Symbol::new(symbol)?, feature)
}

/// The prefix under which all of a symbol's series keys sit.
pub(crate) fn symbol_prefix(symbol: &Symbol) -> Vec<u8> {
    let mut k = Vec::with_capacity(symbol.0.len() + 1 + 16);
    k.extend_from_slice(symbol.0.as_bytes());
    k.push(0);
    k
}

/// A u64 as an 8-byte big-endian key.
pub(crate) fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Reads an 8-byte big-endian key or value.
pub(crate) fn read_u64(bytes: &[u8], location: &str) -> Result<u64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::corrupt(location, format!("{} bytes, want 8", bytes.len())))?;
    Ok(u64::from_be_bytes(arr))
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
    fn series_key_round_trips_and_keeps_symbols_apart() {
        let a = SeriesKey::new(Symbol::new("AB").expect("sym"), "sma(20)").expect("key");
        let b = SeriesKey::new(Symbol::new("A").expect("sym"), "Bsma(20)").expect("key");
        let (ka, kb) = (series_key_bytes(&a), series_key_bytes(&b));
        assert_eq!(series_key_from_bytes(&ka).expect("decode"), a);
        assert_ne!(ka, kb);
        assert!(ka.starts_with(&symbol_prefix(&a.symbol)));
        assert!(!kb.starts_with(&symbol_prefix(&a.symbol)));
    }

    #[test]
    fn feature_names_must_be_printable() {
        let s = Symbol::new("A").expect("sym");
        assert!(SeriesKey::new(s.clone(), "").is_err());
        assert!(SeriesKey::new(s.clone(), "a b").is_err());
        assert!(SeriesKey::new(s.clone(), "x".repeat(129)).is_err());
        assert!(SeriesKey::new(s, "x".repeat(128)).is_ok());
    }

    #[test]
    fn u64_keys_sort_numerically() {
        assert!(u64_key(255) < u64_key(256));
        assert_eq!(read_u64(&u64_key(42), "t").expect("read"), 42);
        assert!(read_u64(&[1, 2], "t").is_err());
    }
}
