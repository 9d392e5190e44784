//! `kiln._native`: the engine in-process for Python (`kiln.open`). Arrow
//! crosses the boundary through the C data interface (`arrow-pyarrow`):
//! tables come in as any object with `__arrow_c_stream__` and go out as
//! pyarrow tables whose buffers are the ones kiln filled. Every call that
//! waits on the disk or computes runs with the GIL released; the long waits
//! (a run, a table read in-process or over HTTP) are cut into 50 ms slices
//! so Ctrl-C (a pending signal) interrupts them.
//!
//! The pure-Python layer (`python/kiln/`) holds the public API; this module
//! is its native half and is not meant to be used directly.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow_array::ffi_stream::RecordBatchStreamReader;
use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_pyarrow::{IntoPyArrow, PyArrowType, Table};
use kiln::config::Config;
use kiln::engine::{EngineError, RunReport, resolve_features};
use kiln::market::export::{TimeRange, feature_table};
use kiln::market::{IngestOptions, MarketError, TsUnit};
use kiln_core::prelude::*;
use kiln_core::{JobState, Priority, StoreError, Symbol};
use pyo3::BoundObject;
use pyo3::exceptions::{PyException, PyKeyError, PyValueError};
use pyo3::prelude::*;

/// mimalloc, as in the `kiln` binary: a feature table's buffers are large
/// and short-lived, and glibc's malloc maps and unmaps each one (a page
/// fault per 4 KB, every read).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pyo3::create_exception!(_native, KilnError, PyException, "Base of kiln's errors.");
pyo3::create_exception!(
    _native,
    DirectoryInUse,
    KilnError,
    "Another process has the data directory open (`pid`; `address`: the URL \
     of the `kiln serve` holding it, for `kiln.connect`)."
);
pyo3::create_exception!(
    _native,
    Refused,
    KilnError,
    "Refused for now (rate limit, queue depth, breaker, queue full): try again \
     after `retry_after` seconds."
);
pyo3::create_exception!(
    _native,
    NotReady,
    KilnError,
    "A feature asked for is not stored, or was computed from other bars than \
     those stored: submit and run first."
);

/// An [`EngineError`] as the Python exception it raises: bad input
/// (specs, rows, options) is `ValueError` with the CLI's text.
fn raise(py: Python<'_>, e: EngineError) -> PyErr {
    let text = e.to_string();
    let with = |err: PyErr, attrs: &[(&str, Py<PyAny>)]| {
        for (name, value) in attrs {
            // An attribute that cannot be set leaves the message, which says it.
            let _ = err.value(py).setattr(*name, value);
        }
        err
    };
    match e {
        EngineError::DirectoryInUse { pid, server, .. } => with(
            DirectoryInUse::new_err(text),
            &[("pid", object(py, pid)), ("address", object(py, server))],
        ),
        EngineError::Refused { retry_after_ms, .. } => with(
            Refused::new_err(text),
            &[("retry_after", object(py, retry_after_ms as f64 / 1e3))],
        ),
        EngineError::Store(StoreError::QueueFull { .. }) => {
            with(Refused::new_err(text), &[("retry_after", object(py, 1.0))])
        }
        EngineError::Market(MarketError::NotReady(_)) => NotReady::new_err(text),
        EngineError::Store(StoreError::UnknownJob(_)) | EngineError::NoBars(_) => {
            PyKeyError::new_err(text)
        }
        EngineError::Spec(_)
        | EngineError::Request(_)
        | EngineError::Config(_)
        | EngineError::Store(StoreError::Invalid { .. })
        | EngineError::Market(
            MarketError::Row(_)
            | MarketError::Format { .. }
            | MarketError::MissingColumn { .. }
            | MarketError::Options(_),
        ) => PyValueError::new_err(text),
        _ => KilnError::new_err(text),
    }
}

/// `v` as a Python object (None if it cannot be one).
fn object<'py>(py: Python<'py>, v: impl IntoPyObject<'py>) -> Py<PyAny> {
    v.into_pyobject(py)
        .map_or_else(|_| py.None(), |o| o.into_any().unbind())
}

/// Runs `f` on a thread of its own while this one waits with the GIL
/// released, in 50 ms slices between which a pending signal is handled: a
/// Ctrl-C raises KeyboardInterrupt at once and leaves `f` to finish alone
/// (for reads only, whose result is then dropped).
fn interruptible<T: Send + 'static>(
    py: Python<'_>,
    f: impl FnOnce() -> T + Send + 'static,
) -> PyResult<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("kiln-py-read".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| KilnError::new_err(format!("cannot start the read: {e}")))?;
    let rx = std::sync::Mutex::new(rx);
    loop {
        let got = py.detach(|| {
            let rx = rx.lock().ok()?;
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(v) => Some(Ok(v)),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Some(Err(())),
            }
        });
        match got {
            Some(Ok(v)) => return Ok(v),
            Some(Err(())) => return Err(KilnError::new_err("the read's thread died")),
            None => py.check_signals()?,
        }
    }
}

