//! Executing `compute` jobs. One-symbol jobs of a plan run together: one
//! batch read of their bars, one parallel compute on rayon, one commit. A
//! job over many symbols runs in groups of `checkpoint_symbols`, each
//! stored under its lease as it finishes; its next attempt skips the
//! symbols already current.

use std::time::Instant;

use kiln_core::{
    Backend, BarsRead, Completion, Coverage, DataVersion, FrameRead, FrameRows, FrameWrite, Lease,
    SeriesKey, SeriesRead, StoreError, Symbol,
};
use rayon::prelude::*;

use super::run::{Results, RunReport, Setback, Sink, done};
use super::state::{self, SavedState};
use super::{Engine, EngineError};
use crate::features::{Bars, FeatureError, Plan, spec::parse_list};

/// The kernels' columns of a view, from bar `from` on.
pub(super) fn bars_of(v: &impl BarsRead, from: usize) -> Bars<'_> {
    Bars {
        open: v.open().get(from..).unwrap_or(&[]),
        high: v.high().get(from..).unwrap_or(&[]),
        low: v.low().get(from..).unwrap_or(&[]),
        close: v.close().get(from..).unwrap_or(&[]),
        volume: v.volume().get(from..).unwrap_or(&[]),
    }
}

/// The first bar from `from` on whose prices or volume are not finite (the
/// store's own ingest refuses them, but bars staged through the library
/// API are only checked for order): the error names the symbol and bar.
pub(super) fn check_bars(symbol: &Symbol, v: &impl BarsRead, from: usize) -> Result<(), String> {
    let columns = [
        ("open", v.open()),
        ("high", v.high()),
        ("low", v.low()),
        ("close", v.close()),
        ("volume", v.volume()),
    ];
    for (name, column) in columns {
        if let Some(i) = column.iter().skip(from).position(|x| !x.is_finite()) {
            let i = from + i;
            return Err(format!(
                "{symbol}: bar {i} ({}) has {name} {}; fix the bars and submit again",
                crate::market::format_iso(v.ts()[i]),
                column[i]
            ));
        }
    }
    Ok(())
}

/// Every output of `plan` over a symbol's full history, as the symbol's
/// plan frame (replaced) with the state after the last bar; the error
/// names the symbol.
pub(super) fn compute_symbol(
    plan: &Plan,
    text: &str,
    symbol: &Symbol,
    bars: &impl BarsRead,
) -> Result<FrameWrite, String> {
    let fail = |e: &dyn std::fmt::Display| format!("{symbol}: {e}");
    check_bars(symbol, bars, 0)?;
    let mut state = plan.new_state();
    let mut frame = plan.new_frame();
    plan.advance(&mut state, bars_of(bars, 0), &mut frame)
        .map_err(|e: FeatureError| fail(&e))?;
    let columns = (0..plan.output_labels().len())
        .map(|i| frame.output(i).unwrap_or(&[]).to_vec())
        .collect();
    let saved = SavedState {
        plan: text,
        state: &plan.encode_state(&state),
    };
    Ok(FrameWrite {
        key: state::key(symbol, plan).map_err(|e| fail(&e))?,
        rows: FrameRows::Replace {
            labels: plan.output_labels().to_vec(),
        },
        covers: Coverage::of(&bars.version()),
        columns,
        state: Some(saved.encode()),
    })
}

impl<B: Backend> Engine<B> {
    pub(super) fn run_compute(
        &self,
        payload: &[u8],
        leases: Vec<Lease>,
        report: &mut RunReport,
        sink: &Sink,
    ) -> Result<(), EngineError> {
        let text = String::from_utf8_lossy(payload).into_owned();
        let plan = match parse_list(&text) {
            Ok(specs) => Plan::new(&specs),
            Err(e) => {
                for l in &leases {
                    self.kill(l, &format!("bad feature list {text:?}: {e}"), report)?;
                }
                return Ok(());
            }
        };
        let (empty, leases): (Vec<Lease>, Vec<Lease>) =
            leases.into_iter().partition(|l| l.job.symbols.is_empty());
        for l in &empty {
            self.kill(l, "a compute job without a symbol", report)?;
        }
        let (single, many): (Vec<Lease>, Vec<Lease>) =
            leases.into_iter().partition(|l| l.job.symbols.len() == 1);
        // One-symbol jobs: one batch read, one parallel compute, one commit.
        let symbols: Vec<Symbol> = single
            .iter()
            .filter_map(|l| l.job.symbols.first().cloned())
            .collect();
        let views = self.read_bars(&symbols);
        let computed: Vec<Result<FrameWrite, Setback>> = single
            .par_iter()
            .zip(views.par_iter())
            .map(|(l, view)| {
                let _span = tracing::debug_span!("job", id = l.job.id).entered();
                let (symbol, view) = match (l.job.symbols.first(), view) {
                    (Some(s), Ok(Some(v))) => (s, v),
                    (Some(s), Ok(None)) => return Err(Setback::Data(format!("{s} has no bars"))),
                    (Some(s), Err(e)) => return Err(Setback::Read(format!("{s}: {e}"))),
                    (None, _) => {
                        return Err(Setback::Data("a compute job without a symbol".into()));
                    }
                };
                let t = Instant::now();
                let results = compute_symbol(&plan, &text, symbol, view);
                self.runtime()
                    .metrics
                    .compute(&text, t.elapsed().as_secs_f64());
                results.map_err(Setback::Data)
            })
            .collect();
        let mut completions = Vec::with_capacity(single.len());
        for (l, result) in single.iter().zip(computed) {
            match result {
                Ok(frame) => completions.push(done(l, vec![frame], report)),
                Err(setback) => self.settle(l, setback, report)?,
            }
        }
        sink.send(completions)?;
        for l in many {
            self.run_many(&plan, &text, l, report, sink)?;
        }
        Ok(())
    }

