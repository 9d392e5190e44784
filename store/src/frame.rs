//! The records of frames (see `kiln_core::series`): a frame's head, its
//! chunks and the labels that name its columns. Three keyspaces hold them
//! (`FORMAT.md`, "Frames"):
//!
//! - `f` heads, `symbol 0x00 name`: the column labels, and the state saved
//!   last with the coverage it was computed over (a [`ResultValue`]:
//!   inline, or a pointer into the value log), or instead of a state the
//!   frame's rows (inline, see below);
//! - `c` chunks, `symbol 0x00 name 0x00 first_row` (u64 BE, so a prefix
//!   scan lists a frame's chunks in row order): the coverage after the
//!   chunk's last row, the column count, and the rows (a [`ResultValue`]
//!   whose bytes are the columns one after another, each `rows` f64 LE);
//! - `t` tail slots, `symbol 0x00 name 0x00 slot` (u8): the chunks appends
//!   add, each with its first row in front of a chunk value, or one zero
//!   byte when the slot is empty. An append fills a free slot (an update of
//!   a key that exists: sled rewrites a leaf to insert a new key, which
//!   costs a tick several times what its rows do); a fold moves the tails
//!   into one chunk and leaves the slots as they are, for the next appends
//!   to overwrite: a slot whose first row a chunk covers is folded, free,
//!   and its record released ([`ChunkRows::folded`]); every reader of
//!   tails skips it.
//! - `l` labels, `symbol 0x00 label`: the frame and column that hold it.
//!   A frame whose only label is its own name (a series written alone)
//!   needs no record: a label with none names column 0 of the frame of its
//!   name, when that frame's only label is it ([`implicit_label`]).
//!
//! A frame's rows are its chunks and tails, contiguous from row 0; its
//! coverage is that of the one holding the last rows. A frame replaced
//! without a state whose rows fit inline keeps them in its head instead, as
//! its one chunk (so a small series written alone is one record, not a
//! head, a chunk and a label); its first append moves them to a chunk. Each value's [`ResultValue`] is its suffix, found by
//! [`value_start`], so the value log's bookkeeping (recovery, compaction)
//! treats every keyspace that points into it alike.

use kiln_core::{Coverage, FrameKey, Result, SeriesKey, StoreError, Symbol};

use crate::keys::symbol_prefix;
use crate::record::ResultValue;
use crate::space::{Space, Spaces};

/// Bytes of a chunk value before its [`ResultValue`]: coverage (24), the
/// column count (u16 BE) and 6 zero bytes, so an inline chunk's rows start
/// 48 bytes into the value and an 8-aligned value keeps them 8-aligned.
pub(crate) const CHUNK_HEADER_BYTES: usize = 32;

/// Where a chunk's rows are and what they cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkValue<'a> {
    /// The frame's coverage after this chunk's last row.
    pub covers: Coverage,
    pub columns: u16,
    pub rows: ResultValue<'a>,
}

impl<'a> ChunkValue<'a> {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(CHUNK_HEADER_BYTES + 1 + 28);
        v.extend_from_slice(&self.covers.encode());
        v.extend_from_slice(&self.columns.to_be_bytes());
        v.extend_from_slice(&[0; 6]);
        v.extend_from_slice(&self.rows.encode());
        v
    }

    pub(crate) fn decode(b: &'a [u8], location: &dyn Fn() -> String) -> Result<Self> {
        let covers = b
            .get(..CHUNK_HEADER_BYTES)
            .and_then(Coverage::decode)
            .ok_or_else(|| {
                StoreError::corrupt(location(), format!("chunk of {} bytes", b.len()))
            })?;
        if b[26..CHUNK_HEADER_BYTES].iter().any(|&p| p != 0) {
            return Err(StoreError::corrupt(
                location(),
                "chunk: padding is not zero",
            ));
        }
        Ok(ChunkValue {
            covers,
            columns: u16::from_be_bytes([b[24], b[25]]),
            rows: ResultValue::decode(&b[CHUNK_HEADER_BYTES..])?,
        })
    }

    /// Bytes the rows from `first_row` on must have.
    pub(crate) fn rows_bytes(&self, first_row: u64) -> Option<u64> {
        let rows = self.covers.bars.checked_sub(first_row)?;
        rows.checked_mul(u64::from(self.columns))?.checked_mul(8)
    }
}

