//! Computed feature series as a result store keeps them.
//!
//! The unit of storage is a *frame*: named columns of `f64`, one row per
//! bar of a symbol, written by one computation (the engine writes one frame
//! per symbol and feature plan, every output a column), with an opaque
//! state beside it (the kernels' state, so that new bars continue the
//! frame instead of recomputing it). A frame grows by appended chunks: a
//! full computation replaces it ([`FrameRows::Replace`]); a new bar appends
//! only its own rows ([`FrameRows::Append`]), never rewriting what is
//! stored. A reader asks for one column by its label ([`SeriesRead`], zero
//! copy per chunk) or for a frame's head ([`FrameRead`]).
//!
//! [`Series`] is the one-column frame, for callers (and tests) that write a
//! single output at a time.

use std::borrow::Cow;

use crate::bars::DataVersion;
use crate::error::{Result, StoreError};
use crate::names::{FEATURE_BYTES_MAX, SeriesKey, Symbol, check_label};

/// Which bars something was computed from: the first `bars` bars of a
/// symbol, the last of them at `last_ts`, with the content hash
/// ([`DataVersion::hash`]) of exactly those bars. A correction of an
/// earlier bar changes the hash as surely as an appended bar the count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Coverage {
    /// Number of bars.
    pub bars: u64,
    /// Timestamp of the last of them (epoch ns; 0 when there are none).
    pub last_ts: i64,
    /// Content hash of those bars.
    pub hash: u64,
}

impl Coverage {
    /// Bytes of [`Coverage::encode`].
    pub const BYTES: usize = 24;

    /// All of the bars of `v`.
    pub fn of(v: &DataVersion) -> Self {
        Coverage {
            bars: v.bars,
            last_ts: v.last_ts,
            hash: v.hash,
        }
    }

    /// Whether this covers exactly the bars of `v`.
    pub fn is(&self, v: &DataVersion) -> bool {
        *self == Coverage::of(v)
    }

    /// Big-endian: bars, last_ts, hash.
    pub fn encode(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        b[0..8].copy_from_slice(&self.bars.to_be_bytes());
        b[8..16].copy_from_slice(&self.last_ts.to_be_bytes());
        b[16..24].copy_from_slice(&self.hash.to_be_bytes());
        b
    }

    /// Reads [`Coverage::encode`]'s bytes; `None` when there are too few.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let word = |i: usize| -> Option<[u8; 8]> { b.get(i..i + 8)?.try_into().ok() };
        Some(Coverage {
            bars: u64::from_be_bytes(word(0)?),
            last_ts: i64::from_be_bytes(word(8)?),
            hash: u64::from_be_bytes(word(16)?),
        })
    }
}

/// Identifies one frame: a symbol and a name (printable ASCII without
/// spaces, 1 to [`FEATURE_BYTES_MAX`] bytes).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrameKey {
    /// The symbol.
    pub symbol: Symbol,
    /// The frame's name, for example `@plan:` and a plan's fingerprint.
    pub name: String,
}

impl FrameKey {
    /// Checks the name and builds the key.
    pub fn new(symbol: Symbol, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        check_label("frame name", &name, FEATURE_BYTES_MAX)?;
        Ok(FrameKey { symbol, name })
    }
}

impl std::fmt::Display for FrameKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.symbol, self.name)
    }
}

/// What a [`FrameWrite`] does with the frame's stored rows.
#[derive(Clone, Debug, PartialEq)]
pub enum FrameRows {
    /// Drops the stored frame and writes it anew from bar 0, with these
    /// column labels. A label another frame of the symbol had moves to
    /// this one; a frame left with no label is removed.
    Replace {
        /// One label per column (a feature output name each, unique).
        labels: Vec<String>,
    },
    /// Adds rows after exactly `after` (the frame's coverage now). When the
    /// frame has moved on meanwhile (another writer appended or replaced
    /// it) or is gone, the append is skipped: it is not an error.
    Append {
        /// The coverage the new rows continue.
        after: Coverage,
    },
    /// Removes the frame and the labels that point at it.
    Remove,
}

/// One write of a frame, stored with the job that made it.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameWrite {
    /// The frame.
    pub key: FrameKey,
    /// Replace, append or remove.
    pub rows: FrameRows,
    /// The bars the frame covers after this write.
    pub covers: Coverage,
    /// The new rows, one vector per column, each `covers.bars - start`
    /// long (start: 0 to replace, `after.bars` to append).
    pub columns: Vec<Vec<f64>>,
    /// The state after the last row, if this write saves one (a replace
    /// without it leaves the frame without a state; an append without it
    /// keeps the one saved before).
    pub state: Option<Vec<u8>>,
}

impl FrameWrite {
    /// The row this write's columns start at.
    pub fn start(&self) -> u64 {
        match &self.rows {
            FrameRows::Append { after } => after.bars,
            FrameRows::Replace { .. } | FrameRows::Remove => 0,
        }
    }

