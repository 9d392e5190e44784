//! The writer's part of storing frames (see `frame` for the records): a
//! replace drops the frame's chunks and writes one (in the head when it
//! has no state and its rows fit inline), moving its labels to it and
//! removing any frame left with no label; an append adds one chunk to a
//! tail slot (first moving rows held in the head to a chunk), or is
//! skipped when the frame has moved on; a remove drops the frame, its
//! chunks and its labels. A fold, a bounded number
//! before each group, moves a frame's tails into a chunk (and merges
//! chunks, see [`FOLD`]). Rows and states go inline when small, else to
//! the value log.

use std::collections::{BTreeMap, BTreeSet};

use rkyv::util::AlignedVec;

use kiln_core::{Coverage, FrameKey, FrameRows, FrameWrite, Result, StoreError};

use super::Writer;
use crate::frame::{
    CHUNK_HEADER_BYTES, ChunkRows, ChunkValue, FrameHead, LabelRef, chunk_first_row, chunk_key,
    chunks_prefix, decode_tail, encode_tail, head_key, implicit_label, tail_key, value_start,
};
use crate::keys::series_key_bytes;
use crate::leveling::{Leveling, merge_from};
use crate::record::{IndexEntry, ResultValue};
use crate::space::Space;
use crate::view::load;

/// How a frame's tails fold into chunks: 32 tails into one chunk, 32 chunks
/// of one size class into one of the next, up to 1024 rows (a row is
/// written three times: as a tail, in a chunk of 32 or more rows, in one of
/// 1024 or more).
pub(crate) const FOLD: Leveling = Leveling {
    fanout: 32,
    sealed_rows: 1024,
};
/// Frames folded before a group applies its ops: folding keeps up with
/// steady appends without holding a group up for long.
const FOLDS_PER_STEP: usize = 64;

/// Frames whose tail slots the writer keeps in view; beyond, it starts over.
const TAIL_STATES_MAX: usize = 1 << 20;

/// A tail's rows up to this size go inline in sled; larger ones go to the
/// value log, whatever `inline_series_bytes_max` says. sled rewrites the
/// whole leaf around a slot as its updates pile up, so rows inline in a
/// slot are written several times, where the value log writes them once
/// (measured by `kiln bench live`: a tick of 1,000 symbols × 20 columns
/// wrote 1.61 MB with its 160-byte tails inline, 1.46 MB with them in the
/// value log).
const TAIL_INLINE_BYTES_MAX: usize = 64;

/// A frame's head as the writer reads it: its stored bytes, its labels, and
/// what the rows it holds (if any) cover, with their column count.
struct StoredHead {
    value: sled::IVec,
    labels: Vec<String>,
    rows: Option<(Coverage, u16)>,
}

/// A frame's end and which of its tail slots hold rows, as the writer keeps
/// them between appends.
pub(crate) struct TailState {
    end: Coverage,
    columns: u16,
    slots: Vec<bool>,
    /// The rows are in the head (no chunk or tail slot yet).
    head_rows: bool,
}

/// A frame write, shape-checked and encoded by the caller: its rows as one
/// payload (the columns one after another).
pub(crate) struct EncodedFrame {
    pub key: FrameKey,
    pub rows: FrameRows,
    pub covers: Coverage,
    pub columns: u16,
    pub payload: AlignedVec,
    pub state: Option<Vec<u8>>,
}

impl EncodedFrame {
    pub(crate) fn new(w: FrameWrite) -> Result<Self> {
        w.check()?;
        let columns = u16::try_from(w.columns.len()).map_err(|_| {
            StoreError::invalid("frame write", format!("{}: over 65535 columns", w.key))
        })?;
        let mut payload = AlignedVec::with_capacity(w.columns.iter().map(|c| c.len() * 8).sum());
        for c in &w.columns {
            payload.extend_from_slice(bytemuck::cast_slice(c));
        }
        Ok(EncodedFrame {
            key: w.key,
            rows: w.rows,
            covers: w.covers,
            columns,
            payload,
            state: w.state,
        })
    }

    /// Bytes this write stores.
    pub(crate) fn bytes(&self) -> usize {
        self.payload.len() + self.state.as_ref().map_or(0, Vec::len)
    }
}

impl Writer {
    /// Refuses (before anything is written) an append whose column count
    /// differs from the frame it continues.
    pub(super) fn check_frame(&mut self, f: &EncodedFrame) -> Result<()> {
        let FrameRows::Append { after } = &f.rows else {
            return Ok(());
        };
        if let Some((covers, columns)) = self.frame_end(&f.key)?
            && covers == *after
            && columns != f.columns
        {
            return Err(StoreError::invalid(
                "frame write",
                format!(
                    "{}: an append of {} columns to a frame of {columns}",
                    f.key, f.columns
                ),
            ));
        }
        Ok(())
    }

