//! Keeping the store sound: value-log compaction (live records of sparse
//! sealed segments copied forward, their index entries re-pointed in one
//! batch, the old segments deleted) and the integrity check (every record
//! scanned and verified, the job model held against what is committed).
//!
//! Compaction never poisons the store for what it reads or for a full
//! disk: a record that fails to read (checksum, I/O) stays where it is and
//! its segment is quarantined (kept, never compacted again in this
//! process; `kiln check` reports the record), and the rest is moved; a
//! write of the copies that fails (a full disk) undoes them and gives up
//! until `COMPACT_RETRY_MS` later. Once the index moves (the commit),
//! any failure poisons, and so does a failed fsync anywhere.
//!
//! Compaction puts off a segment that holds a live record the store is
//! about to rewrite anyway, as long as appends continue: a tail, a chunk
//! that will still merge, a saved state. Those die on their own within one
//! merge period (1,024 appends), so copying them would write them twice;
//! the segment is looked at again whenever another segment becomes active,
//! and after `COMPACT_PATIENCE_SEGMENTS` such looks (the frame or symbol
//! may get no more appends) it is compacted all the same.
//!
//! Automatic compaction runs when the writer is idle, and under steady load
//! too: once the writer has not been idle for `BUSY_COMPACT_AFTER`, between
//! groups, taking at most a tenth of the writer's time. Each automatic step
//! takes at most `COMPACT_SEGMENTS_PER_STEP` segments, the sparsest first.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kiln_core::{CheckReport, Result, StoreError};

use super::Writer;
use super::frames::FOLD;
use crate::bars::check_bars;
use crate::frame::{
    CHUNK_HEADER_BYTES, ChunkRows, ChunkValue, FrameHead, LabelRef, chunk_first_row, chunks_prefix,
    decode_tail, frame_key_from, implicit_label, live_value_start, value_start,
};
use crate::ingest::MERGE;
use crate::keys::{read_u64, series_key_bytes, series_key_from_bytes};
use crate::record::{Counters, IndexEntry, ResultValue, decode_job, decode_job_input};
use crate::shared::Poison;
use crate::space::Space;
use crate::view::load;
use crate::vlog::VlogReader;

/// A record compaction copied: where its index entry is, the value that
/// points at the copy, and the entry it replaces.
struct Moved {
    space: Space,
    key: Vec<u8>,
    value: Vec<u8>,
    old: IndexEntry,
}

/// How long automatic compaction waits after giving up (a full disk).
const COMPACT_RETRY_MS: u64 = 60_000;

/// Segments that become active while compaction puts a segment off before
/// it compacts it all the same (see the module docs).
const COMPACT_PATIENCE_SEGMENTS: u32 = 8;

/// How long the writer goes without idling before compaction runs between
/// groups.
pub(super) const BUSY_COMPACT_AFTER: Duration = Duration::from_secs(1);

/// Most segments one automatic compaction step takes.
const COMPACT_SEGMENTS_PER_STEP: usize = 16;

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Live records copied out of sparse segments.
    pub moved_records: u64,
    /// Their payload bytes.
    pub moved_bytes: u64,
    /// Segments deleted.
    pub removed_segments: u32,
    /// Records that failed to read and stay where they are; their
    /// segments are quarantined.
    pub quarantined_records: u64,
}

/// Whether a live record of `space` will be rewritten as long as its frame
/// or symbol gets appends: a frame's or a symbol's tail, a chunk below the
/// size that is never merged, a saved state (replaced every
/// `STATE_SAVE_BARS` bars).
fn rewritten_soon(space: Space, key: &[u8], value: &[u8], entry: &IndexEntry) -> Result<bool> {
    Ok(match space {
        Space::Tails | Space::BarTails | Space::Frames => true,
        Space::Chunks => {
            let c = ChunkValue::decode(value, &|| "frame chunk".into())?;
            let first_row = read_u64(&key[key.len().saturating_sub(8)..], "frame chunk key")?;
            c.covers.bars.saturating_sub(first_row) < FOLD.sealed_rows as u64
        }
        Space::Bars => crate::bars::rows_in(entry.len) < MERGE.sealed_rows,
        _ => false,
    })
}

