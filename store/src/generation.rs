//! sled's directory, opened without ever risking it. sled 0.34's recovery
//! takes a failed read for the end of its log and then zeroes segments,
//! writes a snapshot and truncates its file, all inside `sled::Config::open`:
//! one transient read error can destroy the store, or roll it back silently
//! (`shared/design/sled-read-errors.md`). So kiln never opens the directory
//! its acknowledged state is in. It copies the current generation
//! (`sled.<g>`, named by `CURRENT`; `sled` before the first copy) to the next
//! one, opens the copy, and checks it: no commit lost (the commit number in
//! sled against the one `COMMITTED` recorded after the last flush) and every
//! page of every tree reads back. Only then does the copy become current
//! (`CURRENT` replaced atomically) and the old generation go. A failed check
//! deletes the copy and leaves the current generation as it was; one retry
//! on a fresh copy, then the open is refused.
//!
//! `COMMITTED` holds the commit number as of the last completed flush and
//! fsync of sled. It is written after that fsync, and fsynced at open (with
//! the number the open recovered) and at most once a second after a flush,
//! so it is a lower bound of what sled holds on disk, at most about a
//! second old after a power loss: sled recovering a smaller number means
//! sled lost acknowledged commits.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiln_core::{Result, StoreError};

use crate::config::StoreConfig;
use crate::record::COMMIT_KEY;
use crate::shared::fsync_path;
use crate::space::{SledHandle, Space, TREE, sled_error};

/// The file naming the current generation.
const CURRENT_FILE: &str = "CURRENT";
/// The file holding the last flushed commit number.
const COMMITTED_FILE: &str = "COMMITTED";
/// The first generation's name (every store before generations had it).
const FIRST: &str = "sled";
const COMMITTED_MAGIC: &[u8; 4] = b"kcm1";

/// sled opened on a checked copy of the current generation.
pub(crate) struct Opened {
    pub(crate) db: SledHandle<sled::Db>,
    /// The generation's directory.
    pub(crate) dir: PathBuf,
    /// The commit number sled recovered.
    pub(crate) commit: u64,
    /// Half-written snapshots a crash left, not copied.
    pub(crate) partial_snapshots: u32,
    /// The first generation, replaced by this open's copy: the caller
    /// removes it once the format file says the current version (until
    /// then an older kiln may still look for it).
    pub(crate) replaced_first: Option<PathBuf>,
}

/// The directory of the current sled generation in data directory `dir`.
pub fn sled_dir(dir: &Path) -> Result<PathBuf> {
    Ok(dir.join(current(dir)?))
}

fn current(dir: &Path) -> Result<String> {
    let path = dir.join(CURRENT_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => {
            let name = s.trim_end_matches('\n');
            if generation_number(name).is_none() {
                return Err(StoreError::corrupt(
                    path.display().to_string(),
                    format!("names {name:?}, not a sled generation like sled.7"),
                ));
            }
            Ok(name.to_owned())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FIRST.to_owned()),
        Err(e) => Err(StoreError::io(format!("read {}", path.display()), e)),
    }
}

/// `sled` is generation 0, `sled.<g>` generation g.
fn generation_number(name: &str) -> Option<u64> {
    if name == FIRST {
        return Some(0);
    }
    name.strip_prefix("sled.")?
        .parse()
        .ok()
        .filter(|n: &u64| name == format!("sled.{n}"))
}

