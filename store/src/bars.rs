//! Market data: each symbol's bars as columnar chunks (struct of arrays,
//! rkyv-archived, at most [`BAR_CHUNK_ROWS_MAX`] bars each, in the value
//! log), and one [`VersionRecord`] per symbol: its [`DataVersion`], which
//! changes exactly when the symbol's bars do, and which of its tail slots
//! hold bars. A chunk lives under `symbol 0x00 first_ts` (`b`), or, when an
//! append of a few bars made it, in one of the symbol's
//! [`BAR_TAIL_SLOTS`] tail slots (`a`), which appends reuse instead of
//! adding and later removing keys (sled rewrites its tree around every key
//! it adds or removes: a one-bar append under a new key cost about four
//! times what an overwrite of a slot does). Tails are always the newest
//! chunks; a merge that touches one takes them all into keyed chunks. An
//! append of tails alone writes its data version into the newest tail, not
//! the record (one key per tick, not two).
//! Reads take a consistent snapshot of a symbol's chunks and hand out
//! columns in place when the range lies in one chunk ([`BarsView`]).
//! Writing is the ingest session's job (`ingest`).

use std::ops::{Bound, RangeBounds};

use kiln_core::{Bar, BarColumns, BarStore, BarsRead, DataVersion, Result, StoreError, Symbol};
use rkyv::rancor;

use crate::ingest::{IngestSession, MERGE};
use crate::keys::symbol_prefix;
use crate::record::{ResultValue, is_aligned_for};
use crate::space::{Space, Spaces};
use crate::store::Store;
use crate::view::ViewBytes;
use crate::vlog::VlogReader;

/// Most bars in one stored chunk; longer histories are split.
pub const BAR_CHUNK_ROWS_MAX: usize = 1 << 16;

/// How a chunk of [`BarColumns`] is archived (rkyv's remote derive: the
/// fields, in order, of the core's plain type).
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(remote = BarColumns, archived = ArchivedBarColumns)]
// Never built: its fields only give rkyv the layout.
#[allow(dead_code)]
struct BarColumnsDef {
    ts: Vec<i64>,
    open: Vec<f64>,
    high: Vec<f64>,
    low: Vec<f64>,
    close: Vec<f64>,
    volume: Vec<f64>,
    vwap: Vec<f64>,
}

/// Archives bars as one chunk.
pub(crate) fn encode_chunk(cols: &BarColumns) -> Result<rkyv::util::AlignedVec> {
    rkyv::to_bytes::<rancor::Error>(rkyv::with::With::<BarColumns, BarColumnsDef>::cast(cols))
        .map_err(|e| StoreError::corrupt("bars", e.to_string()))
}

/// Appends every bar of a stored chunk to `cols`.
pub(crate) fn extend_from(cols: &mut BarColumns, c: &Chunk) {
    cols.ts.extend_from_slice(c.ts());
    cols.open.extend_from_slice(c.column(1));
    cols.high.extend_from_slice(c.column(2));
    cols.low.extend_from_slice(c.column(3));
    cols.close.extend_from_slice(c.column(4));
    cols.volume.extend_from_slice(c.column(5));
    cols.vwap.extend_from_slice(c.column(6));
}

/// A data version as stored: bars u64, first_ts i64, last_ts i64, hash
/// u64, big-endian, 32 bytes.
fn encode_version(v: &DataVersion) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0..8].copy_from_slice(&v.bars.to_be_bytes());
    b[8..16].copy_from_slice(&v.first_ts.to_be_bytes());
    b[16..24].copy_from_slice(&v.last_ts.to_be_bytes());
    b[24..32].copy_from_slice(&v.hash.to_be_bytes());
    b
}

