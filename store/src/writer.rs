//! The single writer thread. It owns every mutation: callers send an [`Op`]
//! over a bounded channel, the writer takes a group of ops, applies them to
//! its in-memory view of the unfinished jobs and to a set of pending sled
//! writes, makes value-log payloads durable, and applies all sled writes of
//! the group as one atomic sled batch. In `Sync` mode it then hands the
//! group's answers to the syncer thread, which flushes sled, fsyncs, and only
//! then answers every caller of the group (group commit); meanwhile the
//! writer already applies the next group, and one fsync often covers several.
//! In `Relaxed` mode it answers at once, and the flusher thread fsyncs the
//! value log and flushes sled every tick, recording how far the value log is
//! on disk (the synced mark, see `vlog`).
//!
//! The in-memory view (unfinished jobs, the due and scheduled queues, leases,
//! idempotency keys, counters, history order, per-symbol aggregates) is
//! rebuilt from sled at open by [`crate::recovery::recover`]. It can only
//! diverge from disk when a commit fails, and then the store is poisoned.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rkyv::util::AlignedVec;

use crate::Durability;
use crate::bars::{VersionRecord, check_bars, decode_version};
use crate::db::{CheckReport, CompactReport, Shared, StoreConfig};
use crate::disk::Disk;
use crate::error::{Result, StoreError};
use crate::ingest::BarPlan;
use crate::job::{
    CancelOutcome, Enqueued, FailOutcome, Job, JobId, JobState, Lease, LeaseToken, NewJob, Priority,
};
use crate::keys::{SeriesKey, Symbol, u64_key};
use crate::record::{IndexEntry, ResultValue, SymbolStats, decode_job, encode_job, series_layout};
use crate::space::{Spaces, Writes};
use crate::vlog::{Vlog, VlogPosition, fsync_segment};

/// Keyspaces (see `space`).
pub(crate) const JOBS: usize = 0;
pub(crate) const SYMSTATS: usize = 1;
pub(crate) const RESULTS: usize = 2;
pub(crate) const META: usize = 3;
pub(crate) const BARS: usize = 4;
pub(crate) const DATA_VERSIONS: usize = 5;
pub(crate) const EVENTS: usize = 6;
/// Keyspaces whose values may point into the value log.
pub(crate) const POINTER_SPACES: [usize; 2] = [RESULTS, BARS];

/// The key of the writer's scalars in the `meta` keyspace.
pub(crate) const META_KEY: &[u8] = b"state";
/// The synced mark's key in the `meta` keyspace, present in `Relaxed` mode:
/// the value log is on disk up to this [`VlogPosition`].
pub(crate) const VLOG_SYNCED_KEY: &[u8] = b"vlog_synced";

/// The writer's scalars, rewritten in every commit: next job id (u64 BE),
/// next history sequence (u64 BE), the counters (72 bytes), paused flags (3
/// bytes, 0 or 1 per priority). 91 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    pub next_id: u64,
    pub next_finish_seq: u64,
    pub counters: Counters,
    pub paused: [bool; 3],
}

impl Meta {
    const BYTES: usize = 16 + Counters::BYTES + 3;

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::BYTES);
        b.extend_from_slice(&self.next_id.to_be_bytes());
        b.extend_from_slice(&self.next_finish_seq.to_be_bytes());
        b.extend_from_slice(&self.counters.encode());
        b.extend(self.paused.map(u8::from));
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self> {
        if b.len() != Self::BYTES {
            return Err(StoreError::corrupt(
                "meta/state",
                format!("{} bytes, want {}", b.len(), Self::BYTES),
            ));
        }
        Ok(Meta {
            next_id: crate::keys::read_u64(&b[0..8], "meta/state")?,
            next_finish_seq: crate::keys::read_u64(&b[8..16], "meta/state")?,
            counters: Counters::decode(&b[16..16 + Counters::BYTES])?,
            paused: std::array::from_fn(|i| b[16 + Counters::BYTES + i] != 0),
        })
    }
}

/// An applied group's answers, for the syncer.
pub(crate) struct SyncGroup {
    acks: Vec<Box<dyn Ack>>,
    /// Whether the group wrote anything (else there is nothing to fsync).
    wrote: bool,
}

/// Applied groups the syncer may hold before the writer waits for it.
const SYNC_GROUPS_MAX: usize = 8;

/// The syncer thread: takes every applied group waiting, makes them durable
/// with one flush + fsync, then answers their callers. Running it beside the
/// writer lets the writer apply the next group while this one is fsynced.
fn sync_loop(disk: &Disk, shared: &Shared, groups: &Receiver<SyncGroup>) {
    while let Ok(first) = groups.recv() {
        let (mut acks, mut wrote) = (first.acks, first.wrote);
        while let Ok(more) = groups.try_recv() {
            acks.extend(more.acks);
            wrote |= more.wrote;
        }
        let failure = match shared.poison_cause() {
            Some(cause) => Some(cause),
            None if !wrote => None,
            None => disk.flush_and_fsync().err().map(|e| {
                let cause = e.to_string();
                tracing::error!(error = %cause, "fsync failed; the store is poisoned");
                shared.poison(&cause);
                cause
            }),
        };
        for ack in acks {
            ack.send(failure.as_deref());
        }
    }
}