/// Opens sled as the module docs say. Runs under the data directory's lock.
pub(crate) fn open(dir: &Path, config: &StoreConfig) -> Result<Opened> {
    let current = current(dir)?;
    let from = dir.join(&current);
    // Nothing is removed before the current generation is known to exist;
    // a failing stat is an error, never "absent".
    let exists = |p: &Path| {
        p.try_exists()
            .map_err(|e| StoreError::io(format!("stat {}", p.display()), e))
    };
    if !exists(&from)? {
        if exists(&dir.join(CURRENT_FILE))? {
            return Err(StoreError::corrupt(
                from.display().to_string(),
                format!("{CURRENT_FILE} names it but it is missing"),
            ));
        }
        // Without `CURRENT` and `sled/`, only a new store: anything else of
        // a store here means its sled directory was lost.
        if let Some(left) = store_leftover(dir)? {
            return Err(StoreError::corrupt(
                from.display().to_string(),
                format!(
                    "missing, but {} is there: sled's directory was lost (restore it, or \
                     {CURRENT_FILE} naming it); nothing was changed",
                    left.display()
                ),
            ));
        }
        // A new store: there is nothing to lose; what sled created is made
        // durable (the caller fsyncs the data directory).
        let db = open_sled(&from, config)?;
        sync_tree(&from)?;
        let commit = commit_in(&db)?;
        return Ok(Opened {
            db,
            dir: from,
            commit,
            partial_snapshots: 0,
            replaced_first: None,
        });
    }
    // A `sled.N` beside `sled/` without `CURRENT` is a copy a crash
    // interrupted before publishing it: removed.
    remove_other_generations(dir, &current)?;
    let recorded = read_committed(dir)?;
    let mut next = generation_number(&current).unwrap_or(0) + 1;
    let mut failure = None;
    for _ in 0..2 {
        let to = dir.join(format!("sled.{next}"));
        let partial_snapshots = match copy_dir(&from, &to) {
            Ok(n) => n,
            Err(e) => {
                let _ = fs::remove_dir_all(&to);
                return Err(e);
            }
        };
        match open_copy(&from, &to, config, recorded) {
            Ok((db, commit)) => {
                publish(dir, &to)?;
                let replaced_first = if current == FIRST {
                    Some(from)
                } else {
                    remove_generation(dir, &from)?;
                    // One an interrupted upgrade left.
                    let first = dir.join(FIRST);
                    first.try_exists().unwrap_or(true).then_some(first)
                };
                return Ok(Opened {
                    db,
                    dir: to,
                    commit,
                    partial_snapshots,
                    replaced_first,
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, copy = %to.display(), "opening a copy of sled failed; the current generation is untouched");
                let _ = fs::remove_dir_all(&to);
                // A failed fsync ends this process's use of the store.
                if e.is_fatal() {
                    return Err(e);
                }
                failure = Some(e);
                next += 1;
            }
        }
    }
    Err(failure.unwrap_or(StoreError::Closed))
}

/// Opens sled on `to`, a copy of `from`, and checks it.
fn open_copy(
    from: &Path,
    to: &Path,
    config: &StoreConfig,
    recorded: u64,
) -> Result<(SledHandle<sled::Db>, u64)> {
    let db = open_sled(to, config)?;
    let commit = commit_in(&db)?;
    if commit < recorded {
        return Err(StoreError::corrupt(
            from.display().to_string(),
            format!(
                "sled recovered commit {commit} but commit {recorded} was on disk before \
                 (COMMITTED): its recovery lost acknowledged commits, most likely on a read \
                 error; nothing was changed, so retry, and check the disk if it persists"
            ),
        ));
    }
    read_everything(&db)?;
    // What sled's recovery wrote to the copy (a snapshot, cut segments)
    // is durable before the copy becomes current.
    db.flush().map_err(|e| match e {
        sled::Error::Io(error) if error.kind() != std::io::ErrorKind::StorageFull => {
            crate::shared::fsync_error(format!("flush {}", to.display()), error)
        }
        other => sled_error(other),
    })?;
    sync_tree(to)?;
    Ok((db, commit))
}

/// Opens sled at `path`. sled's open drops what it built when it fails,
/// and that drop can panic on a failing disk (see `SledHandle`): caught.
fn open_sled(path: &Path, config: &StoreConfig) -> Result<SledHandle<sled::Db>> {
    // No background flush of sled's own: kiln flushes sled itself (the
    // syncer after each group, the `Relaxed` flusher every tick), after
    // fsyncing the blob files the flush will point at, and never after a
    // failed fsync (see `disk`).
    let sled_config = sled::Config::new()
        .path(path)
        .cache_capacity(config.cache_bytes_max)
        .flush_every_ms(None);
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sled_config.open()))
        .map_err(|_| StoreError::Backend {
            backend: "sled",
            detail: format!("sled panicked while opening {}", path.display()),
        })?;
    opened
        .map_err(|e| match e {
            sled::Error::Io(error) => StoreError::io(format!("open {}", path.display()), error),
            other => sled_error(other),
        })
        .map(SledHandle::new)
}

/// The commit number in `db` (0 in a store no commit numbered yet).
fn commit_in(db: &sled::Db) -> Result<u64> {
    let tree = db.open_tree(TREE).map_err(sled_error)?;
    let mut key = vec![Space::Meta.prefix()];
    key.extend_from_slice(COMMIT_KEY);
    match tree.get(key).map_err(sled_error)? {
        None => Ok(0),
        Some(v) => decode_commit(&v),
    }
}

pub(crate) fn decode_commit(v: &[u8]) -> Result<u64> {
    v.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::corrupt("meta/commit", format!("{} bytes, want 8", v.len())))
}

