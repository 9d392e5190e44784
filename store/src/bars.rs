//! Market data: each symbol's bars as columnar chunks (struct of arrays,
//! rkyv-archived, inline in sled when small, else in the value log) under
//! `symbol 0x00 first_ts`, and one [`DataVersion`] per symbol that changes
//! exactly when the symbol's bars do.
//!
//! Writing goes through a [`BarIngest`] session: the caller stages sorted,
//! validated columns (large ones are appended to the value log at once, so a
//! session holds little in memory), then `commit` plans every symbol against
//! what is stored and hands the plans to the writer, which applies them in
//! one group commit, or none of them. Appending after the last stored bar
//! adds chunks without reading the old ones; anything else (corrections,
//! back-fills, re-ingests) merges the symbol and rewrites it only if a value
//! changed. A dropped session leaves nothing behind.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::Ordering;

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::db::{Store, ViewBytes};
use crate::error::{Result, StoreError};
use crate::keys::{Symbol, symbol_prefix};
use crate::record::{IndexEntry, ResultValue, is_aligned_for};
use crate::writer::{BARS, DATA_VERSIONS, Op};

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
#[derive(rkyv::Archive, rkyv::Serialize, Clone, Debug, Default, PartialEq)]
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
    const BYTES: usize = 32;

    pub(crate) fn encode(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        b[0..8].copy_from_slice(&self.bars.to_be_bytes());
        b[8..16].copy_from_slice(&self.first_ts.to_be_bytes());
        b[16..24].copy_from_slice(&self.last_ts.to_be_bytes());
        b[24..32].copy_from_slice(&self.hash.to_be_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8], location: &str) -> Result<Self> {
        if b.len() != Self::BYTES {
            return Err(StoreError::corrupt(
                location,
                format!("{} bytes, want {}", b.len(), Self::BYTES),
            ));
        }
        let at = |i: usize| crate::keys::read_u64(&b[i..i + 8], location);
        Ok(DataVersion {
            bars: at(0)?,
            first_ts: at(8)? as i64,
            last_ts: at(16)? as i64,
            hash: at(24)?,
        })
    }

    fn of(cols: &BarColumns) -> Option<Self> {
        Some(DataVersion {
            bars: cols.len() as u64,
            first_ts: *cols.ts.first()?,
            last_ts: *cols.ts.last()?,
            hash: cols.digest(),
        })
    }
}

/// `symbol 0x00 first_ts` with the sign bit flipped, so keys sort by time.
pub(crate) fn chunk_key(symbol: &Symbol, first_ts: i64) -> Vec<u8> {
    let mut k = symbol_prefix(symbol);
    k.extend_from_slice(&((first_ts as u64) ^ (1 << 63)).to_be_bytes());
    k
}

pub(crate) fn chunk_first_ts(key: &[u8], location: &str) -> Result<i64> {
    let tail = key
        .len()
        .checked_sub(8)
        .map(|i| &key[i..])
        .ok_or_else(|| StoreError::corrupt(location, "short bar chunk key"))?;
    Ok((crate::keys::read_u64(tail, location)? ^ (1 << 63)) as i64)
}

/// Where the columns sit inside validated archived chunk bytes.
#[derive(Clone, Copy, Debug)]
struct ChunkLayout {
    len: usize,
    /// Byte offsets of ts, open, high, low, close, volume, vwap.
    offsets: [usize; 7],
}

fn chunk_layout(bytes: &[u8], location: &dyn Fn() -> String) -> Result<ChunkLayout> {
    if !is_aligned_for::<ArchivedBarColumns>(bytes) {
        return Err(StoreError::corrupt(
            location(),
            "chunk bytes are not aligned",
        ));
    }
    let a = rkyv::access::<ArchivedBarColumns, rancor::Error>(bytes)
        .map_err(|e| StoreError::corrupt(location(), e.to_string()))?;
    let len = a.ts.len();
    let floats = [&a.open, &a.high, &a.low, &a.close, &a.volume, &a.vwap];
    if floats.iter().any(|c| c.len() != len) {
        return Err(StoreError::corrupt(location(), "columns of unequal length"));
    }
    let base = bytes.as_ptr() as usize;
    let mut offsets = [a.ts.as_slice().as_ptr() as usize - base; 7];
    for (o, c) in offsets[1..].iter_mut().zip(floats) {
        *o = c.as_slice().as_ptr() as usize - base;
    }
    Ok(ChunkLayout { len, offsets })
}

