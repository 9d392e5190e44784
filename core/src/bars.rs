//! Market data as every backend hands it over: bars, their columns, the
//! data version that changes exactly when a symbol's bars do, an ingest
//! session ([`BarIngest`]) and what reading a symbol's bars gives
//! ([`BarsRead`]).

use crate::error::{Result, StoreError};
use crate::job::{Enqueued, NewJob};
use crate::names::Symbol;

/// One bar. `vwap` is NaN when the source has none.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bar {
    /// Bar time, Unix epoch nanoseconds (UTC).
    pub ts: i64,
    /// Opening price.
    pub open: f64,
    /// High price.
    pub high: f64,
    /// Low price.
    pub low: f64,
    /// Closing price.
    pub close: f64,
    /// Volume.
    pub volume: f64,
    /// Volume-weighted average price, or NaN.
    pub vwap: f64,
}

impl Bar {
    /// Whether two bars carry the same bits (NaN equals NaN).
    pub fn same_as(&self, other: &Bar) -> bool {
        self.words() == other.words()
    }

    fn words(&self) -> [u64; 7] {
        [
            self.ts as u64,
            self.open.to_bits(),
            self.high.to_bits(),
            self.low.to_bits(),
            self.close.to_bits(),
            self.volume.to_bits(),
            self.vwap.to_bits(),
        ]
    }

    /// A 64-bit digest of the bar's bits. A symbol's content hash is the
    /// wrapping sum of its bars' digests, so it does not depend on how the
    /// bars were chunked or in which order they arrived.
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0x243f_6a88_85a3_08d3;
        for w in self.words() {
            h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            h ^= h >> 32;
        }
        // splitmix64's finalizer.
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
}

/// Bars as columns, in strictly increasing timestamp order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BarColumns {
    /// Unix epoch nanoseconds.
    pub ts: Vec<i64>,
    /// Opening prices.
    pub open: Vec<f64>,
    /// High prices.
    pub high: Vec<f64>,
    /// Low prices.
    pub low: Vec<f64>,
    /// Closing prices.
    pub close: Vec<f64>,
    /// Volumes.
    pub volume: Vec<f64>,
    /// Volume-weighted average prices (NaN where unknown).
    pub vwap: Vec<f64>,
}

impl BarColumns {
    /// Empty columns with room for `n` bars.
    pub fn with_capacity(n: usize) -> Self {
        BarColumns {
            ts: Vec::with_capacity(n),
            open: Vec::with_capacity(n),
            high: Vec::with_capacity(n),
            low: Vec::with_capacity(n),
            close: Vec::with_capacity(n),
            volume: Vec::with_capacity(n),
            vwap: Vec::with_capacity(n),
        }
    }

    /// Number of bars.
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// Whether there are no bars.
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Appends one bar (the caller keeps the order).
    pub fn push(&mut self, b: Bar) {
        self.ts.push(b.ts);
        self.open.push(b.open);
        self.high.push(b.high);
        self.low.push(b.low);
        self.close.push(b.close);
        self.volume.push(b.volume);
        self.vwap.push(b.vwap);
    }

    /// Bar `i`.
    pub fn bar(&self, i: usize) -> Bar {
        Bar {
            ts: self.ts[i],
            open: self.open[i],
            high: self.high[i],
            low: self.low[i],
            close: self.close[i],
            volume: self.volume[i],
            vwap: self.vwap[i],
        }
    }

    /// Bars `start..end` as new columns.
    pub fn slice(&self, start: usize, end: usize) -> BarColumns {
        BarColumns {
            ts: self.ts[start..end].to_vec(),
            open: self.open[start..end].to_vec(),
            high: self.high[start..end].to_vec(),
            low: self.low[start..end].to_vec(),
            close: self.close[start..end].to_vec(),
            volume: self.volume[start..end].to_vec(),
            vwap: self.vwap[start..end].to_vec(),
        }
    }

    /// The wrapping sum of the bars' digests.
    pub fn digest(&self) -> u64 {
        (0..self.len()).fold(0u64, |h, i| h.wrapping_add(self.bar(i).digest()))
    }

