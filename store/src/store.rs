//! The [`Store`] handle and opening a data directory (its lock, its format
//! file, sled, the value log, recovery, the writer thread). Reads go
//! straight to sled and the value log; writes go to the writer thread and
//! wait for their group commit. The store implements the storage traits of
//! `kiln-core`: the queue here, the others beside what they read (`series`,
//! `bars`, `events`).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, bounded};
use kiln_core::{
    Backend, CancelOutcome, CheckReport, Completion, Enqueued, FailOutcome, FrameWrite, Job,
    JobFilter, JobId, JobQueue, Lease, LeaseToken, NewJob, Priority, QueueConfig, QueueStats,
    Result, StoreError, Symbol, SymbolStats,
};

use crate::config::StoreConfig;
use crate::disk::Disk;
use crate::frame::live_value_start;
use crate::generation::{self, CommitRecord};
use crate::keys::{read_u64, u64_key};
use crate::record::{
    FORMAT_VERSION, MIGRATED_FORMAT_VERSION, READABLE_FORMAT_VERSIONS, ResultValue,
    VLOG_SYNCED_KEY, decode_job, decode_job_input,
};
use crate::shared::Shared;
use crate::space::{Space, Spaces, TREE, sled_error};
use crate::vlog::{Vlog, VlogPosition, VlogReader};
use crate::writer::recovery::LostRecord;
use crate::writer::{
    After, Apply, CompactReport, EncodedCompletion, EncodedFrame, Op, RecoveryReport, Writer,
};

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
    /// sled's generation directory.
    sled_dir: PathBuf,
    /// The commit numbers: how far commits are applied and durable.
    disk: Arc<Disk>,
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
    /// Stops the writer, then closes sled, whose own close flushes and
    /// fsyncs once more: never after a failed fsync (every sled handle is
    /// leaked instead: the process must not retry it; see `SledHandle`).
    fn drop(&mut self) {
        let _ = self.tx.send(Op::Shutdown);
        if let Ok(mut w) = self.writer.lock()
            && let Some(handle) = w.take()
        {
            let _ = handle.join();
        }
        self.disk.stop_nudger();
        // Its sled handles, dropped next, are leaked (see `SledHandle`).
        if self.shared.poisoned().is_some_and(|p| p.fatal) {
            crate::shared::note_fsync_failure();
        }
    }
}

impl Store {
    /// `job`, read from its record, with its input (kept in the record, or
    /// apart).
    fn with_input(&self, mut job: Job) -> Result<Job> {
        if job.payload.is_empty()
            && job.symbols.is_empty()
            && let Some(input) = self.spaces().get(Space::JobInputs, &u64_key(job.id))?
        {
            (job.payload, job.symbols) = decode_job_input(job.id, &input)?;
        }
        Ok(job)
    }

    /// Opens (or creates) the store in `dir`, runs recovery, starts the writer.
    /// A directory an fsync failed for earlier in this process does not open
    /// again (`StoreError::Poisoned`, fatal): a new process must.
    pub fn open(dir: impl AsRef<Path>, config: StoreConfig) -> Result<Store> {
        let dir = dir.as_ref().to_path_buf();
        config.check()?;
        if dir.exists() && !dir.is_dir() {
            return Err(StoreError::invalid(
                "data directory",
                format!("{} is a file, not a directory", dir.display()),
            ));
        }
        create_dir_durably(&dir)?;
        let canonical = dir
            .canonicalize()
            .map_err(|e| StoreError::io(format!("resolve {}", dir.display()), e))?;
        if let Some(cause) = crate::shared::fsync_failed(&canonical) {
            return Err(StoreError::Poisoned { cause, fatal: true });
        }
        Self::open_checked(dir, canonical.clone(), config).inspect_err(|e| {
            // A failed fsync of the open's own (a copy of sled, a new
            // segment) is one like any other.
            if e.is_fatal() {
                crate::shared::mark_fsync_failed(&canonical, e.to_string());
            }
        })
    }