    /// Rows this write adds.
    pub fn row_count(&self) -> u64 {
        self.covers.bars.saturating_sub(self.start())
    }

    /// Checks the shape: labels valid and unique, one column per label (an
    /// append: as many as it has), every column `row_count` long, an append
    /// that goes forward. The error names the frame.
    pub fn check(&self) -> Result<()> {
        let bad = |why: String| StoreError::invalid("frame write", format!("{}: {why}", self.key));
        match &self.rows {
            FrameRows::Replace { labels } => {
                for (i, l) in labels.iter().enumerate() {
                    check_label("feature", l, FEATURE_BYTES_MAX)?;
                    if labels[..i].contains(l) {
                        return Err(bad(format!("label {l:?} appears twice")));
                    }
                }
                if labels.len() != self.columns.len() {
                    return Err(bad(format!(
                        "{} labels for {} columns",
                        labels.len(),
                        self.columns.len()
                    )));
                }
                if labels.len() > usize::from(u16::MAX) {
                    return Err(bad(format!("{} columns, at most 65535", labels.len())));
                }
            }
            FrameRows::Append { after } => {
                if after.bars > self.covers.bars {
                    return Err(bad(format!(
                        "an append from bar {} to bar {} goes backwards",
                        after.bars, self.covers.bars
                    )));
                }
            }
            FrameRows::Remove => return Ok(()),
        }
        let rows = self.row_count();
        if let Some((i, c)) = self
            .columns
            .iter()
            .enumerate()
            .find(|(_, c)| c.len() as u64 != rows)
        {
            return Err(bad(format!(
                "column {i} has {} rows, the write covers {rows}",
                c.len()
            )));
        }
        Ok(())
    }
}

/// A single computed series: the one-column frame named after its feature
/// (or, without values, a frame of no columns that only keeps a state).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Number of input bars the series was computed from (the data version).
    pub bar_count: u64,
    /// Timestamp of the last input bar (the data version).
    pub last_ts: i64,
    /// Content hash of the input bars ([`DataVersion::hash`]).
    pub data_hash: u64,
    /// One value per bar; NaN where the feature is undefined.
    pub values: Vec<f64>,
    /// Opaque state after the last bar.
    pub state: Vec<u8>,
}

impl Series {
    /// Its coverage.
    pub fn covers(&self) -> Coverage {
        Coverage {
            bars: self.bar_count,
            last_ts: self.last_ts,
            hash: self.data_hash,
        }
    }
}

impl From<(SeriesKey, Series)> for FrameWrite {
    /// The frame named after the feature, replaced: one column labelled
    /// with it (none when the series has no values), and the state.
    fn from((key, s): (SeriesKey, Series)) -> Self {
        let covers = s.covers();
        let (labels, columns) = if s.values.is_empty() && covers.bars > 0 {
            (Vec::new(), Vec::new())
        } else {
            (vec![key.feature.clone()], vec![s.values])
        };
        FrameWrite {
            key: FrameKey {
                symbol: key.symbol,
                name: key.feature,
            },
            rows: FrameRows::Replace { labels },
            covers,
            columns,
            state: (!s.state.is_empty()).then_some(s.state),
        }
    }
}

/// One stored column as a backend reads it: its chunks in place where it
/// can (the embedded store maps its files), else copies.
pub trait SeriesRead {
    /// The bars the column covers (those of its frame).
    fn covers(&self) -> Coverage;

    /// The values, a slice per stored chunk, in row order.
    fn chunks(&self) -> Vec<&[f64]>;

    /// The values as one slice: borrowed when they are one chunk, else
    /// assembled once.
    fn values(&self) -> Cow<'_, [f64]> {
        let mut chunks = self.chunks();
        if chunks.len() == 1 {
            return Cow::Borrowed(chunks.remove(0));
        }
        Cow::Owned(chunks.concat())
    }

    /// Number of values.
    fn len(&self) -> usize {
        self.chunks().iter().map(|c| c.len()).sum()
    }

    /// Whether there are no values.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bars the column was computed from.
    fn bar_count(&self) -> u64 {
        self.covers().bars
    }

    /// Timestamp of the last bar it was computed from.
    fn last_ts(&self) -> i64 {
        self.covers().last_ts
    }

    /// Content hash of the bars it was computed from.
    fn data_hash(&self) -> u64 {
        self.covers().hash
    }

    /// Whether it was computed from exactly the bars of `version`.
    fn is_current(&self, version: &DataVersion) -> bool {
        self.covers().is(version)
    }
}

impl SeriesRead for Series {
    fn covers(&self) -> Coverage {
        Series::covers(self)
    }

    fn chunks(&self) -> Vec<&[f64]> {
        vec![&self.values]
    }
}

