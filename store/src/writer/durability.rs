//! What "acknowledged" means, as one [`Pipeline`] value chosen at open: how
//! a commit makes its value-log payloads durable before the sled batch that
//! indexes them, when its callers are answered, what the synced mark is,
//! and the final flush at shutdown.
//!
//! - `Sync`: every commit fsyncs the value log first; the syncer thread
//!   then flushes sled, fsyncs, and only then answers every caller of the
//!   group (group commit). Meanwhile the writer already applies the next
//!   group, and one fsync often covers several.
//! - `Relaxed`: feature series are only written; callers are answered at
//!   once; the flusher thread fsyncs the value log up to the last commit's
//!   end and flushes sled every tick, and the next commit records how far
//!   it got (the synced mark, see `vlog`). Bar chunks and compaction moves
//!   still fsync before they are indexed: they cannot be recomputed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::Ack;
use crate::Durability;
use crate::disk::Disk;
use crate::record::VLOG_SYNCED_KEY;
use crate::shared::{Poison, Shared};
use crate::space::{Space, Writes};
use crate::vlog::{Vlog, VlogPosition, fsync_segment};
use kiln_core::{Result, Watermark};

/// Applied groups the syncer may hold before the writer waits for it.
const SYNC_GROUPS_MAX: usize = 8;

/// An applied group's answers, for the syncer.
pub(crate) struct SyncGroup {
    acks: Vec<Box<dyn Ack>>,
    /// Whether the group wrote anything (else there is nothing to fsync).
    wrote: bool,
    /// The watermark after it, revealed to readers once it is durable.
    watermark: Watermark,
}

/// See the module docs.
pub(crate) enum Pipeline {
    /// Answers wait for the syncer's flush and fsync.
    Sync {
        /// `None` before it starts, when it could not (the store is then
        /// poisoned), and once stopped.
        syncer: Option<(Sender<SyncGroup>, JoinHandle<()>)>,
    },
    /// Answers go out at once; the flusher makes them durable within a tick.
    Relaxed {
        /// `None` before it starts, when it could not, and once stopped.
        flusher: Option<Flusher>,
        /// The synced mark as the last commit recorded it.
        recorded: VlogPosition,
    },
}

/// The `Relaxed` flusher thread and what it shares with the writer.
pub(crate) struct Flusher {
    state: Arc<FlushState>,
    stop: Sender<()>,
    handle: JoinHandle<()>,
}

