//! `/ui/symbols`: the symbols with bars (count, first and last bar, data
//! version, stored outputs and how many are stale), paged by name;
//! `/ui/symbols/{symbol}`: its chart (see `chart`) with its stored
//! features, a badge on each stale one and a button that computes it
//! again. The page reloads when a job on the symbol succeeds.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use kiln_core::Symbol;
use kiln_core::prelude::*;
use maud::html;
use serde::Deserialize;

use super::chart::{self, Candles, Line, Pane};
use super::layout::{Live, Nav, Page, date, shell};
use crate::api::guard::query_escape;
use crate::api::reply::{blocking, durable, symbol};
use crate::api::{ApiError, App};
use crate::engine::resolve_features;

/// Symbols per page.
const PAGE_ROWS: usize = 100;

/// Bars the chart shows unless asked (`?bars=`), and at most.
const BARS_DEFAULT: usize = 250;
const BARS_MAX: usize = 2_000;

/// Panes of oscillators the chart draws at most.
const PANES_MAX: usize = 8;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    after: Option<String>,
    note: Option<String>,
    seal: Option<String>,
}

/// `GET /ui/symbols?after=`.
pub async fn list<B: Backend>(
    State(app): State<Arc<App<B>>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Page {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let after = q.after.as_deref().map(symbol).transpose()?;
    durable(app.engine.store()).await?;
    let engine = app.engine.clone();
    let after_read = after.clone();
    let rows =
        blocking(move || Ok(engine.symbol_summaries(after_read.as_ref(), PAGE_ROWS + 1)?)).await?;
    let more = rows.len() > PAGE_ROWS;
    let rows = &rows[..rows.len().min(PAGE_ROWS)];
    let body = html! {
        h1 { "Symbols" }
        @if rows.is_empty() {
            p.muted { "No bars yet: kiln ingest, or POST /v1/bars." }
        } @else {
            table #symbols {
                thead { tr {
                    th { "Symbol" } th.num { "Bars" } th { "First bar" } th { "Last bar" }
                    th { "Data version" } th.num { "Stored outputs" } th.num { "Stale" }
                } }
                tbody {
                    @for r in rows {
                        tr {
                            td { a href={ "/ui/symbols/" (query_escape(r.symbol.as_str())) } { (r.symbol.as_str()) } }
                            td.num { (r.version.bars) }
                            td { (date(r.version.first_ts)) }
                            td { (date(r.version.last_ts)) }
                            td { code { (format!("{:016x}", r.version.hash)) } }
                            td.num { (r.outputs) }
                            td.num { @if r.stale > 0 { span.badge.stale { (r.stale) } } @else { "0" } }
                        }
                    }
                }
            }
        }
        div.pager {
            @if after.is_some() { a href="/ui/symbols" { "← First" } }
            @if more {
                @if let Some(last) = rows.last() {
                    a href={ "/ui/symbols?after=" (query_escape(last.symbol.as_str())) } { "Next →" }
                }
            }
        }
    };
    Ok(shell(
        "Symbols",
        Nav::Symbols,
        app.notes.open(q.note.clone(), q.seal.as_deref()).as_deref(),
        None,
        body,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartQuery {
    /// Bars to show (the last ones).
    bars: Option<usize>,
    /// Specs to draw (`sma(20),rsi(14)`); all stored ones by default.
    features: Option<String>,
    note: Option<String>,
    seal: Option<String>,
}

/// A stored feature as the page shows it.
struct Feature {
    spec: String,
    on_price: bool,
    current: bool,
    /// Its outputs: label, values aligned to the bars drawn.
    outputs: Vec<(String, Vec<f64>)>,
    /// The last stored value of each output, as `kiln features` prints it.
    last: Vec<(String, Option<f64>)>,
}

/// `GET /ui/symbols/{symbol}?bars=&features=`.
pub async fn page<B: Backend>(
    State(app): State<Arc<App<B>>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ChartQuery>, QueryRejection>,
) -> Page {
    let Path(sym) = path.map_err(ApiError::rejection)?;
    let sym = symbol(&sym)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let shown = q.bars.unwrap_or(BARS_DEFAULT).clamp(2, BARS_MAX);
    let wanted: Option<Vec<String>> = match q.features.as_deref().filter(|f| !f.trim().is_empty()) {
        Some(text) => Some(
            resolve_features(text)
                .map_err(|e| ApiError::bad_request(e.to_string()))?
                .1
                .iter()
                .map(ToString::to_string)
                .collect(),
        ),
        None => None,
    };
    durable(app.engine.store()).await?;
    let engine = app.engine.clone();
    let read_sym = sym.clone();
    let read = blocking(move || read_chart(&engine, &read_sym, shown, wanted.as_deref())).await?;
    let Some((bars, features)) = read else {
        return Err(ApiError::not_found(format!("no bars for {sym}")).into());
    };
    let candles = Candles {
        ts: &bars.ts,
        open: &bars.open,
        high: &bars.high,
        low: &bars.low,
        close: &bars.close,
        volume: &bars.volume,
    };
    let overlays: Vec<Line> = features
        .iter()
        .filter(|f| f.on_price)
        .flat_map(|f| f.outputs.iter())
        .map(|(label, values)| Line {
            label: label.clone(),
            values: values.clone(),
        })
        .collect();
    let panes: Vec<Pane> = features
        .iter()
        .filter(|f| !f.on_price)
        .take(PANES_MAX)
        .map(pane)
        .collect();
    let base = format!("/ui/symbols/{}", query_escape(sym.as_str()));
    let body = html! {
        h1 { (sym.as_str()) }
        p.muted {
            (bars.total) " bars, " (date(bars.first_ts)) " to " (date(bars.last_ts)) "; showing the last " (bars.ts.len()) ". "
            a href={ (base) "?bars=" (BARS_MAX.min(shown * 2)) } { "More" } " · "
            a href={ (base) "?bars=" ((shown / 2).max(2)) } { "Fewer" } " · "
            a href={ "/ui/jobs?symbol=" (query_escape(sym.as_str())) } { "Jobs" }
        }
        div.chart { (chart::draw(&candles, &overlays, &panes)) }
        (chart::legend(&overlays, &panes))
        h2 { "Stored features" }
        @if features.is_empty() {
            p.muted { "None yet. Queue some on the overview, or: kiln submit " (sym.as_str()) " --features \"rsi(14)\"." }
        } @else {
            table #features {
                thead { tr { th { "Feature" } th { "Latest" } th { "State" } th {} } }
                tbody {
                    @for f in &features {
                        tr data-feature=(f.spec) {
                            td { (f.spec) }
                            td {
                                @for (label, v) in &f.last {
                                    span.latest data-label=(label) data-last=[v.map(|v| v.to_string())] {
                                        (label) " " (v.map_or_else(|| "–".to_owned(), chart::short))
                                    }
                                    " "
                                }
                            }
                            td { @if f.current { span.badge { "current" } } @else { span.badge.stale { "stale" } } }
                            td {
                                form.inline method="post" action={ (base) "/refresh" } {
                                    input type="hidden" name="feature" value=(f.spec);
                                    button.refresh type="submit" { @if f.current { "Recompute" } @else { "Refresh" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let live = format!("symbol:{}", sym.as_str());
    Ok(shell(
        sym.as_str(),
        Nav::Symbols,
        app.notes.open(q.note.clone(), q.seal.as_deref()).as_deref(),
        Live::follow(&live),
        body,
    ))
}

/// A pane of its own for an oscillator: MACD's histogram as bars, RSI's
/// 30 and 70 as levels.
fn pane(f: &Feature) -> Pane {
    let mut lines = Vec::new();
    let mut histogram = None;
    for (label, values) in &f.outputs {
        let line = Line {
            label: label.clone(),
            values: values.clone(),
        };
        if label.ends_with(".hist") {
            histogram = Some(line);
        } else {
            lines.push(line);
        }
    }
    let levels = if f.spec.starts_with("rsi(") {
        vec![30.0, 70.0]
    } else if f.spec.starts_with("macd(")
        || f.spec.starts_with("roc(")
        || f.spec.starts_with("mom(")
    {
        vec![0.0]
    } else {
        Vec::new()
    };
    Pane {
        title: f.spec.clone(),
        lines,
        histogram,
        levels,
    }
}

/// The bars drawn: the last of a symbol's bars.
struct ShownBars {
    total: u64,
    first_ts: i64,
    last_ts: i64,
    ts: Vec<i64>,
    open: Vec<f64>,
    high: Vec<f64>,
    low: Vec<f64>,
    close: Vec<f64>,
    volume: Vec<f64>,
}

/// The last `shown` bars of `symbol` and its stored features (those in
/// `wanted`, or all), each output's values cut to the same bars.
fn read_chart<B: Backend>(
    engine: &crate::engine::Engine<B>,
    symbol: &Symbol,
    shown: usize,
    wanted: Option<&[String]>,
) -> Result<Option<(ShownBars, Vec<Feature>)>, ApiError> {
    let Some(bars) = engine.store().bars(symbol, ..)? else {
        return Ok(None);
    };
    let version = bars.version();
    let n = bars.len();
    let lo = n.saturating_sub(shown);
    let cut = |c: &[f64]| c[lo..].to_vec();
    let shown_bars = ShownBars {
        total: version.bars,
        first_ts: version.first_ts,
        last_ts: version.last_ts,
        ts: bars.ts()[lo..].to_vec(),
        open: cut(bars.open()),
        high: cut(bars.high()),
        low: cut(bars.low()),
        close: cut(bars.close()),
        volume: cut(bars.volume()),
    };
    let mut features: Vec<Feature> = Vec::new();
    for (key, view) in engine.outputs(symbol)? {
        let label = key.feature.clone();
        let Ok((_, specs)) = resolve_features(&label) else {
            continue;
        };
        let Some(spec) = specs.first() else {
            continue;
        };
        let spec_text = spec.to_string();
        if wanted.is_some_and(|w| !w.contains(&spec_text)) {
            continue;
        }
        let values = view.values();
        // The stored values line up with the first bars they cover.
        let aligned: Vec<f64> = (lo..n)
            .map(|i| values.get(i).copied().unwrap_or(f64::NAN))
            .collect();
        let last = values.last().copied().filter(|v| v.is_finite());
        let current = view.is_current(&version);
        match features.iter_mut().find(|f| f.spec == spec_text) {
            Some(f) => {
                f.current &= current;
                f.outputs.push((label.clone(), aligned));
                f.last.push((label, last));
            }
            None => features.push(Feature {
                spec: spec_text,
                on_price: spec.on_price_scale(),
                current,
                outputs: vec![(label.clone(), aligned)],
                last: vec![(label, last)],
            }),
        }
    }
    // Each spec's outputs in the spec's own order.
    for f in &mut features {
        if let Ok((labels, _)) = resolve_features(&f.spec) {
            let rank = |l: &str| labels.iter().position(|x| x == l).unwrap_or(usize::MAX);
            f.outputs.sort_by_key(|(l, _)| rank(l));
            f.last.sort_by_key(|(l, _)| rank(l));
        }
    }
    Ok(Some((shown_bars, features)))
}
