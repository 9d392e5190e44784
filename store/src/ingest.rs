//! Bar ingest sessions. The caller stages sorted, validated columns per
//! symbol and source (a file); every staged piece goes to the value log at
//! once (unindexed, in batches of up to 64 MiB), with the input location of
//! each bar beside it, so a session holds little in memory however large
//! its input. `commit` then plans every symbol against what is stored and
//! hands all plans to the writer, which applies them in one group commit,
//! or none of them.
//!
//! Planning a symbol:
//! - New bars all after the stored ones, in disjoint pieces: the staged
//!   pieces become chunks as they are (nothing is read or rewritten): in
//!   tail slots when each holds fewer than 32 bars, else under keys of their
//!   own. When that would leave 32 small chunks of one size class at the
//!   end, they are merged instead (see [`MERGE`]); so is every tail when
//!   new pieces are too large for a slot.
//! - Anything else (a correction, a back-fill, an unsorted input cut into
//!   several pieces, a re-ingest): a streaming k-way merge of the stored
//!   chunks the new bars overlap with the new pieces, holding one output
//!   chunk at a time. Among bars with one timestamp, a later source wins; two
//!   different bars from one source are a conflict, reported with both input
//!   locations to the caller, who rejects the ingest or skips the later bar.
//!   If no stored bar changes, the symbol is left alone.
//!
//! Dropping a session without committing releases everything it staged.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::sync::atomic::Ordering;

use rkyv::util::AlignedVec;

use kiln_core::{
    Bar, BarColumns, BarIngest, Conflict, DataVersion, FollowUp, IngestReport, Result, StoreError,
    Symbol,
};

use crate::bars::{
    BAR_CHUNK_ROWS_MAX, BAR_TAIL_SLOTS, Chunk, Reach, StoredChunk, VersionRecord, chunk_key,
    encode_chunk, snapshot,
};
use crate::leveling::{Leveling, merge_from};
use crate::record::IndexEntry;
use crate::store::Store;
use crate::view::ViewBytes;
use crate::vlog::Loaded;
use crate::writer::{Apply, BarPlan, Op};

/// How an append merges a symbol's small chunks (see [`merge_from`]): in
/// runs of 32 of one size class (1-31 bars, then 32-1,023), up to 1,024
/// bars, so a bar is written three times however many one-bar appends
/// follow. A run of the smallest class fits the tail slots.
pub(crate) const MERGE: Leveling = Leveling {
    fanout: BAR_TAIL_SLOTS as usize,
    sealed_rows: 1024,
};

/// Staged bytes gathered before one value-log append.
const STAGE_BATCH_BYTES: usize = 64 << 20;

/// A staged record: waiting for the next batch, or in the value log.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Pending,
    Staged(IndexEntry),
}

/// A staged piece of one symbol's new bars: sorted, from one source, at
/// most [`BAR_CHUNK_ROWS_MAX`] bars.
struct Part {
    source: u32,
    first_ts: i64,
    last_ts: i64,
    rows: usize,
    digest: u64,
    chunk: Slot,
    /// Each bar's input location (u64 LE per bar), when the caller gave them.
    at: Option<Slot>,
}

/// Which record of which part a pending payload is.
enum Target {
    Chunk(Symbol, usize),
    At(Symbol, usize),
}

/// An ingest in progress in the embedded store (see [`BarIngest`]): every
/// staged piece goes to the value log at once, unindexed; dropping the
/// session without committing releases it.
pub struct IngestSession {
    store: Store,
    sources: Vec<String>,
    parts: BTreeMap<Symbol, Vec<Part>>,
    pending: Vec<(Target, AlignedVec)>,
    pending_bytes: usize,
    /// Value-log records staged and not (yet) indexed.
    staged: Vec<IndexEntry>,
    /// A staging call failed: the session can only be dropped.
    failed: Option<String>,
}

impl IngestSession {
    pub(crate) fn new(store: Store) -> Self {
        store.shared().staging.fetch_add(1, Ordering::SeqCst);
        IngestSession {
            store,
            sources: Vec::new(),
            parts: BTreeMap::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            staged: Vec::new(),
            failed: None,
        }
    }
}