fn decode_data_version(b: &[u8], location: &str) -> Result<DataVersion> {
    if b.len() != 32 {
        return Err(StoreError::corrupt(
            location,
            format!("{} bytes, want 32", b.len()),
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

/// The tail slots that hold a symbol's newest chunks: appends number them
/// `from`, `from + 1`, … up to `next` (exclusive), and the one numbered `n`
/// is in slot `n % BAR_TAIL_SLOTS`. Numbers never repeat for a symbol
/// (nothing removes a data version record), which is what lets a slot say
/// by its number alone whether it is live: one below `from` holds nothing
/// of use (its record was released when the range moved past it). In a
/// stored record, `next` is as of its write: tails appended alone since
/// then are live too ([`current_record`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tails {
    pub from: u64,
    pub next: u64,
}

impl Tails {
    pub(crate) fn len(&self) -> u64 {
        self.next.saturating_sub(self.from)
    }
}

/// Tail slots per symbol: as many as the chunks of the smallest size class
/// that merge into one (see `ingest`), so an append never finds its slot
/// taken.
pub(crate) const BAR_TAIL_SLOTS: u64 = 32;

/// A symbol's data version record: the content version, a generation that
/// counts every change of the symbol's chunks (so a change that restores
/// earlier content, with other chunks, is still a change), and its live
/// tails. Stored (`d`) as 56 bytes, BE; a 40-byte value (formats 4 to 6)
/// has no tails. An append of nothing but tails leaves the stored record
/// as it was and puts the version in its newest tail: the current record
/// is the stored one with the tails appended since ([`current_record`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct VersionRecord {
    pub version: DataVersion,
    pub generation: u64,
    pub tails: Tails,
}

impl VersionRecord {
    pub(crate) fn encode(&self) -> [u8; 56] {
        let mut b = [0u8; 56];
        b[..32].copy_from_slice(&encode_version(&self.version));
        b[32..40].copy_from_slice(&self.generation.to_be_bytes());
        b[40..48].copy_from_slice(&self.tails.from.to_be_bytes());
        b[48..].copy_from_slice(&self.tails.next.to_be_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8], location: &str) -> Result<Self> {
        if b.len() != 40 && b.len() != 56 {
            return Err(StoreError::corrupt(
                location,
                format!("{} bytes, want 56 (or 40)", b.len()),
            ));
        }
        let at = |i: usize| crate::keys::read_u64(&b[i..i + 8], location);
        let tails = if b.len() == 56 {
            Tails {
                from: at(40)?,
                next: at(48)?,
            }
        } else {
            Tails::default()
        };
        if tails.from > tails.next || tails.len() > BAR_TAIL_SLOTS {
            return Err(StoreError::corrupt(
                location,
                format!("tails {}..{}", tails.from, tails.next),
            ));
        }
        Ok(VersionRecord {
            version: decode_data_version(&b[..32], location)?,
            generation: at(32)?,
            tails,
        })
    }
}

/// A tail slot's key: `symbol 0x00 slot`.
pub(crate) fn tail_key(symbol: &Symbol, seq: u64) -> Vec<u8> {
    let mut k = symbol_prefix(symbol);
    k.push((seq % BAR_TAIL_SLOTS) as u8);
    k
}

/// Set in a tail's stored number when the tail carries the data version
/// after it (every tail written since format 8; numbers stay far below).
const CARRIES_VERSION: u64 = 1 << 63;

/// A tail slot's header, before its result value: the tail's number, its
/// chunk's first timestamp and, since format 8, the symbol's data version
/// after the ingest that appended it (bars, last timestamp and hash: an
/// append never moves the first timestamp; every tail of one ingest
/// carries the same). An append that adds nothing but tails writes no
/// data version record; the newest tail says the version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TailHeader {
    pub seq: u64,
    pub first_ts: i64,
    pub version: Option<AppendedVersion>,
}

/// The parts of a data version an append changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AppendedVersion {
    pub bars: u64,
    pub last_ts: i64,
    pub hash: u64,
}

impl TailHeader {
    /// Where the result value starts.
    pub(crate) fn len(&self) -> usize {
        if self.version.is_some() { 40 } else { 16 }
    }
}

/// A tail slot's value: header, then the result value.
pub(crate) fn encode_tail(seq: u64, first_ts: i64, version: &DataVersion, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(40 + value.len());
    v.extend_from_slice(&(seq | CARRIES_VERSION).to_be_bytes());
    v.extend_from_slice(&first_ts.to_be_bytes());
    v.extend_from_slice(&version.bars.to_be_bytes());
    v.extend_from_slice(&version.last_ts.to_be_bytes());
    v.extend_from_slice(&version.hash.to_be_bytes());
    v.extend_from_slice(value);
    v
}