/// Runs `f` with the GIL released; its error raised as Python's.
fn detached<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> Result<T, EngineError> + Send,
) -> PyResult<T> {
    py.detach(f).map_err(|e| raise(py, e))
}

/// An open data directory with its engine, held by this process.
#[pyclass(frozen, module = "kiln._native")]
struct Engine {
    engine: kiln::engine::Engine,
}

#[pymethods]
impl Engine {
    /// Opens (or creates) the data directory; `config` is the text of a
    /// kiln TOML configuration (None: the defaults).
    #[new]
    #[pyo3(signature = (path, config = None))]
    fn new(py: Python<'_>, path: PathBuf, config: Option<String>) -> PyResult<Self> {
        let config = match config {
            Some(text) => kiln::config::parse(&text).map_err(|e| raise(py, e.into()))?,
            None => Config::default(),
        };
        let engine = detached(py, || kiln::engine::Engine::open(&path, config))?;
        Ok(Engine { engine })
    }

    /// The data directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.engine.dir().to_path_buf()
    }

    /// Ingests a table (any object with `__arrow_c_stream__`): validated
    /// like `kiln ingest`, all or nothing, and the refreshes of symbols with
    /// stored features queued in the same commit. `map` renames columns
    /// (source → canonical), `ts_unit` says what integer timestamps count.
    /// Returns the summary as JSON text.
    #[pyo3(signature = (table, name = "table".to_owned(), map = Vec::new(), ts_unit = None))]
    fn ingest(
        &self,
        py: Python<'_>,
        table: PyArrowType<RecordBatchStreamReader>,
        name: String,
        map: Vec<(String, String)>,
        ts_unit: Option<String>,
    ) -> PyResult<String> {
        // Checked as `--map` is: every target a column kiln reads.
        let joined: Vec<String> = map
            .iter()
            .map(|(from, to)| format!("{from}={to}"))
            .collect();
        let map = kiln::market::parse_map(&joined.join(",")).map_err(|e| raise(py, e.into()))?;
        let mut opts = IngestOptions {
            map,
            ..IngestOptions::default()
        };
        if let Some(unit) = ts_unit {
            let found = TsUnit::ALL.into_iter().find(|u| u.as_str() == unit);
            opts.ts_unit = Some(found.ok_or_else(|| {
                PyValueError::new_err(format!("ts_unit {unit:?} is not one of s, ms, us, ns"))
            })?);
        }
        let mut reader = table.0;
        let engine = &self.engine;
        let (summary, enqueued) =
            detached(py, move || engine.ingest_batches(&name, &mut reader, &opts))?;
        Ok(serde_json::json!({
            "rows": summary.rows,
            "symbols": summary.symbols,
            "changed": summary.changed,
            "refresh_jobs": enqueued.iter().map(|j| j.id()).collect::<Vec<_>>(),
            "seconds": summary.seconds,
        })
        .to_string())
    }

    /// Queues `compute` jobs for the spec list `features` over `symbols`;
    /// returns their ids (a job already queued for the same work is
    /// returned, not queued twice).
    #[pyo3(signature = (symbols, features, priority = "normal"))]
    fn submit(
        &self,
        py: Python<'_>,
        symbols: Vec<String>,
        features: &str,
        priority: &str,
    ) -> PyResult<Vec<u64>> {
        let symbols = parse_symbols(py, &symbols)?;
        let specs = kiln::features::spec::parse_list(features).map_err(|e| raise(py, e.into()))?;
        let priority: Priority = priority
            .parse()
            .map_err(|e: StoreError| PyValueError::new_err(e.to_string()))?;
        let engine = &self.engine;
        let jobs = detached(py, move || engine.submit(&symbols, &specs, priority))?;
        Ok(jobs.iter().map(|j| j.id()).collect())
    }

    /// Runs jobs until none is queued, running or waiting for a retry;
    /// returns what the run did as JSON text. Ctrl-C stops it after the
    /// batch in hand is committed, and raises KeyboardInterrupt.
    fn run_until_idle(&self, py: Python<'_>) -> PyResult<String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<Result<RunReport, EngineError>>();
        let rx = std::sync::Mutex::new(rx);
        let (engine, flag) = (self.engine.clone(), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("kiln-py-run".into())
            .spawn(move || {
                let _ = tx.send(engine.run(&flag, true, &mut |_| {}));
            })
            .map_err(|e| KilnError::new_err(format!("cannot start the run: {e}")))?;
        // None: not yet; Some: the run's end (a run thread that died is an
        // internal failure).
        let wait = |slice: Duration| {
            py.detach(|| {
                let Ok(rx) = rx.lock() else {
                    return Some(Err(EngineError::Internal("the run's channel broke".into())));
                };
                match rx.recv_timeout(slice) {
                    Ok(report) => Some(report),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        Some(Err(EngineError::Internal("the run thread died".into())))
                    }
                }
            })
        };
        let report = loop {
            if let Some(done) = wait(Duration::from_millis(50)) {
                break done;
            }
            if let Err(interrupt) = py.check_signals() {
                stop.store(true, Ordering::SeqCst);
                // The batch in hand commits; then the interrupt goes on.
                while wait(Duration::from_secs(1)).is_none() {}
                return Err(interrupt);
            }
        };
        let r = report.map_err(|e| raise(py, e))?;
        Ok(serde_json::json!({
            "succeeded": r.succeeded, "dead": r.dead, "symbols": r.symbols,
            "series": r.series, "seconds": r.seconds,
        })
        .to_string())
    }

    /// The stored outputs of `features` (a spec list or one output label)
    /// for `symbols` between `start` and `end` (epoch ns, inclusive; None is
    /// open), as one pyarrow table: `symbol`, `ts`, one float64 column per
    /// output, warm-up NaN.
    #[pyo3(signature = (symbols, features, start = None, end = None))]
    fn features<'py>(
        &self,
        py: Python<'py>,
        symbols: Vec<String>,
        features: &str,
        start: Option<i64>,
        end: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let symbols = parse_symbols(py, &symbols)?;
        let (labels, _) = resolve_features(features).map_err(|e| raise(py, e.into()))?;
        let range = TimeRange {
            from: start,
            to: end,
        };
        let engine = self.engine.clone();
        let batch: RecordBatch = interruptible(py, move || -> Result<_, EngineError> {
            if !engine.store().wait_durable(Duration::from_secs(10))? {
                return Err(EngineError::Internal(
                    "what was committed is still not on disk after 10 s".into(),
                ));
            }
            Ok(feature_table(engine.store(), &symbols, &labels, range)?)
        })?
        .map_err(|e| raise(py, e))?;
        let schema = batch.schema();
        let table = Table::try_new(vec![batch], schema)
            .map_err(|e| KilnError::new_err(format!("building the table: {e}")))?;
        table.into_pyarrow(py)
    }

    /// Up to `limit` jobs, newest first, optionally only those in `state`,
    /// as JSON text (the shapes of `kiln jobs --json`).
    #[pyo3(signature = (state = None, limit = 100))]
    fn jobs(&self, py: Python<'_>, state: Option<&str>, limit: usize) -> PyResult<String> {
        let state = state
            .map(|s| s.parse::<JobState>())
            .transpose()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let engine = &self.engine;
        let jobs = detached(py, move || {
            Ok(engine
                .store()
                .jobs(&kiln::store::JobFilter::state(state), limit)?)
        })?;
        let v: Vec<_> = jobs.iter().map(kiln::json::job).collect();
        Ok(serde_json::Value::Array(v).to_string())
    }

    /// The engine's state as JSON text (`kiln stats --json`).
    fn stats(&self, py: Python<'_>) -> PyResult<String> {
        let engine = &self.engine;
        detached(py, move || Ok(kiln::json::stats(engine)?.to_string()))
    }

    /// Up to `limit` events after sequence number `after`, as JSON text.
    #[pyo3(signature = (after = 0, limit = 256))]
    fn events(&self, py: Python<'_>, after: u64, limit: usize) -> PyResult<String> {
        let engine = &self.engine;
        let events = detached(py, move || Ok(engine.store().events(after, limit)?))?;
        let v: Vec<_> = events.iter().map(kiln::json::event).collect();
        Ok(serde_json::Value::Array(v).to_string())
    }
}

