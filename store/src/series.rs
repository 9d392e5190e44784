//! Stored feature series: the zero-copy [`SeriesView`] over value-log or
//! inline bytes, and the [`ResultStore`] reads.

use kiln_core::{JobId, Result, ResultStore, SeriesKey, SeriesRead, StoreError, Symbol};

use crate::keys::{series_key_bytes, series_key_from_bytes, symbol_prefix};
use crate::record::{INLINE_HEADER_BYTES, ResultValue, SeriesLayout, series_layout};
use crate::space::Space;
use crate::store::Store;
use crate::vlog::Mapped;

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
}

impl SeriesRead for SeriesView {
    /// The values, in place (no copy).
    fn values(&self) -> &[f64] {
        let l = &self.layout;
        self.raw()
            .get(l.values_offset..l.values_offset + l.values_len * 8)
            .and_then(|b| bytemuck::try_cast_slice(b).ok())
            .unwrap_or(&[])
    }

    fn state(&self) -> &[u8] {
        let l = &self.layout;
        self.raw()
            .get(l.state_offset..l.state_offset + l.state_len)
            .unwrap_or(&[])
    }

    fn bar_count(&self) -> u64 {
        self.layout.bar_count
    }

    fn last_ts(&self) -> i64 {
        self.layout.last_ts
    }

    fn data_hash(&self) -> u64 {
        self.layout.data_hash
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

impl ResultStore for Store {
    type SeriesView = SeriesView;

    fn series(&self, key: &SeriesKey) -> Result<Option<SeriesView>> {
        let encoded = series_key_bytes(key);
        let location = || format!("{}/{}", key.symbol, key.feature);
        // A compaction can delete the segment between the index read and the
        // map; the index then already points elsewhere, so read it again.
        for _ in 0..3 {
            let Some(v) = self.spaces().get(Space::Results, &encoded)? else {
                return Ok(None);
            };
            match ResultValue::decode(&v)? {
                ResultValue::Inline { .. } => {
                    return SeriesView::new(ViewBytes::Inline(v), &location).map(Some);
                }
                ResultValue::Pointer(entry) => {
                    if let Some(mapped) = self.vlog_reader().read(&entry)? {
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
        self.spaces()
            .scan(Space::Results, &symbol_prefix(symbol))
            .map(|item| series_key_from_bytes(&item?.0))
            .collect()
    }

    fn series_writer(&self, key: &SeriesKey) -> Result<Option<JobId>> {
        match self.spaces().get(Space::Results, &series_key_bytes(key))? {
            Some(v) => Ok(Some(ResultValue::decode(&v)?.job_id())),
            None => Ok(None),
        }
    }
}
