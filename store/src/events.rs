//! The durable event log: one record per job outcome (`succeeded`, `failed`
//! with a retry ahead, `dead`, `cancelled`), appended under a sequence
//! number in the same batch as the state change it reports, and trimmed to
//! the newest `events_max`. Readers follow it from a sequence number
//! (`kiln watch`, server-sent events), waking on the writer's watermark,
//! and see only what the watermark reveals (in `Sync` mode: what is
//! durable, so a crash never takes back an event a reader has seen).

use std::time::Duration;

use kiln_core::{Event, EventLog, Result, Watermark};

use crate::keys::{read_u64, u64_key};
use crate::record::decode_event;
use crate::space::Space;
use crate::store::Store;

impl EventLog for Store {
    fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let start = u64_key(after.saturating_add(1));
        let end = u64_key(self.shared().watermark().next_event_seq);
        self.spaces()
            .range_from(Space::Events, &start)
            .take_while(|item| !matches!(item, Ok((k, _)) if k.as_slice() >= &end[..]))
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                let seq = read_u64(&k, "events key")?;
                decode_event(seq, &v)
            })
            .collect()
    }

    fn wait_durable(&self, timeout: Duration) -> Result<bool> {
        Ok(Store::wait_durable(self, timeout))
    }

    fn work_watermark(&self) -> Result<Watermark> {
        Ok(self.shared().applied_watermark())
    }

    fn wait_for_work(&self, seen: Watermark, timeout: Duration) -> Result<Watermark> {
        Ok(self.shared().wait_for_applied_change(seen, timeout))
    }

    fn watermark(&self) -> Result<Watermark> {
        Ok(self.shared().watermark())
    }

    fn wait_for_change(&self, seen: Watermark, timeout: Duration) -> Result<Watermark> {
        Ok(self.shared().wait_for_change(seen, timeout))
    }
}