/// Bytes of a tail slot's value before its chunk value: the first row.
pub(crate) const TAIL_ROW_BYTES: usize = 8;
/// An empty tail slot's value.
pub(crate) const EMPTY_TAIL: [u8; 1] = [0];

/// A tail slot's value: empty, or the first row and the chunk.
pub(crate) fn decode_tail<'a>(
    b: &'a [u8],
    location: &dyn Fn() -> String,
) -> Result<Option<(u64, ChunkValue<'a>)>> {
    if b == EMPTY_TAIL {
        return Ok(None);
    }
    let row = b
        .get(..TAIL_ROW_BYTES)
        .and_then(|r| <[u8; 8]>::try_from(r).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::corrupt(location(), format!("tail of {} bytes", b.len())))?;
    Ok(Some((
        row,
        ChunkValue::decode(&b[TAIL_ROW_BYTES..], location)?,
    )))
}

/// A full tail slot's value.
pub(crate) fn encode_tail(first_row: u64, chunk: &ChunkValue<'_>) -> Vec<u8> {
    let mut v = first_row.to_be_bytes().to_vec();
    v.extend_from_slice(&chunk.encode());
    v
}

/// A frame's chunks as the rows each holds, in row order: what tells a
/// tail slot that a fold moved its rows into a chunk.
#[derive(Default)]
pub(crate) struct ChunkRows(Vec<(u64, u64)>);

impl ChunkRows {
    /// Adds a chunk (in row order): its first row and its coverage.
    pub(crate) fn push(&mut self, first_row: u64, covers: &Coverage) {
        self.0.push((first_row, covers.bars));
    }

    /// Whether a chunk holds row `row`: a tail slot whose rows start there
    /// was folded (its slot is free, its record released).
    pub(crate) fn folded(&self, row: u64) -> bool {
        let i = self.0.partition_point(|&(first, _)| first <= row);
        i > 0 && self.0[i - 1].1 > row
    }
}

/// Whether the tail slot `tail_key` (its rows starting at `row`) was
/// folded, read from the committed chunks.
pub(crate) fn tail_folded(spaces: &Spaces, tail_key: &[u8], row: u64) -> Result<bool> {
    let prefix = &tail_key[..tail_key.len().saturating_sub(1)];
    let mut upto = prefix.to_vec();
    upto.extend_from_slice(&row.to_be_bytes());
    let Some((k, v)) = spaces.last_upto(Space::Chunks, prefix, &upto)? else {
        return Ok(false);
    };
    let first = chunk_first_row(prefix, &k)?;
    let c = ChunkValue::decode(&v, &|| String::from_utf8_lossy(&k).into_owned())?;
    let mut rows = ChunkRows::default();
    rows.push(first, &c.covers);
    Ok(rows.folded(row))
}

/// Where the [`ResultValue`] of a stored value of `space` starts, when it
/// points at a live record: `None` for a head without state, for an
/// empty or folded tail slot, and for a bar tail slot no longer live.
pub(crate) fn live_value_start(
    spaces: &Spaces,
    space: Space,
    key: &[u8],
    value: &[u8],
) -> Result<Option<usize>> {
    if space == Space::Tails
        && let Some((row, _)) = decode_tail(value, &|| "tail slot".into())?
        && tail_folded(spaces, key, row)?
    {
        return Ok(None);
    }
    if space == Space::BarTails && !crate::bars::tail_is_live(spaces, key, value)? {
        return Ok(None);
    }
    value_start(space, value)
}

/// A tail slot's key: the frame's chunk prefix, then the slot.
pub(crate) fn tail_key(key: &FrameKey, slot: u8) -> Vec<u8> {
    let mut k = chunks_prefix(key);
    k.push(slot);
    k
}

/// The frame of a tail slot key: everything before the last 2 bytes.
pub(crate) fn frame_of_tail(tail_key: &[u8]) -> Result<FrameKey> {
    let head = tail_key
        .len()
        .checked_sub(2)
        .and_then(|n| tail_key.get(..n))
        .ok_or_else(|| StoreError::corrupt("tail key", format!("{tail_key:?}")))?;
    frame_key_from(head)
}

/// A frame's head.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FrameHead<'a> {
    pub labels: Vec<String>,
    /// The state saved last and the bars it was computed over.
    pub state: Option<(Coverage, ResultValue<'a>)>,
    /// The frame's rows from row 0, when they are in the head (inline,
    /// and only in a head without a state): the frame has no chunk or tail.
    pub rows: Option<ChunkValue<'a>>,
}

