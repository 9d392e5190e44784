//! The job state machine, in memory: the unfinished jobs with their ready
//! (`due`), scheduled and leased sets, idempotency keys, paused priorities,
//! the finished-job history, per-symbol aggregates, the counters and the
//! event log's sequence numbers. Every transition of the job model happens
//! here, and each records what it changed ([`Changes`]) for the writer to
//! encode into the group's sled batch. It touches no disk: recovery rebuilds
//! it from the committed records, and unit tests drive it directly.
//!
//! The per-symbol aggregates are not written with every finished job (a
//! tick of a thousand symbols would rewrite a thousand keys): the stored
//! ones cover the finished jobs up to a history sequence number
//! (`Meta::stats_through`), and recovery adds the finished jobs after it
//! from their records. They are written (folded) only when a purge is about
//! to remove a finished job they do not cover yet.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use kiln_core::{
    CancelOutcome, ERROR_BYTES_MAX, Enqueued, Event, FailOutcome, Job, JobId, JobState, Lease,
    LeaseToken, NewJob, Priority, Result, RetryPolicy, StoreError, Symbol, SymbolStats, Watermark,
};

use crate::StoreConfig;
use crate::record::{Counters, Meta};

/// Most finished jobs (and events) one group's trim removes (bounds the
/// size of a group).
const TRIM_PER_GROUP_MAX: usize = 1024;

/// The bounds of the job model the queue enforces.
#[derive(Clone, Debug)]
pub(crate) struct Bounds {
    pub attempts_max: u32,
    pub retry: RetryPolicy,
    pub queue_depth_max: u64,
    pub history_max: u64,
    pub retention_ms: Option<u64>,
    pub events_max: u64,
}

impl Bounds {
    pub(crate) fn of(c: &StoreConfig) -> Self {
        let q = &c.queue;
        Bounds {
            attempts_max: q.attempts_max,
            retry: q.retry,
            queue_depth_max: q.queue_depth_max,
            history_max: q.history_max,
            retention_ms: q.retention_ms,
            events_max: q.events_max,
        }
    }
}

/// A finished job in history order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Finished {
    pub seq: u64,
    pub id: JobId,
    pub finished_ms: u64,
    /// Its terminal state, so a purge can keep the counters equal to a scan.
    pub state: JobState,
}

/// What transitions changed since the writer last took them.
#[derive(Default)]
pub(crate) struct Changes {
    /// Unfinished jobs whose record changed.
    pub jobs: HashSet<JobId>,
    /// Jobs enqueued: their input is written (once).
    pub created: Vec<JobId>,
    /// Jobs that reached a terminal state: the final record and its
    /// history position.
    pub finished: Vec<(Job, u64)>,
    /// Finished jobs trimmed from the history: their records go.
    pub removed: Vec<JobId>,
    /// Symbols whose aggregates are to be stored (a fold).
    pub symbol_stats: HashSet<Symbol>,
    /// Events appended.
    pub events: Vec<Event>,
    /// Oldest events dropped (by sequence number).
    pub events_removed: Vec<u64>,
    /// The scalars changed without any record (a pause).
    pub meta: bool,
}

impl Changes {
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.jobs.is_empty()
            && self.created.is_empty()
            && self.finished.is_empty()
            && self.removed.is_empty()
            && self.symbol_stats.is_empty()
            && self.events.is_empty()
            && self.events_removed.is_empty()
            && !self.meta
    }
}

