//! Recovery: the one function that runs at open. It rebuilds the job model
//! from what sled committed, checks the stored counters against a full scan
//! (repairing them, with a warning, if they drifted), and returns the jobs
//! a dead process left `running` to the queue, or marks them dead when
//! their attempts are used up. The value log's unindexed tail is cut off
//! before this runs (see `vlog`); results whose value-log records did not
//! reach the disk (a power loss in `Relaxed` mode) are dropped here and the
//! jobs that stored them run again.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use kiln_core::{FrameKey, FrameWrite, JobState, Result, StoreError, Symbol};

use super::EncodedFrame;
use super::Writer;
use crate::frame::{
    EMPTY_TAIL, FrameHead, chunk_first_row, chunks_prefix, decode_tail, frame_key_from,
    frame_of_chunk, frame_of_tail, head_key,
};
use crate::keys::{read_u64, series_key_from_bytes, u64_key};
use crate::record::{
    ArchivedSeries, META_KEY, Meta, ResultValue, VLOG_SYNCED_KEY, decode_job, decode_job_input,
    decode_series, decode_symbol_stats, encode_job, encode_job_input,
};
use crate::space::Space;
use crate::view::load;
use crate::vlog::VlogRecovery;

/// An indexed value-log record that is not on disk whole.
pub(crate) struct LostRecord {
    pub space: Space,
    pub key: Vec<u8>,
    pub job_id: u64,
}

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Job records scanned.
    pub jobs_scanned: u64,
    /// Jobs left running by a dead process, returned to the queue.
    pub requeued: u64,
    /// Jobs left running whose attempts were used up, now dead.
    pub dead: u64,
    /// Set when the stored counters disagreed with the scan (they were repaired).
    pub counters_drift: Option<String>,
    /// What opening the value log repaired.
    pub vlog: VlogRecovery,
    /// Half-written sled snapshot files a crash left, removed before sled opened.
    pub partial_snapshots_removed: u32,
    /// Finished jobs queued again because results they stored were lost
    /// (see [`VlogRecovery::lost_records`]).
    pub rerun_lost: u64,
    /// Series of a FORMAT_VERSION 3 store moved into frames of their own.
    pub migrated_series: u64,
}

impl Writer {
    /// Rebuilds the job model from disk and repairs what a crash left
    /// behind; commits the repairs.
    pub(crate) fn recover(&mut self, lost: &[LostRecord]) -> Result<RecoveryReport> {
        let now = self.config.queue.clock.now_ms();
        let rerun_lost = self.forget_lost(lost, now)?;
        let stored = match self.spaces.get(Space::Meta, META_KEY)? {
            Some(v) => Meta::decode(&v)?,
            None => Meta::default(),
        };
        let mut report = RecoveryReport {
            rerun_lost,
            ..RecoveryReport::default()
        };
        let mut symbol_stats = Vec::new();
        for item in self.spaces.scan(Space::SymbolStats, &[]) {
            let (k, v) = item?;
            let symbol = Symbol::new(String::from_utf8_lossy(&k).into_owned())?;
            symbol_stats.push((symbol, decode_symbol_stats(&v)?));
        }
        self.queue
            .restore_symbol_stats(symbol_stats, stored.stats_through);
        for item in self.spaces.scan(Space::Jobs, &[]) {
            let (k, v) = item?;
            let id = read_u64(&k, "jobs key")?;
            report.jobs_scanned += 1;
            let (mut job, finish_seq) = decode_job(id, &v)?;
            if !(job.payload.is_empty() && job.symbols.is_empty()) {
                // A large input in a record of format 5 or older moves out.
                if self.put_job_input(&job)? {
                    let record = encode_job(&job, finish_seq)?;
                    self.writes.put(Space::Jobs, k.to_vec(), record.as_slice());
                }
            } else if !job.state.is_terminal() || finish_seq > Some(stored.stats_through) {
                // The queue runs it, or counts it in the symbol aggregates.
                if let Some(input) = self.spaces.get(Space::JobInputs, &k)? {
                    (job.payload, job.symbols) = decode_job_input(id, &input)?;
                }
            }
            self.queue.restore_job(job, finish_seq, now);
        }
        // Events are written with the changes they report: the keys on
        // disk are exactly the log.
        let mut events = self.spaces.scan(Space::Events, &[]);
        let extent = match events.next() {
            Some(first) => {
                let first = read_u64(&first?.0, "events key")?;
                let last = match events.next_back() {
                    Some(last) => read_u64(&last?.0, "events key")?,
                    None => first,
                };
                Some((first, last))
            }
            None => None,
        };
        let scanned = self.queue.restore_end(&stored, extent);
        // Jobs queued again above leave the stored counters behind on purpose.
        if stored.counters != scanned && rerun_lost == 0 {
            let drift = format!("stored {:?}, scan {scanned:?}", stored.counters);
            tracing::warn!(%drift, "job counters drifted from the jobs tree; repaired from the scan");
            report.counters_drift = Some(drift);
            self.meta_dirty = true;
        }
        (report.requeued, report.dead) = self.queue.recover_interrupted(now);

        let mark_stored = self.spaces.get(Space::Meta, VLOG_SYNCED_KEY)?.is_some();
        self.pipeline
            .recovered(self.vlog.end(), mark_stored, &mut self.writes);
        if self.commit()? {
            self.disk.flush_and_fsync()?;
        }
        if report.requeued + report.dead > 0 {
            tracing::info!(
                requeued = report.requeued,
                dead = report.dead,
                "recovered jobs left running by a dead process"
            );
        }
        Ok(report)
    }

