//! Record layouts: the rkyv-archived job and series records, the fixed
//! big-endian index and aggregate records, and validated, alignment-safe
//! access to archived bytes. `FORMAT_VERSION` changes whenever any of these do.

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::error::{Result, StoreError};
use crate::job::{Job, JobState, Priority};
use crate::keys::Symbol;

// Archived numbers are little-endian (rkyv's default); the zero-copy `&[f64]`
// view of a series reinterprets them in place, which is only right on
// little-endian hosts. Every platform kiln targets is little-endian.
#[cfg(not(target_endian = "little"))]
compile_error!("kiln-store's zero-copy series views assume a little-endian host");

/// The on-disk format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Alignment every archived record is read at (rkyv's `AlignedVec` default).
pub(crate) const RECORD_ALIGN: usize = 16;

/// A job's metadata as stored in the `jobs` tree (the payload is kept apart,
/// in `payloads`, because it never changes while the metadata changes on every
/// transition).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct JobRecord {
    pub kind: String,
    pub symbols: Vec<String>,
    pub priority: u8,
    pub state: u8,
    pub attempts: u32,
    pub attempts_max: u32,
    pub run_at_ms: u64,
    pub enqueued_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub lease_expires_ms: Option<u64>,
    pub last_error: Option<String>,
    pub idempotency_key: Option<String>,
}

impl JobRecord {
    pub(crate) fn from_job(job: &Job) -> Self {
        JobRecord {
            kind: job.kind.clone(),
            symbols: job.symbols.iter().map(|s| s.as_str().to_owned()).collect(),
            priority: job.priority as u8,
            state: job.state as u8,
            attempts: job.attempts,
            attempts_max: job.attempts_max,
            run_at_ms: job.run_at_ms,
            enqueued_ms: job.enqueued_ms,
            started_ms: job.started_ms,
            finished_ms: job.finished_ms,
            lease_expires_ms: job.lease_expires_ms,
            last_error: job.last_error.clone(),
            idempotency_key: job.idempotency_key.clone(),
        }
    }

    pub(crate) fn into_job(self, id: u64, payload: std::sync::Arc<[u8]>) -> Result<Job> {
        let location = || format!("jobs/{id}");
        let priority = Priority::from_u8(self.priority).ok_or_else(|| {
            StoreError::corrupt(location(), format!("priority {}", self.priority))
        })?;
        let state = JobState::from_u8(self.state)
            .ok_or_else(|| StoreError::corrupt(location(), format!("state {}", self.state)))?;
        let symbols = self
            .symbols
            .into_iter()
            .map(Symbol::new)
            .collect::<Result<Vec<_>>>()?;
        Ok(Job {
            id,
            kind: self.kind,
            payload,
            symbols,
            priority,
            state,
            attempts: self.attempts,
            attempts_max: self.attempts_max,
            run_at_ms: self.run_at_ms,
            enqueued_ms: self.enqueued_ms,
            started_ms: self.started_ms,
            finished_ms: self.finished_ms,
            lease_expires_ms: self.lease_expires_ms,
            last_error: self.last_error,
            idempotency_key: self.idempotency_key,
        })
    }
}

/// Serializes a job's metadata.
pub(crate) fn encode_job(job: &Job) -> Result<AlignedVec> {
    rkyv::to_bytes::<rancor::Error>(&JobRecord::from_job(job))
        .map_err(|e| StoreError::corrupt(format!("jobs/{}", job.id), e.to_string()))
}

/// Validates and deserializes a job's metadata.
pub(crate) fn decode_job(id: u64, bytes: &[u8], payload: std::sync::Arc<[u8]>) -> Result<Job> {
    let location = || format!("jobs/{id}");
    let record = with_aligned(bytes, |aligned| {
        let archived = rkyv::access::<ArchivedJobRecord, rancor::Error>(aligned)
            .map_err(|e| StoreError::corrupt(location(), e.to_string()))?;
        rkyv::deserialize::<JobRecord, rancor::Error>(archived)
            .map_err(|e| StoreError::corrupt(location(), e.to_string()))
    })?;
    record.into_job(id, payload)
}

