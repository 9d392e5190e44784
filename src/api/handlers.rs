//! The route handlers. Reads run in place on tokio's threads (the series
//! are memory-mapped and archived; a read is microseconds); durable writes
//! (submissions, cancels, ingests) run on tokio's blocking pool.

use kiln_store::prelude::*;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::Stream;
use kiln_store::{CancelOutcome, JobQueue, JobState, Priority, ResultStore, SeriesView, Symbol};
use serde::Deserialize;

use super::cache::Answer;
use super::{ApiError, App, ClientKey, OUTPUTS_MAX, VALUES_MAX};
use crate::engine::feed::event_json;
use crate::engine::guard::BreakerState;
use crate::engine::metrics::ReadResult;
use crate::engine::{STATE_PREFIX, job_json, resolve_features};
use crate::market::{Format, IngestOptions, format_iso, parse_map};

type Reply = Result<Response, ApiError>;

/// The media type of an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

fn json(status: StatusCode, v: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn symbol(s: &str) -> Result<Symbol, ApiError> {
    Symbol::new(s).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Runs a blocking engine call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
}

// ---- submissions and jobs -------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    symbols: Vec<String>,
    features: Features,
    #[serde(default)]
    priority: Option<String>,
}

/// `"rsi(14),macd(12,26,9)"` or `["rsi(14)", "macd(12,26,9)"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Features {
    List(String),
    Array(Vec<String>),
}

fn priority(p: Option<&str>) -> Result<Priority, ApiError> {
    match p {
        None | Some("normal") => Ok(Priority::Normal),
        Some("high") => Ok(Priority::High),
        Some("low") => Ok(Priority::Low),
        Some(other) => Err(ApiError::bad_request(format!(
            "priority {other:?}: want \"high\", \"normal\" or \"low\""
        ))),
    }
}

/// `POST /v1/compute/batch`.
pub async fn compute_batch(
    State(app): State<Arc<App>>,
    Extension(ClientKey(client)): Extension<ClientKey>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let body = body.map_err(ApiError::rejection)?;
    let req: BatchRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a batch request: {e}")))?;
    let max = app.config.batch_symbols_max;
    if req.symbols.len() > max {
        return Err(ApiError::bad_request(format!(
            "{} symbols; at most batch_symbols_max = {max} per request",
            req.symbols.len()
        )));
    }
    let symbols = req
        .symbols
        .iter()
        .map(|s| symbol(s))
        .collect::<Result<Vec<_>, _>>()?;
    let text = match req.features {
        Features::List(s) => s,
        Features::Array(a) => a.join(","),
    };
    let (labels, specs) =
        resolve_features(&text).map_err(|e| ApiError::bad_request(e.to_string()))?;
    outputs_within_bound(labels.len())?;
    let priority = priority(req.priority.as_deref())?;
    let jobs = app
        .engine
        .submit_async(client, symbols, specs, priority)
        .await?;
    let ids: Vec<u64> = jobs.iter().map(|j| j.id()).collect();
    let stats = app.engine.store().stats()?;
    let ahead = stats.count(JobState::Queued) + stats.count(JobState::Running);
    let estimate = app.jobs_per_s().map(|r| ahead as f64 / r);
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({"job_ids": ids, "estimated_completion_s": estimate}),
    ))
}

fn outputs_within_bound(n: usize) -> Result<(), ApiError> {
    if n > OUTPUTS_MAX {
        return Err(ApiError::bad_request(format!(
            "{n} feature outputs; at most {OUTPUTS_MAX} per request"
        )));
    }
    Ok(())
}

fn job_id(path: Result<Path<String>, PathRejection>) -> Result<u64, ApiError> {
    let Path(id) = path.map_err(ApiError::rejection)?;
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("job id {id:?} is not a number")))
}

/// `GET /v1/jobs/{id}`.
pub async fn get_job(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let id = job_id(path)?;
    match app.engine.store().job(id)? {
        Some(j) => Ok(json(StatusCode::OK, &job_json(&j))),
        None => Err(ApiError::not_found(format!(
            "no job {id} (finished jobs are kept up to history_max)"
        ))),
    }
}