    /// Drops the index entries of lost records (a frame loses its chunks
    /// from the first lost one on, and a state that covers more than is
    /// left) and queues the succeeded jobs that stored them again, the lost attempt not counted; returns
    /// how many. A job still running or awaiting a retry needs nothing more
    /// (it computes what is not stored when it next runs); one that ended
    /// dead or cancelled, or was purged from the history, stays so, and its
    /// lost results are simply gone (`kiln check` stays clean; a new
    /// submission recomputes them). A lost bar chunk is an error: bars are
    /// fsynced before they are indexed, so the disk itself lost
    /// acknowledged writes.
    fn forget_lost(&mut self, lost: &[LostRecord], now: u64) -> Result<u64> {
        if lost.is_empty() {
            return Ok(0);
        }
        let lost_keys: HashSet<(Space, &[u8])> =
            lost.iter().map(|r| (r.space, r.key.as_slice())).collect();
        // Per frame: the first row lost (every chunk from it on goes, so
        // the frame stays contiguous), and whether its state was lost.
        let mut cut: BTreeMap<FrameKey, u64> = BTreeMap::new();
        let mut states_lost = BTreeSet::new();
        for r in lost {
            match r.space {
                Space::LegacyResults => self.writes.delete(Space::LegacyResults, r.key.clone()),
                Space::Chunks => {
                    let frame = frame_of_chunk(&r.key)?;
                    let row = chunk_first_row(&chunks_prefix(&frame), &r.key)?;
                    let at = cut.entry(frame).or_insert(row);
                    *at = (*at).min(row);
                }
                Space::Tails => {
                    let frame = frame_of_tail(&r.key)?;
                    let value = self.spaces.get(Space::Tails, &r.key)?.unwrap_or_default();
                    if let Some((row, _)) = decode_tail(&value, &|| frame.to_string())? {
                        let at = cut.entry(frame).or_insert(row);
                        *at = (*at).min(row);
                    }
                }
                Space::Frames => {
                    states_lost.insert(frame_key_from(&r.key)?);
                }
                _ => {
                    return Err(StoreError::corrupt(
                        format!("bar chunk {}", String::from_utf8_lossy(&r.key)),
                        "indexed, but its value-log record is not on disk although it was fsynced first: the disk lost acknowledged writes; restore the data directory from a backup",
                    ));
                }
            }
        }
        for (frame, row) in &cut {
            let prefix = chunks_prefix(frame);
            let chunks = self.chunk_rows(frame)?;
            for (k, v) in self.scan_pending(Space::Chunks, &prefix)? {
                if chunk_first_row(&prefix, &k)? < *row {
                    continue;
                }
                if !lost_keys.contains(&(Space::Chunks, k.as_slice())) {
                    self.release_value(Space::Chunks, &v)?;
                }
                self.writes.delete(Space::Chunks, k);
            }
            // A folded slot from the cut on was folded into a chunk the cut
            // drops: emptied too, its record released at the fold.
            for (k, v) in self.scan_pending(Space::Tails, &prefix)? {
                let first = match decode_tail(&v, &|| frame.to_string())? {
                    Some((first, _)) if first >= *row => first,
                    _ => continue,
                };
                if !chunks.folded(first) && !lost_keys.contains(&(Space::Tails, k.as_slice())) {
                    self.release_value(Space::Tails, &v)?;
                }
                self.writes.put(Space::Tails, k, EMPTY_TAIL.to_vec());
            }
        }
        let frames: BTreeSet<&FrameKey> = cut.keys().chain(&states_lost).collect();
        for frame in frames {
            let hk = head_key(frame);
            let Some(v) = self.lookup(Space::Frames, &hk)? else {
                continue;
            };
            let head = FrameHead::decode(&v, &|| frame.to_string())?;
            let lost_state = states_lost.contains(frame);
            if cut.get(frame) == Some(&0) {
                // Nothing of the frame is left.
                if !lost_state {
                    self.release_value(Space::Frames, &v)?;
                }
                for label in &head.labels {
                    self.unlabel(frame, label)?;
                }
                self.writes.delete(Space::Frames, hk);
                continue;
            }
            let Some((covers, _)) = head.state else {
                continue;
            };
            if lost_state || cut.get(frame).is_some_and(|&row| covers.bars > row) {
                if !lost_state {
                    self.release_value(Space::Frames, &v)?;
                }
                let kept = FrameHead {
                    labels: head.labels,
                    state: None,
                    rows: None,
                };
                self.writes.put(Space::Frames, hk, kept.encode());
            }
        }
        let jobs: BTreeSet<u64> = lost.iter().map(|r| r.job_id).collect();
        let mut rerun = 0;
        for id in jobs {
            let Some(bytes) = self.spaces.get(Space::Jobs, &u64_key(id))? else {
                continue;
            };
            let (mut job, _) = decode_job(id, &bytes)?;
            if job.state != JobState::Succeeded {
                continue;
            }
            invariant!(job.attempts > 0, "succeeded job {id} made no attempt");
            job.state = JobState::Queued;
            job.attempts = job.attempts.saturating_sub(1);
            job.run_at_ms = now;
            job.finished_ms = None;
            job.lease_expires_ms = None;
            job.last_error = Some(
                "results it stored were lost by a power loss before they reached the disk (relaxed durability); running it again"
                    .into(),
            );
            let record = encode_job(&job, None)?;
            self.put_job_input(&job)?;
            self.writes
                .put(Space::Jobs, u64_key(id).to_vec(), record.as_slice());
            rerun += 1;
        }
        self.spaces.apply(&self.writes)?;
        self.writes.clear();
        tracing::warn!(
            records = lost.len(),
            jobs = rerun,
            "results lost before they reached the disk; their jobs run again"
        );
        Ok(rerun)
    }

