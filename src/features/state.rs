//! The byte encoding of a [`SymbolState`](super::SymbolState): what is stored next to a
//! feature series so that appended bars can be computed without a full recompute.
//!
//! The root crate does not use rkyv (only `kiln-store` does), so the encoding is a small
//! hand-written little-endian format, version [`STATE_VERSION`]:
//!
//! ```text
//! magic        4 bytes  "KFST"
//! version      u16      STATE_VERSION
//! fingerprint  u64      Plan::fingerprint() of the plan that wrote it
//! bars         u64      bars processed so far
//! tail_len     u32      = min(plan history, bars)
//! raw tails    4 × tail_len × f64   high, low, close, volume: the last tail_len bars
//! node count   u32      = the plan's node count
//! per node:
//!   has_tail   u8       1 if the node's column is read with history by another node
//!   tail       tail_len × f64 (only if has_tail)
//!   tag        u8       kernel kind (checked against the plan's node)
//!   seen       u64      bars since the kernel's first valid bar
//!   fields     kernel-specific f64 / i64 values, in declaration order
//! ```
//!
//! Integers and floats are little-endian; floats are stored as their exact bits. Decoding
//! checks every length, tag and count against the plan and rejects trailing bytes, so a
//! state from another plan, another version or a truncated record is an error, never a
//! silently wrong series.

/// Version of the encoding written by [`encode`](super::Plan::encode_state).
pub const STATE_VERSION: u16 = 1;
pub(crate) const MAGIC: &[u8; 4] = b"KFST";

/// Why saved state bytes were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The bytes end before the record does.
    #[error("feature state truncated: needed {needed} more byte(s) at offset {offset}")]
    Truncated {
        /// Where reading stopped.
        offset: usize,
        /// How many bytes were missing.
        needed: usize,
    },
    /// The record does not start with the magic bytes.
    #[error("not a kiln feature state (bad magic)")]
    BadMagic,
    /// Written by an encoding version this build does not read.
    #[error("feature state version {found} is not supported (this build reads {STATE_VERSION})")]
    UnsupportedVersion {
        /// Version found in the record.
        found: u16,
    },
    /// Written by a different plan (other specs or another order).
    #[error(
        "feature state belongs to another plan (fingerprint {found:#018x}, expected {expected:#018x})"
    )]
    PlanMismatch {
        /// Fingerprint in the record.
        found: u64,
        /// This plan's fingerprint.
        expected: u64,
    },
    /// A field has a value the plan cannot have produced.
    #[error("feature state is inconsistent: {0}")]
    Invalid(&'static str),
    /// Bytes left over after the record.
    #[error("feature state has {0} trailing byte(s)")]
    TrailingBytes(usize),
}

/// Little-endian writer.
#[derive(Debug, Default)]
pub(crate) struct Encoder {
    pub(crate) buf: Vec<u8>,
}

impl Encoder {
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }
    pub(crate) fn f64(&mut self, v: f64) {
        self.bytes(&v.to_bits().to_le_bytes());
    }
    pub(crate) fn f64s(&mut self, v: &[f64]) {
        for &x in v {
            self.f64(x);
        }
    }
}

/// Little-endian reader that never reads past the end.
#[derive(Debug)]
pub(crate) struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], StateError> {
        let end = self.pos.checked_add(N);
        match end.and_then(|e| self.bytes.get(self.pos..e)) {
            Some(s) => {
                let mut a = [0u8; N];
                a.copy_from_slice(s);
                self.pos += N;
                Ok(a)
            }
            None => Err(StateError::Truncated {
                offset: self.pos,
                needed: N - (self.bytes.len() - self.pos.min(self.bytes.len())),
            }),
        }
    }

    pub(crate) fn magic(&mut self) -> Result<(), StateError> {
        if &self.take::<4>()? == MAGIC {
            Ok(())
        } else {
            Err(StateError::BadMagic)
        }
    }
    pub(crate) fn u8(&mut self) -> Result<u8, StateError> {
        Ok(self.take::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, StateError> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, StateError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, StateError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, StateError> {
        Ok(i64::from_le_bytes(self.take()?))
    }
    pub(crate) fn f64(&mut self) -> Result<f64, StateError> {
        Ok(f64::from_bits(u64::from_le_bytes(self.take()?)))
    }
    pub(crate) fn f64s(&mut self, n: usize) -> Result<Vec<f64>, StateError> {
        // Check the length first so a corrupt count cannot make us allocate wildly.
        let bytes = n
            .checked_mul(8)
            .ok_or(StateError::Invalid("tail length overflows"))?;
        if self.bytes.len() - self.pos < bytes {
            return Err(StateError::Truncated {
                offset: self.pos,
                needed: bytes - (self.bytes.len() - self.pos),
            });
        }
        (0..n).map(|_| self.f64()).collect()
    }
    pub(crate) fn finish(self) -> Result<(), StateError> {
        match self.bytes.len() - self.pos {
            0 => Ok(()),
            n => Err(StateError::TrailingBytes(n)),
        }
    }
}

/// FNV-1a, 64 bit: a stable fingerprint (unlike `DefaultHasher`, fixed across releases).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