fn parse_symbols(py: Python<'_>, symbols: &[String]) -> PyResult<Vec<Symbol>> {
    symbols
        .iter()
        .map(|s| Symbol::new(s).map_err(|e| raise(py, e.into())))
        .collect()
}

/// Parses a time as `kiln` does (`YYYY-MM-DD`, ISO-8601 with an optional
/// offset; none means UTC) to epoch nanoseconds.
#[pyfunction]
fn parse_time(text: &str) -> PyResult<i64> {
    kiln::market::parse_iso(text).map_err(|e| PyValueError::new_err(format!("{text:?}: {e}")))
}

/// An answer's body that tells a cut-off one from a whole one: the end of
/// the connection before the last chunk is an error (not the end of the
/// stream, which the Arrow reader would take it for), and `ended` says the
/// body's end was reached at all.
struct Whole<R> {
    body: R,
    ended: bool,
}

impl<R: Read> Read for Whole<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.body.read(buf) {
            Ok(0) if !buf.is_empty() => {
                self.ended = true;
                Ok(0)
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(std::io::Error::other(
                format!("the connection ended early: {e}"),
            )),
            other => other,
        }
    }
}

/// What [`post_for_table`] got: the table, or an error answer for the
/// Python side to raise as the engine would.
enum Answer {
    Table(arrow_schema::SchemaRef, Vec<RecordBatch>),
    Error {
        status: u16,
        retry_after: Option<String>,
        body: Vec<u8>,
    },
}

