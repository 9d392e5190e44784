//! Feature reads: `GET /v1/features/{symbol}/{spec}` (a series, as JSON or
//! an Arrow IPC stream; 202 and a high-priority job when it is missing or
//! stale) and `GET /v1/features/{symbol}` (the latest value of every stored
//! output). Whether a series is ready is the engine's judgement
//! ([`Engine::read_features`](crate::engine::Engine::read_features)); this
//! module cuts and formats what it read, and keeps answers by request and
//! data version (`cache`).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use kiln_core::prelude::*;
use kiln_core::{Priority, Symbol};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::bars::WindowQuery;
use super::cache::Answer;
use super::error::ErrorBody;
use super::jobs::outputs_within_bound;
use super::reply::{Reply, durable, json, symbol};
use super::schema::{FeatureList, FeatureSpecText, SymbolName, TimeValue};
use super::{ApiError, App, ClientKey, VALUES_MAX};
use crate::engine::metrics::ReadResult;
use crate::engine::resolve_features;
use crate::market::format_iso;

/// The media type of an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// The rows of `ts` in [`from`, `to`], then only the last `tail` of them.
pub(crate) fn window(
    ts: &[i64],
    from: Option<i64>,
    to: Option<i64>,
    tail: Option<usize>,
) -> (usize, usize) {
    let lo = from.map_or(0, |f| ts.partition_point(|&t| t < f));
    let hi = to
        .map_or(ts.len(), |t| ts.partition_point(|&x| x <= t))
        .max(lo);
    let lo = tail.map_or(lo, |t| hi.saturating_sub(t).max(lo));
    (lo, hi)
}

pub(crate) fn time_bound(name: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    v.map(|s| {
        crate::market::parse_iso(s).map_err(|e| ApiError::bad_request(format!("{name}={s:?}: {e}")))
    })
    .transpose()
}

/// A stored series, as [`series_json`] writes it (this type only
/// documents it).
#[derive(ToSchema)]
#[cfg_attr(
    test,
    derive(Deserialize, Debug, PartialEq),
    serde(deny_unknown_fields)
)]
#[allow(dead_code)]
pub(crate) struct Series {
    #[schema(value_type = SymbolName)]
    symbol: String,
    /// The spec as asked for.
    feature: String,
    /// Times, epoch nanoseconds.
    ts: Vec<i64>,
    /// One column per output label; null during the warm-up.
    values: std::collections::BTreeMap<String, Vec<Option<f64>>>,
}

/// A series being computed.
#[derive(Serialize, ToSchema)]
pub(crate) struct Computing {
    /// The high-priority job computing it (also in `Location`).
    job_id: u64,
    detail: String,
}

/// `GET /v1/features/{symbol}/{spec}`: the series (JSON, or an Arrow IPC
/// stream on `Accept: application/vnd.apache.arrow.stream`); 202 with a job
/// when it is missing or stale.
#[utoipa::path(get, path = "/v1/features/{symbol}/{spec}", tag = "features",
    params(
        ("symbol" = SymbolName, Path, description = "The symbol"),
        ("spec" = FeatureSpecText, Path, description = "A feature spec, or one output of one (macd(12,26,9).signal)"),
        WindowQuery,
    ),
    responses(
        (status = 200, description = "The series; an Arrow IPC stream (ts, one float64 column per output) \
            for Accept: application/vnd.apache.arrow.stream",
            content((Series = "application/json"), (Vec<u8> = "application/vnd.apache.arrow.stream"))),
        (status = 202, description = "Missing or stale: a high-priority job computes it now (Location names it, Retry-After)", body = Computing),
        (status = 400, description = "A bad symbol, spec, time or tail, or too many values", body = ErrorBody),
        (status = 404, description = "No bars for the symbol", body = ErrorBody),
        (status = 429, description = "Admission refused the job that would compute it (Retry-After)", body = ErrorBody),
    ))]
