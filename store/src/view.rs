//! The bytes a view reads: a value-log record read into memory, inline in a
//! sled value, or (only when those are misaligned) an aligned copy; and
//! [`load`], which finds them from an index value.

use kiln_core::Result;

use crate::record::{INLINE_HEADER_BYTES, ResultValue};
use crate::vlog::{Loaded, VlogReader};

pub(crate) enum ViewBytes {
    /// A value-log record, read into an aligned buffer.
    Loaded(Loaded),
    /// Inline in a sled value, from `start` on.
    Inline { value: sled::IVec, start: usize },
    /// An aligned copy, used only when the bytes above are misaligned.
    Copied(rkyv::util::AlignedVec),
}

impl ViewBytes {
    /// These bytes, or an aligned copy when they cannot hold a `T` in place
    /// (8-aligned at least: f64 and i64 columns need it, whatever the
    /// container's own alignment).
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
            ViewBytes::Loaded(r) => r.bytes(),
            ViewBytes::Inline { value, start } => value.get(*start..).unwrap_or(&[]),
            ViewBytes::Copied(c) => c.as_slice(),
        }
    }

    /// `len` f64 starting `at` bytes in; empty when out of range (callers
    /// check the lengths when they make the view).
    pub(crate) fn f64s(&self, at: usize, len: usize) -> &[f64] {
        self.raw()
            .get(at..at + len * 8)
            .and_then(|b| bytemuck::try_cast_slice(b).ok())
            .unwrap_or(&[])
    }
}

/// The bytes of the [`ResultValue`] that starts `start` bytes into `value`:
/// inline, or read (and checksummed) from the value log. `None` when the
/// record's segment was compacted away since the index was read: look the
/// key up again.
pub(crate) fn load(
    reader: &VlogReader,
    value: sled::IVec,
    start: usize,
) -> Result<Option<ViewBytes>> {
    let decoded = ResultValue::decode(value.get(start..).unwrap_or(&[]))?;
    Ok(match decoded {
        ResultValue::Inline { .. } => Some(ViewBytes::Inline {
            value,
            start: start + INLINE_HEADER_BYTES,
        }),
        ResultValue::Pointer(entry) => reader.read(&entry)?.map(ViewBytes::Loaded),
    })
}
