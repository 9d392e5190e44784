//! `kiln bench http`: feature reads over HTTP on loopback while a batch
//! computes. A demo-sized store (1000 symbols × 2000 bars, the 20-output
//! set computed for every symbol) is served as `kiln serve` serves it: by
//! [`Service::start`], its router and runner, with the compute threads in
//! the background (see `EngineConfig::background_idle`). `connections`
//! keep-alive connections send `GET /v1/features/{symbol}/rsi(14)?tail=100`,
//! cycling through the symbols, at `rate` requests per second in all:
//!
//! 1. a 2 s warm-up, no batch, whose p99 is `warmup_p99_ms`: the first
//!    read of each series happens here when `2 × rate` covers the symbols
//!    (with the defaults, 30 reads per symbol);
//! 2. the measured window of `seconds`, during which a background batch
//!    (20 more outputs for every symbol) computes and commits;
//! 3. 5 s (at most `seconds`) as fast as the connections are answered: the
//!    capacity.
//!
//! The load generator runs in this process on one thread and shares the
//! machine's cores with the server. It is open-loop: each connection sends
//! one request per period (`connections / rate`), the connections spread
//! evenly over the period, with waits precise to microseconds. A request's
//! latency runs from when it was due if an earlier answer on its
//! connection held it up (a slow answer counts against the requests queued
//! behind it), else from when it was sent. Every request due in the window
//! is sent and its answer waited for (up to 5 s after the window; one not
//! answered by then counts as an error). The same 1000 URLs repeat and the
//! bars do not change, so after the warm-up the server answers from its
//! kept answers (`api::cache`): the figures are those of serving
//! precomputed features, not of reading and formatting a series per
//! request.
//!
//! With `batch` off (`--no-batch`) nothing is submitted: the window
//! measures the serving path alone, and the batch's figures are left out.
//!
//! Figures: `offered_per_s`, `requests` (answered in the window),
//! `requests_per_s`, `p50_ms`, `p99_ms`, `p999_ms`, `errors` (answers
//! other than 200, or none), `background_jobs`
//! (batch jobs finished in the window), `capacity_requests_per_s`,
//! `capacity_p99_ms`, `warmup_p99_ms`. The window's requests are also
//! split at the moment the batch was seen finished (the queue is checked
//! every 10 ms, until the window's last answer is in): `batch_requests`,
//! and `batch_p99_ms` for those sent while it ran (when any were);
//! `after_batch_p99_ms` for the rest (when any were); `batch_s`, from its
//! submission to that moment (when it finished; it may pass `seconds` by
//! the wait for the last answers).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use kiln::api::Service;
use kiln::config::{Config, ServeConfig};
use kiln::engine::Engine;
use kiln::features::spec::parse_list;
use kiln::features::standard_plan;
use kiln::market::synth;
use kiln_store::prelude::*;
use kiln_store::{JobState, Priority, Symbol};

