//! The durable event log: one record per job outcome (`succeeded`, `failed`
//! with a retry ahead, `dead`, `cancelled`), appended under a sequence
//! number in the same batch as the state change it reports, and trimmed to
//! the newest `events_max`. Readers follow it from a sequence number
//! (`kiln watch`, server-sent events).

use rkyv::rancor;

use crate::db::Store;
use crate::error::{Result, StoreError};
use crate::job::{Job, JobId, JobState};
use crate::keys::{read_u64, u64_key};
use crate::record::with_aligned;
use crate::writer::EVENTS;

/// Symbols an event names (a job's first ones); `symbols_total` has the count.
const EVENT_SYMBOLS_MAX: usize = 16;

/// One job outcome, as stored.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct EventRecord {
    pub job_id: u64,
    pub state: u8,
    pub attempts: u32,
    pub at_ms: u64,
    pub kind: String,
    pub symbols: Vec<String>,
    pub symbols_total: u32,
    pub error: Option<String>,
}

/// One job outcome, read back from the event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Position in the log (strictly increasing, never reused).
    pub seq: u64,
    /// The job.
    pub job_id: JobId,
    /// The state it entered: succeeded, failed (a retry is scheduled), dead or cancelled.
    pub state: JobState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The job kind.
    pub kind: String,
    /// The job's first symbols (at most 16).
    pub symbols: Vec<String>,
    /// How many symbols the job has.
    pub symbols_total: u32,
    /// The error of a failed or dead job.
    pub error: Option<String>,
}

/// Archives the event for `job` entering `state`.
pub(crate) fn encode_event(job: &Job, state: JobState, at_ms: u64) -> Result<Vec<u8>> {
    let record = EventRecord {
        job_id: job.id,
        state: state as u8,
        attempts: job.attempts,
        at_ms,
        kind: job.kind.clone(),
        symbols: job
            .symbols
            .iter()
            .take(EVENT_SYMBOLS_MAX)
            .map(|s| s.as_str().to_owned())
            .collect(),
        symbols_total: u32::try_from(job.symbols.len()).unwrap_or(u32::MAX),
        error: match state {
            JobState::Failed | JobState::Dead => job.last_error.clone(),
            _ => None,
        },
    };
    rkyv::to_bytes::<rancor::Error>(&record)
        .map(|b| b.to_vec())
        .map_err(|e| StoreError::corrupt(format!("events/{}", job.id), e.to_string()))
}

fn decode_event(seq: u64, bytes: &[u8]) -> Result<Event> {
    let location = || format!("events/{seq}");
    let r = with_aligned(bytes, |aligned| {
        let archived = rkyv::access::<ArchivedEventRecord, rancor::Error>(aligned)
            .map_err(|e| StoreError::corrupt(location(), e.to_string()))?;
        rkyv::deserialize::<EventRecord, rancor::Error>(archived)
            .map_err(|e| StoreError::corrupt(location(), e.to_string()))
    })?;
    let state = JobState::from_u8(r.state)
        .ok_or_else(|| StoreError::corrupt(location(), format!("state {}", r.state)))?;
    Ok(Event {
        seq,
        job_id: r.job_id,
        state,
        attempts: r.attempts,
        at_ms: r.at_ms,
        kind: r.kind,
        symbols: r.symbols,
        symbols_total: r.symbols_total,
        error: r.error,
    })
}

impl Store {
    /// Up to `limit` events with a sequence number above `after`, oldest
    /// first (`after = 0` starts at the oldest kept).
    pub fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let start = u64_key(after.saturating_add(1));
        self.spaces()
            .range_from(EVENTS, &start)
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                let seq = read_u64(&k, "events key")?;
                decode_event(seq, &v)
            })
            .collect()
    }
}
