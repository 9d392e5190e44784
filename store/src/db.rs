//! Opening a data directory, the configuration with every bound, and the
//! [`Store`] handle: reads go straight to sled and the value log, writes go
//! to the writer thread and wait for their group commit.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, bounded};

use crate::disk::Disk;
use crate::error::{Result, StoreError};
use crate::job::{
    CancelOutcome, Clock, Enqueued, FailOutcome, Job, JobId, JobState, Lease, LeaseToken, NewJob,
    Priority, RetryPolicy,
};
use crate::keys::{SeriesKey, Symbol, symbol_prefix, u64_key};
use crate::record::{
    FORMAT_VERSION, INLINE_HEADER_BYTES, ResultValue, Series, SeriesLayout, SymbolStats,
    decode_job, encode_series, series_layout,
};
use crate::recovery::{LostRecord, RecoveryReport, recover};
use crate::space::Spaces;
use crate::vlog::{Mapped, Vlog, VlogPosition, VlogReader};
use crate::writer::{
    DATA_VERSIONS, EncodedCompletion, EncodedSeries, JOBS, META, Op, POINTER_SPACES, RESULTS,
    SYMSTATS, VLOG_SYNCED_KEY, Writer,
};
use crate::{JobQueue, ResultStore};

/// What "acknowledged" means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged = on disk: every group is flushed and fsynced before any
    /// caller in it is answered. Survives a process crash and power loss.
    #[default]
    Sync,
    /// Acknowledged = applied: visible to readers at once, flushed and fsynced
    /// in the background within about `tick_ms`. A process crash or power
    /// loss can lose that window of acknowledged writes (never a torn group:
    /// what survives is always a prefix of whole groups). Feature series go
    /// to the value log without an fsync on the commit path; after a power
    /// loss, open finds the results whose bytes did not reach the disk and
    /// takes back their jobs' completions (results dropped, job queued
    /// again), each job's completion staying all or nothing.
    Relaxed,
}

/// Every knob and bound of the store. Units are last in each name.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// See [`Durability`].
    pub durability: Durability,
    /// Attempts a job gets unless it says otherwise.
    pub attempts_max: u32,
    /// Backoff between attempts.
    pub retry: RetryPolicy,
    /// Lease length of [`JobQueue::claim`].
    pub lease_ms: u64,
    /// Unfinished jobs allowed at once; beyond it enqueue answers `QueueFull`.
    pub queue_depth_max: u64,
    /// Largest job payload.
    pub payload_bytes_max: usize,
    /// Most symbols on one job.
    pub job_symbols_max: usize,
    /// Most jobs in one enqueue, claim or complete call.
    pub batch_jobs_max: usize,
    /// Largest archived series.
    pub series_bytes_max: usize,
    /// Most archived series bytes in one complete call (bounds the memory a
    /// call holds and the size of one commit).
    pub complete_bytes_max: usize,
    /// Archived series up to this size are kept inline in sled (no value-log
    /// fsync); larger ones go to the value log.
    pub inline_series_bytes_max: usize,
    /// Most operations the writer commits as one group.
    pub group_ops_max: usize,
    /// How long the writer waits for more callers' ops before committing a
    /// group, when the previous group had more callers than have arrived.
    pub group_linger_us: u64,
    /// Capacity of the channel to the writer (callers block beyond it).
    pub channel_ops_max: usize,
    /// Finished jobs kept; older ones are purged.
    pub history_max: u64,
    /// Events kept in the event log; older ones are dropped.
    pub events_max: u64,
    /// Finished jobs older than this are purged; `None` keeps them (up to `history_max`).
    pub retention_ms: Option<u64>,
    /// A value-log segment is sealed when it reaches this size.
    pub segment_bytes_max: u64,
    /// Sealed segments with a smaller live fraction are compacted.
    pub compact_live_fraction_min: f64,
    /// sled's page cache.
    pub cache_bytes_max: u64,
    /// Writer housekeeping period: lease expiry when idle, relaxed flushes.
    pub tick_ms: u64,
    /// Where "now" comes from.
    pub clock: Clock,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            durability: Durability::Sync,
            attempts_max: 4,
            retry: RetryPolicy::default(),
            lease_ms: 30_000,
            queue_depth_max: 1_000_000,
            payload_bytes_max: 64 * 1024,
            job_symbols_max: 10_000,
            batch_jobs_max: 10_000,
            series_bytes_max: 64 * 1024 * 1024,
            complete_bytes_max: 1024 * 1024 * 1024,
            inline_series_bytes_max: 2048,
            group_ops_max: 256,
            group_linger_us: 200,
            channel_ops_max: 4096,
            history_max: 100_000,
            events_max: 100_000,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            segment_bytes_max: 256 * 1024 * 1024,
            compact_live_fraction_min: 0.5,
            cache_bytes_max: 64 * 1024 * 1024,
            tick_ms: 50,
            clock: Clock::System,
        }
    }
}

