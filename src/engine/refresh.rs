//! Executing `refresh` jobs: for each of the job's symbols and every plan
//! frame stored for it, continue the plan's saved state over the bars
//! added since and append only the new rows (bit for bit what a full
//! recompute gives), or recompute the plan in full when the stored bars
//! were corrected, the state is missing or unreadable for the plan, or the
//! frame is a state a migrated store kept.
//!
//! A continuation starts from the state the last refresh ended with, kept
//! in memory (`live`), or else from the saved state, and reads only the
//! bars after it (the new ones, or at most [`STATE_SAVE_BARS`] more); it
//! checks that the state's and the frame's bars are still a prefix of the
//! stored ones from those bars alone: the data version's hash is a sum over bars, so the hash of a
//! prefix is the whole hash minus the digests of the bars after it. A tick
//! therefore costs what its new bars cost, whatever the history's length.

use std::ops::Bound;

use kiln_core::{
    Backend, Bar, BarsRead, Coverage, DataVersion, FrameKey, FrameRead, FrameRows, FrameWrite,
    Lease, StoreError, Symbol,
};
use rayon::prelude::*;

use super::compute::{bars_of, check_bars, compute_symbol};
use super::run::{Results, RunReport, Setback, Sink, done};
use super::state::{self, STATE_SAVE_BARS, SavedState};
use super::{Engine, EngineError, REFRESH};
use crate::features::{Plan, spec::parse_list};

/// What refreshing one symbol produced.
#[derive(Default)]
struct Refreshed {
    results: Results,
    continued: u64,
    recomputed: u64,
}

/// The plan whose outputs are `labels`, in order, if there is one.
fn plan_of_labels(labels: &[String]) -> Option<Plan> {
    let mut specs = Vec::new();
    for label in labels {
        let (_, found) = super::read::resolve_features(label).ok()?;
        for spec in found {
            if !specs.contains(&spec) {
                specs.push(spec);
            }
        }
    }
    let plan = Plan::new(&specs);
    (plan.output_labels() == labels).then_some(plan)
}

/// The digest of bar `i` of a view (see `DataVersion::hash`).
fn digest(v: &impl BarsRead, i: usize) -> u64 {
    Bar {
        ts: v.ts()[i],
        open: v.open()[i],
        high: v.high()[i],
        low: v.low()[i],
        close: v.close()[i],
        volume: v.volume()[i],
        vwap: v.vwap()[i],
    }
    .digest()
}

