//! The durability model, with no FUSE in it: inodes, each with a current
//! and a durable version of its data (a file) or its entries (a directory),
//! and what a power cut keeps.
//!
//! Every operation answers `Result<_, Errno>`; nothing here panics.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{Errno, FileAttr, FileType, INodeNo};

/// The root directory's inode number.
pub(crate) const ROOT: u64 = 1;
/// The unit of copy-on-write: a write after an fsync copies only the
/// blocks it touches.
const BLOCK: usize = 64 * 1024;
/// The largest file (a bound on memory, not a property of a disk).
const FILE_BYTES_MAX: u64 = 1 << 34;
/// The longest name in a directory.
const NAME_BYTES_MAX: usize = 255;

/// A file's bytes: fixed-size blocks shared between the current and the
/// durable version until one of them changes (`None` is a block of zeros).
/// Bytes past `len` in the last block are always zero.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Bytes {
    len: u64,
    blocks: Vec<Option<Arc<Vec<u8>>>>,
}

impl Bytes {
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Up to `size` bytes from `offset` (fewer at the end of the file).
    pub(crate) fn read(&self, offset: u64, size: u64) -> Vec<u8> {
        if offset >= self.len {
            return Vec::new();
        }
        let end = self.len.min(offset.saturating_add(size));
        let mut out = Vec::with_capacity(usize::try_from(end - offset).unwrap_or(0));
        let mut at = offset;
        while at < end {
            let (index, within) = split(at);
            let take = (BLOCK - within).min(usize::try_from(end - at).unwrap_or(BLOCK));
            match self.blocks.get(index).and_then(Option::as_ref) {
                Some(block) => out.extend_from_slice(&block[within..within + take]),
                None => out.resize(out.len() + take, 0),
            }
            at += take as u64;
        }
        out
    }

    /// Writes `data` at `offset`, growing the file (with zeros) as needed.
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= FILE_BYTES_MAX)
            .ok_or(Errno::EFBIG)?;
        if end > self.len {
            self.grow(end);
        }
        let mut done = 0;
        while done < data.len() {
            let (index, within) = split(offset + done as u64);
            let take = (BLOCK - within).min(data.len() - done);
            let Some(slot) = self.blocks.get_mut(index) else {
                return Err(Errno::EIO);
            };
            let block = Arc::make_mut(slot.get_or_insert_with(|| Arc::new(vec![0; BLOCK])));
            block[within..within + take].copy_from_slice(&data[done..done + take]);
            done += take;
        }
        Ok(())
    }

    /// Truncates or extends (with zeros) to `len` bytes.
    pub(crate) fn set_len(&mut self, len: u64) -> Result<(), Errno> {
        if len > FILE_BYTES_MAX {
            return Err(Errno::EFBIG);
        }
        if len >= self.len {
            self.grow(len);
            return Ok(());
        }
        let (index, within) = split(len);
        self.blocks.truncate(index + usize::from(within > 0));
        if within > 0
            && let Some(Some(block)) = self.blocks.get_mut(index)
        {
            Arc::make_mut(block)[within..].fill(0);
        }
        self.len = len;
        Ok(())
    }

    /// Extends to `len` bytes (the new bytes are zeros already).
    fn grow(&mut self, len: u64) {
        let (index, within) = split(len);
        let blocks = index + usize::from(within > 0);
        if blocks > self.blocks.len() {
            self.blocks.resize(blocks, None);
        }
        self.len = self.len.max(len);
    }
}

/// The block an offset is in, and the offset within it.
fn split(offset: u64) -> (usize, usize) {
    let block = BLOCK as u64;
    (
        usize::try_from(offset / block).unwrap_or(usize::MAX),
        (offset % block) as usize,
    )
}

/// Entries of a directory: name to inode number.
pub(crate) type Entries = BTreeMap<OsString, u64>;