/// Reads every key and value of every tree: a page sled's recovery zeroed,
/// or one that no longer reads, fails the open here rather than later.
fn read_everything(db: &sled::Db) -> Result<()> {
    for name in db.tree_names() {
        let tree = db.open_tree(&name).map_err(sled_error)?;
        for item in tree.iter() {
            item.map_err(sled_error)?;
        }
    }
    Ok(())
}

/// Copies the files of a sled directory (and its `blobs/`), each fsynced,
/// then the directories; leaves out half-written snapshots (`*.generating`,
/// which sled's open would take for the newest: sled issues #1509, #1527,
/// #1533) and returns how many.
fn copy_dir(from: &Path, to: &Path) -> Result<u32> {
    fs::create_dir(to).map_err(|e| StoreError::io(format!("create {}", to.display()), e))?;
    let list = |e| StoreError::io(format!("list {}", from.display()), e);
    let mut skipped = 0;
    for entry in fs::read_dir(from).map_err(list)? {
        let entry = entry.map_err(list)?;
        let name = entry.file_name();
        let (src, dst) = (entry.path(), to.join(&name));
        let kind = entry.file_type().map_err(list)?;
        if kind.is_dir() {
            skipped += copy_dir(&src, &dst)?;
        } else if name.to_string_lossy().ends_with(".generating") {
            tracing::warn!(file = %src.display(), "leaving out a half-written sled snapshot left by a crash");
            skipped += 1;
        } else {
            fs::copy(&src, &dst).map_err(|e| {
                StoreError::io(format!("copy {} to {}", src.display(), dst.display()), e)
            })?;
            fsync_path(&dst)?;
        }
    }
    fsync_path(to)?;
    Ok(skipped)
}

/// Makes `to` the current generation: `CURRENT` written whole, renamed into
/// place, the directory fsynced.
fn publish(dir: &Path, to: &Path) -> Result<()> {
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (path, tmp) = (
        dir.join(CURRENT_FILE),
        dir.join(format!("{CURRENT_FILE}.tmp")),
    );
    fs::write(&tmp, format!("{name}\n"))
        .map_err(|e| StoreError::io(format!("write {}", tmp.display()), e))?;
    fsync_path(&tmp)?;
    fs::rename(&tmp, &path).map_err(|e| StoreError::io(format!("write {}", path.display()), e))?;
    fsync_path(dir)
}

/// Removes generation `path` (no longer current) for good.
pub(crate) fn remove_generation(dir: &Path, path: &Path) -> Result<()> {
    fs::remove_dir_all(path)
        .map_err(|e| StoreError::io(format!("remove {}", path.display()), e))?;
    fsync_path(dir)
}

/// Something only an existing store has: another sled generation, a
/// `COMMITTED` past commit 0 or a value-log segment.
fn store_leftover(dir: &Path) -> Result<Option<PathBuf>> {
    let list = |e| StoreError::io(format!("list {}", dir.display()), e);
    for entry in fs::read_dir(dir).map_err(list)? {
        let entry = entry.map_err(list)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let committed = name == COMMITTED_FILE && read_committed(dir)? > 0;
        if generation_number(&name).is_some() || committed {
            return Ok(Some(entry.path()));
        }
    }
    let vlog = dir.join("vlog");
    match fs::read_dir(&vlog) {
        Ok(entries) => {
            for entry in entries {
                let entry =
                    entry.map_err(|e| StoreError::io(format!("list {}", vlog.display()), e))?;
                if entry.file_name().to_string_lossy().ends_with(".seg") {
                    return Ok(Some(entry.path()));
                }
            }
            Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(format!("list {}", vlog.display()), e)),
    }
}

/// Removes every copied generation but `current` (a copy a crash
/// interrupted, or the one a crash kept from being removed) and a
/// half-written `CURRENT`; the first generation is the caller's to remove
/// (see [`Opened::replaced_first`]).
fn remove_other_generations(dir: &Path, current: &str) -> Result<()> {
    let list = |e| StoreError::io(format!("list {}", dir.display()), e);
    let mut removed = false;
    for entry in fs::read_dir(dir).map_err(list)? {
        let entry = entry.map_err(list)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        if name == format!("{CURRENT_FILE}.tmp") {
            fs::remove_file(&path)
        } else if name != current
            && name != FIRST
            && generation_number(&name).is_some()
            && path.is_dir()
        {
            fs::remove_dir_all(&path)
        } else {
            continue;
        }
        .map_err(|e| StoreError::io(format!("remove {}", path.display()), e))?;
        removed = true;
    }
    if removed {
        fsync_path(dir)?;
    }
    Ok(())
}

