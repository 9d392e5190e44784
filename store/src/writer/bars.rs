//! The writer's part of a bar ingest: staging chunks in the value log
//! (unindexed, so a session holds little in memory), releasing what a
//! session did not index, and applying an ingest's plans, all or none.

use kiln_core::{DataVersion, Enqueued, NewJob, Result, StoreError, Symbol};

use super::Writer;
use crate::bars::{
    BAR_TAIL_SLOTS, Tails, VersionRecord, current_record, decode_tail, decode_version, encode_tail,
    tail_key,
};
use crate::record::{IndexEntry, ResultValue};
use crate::space::Space;

/// One symbol's change, planned against `expect` (the version and
/// generation read when planning; the writer refuses the whole ingest if
/// either moved meanwhile).
pub(crate) struct BarPlan {
    pub symbol: Symbol,
    pub expect: Option<VersionRecord>,
    /// Chunk keys to remove.
    pub remove: Vec<Vec<u8>>,
    /// Chunks to index: key and staged record.
    pub add: Vec<(Vec<u8>, IndexEntry)>,
    /// Whether the chunks added take in every live tail.
    pub take_tails: bool,
    /// Tails to append after the live ones: first timestamp and staged
    /// record.
    pub tails: Vec<(i64, IndexEntry)>,
    pub version: DataVersion,
}

impl BarPlan {
    /// The tails after this plan, from those before it.
    fn tails_after(&self, before: Tails) -> Tails {
        Tails {
            from: if self.take_tails {
                before.next
            } else {
                before.from
            },
            next: before.next + self.tails.len() as u64,
        }
    }

    /// Whether the plan adds tails and nothing else: its data version goes
    /// in the newest tail alone, the data version record stays.
    fn only_appends_tails(&self) -> bool {
        self.expect.is_some()
            && !self.take_tails
            && self.remove.is_empty()
            && self.add.is_empty()
            && !self.tails.is_empty()
    }

    /// The symbol's record after this plan.
    fn record_after(&self) -> VersionRecord {
        let before = self.expect.unwrap_or_default();
        VersionRecord {
            version: self.version,
            // Each tail appended alone counts as a change (as
            // `bars::current_record` counts them back); any other plan as
            // one.
            generation: before.generation
                + if self.only_appends_tails() {
                    self.tails.len() as u64
                } else {
                    1
                },
            tails: self.tails_after(before.tails),
        }
    }
}

impl Writer {
    /// Appends staged chunks and writes them out so readers can map them;
    /// the commit that indexes them fsyncs them first.
    pub(super) fn stage_bars(
        &mut self,
        payloads: &[rkyv::util::AlignedVec],
    ) -> Result<Vec<IndexEntry>> {
        let mut entries = Vec::with_capacity(payloads.len());
        for p in payloads {
            entries.push(self.append_or_poison(p, 0)?);
        }
        if let Err(e) = self.vlog.flush() {
            return Err(self.poison_with(e));
        }
        Ok(entries)
    }

    /// A session ended without indexing these staged records: garbage.
    pub(super) fn unstage_bars(&mut self, entries: &[IndexEntry]) {
        for e in entries {
            self.vlog.release(e);
        }
    }

    /// Checks every plan against the current data versions and every value
    /// it replaces, enqueues `jobs`, then applies the plans: all of it, or
    /// (on an error) nothing.
    pub(super) fn ingest_bars(
        &mut self,
        plans: Vec<BarPlan>,
        jobs: Vec<NewJob>,
        now: u64,
    ) -> Result<Vec<Enqueued>> {
        let mut released = Vec::new();
        for p in &plans {
            let current = decode_version(
                self.lookup(Space::DataVersions, p.symbol.as_str().as_bytes())?,
                &p.symbol,
            )?
            .map(|d| {
                let hint = p.expect.map(|r| r.tails.next);
                current_record(d, &p.symbol, hint, |k| self.lookup(Space::BarTails, k))
            })
            .transpose()?;
            if current != p.expect {
                return Err(StoreError::Conflict(format!(
                    "the bars of {} changed while the ingest was planned",
                    p.symbol
                )));
            }
            for key in p.remove.iter().chain(p.add.iter().map(|(k, _)| k)) {
                if let Some(old) = self.lookup(Space::Bars, key)?
                    && let ResultValue::Pointer(old) = ResultValue::decode(&old)?
                    && !released.contains(&old)
                {
                    released.push(old);
                }
            }
            let before = current.map(|r| r.tails).unwrap_or_default();
            let after = p.tails_after(before);
            if after.len() > BAR_TAIL_SLOTS {
                return Err(StoreError::invalid(
                    "bar ingest",
                    format!(
                        "{}: {} tails, more than its {BAR_TAIL_SLOTS} slots",
                        p.symbol,
                        after.len()
                    ),
                ));
            }
            // The tails a merge took in are garbage once it commits.
            for seq in before.from..after.from {
                let location = format!("bar tail {seq} of {}", p.symbol);
                let value = self
                    .lookup(Space::BarTails, &tail_key(&p.symbol, seq))?
                    .ok_or_else(|| StoreError::corrupt(&location, "its slot is empty"))?;
                let header = decode_tail(&value, &location)?;
                if header.seq != seq {
                    return Err(StoreError::corrupt(&location, "its slot holds another"));
                }
                if let ResultValue::Pointer(old) = ResultValue::decode(&value[header.len()..])? {
                    released.push(old);
                }
            }
        }
        // Last of the checks: a queue that cannot take the jobs refuses the
        // ingest before anything of it is written.
        let enqueued = if jobs.is_empty() {
            Vec::new()
        } else {
            self.queue.enqueue(jobs, now)?
        };
        for old in &released {
            self.vlog.release(old);
        }
        self.vlog_sync_required = true;
        for p in plans {
            for key in &p.remove {
                self.writes.delete(Space::Bars, key.clone());
            }
            for (key, entry) in &p.add {
                self.writes.put(
                    Space::Bars,
                    key.clone(),
                    ResultValue::Pointer(*entry).encode(),
                );
            }
            let before = p.expect.map(|r| r.tails).unwrap_or_default();
            for (seq, (first_ts, entry)) in (before.next..).zip(&p.tails) {
                let value = ResultValue::Pointer(*entry).encode();
                self.writes.put(
                    Space::BarTails,
                    tail_key(&p.symbol, seq),
                    encode_tail(seq, *first_ts, &p.version, &value),
                );
            }
            let after = p.record_after();
            // A tick's append writes one key, its tail, not two.
            if !p.only_appends_tails() {
                self.writes.put(
                    Space::DataVersions,
                    p.symbol.as_str().as_bytes().to_vec(),
                    after.encode().to_vec(),
                );
            }
            self.new_versions.push((p.symbol.clone(), after));
        }
        Ok(enqueued)
    }
}
