//! The engine's counters and their Prometheus text rendering (served by the
//! HTTP API's `/metrics`; `kiln stats --metrics` prints it), with the
//! queue's and the store's figures as gauges.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_core::{Backend, JobState, Priority};

use super::Engine;
use super::guard::BreakerState;

/// Upper bounds of the compute-duration histogram, in seconds.
const BUCKETS_S: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Outcomes counted per job status.
const STATUSES: [JobState; 3] = [JobState::Succeeded, JobState::Failed, JobState::Dead];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS_S.len()],
    count: u64,
    sum: f64,
}

/// How a feature read went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadResult {
    /// Stored and computed from the stored bars.
    Hit,
    /// Stored, but the bars changed since.
    Stale,
    /// Not stored.
    Miss,
}

/// Counters since the engine was opened.
#[derive(Default)]
pub struct Metrics {
    jobs: [[AtomicU64; 3]; 3],
    reads: [AtomicU64; 3],
    refused: AtomicU64,
    compute: Mutex<BTreeMap<String, Histogram>>,
}

fn status_index(s: JobState) -> Option<usize> {
    STATUSES.iter().position(|x| *x == s)
}

impl Metrics {
    /// Counts a job outcome.
    pub fn job(&self, status: JobState, priority: Priority) {
        if let Some(i) = status_index(status) {
            self.jobs[i][priority as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a feature read.
    pub fn read(&self, r: ReadResult) {
        self.reads[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused submission.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long one symbol's computation of `plan` took.
    pub fn compute(&self, plan: &str, seconds: f64) {
        let mut h = self.compute.lock().unwrap_or_else(|p| p.into_inner());
        let h = h.entry(plan.to_owned()).or_default();
        if let Some(b) = BUCKETS_S.iter().position(|&b| seconds <= b) {
            h.counts[b] += 1;
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// Outcomes counted so far: (succeeded, failed, dead) over all priorities.
    pub fn jobs_total(&self, status: JobState) -> u64 {
        status_index(status).map_or(0, |i| {
            self.jobs[i].iter().map(|c| c.load(Ordering::Relaxed)).sum()
        })
    }

    /// The Prometheus text exposition, with `gauges` (name, help, labels, value) appended.
    pub fn render(&self, gauges: &[(&str, &str, String, f64)]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP kiln_jobs_total Jobs finished by this process, by outcome and priority."
        );
        let _ = writeln!(out, "# TYPE kiln_jobs_total counter");
        for (i, s) in STATUSES.iter().enumerate() {
            for p in Priority::ALL {
                let v = self.jobs[i][p as usize].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "kiln_jobs_total{{status=\"{}\",priority=\"{}\"}} {v}",
                    s.as_str(),
                    p.as_str()
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP kiln_feature_reads_total Feature series reads, by result."
        );
        let _ = writeln!(out, "# TYPE kiln_feature_reads_total counter");
        for (i, name) in ["hit", "stale", "miss"].iter().enumerate() {
            let _ = writeln!(
                out,
                "kiln_feature_reads_total{{result=\"{name}\"}} {}",
                self.reads[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP kiln_submissions_refused_total Submissions refused by rate limit, queue bound or breaker."
        );
        let _ = writeln!(out, "# TYPE kiln_submissions_refused_total counter");
        let _ = writeln!(
            out,
            "kiln_submissions_refused_total {}",
            self.refused.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP kiln_compute_duration_seconds Time to compute one symbol, by the features computed together."
        );
        let _ = writeln!(out, "# TYPE kiln_compute_duration_seconds histogram");
        let compute = self.compute.lock().unwrap_or_else(|p| p.into_inner());
        for (plan, h) in compute.iter() {
            let label = plan.replace('\\', "\\\\").replace('"', "\\\"");
            let mut cumulative = 0;
            for (b, c) in BUCKETS_S.iter().zip(h.counts) {
                cumulative += c;
                let _ = writeln!(
                    out,
                    "kiln_compute_duration_seconds_bucket{{feature=\"{label}\",le=\"{b}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "kiln_compute_duration_seconds_bucket{{feature=\"{label}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "kiln_compute_duration_seconds_sum{{feature=\"{label}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "kiln_compute_duration_seconds_count{{feature=\"{label}\"}} {}",
                h.count
            );
        }
        let mut last = "";
        for (name, help, labels, value) in gauges {
            if *name != last {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} gauge");
                last = name;
            }
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
        out
    }
}

impl<B: Backend> Engine<B> {
    /// Prometheus text: job outcomes, compute durations, feature reads,
    /// refusals, queue depth, breaker state, adaptive sizes, store sizes.
    pub fn metrics(&self) -> String {
        let st = self.store.stats().unwrap_or_default();
        let rt = self.runtime_stats();
        let mut gauges: Vec<(&str, &str, String, f64)> = Vec::new();
        for p in Priority::ALL {
            gauges.push((
                "kiln_queue_depth",
                "Jobs waiting (queued or awaiting a retry), by priority.",
                format!("priority=\"{}\"", p.as_str()),
                st.depth(p) as f64,
            ));
        }
        for s in JobState::ALL {
            gauges.push((
                "kiln_jobs",
                "Jobs in the store, by state.",
                format!("state=\"{}\"", s.as_str()),
                st.count(s) as f64,
            ));
        }
        for s in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ] {
            gauges.push((
                "kiln_breaker_state",
                "The store write path's circuit breaker (1 = current state).",
                format!("state=\"{}\"", s.as_str()),
                f64::from(u8::from(rt.breaker == s)),
            ));
        }
        gauges.push((
            "kiln_claim_jobs",
            "Jobs claimed per batch (adaptive).",
            String::new(),
            rt.claim_jobs as f64,
        ));
        gauges.push((
            "kiln_inflight_batches",
            "Batches committing while the next computes (adaptive).",
            String::new(),
            rt.inflight_batches as f64,
        ));
        for (part, bytes) in self.store.sizes().unwrap_or_default() {
            gauges.push((
                "kiln_store_bytes",
                "Bytes on disk, by part of the data directory.",
                format!("part=\"{part}\""),
                bytes as f64,
            ));
        }
        self.runtime.metrics.render(&gauges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_as_prometheus_text() {
        let m = Metrics::default();
        m.job(JobState::Succeeded, Priority::High);
        m.job(JobState::Succeeded, Priority::High);
        m.job(JobState::Dead, Priority::Low);
        m.read(ReadResult::Miss);
        m.compute("rsi(14)", 0.0003);
        m.compute("rsi(14)", 2.0);
        let text = m.render(&[(
            "kiln_queue_depth",
            "Waiting jobs.",
            "priority=\"high\"".into(),
            3.0,
        )]);
        assert!(
            text.contains("kiln_jobs_total{status=\"succeeded\",priority=\"high\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("kiln_jobs_total{status=\"dead\",priority=\"low\"} 1\n"));
        assert!(text.contains("kiln_feature_reads_total{result=\"miss\"} 1\n"));
        assert!(text.contains(
            "kiln_compute_duration_seconds_bucket{feature=\"rsi(14)\",le=\"0.0005\"} 1\n"
        ));
        assert!(
            text.contains(
                "kiln_compute_duration_seconds_bucket{feature=\"rsi(14)\",le=\"+Inf\"} 2\n"
            )
        );
        assert!(text.contains("kiln_compute_duration_seconds_count{feature=\"rsi(14)\"} 2\n"));
        assert!(
            text.contains("# TYPE kiln_queue_depth gauge\nkiln_queue_depth{priority=\"high\"} 3\n")
        );
        assert_eq!(m.jobs_total(JobState::Succeeded), 2);
    }
}
