//! Key encoding. Every sled key is a big-endian composite byte string, so
//! that byte order is numeric order and a prefix scan finds exactly one
//! symbol's entries. Names are validated in `kiln-core`, so none contains
//! the 0x00 separator.

use kiln_core::{Result, SeriesKey, StoreError, Symbol};

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

/// The prefix under which all of a symbol's series keys (and bar chunks) sit.
pub(crate) fn symbol_prefix(symbol: &Symbol) -> Vec<u8> {
    let name = symbol.as_str().as_bytes();
    let mut k = Vec::with_capacity(name.len() + 1 + 16);
    k.extend_from_slice(name);
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
    fn u64_keys_sort_numerically() {
        assert!(u64_key(255) < u64_key(256));
        assert_eq!(read_u64(&u64_key(42), "t").expect("read"), 42);
        assert!(read_u64(&[1, 2], "t").is_err());
    }
}