/// The in-memory job model. See the module docs.
pub(crate) struct Queue {
    bounds: Bounds,
    /// Unfinished jobs (queued, running, failed awaiting retry), with payloads.
    active: HashMap<JobId, Job>,
    /// Claimable jobs per priority, in FIFO (id) order.
    due: [BTreeSet<JobId>; 3],
    /// Jobs not claimable before a time: (run_at_ms, id).
    scheduled: BTreeSet<(u64, JobId)>,
    /// Running jobs by lease expiry: (expires_ms, id).
    leases: BTreeSet<(u64, JobId)>,
    /// Idempotency keys of unfinished jobs.
    idem: HashMap<String, JobId>,
    paused: [bool; 3],
    /// Finished jobs, oldest first (bounded by `history_max` and retention).
    history: VecDeque<Finished>,
    symstats: HashMap<Symbol, SymbolStats>,
    /// Symbols whose aggregates changed since the stored ones.
    symstats_unstored: HashSet<Symbol>,
    /// The last history sequence number the stored aggregates cover.
    stats_through: u64,
    counters: Counters,
    next_id: JobId,
    next_finish_seq: u64,
    /// The event log's next and oldest kept sequence numbers.
    next_event_seq: u64,
    first_event_seq: u64,
    changes: Changes,
}

/// Moves `job` to `new`, keeping the counts right.
fn transition(counters: &mut Counters, job: &mut Job, new: JobState) {
    leave(counters, job);
    job.state = new;
    counters.enter(job);
}

fn leave(counters: &mut Counters, job: &Job) {
    let s = &mut counters.by_state[job.state.index()];
    invariant!(*s > 0, "no job is counted {}", job.state.as_str());
    *s = s.saturating_sub(1);
    if job.state.is_waiting() {
        let d = &mut counters.depth[job.priority.index()];
        invariant!(*d > 0, "no job is counted waiting at {:?}", job.priority);
        *d = d.saturating_sub(1);
    }
}