    /// Applies one frame write of job `job_id` to this group.
    pub(super) fn write_frame(&mut self, f: &EncodedFrame, job_id: u64) -> Result<()> {
        match &f.rows {
            FrameRows::Remove => self.remove_frame(&f.key),
            FrameRows::Replace { labels } => self.replace_frame(f, labels, job_id),
            FrameRows::Append { after } => {
                let Some((covers, _)) = self.frame_end(&f.key)? else {
                    tracing::debug!(frame = %f.key, "append skipped: the frame is gone");
                    return Ok(());
                };
                if covers != *after {
                    tracing::debug!(frame = %f.key, "append skipped: the frame has moved on");
                    return Ok(());
                }
                if self.tail_state(&f.key)?.is_some_and(|t| t.head_rows) {
                    self.spill_head_rows(&f.key)?;
                }
                if f.covers.bars > after.bars {
                    self.new_ends.push((f.key.clone(), Some(f.covers)));
                    self.put_tail(f, after.bars, job_id)?;
                }
                if let Some(state) = &f.state
                    && let Some(head) = self.head(&f.key)?
                {
                    let state = Some((f.covers, state));
                    self.put_head(&f.key, Some(&head), &head.labels, state, None, job_id)?;
                }
                Ok(())
            }
        }
    }

    fn replace_frame(&mut self, f: &EncodedFrame, labels: &[String], job_id: u64) -> Result<()> {
        let old_head = self.head(&f.key)?;
        // A frame's chunks and tail slots exist only beside its head.
        if old_head.is_some() {
            self.drop_chunks(&f.key)?;
        } else {
            self.tails.remove(&f.key);
        }
        let in_head = f.state.is_none() && f.payload.len() <= self.config.inline_series_bytes_max;
        if !in_head {
            self.put_chunk(f, 0, job_id)?;
        }
        let state = f.state.as_ref().map(|s| (f.covers, s));
        let rows = in_head.then_some(f);
        self.put_head(&f.key, old_head.as_ref(), labels, state, rows, job_id)?;
        let old_labels = old_head.map(|h| h.labels).unwrap_or_default();
        for old in old_labels.iter().filter(|l| !labels.contains(l)) {
            self.unlabel(&f.key, old)?;
        }
        let implicit = implicit_label(&f.key.name, labels);
        let mut losers = BTreeSet::new();
        for (i, label) in labels.iter().enumerate() {
            let key = self.label_key(&f.key, label)?;
            let old = self.lookup_label(&key)?;
            let r = LabelRef {
                column: i as u16,
                frame: f.key.name.clone(),
            };
            if implicit {
                // The head says it all; a record would only shadow it.
                if old.is_some() {
                    self.writes.delete(Space::Labels, key);
                }
            } else if old.as_ref() != Some(&r) {
                // A recompute of the same plan leaves its labels as they are.
                self.writes.put(Space::Labels, key, r.encode());
            }
            match old {
                Some(old) if old.frame != f.key.name => {
                    losers.insert(old.frame);
                }
                Some(_) => {}
                // The frame of the label's name may hold it without a record.
                None if *label != f.key.name => {
                    if let Ok(named) = FrameKey::new(f.key.symbol.clone(), label.as_str())
                        && self
                            .head(&named)?
                            .is_some_and(|h| implicit_label(label, &h.labels))
                    {
                        losers.insert(label.clone());
                    }
                }
                None => {}
            }
        }
        // A frame whose every label moved elsewhere is of no more use.
        for name in losers {
            let Ok(loser) = FrameKey::new(f.key.symbol.clone(), name) else {
                continue;
            };
            let Some(head) = self.head(&loser)? else {
                continue;
            };
            let mut kept = false;
            for label in &head.labels {
                kept |= self
                    .resolve_label(&loser, label)?
                    .is_some_and(|r| r.frame == loser.name);
            }
            if !kept {
                self.remove_frame(&loser)?;
            }
        }
        Ok(())
    }

    /// Drops a frame: its chunks, its head and the labels pointing at it.
    pub(super) fn remove_frame(&mut self, key: &FrameKey) -> Result<()> {
        self.drop_chunks(key)?;
        let hk = head_key(key);
        if let Some(old) = self.lookup(Space::Frames, &hk)? {
            self.release_value(Space::Frames, &old)?;
            let head = FrameHead::decode(&old, &|| key.to_string())?;
            for label in &head.labels {
                self.unlabel(key, label)?;
            }
            self.writes.delete(Space::Frames, hk);
        }
        Ok(())
    }

    /// The coverage and column count of a frame's last rows (a frame with
    /// no rows covers nothing), or `None` when there is no such frame.
    pub(super) fn frame_end(&mut self, key: &FrameKey) -> Result<Option<(Coverage, u16)>> {
        Ok(self.tail_state(key)?.map(|t| (t.end, t.columns)))
    }