impl Writer {
    /// Whether a sealed segment is sparse enough to compact (and no recent
    /// attempt gave up).
    pub(super) fn compaction_due(&self, now: u64) -> bool {
        now >= self.compact_retry_at
            && !self
                .vlog
                .compaction_candidates(self.config.compact_live_fraction_min, true)
                .is_empty()
    }

    /// Compaction between groups, when the writer has not been idle for
    /// `BUSY_COMPACT_AFTER` (steady load): a step, then a pause nine times
    /// its length, so it takes at most a tenth of the writer's time.
    pub(super) fn compact_under_load(&mut self) {
        let started = Instant::now();
        if started < self.busy_compact_at {
            return;
        }
        if self.shared.poison_cause().is_none()
            && self.compaction_due(self.config.queue.clock.now_ms())
            && let Err(e) = self.compact(true)
        {
            tracing::error!(error = %e, "value-log compaction under load failed");
        }
        let pause = (started.elapsed() * 9).max(Duration::from_millis(10));
        self.busy_compact_at = Instant::now() + pause;
    }

    /// Rewrites the live records of sparse sealed segments into the active
    /// segment, re-points their index entries in one batch, then deletes
    /// the old segments (see the module docs for its failures). A `patient`
    /// compaction (the automatic one) puts segments off as the module docs
    /// say; one a caller asked for does not.
    pub(super) fn compact(&mut self, patient: bool) -> Result<CompactReport> {
        let mut victims = self
            .vlog
            .compaction_candidates(self.config.compact_live_fraction_min, patient);
        if patient {
            victims.truncate(COMPACT_SEGMENTS_PER_STEP);
        }
        let mut report = CompactReport::default();
        // Staged bar chunks are live but not yet indexed: moving only the
        // indexed records would lose them.
        if victims.is_empty() || self.shared.staging.load(Ordering::SeqCst) > 0 {
            return Ok(report);
        }
        let mark = match self.vlog.mark() {
            Ok(mark) => mark,
            Err(e) => {
                // Earlier appends could not be written: the next commit
                // reports it; compaction waits.
                self.compact_retry_at = self.config.queue.clock.now_ms() + COMPACT_RETRY_MS;
                return Err(e);
            }
        };
        let moved = match self.copy_live(&mut victims, patient, &mut report) {
            Ok(moved) => moved,
            Err(e) => {
                // Nothing is indexed yet: the copies can be undone.
                if !e.is_fatal() && self.vlog.rewind(mark).is_ok() {
                    self.compact_retry_at = self.config.queue.clock.now_ms() + COMPACT_RETRY_MS;
                    tracing::warn!(error = %e, "value-log compaction gave up; it tries again later");
                } else {
                    self.shared.poison(Poison::of(&e));
                }
                return Err(e);
            }
        };
        if victims.is_empty() {
            return Ok(report);
        }
        // From here on the index moves: a failure poisons.
        let result = self.commit_moves(moved, &victims, &mut report);
        if let Err(e) = &result {
            self.shared.poison(Poison::of(e));
        }
        result.map(|()| report)
    }

    /// Copies the live records of `victims` to the active segment and
    /// writes them to the file (a full disk shows here, before anything is
    /// indexed); a record that fails to read quarantines its segment. A
    /// victim a `patient` compaction puts off leaves `victims`.
    fn copy_live(
        &mut self,
        victims: &mut Vec<u32>,
        patient: bool,
        report: &mut CompactReport,
    ) -> Result<Vec<Moved>> {
        let reader = self.vlog.reader();
        let pointers = Space::POINTERS
            .iter()
            .flat_map(|&space| self.spaces.scan(space, &[]).map(move |item| (space, item)));
        let mut moves = Vec::new();
        for (space, item) in pointers {
            let (key, value) = item?;
            let Some(start) = live_value_start(&self.spaces, space, &key, &value)? else {
                continue;
            };
            let ResultValue::Pointer(old) = ResultValue::decode(&value[start..])? else {
                continue;
            };
            if victims.contains(&old.segment) {
                moves.push((space, key, value, start, old));
            }
        }
        let mut put_off = Vec::new();
        for (space, key, value, _, old) in &moves {
            if patient
                && !put_off.contains(&old.segment)
                && rewritten_soon(*space, key, value, old)?
                && self.vlog.defer(old.segment, COMPACT_PATIENCE_SEGMENTS)
            {
                put_off.push(old.segment);
            }
        }
        victims.retain(|id| !put_off.contains(id));
        moves.retain(|m| !put_off.contains(&m.4.segment));
        let mut moved = Vec::with_capacity(moves.len());
        for (space, key, value, start, old) in moves {
            let loaded = match reader.read(&old) {
                Ok(Some(loaded)) => loaded,
                Ok(None) => {
                    return Err(StoreError::corrupt(
                        format!("vlog segment {}", old.segment),
                        "missing during compaction",
                    ));
                }
                Err(e) => {
                    tracing::error!(error = %e, segment = old.segment, "a record failed to read during compaction; its segment is quarantined");
                    self.vlog.quarantined.insert(old.segment);
                    report.quarantined_records += 1;
                    continue;
                }
            };
            let new = self.vlog.append(loaded.bytes(), old.job_id)?;
            report.moved_bytes += u64::from(old.len);
            report.moved_records += 1;
            let mut value = value[..start].to_vec();
            value.extend_from_slice(&ResultValue::Pointer(new).encode());
            moved.push(Moved {
                space,
                key,
                value,
                old,
            });
        }
        self.vlog.flush()?;
        Ok(moved)
    }