/// What the writer and the `Relaxed`-mode flusher share.
#[derive(Default)]
pub(crate) struct FlushState {
    /// Commits applied so far, and the value log's end after the last one.
    written: Mutex<(u64, VlogPosition)>,
    /// How far the flusher has fsynced the value log.
    synced: Mutex<VlogPosition>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The flusher (`Relaxed` mode): every tick in which something was
/// committed, fsyncs the value log up to the last commit's end, publishes
/// that as the synced mark, then flushes and fsyncs sled. Runs until `stop`
/// closes.
fn flush_loop(
    disk: &Disk,
    shared: &Shared,
    state: &FlushState,
    vlog_dir: &std::path::Path,
    stop: &Receiver<()>,
    tick: Duration,
) {
    let mut seen = 0;
    let mut from = locked(&state.synced).segment;
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(tick) {
        let (commits, end) = *locked(&state.written);
        if commits == seen || shared.poison_cause().is_some() {
            continue;
        }
        let flushed = (from..=end.segment)
            .try_for_each(|id| fsync_segment(vlog_dir, id))
            .and_then(|()| {
                *locked(&state.synced) = end;
                disk.flush_and_fsync()
            });
        match flushed {
            Ok(()) => (seen, from) = (commits, end.segment),
            Err(e) => {
                let cause = e.to_string();
                tracing::error!(error = %cause, "background flush failed; the store is poisoned");
                shared.poison(&cause);
            }
        }
    }
}

/// Longest error message kept on a job, in bytes.
pub const ERROR_BYTES_MAX: usize = 4096;
/// Most finished jobs removed by one group's history trim (bounds group size).
const TRIM_PER_GROUP_MAX: usize = 1024;

/// A series archived by the caller, ready to append.
pub(crate) struct EncodedSeries {
    pub key: SeriesKey,
    pub bytes: AlignedVec,
}

/// One job's completion with its results.
pub(crate) struct EncodedCompletion {
    pub token: LeaseToken,
    pub results: Vec<EncodedSeries>,
}

/// An operation for the writer, with the channel its answer goes back on.
pub(crate) enum Op {
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
    Sync {
        reply: Sender<Result<()>>,
    },
    Compact {
        reply: Sender<Result<CompactReport>>,
    },
    Check {
        reply: Sender<Result<CheckReport>>,
    },
    History {
        limit: usize,
        reply: Sender<Result<Vec<JobId>>>,
    },
    /// Appends bar chunks to the value log, unindexed, for an ingest session.
    StageBars {
        payloads: Vec<AlignedVec>,
        reply: Sender<Result<Vec<IndexEntry>>>,
    },
    /// An ingest session ended without indexing these staged records.
    UnstageBars {
        entries: Vec<IndexEntry>,
    },
    /// Applies an ingest's plans, all or none.
    IngestBars {
        plans: Vec<BarPlan>,
        reply: Sender<Result<()>>,
    },
    FailNextCommit,
    /// Test support: see [`Writer::lose_unsynced`].
    PowerLoss {
        truncate: bool,
        reply: Sender<Result<()>>,
    },
    Shutdown,
}

/// An answer held back until the group it belongs to has committed.
pub(crate) trait Ack: Send {
    fn send(self: Box<Self>, commit_failure: Option<&str>);
}

struct Reply<T> {
    tx: Sender<Result<T>>,
    value: Result<T>,
}

impl<T: Send> Ack for Reply<T> {
    fn send(self: Box<Self>, commit_failure: Option<&str>) {
        let value = match commit_failure {
            None => self.value,
            Some(cause) => Err(StoreError::Poisoned {
                cause: cause.to_owned(),
            }),
        };
        // The caller may have gone away; nothing to do then.
        let _ = self.tx.send(value);
    }
}

fn hold<T: Send + 'static>(acks: &mut Vec<Box<dyn Ack>>, tx: Sender<Result<T>>, value: Result<T>) {
    acks.push(Box::new(Reply { tx, value }));
}

/// Jobs per state and waiting jobs per priority.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub by_state: [u64; 6],
    pub depth: [u64; 3],
}

impl Counters {
    pub(crate) const BYTES: usize = 72;