/// One stored chunk, validated, read in place.
struct Chunk {
    bytes: ViewBytes,
    layout: ChunkLayout,
}

impl Chunk {
    fn new(bytes: ViewBytes, location: &dyn Fn() -> String) -> Result<Self> {
        let bytes = bytes.aligned_for::<ArchivedBarColumns>();
        let layout = chunk_layout(bytes.raw(), location)?;
        Ok(Chunk { bytes, layout })
    }

    fn column<T: bytemuck::Pod>(&self, i: usize) -> &[T] {
        let start = self.layout.offsets[i];
        self.bytes
            .raw()
            .get(start..start + self.layout.len * 8)
            .and_then(|b| bytemuck::try_cast_slice(b).ok())
            .unwrap_or(&[])
    }

    fn ts(&self) -> &[i64] {
        self.column(0)
    }
}

enum ViewData {
    /// One chunk, in place.
    Chunk(Chunk),
    /// Several chunks joined into one owned copy.
    Owned(BarColumns),
}

/// A symbol's bars in a time range: columns read in place when the range lies
/// in one stored chunk, else one contiguous copy.
pub struct BarsView {
    data: ViewData,
    start: usize,
    end: usize,
}

impl BarsView {
    fn column<T: bytemuck::Pod>(&self, i: usize, owned: impl Fn(&BarColumns) -> &[T]) -> &[T] {
        let all = match &self.data {
            ViewData::Chunk(c) => c.column(i),
            ViewData::Owned(o) => owned(o),
        };
        all.get(self.start..self.end).unwrap_or(&[])
    }

    /// Timestamps, Unix epoch nanoseconds.
    pub fn ts(&self) -> &[i64] {
        self.column(0, |o| &o.ts)
    }
    /// Opening prices.
    pub fn open(&self) -> &[f64] {
        self.column(1, |o| &o.open)
    }
    /// High prices.
    pub fn high(&self) -> &[f64] {
        self.column(2, |o| &o.high)
    }
    /// Low prices.
    pub fn low(&self) -> &[f64] {
        self.column(3, |o| &o.low)
    }
    /// Closing prices.
    pub fn close(&self) -> &[f64] {
        self.column(4, |o| &o.close)
    }
    /// Volumes.
    pub fn volume(&self) -> &[f64] {
        self.column(5, |o| &o.volume)
    }
    /// Volume-weighted average prices (NaN where unknown).
    pub fn vwap(&self) -> &[f64] {
        self.column(6, |o| &o.vwap)
    }

    /// Number of bars.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the range holds no bars.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Whether the columns are read in place (no copy was made).
    pub fn is_zero_copy(&self) -> bool {
        matches!(self.data, ViewData::Chunk(_))
    }

    /// An owned copy.
    pub fn to_columns(&self) -> BarColumns {
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

impl std::fmt::Debug for BarsView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BarsView")
            .field("bars", &self.len())
            .field("zero_copy", &self.is_zero_copy())
            .finish()
    }
}

/// A stored chunk's key, first timestamp and value (as in the results tree).
struct StoredChunk {
    key: Vec<u8>,
    first_ts: i64,
    value: sled::IVec,
}

/// Which bars of a symbol to read.
enum Want {
    Range(Bound<i64>, Bound<i64>),
    Last(usize),
}

impl Store {
    /// The symbol's data version, if it has bars.
    pub fn data_version(&self, symbol: &Symbol) -> Result<Option<DataVersion>> {
        let location = format!("data version of {symbol}");
        self.spaces()
            .get(DATA_VERSIONS, symbol.as_str().as_bytes())?
            .map(|v| DataVersion::decode(&v, &location))
            .transpose()
    }

