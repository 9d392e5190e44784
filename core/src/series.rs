//! Computed feature series as the result store keeps them, what reading one
//! gives ([`SeriesRead`]), and the per-symbol aggregates over finished jobs.

use crate::bars::DataVersion;

/// A computed feature series, as the result store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Number of input bars the series was computed from (the data version).
    pub bar_count: u64,
    /// Timestamp of the last input bar (the data version).
    pub last_ts: i64,
    /// Content hash of the input bars ([`DataVersion::hash`]), so a
    /// correction of an earlier bar shows as well as an appended one.
    pub data_hash: u64,
    /// One value per bar; NaN where the feature is undefined.
    pub values: Vec<f64>,
    /// Opaque kernel state after the last bar, for incremental continuation.
    pub state: Vec<u8>,
}

/// A stored series as a backend reads it: in place where it can (the
/// embedded store maps its files), else a copy.
pub trait SeriesRead {
    /// The values.
    fn values(&self) -> &[f64];
    /// The saved kernel state.
    fn state(&self) -> &[u8];
    /// Bars the series was computed from.
    fn bar_count(&self) -> u64;
    /// Timestamp of the last bar it was computed from.
    fn last_ts(&self) -> i64;
    /// Content hash of the bars it was computed from.
    fn data_hash(&self) -> u64;

    /// Whether it was computed from exactly the bars of `version`.
    fn is_current(&self, version: &DataVersion) -> bool {
        self.bar_count() == version.bars
            && self.last_ts() == version.last_ts
            && self.data_hash() == version.hash
    }

    /// An owned copy.
    fn to_series(&self) -> Series {
        Series {
            bar_count: self.bar_count(),
            last_ts: self.last_ts(),
            data_hash: self.data_hash(),
            values: self.values().to_vec(),
            state: self.state().to_vec(),
        }
    }
}

impl SeriesRead for Series {
    fn values(&self) -> &[f64] {
        &self.values
    }

    fn state(&self) -> &[u8] {
        &self.state
    }

    fn bar_count(&self) -> u64 {
        self.bar_count
    }

    fn last_ts(&self) -> i64 {
        self.last_ts
    }

    fn data_hash(&self) -> u64 {
        self.data_hash
    }
}

/// Per-symbol aggregates over finished jobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SymbolStats {
    /// Jobs that reached a terminal state.
    pub jobs: u64,
    /// Failed attempts (including those that were retried).
    pub failures: u64,
    /// Sum of the final attempts' run times, in ms.
    pub duration_ms_total: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_is_current_only_for_the_bars_it_was_computed_from() {
        let s = Series {
            bar_count: 3,
            last_ts: 30,
            data_hash: 7,
            values: vec![1.0, 2.0, 3.0],
            state: vec![1],
        };
        let v = DataVersion {
            bars: 3,
            first_ts: 10,
            last_ts: 30,
            hash: 7,
        };
        assert!(s.is_current(&v));
        for other in [
            DataVersion { bars: 4, ..v },
            DataVersion { last_ts: 31, ..v },
            DataVersion { hash: 8, ..v },
        ] {
            assert!(!s.is_current(&other), "{other:?}");
        }
        assert_eq!(s.to_series(), s);
    }
}
