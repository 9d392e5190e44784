//! Keyspaces: every table lives in one sled tree under a one-byte prefix
//! (see [`Space`]). A group commit is then a single sled batch, which sled
//! applies atomically across a crash, and which (unlike a sled transaction)
//! does not read every key before writing it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use kiln_core::{Result, StoreError};

/// A table of the store, and the byte its keys start with in the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Space {
    /// Job records by id.
    Jobs,
    /// Each job's input (payload and symbols), by id, written once.
    JobInputs,
    /// Per-symbol aggregates over finished jobs.
    SymbolStats,
    /// Frame heads by `symbol 0x00 name` (see `frame`).
    Frames,
    /// Frame chunks by `symbol 0x00 name 0x00 first_row`.
    Chunks,
    /// Frame tail slots by `symbol 0x00 name 0x00 slot`: the rows appends
    /// add, until a fold moves them into a chunk.
    Tails,
    /// Column labels by `symbol 0x00 label`: the frame and column.
    Labels,
    /// FORMAT_VERSION 3's one series per `symbol 0x00 feature`: read only
    /// by the migration, which empties it.
    LegacyResults,
    /// The writer's scalars and the synced mark.
    Meta,
    /// Bar chunks by `symbol 0x00 first_ts`.
    Bars,
    /// Bar tail slots by `symbol 0x00 slot`: the chunks appends of a few
    /// bars add, until a merge takes them into keyed chunks (see `bars`).
    BarTails,
    /// Each symbol's data version.
    DataVersions,
    /// The event log by sequence number.
    Events,
}

impl Space {
    /// Every keyspace (`space as usize` is its index here).
    pub(crate) const ALL: [Space; 13] = [
        Space::Jobs,
        Space::JobInputs,
        Space::SymbolStats,
        Space::Frames,
        Space::Chunks,
        Space::Tails,
        Space::Labels,
        Space::LegacyResults,
        Space::Meta,
        Space::Bars,
        Space::BarTails,
        Space::DataVersions,
        Space::Events,
    ];

    /// Keyspaces whose values may point into the value log.
    pub(crate) const POINTERS: [Space; 6] = [
        Space::Frames,
        Space::Chunks,
        Space::Tails,
        Space::Bars,
        Space::BarTails,
        Space::LegacyResults,
    ];

    /// The key prefix (see `FORMAT.md`).
    pub(crate) fn prefix(self) -> u8 {
        match self {
            Space::Jobs => b'j',
            Space::JobInputs => b'i',
            Space::SymbolStats => b's',
            Space::Frames => b'f',
            Space::Chunks => b'c',
            Space::Tails => b't',
            Space::Labels => b'l',
            Space::LegacyResults => b'r',
            Space::Meta => b'm',
            Space::Bars => b'b',
            Space::BarTails => b'a',
            Space::DataVersions => b'd',
            Space::Events => b'e',
        }
    }
}

/// One group's pending writes (`None` removes the key), per keyspace.
/// Values are sled's own byte type so the batch takes them without another
/// copy.
#[derive(Default)]
pub(crate) struct Writes {
    spaces: [BTreeMap<Vec<u8>, Option<sled::IVec>>; Space::ALL.len()],
}

impl Writes {
    pub(crate) fn put(&mut self, space: Space, key: Vec<u8>, value: impl Into<sled::IVec>) {
        self.spaces[space as usize].insert(key, Some(value.into()));
    }

    /// The bytes of these writes: every key (with its keyspace's byte) and
    /// value.
    pub(crate) fn bytes(&self) -> u64 {
        self.spaces
            .iter()
            .flatten()
            .map(|(k, v)| 1 + k.len() + v.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>() as u64
    }

    pub(crate) fn delete(&mut self, space: Space, key: Vec<u8>) {
        self.spaces[space as usize].insert(key, None);
    }

    /// The pending write of `key`: `Some(None)` when it is removed.
    pub(crate) fn get(&self, space: Space, key: &[u8]) -> Option<&Option<sled::IVec>> {
        self.spaces[space as usize].get(key)
    }

    /// The pending writes of `space` whose key starts with `prefix`.
    pub(crate) fn with_prefix<'a>(
        &'a self,
        space: Space,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Option<sled::IVec>)> + 'a {
        self.spaces[space as usize]
            .range(prefix.to_vec()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.spaces.iter().all(BTreeMap::is_empty)
    }

    pub(crate) fn clear(&mut self) {
        for s in &mut self.spaces {
            s.clear();
        }
    }
}

/// The tree all keyspaces share.
#[derive(Clone)]
pub(crate) struct Spaces {
    tree: SledHandle<sled::Tree>,
    /// sled's directory, which a failed write names.
    dir: Arc<Path>,
}

/// A sled handle (`Db`, `Tree`) whose drop cannot take the process down.
/// The drop of sled's last handle closes it: a flush and an fsync whose
/// result sled unwraps, so a failing disk makes it panic wherever that last
/// drop happens (a failed open, a closing store). Every handle kiln keeps is
/// one of these, so that drop is always caught and logged. Once an fsync
/// has failed in this process, a handle is leaked instead: that fsync would
/// be a retry, which can report success for pages the kernel already
/// dropped (what was acknowledged was flushed by the writer already).
pub(crate) struct SledHandle<T>(Option<T>);

