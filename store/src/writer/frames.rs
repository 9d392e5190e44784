//! The writer's part of storing frames (see `frame` for the records): a
//! replace drops the frame's chunks and writes one, moving its labels to
//! it and removing any frame left with no label; an append adds one chunk
//! after the last, or is skipped when the frame has moved on; a remove
//! drops the frame, its chunks and its labels. Rows and states go inline
//! when small, else to the value log.

use std::collections::{BTreeMap, BTreeSet};

use rkyv::util::AlignedVec;

use kiln_core::{Coverage, FrameKey, FrameRows, FrameWrite, Result, StoreError};

use super::Writer;
use crate::frame::{
    CHUNK_HEADER_BYTES, ChunkValue, FrameHead, LabelRef, chunk_key, chunks_prefix, head_key,
    value_start,
};
use crate::keys::series_key_bytes;
use crate::record::{IndexEntry, ResultValue};
use crate::space::Space;

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
    pub(super) fn check_frame(&self, f: &EncodedFrame) -> Result<()> {
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
                if f.covers.bars > after.bars {
                    self.put_chunk(f, after.bars, job_id)?;
                }
                if let Some(state) = &f.state {
                    let head = self.head(&f.key)?.unwrap_or_default();
                    self.put_head(&f.key, &head.labels, Some((f.covers, state)), job_id)?;
                }
                Ok(())
            }
        }
    }

    fn replace_frame(&mut self, f: &EncodedFrame, labels: &[String], job_id: u64) -> Result<()> {
        let old_labels = self.head(&f.key)?.map(|h| h.labels).unwrap_or_default();
        self.drop_chunks(&f.key)?;
        self.put_chunk(f, 0, job_id)?;
        let state = f.state.as_ref().map(|s| (f.covers, s));
        self.put_head(&f.key, labels, state, job_id)?;
        for old in old_labels.iter().filter(|l| !labels.contains(l)) {
            self.unlabel(&f.key, old)?;
        }
        let mut losers = BTreeSet::new();
        for (i, label) in labels.iter().enumerate() {
            let key = self.label_key(&f.key, label)?;
            if let Some(r) = self.lookup_label(&key)?
                && r.frame != f.key.name
            {
                losers.insert(r.frame);
            }
            let r = LabelRef {
                column: i as u16,
                frame: f.key.name.clone(),
            };
            // A recompute of the same plan leaves its labels as they are.
            if self.lookup_label(&key)?.as_ref() != Some(&r) {
                self.writes.put(Space::Labels, key, r.encode());
            }
        }
        // A frame whose every label moved elsewhere is of no more use.
        for name in losers {
            let loser = FrameKey::new(f.key.symbol.clone(), name)?;
            let Some(head) = self.head(&loser)? else {
                continue;
            };
            let mut kept = false;
            for label in &head.labels {
                let key = self.label_key(&loser, label)?;
                kept |= self
                    .lookup_label(&key)?
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

    /// The coverage and column count of a frame's last chunk (a frame with
    /// no chunk covers nothing), or `None` when there is no such frame.
    pub(super) fn frame_end(&self, key: &FrameKey) -> Result<Option<(Coverage, u16)>> {
        let Some(head) = self.head(key)? else {
            return Ok(None);
        };
        let chunks = self.scan_pending(Space::Chunks, &chunks_prefix(key))?;
        Ok(Some(match chunks.last() {
            Some((_, v)) => {
                let c = ChunkValue::decode(v, &|| key.to_string())?;
                (c.covers, c.columns)
            }
            None => (Coverage::default(), head.labels.len() as u16),
        }))
    }

    fn head(&self, key: &FrameKey) -> Result<Option<FrameHead<'static>>> {
        let Some(v) = self.lookup(Space::Frames, &head_key(key))? else {
            return Ok(None);
        };
        let head = FrameHead::decode(&v, &|| key.to_string())?;
        Ok(Some(FrameHead {
            labels: head.labels,
            state: None,
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

    fn drop_chunks(&mut self, key: &FrameKey) -> Result<()> {
        for (k, v) in self.scan_pending(Space::Chunks, &chunks_prefix(key))? {
            self.release_value(Space::Chunks, &v)?;
            self.writes.delete(Space::Chunks, k);
        }
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

    fn put_head(
        &mut self,
        key: &FrameKey,
        labels: &[String],
        state: Option<(Coverage, &Vec<u8>)>,
        job_id: u64,
    ) -> Result<()> {
        let hk = head_key(key);
        if let Some(old) = self.lookup(Space::Frames, &hk)? {
            self.release_value(Space::Frames, &old)?;
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
        };
        self.writes.put(Space::Frames, hk, head.encode());
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