    /// The writer's view of a frame's end and tail slots, read once from
    /// the tree (and this group's writes) and then kept as writes change
    /// them, so that an append reads nothing; `None` when there is no such
    /// frame.
    fn tail_state(&mut self, key: &FrameKey) -> Result<Option<&mut TailState>> {
        if !self.tails.contains_key(key) {
            let Some(head) = self.head(key)? else {
                return Ok(None);
            };
            let location = || key.to_string();
            let prefix = chunks_prefix(key);
            let (end, columns) = head
                .rows
                .unwrap_or((Coverage::default(), head.labels.len() as u16));
            let mut state = TailState {
                end,
                columns,
                slots: Vec::new(),
                head_rows: head.rows.is_some(),
            };
            let mut chunks = ChunkRows::default();
            let mut last_chunk = None;
            for (k, v) in self.scan_pending(Space::Chunks, &prefix)? {
                let c = ChunkValue::decode(&v, &location)?;
                chunks.push(chunk_first_row(&prefix, &k)?, &c.covers);
                last_chunk = Some((c.covers, c.columns));
            }
            let mut last_row = None;
            for (k, v) in self.scan_pending(Space::Tails, &prefix)? {
                let slot = usize::from(k.last().copied().unwrap_or(0));
                if state.slots.len() <= slot {
                    state.slots.resize(slot + 1, false);
                }
                if let Some((row, c)) = decode_tail(&v, &location)?
                    && !chunks.folded(row)
                {
                    state.slots[slot] = true;
                    if last_row.is_none_or(|r| row >= r) {
                        last_row = Some(row);
                        (state.end, state.columns) = (c.covers, c.columns);
                    }
                }
            }
            // A chunk an append wrote with every slot full follows the tails.
            if let Some((covers, columns)) = last_chunk
                && (last_row.is_none() || covers.bars > state.end.bars)
            {
                (state.end, state.columns) = (covers, columns);
            }
            if self.tails.len() >= TAIL_STATES_MAX {
                self.tails.clear();
            }
            self.tails.insert(key.clone(), state);
        }
        Ok(self.tails.get_mut(key))
    }

    fn head(&self, key: &FrameKey) -> Result<Option<StoredHead>> {
        let Some(value) = self.lookup(Space::Frames, &head_key(key))? else {
            return Ok(None);
        };
        let head = FrameHead::decode(&value, &|| key.to_string())?;
        let rows = head.rows.map(|c| (c.covers, c.columns));
        Ok(Some(StoredHead {
            labels: head.labels,
            rows,
            value,
        }))
    }

    /// Moves the rows a frame's head holds (if any) to a chunk at row 0,
    /// before an append adds rows after them.
    fn spill_head_rows(&mut self, key: &FrameKey) -> Result<()> {
        if let Some(state) = self.tails.get_mut(key) {
            state.head_rows = false;
        }
        let Some(value) = self.lookup(Space::Frames, &head_key(key))? else {
            return Ok(());
        };
        let head = FrameHead::decode(&value, &|| key.to_string())?;
        let Some(rows) = head.rows else {
            return Ok(());
        };
        self.writes
            .put(Space::Chunks, chunk_key(key, 0), rows.encode());
        let kept = FrameHead { rows: None, ..head };
        self.writes.put(Space::Frames, head_key(key), kept.encode());
        Ok(())
    }

    /// Where `label` of `frame`'s symbol points: its record, else the frame
    /// of its name when that frame holds it implicitly (see `frame`).
    fn resolve_label(&self, frame: &FrameKey, label: &str) -> Result<Option<LabelRef>> {
        let key = self.label_key(frame, label)?;
        if let Some(r) = self.lookup_label(&key)? {
            return Ok(Some(r));
        }
        let Ok(named) = FrameKey::new(frame.symbol.clone(), label) else {
            return Ok(None);
        };
        Ok(self
            .head(&named)?
            .filter(|h| implicit_label(label, &h.labels))
            .map(|_| LabelRef {
                column: 0,
                frame: label.to_owned(),
            }))
    }

    fn label_key(&self, frame: &FrameKey, label: &str) -> Result<Vec<u8>> {
        Ok(series_key_bytes(&kiln_core::SeriesKey::new(
            frame.symbol.clone(),
            label,
        )?))
    }

    fn lookup_label(&self, key: &[u8]) -> Result<Option<LabelRef>> {
        self.lookup(Space::Labels, key)?
            .map(|v| LabelRef::decode(&v, &|| String::from_utf8_lossy(key).into_owned()))
            .transpose()
    }