/// `DELETE /v1/jobs/{id}`: cancels a queued job (or one awaiting a retry).
pub async fn cancel_job(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let id = job_id(path)?;
    let engine = app.engine.clone();
    let outcome = blocking(move || {
        if engine.store().job(id)?.is_none() {
            return Err(ApiError::not_found(format!("no job {id}")));
        }
        Ok(engine.store().cancel(id)?)
    })
    .await?;
    match outcome {
        CancelOutcome::Cancelled => Ok(json(
            StatusCode::OK,
            &serde_json::json!({"id": id, "state": "cancelled"}),
        )),
        CancelOutcome::NotCancellable(state) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_cancellable",
            format!(
                "job {id} is {}; only queued jobs can be cancelled",
                state.as_str()
            ),
        )),
    }
}

// ---- features -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureQuery {
    tail: Option<usize>,
    from: Option<String>,
    to: Option<String>,
}

fn time_bound(name: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    v.map(|s| {
        crate::market::parse_iso(s).map_err(|e| ApiError::bad_request(format!("{name}={s:?}: {e}")))
    })
    .transpose()
}

/// `GET /v1/features/{symbol}/{spec}`: the series (JSON, or an Arrow IPC
/// stream on `Accept: application/vnd.apache.arrow.stream`); 202 with a job
/// when it is missing or stale.
pub async fn get_feature(
    State(app): State<Arc<App>>,
    Extension(ClientKey(client)): Extension<ClientKey>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
    query: Result<Query<FeatureQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Reply {
    let Path((sym, spec)) = path.map_err(ApiError::rejection)?;
    let symbol = symbol(&sym)?;
    let store = app.engine.store();
    let Some(version) = store.data_version(&symbol)? else {
        return Err(ApiError::not_found(format!("no bars for {symbol}")));
    };
    let arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains(ARROW_STREAM));
    let key = format!(
        "{symbol}\0{spec}\0{}\0{arrow}",
        raw.as_deref().unwrap_or("")
    );
    if let Some(kept) = app.reads.get(&key, &version) {
        for _ in 0..kept.outputs {
            app.engine.count_read(ReadResult::Hit);
        }
        return Ok(([(header::CONTENT_TYPE, kept.content_type)], kept.body).into_response());
    }
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (labels, specs) =
        resolve_features(&spec).map_err(|e| ApiError::bad_request(e.to_string()))?;
    outputs_within_bound(labels.len())?;
    let from = time_bound("from", q.from.as_deref())?;
    let to = time_bound("to", q.to.as_deref())?;
    let Some(bars) = store.bars(&symbol, ..)? else {
        return Err(ApiError::not_found(format!("no bars for {symbol}")));
    };
    // Every output must come from the bars of `version`; bars that changed
    // since it was read make the request stale like new bars would.
    let mut views = Vec::with_capacity(labels.len());
    let mut ready = bars.version() == version;
    for label in &labels {
        let (view, read) = app.engine.read_feature_of(&symbol, label, Some(&version))?;
        ready &= read == ReadResult::Hit;
        views.extend(view);
    }
    if !ready {
        let jobs = app
            .engine
            .submit_async(client, vec![symbol.clone()], specs, Priority::High)
            .await?;
        let id = jobs.first().map(|j| j.id()).ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store",
                "no job was queued",
            )
        })?;
        let mut r = json(
            StatusCode::ACCEPTED,
            &serde_json::json!({
                "job_id": id,
                "detail": format!("{symbol} {spec} is missing or stale; computing it now"),
            }),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(1));
        if let Ok(v) = HeaderValue::try_from(format!("/v1/jobs/{id}")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return Ok(r);
    }
    // The bars the series cover, cut to [from, to], then to the last `tail`.
    let ts = bars.ts();
    let n = views
        .iter()
        .map(|v| v.values().len())
        .min()
        .unwrap_or(0)
        .min(ts.len());
    let lo = from.map_or(0, |f| ts[..n].partition_point(|&t| t < f));
    let hi = to
        .map_or(n, |t| ts[..n].partition_point(|&x| x <= t))
        .max(lo);
    let lo = q.tail.map_or(lo, |t| hi.saturating_sub(t).max(lo));
    if (hi - lo).saturating_mul(labels.len()) > VALUES_MAX {
        return Err(ApiError::bad_request(format!(
            "{} rows × {} outputs is over {VALUES_MAX} values; ask for a tail or a from/to window",
            hi - lo,
            labels.len()
        )));
    }
    let (body, content_type) = if arrow {
        let body = arrow_stream(&labels, &views, &ts[lo..hi], lo)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?;
        (Bytes::from(body), ARROW_STREAM)
    } else {
        let body = series_json(&symbol, &spec, &labels, &views, &ts[lo..hi], lo);
        (Bytes::from(body), "application/json")
    };
    app.reads.put(
        key,
        Answer {
            version,
            body: body.clone(),
            content_type,
            outputs: labels.len(),
        },
    );
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// The series as JSON, written straight from the archived values:
/// `{"symbol", "feature", "ts": [epoch ns], "values": {label: [number or null]}}`.
fn series_json(
    symbol: &Symbol,
    spec: &str,
    labels: &[String],
    views: &[SeriesView],
    ts: &[i64],
    start: usize,
) -> String {
    let mut s = String::with_capacity(96 + ts.len() * (21 + 24 * labels.len()));
    let quoted = |v: &str| serde_json::Value::from(v).to_string();
    let _ = write!(
        s,
        "{{\"symbol\":{},\"feature\":{},\"ts\":[",
        quoted(symbol.as_str()),
        quoted(spec)
    );
    let mut int = itoa::Buffer::new();
    let mut float = ryu::Buffer::new();
    for (i, t) in ts.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(int.format(*t));
    }
    s.push_str("],\"values\":{");
    for (j, (label, view)) in labels.iter().zip(views).enumerate() {
        if j > 0 {
            s.push(',');
        }
        let _ = write!(s, "{}:[", quoted(label));
        for (i, v) in view.values()[start..start + ts.len()].iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            if v.is_finite() {
                s.push_str(float.format_finite(*v));
            } else {
                s.push_str("null");
            }
        }
        s.push(']');
    }
    s.push_str("}}");
    s
}

