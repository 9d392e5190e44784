//! `kiln ingest`, `kiln export`, `kiln features`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use kiln::engine::metrics::ReadResult;
use kiln::market::{
    ExportFormat, ExportOptions, Format, IngestOptions, OnError, TsUnit, format_iso,
};
use kiln::store::Symbol;
use kiln::store::prelude::*;

use super::{Ctx, choice};

/// `kiln ingest`'s options.
#[derive(clap::Args)]
pub struct IngestArgs {
    /// Input files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Input format (default: from the extension, else the first bytes).
    #[arg(long, value_parser = choice::<Format>())]
    format: Option<Format>,
    /// Column renames, source=canonical, for example Ticker=symbol,Date=ts.
    #[arg(long, value_name = "FROM=TO,...")]
    map: Option<String>,
    /// Unit of integer timestamps (default: detected from the first value:
    /// below 1e11 seconds, then ms, us, ns).
    #[arg(long, value_parser = choice::<TsUnit>())]
    ts_unit: Option<TsUnit>,
    /// reject: any invalid row rejects the ingest; skip: invalid rows go to --report.
    #[arg(long, value_parser = choice::<OnError>(), default_value = "reject")]
    on_error: OnError,
    /// CSV file listing each skipped row (file, location, column, reason).
    #[arg(long)]
    report: Option<PathBuf>,
}

pub fn ingest(ctx: &Ctx, out: &mut dyn Write, a: IngestArgs) -> anyhow::Result<()> {
    if a.report.is_some() && a.on_error == OnError::Reject {
        anyhow::bail!("--report only applies with --on-error skip");
    }
    let opts = IngestOptions {
        format: a.format,
        map: a
            .map
            .as_deref()
            .map(kiln::market::parse_map)
            .transpose()?
            .unwrap_or_default(),
        ts_unit: a.ts_unit,
        on_error: a.on_error,
        report: a.report,
        ..IngestOptions::default()
    };
    let engine = ctx.engine()?;
    let bar = ctx.progress_bar("ingest");
    let files_n = a.files.len() as u64;
    let result = engine.ingest(&a.files, &opts, &mut |p| {
        // Whole files done, plus the fraction of this one, in 1/1000ths.
        let frac = (p.done.saturating_mul(1000))
            .checked_div(p.total)
            .map_or(0, |f| f.min(1000));
        bar.set_length(files_n * 1000);
        bar.set_position(p.file as u64 * 1000 + frac);
    });
    bar.finish_and_clear();
    let (s, refresh) = result?;
    if ctx.json {
        let v = serde_json::json!({
            "files": s.files, "rows": s.rows, "symbols": s.symbols, "changed": s.changed,
            "rejected": s.rejected, "refresh_jobs": refresh.len(), "seconds": s.seconds,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "ingested {} rows of {} symbols from {} file(s) in {:.2} s: {} symbols changed, {} rows rejected",
            s.rows, s.symbols, s.files, s.seconds, s.changed, s.rejected
        )?;
        if !refresh.is_empty() {
            writeln!(
                out,
                "queued {} refresh jobs for stored features (kiln run --until-idle)",
                refresh.len()
            )?;
        }
    }
    Ok(())
}

/// `kiln export`'s options.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_parser = choice::<ExportFormat>())]
    format: ExportFormat,
    /// Output file (written beside it first, then renamed into place).
    #[arg(long)]
    out: PathBuf,
    /// Symbols to export, comma-separated (default: all).
    #[arg(long, value_name = "A,B,...")]
    symbols: Option<String>,
    /// Feature series to export instead of bars, e.g. "rsi(14),macd(12,26,9)".
    #[arg(long)]
    features: Option<String>,
}