    /// Removes `label` if it points at `frame`.
    pub(super) fn unlabel(&mut self, frame: &FrameKey, label: &str) -> Result<()> {
        let key = self.label_key(frame, label)?;
        if self
            .lookup_label(&key)?
            .is_some_and(|r| r.frame == frame.name)
        {
            self.writes.delete(Space::Labels, key);
        }
        Ok(())
    }

    /// A frame's chunks as the rows each holds (this group's writes
    /// included).
    pub(super) fn chunk_rows(&self, key: &FrameKey) -> Result<ChunkRows> {
        let prefix = chunks_prefix(key);
        let mut rows = ChunkRows::default();
        for (k, v) in self.scan_pending(Space::Chunks, &prefix)? {
            let c = ChunkValue::decode(&v, &|| key.to_string())?;
            rows.push(chunk_first_row(&prefix, &k)?, &c.covers);
        }
        Ok(rows)
    }

    /// Drops a frame's chunks and tail slots (a folded slot's record is
    /// released already).
    fn drop_chunks(&mut self, key: &FrameKey) -> Result<()> {
        let prefix = chunks_prefix(key);
        let chunks = self.chunk_rows(key)?;
        for (k, v) in self.scan_pending(Space::Tails, &prefix)? {
            if let Some((row, _)) = decode_tail(&v, &|| key.to_string())?
                && !chunks.folded(row)
            {
                self.release_value(Space::Tails, &v)?;
            }
            self.writes.delete(Space::Tails, k);
        }
        for (k, v) in self.scan_pending(Space::Chunks, &prefix)? {
            self.release_value(Space::Chunks, &v)?;
            self.writes.delete(Space::Chunks, k);
        }
        self.fold_queue.remove(key);
        self.tails.remove(key);
        self.new_ends.push((key.clone(), None));
        Ok(())
    }

    /// Puts an append's rows in the frame's first empty tail slot (or a new
    /// one), and queues the frame for a fold once it has [`FOLD`]`.fanout`
    /// tails. With every slot taken (folds fell far behind), the rows go
    /// to a chunk of their own.
    fn put_tail(&mut self, f: &EncodedFrame, first_row: u64, job_id: u64) -> Result<()> {
        let Some(state) = self.tail_state(&f.key)? else {
            return Ok(());
        };
        state.end = f.covers;
        let free = state.slots.iter().position(|full| !full);
        let slot = match free {
            Some(i) => i,
            None if state.slots.len() <= usize::from(u8::MAX) => state.slots.len(),
            None => {
                self.fold_queue.insert(f.key.clone());
                return self.put_chunk(f, first_row, job_id);
            }
        };
        if slot == state.slots.len() {
            state.slots.push(false);
        }
        state.slots[slot] = true;
        let full = state.slots.iter().filter(|&&s| s).count();
        let entry =
            if f.payload.len() > TAIL_INLINE_BYTES_MAX.min(self.config.inline_series_bytes_max) {
                Some(self.append_or_poison(&f.payload, job_id)?)
            } else {
                None
            };
        let value = encode_tail(
            first_row,
            &ChunkValue {
                covers: f.covers,
                columns: f.columns,
                rows: stored(entry, job_id, &f.payload),
            },
        );
        self.writes
            .put(Space::Tails, tail_key(&f.key, slot as u8), value);
        if full >= FOLD.fanout {
            self.fold_queue.insert(f.key.clone());
        }
        Ok(())
    }

    /// Folds up to [`FOLDS_PER_STEP`] queued frames, into this group's
    /// writes. Runs before a group applies its ops, so every record it
    /// reads is committed and written out; a frame that cannot be read is
    /// logged and left as it is.
    pub(super) fn fold_step(&mut self) -> Result<()> {
        #[cfg(feature = "test-hooks")]
        if self.folds_paused {
            return Ok(());
        }
        for _ in 0..FOLDS_PER_STEP {
            let Some(key) = self.fold_queue.pop_first() else {
                break;
            };
            if let Err(e) = self.fold(&key) {
                if matches!(e, StoreError::Poisoned { .. }) {
                    return Err(e);
                }
                tracing::warn!(frame = %key, error = %e, "folding a frame's tails failed; left as it is");
            }
        }
        Ok(())
    }