impl<'a> FrameHead<'a> {
    /// Label count (u16 BE); per label its length (u8) and bytes; then 0,
    /// or 1, the state's coverage and its [`ResultValue`], or 2 and the
    /// rows as a [`ChunkValue`] (inline).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&(self.labels.len() as u16).to_be_bytes());
        for l in &self.labels {
            v.push(l.len() as u8);
            v.extend_from_slice(l.as_bytes());
        }
        match (&self.state, &self.rows) {
            (Some((covers, value)), _) => {
                debug_assert!(self.rows.is_none(), "a head with a state holds no rows");
                v.push(1);
                v.extend_from_slice(&covers.encode());
                v.extend_from_slice(&value.encode());
            }
            (None, Some(rows)) => {
                v.push(2);
                v.extend_from_slice(&rows.encode());
            }
            (None, None) => v.push(0),
        }
        v
    }

    /// Where the rows' [`ResultValue`] starts in `value` (this head's
    /// bytes), when the head holds rows.
    pub(crate) fn rows_start(&self, value: &[u8]) -> Option<usize> {
        self.rows.map(|r| value.len() - r.rows.encoded_len())
    }

    pub(crate) fn decode(b: &'a [u8], location: &dyn Fn() -> String) -> Result<Self> {
        let bad = |why: &str| StoreError::corrupt(location(), format!("frame head: {why}"));
        let count = b.get(..2).ok_or_else(|| bad("no label count"))?;
        let count = u16::from_be_bytes([count[0], count[1]]);
        let mut at = 2;
        let mut labels = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let len = usize::from(*b.get(at).ok_or_else(|| bad("cut short"))?);
            let label = b
                .get(at + 1..at + 1 + len)
                .and_then(|l| std::str::from_utf8(l).ok())
                .ok_or_else(|| bad("a label is cut short or not UTF-8"))?;
            labels.push(label.to_owned());
            at += 1 + len;
        }
        let state = match b.get(at) {
            Some(0) if b.len() == at + 1 => None,
            Some(1) => {
                let covers = b
                    .get(at + 1..at + 1 + Coverage::BYTES)
                    .and_then(Coverage::decode)
                    .ok_or_else(|| bad("the state's coverage is cut short"))?;
                Some((covers, ResultValue::decode(&b[at + 1 + Coverage::BYTES..])?))
            }
            Some(2) => {
                let rows = ChunkValue::decode(&b[at + 1..], location)?;
                if !matches!(rows.rows, ResultValue::Inline { .. }) {
                    return Err(bad("rows in a head point into the value log"));
                }
                return Ok(FrameHead {
                    labels,
                    state: None,
                    rows: Some(rows),
                });
            }
            _ => return Err(bad("bad state tag")),
        };
        Ok(FrameHead {
            labels,
            state,
            rows: None,
        })
    }
}

/// Whether a frame named `name` with `labels` holds the label of its own
/// name without a label record: its only label is its name.
pub(crate) fn implicit_label(name: &str, labels: &[String]) -> bool {
    matches!(labels, [only] if only == name)
}

/// Where a label points: a frame of the same symbol and a column of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LabelRef {
    pub column: u16,
    pub frame: String,
}

impl LabelRef {
    /// Column (u16 BE), then the frame's name.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = self.column.to_be_bytes().to_vec();
        v.extend_from_slice(self.frame.as_bytes());
        v
    }

    pub(crate) fn decode(b: &[u8], location: &dyn Fn() -> String) -> Result<Self> {
        let frame = b
            .get(2..)
            .and_then(|n| std::str::from_utf8(n).ok())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| StoreError::corrupt(location(), "label: no frame name"))?;
        Ok(LabelRef {
            column: u16::from_be_bytes([b[0], b[1]]),
            frame: frame.to_owned(),
        })
    }
}

/// A frame head's key: `symbol 0x00 name`.
pub(crate) fn head_key(key: &FrameKey) -> Vec<u8> {
    let mut k = symbol_prefix(&key.symbol);
    k.extend_from_slice(key.name.as_bytes());
    k
}

/// The prefix of a frame's chunk keys: `symbol 0x00 name 0x00`.
pub(crate) fn chunks_prefix(key: &FrameKey) -> Vec<u8> {
    let mut k = head_key(key);
    k.push(0);
    k
}