/// A stored frame's head as a backend reads it: labels, coverage, state.
pub trait FrameRead {
    /// The column labels, in column order.
    fn labels(&self) -> &[String];

    /// The bars its rows cover.
    fn covers(&self) -> Coverage;

    /// The state saved last and the bars it was computed over (at most
    /// [`FrameRead::covers`]'s), if a state is saved.
    fn state(&self) -> Option<(Coverage, &[u8])>;

    /// Whether its rows cover exactly the bars of `version`.
    fn is_current(&self, version: &DataVersion) -> bool {
        self.covers().is(version)
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

/// Copies rows `rows` of the series whose values are `chunks`, in order,
/// into `out` (`rows.len()` long); rows past its end are left as they were.
pub fn copy_rows(chunks: &[&[f64]], rows: std::ops::Range<usize>, out: &mut [f64]) {
    let mut at = 0; // the series' index of the chunk's first value
    for chunk in chunks {
        let (lo, hi) = (rows.start.max(at), rows.end.min(at + chunk.len()));
        if lo < hi {
            out[lo - rows.start..hi - rows.start].copy_from_slice(&chunk[lo - at..hi - at]);
        }
        at += chunk.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym() -> Symbol {
        Symbol::new("A").expect("symbol")
    }

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
        assert_eq!(&*s.values(), &[1.0, 2.0, 3.0]);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn coverage_round_trips_and_short_bytes_are_refused() {
        let c = Coverage {
            bars: 9,
            last_ts: -5,
            hash: u64::MAX,
        };
        assert_eq!(Coverage::decode(&c.encode()), Some(c));
        assert_eq!(Coverage::decode(&c.encode()[..23]), None);
    }

    #[test]
    fn a_series_is_a_one_column_frame_and_a_state_only_series_has_no_column() {
        let key = SeriesKey::new(sym(), "sma(2)").expect("key");
        let s = Series {
            bar_count: 2,
            last_ts: 20,
            data_hash: 1,
            values: vec![f64::NAN, 1.5],
            state: vec![],
        };
        let w = FrameWrite::from((key.clone(), s));
        assert_eq!(w.key.name, "sma(2)");
        assert_eq!(
            w.rows,
            FrameRows::Replace {
                labels: vec!["sma(2)".into()]
            }
        );
        assert_eq!((w.columns.len(), w.state.is_none()), (1, true));
        w.check().expect("a valid write");
        let state_only = FrameWrite::from((
            key,
            Series {
                bar_count: 2,
                last_ts: 20,
                data_hash: 1,
                values: vec![],
                state: vec![7],
            },
        ));
        assert!(state_only.columns.is_empty());
        assert_eq!(state_only.state, Some(vec![7]));
        state_only.check().expect("a valid write");
    }

    #[test]
    fn misshapen_writes_are_refused_naming_the_frame() {
        let key = FrameKey::new(sym(), "f").expect("key");
        let covers = Coverage {
            bars: 3,
            last_ts: 3,
            hash: 3,
        };
        let write = |rows, columns| FrameWrite {
            key: key.clone(),
            rows,
            covers,
            columns,
            state: None,
        };
        let labels = |l: &[&str]| FrameRows::Replace {
            labels: l.iter().map(|s| s.to_string()).collect(),
        };
        for (w, needle) in [
            (
                write(labels(&["a"]), vec![vec![1.0; 2]]),
                "column 0 has 2 rows",
            ),
            (
                write(labels(&["a", "b"]), vec![vec![1.0; 3]]),
                "2 labels for 1",
            ),
            (
                write(labels(&["a", "a"]), vec![vec![1.0; 3]; 2]),
                "appears twice",
            ),
            (
                write(
                    FrameRows::Append {
                        after: Coverage { bars: 4, ..covers },
                    },
                    vec![],
                ),
                "goes backwards",
            ),
        ] {
            let e = w.check().expect_err(needle).to_string();
            assert!(e.contains("A/f") && e.contains(needle), "{e}");
        }
        let append = write(
            FrameRows::Append {
                after: Coverage { bars: 1, ..covers },
            },
            vec![vec![1.0; 2]],
        );
        append.check().expect("an append of two rows");
        assert_eq!((append.start(), append.row_count()), (1, 2));
    }

    #[test]
    fn copy_rows_copies_a_window_across_chunks() {
        let (a, b) = ([1.0, 2.0, 3.0], [4.0, 5.0]);
        let mut out = [0.0; 4];
        super::copy_rows(&[&a, &b], 1..5, &mut out);
        assert_eq!(out, [2.0, 3.0, 4.0, 5.0]);
        let mut out = [9.0; 3];
        super::copy_rows(&[&a], 2..5, &mut out);
        assert_eq!(out, [3.0, 9.0, 9.0], "past the end stays");
    }
}