    /// Writes the input a record of format 5 or older held, when this
    /// format keeps it apart; returns whether it did. (A record read from
    /// this format holds none that is: nothing to write.)
    fn put_job_input(&mut self, job: &kiln_core::Job) -> Result<bool> {
        let Some(input) = encode_job_input(job)? else {
            return Ok(false);
        };
        self.writes
            .put(Space::JobInputs, u64_key(job.id).to_vec(), input.as_slice());
        Ok(true)
    }

    /// Moves every FORMAT_VERSION 3 series into a frame of its own (one
    /// column labelled with its feature, or none for a series that only
    /// kept a state), written by the job that wrote the series, in one
    /// commit; returns how many.
    pub(crate) fn migrate_series(&mut self) -> Result<u64> {
        let reader = self.vlog.reader();
        let mut moved = 0;
        for item in self.spaces.scan(Space::LegacyResults, &[]) {
            let (k, v) = item?;
            let key = series_key_from_bytes(&k)?;
            let location = || format!("{}/{}", key.symbol, key.feature);
            let bytes = load(&reader, v.clone(), 0)?
                .ok_or_else(|| StoreError::corrupt(location(), "its value-log segment is missing"))?
                .aligned_for::<ArchivedSeries>();
            let series = decode_series(bytes.raw(), &location)?;
            let job_id = ResultValue::decode(&v)?.job_id();
            let frame = EncodedFrame::new(FrameWrite::from((key.clone(), series)))?;
            self.write_frame(&frame, job_id)?;
            self.release_value(Space::LegacyResults, &v)?;
            self.writes.delete(Space::LegacyResults, k);
            moved += 1;
        }
        if moved > 0 {
            self.vlog_sync_required = true;
            self.commit()?;
            self.disk.flush_and_fsync()?;
        }
        Ok(moved)
    }
}
