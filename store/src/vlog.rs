//! The value log: large payloads (feature series) appended to checksummed,
//! aligned records in segment files beside sled, as in WiscKey and Badger.
//! sled only holds a 28-byte index entry per series. In `Sync` mode a payload
//! is written and fsynced here *before* the sled batch that indexes it
//! commits, so an index entry never points at bytes that are not on disk; a
//! crash between the two leaves an unindexed tail, which recovery truncates.
//! In `Relaxed` mode feature series are only written (the page cache keeps
//! them through a process crash) and a background flusher fsyncs them; the
//! position it reached, the *synced mark*, is stored in sled. After a power
//! loss, open checks every indexed record past the mark and reports the
//! ones that did not reach the disk, whose jobs recovery runs again. Bar
//! chunks and compaction always fsync before indexing: they cannot be
//! recomputed.
//!
//! Segment file `vlog/NNNNNNNNNN.seg`: a 16-byte header (`KILNVLOG`, format
//! version u32 LE, 4 zero bytes), then records. A record is a 16-byte header
//! (magic `KREC` u32 LE, payload length u32 LE, CRC-32 of the payload u32 LE,
//! 4 zero bytes) followed by the payload, padded to 16 bytes. A read copies
//! header and payload with one `pread` into a 16-aligned buffer, so the
//! archived series is read in place from there; a disk's read error is then
//! an error of that read (a memory map would raise SIGBUS and kill the
//! process). Only the writer thread appends; files are never modified in
//! place, only appended, truncated at open (before any reader exists) or
//! deleted whole by compaction (a reader's open file outlives the unlink).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rkyv::util::AlignedVec;

use crate::record::{FORMAT_VERSION, IndexEntry, READABLE_FORMAT_VERSIONS, RECORD_ALIGN};
use crate::shared::FsyncFailure;
use kiln_core::{Result, StoreError};

const SEGMENT_MAGIC: &[u8; 8] = b"KILNVLOG";
const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"KREC");
pub(crate) const SEGMENT_HEADER_BYTES: u64 = 16;
const RECORD_HEADER_BYTES: u64 = 16;
/// Appends are gathered into writes of this size.
const APPEND_BUFFER_BYTES: usize = 1 << 20;

/// Bytes a record of `len` payload bytes occupies, header and padding included.
pub(crate) fn record_bytes(len: u32) -> u64 {
    RECORD_HEADER_BYTES + u64::from(len).next_multiple_of(RECORD_ALIGN as u64)
}

/// A place in the value log: segment, then byte offset (ordered that way).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct VlogPosition {
    pub segment: u32,
    pub offset: u64,
}

impl VlogPosition {
    pub(crate) const BYTES: usize = 12;

    pub(crate) fn encode(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        b[0..4].copy_from_slice(&self.segment.to_be_bytes());
        b[4..12].copy_from_slice(&self.offset.to_be_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self> {
        if b.len() != Self::BYTES {
            return Err(StoreError::corrupt(
                "meta/vlog_synced",
                format!("{} bytes, want {}", b.len(), Self::BYTES),
            ));
        }
        Ok(VlogPosition {
            segment: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            offset: crate::keys::read_u64(&b[4..12], "meta/vlog_synced")?,
        })
    }

    /// The position just past `entry`'s record.
    fn end_of(entry: &IndexEntry) -> VlogPosition {
        VlogPosition {
            segment: entry.segment,
            offset: entry
                .offset
                .saturating_add(u64::from(entry.len).next_multiple_of(RECORD_ALIGN as u64)),
        }
    }
}

fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:010}.seg"))
}