/// State the writer publishes for lock-free reads.
#[derive(Default)]
pub(crate) struct Shared {
    by_state: [AtomicU64; 6],
    depth: [AtomicU64; 3],
    paused: [AtomicBool; 3],
    poisoned: AtomicBool,
    cause: Mutex<Option<String>>,
    /// Open bar-ingest sessions; compaction waits while their staged,
    /// not yet indexed value-log records exist.
    pub(crate) staging: AtomicUsize,
    /// Every symbol's data version, as committed: read without touching
    /// sled (whose batches block all its readers while they apply).
    pub(crate) versions: std::sync::RwLock<std::collections::HashMap<Symbol, crate::DataVersion>>,
}

impl Shared {
    pub(crate) fn publish(&self, c: &crate::writer::Counters, paused: &[bool; 3]) {
        for (a, n) in self.by_state.iter().zip(c.by_state) {
            a.store(n, Ordering::Relaxed);
        }
        for (a, n) in self.depth.iter().zip(c.depth) {
            a.store(n, Ordering::Relaxed);
        }
        for (a, p) in self.paused.iter().zip(paused) {
            a.store(*p, Ordering::Relaxed);
        }
    }

    pub(crate) fn poison(&self, cause: &str) {
        if let Ok(mut c) = self.cause.lock() {
            c.get_or_insert_with(|| cause.to_owned());
        }
        self.poisoned.store(true, Ordering::SeqCst);
    }

    pub(crate) fn poison_cause(&self) -> Option<String> {
        if !self.poisoned.load(Ordering::SeqCst) {
            return None;
        }
        let cause = self.cause.lock().ok().and_then(|c| c.clone());
        Some(cause.unwrap_or_else(|| "unknown".into()))
    }
}

/// Counts read without asking the writer (O(1)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Jobs per [`JobState`], indexed by `state as usize`.
    pub by_state: [u64; 6],
    /// Waiting jobs (queued or awaiting retry) per [`Priority`].
    pub depth: [u64; 3],
    /// Paused priorities.
    pub paused: [bool; 3],
}

impl QueueStats {
    /// Jobs in `state`.
    pub fn count(&self, state: JobState) -> u64 {
        self.by_state[state as usize]
    }

    /// Waiting jobs of priority `p`.
    pub fn depth(&self, p: Priority) -> u64 {
        self.depth[p as usize]
    }

    /// Jobs not finished: queued, running or waiting for a retry.
    pub fn unfinished(&self) -> u64 {
        self.count(JobState::Queued) + self.count(JobState::Running) + self.count(JobState::Failed)
    }
}

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

/// What an integrity scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Jobs scanned.
    pub jobs: u64,
    /// Series scanned (each read back and checksummed).
    pub series: u64,
    /// Bar chunks scanned (each read back, checksummed, and summed against
    /// its symbol's data version).
    pub bar_chunks: u64,
    /// Jobs per state, by the scan.
    pub counters_by_state: [u64; 6],
    /// Every inconsistency, in words; empty when the store is sound.
    pub problems: Vec<String>,
}

