//! The single writer thread. It owns every mutation: callers send an [`Op`]
//! over a bounded channel; the writer takes a group of ops, applies them to
//! the in-memory job model ([`queue::Queue`]) and to a set of pending sled
//! writes, and commits the group: value-log payloads made durable as the
//! durability mode requires, then every sled write of the group as one
//! atomic sled batch. The [`durability::Pipeline`] then answers the group's
//! callers (after the fsync in `Sync` mode).
//!
//! The in-memory model is rebuilt from sled at open by
//! [`recovery`](Writer::recover). It can only diverge from disk when a
//! commit fails, and then the store is poisoned.
//!
//! - `queue`: the job state machine;
//! - `durability`: what "acknowledged" means;
//! - `bars`: staging and applying bar ingests;
//! - `frames`: storing frames (replace, append, remove);
//! - `maintenance`: value-log compaction and the integrity check;
//! - `recovery`: rebuilding it all at open.

mod bars;
mod durability;
mod frames;
mod maintenance;
pub(crate) mod queue;
pub(crate) mod recovery;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rkyv::util::AlignedVec;

pub(crate) use bars::BarPlan;
pub(crate) use frames::EncodedFrame;
use kiln_core::CheckReport;
pub use maintenance::CompactReport;
pub use recovery::RecoveryReport;

use kiln_core::{
    CancelOutcome, Coverage, Enqueued, FailOutcome, FrameKey, JobId, Lease, LeaseToken, NewJob,
    Priority, Result, StoreError, Symbol, SymbolStats,
};

use crate::bars::VersionRecord;
use crate::config::StoreConfig;
use crate::disk::Disk;
use crate::keys::u64_key;
use crate::record::{
    COMMIT_KEY, IndexEntry, META_KEY, decode_job, encode_event, encode_job, encode_job_input,
    encode_symbol_stats,
};
use crate::shared::{FRAME_ENDS_MAX, Poison, Shared};
use crate::space::{Space, Spaces, Writes};
use crate::vlog::Vlog;
use durability::Pipeline;
use queue::{Bounds, Queue};

/// One job's completion with its results.
pub(crate) struct EncodedCompletion {
    pub token: LeaseToken,
    pub results: Vec<EncodedFrame>,
}

/// An operation for the writer.
pub(crate) enum Op {
    /// Applied in a group; answered once the group has committed.
    Apply(Apply),
    /// Runs after its group has committed, and ends the group.
    After(After),
    /// Stops the writer after this group.
    Shutdown,
}

/// An operation applied in a group, with the channel its answer goes back on.
pub(crate) enum Apply {
    Enqueue {
        jobs: Vec<NewJob>,
        reply: Sender<Result<Vec<Enqueued>>>,
    },
    Claim {
        max: usize,
        lease_ms: u64,
        reply: Sender<Result<Vec<Lease>>>,
    },
    Heartbeat {
        token: LeaseToken,
        extend_ms: u64,
        reply: Sender<Result<u64>>,
    },
    Complete {
        items: Vec<EncodedCompletion>,
        reply: Sender<Result<Vec<Result<()>>>>,
    },
    /// Stores a running job's finished part (its lease still held).
    Checkpoint {
        item: EncodedCompletion,
        reply: Sender<Result<()>>,
    },
    Fail {
        token: LeaseToken,
        error: String,
        /// No retry: the job is dead at once (bad input, not bad luck).
        permanent: bool,
        reply: Sender<Result<FailOutcome>>,
    },
    Cancel {
        id: JobId,
        reply: Sender<Result<CancelOutcome>>,
    },
    SetPaused {
        priority: Priority,
        paused: bool,
        reply: Sender<Result<()>>,
    },
    Purge {
        older_than_ms: u64,
        reply: Sender<Result<u64>>,
    },
    History {
        limit: usize,
        reply: Sender<Result<Vec<JobId>>>,
    },
    /// A symbol's aggregates (the stored ones lag: see `queue`).
    SymbolStats {
        symbol: Symbol,
        reply: Sender<Result<SymbolStats>>,
    },
    /// Appends bar chunks to the value log, unindexed, for an ingest session.
    StageBars {
        payloads: Vec<AlignedVec>,
        reply: Sender<Result<Vec<IndexEntry>>>,
    },
    /// An ingest session ended without indexing these staged records.
    UnstageBars { entries: Vec<IndexEntry> },
    /// Applies an ingest's plans and enqueues the jobs they imply, all or
    /// none.
    IngestBars {
        plans: Vec<BarPlan>,
        jobs: Vec<NewJob>,
        reply: Sender<Result<Vec<Enqueued>>>,
    },
    /// Test support: the group's commit fails as a write (or, with `fsync`,
    /// an fsync) would.
    #[cfg(feature = "test-hooks")]
    FailNextCommit { fsync: bool },
    /// Test support: the value-log append after the next `n` fails as on a
    /// full disk.
    #[cfg(feature = "test-hooks")]
    FailAppend { n: u32 },
    /// Test support: while `paused`, no tails are folded.
    #[cfg(feature = "test-hooks")]
    PauseFolds { paused: bool },
}

