//! Recovery: the one function that runs at open. It rebuilds the writer's
//! in-memory view from what sled committed, checks the stored counters
//! against a full scan (repairing them, with a warning, if they drifted),
//! and returns the jobs a dead process left `running` to the queue, or marks
//! them dead when their attempts are used up. The value log's unindexed tail
//! is cut off before this runs (see `vlog`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::Result;
use crate::job::JobState;
use crate::keys::{Symbol, read_u64, u64_key};
use crate::record::{SymbolStats, decode_job};
use crate::vlog::VlogRecovery;
use crate::writer::{
    Counters, Finished, HISTORY, JOBS, META, META_COUNTERS, META_NEXT_FINISH_SEQ, META_NEXT_ID,
    META_PAUSED, PAYLOADS, SYMSTATS, Writer,
};

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
}

/// Rebuilds `w` from disk and repairs what a crash left behind.
pub(crate) fn recover(w: &mut Writer) -> Result<RecoveryReport> {
    let now = w.config.clock.now_ms();
    let meta = &w.trees[META];
    let stored_next_id = meta
        .get(META_NEXT_ID)?
        .map(|v| read_u64(&v, "meta/next_id"))
        .transpose()?;
    let stored_finish_seq = meta
        .get(META_NEXT_FINISH_SEQ)?
        .map(|v| read_u64(&v, "meta/next_finish_seq"))
        .transpose()?;
    let stored_counters = meta
        .get(META_COUNTERS)?
        .map(|v| Counters::decode(&v))
        .transpose()?;
    if let Some(p) = meta.get(META_PAUSED)? {
        for (slot, b) in w.paused.iter_mut().zip(p.iter()) {
            *slot = *b != 0;
        }
    }

    let mut report = RecoveryReport::default();
    let mut scanned = Counters::default();
    let mut finished: HashMap<u64, (u64, JobState)> = HashMap::new();
    let mut running = Vec::new();
    let mut max_id = 0;
    for item in w.trees[JOBS].iter() {
        let (k, v) = item?;
        let id = read_u64(&k, "jobs key")?;
        max_id = max_id.max(id);
        report.jobs_scanned += 1;
        let terminal_probe = decode_job(id, &v, Arc::from(&[][..]))?;
        scanned.enter(&terminal_probe);
        if terminal_probe.state.is_terminal() {
            finished.insert(
                id,
                (
                    terminal_probe.finished_ms.unwrap_or(0),
                    terminal_probe.state,
                ),
            );
            continue;
        }
        let payload = w.trees[PAYLOADS]
            .get(u64_key(id))?
            .map(|p| Arc::from(&p[..]))
            .unwrap_or_else(|| Arc::from(&[][..]));
        let job = crate::job::Job {
            payload,
            ..terminal_probe
        };
        if let Some(key) = &job.idempotency_key {
            w.idem.insert(key.clone(), id);
        }
        match job.state {
            JobState::Running => {
                running.push(id);
                // Filed under a lease until the requeue below moves it.
            }
            _ => w.make_claimable(&job, now),
        }
        w.active.insert(id, job);
    }
    w.next_id = stored_next_id.unwrap_or(1).max(max_id + 1);

    let mut max_seq = 0;
    for item in w.trees[HISTORY].iter() {
        let (k, v) = item?;
        let seq = read_u64(&k, "history key")?;
        let id = read_u64(&v, "history value")?;
        max_seq = max_seq.max(seq);
        let Some(&(finished_ms, state)) = finished.get(&id) else {
            tracing::warn!(
                seq,
                id,
                "history names a job that is not finished; dropping the entry"
            );
            w.writes[HISTORY].insert(seq.to_be_bytes().to_vec(), None);
            continue;
        };
        w.history.push_back(Finished {
            seq,
            id,
            finished_ms,
            state,
        });
    }
    w.next_finish_seq = stored_finish_seq.unwrap_or(1).max(max_seq + 1);

    for item in w.trees[SYMSTATS].iter() {
        let (k, v) = item?;
        let symbol = Symbol::new(String::from_utf8_lossy(&k).into_owned())?;
        w.symstats.insert(symbol, SymbolStats::decode(&v)?);
    }

    let stored = stored_counters.unwrap_or_default();
    if stored != scanned {
        let drift = format!("stored {stored:?}, scan {scanned:?}");
        tracing::warn!(%drift, "job counters drifted from the jobs tree; repaired from the scan");
        report.counters_drift = Some(drift);
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

    if report.counters_drift.is_some() {
        w.put(META, META_COUNTERS.to_vec(), w.counters.encode().to_vec());
    }
    w.commit()?;
    if w.unflushed {
        w.flush_and_fsync()?;
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