fn truncate_utf8(mut s: String, bytes_max: usize) -> String {
    if s.len() > bytes_max {
        let mut cut = bytes_max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

impl Queue {
    pub(crate) fn new(bounds: Bounds) -> Self {
        Queue {
            bounds,
            active: HashMap::new(),
            due: Default::default(),
            scheduled: BTreeSet::new(),
            leases: BTreeSet::new(),
            idem: HashMap::new(),
            paused: [false; 3],
            history: VecDeque::new(),
            symstats: HashMap::new(),
            symstats_unstored: HashSet::new(),
            stats_through: 0,
            counters: Counters::default(),
            next_id: 1,
            next_finish_seq: 1,
            next_event_seq: 1,
            first_event_seq: 1,
            changes: Changes::default(),
        }
    }

    // ---- restoring from disk (recovery) ------------------------------------

    /// Adds a job read from disk. A job left running has no lease here: it
    /// is returned to the queue (or killed) by [`Queue::recover_interrupted`].
    pub(crate) fn restore_job(&mut self, job: Job, finish_seq: Option<u64>, now: u64) {
        self.counters.enter(&job);
        self.next_id = self.next_id.max(job.id + 1);
        if job.state.is_terminal() {
            let seq = finish_seq.unwrap_or(0);
            if seq > self.stats_through {
                self.add_to_symbol_stats(&job);
            }
            self.history.push_back(Finished {
                seq,
                id: job.id,
                finished_ms: job.finished_ms.unwrap_or(0),
                state: job.state,
            });
            return;
        }
        if let Some(key) = &job.idempotency_key {
            self.idem.insert(key.clone(), job.id);
        }
        if job.state != JobState::Running {
            self.make_claimable(&job, now);
        }
        self.active.insert(job.id, job);
    }

    /// Starts a restore with the stored aggregates and the last history
    /// sequence number they cover: [`Queue::restore_job`] adds the finished
    /// jobs after it.
    pub(crate) fn restore_symbol_stats(
        &mut self,
        stored: impl IntoIterator<Item = (Symbol, SymbolStats)>,
        through: u64,
    ) {
        self.symstats.extend(stored);
        self.stats_through = through;
    }

    /// Ends a restore: history in order, the stored scalars (ids never go
    /// back), the event log's extent (`None`: empty). Returns the counters
    /// the scan found, which are now the queue's.
    pub(crate) fn restore_end(&mut self, stored: &Meta, events: Option<(u64, u64)>) -> Counters {
        self.history
            .make_contiguous()
            .sort_unstable_by_key(|f| f.seq);
        self.paused = stored.paused;
        self.next_id = self.next_id.max(stored.next_id);
        let max_seq = self.history.back().map_or(0, |f| f.seq);
        self.next_finish_seq = stored.next_finish_seq.max(max_seq + 1);
        if let Some((first, last)) = events {
            self.first_event_seq = first;
            self.next_event_seq = last + 1;
        }
        self.counters
    }

    /// Returns the jobs a dead process left running to the queue, or ends
    /// them dead when their attempts are used up; returns (requeued, dead).
    pub(crate) fn recover_interrupted(&mut self, now: u64) -> (u64, u64) {
        let mut running: Vec<JobId> = self
            .active
            .values()
            .filter(|j| j.state == JobState::Running)
            .map(|j| j.id)
            .collect();
        running.sort_unstable();
        let (mut requeued, mut dead) = (0, 0);
        for id in running {
            let Some(job) = self.active.get_mut(&id) else {
                continue;
            };
            let attempt = job.attempts;
            job.lease_expires_ms = None;
            job.last_error = Some(format!("the process ended during attempt {attempt}"));
            if attempt >= job.attempts_max {
                self.finish(id, JobState::Dead, now, None);
                dead += 1;
            } else {
                self.requeue(id, now);
                requeued += 1;
            }
        }
        (requeued, dead)
    }

    // ---- reads ---------------------------------------------------------------

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    pub(crate) fn paused(&self) -> &[bool; 3] {
        &self.paused
    }

    /// A symbol's aggregates over finished jobs.
    pub(crate) fn symbol_stats(&self, symbol: &Symbol) -> SymbolStats {
        self.symstats.get(symbol).copied().unwrap_or_default()
    }

    /// An unfinished job.
    pub(crate) fn job(&self, id: JobId) -> Option<&Job> {
        self.active.get(&id)
    }

    /// The scalars the meta record holds.
    pub(crate) fn meta(&self) -> Meta {
        Meta {
            next_id: self.next_id,
            next_finish_seq: self.next_finish_seq,
            counters: self.counters,
            paused: self.paused,
            stats_through: self.stats_through,
        }
    }

    /// The next job id and event sequence number.
    pub(crate) fn watermark(&self) -> Watermark {
        Watermark {
            next_job_id: self.next_id,
            next_event_seq: self.next_event_seq,
        }
    }

    /// The most recent finished jobs, newest first.
    pub(crate) fn history(&self, limit: usize) -> Vec<JobId> {
        self.history
            .iter()
            .rev()
            .take(limit)
            .map(|f| f.id)
            .collect()
    }

    /// What changed since the last call.
    pub(crate) fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Stores every symbol's aggregates in this group, covering every job
    /// finished so far.
    fn fold_symbol_stats(&mut self) {
        self.changes
            .symbol_stats
            .extend(self.symstats_unstored.drain());
        self.stats_through = self.next_finish_seq - 1;
        self.changes.meta = true;
    }

    /// Whether housekeeping has work at `now`: an expired lease, or history
    /// past its bounds.
    pub(crate) fn housekeeping_due(&self, now: u64) -> bool {
        self.leases.first().is_some_and(|&(exp, _)| exp <= now) || self.history_over_limit(now)
    }

    // ---- transitions ---------------------------------------------------------

    /// The housekeeping every group starts with: expired leases, history
    /// and event log past their bounds.
    pub(crate) fn tick(&mut self, now: u64) {
        self.expire_leases(now);
        self.trim_history(now, None);
        self.trim_events();
    }

    pub(crate) fn enqueue(&mut self, jobs: Vec<NewJob>, now: u64) -> Result<Vec<Enqueued>> {
        let mut fresh_keys = HashSet::new();
        let created = jobs
            .iter()
            .filter(|j| match &j.idempotency_key {
                Some(k) => !self.idem.contains_key(k) && fresh_keys.insert(k.as_str()),
                None => true,
            })
            .count() as u64;
        let unfinished = self.active.len() as u64;
        if unfinished + created > self.bounds.queue_depth_max {
            return Err(StoreError::QueueFull {
                depth: unfinished,
                max: self.bounds.queue_depth_max,
            });
        }
        let mut out = Vec::with_capacity(jobs.len());
        for new in jobs {
            if let Some(id) = new.idempotency_key.as_ref().and_then(|k| self.idem.get(k)) {
                out.push(Enqueued::Existing(*id));
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let job = Job {
                id,
                kind: new.kind,
                payload: Arc::from(new.payload),
                symbols: new.symbols,
                priority: new.priority,
                state: JobState::Queued,
                attempts: 0,
                attempts_max: new.attempts_max.unwrap_or(self.bounds.attempts_max),
                run_at_ms: new.run_at_ms.unwrap_or(now),
                enqueued_ms: now,
                started_ms: None,
                finished_ms: None,
                lease_expires_ms: None,
                last_error: None,
                idempotency_key: new.idempotency_key,
            };
            if let Some(k) = &job.idempotency_key {
                self.idem.insert(k.clone(), id);
            }
            self.counters.enter(&job);
            self.make_claimable(&job, now);
            self.active.insert(id, job);
            self.changes.jobs.insert(id);
            self.changes.created.push(id);
            out.push(Enqueued::Created(id));
        }
        Ok(out)
    }

    /// Files a waiting job under `due` or `scheduled` by its `run_at_ms`.
    fn make_claimable(&mut self, job: &Job, now: u64) {
        if job.run_at_ms > now {
            self.scheduled.insert((job.run_at_ms, job.id));
        } else {
            self.due[job.priority.index()].insert(job.id);
        }
    }

    pub(crate) fn claim(&mut self, max: usize, lease_ms: u64, now: u64) -> Vec<Lease> {
        while let Some(&(run_at, id)) = self.scheduled.first() {
            if run_at > now {
                break;
            }
            self.scheduled.pop_first();
            if let Some(job) = self.active.get(&id) {
                self.due[job.priority.index()].insert(id);
            }
        }
        let mut out = Vec::new();
        for p in Priority::ALL {
            if self.paused[p.index()] {
                continue;
            }
            while out.len() < max {
                let Some(id) = self.due[p.index()].pop_first() else {
                    break;
                };
                let Some(job) = self.active.get_mut(&id) else {
                    continue;
                };
                transition(&mut self.counters, job, JobState::Running);
                job.attempts += 1;
                job.started_ms = Some(now);
                let expires_ms = now.saturating_add(lease_ms);
                job.lease_expires_ms = Some(expires_ms);
                self.leases.insert((expires_ms, id));
                self.changes.jobs.insert(id);
                out.push(Lease {
                    job: job.clone(),
                    token: LeaseToken {
                        job_id: id,
                        attempt: job.attempts,
                    },
                    expires_ms,
                });
            }
        }
        out
    }

    /// The running job `token` holds, or `LeaseLost`.
    fn leased(&mut self, token: LeaseToken) -> Result<&mut Job> {
        match self.active.get_mut(&token.job_id) {
            Some(job) if job.state == JobState::Running && job.attempts == token.attempt => Ok(job),
            _ => Err(StoreError::LeaseLost {
                job_id: token.job_id,
                attempt: token.attempt,
            }),
        }
    }

    /// `Ok` while `token`'s lease is held.
    pub(crate) fn holds(&mut self, token: LeaseToken) -> Result<()> {
        self.leased(token).map(drop)
    }

    pub(crate) fn heartbeat(&mut self, token: LeaseToken, extend_ms: u64, now: u64) -> Result<u64> {
        let job = self.leased(token)?;
        let old = job.lease_expires_ms.unwrap_or(0);
        let new = now.saturating_add(extend_ms);
        job.lease_expires_ms = Some(new);
        self.leases.remove(&(old, token.job_id));
        self.leases.insert((new, token.job_id));
        self.changes.jobs.insert(token.job_id);
        Ok(new)
    }

    /// Marks a held job succeeded (its results are the writer's).
    pub(crate) fn complete(&mut self, token: LeaseToken, now: u64) -> Result<()> {
        self.holds(token)?;
        self.finish(token.job_id, JobState::Succeeded, now, None);
        Ok(())
    }

    pub(crate) fn fail(
        &mut self,
        token: LeaseToken,
        error: String,
        permanent: bool,
        now: u64,
    ) -> Result<FailOutcome> {
        let error = truncate_utf8(error, ERROR_BYTES_MAX);
        let job = self.leased(token)?;
        let (id, exhausted) = (job.id, permanent || job.attempts >= job.attempts_max);
        job.last_error = Some(error);
        let old = job.lease_expires_ms.take().unwrap_or(0);
        self.leases.remove(&(old, id));
        if exhausted {
            self.finish(id, JobState::Dead, now, None);
            return Ok(FailOutcome::Dead);
        }
        let run_at_ms = now.saturating_add(self.bounds.retry.delay_ms(id, token.attempt));
        if let Some(job) = self.active.get_mut(&id) {
            transition(&mut self.counters, job, JobState::Failed);
            job.run_at_ms = run_at_ms;
        }
        if let Some(job) = self.active.get(&id).cloned() {
            self.append_event(&job, JobState::Failed, now);
        }
        self.scheduled.insert((run_at_ms, id));
        self.changes.jobs.insert(id);
        Ok(FailOutcome::Retry { run_at_ms })
    }

    /// Cancels an unfinished job; `None` when `id` is not an unfinished job
    /// (the writer looks for a finished one on disk).
    pub(crate) fn cancel(&mut self, id: JobId, now: u64) -> Option<CancelOutcome> {
        match self.active.get(&id)?.state {
            JobState::Running => Some(CancelOutcome::NotCancellable(JobState::Running)),
            _ => {
                self.finish(id, JobState::Cancelled, now, None);
                Some(CancelOutcome::Cancelled)
            }
        }
    }

    pub(crate) fn set_paused(&mut self, priority: Priority, paused: bool) {
        self.paused[priority.index()] = paused;
        self.changes.meta = true;
    }

    /// Returns expired leases' jobs to the queue, or kills them when their
    /// attempts are used up.
    fn expire_leases(&mut self, now: u64) {
        while let Some(&(expires, id)) = self.leases.first() {
            if expires > now {
                break;
            }
            self.leases.pop_first();
            let Some(job) = self.active.get_mut(&id) else {
                continue;
            };
            job.lease_expires_ms = None;
            job.last_error = Some(format!("lease expired during attempt {}", job.attempts));
            let exhausted = job.attempts >= job.attempts_max;
            if exhausted {
                self.finish(id, JobState::Dead, now, None);
            } else {
                self.requeue(id, now);
            }
        }
    }

    /// Puts an unfinished job back in the queue, due now.
    fn requeue(&mut self, id: JobId, now: u64) {
        let Some(mut job) = self.active.remove(&id) else {
            return;
        };
        transition(&mut self.counters, &mut job, JobState::Queued);
        job.run_at_ms = now;
        job.lease_expires_ms = None;
        self.make_claimable(&job, now);
        self.active.insert(id, job);
        self.changes.jobs.insert(id);
    }

    /// Moves an unfinished job to a terminal state: out of every queue, into
    /// history and the per-symbol aggregates, its record written now.
    fn finish(&mut self, id: JobId, state: JobState, now: u64, error: Option<String>) {
        let Some(mut job) = self.active.remove(&id) else {
            return;
        };
        self.due[job.priority.index()].remove(&id);
        self.scheduled.remove(&(job.run_at_ms, id));
        if let Some(exp) = job.lease_expires_ms.take() {
            self.leases.remove(&(exp, id));
        }
        if let Some(k) = &job.idempotency_key
            && self.idem.get(k) == Some(&id)
        {
            self.idem.remove(k);
        }
        transition(&mut self.counters, &mut job, state);
        job.finished_ms = Some(now);
        if error.is_some() {
            job.last_error = error;
        }
        self.add_to_symbol_stats(&job);
        self.append_event(&job, state, now);
        let seq = self.next_finish_seq;
        self.next_finish_seq += 1;
        self.history.push_back(Finished {
            seq,
            id,
            finished_ms: now,
            state,
        });
        self.changes.jobs.remove(&id);
        self.changes.finished.push((job, seq));
    }

    /// Counts a finished job in its symbols' aggregates (not stored yet):
    /// one job, its attempts that did not succeed, the run time of its last
    /// attempt.
    fn add_to_symbol_stats(&mut self, job: &Job) {
        let failures =
            u64::from(job.attempts).saturating_sub(u64::from(job.state == JobState::Succeeded));
        let duration_ms = match (job.started_ms, job.finished_ms) {
            (Some(s), Some(f)) => f.saturating_sub(s),
            _ => 0,
        };
        for s in &job.symbols {
            let st = self.symstats.entry(s.clone()).or_default();
            st.jobs = st.jobs.saturating_add(1);
            st.failures = st.failures.saturating_add(failures);
            st.duration_ms_total = st.duration_ms_total.saturating_add(duration_ms);
            self.symstats_unstored.insert(s.clone());
        }
    }

    /// Appends an outcome to the event log.
    fn append_event(&mut self, job: &Job, state: JobState, now: u64) {
        let seq = self.next_event_seq;
        self.next_event_seq += 1;
        self.changes.events.push(Event::of(seq, job, state, now));
    }

    /// Drops the oldest events beyond `events_max` (at most
    /// `TRIM_PER_GROUP_MAX` per group; the newest is always kept, so
    /// sequence numbers continue across a restart).
    fn trim_events(&mut self) {
        let keep = self.bounds.events_max.max(1);
        let mut removed = 0;
        while self.next_event_seq - self.first_event_seq > keep && removed < TRIM_PER_GROUP_MAX {
            self.changes.events_removed.push(self.first_event_seq);
            self.first_event_seq += 1;
            removed += 1;
        }
    }

    fn history_over_limit(&self, now: u64) -> bool {
        self.history.front().is_some_and(|f| {
            self.history.len() as u64 > self.bounds.history_max
                || self
                    .bounds
                    .retention_ms
                    .is_some_and(|r| f.finished_ms.saturating_add(r) <= now)
        })
    }

    /// Drops the oldest finished jobs beyond `history_max`, past retention, or
    /// (for an explicit purge) older than `older_than_ms`. Returns how many.
    pub(crate) fn trim_history(&mut self, now: u64, older_than_ms: Option<u64>) -> u64 {
        let mut removed = 0;
        let bounded = older_than_ms.is_none();
        while let Some(&f) = self.history.front() {
            if bounded && removed >= TRIM_PER_GROUP_MAX as u64 {
                break;
            }
            let age_limit = older_than_ms.or(self.bounds.retention_ms);
            let too_old = age_limit.is_some_and(|a| f.finished_ms.saturating_add(a) <= now);
            if !(self.history.len() as u64 > self.bounds.history_max || too_old) {
                break;
            }
            if f.seq > self.stats_through {
                self.fold_symbol_stats();
            }
            self.history.pop_front();
            let count = &mut self.counters.by_state[f.state.index()];
            invariant!(
                *count > 0,
                "no finished job is counted {}",
                f.state.as_str()
            );
            *count = count.saturating_sub(1);
            self.changes.removed.push(f.id);
            removed += 1;
        }
        removed
    }

    // ---- integrity ---------------------------------------------------------------

    /// Every way the queue disagrees with the jobs on disk (`disk`: each
    /// job's state there) and with a count of them (`scanned`).
    pub(crate) fn problems(
        &self,
        disk: &BTreeMap<JobId, JobState>,
        scanned: &Counters,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let mut terminal = HashSet::new();
        for (&id, &state) in disk {
            if state.is_terminal() {
                terminal.insert(id);
            } else if !self.active.contains_key(&id) {
                problems.push(format!(
                    "job {id} is {} on disk but not in the queue",
                    state.as_str()
                ));
            }
            if let Some(active) = self.active.get(&id)
                && active.state != state
            {
                problems.push(format!(
                    "job {id} is {} on disk but {} in memory",
                    state.as_str(),
                    active.state.as_str()
                ));
            }
        }
        if *scanned != self.counters {
            problems.push(format!(
                "counters {:?} but a scan finds {:?}",
                self.counters, scanned
            ));
        }
        let in_history: HashSet<JobId> = self.history.iter().map(|f| f.id).collect();
        let mut missing: Vec<&JobId> = in_history.difference(&terminal).collect();
        missing.sort_unstable();
        for id in missing {
            problems.push(format!(
                "history lists job {id}, which is not a finished job on disk"
            ));
        }
        let mut unlisted: Vec<&JobId> = terminal.difference(&in_history).collect();
        unlisted.sort_unstable();
        for id in unlisted {
            problems.push(format!("finished job {id} is missing from history"));
        }
        let mut ids: Vec<&JobId> = self.active.keys().collect();
        ids.sort_unstable();
        for id in ids {
            let job = &self.active[id];
            let queued = self.due[job.priority.index()].contains(id)
                || self.scheduled.contains(&(job.run_at_ms, *id));
            let leased = job
                .lease_expires_ms
                .is_some_and(|e| self.leases.contains(&(e, *id)));
            let ok = match job.state {
                JobState::Queued | JobState::Failed => queued && !leased,
                JobState::Running => leased && !queued,
                _ => false,
            };
            if !ok {
                problems.push(format!(
                    "job {id} ({}) is filed in the wrong queues",
                    job.state.as_str()
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_000_000;

    fn queue() -> Queue {
        Queue::new(Bounds {
            attempts_max: 2,
            retry: RetryPolicy {
                base_ms: 100,
                cap_ms: 1_000,
            },
            queue_depth_max: 3,
            history_max: 2,
            retention_ms: None,
            events_max: 2,
        })
    }

    fn job(name: &str) -> NewJob {
        NewJob::new("compute", name.as_bytes().to_vec())
    }

    /// What the disk would hold after every change so far.
    fn disk(q: &Queue, finished: &BTreeMap<JobId, JobState>) -> BTreeMap<JobId, JobState> {
        let mut d = finished.clone();
        for (id, j) in &q.active {
            d.insert(*id, j.state);
        }
        d
    }

    #[test]
    fn a_job_goes_from_queued_to_running_to_succeeded_with_its_changes() {
        let mut q = queue();
        let id = q.enqueue(vec![job("a")], T0).expect("enqueue")[0].id();
        let c = q.take_changes();
        assert!(c.jobs.contains(&id) && c.events.is_empty());
        let lease = q.claim(5, 100, T0).remove(0);
        assert_eq!(
            (lease.job.state, lease.expires_ms),
            (JobState::Running, T0 + 100)
        );
        q.complete(lease.token, T0 + 5).expect("complete");
        let c = q.take_changes();
        assert_eq!(c.finished.len(), 1);
        assert_eq!(c.finished[0].0.state, JobState::Succeeded);
        assert_eq!(c.events[0].state, JobState::Succeeded);
        assert!(
            !c.jobs.contains(&id),
            "a finished record replaces the dirty one"
        );
        assert_eq!(q.counters().by_state, [0, 0, 1, 0, 0, 0]);
        assert!(q.take_changes().is_empty());
    }

    #[test]
    fn the_depth_bound_counts_new_keys_once() {
        let mut q = queue();
        let keyed = |k: &str| job(k).idempotency_key(k);
        let out = q
            .enqueue(vec![keyed("x"), keyed("x"), job("y"), job("z")], T0)
            .expect("three new jobs fit");
        assert_eq!(out[1], Enqueued::Existing(out[0].id()));
        assert!(matches!(
            q.enqueue(vec![job("w")], T0),
            Err(StoreError::QueueFull { depth: 3, max: 3 })
        ));
        assert_eq!(
            q.enqueue(vec![keyed("x")], T0).expect("known key")[0],
            Enqueued::Existing(out[0].id())
        );
    }

    #[test]
    fn expiry_and_failures_retry_then_kill_and_the_queue_agrees_with_its_disk() {
        let mut q = queue();
        let mut finished = BTreeMap::new();
        let id = q.enqueue(vec![job("a")], T0).expect("enqueue")[0].id();
        q.claim(1, 100, T0);
        q.tick(T0 + 100);
        let j = q.job(id).expect("unfinished");
        assert_eq!((j.state, j.attempts), (JobState::Queued, 1));
        let lease = q.claim(1, 100, T0 + 100).remove(0);
        assert_eq!(
            q.fail(lease.token, "boom".into(), false, T0 + 150)
                .expect("fail"),
            FailOutcome::Dead,
            "two attempts used"
        );
        for (job, _) in q.take_changes().finished {
            finished.insert(job.id, job.state);
        }
        assert!(q.problems(&disk(&q, &finished), q.counters()).is_empty());
        assert!(matches!(
            q.heartbeat(lease.token, 10, T0 + 160),
            Err(StoreError::LeaseLost { .. })
        ));
    }

    #[test]
    fn history_and_events_stay_within_their_bounds() {
        let mut q = queue();
        for i in 0..3 {
            let id = q.enqueue(vec![job(&i.to_string())], T0).expect("enqueue")[0].id();
            assert_eq!(q.cancel(id, T0), Some(CancelOutcome::Cancelled));
        }
        q.tick(T0);
        let c = q.take_changes();
        assert_eq!(c.removed, vec![1], "history_max = 2");
        assert_eq!(c.events_removed, vec![1], "events_max = 2");
        assert_eq!(q.history(10), vec![3, 2]);
        assert_eq!(q.counters().by_state[JobState::Cancelled.index()], 2);
        assert_eq!(q.cancel(1, T0), None, "not an unfinished job");
    }

    #[test]
    fn aggregates_are_stored_only_before_a_purge_removes_a_job_they_miss() {
        let mut q = queue();
        let a = Symbol::new("A").expect("symbol");
        for i in 0..2 {
            let id = q
                .enqueue(vec![job(&i.to_string()).symbols(vec![a.clone()])], T0)
                .expect("enqueue")[0]
                .id();
            q.cancel(id, T0);
        }
        q.tick(T0);
        let c = q.take_changes();
        assert!(c.removed.is_empty() && c.symbol_stats.is_empty());
        assert_eq!((q.symbol_stats(&a).jobs, q.meta().stats_through), (2, 0));
        // A third finished job: history_max = 2 purges the first, which the
        // stored aggregates do not cover yet.
        let id = q
            .enqueue(vec![job("2").symbols(vec![a.clone()])], T0)
            .expect("enqueue")[0]
            .id();
        q.cancel(id, T0);
        q.tick(T0);
        let c = q.take_changes();
        assert_eq!(c.removed, vec![1]);
        assert_eq!(c.symbol_stats, HashSet::from([a.clone()]));
        assert!(c.meta);
        assert_eq!((q.symbol_stats(&a).jobs, q.meta().stats_through), (3, 3));
        // The next purge removes a covered job: nothing to store.
        let id = q.enqueue(vec![job("3")], T0).expect("enqueue")[0].id();
        q.cancel(id, T0);
        q.tick(T0);
        let c = q.take_changes();
        assert_eq!((c.removed, c.symbol_stats.len()), (vec![2], 0));
    }

    #[test]
    fn a_restored_queue_requeues_what_was_running() {
        let mut q = queue();
        q.enqueue(vec![job("a"), job("b")], T0).expect("enqueue");
        let leases = q.claim(2, 100, T0);
        let mut r = queue();
        for l in leases {
            let mut j = l.job;
            if j.id == 2 {
                j.attempts = 2;
            }
            r.restore_job(j, None, T0);
        }
        r.restore_end(&Meta::default(), None);
        assert_eq!(r.recover_interrupted(T0 + 1), (1, 1));
        assert_eq!(r.claim(5, 100, T0 + 1)[0].job.id, 1);
        assert_eq!(r.meta().next_id, 3);
    }
}