impl<T> SledHandle<T> {
    pub(crate) fn new(handle: T) -> Self {
        SledHandle(Some(handle))
    }
}

impl<T: Clone> Clone for SledHandle<T> {
    fn clone(&self) -> Self {
        SledHandle(self.0.clone())
    }
}

impl<T> std::ops::Deref for SledHandle<T> {
    type Target = T;
    fn deref(&self) -> &T {
        match &self.0 {
            Some(h) => h,
            // Only the drop takes it.
            None => unreachable!("a sled handle used after its drop"),
        }
    }
}

impl<T> Drop for SledHandle<T> {
    fn drop(&mut self) {
        if crate::shared::any_fsync_failed() {
            std::mem::forget(self.0.take());
            return;
        }
        if let Some(h) = self.0.take()
            && std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(h))).is_err()
        {
            tracing::error!("sled failed while closing (its final flush or fsync)");
        }
    }
}

fn full_key(space: Space, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(space.prefix());
    k.extend_from_slice(key);
    k
}

/// A sled failure as the store reports it.
/// The sled tree every keyspace lives in.
pub(crate) const TREE: &str = "kiln";

pub(crate) fn sled_error(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(error) => StoreError::io("sled", error),
        other => StoreError::Backend {
            backend: "sled",
            detail: other.to_string(),
        },
    }
}

impl Spaces {
    pub(crate) fn new(tree: sled::Tree, dir: &Path) -> Self {
        Spaces {
            tree: SledHandle::new(tree),
            dir: dir.into(),
        }
    }

    pub(crate) fn get(&self, space: Space, key: &[u8]) -> Result<Option<sled::IVec>> {
        self.tree.get(full_key(space, key)).map_err(sled_error)
    }

    /// Entries of `space` whose key starts with `prefix`, keys without the
    /// keyspace byte, in key order.
    pub(crate) fn scan(
        &self,
        space: Space,
        prefix: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(Vec<u8>, sled::IVec)>> + use<> {
        self.tree.scan_prefix(full_key(space, prefix)).map(|item| {
            let (k, v) = item.map_err(sled_error)?;
            Ok((k.get(1..).unwrap_or_default().to_vec(), v))
        })
    }

    /// Entries of `space` whose key is below `end` (all of them for
    /// `None`), in key order, keys without the keyspace byte.
    pub(crate) fn range_before(
        &self,
        space: Space,
        end: Option<&[u8]>,
    ) -> impl DoubleEndedIterator<Item = Result<(Vec<u8>, sled::IVec)>> + use<> {
        let end = match end {
            Some(end) => full_key(space, end),
            None => vec![space.prefix() + 1],
        };
        self.tree.range(full_key(space, &[])..end).map(|item| {
            let (k, v) = item.map_err(sled_error)?;
            Ok((k.get(1..).unwrap_or_default().to_vec(), v))
        })
    }

    /// Entries of `space` from key `start` on, in key order, keys without
    /// the keyspace byte.
    pub(crate) fn range_from(
        &self,
        space: Space,
        start: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, sled::IVec)>> + use<> {
        let end = [space.prefix() + 1];
        self.tree
            .range(full_key(space, start)..end.to_vec())
            .map(|item| {
                let (k, v) = item.map_err(sled_error)?;
                Ok((k.get(1..).unwrap_or_default().to_vec(), v))
            })
    }

    /// The last entry of `space` whose key starts with `prefix` and is at
    /// most `upto` (keys without the keyspace byte).
    pub(crate) fn last_upto(
        &self,
        space: Space,
        prefix: &[u8],
        upto: &[u8],
    ) -> Result<Option<(Vec<u8>, sled::IVec)>> {
        let last = self
            .tree
            .range(full_key(space, prefix)..=full_key(space, upto))
            .next_back();
        match last {
            Some(item) => {
                let (k, v) = item.map_err(sled_error)?;
                Ok(Some((k.get(1..).unwrap_or_default().to_vec(), v)))
            }
            None => Ok(None),
        }
    }

    /// Applies a group's writes as one atomic batch.
    pub(crate) fn apply(&self, writes: &Writes) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (space, pending) in Space::ALL.into_iter().zip(&writes.spaces) {
            for (k, v) in pending {
                match v {
                    Some(v) => batch.insert(full_key(space, k), v.clone()),
                    None => batch.remove(full_key(space, k)),
                }
            }
        }
        self.tree.apply_batch(batch).map_err(|e| match e {
            // sled writes its log from here when a buffer fills: a full
            // disk shows here first.
            sled::Error::Io(error) => {
                StoreError::io(format!("write to {}", self.dir.display()), error)
            }
            other => sled_error(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_space_has_its_own_prefix() {
        let mut prefixes: Vec<u8> = Space::ALL.iter().map(|s| s.prefix()).collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        assert_eq!(prefixes, b"abcdefijlmrst".to_vec());
    }
}
