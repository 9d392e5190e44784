//! Keeping the store sound: value-log compaction (live records of sparse
//! sealed segments copied forward, their index entries re-pointed in one
//! batch, the old segments deleted) and the integrity check (every record
//! scanned and verified, the job model held against what is committed).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use kiln_core::{CheckReport, Result, StoreError};

use super::Writer;
use crate::bars::check_bars;
use crate::keys::{read_u64, series_key_from_bytes};
use crate::record::{Counters, ResultValue, decode_job, series_layout};
use crate::space::Space;

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Live records copied out of sparse segments.
    pub moved_records: u64,
    /// Their payload bytes.
    pub moved_bytes: u64,
    /// Segments deleted.
    pub removed_segments: u32,
}

impl Writer {
    /// Whether a sealed segment is sparse enough to compact.
    pub(super) fn compaction_due(&self) -> bool {
        !self
            .vlog
            .compaction_candidates(self.config.compact_live_fraction_min)
            .is_empty()
    }

    /// Rewrites the live records of sparse sealed segments into the active
    /// segment, re-points their index entries in one batch, then deletes
    /// the old segments. A failure poisons the store.
    pub(super) fn compact(&mut self) -> Result<CompactReport> {
        let victims = self
            .vlog
            .compaction_candidates(self.config.compact_live_fraction_min);
        let mut report = CompactReport::default();
        // Staged bar chunks are live but not yet indexed: moving only the
        // indexed records would lose them.
        if victims.is_empty() || self.shared.staging.load(Ordering::SeqCst) > 0 {
            return Ok(report);
        }
        let result = self.compact_segments(&victims, &mut report);
        if let Err(e) = &result {
            self.shared.poison(&e.to_string());
        }
        result.map(|()| report)
    }

    fn compact_segments(&mut self, victims: &[u32], report: &mut CompactReport) -> Result<()> {
        let reader = self.vlog.reader();
        let pointers = Space::POINTERS
            .iter()
            .flat_map(|&space| self.spaces.scan(space, &[]).map(move |item| (space, item)));
        let mut moves = Vec::new();
        for (space, item) in pointers {
            let (key, value) = item?;
            let ResultValue::Pointer(old) = ResultValue::decode(&value)? else {
                continue;
            };
            if victims.contains(&old.segment) {
                moves.push((space, key, old));
            }
        }
        for (space, key, old) in moves {
            let mapped = reader.read(&old)?.ok_or_else(|| {
                StoreError::corrupt(
                    format!("vlog segment {}", old.segment),
                    "missing during compaction",
                )
            })?;
            let new = self.vlog.append(mapped.bytes(), old.job_id)?;
            self.vlog.release(&old);
            report.moved_bytes += u64::from(old.len);
            report.moved_records += 1;
            self.writes
                .put(space, key, ResultValue::Pointer(new).encode());
        }
        self.vlog_sync_required = true;
        self.commit()?;
        self.disk.flush_and_fsync()?;
        for &id in victims {
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
        let reader = self.vlog.reader();
        for item in self.spaces.scan(Space::Results, &[]) {
            let (k, v) = item?;
            let key = series_key_from_bytes(&k)?;
            report.series += 1;
            let name = format!("{}/{}", key.symbol, key.feature);
            match ResultValue::decode(&v)? {
                ResultValue::Inline { archived, .. } => {
                    let mut copy = rkyv::util::AlignedVec::<16>::new();
                    copy.extend_from_slice(archived);
                    if let Err(e) = series_layout(&copy, &|| name.clone()) {
                        report.problems.push(e.to_string());
                    }
                }
                ResultValue::Pointer(entry) => match reader.read(&entry) {
                    Ok(Some(_)) => {}
                    Ok(None) => report
                        .problems
                        .push(format!("{name}: segment {} is missing", entry.segment)),
                    Err(e) => report.problems.push(format!("{name}: {e}")),
                },
            }
        }
        report.bar_chunks = check_bars(&self.spaces, &reader, &mut report.problems)?;
        report.counters_by_state = scanned.by_state;
        Ok(report)
    }
}