/// A chunk's key: the prefix, then its first row (u64 BE).
pub(crate) fn chunk_key(key: &FrameKey, first_row: u64) -> Vec<u8> {
    let mut k = chunks_prefix(key);
    k.extend_from_slice(&first_row.to_be_bytes());
    k
}

/// The first row of the chunk under `key` (which starts with `prefix`).
pub(crate) fn chunk_first_row(prefix: &[u8], key: &[u8]) -> Result<u64> {
    key.strip_prefix(prefix)
        .and_then(|r| <[u8; 8]>::try_from(r).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::corrupt("chunk key", format!("{key:?}")))
}

/// A frame key from a head key.
pub(crate) fn frame_key_from(head_key: &[u8]) -> Result<FrameKey> {
    let bad = || StoreError::corrupt("frame key", format!("{head_key:?}"));
    let sep = head_key.iter().position(|&b| b == 0).ok_or_else(bad)?;
    let symbol = std::str::from_utf8(&head_key[..sep]).map_err(|_| bad())?;
    let name = std::str::from_utf8(&head_key[sep + 1..]).map_err(|_| bad())?;
    FrameKey::new(Symbol::new(symbol)?, name)
}

/// The frame of a chunk key: everything before the last 9 bytes.
pub(crate) fn frame_of_chunk(chunk_key: &[u8]) -> Result<FrameKey> {
    let head = chunk_key
        .len()
        .checked_sub(9)
        .and_then(|n| chunk_key.get(..n))
        .ok_or_else(|| StoreError::corrupt("chunk key", format!("{chunk_key:?}")))?;
    frame_key_from(head)
}

/// The frame a label names.
pub(crate) fn labelled_frame(key: &SeriesKey, r: &LabelRef) -> Result<FrameKey> {
    FrameKey::new(key.symbol.clone(), r.frame.clone())
}