/// An operation that runs after its group's commit.
pub(crate) enum After {
    Sync {
        reply: Sender<Result<()>>,
    },
    Compact {
        reply: Sender<Result<CompactReport>>,
    },
    Check {
        reply: Sender<Result<CheckReport>>,
    },
    /// Test support: see [`Writer::lose_unsynced`].
    #[cfg(feature = "test-hooks")]
    PowerLoss {
        truncate: bool,
        reply: Sender<Result<()>>,
    },
}

/// Answers `reply` with `StoreError::Poisoned` (the store refuses writes).
fn refuse<T>(reply: Sender<Result<T>>, poison: &Poison) {
    // The caller may have gone away; nothing to do then.
    let _ = reply.send(Err(poison.error()));
}

impl Op {
    /// Answers the op with `StoreError::Poisoned`.
    fn reject(self, poison: &Poison) {
        match self {
            Op::Apply(op) => match op {
                Apply::Enqueue { reply, .. } => refuse(reply, poison),
                Apply::Claim { reply, .. } => refuse(reply, poison),
                Apply::Heartbeat { reply, .. } => refuse(reply, poison),
                Apply::Complete { reply, .. } => refuse(reply, poison),
                Apply::Fail { reply, .. } => refuse(reply, poison),
                Apply::Cancel { reply, .. } => refuse(reply, poison),
                Apply::Checkpoint { reply, .. } | Apply::SetPaused { reply, .. } => {
                    refuse(reply, poison)
                }
                Apply::IngestBars { reply, .. } => refuse(reply, poison),
                Apply::Purge { reply, .. } => refuse(reply, poison),
                Apply::History { reply, .. } => refuse(reply, poison),
                Apply::SymbolStats { reply, .. } => refuse(reply, poison),
                Apply::StageBars { reply, .. } => refuse(reply, poison),
                Apply::UnstageBars { .. } => {}
                #[cfg(feature = "test-hooks")]
                Apply::FailNextCommit { .. }
                | Apply::FailAppend { .. }
                | Apply::PauseFolds { .. } => {}
            },
            Op::After(op) => match op {
                After::Sync { reply } => refuse(reply, poison),
                After::Compact { reply } => refuse(reply, poison),
                After::Check { reply } => refuse(reply, poison),
                #[cfg(feature = "test-hooks")]
                After::PowerLoss { reply, .. } => refuse(reply, poison),
            },
            Op::Shutdown => {}
        }
    }
}

/// An answer held back until the group it belongs to has committed.
pub(crate) trait Ack: Send {
    fn send(self: Box<Self>, commit_failure: Option<&Poison>);
}

struct Reply<T> {
    tx: Sender<Result<T>>,
    value: Result<T>,
}

impl<T: Send> Ack for Reply<T> {
    fn send(self: Box<Self>, commit_failure: Option<&Poison>) {
        let value = match commit_failure {
            None => self.value,
            Some(poison) => Err(poison.error()),
        };
        // The caller may have gone away; nothing to do then.
        let _ = self.tx.send(value);
    }
}