/// A tail slot's header (a value follows it).
pub(crate) fn decode_tail(value: &[u8], location: &str) -> Result<TailHeader> {
    let at = |i: usize| {
        value
            .get(i..i + 8)
            .map(|b| crate::keys::read_u64(b, location))
            .unwrap_or_else(|| {
                Err(StoreError::corrupt(
                    location,
                    format!("a tail slot of {} bytes", value.len()),
                ))
            })
    };
    let stored = at(0)?;
    let version = if stored & CARRIES_VERSION != 0 {
        Some(AppendedVersion {
            bars: at(16)?,
            last_ts: at(24)? as i64,
            hash: at(32)?,
        })
    } else {
        None
    };
    let header = TailHeader {
        seq: stored & !CARRIES_VERSION,
        first_ts: at(8)? as i64,
        version,
    };
    if value.len() <= header.len() {
        return Err(StoreError::corrupt(
            location,
            format!("a tail slot of {} bytes", value.len()),
        ));
    }
    Ok(header)
}

/// A symbol's current record, from its stored data version record `d` and
/// the tails appended after `d` was written (the newest carries the
/// version). Those are found by probing the slots from `hint` (a next tail
/// number seen before: a guess, checked) or from where `d` left them; `get`
/// reads a tail slot.
pub(crate) fn current_record(
    d: VersionRecord,
    symbol: &Symbol,
    hint: Option<u64>,
    mut get: impl FnMut(&[u8]) -> Result<Option<sled::IVec>>,
) -> Result<VersionRecord> {
    let location = format!("bar tails of {symbol}");
    let mut tail_at = |seq: u64| -> Result<Option<TailHeader>> {
        match get(&tail_key(symbol, seq))? {
            Some(v) => Ok(Some(decode_tail(&v, &location)?).filter(|t| t.seq == seq)),
            None => Ok(None),
        }
    };
    // Tails are appended in number order and a slot is reused only past the
    // range's start: the live tails are `from` up to the first slot that
    // does not hold its number.
    let limit = d.tails.from + BAR_TAIL_SLOTS;
    let mut next = d.tails.next;
    let mut newest = None;
    if let Some(h) = hint.filter(|h| (next + 1..=limit).contains(h))
        && let Some(t) = tail_at(h - 1)?
    {
        next = h;
        newest = Some(t);
    }
    while next < limit
        && let Some(t) = tail_at(next)?
    {
        next += 1;
        newest = Some(t);
    }
    let Some(newest) = newest else {
        return Ok(d);
    };
    let v = newest.version.ok_or_else(|| {
        StoreError::corrupt(
            format!("bar tail {} of {symbol}", newest.seq),
            "appended after the data version record, without a version",
        )
    })?;
    Ok(VersionRecord {
        version: DataVersion {
            bars: v.bars,
            first_ts: d.version.first_ts,
            last_ts: v.last_ts,
            hash: v.hash,
        },
        // Each tail appended without the record counts as a change.
        generation: d.generation + (next - d.tails.next),
        tails: Tails {
            from: d.tails.from,
            next,
        },
    })
}

/// The symbol a key of `b` or `a` starts with.
pub(crate) fn key_symbol(key: &[u8], location: &str) -> Result<Symbol> {
    let sep = key
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| StoreError::corrupt(location, "a key without its symbol"))?;
    let name = std::str::from_utf8(&key[..sep])
        .map_err(|_| StoreError::corrupt(location, "a symbol that is not UTF-8"))?;
    Symbol::new(name)
}

/// Whether the tail slot `key` holding `value` is one of its symbol's live
/// tails (else its record was released when the tails moved past it).
pub(crate) fn tail_is_live(spaces: &Spaces, key: &[u8], value: &[u8]) -> Result<bool> {
    let location = "bar tail slot";
    let symbol = key_symbol(key, location)?;
    let seq = decode_tail(value, location)?.seq;
    // Numbers never repeat for a symbol (see `Tails`).
    let d = decode_version(
        spaces.get(Space::DataVersions, symbol.as_str().as_bytes())?,
        &symbol,
    )?;
    // Slots are reused in number order: one at or past the range's start
    // holds a live tail, appended with `d` or after it.
    Ok(d.is_some_and(|d| d.tails.from <= seq))
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
    // A corrupt empty vector may hold any pointer: check every offset.
    let base = bytes.as_ptr() as usize;
    let offset = |p: usize| {
        p.checked_sub(base)
            .filter(|o| o + len * 8 <= bytes.len())
            .ok_or_else(|| StoreError::corrupt(location(), "a column lies outside the record"))
    };
    let mut offsets = [offset(a.ts.as_slice().as_ptr() as usize)?; 7];
    for (o, c) in offsets[1..].iter_mut().zip(floats) {
        *o = offset(c.as_slice().as_ptr() as usize)?;
    }
    Ok(ChunkLayout { len, offsets })
}