/// What the writer and the flusher share.
#[derive(Default)]
struct FlushState {
    /// Commits applied so far, and the value log's end after the last one.
    written: Mutex<(u64, VlogPosition)>,
    /// How far the flusher has fsynced the value log.
    synced: Mutex<VlogPosition>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pipeline {
    /// The pipeline of `durability`, its thread not started yet (recovery
    /// commits without one).
    pub(crate) fn new(durability: Durability) -> Pipeline {
        match durability {
            Durability::Sync => Pipeline::Sync { syncer: None },
            Durability::Relaxed => Pipeline::Relaxed {
                flusher: None,
                recorded: VlogPosition::default(),
            },
        }
    }

    /// Recovery's part: the value log is all on disk now (`Vlog::open`
    /// fsynced it), so in `Relaxed` mode the synced mark starts at its end;
    /// in `Sync` mode a mark an earlier `Relaxed` session left goes.
    pub(crate) fn recovered(
        &mut self,
        vlog_end: VlogPosition,
        mark_stored: bool,
        writes: &mut Writes,
    ) {
        match self {
            Pipeline::Relaxed { recorded, .. } => {
                writes.put(
                    Space::Meta,
                    VLOG_SYNCED_KEY.to_vec(),
                    vlog_end.encode().to_vec(),
                );
                *recorded = vlog_end;
            }
            Pipeline::Sync { .. } => {
                if mark_stored {
                    writes.delete(Space::Meta, VLOG_SYNCED_KEY.to_vec());
                }
            }
        }
    }

    /// Starts the mode's thread (a failure to start poisons the store).
    pub(crate) fn start(
        &mut self,
        disk: &Arc<Disk>,
        shared: &Arc<Shared>,
        vlog_dir: &Path,
        tick: Duration,
    ) {
        match self {
            Pipeline::Sync { syncer } => {
                let (tx, groups) = crossbeam_channel::bounded(SYNC_GROUPS_MAX);
                let (disk, sh) = (Arc::clone(disk), Arc::clone(shared));
                let spawned = std::thread::Builder::new()
                    .name("kiln-store-syncer".into())
                    .spawn(move || sync_loop(&disk, &sh, &groups));
                match spawned {
                    Ok(handle) => *syncer = Some((tx, handle)),
                    Err(e) => {
                        shared.poison(Poison::other(format!(
                            "cannot start the syncer thread: {e}"
                        )));
                    }
                }
            }
            Pipeline::Relaxed { flusher, recorded } => {
                let state = Arc::new(FlushState::default());
                *locked(&state.synced) = *recorded;
                *locked(&state.written) = (0, *recorded);
                let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
                let (disk, sh, st) = (Arc::clone(disk), Arc::clone(shared), Arc::clone(&state));
                let dir: PathBuf = vlog_dir.to_path_buf();
                let spawned = std::thread::Builder::new()
                    .name("kiln-store-flusher".into())
                    .spawn(move || flush_loop(&disk, &sh, &st, &dir, &stopped, tick));
                match spawned {
                    Ok(handle) => {
                        *flusher = Some(Flusher {
                            state,
                            stop,
                            handle,
                        });
                    }
                    Err(e) => {
                        shared.poison(Poison::other(format!(
                            "cannot start the flusher thread: {e}"
                        )));
                    }
                }
            }
        }
    }

    /// Whether an answer means the write is on disk.
    pub(crate) fn acknowledged_is_durable(&self) -> bool {
        matches!(self, Pipeline::Sync { .. })
    }

    /// Before a commit's sled batch: its value-log payloads are fsynced
    /// (always in `Sync` mode; in `Relaxed` mode when `sync_required`, else
    /// only written) and a synced mark that moved on goes into `writes`.
    pub(crate) fn before_batch(
        &mut self,
        vlog: &mut Vlog,
        sync_required: bool,
        writes: &mut Writes,
    ) -> Result<()> {
        match self {
            Pipeline::Sync { .. } => vlog.sync(),
            Pipeline::Relaxed { flusher, recorded } => {
                let mark = if sync_required {
                    vlog.sync()?;
                    vlog.end()
                } else {
                    vlog.flush()?;
                    flusher
                        .as_ref()
                        .map_or(*recorded, |f| *locked(&f.state.synced))
                };
                if mark > *recorded {
                    vlog.synced_to(mark);
                    writes.put(
                        Space::Meta,
                        VLOG_SYNCED_KEY.to_vec(),
                        mark.encode().to_vec(),
                    );
                    *recorded = mark;
                }
                Ok(())
            }
        }
    }

    /// After a commit's sled batch applied: the flusher learns of it.
    pub(crate) fn committed(&self, vlog_end: VlogPosition) {
        if let Pipeline::Relaxed {
            flusher: Some(f), ..
        } = self
        {
            let mut written = locked(&f.state.written);
            *written = (written.0 + 1, vlog_end);
        }
    }

    /// Answers a committed group's callers and reveals its `watermark` to
    /// readers: after the syncer's fsync in `Sync` mode (so none is answered
    /// and nothing is seen before the groups applied ahead of it are on
    /// disk), at once in `Relaxed` mode.
    pub(crate) fn answer(
        &mut self,
        acks: Vec<Box<dyn Ack>>,
        wrote: bool,
        watermark: Watermark,
        shared: &Shared,
    ) {
        match self {
            Pipeline::Sync {
                syncer: Some((tx, _)),
            } => {
                let group = SyncGroup {
                    acks,
                    wrote,
                    watermark,
                };
                if let Err(e) = tx.send(group) {
                    shared.poison(Poison::other("the syncer thread stopped".into()));
                    let poison = shared.poisoned();
                    for ack in e.into_inner().acks {
                        ack.send(poison.as_ref());
                    }
                }
            }
            Pipeline::Sync { syncer: None } => {
                let poison = shared
                    .poisoned()
                    .unwrap_or_else(|| Poison::other("the syncer thread is not running".into()));
                for ack in acks {
                    ack.send(Some(&poison));
                }
            }
            Pipeline::Relaxed { .. } => {
                shared.reveal(watermark);
                for ack in acks {
                    ack.send(None);
                }
            }
        }
    }

    /// Whether the flusher has fsynced past the recorded mark, which an
    /// idle writer then commits.
    pub(crate) fn mark_behind(&self) -> bool {
        match self {
            Pipeline::Relaxed {
                flusher: Some(f),
                recorded,
            } => *locked(&f.state.synced) > *recorded,
            _ => false,
        }
    }

    /// Where the value log is durable up to as far as sled knows (what a
    /// power loss keeps), given its end.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn durable_to(&self, vlog_end: VlogPosition) -> VlogPosition {
        match self {
            // Every commit fsynced the value log first.
            Pipeline::Sync { .. } => vlog_end,
            Pipeline::Relaxed { recorded, .. } => *recorded,
        }
    }

    /// Stops the flusher (its last tick's work is done or not; the final
    /// flush is the writer's).
    pub(crate) fn stop_flusher(&mut self) {
        if let Pipeline::Relaxed { flusher, .. } = self
            && let Some(f) = flusher.take()
        {
            drop(f.stop);
            let _ = f.handle.join();
        }
    }

    /// Lets the syncer answer what it holds, then waits for it.
    pub(crate) fn stop_syncer(&mut self) {
        if let Pipeline::Sync { syncer } = self
            && let Some((tx, handle)) = syncer.take()
        {
            drop(tx);
            let _ = handle.join();
        }
    }
}

/// The syncer thread: takes every applied group waiting, makes them durable
/// with one flush + fsync, then answers their callers.
fn sync_loop(disk: &Disk, shared: &Shared, groups: &Receiver<SyncGroup>) {
    while let Ok(first) = groups.recv() {
        let (mut acks, mut wrote, mut watermark) = (first.acks, first.wrote, first.watermark);
        while let Ok(more) = groups.try_recv() {
            acks.extend(more.acks);
            wrote |= more.wrote;
            watermark = more.watermark;
        }
        #[cfg(feature = "test-hooks")]
        while shared.hold_syncer.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let failure = match shared.poisoned() {
            Some(poison) => Some(poison),
            None if !wrote => None,
            None => disk.flush_and_fsync().err().map(|e| {
                tracing::error!(error = %e, "flush failed; the store is poisoned");
                let poison = Poison::of(&e);
                shared.poison(poison.clone());
                poison
            }),
        };
        if failure.is_none() {
            shared.reveal(watermark);
        }
        for ack in acks {
            ack.send(failure.as_ref());
        }
    }
}

/// The flusher (`Relaxed` mode): every tick in which something was
/// committed, fsyncs the value log up to the last commit's end, publishes
/// that as the synced mark, then flushes and fsyncs sled. Runs until `stop`
/// closes.
fn flush_loop(
    disk: &Disk,
    shared: &Shared,
    state: &FlushState,
    vlog_dir: &Path,
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
                tracing::error!(error = %e, "background flush failed; the store is poisoned");
                shared.poison(Poison::of(&e));
            }
        }
    }
}