    /// [`Store::open`] once `dir` is known to be allowed to open.
    fn open_checked(dir: PathBuf, canonical: PathBuf, config: StoreConfig) -> Result<Store> {
        // Checked before the lock, so a foreign directory gets no lock file;
        // written (when new) under it, so two processes cannot both create.
        check_format_file(&dir, false)?;
        let lock = lock_dir(&dir)?;
        let version = check_format_file(&dir, true)?;
        let sled = generation::open(&dir, &config)?;
        let (partial_snapshots, sled_dir) = (sled.partial_snapshots, sled.dir.clone());
        let replaced_first = sled.replaced_first.clone();
        let spaces = Spaces::new(sled.db.open_tree(TREE).map_err(sled_error)?, &sled.dir);
        let record = CommitRecord::open(&dir, sled.commit)?;
        let disk = Arc::new(Disk::new(sled.db, &sled.dir, record, sled.commit)?);
        Disk::start_nudger(&disk)?;

        let mut indexed = Vec::new();
        let mut keys = Vec::new();
        for space in Space::POINTERS {
            for item in spaces.scan(space, &[]) {
                let (k, v) = item?;
                let Some(start) = live_value_start(&spaces, space, &k, &v)? else {
                    continue;
                };
                if let ResultValue::Pointer(entry) = ResultValue::decode(&v[start..])? {
                    indexed.push(entry);
                    keys.push((space, k));
                }
            }
        }
        let synced = match spaces.get(Space::Meta, VLOG_SYNCED_KEY)? {
            Some(v) => Some(VlogPosition::decode(&v)?),
            None => None,
        };
        let (vlog, vlog_recovery, lost) = Vlog::open(
            &dir.join("vlog"),
            config.segment_bytes_max,
            &indexed,
            synced,
        )?;
        // The entries a first open creates (sled's generation, `vlog/`,
        // `COMMITTED`) are durable before anything is acknowledged.
        crate::shared::fsync_path(&dir)?;
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
        let shared = Arc::new(Shared::new(canonical));
        let commits = Arc::clone(&disk);
        let mut writer = Writer::new(
            config.clone(),
            disk,
            spaces.clone(),
            vlog,
            Arc::clone(&shared),
        );
        let mut recovery = writer.recover(&lost)?;
        recovery.vlog = vlog_recovery;
        recovery.partial_snapshots_removed = partial_snapshots;
        if version == MIGRATED_FORMAT_VERSION {
            recovery.migrated_series = writer.migrate_series()?;
        }
        if version != FORMAT_VERSION {
            // Format 4's layout became this format's when sled's first
            // copy was made above; format 5's shorter `Meta`, format 6's
            // shorter data versions and format 7's bar tails without one
            // read as they are, and the next commit writes this format's.
            write_format_file(&dir)?;
            tracing::info!(
                series = recovery.migrated_series,
                "migrated the store from format {version} to {FORMAT_VERSION}"
            );
        }
        // The format file says the current version: nothing needs the
        // first generation any more.
        if let Some(first) = replaced_first {
            generation::remove_generation(&dir, &first)?;
        }
        // Recovery and migration flushed what they committed.
        writer.publish();
        writer.reveal();
        {
            let mut versions = std::collections::HashMap::new();
            for item in spaces.scan(Space::DataVersions, &[]) {
                let (k, v) = item?;
                let symbol = Symbol::new(String::from_utf8_lossy(&k).into_owned())?;
                if let Some(d) = crate::bars::decode_version(Some(v), &symbol)? {
                    let r = crate::bars::current_record(d, &symbol, None, |k| {
                        spaces.get(Space::BarTails, k)
                    })?;
                    versions.insert(symbol, r);
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
                sled_dir,
                disk: commits,
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

    /// Bytes the store has handed to its files since it opened, by its own
    /// count: value-log records (headers and padding included) and the keys
    /// and values of every sled batch. sled's own framing, page rewrites
    /// and snapshots come on top (the process's `wchar` counts those too).
    pub fn bytes_written(&self) -> u64 {
        self.inner
            .shared
            .bytes_written
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until every commit applied before the call is durable (at once
    /// in `Relaxed` mode, where acknowledged means applied), `timeout`
    /// passed or the store failed; returns whether it is.
    pub(crate) fn wait_durable(&self, timeout: std::time::Duration) -> bool {
        if self.inner.config.durability == crate::Durability::Relaxed {
            return true;
        }
        let disk = &self.inner.disk;
        let target = disk.applied();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if disk.durable() >= target {
                return true;
            }
            if std::time::Instant::now() >= deadline || self.inner.shared.poisoned().is_some() {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    /// Makes everything acknowledged so far durable (a no-op in `Sync` mode,
    /// where acknowledged already means durable).
    pub fn sync(&self) -> Result<()> {
        self.call(|reply| Op::After(After::Sync { reply }))
    }

    /// Compacts sparse value-log segments now (it also runs by itself when idle).
    pub fn compact(&self) -> Result<CompactReport> {
        self.call(|reply| Op::After(After::Compact { reply }))
    }

    /// Encodes completions' frames, checking `series_bytes_max` (which
    /// bounds one frame write: a completion with a larger one is refused
    /// alone) and `complete_bytes_max` (the whole call).
    fn encode_completions(
        &self,
        completions: Vec<Completion>,
    ) -> Result<Vec<Result<EncodedCompletion>>> {
        let max = self.inner.config.queue.series_bytes_max;
        let total_max = self.inner.config.queue.complete_bytes_max;
        let mut total = 0usize;
        let mut items = Vec::with_capacity(completions.len());
        for c in completions {
            let mut results = Vec::with_capacity(c.results.len());
            let mut refused = None;
            let mut bytes = 0usize;
            for write in c.results {
                let frame = EncodedFrame::new(write)?;
                if frame.bytes() > max {
                    refused = Some(StoreError::TooLarge {
                        key: frame.key.to_string(),
                        bytes: frame.bytes(),
                        max,
                    });
                    break;
                }
                bytes += frame.bytes();
                results.push(frame);
            }
            // A refused completion stores nothing, so it counts for nothing.
            if refused.is_none() {
                total += bytes;
                if total > total_max {
                    return Err(StoreError::invalid(
                        "series",
                        format!(
                            "one complete call stores more than complete_bytes_max = {total_max} bytes"
                        ),
                    ));
                }
            }
            items.push(match refused {
                Some(e) => Err(e),
                None => Ok(EncodedCompletion {
                    token: c.token,
                    results,
                }),
            });
        }
        Ok(items)
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
        if let Some(poison) = self.inner.shared.poisoned() {
            return Err(poison.error());
        }
        let (tx, rx) = bounded(1);
        self.inner
            .tx
            .send(make(tx))
            .map_err(|_| StoreError::Closed)?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    fn check_batch(&self, what: &'static str, n: usize) -> Result<()> {
        let max = self.inner.config.queue.batch_jobs_max;
        if n > max {
            return Err(StoreError::invalid(
                what,
                format!("{n} in one call, limit batch_jobs_max = {max}"),
            ));
        }
        Ok(())
    }

    fn fail_with(&self, token: LeaseToken, error: &str, permanent: bool) -> Result<FailOutcome> {
        self.call(|reply| {
            Op::Apply(Apply::Fail {
                token,
                error: error.to_owned(),
                permanent,
                reply,
            })
        })
    }

    /// Test hook: makes the writer's next commit fail as a write (or, with
    /// `fsync`, an fsync) would, which poisons the store.
    #[cfg(feature = "test-hooks")]
    pub fn inject_commit_failure(&self, fsync: bool) -> Result<()> {
        self.send(Op::Apply(Apply::FailNextCommit { fsync }))
    }

    /// Test hook: forgets the failed fsyncs that keep directories from
    /// opening again in this process, as a new process would.
    #[cfg(feature = "test-hooks")]
    pub fn forget_failed_fsyncs() {
        crate::shared::forget_failed_fsyncs();
    }

    /// Test hook: the value-log append after the next `n` fails as on a
    /// full disk.
    #[cfg(feature = "test-hooks")]
    pub fn inject_append_failure(&self, n: u32) -> Result<()> {
        self.send(Op::Apply(Apply::FailAppend { n }))
    }

    /// Test hook: while `paused`, the writer folds no tails (as when folds
    /// fall behind).
    #[cfg(feature = "test-hooks")]
    pub fn pause_folds(&self, paused: bool) -> Result<()> {
        self.send(Op::Apply(Apply::PauseFolds { paused }))
    }

    /// Test hook: while `hold`, the `Sync` mode's syncer waits before its
    /// flush (applied groups are neither durable nor answered).
    #[cfg(feature = "test-hooks")]
    pub fn hold_syncer(&self, hold: bool) {
        self.inner
            .shared
            .hold_syncer
            .store(hold, std::sync::atomic::Ordering::SeqCst);
    }

    /// Test hook: stops the store as a power loss right now could leave it
    /// in `Relaxed` mode: sled's index on disk, and with `truncate` the value
    /// log cut back to the synced mark (without, the value log is left as it
    /// is for the test to damage). Every later call answers `Closed`; drop it
    /// and reopen. It truncates value-log segments that views may still map,
    /// so it exists only in test builds.
    #[cfg(feature = "test-hooks")]
    pub fn simulate_power_loss(&self, truncate: bool) -> Result<()> {
        self.call(|reply| Op::After(After::PowerLoss { truncate, reply }))
    }
}

impl JobQueue for Store {
    fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        self.check_batch("enqueue", jobs.len())?;
        for j in &jobs {
            j.validate(&self.inner.config.queue)?;
        }
        self.call(|reply| Op::Apply(Apply::Enqueue { jobs, reply }))
    }

    fn claim(&self, max: usize) -> Result<Vec<Lease>> {
        self.claim_with_lease(max, self.inner.config.queue.lease_ms)
    }

    fn claim_with_lease(&self, max: usize, lease_ms: u64) -> Result<Vec<Lease>> {
        self.check_batch("claim", max)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        self.call(|reply| {
            Op::Apply(Apply::Claim {
                max,
                lease_ms,
                reply,
            })
        })
    }

    fn heartbeat(&self, token: LeaseToken, extend_ms: u64) -> Result<u64> {
        self.call(|reply| {
            Op::Apply(Apply::Heartbeat {
                token,
                extend_ms,
                reply,
            })
        })
    }

    fn complete_many(&self, completions: Vec<Completion>) -> Result<Vec<Result<()>>> {
        self.check_batch("complete", completions.len())?;
        let encoded = self.encode_completions(completions)?;
        // The refused ones keep their place in the answer; the rest commit.
        let mut outcomes: Vec<Option<Result<()>>> = Vec::with_capacity(encoded.len());
        let mut items = Vec::with_capacity(encoded.len());
        for e in encoded {
            match e {
                Ok(item) => {
                    items.push(item);
                    outcomes.push(None);
                }
                Err(e) => outcomes.push(Some(Err(e))),
            }
        }
        let mut committed = if items.is_empty() {
            Vec::new()
        } else {
            self.call(|reply| Op::Apply(Apply::Complete { items, reply }))?
        }
        .into_iter();
        outcomes
            .into_iter()
            .map(|o| o.or_else(|| committed.next()).ok_or(StoreError::Closed))
            .collect()
    }

    fn checkpoint(&self, token: LeaseToken, results: Vec<FrameWrite>) -> Result<()> {
        let mut items = self.encode_completions(vec![Completion { token, results }])?;
        let item = items.pop().ok_or(StoreError::Closed)??;
        self.call(|reply| Op::Apply(Apply::Checkpoint { item, reply }))
    }

    fn fail(&self, token: LeaseToken, error: &str) -> Result<FailOutcome> {
        self.fail_with(token, error, false)
    }

    fn fail_permanently(&self, token: LeaseToken, error: &str) -> Result<FailOutcome> {
        self.fail_with(token, error, true)
    }

    fn cancel(&self, id: JobId) -> Result<CancelOutcome> {
        self.call(|reply| Op::Apply(Apply::Cancel { id, reply }))
    }

    fn set_paused(&self, priority: Priority, paused: bool) -> Result<()> {
        self.call(|reply| {
            Op::Apply(Apply::SetPaused {
                priority,
                paused,
                reply,
            })
        })
    }

    fn job(&self, id: JobId) -> Result<Option<Job>> {
        match self.spaces().get(Space::Jobs, &u64_key(id))? {
            Some(bytes) => Ok(Some(self.with_input(decode_job(id, &bytes)?.0)?)),
            None => Ok(None),
        }
    }

    /// A scan of the jobs table: for listings, not hot paths.
    fn jobs(&self, filter: &JobFilter, limit: usize) -> Result<Vec<Job>> {
        let mut out = Vec::new();
        let end = filter.before.map(u64_key);
        for item in self
            .spaces()
            .range_before(Space::Jobs, end.as_ref().map(|k| &k[..]))
            .rev()
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let id = read_u64(&k, "jobs key")?;
            let (job, _) = decode_job(id, &v)?;
            if !filter.matches_record(&job) {
                continue;
            }
            let job = self.with_input(job)?;
            if filter.matches(&job) {
                out.push(job);
            }
        }
        Ok(out)
    }

    fn history(&self, limit: usize) -> Result<Vec<Job>> {
        let ids = self.call(|reply| Op::Apply(Apply::History { limit, reply }))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            // A purge may have removed it since; skip it then.
            if let Some(job) = self.job(id)? {
                out.push(job);
            }
        }
        Ok(out)
    }

    fn purge_finished_older_than(&self, age_ms: u64) -> Result<u64> {
        self.call(|reply| {
            Op::Apply(Apply::Purge {
                older_than_ms: age_ms,
                reply,
            })
        })
    }

    /// O(1): the counts the writer published after its last commit.
    fn stats(&self) -> Result<QueueStats> {
        Ok(self.inner.shared.stats())
    }

    fn symbol_stats(&self, symbol: &Symbol) -> Result<SymbolStats> {
        let symbol = symbol.clone();
        self.call(|reply| Op::Apply(Apply::SymbolStats { symbol, reply }))
    }
}

impl Backend for Store {
    fn queue_config(&self) -> &QueueConfig {
        &self.inner.config.queue
    }

    fn poisoned(&self) -> Option<String> {
        self.inner.shared.poison_cause()
    }

    /// Every record validated and checksummed, the counters and the job
    /// model held against a scan, bars against their data versions.
    fn check(&self) -> Result<CheckReport> {
        self.call(|reply| Op::After(After::Check { reply }))
    }

    /// Bytes of sled's generation and of `vlog/`.
    fn sizes(&self) -> Result<Vec<(&'static str, u64)>> {
        fn walk(p: &Path) -> u64 {
            fs::read_dir(p).map_or(0, |entries| {
                entries
                    .flatten()
                    .map(|e| match e.metadata() {
                        Ok(m) if m.is_dir() => walk(&e.path()),
                        Ok(m) => m.len(),
                        Err(_) => 0,
                    })
                    .sum()
            })
        }
        let dir = &self.inner.dir;
        Ok(vec![
            ("sled", walk(&self.inner.sled_dir)),
            ("vlog", walk(&dir.join("vlog"))),
        ])
    }
}

/// Creates `dir` and its missing parents, each made durable (its parent
/// fsynced): a new store's acknowledged work must not vanish with a
/// directory entry that a power loss took.
fn create_dir_durably(dir: &Path) -> Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|p| !p.exists()).collect();
    fs::create_dir_all(dir).map_err(|e| StoreError::io(format!("create {}", dir.display()), e))?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent() {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            crate::shared::fsync_path(parent)?;
        }
    }
    Ok(())
}

/// Takes the data directory's lock file, held while the store is open, so
/// that no second process touches the directory (not even the repairs made
/// before sled takes its own lock).
/// How long an open waits for a lock that another holder may release at
/// once (see `lock_dir`), and how often it tries.
const LOCK_WAIT_MAX: std::time::Duration = std::time::Duration::from_millis(500);
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(10);

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
    // A process this one spawns holds every file it has open between its
    // fork and its exec: a store closed a moment ago can seem locked for
    // that long. Another kiln holds it for longer than this waits.
    let mut waited = std::time::Duration::ZERO;
    let mut locked = file.try_lock();
    while matches!(locked, Err(fs::TryLockError::WouldBlock)) && waited < LOCK_WAIT_MAX {
        std::thread::sleep(LOCK_RETRY);
        waited += LOCK_RETRY;
        locked = file.try_lock();
    }
    match locked {
        Ok(()) => {
            // Who holds it, for the error another opener gets (not synced:
            // it only names a live process).
            let pid = format!("{}\n", std::process::id());
            file.set_len(0)
                .and_then(|()| std::io::Write::write_all(&mut &file, pid.as_bytes()))
                .map_err(|e| StoreError::io(format!("write {}", path.display()), e))?;
            Ok(file)
        }
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::InUse {
            dir: dir.to_path_buf(),
            holder: fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok()),
        }),
        Err(fs::TryLockError::Error(e)) => {
            Err(StoreError::io(format!("lock {}", path.display()), e))
        }
    }
}

