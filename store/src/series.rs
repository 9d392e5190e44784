//! Reading frames (see `frame` for their records): [`SeriesView`], one
//! column, zero-copy per chunk; [`FrameView`], a frame's head; and the
//! [`ResultStore`] reads, among them `copy_series`, which reads columns
//! straight into a caller's buffers (one `preadv` per value-log chunk).

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::sync::Arc;

use kiln_core::{
    Coverage, FrameKey, FrameRead, JobId, Result, ResultStore, SeriesKey, SeriesRead, StoreError,
    Symbol,
};

use crate::frame::{
    CHUNK_HEADER_BYTES, ChunkRows, ChunkValue, FrameHead, LabelRef, TAIL_ROW_BYTES,
    chunk_first_row, chunks_prefix, decode_tail, frame_key_from, head_key, implicit_label,
    labelled_frame,
};
use crate::keys::{series_key_bytes, series_key_from_bytes, symbol_prefix};
use crate::record::ResultValue;
use crate::space::Space;
use crate::store::Store;
use crate::view::{ViewBytes, load};

/// One stored column: a slice of each chunk's rows, in place (validated and
/// checksummed when the view was made). The columns of one batch read share
/// their frame's chunks, read once.
pub struct SeriesView {
    covers: Coverage,
    /// Per chunk: its bytes, where the column starts in them, its length.
    chunks: Vec<(Arc<ViewBytes>, usize, usize)>,
}

impl SeriesRead for SeriesView {
    fn covers(&self) -> Coverage {
        self.covers
    }

    /// The values, one slice per chunk, in place (no copy).
    fn chunks(&self) -> Vec<&[f64]> {
        self.chunks
            .iter()
            .map(|(bytes, at, len)| bytes.f64s(*at, *len))
            .collect()
    }

    fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.2).sum()
    }
}

impl std::fmt::Debug for SeriesView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesView")
            .field("covers", &self.covers)
            .field("values", &self.len())
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

/// A frame's head: labels, coverage and the saved state, in place.
pub struct FrameView {
    labels: Vec<String>,
    covers: Coverage,
    state: Option<(Coverage, ViewBytes)>,
}

impl FrameRead for FrameView {
    fn labels(&self) -> &[String] {
        &self.labels
    }

    fn covers(&self) -> Coverage {
        self.covers
    }

    fn state(&self) -> Option<(Coverage, &[u8])> {
        self.state.as_ref().map(|(c, b)| (*c, b.raw()))
    }
}

impl std::fmt::Debug for FrameView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameView")
            .field("labels", &self.labels)
            .field("covers", &self.covers)
            .field(
                "state",
                &self.state.as_ref().map(|(c, b)| (c, b.raw().len())),
            )
            .finish()
    }
}

/// One stored chunk (or tail) of a frame: its first row, what it covers,
/// its width, and the sled value with where its rows' reference starts.
pub(crate) struct FrameChunk {
    pub first_row: u64,
    pub covers: Coverage,
    pub columns: u16,
    pub value: sled::IVec,
    pub start: usize,
}

/// A read raced a writer (a fold or a compaction changed the chunks between
/// two reads): read again.
const READ_ATTEMPTS: usize = 5;