    /// A job over many symbols: groups of `checkpoint_symbols`, each stored
    /// as it finishes; symbols already current are skipped.
    fn run_many(
        &self,
        plan: &Plan,
        text: &str,
        lease: Lease,
        report: &mut RunReport,
        sink: &Sink,
    ) -> Result<(), EngineError> {
        let _span =
            tracing::debug_span!("job", id = lease.job.id, symbols = lease.job.symbols.len())
                .entered();
        let todo = match self.not_current(plan, &lease.job.symbols) {
            Ok(todo) => todo,
            Err(setback) => return self.settle(&lease, setback, report),
        };
        let chunks: Vec<&[Symbol]> = todo.chunks(self.config.checkpoint_symbols).collect();
        let mut last = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            // Keep the lease while a long job runs.
            match self
                .store
                .heartbeat(lease.token, self.store.queue_config().lease_ms)
            {
                Ok(_) => {}
                Err(StoreError::LeaseLost { .. }) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            let views = self.read_bars(chunk);
            let computed: Result<Results, Setback> = chunk
                .par_iter()
                .zip(views.par_iter())
                .map(|(s, view)| match view {
                    Ok(Some(v)) => compute_symbol(plan, text, s, v).map_err(Setback::Data),
                    Ok(None) => Err(Setback::Data(format!("{s} has no bars"))),
                    Err(e) => Err(Setback::Read(format!("{s}: {e}"))),
                })
                .collect();
            let results = match computed {
                Ok(r) => r,
                Err(setback) => return self.settle(&lease, setback, report),
            };
            report.symbols += chunk.len() as u64;
            report.series += results.iter().map(|f| f.columns.len() as u64).sum::<u64>();
            if i + 1 < chunks.len() {
                match self.guarded(|| self.store.checkpoint(lease.token, results)) {
                    Ok(()) => {}
                    Err(StoreError::LeaseLost { .. }) => return Ok(()),
                    // Results that can never be stored: the job is dead.
                    Err(e @ StoreError::TooLarge { .. }) => {
                        return self.settle(&lease, Setback::Data(e.to_string()), report);
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                last = results;
            }
        }
        sink.send(vec![(
            Completion {
                token: lease.token,
                results: last,
            },
            lease.job.priority,
        )])
    }

    /// The symbols whose outputs of `plan` are missing or stale.
    fn not_current(&self, plan: &Plan, symbols: &[Symbol]) -> Result<Vec<Symbol>, Setback> {
        let mut todo = Vec::new();
        for (s, version) in symbols.iter().zip(self.store.data_versions(symbols)?) {
            let current = match version {
                Some(v) => self.is_current(s, plan, &v)?,
                None => false,
            };
            if !current {
                todo.push(s.clone());
            }
        }
        Ok(todo)
    }

    /// Whether every output of `plan` stored for `symbol` was computed from
    /// `version` (in `plan`'s frame or in others).
    pub fn is_current(
        &self,
        symbol: &Symbol,
        plan: &Plan,
        version: &DataVersion,
    ) -> Result<bool, EngineError> {
        if let Some(frame) = self.store.frame(&state::key(symbol, plan)?)?
            && frame.is_current(version)
            && frame.labels() == plan.output_labels()
        {
            return Ok(true);
        }
        let keys = plan
            .output_labels()
            .iter()
            .map(|l| SeriesKey::new(symbol.clone(), l.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self
            .store
            .series_batch(&keys)?
            .iter()
            .all(|s| s.as_ref().is_some_and(|s| s.is_current(version))))
    }
}
