//! Recovery: the one function that runs at open. It rebuilds the writer's
//! in-memory view from what sled committed, checks the stored counters
//! against a full scan (repairing them, with a warning, if they drifted),
//! and returns the jobs a dead process left `running` to the queue, or marks
//! them dead when their attempts are used up. The value log's unindexed tail
//! is cut off before this runs (see `vlog`).

use crate::error::Result;
use crate::job::JobState;
use crate::keys::{Symbol, read_u64};
use crate::record::{SymbolStats, decode_job};
use crate::vlog::VlogRecovery;
use crate::writer::{Counters, EVENTS, Finished, JOBS, META, META_KEY, Meta, SYMSTATS, Writer};

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
}

/// Rebuilds `w` from disk and repairs what a crash left behind.
pub(crate) fn recover(w: &mut Writer) -> Result<RecoveryReport> {
    let now = w.config.clock.now_ms();
    let stored = match w.spaces.get(META, META_KEY)? {
        Some(v) => Meta::decode(&v)?,
        None => Meta::default(),
    };
    w.paused = stored.paused;

    let mut report = RecoveryReport::default();
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

    if stored.counters != scanned {
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

    if w.commit()? {
        w.disk.flush_and_fsync()?;
        w.unflushed = false;
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
