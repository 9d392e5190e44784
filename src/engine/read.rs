//! Reading what the engine stored: feature outputs judged against the bars
//! they are read with (ready, stale or missing; counted in
//! `kiln_feature_reads_total`), a symbol's stored outputs, and the engine's
//! part of an integrity check.

use kiln_core::{
    Backend, BarsRead, CheckReport, DataVersion, Event, JobId, JobState, SeriesKey, SeriesRead,
    Symbol,
};

use super::metrics::ReadResult;
use super::{Engine, EngineError};
use crate::features::{FeatureSpec, SpecError};

/// One output of a [`FeatureRead`].
pub struct Output<V> {
    /// Its label (`macd(12,26,9).signal`).
    pub label: String,
    /// The stored series, if there is one.
    pub series: Option<V>,
    /// Whether it was computed from the bars read with it.
    pub result: ReadResult,
}

/// A symbol as the symbol list shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolSummary {
    /// The symbol.
    pub symbol: Symbol,
    /// Its bars: how many, first and last.
    pub version: DataVersion,
    /// Feature outputs stored for it.
    pub outputs: usize,
    /// Of those, the ones computed from other bars than stored now.
    pub stale: usize,
}

/// A symbol's bars and the outputs asked for, each judged against exactly
/// those bars.
pub struct FeatureRead<B: Backend> {
    /// The bars.
    pub bars: B::BarsView,
    /// The outputs, in the order asked.
    pub outputs: Vec<Output<B::SeriesView>>,
}

impl<B: Backend> FeatureRead<B> {
    /// Whether every output is stored and computed from these bars.
    pub fn ready(&self) -> bool {
        self.outputs.iter().all(|o| o.result == ReadResult::Hit)
    }
}

impl<B: Backend> Engine<B> {
    /// The stored series of one feature output, read in place; `None` if
    /// it was never computed.
    pub fn feature(
        &self,
        symbol: &Symbol,
        label: &str,
    ) -> Result<Option<B::SeriesView>, EngineError> {
        let key = SeriesKey::new(symbol.clone(), label)?;
        Ok(self.store.series(&key)?)
    }