/// fsyncs segment `id` through a handle of its own (a segment compaction
/// removed meanwhile needs nothing).
pub(crate) fn fsync_segment(dir: &Path, id: u32) -> Result<()> {
    let path = segment_path(dir, id);
    match File::open(&path) {
        Ok(f) => f
            .sync_data()
            .map_err(|e| crate::shared::fsync_error(format!("fsync {}", path.display()), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(format!("open {}", path.display()), e)),
    }
}

/// Whether `entry`'s record is on disk whole: header and checksum match. A
/// missing segment or a short file means the record was lost; any other
/// error is reported, not taken for a loss.
fn record_on_disk(
    dir: &Path,
    files: &mut HashMap<u32, Option<File>>,
    entry: &IndexEntry,
) -> Result<bool> {
    use std::os::unix::fs::FileExt;
    let path = segment_path(dir, entry.segment);
    let io = |e| StoreError::io(format!("read {}", path.display()), e);
    let file = match files.entry(entry.segment) {
        std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => v.insert(match File::open(&path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        }),
    };
    let Some(file) = file.as_ref() else {
        return Ok(false);
    };
    let Some(header_at) = entry.offset.checked_sub(RECORD_HEADER_BYTES) else {
        return Ok(false);
    };
    let read = |buf: &mut [u8], at: u64| match file.read_exact_at(buf, at) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(io(e)),
    };
    let mut header = [0u8; RECORD_HEADER_BYTES as usize];
    if !read(&mut header, header_at)? {
        return Ok(false);
    }
    let field =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    if field(0) != RECORD_MAGIC || field(4) != entry.len || field(8) != entry.crc {
        return Ok(false);
    }
    // The payload, checksummed a piece at a time.
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; APPEND_BUFFER_BYTES];
    let (mut at, mut left) = (entry.offset, u64::from(entry.len));
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        if !read(&mut buf[..n], at)? {
            return Ok(false);
        }
        crc.update(&buf[..n]);
        at += n as u64;
        left -= n as u64;
    }
    Ok(crc.finalize() == entry.crc)
}

/// Size and live bytes of one segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SegmentUse {
    pub len: u64,
    pub live: u64,
}

/// What opening the value log repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VlogRecovery {
    /// Bytes of unindexed tails cut off (written before a crash, never committed).
    pub truncated_bytes: u64,
    /// Segments deleted because nothing indexed them.
    pub removed_segments: u32,
    /// Indexed records past the synced mark that did not reach the disk
    /// (a power loss in `Relaxed` mode), with every other record past the
    /// mark their jobs wrote; their index entries are dropped.
    pub lost_records: u64,
}

/// The writer's handle: appends, syncs and accounts for live bytes.
pub(crate) struct Vlog {
    dir: PathBuf,
    active_id: u32,
    /// Appends are buffered and written out by `sync`, before the fsync.
    active: BufWriter<File>,
    /// Segments rolled over since the last sync, still to be fsynced.
    unsynced: Vec<(u32, File)>,
    dirty: bool,
    /// Why an fsync of this log failed, once one did: no later one runs.
    fsync_failed: FsyncFailure,
    /// Bytes of records appended since [`Vlog::take_written`] last ran.
    written: u64,
    segment_bytes_max: u64,
    segments: BTreeMap<u32, SegmentUse>,
    reader: Arc<VlogReader>,
    /// Segments compaction leaves alone: a record in them failed to read
    /// (it stays where it is, for `kiln check` to report).
    pub(crate) quarantined: HashSet<u32>,
    /// Segments compaction put off because records in them are about to be
    /// rewritten anyway: the active segment when it first did, and when it
    /// last did (it looks again once another segment is active).
    deferred: BTreeMap<u32, (u32, u32)>,
    /// Test support: appends to go before one fails as a full disk would.
    #[cfg(feature = "test-hooks")]
    pub(crate) fail_append_in: Option<u32>,
}