/// Checks the format file of an existing directory and returns its
/// version: this build's, or the one it migrates from. In a new directory
/// (empty but for kiln's own lock file and a format file whose creation a
/// crash interrupted), writes it when `create` is set.
fn check_format_file(dir: &Path, create: bool) -> Result<u32> {
    let path = dir.join(FORMAT_FILE);
    let tmp = dir.join(format!("{FORMAT_FILE}.tmp"));
    match fs::read_to_string(&path) {
        Ok(found) => READABLE_FORMAT_VERSIONS
            .into_iter()
            .find(|v| found == format!("kiln-store {v}\n"))
            .ok_or_else(|| StoreError::FormatVersion {
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
            if create {
                write_format_file(dir)?;
            }
            Ok(FORMAT_VERSION)
        }
        Err(e) => Err(StoreError::io(format!("read {}", path.display()), e)),
    }
}

/// Writes this build's format file via a temporary file, renamed and
/// fsynced, so it is whole or absent.
fn write_format_file(dir: &Path) -> Result<()> {
    let path = dir.join(FORMAT_FILE);
    let tmp = dir.join(format!("{FORMAT_FILE}.tmp"));
    fs::write(&tmp, format!("kiln-store {FORMAT_VERSION}\n"))
        .map_err(|e| StoreError::io(format!("write {}", tmp.display()), e))?;
    crate::shared::fsync_path(&tmp)?;
    fs::rename(&tmp, &path).map_err(|e| StoreError::io(format!("write {}", path.display()), e))?;
    crate::shared::fsync_path(dir)
}
