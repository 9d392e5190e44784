//! Executing `refresh` jobs: for every plan whose state is saved for the
//! symbol, continue the state over the bars added since (bit for bit what a
//! full recompute gives), or recompute in full when the stored bars were
//! corrected or an output is missing.

use kiln_core::{Backend, Bar, BarsRead, Lease, SeriesKey, SeriesRead, StoreError, Symbol};
use rayon::prelude::*;

use super::compute::{bars_of, check_bars, compute_symbol, series};
use super::run::{Results, RunReport, Setback, Sink, done};
use super::state::{self, SavedState};
use super::{Engine, EngineError, REFRESH};
use crate::features::{Plan, spec::parse_list};

/// What refreshing one symbol produced.
#[derive(Default)]
struct Refreshed {
    results: Results,
    continued: u64,
    recomputed: u64,
}

/// The digest sum of a view's first `n` bars (see `DataVersion::hash`).
fn prefix_digest(v: &impl BarsRead, n: usize) -> u64 {
    (0..n).fold(0u64, |h, i| {
        let bar = Bar {
            ts: v.ts()[i],
            open: v.open()[i],
            high: v.high()[i],
            low: v.low()[i],
            close: v.close()[i],
            volume: v.volume()[i],
            vwap: v.vwap()[i],
        };
        h.wrapping_add(bar.digest())
    })
}

impl<B: Backend> Engine<B> {
    /// Refresh jobs: continue each stored plan's state over new bars.
    pub(super) fn run_refresh(
        &self,
        leases: Vec<Lease>,
        report: &mut RunReport,
        sink: &Sink,
    ) -> Result<(), EngineError> {
        let computed: Vec<Result<Refreshed, Setback>> = leases
            .par_iter()
            .map(|l| {
                let _span = tracing::debug_span!("job", id = l.job.id, kind = REFRESH).entered();
                self.refresh_one(l)
            })
            .collect();
        let mut completions = Vec::new();
        for (l, result) in leases.iter().zip(computed) {
            match result {
                Ok(Refreshed {
                    results,
                    continued,
                    recomputed,
                }) => {
                    report.continued += continued;
                    report.recomputed += recomputed;
                    completions.push(done(l, results, report));
                }
                Err(setback) => self.settle(l, setback, report)?,
            }
        }
        sink.send(completions)
    }

    /// The results of refreshing one symbol.
    fn refresh_one(&self, lease: &Lease) -> Result<Refreshed, Setback> {
        let Some(symbol) = lease.job.symbols.first() else {
            return Err(Setback::Data("a refresh job without a symbol".into()));
        };
        let Some(bars) = self.store.bars(symbol, ..)? else {
            return Err(Setback::Data(format!("{symbol} has no bars")));
        };
        let version = bars.version();
        check_bars(symbol, &bars, 0).map_err(Setback::Data)?;
        let mut out = Refreshed::default();
        for key in self.store.series_keys(symbol)? {
            if !state::is_state(&key) {
                continue;
            }
            let Some(saved) = self.store.series(&key)? else {
                continue;
            };
            if saved.is_current(&version) {
                continue;
            }
            let Some(SavedState {
                plan: text,
                state: state_bytes,
            }) = SavedState::decode(saved.state())
            else {
                return Err(Setback::Data(format!(
                    "{symbol}: saved state {} is unreadable",
                    key.feature
                )));
            };
            let plan = match parse_list(text) {
                Ok(specs) => Plan::new(&specs),
                Err(e) => {
                    return Err(Setback::Data(format!("{symbol}: saved plan {text:?}: {e}")));
                }
            };
            let old_n = usize::try_from(saved.bar_count()).unwrap_or(usize::MAX);
            let grew = old_n > 0
                && old_n <= bars.len()
                && bars.ts()[old_n - 1] == saved.last_ts()
                && prefix_digest(&bars, old_n) == saved.data_hash();
            let continued = if grew {
                self.continue_plan(
                    symbol,
                    &plan,
                    text,
                    state_bytes,
                    &bars,
                    saved.data_hash(),
                    old_n,
                )?
            } else {
                None
            };
            let results = match continued {
                Some(r) => {
                    out.continued += 1;
                    r
                }
                // A correction, or outputs missing: recompute in full.
                None => match compute_symbol(&plan, text, symbol, &bars) {
                    Ok(r) => {
                        out.recomputed += 1;
                        r
                    }
                    Err(why) => return Err(Setback::Data(why)),
                },
            };
            out.results.extend(results);
        }
        Ok(out)
    }

    /// Continues a saved state over bars `old_n..`; `None` if any stored
    /// output is not the one the state belongs to.
    #[allow(clippy::too_many_arguments)]
    fn continue_plan(
        &self,
        symbol: &Symbol,
        plan: &Plan,
        text: &str,
        state_bytes: &[u8],
        bars: &B::BarsView,
        old_hash: u64,
        old_n: usize,
    ) -> Result<Option<Results>, StoreError> {
        let Ok(mut state) = plan.decode_state(state_bytes) else {
            return Ok(None);
        };
        let mut frame = plan.new_frame();
        if plan
            .advance(&mut state, bars_of(bars, old_n), &mut frame)
            .is_err()
        {
            return Ok(None);
        }
        let v = bars.version();
        let keys = plan
            .output_labels()
            .iter()
            .map(|l| SeriesKey::new(symbol.clone(), l.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let olds = self.store.series_batch(&keys)?;
        let mut out = Vec::with_capacity(keys.len() + 1);
        for (i, (key, old)) in keys.into_iter().zip(olds).enumerate() {
            let Some(old) = old else {
                return Ok(None);
            };
            if old.values().len() != old_n || old.data_hash() != old_hash {
                return Ok(None);
            }
            let mut values = Vec::with_capacity(bars.len());
            values.extend_from_slice(old.values());
            values.extend_from_slice(frame.output(i).unwrap_or(&[]));
            out.push((key, series(&v, values, Vec::new())));
        }
        let saved = SavedState {
            plan: text,
            state: &plan.encode_state(&state),
        };
        out.push((
            state::key(symbol, plan)?,
            series(&v, Vec::new(), saved.encode()),
        ));
        Ok(Some(out))
    }
}