impl Store {
    /// A frame's chunks and tails in row order, checked to be contiguous
    /// from row 0; `None` when they are not (a fold was applied mid-scan:
    /// read again).
    pub(crate) fn frame_chunks(&self, key: &FrameKey) -> Result<Option<Vec<FrameChunk>>> {
        let prefix = chunks_prefix(key);
        let location = || key.to_string();
        let mut out: Vec<FrameChunk> = Vec::new();
        let mut rows = ChunkRows::default();
        for item in self.spaces().scan(Space::Chunks, &prefix) {
            let (k, value) = item?;
            let c = ChunkValue::decode(&value, &location)?;
            let first_row = chunk_first_row(&prefix, &k)?;
            rows.push(first_row, &c.covers);
            out.push(FrameChunk {
                first_row,
                covers: c.covers,
                columns: c.columns,
                value,
                start: CHUNK_HEADER_BYTES,
            });
        }
        let mut tails = Vec::new();
        for item in self.spaces().scan(Space::Tails, &prefix) {
            let (_, value) = item?;
            if let Some((first_row, c)) = decode_tail(&value, &location)?
                && !rows.folded(first_row)
            {
                tails.push(FrameChunk {
                    first_row,
                    covers: c.covers,
                    columns: c.columns,
                    value,
                    start: TAIL_ROW_BYTES + CHUNK_HEADER_BYTES,
                });
            }
        }
        if out.is_empty() && tails.is_empty() {
            return self.head_rows(key);
        }
        // Tails, then any chunk an append wrote with every slot full.
        out.extend(tails);
        out.sort_by_key(|c| c.first_row);
        let mut end = 0;
        for c in &out {
            if c.first_row != end || c.covers.bars < c.first_row {
                return Ok(None);
            }
            end = c.covers.bars;
        }
        Ok(Some(out))
    }

    /// A frame with no chunk or tail: the rows its head holds, as its one
    /// chunk (none when it holds none); `None` when a writer changed the
    /// frame meanwhile (read again).
    fn head_rows(&self, key: &FrameKey) -> Result<Option<Vec<FrameChunk>>> {
        let head = self.spaces().get(Space::Frames, &head_key(key))?;
        // Chunks or tails now mean a write (a move of the head's rows to a
        // chunk, a replace) landed after the scan that found none.
        let prefix = chunks_prefix(key);
        if self.spaces().scan(Space::Chunks, &prefix).next().is_some()
            || self.spaces().scan(Space::Tails, &prefix).next().is_some()
        {
            return Ok(None);
        }
        let Some(value) = head else {
            return Ok(Some(Vec::new()));
        };
        let head = FrameHead::decode(&value, &|| key.to_string())?;
        let (Some(rows), Some(start)) = (head.rows, head.rows_start(&value)) else {
            return Ok(Some(Vec::new()));
        };
        Ok(Some(vec![FrameChunk {
            first_row: 0,
            covers: rows.covers,
            columns: rows.columns,
            value,
            start,
        }]))
    }

    /// What a frame's rows cover: those of its newest rows, read from its
    /// last chunk and its tail slots alone (with every slot full, appends
    /// go to chunks after the tails, so the newer of the two ends counts).
    /// Readers of a frame appended to since the open take it from what the
    /// writer published instead (`Shared::frame_ends`). A frame with
    /// neither covers what the rows in its head cover. `None` when a writer
    /// changed the frame under the read (read again).
    fn frame_covers(&self, key: &FrameKey) -> Result<Option<Coverage>> {
        let prefix = chunks_prefix(key);
        let location = || key.to_string();
        let chunk = match self.spaces().scan(Space::Chunks, &prefix).next_back() {
            Some(item) => Some(ChunkValue::decode(&item?.1, &location)?.covers),
            None => None,
        };
        let mut tail: Option<(u64, Coverage)> = None;
        for item in self.spaces().scan(Space::Tails, &prefix) {
            if let Some((row, c)) = decode_tail(&item?.1, &location)?
                && tail.is_none_or(|(r, _)| row >= r)
            {
                tail = Some((row, c.covers));
            }
        }
        let tail = tail.map(|(_, covers)| covers);
        if chunk.is_none() && tail.is_none() {
            return Ok(self
                .head_rows(key)?
                .map(|rows| rows.first().map(|c| c.covers).unwrap_or_default()));
        }
        Ok(Some(
            chunk
                .into_iter()
                .chain(tail)
                .max_by_key(|c| c.bars)
                .unwrap_or_default(),
        ))
    }

