//! `kiln bench http`: feature reads over HTTP on loopback while a batch
//! computes. A demo-sized store (1000 symbols × 2000 bars, the 20-output
//! set computed for every symbol) is served by `kiln serve`'s router and
//! dispatcher; a background batch (20 more outputs for every symbol) is
//! queued; then `connections` keep-alive connections send
//! `GET /v1/features/{symbol}/rsi(14)?tail=100`, cycling through the
//! symbols, at `rate` requests per second in all for `seconds`, and finally
//! as fast as they are answered for 5 s (the capacity). The load generator
//! runs in this process, on one thread, and shares the 2 cores with the
//! server. The same 1000 URLs repeat and the bars do not change, so after
//! the first round the server answers from its kept answers (`api::cache`):
//! the figures are those of serving precomputed features, not of reading
//! and formatting a series per request.
//!
//! A request's latency runs from when it was due if an earlier answer on
//! its connection held it up (a slow answer counts against the requests
//! queued behind it), else from when it was sent (the generator's
//! millisecond timer does not count). Requests still unsent at the end of
//! the window are not counted.
//!
//! Figures: `offered_per_s`, `requests_per_s`, `p50_ms`, `p99_ms`,
//! `p999_ms`, `errors` (answers other than 200), `background_jobs` (batch
//! jobs finished in the window), `capacity_requests_per_s`,
//! `capacity_p99_ms`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_store::{JobQueue, JobState, Priority, Symbol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BenchError, BenchLine};
use crate::api::{self, App};
use crate::engine::{Engine, EngineConfig};
use crate::features::bench::bench_plan;
use crate::features::spec::parse_list;
use crate::market::synth;

/// The sizes.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Symbols in the universe.
    pub symbols: usize,
    /// Bars per symbol.
    pub bars: usize,
    /// Length of the measured window.
    pub seconds: f64,
    /// Concurrent keep-alive connections.
    pub connections: usize,
    /// Requests per second offered in the measured window, spread evenly
    /// over the connections.
    pub rate: f64,
}

/// The background batch: 20 more outputs for every symbol.
const BACKGROUND: &str = "sma(7),sma(14),sma(30),sma(100),ema(9),ema(21),ema(100),wma(10),wma(30),\
     bbands(10,2),rsi(7),rsi(21),mom(5),roc(5),atr(7),natr(14),stddev(20),logret";

fn line(name: &'static str, value: f64, unit: &'static str) -> BenchLine {
    BenchLine {
        bench: "http",
        name,
        value,
        unit,
    }
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |e| BenchError::Io(what.to_owned(), e)
}

/// Runs the benchmark with its store in `dir`.
pub fn run(
    dir: &Path,
    opts: &HttpOptions,
    mut emit: impl FnMut(&BenchLine),
) -> Result<(), BenchError> {
    let config = EngineConfig {
        serve: api::ServeConfig {
            // One client address sends everything here.
            requests_per_s: 1e9,
            requests_burst: 1e9,
            ..api::ServeConfig::default()
        },
        ..EngineConfig::default()
    };
    crate::engine::lower_compute_priority(config.background_nice);
    let engine = Engine::open(dir.join("store"), config)?;
    let universe = synth::universe(opts.symbols, opts.bars, 7);
    engine.ingest_columns("synthetic", &universe)?;
    let symbols: Vec<Symbol> = universe.into_iter().map(|(s, _)| s).collect();
    let plan = bench_plan()?;
    engine.submit(&symbols, plan.specs(), Priority::Normal)?;
    engine.run_until_idle(&mut |_| {})?;
    // The background batch, computed while the reads run.
    let batch = parse_list(BACKGROUND).map_err(crate::engine::EngineError::from)?;
    engine.submit(&symbols, &batch, Priority::Normal)?;
    let done_before = engine.store().stats().count(JobState::Succeeded);

    let runner = engine.spawn_runner()?;
    let app = App::new(engine.clone(), Some(runner));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("bind 127.0.0.1:0"))?;
    let addr = listener.local_addr().map_err(io("bind 127.0.0.1:0"))?;
    listener
        .set_nonblocking(true)
        .map_err(io("bind 127.0.0.1:0"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = Arc::clone(&app);
    let server = std::thread::Builder::new()
        .name("kiln-bench-server".into())
        .spawn(move || -> std::io::Result<()> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                api::serve(listener, served, async {
                    let _ = stopped.await;
                })
                .await
            })
        })
        .map_err(io("start the server thread"))?;

    let targets: Vec<Vec<u8>> = symbols
        .iter()
        .map(|s| {
            format!("GET /v1/features/{s}/rsi(14)?tail=100 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                .into_bytes()
        })
        .collect();
    let window = Duration::from_secs_f64(opts.seconds);
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("start the load generator"))?;
    let loaded = client.block_on(load(
        addr,
        &targets,
        opts.connections,
        window,
        Some(opts.rate),
    ));
    let done_after = engine.store().stats().count(JobState::Succeeded);
    // Then as fast as the connections are answered, the batch done.
    let capacity = client.block_on(load(
        addr,
        &targets,
        opts.connections,
        CAPACITY_WINDOW.min(window),
        None,
    ));
    let _ = stop.send(());
    let served = server
        .join()
        .map_err(|_| BenchError::Peer("the server thread panicked".into()))?;
    app.stop_runner()?;
    served.map_err(io("serve"))?;
    let (mut latencies, errors, elapsed) = loaded?;
    let (mut closed, closed_errors, closed_elapsed) = capacity?;

    emit(&line("offered_per_s", opts.rate, "requests/s"));
    emit(&line(
        "requests_per_s",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        "requests/s",
    ));
    emit(&line("p50_ms", quantile(&mut latencies, 0.50), "ms"));
    emit(&line("p99_ms", quantile(&mut latencies, 0.99), "ms"));
    emit(&line("p999_ms", quantile(&mut latencies, 0.999), "ms"));
    emit(&line("errors", (errors + closed_errors) as f64, "requests"));
    emit(&line(
        "background_jobs",
        done_after.saturating_sub(done_before) as f64,
        "jobs",
    ));
    emit(&line(
        "capacity_requests_per_s",
        closed.len() as f64 / closed_elapsed.as_secs_f64(),
        "requests/s",
    ));
    emit(&line("capacity_p99_ms", quantile(&mut closed, 0.99), "ms"));
    Ok(())
}

