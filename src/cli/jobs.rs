//! `kiln submit`, `kiln run`, `kiln jobs`, `kiln watch`.

use kiln::store::prelude::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use kiln::engine::feed::feed_path;
use kiln::engine::{Engine, RetryOutcome, RunObserver, RunProgress, RunReport, run_reopening};
use kiln::json;
use kiln::store::{CancelOutcome, Job, JobFilter, JobState, Priority, StoreError, Symbol};

use super::{Ctx, choice};

/// `kiln submit`'s options.
#[derive(clap::Args)]
pub struct SubmitArgs {
    /// Symbols, comma-separated.
    #[arg(long, value_name = "A,B,...", conflicts_with = "all")]
    symbols: Option<String>,
    /// Every symbol with bars.
    #[arg(long)]
    all: bool,
    /// Feature specs, e.g. "rsi(14),macd(12,26,9),bbands(20,2)".
    #[arg(long)]
    features: String,
    /// Queue priority (strict: high before normal before low).
    #[arg(long, value_parser = choice::<Priority>(), default_value = "normal")]
    priority: Priority,
    /// Run the queue until idle before returning.
    #[arg(long)]
    wait: bool,
}

/// `kiln run`'s options.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Stop when nothing is queued, running or waiting for a retry.
    #[arg(long)]
    until_idle: bool,
    /// First queue a refresh for every symbol whose stored features are stale.
    #[arg(long)]
    warm_up: bool,
    /// Stream the event log to stderr while running.
    #[arg(long)]
    watch: bool,
}

/// `kiln jobs …`.
#[derive(clap::Subcommand)]
pub enum JobsCommand {
    /// The newest jobs, optionally in one state.
    List {
        /// Only jobs in this state.
        #[arg(long, value_parser = choice::<JobState>())]
        state: Option<JobState>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One job.
    Show {
        /// Job id.
        id: u64,
    },
    /// Cancel a queued (or awaiting-retry) job.
    Cancel {
        /// Job id.
        id: u64,
    },
    /// Queue a dead or cancelled job again, as a new job.
    Retry {
        /// Job id.
        id: u64,
    },
}

/// `kiln watch`'s options.
#[derive(clap::Args)]
pub struct WatchArgs {
    /// Start after this sequence number (0: the oldest kept).
    #[arg(long, default_value_t = 0)]
    from: u64,
}

/// The client name the command line submits, cancels and retries as.
const CLIENT: &str = "cli";

/// Runs the engine until idle with a progress bar; returns the report.
pub fn run_with_progress(ctx: &Ctx, engine: &Engine) -> anyhow::Result<RunReport> {
    let bar = ctx.progress_bar("compute");
    let report = engine.run_until_idle(&mut |p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
    });
    bar.finish_and_clear();
    Ok(report?)
}