/// A job's completion: the lease and the series it produced.
#[derive(Clone, Debug)]
pub struct Completion {
    /// The claim being completed.
    pub token: LeaseToken,
    /// Result series, written in the same batch that marks the job succeeded.
    pub results: Vec<(SeriesKey, Series)>,
}

/// A stored series, read in place from the value log (validated and
/// checksummed when the view was made).
pub struct SeriesView {
    bytes: ViewBytes,
    layout: SeriesLayout,
}

pub(crate) enum ViewBytes {
    /// In a mapped value-log segment.
    Mapped(Mapped),
    /// A small series kept inline in its sled value.
    Inline(sled::IVec),
    /// An aligned copy, used only when the bytes above are misaligned.
    Copied(rkyv::util::AlignedVec),
}

impl ViewBytes {
    /// These bytes, or an aligned copy when they cannot hold a `T` in place
    /// (8-aligned at least: archived f64 and i64 columns need it, whatever
    /// the container's own alignment).
    pub(crate) fn aligned_for<T>(self) -> Self {
        let align = std::mem::align_of::<T>().max(8);
        if (self.raw().as_ptr() as usize).is_multiple_of(align) {
            self
        } else {
            let mut copy = rkyv::util::AlignedVec::new();
            copy.extend_from_slice(self.raw());
            ViewBytes::Copied(copy)
        }
    }

    pub(crate) fn raw(&self) -> &[u8] {
        match self {
            ViewBytes::Mapped(m) => m.bytes(),
            ViewBytes::Inline(v) => v.get(INLINE_HEADER_BYTES..).unwrap_or(&[]),
            ViewBytes::Copied(c) => c.as_slice(),
        }
    }
}

impl SeriesView {
    fn new(bytes: ViewBytes, location: &dyn Fn() -> String) -> Result<Self> {
        let bytes = bytes.aligned_for::<crate::record::ArchivedSeries>();
        let layout = series_layout(bytes.raw(), location)?;
        Ok(SeriesView { bytes, layout })
    }

    fn raw(&self) -> &[u8] {
        self.bytes.raw()
    }

    /// The values, in place (no copy).
    pub fn values(&self) -> &[f64] {
        let l = &self.layout;
        self.raw()
            .get(l.values_offset..l.values_offset + l.values_len * 8)
            .and_then(|b| bytemuck::try_cast_slice(b).ok())
            .unwrap_or(&[])
    }

    /// The saved kernel state.
    pub fn state(&self) -> &[u8] {
        let l = &self.layout;
        self.raw()
            .get(l.state_offset..l.state_offset + l.state_len)
            .unwrap_or(&[])
    }

    /// Bars the series was computed from.
    pub fn bar_count(&self) -> u64 {
        self.layout.bar_count
    }

    /// Timestamp of the last bar it was computed from.
    pub fn last_ts(&self) -> i64 {
        self.layout.last_ts
    }

    /// Content hash of the bars it was computed from.
    pub fn data_hash(&self) -> u64 {
        self.layout.data_hash
    }

    /// Whether it was computed from exactly the bars of `version`.
    pub fn is_current(&self, version: &crate::DataVersion) -> bool {
        self.bar_count() == version.bars
            && self.last_ts() == version.last_ts
            && self.data_hash() == version.hash
    }

    /// An owned copy.
    pub fn to_series(&self) -> Series {
        Series {
            bar_count: self.bar_count(),
            last_ts: self.last_ts(),
            data_hash: self.data_hash(),
            values: self.values().to_vec(),
            state: self.state().to_vec(),
        }
    }
}

impl std::fmt::Debug for SeriesView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesView")
            .field("bar_count", &self.bar_count())
            .field("last_ts", &self.last_ts())
            .field("values", &self.values().len())
            .finish()
    }
}

/// The name of the file holding the data directory's format version.
pub const FORMAT_FILE: &str = "FORMAT_VERSION";