    /// Moves a frame's tails into one chunk, merged with the chunks before
    /// them as [`merge_from`] says: one new chunk, the old ones and the
    /// tails' records released, the slots left to be overwritten.
    fn fold(&mut self, key: &FrameKey) -> Result<()> {
        let location = || key.to_string();
        let prefix = chunks_prefix(key);
        let mut chunks = Vec::new();
        let mut rows = ChunkRows::default();
        for (k, v) in self.scan_pending(Space::Chunks, &prefix)? {
            let c = ChunkValue::decode(&v, &location)?;
            let first = chunk_first_row(&prefix, &k)?;
            rows.push(first, &c.covers);
            chunks.push((first, c.covers, c.columns, v, k));
        }
        let mut tails = Vec::new();
        for (k, v) in self.scan_pending(Space::Tails, &prefix)? {
            if let Some((row, c)) = decode_tail(&v, &location)?
                && !rows.folded(row)
            {
                tails.push((row, c.covers, c.columns, v, k));
            }
        }
        if tails.is_empty() {
            return Ok(());
        }
        tails.sort_by_key(|t| t.0);
        // Chunks an append wrote after the tails (with every slot full)
        // fold with them.
        let later = chunks.partition_point(|c| c.0 < tails[0].0);
        let mut group: Vec<_> = chunks
            .drain(later..)
            .map(|c| (Space::Chunks, c))
            .chain(tails.into_iter().map(|t| (Space::Tails, t)))
            .collect();
        group.sort_by_key(|(_, t)| t.0);
        let rows = |c: &(u64, Coverage, u16, sled::IVec, Vec<u8>)| (c.1.bars - c.0) as usize;
        let mut sizes: Vec<usize> = chunks.iter().map(rows).collect();
        sizes.push(group.iter().map(|(_, t)| rows(t)).sum());
        let from = merge_from(&sizes, FOLD).unwrap_or(chunks.len());
        let merged: Vec<_> = chunks
            .drain(from..)
            .map(|c| (Space::Chunks, c))
            .chain(group)
            .collect();
        let columns = merged[0].1.2;
        let first_row = merged[0].1.0;
        let covers = merged[merged.len() - 1].1.1;
        let mut end = first_row;
        let reader = self.vlog.reader();
        let mut parts = Vec::with_capacity(merged.len());
        for (space, (row, c, width, value, _)) in &merged {
            if *row != end || *width != columns {
                return Err(StoreError::corrupt(
                    location(),
                    format!(
                        "rows from {row} do not follow rows up to {end} with {columns} columns"
                    ),
                ));
            }
            end = c.bars;
            let start = value_start(*space, value)?.unwrap_or(value.len());
            let bytes = load(&reader, value.clone(), start)?
                .ok_or_else(|| StoreError::corrupt(location(), "a record's segment is missing"))?
                .aligned_for::<f64>();
            parts.push((bytes, (c.bars - row) as usize));
        }
        let total = (end - first_row) as usize;
        let mut payload: AlignedVec = AlignedVec::with_capacity(total * usize::from(columns) * 8);
        for col in 0..usize::from(columns) {
            for (bytes, n) in &parts {
                let slice = bytes.f64s(col * n * 8, *n);
                if slice.len() != *n {
                    return Err(StoreError::corrupt(
                        location(),
                        "a chunk is shorter than its rows",
                    ));
                }
                payload.extend_from_slice(bytemuck::cast_slice(slice));
            }
        }
        drop(parts);
        let (last_space, (_, _, _, last_value, _)) = &merged[merged.len() - 1];
        let last_start = value_start(*last_space, last_value)?.unwrap_or(0);
        let job_id = ResultValue::decode(&last_value[last_start..])?.job_id();
        // The tail slots stay as they are: the new chunk covers their rows,
        // which makes them free (see `frame`).
        for (space, (_, _, _, value, k)) in &merged {
            self.release_value(*space, value)?;
            if *space == Space::Chunks {
                self.writes.delete(Space::Chunks, k.clone());
            }
        }
        let entry = self.place(&payload, job_id)?;
        let value = ChunkValue {
            covers,
            columns,
            rows: stored(entry, job_id, &payload),
        }
        .encode();
        self.writes
            .put(Space::Chunks, chunk_key(key, first_row), value);
        if let Some(state) = self.tails.get_mut(key) {
            state.slots.iter_mut().for_each(|s| *s = false);
        }
        // The rows it moves cannot be recomputed: durable before indexed.
        self.vlog_sync_required = true;
        Ok(())
    }

    fn put_chunk(&mut self, f: &EncodedFrame, first_row: u64, job_id: u64) -> Result<()> {
        let key = chunk_key(&f.key, first_row);
        if let Some(old) = self.lookup(Space::Chunks, &key)? {
            self.release_value(Space::Chunks, &old)?;
        }
        let entry = self.place(&f.payload, job_id)?;
        let value = ChunkValue {
            covers: f.covers,
            columns: f.columns,
            rows: stored(entry, job_id, &f.payload),
        }
        .encode();
        debug_assert_eq!(
            value_start(Space::Chunks, &value)?,
            Some(CHUNK_HEADER_BYTES)
        );
        self.writes.put(Space::Chunks, key, value);
        Ok(())
    }