fn print_report(ctx: &Ctx, out: &mut dyn Write, r: &RunReport) -> anyhow::Result<()> {
    if ctx.json {
        let v = serde_json::json!({
            "succeeded": r.succeeded, "dead": r.dead, "symbols": r.symbols, "series": r.series,
            "continued": r.continued, "recomputed": r.recomputed, "seconds": r.seconds,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "ran {} jobs ({} succeeded, {} dead) over {} symbols, {} series stored, in {:.2} s",
            r.succeeded + r.dead,
            r.succeeded,
            r.dead,
            r.symbols,
            r.series,
            r.seconds
        )?;
    }
    Ok(())
}

pub fn submit(ctx: &Ctx, out: &mut dyn Write, a: SubmitArgs) -> anyhow::Result<()> {
    let engine = ctx.engine()?;
    let symbols: Vec<Symbol> = match (a.symbols, a.all) {
        (Some(list), false) => super::symbols(&list)?,
        (None, true) => engine
            .store()
            .bar_symbols()?
            .into_iter()
            .map(|(s, _)| s)
            .collect(),
        _ => anyhow::bail!("give either --symbols A,B or --all"),
    };
    let specs = kiln::features::spec::parse_list(&a.features)?;
    let jobs = engine.submit_as(CLIENT, &symbols, &specs, a.priority)?;
    let fresh = jobs
        .iter()
        .filter(|j| matches!(j, kiln::store::Enqueued::Created(_)))
        .count();
    if ctx.json && !a.wait {
        let ids: Vec<u64> = jobs.iter().map(|j| j.id()).collect();
        writeln!(out, "{}", serde_json::json!({"jobs": ids, "new": fresh}))?;
    } else if !ctx.json {
        writeln!(
            out,
            "submitted {} jobs for {} symbols ({} already queued)",
            jobs.len(),
            symbols.len(),
            jobs.len() - fresh
        )?;
    }
    if a.wait {
        let report = run_with_progress(ctx, &engine)?;
        print_report(ctx, out, &report)?;
    }
    Ok(())
}

/// Reopening attempts in a row after the store fails, before `kiln run` gives up.
const REOPENS_MAX: u32 = 5;

/// `kiln run`'s view of the run: the progress bar, the event feed for
/// `kiln watch` in other processes, and `--watch` printing.
struct Worker {
    bar: indicatif::ProgressBar,
    feed: Option<kiln::engine::feed::EventFeed>,
    feed_failed: bool,
    /// `--watch`: the last event printed.
    watching: Option<u64>,
    json: bool,
}

impl RunObserver for Worker {
    fn progress(&mut self, engine: &Engine, p: RunProgress) {
        self.bar.set_length(p.total);
        self.bar.set_position(p.done);
        if self.feed.is_none() && !self.feed_failed {
            match engine.serve_events() {
                Ok(feed) => self.feed = Some(feed),
                Err(e) => {
                    // `kiln watch` elsewhere cannot follow; the run goes on.
                    tracing::warn!(error = %e, "cannot serve the event feed");
                    self.feed_failed = true;
                }
            }
        }
        if let Some(after) = self.watching {
            let printed = print_events(engine, self.json, &mut std::io::stderr(), after);
            self.watching = Some(printed.unwrap_or(after));
        }
    }

    fn reopening(&mut self, error: &kiln::engine::EngineError, attempt: u32, wait: Duration) {
        self.feed = None;
        self.bar.suspend(|| {
            say!(
                "kiln: the store failed: {error}; reopening it in {:.1} s (attempt {attempt} of {REOPENS_MAX})",
                wait.as_secs_f64()
            );
        });
    }
}

pub fn run(ctx: &Ctx, out: &mut dyn Write, a: RunArgs) -> anyhow::Result<()> {
    let engine = ctx.engine()?;
    if a.warm_up {
        let queued = engine.warm_up()?;
        if !ctx.json {
            writeln!(
                out,
                "warm-up: queued {} refresh jobs for stale features",
                queued.len()
            )?;
        }
    }
    // SIGINT / SIGTERM: stop claiming, finish and commit the batch in hand,
    // then exit 0. (A SIGKILL loses nothing acknowledged either: unfinished
    // jobs return to the queue when the store is next opened.)
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| anyhow::anyhow!("cannot install the signal handler: {e}"))?;
    let mut worker = Worker {
        bar: ctx.progress_bar("compute"),
        feed: None,
        feed_failed: false,
        watching: a.watch.then_some(0),
        json: ctx.json,
    };
    let result = run_reopening(engine, &stop, a.until_idle, REOPENS_MAX, &mut worker);
    worker.bar.finish_and_clear();
    let (engine, report) = result?;
    if let Some(after) = worker.watching {
        // Like every message on stderr: dropped if it cannot be written.
        let _ = print_events(&engine, ctx.json, &mut std::io::stderr(), after);
    }
    drop(worker.feed.take());
    print_report(ctx, out, &report)?;
    if stop.load(Ordering::SeqCst) && !ctx.json {
        writeln!(
            out,
            "stopped on a signal; everything computed was committed"
        )?;
    }
    Ok(())
}

fn job_line(j: &Job) -> String {
    let symbols: Vec<&str> = j.symbols.iter().take(3).map(Symbol::as_str).collect();
    let more = if j.symbols.len() > 3 {
        format!(" +{}", j.symbols.len() - 3)
    } else {
        String::new()
    };
    format!(
        "{:>8}  {:<9} {:<7} {:<8} attempts {}  {}{}",
        j.id,
        j.state.as_str(),
        j.kind,
        j.priority.as_str(),
        j.attempts,
        symbols.join(","),
        more
    )
}