    /// Every symbol with bars, in name order, with its data version.
    pub fn bar_symbols(&self) -> Result<Vec<(Symbol, DataVersion)>> {
        self.spaces()
            .scan(DATA_VERSIONS, &[])
            .map(|item| {
                let (k, v) = item?;
                let name = String::from_utf8(k)
                    .map_err(|_| StoreError::corrupt("data versions", "key is not UTF-8"))?;
                let version = DataVersion::decode(&v, &format!("data version of {name}"))?;
                Ok((Symbol::new(name)?, version))
            })
            .collect()
    }

    /// The symbol's bars with timestamps (epoch ns) in `range`; `None` when
    /// the symbol has no bars at all.
    pub fn bars(&self, symbol: &Symbol, range: impl RangeBounds<i64>) -> Result<Option<BarsView>> {
        let want = Want::Range(range.start_bound().cloned(), range.end_bound().cloned());
        self.read_bars(symbol, &want)
    }

    /// The last `lookback` bars (all with `None`) of each symbol, in the
    /// order given; `None` for a symbol without bars.
    pub fn bars_batch(
        &self,
        symbols: &[Symbol],
        lookback: Option<usize>,
    ) -> Result<Vec<Option<BarsView>>> {
        let want = Want::Last(lookback.unwrap_or(usize::MAX));
        symbols.iter().map(|s| self.read_bars(s, &want)).collect()
    }

    fn stored_chunks(&self, symbol: &Symbol) -> Result<Vec<StoredChunk>> {
        let location = format!("bar chunks of {symbol}");
        self.spaces()
            .scan(BARS, &symbol_prefix(symbol))
            .map(|item| {
                let (key, value) = item?;
                let first_ts = chunk_first_ts(&key, &location)?;
                Ok(StoredChunk {
                    key,
                    first_ts,
                    value,
                })
            })
            .collect()
    }

    fn load_chunk(&self, symbol: &Symbol, stored: &StoredChunk) -> Result<Chunk> {
        let location = || format!("bars of {symbol} from ts {}", stored.first_ts);
        self.load_value(stored.value.clone(), &location)?
            .ok_or_else(|| StoreError::corrupt(location(), "its value-log segment is missing"))
    }

    /// Reads a chunk value; `None` if its segment was compacted away.
    fn load_value(
        &self,
        value: sled::IVec,
        location: &dyn Fn() -> String,
    ) -> Result<Option<Chunk>> {
        let bytes = match ResultValue::decode(&value)? {
            ResultValue::Inline { .. } => ViewBytes::Inline(value),
            ResultValue::Pointer(entry) => match self.vlog_reader().read(&entry)? {
                Some(mapped) => ViewBytes::Mapped(mapped),
                None => return Ok(None),
            },
        };
        Chunk::new(bytes, location).map(Some)
    }

    fn read_bars(&self, symbol: &Symbol, want: &Want) -> Result<Option<BarsView>> {
        // A compaction can move a chunk between the scan and the read; the
        // index then points elsewhere, so read it again.
        for _ in 0..3 {
            let stored = self.stored_chunks(symbol)?;
            if stored.is_empty() {
                return Ok(None);
            }
            let mut chunks = Vec::new();
            let mut gone = false;
            // Chunks are in time order; pick those the range can touch.
            let picked: Vec<&StoredChunk> = match want {
                Want::Range(lo, hi) => {
                    let last_before = |ts: i64| stored.iter().rposition(|c| c.first_ts <= ts);
                    let from = match lo {
                        Bound::Included(t) | Bound::Excluded(t) => last_before(*t).unwrap_or(0),
                        Bound::Unbounded => 0,
                    };
                    stored[from..]
                        .iter()
                        .filter(|c| match hi {
                            Bound::Included(t) => c.first_ts <= *t,
                            Bound::Excluded(t) => c.first_ts < *t,
                            Bound::Unbounded => true,
                        })
                        .collect()
                }
                Want::Last(_) => stored.iter().collect(),
            };
            // For a lookback, load from the newest chunk back until enough.
            let mut need = match want {
                Want::Last(n) => *n,
                Want::Range(..) => usize::MAX,
            };
            for c in picked.iter().rev() {
                if need == 0 {
                    break;
                }
                let location = || format!("bars of {symbol} from ts {}", c.first_ts);
                match self.load_value(c.value.clone(), &location)? {
                    Some(chunk) => {
                        need = need.saturating_sub(chunk.layout.len);
                        chunks.push(chunk);
                    }
                    None => {
                        gone = true;
                        break;
                    }
                }
            }
            if gone {
                continue;
            }
            chunks.reverse();
            return Ok(Some(view_of(chunks, want)));
        }
        Err(StoreError::corrupt(
            format!("bars of {symbol}"),
            "its value-log segment keeps disappearing",
        ))
    }

