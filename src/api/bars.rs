//! Market data over HTTP. In: `POST /v1/bars`, a CSV (plain or gzip), Arrow
//! IPC or Parquet body ingested like `kiln ingest`, all or nothing, at most
//! `bars_uploads_max` at once and each within `bars_body_bytes_max` and
//! `bars_body_seconds_max`. Out: `GET /v1/symbols` (the symbols with bars)
//! and `GET /v1/bars/{symbol}` (a symbol's bars as JSON).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use kiln_core::prelude::*;
use kiln_core::{Backend, Symbol};
use serde::Deserialize;

use super::features::ARROW_STREAM;
use super::features::{time_bound, window};
use super::reply::{Reply, blocking, durable, json, symbol};
use super::{ApiError, App, VALUES_MAX};
use crate::config::ServeConfig;
use crate::engine::SymbolSummary;
use crate::market::{Format, IngestOptions, parse_map};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BarsQuery {
    map: Option<String>,
}

/// `POST /v1/bars`: a CSV (plain or gzip) or Arrow IPC body, ingested like
/// `kiln ingest` (all or nothing); stored features of changed symbols get
/// refresh jobs.
pub async fn post_bars<B: Backend>(
    State(app): State<Arc<App<B>>>,
    query: Result<Query<BarsQuery>, QueryRejection>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Reply {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    // Held from before the body is read until the ingest ends (even when
    // the client leaves), so at most `bars_uploads_max` bodies are in memory.
    let permit = app.upload_permit()?;
    let body = read_upload(body, &app.config).await?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the body is empty; send CSV or Arrow IPC bars",
        ));
    }
    let map = match q.map.as_deref() {
        Some(m) => parse_map(m).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => Vec::new(),
    };
    // The media type names the format; without one, the first bytes do,
    // and text is CSV.
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let format = match media.as_deref() {
        Some("text/csv" | "application/csv" | "application/gzip") => Format::Csv,
        Some(ARROW_STREAM) => Format::ArrowStream,
        Some("application/vnd.apache.arrow.file") => Format::Arrow,
        Some("application/vnd.apache.parquet" | "application/x-parquet") => Format::Parquet,
        None | Some("application/octet-stream") => Format::from_magic(&body).unwrap_or(Format::Csv),
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "Content-Type {other:?}: send text/csv, application/gzip, {ARROW_STREAM}, \
                     application/vnd.apache.arrow.file or application/vnd.apache.parquet"
                ),
            ));
        }
    };
    let engine = app.engine.clone();
    let (summary, refreshes) = blocking(move || {
        let _permit = permit;
        // The ingest reads files: the body goes to a private temporary file
        // (in the system's temporary directory: the data directory is the
        // store's alone), named so errors say "request body".
        let dir = tempfile::Builder::new()
            .prefix(".upload-")
            .tempdir()
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store", e.to_string()))?;
        let path = dir.path().join("request body");
        std::fs::write(&path, &body)
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store", e.to_string()))?;
        let opts = IngestOptions {
            format: Some(format),
            map,
            ..IngestOptions::default()
        };
        let shown = path.display().to_string();
        engine.ingest(&[path], &opts, &mut |_| {}).map_err(|e| {
            let mut e = ApiError::from(e);
            e.detail = e.detail.replace(&shown, "request body");
            e
        })
    })
    .await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "rows": summary.rows,
            "symbols": summary.symbols,
            "changed": summary.changed,
            "refresh_jobs": refreshes.len(),
            "seconds": summary.seconds,
        }),
    ))
}