    /// Re-points the moved records in one commit, makes it durable, then
    /// deletes the emptied segments.
    fn commit_moves(
        &mut self,
        moved: Vec<Moved>,
        victims: &[u32],
        report: &mut CompactReport,
    ) -> Result<()> {
        let mut old_entries = Vec::with_capacity(moved.len());
        for m in moved {
            self.writes.put(m.space, m.key, m.value);
            old_entries.push(m.old);
        }
        self.vlog_sync_required = true;
        self.commit()?;
        for old in &old_entries {
            self.vlog.release(old);
        }
        self.disk.flush_and_fsync()?;
        self.reveal();
        for &id in victims {
            if self.vlog.quarantined.contains(&id) {
                continue;
            }
            self.vlog.remove_segment(id)?;
            report.removed_segments += 1;
        }
        Ok(())
    }

    /// Compares the counters and the job model with a full scan of what is
    /// committed, and reads every series and bar chunk back.
    pub(super) fn check(&self) -> Result<CheckReport> {
        // Every checksum is verified again, not taken from earlier reads.
        self.vlog.reader().forget_verified();
        let mut report = CheckReport::default();
        let mut scanned = Counters::default();
        let mut on_disk = BTreeMap::new();
        for item in self.spaces.scan(Space::Jobs, &[]) {
            let (k, v) = item?;
            let id = read_u64(&k, "jobs key")?;
            let (job, _) = decode_job(id, &v)?;
            scanned.enter(&job);
            report.jobs += 1;
            on_disk.insert(id, job.state);
        }
        report.problems = self.queue.problems(&on_disk, &scanned);
        for item in self.spaces.scan(Space::JobInputs, &[]) {
            let (k, v) = item?;
            let id = read_u64(&k, "job inputs key")?;
            match on_disk.get(&id) {
                Some(_) => {
                    if let Err(e) = decode_job_input(id, &v) {
                        report.problems.push(e.to_string());
                    }
                }
                None => report
                    .problems
                    .push(format!("job {id} has an input but no record")),
            }
        }
        let reader = self.vlog.reader();
        report.series = self.check_frames(&reader, &mut report.problems)?;
        report.bar_chunks = check_bars(&self.spaces, &reader, &mut report.problems)?;
        report.counters_by_state = scanned.by_state;
        Ok(report)
    }

