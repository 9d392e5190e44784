//! `kiln submit`, `kiln run`, `kiln jobs`, `kiln watch`.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use kiln::engine::{Engine, RunReport};
use kiln::store::{CancelOutcome, Job, JobQueue, JobState, NewJob, Priority, Symbol};

use super::Ctx;

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

fn print_report(ctx: &Ctx, out: &mut impl Write, r: &RunReport) -> anyhow::Result<()> {
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

pub fn submit(
    ctx: &Ctx,
    out: &mut impl Write,
    symbols: Option<String>,
    all: bool,
    features: &str,
    priority: Priority,
    wait: bool,
) -> anyhow::Result<()> {
    let engine = ctx.engine()?;
    let symbols: Vec<Symbol> = match (symbols, all) {
        (Some(list), false) => super::symbols(&list)?,
        (None, true) => engine
            .store()
            .bar_symbols()?
            .into_iter()
            .map(|(s, _)| s)
            .collect(),
        _ => anyhow::bail!("give either --symbols A,B or --all"),
    };
    let specs = kiln::features::spec::parse_list(features)?;
    let jobs = engine.submit_as("cli", &symbols, &specs, priority)?;
    let fresh = jobs
        .iter()
        .filter(|j| matches!(j, kiln::store::Enqueued::Created(_)))
        .count();
    if ctx.json && !wait {
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
    if wait {
        let report = run_with_progress(ctx, &engine)?;
        print_report(ctx, out, &report)?;
    }
    Ok(())
}

pub fn run(
    ctx: &Ctx,
    out: &mut impl Write,
    until_idle: bool,
    warm_up: bool,
    watch: bool,
) -> anyhow::Result<()> {
    let engine = ctx.engine()?;
    // Events stream to stderr while the runner works (sled's lock keeps
    // other processes out of the data directory, so following happens here).
    let watching = Arc::new(AtomicBool::new(watch));
    let watcher = watch.then(|| {
        let (engine, watching, json) = (engine.clone(), Arc::clone(&watching), ctx.json);
        std::thread::spawn(move || {
            let mut after = 0;
            let mut err = std::io::stderr();
            loop {
                let running = watching.load(Ordering::SeqCst);
                match print_events(&engine, json, &mut err, after) {
                    Ok(last) => after = last,
                    Err(_) => return,
                }
                if !running {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    });
    if warm_up {
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
    let bar = ctx.progress_bar("compute");
    let report = engine.run(&stop, until_idle, &mut |p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
    });
    bar.finish_and_clear();
    watching.store(false, Ordering::SeqCst);
    if let Some(w) = watcher {
        let _ = w.join();
    }
    print_report(ctx, out, &report?)?;
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
        format!("{:?}", j.priority).to_lowercase(),
        j.attempts,
        symbols.join(","),
        more
    )
}

fn job_json(j: &Job) -> serde_json::Value {
    serde_json::json!({
        "id": j.id, "state": j.state.as_str(), "kind": j.kind,
        "priority": format!("{:?}", j.priority).to_lowercase(),
        "attempts": j.attempts, "symbols": j.symbols.iter().map(Symbol::as_str).collect::<Vec<_>>(),
        "payload": String::from_utf8_lossy(&j.payload), "last_error": j.last_error,
        "enqueued_ms": j.enqueued_ms, "finished_ms": j.finished_ms,
    })
}

/// `kiln jobs …`.
pub enum JobsAction {
    List {
        state: Option<JobState>,
        limit: usize,
    },
    Show(u64),
    Cancel(u64),
    Retry(u64),
}

pub fn jobs(ctx: &Ctx, out: &mut impl Write, action: JobsAction) -> anyhow::Result<()> {
    let engine = ctx.engine()?;
    let store = engine.store();
    let find = |id: u64| -> anyhow::Result<Job> {
        store
            .job(id)?
            .with_context(|| format!("no job {id} (finished jobs are kept up to history_max)"))
    };
    match action {
        JobsAction::List { state, limit } => {
            let jobs = store.jobs(state, limit)?;
            if ctx.json {
                let v: Vec<_> = jobs.iter().map(job_json).collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else {
                for j in &jobs {
                    writeln!(out, "{}", job_line(j))?;
                }
            }
        }
        JobsAction::Show(id) => {
            let j = find(id)?;
            if ctx.json {
                writeln!(out, "{}", job_json(&j))?;
            } else {
                writeln!(out, "{}", job_line(&j))?;
                writeln!(out, "features: {}", String::from_utf8_lossy(&j.payload))?;
                if let Some(e) = &j.last_error {
                    writeln!(out, "last error: {e}")?;
                }
            }
        }
        JobsAction::Cancel(id) => {
            let outcome = store.cancel(id)?;
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
        JobsAction::Retry(id) => {
            let j = find(id)?;
            if !matches!(j.state, JobState::Dead | JobState::Cancelled) {
                anyhow::bail!(
                    "job {id} is {}; only dead or cancelled jobs are retried",
                    j.state.as_str()
                );
            }
            let new = store.enqueue(
                NewJob::new(j.kind.clone(), j.payload.to_vec())
                    .symbols(j.symbols.clone())
                    .priority(j.priority),
            )?;
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
    }
    Ok(())
}

/// Prints the event log after `from` (0: the oldest kept).
pub fn watch(ctx: &Ctx, out: &mut impl Write, from: u64) -> anyhow::Result<()> {
    let engine = ctx.engine()?;
    print_events(&engine, ctx.json, out, from)?;
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
            if json {
                let v = serde_json::json!({
                    "seq": e.seq, "job": e.job_id, "state": e.state.as_str(), "kind": e.kind,
                    "attempts": e.attempts, "at_ms": e.at_ms, "symbols": e.symbols,
                    "symbols_total": e.symbols_total, "error": e.error,
                });
                writeln!(out, "{v}")?;
            } else {
                let error = e
                    .error
                    .as_deref()
                    .map_or(String::new(), |x| format!("  {x}"));
                writeln!(
                    out,
                    "{:>8}  job {:<8} {:<9} {} {}{}",
                    e.seq,
                    e.job_id,
                    e.state.as_str(),
                    e.kind,
                    e.symbols.join(","),
                    error
                )?;
            }
        }
        out.flush()?;
    }
}