/// A handle to an open store. Cheap to clone; the writer thread stops when
/// the last handle is dropped, after committing what it was sent.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Sender<Op>,
    spaces: Spaces,
    vlog: Arc<VlogReader>,
    shared: Arc<Shared>,
    config: StoreConfig,
    recovery: RecoveryReport,
    dir: PathBuf,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The directory's lock, released when the last handle is dropped.
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.tx.send(Op::Shutdown);
        if let Ok(mut w) = self.writer.lock()
            && let Some(handle) = w.take()
        {
            let _ = handle.join();
        }
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, runs recovery, starts the writer.
    pub fn open(dir: impl AsRef<Path>, config: StoreConfig) -> Result<Store> {
        let dir = dir.as_ref().to_path_buf();
        check_config(&config)?;
        fs::create_dir_all(&dir)
            .map_err(|e| StoreError::io(format!("create {}", dir.display()), e))?;
        // Checked before the lock, so a foreign directory gets no lock file;
        // written (when new) under it, so two processes cannot both create.
        check_format_file(&dir, false)?;
        let lock = lock_dir(&dir)?;
        check_format_file(&dir, true)?;
        let sled_dir = dir.join("sled");
        let partial_snapshots = remove_partial_snapshots(&sled_dir)?;
        let db = sled::Config::new()
            .path(&sled_dir)
            .cache_capacity(config.cache_bytes_max)
            .flush_every_ms(Some(config.tick_ms.max(1) * 10))
            .open()
            .map_err(|e| match e {
                sled::Error::Io(source) => StoreError::io(
                    format!(
                        "open {} (is another kiln using this directory?)",
                        sled_dir.display()
                    ),
                    source,
                ),
                other => StoreError::from(other),
            })?;
        let spaces = Spaces::new(db.open_tree("kiln")?);
        let disk = Arc::new(Disk::new(db, &sled_dir)?);

        let mut indexed = Vec::new();
        let mut keys = Vec::new();
        for space in POINTER_SPACES {
            for item in spaces.scan(space, &[]) {
                let (k, v) = item?;
                if let ResultValue::Pointer(entry) = ResultValue::decode(&v)? {
                    indexed.push(entry);
                    keys.push((space, k));
                }
            }
        }
        let synced = match spaces.get(META, VLOG_SYNCED_KEY)? {
            Some(v) => Some(VlogPosition::decode(&v)?),
            None => None,
        };
        let (vlog, vlog_recovery, lost) = Vlog::open(
            &dir.join("vlog"),
            config.segment_bytes_max,
            &indexed,
            synced,
        )?;
        let lost: Vec<LostRecord> = lost
            .into_iter()
            .map(|i| LostRecord {
                space: keys[i].0,
                key: keys[i].1.to_vec(),
                job_id: indexed[i].job_id,
            })
            .collect();
        drop((indexed, keys));
        let reader = vlog.reader();
        let shared = Arc::new(Shared::default());
        let mut writer = Writer {
            config: config.clone(),
            disk,
            spaces: spaces.clone(),
            vlog,
            shared: Arc::clone(&shared),
            active: Default::default(),
            due: Default::default(),
            scheduled: Default::default(),
            leases: Default::default(),
            idem: Default::default(),
            paused: [false; 3],
            history: Default::default(),
            symstats: Default::default(),
            counters: Default::default(),
            next_id: 1,
            next_finish_seq: 1,
            next_event_seq: 1,
            first_event_seq: 1,
            writes: Default::default(),
            dirty_jobs: Default::default(),
            dirty_symstats: Default::default(),
            fatal: None,
            fail_next_commit: false,
            meta_dirty: false,
            recorded_synced: VlogPosition::default(),
            vlog_sync_required: false,
            flusher: None,
            power_lost: false,
            new_versions: Vec::new(),
            syncer: None,
        };
        let mut recovery = recover(&mut writer, &lost)?;
        recovery.vlog = vlog_recovery;
        recovery.partial_snapshots_removed = partial_snapshots;
        shared.publish(&writer.counters, &writer.paused);
        {
            let mut versions = std::collections::HashMap::new();
            for item in spaces.scan(DATA_VERSIONS, &[]) {
                let (k, v) = item?;
                let symbol = Symbol::new(String::from_utf8_lossy(&k).into_owned())?;
                if let Some(r) = crate::bars::decode_version(Some(v), &symbol)? {
                    versions.insert(symbol, r.version);
                }
            }
            if let Ok(mut m) = shared.versions.write() {
                *m = versions;
            }
        }

        let (tx, rx) = bounded(config.channel_ops_max.max(1));
        let handle = std::thread::Builder::new()
            .name("kiln-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::io("spawn the writer thread", e))?;
        Ok(Store {
            inner: Arc::new(Inner {
                tx,
                spaces,
                vlog: reader,
                shared,
                config,
                recovery,
                dir,
                writer: Mutex::new(Some(handle)),
                _lock: lock,
            }),
        })
    }

    /// What recovery found and repaired when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Why writes are refused, if they are.
    pub fn poisoned(&self) -> Option<String> {
        self.inner.shared.poison_cause()
    }

    /// Sends an op to the writer and waits for its group commit.
    /// Archives completions' series, checking `series_bytes_max` and
    /// `complete_bytes_max` (which bounds one call).
    fn encode_completions(&self, completions: Vec<Completion>) -> Result<Vec<EncodedCompletion>> {
        let max = self.inner.config.series_bytes_max;
        let total_max = self.inner.config.complete_bytes_max;
        let mut total = 0usize;
        let mut items = Vec::with_capacity(completions.len());
        for c in completions {
            let mut results = Vec::with_capacity(c.results.len());
            for (key, series) in c.results {
                let bytes = encode_series(&series)?;
                if bytes.len() > max {
                    return Err(StoreError::invalid(
                        "series",
                        format!(
                            "{}/{} archives to {} bytes, limit series_bytes_max = {max}",
                            key.symbol,
                            key.feature,
                            bytes.len()
                        ),
                    ));
                }
                total += bytes.len();
                if total > total_max {
                    return Err(StoreError::invalid(
                        "series",
                        format!(
                            "one complete call archives more than complete_bytes_max = {total_max} bytes"
                        ),
                    ));
                }
                results.push(EncodedSeries { key, bytes });
            }
            items.push(EncodedCompletion {
                token: c.token,
                results,
            });
        }
        Ok(items)
    }

    /// Stores part of a running job's results under its lease, durably,
    /// without finishing the job: a job over many symbols checkpoints each
    /// finished symbol, so after a crash its next attempt can skip them.
    pub fn checkpoint(&self, token: LeaseToken, results: Vec<(SeriesKey, Series)>) -> Result<()> {
        let mut items = self.encode_completions(vec![Completion { token, results }])?;
        let item = items.pop().ok_or(StoreError::Closed)?;
        self.call(|reply| Op::Checkpoint { item, reply })
    }

    pub(crate) fn spaces(&self) -> &Spaces {
        &self.inner.spaces
    }

    pub(crate) fn vlog_reader(&self) -> &VlogReader {
        &self.inner.vlog
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Sends an op that has no answer.
    pub(crate) fn send(&self, op: Op) -> Result<()> {
        self.inner.tx.send(op).map_err(|_| StoreError::Closed)
    }

    pub(crate) fn call<T>(&self, make: impl FnOnce(Sender<Result<T>>) -> Op) -> Result<T> {
        if let Some(cause) = self.inner.shared.poison_cause() {
            return Err(StoreError::Poisoned { cause });
        }
        let (tx, rx) = bounded(1);
        self.inner
            .tx
            .send(make(tx))
            .map_err(|_| StoreError::Closed)?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    fn check_batch(&self, what: &'static str, n: usize) -> Result<()> {
        let max = self.inner.config.batch_jobs_max;
        if n > max {
            return Err(StoreError::invalid(
                what,
                format!("{n} in one call, limit batch_jobs_max = {max}"),
            ));
        }
        Ok(())
    }

    /// Makes everything acknowledged so far durable (a no-op in `Sync` mode,
    /// where acknowledged already means durable).
    pub fn sync(&self) -> Result<()> {
        self.call(|reply| Op::Sync { reply })
    }

    /// Compacts sparse value-log segments now (it also runs by itself when idle).
    pub fn compact(&self) -> Result<CompactReport> {
        self.call(|reply| Op::Compact { reply })
    }

    /// Scans everything and reports any inconsistency (the `kiln check` scan).
    pub fn check(&self) -> Result<CheckReport> {
        self.call(|reply| Op::Check { reply })
    }

    /// Removes finished jobs older than `age_ms`; returns how many.
    pub fn purge_finished_older_than(&self, age_ms: u64) -> Result<u64> {
        self.call(|reply| Op::Purge {
            older_than_ms: age_ms,
            reply,
        })
    }

    /// The most recent finished jobs (at most `limit`), newest first.
    pub fn history(&self, limit: usize) -> Result<Vec<Job>> {
        let ids = self.call(|reply| Op::History { limit, reply })?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            // A purge may have removed it since; skip it then.
            if let Some(job) = self.job(id)? {
                out.push(job);
            }
        }
        Ok(out)
    }

    /// Up to `limit` jobs, newest first, optionally only those in `state`
    /// (a scan of the jobs table: for listings, not hot paths).
    pub fn jobs(&self, state: Option<JobState>, limit: usize) -> Result<Vec<Job>> {
        let mut out = Vec::new();
        for item in self.inner.spaces.scan(JOBS, &[]).rev() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let id = crate::keys::read_u64(&k, "jobs key")?;
            let (job, _) = decode_job(id, &v)?;
            if state.is_none_or(|s| s == job.state) {
                out.push(job);
            }
        }
        Ok(out)
    }

    /// Aggregates over a symbol's finished jobs.
    pub fn symbol_stats(&self, symbol: &Symbol) -> Result<SymbolStats> {
        match self
            .inner
            .spaces
            .get(SYMSTATS, symbol.as_str().as_bytes())?
        {
            Some(v) => SymbolStats::decode(&v),
            None => Ok(SymbolStats::default()),
        }
    }

    /// Test hook: makes the writer's next commit fail as an I/O error would,
    /// which poisons the store.
    #[doc(hidden)]
    pub fn inject_commit_failure(&self) -> Result<()> {
        self.inner
            .tx
            .send(Op::FailNextCommit)
            .map_err(|_| StoreError::Closed)
    }

    /// Test hook: stops the store as a power loss right now could leave it
    /// in `Relaxed` mode: sled's index on disk, and with `truncate` the value
    /// log cut back to the synced mark (without, the value log is left as it
    /// is for the test to damage). Every later call answers `Closed`; drop it
    /// and reopen.
    #[doc(hidden)]
    pub fn simulate_power_loss(&self, truncate: bool) -> Result<()> {
        self.call(|reply| Op::PowerLoss { truncate, reply })
    }
}