    /// Errors unless all columns have one length and timestamps strictly increase.
    pub fn check(&self, what: &dyn Fn() -> String) -> Result<()> {
        let n = self.ts.len();
        let lens = [
            self.open.len(),
            self.high.len(),
            self.low.len(),
            self.close.len(),
            self.volume.len(),
            self.vwap.len(),
        ];
        if lens.iter().any(|&l| l != n) {
            return Err(StoreError::invalid(
                "bars",
                format!(
                    "{}: columns of unequal length ({n} timestamps, {lens:?})",
                    what()
                ),
            ));
        }
        if let Some(i) = self.ts.windows(2).position(|w| w[0] >= w[1]) {
            return Err(StoreError::invalid(
                "bars",
                format!(
                    "{}: timestamps must strictly increase, but bar {} has {} after {}",
                    what(),
                    i + 1,
                    self.ts[i + 1],
                    self.ts[i]
                ),
            ));
        }
        Ok(())
    }
}

/// What a symbol's stored bars are: it changes exactly when they change, so a
/// feature series computed from an older version can tell it is stale.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DataVersion {
    /// Number of bars.
    pub bars: u64,
    /// First bar's timestamp (epoch ns).
    pub first_ts: i64,
    /// Last bar's timestamp (epoch ns).
    pub last_ts: i64,
    /// Wrapping sum of the bars' [`Bar::digest`]s.
    pub hash: u64,
}

impl DataVersion {
    /// The version of `cols` (none for no bars).
    pub fn of(cols: &BarColumns) -> Option<Self> {
        Some(DataVersion {
            bars: cols.len() as u64,
            first_ts: *cols.ts.first()?,
            last_ts: *cols.ts.last()?,
            hash: cols.digest(),
        })
    }
}

/// Two different bars with one timestamp from one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The symbol.
    pub symbol: Symbol,
    /// The source both came from (see [`BarIngest::source`]).
    pub source: u32,
    /// Their timestamp.
    pub ts: i64,
    /// Input location of the later bar, which is dropped if the caller goes on.
    pub at: Option<u64>,
    /// Input location of the bar that is kept.
    pub first_at: Option<u64>,
}

/// What a committed ingest changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Symbols whose bars changed, with their new data versions.
    pub changed: Vec<(Symbol, DataVersion)>,
    /// Symbols given only bars already stored with the same values.
    pub unchanged: Vec<Symbol>,
    /// Bars staged in the session (before merging with stored ones).
    pub rows: u64,
    /// Staged bars dropped as the later side of a [`Conflict`].
    pub conflicts: u64,
    /// The jobs [`BarIngest::commit_with`]'s follow-up made, as enqueued in
    /// the ingest's commit.
    pub follow_ups: Vec<Enqueued>,
}

/// What [`BarIngest::commit_with`] asks for the work new bars imply: it
/// hears the symbols whose bars change, with their new data versions, and
/// returns the jobs to enqueue with them.
pub type FollowUp<'a> = dyn FnMut(&[(Symbol, DataVersion)]) -> Result<Vec<NewJob>> + 'a;

/// An ingest in progress: bars are staged, then committed all at once, or
/// not at all (dropping a session without committing changes nothing).
pub trait BarIngest {
    /// Names the next source (a file); returns its id for [`BarIngest::stage`].
    /// Two different bars with one timestamp from one source are a
    /// [`Conflict`]; between sources the later one wins (a correction).
    fn source(&mut self, name: &str) -> u32;
    /// The name a source was given.
    fn source_name(&self, source: u32) -> &str;
    /// Adds bars of one symbol from `source`: sorted, with unique
    /// timestamps. `at` is each bar's input location (a line or row number,
    /// reported with conflicts), or empty when there is none.
    fn stage(&mut self, symbol: &Symbol, source: u32, cols: &BarColumns, at: &[u64]) -> Result<()>;
    /// Hands what is staged so far to the backend (a session bounds its
    /// memory by doing this by itself as it goes).
    fn flush(&mut self) -> Result<()>;
    /// Bars staged so far.
    fn rows(&self) -> u64;
    /// Makes every staged bar durable in one commit, or nothing.
    /// `on_conflict` hears each [`Conflict`]: an error from it aborts the
    /// ingest; `Ok` drops the later bar and goes on.
    fn commit(self, on_conflict: &mut dyn FnMut(&Conflict) -> Result<()>) -> Result<IngestReport>
    where
        Self: Sized,
    {
        self.commit_with(on_conflict, &mut |_| Ok(Vec::new()))
    }

