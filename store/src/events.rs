//! The durable event log: one record per job outcome (`succeeded`, `failed`
//! with a retry ahead, `dead`, `cancelled`), appended under a sequence
//! number in the same batch as the state change it reports, and trimmed to
//! the newest `events_max`. Readers follow it from a sequence number
//! (`kiln watch`, server-sent events).

use rkyv::rancor;

use crate::error::{Result, StoreError};
use crate::job::{JobId, JobState};
use crate::keys::{read_u64, u64_key};
use crate::record::with_aligned;
use crate::space::Space;
use crate::store::Store;

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

/// Archives an event.
pub(crate) fn encode_event(e: &Event) -> Result<Vec<u8>> {
    let record = EventRecord {
        job_id: e.job_id,
        state: e.state as u8,
        attempts: e.attempts,
        at_ms: e.at_ms,
        kind: e.kind.clone(),
        symbols: e.symbols.clone(),
        symbols_total: e.symbols_total,
        error: e.error.clone(),
    };
    rkyv::to_bytes::<rancor::Error>(&record)
        .map(|b| b.to_vec())
        .map_err(|e| StoreError::corrupt(format!("events/{}", record.job_id), e.to_string()))
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
            .range_from(Space::Events, &start)
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                let seq = read_u64(&k, "events key")?;
                decode_event(seq, &v)
            })
            .collect()
    }
}