/// A `POST /v1/bars` body, whole: 413 past `bars_body_bytes_max`, 408 when
/// it takes longer than `bars_body_seconds_max` to arrive.
async fn read_upload(body: axum::body::Body, config: &ServeConfig) -> Result<Vec<u8>, ApiError> {
    use futures_util::StreamExt;
    let max = config.bars_body_bytes_max;
    let read = async {
        let mut stream = body.into_data_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::bad_request(format!("the body could not be read: {e}")))?;
            if bytes.len() + chunk.len() > max {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the body is over {max} bytes (bars_body_bytes_max)"),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    };
    let seconds = config.bars_body_seconds_max;
    tokio::time::timeout(Duration::from_secs(seconds), read)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the body took longer than {seconds} s to arrive (bars_body_seconds_max)"),
            ))
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymbolsQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// Most symbols one `GET /v1/symbols` answers.
pub(crate) const SYMBOLS_PAGE_MAX: usize = 5_000;

/// A symbol as `GET /v1/symbols` shows it.
pub(crate) fn summary_json(s: &SymbolSummary) -> serde_json::Value {
    serde_json::json!({
        "symbol": s.symbol.as_str(), "bars": s.version.bars,
        "first_ts": s.version.first_ts, "last_ts": s.version.last_ts,
        "data_version": format!("{:016x}", s.version.hash),
        "outputs": s.outputs, "stale": s.stale,
    })
}

/// `GET /v1/symbols?after=&limit=`: the symbols with bars, in name order
/// (at most `limit`, 500 by default; the next page is `after=` the last),
/// each with its bars, data version and stored outputs (how many stale).
pub async fn list_symbols<B: Backend>(
    State(app): State<Arc<App<B>>>,
    query: Result<Query<SymbolsQuery>, QueryRejection>,
) -> Reply {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let after = q.after.as_deref().map(symbol).transpose()?;
    let limit = q.limit.unwrap_or(500).min(SYMBOLS_PAGE_MAX);
    durable(app.engine.store()).await?;
    let engine = app.engine.clone();
    let rows = blocking(move || Ok(engine.symbol_summaries(after.as_ref(), limit)?)).await?;
    let v: Vec<_> = rows.iter().map(summary_json).collect();
    Ok(json(StatusCode::OK, &serde_json::Value::Array(v)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BarsReadQuery {
    tail: Option<usize>,
    from: Option<String>,
    to: Option<String>,
}

/// `GET /v1/bars/{symbol}?tail=&from=&to=`: the symbol's bars as JSON
/// columns `{symbol, ts: [epoch ns], open, high, low, close, volume}`.
pub async fn get_bars<B: Backend>(
    State(app): State<Arc<App<B>>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<BarsReadQuery>, QueryRejection>,
) -> Reply {
    let Path(sym) = path.map_err(ApiError::rejection)?;
    let symbol = symbol(&sym)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let from = time_bound("from", q.from.as_deref())?;
    let to = time_bound("to", q.to.as_deref())?;
    durable(app.engine.store()).await?;
    let engine = app.engine.clone();
    let body = blocking(move || {
        let Some(bars) = engine.store().bars(&symbol, ..)? else {
            return Err(ApiError::not_found(format!("no bars for {symbol}")));
        };
        let (lo, hi) = window(bars.ts(), from, to, q.tail);
        if (hi - lo).saturating_mul(6) > VALUES_MAX {
            return Err(ApiError::bad_request(format!(
                "{} bars × 6 columns is over {VALUES_MAX} values; ask for a tail or a from/to window",
                hi - lo
            )));
        }
        Ok(bars_json(&symbol, &bars, lo..hi))
    })
    .await?;
    Ok(json(StatusCode::OK, &body))
}

/// Bars `rows` of `bars` as JSON columns.
pub(crate) fn bars_json(
    symbol: &Symbol,
    bars: &impl BarsRead,
    rows: std::ops::Range<usize>,
) -> serde_json::Value {
    let column = |c: &[f64]| -> serde_json::Value {
        c[rows.clone()]
            .iter()
            .map(|v| serde_json::Number::from_f64(*v).map_or(serde_json::Value::Null, Into::into))
            .collect()
    };
    serde_json::json!({
        "symbol": symbol.as_str(),
        "ts": bars.ts()[rows.clone()],
        "open": column(bars.open()), "high": column(bars.high()), "low": column(bars.low()),
        "close": column(bars.close()), "volume": column(bars.volume()),
    })
}