    /// Writes a frame's head over `old` (this group's view of it): its
    /// labels, and its state or the rows of `rows` (inline).
    fn put_head(
        &mut self,
        key: &FrameKey,
        old: Option<&StoredHead>,
        labels: &[String],
        state: Option<(Coverage, &Vec<u8>)>,
        rows: Option<&EncodedFrame>,
        job_id: u64,
    ) -> Result<()> {
        if let Some(old) = old {
            self.release_value(Space::Frames, &old.value)?;
        }
        let state = match state {
            Some((covers, bytes)) => {
                let entry = self.place(bytes, job_id)?;
                Some((covers, entry, bytes))
            }
            None => None,
        };
        let head = FrameHead {
            labels: labels.to_vec(),
            state: state.map(|(c, e, b)| (c, stored(e, job_id, b))),
            rows: rows.map(|f| ChunkValue {
                covers: f.covers,
                columns: f.columns,
                rows: ResultValue::Inline {
                    job_id,
                    bytes: &f.payload,
                },
            }),
        };
        self.writes.put(Space::Frames, head_key(key), head.encode());
        Ok(())
    }

    /// Puts `bytes` in the value log, unless they are small enough to go
    /// inline (`None`).
    fn place(&mut self, bytes: &[u8], job_id: u64) -> Result<Option<IndexEntry>> {
        if bytes.len() <= self.config.inline_series_bytes_max {
            return Ok(None);
        }
        self.append_or_poison(bytes, job_id).map(Some)
    }

    /// Entries of `space` under `prefix` as this group sees them: the
    /// committed tree overlaid with the group's pending writes.
    pub(super) fn scan_pending(
        &self,
        space: Space,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, sled::IVec)>> {
        let mut merged = BTreeMap::new();
        for item in self.spaces.scan(space, prefix) {
            let (k, v) = item?;
            merged.insert(k, v);
        }
        for (k, v) in self.writes.with_prefix(space, prefix) {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }

    /// Accounts the value-log record a value of `space` points at (if any)
    /// as garbage.
    pub(super) fn release_value(&mut self, space: Space, value: &[u8]) -> Result<()> {
        if let Some(start) = value_start(space, value)?
            && let ResultValue::Pointer(old) = ResultValue::decode(&value[start..])?
        {
            self.vlog.release(&old);
        }
        Ok(())
    }
}

/// How placed bytes are referenced: a pointer, or the bytes inline.
fn stored(entry: Option<IndexEntry>, job_id: u64, bytes: &[u8]) -> ResultValue<'_> {
    match entry {
        Some(e) => ResultValue::Pointer(e),
        None => ResultValue::Inline { job_id, bytes },
    }
}

#[cfg(test)]
mod tests {
    use kiln_core::conformance::{job, sym};
    use kiln_core::{Backend, FrameRead, JobQueue, ResultStore, Series, SeriesKey, SeriesRead};

    use super::*;
    use crate::StoreConfig;
    use crate::keys::series_key_bytes;
    use crate::store::Store;

    fn run(store: &Store, write: FrameWrite) {
        store.enqueue(job("w")).expect("enqueue");
        let lease = store.claim(1).expect("claim").remove(0);
        store.complete(lease.token, vec![write]).expect("complete");
    }

    /// A one-column series of `key` written alone, `state` its saved state.
    fn alone(key: &SeriesKey, values: Vec<f64>, state: Vec<u8>) -> FrameWrite {
        let s = Series {
            bar_count: values.len() as u64,
            last_ts: values.len() as i64,
            data_hash: 7,
            values,
            state,
        };
        FrameWrite::from((key.clone(), s))
    }

    fn covers(bars: u64) -> Coverage {
        Coverage {
            bars,
            last_ts: bars as i64,
            hash: 7,
        }
    }

    /// Records per keyspace: frame heads, chunks, tail slots, labels.
    fn records(store: &Store) -> [usize; 4] {
        [Space::Frames, Space::Chunks, Space::Tails, Space::Labels]
            .map(|space| store.spaces().scan(space, &[]).count())
    }

    fn values(store: &Store, key: &SeriesKey) -> Option<Vec<f64>> {
        let view = store.series(key).expect("read")?;
        Some(view.values().into_owned())
    }

    fn clean(store: &Store) -> u64 {
        let report = store.check().expect("check");
        assert_eq!(report.problems, Vec::<String>::new());
        report.series
    }

    fn key(feature: &str) -> SeriesKey {
        SeriesKey::new(sym("A"), feature).expect("key")
    }

    #[test]
    fn a_small_series_written_alone_is_one_record_until_it_is_appended_to() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
        let x = key("x");
        run(&store, alone(&x, vec![1.0, 2.0, 3.0], vec![]));
        assert_eq!(records(&store), [1, 0, 0, 0], "head, chunks, tails, labels");
        assert_eq!(values(&store, &x), Some(vec![1.0, 2.0, 3.0]));
        assert_eq!(store.series_keys(&sym("A")).expect("keys"), vec![x.clone()]);
        let frame = FrameKey::new(sym("A"), "x").expect("frame");
        let head = store.frame(&frame).expect("read").expect("stored");
        assert_eq!(
            (head.covers(), head.labels()),
            (covers(3), &["x".to_owned()][..])
        );
        assert_eq!(store.series_writer(&x).expect("writer"), Some(1));
        assert_eq!(clean(&store), 1, "one label, held by the head");