/// A computed feature series, as the result store keeps it.
#[derive(rkyv::Archive, rkyv::Serialize, Debug, Clone, PartialEq)]
pub struct Series {
    /// Number of input bars the series was computed from (the data version).
    pub bar_count: u64,
    /// Timestamp of the last input bar (the data version).
    pub last_ts: i64,
    /// One value per bar; NaN where the feature is undefined.
    pub values: Vec<f64>,
    /// Opaque kernel state after the last bar, for incremental continuation.
    pub state: Vec<u8>,
}

/// Archives a series for the value log.
pub(crate) fn encode_series(series: &Series) -> Result<AlignedVec> {
    rkyv::to_bytes::<rancor::Error>(series)
        .map_err(|e| StoreError::corrupt("series", e.to_string()))
}

/// Where `bytes` sit inside a validated archived series: everything a
/// [`crate::SeriesView`] needs to hand out slices without re-validating.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SeriesLayout {
    pub bar_count: u64,
    pub last_ts: i64,
    pub values_offset: usize,
    pub values_len: usize,
    pub state_offset: usize,
    pub state_len: usize,
}

/// Validates an archived series in place (`bytes` must be aligned) and
/// returns where its parts are.
pub(crate) fn series_layout(bytes: &[u8], location: &dyn Fn() -> String) -> Result<SeriesLayout> {
    if !is_aligned(bytes) {
        return Err(StoreError::corrupt(
            location(),
            "series bytes are not aligned",
        ));
    }
    let archived = rkyv::access::<ArchivedSeries, rancor::Error>(bytes)
        .map_err(|e| StoreError::corrupt(location(), e.to_string()))?;
    let base = bytes.as_ptr() as usize;
    let values = archived.values.as_slice();
    let state = archived.state.as_slice();
    Ok(SeriesLayout {
        bar_count: archived.bar_count.to_native(),
        last_ts: archived.last_ts.to_native(),
        values_offset: values.as_ptr() as usize - base,
        values_len: values.len(),
        state_offset: state.as_ptr() as usize - base,
        state_len: state.len(),
    })
}

fn is_aligned(bytes: &[u8]) -> bool {
    (bytes.as_ptr() as usize).is_multiple_of(RECORD_ALIGN)
}

/// Runs `f` on `bytes` at `RECORD_ALIGN`: in place when they already are
/// (sled's values have always been in practice), else on an aligned copy.
pub(crate) fn with_aligned<T>(bytes: &[u8], f: impl FnOnce(&[u8]) -> Result<T>) -> Result<T> {
    if is_aligned(bytes) {
        f(bytes)
    } else {
        let mut copy = AlignedVec::<RECORD_ALIGN>::with_capacity(bytes.len());
        copy.extend_from_slice(bytes);
        f(&copy)
    }
}

/// The results-index value: where a series sits in the value log and which
/// job wrote it. 28 bytes, big-endian: segment u32, offset u64, len u32,
/// crc32 u32, job id u64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub segment: u32,
    pub offset: u64,
    pub len: u32,
    pub crc: u32,
    pub job_id: u64,
}

impl IndexEntry {
    pub(crate) const BYTES: usize = 28;

    pub(crate) fn encode(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        b[0..4].copy_from_slice(&self.segment.to_be_bytes());
        b[4..12].copy_from_slice(&self.offset.to_be_bytes());
        b[12..16].copy_from_slice(&self.len.to_be_bytes());
        b[16..20].copy_from_slice(&self.crc.to_be_bytes());
        b[20..28].copy_from_slice(&self.job_id.to_be_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self> {
        let b: &[u8; Self::BYTES] = b.try_into().map_err(|_| {
            StoreError::corrupt(
                "results index",
                format!("{} bytes, want {}", b.len(), Self::BYTES),
            )
        })?;
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(a)
        };
        Ok(IndexEntry {
            segment: u32_at(0),
            offset: u64_at(4),
            len: u32_at(12),
            crc: u32_at(16),
            job_id: u64_at(20),
        })
    }
}

/// Per-symbol aggregates over finished jobs. 24 bytes, big-endian u64s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SymbolStats {
    /// Jobs that reached a terminal state.
    pub jobs: u64,
    /// Failed attempts (including those that were retried).
    pub failures: u64,
    /// Sum of the final attempts' run times, in ms.
    pub duration_ms_total: u64,
}

