//! The configuration file: TOML with every bound and default of the engine
//! and the store, each optional (absent keys keep their defaults), unknown
//! keys refused. [`render`] prints the effective configuration in the same
//! format, documented, so `kiln config > kiln.toml` is a starting point.

use kiln_store::{Durability, QueueConfig, RetryPolicy, StoreConfig};
use serde::Deserialize;

use super::EngineConfig;
use crate::api::ServeConfig;

/// The file's keys; see [`render`] for what each means.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    durability: Option<String>,
    attempts_max: Option<u32>,
    retry_base_ms: Option<u64>,
    retry_cap_ms: Option<u64>,
    lease_ms: Option<u64>,
    queue_depth_max: Option<u64>,
    payload_bytes_max: Option<usize>,
    job_symbols_max: Option<usize>,
    batch_jobs_max: Option<usize>,
    series_bytes_max: Option<usize>,
    complete_bytes_max: Option<usize>,
    inline_series_bytes_max: Option<usize>,
    group_ops_max: Option<usize>,
    group_linger_us: Option<u64>,
    channel_ops_max: Option<usize>,
    history_max: Option<u64>,
    events_max: Option<u64>,
    retention_ms: Option<u64>,
    segment_bytes_max: Option<u64>,
    compact_live_fraction_min: Option<f64>,
    cache_bytes_max: Option<u64>,
    tick_ms: Option<u64>,
    claim_jobs_max: Option<usize>,
    job_symbols: Option<usize>,
    checkpoint_symbols: Option<usize>,
    claim_jobs_min: Option<usize>,
    inflight_batches_max: Option<usize>,
    breaker_failures: Option<u32>,
    breaker_recovery_ms: Option<u64>,
    submit_symbols_per_s: Option<f64>,
    submit_burst_symbols: Option<f64>,
    admit_depth_max: Option<u64>,
    background_idle: Option<bool>,
    batch_symbols_max: Option<usize>,
    body_bytes_max: Option<usize>,
    bars_body_bytes_max: Option<usize>,
    bars_uploads_max: Option<usize>,
    bars_body_seconds_max: Option<u64>,
    requests_per_s: Option<f64>,
    requests_burst: Option<f64>,
}

/// Reads a configuration file's text over the defaults; the error names
/// the key and line.
pub fn parse(text: &str) -> Result<EngineConfig, String> {
    let f: File = toml::from_str(text).map_err(|e| e.to_string().trim().replace('\n', " "))?;
    let d = StoreConfig::default();
    let durability = match f.durability.as_deref() {
        None | Some("sync") => Durability::Sync,
        Some("relaxed") => Durability::Relaxed,
        Some(other) => {
            return Err(format!(
                "durability = {other:?}: want \"sync\" or \"relaxed\""
            ));
        }
    };
    let q = d.queue.clone();
    let store = StoreConfig {
        queue: QueueConfig {
            attempts_max: f.attempts_max.unwrap_or(q.attempts_max),
            retry: RetryPolicy {
                base_ms: f.retry_base_ms.unwrap_or(q.retry.base_ms),
                cap_ms: f.retry_cap_ms.unwrap_or(q.retry.cap_ms),
            },
            lease_ms: f.lease_ms.unwrap_or(q.lease_ms),
            queue_depth_max: f.queue_depth_max.unwrap_or(q.queue_depth_max),
            payload_bytes_max: f.payload_bytes_max.unwrap_or(q.payload_bytes_max),
            job_symbols_max: f.job_symbols_max.unwrap_or(q.job_symbols_max),
            batch_jobs_max: f.batch_jobs_max.unwrap_or(q.batch_jobs_max),
            series_bytes_max: f.series_bytes_max.unwrap_or(q.series_bytes_max),
            complete_bytes_max: f.complete_bytes_max.unwrap_or(q.complete_bytes_max),
            history_max: f.history_max.unwrap_or(q.history_max),
            events_max: f.events_max.unwrap_or(q.events_max),
            retention_ms: f.retention_ms.or(q.retention_ms),
            clock: q.clock,
        },
        durability,
        inline_series_bytes_max: f
            .inline_series_bytes_max
            .unwrap_or(d.inline_series_bytes_max),
        group_ops_max: f.group_ops_max.unwrap_or(d.group_ops_max),
        group_linger_us: f.group_linger_us.unwrap_or(d.group_linger_us),
        channel_ops_max: f.channel_ops_max.unwrap_or(d.channel_ops_max),
        segment_bytes_max: f.segment_bytes_max.unwrap_or(d.segment_bytes_max),
        compact_live_fraction_min: f
            .compact_live_fraction_min
            .unwrap_or(d.compact_live_fraction_min),
        cache_bytes_max: f.cache_bytes_max.unwrap_or(d.cache_bytes_max),
        tick_ms: f.tick_ms.unwrap_or(d.tick_ms),
    };
    let e = EngineConfig::default();
    Ok(EngineConfig {
        store,
        claim_jobs_max: f.claim_jobs_max.unwrap_or(e.claim_jobs_max),
        job_symbols: f.job_symbols.unwrap_or(e.job_symbols),
        checkpoint_symbols: f.checkpoint_symbols.unwrap_or(e.checkpoint_symbols),
        claim_jobs_min: f.claim_jobs_min.unwrap_or(e.claim_jobs_min),
        inflight_batches_max: f.inflight_batches_max.unwrap_or(e.inflight_batches_max),
        breaker_failures: f.breaker_failures.unwrap_or(e.breaker_failures),
        breaker_recovery_ms: f.breaker_recovery_ms.unwrap_or(e.breaker_recovery_ms),
        submit_symbols_per_s: f.submit_symbols_per_s.unwrap_or(e.submit_symbols_per_s),
        submit_burst_symbols: f.submit_burst_symbols.unwrap_or(e.submit_burst_symbols),
        admit_depth_max: f.admit_depth_max.unwrap_or(e.admit_depth_max),
        background_idle: f.background_idle.unwrap_or(e.background_idle),
        serve: ServeConfig {
            token: None,
            batch_symbols_max: f.batch_symbols_max.unwrap_or(e.serve.batch_symbols_max),
            body_bytes_max: f.body_bytes_max.unwrap_or(e.serve.body_bytes_max),
            bars_body_bytes_max: f.bars_body_bytes_max.unwrap_or(e.serve.bars_body_bytes_max),
            bars_uploads_max: f.bars_uploads_max.unwrap_or(e.serve.bars_uploads_max),
            bars_body_seconds_max: f
                .bars_body_seconds_max
                .unwrap_or(e.serve.bars_body_seconds_max),
            requests_per_s: f.requests_per_s.unwrap_or(e.serve.requests_per_s),
            requests_burst: f.requests_burst.unwrap_or(e.serve.requests_burst),
        },
    })
}

