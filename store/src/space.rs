//! Keyspaces: every table lives in one sled tree under a one-byte prefix
//! (`j` jobs, `s` symstats, `r` results, `m` meta, `b` bar chunks, `d` data
//! versions, `e` events). A group commit is then a
//! single sled batch, which sled applies atomically across a crash, and which
//! (unlike a sled transaction) does not read every key before writing it.

use std::collections::BTreeMap;

use crate::error::Result;

/// The keyspace prefixes, indexed by the table constants in `writer`.
pub(crate) const PREFIXES: [u8; 7] = [b'j', b's', b'r', b'm', b'b', b'd', b'e'];

/// One group's pending writes per keyspace (`None` removes the key). Values
/// are sled's own byte type so the batch takes them without another copy.
pub(crate) type Writes = [BTreeMap<Vec<u8>, Option<sled::IVec>>; 7];

/// The tree all keyspaces share.
#[derive(Clone)]
pub(crate) struct Spaces {
    tree: sled::Tree,
}

fn full_key(space: usize, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(PREFIXES[space]);
    k.extend_from_slice(key);
    k
}

impl Spaces {
    pub(crate) fn new(tree: sled::Tree) -> Self {
        Spaces { tree }
    }

    pub(crate) fn get(&self, space: usize, key: &[u8]) -> Result<Option<sled::IVec>> {
        Ok(self.tree.get(full_key(space, key))?)
    }

    /// Entries of `space` whose key starts with `prefix`, keys without the
    /// keyspace byte, in key order.
    pub(crate) fn scan(
        &self,
        space: usize,
        prefix: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(Vec<u8>, sled::IVec)>> + use<> {
        self.tree.scan_prefix(full_key(space, prefix)).map(|item| {
            let (k, v) = item?;
            Ok((k.get(1..).unwrap_or_default().to_vec(), v))
        })
    }

    /// Entries of `space` from key `start` on, in key order, keys without
    /// the keyspace byte.
    pub(crate) fn range_from(
        &self,
        space: usize,
        start: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, sled::IVec)>> + use<> {
        let end = [PREFIXES[space] + 1];
        self.tree
            .range(full_key(space, start)..end.to_vec())
            .map(|item| {
                let (k, v) = item?;
                Ok((k.get(1..).unwrap_or_default().to_vec(), v))
            })
    }

    /// Applies a group's writes as one atomic batch.
    pub(crate) fn apply(&self, writes: &Writes) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (space, pending) in writes.iter().enumerate() {
            for (k, v) in pending {
                match v {
                    Some(v) => batch.insert(full_key(space, k), v.clone()),
                    None => batch.remove(full_key(space, k)),
                }
            }
        }
        Ok(self.tree.apply_batch(batch)?)
    }
}