    /// Reads `labels` of `symbol` with its bars; `None` when the symbol has
    /// no bars.
    pub fn read_features(
        &self,
        symbol: &Symbol,
        labels: &[String],
    ) -> Result<Option<FeatureRead<B>>, EngineError> {
        let Some(bars) = self.store.bars(symbol, ..)? else {
            return Ok(None);
        };
        let version = bars.version();
        let keys = labels
            .iter()
            .map(|l| SeriesKey::new(symbol.clone(), l.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let series = self.store.series_batch(&keys)?;
        let outputs = labels
            .iter()
            .zip(series)
            .map(|(label, series)| {
                let result = match &series {
                    None => ReadResult::Miss,
                    Some(s) if s.is_current(&version) => ReadResult::Hit,
                    Some(_) => ReadResult::Stale,
                };
                self.runtime.metrics.read(result);
                Output {
                    label: label.clone(),
                    series,
                    result,
                }
            })
            .collect();
        Ok(Some(FeatureRead { bars, outputs }))
    }

    /// Counts a feature read answered without [`Engine::read_features`] (a
    /// kept answer) in `kiln_feature_reads_total`.
    pub fn count_read(&self, result: ReadResult) {
        self.runtime.metrics.read(result);
    }

    /// Every feature output stored for `symbol`.
    pub fn outputs(&self, symbol: &Symbol) -> Result<Vec<(SeriesKey, B::SeriesView)>, EngineError> {
        let keys: Vec<SeriesKey> = self.store.series_keys(symbol)?;
        let series = self.store.series_batch(&keys)?;
        Ok(keys
            .into_iter()
            .zip(series)
            .filter_map(|(k, s)| Some((k, s?)))
            .collect())
    }

    /// Up to `limit` symbols with bars, in name order, after `after`: each
    /// with its data version and how many of its stored outputs are stale.
    pub fn symbol_summaries(
        &self,
        after: Option<&Symbol>,
        limit: usize,
    ) -> Result<Vec<SymbolSummary>, EngineError> {
        let mut out = Vec::new();
        for (symbol, version) in self.store.bar_symbols()? {
            if out.len() >= limit {
                break;
            }
            if after.is_some_and(|a| symbol <= *a) {
                continue;
            }
            let keys = self.store.series_keys(&symbol)?;
            let views = self.store.series_batch(&keys)?;
            let stale = views
                .iter()
                .filter(|v| v.as_ref().is_some_and(|v| !v.is_current(&version)))
                .count();
            out.push(SymbolSummary {
                symbol,
                version,
                outputs: keys.len(),
                stale,
            });
        }
        Ok(out)
    }

    /// The events of job `id` in the durable log, oldest first (a scan of
    /// the log, which `events_max` bounds).
    pub fn job_events(&self, id: JobId) -> Result<Vec<Event>, EngineError> {
        let mut out = Vec::new();
        self.each_event(|e| {
            if e.job_id == id {
                out.push(e);
            }
        })?;
        Ok(out)
    }

    /// Calls `f` with every event in the durable log, oldest first;
    /// returns the last one's sequence number (0 for none).
    pub fn each_event(&self, mut f: impl FnMut(Event)) -> Result<u64, EngineError> {
        const PAGE: usize = 4096;
        let mut after = 0;
        loop {
            let page = self.store.events(after, PAGE)?;
            let Some(last) = page.last() else {
                return Ok(after);
            };
            after = last.seq;
            let full = page.len() == PAGE;
            page.into_iter().for_each(&mut f);
            if !full {
                return Ok(after);
            }
        }
    }

    /// The integrity check: the store's scan, plus the series written by a
    /// job that ended dead or cancelled (results without a succeeded job)
    /// as problems; and how many stored series are stale (computed from
    /// other bars than stored now), which `kiln run` refreshes and which are
    /// not a fault.
    pub fn check(&self) -> Result<(CheckReport, u64), EngineError> {
        let mut report = self.store.check()?;
        let mut stale = 0;
        for (symbol, version) in self.store.bar_symbols()? {
            let keys = self.store.series_keys(&symbol)?;
            let views = self.store.series_batch(&keys)?;
            for (key, view) in keys.iter().zip(views) {
                if view.is_some_and(|v| !v.is_current(&version)) {
                    stale += 1;
                }
                let Some(writer) = self.store.series_writer(key)? else {
                    continue;
                };
                if let Some(job) = self.store.job(writer)?
                    && matches!(job.state, JobState::Dead | JobState::Cancelled)
                {
                    report.problems.push(format!(
                        "{}/{} was written by job {writer}, which is {}",
                        key.symbol,
                        key.feature,
                        job.state.as_str()
                    ));
                }
            }
        }
        Ok((report, stale))
    }
}

/// What a feature request names: a spec list (`rsi(14),macd(12,26,9)`: all
/// their outputs) or one output label (`macd(12,26,9).signal`). Returns the
/// labels to read and the specs that compute them, each once.
pub fn resolve_features(text: &str) -> Result<(Vec<String>, Vec<FeatureSpec>), SpecError> {
    match crate::features::spec::parse_list(text) {
        Ok(mut specs) => {
            let mut seen = std::collections::HashSet::new();
            specs.retain(|s| seen.insert(s.to_string()));
            Ok((
                specs.iter().flat_map(|s| s.output_labels()).collect(),
                specs,
            ))
        }
        Err(e) => {
            let spec = match text.rsplit_once('.') {
                Some((base, _)) => crate::features::spec::parse(base).map_err(|_| e)?,
                None => return Err(e),
            };
            if !spec.output_labels().iter().any(|l| l == text.trim()) {
                return Err(SpecError::Syntax {
                    spec: text.to_owned(),
                    reason: "the feature has no output of that name",
                });
            }
            Ok((vec![text.trim().to_owned()], vec![spec]))
        }
    }
}