fn encode_locations(at: &[u64]) -> AlignedVec {
    let mut v = AlignedVec::with_capacity(at.len() * 8);
    for a in at {
        v.extend_from_slice(&a.to_le_bytes());
    }
    v
}

impl BarIngest for IngestSession {
    fn source(&mut self, name: &str) -> u32 {
        self.sources.push(name.to_owned());
        (self.sources.len() - 1) as u32
    }

    fn source_name(&self, source: u32) -> &str {
        self.sources.get(source as usize).map_or("", String::as_str)
    }

    fn stage(&mut self, symbol: &Symbol, source: u32, cols: &BarColumns, at: &[u64]) -> Result<()> {
        if let Some(cause) = &self.failed {
            return Err(StoreError::invalid(
                "ingest",
                format!("an earlier staging call failed: {cause}"),
            ));
        }
        if source as usize >= self.sources.len() {
            return Err(StoreError::invalid("source", format!("no source {source}")));
        }
        cols.check(&|| format!("{symbol} from {}", self.sources[source as usize]))?;
        if !at.is_empty() && at.len() != cols.len() {
            return Err(StoreError::invalid(
                "bars",
                format!("{} locations for {} bars", at.len(), cols.len()),
            ));
        }
        let mut start = 0;
        while start < cols.len() {
            let end = (start + BAR_CHUNK_ROWS_MAX).min(cols.len());
            let piece = cols.slice(start, end);
            let bytes = encode_chunk(&piece)?;
            let parts = self.parts.entry(symbol.clone()).or_default();
            let index = parts.len();
            parts.push(Part {
                source,
                first_ts: piece.ts[0],
                last_ts: piece.ts[piece.len() - 1],
                rows: piece.len(),
                digest: piece.digest(),
                chunk: Slot::Pending,
                at: (!at.is_empty()).then_some(Slot::Pending),
            });
            self.pending_bytes += bytes.len();
            self.pending
                .push((Target::Chunk(symbol.clone(), index), bytes));
            if !at.is_empty() {
                let bytes = encode_locations(&at[start..end]);
                self.pending_bytes += bytes.len();
                self.pending
                    .push((Target::At(symbol.clone(), index), bytes));
            }
            start = end;
        }
        if self.pending_bytes >= STAGE_BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends what is staged so far to the value log in one writer call
    /// (`stage` does this by itself every 64 MiB).
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let (targets, payloads): (Vec<Target>, Vec<AlignedVec>) = pending.into_iter().unzip();
        let entries = self.stage_now(payloads)?;
        for (target, entry) in targets.into_iter().zip(entries) {
            let (symbol, i, is_chunk) = match target {
                Target::Chunk(s, i) => (s, i, true),
                Target::At(s, i) => (s, i, false),
            };
            if let Some(part) = self.parts.get_mut(&symbol).and_then(|p| p.get_mut(i)) {
                if is_chunk {
                    part.chunk = Slot::Staged(entry);
                } else {
                    part.at = Some(Slot::Staged(entry));
                }
            }
        }
        Ok(())
    }

    fn rows(&self) -> u64 {
        self.parts.values().flatten().map(|p| p.rows as u64).sum()
    }