    /// Column `column` of a frame; `None` while a writer changes it under
    /// the read (the caller reads again).
    /// A frame's chunks, each loaded (and checksummed) once; `None` when a
    /// writer changed them under the read.
    fn load_frame(&self, key: &FrameKey) -> Result<Option<LoadedFrame>> {
        let Some(stored) = self.frame_chunks(key)? else {
            return Ok(None);
        };
        let mut chunks = Vec::with_capacity(stored.len());
        for c in stored {
            let rows = (c.covers.bars - c.first_row) as usize;
            let Some(bytes) = load(self.vlog_reader(), c.value, c.start)? else {
                return Ok(None);
            };
            let bytes = bytes.aligned_for::<f64>();
            let want = rows * usize::from(c.columns) * 8;
            if bytes.raw().len() != want {
                return Err(StoreError::corrupt(
                    format!("{key} chunk at row {}", c.first_row),
                    format!("{} bytes of rows, want {want}", bytes.raw().len()),
                ));
            }
            chunks.push(LoadedChunk {
                first_row: c.first_row,
                covers: c.covers,
                columns: c.columns,
                bytes: Arc::new(bytes),
            });
        }
        Ok(Some(LoadedFrame {
            key: key.clone(),
            chunks,
        }))
    }

    /// Copies the rows of chunk `c` of `frame` inside `rows` of the columns
    /// `asked` (key index, column) into `out`; false when
    /// the chunk's record is gone (a compaction since the scan: read again).
    fn copy_chunk(
        &self,
        frame: &FrameKey,
        c: &FrameChunk,
        asked: &[(usize, u16)],
        rows: Range<usize>,
        out: &mut [&mut [f64]],
    ) -> Result<bool> {
        let first = usize::try_from(c.first_row).unwrap_or(usize::MAX);
        let n = usize::try_from(c.covers.bars - c.first_row).unwrap_or(0);
        let (lo, hi) = (rows.start.max(first), rows.end.min(first + n));
        if lo >= hi {
            return Ok(true);
        }
        if let Some(&(_, column)) = asked.iter().find(|&&(_, col)| col >= c.columns) {
            return Err(StoreError::corrupt(
                format!("{frame} chunk at row {}", c.first_row),
                format!(
                    "has {} columns, a label points at column {column}",
                    c.columns
                ),
            ));
        }
        // The chunk's payload is its columns, each `n` rows: column `col`'s
        // rows lo..hi are bytes `at(col)..` of it (no overflow: below `want`).
        let want = n
            .checked_mul(usize::from(c.columns))
            .and_then(|v| v.checked_mul(8))
            .ok_or_else(|| {
                StoreError::corrupt(
                    format!("{frame} chunk at row {}", c.first_row),
                    format!("{n} rows of {} columns", c.columns),
                )
            })?;
        let at = |col: u16| (usize::from(col) * n + (lo - first)) * 8;
        let len = (hi - lo) * 8;
        let wrong_size = |have: usize| {
            StoreError::corrupt(
                format!("{frame} chunk at row {}", c.first_row),
                format!("{have} bytes of rows, want {want}"),
            )
        };
        let mut pieces: Vec<(usize, &mut [u8])> = Vec::with_capacity(asked.len());
        for (k, o) in out.iter_mut().enumerate() {
            if let Some(&(_, col)) = asked.iter().find(|&&(i, _)| i == k) {
                pieces.push((
                    at(col),
                    bytemuck::cast_slice_mut(&mut o[lo - rows.start..hi - rows.start]),
                ));
            }
        }
        pieces.sort_by_key(|p| p.0);
        let value = c.value.get(c.start..).unwrap_or(&[]);
        match ResultValue::decode(value)? {
            ResultValue::Inline { bytes, .. } => {
                if bytes.len() != want {
                    return Err(wrong_size(bytes.len()));
                }
                for (offset, buf) in &mut pieces {
                    buf.copy_from_slice(&bytes[*offset..*offset + len]);
                }
            }
            ResultValue::Pointer(entry) => {
                if entry.len as usize != want {
                    return Err(wrong_size(entry.len as usize));
                }
                if self.vlog_reader().read_into(&entry, &mut pieces)?.is_none() {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// A frame's head with its coverage; `None` in `Ok(Some(..))` when it
    /// does not exist, `Ok(None)` when a writer changed it under the read.
    fn read_frame(&self, key: &FrameKey) -> Result<Option<Option<FrameView>>> {
        let Some(value) = self.spaces().get(Space::Frames, &head_key(key))? else {
            return Ok(Some(None));
        };
        let head = FrameHead::decode(&value, &|| key.to_string())?;
        let published = match self.shared().frame_ends.read() {
            Ok(m) => m.get(key).copied(),
            Err(_) => None,
        };
        let covers = match published {
            Some(covers) => covers,
            None => match self.frame_covers(key)? {
                Some(covers) => covers,
                None => return Ok(None),
            },
        };
        let labels = head.labels;
        let state = match head.state {
            None => None,
            Some((state_covers, rv)) => {
                let start = value.len() - rv.encoded_len();
                match load(self.vlog_reader(), value.clone(), start)? {
                    Some(bytes) => Some((state_covers, bytes)),
                    None => return Ok(None),
                }
            }
        };
        Ok(Some(Some(FrameView {
            labels,
            covers,
            state,
        })))
    }

    /// Where a label points, if it exists: its record, else column 0 of
    /// the frame of its name when that frame's only label is it.
    fn label(&self, key: &SeriesKey) -> Result<Option<LabelRef>> {
        let record = || -> Result<Option<LabelRef>> {
            self.spaces()
                .get(Space::Labels, &series_key_bytes(key))?
                .map(|v| LabelRef::decode(&v, &|| format!("{}/{}", key.symbol, key.feature)))
                .transpose()
        };
        if let Some(r) = record()? {
            return Ok(Some(r));
        }
        if let Ok(frame) = FrameKey::new(key.symbol.clone(), key.feature.clone())
            && let Some(value) = self.spaces().get(Space::Frames, &head_key(&frame))?
            && implicit_label(
                &frame.name,
                &FrameHead::decode(&value, &|| frame.to_string())?.labels,
            )
        {
            return Ok(Some(LabelRef {
                column: 0,
                frame: frame.name,
            }));
        }
        // A replace that moved the label from the frame of its name to
        // another writes its record and removes that frame in one batch:
        // read the record again, in case it landed between the two reads.
        record()
    }
}

/// A frame's chunks as one read loaded them, shared by its columns' views.
struct LoadedFrame {
    key: FrameKey,
    chunks: Vec<LoadedChunk>,
}

struct LoadedChunk {
    first_row: u64,
    covers: Coverage,
    columns: u16,
    bytes: Arc<ViewBytes>,
}

impl LoadedFrame {
    /// Column `column`'s view over the loaded chunks.
    fn column(&self, column: u16) -> Result<SeriesView> {
        let mut chunks = Vec::with_capacity(self.chunks.len());
        let mut covers = Coverage::default();
        for c in &self.chunks {
            if column >= c.columns {
                return Err(StoreError::corrupt(
                    format!("{} chunk at row {}", self.key, c.first_row),
                    format!(
                        "has {} columns, a label points at column {column}",
                        c.columns
                    ),
                ));
            }
            let rows = (c.covers.bars - c.first_row) as usize;
            chunks.push((Arc::clone(&c.bytes), usize::from(column) * rows * 8, rows));
            covers = c.covers;
        }
        Ok(SeriesView { covers, chunks })
    }
}

fn raced(what: String) -> StoreError {
    StoreError::corrupt(what, "its chunks keep changing under the read")
}

impl ResultStore for Store {
    type SeriesView = SeriesView;
    type FrameView = FrameView;

    fn series(&self, key: &SeriesKey) -> Result<Option<SeriesView>> {
        Ok(self
            .series_batch(std::slice::from_ref(key))?
            .pop()
            .flatten())
    }

    /// Each frame the keys' labels point at is read once, whatever number
    /// of its columns they ask for.
    fn series_batch(&self, keys: &[SeriesKey]) -> Result<Vec<Option<SeriesView>>> {
        let mut frames: HashMap<FrameKey, LoadedFrame> = HashMap::new();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let mut view = None;
            for attempt in 0..=READ_ATTEMPTS {
                if attempt == READ_ATTEMPTS {
                    return Err(raced(format!("{}/{}", key.symbol, key.feature)));
                }
                let Some(r) = self.label(key)? else {
                    break;
                };
                let frame = labelled_frame(key, &r)?;
                if !frames.contains_key(&frame) {
                    match self.load_frame(&frame)? {
                        Some(loaded) => {
                            frames.insert(frame.clone(), loaded);
                        }
                        None => continue,
                    }
                }
                if let Some(loaded) = frames.get(&frame) {
                    view = Some(loaded.column(r.column)?);
                    break;
                }
            }
            out.push(view);
        }
        Ok(out)
    }

    /// Each frame's chunks are scanned once for all the keys that name it;
    /// a value-log chunk is read straight into `out` (one `preadv` for all
    /// the columns asked, once its checksum has been checked by a read).
    fn copy_series(
        &self,
        keys: &[SeriesKey],
        rows: Range<usize>,
        out: &mut [&mut [f64]],
    ) -> Result<Vec<Option<Coverage>>> {
        let mut covers = vec![None; keys.len()];
        'attempt: for _ in 0..READ_ATTEMPTS {
            // The keys of each frame, with the column each names.
            let mut frames: Vec<(FrameKey, Vec<(usize, u16)>)> = Vec::new();
            for (i, key) in keys.iter().enumerate() {
                covers[i] = None;
                let Some(r) = self.label(key)? else {
                    continue;
                };
                let frame = labelled_frame(key, &r)?;
                match frames.iter_mut().find(|(f, _)| *f == frame) {
                    Some((_, asked)) => asked.push((i, r.column)),
                    None => frames.push((frame, vec![(i, r.column)])),
                }
            }
            for (frame, asked) in &mut frames {
                let Some(chunks) = self.frame_chunks(frame)? else {
                    continue 'attempt;
                };
                for c in &chunks {
                    if !self.copy_chunk(frame, c, asked, rows.clone(), out)? {
                        continue 'attempt;
                    }
                }
                let last = chunks.last().map(|c| c.covers).unwrap_or_default();
                for &(i, _) in asked.iter() {
                    covers[i] = Some(last);
                }
            }
            return Ok(covers);
        }
        Err(raced(format!("{} series of {}", keys.len(), rows.len())))
    }

    /// The labels with a record and those frames hold implicitly, in order.
    fn series_keys(&self, symbol: &Symbol) -> Result<Vec<SeriesKey>> {
        let prefix = symbol_prefix(symbol);
        let mut keys = BTreeSet::new();
        for item in self.spaces().scan(Space::Labels, &prefix) {
            keys.insert(series_key_from_bytes(&item?.0)?.feature);
        }
        for item in self.spaces().scan(Space::Frames, &prefix) {
            let (k, v) = item?;
            let frame = frame_key_from(&k)?;
            let head = FrameHead::decode(&v, &|| frame.to_string())?;
            if implicit_label(&frame.name, &head.labels) {
                keys.insert(frame.name);
            }
        }
        keys.into_iter()
            .map(|feature| SeriesKey::new(symbol.clone(), feature))
            .collect()
    }

    fn series_writer(&self, key: &SeriesKey) -> Result<Option<JobId>> {
        let Some(r) = self.label(key)? else {
            return Ok(None);
        };
        let frame = labelled_frame(key, &r)?;
        for _ in 0..READ_ATTEMPTS {
            if let Some(chunks) = self.frame_chunks(&frame)? {
                return match chunks.last() {
                    Some(c) => {
                        let rv = ResultValue::decode(c.value.get(c.start..).unwrap_or(&[]))?;
                        Ok(Some(rv.job_id()))
                    }
                    None => Ok(None),
                };
            }
        }
        Err(raced(frame.to_string()))
    }

    fn frame(&self, key: &FrameKey) -> Result<Option<FrameView>> {
        for _ in 0..READ_ATTEMPTS {
            if let Some(read) = self.read_frame(key)? {
                return Ok(read);
            }
        }
        Err(raced(key.to_string()))
    }

    fn frames(&self, symbol: &Symbol) -> Result<Vec<FrameKey>> {
        self.spaces()
            .scan(Space::Frames, &symbol_prefix(symbol))
            .map(|item| frame_key_from(&item?.0))
            .collect()
    }
}