    /// [`BarIngest::commit`], with the work the new bars imply in the same
    /// commit: `follow_up` hears the symbols whose bars change, with their
    /// new data versions, and the jobs it returns are enqueued with the
    /// bars, so that a crash leaves both or neither (never new bars with
    /// stale features and nothing queued). An error from it, or a queue
    /// that cannot take the jobs, aborts the ingest.
    fn commit_with(
        self,
        on_conflict: &mut dyn FnMut(&Conflict) -> Result<()>,
        follow_up: &mut FollowUp<'_>,
    ) -> Result<IngestReport>;
}

/// A symbol's bars in a time range, as a backend reads them: in place where
/// it can, else a copy.
pub trait BarsRead {
    /// Timestamps, Unix epoch nanoseconds.
    fn ts(&self) -> &[i64];
    /// Opening prices.
    fn open(&self) -> &[f64];
    /// High prices.
    fn high(&self) -> &[f64];
    /// Low prices.
    fn low(&self) -> &[f64];
    /// Closing prices.
    fn close(&self) -> &[f64];
    /// Volumes.
    fn volume(&self) -> &[f64];
    /// Volume-weighted average prices (NaN where unknown).
    fn vwap(&self) -> &[f64];
    /// The symbol's data version these bars were read at (of all its bars,
    /// not only those read).
    fn version(&self) -> DataVersion;

    /// Number of bars.
    fn len(&self) -> usize {
        self.ts().len()
    }

    /// Whether there are no bars.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bar `i` (which must be below `len()`).
    fn bar(&self, i: usize) -> Bar {
        Bar {
            ts: self.ts()[i],
            open: self.open()[i],
            high: self.high()[i],
            low: self.low()[i],
            close: self.close()[i],
            volume: self.volume()[i],
            vwap: self.vwap()[i],
        }
    }

    /// An owned copy.
    fn to_columns(&self) -> BarColumns {
        BarColumns {
            ts: self.ts().to_vec(),
            open: self.open().to_vec(),
            high: self.high().to_vec(),
            low: self.low().to_vec(),
            close: self.close().to_vec(),
            volume: self.volume().to_vec(),
            vwap: self.vwap().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_sum_ignores_chunking_but_sees_every_bit() {
        let bar = |ts, c| Bar {
            ts,
            open: c,
            high: c,
            low: c,
            close: c,
            volume: 1.0,
            vwap: f64::NAN,
        };
        let mut a = BarColumns::default();
        for i in 0..10 {
            a.push(bar(i, 1.0 + i as f64));
        }
        let (x, y) = (a.slice(0, 4), a.slice(4, 10));
        assert_eq!(x.digest().wrapping_add(y.digest()), a.digest());
        let mut b = a.clone();
        b.close[3] = f64::from_bits(b.close[3].to_bits() ^ 1);
        assert_ne!(a.digest(), b.digest());
        assert_ne!(bar(1, 2.0).digest(), bar(2, 1.0).digest());
    }

    #[test]
    fn the_bar_digest_matches_an_independent_implementation() {
        // Computed by a separate Python implementation of the store's
        // FORMAT.md description (multiply-xorshift over the seven words,
        // then splitmix64's finalizer), not by this crate.
        let b = Bar {
            ts: 1_420_156_800_000_000_000,
            open: 10.0,
            high: 11.5,
            low: 9.25,
            close: 10.5,
            volume: 1000.0,
            vwap: f64::NAN,
        };
        assert_eq!(b.digest(), 0x9a9a_9891_60c0_87da);
        let z = Bar {
            ts: 0,
            open: 0.0,
            high: 0.0,
            low: 0.0,
            close: 0.0,
            volume: 0.0,
            vwap: 0.0,
        };
        assert_eq!(z.digest(), 0x6805_6948_53e2_4b77);
    }
}