/// The series as an Arrow IPC stream: `ts` (timestamp ns, UTC), then one
/// float64 column per output.
fn arrow_stream(
    labels: &[String],
    views: &[SeriesView],
    ts: &[i64],
    start: usize,
) -> Result<Vec<u8>, String> {
    use arrow_array::{ArrayRef, Float64Array, RecordBatch, TimestampNanosecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    let mut fields = vec![Field::new(
        "ts",
        DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        false,
    )];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(
        TimestampNanosecondArray::from(ts.to_vec()).with_timezone("UTC"),
    )];
    for (label, view) in labels.iter().zip(views) {
        fields.push(Field::new(label, DataType::Float64, false));
        columns.push(Arc::new(Float64Array::from(
            view.values()[start..start + ts.len()].to_vec(),
        )));
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut w =
        arrow_ipc::writer::StreamWriter::try_new(&mut out, &schema).map_err(|e| e.to_string())?;
    w.write(&batch).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    drop(w);
    Ok(out)
}

/// `GET /v1/features/{symbol}`: the latest value of every stored output.
pub async fn latest_features(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let Path(sym) = path.map_err(ApiError::rejection)?;
    let symbol = symbol(&sym)?;
    let store = app.engine.store();
    let Some(version) = store.data_version(&symbol)? else {
        return Err(ApiError::not_found(format!("no bars for {symbol}")));
    };
    let mut features = serde_json::Map::new();
    for key in store.series_keys(&symbol)? {
        if key.feature.starts_with(STATE_PREFIX) {
            continue;
        }
        let Some(view) = store.series(&key)? else {
            continue;
        };
        let last = view.values().last().copied().filter(|v| v.is_finite());
        features.insert(
            key.feature.clone(),
            serde_json::json!({
                "value": last,
                "ts": format_iso(view.last_ts()),
                "current": view.is_current(&version),
            }),
        );
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "symbol": symbol.as_str(),
            "bars": version.bars,
            "last_ts": format_iso(version.last_ts),
            "features": features,
        }),
    ))
}

// ---- bars ----------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BarsQuery {
    map: Option<String>,
}