/// fsyncs every file and directory under `dir`, then `dir`.
fn sync_tree(dir: &Path) -> Result<()> {
    let list = |e| StoreError::io(format!("list {}", dir.display()), e);
    for entry in fs::read_dir(dir).map_err(list)? {
        let entry = entry.map_err(list)?;
        let path = entry.path();
        if entry.file_type().map_err(list)?.is_dir() {
            sync_tree(&path)?;
        } else {
            fsync_path(&path)?;
        }
    }
    fsync_path(dir)
}

/// The commit number `COMMITTED` holds (0 without one). A file whose
/// checksum fails (a write torn by a crash) counts as 0: it only ever
/// lowers the bound.
fn read_committed(dir: &Path) -> Result<u64> {
    let path = dir.join(COMMITTED_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io(format!("read {}", path.display()), e)),
    };
    match decode_committed(&bytes) {
        Some(n) => Ok(n),
        // Created, and its first record lost with the power.
        None if bytes.is_empty() => Ok(0),
        None => {
            tracing::warn!(file = %path.display(), "ignoring a damaged commit record");
            Ok(0)
        }
    }
}

fn encode_committed(n: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(COMMITTED_MAGIC);
    b[4..12].copy_from_slice(&n.to_le_bytes());
    let crc = crc32fast::hash(&b[..12]);
    b[12..].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_committed(b: &[u8]) -> Option<u64> {
    let b: &[u8; 16] = b.try_into().ok()?;
    let crc = u32::from_le_bytes(b[12..].try_into().ok()?);
    (b[..4] == COMMITTED_MAGIC[..] && crc32fast::hash(&b[..12]) == crc)
        .then(|| u64::from_le_bytes(b[4..12].try_into().unwrap_or_default()))
}

/// Records in `COMMITTED` how far sled is known to be on disk.
pub(crate) struct CommitRecord {
    file: File,
    path: PathBuf,
    /// The number last written (none yet: the first is written whatever
    /// it is), and when the record was last fsynced.
    written: Mutex<(Option<u64>, std::time::Instant)>,
}

/// How often, at most, a flush also fsyncs `COMMITTED`: so that after a
/// power loss it is at most about this old.
const COMMITTED_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl CommitRecord {
    pub(crate) fn open(dir: &Path, commit: u64) -> Result<Self> {
        let path = dir.join(COMMITTED_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
        let record = CommitRecord {
            file,
            path,
            written: Mutex::new((None, std::time::Instant::now())),
        };
        record.flushed(commit)?;
        // Durable once per open: after a power loss the record still holds
        // at least the commit this open recovered.
        record.file.sync_data().map_err(|e| {
            crate::shared::fsync_error(format!("fsync {}", record.path.display()), e)
        })?;
        Ok(record)
    }

    /// Every commit up to `commit` is on disk (sled flushed and fsynced).
    /// Fsynced at most every [`COMMITTED_SYNC_INTERVAL`]; a failed write
    /// is only logged (the record is a lower bound), but a failed fsync is
    /// one like any other: fatal for the process.
    pub(crate) fn flushed(&self, commit: u64) -> Result<()> {
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if written.0.is_some_and(|w| commit <= w) {
            return Ok(());
        }
        match self.file.write_all_at(&encode_committed(commit), 0) {
            Ok(()) => written.0 = Some(commit),
            Err(e) => {
                tracing::warn!(error = %e, file = %self.path.display(), "cannot record the commit number");
                return Ok(());
            }
        }
        if written.1.elapsed() >= COMMITTED_SYNC_INTERVAL {
            written.1 = std::time::Instant::now();
            self.file.sync_data().map_err(|e| {
                crate::shared::fsync_error(format!("fsync {}", self.path.display()), e)
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_names_parse_only_in_their_one_spelling() {
        assert_eq!(generation_number("sled"), Some(0));
        assert_eq!(generation_number("sled.7"), Some(7));
        for bad in ["sled.", "sled.07", "sled.+7", "sled.x", "sledd", "vlog"] {
            assert_eq!(generation_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_commit_record_reads_back_and_a_damaged_one_counts_as_none() {
        let b = encode_committed(0x0102_0304_0506_0708);
        assert_eq!(decode_committed(&b), Some(0x0102_0304_0506_0708));
        for i in 0..16 {
            let mut d = b;
            d[i] ^= 0x40;
            assert_eq!(decode_committed(&d), None, "byte {i}");
        }
        assert_eq!(decode_committed(&b[..15]), None);
    }
}