use crate::{BenchError, BenchLine};

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
    /// Whether the background batch is submitted (without it, the window
    /// measures the serving path alone).
    pub batch: bool,
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
    let config = Config {
        serve: ServeConfig {
            // One client address sends everything here.
            requests_per_s: 1e9,
            requests_burst: 1e9,
            ..ServeConfig::default()
        },
        ..Config::default()
    };
    // As `kiln serve` builds it: the compute threads in the background.
    kiln::engine::build_compute_pool(config.engine.background_idle);
    let engine = Engine::open(dir.join("store"), config.clone())?;
    let universe = synth::universe(opts.symbols, opts.bars, 7);
    engine.ingest_columns("synthetic", &universe)?;
    let symbols: Vec<Symbol> = universe.into_iter().map(|(s, _)| s).collect();
    let plan = standard_plan()?;
    engine.submit(&symbols, plan.specs(), Priority::Normal)?;
    engine.run_until_idle(&mut |_| {})?;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("bind 127.0.0.1:0"))?;
    let service = Service::start(
        engine.clone(),
        config.serve,
        listener,
        std::future::pending(),
    )?;
    let addr = service.addr();
    let targets: Vec<Vec<u8>> = symbols
        .iter()
        .map(|s| {
            format!("GET /v1/features/{s}/rsi(14)?tail=100 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                .into_bytes()
        })
        .collect();
    let window = Duration::from_secs_f64(opts.seconds);
    let load = |window, rate| load(addr, &targets, opts.connections, window, rate);
    let warmed = load(WARMUP_WINDOW, Some(opts.rate));
    let done_before = engine.store().stats()?.count(JobState::Succeeded);
    let submitted = Instant::now();
    let (loaded, batch_done) = if opts.batch {
        let batch = parse_list(BACKGROUND).map_err(kiln::engine::EngineError::from)?;
        engine.submit(&symbols, &batch, Priority::Normal)?;
        let window_over = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let watcher = scope.spawn(|| watch_batch(&engine, &window_over));
            let loaded = load(window, Some(opts.rate));
            window_over.store(true, std::sync::atomic::Ordering::Relaxed);
            (loaded, watcher.join().ok().flatten())
        })
    } else {
        (load(window, Some(opts.rate)), None)
    };
    let done_after = engine.store().stats()?.count(JobState::Succeeded);
    let capacity = load(CAPACITY_WINDOW.min(window), None);
    service.stop()?;
    let (warm, warm_errors, _) = warmed?;
    let (latencies, errors, elapsed) = loaded?;
    let (closed, closed_errors, closed_elapsed) = capacity?;
    // Requests sent while the batch ran, and after its last job committed.
    let batch_end = batch_done.unwrap_or_else(Instant::now);
    let (during, after): (Vec<&Sample>, Vec<&Sample>) =
        latencies.iter().partition(|s| s.sent < batch_end);

    emit(&line("offered_per_s", opts.rate, "requests/s"));
    emit(&line("requests", latencies.len() as f64, "requests"));
    emit(&line(
        "requests_per_s",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        "requests/s",
    ));
    let window_us = sorted_us(&latencies);
    emit(&line("p50_ms", quantile(&window_us, 0.50), "ms"));
    emit(&line("p99_ms", quantile(&window_us, 0.99), "ms"));
    emit(&line("p999_ms", quantile(&window_us, 0.999), "ms"));
    emit(&line(
        "errors",
        (warm_errors + errors + closed_errors) as f64,
        "requests",
    ));
    emit(&line(
        "background_jobs",
        done_after.saturating_sub(done_before) as f64,
        "jobs",
    ));
    if opts.batch {
        if let Some(t) = batch_done {
            emit(&line("batch_s", (t - submitted).as_secs_f64(), "s"));
        }
        emit(&line("batch_requests", during.len() as f64, "requests"));
        if !during.is_empty() {
            emit(&line(
                "batch_p99_ms",
                quantile(&sorted_us(during), 0.99),
                "ms",
            ));
        }
        if !after.is_empty() {
            emit(&line(
                "after_batch_p99_ms",
                quantile(&sorted_us(after), 0.99),
                "ms",
            ));
        }
    }
    emit(&line(
        "capacity_requests_per_s",
        closed.len() as f64 / closed_elapsed.as_secs_f64(),
        "requests/s",
    ));
    emit(&line(
        "capacity_p99_ms",
        quantile(&sorted_us(&closed), 0.99),
        "ms",
    ));
    emit(&line(
        "warmup_p99_ms",
        quantile(&sorted_us(&warm), 0.99),
        "ms",
    ));
    Ok(())
}

/// One answered request: where its latency counts from, and the latency.
struct Sample {
    sent: Instant,
    us: u32,
}

/// The latencies of `samples` (µs), sorted for [`quantile`].
fn sorted_us<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Vec<u32> {
    let mut us: Vec<u32> = samples.into_iter().map(|s| s.us).collect();
    us.sort_unstable();
    us
}

/// The latency at quantile `q` of `sorted` (µs), in ms (0 for none).
fn quantile(sorted: &[u32], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
    sorted.get(i).map_or(0.0, |&us| f64::from(us) / 1000.0)
}