impl SymbolStats {
    pub(crate) fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..8].copy_from_slice(&self.jobs.to_be_bytes());
        b[8..16].copy_from_slice(&self.failures.to_be_bytes());
        b[16..24].copy_from_slice(&self.duration_ms_total.to_be_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self> {
        if b.len() != 24 {
            return Err(StoreError::corrupt(
                "symstats",
                format!("{} bytes, want 24", b.len()),
            ));
        }
        let at = |i: usize| crate::keys::read_u64(&b[i..i + 8], "symstats");
        Ok(SymbolStats {
            jobs: at(0)?,
            failures: at(8)?,
            duration_ms_total: at(16)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            id: 7,
            kind: "compute".into(),
            payload: std::sync::Arc::from(&b"p"[..]),
            symbols: vec![Symbol::new("AAPL").expect("sym")],
            priority: Priority::High,
            state: JobState::Failed,
            attempts: 2,
            attempts_max: 4,
            run_at_ms: 10,
            enqueued_ms: 5,
            started_ms: Some(6),
            finished_ms: None,
            lease_expires_ms: None,
            last_error: Some("boom".into()),
            idempotency_key: Some("k".into()),
        }
    }

    #[test]
    fn job_record_round_trips() {
        let j = job();
        let bytes = encode_job(&j).expect("encode");
        assert_eq!(decode_job(7, &bytes, j.payload.clone()).expect("decode"), j);
    }

    #[test]
    fn misaligned_bytes_are_copied_not_rejected() {
        let j = job();
        let bytes = encode_job(&j).expect("encode");
        let mut shifted = AlignedVec::<16>::new();
        shifted.push(0);
        shifted.extend_from_slice(&bytes);
        let misaligned = &shifted[1..];
        assert!(!is_aligned(misaligned));
        assert_eq!(
            decode_job(7, misaligned, j.payload.clone()).expect("decode"),
            j
        );
    }

    #[test]
    fn garbage_is_a_corrupt_error_not_a_panic() {
        let e = decode_job(3, &[0xff; 40], std::sync::Arc::from(&b""[..])).expect_err("garbage");
        assert!(e.to_string().contains("jobs/3"), "{e}");
        let mut aligned = AlignedVec::<16>::new();
        aligned.extend_from_slice(&[0xffu8; 3]);
        assert!(series_layout(&aligned, &|| "x".into()).is_err());
    }

    #[test]
    fn series_layout_points_at_the_values() {
        let s = Series {
            bar_count: 3,
            last_ts: 99,
            values: vec![1.0, f64::NAN, 3.5],
            state: vec![9, 8],
        };
        let bytes = encode_series(&s).expect("encode");
        let l = series_layout(&bytes, &|| "x".into()).expect("layout");
        assert_eq!(
            (l.bar_count, l.last_ts, l.values_len, l.state_len),
            (3, 99, 3, 2)
        );
        let v: &[f64] = bytemuck::cast_slice(&bytes[l.values_offset..l.values_offset + 24]);
        assert_eq!(v[0], 1.0);
        assert!(v[1].is_nan());
        assert_eq!(v[2], 3.5);
        assert_eq!(&bytes[l.state_offset..l.state_offset + 2], &[9, 8]);
    }

    #[test]
    fn fixed_records_round_trip() {
        let e = IndexEntry {
            segment: 3,
            offset: 1 << 40,
            len: 16_000,
            crc: 0xdead_beef,
            job_id: 77,
        };
        assert_eq!(IndexEntry::decode(&e.encode()).expect("decode"), e);
        assert!(IndexEntry::decode(&[0; 5]).is_err());
        let s = SymbolStats {
            jobs: 1,
            failures: 2,
            duration_ms_total: 3,
        };
        assert_eq!(SymbolStats::decode(&s.encode()).expect("decode"), s);
    }
}