/// `POST /v1/bars`: a CSV (plain or gzip) or Arrow IPC body, ingested like
/// `kiln ingest` (all or nothing); stored features of changed symbols get
/// refresh jobs.
pub async fn post_bars(
    State(app): State<Arc<App>>,
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
        // in the data directory, named so errors say "request body".
        let dir = tempfile::Builder::new()
            .prefix(".upload-")
            .tempdir_in(engine.store().dir())
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
async fn read_upload(
    body: axum::body::Body,
    config: &super::ServeConfig,
) -> Result<Vec<u8>, ApiError> {
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

// ---- events, health, metrics ----------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    after: Option<u64>,
}

/// How often an event stream looks for news.
const EVENTS_POLL: Duration = Duration::from_millis(100);

/// `GET /v1/events`: server-sent events from the durable log, each with its
/// sequence number as `id`, resumable with `Last-Event-ID` (or `?after=`).
pub async fn events(
    State(app): State<Arc<App>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let resume = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Last-Event-ID is not a sequence number"))?,
        ),
        None => None,
    };
    let after = resume.or(q.after).unwrap_or(0);
    let stream = futures_util::stream::unfold(
        (app, after, std::collections::VecDeque::new()),
        |(app, mut after, mut pending)| async move {
            loop {
                if let Some(e) = pending.pop_front() {
                    return Some((Ok(e), (app, after, pending)));
                }
                if app.closing.load(std::sync::atomic::Ordering::SeqCst) {
                    return None;
                }
                let engine = &app.engine;
                let read = {
                    let engine = engine.clone();
                    tokio::task::spawn_blocking(move || engine.store().events(after, 256)).await
                };
                match read {
                    Ok(Ok(events)) if !events.is_empty() => {
                        for e in &events {
                            after = e.seq;
                            pending.push_back(
                                SseEvent::default()
                                    .id(e.seq.to_string())
                                    .data(event_json(e).to_string()),
                            );
                        }
                    }
                    Ok(Ok(_)) => tokio::time::sleep(EVENTS_POLL).await,
                    // The store is closing or failing: end the stream; the
                    // client resumes from its last id.
                    _ => return None,
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// `GET /health`: `healthy`, `degraded` (breaker not closed, queue past its
/// bound) or `unhealthy` (store poisoned, dispatcher stopped; status 503).
pub async fn health(State(app): State<Arc<App>>) -> Response {
    let engine = &app.engine;
    let poisoned = engine.store().poisoned();
    let breaker = engine.runtime_stats().breaker;
    let stats = engine.store().stats().unwrap_or_default();
    let depth: u64 = Priority::ALL.iter().map(|&p| stats.depth(p)).sum();
    let limit = engine.config().admit_depth_max;
    let dispatcher = app.runner_alive();
    let unhealthy = poisoned.is_some() || dispatcher == Some(false);
    let degraded = breaker != BreakerState::Closed || depth > limit;
    let status = if unhealthy {
        "unhealthy"
    } else if degraded {
        "degraded"
    } else {
        "healthy"
    };
    let body = serde_json::json!({
        "status": status,
        "checks": {
            "store": {"ok": poisoned.is_none(), "poisoned": poisoned},
            "breaker": {"ok": breaker == BreakerState::Closed, "state": breaker.as_str()},
            "queue": {"ok": depth <= limit, "depth": depth, "limit": limit},
            "dispatcher": {"ok": dispatcher != Some(false), "running": dispatcher},
        },
    });
    let code = if unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(code, &body)
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut text = app.engine.metrics();
    let _ = write!(
        text,
        "# HELP kiln_bar_uploads_in_progress POST /v1/bars bodies being read or ingested\n\
         # TYPE kiln_bar_uploads_in_progress gauge\n\
         kiln_bar_uploads_in_progress {}\n",
        app.uploads_in_progress()
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    json(StatusCode::OK, &super::openapi::document())
}

/// Any other path.
pub async fn no_route() -> ApiError {
    ApiError::not_found("no such route; GET /openapi.json lists them")
}

/// A known path with another method.
pub async fn no_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; GET /openapi.json lists them",
    )
}