    /// Plans every symbol against what is stored and hands all plans to the
    /// writer, which applies them in one group commit, or none of them.
    fn commit_with(
        mut self,
        on_conflict: &mut dyn FnMut(&Conflict) -> Result<()>,
        follow_up: &mut FollowUp<'_>,
    ) -> Result<IngestReport> {
        self.flush()?;
        if let Some(cause) = &self.failed {
            return Err(StoreError::invalid(
                "ingest",
                format!("an earlier staging call failed: {cause}"),
            ));
        }
        let rows = self.rows();
        let parts = std::mem::take(&mut self.parts);
        for attempt in 0..4 {
            let mut report = IngestReport {
                rows,
                ..IngestReport::default()
            };
            let mut plans = Vec::new();
            for (symbol, parts) in &parts {
                let mut count = |c: &Conflict| {
                    report.conflicts += 1;
                    if attempt == 0 { on_conflict(c) } else { Ok(()) }
                };
                match self.plan(symbol, parts, &mut count)? {
                    Some(plan) => {
                        report.changed.push((symbol.clone(), plan.version));
                        plans.push(plan);
                    }
                    None => report.unchanged.push(symbol.clone()),
                }
            }
            if plans.is_empty() {
                return Ok(report);
            }
            let jobs = follow_up(&report.changed)?;
            let used: HashSet<(u32, u64)> = plans
                .iter()
                .flat_map(|p| {
                    p.add
                        .iter()
                        .map(|(_, e)| e)
                        .chain(p.tails.iter().map(|(_, e)| e))
                })
                .map(|e| (e.segment, e.offset))
                .collect();
            match self
                .store
                .call(|reply| Op::Apply(Apply::IngestBars { plans, jobs, reply }))
            {
                Ok(enqueued) => {
                    report.follow_ups = enqueued;
                    // What the plans did not index (locations, merged-away
                    // pieces) is garbage now; dropping the session releases it.
                    self.staged
                        .retain(|e| !used.contains(&(e.segment, e.offset)));
                    return Ok(report);
                }
                // Another ingest changed one of these symbols meanwhile: plan again.
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(
            "other ingests keep changing the same symbols".into(),
        ))
    }
}

impl IngestSession {
    /// Appends payloads to the value log now; a failure fails the session.
    fn stage_now(&mut self, payloads: Vec<AlignedVec>) -> Result<Vec<IndexEntry>> {
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        match self
            .store
            .call(|reply| Op::Apply(Apply::StageBars { payloads, reply }))
        {
            Ok(entries) => {
                self.staged.extend_from_slice(&entries);
                Ok(entries)
            }
            Err(e) => {
                self.failed = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Plans one symbol, again if a compaction moves a chunk or an ingest
    /// changes the symbol meanwhile. An append of a few bars that leaves
    /// room in the tail slots reads nothing but the data version (its
    /// record and the newest tail slots); another
    /// append reads the chunks its merge can touch; anything else, all.
    fn plan(
        &mut self,
        symbol: &Symbol,
        parts: &[Part],
        on_conflict: &mut dyn FnMut(&Conflict) -> Result<()>,
    ) -> Result<Option<BarPlan>> {
        let mut order: Vec<&Part> = parts.iter().collect();
        order.sort_by_key(|p| p.first_ts);
        for _ in 0..3 {
            let record = self.store.version_record(symbol)?;
            let append = appends(&order, record.as_ref());
            let tails = record.map_or(0, |r| r.tails.len());
            if append
                && order.iter().all(|p| p.rows < MERGE.fanout)
                && tails + (order.len() as u64) < BAR_TAIL_SLOTS
            {
                return append_plan(symbol, record, &order, true).map(Some);
            }
            let reach = if append { Reach::Unsealed } else { Reach::All };
            let (expect, stored) = snapshot(&self.store, symbol, reach)?;
            if appends(&order, expect.as_ref()) != append {
                continue;
            }
            if let Some(outcome) =
                self.plan_against(symbol, parts, &order, expect, &stored, on_conflict)?
            {
                return Ok(outcome);
            }
        }
        Err(StoreError::corrupt(
            format!("bars of {symbol}"),
            "its chunks keep moving while the ingest is planned",
        ))
    }

    /// `None` when a stored chunk vanished (compacted) and planning must
    /// start over. `order` is `parts` by first timestamp.
    #[allow(clippy::too_many_arguments)]
    fn plan_against(
        &mut self,
        symbol: &Symbol,
        parts: &[Part],
        order: &[&Part],
        expect: Option<VersionRecord>,
        stored: &[StoredChunk],
        on_conflict: &mut dyn FnMut(&Conflict) -> Result<()>,
    ) -> Result<Option<Option<BarPlan>>> {
        let (Some(lo), Some(hi)) = (
            order.first().map(|p| p.first_ts),
            order.iter().map(|p| p.last_ts).max(),
        ) else {
            return Ok(Some(None));
        };
        if appends(order, expect.as_ref()) {
            let rows: Vec<usize> = stored
                .iter()
                .map(StoredChunk::rows_hint)
                .chain(order.iter().map(|p| p.rows))
                .collect();
            let tails = expect.map_or(0, |r| r.tails.len());
            let small = order.iter().all(|p| p.rows < MERGE.fanout);
            let from = match merge_from(&rows, MERGE).filter(|&i| i < stored.len()) {
                Some(from) => from,
                None if small && tails + order.len() as u64 <= BAR_TAIL_SLOTS => {
                    return Ok(Some(Some(append_plan(symbol, expect, order, true)?)));
                }
                None if tails == 0 => {
                    return Ok(Some(Some(append_plan(symbol, expect, order, false)?)));
                }
                // Pieces too large for a slot cannot follow the tails:
                // merge the tails with them.
                None => stored.len() - tails as usize,
            };
            // Merge the stored chunks from there with the new bars.
            return self.merge_plan(
                symbol,
                expect,
                stored,
                from..stored.len(),
                parts,
                true,
                on_conflict,
            );
        }
        // Stored chunk i holds timestamps in [first_i, first_{i+1}): it
        // overlaps [lo, hi] when first_i <= hi and first_{i+1} > lo.
        let from = stored
            .partition_point(|c| c.first_ts <= lo)
            .saturating_sub(1);
        let to = stored.partition_point(|c| c.first_ts <= hi);
        self.merge_plan(
            symbol,
            expect,
            stored,
            from..to.max(from),
            parts,
            false,
            on_conflict,
        )
    }

    /// Merges the stored chunks `window` with every part and stages the
    /// result in full chunks. `force` rewrites even when nothing changes.
    /// A window that touches a tail takes in every tail (tails stay the
    /// newest chunks).
    #[allow(clippy::too_many_arguments)]
    fn merge_plan(
        &mut self,
        symbol: &Symbol,
        expect: Option<VersionRecord>,
        stored: &[StoredChunk],
        window: std::ops::Range<usize>,
        parts: &[Part],
        force: bool,
        on_conflict: &mut dyn FnMut(&Conflict) -> Result<()>,
    ) -> Result<Option<Option<BarPlan>>> {
        let first_tail = stored.partition_point(|c| c.tail.is_none());
        let take_tails = first_tail < stored.len() && window.end > first_tail;
        let window = if take_tails {
            window.start.min(first_tail)..stored.len()
        } else {
            window
        };
        let reader = self.store.vlog_reader();
        // The window's chunks are disjoint and sorted: one input. Then one
        // input per piece, grouped by source, in staging order within one.
        let mut inputs = Vec::with_capacity(1 + parts.len());
        let mut window_chunks = Vec::with_capacity(window.len());
        for c in &stored[window.clone()] {
            match self.store.load_chunk(symbol, c)? {
                Some(chunk) => window_chunks.push(chunk),
                None => return Ok(None),
            }
        }
        inputs.push(Input::new(window_chunks, None, None));
        let staged = |slot: Slot, what: &str| -> Result<Loaded> {
            let missing =
                || StoreError::corrupt(format!("staged {what} of {symbol}"), "record is gone");
            match slot {
                Slot::Staged(e) => reader.read(&e)?.ok_or_else(missing),
                Slot::Pending => Err(missing()),
            }
        };
        let mut by_source: Vec<&Part> = parts.iter().collect();
        by_source.sort_by_key(|p| p.source);
        for p in by_source {
            let chunk = Chunk::new(ViewBytes::Loaded(staged(p.chunk, "bars")?), &|| {
                format!("staged bars of {symbol}")
            })?;
            let at = p.at.map(|slot| staged(slot, "locations")).transpose()?;
            inputs.push(Input::new(vec![chunk], Some(p.source), at));
        }
        let mut merge = Merge::new(inputs);

        // Pass 1: does anything change, and which bars conflict?
        let (mut changed, mut old_rows, mut old_digest) = (force, 0usize, 0u64);
        while let Some(ts) = merge.next_group() {
            let (winner, old) = merge.resolve(|c| {
                on_conflict(&Conflict {
                    symbol: symbol.clone(),
                    source: c.0,
                    ts,
                    at: c.1,
                    first_at: c.2,
                })
            })?;
            if let Some(o) = old {
                old_rows += 1;
                old_digest = old_digest.wrapping_add(o.digest());
            }
            changed |= old.is_none_or(|o| !o.same_as(&winner));
        }
        if !changed {
            return Ok(Some(None));
        }
        // Pass 2: write the merged bars out in full chunks.
        merge.rewind();
        let (mut rows, mut digest, mut first, mut last) = (0usize, 0u64, None, None);
        let mut out =
            BarColumns::with_capacity(BAR_CHUNK_ROWS_MAX.min(old_rows + merge.new_rows()));
        let mut add = Vec::new();
        let mut payloads: Vec<(i64, AlignedVec)> = Vec::new();
        let mut payload_bytes = 0usize;
        while merge.next_group().is_some() {
            let (bar, _) = merge.resolve(|_| Ok(()))?;
            rows += 1;
            digest = digest.wrapping_add(bar.digest());
            first.get_or_insert(bar.ts);
            last = Some(bar.ts);
            out.push(bar);
            if out.len() == BAR_CHUNK_ROWS_MAX {
                let bytes = encode_chunk(&out)?;
                payload_bytes += bytes.len();
                payloads.push((out.ts[0], bytes));
                out = BarColumns::with_capacity(BAR_CHUNK_ROWS_MAX);
            }
            if payload_bytes >= STAGE_BATCH_BYTES {
                add.extend(self.stage_keyed(symbol, std::mem::take(&mut payloads))?);
                payload_bytes = 0;
            }
        }
        if !out.is_empty() {
            payloads.push((out.ts[0], encode_chunk(&out)?));
        }
        add.extend(self.stage_keyed(symbol, payloads)?);

        let corrupt = || {
            StoreError::corrupt(
                format!("bars of {symbol}"),
                "data version and chunks disagree",
            )
        };
        let base = expect.map(|r| r.version).unwrap_or_default();
        let version = DataVersion {
            bars: base.bars.checked_sub(old_rows as u64).ok_or_else(corrupt)? + rows as u64,
            first_ts: if window.start > 0 {
                base.first_ts
            } else {
                first.ok_or_else(corrupt)?
            },
            last_ts: if window.end < stored.len() {
                base.last_ts
            } else {
                last.ok_or_else(corrupt)?
            },
            hash: base.hash.wrapping_sub(old_digest).wrapping_add(digest),
        };
        Ok(Some(Some(BarPlan {
            symbol: symbol.clone(),
            expect,
            remove: stored[window]
                .iter()
                .filter(|c| c.tail.is_none())
                .map(|c| c.key.clone())
                .collect(),
            add,
            take_tails,
            tails: Vec::new(),
            version,
        })))
    }

    /// Stages merged chunks now and keys them by their first timestamps.
    fn stage_keyed(
        &mut self,
        symbol: &Symbol,
        payloads: Vec<(i64, AlignedVec)>,
    ) -> Result<Vec<(Vec<u8>, IndexEntry)>> {
        let (firsts, bytes): (Vec<i64>, Vec<AlignedVec>) = payloads.into_iter().unzip();
        let entries = self.stage_now(bytes)?;
        Ok(firsts
            .into_iter()
            .map(|t| chunk_key(symbol, t))
            .zip(entries)
            .collect())
    }
}

/// Whether `order` (the pieces by first timestamp) are disjoint and all
/// after the stored bars: an append.
fn appends(order: &[&Part], record: Option<&VersionRecord>) -> bool {
    let disjoint = order.windows(2).all(|w| w[0].last_ts < w[1].first_ts);
    let after = order
        .first()
        .is_some_and(|p| record.is_none_or(|r| r.version.last_ts < p.first_ts));
    disjoint && after
}

/// New bars all after the stored ones, in disjoint staged pieces: index the
/// pieces as they are, in tail slots or (`as_tails` false) under keys.
fn append_plan(
    symbol: &Symbol,
    expect: Option<VersionRecord>,
    order: &[&Part],
    as_tails: bool,
) -> Result<BarPlan> {
    let mut version = expect.map(|r| r.version).unwrap_or(DataVersion {
        first_ts: order.first().map_or(0, |p| p.first_ts),
        ..DataVersion::default()
    });
    let mut add = Vec::with_capacity(order.len());
    for p in order {
        let Slot::Staged(entry) = p.chunk else {
            return Err(StoreError::corrupt(
                format!("staged bars of {symbol}"),
                "never staged",
            ));
        };
        version.bars += p.rows as u64;
        version.last_ts = p.last_ts;
        version.hash = version.hash.wrapping_add(p.digest);
        add.push((p.first_ts, entry));
    }
    let (add, tails) = if as_tails {
        (Vec::new(), add)
    } else {
        let keyed = add.into_iter().map(|(t, e)| (chunk_key(symbol, t), e));
        (keyed.collect(), Vec::new())
    };
    Ok(BarPlan {
        symbol: symbol.clone(),
        expect,
        remove: Vec::new(),
        add,
        take_tails: false,
        tails,
        version,
    })
}

/// One sorted input of a merge: the stored chunks of the window (no
/// source), or a staged piece.
struct Input {
    chunks: Vec<Chunk>,
    source: Option<u32>,
    at: Option<Loaded>,
    /// Current chunk and position in it.
    chunk: usize,
    pos: usize,
}

impl Input {
    fn new(chunks: Vec<Chunk>, source: Option<u32>, at: Option<Loaded>) -> Self {
        Input {
            chunks,
            source,
            at,
            chunk: 0,
            pos: 0,
        }
    }

    /// The timestamp at the cursor, if any bars are left.
    fn head(&self) -> Option<i64> {
        self.chunks.get(self.chunk)?.ts().get(self.pos).copied()
    }

    fn bar(&self) -> Option<Bar> {
        let c = self.chunks.get(self.chunk)?;
        (self.pos < c.rows()).then(|| c.bar(self.pos))
    }

    /// Moves to the next bar, across chunk ends (and empty chunks).
    fn advance(&mut self) {
        self.pos += 1;
        self.settle();
    }

    fn settle(&mut self) {
        while self
            .chunks
            .get(self.chunk)
            .is_some_and(|c| self.pos >= c.rows())
        {
            self.chunk += 1;
            self.pos = 0;
        }
    }

    fn rewind(&mut self) {
        self.chunk = 0;
        self.pos = 0;
        self.settle();
    }

    /// Input location of the bar at the cursor (a piece is one chunk).
    fn location(&self) -> Option<u64> {
        let at: &[u64] = bytemuck::try_cast_slice(self.at.as_ref()?.bytes()).ok()?;
        at.get(self.pos).copied()
    }

    fn rows(&self) -> usize {
        self.chunks.iter().map(Chunk::rows).sum()
    }
}

/// A k-way merge by timestamp: a min-heap of (timestamp, input), so each
/// bar costs O(log k) however many pieces a symbol was staged in.
struct Merge {
    inputs: Vec<Input>,
    heap: BinaryHeap<Reverse<(i64, usize)>>,
    /// This timestamp's (input, bar, location), in input order.
    group: Vec<(usize, Bar, Option<u64>)>,
}

impl Merge {
    fn new(inputs: Vec<Input>) -> Self {
        let mut m = Merge {
            inputs,
            heap: BinaryHeap::new(),
            group: Vec::new(),
        };
        m.rewind();
        m
    }

    fn new_rows(&self) -> usize {
        self.inputs
            .iter()
            .filter(|i| i.source.is_some())
            .map(Input::rows)
            .sum()
    }

    fn rewind(&mut self) {
        self.heap.clear();
        for (k, input) in self.inputs.iter_mut().enumerate() {
            input.rewind();
            if let Some(ts) = input.head() {
                self.heap.push(Reverse((ts, k)));
            }
        }
    }

    /// Gathers every input's bar at the next timestamp; `None` at the end.
    /// The heap yields equal timestamps by input index, so the group is in
    /// input order.
    fn next_group(&mut self) -> Option<i64> {
        let Reverse((ts, _)) = *self.heap.peek()?;
        self.group.clear();
        while let Some(&Reverse((t, k))) = self.heap.peek() {
            if t != ts {
                break;
            }
            self.heap.pop();
            let input = &mut self.inputs[k];
            if let Some(bar) = input.bar() {
                self.group.push((k, bar, input.location()));
            }
            input.advance();
            if let Some(next) = input.head() {
                self.heap.push(Reverse((next, k)));
            }
        }
        Some(ts)
    }

    /// The bar that stands at this timestamp and the stored one (if any).
    /// Inputs are in (stored, then source, then staging) order: a later
    /// source wins; two different bars of one source conflict, the later is
    /// dropped and `conflict` hears (source, its location, the kept bar's).
    fn resolve(
        &self,
        mut conflict: impl FnMut((u32, Option<u64>, Option<u64>)) -> Result<()>,
    ) -> Result<(Bar, Option<Bar>)> {
        let mut winner: Option<(Option<u32>, Bar, Option<u64>)> = None;
        let mut old = None;
        for &(k, bar, at) in &self.group {
            let source = self.inputs[k].source;
            match (source, winner) {
                (None, _) => old = Some(bar),
                (Some(s), Some((ws, w, wat))) if ws == Some(s) => {
                    if !w.same_as(&bar) {
                        conflict((s, at, wat))?;
                    }
                    // Keep the earlier of two bars of one source.
                    continue;
                }
                _ => {}
            }
            winner = Some((source, bar, at));
        }
        match winner {
            Some((_, bar, _)) => Ok((bar, old)),
            None => Err(StoreError::corrupt("bar merge", "an empty timestamp group")),
        }
    }
}

impl Drop for IngestSession {
    fn drop(&mut self) {
        if !self.staged.is_empty() {
            let entries = std::mem::take(&mut self.staged);
            let _ = self.store.send(Op::Apply(Apply::UnstageBars { entries }));
        }
        self.store.shared().staging.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::MERGE;
    use crate::leveling::merge_from;

    /// Appends `n` single bars to a symbol stored as one `history`-bar
    /// chunk, merging as `merge_from` says; returns the chunk sizes and the
    /// bars rewritten.
    fn ticks(history: usize, n: usize) -> (Vec<usize>, usize) {
        let mut chunks = vec![history];
        let mut rewritten = 0;
        for _ in 0..n {
            chunks.extend_from_slice(&[1]);
            if let Some(from) = merge_from(&chunks, MERGE) {
                let merged: usize = chunks[from..].iter().sum();
                rewritten += merged;
                chunks.truncate(from);
                chunks.push(merged);
            }
        }
        (chunks, rewritten)
    }

    #[test]
    fn single_bar_appends_merge_like_a_counter_in_base_thirty_two() {
        assert_eq!(merge_from(&[5000, 1, 1], MERGE), None);
        let mut rows = vec![5000];
        rows.extend([1; 31]);
        assert_eq!(merge_from(&rows, MERGE), None, "31 fit the tail slots");
        rows.push(1);
        assert_eq!(merge_from(&rows, MERGE), Some(1));
        // Thirty-one 32-bar chunks and 32 single bars carry into one of 1024.
        let mut rows = vec![5000];
        rows.extend([32; 31]);
        rows.extend([1; 32]);
        assert_eq!(merge_from(&rows, MERGE), Some(1));
        // 100 ticks: 3 × 32 + 4 singles (100 = 3·32 + 4).
        let (chunks, _) = ticks(5000, 100);
        assert_eq!(chunks, vec![5000, 32, 32, 32, 1, 1, 1, 1]);
        // Every bar is rewritten once per size class, at most twice.
        let (chunks, rewritten) = ticks(5000, 4 * 1024);
        assert!(rewritten <= 2 * 4 * 1024, "{rewritten}");
        assert!(chunks.len() <= 1 + 4 + 2 * 31, "{chunks:?}");
        assert_eq!(chunks.iter().sum::<usize>(), 5000 + 4 * 1024);
    }

    #[test]
    fn a_large_chunk_is_never_merged_again() {
        let mut rows = vec![1024; 32];
        rows.push(1);
        assert_eq!(merge_from(&rows, MERGE), None);
        // A history chunk of the 32-1023 class merges with 31 more.
        let (chunks, _) = ticks(500, 31 * 32);
        assert_eq!(chunks, vec![500 + 31 * 32]);
    }
}