        // An append moves the rows to a chunk and adds a tail.
        run(
            &store,
            FrameWrite {
                key: frame.clone(),
                rows: FrameRows::Append { after: covers(3) },
                covers: covers(5),
                columns: vec![vec![4.0, 5.0]],
                state: None,
            },
        );
        assert_eq!(records(&store), [1, 1, 1, 0]);
        let want: Vec<f64> = (1..=5).map(f64::from).collect();
        assert_eq!(values(&store, &x), Some(want.clone()));
        let mut out = vec![0.0; 5];
        let got = store
            .copy_series(std::slice::from_ref(&x), 0..5, &mut [&mut out[..]])
            .expect("copy");
        assert_eq!((got, &out), (vec![Some(covers(5))], &want));
        assert_eq!(clean(&store), 1);
        drop(store);
        let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
        assert_eq!(values(&store, &x), Some(want));
        let head = store.frame(&frame).expect("read").expect("stored");
        assert_eq!(head.covers(), covers(5));
        assert_eq!(clean(&store), 1);
    }

    #[test]
    fn a_series_with_a_state_or_too_large_to_be_inline_keeps_a_chunk_and_no_label_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = StoreConfig {
            inline_series_bytes_max: 64,
            ..StoreConfig::default()
        };
        let store = Store::open(dir.path(), config).expect("open");
        run(&store, alone(&key("s"), vec![1.0; 4], vec![9; 3]));
        assert_eq!(records(&store), [1, 1, 0, 0]);
        run(&store, alone(&key("big"), vec![2.0; 9], vec![]));
        assert_eq!(records(&store), [2, 2, 0, 0]);
        run(&store, alone(&key("small"), vec![3.0; 8], vec![]));
        assert_eq!(records(&store), [3, 2, 0, 0]);
        assert_eq!(values(&store, &key("s")), Some(vec![1.0; 4]));
        assert_eq!(values(&store, &key("big")), Some(vec![2.0; 9]));
        assert_eq!(values(&store, &key("small")), Some(vec![3.0; 8]));
        let frame = FrameKey::new(sym("A"), "s").expect("frame");
        let head = store.frame(&frame).expect("read").expect("stored");
        assert_eq!(head.state(), Some((covers(4), &[9u8, 9, 9][..])));
        assert_eq!(clean(&store), 3);
    }

    #[test]
    fn rows_in_a_head_move_to_a_chunk_for_a_state_or_rows_appended_and_come_back_on_a_replace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
        let x = key("x");
        let frame = FrameKey::new(sym("A"), "x").expect("frame");
        let append = |after: u64, rows: Vec<Vec<f64>>, state: Option<Vec<u8>>| FrameWrite {
            key: frame.clone(),
            rows: FrameRows::Append {
                after: covers(after),
            },
            covers: covers(after + rows.first().map_or(0, |c| c.len() as u64)),
            columns: rows,
            state,
        };
        run(&store, alone(&x, vec![1.0, 2.0, 3.0], vec![]));
        // An append of a state alone.
        run(&store, append(3, vec![vec![]], Some(vec![5; 4])));
        assert_eq!(records(&store), [1, 1, 0, 0]);
        assert_eq!(values(&store, &x), Some(vec![1.0, 2.0, 3.0]));
        let head = store.frame(&frame).expect("read").expect("stored");
        assert_eq!(head.state(), Some((covers(3), &[5u8; 4][..])));
        // An append of the wrong width is refused and changes nothing.
        store.enqueue(job("w")).expect("enqueue");
        let lease = store.claim(1).expect("claim").remove(0);
        let wide = append(3, vec![vec![4.0], vec![4.0]], None);
        let e = store
            .complete(lease.token, vec![wide])
            .expect_err("refused");
        assert!(
            e.to_string()
                .contains("an append of 2 columns to a frame of 1"),
            "{e}"
        );
        assert_eq!(values(&store, &x), Some(vec![1.0, 2.0, 3.0]));
        // Forty appends of a row: 32 tails fold into a chunk.
        for n in 3..43 {
            run(&store, append(n, vec![vec![n as f64 + 1.0]], None));
        }
        let want: Vec<f64> = (1..=43).map(f64::from).collect();
        assert_eq!(values(&store, &x), Some(want));
        assert_eq!(clean(&store), 1);
        // A replace with a state keeps a chunk; one without, small, does not.
        run(&store, alone(&x, vec![6.0; 2], vec![1]));
        assert_eq!(records(&store)[..2], [1, 1]);
        run(&store, alone(&x, vec![7.0; 2], vec![]));
        assert_eq!(records(&store)[..2], [1, 0]);
        assert_eq!(values(&store, &x), Some(vec![7.0; 2]));
        assert_eq!(clean(&store), 1);
    }

    #[test]
    fn a_frame_without_labels_is_not_removed_when_a_label_of_its_name_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
        // A series without values keeps a state alone: a frame with no label.
        let s = key("sma(5)");
        let state_alone = Series {
            bar_count: 2,
            last_ts: 2,
            data_hash: 7,
            values: vec![],
            state: vec![3; 2],
        };
        run(&store, FrameWrite::from((s.clone(), state_alone)));
        let state_only = FrameKey::new(sym("A"), "sma(5)").expect("frame");
        let plan = FrameKey::new(sym("A"), "@plan").expect("frame");
        run(
            &store,
            FrameWrite {
                key: plan,
                rows: FrameRows::Replace {
                    labels: vec!["sma(5)".into()],
                },
                covers: covers(2),
                columns: vec![vec![5.0; 2]],
                state: None,
            },
        );
        let head = store.frame(&state_only).expect("read").expect("kept");
        assert_eq!(head.state().map(|(_, b)| b.to_vec()), Some(vec![3; 2]));
        assert_eq!(values(&store, &s), Some(vec![5.0; 2]));
        assert_eq!(clean(&store), 1);
    }

    #[test]
    fn labels_move_between_frames_that_hold_them_with_and_without_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
        let (x, z) = (key("x"), key("z"));
        let plan = FrameKey::new(sym("A"), "@plan").expect("frame");
        let frames = |store: &Store| -> Vec<String> {
            let all = store.frames(&sym("A")).expect("frames");
            all.into_iter().map(|f| f.name).collect()
        };
        run(&store, alone(&x, vec![1.0; 2], vec![]));
        // A frame that takes label x from the frame of that name: x's
        // frame is left with no label and goes.
        run(
            &store,
            FrameWrite {
                key: plan.clone(),
                rows: FrameRows::Replace {
                    labels: vec!["x".into(), "z".into()],
                },
                covers: covers(2),
                columns: vec![vec![5.0; 2], vec![6.0; 2]],
                state: None,
            },
        );
        assert_eq!(frames(&store), ["@plan"]);
        assert_eq!(records(&store), [1, 0, 0, 2]);
        assert_eq!(values(&store, &x), Some(vec![5.0; 2]));
        assert_eq!(clean(&store), 2);
        // x written alone again takes its label back without a record; the
        // plan keeps z.
        run(&store, alone(&x, vec![7.0; 2], vec![]));
        assert_eq!(frames(&store), ["@plan", "x"]);
        assert_eq!(records(&store), [2, 0, 0, 1]);
        assert_eq!(values(&store, &x), Some(vec![7.0; 2]));
        assert_eq!(values(&store, &z), Some(vec![6.0; 2]));
        assert_eq!(
            store.series_keys(&sym("A")).expect("keys"),
            vec![x.clone(), z.clone()]
        );
        assert_eq!(clean(&store), 2);
        // z alone too: the plan holds no label any more.
        run(&store, alone(&z, vec![8.0; 2], vec![]));
        assert_eq!(frames(&store), ["x", "z"]);
        assert_eq!(records(&store), [2, 0, 0, 0]);
        assert_eq!(values(&store, &z), Some(vec![8.0; 2]));
        assert_eq!(clean(&store), 2);
        // A label record as format 8 wrote it for a series alone (pointing
        // at the frame of its name) is read, and the next replace drops it.
        let mut writes = crate::space::Writes::default();
        let r = LabelRef {
            column: 0,
            frame: "x".into(),
        };
        writes.put(Space::Labels, series_key_bytes(&x), r.encode());
        store.spaces().apply(&writes).expect("apply");
        assert_eq!(records(&store), [2, 0, 0, 1]);
        assert_eq!(values(&store, &x), Some(vec![7.0; 2]));
        assert_eq!(
            store.series_keys(&sym("A")).expect("keys"),
            vec![x.clone(), z.clone()]
        );
        assert_eq!(clean(&store), 2);
        run(&store, alone(&x, vec![9.0; 2], vec![]));
        assert_eq!(records(&store), [2, 0, 0, 0]);
        assert_eq!(values(&store, &x), Some(vec![9.0; 2]));
        drop(store);
        let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
        assert_eq!(values(&store, &x), Some(vec![9.0; 2]));
        assert_eq!(values(&store, &z), Some(vec![8.0; 2]));
        assert_eq!(clean(&store), 2);
    }
}