/// The configuration as a documented TOML file that [`parse`] reads back.
pub fn render(c: &EngineConfig) -> String {
    let s = &c.store;
    let durability = match s.durability {
        Durability::Sync => "sync",
        Durability::Relaxed => "relaxed",
    };
    let lines: Vec<(&str, String, &str)> = vec![
        (
            "durability",
            format!("{durability:?}"),
            "\"sync\": acknowledged = fsynced; \"relaxed\": applied, fsynced within tick_ms",
        ),
        (
            "attempts_max",
            s.queue.attempts_max.to_string(),
            "attempts a job gets before it is dead",
        ),
        (
            "retry_base_ms",
            s.queue.retry.base_ms.to_string(),
            "first retry delay (exponential, equal jitter)",
        ),
        (
            "retry_cap_ms",
            s.queue.retry.cap_ms.to_string(),
            "longest retry delay",
        ),
        (
            "lease_ms",
            s.queue.lease_ms.to_string(),
            "a claimed job returns to the queue if not finished by then",
        ),
        (
            "queue_depth_max",
            s.queue.queue_depth_max.to_string(),
            "unfinished jobs allowed; submissions beyond are refused",
        ),
        (
            "payload_bytes_max",
            s.queue.payload_bytes_max.to_string(),
            "largest job payload",
        ),
        (
            "job_symbols_max",
            s.queue.job_symbols_max.to_string(),
            "most symbols on one job",
        ),
        (
            "batch_jobs_max",
            s.queue.batch_jobs_max.to_string(),
            "most jobs in one enqueue, claim or complete call",
        ),
        (
            "series_bytes_max",
            s.queue.series_bytes_max.to_string(),
            "largest stored series",
        ),
        (
            "complete_bytes_max",
            s.queue.complete_bytes_max.to_string(),
            "most series bytes committed by one call",
        ),
        (
            "inline_series_bytes_max",
            s.inline_series_bytes_max.to_string(),
            "series up to this size live inline in sled",
        ),
        (
            "group_ops_max",
            s.group_ops_max.to_string(),
            "most operations in one group commit",
        ),
        (
            "group_linger_us",
            s.group_linger_us.to_string(),
            "how long a group waits for more callers",
        ),
        (
            "channel_ops_max",
            s.channel_ops_max.to_string(),
            "operations queued to the writer before callers wait",
        ),
        (
            "history_max",
            s.queue.history_max.to_string(),
            "finished jobs kept",
        ),
        (
            "events_max",
            s.queue.events_max.to_string(),
            "events kept in the event log",
        ),
        (
            "retention_ms",
            s.queue
                .retention_ms
                .map_or_else(|| "# none".into(), |r| r.to_string()),
            "finished jobs older than this are purged",
        ),
        (
            "segment_bytes_max",
            s.segment_bytes_max.to_string(),
            "value-log segment size",
        ),
        (
            "compact_live_fraction_min",
            format!("{:?}", s.compact_live_fraction_min),
            "segments with less live data are compacted",
        ),
        (
            "cache_bytes_max",
            s.cache_bytes_max.to_string(),
            "sled page cache",
        ),
        (
            "tick_ms",
            s.tick_ms.to_string(),
            "housekeeping period (lease expiry, relaxed flushes)",
        ),
        (
            "claim_jobs_max",
            c.claim_jobs_max.to_string(),
            "jobs claimed and computed together",
        ),
        (
            "job_symbols",
            c.job_symbols.to_string(),
            "symbols per compute job made by submit",
        ),
        (
            "checkpoint_symbols",
            c.checkpoint_symbols.to_string(),
            "symbols between checkpoints of a many-symbol job",
        ),
        (
            "claim_jobs_min",
            c.claim_jobs_min.to_string(),
            "smallest adaptive claim (the claim size moves between this and claim_jobs_max)",
        ),
        (
            "inflight_batches_max",
            c.inflight_batches_max.to_string(),
            "most batches committing while the next one computes (adaptive, from 1)",
        ),
        (
            "breaker_failures",
            c.breaker_failures.to_string(),
            "consecutive store write failures that open the circuit breaker",
        ),
        (
            "breaker_recovery_ms",
            c.breaker_recovery_ms.to_string(),
            "how long an open breaker refuses before one trial call",
        ),
        (
            "submit_symbols_per_s",
            format!("{:?}", c.submit_symbols_per_s),
            "symbols per second one client may submit (token bucket)",
        ),
        (
            "submit_burst_symbols",
            format!("{:?}", c.submit_burst_symbols),
            "symbols one client may submit at once (bucket size)",
        ),
        (
            "admit_depth_max",
            c.admit_depth_max.to_string(),
            "waiting jobs beyond which submissions are refused with a retry-after hint",
        ),
        (
            "background_idle",
            c.background_idle.to_string(),
            "kiln serve: work the queue only on CPU time requests leave (Linux SCHED_IDLE)",
        ),
        (
            "batch_symbols_max",
            c.serve.batch_symbols_max.to_string(),
            "kiln serve: most symbols in one POST /v1/compute/batch",
        ),
        (
            "body_bytes_max",
            c.serve.body_bytes_max.to_string(),
            "kiln serve: largest request body (but POST /v1/bars)",
        ),
        (
            "bars_body_bytes_max",
            c.serve.bars_body_bytes_max.to_string(),
            "kiln serve: largest POST /v1/bars body",
        ),
        (
            "bars_uploads_max",
            c.serve.bars_uploads_max.to_string(),
            "kiln serve: most POST /v1/bars bodies read and ingested at once (0 turns uploads off)",
        ),
        (
            "bars_body_seconds_max",
            c.serve.bars_body_seconds_max.to_string(),
            "kiln serve: most seconds a POST /v1/bars body may take to arrive",
        ),
        (
            "requests_per_s",
            format!("{:?}", c.serve.requests_per_s),
            "kiln serve: requests per second one client address may make (token bucket)",
        ),
        (
            "requests_burst",
            format!("{:?}", c.serve.requests_burst),
            "kiln serve: requests one client address may make at once (bucket size)",
        ),
    ];
    let mut out = String::from(
        "# kiln configuration (every key optional; absent keys keep these defaults)\n",
    );
    for (key, value, doc) in lines {
        out.push_str(&format!("\n# {doc}\n"));
        match value.strip_prefix("# ") {
            Some(v) => out.push_str(&format!("# {key} = ({v})\n")),
            None => out.push_str(&format!("{key} = {value}\n")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rendered_defaults_parse_back_to_the_defaults() {
        let text = render(&EngineConfig::default());
        let back = parse(&text).expect("parse");
        assert_eq!(render(&back), text);
        assert_eq!(
            back.store.queue.attempts_max,
            StoreConfig::default().queue.attempts_max
        );
    }

    #[test]
    fn values_override_and_mistakes_are_named() {
        let c = parse("durability = \"relaxed\"\nlease_ms = 5\n").expect("parse");
        assert_eq!(c.store.durability, Durability::Relaxed);
        assert_eq!(c.store.queue.lease_ms, 5);
        let e = parse("lease_msec = 5\n").expect_err("unknown key");
        assert!(e.contains("lease_msec"), "{e}");
        let e = parse("lease_ms = \"soon\"\n").expect_err("wrong type");
        assert!(e.contains("lease_ms") || e.contains("line 1"), "{e}");
        let e = parse("durability = \"fast\"\n").expect_err("bad value");
        assert!(e.contains("fast"), "{e}");
    }
}