    pub(crate) fn encode(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        for (i, n) in self.by_state.iter().chain(self.depth.iter()).enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&n.to_be_bytes());
        }
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self> {
        if b.len() != Self::BYTES {
            return Err(StoreError::corrupt(
                "meta/counters",
                format!("{} bytes", b.len()),
            ));
        }
        let mut c = Counters::default();
        for i in 0..9 {
            let n = crate::keys::read_u64(&b[i * 8..i * 8 + 8], "meta/counters")?;
            if i < 6 {
                c.by_state[i] = n;
            } else {
                c.depth[i - 6] = n;
            }
        }
        Ok(c)
    }

    /// Moves `job` to `new`, keeping the counts right.
    pub(crate) fn transition(&mut self, job: &mut Job, new: JobState) {
        self.leave(job);
        job.state = new;
        self.enter(job);
    }

    pub(crate) fn enter(&mut self, job: &Job) {
        self.by_state[job.state.index()] += 1;
        if job.state.is_waiting() {
            self.depth[job.priority.index()] += 1;
        }
    }

    fn leave(&mut self, job: &Job) {
        let s = &mut self.by_state[job.state.index()];
        *s = s.saturating_sub(1);
        if job.state.is_waiting() {
            let d = &mut self.depth[job.priority.index()];
            *d = d.saturating_sub(1);
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

/// The writer's state. Fields are `pub(crate)` so recovery can rebuild them.
pub(crate) struct Writer {
    pub config: StoreConfig,
    pub disk: Arc<Disk>,
    pub spaces: Spaces,
    pub vlog: Vlog,
    pub shared: Arc<Shared>,

    /// Unfinished jobs (queued, running, failed awaiting retry), with payloads.
    pub active: HashMap<JobId, Job>,
    /// Claimable jobs per priority, in FIFO (id) order.
    pub due: [BTreeSet<JobId>; 3],
    /// Jobs not claimable before a time: (run_at_ms, id).
    pub scheduled: BTreeSet<(u64, JobId)>,
    /// Running jobs by lease expiry: (expires_ms, id).
    pub leases: BTreeSet<(u64, JobId)>,
    /// Idempotency keys of unfinished jobs.
    pub idem: HashMap<String, JobId>,
    pub paused: [bool; 3],
    /// Finished jobs, oldest first (bounded by `history_max` and retention).
    pub history: VecDeque<Finished>,
    pub symstats: HashMap<Symbol, SymbolStats>,
    pub counters: Counters,
    pub next_id: JobId,
    pub next_finish_seq: u64,
    /// The event log's next and oldest kept sequence numbers.
    pub next_event_seq: u64,
    pub first_event_seq: u64,

    /// This group's pending sled writes per tree (`None` removes the key).
    pub writes: Writes,
    pub dirty_jobs: HashSet<JobId>,
    pub dirty_symstats: HashSet<Symbol>,
    /// A write-path failure during apply (value-log append): fails the group.
    pub fatal: Option<StoreError>,
    pub fail_next_commit: bool,
    /// The meta record changed without any other write (a pause).
    pub meta_dirty: bool,
    /// The synced mark as the last commit recorded it (`Relaxed` mode).
    pub recorded_synced: VlogPosition,
    /// The next commit fsyncs the value log whatever the mode (bar chunks
    /// and compaction moves cannot be recomputed).
    pub vlog_sync_required: bool,
    /// `Relaxed` mode: the flusher's shared state and how to stop it.
    pub flusher: Option<(Arc<FlushState>, Sender<()>, JoinHandle<()>)>,
    /// A test simulated a power loss: exit without the final sync.
    pub power_lost: bool,
    /// Data versions this group writes, published once it has committed.
    pub new_versions: Vec<(Symbol, crate::DataVersion)>,
    /// `Sync` mode: hands each applied group's answers to the syncer thread,
    /// which flushes and fsyncs and then answers (running while `run` runs).
    pub syncer: Option<Sender<SyncGroup>>,
}

impl Writer {
    /// The writer loop: runs until `Shutdown` or until every sender is gone.
    pub(crate) fn run(mut self, rx: Receiver<Op>) {
        let syncer = match self.config.durability {
            Durability::Sync => {
                let (tx, groups) = crossbeam_channel::bounded(SYNC_GROUPS_MAX);
                let (disk, shared) = (Arc::clone(&self.disk), Arc::clone(&self.shared));
                let spawned = std::thread::Builder::new()
                    .name("kiln-store-syncer".into())
                    .spawn(move || sync_loop(&disk, &shared, &groups));
                match spawned {
                    Ok(handle) => {
                        self.syncer = Some(tx);
                        Some(handle)
                    }
                    Err(e) => {
                        self.shared
                            .poison(&format!("cannot start the syncer thread: {e}"));
                        None
                    }
                }
            }
            Durability::Relaxed => {
                self.start_flusher();
                None
            }
        };
        let tick = Duration::from_millis(self.config.tick_ms.max(1));
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
        }
        self.stop_flusher();
        if self.config.durability == Durability::Relaxed && !self.power_lost {
            // Poisoned, no commit is possible, but what was acknowledged
            // before the failure still goes to disk if it can.
            let flushed = if self.poisoned().is_none() {
                self.sync_now()
            } else {
                self.vlog.sync().and_then(|()| self.disk.flush_and_fsync())
            };
            if let Err(e) = flushed {
                tracing::error!(error = %e, "the final flush failed");
            }
        }
        // Let the syncer answer what it holds, then wait for it.
        self.syncer = None;
        if let Some(handle) = syncer {
            let _ = handle.join();
        }
    }

    /// Collects a group: what is already waiting, plus, when the last group
    /// had more callers than are here yet, up to `group_linger_us` for the
    /// rest of them (each caller sends its next op microseconds after its
    /// answer, usually just after the writer has started the next group).
    /// A lone caller (expected = 1) never waits.
    fn gather(&self, first: Op, rx: &Receiver<Op>, expected: &mut usize) -> Vec<Op> {
        let deadline = Instant::now() + Duration::from_micros(self.config.group_linger_us);
        let mut ops = vec![first];
        while ops.len() < self.config.group_ops_max
            && !matches!(
                ops.last(),
                Some(
                    Op::Shutdown
                        | Op::Compact { .. }
                        | Op::Check { .. }
                        | Op::Sync { .. }
                        | Op::PowerLoss { .. }
                )
            )
        {
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

    fn poisoned(&self) -> Option<String> {
        self.shared.poison_cause()
    }

    fn start_flusher(&mut self) {
        let state = Arc::new(FlushState::default());
        *locked(&state.synced) = self.recorded_synced;
        *locked(&state.written) = (0, self.recorded_synced);
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let (disk, shared, st) = (
            Arc::clone(&self.disk),
            Arc::clone(&self.shared),
            Arc::clone(&state),
        );
        let dir: PathBuf = self.vlog.dir().to_path_buf();
        let tick = Duration::from_millis(self.config.tick_ms.max(1));
        let spawned = std::thread::Builder::new()
            .name("kiln-store-flusher".into())
            .spawn(move || flush_loop(&disk, &shared, &st, &dir, &stopped, tick));
        match spawned {
            Ok(handle) => self.flusher = Some((state, stop, handle)),
            Err(e) => self
                .shared
                .poison(&format!("cannot start the flusher thread: {e}")),
        }
    }

    fn stop_flusher(&mut self) {
        if let Some((_, stop, handle)) = self.flusher.take() {
            drop(stop);
            let _ = handle.join();
        }
    }

    /// Makes everything committed durable now: in `Relaxed` mode a commit
    /// that fsyncs the value log and records the synced mark, then a sled
    /// flush (in `Sync` mode every answered group already is on disk).
    fn sync_now(&mut self) -> Result<()> {
        if self.config.durability == Durability::Sync {
            return Ok(());
        }
        self.vlog_sync_required = true;
        self.meta_dirty = true;
        self.commit()?;
        self.disk.flush_and_fsync()
    }

    /// Test support: what a power loss right now may leave. sled is flushed
    /// (its index reaches the disk) but, with `truncate`, the value log loses
    /// everything past the synced mark sled holds, as if never written back;
    /// the writer then stops without its final sync.
    fn lose_unsynced(&mut self, truncate: bool) -> Result<()> {
        self.stop_flusher();
        self.power_lost = true;
        self.vlog.flush()?;
        self.disk.flush_and_fsync()?;
        let mark = match self.config.durability {
            Durability::Relaxed => self.recorded_synced,
            // Every commit fsynced the value log first.
            Durability::Sync => self.vlog.end(),
        };
        if truncate {
            self.vlog.truncate_past(mark)?;
        }
        Ok(())
    }

    /// Housekeeping when no op arrived for a tick: lease expiry, retention,
    /// recording the flusher's synced mark and automatic compaction.
    fn idle(&mut self) {
        if self.poisoned().is_some() {
            return;
        }
        let now = self.config.clock.now_ms();
        let expiring = self.leases.first().is_some_and(|&(exp, _)| exp <= now);
        let trimming = self.history_over_limit(now);
        let mark_behind = self.flusher_synced() > self.recorded_synced;
        if mark_behind {
            self.meta_dirty = true;
        }
        if expiring || trimming || mark_behind {
            self.group(Vec::new());
        }
        if !self
            .vlog
            .compaction_candidates(self.config.compact_live_fraction_min)
            .is_empty()
            && let Err(e) = self.compact()
        {
            tracing::error!(error = %e, "automatic value-log compaction failed");
        }
    }

    /// Applies and commits one group; returns true on `Shutdown`.
    fn group(&mut self, ops: Vec<Op>) -> bool {
        let mut acks: Vec<Box<dyn Ack>> = Vec::with_capacity(ops.len());
        let mut after: Vec<Op> = Vec::new();
        let mut shutdown = false;
        let now = self.config.clock.now_ms();
        let poisoned = self.poisoned();
        if poisoned.is_none() {
            self.expire_leases(now);
            self.trim_history(now, None);
            self.trim_events();
        }
        for op in ops {
            if matches!(op, Op::Shutdown) {
                shutdown = true;
                continue;
            }
            if let Some(cause) = &poisoned {
                reject(op, cause);
                continue;
            }
            match op {
                Op::Enqueue { jobs, reply } => {
                    let v = self.enqueue(jobs, now);
                    hold(&mut acks, reply, v);
                }
                Op::Claim {
                    max,
                    lease_ms,
                    reply,
                } => {
                    let v = Ok(self.claim(max, lease_ms, now));
                    hold(&mut acks, reply, v);
                }
                Op::Heartbeat {
                    token,
                    extend_ms,
                    reply,
                } => {
                    let v = self.heartbeat(token, extend_ms, now);
                    hold(&mut acks, reply, v);
                }
                Op::Complete { items, reply } => {
                    let v = Ok(items.into_iter().map(|c| self.complete(c, now)).collect());
                    hold(&mut acks, reply, v);
                }
                Op::Checkpoint { item, reply } => {
                    let v = self.checkpoint(&item);
                    hold(&mut acks, reply, v);
                }
                Op::Fail {
                    token,
                    error,
                    permanent,
                    reply,
                } => {
                    let v = self.fail(token, error, permanent, now);
                    hold(&mut acks, reply, v);
                }
                Op::Cancel { id, reply } => {
                    let v = self.cancel(id, now);
                    hold(&mut acks, reply, v);
                }
                Op::SetPaused {
                    priority,
                    paused,
                    reply,
                } => {
                    self.paused[priority.index()] = paused;
                    self.meta_dirty = true;
                    hold(&mut acks, reply, Ok(()));
                }
                Op::Purge {
                    older_than_ms,
                    reply,
                } => {
                    let v = Ok(self.trim_history(now, Some(older_than_ms)));
                    hold(&mut acks, reply, v);
                }
                Op::History { limit, reply } => {
                    let ids = self
                        .history
                        .iter()
                        .rev()
                        .take(limit)
                        .map(|f| f.id)
                        .collect();
                    hold(&mut acks, reply, Ok(ids));
                }
                Op::StageBars { payloads, reply } => {
                    let v = self.stage_bars(&payloads);
                    hold(&mut acks, reply, v);
                }
                Op::UnstageBars { entries } => {
                    for e in &entries {
                        self.vlog.release(e);
                    }
                }
                Op::IngestBars { plans, reply } => {
                    let v = self.ingest_bars(plans);
                    hold(&mut acks, reply, v);
                }
                Op::FailNextCommit => self.fail_next_commit = true,
                Op::Shutdown => {}
                other @ (Op::Sync { .. }
                | Op::PowerLoss { .. }
                | Op::Compact { .. }
                | Op::Check { .. }) => after.push(other),
            }
        }
        if poisoned.is_none() {
            match self.commit() {
                Err(e) => {
                    let cause = e.to_string();
                    tracing::error!(error = %cause, "commit failed; the store is poisoned");
                    self.shared.poison(&cause);
                    for ack in acks {
                        ack.send(Some(&cause));
                    }
                }
                // In Sync mode every answer goes through the syncer, so none
                // is given before the groups applied ahead of it are on disk.
                Ok(wrote) if self.syncer.is_some() => {
                    let group = SyncGroup { acks, wrote };
                    if let Some(Err(e)) = self.syncer.as_ref().map(|s| s.send(group)) {
                        let cause = "the syncer thread stopped";
                        self.shared.poison(cause);
                        for ack in e.into_inner().acks {
                            ack.send(Some(cause));
                        }
                    }
                }
                Ok(_) => {
                    for ack in acks {
                        ack.send(None);
                    }
                }
            }
        }
        for op in after {
            if let Some(cause) = self.poisoned() {
                reject(op, &cause);
                continue;
            }
            match op {
                Op::Sync { reply } => {
                    let v = self.sync_now();
                    if let Err(e) = &v {
                        self.shared.poison(&e.to_string());
                    }
                    let _ = reply.send(v);
                }
                Op::PowerLoss { truncate, reply } => {
                    let _ = reply.send(self.lose_unsynced(truncate));
                    shutdown = true;
                }
                Op::Compact { reply } => {
                    let _ = reply.send(self.compact());
                }
                Op::Check { reply } => {
                    let _ = reply.send(self.check());
                }
                _ => {}
            }
        }
        shutdown
    }

    // ---- pending writes ------------------------------------------------

    pub(crate) fn put(&mut self, tree: usize, key: Vec<u8>, value: impl Into<sled::IVec>) {
        self.writes[tree].insert(key, Some(value.into()));
    }

    pub(crate) fn delete(&mut self, tree: usize, key: Vec<u8>) {
        self.writes[tree].insert(key, None);
    }

    /// Reads through this group's pending writes to the committed tree.
    fn lookup(&self, tree: usize, key: &[u8]) -> Result<Option<sled::IVec>> {
        if let Some(pending) = self.writes[tree].get(key) {
            return Ok(pending.clone());
        }
        self.spaces.get(tree, key)
    }

    // ---- transitions -----------------------------------------------------

    fn enqueue(&mut self, jobs: Vec<NewJob>, now: u64) -> Result<Vec<Enqueued>> {
        let mut fresh_keys = HashSet::new();
        let created = jobs
            .iter()
            .filter(|j| match &j.idempotency_key {
                Some(k) => !self.idem.contains_key(k) && fresh_keys.insert(k.as_str()),
                None => true,
            })
            .count() as u64;
        let unfinished = self.active.len() as u64;
        if unfinished + created > self.config.queue_depth_max {
            return Err(StoreError::QueueFull {
                depth: unfinished,
                max: self.config.queue_depth_max,
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
            let run_at_ms = new.run_at_ms.unwrap_or(now);
            let job = Job {
                id,
                kind: new.kind,
                payload: Arc::from(new.payload),
                symbols: new.symbols,
                priority: new.priority,
                state: JobState::Queued,
                attempts: 0,
                attempts_max: new.attempts_max.unwrap_or(self.config.attempts_max),
                run_at_ms,
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
            self.dirty_jobs.insert(id);
            out.push(Enqueued::Created(id));
        }
        Ok(out)
    }

    /// Files a waiting job under `due` or `scheduled` by its `run_at_ms`.
    pub(crate) fn make_claimable(&mut self, job: &Job, now: u64) {
        if job.run_at_ms > now {
            self.scheduled.insert((job.run_at_ms, job.id));
        } else {
            self.due[job.priority.index()].insert(job.id);
        }
    }

    fn claim(&mut self, max: usize, lease_ms: u64, now: u64) -> Vec<Lease> {
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
                self.counters.transition(job, JobState::Running);
                job.attempts += 1;
                job.started_ms = Some(now);
                let expires_ms = now.saturating_add(lease_ms);
                job.lease_expires_ms = Some(expires_ms);
                self.leases.insert((expires_ms, id));
                self.dirty_jobs.insert(id);
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

    fn heartbeat(&mut self, token: LeaseToken, extend_ms: u64, now: u64) -> Result<u64> {
        let job = self.leased(token)?;
        let old = job.lease_expires_ms.unwrap_or(0);
        let new = now.saturating_add(extend_ms);
        job.lease_expires_ms = Some(new);
        self.leases.remove(&(old, token.job_id));
        self.leases.insert((new, token.job_id));
        self.dirty_jobs.insert(token.job_id);
        Ok(new)
    }

    fn complete(&mut self, c: EncodedCompletion, now: u64) -> Result<()> {
        self.checkpoint(&c)?;
        self.finish(c.token.job_id, JobState::Succeeded, now, None);
        Ok(())
    }

    /// Stores results under a held lease, leaving the job running.
    fn checkpoint(&mut self, c: &EncodedCompletion) -> Result<()> {
        self.leased(c.token)?;
        let job_id = c.token.job_id;
        for series in &c.results {
            let value = if series.bytes.len() <= self.config.inline_series_bytes_max {
                ResultValue::Inline {
                    job_id,
                    archived: &series.bytes,
                }
                .encode()
            } else {
                ResultValue::Pointer(self.append_or_poison(&series.bytes, job_id)?).encode()
            };
            let key = series.key.encode();
            self.release_pointer(RESULTS, &key)?;
            self.put(RESULTS, key, value);
        }
        Ok(())
    }

    fn fail(
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
        self.count_failure(id);
        if exhausted {
            self.finish(id, JobState::Dead, now, None);
            return Ok(FailOutcome::Dead);
        }
        let run_at_ms = now.saturating_add(self.config.retry.delay_ms(id, token.attempt));
        if let Some(job) = self.active.get_mut(&id) {
            self.counters.transition(job, JobState::Failed);
            job.run_at_ms = run_at_ms;
        }
        if let Some(job) = self.active.get(&id).cloned() {
            self.append_event(&job, JobState::Failed, now);
        }
        self.scheduled.insert((run_at_ms, id));
        self.dirty_jobs.insert(id);
        Ok(FailOutcome::Retry { run_at_ms })
    }

    fn count_failure(&mut self, id: JobId) {
        let symbols = self
            .active
            .get(&id)
            .map(|j| j.symbols.clone())
            .unwrap_or_default();
        for s in symbols {
            self.symstats.entry(s.clone()).or_default().failures += 1;
            self.dirty_symstats.insert(s);
        }
    }

    fn cancel(&mut self, id: JobId, now: u64) -> Result<CancelOutcome> {
        match self.active.get(&id).map(|j| j.state) {
            Some(JobState::Running) => Ok(CancelOutcome::NotCancellable(JobState::Running)),
            Some(_) => {
                self.finish(id, JobState::Cancelled, now, None);
                Ok(CancelOutcome::Cancelled)
            }
            None => match self.lookup(JOBS, &u64_key(id))? {
                Some(bytes) => {
                    let (job, _) = decode_job(id, &bytes)?;
                    Ok(CancelOutcome::NotCancellable(job.state))
                }
                None => Err(StoreError::UnknownJob(id)),
            },
        }
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
            self.count_failure(id);
            if exhausted {
                self.finish(id, JobState::Dead, now, None);
            } else {
                self.requeue(id, now);
            }
        }
    }

    /// Puts an unfinished job back in the queue, due now.
    pub(crate) fn requeue(&mut self, id: JobId, now: u64) {
        let Some(mut job) = self.active.remove(&id) else {
            return;
        };
        self.counters.transition(&mut job, JobState::Queued);
        job.run_at_ms = now;
        job.lease_expires_ms = None;
        self.make_claimable(&job, now);
        self.active.insert(id, job);
        self.dirty_jobs.insert(id);
    }

    /// Moves an unfinished job to a terminal state: out of every queue, into
    /// history and the per-symbol aggregates, its record written now.
    pub(crate) fn finish(&mut self, id: JobId, state: JobState, now: u64, error: Option<String>) {
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
        self.counters.transition(&mut job, state);
        job.finished_ms = Some(now);
        if error.is_some() {
            job.last_error = error;
        }
        let duration_ms = job.started_ms.map_or(0, |s| now.saturating_sub(s));
        for s in &job.symbols {
            let st = self.symstats.entry(s.clone()).or_default();
            st.jobs += 1;
            st.duration_ms_total += duration_ms;
            self.dirty_symstats.insert(s.clone());
        }
        self.append_event(&job, state, now);
        let seq = self.next_finish_seq;
        self.next_finish_seq += 1;
        self.history.push_back(Finished {
            seq,
            id,
            finished_ms: now,
            state,
        });
        self.dirty_jobs.remove(&id);
        match encode_job(&job, Some(seq)) {
            Ok(bytes) => self.put(JOBS, u64_key(id).to_vec(), bytes.as_slice()),
            Err(e) => {
                self.fatal.get_or_insert(e);
            }
        }
    }

    /// Appends an outcome to the event log, in this group's batch.
    fn append_event(&mut self, job: &Job, state: JobState, now: u64) {
        match crate::events::encode_event(job, state, now) {
            Ok(bytes) => {
                let seq = self.next_event_seq;
                self.next_event_seq += 1;
                self.put(EVENTS, u64_key(seq).to_vec(), bytes);
            }
            Err(e) => {
                self.fatal.get_or_insert(e);
            }
        }
    }

    /// Drops the oldest events beyond `events_max` (at most
    /// `TRIM_PER_GROUP_MAX` per group; the newest is always kept, so
    /// sequence numbers continue across a restart).
    fn trim_events(&mut self) {
        let keep = self.config.events_max.max(1);
        let mut removed = 0;
        while self.next_event_seq - self.first_event_seq > keep && removed < TRIM_PER_GROUP_MAX {
            self.delete(EVENTS, u64_key(self.first_event_seq).to_vec());
            self.first_event_seq += 1;
            removed += 1;
        }
    }

    fn history_over_limit(&self, now: u64) -> bool {
        self.history.front().is_some_and(|f| {
            self.history.len() as u64 > self.config.history_max
                || self
                    .config
                    .retention_ms
                    .is_some_and(|r| f.finished_ms.saturating_add(r) <= now)
        })
    }

    /// Drops the oldest finished jobs beyond `history_max`, past retention, or
    /// (for an explicit purge) older than `older_than_ms`. Returns how many.
    fn trim_history(&mut self, now: u64, older_than_ms: Option<u64>) -> u64 {
        let mut removed = 0;
        let bounded = older_than_ms.is_none();
        while let Some(&f) = self.history.front() {
            if bounded && removed >= TRIM_PER_GROUP_MAX as u64 {
                break;
            }
            let age_limit = older_than_ms.or(self.config.retention_ms);
            let too_old = age_limit.is_some_and(|a| f.finished_ms.saturating_add(a) <= now);
            if !(self.history.len() as u64 > self.config.history_max || too_old) {
                break;
            }
            self.history.pop_front();
            let count = &mut self.counters.by_state[f.state.index()];
            *count = count.saturating_sub(1);
            self.delete(JOBS, u64_key(f.id).to_vec());
            removed += 1;
        }
        removed
    }

    // ---- market data -------------------------------------------------------

    /// Appends staged chunks and writes them out so readers can map them;
    /// the commit that indexes them fsyncs them first.
    fn stage_bars(&mut self, payloads: &[AlignedVec]) -> Result<Vec<IndexEntry>> {
        let mut entries = Vec::with_capacity(payloads.len());
        for p in payloads {
            entries.push(self.append_or_poison(p, 0)?);
        }
        if let Err(e) = self.vlog.flush() {
            return Err(self.poison_with(e));
        }
        Ok(entries)
    }

    /// Appends to the value log; an I/O failure there may leave a partial
    /// record, so it fails this group and poisons the store.
    fn append_or_poison(&mut self, payload: &[u8], job_id: u64) -> Result<IndexEntry> {
        self.vlog
            .append(payload, job_id)
            .map_err(|e| self.poison_with(e))
    }

    /// Records a write-path failure for this group's commit to report.
    fn poison_with(&mut self, e: StoreError) -> StoreError {
        let cause = e.to_string();
        self.fatal.get_or_insert(e);
        StoreError::Poisoned { cause }
    }

    /// Checks every plan against the current data versions and every value
    /// it replaces, then applies them: all, or (on an error) none.
    fn ingest_bars(&mut self, plans: Vec<BarPlan>) -> Result<()> {
        let mut released = Vec::new();
        for p in &plans {
            let current = decode_version(
                self.lookup(DATA_VERSIONS, p.symbol.as_str().as_bytes())?,
                &p.symbol,
            )?;
            if current != p.expect {
                return Err(StoreError::Conflict(format!(
                    "the bars of {} changed while the ingest was planned",
                    p.symbol
                )));
            }
            for key in p.remove.iter().chain(p.add.iter().map(|(k, _)| k)) {
                if let Some(old) = self.lookup(BARS, key)?
                    && let ResultValue::Pointer(old) = ResultValue::decode(&old)?
                    && !released.contains(&old)
                {
                    released.push(old);
                }
            }
        }
        for old in &released {
            self.vlog.release(old);
        }
        self.vlog_sync_required = true;
        for p in plans {
            for key in p.remove {
                self.delete(BARS, key);
            }
            for (key, entry) in p.add {
                self.put(BARS, key, ResultValue::Pointer(entry).encode());
            }
            self.new_versions.push((p.symbol.clone(), p.version));
            self.put(
                DATA_VERSIONS,
                p.symbol.as_str().as_bytes().to_vec(),
                VersionRecord {
                    version: p.version,
                    generation: p.expect.map_or(1, |r| r.generation + 1),
                }
                .encode()
                .to_vec(),
            );
        }
        Ok(())
    }

    /// Accounts the value-log record `key` points at (if any) as garbage.
    fn release_pointer(&mut self, space: usize, key: &[u8]) -> Result<()> {
        if let Some(old) = self.lookup(space, key)?
            && let ResultValue::Pointer(old) = ResultValue::decode(&old)?
        {
            self.vlog.release(&old);
        }
        Ok(())
    }

    // ---- commit -----------------------------------------------------------

    /// Applies this group: value-log payloads fsynced first, then one sled
    /// batch. Returns whether anything was written, which then still needs
    /// [`Disk::flush_and_fsync`] (the syncer's job in `Sync` mode, the
    /// background flush's in `Relaxed` mode, the caller's otherwise).
    pub(crate) fn commit(&mut self) -> Result<bool> {
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        if std::mem::take(&mut self.fail_next_commit) {
            return Err(StoreError::io(
                "commit",
                std::io::Error::other("injected write failure"),
            ));
        }
        let dirty: Vec<JobId> = self.dirty_jobs.drain().collect();
        for id in dirty {
            if let Some(job) = self.active.get(&id) {
                let bytes = encode_job(job, None)?;
                self.put(JOBS, u64_key(id).to_vec(), bytes.as_slice());
            }
        }
        let dirty: Vec<Symbol> = self.dirty_symstats.drain().collect();
        for s in dirty {
            let v = self.symstats.get(&s).copied().unwrap_or_default();
            self.put(
                SYMSTATS,
                s.as_str().as_bytes().to_vec(),
                v.encode().to_vec(),
            );
        }
        if self.writes.iter().all(BTreeMap::is_empty) && !self.meta_dirty {
            return Ok(false);
        }
        let meta = Meta {
            next_id: self.next_id,
            next_finish_seq: self.next_finish_seq,
            counters: self.counters,
            paused: self.paused,
        };
        self.put(META, META_KEY.to_vec(), meta.encode());
        self.meta_dirty = false;

        let relaxed = self.config.durability == Durability::Relaxed;
        if !relaxed || std::mem::take(&mut self.vlog_sync_required) {
            self.vlog.sync()?;
            if relaxed {
                self.record_synced(self.vlog.end());
            }
        } else {
            self.vlog.flush()?;
            self.record_synced(self.flusher_synced());
        }
        let applied = self.spaces.apply(&self.writes);
        let versions = std::mem::take(&mut self.new_versions);
        applied?;
        for w in &mut self.writes {
            w.clear();
        }
        if !versions.is_empty()
            && let Ok(mut m) = self.shared.versions.write()
        {
            m.extend(versions);
        }
        if let Some((state, _, _)) = &self.flusher {
            let mut written = locked(&state.written);
            *written = (written.0 + 1, self.vlog.end());
        }
        self.shared.publish(&self.counters, &self.paused);
        Ok(true)
    }

    /// How far the flusher has fsynced the value log (`Relaxed` mode).
    fn flusher_synced(&self) -> VlogPosition {
        self.flusher
            .as_ref()
            .map_or(self.recorded_synced, |(state, _, _)| *locked(&state.synced))
    }

    /// Puts a synced mark that moved forward into this commit.
    fn record_synced(&mut self, mark: VlogPosition) {
        if mark > self.recorded_synced {
            self.vlog.synced_to(mark);
            self.put(META, VLOG_SYNCED_KEY.to_vec(), mark.encode().to_vec());
            self.recorded_synced = mark;
        }
    }

    // ---- compaction and checks -------------------------------------------

    /// Rewrites the live records of sparse sealed segments into the active
    /// segment, re-points their index entries in one batch, then
    /// deletes the old segments.
    pub(crate) fn compact(&mut self) -> Result<CompactReport> {
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
        let pointers = POINTER_SPACES
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
            self.put(space, key, ResultValue::Pointer(new).encode());
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

    /// Compares the counters and the in-memory queues with a full scan of
    /// what is committed.
    pub(crate) fn check(&self) -> Result<CheckReport> {
        // Every checksum is verified again, not taken from earlier reads.
        self.vlog.reader().forget_verified();
        let mut report = CheckReport::default();
        let mut scanned = Counters::default();
        let mut terminal = HashSet::new();
        for item in self.spaces.scan(JOBS, &[]) {
            let (k, v) = item?;
            let id = crate::keys::read_u64(&k, "jobs key")?;
            let (job, _) = decode_job(id, &v)?;
            scanned.enter(&job);
            report.jobs += 1;
            if job.state.is_terminal() {
                terminal.insert(id);
            } else if !self.active.contains_key(&id) {
                report.problems.push(format!(
                    "job {id} is {} on disk but not in the queue",
                    job.state.as_str()
                ));
            }
            if let Some(active) = self.active.get(&id)
                && active.state != job.state
            {
                report.problems.push(format!(
                    "job {id} is {} on disk but {} in memory",
                    job.state.as_str(),
                    active.state.as_str()
                ));
            }
        }
        if scanned != self.counters {
            report.problems.push(format!(
                "counters {:?} but a scan finds {:?}",
                self.counters, scanned
            ));
        }
        let in_history: HashSet<JobId> = self.history.iter().map(|f| f.id).collect();
        for id in in_history.difference(&terminal) {
            report.problems.push(format!(
                "history lists job {id}, which is not a finished job on disk"
            ));
        }
        for id in terminal.difference(&in_history) {
            report
                .problems
                .push(format!("finished job {id} is missing from history"));
        }
        for (id, job) in &self.active {
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
                report.problems.push(format!(
                    "job {id} ({}) is filed in the wrong queues",
                    job.state.as_str()
                ));
            }
        }
        let reader = self.vlog.reader();
        for item in self.spaces.scan(RESULTS, &[]) {
            let (k, v) = item?;
            let key = SeriesKey::decode(&k)?;
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

fn reject(op: Op, cause: &str) {
    let err = || StoreError::Poisoned {
        cause: cause.to_owned(),
    };
    let _ = match op {
        Op::Enqueue { reply, .. } => reply.send(Err(err())).is_ok(),
        Op::Claim { reply, .. } => reply.send(Err(err())).is_ok(),
        Op::Heartbeat { reply, .. } => reply.send(Err(err())).is_ok(),
        Op::Complete { reply, .. } => reply.send(Err(err())).is_ok(),
        Op::Checkpoint { reply, .. } => reply.send(Err(err())).is_ok(),
        Op::Fail { reply, .. } => reply.send(Err(err())).is_ok(),
        Op::Cancel { reply, .. } => reply.send(Err(err())).is_ok(),
        Op::SetPaused { reply, .. } | Op::Sync { reply } | Op::PowerLoss { reply, .. } => {
            reply.send(Err(err())).is_ok()
        }
        Op::Purge { reply, .. } => reply.send(Err(err())).is_ok(),
        Op::Compact { reply } => reply.send(Err(err())).is_ok(),
        Op::Check { reply } => reply.send(Err(err())).is_ok(),
        Op::History { reply, .. } => reply.send(Err(err())).is_ok(),
        Op::StageBars { reply, .. } => reply.send(Err(err())).is_ok(),
        Op::IngestBars { reply, .. } => reply.send(Err(err())).is_ok(),
        Op::UnstageBars { .. } | Op::FailNextCommit | Op::Shutdown => true,
    };
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