pub async fn get_feature<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Extension(ClientKey(client)): Extension<ClientKey>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
    query: Result<Query<WindowQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Reply {
    let Path((sym, spec)) = path.map_err(ApiError::rejection)?;
    let symbol = symbol(&sym)?;
    durable(app.engine.store()).await?;
    let Some(version) = app.engine.store().data_version(&symbol)? else {
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
    let Some(read) = app.engine.read_features(&symbol, &labels)? else {
        return Err(ApiError::not_found(format!("no bars for {symbol}")));
    };
    if !read.ready() {
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
            &Computing {
                job_id: id,
                detail: format!("{symbol} {spec} is missing or stale; computing it now"),
            },
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(1));
        if let Ok(v) = HeaderValue::try_from(format!("/v1/jobs/{id}")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return Ok(r);
    }
    let views: Vec<&B::SeriesView> = read
        .outputs
        .iter()
        .filter_map(|o| o.series.as_ref())
        .collect();
    // The bars the series cover, cut to [from, to], then to the last `tail`.
    let ts = read.bars.ts();
    let n = views
        .iter()
        .map(|v| v.values().len())
        .min()
        .unwrap_or(0)
        .min(ts.len());
    let (lo, hi) = window(&ts[..n], from, to, q.tail);
    if (hi - lo).saturating_mul(labels.len()) > VALUES_MAX {
        return Err(ApiError::bad_request(format!(
            "{} rows × {} outputs is over {VALUES_MAX} values; ask for a tail or a from/to window",
            hi - lo,
            labels.len()
        )));
    }
    let (body, content_type) = if arrow {
        let body = arrow_stream(&labels, &views, &ts[lo..hi], lo).map_err(ApiError::internal)?;
        (Bytes::from(body), ARROW_STREAM)
    } else {
        let body = series_json(&symbol, &spec, &labels, &views, &ts[lo..hi], lo);
        (Bytes::from(body), "application/json")
    };
    app.reads.put(
        key,
        Answer {
            version: read.bars.version(),
            body: body.clone(),
            content_type,
            outputs: labels.len(),
        },
    );
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// The series as JSON, written straight from the stored values:
/// `{"symbol", "feature", "ts": [epoch ns], "values": {label: [number or null]}}`.
fn series_json(
    symbol: &Symbol,
    spec: &str,
    labels: &[String],
    views: &[&impl SeriesRead],
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
    views: &[&impl SeriesRead],
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

/// The latest value of one stored output.
#[derive(Serialize, ToSchema)]
pub(crate) struct LatestValue {
    /// Null when not a number (still warming up).
    value: Option<f64>,
    /// Its bar's time, ISO-8601 UTC.
    ts: String,
    /// Computed from the bars stored now.
    current: bool,
}

/// The latest value of every stored output of a symbol.
#[derive(Serialize, ToSchema)]
pub(crate) struct Latest {
    #[schema(value_type = SymbolName)]
    symbol: String,
    bars: u64,
    /// The last bar's time, ISO-8601 UTC.
    last_ts: String,
    /// By output label.
    features: std::collections::BTreeMap<String, LatestValue>,
}

/// `GET /v1/features/{symbol}`: the latest value of every stored output.
#[utoipa::path(get, path = "/v1/features/{symbol}", tag = "features",
    params(("symbol" = SymbolName, Path, description = "The symbol")),
    responses(
        (status = 200, description = "The latest values", body = Latest),
        (status = 400, description = "A bad symbol", body = ErrorBody),
        (status = 404, description = "No bars for the symbol", body = ErrorBody),
    ))]
pub async fn latest_features<B: Backend>(
    State(app): State<Arc<App<B>>>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let Path(sym) = path.map_err(ApiError::rejection)?;
    let symbol = symbol(&sym)?;
    durable(app.engine.store()).await?;
    let Some(version) = app.engine.store().data_version(&symbol)? else {
        return Err(ApiError::not_found(format!("no bars for {symbol}")));
    };
    let mut features = std::collections::BTreeMap::new();
    for (key, view) in app.engine.outputs(&symbol)? {
        features.insert(
            key.feature.clone(),
            LatestValue {
                value: view.values().last().copied().filter(|v| v.is_finite()),
                ts: format_iso(view.last_ts()),
                current: view.is_current(&version),
            },
        );
    }
    Ok(json(
        StatusCode::OK,
        &Latest {
            symbol: symbol.as_str().to_owned(),
            bars: version.bars,
            last_ts: format_iso(version.last_ts),
            features,
        },
    ))
}

/// Stored features of many symbols, from `from` to `to` (both inclusive).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TableRequest {
    /// At most `batch_symbols_max` (1,000 by default).
    #[schema(value_type = Vec<SymbolName>)]
    symbols: Vec<String>,
    #[schema(value_type = FeatureList)]
    features: super::jobs::Features,
    #[serde(default)]
    #[schema(value_type = Option<TimeValue>)]
    from: Option<Instant>,
    #[serde(default)]
    #[schema(value_type = Option<TimeValue>)]
    to: Option<Instant>,
}