fn hold<T: Send + 'static>(acks: &mut Vec<Box<dyn Ack>>, tx: Sender<Result<T>>, value: Result<T>) {
    acks.push(Box::new(Reply { tx, value }));
}

/// The writer's state.
pub(crate) struct Writer {
    config: StoreConfig,
    disk: Arc<Disk>,
    spaces: Spaces,
    vlog: Vlog,
    shared: Arc<Shared>,
    queue: Queue,
    pipeline: Pipeline,
    /// This group's pending sled writes.
    writes: Writes,
    /// The meta record changed without a record that the queue reports (a
    /// synced mark to record, counters repaired at open).
    meta_dirty: bool,
    /// A write-path failure during apply (value-log append): fails the group.
    failure: Option<StoreError>,
    /// Automatic compaction waits until then (ms) after giving up.
    compact_retry_at: u64,
    /// Compaction between groups waits until then (see
    /// `compact_under_load`).
    busy_compact_at: Instant,
    /// The next commit fsyncs the value log whatever the mode (bar chunks
    /// and compaction moves cannot be recomputed).
    vlog_sync_required: bool,
    /// Data versions this group writes, published once it has committed.
    new_versions: Vec<(Symbol, VersionRecord)>,
    /// Frames' ends this group changes (`None`: unknown, read them),
    /// published once it has committed.
    new_ends: Vec<(FrameKey, Option<Coverage>)>,
    /// Frames whose tails are due for a fold (see `frames`).
    fold_queue: BTreeSet<FrameKey>,
    /// Frames' ends and tail slots, as appends find and change them.
    tails: HashMap<FrameKey, frames::TailState>,
    /// Test support: the next commit fails.
    #[cfg(feature = "test-hooks")]
    fail_next_commit: Option<bool>,
    /// Test support: no folds while set.
    #[cfg(feature = "test-hooks")]
    folds_paused: bool,
    /// Test support: a power loss was simulated; exit without a final sync.
    #[cfg(feature = "test-hooks")]
    power_lost: bool,
}

impl Writer {
    /// A writer over an opened store, with an empty job model (recovery
    /// fills it).
    pub(crate) fn new(
        config: StoreConfig,
        disk: Arc<Disk>,
        spaces: Spaces,
        vlog: Vlog,
        shared: Arc<Shared>,
    ) -> Writer {
        Writer {
            queue: Queue::new(Bounds::of(&config)),
            pipeline: Pipeline::new(config.durability),
            config,
            disk,
            spaces,
            vlog,
            shared,
            writes: Writes::default(),
            meta_dirty: false,
            failure: None,
            compact_retry_at: 0,
            busy_compact_at: Instant::now() + maintenance::BUSY_COMPACT_AFTER,
            vlog_sync_required: false,
            new_versions: Vec::new(),
            new_ends: Vec::new(),
            fold_queue: BTreeSet::new(),
            tails: HashMap::new(),
            #[cfg(feature = "test-hooks")]
            fail_next_commit: None,
            #[cfg(feature = "test-hooks")]
            folds_paused: false,
            #[cfg(feature = "test-hooks")]
            power_lost: false,
        }
    }

    /// After a flush outside the pipeline (recovery, compaction): readers
    /// may see everything committed.
    pub(crate) fn reveal(&self) {
        self.shared.reveal(self.queue.watermark());
    }

    /// What the job model counts now (published for lock-free reads).
    pub(crate) fn publish(&self) {
        self.shared.publish(
            self.queue.counters(),
            self.queue.paused(),
            self.queue.watermark(),
        );
    }