/// Takes the data directory's lock file, held while the store is open, so
/// that no second process touches the directory (not even the repairs made
/// before sled takes its own lock).
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::io(
            format!(
                "lock {} (is another kiln using this directory?)",
                path.display()
            ),
            std::io::Error::from(std::io::ErrorKind::WouldBlock),
        )),
        Err(fs::TryLockError::Error(e)) => {
            Err(StoreError::io(format!("lock {}", path.display()), e))
        }
    }
}

/// Removes sled snapshot files a crash left half-written. sled 0.34 writes
/// a snapshot to `snap.<lsn>.generating`, fsyncs it and renames it; a kill
/// before the rename leaves the file behind, and sled's next open picks it
/// (it sorts last) and fails with "Read corrupted data at file offset None"
/// (sled issues #1509, #1527, #1533). A snapshot only speeds up recovery:
/// without it sled replays its log from the previous complete snapshot.
fn remove_partial_snapshots(sled_dir: &Path) -> Result<u32> {
    let entries = match fs::read_dir(sled_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io(format!("list {}", sled_dir.display()), e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(format!("list {}", sled_dir.display()), e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            let path = entry.path();
            tracing::warn!(file = %path.display(), "removing a half-written sled snapshot left by a crash");
            fs::remove_file(&path)
                .map_err(|e| StoreError::io(format!("remove {}", path.display()), e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        File::open(sled_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(format!("fsync {}", sled_dir.display()), e))?;
    }
    Ok(removed)
}

fn check_config(c: &StoreConfig) -> Result<()> {
    let bad =
        |field: &'static str, reason: &str| Err(StoreError::invalid(field, reason.to_owned()));
    if c.attempts_max == 0 || c.attempts_max > crate::job::ATTEMPTS_MAX_LIMIT {
        return bad("attempts_max", "must be 1 to 1000");
    }
    if c.group_ops_max == 0 || c.batch_jobs_max == 0 || c.queue_depth_max == 0 {
        return bad(
            "config",
            "group_ops_max, batch_jobs_max and queue_depth_max must be positive",
        );
    }
    if !(0.0..=1.0).contains(&c.compact_live_fraction_min) {
        return bad("compact_live_fraction_min", "must be within 0 and 1");
    }
    if c.inline_series_bytes_max > 64 * 1024 {
        // sled moves values above 128 KiB to blob files; keep well below.
        return bad("inline_series_bytes_max", "must be at most 65536");
    }
    if c.segment_bytes_max < 4096 {
        return bad("segment_bytes_max", "must be at least 4096");
    }
    Ok(())
}

/// Checks the format file of an existing directory; in a new one (empty
/// but for kiln's own lock file and a format file whose creation a crash
/// interrupted), writes it when `create` is set (via a temporary file,
/// renamed and fsynced, so it is whole or absent).
fn check_format_file(dir: &Path, create: bool) -> Result<()> {
    let path = dir.join(FORMAT_FILE);
    let tmp = dir.join(format!("{FORMAT_FILE}.tmp"));
    let expected = format!("kiln-store {FORMAT_VERSION}\n");
    match fs::read_to_string(&path) {
        Ok(found) if found == expected => Ok(()),
        Ok(found) => Err(StoreError::FormatVersion {
            path,
            found: found.trim().to_owned(),
            expected: FORMAT_VERSION,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let list = |e| StoreError::io(format!("list {}", dir.display()), e);
            for entry in fs::read_dir(dir).map_err(list)? {
                let name = entry.map_err(list)?.file_name();
                if name != "LOCK" && name != tmp.file_name().unwrap_or_default() {
                    return Err(StoreError::FormatVersion {
                        path,
                        found: "none (the directory is not empty and has no format file)".into(),
                        expected: FORMAT_VERSION,
                    });
                }
            }
            if !create {
                return Ok(());
            }
            fs::write(&tmp, &expected)
                .and_then(|()| File::open(&tmp)?.sync_all())
                .and_then(|()| fs::rename(&tmp, &path))
                .and_then(|()| File::open(dir)?.sync_all())
                .map_err(|e| StoreError::io(format!("write {}", path.display()), e))
        }
        Err(e) => Err(StoreError::io(format!("read {}", path.display()), e)),
    }
}

impl JobQueue for Store {
    fn enqueue(&self, job: NewJob) -> Result<Enqueued> {
        let mut out = self.enqueue_many(vec![job])?;
        out.pop().ok_or(StoreError::Closed)
    }

    fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        self.check_batch("enqueue", jobs.len())?;
        for j in &jobs {
            j.validate(&self.inner.config)?;
        }
        self.call(|reply| Op::Enqueue { jobs, reply })
    }

    fn claim(&self, max: usize) -> Result<Vec<Lease>> {
        self.claim_with_lease(max, self.inner.config.lease_ms)
    }

    fn claim_with_lease(&self, max: usize, lease_ms: u64) -> Result<Vec<Lease>> {
        self.check_batch("claim", max)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        self.call(|reply| Op::Claim {
            max,
            lease_ms,
            reply,
        })
    }

    fn heartbeat(&self, token: LeaseToken, extend_ms: u64) -> Result<u64> {
        self.call(|reply| Op::Heartbeat {
            token,
            extend_ms,
            reply,
        })
    }

    fn complete(&self, token: LeaseToken, results: Vec<(SeriesKey, Series)>) -> Result<()> {
        let mut out = self.complete_many(vec![Completion { token, results }])?;
        out.pop().ok_or(StoreError::Closed)?
    }

    fn complete_many(&self, completions: Vec<Completion>) -> Result<Vec<Result<()>>> {
        self.check_batch("complete", completions.len())?;
        let items = self.encode_completions(completions)?;
        self.call(|reply| Op::Complete { items, reply })
    }

    fn fail(&self, token: LeaseToken, error: &str) -> Result<FailOutcome> {
        self.call(|reply| Op::Fail {
            token,
            error: error.to_owned(),
            permanent: false,
            reply,
        })
    }

    fn fail_permanently(&self, token: LeaseToken, error: &str) -> Result<FailOutcome> {
        self.call(|reply| Op::Fail {
            token,
            error: error.to_owned(),
            permanent: true,
            reply,
        })
    }

    fn cancel(&self, id: JobId) -> Result<CancelOutcome> {
        self.call(|reply| Op::Cancel { id, reply })
    }

    fn set_paused(&self, priority: Priority, paused: bool) -> Result<()> {
        self.call(|reply| Op::SetPaused {
            priority,
            paused,
            reply,
        })
    }

    fn job(&self, id: JobId) -> Result<Option<Job>> {
        match self.inner.spaces.get(JOBS, &u64_key(id))? {
            Some(bytes) => Ok(Some(decode_job(id, &bytes)?.0)),
            None => Ok(None),
        }
    }

    fn stats(&self) -> QueueStats {
        let s = &self.inner.shared;
        QueueStats {
            by_state: std::array::from_fn(|i| s.by_state[i].load(Ordering::Relaxed)),
            depth: std::array::from_fn(|i| s.depth[i].load(Ordering::Relaxed)),
            paused: std::array::from_fn(|i| s.paused[i].load(Ordering::Relaxed)),
        }
    }
}

impl ResultStore for Store {
    fn series(&self, key: &SeriesKey) -> Result<Option<SeriesView>> {
        let encoded = key.encode();
        let location = || format!("{}/{}", key.symbol, key.feature);
        // A compaction can delete the segment between the index read and the
        // map; the index then already points elsewhere, so read it again.
        for _ in 0..3 {
            let Some(v) = self.inner.spaces.get(RESULTS, &encoded)? else {
                return Ok(None);
            };
            match ResultValue::decode(&v)? {
                ResultValue::Inline { .. } => {
                    return SeriesView::new(ViewBytes::Inline(v), &location).map(Some);
                }
                ResultValue::Pointer(entry) => {
                    if let Some(mapped) = self.inner.vlog.read(&entry)? {
                        return SeriesView::new(ViewBytes::Mapped(mapped), &location).map(Some);
                    }
                }
            }
        }
        Err(StoreError::corrupt(
            location(),
            "its value-log segment keeps disappearing",
        ))
    }

    fn series_keys(&self, symbol: &Symbol) -> Result<Vec<SeriesKey>> {
        self.inner
            .spaces
            .scan(RESULTS, &symbol_prefix(symbol))
            .map(|item| SeriesKey::decode(&item?.0))
            .collect()
    }

    fn series_writer(&self, key: &SeriesKey) -> Result<Option<JobId>> {
        match self.inner.spaces.get(RESULTS, &key.encode())? {
            Some(v) => Ok(Some(ResultValue::decode(&v)?.job_id())),
            None => Ok(None),
        }
    }
}