/// A time in a query body: ISO-8601 text (as `from=` takes it) or epoch
/// nanoseconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum Instant {
    Ns(#[serde(deserialize_with = "super::reply::whole")] i64),
    Text(String),
}

impl Instant {
    fn ns(name: &str, v: Option<&Instant>) -> Result<Option<i64>, ApiError> {
        match v {
            None => Ok(None),
            Some(Instant::Ns(ns)) => Ok(Some(*ns)),
            Some(Instant::Text(s)) => time_bound(name, Some(s)),
        }
    }
}

/// Pieces of a query's answer (a column of a batch, about 1 MB, or a
/// message's header) waiting for the socket: a few batches.
const QUERY_PIECES: usize = 64;
/// How long a query's answer waits for a client that reads none of it.
const QUERY_SEND_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A query's answer being sent. Dropped before it was sent whole (a failed
/// read, a client gone quiet, the service closing, a panic), the answer
/// ends with an error: the connection closes without the last chunk, so no
/// client can take a short table for the whole one.
struct QueryAnswer {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    /// Set once the last piece is queued; the body's stream ends with an
    /// error when the channel closes without it.
    whole: Arc<std::sync::atomic::AtomicBool>,
}

/// `POST /v1/features/query` `{symbols, features, from, to}` (times as
/// ISO-8601 text or epoch ns, both ends inclusive): the stored
/// outputs of many symbols as one Arrow IPC stream in long format
/// (`symbol, ts`, one float64 column per output; warm-up values NaN), the
/// table `kiln export` writes and Python's `features()` returns. Every
/// symbol's outputs must be stored and current (409 naming the first that
/// is not; nothing is queued). The answer streams, a record batch per 64
/// symbols read as it goes, so the server holds a few batches, not the
/// table; a read that fails after the first byte (a writer changed a
/// series since the check), a client that reads nothing for 30 s and the
/// service closing cut the answer off (no last chunk).
#[utoipa::path(post, path = "/v1/features/query", tag = "features", request_body = TableRequest,
    responses(
        (status = 200, description = "The table as an Arrow IPC stream: symbol, ts, one float64 column per output \
            (warm-up NaN); a stream cut off (no end-of-stream marker) is an error",
            content((Vec<u8> = "application/vnd.apache.arrow.stream"))),
        (status = 400, description = "Bad JSON, symbol, spec or time, or too many symbols or outputs", body = ErrorBody),
        (status = 409, description = "A symbol has no bars, or a feature is not stored or is stale", body = ErrorBody),
        (status = 413, description = "A body over body_bytes_max", body = ErrorBody),
    ))]
