//! The durable event log: one record per job outcome (`succeeded`, `failed`
//! with a retry ahead, `dead`, `cancelled`), appended under a sequence
//! number in the same batch as the state change it reports, and trimmed to
//! the newest `events_max`. Readers follow it from a sequence number
//! (`kiln watch`, server-sent events), waking on the writer's watermark.

use std::time::Duration;

use kiln_core::{Event, EventLog, JobState, Result, StoreError, Watermark};
use rkyv::rancor;

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

impl EventLog for Store {
    fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
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

    fn watermark(&self) -> Result<Watermark> {
        Ok(self.shared().watermark())
    }

    fn wait_for_change(&self, seen: Watermark, timeout: Duration) -> Result<Watermark> {
        Ok(self.shared().wait_for_change(seen, timeout))
    }
}