pub fn export(ctx: &Ctx, out: &mut dyn Write, a: ExportArgs) -> anyhow::Result<()> {
    let symbols = a.symbols.as_deref().map(super::symbols).transpose()?;
    let features = match a.features {
        Some(f) => kiln::features::spec::parse_list(&f)?,
        None => Vec::new(),
    };
    let engine = ctx.engine()?;
    let bar = ctx.progress_bar("export");
    let path = a.out;
    let summary = kiln::market::export(
        engine.store(),
        &path,
        &ExportOptions {
            format: a.format,
            symbols,
            features,
        },
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    );
    bar.finish_and_clear();
    let s = summary?;
    if ctx.json {
        let v = serde_json::json!({
            "out": path.display().to_string(), "rows": s.rows, "symbols": s.symbols,
            "columns": s.columns, "seconds": s.seconds,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "exported {} rows of {} symbols ({} value columns) to {} in {:.2} s",
            s.rows,
            s.symbols,
            s.columns.len(),
            path.display(),
            s.seconds
        )?;
    }
    Ok(())
}

/// How `kiln features` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FeaturesFormat {
    /// Aligned columns.
    Table,
    /// Comma-separated, with a header.
    Csv,
    /// One JSON object: {"symbol","columns","ts","values"}.
    Json,
}

/// `kiln features`' options.
#[derive(clap::Args)]
pub struct FeaturesArgs {
    /// The symbol.
    symbol: String,
    /// The feature, e.g. "rsi(14)" or "macd(12,26,9).signal".
    spec: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: FeaturesFormat,
    /// Only the last N bars.
    #[arg(long)]
    tail: Option<usize>,
}

pub fn features(ctx: &Ctx, out: &mut dyn Write, a: FeaturesArgs) -> anyhow::Result<()> {
    let symbol = Symbol::new(a.symbol.as_str())?;
    let spec = a.spec.as_str();
    // A label (`macd(12,26,9).signal`) or a spec (all its outputs).
    let (labels, _) = kiln::engine::resolve_features(spec)?;
    let engine = ctx.engine()?;
    let read = engine
        .read_features(&symbol, &labels)?
        .with_context(|| format!("{symbol} has no bars in this data directory"))?;
    let mut views = Vec::with_capacity(labels.len());
    for o in &read.outputs {
        let label = &o.label;
        let view = o.series.as_ref().with_context(|| {
            format!("{symbol} {label} is not computed; run: kiln submit --symbols {symbol} --features \"{spec}\" --wait")
        })?;
        if o.result == ReadResult::Stale {
            say!(
                "kiln: warning: {symbol} {label} was computed from older bars; kiln run --until-idle refreshes it"
            );
        }
        views.push(view);
    }
    let bars = &read.bars;
    let n = views
        .iter()
        .map(|v| v.values().len())
        .min()
        .unwrap_or(0)
        .min(bars.len());
    let start = a.tail.map_or(0, |t| n.saturating_sub(t));
    let ts = &bars.ts()[start..n];
    let value = |v: f64| {
        if v.is_nan() {
            String::new()
        } else {
            format!("{v}")
        }
    };
    let format = if ctx.json {
        FeaturesFormat::Json
    } else {
        a.format
    };
    match format {
        FeaturesFormat::Json => {
            let columns: Vec<Vec<Option<f64>>> = views
                .iter()
                .map(|v| {
                    v.values()[start..n]
                        .iter()
                        .map(|&x| (!x.is_nan()).then_some(x))
                        .collect()
                })
                .collect();
            let v = serde_json::json!({
                "symbol": symbol.as_str(),
                "columns": labels,
                "ts": ts.iter().map(|&t| format_iso(t)).collect::<Vec<_>>(),
                "values": columns,
            });
            writeln!(out, "{v}")?;
        }
        FeaturesFormat::Csv => {
            writeln!(
                out,
                "ts,{}",
                labels
                    .iter()
                    .map(|l| format!("\"{l}\""))
                    .collect::<Vec<_>>()
                    .join(",")
            )?;
            for (k, &t) in ts.iter().enumerate() {
                let row: Vec<String> = views.iter().map(|v| value(v.values()[start + k])).collect();
                writeln!(out, "{},{}", format_iso(t), row.join(","))?;
            }
        }
        FeaturesFormat::Table => {
            write!(out, "{:<22}", "ts")?;
            for l in &labels {
                write!(out, " {l:>20}")?;
            }
            writeln!(out)?;
            for (k, &t) in ts.iter().enumerate() {
                write!(out, "{:<22}", format_iso(t))?;
                for v in &views {
                    write!(out, " {:>20}", value(v.values()[start + k]))?;
                }
                writeln!(out)?;
            }
        }
    }
    Ok(())
}