    /// Starts an ingest session; nothing is visible until [`BarIngest::commit`].
    pub fn bar_ingest(&self) -> BarIngest {
        self.shared().staging.fetch_add(1, Ordering::SeqCst);
        BarIngest {
            store: self.clone(),
            sources: Vec::new(),
            parts: BTreeMap::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            staged: Vec::new(),
        }
    }
}

/// Cuts the wanted bars out of the loaded chunks (in time order).
fn view_of(mut chunks: Vec<Chunk>, want: &Want) -> BarsView {
    let data = if chunks.len() == 1 {
        match chunks.pop() {
            Some(c) => ViewData::Chunk(c),
            None => ViewData::Owned(BarColumns::default()),
        }
    } else {
        let n = chunks.iter().map(|c| c.layout.len).sum();
        let mut cols = BarColumns::with_capacity(n);
        for c in &chunks {
            cols.ts.extend_from_slice(c.ts());
            cols.open.extend_from_slice(c.column(1));
            cols.high.extend_from_slice(c.column(2));
            cols.low.extend_from_slice(c.column(3));
            cols.close.extend_from_slice(c.column(4));
            cols.volume.extend_from_slice(c.column(5));
            cols.vwap.extend_from_slice(c.column(6));
        }
        ViewData::Owned(cols)
    };
    let ts: &[i64] = match &data {
        ViewData::Chunk(c) => c.ts(),
        ViewData::Owned(o) => &o.ts,
    };
    let (start, end) = match want {
        Want::Last(n) => (ts.len().saturating_sub(*n), ts.len()),
        Want::Range(lo, hi) => {
            let start = match lo {
                Bound::Included(t) => ts.partition_point(|x| x < t),
                Bound::Excluded(t) => ts.partition_point(|x| x <= t),
                Bound::Unbounded => 0,
            };
            let end = match hi {
                Bound::Included(t) => ts.partition_point(|x| x <= t),
                Bound::Excluded(t) => ts.partition_point(|x| x < t),
                Bound::Unbounded => ts.len(),
            };
            (start, end.max(start))
        }
    };
    BarsView { data, start, end }
}

// ---- ingest ---------------------------------------------------------------

/// A staged piece of one symbol's new bars: sorted, from one source.
struct Part {
    source: u32,
    first_ts: i64,
    last_ts: i64,
    rows: usize,
    digest: u64,
    value: PartValue,
}

enum PartValue {
    /// Small: archived bytes kept in memory, stored inline at commit.
    Inline(AlignedVec),
    /// Large, waiting to be appended to the value log with others.
    Pending,
    /// Appended to the value log, indexed at commit.
    Staged(IndexEntry),
}

/// A chunk the writer is to store.
pub(crate) enum NewChunk {
    /// Already in the value log (staged).
    Staged(IndexEntry),
    /// Archived bytes: inline when small, else appended by the writer.
    Bytes(AlignedVec),
}

/// One symbol's change, planned against `expect` (the version read when
/// planning; the writer refuses the whole ingest if it moved meanwhile).
pub(crate) struct BarPlan {
    pub symbol: Symbol,
    pub expect: Option<DataVersion>,
    pub remove: Vec<Vec<u8>>,
    pub add: Vec<(Vec<u8>, NewChunk)>,
    pub version: DataVersion,
}

/// What a committed ingest changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Symbols whose bars changed, with their new data versions.
    pub changed: Vec<(Symbol, DataVersion)>,
    /// Symbols given only bars already stored with the same values.
    pub unchanged: Vec<Symbol>,
    /// New bars staged in the session (before merging with stored ones).
    pub rows: u64,
}

