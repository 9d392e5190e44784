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
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::features::ARROW_STREAM;
use super::features::{time_bound, window};
use super::reply::{Reply, blocking, durable, json, symbol};
use super::schema::{SymbolName, TimeText, Whole};
use super::{ApiError, App, VALUES_MAX};
use crate::config::ServeConfig;
use crate::engine::SymbolSummary;
use crate::market::{Format, IngestOptions, parse_map};

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BarsQuery {
    /// Columns to rename, `FROM=TO,…`, TO one of symbol, ts, open, high,
    /// low, close, volume, vwap (format kiln-column-map).
    #[param(format = "kiln-column-map")]
    map: Option<String>,
}

/// What an ingest did.
#[derive(Serialize, ToSchema)]
pub(crate) struct Ingested {
    /// Rows read.
    rows: u64,
    /// Symbols in the body.
    symbols: usize,
    /// Symbols whose stored bars changed.
    changed: usize,
    /// Jobs queued to refresh the stored features of those.
    refresh_jobs: usize,
    /// How long the ingest took.
    seconds: f64,
}

/// `POST /v1/bars`: a CSV (plain or gzip) or Arrow IPC body, ingested like
/// `kiln ingest` (all or nothing); stored features of changed symbols get
/// refresh jobs.
#[utoipa::path(post, path = "/v1/bars", tag = "bars", params(BarsQuery),
    request_body(description = "Long-format bars, symbol, ts, open, high, low, close, volume[, vwap] \
        (names case-insensitive, extra columns ignored), as CSV (format kiln-bars-csv), gzip CSV, \
        Arrow IPC (stream or file) or Parquet; all or nothing",
        content(
            (String = "text/csv"),
            (Vec<u8> = "application/gzip"),
            (Vec<u8> = "application/vnd.apache.arrow.stream"),
            (Vec<u8> = "application/vnd.apache.arrow.file"),
            (Vec<u8> = "application/vnd.apache.parquet"),
        )),
    responses(
        (status = 200, description = "Ingested", body = Ingested),
        (status = 400, description = "Invalid bars (the error names the row and column), or a bad map", body = ErrorBody),
        (status = 403, description = "Uploads are off here (bars_uploads_max = 0)", body = ErrorBody),
        (status = 408, description = "The body took longer than bars_body_seconds_max to arrive", body = ErrorBody),
        (status = 413, description = "A body over bars_body_bytes_max", body = ErrorBody),
        (status = 415, description = "A Content-Type that is not CSV, gzip, Arrow IPC or Parquet", body = ErrorBody),
        (status = 429, description = "bars_uploads_max uploads are in progress (Retry-After)", body = ErrorBody),
    ))]
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
        &Ingested {
            rows: summary.rows,
            symbols: summary.symbols,
            changed: summary.changed,
            refresh_jobs: refreshes.len(),
            seconds: summary.seconds,
        },
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

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SymbolsQuery {
    /// Symbols after this one (the last of the previous page).
    #[param(value_type = Option<SymbolName>)]
    after: Option<String>,
    /// At most this many (500 by default, 5,000 at most).
    #[param(value_type = Option<Whole>)]
    limit: Option<usize>,
}

/// Most symbols one `GET /v1/symbols` answers.
pub(crate) const SYMBOLS_PAGE_MAX: usize = 5_000;

/// A symbol with bars.
#[derive(Serialize, ToSchema)]
#[schema(as = SymbolSummary)]
pub(crate) struct SymbolRow {
    #[schema(value_type = SymbolName)]
    symbol: String,
    bars: u64,
    /// The first bar's time, epoch nanoseconds.
    first_ts: i64,
    /// The last bar's time, epoch nanoseconds.
    last_ts: i64,
    /// The version of its bars (a hash, 16 hex digits).
    data_version: String,
    /// Feature outputs stored for it.
    outputs: usize,
    /// Of those, the ones computed from other bars than stored now.
    stale: usize,
}

impl SymbolRow {
    fn of(s: &SymbolSummary) -> SymbolRow {
        SymbolRow {
            symbol: s.symbol.as_str().to_owned(),
            bars: s.version.bars,
            first_ts: s.version.first_ts,
            last_ts: s.version.last_ts,
            data_version: format!("{:016x}", s.version.hash),
            outputs: s.outputs,
            stale: s.stale,
        }
    }
}

/// `GET /v1/symbols?after=&limit=`: the symbols with bars, in name order
/// (at most `limit`, 500 by default; the next page is `after=` the last),
/// each with its bars, data version and stored outputs (how many stale).
#[utoipa::path(get, path = "/v1/symbols", tag = "bars", params(SymbolsQuery),
    responses(
        (status = 200, description = "The symbols in name order", body = Vec<SymbolRow>),
        (status = 400, description = "A bad after or limit", body = ErrorBody),
    ))]
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
    let v: Vec<_> = rows.iter().map(SymbolRow::of).collect();
    Ok(json(StatusCode::OK, &v))
}

/// A window of a series or of bars: those from `from` to `to` (both
/// inclusive), then only the last `tail` of them.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WindowQuery {
    /// Only the last this many.
    #[param(value_type = Option<Whole>)]
    pub(crate) tail: Option<usize>,
    #[param(value_type = Option<TimeText>)]
    pub(crate) from: Option<String>,
    #[param(value_type = Option<TimeText>)]
    pub(crate) to: Option<String>,
}

/// A symbol's bars as columns.
#[derive(Serialize, ToSchema)]
pub(crate) struct BarColumns {
    #[schema(value_type = SymbolName)]
    symbol: String,
    /// Times, epoch nanoseconds.
    ts: Vec<i64>,
    open: Vec<f64>,
    high: Vec<f64>,
    low: Vec<f64>,
    close: Vec<f64>,
    volume: Vec<f64>,
}

/// `GET /v1/bars/{symbol}?tail=&from=&to=`: the symbol's bars as JSON
/// columns `{symbol, ts: [epoch ns], open, high, low, close, volume}`.
#[utoipa::path(get, path = "/v1/bars/{symbol}", tag = "bars",
    params(("symbol" = SymbolName, Path, description = "The symbol"), WindowQuery),
    responses(
        (status = 200, description = "The bars", body = BarColumns),
        (status = 400, description = "A bad symbol, time or tail, or too many values", body = ErrorBody),
        (status = 404, description = "No bars for the symbol", body = ErrorBody),
    ))]
pub async fn get_bars<B: Backend>(
    State(app): State<Arc<App<B>>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<WindowQuery>, QueryRejection>,
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

/// Bars `rows` of `bars` as columns (stored bars are finite: ingest
/// refuses NaN and infinity).
pub(crate) fn bars_json(
    symbol: &Symbol,
    bars: &impl BarsRead,
    rows: std::ops::Range<usize>,
) -> BarColumns {
    let column = |c: &[f64]| c[rows.clone()].to_vec();
    BarColumns {
        symbol: symbol.as_str().to_owned(),
        ts: bars.ts()[rows.clone()].to_vec(),
        open: column(bars.open()),
        high: column(bars.high()),
        low: column(bars.low()),
        close: column(bars.close()),
        volume: column(bars.volume()),
    }
}