/// Watches the queue (every 10 ms) until no job is queued, running or
/// waiting for a retry, or until `stop` is set; returns when the queue was
/// first seen empty, if it was.
fn watch_batch(engine: &Engine, stop: &std::sync::atomic::AtomicBool) -> Option<Instant> {
    use std::sync::atomic::Ordering;
    while !stop.load(Ordering::Relaxed) {
        if engine.store().stats().is_ok_and(|s| s.unfinished() == 0) {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The warm-up before the measured window, at the offered rate.
const WARMUP_WINDOW: Duration = Duration::from_secs(2);

/// The closed-loop capacity run after the measured window.
const CAPACITY_WINDOW: Duration = Duration::from_secs(5);

/// How long answers to requests due in a window are waited for after it.
const DRAIN_MAX: Duration = Duration::from_secs(5);

/// `connections` keep-alive connections, each sending the targets in turn:
/// with `rate`, one request per period (`connections / rate`) each, the
/// connections' schedules spread evenly over the period; without it, each
/// its next request as soon as its answer is in. Requests due in `window`
/// are sent, and their answers waited for up to [`DRAIN_MAX`] after it. One
/// thread drives every connection with `ppoll` (nanosecond timeouts, 1 µs
/// timer slack), so requests go out when due, not in bursts on a
/// millisecond tick. Returns every answered request's latency in
/// microseconds, the count of answers other than 200 or missing, and the
/// time taken.
fn load(
    addr: SocketAddr,
    targets: &[Vec<u8>],
    connections: usize,
    window: Duration,
    rate: Option<f64>,
) -> Result<(Vec<Sample>, u64, Duration), BenchError> {
    crate::sys::set_timer_slack_ns(1_000);
    let period = rate.map(|r| Duration::from_secs_f64(connections as f64 / r));
    let mut conns = (0..connections)
        .map(|c| Conn::open(addr, c * 7919))
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let deadline = started + window;
    for (c, conn) in conns.iter_mut().enumerate() {
        conn.due =
            started + period.map_or(Duration::ZERO, |p| p.mul_f64(c as f64 / connections as f64));
    }
    let (mut samples, mut errors) = (Vec::new(), 0u64);
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(connections);
    let mut waiting: Vec<usize> = Vec::with_capacity(connections);
    loop {
        let now = Instant::now();
        // Open loop: requests due in the window, even when sent after it;
        // back to back: until the window ends.
        let sends =
            |c: &Conn| c.sent.is_none() && c.due < deadline && (period.is_some() || now < deadline);
        for c in &mut conns {
            if sends(c) && c.due <= now {
                c.send(targets, now, period)?;
            }
        }
        // Wait for answers, or until the next idle connection is due.
        let next_due = conns.iter().filter(|c| sends(c)).map(|c| c.due).min();
        fds.clear();
        waiting.clear();
        for (i, c) in conns.iter().enumerate() {
            if c.sent.is_some() {
                fds.push(libc::pollfd {
                    fd: c.stream.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                waiting.push(i);
            }
        }
        if fds.is_empty() && next_due.is_none() {
            break;
        }
        if now >= deadline + DRAIN_MAX {
            // Unanswered, and the requests due behind them never sent.
            errors += fds.len() as u64;
            if let Some(p) = period {
                for c in conns.iter().filter(|c| c.due < deadline) {
                    errors += ((deadline - c.due).as_secs_f64() / p.as_secs_f64()).ceil() as u64;
                }
            }
            break;
        }
        let wake = next_due.unwrap_or(deadline + DRAIN_MAX);
        crate::sys::poll(&mut fds, wake.saturating_duration_since(Instant::now()))
            .map_err(io("wait for responses"))?;
        for (fd, &i) in fds.iter().zip(&waiting) {
            if fd.revents == 0 {
                continue;
            }
            if let Some((status, sent)) = conns[i].receive()? {
                let us = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                samples.push(Sample { sent, us });
                if status != 200 {
                    errors += 1;
                }
            }
        }
    }
    Ok((samples, errors, started.elapsed()))
}

/// One keep-alive connection of the load generator.
struct Conn {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
    filled: usize,
    /// Index of its next target.
    next: usize,
    /// When its next request is due.
    due: Instant,
    /// Whether its last answer came after the next request was due.
    held: bool,
    /// Where the latency of the request in flight counts from.
    sent: Option<Instant>,
}

impl Conn {
    fn open(addr: SocketAddr, first: usize) -> Result<Conn, BenchError> {
        let stream = std::net::TcpStream::connect(addr).map_err(io("connect"))?;
        stream.set_nodelay(true).map_err(io("connect"))?;
        stream.set_nonblocking(true).map_err(io("connect"))?;
        Ok(Conn {
            stream,
            buf: vec![0; 64 * 1024],
            filled: 0,
            next: first,
            due: Instant::now(),
            held: false,
            sent: None,
        })
    }

    /// Sends the next request. Its latency counts from when it was due if
    /// the previous answer held it up (a slow answer also counts against
    /// the request queued behind it, as a real client would see), else
    /// from now.
    fn send(
        &mut self,
        targets: &[Vec<u8>],
        now: Instant,
        period: Option<Duration>,
    ) -> Result<(), BenchError> {
        use std::io::Write;
        let request = &targets[self.next % targets.len()];
        // A request of a few dozen bytes on a connection with nothing in
        // flight fits the socket buffer whole.
        match self.stream.write(request) {
            Ok(n) if n == request.len() => {}
            Ok(_) => return Err(BenchError::Peer("a request was sent in part".into())),
            Err(e) => return Err(BenchError::Io("send a request".into(), e)),
        }
        // Back to back (no period), a request is never held up.
        let held = self.held && period.is_some();
        self.sent = Some(if held { self.due } else { now });
        self.next += 1;
        self.due = match period {
            Some(p) => self.due + p,
            None => now,
        };
        Ok(())
    }

    /// Reads what has arrived; returns the status and latency start once the
    /// answer (headers and a Content-Length body) is whole.
    fn receive(&mut self) -> Result<Option<(u16, Instant)>, BenchError> {
        use std::io::Read;
        let mut closed = false;
        loop {
            if self.filled == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            match self.stream.read(&mut self.buf[self.filled..]) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(BenchError::Io("read a response".into(), e)),
            }
        }
        let whole =
            response_size(&self.buf[..self.filled])?.filter(|&(_, total)| self.filled >= total);
        let Some((status, total)) = whole else {
            if closed {
                return Err(BenchError::Peer(
                    "the server closed a connection before answering".into(),
                ));
            }
            return Ok(None);
        };
        if closed {
            return Err(BenchError::Peer(
                "the server closed a keep-alive connection after an answer".into(),
            ));
        }
        if self.filled > total {
            return Err(BenchError::Peer("bytes after a response".into()));
        }
        self.filled = 0;
        let sent = self
            .sent
            .take()
            .ok_or_else(|| BenchError::Peer("an answer nobody asked for".into()))?;
        self.held = Instant::now() >= self.due;
        Ok(Some((status, sent)))
    }
}

/// The status and total size of the response at the start of `buf`, once
/// its headers are in.
fn response_size(buf: &[u8]) -> Result<Option<(u16, usize)>, BenchError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
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
    Ok(Some((status, end + 4 + length)))
}