impl Vlog {
    /// Opens `dir`, keeping exactly what `indexed` references: each segment is
    /// cut back to the end of its last indexed record and unreferenced
    /// segments are deleted. With a synced mark (the last session ran in
    /// `Relaxed` mode), every record past it is read back and checked first;
    /// the indexes into `indexed` of those that fail are returned, and what
    /// remains is fsynced, so the whole log is durable when this returns.
    /// Runs before any reader exists.
    pub(crate) fn open(
        dir: &Path,
        segment_bytes_max: u64,
        indexed: &[IndexEntry],
        synced: Option<VlogPosition>,
    ) -> Result<(Vlog, VlogRecovery, Vec<usize>)> {
        fs::create_dir_all(dir)
            .map_err(|e| StoreError::io(format!("create {}", dir.display()), e))?;
        let (mut on_disk, mut unfinished) = (Vec::new(), Vec::new());
        for entry in
            fs::read_dir(dir).map_err(|e| StoreError::io(format!("list {}", dir.display()), e))?
        {
            let entry = entry.map_err(|e| StoreError::io(format!("list {}", dir.display()), e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u32>().ok())
            {
                on_disk.push(id);
            } else if name.ends_with(".seg.tmp") {
                // A segment whose creation a crash interrupted: never used.
                unfinished.push(entry.path());
            }
        }
        on_disk.sort_unstable();

        let mut lost = Vec::new();
        if let Some(mark) = synced {
            let past: Vec<usize> = (0..indexed.len())
                .filter(|&i| VlogPosition::end_of(&indexed[i]) > mark)
                .collect();
            let mut files = HashMap::new();
            let mut lost_jobs = HashSet::new();
            for &i in &past {
                if !record_on_disk(dir, &mut files, &indexed[i])? {
                    lost_jobs.insert(indexed[i].job_id);
                }
            }
            // A commit is all or nothing: every record past the mark that a
            // job with a lost record wrote goes with it (its saved state
            // must not outlive its outputs, nor the reverse).
            lost = past
                .into_iter()
                .filter(|&i| lost_jobs.contains(&indexed[i].job_id))
                .collect();
        }
        let mut segments: BTreeMap<u32, SegmentUse> = BTreeMap::new();
        let mut ends: HashMap<u32, u64> = HashMap::new();
        for (i, e) in indexed.iter().enumerate() {
            if lost.binary_search(&i).is_ok() {
                continue;
            }
            let seg = segments.entry(e.segment).or_default();
            seg.live += record_bytes(e.len);
            let end = e.offset + u64::from(e.len).next_multiple_of(RECORD_ALIGN as u64);
            let max = ends.entry(e.segment).or_insert(0);
            *max = (*max).max(end);
        }
        for id in segments.keys() {
            if on_disk.binary_search(id).is_err() {
                return Err(StoreError::corrupt(
                    format!("vlog segment {}", segment_path(dir, *id).display()),
                    "indexed by the results tree but missing",
                ));
            }
        }

        let mut recovery = VlogRecovery {
            lost_records: lost.len() as u64,
            ..VlogRecovery::default()
        };
        for path in &unfinished {
            fs::remove_file(path)
                .map_err(|e| StoreError::io(format!("remove {}", path.display()), e))?;
            recovery.removed_segments += 1;
        }
        let last = on_disk.last().copied();
        for &id in &on_disk {
            let path = segment_path(dir, id);
            let len = fs::metadata(&path)
                .map_err(|e| StoreError::io(format!("stat {}", path.display()), e))?
                .len();
            // Nothing indexes it and it is not the newest, or it is the newest
            // and a crash cut its header short (an older kiln created
            // segments in place): nothing in it was ever acknowledged.
            let unusable = || len < SEGMENT_HEADER_BYTES || check_segment_header(&path).is_err();
            match ends.get(&id) {
                None if Some(id) != last || unusable() => {
                    fs::remove_file(&path)
                        .map_err(|e| StoreError::io(format!("remove {}", path.display()), e))?;
                    recovery.removed_segments += 1;
                }
                end => {
                    let keep = end
                        .copied()
                        .unwrap_or(SEGMENT_HEADER_BYTES)
                        .max(SEGMENT_HEADER_BYTES);
                    if len < keep {
                        return Err(StoreError::corrupt(
                            path.display().to_string(),
                            format!(
                                "{len} bytes but the results index references bytes up to {keep}"
                            ),
                        ));
                    }
                    if len > keep {
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
                        f.set_len(keep).map_err(|e| {
                            StoreError::io(format!("truncate {}", path.display()), e)
                        })?;
                        f.sync_all().map_err(|e| {
                            crate::shared::fsync_error(format!("fsync {}", path.display()), e)
                        })?;
                        recovery.truncated_bytes += len - keep;
                    }
                    segments.entry(id).or_default().len = keep;
                }
            }
        }
        if recovery.removed_segments > 0 {
            crate::shared::fsync_path(dir)?;
        }
        // A process that crashed in `Relaxed` mode left records past the mark
        // in the page cache only.
        if let Some(mark) = synced {
            for &id in on_disk.iter().filter(|&&id| id >= mark.segment) {
                fsync_segment(dir, id)?;
            }
        }

        let reader = Arc::new(VlogReader {
            dir: dir.to_path_buf(),
            files: RwLock::new(HashMap::new()),
            verified: RwLock::new(HashSet::new()),
        });
        let (active_id, active) = match last {
            Some(id) if segments.contains_key(&id) => {
                let path = segment_path(dir, id);
                let f = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
                check_segment_header(&path)?;
                (id, f)
            }
            // Removed above, or a new log.
            last => {
                let id = last.unwrap_or(1);
                (id, create_segment(dir, id)?)
            }
        };
        segments.entry(active_id).or_insert(SegmentUse {
            len: SEGMENT_HEADER_BYTES,
            live: 0,
        });
        Ok((
            Vlog {
                dir: dir.to_path_buf(),
                active_id,
                active: BufWriter::with_capacity(APPEND_BUFFER_BYTES, active),
                unsynced: Vec::new(),
                quarantined: HashSet::new(),
                deferred: BTreeMap::new(),
                #[cfg(feature = "test-hooks")]
                fail_append_in: None,
                dirty: false,
                fsync_failed: FsyncFailure::default(),
                written: 0,
                segment_bytes_max,
                segments,
                reader,
            },
            recovery,
            lost,
        ))
    }

    /// Where the next append goes (everything before it is written, once
    /// [`Vlog::flush`] has run).
    pub(crate) fn end(&self) -> VlogPosition {
        VlogPosition {
            segment: self.active_id,
            offset: self.segments.get(&self.active_id).map_or(0, |s| s.len),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The background flusher fsynced everything before `mark`: rolled
    /// segments before it need no fsync from [`Vlog::sync`] any more.
    pub(crate) fn synced_to(&mut self, mark: VlogPosition) {
        self.unsynced.retain(|(id, _)| *id >= mark.segment);
    }

    pub(crate) fn reader(&self) -> Arc<VlogReader> {
        Arc::clone(&self.reader)
    }

    /// Appends one payload; it is durable only after [`Vlog::sync`].
    pub(crate) fn append(&mut self, payload: &[u8], job_id: u64) -> Result<IndexEntry> {
        let len = u32::try_from(payload.len()).map_err(|_| {
            StoreError::invalid("series", format!("{} bytes exceeds 4 GiB", payload.len()))
        })?;
        let size = record_bytes(len);
        #[cfg(feature = "test-hooks")]
        if let Some(n) = self.fail_append_in.as_mut() {
            if *n == 0 {
                self.fail_append_in = None;
                return Err(StoreError::io(
                    format!(
                        "append to {}",
                        segment_path(&self.dir, self.active_id).display()
                    ),
                    std::io::Error::from(std::io::ErrorKind::StorageFull),
                ));
            }
            *n -= 1;
        }
        let active_len = self.segments.get(&self.active_id).map_or(0, |s| s.len);
        if active_len > SEGMENT_HEADER_BYTES && active_len + size > self.segment_bytes_max {
            self.roll()?;
        }
        let id = self.active_id;
        self.written += size;
        let seg = self.segments.entry(id).or_default();
        let start = seg.len;
        let crc = crc32fast::hash(payload);
        let mut header = [0u8; RECORD_HEADER_BYTES as usize];
        header[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        header[4..8].copy_from_slice(&len.to_le_bytes());
        header[8..12].copy_from_slice(&crc.to_le_bytes());
        let pad = (size - RECORD_HEADER_BYTES - u64::from(len)) as usize;
        let written = self
            .active
            .write_all(&header)
            .and_then(|()| self.active.write_all(payload))
            .and_then(|()| self.active.write_all(&[0u8; RECORD_ALIGN][..pad]));
        written.map_err(|e| {
            StoreError::io(
                format!("append to {}", segment_path(&self.dir, id).display()),
                e,
            )
        })?;
        seg.len += size;
        seg.live += size;
        self.dirty = true;
        Ok(IndexEntry {
            segment: id,
            offset: start + RECORD_HEADER_BYTES,
            len,
            crc,
            job_id,
        })
    }

    fn roll(&mut self) -> Result<()> {
        let next = self.active_id + 1;
        let file = create_segment(&self.dir, next)?;
        let old = std::mem::replace(
            &mut self.active,
            BufWriter::with_capacity(APPEND_BUFFER_BYTES, file),
        );
        let old = old
            .into_inner()
            .map_err(|e| StoreError::io(format!("write {}", self.dir.display()), e.into_error()))?;
        self.unsynced.push((self.active_id, old));
        self.active_id = next;
        self.segments.insert(
            next,
            SegmentUse {
                len: SEGMENT_HEADER_BYTES,
                live: 0,
            },
        );
        Ok(())
    }

    /// Writes buffered appends to the file (readable, not yet durable).
    pub(crate) fn flush(&mut self) -> Result<()> {
        self.active.flush().map_err(|e| {
            StoreError::io(
                format!(
                    "write {}",
                    segment_path(&self.dir, self.active_id).display()
                ),
                e,
            )
        })
    }

    /// Bytes of records appended since the last call (headers and padding
    /// included).
    pub(crate) fn take_written(&mut self) -> u64 {
        std::mem::take(&mut self.written)
    }

    /// Makes every append so far durable. After a failed fsync it fails
    /// without touching the disk (another would be a retry).
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.fsync_failed.check()?;
        let synced = self.sync_once();
        self.fsync_failed.note(synced)
    }

    fn sync_once(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        for (_, f) in self.unsynced.drain(..) {
            f.sync_data().map_err(|e| {
                crate::shared::fsync_error(format!("fsync {}", self.dir.display()), e)
            })?;
        }
        self.flush()?;
        self.active.get_ref().sync_data().map_err(|e| {
            crate::shared::fsync_error(
                format!(
                    "fsync {}",
                    segment_path(&self.dir, self.active_id).display()
                ),
                e,
            )
        })?;
        self.dirty = false;
        Ok(())
    }

    /// Test support (a simulated power loss): cuts every segment back to
    /// `mark`, as if nothing written after it had reached the disk.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn truncate_past(&mut self, mark: VlogPosition) -> Result<()> {
        self.flush()?;
        for &id in self.segments.keys().filter(|&&id| id >= mark.segment) {
            let len = if id == mark.segment {
                mark.offset
            } else {
                SEGMENT_HEADER_BYTES
            };
            let path = segment_path(&self.dir, id);
            OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(len))
                .map_err(|e| StoreError::io(format!("truncate {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Where appends will go next, with everything before it written to
    /// the files: a point [`Vlog::rewind`] can return to.
    pub(crate) fn mark(&mut self) -> Result<VlogPosition> {
        self.flush()?;
        Ok(self.end())
    }

    /// Undoes every append since `mark` (none of them indexed): drops what
    /// is buffered, deletes the segments rolled since, and cuts the mark's
    /// segment back to it, which becomes the active one again.
    pub(crate) fn rewind(&mut self, mark: VlogPosition) -> Result<()> {
        let path = segment_path(&self.dir, mark.segment);
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|f| f.set_len(mark.offset).map(|()| f))
            .map_err(|e| StoreError::io(format!("truncate {}", path.display()), e))?;
        let dropped = std::mem::replace(
            &mut self.active,
            BufWriter::with_capacity(APPEND_BUFFER_BYTES, file),
        );
        // What it still buffered was appended after the mark.
        drop(dropped.into_parts());
        // Every segment after the mark's: those rolled since, and one a
        // failed roll created without using it.
        let mut id = mark.segment + 1;
        loop {
            self.segments.remove(&id);
            self.reader.forget(id);
            let path = segment_path(&self.dir, id);
            match fs::remove_file(&path) {
                Ok(()) => id += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(StoreError::io(format!("remove {}", path.display()), e)),
            }
        }
        self.unsynced.retain(|(id, _)| *id < mark.segment);
        self.active_id = mark.segment;
        if let Some(seg) = self.segments.get_mut(&mark.segment) {
            seg.live = seg.live.saturating_sub(seg.len.saturating_sub(mark.offset));
            seg.len = mark.offset;
        }
        self.dirty = true;
        Ok(())
    }

    /// An index entry stopped referencing its record (overwritten or removed).
    pub(crate) fn release(&mut self, entry: &IndexEntry) {
        if let Some(seg) = self.segments.get_mut(&entry.segment) {
            let size = record_bytes(entry.len);
            invariant!(
                seg.live >= size,
                "segment {} has {} live bytes, fewer than a released record of {size}",
                entry.segment,
                seg.live
            );
            seg.live = seg.live.saturating_sub(size);
        }
    }

    /// Sealed segments whose live fraction is below `live_fraction_min`,
    /// but for quarantined ones and (when `patient`) those put off since
    /// the active segment became active; the sparsest first.
    pub(crate) fn compaction_candidates(&self, live_fraction_min: f64, patient: bool) -> Vec<u32> {
        let mut candidates: Vec<(f64, u32)> = self
            .segments
            .iter()
            .filter(|&(&id, s)| {
                id != self.active_id
                    && !self.quarantined.contains(&id)
                    && (!patient
                        || self
                            .deferred
                            .get(&id)
                            .is_none_or(|&(_, last)| last != self.active_id))
                    && (s.live as f64) < live_fraction_min * s.len as f64
            })
            .map(|(&id, s)| (s.live as f64 / s.len.max(1) as f64, id))
            .collect();
        candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        candidates.into_iter().map(|(_, id)| id).collect()
    }

    /// Puts off compacting segment `id` until another segment is active,
    /// unless it was first put off `patience` segments ago or more;
    /// whether it was.
    pub(crate) fn defer(&mut self, id: u32, patience: u32) -> bool {
        let active = self.active_id;
        let first = self.deferred.get(&id).map_or(active, |&(first, _)| first);
        if active.saturating_sub(first) >= patience {
            return false;
        }
        self.deferred.insert(id, (first, active));
        true
    }

    /// Deletes a segment nothing references any more.
    pub(crate) fn remove_segment(&mut self, id: u32) -> Result<()> {
        let path = segment_path(&self.dir, id);
        fs::remove_file(&path)
            .map_err(|e| StoreError::io(format!("remove {}", path.display()), e))?;
        crate::shared::fsync_path(&self.dir)?;
        self.segments.remove(&id);
        self.deferred.remove(&id);
        self.reader.forget(id);
        Ok(())
    }
}

/// Creates segment `id` whole: its header is written and fsynced in a
/// temporary file, which is then renamed into place and the directory
/// fsynced, so a crash leaves either no segment or one with its header.
fn create_segment(dir: &Path, id: u32) -> Result<File> {
    let path = segment_path(dir, id);
    let tmp = dir.join(format!("{id:010}.seg.tmp"));
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    header[0..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    if path.exists() {
        return Err(StoreError::corrupt(
            path.display().to_string(),
            "a new segment would replace an existing one",
        ));
    }
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&header).map(|()| f))
        .map_err(|e| StoreError::io(format!("create {}", path.display()), e))?
        .sync_data()
        .map_err(|e| crate::shared::fsync_error(format!("fsync {}", tmp.display()), e))?;
    fs::rename(&tmp, &path).map_err(|e| StoreError::io(format!("create {}", path.display()), e))?;
    crate::shared::fsync_path(dir)?;
    OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| StoreError::io(format!("open {}", path.display()), e))
}

fn check_segment_header(path: &Path) -> Result<()> {
    let mut f =
        File::open(path).map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    f.seek(SeekFrom::Start(0))
        .and_then(|_| std::io::Read::read_exact(&mut f, &mut header))
        .map_err(|e| StoreError::io(format!("read header of {}", path.display()), e))?;
    if &header[0..8] != SEGMENT_MAGIC {
        return Err(StoreError::corrupt(
            path.display().to_string(),
            "not a kiln value-log segment",
        ));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    // Records have not changed since format 3, whose segments are kept.
    if !READABLE_FORMAT_VERSIONS.contains(&version) {
        return Err(StoreError::FormatVersion {
            path: path.to_path_buf(),
            found: version.to_string(),
            expected: FORMAT_VERSION,
        });
    }
    Ok(())
}

/// Shared read access: open segment files, reused across reads, and the
/// records whose checksum a read has verified (records never change, so one
/// check per record is enough; `kiln check` clears the set and verifies
/// everything again).
pub(crate) struct VlogReader {
    dir: PathBuf,
    files: RwLock<HashMap<u32, Arc<File>>>,
    verified: RwLock<HashSet<(u32, u64)>>,
}

/// Most verified records remembered; the set starts over beyond it.
const VERIFIED_MAX: usize = 1 << 20;

/// A record read into memory: its header, then its payload, 16-aligned.
pub(crate) struct Loaded {
    buf: AlignedVec<16>,
}

impl Loaded {
    /// The payload.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.buf.get(RECORD_HEADER_BYTES as usize..).unwrap_or(&[])
    }
}

impl VlogReader {
    /// Reads the record `entry` points at and checks its header and
    /// checksum. `Ok(None)` when the segment is gone (compacted away since
    /// the caller read the index): look the key up again.
    pub(crate) fn read(&self, entry: &IndexEntry) -> Result<Option<Loaded>> {
        let location = || format!("vlog segment {} offset {}", entry.segment, entry.offset);
        let header_at = entry
            .offset
            .checked_sub(RECORD_HEADER_BYTES)
            .filter(|&at| at >= SEGMENT_HEADER_BYTES)
            .ok_or_else(|| StoreError::corrupt(location(), "offset inside the segment header"))?;
        let Some(file) = self.file(entry.segment)? else {
            return Ok(None);
        };
        let read = |buf: &mut [u8], at: u64| {
            file.read_exact_at(buf, at).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    StoreError::corrupt(location(), "past the end of the segment")
                } else {
                    let path = segment_path(&self.dir, entry.segment);
                    StoreError::io(format!("read {} at {at}", path.display()), e)
                }
            })
        };
        // The header first: a damaged index entry must not size the buffer.
        let mut header = [0u8; RECORD_HEADER_BYTES as usize];
        read(&mut header, header_at)?;
        let field =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        if field(0) != RECORD_MAGIC || field(4) != entry.len || field(8) != entry.crc {
            return Err(StoreError::corrupt(
                location(),
                "record header does not match the index",
            ));
        }
        let mut buf =
            AlignedVec::<16>::with_capacity(RECORD_HEADER_BYTES as usize + entry.len as usize);
        buf.extend_from_slice(&header);
        buf.resize(RECORD_HEADER_BYTES as usize + entry.len as usize, 0);
        read(&mut buf[RECORD_HEADER_BYTES as usize..], entry.offset)?;
        let loaded = Loaded { buf };
        let key = (entry.segment, entry.offset);
        let known = self.verified.read().is_ok_and(|v| v.contains(&key));
        if !known {
            if crc32fast::hash(loaded.bytes()) != entry.crc {
                return Err(StoreError::corrupt(location(), "checksum mismatch"));
            }
            if let Ok(mut v) = self.verified.write() {
                if v.len() >= VERIFIED_MAX {
                    v.clear();
                }
                v.insert(key);
            }
        }
        Ok(Some(loaded))
    }