    /// Reads back every frame (chunks contiguous from row 0, each of the
    /// size its columns and rows need, checksummed; the state) and every
    /// label (its frame has its column); returns the number of labels.
    fn check_frames(&self, reader: &VlogReader, problems: &mut Vec<String>) -> Result<u64> {
        let mut columns = BTreeMap::new();
        let mut labels = 0;
        for item in self.spaces.scan(Space::Frames, &[]) {
            let (k, v) = item?;
            let key = frame_key_from(&k)?;
            let name = key.to_string();
            let head = match FrameHead::decode(&v, &|| name.clone()) {
                Ok(h) => h,
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            };
            if let Some((covers, state)) = head.state {
                let start = v.len() - state.encoded_len();
                match load(reader, v.clone(), start) {
                    Ok(Some(_)) => {}
                    Ok(None) => problems.push(format!("{name}: the state's segment is missing")),
                    Err(e) => problems.push(format!("{name}: state: {e}")),
                }
                let _ = covers;
            }
            if implicit_label(&key.name, &head.labels)
                && self
                    .spaces
                    .get(
                        Space::Labels,
                        &series_key_bytes(&kiln_core::SeriesKey::new(
                            key.symbol.clone(),
                            key.name.as_str(),
                        )?),
                    )?
                    .is_none()
            {
                labels += 1;
            }
            let prefix = chunks_prefix(&key);
            // The rows in the head, the chunks and the full tail slots,
            // each with where its rows' result value starts.
            let mut rows = Vec::new();
            if let Some(start) = head.rows_start(&v) {
                rows.push((0, Ok(Some(start)), v.clone()));
            }
            let mut chunk_rows = ChunkRows::default();
            for item in self.spaces.scan(Space::Chunks, &prefix) {
                let (ck, cv) = item?;
                let first = chunk_first_row(&prefix, &ck)?;
                if let Ok(c) = ChunkValue::decode(&cv, &|| name.clone()) {
                    chunk_rows.push(first, &c.covers);
                }
                rows.push((first, value_start(Space::Chunks, &cv), cv));
            }
            let mut tails = Vec::new();
            for item in self.spaces.scan(Space::Tails, &prefix) {
                let (_, tv) = item?;
                match decode_tail(&tv, &|| name.clone()) {
                    Ok(Some((row, _))) if chunk_rows.folded(row) => {}
                    Ok(Some((row, _))) => tails.push((row, value_start(Space::Tails, &tv), tv)),
                    Ok(None) => {}
                    Err(e) => problems.push(e.to_string()),
                }
            }
            // In row order: a chunk an append wrote with every slot full
            // follows the tails.
            rows.extend(tails);
            rows.sort_by_key(|t| t.0);
            let (mut end, mut width) = (0u64, head.labels.len() as u16);
            for (row, start, cv) in rows {
                let at = || format!("{name} rows from {row}");
                let start = match start {
                    Ok(Some(start)) => start,
                    Ok(None) => continue,
                    Err(e) => {
                        problems.push(e.to_string());
                        continue;
                    }
                };
                let c = match ChunkValue::decode(&cv[start - CHUNK_HEADER_BYTES..], &at) {
                    Ok(c) => c,
                    Err(e) => {
                        problems.push(e.to_string());
                        continue;
                    }
                };
                if row != end {
                    problems.push(format!("{}: follows rows up to {end}", at()));
                }
                let want = c.rows_bytes(row);
                match load(reader, cv.clone(), start) {
                    Ok(Some(b)) if Some(b.raw().len() as u64) == want => {}
                    Ok(Some(b)) => problems.push(format!(
                        "{}: {} bytes of rows, want {want:?}",
                        at(),
                        b.raw().len()
                    )),
                    Ok(None) => problems.push(format!("{}: its segment is missing", at())),
                    Err(e) => problems.push(format!("{}: {e}", at())),
                }
                end = c.covers.bars;
                width = c.columns;
            }
            columns.insert(k.to_vec(), width);
        }
        for item in self.spaces.scan(Space::Labels, &[]) {
            let (k, v) = item?;
            let key = series_key_from_bytes(&k)?;
            labels += 1;
            let name = format!("{}/{}", key.symbol, key.feature);
            let r = match LabelRef::decode(&v, &|| name.clone()) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            };
            let frame = crate::frame::labelled_frame(&key, &r)?;
            match columns.get(&crate::frame::head_key(&frame)) {
                Some(&width) if r.column < width => {}
                Some(&width) => problems.push(format!(
                    "{name}: points at column {} of {frame}, which has {width}",
                    r.column
                )),
                None => problems.push(format!("{name}: points at {frame}, which does not exist")),
            }
        }
        if let Some(item) = self.spaces.scan(Space::LegacyResults, &[]).next() {
            let (k, _) = item?;
            problems.push(format!(
                "a format-3 series {} was not migrated",
                String::from_utf8_lossy(&k)
            ));
        }
        Ok(labels)
    }
}