pub async fn query_features<B: Backend>(
    State(app): State<Arc<App<B>>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Reply {
    use crate::market::export::{TABLE_GROUP_SYMBOLS, TableBuilder, TimeRange, check_feature_rows};
    let body = body.map_err(ApiError::rejection)?;
    let req: TableRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a feature query: {e}")))?;
    let super::jobs::Asked {
        symbols, labels, ..
    } = super::jobs::symbols_and_features(
        &req.symbols,
        &req.features,
        app.config.batch_symbols_max,
    )?;
    let range = TimeRange {
        from: Instant::ns("from", req.from.as_ref())?,
        to: Instant::ns("to", req.to.as_ref())?,
    };
    durable(app.engine.store()).await?;
    // Every symbol checked (from the frames' heads) before the answer
    // starts, so what is missing or stale is a status, not a cut stream.
    let engine = app.engine.clone();
    let checked = (symbols, labels);
    let (symbols, labels) = super::reply::blocking(move || {
        check_feature_rows(engine.store(), &checked.0, &checked.1)
            .map_err(|e| crate::engine::EngineError::from(e).into())
            .map(|()| checked)
    })
    .await?;
    let schema = crate::market::export::feature_schema(&labels);
    // The encoder's pieces share the batch's buffers: each goes to the
    // socket as it is, and reading the next group overlaps sending this one.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(QUERY_PIECES);
    let engine = app.engine.clone();
    let mut news = app.news.subscribe();
    let runtime = tokio::runtime::Handle::current();
    let whole = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answer = QueryAnswer {
        tx,
        whole: Arc::clone(&whole),
    };
    tokio::task::spawn_blocking(move || {
        let mut send = |pieces: Vec<arrow_buffer::Buffer>| -> Result<(), String> {
            for piece in pieces {
                runtime.block_on(async {
                    tokio::select! {
                        sent = answer.tx.send(Ok(Bytes::from(piece))) => {
                            sent.map_err(|_| "the client left".to_owned())
                        }
                        () = tokio::time::sleep(QUERY_SEND_WAIT) => Err(format!(
                            "the client read nothing for {} s",
                            QUERY_SEND_WAIT.as_secs()
                        )),
                        _ = news.wait_for(|n| n.closing) => Err("the service is closing".to_owned()),
                    }
                })?;
            }
            Ok(())
        };
        let written = (|| -> Result<(), String> {
            let mut encoder =
                arrow_ipc::writer::StreamEncoder::try_new(&schema).map_err(|e| e.to_string())?;
            for group in symbols.chunks(TABLE_GROUP_SYMBOLS) {
                let mut table =
                    TableBuilder::new(engine.store(), group, &labels).map_err(|e| e.to_string())?;
                table
                    .push(engine.store(), group, range)
                    .map_err(|e| e.to_string())?;
                let batch = table.finish().map_err(|e| e.to_string())?;
                send(encoder.encode(&batch).map_err(|e| e.to_string())?)?;
            }
            send(encoder.finish().map_err(|e| e.to_string())?)
        })();
        match written {
            Ok(()) => answer
                .whole
                .store(true, std::sync::atomic::Ordering::SeqCst),
            Err(e) => tracing::warn!(error = %e, "a feature query's answer was cut off"),
        }
    });
    let body = futures_util::stream::unfold(Some(rx), move |rx| {
        let whole = Arc::clone(&whole);
        async move {
            let mut rx = rx?;
            match rx.recv().await {
                Some(piece) => Some((piece, Some(rx))),
                None if whole.load(std::sync::atomic::Ordering::SeqCst) => None,
                None => Some((Err(std::io::Error::other("the answer was cut off")), None)),
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, ARROW_STREAM)],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Column(Vec<f64>);

    impl SeriesRead for Column {
        fn covers(&self) -> kiln_core::Coverage {
            kiln_core::Coverage::default()
        }
        fn chunks(&self) -> Vec<&[f64]> {
            vec![&self.0]
        }
    }

    #[test]
    fn the_series_json_is_what_the_document_says() {
        let labels = vec![
            "bbands(2,2).upper".to_owned(),
            "bbands(2,2).lower".to_owned(),
        ];
        let upper = Column(vec![9.0, f64::NAN, 1.5, 2.25]);
        let lower = Column(vec![9.0, f64::NAN, 0.5, -0.75]);
        let text = series_json(
            &Symbol::new("AAPL").expect("symbol"),
            "bbands(2,2)",
            &labels,
            &[&upper, &lower],
            &[10, 20, 30],
            1,
        );
        let read: Series = serde_json::from_str(&text).expect("a Series");
        let expected = Series {
            symbol: "AAPL".into(),
            feature: "bbands(2,2)".into(),
            ts: vec![10, 20, 30],
            values: [
                (labels[0].clone(), vec![None, Some(1.5), Some(2.25)]),
                (labels[1].clone(), vec![None, Some(0.5), Some(-0.75)]),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(read, expected);
    }
}
