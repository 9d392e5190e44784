//! Recovery: the one function that runs at open. It rebuilds the writer's
//! in-memory view from what sled committed, checks the stored counters
//! against a full scan (repairing them, with a warning, if they drifted),
//! and returns the jobs a dead process left `running` to the queue, or marks
//! them dead when their attempts are used up. The value log's unindexed tail
//! is cut off before this runs (see `vlog`); results whose value-log records
//! did not reach the disk (a power loss in `Relaxed` mode) are dropped here
//! and the jobs that stored them run again.

use std::collections::BTreeSet;

use crate::db::Durability;
use crate::error::{Result, StoreError};
use crate::job::JobState;
use crate::keys::{Symbol, read_u64, u64_key};
use crate::record::{SymbolStats, decode_job, encode_job};
use crate::space::Writes;
use crate::vlog::VlogRecovery;
use crate::writer::{
    Counters, EVENTS, Finished, JOBS, META, META_KEY, Meta, RESULTS, SYMSTATS, VLOG_SYNCED_KEY,
    Writer,
};

/// An indexed value-log record that is not on disk whole.
pub(crate) struct LostRecord {
    pub space: usize,
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
}

/// Rebuilds `w` from disk and repairs what a crash left behind.
pub(crate) fn recover(w: &mut Writer, lost: &[LostRecord]) -> Result<RecoveryReport> {
    let now = w.config.clock.now_ms();
    let rerun_lost = forget_lost(w, lost, now)?;
    let stored = match w.spaces.get(META, META_KEY)? {
        Some(v) => Meta::decode(&v)?,
        None => Meta::default(),
    };
    w.paused = stored.paused;

    let mut report = RecoveryReport {
        rerun_lost,
        ..RecoveryReport::default()
    };
    let mut scanned = Counters::default();
    let mut running = Vec::new();
    let mut max_id = 0;
    for item in w.spaces.scan(JOBS, &[]) {
        let (k, v) = item?;
        let id = read_u64(&k, "jobs key")?;
        max_id = max_id.max(id);
        report.jobs_scanned += 1;
        let (job, finish_seq) = decode_job(id, &v)?;
        scanned.enter(&job);
        if job.state.is_terminal() {
            w.history.push_back(Finished {
                seq: finish_seq.unwrap_or(0),
                id,
                finished_ms: job.finished_ms.unwrap_or(0),
                state: job.state,
            });
            continue;
        }
        if let Some(key) = &job.idempotency_key {
            w.idem.insert(key.clone(), id);
        }
        if job.state == JobState::Running {
            // Requeued (or killed) below, once every job is loaded.
            running.push(id);
        } else {
            w.make_claimable(&job, now);
        }
        w.active.insert(id, job);
    }
    w.history.make_contiguous().sort_unstable_by_key(|f| f.seq);
    w.next_id = stored.next_id.max(max_id + 1);
    let max_seq = w.history.back().map_or(0, |f| f.seq);
    w.next_finish_seq = stored.next_finish_seq.max(max_seq + 1);

    // Events are written with the changes they report: the keys on disk
    // are exactly the log.
    let mut events = w.spaces.scan(EVENTS, &[]);
    if let Some(first) = events.next() {
        w.first_event_seq = read_u64(&first?.0, "events key")?;
        let last = match events.next_back() {
            Some(last) => read_u64(&last?.0, "events key")?,
            None => w.first_event_seq,
        };
        w.next_event_seq = last + 1;
    }

    for item in w.spaces.scan(SYMSTATS, &[]) {
        let (k, v) = item?;
        let symbol = Symbol::new(String::from_utf8_lossy(&k).into_owned())?;
        w.symstats.insert(symbol, SymbolStats::decode(&v)?);
    }

    // Jobs queued again above leave the stored counters behind on purpose.
    if stored.counters != scanned && rerun_lost == 0 {
        let drift = format!("stored {:?}, scan {scanned:?}", stored.counters);
        tracing::warn!(%drift, "job counters drifted from the jobs tree; repaired from the scan");
        report.counters_drift = Some(drift);
        w.meta_dirty = true;
    }
    w.counters = scanned;

    for id in running {
        let Some(job) = w.active.get_mut(&id) else {
            continue;
        };
        let attempt = job.attempts;
        job.lease_expires_ms = None;
        job.last_error = Some(format!("the process ended during attempt {attempt}"));
        if attempt >= job.attempts_max {
            w.finish(id, JobState::Dead, now, None);
            report.dead += 1;
        } else {
            w.requeue(id, now);
            report.requeued += 1;
        }
    }

    // The value log is all on disk now (`Vlog::open` fsynced it): the synced
    // mark starts at its end, or goes when this session fsyncs every commit.
    match w.config.durability {
        Durability::Relaxed => {
            let end = w.vlog.end();
            w.put(META, VLOG_SYNCED_KEY.to_vec(), end.encode().to_vec());
            w.recorded_synced = end;
        }
        Durability::Sync => {
            if w.spaces.get(META, VLOG_SYNCED_KEY)?.is_some() {
                w.delete(META, VLOG_SYNCED_KEY.to_vec());
            }
        }
    }
    if w.commit()? {
        w.disk.flush_and_fsync()?;
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

/// Drops the index entries of lost records and queues the succeeded jobs
/// that stored them again, the lost attempt not counted; returns how many.
/// A job still running or awaiting a retry needs nothing more (it computes
/// what is not stored when it next runs); one that ended dead or cancelled,
/// or was purged from the history, stays so, and its lost results are
/// simply gone (`kiln check` stays clean; a new submission recomputes
/// them). A lost bar chunk is an error: bars are fsynced before they are
/// indexed, so the disk itself lost acknowledged writes.
fn forget_lost(w: &mut Writer, lost: &[LostRecord], now: u64) -> Result<u64> {
    if lost.is_empty() {
        return Ok(0);
    }
    let mut writes = Writes::default();
    for r in lost {
        if r.space != RESULTS {
            return Err(StoreError::corrupt(
                format!("bar chunk {}", String::from_utf8_lossy(&r.key)),
                "indexed, but its value-log record is not on disk although it was fsynced first: the disk lost acknowledged writes; restore the data directory from a backup",
            ));
        }
        writes[RESULTS].insert(r.key.clone(), None);
    }
    let jobs: BTreeSet<u64> = lost.iter().map(|r| r.job_id).collect();
    let mut rerun = 0;
    for id in jobs {
        let Some(bytes) = w.spaces.get(JOBS, &u64_key(id))? else {
            continue;
        };
        let (mut job, _) = decode_job(id, &bytes)?;
        if job.state != JobState::Succeeded {
            continue;
        }
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
        writes[JOBS].insert(u64_key(id).to_vec(), Some(record.as_slice().into()));
        rerun += 1;
    }
    w.spaces.apply(&writes)?;
    tracing::warn!(
        records = lost.len(),
        jobs = rerun,
        "results lost before they reached the disk; their jobs run again"
    );
    Ok(rerun)
}