/// One stored chunk, validated, read in place.
pub(crate) struct Chunk {
    bytes: ViewBytes,
    layout: ChunkLayout,
}

impl Chunk {
    pub(crate) fn new(bytes: ViewBytes, location: &dyn Fn() -> String) -> Result<Self> {
        let bytes = bytes.aligned_for::<ArchivedBarColumns>();
        let layout = chunk_layout(bytes.raw(), location)?;
        Ok(Chunk { bytes, layout })
    }

    /// Column `i` of ts, open, high, low, close, volume, vwap.
    pub(crate) fn column<T: bytemuck::Pod>(&self, i: usize) -> &[T] {
        let start = self.layout.offsets[i];
        self.bytes
            .raw()
            .get(start..start + self.layout.len * 8)
            .and_then(|b| bytemuck::try_cast_slice(b).ok())
            .unwrap_or(&[])
    }

    pub(crate) fn ts(&self) -> &[i64] {
        self.column(0)
    }

    pub(crate) fn rows(&self) -> usize {
        self.layout.len
    }

    /// Bar `i` (which must be below `rows()`).
    pub(crate) fn bar(&self, i: usize) -> Bar {
        let f = |c: usize| self.column::<f64>(c).get(i).copied().unwrap_or(f64::NAN);
        Bar {
            ts: self.ts().get(i).copied().unwrap_or_default(),
            open: f(1),
            high: f(2),
            low: f(3),
            close: f(4),
            volume: f(5),
            vwap: f(6),
        }
    }
}