/// Where the [`ResultValue`] starts in a value of `space` (every keyspace
/// that can point into the value log); `None` for a head without state.
pub(crate) fn value_start(space: Space, value: &[u8]) -> Result<Option<usize>> {
    match space {
        Space::Bars | Space::LegacyResults => Ok(Some(0)),
        Space::BarTails => Ok(Some(
            crate::bars::decode_tail(value, "bar tail slot")?.len(),
        )),
        Space::Chunks => Ok(Some(CHUNK_HEADER_BYTES)),
        Space::Tails if value == EMPTY_TAIL => Ok(None),
        Space::Tails => Ok(Some(TAIL_ROW_BYTES + CHUNK_HEADER_BYTES)),
        Space::Frames => {
            let head = FrameHead::decode(value, &|| "frame head".into())?;
            Ok(head.state.map(|(_, v)| value.len() - v.encoded_len()))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{INLINE_HEADER_BYTES, IndexEntry};

    fn covers(bars: u64) -> Coverage {
        Coverage {
            bars,
            last_ts: bars as i64 * 10,
            hash: bars * 7,
        }
    }

    #[test]
    fn padding_that_is_not_zero_is_refused() {
        // fuzz/'s record target found a chunk whose nonzero padding decoded
        // and encoded back to other bytes; an inline value's padding had the
        // same gap.
        let c = ChunkValue {
            covers: covers(8),
            columns: 2,
            rows: ResultValue::Inline {
                job_id: 3,
                bytes: &[7u8; 8],
            },
        };
        let good = c.encode();
        assert!(ChunkValue::decode(&good, &|| "c".into()).is_ok());
        for at in [27, CHUNK_HEADER_BYTES + 1, CHUNK_HEADER_BYTES + 7] {
            let mut bad = good.clone();
            bad[at] = 0x3f;
            assert!(
                ChunkValue::decode(&bad, &|| "c".into()).is_err(),
                "a nonzero byte at {at} decoded"
            );
        }
    }

    #[test]
    fn records_round_trip() {
        let entry = IndexEntry {
            segment: 2,
            offset: 160,
            len: 64,
            crc: 5,
            job_id: 9,
        };
        let c = ChunkValue {
            covers: covers(8),
            columns: 2,
            rows: ResultValue::Pointer(entry),
        };
        let bytes = c.encode();
        assert_eq!(
            ChunkValue::decode(&bytes, &|| "c".into()).expect("chunk"),
            c
        );
        assert_eq!(c.rows_bytes(4), Some(64));
        assert_eq!(c.rows_bytes(9), None);
        let inline = [1u8; 16];
        let c = ChunkValue {
            rows: ResultValue::Inline {
                job_id: 3,
                bytes: &inline,
            },
            ..c
        };
        let bytes = c.encode();
        assert_eq!(&bytes[CHUNK_HEADER_BYTES + INLINE_HEADER_BYTES..], &inline);

        for head in [
            FrameHead {
                labels: vec!["sma(5)".into(), "rsi(14)".into()],
                state: Some((covers(3), ResultValue::Pointer(entry))),
                rows: None,
            },
            FrameHead {
                labels: vec![],
                state: None,
                rows: None,
            },
        ] {
            let bytes = head.encode();
            assert_eq!(
                FrameHead::decode(&bytes, &|| "f".into()).expect("head"),
                head
            );
            let start = value_start(Space::Frames, &bytes).expect("start");
            assert_eq!(
                start.map(|s| ResultValue::decode(&bytes[s..]).expect("state")),
                head.state.map(|(_, v)| v)
            );
        }
        let r = LabelRef {
            column: 3,
            frame: "@plan:00ff".into(),
        };
        assert_eq!(
            LabelRef::decode(&r.encode(), &|| "l".into()).expect("label"),
            r
        );
    }

    #[test]
    fn a_head_holds_inline_rows_and_refuses_rows_in_the_value_log() {
        let inline = [3u8; 16];
        let rows = ChunkValue {
            covers: covers(2),
            columns: 1,
            rows: ResultValue::Inline {
                job_id: 4,
                bytes: &inline,
            },
        };
        let head = FrameHead {
            labels: vec!["x".into()],
            state: None,
            rows: Some(rows),
        };
        let bytes = head.encode();
        // Labels (2 + 1 + 1), the tag, then the chunk value as a chunk's.
        assert_eq!(bytes[4], 2);
        assert_eq!(bytes[5..], rows.encode()[..]);
        let decoded = FrameHead::decode(&bytes, &|| "f".into()).expect("head");
        assert_eq!(decoded, head);
        let start = decoded.rows_start(&bytes).expect("rows");
        assert_eq!(start, 5 + CHUNK_HEADER_BYTES);
        assert_eq!(&bytes[start + INLINE_HEADER_BYTES..], &inline);
        // Nothing in the value log: the value log's bookkeeping skips it.
        assert_eq!(value_start(Space::Frames, &bytes).expect("start"), None);
        let entry = IndexEntry {
            segment: 1,
            offset: 0,
            len: 16,
            crc: 0,
            job_id: 4,
        };
        let pointer = FrameHead {
            rows: Some(ChunkValue {
                rows: ResultValue::Pointer(entry),
                ..rows
            }),
            ..head
        };
        let e = FrameHead::decode(&pointer.encode(), &|| "A/x".into()).expect_err("pointer");
        assert!(e.to_string().contains("A/x"), "{e}");
    }

    #[test]
    fn only_a_frame_whose_one_label_is_its_name_holds_it_without_a_record() {
        let labels = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(implicit_label("x", &labels(&["x"])));
        assert!(!implicit_label("x", &labels(&["y"])));
        assert!(!implicit_label("x", &labels(&["x", "y"])));
        assert!(!implicit_label("x", &labels(&[])));
    }

    #[test]
    fn garbage_is_a_corrupt_error_naming_the_place() {
        for bad in [&[][..], &[0, 1][..], &[0, 1, 5, b'a'][..], &[0, 0, 2][..]] {
            let e = FrameHead::decode(bad, &|| "A/f".into()).expect_err("garbage");
            assert!(e.to_string().contains("A/f"), "{e}");
        }
        assert!(ChunkValue::decode(&[0; 31], &|| "c".into()).is_err());
        assert!(LabelRef::decode(&[0, 1], &|| "l".into()).is_err());
    }

    #[test]
    fn chunk_keys_sort_by_row_and_name_their_frame() {
        let f = FrameKey::new(Symbol::new("A").expect("symbol"), "@plan:1").expect("key");
        let (a, b) = (chunk_key(&f, 255), chunk_key(&f, 256));
        assert!(a < b);
        let prefix = chunks_prefix(&f);
        assert_eq!(chunk_first_row(&prefix, &b).expect("row"), 256);
        assert_eq!(frame_of_chunk(&a).expect("frame"), f);
        assert_eq!(frame_key_from(&head_key(&f)).expect("frame"), f);
    }
}