pub fn jobs(ctx: &Ctx, out: &mut dyn Write, command: JobsCommand) -> anyhow::Result<()> {
    let engine = ctx.engine()?;
    let store = engine.store();
    let find =
        |id: u64| -> anyhow::Result<Job> { Ok(store.job(id)?.ok_or(StoreError::UnknownJob(id))?) };
    match command {
        JobsCommand::List { state, limit } => {
            let jobs = store.jobs(&JobFilter::state(state), limit)?;
            if ctx.json {
                let v: Vec<_> = jobs.iter().map(json::job).collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else {
                for j in &jobs {
                    writeln!(out, "{}", job_line(j))?;
                }
            }
        }
        JobsCommand::Show { id } => {
            let j = find(id)?;
            if ctx.json {
                writeln!(out, "{}", json::job(&j))?;
            } else {
                writeln!(out, "{}", job_line(&j))?;
                writeln!(out, "features: {}", String::from_utf8_lossy(&j.payload))?;
                if let Some(e) = &j.last_error {
                    writeln!(out, "last error: {e}")?;
                }
            }
        }
        JobsCommand::Cancel { id } => {
            let outcome = engine.cancel_as(CLIENT, id)?;
            let text = match outcome {
                CancelOutcome::Cancelled => "cancelled".to_owned(),
                other => format!("not cancelled: {other:?}"),
            };
            if ctx.json {
                writeln!(out, "{}", serde_json::json!({"id": id, "outcome": text}))?;
            } else {
                writeln!(out, "job {id}: {text}")?;
            }
            if outcome != CancelOutcome::Cancelled {
                anyhow::bail!("job {id} was not cancelled ({outcome:?})");
            }
        }
        JobsCommand::Retry { id } => match engine.retry_as(CLIENT, id)? {
            RetryOutcome::Retried(new) => {
                if ctx.json {
                    writeln!(
                        out,
                        "{}",
                        serde_json::json!({"retried": id, "job": new.id()})
                    )?;
                } else {
                    writeln!(out, "job {id} queued again as job {}", new.id())?;
                }
            }
            RetryOutcome::NotRetryable(state) => anyhow::bail!(
                "job {id} is {}; only dead or cancelled jobs are retried",
                state.as_str()
            ),
        },
    }
    Ok(())
}

/// Follows the events of the kiln process using the data directory through
/// its event feed, until that process ends; when none is running, prints
/// the stored log.
pub fn watch(ctx: &Ctx, out: &mut dyn Write, a: WatchArgs) -> anyhow::Result<()> {
    let from = a.from;
    let dir = ctx.dir(super::DATA_DEFAULT);
    if let Ok(stream) = UnixStream::connect(feed_path(&dir)) {
        return follow(ctx, out, stream, from);
    }
    let engine = ctx.engine()?;
    print_events(&engine, ctx.json, out, from)?;
    if !ctx.json {
        say!(
            "kiln: no kiln process is using {}; `kiln run` and `kiln serve` stream events live to `kiln watch`",
            dir.display()
        );
    }
    Ok(())
}

/// Prints what the feed streams until the process serving it ends.
fn follow(ctx: &Ctx, out: &mut dyn Write, mut stream: UnixStream, from: u64) -> anyhow::Result<()> {
    writeln!(stream, "{from}")?;
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        if ctx.json {
            writeln!(out, "{line}")?;
        } else {
            let v: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("the event feed sent {line:?}"))?;
            writeln!(out, "{}", event_line(&v))?;
        }
        out.flush()?;
    }
    if !ctx.json {
        say!("kiln: the kiln process serving the events has ended");
    }
    Ok(())
}

/// Prints events after `after`; returns the last one's sequence number.
fn print_events(
    engine: &Engine,
    json: bool,
    out: &mut dyn Write,
    mut after: u64,
) -> anyhow::Result<u64> {
    loop {
        let events = engine.store().events(after, 1000)?;
        if events.is_empty() {
            return Ok(after);
        }
        for e in &events {
            after = e.seq;
            let v = json::event(e);
            if json {
                writeln!(out, "{v}")?;
            } else {
                writeln!(out, "{}", event_line(&v))?;
            }
        }
        out.flush()?;
    }
}

/// One event (as [`json::event`] renders it) as a line of text.
fn event_line(v: &serde_json::Value) -> String {
    let text = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    let symbols: Vec<&str> = v["symbols"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default();
    let error = v["error"]
        .as_str()
        .map_or(String::new(), |x| format!("  {x}"));
    format!(
        "{:>8}  job {:<8} {:<9} {} {}{}",
        v["seq"],
        v["job"],
        text("state"),
        text("kind"),
        symbols.join(","),
        error
    )
}