    /// Copies byte ranges of the payload of the record `entry` points at
    /// into buffers: each piece is (offset in the payload, buffer), sorted
    /// by offset. A record whose checksum a read has verified is read
    /// straight into the buffers, one `preadv` over the span the pieces
    /// cover (a gap between them read into scratch); any other, or pieces
    /// that overlap, is read whole and checked first ([`Self::read`]).
    /// `Ok(None)` when the segment is gone, as for [`Self::read`].
    pub(crate) fn read_into(
        &self,
        entry: &IndexEntry,
        pieces: &mut [(usize, &mut [u8])],
    ) -> Result<Option<()>> {
        let (Some(first), Some(last)) = (pieces.first(), pieces.last()) else {
            return Ok(Some(()));
        };
        let (start, end) = (first.0, last.0 + last.1.len());
        let key = (entry.segment, entry.offset);
        let verified = self.verified.read().is_ok_and(|v| v.contains(&key));
        let apart = pieces.windows(2).all(|w| w[1].0 >= w[0].0 + w[0].1.len());
        if verified
            && apart
            && end <= entry.len as usize
            && let Some(file) = self.file(entry.segment)?
        {
            let gaps: usize = pieces
                .windows(2)
                .map(|w| w[1].0.saturating_sub(w[0].0 + w[0].1.len()))
                .sum();
            let mut scratch = vec![0u8; gaps];
            let mut slices = Vec::with_capacity(pieces.len() * 2);
            let mut rest = &mut scratch[..];
            let mut at = start;
            for (offset, buf) in pieces.iter_mut() {
                if *offset > at {
                    let (gap, tail) = rest.split_at_mut(*offset - at);
                    slices.push(std::io::IoSliceMut::new(gap));
                    rest = tail;
                }
                at = *offset + buf.len();
                slices.push(std::io::IoSliceMut::new(buf));
            }
            let read = rustix::io::preadv(&*file, &mut slices, entry.offset + start as u64);
            if read.is_ok_and(|n| n == end - start) {
                return Ok(Some(()));
            }
            // A short or failed read: the whole record's read reports it.
        }
        let Some(loaded) = self.read(entry)? else {
            return Ok(None);
        };
        for (offset, buf) in pieces.iter_mut() {
            let len = buf.len();
            let src = loaded.bytes().get(*offset..*offset + len).ok_or_else(|| {
                StoreError::corrupt(
                    format!("vlog segment {} offset {}", entry.segment, entry.offset),
                    format!(
                        "{} payload bytes, a read wants {}",
                        entry.len,
                        *offset + len
                    ),
                )
            })?;
            buf.copy_from_slice(src);
        }
        Ok(Some(()))
    }