/// Reads a chunk value (inline or value-log pointer); `None` if its
/// segment was compacted away since the index was read.
pub(crate) fn load_chunk_value(
    reader: &VlogReader,
    value: sled::IVec,
    location: &dyn Fn() -> String,
) -> Result<Option<Chunk>> {
    match crate::view::load(reader, value, 0)? {
        Some(bytes) => Chunk::new(bytes, location).map(Some),
        None => Ok(None),
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
    version: DataVersion,
}

impl BarsView {
    fn column<T: bytemuck::Pod>(&self, i: usize, owned: impl Fn(&BarColumns) -> &[T]) -> &[T] {
        let all = match &self.data {
            ViewData::Chunk(c) => c.column(i),
            ViewData::Owned(o) => owned(o),
        };
        all.get(self.start..self.end).unwrap_or(&[])
    }

    /// Whether the columns are read in place (no copy was made).
    pub fn is_zero_copy(&self) -> bool {
        matches!(self.data, ViewData::Chunk(_))
    }
}

impl BarsRead for BarsView {
    fn ts(&self) -> &[i64] {
        self.column(0, |o| &o.ts)
    }
    fn open(&self) -> &[f64] {
        self.column(1, |o| &o.open)
    }
    fn high(&self) -> &[f64] {
        self.column(2, |o| &o.high)
    }
    fn low(&self) -> &[f64] {
        self.column(3, |o| &o.low)
    }
    fn close(&self) -> &[f64] {
        self.column(4, |o| &o.close)
    }
    fn volume(&self) -> &[f64] {
        self.column(5, |o| &o.volume)
    }
    fn vwap(&self) -> &[f64] {
        self.column(6, |o| &o.vwap)
    }
    fn len(&self) -> usize {
        self.end - self.start
    }
    fn version(&self) -> DataVersion {
        self.version
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

/// A stored chunk's key, first timestamp and result value; for a tail,
/// its number (the key is then its slot's).
pub(crate) struct StoredChunk {
    pub key: Vec<u8>,
    pub first_ts: i64,
    pub value: sled::IVec,
    pub tail: Option<u64>,
}

impl StoredChunk {
    /// About how many bars it holds, from its size alone (no read).
    pub(crate) fn rows_hint(&self) -> usize {
        match ResultValue::decode(&self.value) {
            Ok(ResultValue::Pointer(e)) => rows_in(e.len),
            _ => 0,
        }
    }
}

/// About how many bars a chunk record of `len` bytes holds: seven 8-byte
/// columns, after seven 8-byte column headers.
pub(crate) fn rows_in(len: u32) -> usize {
    (len as usize).saturating_sub(56) / 56
}

/// Which bars of a symbol to read.
enum Want {
    Range(Bound<i64>, Bound<i64>),
    Last(usize),
}

/// Decodes a data-versions value.
pub(crate) fn decode_version(
    value: Option<sled::IVec>,
    symbol: &Symbol,
) -> Result<Option<VersionRecord>> {
    value
        .map(|v| VersionRecord::decode(&v, &format!("data version of {symbol}")))
        .transpose()
}

/// Reads a symbol's version and chunk list as one snapshot: an ingest
/// committing between the reads would pair old chunks with a new version,
/// so the version is read on both sides of the scan until they agree.
/// As far back as `reach` says.
pub(crate) fn snapshot(
    store: &Store,
    symbol: &Symbol,
    reach: Reach,
) -> Result<(Option<VersionRecord>, Vec<StoredChunk>)> {
    for _ in 0..8 {
        let before = store.version_record(symbol)?;
        let stored = stored_chunks(store.spaces(), symbol, before.as_ref(), reach)?;
        if let Some(stored) = stored
            && store.version_record(symbol)? == before
        {
            return Ok((before, stored));
        }
    }
    Err(StoreError::Conflict(format!(
        "the bars of {symbol} keep changing while they are read"
    )))
}

impl BarStore for Store {
    type BarsView = BarsView;
    type Ingest = IngestSession;

    /// From memory: the writer publishes each version once its batch has
    /// committed (sled's batches block its readers while they apply).
    fn data_version(&self, symbol: &Symbol) -> Result<Option<DataVersion>> {
        match self.shared().versions.read() {
            Ok(m) => Ok(m.get(symbol).map(|r| r.version)),
            Err(_) => Ok(self.version_record(symbol)?.map(|r| r.version)),
        }
    }

    fn bar_symbols(&self) -> Result<Vec<(Symbol, DataVersion)>> {
        let mut out = Vec::new();
        for item in self.spaces().scan(Space::DataVersions, &[]) {
            let name = String::from_utf8(item?.0)
                .map_err(|_| StoreError::corrupt("data versions", "key is not UTF-8"))?;
            let symbol = Symbol::new(name)?;
            // The stored record with the tails appended since, read whole.
            if let Some(r) = self.version_record(&symbol)? {
                out.push((symbol, r.version));
            }
        }
        Ok(out)
    }

    fn bars(&self, symbol: &Symbol, range: impl RangeBounds<i64>) -> Result<Option<BarsView>> {
        let want = Want::Range(range.start_bound().cloned(), range.end_bound().cloned());
        self.read_bars(symbol, &want)
    }

    fn bars_batch(
        &self,
        symbols: &[Symbol],
        lookback: Option<usize>,
    ) -> Result<Vec<Option<BarsView>>> {
        let want = Want::Last(lookback.unwrap_or(usize::MAX));
        symbols.iter().map(|s| self.read_bars(s, &want)).collect()
    }

    fn bar_ingest(&self) -> Result<IngestSession> {
        Ok(IngestSession::new(self.clone()))
    }
}

impl Store {
    /// A symbol's current record, read from sled: the stored record, the
    /// tails appended since, and the stored record again, until it has not
    /// changed meanwhile (tails found after a newer record was written
    /// would pair its bars with the older record's first timestamp).
    pub(crate) fn version_record(&self, symbol: &Symbol) -> Result<Option<VersionRecord>> {
        let stored = || {
            decode_version(
                self.spaces()
                    .get(Space::DataVersions, symbol.as_str().as_bytes())?,
                symbol,
            )
        };
        let hint = match self.shared().versions.read() {
            Ok(m) => m.get(symbol).map(|r| r.tails.next),
            Err(_) => None,
        };
        let mut d = stored()?;
        for _ in 0..8 {
            let Some(before) = d else {
                return Ok(None);
            };
            let record = current_record(before, symbol, hint, |k| {
                self.spaces().get(Space::BarTails, k)
            })?;
            d = stored()?;
            if d == Some(before) {
                return Ok(Some(record));
            }
        }
        Err(StoreError::Conflict(format!(
            "the data version of {symbol} keeps changing while it is read"
        )))
    }

    /// Loads a chunk; `None` if its segment was compacted away meanwhile.
    pub(crate) fn load_chunk(
        &self,
        symbol: &Symbol,
        stored: &StoredChunk,
    ) -> Result<Option<Chunk>> {
        let location = || format!("bars of {symbol} from ts {}", stored.first_ts);
        load_chunk_value(self.vlog_reader(), stored.value.clone(), &location)
    }

    fn read_bars(&self, symbol: &Symbol, want: &Want) -> Result<Option<BarsView>> {
        // A compaction can move a chunk between the scan and the read; the
        // index then points elsewhere, so read it again.
        for _ in 0..3 {
            let reach = match want {
                Want::Range(Bound::Included(t) | Bound::Excluded(t), _) => Reach::From(*t),
                _ => Reach::All,
            };
            let (version, stored) = snapshot(self, symbol, reach)?;
            let Some(version) = version else {
                return Ok(None);
            };
            // Chunks are in time order; pick those the range can touch.
            let picked: &[StoredChunk] = match want {
                Want::Range(lo, hi) => {
                    let from = match lo {
                        Bound::Included(t) | Bound::Excluded(t) => {
                            stored.iter().rposition(|c| c.first_ts <= *t).unwrap_or(0)
                        }
                        Bound::Unbounded => 0,
                    };
                    let to = stored.partition_point(|c| match hi {
                        Bound::Included(t) => c.first_ts <= *t,
                        Bound::Excluded(t) => c.first_ts < *t,
                        Bound::Unbounded => true,
                    });
                    stored.get(from..to.max(from)).unwrap_or(&[])
                }
                Want::Last(_) => &stored,
            };
            // For a lookback, load from the newest chunk back until enough.
            let mut need = match want {
                Want::Last(n) => *n,
                Want::Range(..) => usize::MAX,
            };
            let mut chunks = Vec::new();
            let mut gone = false;
            for c in picked.iter().rev() {
                if need == 0 {
                    break;
                }
                match self.load_chunk(symbol, c)? {
                    Some(chunk) => {
                        need = need.saturating_sub(chunk.rows());
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
            return Ok(Some(view_of(chunks, want, version.version)));
        }
        Err(StoreError::corrupt(
            format!("bars of {symbol}"),
            "its value-log segment keeps disappearing",
        ))
    }
}

/// Cuts the wanted bars out of the loaded chunks (in time order).
fn view_of(mut chunks: Vec<Chunk>, want: &Want, version: DataVersion) -> BarsView {
    let data = if chunks.len() == 1 {
        match chunks.pop() {
            Some(c) => ViewData::Chunk(c),
            None => ViewData::Owned(BarColumns::default()),
        }
    } else {
        let n = chunks.iter().map(Chunk::rows).sum();
        let mut cols = BarColumns::with_capacity(n);
        for c in &chunks {
            extend_from(&mut cols, c);
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
    BarsView {
        data,
        start,
        end,
        version,
    }
}

/// How far back from the newest a read of a symbol's chunks goes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reach {
    /// Every chunk.
    All,
    /// The chunks that can hold bars at or after this time.
    From(i64),
    /// The chunks after the newest one that never merges again (see
    /// `ingest::MERGE`), and that one: all an append's merge can touch.
    Unsealed,
}

impl Reach {
    /// Whether the read can stop after `c` (read newest first).
    fn reached(self, c: &StoredChunk) -> bool {
        match self {
            Reach::All => false,
            Reach::From(t) => c.first_ts <= t,
            Reach::Unsealed => c.tail.is_none() && c.rows_hint() >= MERGE.sealed_rows,
        }
    }
}

/// A symbol's stored chunks in time order (its keyed chunks, then its live
/// tails), read from the newest back as far as `reach` says (a tick reads
/// one or two). `None` when a live tail is not in its slot: an ingest
/// committed since `record` was read.
pub(crate) fn stored_chunks(
    spaces: &Spaces,
    symbol: &Symbol,
    record: Option<&VersionRecord>,
    reach: Reach,
) -> Result<Option<Vec<StoredChunk>>> {
    let location = format!("bar chunks of {symbol}");
    let live = record.map(|r| r.tails).unwrap_or_default();
    // Newest first, reversed at the end.
    let mut out = Vec::new();
    for seq in (live.from..live.next).rev() {
        let key = tail_key(symbol, seq);
        let Some(value) = spaces.get(Space::BarTails, &key)? else {
            return Ok(None);
        };
        let header = decode_tail(&value, &location)?;
        if header.seq != seq {
            return Ok(None);
        }
        let start = header.len();
        let c = StoredChunk {
            key,
            first_ts: header.first_ts,
            value: value.subslice(start, value.len() - start),
            tail: Some(seq),
        };
        let done = reach.reached(&c);
        out.push(c);
        if done {
            out.reverse();
            return Ok(Some(out));
        }
    }
    if record.is_none() {
        return Ok(Some(out));
    }
    let keyed = |item: Result<(Vec<u8>, sled::IVec)>| {
        let (key, value) = item?;
        Ok(StoredChunk {
            first_ts: chunk_first_ts(&key, &location)?,
            key,
            value,
            tail: None,
        })
    };
    for item in spaces.scan(Space::Bars, &symbol_prefix(symbol)).rev() {
        let c = keyed(item)?;
        let done = reach.reached(&c);
        out.push(c);
        if done {
            break;
        }
    }
    out.reverse();
    Ok(Some(out))
}

// ---- integrity -----------------------------------------------------------

/// Reads every bar chunk back (checksummed, validated) and checks each
/// symbol's chunks against its data version: count, first and last
/// timestamp, content hash, order within and across chunks, the chunk size
/// bound; and that no chunk or tail slot belongs to a symbol without one.
/// One symbol's bars are held at a time. Returns chunks scanned.
pub(crate) fn check_bars(
    spaces: &Spaces,
    reader: &VlogReader,
    problems: &mut Vec<String>,
) -> Result<u64> {
    let mut symbols = Vec::new();
    for item in spaces.scan(Space::DataVersions, &[]) {
        let (k, v) = item?;
        let name = String::from_utf8_lossy(&k).into_owned();
        let location = format!("data version of {name}");
        let found = Symbol::new(name.clone()).and_then(|s| {
            let d = VersionRecord::decode(&v, &location)?;
            let record = current_record(d, &s, None, |k| spaces.get(Space::BarTails, k))?;
            Ok((s, record))
        });
        match found {
            Ok(found) => symbols.push(found),
            Err(e) => problems.push(format!("{location}: {e}")),
        }
    }
    let mut chunks = 0;
    for (symbol, record) in &symbols {
        let Some(stored) = stored_chunks(spaces, symbol, Some(record), Reach::All)? else {
            problems.push(format!(
                "bars of {symbol}: a live tail's slot holds another tail"
            ));
            continue;
        };
        let mut all = BarColumns::default();
        for c in &stored {
            chunks += 1;
            let location = || format!("bars of {symbol} from ts {}", c.first_ts);
            let chunk = load_chunk_value(reader, c.value.clone(), &location).and_then(|l| {
                l.ok_or_else(|| StoreError::corrupt(location(), "segment is missing"))
            });
            match chunk {
                Ok(chunk) => {
                    if chunk.ts().first() != Some(&c.first_ts) {
                        problems.push(format!(
                            "{}: the chunk starts at {:?}",
                            location(),
                            chunk.ts().first()
                        ));
                    }
                    if chunk.rows() > BAR_CHUNK_ROWS_MAX {
                        problems.push(format!(
                            "{}: {} bars, more than {BAR_CHUNK_ROWS_MAX}",
                            location(),
                            chunk.rows()
                        ));
                    }
                    extend_from(&mut all, &chunk);
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        if let Err(e) = all.check(&|| format!("bars of {symbol}")) {
            problems.push(e.to_string());
        }
        let found = DataVersion::of(&all);
        if found != Some(record.version) {
            problems.push(format!(
                "bars of {symbol}: data version {:?} but the chunks give {found:?}",
                record.version
            ));
        }
    }
    let known: std::collections::BTreeSet<&str> = symbols.iter().map(|(s, _)| s.as_str()).collect();
    for space in [Space::Bars, Space::BarTails] {
        let mut last: Option<Vec<u8>> = None;
        for item in spaces.scan(space, &[]) {
            let (k, _) = item?;
            let sep = k.iter().position(|&b| b == 0).unwrap_or(k.len());
            if last.as_deref() == Some(&k[..sep]) {
                continue;
            }
            let name = String::from_utf8_lossy(&k[..sep]).into_owned();
            if !known.contains(name.as_str()) {
                problems.push(format!("bars of {name} are stored without a data version"));
            }
            last = Some(k[..sep].to_vec());
        }
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Tail slots as `current_record` reads them, counting the reads.
    struct Slots {
        values: std::collections::HashMap<Vec<u8>, sled::IVec>,
        reads: usize,
    }

    impl Slots {
        fn get(&mut self, key: &[u8]) -> Result<Option<sled::IVec>> {
            self.reads += 1;
            Ok(self.values.get(key).cloned())
        }
    }

    fn version(bars: u64, last_ts: i64) -> DataVersion {
        DataVersion {
            bars,
            first_ts: -3,
            last_ts,
            hash: bars * 31,
        }
    }

    /// Symbol S: its record says tails 40..42 (written by format 7, without
    /// a version) after 5 changes; tails 42 and 43 were appended since,
    /// each with its version. Every other slot holds a tail of the range
    /// before (8..40).
    fn appended(carry: bool) -> (Symbol, VersionRecord, Slots) {
        let s = Symbol::new("S").expect("sym");
        let pointer = b"pointer";
        let mut values = std::collections::HashMap::new();
        for seq in 8..44u64 {
            let value = if seq >= 42 && carry {
                encode_tail(seq, seq as i64, &version(100 + seq, seq as i64), pointer)
            } else {
                [&seq.to_be_bytes()[..], &(seq as i64).to_be_bytes(), pointer].concat()
            };
            values.insert(tail_key(&s, seq), value.into());
        }
        let d = VersionRecord {
            version: version(141, 41),
            generation: 5,
            tails: Tails { from: 40, next: 42 },
        };
        (s, d, Slots { values, reads: 0 })
    }

    #[test]
    fn the_current_record_is_the_stored_one_with_the_tails_appended_since() {
        let want = VersionRecord {
            version: version(143, 43),
            generation: 7,
            tails: Tails { from: 40, next: 44 },
        };
        // Any hint, right or wrong, finds the same record.
        for hint in [
            None,
            Some(0),
            Some(41),
            Some(42),
            Some(43),
            Some(44),
            Some(45),
            Some(99),
        ] {
            let (s, d, mut slots) = appended(true);
            let got = current_record(d, &s, hint, |k| slots.get(k)).expect("read");
            assert_eq!(got, want, "hint {hint:?}");
        }
        // The right hint reads two slots: the newest tail and the next one.
        let (s, d, mut slots) = appended(true);
        current_record(d, &s, Some(44), |k| slots.get(k)).expect("read");
        assert_eq!(slots.reads, 2);
        // Without appended tails the stored record is the current one.
        let (s, mut d, mut slots) = appended(true);
        d.tails = Tails { from: 44, next: 44 };
        let got = current_record(d, &s, Some(44), |k| slots.get(k)).expect("read");
        assert_eq!(got, d);
    }

    #[test]
    fn a_tail_appended_after_the_record_without_a_version_is_corrupt() {
        let (s, d, mut slots) = appended(false);
        let e = current_record(d, &s, None, |k| slots.get(k)).expect_err("corrupt");
        assert!(e.to_string().contains("bar tail 43 of S"), "{e}");
    }

    #[test]
    fn tail_headers_round_trip_and_short_ones_are_refused() {
        let v = version(7, 9);
        let bytes = encode_tail(12, -4, &v, b"value");
        let header = decode_tail(&bytes, "t").expect("decode");
        assert_eq!(
            (header.seq, header.first_ts, &bytes[header.len()..]),
            (12, -4, &b"value"[..])
        );
        assert_eq!(
            header.version,
            Some(AppendedVersion {
                bars: 7,
                last_ts: 9,
                hash: 7 * 31
            })
        );
        assert!(decode_tail(&bytes[..40], "t").is_err(), "no value after it");
        assert!(decode_tail(&bytes[..20], "t").is_err());
    }

    #[test]
    fn data_version_round_trips() {
        let v = DataVersion {
            bars: 3,
            first_ts: -7,
            last_ts: 99,
            hash: u64::MAX,
        };
        assert_eq!(
            decode_data_version(&encode_version(&v), "t").expect("decode"),
            v
        );
        assert!(decode_data_version(&[0; 5], "t").is_err());
    }
}