/// The latency (µs samples) at quantile `q`, in ms.
fn quantile(samples: &mut [u32], q: f64) -> f64 {
    samples.sort_unstable();
    let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len().max(1)) - 1;
    samples.get(i).map_or(0.0, |&us| f64::from(us) / 1000.0)
}

/// The closed-loop capacity run after the measured window.
const CAPACITY_WINDOW: Duration = Duration::from_secs(5);

/// `connections` clients, each sending the targets in turn over one
/// keep-alive connection until `window` is over. Returns every answered
/// request's latency in microseconds, the non-200 count and the time taken.
async fn load(
    addr: SocketAddr,
    targets: &[Vec<u8>],
    connections: usize,
    window: Duration,
    rate: Option<f64>,
) -> Result<(Vec<u32>, u64, Duration), BenchError> {
    let every = rate.map(|r| Duration::from_secs_f64(connections as f64 / r));
    let targets: Arc<Vec<Vec<u8>>> = Arc::new(targets.to_vec());
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = Vec::with_capacity(connections);
    for c in 0..connections {
        let targets = Arc::clone(&targets);
        tasks.push(tokio::spawn(async move {
            // Spread the connections' schedules over one period.
            if let Some(every) = every {
                tokio::time::sleep(every.mul_f64(c as f64 / connections as f64)).await;
            }
            client(addr, &targets, c * 7919, deadline, every).await
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t
            .await
            .map_err(|e| BenchError::Peer(format!("a client task failed: {e}")))??;
        latencies.extend(l);
        errors += e;
    }
    Ok((latencies, errors, started.elapsed()))
}

/// One keep-alive connection's requests until `deadline`: back to back, or
/// with `every` one request per period, its latency counted from when it
/// was due if an earlier answer held it up (so a slow answer also counts
/// against the requests queued behind it, as a real client would see).
async fn client(
    addr: SocketAddr,
    targets: &[Vec<u8>],
    first: usize,
    deadline: Instant,
    every: Option<Duration>,
) -> Result<(Vec<u32>, u64), BenchError> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(io("connect"))?;
    s.set_nodelay(true).map_err(io("connect"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let (mut latencies, mut errors) = (Vec::new(), 0u64);
    let mut i = first;
    let mut due = Instant::now();
    while Instant::now() < deadline {
        let t = match every {
            Some(period) => {
                // Waiting for a late answer delays this request: that
                // delay counts. The timer's own lateness on an idle
                // connection (tokio's timers tick in milliseconds) does not.
                let idle = Instant::now() < due;
                tokio::time::sleep_until(due.into()).await;
                let t = if idle { Instant::now() } else { due };
                due += period;
                t
            }
            None => Instant::now(),
        };
        s.write_all(&targets[i % targets.len()])
            .await
            .map_err(io("send a request"))?;
        let status = read_response(&mut s, &mut buf).await?;
        latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
        if status != 200 {
            errors += 1;
        }
        i += 1;
    }
    Ok((latencies, errors))
}

/// Reads one response (headers and a Content-Length body); returns its status.
async fn read_response(
    s: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> Result<u16, BenchError> {
    let mut filled = 0;
    let end = loop {
        filled += read_more(s, buf, filled).await?;
        if let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .ok_or_else(|| BenchError::Peer("a response without Content-Length".into()))?;
    let total = end + 4 + length;
    while filled < total {
        filled += read_more(s, buf, filled).await?;
    }
    Ok(status)
}

/// Reads what has arrived into `buf` after `filled` (growing it when full).
async fn read_more(
    s: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    filled: usize,
) -> Result<usize, BenchError> {
    if filled == buf.len() {
        buf.resize(buf.len() * 2, 0);
    }
    match s.read(&mut buf[filled..]).await {
        Ok(0) => Err(BenchError::Peer("the server closed a connection".into())),
        Ok(n) => Ok(n),
        Err(e) => Err(BenchError::Io("read a response".into(), e)),
    }
}