    /// Segment `id`'s file, opened once; `None` when it is gone.
    fn file(&self, id: u32) -> Result<Option<Arc<File>>> {
        if let Ok(files) = self.files.read()
            && let Some(f) = files.get(&id)
        {
            return Ok(Some(Arc::clone(f)));
        }
        let path = segment_path(&self.dir, id);
        let file = match File::open(&path) {
            Ok(f) => Arc::new(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(format!("open {}", path.display()), e)),
        };
        if let Ok(mut files) = self.files.write() {
            files.insert(id, Arc::clone(&file));
        }
        Ok(Some(file))
    }

    fn forget(&self, id: u32) {
        if let Ok(mut files) = self.files.write() {
            files.remove(&id);
        }
        if let Ok(mut v) = self.verified.write() {
            v.retain(|&(segment, _)| segment != id);
        }
    }

    /// Makes the next read of every record verify its checksum again.
    pub(crate) fn forget_verified(&self) {
        if let Ok(mut v) = self.verified.write() {
            v.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_off_segment_waits_for_another_active_one_then_for_patience() {
        let dir = tempfile::tempdir().expect("dir");
        // Records of 4 KiB in 16 KiB segments: three per segment.
        let (mut vlog, _, _) = Vlog::open(dir.path(), 16 * 1024, &[], None).expect("open");
        let mut entries = Vec::new();
        for _ in 0..9 {
            entries.push(vlog.append(&[7u8; 4096], 1).expect("append"));
        }
        let first = entries[0].segment;
        assert!(vlog.active_id > first + 1, "{}", vlog.active_id);
        // Two of its three records die: the segment is sparse.
        vlog.release(&entries[0]);
        vlog.release(&entries[1]);
        assert_eq!(vlog.compaction_candidates(0.5, true), vec![first]);
        assert!(vlog.defer(first, 2), "put off once");
        assert!(vlog.compaction_candidates(0.5, true).is_empty());
        assert_eq!(
            vlog.compaction_candidates(0.5, false),
            vec![first],
            "a compaction a caller asks for does not wait"
        );
        // Another active segment: looked at again, put off again, until
        // `patience` segments have become active since the first time.
        vlog.roll().expect("roll");
        assert_eq!(vlog.compaction_candidates(0.5, true), vec![first]);
        assert!(vlog.defer(first, 2), "one segment later");
        vlog.roll().expect("roll");
        assert!(!vlog.defer(first, 2), "two segments later it is compacted");
    }
}