impl<B: Backend> Engine<B> {
    /// Refresh jobs: every symbol of every job, in parallel. A job whose
    /// symbols all refreshed completes with their rows; one with a symbol
    /// that failed stores the others' rows under its lease, then fails
    /// (its retry finds them current and skips them).
    pub(super) fn run_refresh(
        &self,
        leases: Vec<Lease>,
        report: &mut RunReport,
        sink: &Sink,
    ) -> Result<(), EngineError> {
        let work: Vec<(usize, &Symbol)> = leases
            .iter()
            .enumerate()
            .flat_map(|(i, l)| l.job.symbols.iter().map(move |s| (i, s)))
            .collect();
        let mut computed: Vec<(usize, Result<Refreshed, Setback>)> = work
            .par_iter()
            .map(|&(i, symbol)| {
                let l = &leases[i];
                let _span = tracing::debug_span!("job", id = l.job.id, kind = REFRESH).entered();
                (i, self.refresh_symbol(symbol))
            })
            .collect();
        let mut per_job: Vec<(Results, Option<Setback>)> =
            leases.iter().map(|_| (Vec::new(), None)).collect();
        for (i, result) in computed.drain(..) {
            match result {
                Ok(r) => {
                    report.continued += r.continued;
                    report.recomputed += r.recomputed;
                    per_job[i].0.extend(r.results);
                }
                Err(setback) => {
                    per_job[i].1.get_or_insert(setback);
                }
            }
        }
        let mut completions = Vec::new();
        for (l, (results, setback)) in leases.iter().zip(per_job) {
            if l.job.symbols.is_empty() {
                self.kill(l, "a refresh job without a symbol", report)?;
                continue;
            }
            let Some(setback) = setback else {
                completions.push(done(l, results, report));
                continue;
            };
            if !results.is_empty() {
                match self.guarded(|| self.store.checkpoint(l.token, results)) {
                    Ok(()) => {}
                    Err(StoreError::LeaseLost { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            self.settle(l, setback, report)?;
        }
        sink.send(completions)
    }

    /// The writes that bring every plan frame of `symbol` up to its bars.
    fn refresh_symbol(&self, symbol: &Symbol) -> Result<Refreshed, Setback> {
        let Some(version) = self.store.data_version(symbol)? else {
            return Err(Setback::Data(format!("{symbol} has no bars")));
        };
        let keys: Vec<FrameKey> = self
            .store
            .frames(symbol)?
            .into_iter()
            .filter(state::is_plan)
            .collect();
        let heads = self.store.frames_batch(&keys)?;
        let mut out = Refreshed::default();
        for (key, head) in keys.into_iter().zip(heads) {
            let Some(head) = head else {
                continue;
            };
            if head.is_current(&version) && !state::is_legacy(&key) {
                continue;
            }
            let Some((saved_at, payload)) = head.state() else {
                // The state was lost (a power loss in relaxed mode): the
                // plan is the one whose outputs the labels are.
                match plan_of_labels(head.labels()) {
                    Some(plan) if state::key(symbol, &plan)? == key => {
                        let Some(bars) = self.store.bars(symbol, ..)? else {
                            return Err(Setback::Data(format!("{symbol} has no bars")));
                        };
                        let write = compute_symbol(&plan, &plan.text(), symbol, &bars)
                            .map_err(Setback::Data)?;
                        out.recomputed += 1;
                        out.results.push(write);
                    }
                    _ => {
                        tracing::warn!(frame = %key, "a stale frame without a saved state or a plan")
                    }
                }
                continue;
            };
            let Some(saved) = SavedState::decode(payload) else {
                return Err(Setback::Data(format!(
                    "{symbol}: saved state {} is unreadable",
                    key.name
                )));
            };
            let plan = match parse_list(saved.plan) {
                Ok(specs) => Plan::new(&specs),
                Err(e) => {
                    return Err(Setback::Data(format!(
                        "{symbol}: saved plan {:?}: {e}",
                        saved.plan
                    )));
                }
            };
            let own = state::key(symbol, &plan)? == key && head.labels() == plan.output_labels();
            let appended = if own {
                self.continue_plan(&key, &plan, saved, saved_at, head.covers())?
            } else {
                None
            };
            match appended {
                Some(write) => {
                    out.continued += 1;
                    out.results.push(write);
                }
                None => {
                    let Some(bars) = self.store.bars(symbol, ..)? else {
                        return Err(Setback::Data(format!("{symbol} has no bars")));
                    };
                    let write =
                        compute_symbol(&plan, saved.plan, symbol, &bars).map_err(Setback::Data)?;
                    out.recomputed += 1;
                    out.results.push(write);
                    if state::is_legacy(&key) {
                        out.results.push(FrameWrite {
                            key,
                            rows: FrameRows::Remove,
                            covers: Coverage::default(),
                            columns: Vec::new(),
                            state: None,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// The rows of `frame` (covering `frame_at`) over the bars added since,
    /// continued from the live state at `frame_at` if one is kept, else
    /// from the state saved at `saved_at`; `None` when the stored bars are
    /// not those plus new ones (a correction, a back-fill) or the state
    /// does not fit the plan: then the plan is recomputed.
    fn continue_plan(
        &self,
        frame: &FrameKey,
        plan: &Plan,
        saved: SavedState<'_>,
        saved_at: Coverage,
        frame_at: Coverage,
    ) -> Result<Option<FrameWrite>, Setback> {
        let symbol = &frame.symbol;
        let (from, mut state) = match self.runtime.live.get(frame, frame_at) {
            Some(state) => (frame_at, state),
            None => {
                if saved_at.bars > frame_at.bars {
                    return Ok(None);
                }
                match plan.decode_state(saved.state) {
                    Ok(state) => (saved_at, state),
                    Err(_) => return Ok(None),
                }
            }
        };
        if from.bars == 0 {
            return Ok(None);
        }
        let after = (Bound::Excluded(from.last_ts), Bound::Unbounded);
        let Some(view) = self.store.bars(symbol, after)? else {
            return Ok(None);
        };
        let version: DataVersion = view.version();
        let n = view.len();
        if from.bars + n as u64 != version.bars {
            return Ok(None);
        }
        // The hash of the bars before view[i]: the whole hash minus the
        // digests from i on.
        let mut prefix = vec![version.hash; n + 1];
        for i in (0..n).rev() {
            prefix[i] = prefix[i + 1].wrapping_sub(digest(&view, i));
        }
        let known = (frame_at.bars - from.bars) as usize;
        if prefix[0] != from.hash
            || known > n
            || prefix[known] != frame_at.hash
            || (known > 0 && view.ts()[known - 1] != frame_at.last_ts)
        {
            return Ok(None);
        }
        check_bars(symbol, &view, 0).map_err(Setback::Data)?;
        let mut rows = plan.new_frame();
        if plan
            .advance(&mut state, bars_of(&view, 0), &mut rows)
            .is_err()
        {
            return Ok(None);
        }
        let columns = (0..plan.output_labels().len())
            .map(|i| {
                rows.output(i)
                    .unwrap_or(&[])
                    .get(known..)
                    .unwrap_or(&[])
                    .to_vec()
            })
            .collect();
        let covers = Coverage::of(&version);
        let state_bytes = (version.bars - saved_at.bars >= STATE_SAVE_BARS).then(|| {
            SavedState {
                plan: saved.plan,
                state: &plan.encode_state(&state),
            }
            .encode()
        });
        self.runtime.live.put(frame, covers, state);
        Ok(Some(FrameWrite {
            key: frame.clone(),
            rows: FrameRows::Append { after: frame_at },
            covers,
            columns,
            state: state_bytes,
        }))
    }
}