/// What an inode is.
#[derive(Clone, Debug)]
pub(crate) enum Body {
    /// A regular file: its bytes now, and as of its last fsync.
    File { data: Bytes, durable: Bytes },
    /// A directory: its entries now, and as of its last fsync; its parent
    /// in the current tree.
    Dir {
        entries: Entries,
        durable: Entries,
        parent: u64,
    },
    /// A socket, FIFO or device node: a name only, no data.
    Special { kind: FileType, rdev: u32 },
}

/// One inode.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) body: Body,
    perm: u16,
    uid: u32,
    gid: u32,
    /// Current entries naming it (not kept for directories).
    nlink: u32,
    /// Open file handles.
    open: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    crtime: SystemTime,
}

impl Node {
    fn new(body: Body, perm: u16, uid: u32, gid: u32) -> Node {
        let now = SystemTime::now();
        Node {
            body,
            perm,
            uid,
            gid,
            nlink: 0,
            open: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
        }
    }

    fn kind(&self) -> FileType {
        match &self.body {
            Body::File { .. } => FileType::RegularFile,
            Body::Dir { .. } => FileType::Directory,
            Body::Special { kind, .. } => *kind,
        }
    }

    fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir { .. })
    }

    fn touch(&mut self) {
        let now = SystemTime::now();
        self.mtime = now;
        self.ctime = now;
    }
}

/// An open file or directory.
#[derive(Clone, Copy, Debug)]
struct Handle {
    ino: u64,
    append: bool,
}

/// Changes to an inode's attributes (`setattr`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SetAttr {
    pub(crate) mode: Option<u32>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) size: Option<u64>,
    pub(crate) atime: Option<SystemTime>,
    pub(crate) mtime: Option<SystemTime>,
}

/// How to rename.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RenameMode {
    /// Replace an existing target (`rename(2)`).
    Replace,
    /// Fail if the target exists.
    NoReplace,
    /// Swap two existing entries.
    Exchange,
}

/// Counts of what the filesystem holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Inodes, the root included.
    pub inodes: usize,
    /// Open file and directory handles.
    pub open_handles: usize,
    /// Power cuts so far.
    pub power_cuts: u64,
}

/// The whole filesystem.
#[derive(Debug)]
pub(crate) struct State {
    nodes: HashMap<u64, Node>,
    /// Inode numbers are never reused, so the kernel never mistakes a new
    /// inode for one it still remembers.
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    /// Something may have become unreachable: collect at the next chance.
    garbage: bool,
    power_cuts: u64,
}

impl State {
    /// An empty filesystem: the root directory, durable and empty.
    pub(crate) fn new(uid: u32, gid: u32) -> State {
        let root = Node::new(
            Body::Dir {
                entries: Entries::new(),
                durable: Entries::new(),
                parent: ROOT,
            },
            0o755,
            uid,
            gid,
        );
        State {
            nodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            handles: HashMap::new(),
            next_fh: 1,
            garbage: false,
            power_cuts: 0,
        }
    }

    pub(crate) fn usage(&self) -> Usage {
        Usage {
            inodes: self.nodes.len(),
            open_handles: self.handles.len(),
            power_cuts: self.power_cuts,
        }
    }

    fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn entries(&self, dir: u64) -> Result<&Entries, Errno> {
        match &self.node(dir)?.body {
            Body::Dir { entries, .. } => Ok(entries),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut Entries, Errno> {
        match &mut self.node_mut(dir)?.body {
            Body::Dir { entries, .. } => Ok(entries),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn data_mut(&mut self, ino: u64) -> Result<&mut Bytes, Errno> {
        match &mut self.node_mut(ino)?.body {
            Body::File { data, .. } => Ok(data),
            Body::Dir { .. } => Err(Errno::EISDIR),
            Body::Special { .. } => Err(Errno::EINVAL),
        }
    }

    /// The attributes the kernel sees.
    pub(crate) fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let node = self.node(ino)?;
        let (size, nlink, rdev) = match &node.body {
            Body::File { data, .. } => (data.len(), node.nlink, 0),
            Body::Dir { .. } => (4096, 2, 0),
            Body::Special { rdev, .. } => (0, node.nlink, *rdev),
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: node.atime,
            mtime: node.mtime,
            ctime: node.ctime,
            crtime: node.crtime,
            kind: node.kind(),
            perm: node.perm,
            nlink,
            uid: node.uid,
            gid: node.gid,
            rdev,
            blksize: 4096,
            flags: 0,
        })
    }

    pub(crate) fn lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let ino = *self.entries(parent)?.get(name).ok_or(Errno::ENOENT)?;
        self.attr(ino)
    }

    pub(crate) fn setattr(&mut self, ino: u64, set: SetAttr) -> Result<FileAttr, Errno> {
        if let Some(size) = set.size {
            self.data_mut(ino)?.set_len(size)?;
        }
        let node = self.node_mut(ino)?;
        if let Some(mode) = set.mode {
            node.perm = (mode & 0o7777) as u16;
        }
        if let Some(uid) = set.uid {
            node.uid = uid;
        }
        if let Some(gid) = set.gid {
            node.gid = gid;
        }
        if set.size.is_some() {
            node.touch();
        }
        if let Some(atime) = set.atime {
            node.atime = atime;
        }
        if let Some(mtime) = set.mtime {
            node.mtime = mtime;
        }
        node.ctime = SystemTime::now();
        self.attr(ino)
    }

    /// A new inode named `name` in `parent`; `EEXIST` if the name is taken.
    pub(crate) fn make(
        &mut self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        uid: u32,
        gid: u32,
    ) -> Result<FileAttr, Errno> {
        if name.len() > NAME_BYTES_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if name.is_empty() || name == "." || name == ".." {
            return Err(Errno::EINVAL);
        }
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let body = match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => Body::File {
                data: Bytes::default(),
                durable: Bytes::default(),
            },
            libc::S_IFDIR => Body::Dir {
                entries: Entries::new(),
                durable: Entries::new(),
                parent,
            },
            libc::S_IFSOCK => Body::Special {
                kind: FileType::Socket,
                rdev: 0,
            },
            libc::S_IFIFO => Body::Special {
                kind: FileType::NamedPipe,
                rdev: 0,
            },
            _ => return Err(Errno::EPERM),
        };
        let perm = (mode & !umask & 0o7777) as u16;
        let ino = self.next_ino;
        self.next_ino += 1;
        let mut node = Node::new(body, perm, uid, gid);
        node.nlink = 1;
        self.nodes.insert(ino, node);
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.node_mut(parent)?.touch();
        self.attr(ino)
    }

    pub(crate) fn unlink(&mut self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let ino = *self.entries(parent)?.get(name).ok_or(Errno::ENOENT)?;
        if self.node(ino)?.is_dir() {
            return Err(Errno::EISDIR);
        }
        self.entries_mut(parent)?.remove(name);
        self.node_mut(parent)?.touch();
        let node = self.node_mut(ino)?;
        node.nlink = node.nlink.saturating_sub(1);
        node.ctime = SystemTime::now();
        self.garbage = true;
        self.collect();
        Ok(())
    }

    pub(crate) fn rmdir(&mut self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let ino = *self.entries(parent)?.get(name).ok_or(Errno::ENOENT)?;
        if !self.entries(ino)?.is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        self.entries_mut(parent)?.remove(name);
        self.node_mut(parent)?.touch();
        self.garbage = true;
        self.collect();
        Ok(())
    }

    /// Whether directory `ancestor` is `dir` or above it in the current tree.
    fn is_ancestor(&self, ancestor: u64, mut dir: u64) -> bool {
        for _ in 0..=self.nodes.len() {
            if dir == ancestor {
                return true;
            }
            match self.nodes.get(&dir).map(|n| &n.body) {
                Some(Body::Dir { parent, .. }) if dir != ROOT => dir = *parent,
                _ => return false,
            }
        }
        false
    }

    fn set_parent(&mut self, dir: u64, to: u64) {
        if let Some(Node {
            body: Body::Dir { parent, .. },
            ..
        }) = self.nodes.get_mut(&dir)
        {
            *parent = to;
        }
    }

