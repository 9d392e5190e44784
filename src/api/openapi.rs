//! The OpenAPI 3 document served at `/openapi.json`, built from [`ROUTES`]
//! (a test requests every route listed here and checks the router has it).

/// One route: method, path, summary, and its answers (status, meaning).
pub type Route = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(u16, &'static str)],
);

/// Every route.
pub const ROUTES: &[Route] = &[
    (
        "post",
        "/v1/compute/batch",
        "Queue the features {symbols, features, priority} (at most batch_symbols_max symbols).",
        &[
            (202, "queued: {job_ids, estimated_completion_s}"),
            (
                400,
                "bad JSON, symbol, spec or priority, or too many symbols",
            ),
            (429, "rate limited or queue full (Retry-After)"),
        ],
    ),
    (
        "get",
        "/v1/jobs",
        "Jobs newest first, filtered by query state, priority, kind, symbol; before=ID pages on; limit at most 10,000 (100 by default).",
        &[
            (200, "a JSON array of jobs"),
            (400, "bad state, priority, symbol, before or limit"),
        ],
    ),
    (
        "post",
        "/v1/jobs/retry",
        "Queue again every dead or cancelled job matching {state, priority, kind, symbol, before, limit} (at most 1,000, newest first), in one commit.",
        &[
            (202, "queued: {retried: [{id, retried_as}], more}"),
            (400, "bad JSON or filter; state must be dead or cancelled"),
            (429, "rate limited or queue full (Retry-After)"),
        ],
    ),
    (
        "post",
        "/v1/jobs/cancel",
        "Cancel every queued or failed job matching {state, priority, kind, symbol, before, limit} (at most 1,000, newest first).",
        &[
            (200, "{cancelled: [id], not_cancellable: [id], more}"),
            (400, "bad JSON or filter; state must be queued or failed"),
            (429, "rate limited (Retry-After)"),
        ],
    ),
    (
        "post",
        "/v1/priorities/{priority}/pause",
        "Stop claiming jobs of a priority (high, normal, low).",
        &[(200, "{priority, paused}"), (400, "bad priority")],
    ),
    (
        "post",
        "/v1/priorities/{priority}/resume",
        "Claim jobs of a priority again.",
        &[(200, "{priority, paused}"), (400, "bad priority")],
    ),
    (
        "get",
        "/v1/symbols",
        "Symbols with bars in name order (query after, limit: at most 5,000, 500 by default): bars, first_ts, last_ts, data_version, outputs, stale.",
        &[
            (200, "a JSON array of symbols"),
            (400, "bad after or limit"),
        ],
    ),
    (
        "get",
        "/v1/bars/{symbol}",
        "A symbol's bars (query tail, from, to) as JSON columns {symbol, ts, open, high, low, close, volume}.",
        &[
            (200, "the bars"),
            (400, "bad symbol or query"),
            (404, "no bars for the symbol"),
        ],
    ),
    (
        "get",
        "/v1/stats",
        "The engine's state: jobs by state, waiting jobs by priority, symbols, bars, breaker.",
        &[(200, "the state")],
    ),
    (
        "get",
        "/v1/jobs/{id}",
        "One job.",
        &[(200, "the job"), (404, "no such job")],
    ),
    (
        "delete",
        "/v1/jobs/{id}",
        "Cancel a queued job.",
        &[
            (200, "cancelled"),
            (404, "no such job"),
            (409, "running or finished"),
            (429, "rate limited (Retry-After)"),
        ],
    ),
    (
        "post",
        "/v1/jobs/{id}/retry",
        "Queue a dead or cancelled job again, as a new job.",
        &[
            (202, "queued: {id, retried_as}"),
            (404, "no such job"),
            (409, "not dead or cancelled"),
            (429, "rate limited or queue full (Retry-After)"),
        ],
    ),
    (
        "post",
        "/v1/features/query",
        "Many symbols' stored features {symbols, features, from, to} as one Arrow IPC stream: symbol, ts, one float64 column per output (warm-up NaN); at most batch_symbols_max symbols.",
        &[
            (200, "the table, application/vnd.apache.arrow.stream"),
            (400, "bad JSON, symbol, spec or time, or too many symbols"),
            (
                409,
                "a symbol has no bars, or a feature is not stored or is stale",
            ),
            (429, "rate limited (Retry-After)"),
        ],
    ),
    (
        "get",
        "/v1/features/{symbol}",
        "The latest value of every stored feature of a symbol.",
        &[(200, "the values"), (404, "no bars for the symbol")],
    ),
    (
        "get",
        "/v1/features/{symbol}/{spec}",
        "A stored series (query tail, from, to); JSON, or an Arrow IPC stream for Accept: application/vnd.apache.arrow.stream.",
        &[
            (200, "the series: {symbol, feature, ts, values}"),
            (
                202,
                "missing or stale: {job_id} of the high-priority job computing it",
            ),
            (400, "bad symbol, spec or query"),
            (404, "no bars for the symbol"),
        ],
    ),
    (
        "post",
        "/v1/bars",
        "Ingest a CSV (plain or gzip) or Arrow IPC body, all or nothing (query map=Ticker=symbol,...).",
        &[
            (200, "ingested: {rows, symbols, changed, refresh_jobs}"),
            (400, "invalid bars, naming the row and column"),
            (403, "uploads are off (bars_uploads_max = 0)"),
            (
                408,
                "the body took longer than bars_body_seconds_max to arrive",
            ),
            (413, "body over bars_body_bytes_max"),
            (
                415,
                "a Content-Type that is not CSV, gzip, Arrow IPC or Parquet",
            ),
            (
                429,
                "bars_uploads_max uploads already in progress (Retry-After)",
            ),
        ],
    ),
    (
        "get",
        "/v1/events",
        "Server-sent events from the durable event log; resume with Last-Event-ID or ?after=. With Accept: application/json, one page of events after ?after= (at most ?limit=, 10,000) as a JSON array.",
        &[
            (200, "text/event-stream, or a JSON array of events"),
            (400, "bad after, limit or Last-Event-ID"),
        ],
    ),
    (
        "get",
        "/health",
        "healthy, degraded or unhealthy, with each check (no token needed).",
        &[(200, "healthy or degraded"), (503, "unhealthy")],
    ),
    (
        "get",
        "/metrics",
        "Prometheus text metrics.",
        &[(200, "text/plain")],
    ),
    (
        "get",
        "/openapi.json",
        "This document.",
        &[(200, "OpenAPI 3")],
    ),
];

/// The document.
pub fn document() -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for (method, path, summary, answers) in ROUTES {
        let responses: serde_json::Map<String, serde_json::Value> = answers
            .iter()
            .map(|(code, what)| (code.to_string(), serde_json::json!({"description": what})))
            .collect();
        let params: Vec<serde_json::Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                serde_json::json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
            })
            .collect();
        let entry = paths
            .entry(path.to_string())
            .or_insert_with(|| serde_json::json!({}));
        entry[*method] = serde_json::json!({
            "summary": summary,
            "parameters": params,
            "responses": responses,
            "security": if *path == "/health" { serde_json::json!([]) } else { serde_json::json!([{"bearer": []}]) },
        });
    }
    serde_json::json!({
        "openapi": "3.0.3",
        "info": {"title": "kiln", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Precomputed trading features: submit, read, follow."},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    })
}