/// Most bars in one stored chunk; longer histories are split.
pub const BAR_CHUNK_ROWS_MAX: usize = 1 << 16;
/// Partial (not full) trailing chunks a symbol may have before an append
/// merges them into full ones.
const TAIL_CHUNKS_MAX: usize = 8;

/// An ingest in progress. Stage bars with [`BarIngest::stage`], then
/// [`BarIngest::commit`]; dropping it without committing changes nothing.
pub struct BarIngest {
    store: Store,
    sources: Vec<String>,
    parts: BTreeMap<Symbol, Vec<Part>>,
    /// Large parts' bytes waiting for one value-log append: (symbol, part index, bytes).
    pending: Vec<(Symbol, usize, AlignedVec)>,
    pending_bytes: usize,
    /// Value-log records staged and not (yet) indexed.
    staged: Vec<IndexEntry>,
}

/// Staged bytes gathered before one value-log append.
const STAGE_BATCH_BYTES: usize = 64 << 20;

impl BarIngest {
    /// Names the next source (a file); returns its id for [`BarIngest::stage`].
    /// Two bars with one timestamp from one source must agree; between
    /// sources the later one wins (a correction).
    pub fn source(&mut self, name: impl Into<String>) -> u32 {
        self.sources.push(name.into());
        (self.sources.len() - 1) as u32
    }

    /// Adds bars of one symbol from `source`: validated, sorted, with unique
    /// timestamps. Large pieces go to the value log now.
    pub fn stage(&mut self, symbol: &Symbol, source: u32, cols: &BarColumns) -> Result<()> {
        if source as usize >= self.sources.len() {
            return Err(StoreError::invalid("source", format!("no source {source}")));
        }
        cols.check(&|| format!("{symbol} from {}", self.sources[source as usize]))?;
        let Some(version) = DataVersion::of(cols) else {
            return Ok(());
        };
        let bytes = encode_chunk(cols)?;
        let parts = self.parts.entry(symbol.clone()).or_default();
        let value = if bytes.len() <= self.store.config().inline_series_bytes_max {
            PartValue::Inline(bytes)
        } else {
            self.pending_bytes += bytes.len();
            self.pending.push((symbol.clone(), parts.len(), bytes));
            PartValue::Pending
        };
        parts.push(Part {
            source,
            first_ts: version.first_ts,
            last_ts: version.last_ts,
            rows: cols.len(),
            digest: version.hash,
            value,
        });
        if self.pending_bytes >= STAGE_BATCH_BYTES {
            self.flush_pending()?;
        }
        Ok(())
    }