    /// The writer loop: runs until `Shutdown` or until every sender is gone.
    pub(crate) fn run(mut self, rx: Receiver<Op>) {
        let tick = Duration::from_millis(self.config.tick_ms.max(1));
        self.pipeline
            .start(&self.disk, &self.shared, self.vlog.dir(), tick);
        // Callers answered by the last group, who will likely send again.
        let mut expected = 1;
        loop {
            let first = match rx.recv_timeout(tick) {
                Ok(op) => op,
                Err(RecvTimeoutError::Timeout) => {
                    self.idle();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let ops = self.gather(first, &rx, &mut expected);
            if self.group(ops) {
                break;
            }
            self.compact_under_load();
        }
        self.shut_down();
    }

    /// Collects a group: what is already waiting, plus, when the last group
    /// had more callers than are here yet, up to `group_linger_us` for the
    /// rest of them (each caller sends its next op microseconds after its
    /// answer, usually just after the writer has started the next group).
    /// A lone caller (expected = 1) never waits.
    fn gather(&self, first: Op, rx: &Receiver<Op>, expected: &mut usize) -> Vec<Op> {
        let deadline = Instant::now() + Duration::from_micros(self.config.group_linger_us);
        let mut ops = vec![first];
        while ops.len() < self.config.group_ops_max && matches!(ops.last(), Some(Op::Apply(_))) {
            let next = match rx.try_recv() {
                Ok(op) => Some(op),
                Err(_) if ops.len() < *expected => rx.recv_deadline(deadline).ok(),
                Err(_) => None,
            };
            match next {
                Some(op) => ops.push(op),
                None => break,
            }
        }
        *expected = ops.len();
        ops
    }

    /// The flusher stops; in `Relaxed` mode what was acknowledged goes to
    /// disk (even when poisoned by a failed write: no commit is possible
    /// then, but what was acknowledged before the failure still goes to disk
    /// if it can; never after a failed fsync, whose retry would report
    /// success for pages the kernel already dropped); the syncer answers
    /// what it holds.
    fn shut_down(&mut self) {
        self.pipeline.stop_flusher();
        #[cfg(feature = "test-hooks")]
        let power_lost = self.power_lost;
        #[cfg(not(feature = "test-hooks"))]
        let power_lost = false;
        let poisoned = self.shared.poisoned();
        let fsync_failed = poisoned.as_ref().is_some_and(|p| p.fatal);
        if !self.pipeline.acknowledged_is_durable() && !power_lost && !fsync_failed {
            let flushed = if poisoned.is_none() {
                self.sync_now()
            } else {
                self.vlog.sync().and_then(|()| self.disk.flush_and_fsync())
            };
            if let Err(e) = flushed {
                tracing::error!(error = %e, "the final flush failed");
                self.shared.poison(Poison::of(&e));
            }
        }
        self.pipeline.stop_syncer();
    }

    /// Makes everything committed durable now: in `Relaxed` mode a commit
    /// that fsyncs the value log and records the synced mark, then a sled
    /// flush (in `Sync` mode every answered group already is on disk).
    fn sync_now(&mut self) -> Result<()> {
        if self.pipeline.acknowledged_is_durable() {
            return Ok(());
        }
        self.vlog_sync_required = true;
        self.meta_dirty = true;
        self.commit()?;
        self.disk.flush_and_fsync()
    }

    /// Test support: what a power loss right now may leave. sled is flushed
    /// (its index reaches the disk) but, with `truncate`, the value log loses
    /// everything past what sled knows to be durable, as if never written
    /// back; the writer then stops without its final sync.
    #[cfg(feature = "test-hooks")]
    fn lose_unsynced(&mut self, truncate: bool) -> Result<()> {
        self.pipeline.stop_flusher();
        self.power_lost = true;
        self.vlog.flush()?;
        self.disk.flush_and_fsync()?;
        if truncate {
            let mark = self.pipeline.durable_to(self.vlog.end());
            self.vlog.truncate_past(mark)?;
        }
        Ok(())
    }

    /// Housekeeping when no op arrived for a tick: lease expiry, retention,
    /// recording the flusher's synced mark and automatic compaction.
    fn idle(&mut self) {
        self.busy_compact_at = Instant::now() + maintenance::BUSY_COMPACT_AFTER;
        if self.shared.poison_cause().is_some() {
            return;
        }
        let now = self.config.queue.clock.now_ms();
        let mark_behind = self.pipeline.mark_behind();
        if mark_behind {
            self.meta_dirty = true;
        }
        if self.queue.housekeeping_due(now) || mark_behind || !self.fold_queue.is_empty() {
            self.group(Vec::new());
        }
        if self.compaction_due(now)
            && let Err(e) = self.compact(true)
        {
            tracing::error!(error = %e, "automatic value-log compaction failed");
        }
    }

    /// Applies and commits one group; returns true on `Shutdown`.
    fn group(&mut self, ops: Vec<Op>) -> bool {
        let mut acks: Vec<Box<dyn Ack>> = Vec::with_capacity(ops.len());
        let mut after: Vec<After> = Vec::new();
        let mut shutdown = false;
        let now = self.config.queue.clock.now_ms();
        let poisoned = self.shared.poisoned();
        if poisoned.is_none() {
            self.queue.tick(now);
            // Before the ops: a fold reads only what is committed.
            if let Err(e) = self.fold_step() {
                self.failure.get_or_insert(e);
            }
        }
        for op in ops {
            if let Some(poison) = &poisoned {
                shutdown |= matches!(op, Op::Shutdown);
                op.reject(poison);
                continue;
            }
            match op {
                Op::Apply(op) => self.apply(op, now, &mut acks),
                Op::After(op) => after.push(op),
                Op::Shutdown => shutdown = true,
            }
        }
        if poisoned.is_none() {
            match self.commit() {
                Err(e) => {
                    tracing::error!(error = %e, "commit failed; the store is poisoned");
                    let poison = Poison::of(&e);
                    self.shared.poison(poison.clone());
                    for ack in acks {
                        ack.send(Some(&poison));
                    }
                }
                Ok(wrote) => {
                    let watermark = self.queue.watermark();
                    self.pipeline.answer(acks, wrote, watermark, &self.shared);
                }
            }
        }
        for op in after {
            match self.shared.poisoned() {
                Some(poison) => Op::After(op).reject(&poison),
                None => shutdown |= self.apply_after(op),
            }
        }
        shutdown
    }

    /// Applies one op of a group; its answer waits for the group's commit.
    fn apply(&mut self, op: Apply, now: u64, acks: &mut Vec<Box<dyn Ack>>) {
        match op {
            Apply::Enqueue { jobs, reply } => {
                let v = self.queue.enqueue(jobs, now);
                hold(acks, reply, v);
            }
            Apply::Claim {
                max,
                lease_ms,
                reply,
            } => {
                let v = Ok(self.queue.claim(max, lease_ms, now));
                hold(acks, reply, v);
            }
            Apply::Heartbeat {
                token,
                extend_ms,
                reply,
            } => {
                let v = self.queue.heartbeat(token, extend_ms, now);
                hold(acks, reply, v);
            }
            Apply::Complete { items, reply } => {
                let v = Ok(items.into_iter().map(|c| self.complete(c, now)).collect());
                hold(acks, reply, v);
            }
            Apply::Checkpoint { item, reply } => {
                let v = self.checkpoint(&item);
                hold(acks, reply, v);
            }
            Apply::Fail {
                token,
                error,
                permanent,
                reply,
            } => {
                let v = self.queue.fail(token, error, permanent, now);
                hold(acks, reply, v);
            }
            Apply::Cancel { id, reply } => {
                let v = self.cancel(id, now);
                hold(acks, reply, v);
            }
            Apply::SetPaused {
                priority,
                paused,
                reply,
            } => {
                self.queue.set_paused(priority, paused);
                hold(acks, reply, Ok(()));
            }
            Apply::Purge {
                older_than_ms,
                reply,
            } => {
                let v = Ok(self.queue.trim_history(now, Some(older_than_ms)));
                hold(acks, reply, v);
            }
            Apply::History { limit, reply } => {
                let v = Ok(self.queue.history(limit));
                hold(acks, reply, v);
            }
            Apply::SymbolStats { symbol, reply } => {
                let v = Ok(self.queue.symbol_stats(&symbol));
                hold(acks, reply, v);
            }
            Apply::StageBars { payloads, reply } => {
                let v = self.stage_bars(&payloads);
                hold(acks, reply, v);
            }
            Apply::UnstageBars { entries } => self.unstage_bars(&entries),
            Apply::IngestBars { plans, jobs, reply } => {
                let v = self.ingest_bars(plans, jobs, now);
                hold(acks, reply, v);
            }
            #[cfg(feature = "test-hooks")]
            Apply::FailNextCommit { fsync } => self.fail_next_commit = Some(fsync),
            #[cfg(feature = "test-hooks")]
            Apply::FailAppend { n } => self.vlog.fail_append_in = Some(n),
            #[cfg(feature = "test-hooks")]
            Apply::PauseFolds { paused } => self.folds_paused = paused,
        }
    }

    /// Runs an op that ends a group, after its commit; true to stop.
    fn apply_after(&mut self, op: After) -> bool {
        match op {
            After::Sync { reply } => {
                let v = self.sync_now();
                if let Err(e) = &v {
                    self.shared.poison(Poison::of(e));
                }
                let _ = reply.send(v);
            }
            After::Compact { reply } => {
                let _ = reply.send(self.compact(false));
            }
            After::Check { reply } => {
                let _ = reply.send(self.check());
            }
            #[cfg(feature = "test-hooks")]
            After::PowerLoss { truncate, reply } => {
                let _ = reply.send(self.lose_unsynced(truncate));
                return true;
            }
        }
        false
    }

    // ---- pending writes ------------------------------------------------

    /// Reads through this group's pending writes to the committed tree.
    fn lookup(&self, space: Space, key: &[u8]) -> Result<Option<sled::IVec>> {
        if let Some(pending) = self.writes.get(space, key) {
            return Ok(pending.clone());
        }
        self.spaces.get(space, key)
    }

    /// Appends to the value log; an I/O failure there may leave a partial
    /// record, so it fails this group and poisons the store. After one, the
    /// group's later appends fail without touching the disk (after a failed
    /// fsync, another would be a retry).
    fn append_or_poison(&mut self, payload: &[u8], job_id: u64) -> Result<IndexEntry> {
        if let Some(e) = &self.failure {
            return Err(Poison::of(e).error());
        }
        self.vlog
            .append(payload, job_id)
            .map_err(|e| self.poison_with(e))
    }

    /// Records a write-path failure for this group's commit to report.
    fn poison_with(&mut self, e: StoreError) -> StoreError {
        let poison = Poison::of(&e);
        self.failure.get_or_insert(e);
        poison.error()
    }

    // ---- operations the queue does not finish alone ----------------------

    fn complete(&mut self, c: EncodedCompletion, now: u64) -> Result<()> {
        self.checkpoint(&c)?;
        self.queue.complete(c.token, now)
    }

    /// Stores results under a held lease, leaving the job running.
    fn checkpoint(&mut self, c: &EncodedCompletion) -> Result<()> {
        self.queue.holds(c.token)?;
        for f in &c.results {
            self.check_frame(f)?;
        }
        for f in &c.results {
            self.write_frame(f, c.token.job_id)?;
        }
        Ok(())
    }

    /// Cancels an unfinished job, or says what a finished one is.
    fn cancel(&mut self, id: JobId, now: u64) -> Result<CancelOutcome> {
        if let Some(outcome) = self.queue.cancel(id, now) {
            return Ok(outcome);
        }
        // A job that finished earlier in this group is only in the queue's
        // changes until they are encoded.
        self.encode_changes()?;
        match self.lookup(Space::Jobs, &u64_key(id))? {
            Some(bytes) => {
                let (job, _) = decode_job(id, &bytes)?;
                Ok(CancelOutcome::NotCancellable(job.state))
            }
            None => Err(StoreError::UnknownJob(id)),
        }
    }

    // ---- commit -----------------------------------------------------------

    /// The queue's changes as sled writes.
    fn encode_changes(&mut self) -> Result<()> {
        let changes = self.queue.take_changes();
        self.meta_dirty |= changes.meta;
        for id in changes.jobs {
            if let Some(job) = self.queue.job(id) {
                let bytes = encode_job(job, None)?;
                self.writes
                    .put(Space::Jobs, u64_key(id).to_vec(), bytes.as_slice());
            }
        }
        for (job, seq) in &changes.finished {
            let bytes = encode_job(job, Some(*seq))?;
            self.writes
                .put(Space::Jobs, u64_key(job.id).to_vec(), bytes.as_slice());
        }
        for id in changes.created {
            // A job cancelled in the group that enqueued it is finished already.
            let job = self
                .queue
                .job(id)
                .or_else(|| changes.finished.iter().map(|(j, _)| j).find(|j| j.id == id));
            let input = job.map(encode_job_input).transpose()?.flatten();
            if let Some(input) = input {
                self.writes
                    .put(Space::JobInputs, u64_key(id).to_vec(), input.as_slice());
            }
        }
        // After the finished ones: a purge in the same group removes them.
        for id in changes.removed {
            self.writes.delete(Space::Jobs, u64_key(id).to_vec());
            self.writes.delete(Space::JobInputs, u64_key(id).to_vec());
        }
        for s in changes.symbol_stats {
            let v = self.queue.symbol_stats(&s);
            self.writes.put(
                Space::SymbolStats,
                s.as_str().as_bytes().to_vec(),
                encode_symbol_stats(&v).to_vec(),
            );
        }
        for e in &changes.events {
            self.writes
                .put(Space::Events, u64_key(e.seq).to_vec(), encode_event(e)?);
        }
        for seq in changes.events_removed {
            self.writes.delete(Space::Events, u64_key(seq).to_vec());
        }
        Ok(())
    }

    /// Commits this group: value-log payloads made durable as the mode
    /// requires, then one sled batch. Returns whether anything was written,
    /// which then still needs [`Disk::flush_and_fsync`] (the syncer's job in
    /// `Sync` mode, the flusher's in `Relaxed` mode, the caller's otherwise).
    pub(crate) fn commit(&mut self) -> Result<bool> {
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        #[cfg(feature = "test-hooks")]
        if let Some(fsync) = self.fail_next_commit.take() {
            return Err(if fsync {
                StoreError::fsync("commit", std::io::Error::other("injected fsync failure"))
            } else {
                StoreError::io("commit", std::io::Error::other("injected write failure"))
            });
        }
        self.encode_changes()?;
        if self.writes.is_empty() && !self.meta_dirty {
            return Ok(false);
        }
        self.writes
            .put(Space::Meta, META_KEY.to_vec(), self.queue.meta().encode());
        let commit = self.disk.applied() + 1;
        self.writes.put(
            Space::Meta,
            COMMIT_KEY.to_vec(),
            commit.to_be_bytes().to_vec(),
        );
        self.meta_dirty = false;
        let required = std::mem::take(&mut self.vlog_sync_required);
        self.pipeline
            .before_batch(&mut self.vlog, required, &mut self.writes)?;
        let applied = self.spaces.apply(&self.writes);
        let versions = std::mem::take(&mut self.new_versions);
        let ends = std::mem::take(&mut self.new_ends);
        applied?;
        let bytes = self.writes.bytes() + self.vlog.take_written();
        self.shared
            .bytes_written
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        self.disk.set_applied(commit)?;
        self.writes.clear();
        if !versions.is_empty()
            && let Ok(mut m) = self.shared.versions.write()
        {
            m.extend(versions);
        }
        if !ends.is_empty()
            && let Ok(mut m) = self.shared.frame_ends.write()
        {
            if m.len() >= FRAME_ENDS_MAX {
                m.clear();
            }
            for (key, end) in ends {
                match end {
                    Some(end) => m.insert(key, end),
                    None => m.remove(&key),
                };
            }
        }
        self.pipeline.committed(self.vlog.end());
        self.publish();
        Ok(true)
    }
}