    pub(crate) fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        mode: RenameMode,
    ) -> Result<(), Errno> {
        if new_name.len() > NAME_BYTES_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if new_name.is_empty() || new_name == "." || new_name == ".." {
            return Err(Errno::EINVAL);
        }
        let source = *self.entries(parent)?.get(name).ok_or(Errno::ENOENT)?;
        let target = self.entries(new_parent)?.get(new_name).copied();
        let source_dir = self.node(source)?.is_dir();
        if source_dir && self.is_ancestor(source, new_parent) {
            return Err(Errno::EINVAL);
        }
        if mode == RenameMode::Exchange {
            let target = target.ok_or(Errno::ENOENT)?;
            if self.node(target)?.is_dir() && self.is_ancestor(target, parent) {
                return Err(Errno::EINVAL);
            }
            self.entries_mut(parent)?.insert(name.to_owned(), target);
            self.entries_mut(new_parent)?
                .insert(new_name.to_owned(), source);
            self.set_parent(target, parent);
            self.set_parent(source, new_parent);
            self.node_mut(parent)?.touch();
            self.node_mut(new_parent)?.touch();
            return Ok(());
        }
        if let Some(target) = target {
            if mode == RenameMode::NoReplace {
                return Err(Errno::EEXIST);
            }
            if target == source {
                return Ok(());
            }
            let target_dir = self.node(target)?.is_dir();
            match (source_dir, target_dir) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) if !self.entries(target)?.is_empty() => {
                    return Err(Errno::ENOTEMPTY);
                }
                _ => {}
            }
        }
        self.entries_mut(parent)?.remove(name);
        self.entries_mut(new_parent)?
            .insert(new_name.to_owned(), source);
        self.set_parent(source, new_parent);
        self.node_mut(parent)?.touch();
        self.node_mut(new_parent)?.touch();
        self.node_mut(source)?.ctime = SystemTime::now();
        if let Some(target) = target {
            let node = self.node_mut(target)?;
            node.nlink = node.nlink.saturating_sub(1);
            self.garbage = true;
            self.collect();
        }
        Ok(())
    }

    /// Opens an inode; the handle's number.
    pub(crate) fn open(&mut self, ino: u64, flags: i32) -> Result<u64, Errno> {
        let node = self.node_mut(ino)?;
        let is_dir = node.is_dir();
        if flags & libc::O_TRUNC != 0 && flags & libc::O_ACCMODE != libc::O_RDONLY {
            match &mut node.body {
                Body::File { data, .. } => data.set_len(0)?,
                Body::Dir { .. } => return Err(Errno::EISDIR),
                Body::Special { .. } => {}
            }
            node.touch();
        }
        node.open += 1;
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(
            fh,
            Handle {
                ino,
                append: !is_dir && flags & libc::O_APPEND != 0,
            },
        );
        Ok(fh)
    }

    /// Closes a handle (an unknown one, from before a power cut, is fine).
    pub(crate) fn release(&mut self, fh: u64) {
        if let Some(handle) = self.handles.remove(&fh) {
            if let Some(node) = self.nodes.get_mut(&handle.ino) {
                node.open = node.open.saturating_sub(1);
                // The last handle on an unlinked inode (or a directory).
                if node.open == 0 && (node.nlink == 0 || node.is_dir()) {
                    self.garbage = true;
                }
            }
            self.collect();
        }
    }

    pub(crate) fn read(&mut self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let node = self.node_mut(ino)?;
        node.atime = SystemTime::now();
        match &node.body {
            Body::File { data, .. } => Ok(data.read(offset, u64::from(size))),
            Body::Dir { .. } => Err(Errno::EISDIR),
            Body::Special { .. } => Err(Errno::EINVAL),
        }
    }

    /// Writes at `offset`, or at the end through a handle opened with
    /// `O_APPEND` (or when `flags` has it); the bytes written.
    pub(crate) fn write(
        &mut self,
        ino: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        flags: i32,
    ) -> Result<u32, Errno> {
        let append = flags & libc::O_APPEND != 0 || self.handles.get(&fh).is_some_and(|h| h.append);
        let written = u32::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
        let bytes = self.data_mut(ino)?;
        let at = if append { bytes.len() } else { offset };
        bytes.write(at, data)?;
        self.node_mut(ino)?.touch();
        Ok(written)
    }

    /// Copies `len` bytes between (or within) files.
    pub(crate) fn copy_range(
        &mut self,
        from: u64,
        from_offset: u64,
        to: u64,
        to_offset: u64,
        len: u64,
    ) -> Result<u32, Errno> {
        let len = len.min(u64::from(u32::MAX >> 1));
        let bytes = match &self.node(from)?.body {
            Body::File { data, .. } => data.read(from_offset, len),
            Body::Dir { .. } => return Err(Errno::EISDIR),
            Body::Special { .. } => return Err(Errno::EINVAL),
        };
        self.data_mut(to)?.write(to_offset, &bytes)?;
        self.node_mut(to)?.touch();
        u32::try_from(bytes.len()).map_err(|_| Errno::EINVAL)
    }

    /// `fallocate` without punching holes: mode 0 extends the file, with
    /// `FALLOC_FL_KEEP_SIZE` nothing changes (the memory is always there).
    pub(crate) fn allocate(
        &mut self,
        ino: u64,
        offset: u64,
        len: u64,
        mode: i32,
    ) -> Result<(), Errno> {
        let bytes = self.data_mut(ino)?;
        match mode {
            0 => {
                let end = offset.checked_add(len).ok_or(Errno::EFBIG)?;
                if end > bytes.len() {
                    bytes.set_len(end)?;
                }
                self.node_mut(ino)?.touch();
                Ok(())
            }
            libc::FALLOC_FL_KEEP_SIZE => Ok(()),
            _ => Err(Errno::EOPNOTSUPP),
        }
    }

    /// fsync or fdatasync: a file's bytes, or a directory's entries, as
    /// they are now are what a power cut keeps.
    pub(crate) fn fsync(&mut self, ino: u64) -> Result<(), Errno> {
        match &mut self.node_mut(ino)?.body {
            Body::File { data, durable } => *durable = data.clone(),
            Body::Dir {
                entries, durable, ..
            } => {
                *durable = entries.clone();
                // What it no longer names may be unreachable now.
                self.garbage = true;
                self.collect();
            }
            Body::Special { .. } => {}
        }
        Ok(())
    }

    /// A directory's entries as `(inode, kind, name)`, `.` and `..` first.
    pub(crate) fn list(&self, dir: u64) -> Result<Vec<(u64, FileType, OsString)>, Errno> {
        let Body::Dir {
            entries, parent, ..
        } = &self.node(dir)?.body
        else {
            return Err(Errno::ENOTDIR);
        };
        let mut out = vec![
            (dir, FileType::Directory, OsString::from(".")),
            (*parent, FileType::Directory, OsString::from("..")),
        ];
        for (name, &ino) in entries {
            let kind = self
                .nodes
                .get(&ino)
                .map_or(FileType::RegularFile, Node::kind);
            out.push((ino, kind, name.clone()));
        }
        Ok(out)
    }

    /// Frees every inode that is neither open nor reachable from the root
    /// through current or durable entries (a power cut could bring the
    /// latter back).
    fn collect(&mut self) {
        if !self.garbage {
            return;
        }
        self.garbage = false;
        let mut live: HashSet<u64> = self
            .nodes
            .iter()
            .filter(|(_, node)| node.open > 0)
            .map(|(&ino, _)| ino)
            .collect();
        let mut stack = vec![ROOT];
        let mut seen = HashSet::from([ROOT]);
        while let Some(dir) = stack.pop() {
            live.insert(dir);
            let Some(Node {
                body: Body::Dir {
                    entries, durable, ..
                },
                ..
            }) = self.nodes.get(&dir)
            else {
                continue;
            };
            for &ino in entries.values().chain(durable.values()) {
                live.insert(ino);
                if seen.insert(ino) && self.nodes.get(&ino).is_some_and(Node::is_dir) {
                    stack.push(ino);
                }
            }
        }
        self.nodes.retain(|ino, _| live.contains(ino));
    }

    /// The power cut: every directory's entries become its durable ones,
    /// walked from the root (a directory keeps only its first parent, so
    /// the tree stays a tree); every file's bytes become its durable bytes;
    /// inodes no durable entry reaches are gone, and so are open handles.
    pub(crate) fn power_cut(&mut self) {
        let mut reached = HashSet::from([ROOT]);
        let mut stack = vec![ROOT];
        while let Some(dir) = stack.pop() {
            let Some(Node {
                body: Body::Dir { durable, .. },
                ..
            }) = self.nodes.get(&dir)
            else {
                continue;
            };
            let mut kept = Entries::new();
            let mut subdirs = Vec::new();
            for (name, &ino) in durable {
                let Some(node) = self.nodes.get(&ino) else {
                    continue;
                };
                if node.is_dir() {
                    if !reached.insert(ino) {
                        continue;
                    }
                    subdirs.push(ino);
                } else {
                    reached.insert(ino);
                }
                kept.insert(name.clone(), ino);
            }
            for &sub in &subdirs {
                self.set_parent(sub, dir);
                stack.push(sub);
            }
            if let Some(Node {
                body: Body::Dir {
                    entries, durable, ..
                },
                ..
            }) = self.nodes.get_mut(&dir)
            {
                *entries = kept.clone();
                *durable = kept;
            }
        }
        self.nodes.retain(|ino, _| reached.contains(ino));
        let mut links: HashMap<u64, u32> = HashMap::new();
        for node in self.nodes.values() {
            if let Body::Dir { entries, .. } = &node.body {
                for &ino in entries.values() {
                    *links.entry(ino).or_default() += 1;
                }
            }
        }
        for (ino, node) in &mut self.nodes {
            if let Body::File { data, durable } = &mut node.body {
                *data = durable.clone();
            }
            node.nlink = links.get(ino).copied().unwrap_or(0);
            node.open = 0;
        }
        self.handles.clear();
        self.garbage = false;
        self.power_cuts += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_write_read_truncate() {
        let mut b = Bytes::default();
        b.write(BLOCK as u64 - 2, b"abcd").expect("write");
        assert_eq!(b.len(), BLOCK as u64 + 2);
        assert_eq!(b.read(BLOCK as u64 - 3, 10), b"\0abcd");
        assert_eq!(b.read(0, 2), b"\0\0");
        let kept = b.clone();
        b.set_len(BLOCK as u64 - 1).expect("truncate");
        assert_eq!(b.read(BLOCK as u64 - 2, 10), b"a");
        b.set_len(BLOCK as u64 + 3).expect("extend");
        assert_eq!(b.read(BLOCK as u64 - 2, 10), b"a\0\0\0\0");
        assert_eq!(
            kept.read(BLOCK as u64 - 2, 10),
            b"abcd",
            "a clone is unchanged"
        );
        assert_eq!(b.write(FILE_BYTES_MAX, b"x"), Err(Errno::EFBIG));
    }

    #[test]
    fn cut_keeps_durable_tree_only() {
        let mut s = State::new(0, 0);
        let d = s.make(ROOT, OsStr::new("d"), libc::S_IFDIR | 0o755, 0, 0, 0);
        let d = u64::from(d.expect("mkdir").ino);
        let f = u64::from(
            s.make(d, OsStr::new("f"), libc::S_IFREG | 0o644, 0, 0, 0)
                .expect("create")
                .ino,
        );
        let fh = s.open(f, libc::O_WRONLY).expect("open");
        s.write(f, fh, 0, b"hello", 0).expect("write");
        s.fsync(f).expect("fsync");
        s.fsync(d).expect("fsyncdir");
        s.write(f, fh, 5, b" world", 0).expect("write");
        s.release(fh);
        // `d` itself is not durable in the root yet.
        s.power_cut();
        assert_eq!(s.lookup(ROOT, OsStr::new("d")), Err(Errno::ENOENT));
        assert_eq!(s.usage().inodes, 1);
    }
}