/// `POST`s `body` (JSON) to `url` and reads the answer, an Arrow IPC
/// stream, into a table of its record batches as they came (`kiln.connect`'s
/// `features()`): the socket is read and the stream decoded here, with the
/// GIL released, at memory speed rather than Python's, and no batch is
/// copied again. An error answer comes back as
/// `(status, retry_after, body)`; a connection that fails, or an answer cut
/// off before its end, raises `KilnError`.
#[pyfunction]
#[pyo3(signature = (url, body, token = None, timeout = 60.0))]
fn post_for_table<'py>(
    py: Python<'py>,
    url: &str,
    body: Vec<u8>,
    token: Option<String>,
    timeout: f64,
) -> PyResult<Bound<'py, PyAny>> {
    let timeout = Duration::try_from_secs_f64(timeout)
        .map_err(|_| PyValueError::new_err(format!("timeout {timeout} is not a duration")))?;
    let url = url.to_owned();
    let answer = interruptible(py, move || -> Result<Answer, String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let mut request = agent
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Accept", kiln::api::ARROW_STREAM);
        if let Some(token) = &token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let response = request
            .send(&body[..])
            .map_err(|e| format!("{url}: cannot reach kiln serve: {e}"))?;
        let status = response.status().as_u16();
        if status != 200 {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut body = Vec::new();
            let _ = response
                .into_body()
                .into_with_config()
                .limit(1 << 20)
                .reader()
                .read_to_end(&mut body);
            return Ok(Answer::Error {
                status,
                retry_after,
                body,
            });
        }
        let body = Whole {
            body: response.into_body().into_reader(),
            ended: false,
        };
        let reader = std::io::BufReader::with_capacity(1 << 20, body);
        let mut stream = arrow_ipc::reader::StreamReader::try_new(reader, None)
            .map_err(|e| format!("{url}: the answer is not an Arrow stream: {e}"))?;
        let schema = stream.schema();
        let batches = stream
            .by_ref()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{url}: the answer was cut off: {e}"))?;
        // An Arrow stream may end at the end of its bytes; kiln's always
        // ends with its end-of-stream marker, after which nothing is read.
        if stream.get_ref().get_ref().ended {
            return Err(format!(
                "{url}: the answer was cut off after {} record batches",
                batches.len()
            ));
        }
        Ok(Answer::Table(schema, batches))
    })?
    .map_err(KilnError::new_err)?;
    match answer {
        Answer::Table(schema, batches) => Table::try_new(batches, schema)
            .map_err(|e| KilnError::new_err(format!("building the table: {e}")))?
            .into_pyarrow(py),
        Answer::Error {
            status,
            retry_after,
            body,
        } => (status, retry_after, pyo3::types::PyBytes::new(py, &body))
            .into_pyobject(py)
            .map(Bound::into_any),
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Engine>()?;
    m.add_function(wrap_pyfunction!(parse_time, m)?)?;
    m.add_function(wrap_pyfunction!(post_for_table, m)?)?;
    m.add("STANDARD_SET", kiln::features::STANDARD_SET.to_vec())?;
    m.add("KilnError", py.get_type::<KilnError>())?;
    m.add("DirectoryInUse", py.get_type::<DirectoryInUse>())?;
    m.add("Refused", py.get_type::<Refused>())?;
    m.add("NotReady", py.get_type::<NotReady>())?;
    Ok(())
}

// The stream reader is read on a thread without the GIL: it must be Send.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<RecordBatchStreamReader>();
    send::<Box<dyn RecordBatchReader + Send>>();
};