    /// Appends the pending large parts to the value log in one writer call.
    fn flush_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let (slots, payloads): (Vec<_>, Vec<_>) =
            pending.into_iter().map(|(s, i, b)| ((s, i), b)).unzip();
        let entries = self.store.call(|reply| Op::StageBars { payloads, reply })?;
        for ((symbol, i), entry) in slots.into_iter().zip(entries) {
            self.staged.push(entry);
            if let Some(part) = self.parts.get_mut(&symbol).and_then(|p| p.get_mut(i)) {
                part.value = PartValue::Staged(entry);
            }
        }
        Ok(())
    }

    /// Bars staged so far.
    pub fn rows(&self) -> u64 {
        self.parts.values().flatten().map(|p| p.rows as u64).sum()
    }

    /// Makes every staged bar durable in one group commit, or nothing.
    pub fn commit(mut self) -> Result<IngestReport> {
        self.flush_pending()?;
        let rows = self.rows();
        for attempt in 0.. {
            let mut report = IngestReport {
                rows,
                ..IngestReport::default()
            };
            let mut plans = Vec::new();
            for (symbol, parts) in &self.parts {
                match self.plan(symbol, parts)? {
                    Some(plan) => {
                        report.changed.push((symbol.clone(), plan.version));
                        plans.push(plan);
                    }
                    None => report.unchanged.push(symbol.clone()),
                }
            }
            if plans.is_empty() {
                return Ok(report);
            }
            let used: std::collections::HashSet<(u32, u64)> = plans
                .iter()
                .flat_map(|p| &p.add)
                .filter_map(|(_, c)| match c {
                    NewChunk::Staged(e) => Some((e.segment, e.offset)),
                    NewChunk::Bytes(_) => None,
                })
                .collect();
            match self.store.call(|reply| Op::IngestBars { plans, reply }) {
                Ok(()) => {
                    // Staged records a rewrite merged away are garbage now;
                    // dropping the session releases them.
                    self.staged
                        .retain(|e| !used.contains(&(e.segment, e.offset)));
                    return Ok(report);
                }
                // Another ingest changed one of these symbols meanwhile: plan again.
                Err(StoreError::Conflict(_)) if attempt < 3 => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Closed)
    }

    fn plan(&self, symbol: &Symbol, parts: &[Part]) -> Result<Option<BarPlan>> {
        // A commit between the two reads would pair old chunks with a new
        // version; read the version on both sides of the scan until they agree.
        let (stored, expect) = loop {
            let before = self.store.data_version(symbol)?;
            let stored = self.store.stored_chunks(symbol)?;
            if self.store.data_version(symbol)? == before {
                break (stored, before);
            }
        };
        let mut order: Vec<&Part> = parts.iter().collect();
        order.sort_by_key(|p| p.first_ts);
        let disjoint = order.windows(2).all(|w| w[0].last_ts < w[1].first_ts);
        let after_stored = expect.is_none_or(|v| v.last_ts < order[0].first_ts);
        if disjoint && after_stored {
            let partial_tail = self.partial_tail(symbol, &stored)?;
            if partial_tail + order.len() <= TAIL_CHUNKS_MAX {
                return Ok(Some(self.append_plan(symbol, expect, &order)));
            }
            // Too many small chunks: merge the partial tail with the new bars.
            let keep = stored.len() - partial_tail;
            return self.rewrite_plan(symbol, expect, &stored[keep..], parts, expect);
        }
        self.rewrite_plan(symbol, expect, &stored, parts, None)
    }

    /// Trailing stored chunks holding fewer than [`BAR_CHUNK_ROWS_MAX`] bars.
    fn partial_tail(&self, symbol: &Symbol, stored: &[StoredChunk]) -> Result<usize> {
        let mut n = 0;
        for c in stored.iter().rev() {
            if self.store.load_chunk(symbol, c)?.layout.len >= BAR_CHUNK_ROWS_MAX {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    fn append_plan(
        &self,
        symbol: &Symbol,
        expect: Option<DataVersion>,
        order: &[&Part],
    ) -> BarPlan {
        let mut version = expect.unwrap_or(DataVersion {
            first_ts: order[0].first_ts,
            ..DataVersion::default()
        });
        let mut add = Vec::with_capacity(order.len());
        for p in order {
            version.bars += p.rows as u64;
            version.last_ts = p.last_ts;
            version.hash = version.hash.wrapping_add(p.digest);
            add.push((chunk_key(symbol, p.first_ts), self.part_chunk(p)));
        }
        BarPlan {
            symbol: symbol.clone(),
            expect,
            remove: Vec::new(),
            add,
            version,
        }
    }

    fn part_chunk(&self, p: &Part) -> NewChunk {
        match &p.value {
            PartValue::Inline(bytes) => NewChunk::Bytes(bytes.clone()),
            PartValue::Staged(entry) => NewChunk::Staged(*entry),
            // `commit` flushes every pending part before planning.
            PartValue::Pending => NewChunk::Bytes(AlignedVec::new()),
        }
    }

    /// Merges `stored` (a suffix of the symbol's chunks, or all of them) with
    /// the new parts and rewrites them. `base` is the version of the chunks
    /// before `stored` when `stored` is only a suffix (an append); `None`
    /// when `stored` is everything. `None` if no value changes.
    fn rewrite_plan(
        &self,
        symbol: &Symbol,
        expect: Option<DataVersion>,
        stored: &[StoredChunk],
        parts: &[Part],
        base: Option<DataVersion>,
    ) -> Result<Option<BarPlan>> {
        let mut old = BarColumns::default();
        for c in stored {
            let chunk = self.store.load_chunk(symbol, c)?;
            append_chunk(&mut old, &chunk);
        }
        // Every (ts, rank, bar): stored bars rank 0, then parts in staging order.
        let mut all: Vec<(i64, usize, u32, Bar)> = (0..old.len())
            .map(|i| (old.ts[i], 0, u32::MAX, old.bar(i)))
            .collect();
        for (rank, p) in parts.iter().enumerate() {
            let cols = self.part_columns(symbol, p)?;
            all.extend((0..cols.len()).map(|i| (cols.ts[i], rank + 1, p.source, cols.bar(i))));
        }
        all.sort_by_key(|&(ts, rank, ..)| (ts, rank));
        let mut merged = BarColumns::with_capacity(all.len());
        let mut i = 0;
        while i < all.len() {
            let mut j = i + 1;
            while j < all.len() && all[j].0 == all[i].0 {
                j += 1;
            }
            let group = &all[i..j];
            if let Some(conflict) = same_source_conflict(group) {
                return Err(StoreError::invalid(
                    "bars",
                    format!(
                        "{symbol} at ts {} appears twice in {} with different values \
                         (the rows were far apart in the input, so their lines are not known)",
                        group[0].0, self.sources[conflict as usize]
                    ),
                ));
            }
            if let Some(last) = group.last() {
                merged.push(last.3);
            }
            i = j;
        }
        if merged == old && base.is_none() {
            return Ok(None);
        }
        let mut version = DataVersion::of(&merged).unwrap_or_default();
        if let Some(base) = base {
            version.bars += base.bars - old.len() as u64;
            version.first_ts = base.first_ts;
            version.hash = version
                .hash
                .wrapping_add(base.hash)
                .wrapping_sub(old.digest());
        }
        if expect == Some(version) {
            return Ok(None);
        }
        let remove = stored.iter().map(|c| c.key.clone()).collect();
        let mut add = Vec::new();
        let mut start = 0;
        while start < merged.len() {
            let end = (start + BAR_CHUNK_ROWS_MAX).min(merged.len());
            let piece = slice_columns(&merged, start, end);
            add.push((
                chunk_key(symbol, piece.ts[0]),
                NewChunk::Bytes(encode_chunk(&piece)?),
            ));
            start = end;
        }
        Ok(Some(BarPlan {
            symbol: symbol.clone(),
            expect,
            remove,
            add,
            version,
        }))
    }

    fn part_columns(&self, symbol: &Symbol, p: &Part) -> Result<BarColumns> {
        let location = || format!("staged bars of {symbol}");
        let bytes = match &p.value {
            PartValue::Inline(bytes) => ViewBytes::Copied(bytes.clone()),
            PartValue::Staged(entry) => ViewBytes::Mapped(
                self.store
                    .vlog_reader()
                    .read(entry)?
                    .ok_or_else(|| StoreError::corrupt(location(), "staged record is gone"))?,
            ),
            PartValue::Pending => {
                return Err(StoreError::corrupt(location(), "part was never staged"));
            }
        };
        let chunk = Chunk::new(bytes, &location)?;
        let mut cols = BarColumns::default();
        append_chunk(&mut cols, &chunk);
        Ok(cols)
    }
}

/// The source of two differing bars from the same source in one timestamp
/// group, if any (stored bars, source `u32::MAX`, never conflict).
fn same_source_conflict(group: &[(i64, usize, u32, Bar)]) -> Option<u32> {
    for (n, a) in group.iter().enumerate() {
        for b in &group[n + 1..] {
            if a.1 > 0 && a.2 == b.2 && !a.3.same_as(&b.3) {
                return Some(a.2);
            }
        }
    }
    None
}

fn append_chunk(cols: &mut BarColumns, chunk: &Chunk) {
    cols.ts.extend_from_slice(chunk.ts());
    cols.open.extend_from_slice(chunk.column(1));
    cols.high.extend_from_slice(chunk.column(2));
    cols.low.extend_from_slice(chunk.column(3));
    cols.close.extend_from_slice(chunk.column(4));
    cols.volume.extend_from_slice(chunk.column(5));
    cols.vwap.extend_from_slice(chunk.column(6));
}

fn slice_columns(c: &BarColumns, start: usize, end: usize) -> BarColumns {
    BarColumns {
        ts: c.ts[start..end].to_vec(),
        open: c.open[start..end].to_vec(),
        high: c.high[start..end].to_vec(),
        low: c.low[start..end].to_vec(),
        close: c.close[start..end].to_vec(),
        volume: c.volume[start..end].to_vec(),
        vwap: c.vwap[start..end].to_vec(),
    }
}

fn encode_chunk(cols: &BarColumns) -> Result<AlignedVec> {
    rkyv::to_bytes::<rancor::Error>(cols).map_err(|e| StoreError::corrupt("bars", e.to_string()))
}

impl Drop for BarIngest {
    fn drop(&mut self) {
        if !self.staged.is_empty() {
            let entries = std::mem::take(&mut self.staged);
            let _ = self.store.send(Op::UnstageBars { entries });
        }
        self.store.shared().staging.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Checks one symbol's stored chunks against its data version (for `check`).
pub(crate) fn check_symbol(
    store_chunks: &[(i64, Result<BarColumns>)],
    version: Option<DataVersion>,
    symbol: &str,
    problems: &mut Vec<String>,
) {
    let mut all = BarColumns::default();
    for (first_ts, cols) in store_chunks {
        match cols {
            Ok(c) => {
                if c.ts.first() != Some(first_ts) {
                    problems.push(format!(
                        "bars of {symbol}: chunk keyed {first_ts} starts at {:?}",
                        c.ts.first()
                    ));
                }
                all.ts.extend_from_slice(&c.ts);
                all.open.extend_from_slice(&c.open);
                all.high.extend_from_slice(&c.high);
                all.low.extend_from_slice(&c.low);
                all.close.extend_from_slice(&c.close);
                all.volume.extend_from_slice(&c.volume);
                all.vwap.extend_from_slice(&c.vwap);
            }
            Err(e) => problems.push(format!("bars of {symbol}: {e}")),
        }
    }
    if let Err(e) = all.check(&|| format!("bars of {symbol}")) {
        problems.push(e.to_string());
    }
    if DataVersion::of(&all) != version {
        problems.push(format!(
            "bars of {symbol}: data version {version:?} but the chunks give {:?}",
            DataVersion::of(&all)
        ));
    }
}

/// Decodes archived chunk bytes into owned columns (for `check`).
pub(crate) fn decode_chunk(bytes: &[u8], location: &dyn Fn() -> String) -> Result<BarColumns> {
    let mut copy = AlignedVec::<16>::new();
    copy.extend_from_slice(bytes);
    let chunk = Chunk::new(ViewBytes::Copied(copy), location)?;
    let mut cols = BarColumns::default();
    append_chunk(&mut cols, &chunk);
    Ok(cols)
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
        let (x, y) = (slice_columns(&a, 0, 4), slice_columns(&a, 4, 10));
        assert_eq!(x.digest().wrapping_add(y.digest()), a.digest());
        let mut b = a.clone();
        b.close[3] = f64::from_bits(b.close[3].to_bits() ^ 1);
        assert_ne!(a.digest(), b.digest());
        assert_ne!(bar(1, 2.0).digest(), bar(2, 1.0).digest());
    }

    #[test]
    fn chunk_keys_sort_by_time_including_negative() {
        let s = Symbol::new("A").expect("sym");
        let keys: Vec<_> = [-5i64, -1, 0, 3, i64::MAX]
            .iter()
            .map(|&t| chunk_key(&s, t))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        for (k, t) in keys.iter().zip([-5i64, -1, 0, 3, i64::MAX]) {
            assert_eq!(chunk_first_ts(k, "t").expect("decode"), t);
        }
    }

    #[test]
    fn data_version_round_trips() {
        let v = DataVersion {
            bars: 3,
            first_ts: -7,
            last_ts: 99,
            hash: u64::MAX,
        };
        assert_eq!(DataVersion::decode(&v.encode(), "t").expect("decode"), v);
        assert!(DataVersion::decode(&[0; 5], "t").is_err());
    }
}
