//! `/ui/metrics`: the figures of `GET /metrics` as tables, one per metric
//! with its help text; a histogram as its count, mean, and the bucket
//! bounds its median and 99th percentile fall under.

use std::sync::Arc;

use axum::extract::State;
use kiln_core::Backend;
use maud::html;

use super::layout::{Nav, Page, shell};
use crate::api::App;
use crate::api::reply::blocking;
use crate::api::status::metrics_text;

/// One metric of the text format.
#[derive(Debug, Default, PartialEq)]
struct Family {
    name: String,
    help: String,
    kind: String,
    /// Labels (as written) and value.
    samples: Vec<(String, String, f64)>,
}

/// A histogram's figures for one label set.
#[derive(Debug, PartialEq)]
struct Summary {
    labels: String,
    count: f64,
    sum: f64,
    p50: Option<String>,
    p99: Option<String>,
}

/// The families of Prometheus text, in order (samples keep their suffix:
/// `_bucket`, `_sum`, `_count`).
fn parse(text: &str) -> Vec<Family> {
    let mut out: Vec<Family> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push(Family {
                name: name.to_owned(),
                help: help.to_owned(),
                ..Family::default()
            });
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let (Some(f), Some((_, kind))) = (out.last_mut(), rest.split_once(' ')) {
                f.kind = kind.to_owned();
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let (series, value) = line.rsplit_once(' ').unwrap_or((line, ""));
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            let Some(f) = out.last_mut() else { continue };
            f.samples.push((
                name.to_owned(),
                labels.to_owned(),
                value.parse().unwrap_or(f64::NAN),
            ));
        }
    }
    out
}

/// `a="x,y",b="z"` as `a="x,y"` and `b="z"`: commas inside quotes (and
/// escaped quotes) do not split.
fn split_labels(labels: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&labels[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&labels[start..]);
    out.retain(|l| !l.is_empty());
    out
}

/// A histogram family's figures per label set (without `le`).
fn summarize(f: &Family) -> Vec<Summary> {
    let mut out: Vec<Summary> = Vec::new();
    let mut buckets: Vec<(String, Vec<(String, f64)>)> = Vec::new();
    for (name, labels, value) in &f.samples {
        let (le, rest): (Vec<&str>, Vec<&str>) = split_labels(labels)
            .into_iter()
            .partition(|l| l.starts_with("le="));
        let key = rest.join(",");
        let entry = match out.iter_mut().position(|s| s.labels == key) {
            Some(i) => i,
            None => {
                out.push(Summary {
                    labels: key.clone(),
                    count: 0.0,
                    sum: 0.0,
                    p50: None,
                    p99: None,
                });
                buckets.push((key.clone(), Vec::new()));
                out.len() - 1
            }
        };
        if name.ends_with("_bucket") {
            let bound = le
                .first()
                .map(|l| l.trim_start_matches("le=").trim_matches('"').to_owned())
                .unwrap_or_default();
            buckets[entry].1.push((bound, *value));
        } else if name.ends_with("_sum") {
            out[entry].sum = *value;
        } else if name.ends_with("_count") {
            out[entry].count = *value;
        }
    }
    for (s, (_, b)) in out.iter_mut().zip(&buckets) {
        let under = |q: f64| {
            b.iter()
                .find(|(_, cumulative)| *cumulative >= q * s.count && s.count > 0.0)
                .map(|(bound, _)| bound.clone())
        };
        s.p50 = under(0.5);
        s.p99 = under(0.99);
    }
    out
}

/// `GET /ui/metrics`.
pub async fn page<B: Backend>(State(app): State<Arc<App<B>>>) -> Page {
    let text = blocking(move || Ok(metrics_text(&app))).await?;
    let families = parse(&text);
    let body = html! {
        h1 { "Metrics" }
        p.muted { "The figures of " a href="/metrics" { "/metrics" } " (Prometheus text), as of this page's load." }
        @for f in &families {
            h2 #(f.name) { code { (f.name) } }
            p.muted { (f.help) " (" (f.kind) ")" }
            @if f.kind == "histogram" {
                table {
                    thead { tr { th { "Labels" } th.num { "Count" } th.num { "Mean" } th.num { "Median under" } th.num { "p99 under" } } }
                    tbody {
                        @for s in summarize(f) {
                            tr {
                                td { code { (s.labels) } }
                                td.num { (s.count) }
                                td.num { @if s.count > 0.0 { (format!("{:.6}", s.sum / s.count)) } @else { "–" } }
                                td.num { (s.p50.as_deref().unwrap_or("–")) }
                                td.num { (s.p99.as_deref().unwrap_or("–")) }
                            }
                        }
                    }
                }
            } @else {
                table {
                    thead { tr { th { "Labels" } th.num { "Value" } } }
                    tbody {
                        @for (_, labels, value) in &f.samples {
                            tr data-metric=(f.name) {
                                td { code { (labels) } }
                                td.num { (value) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(shell("Metrics", Nav::Metrics, None, None, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP a_total Things.\n# TYPE a_total counter\n\
        a_total{x=\"1\"} 3\na_total{x=\"2\"} 4\n\
        # HELP h Time.\n# TYPE h histogram\n\
        h_bucket{f=\"p,q\",le=\"0.1\"} 50\nh_bucket{f=\"p,q\",le=\"1\"} 99\nh_bucket{f=\"p,q\",le=\"+Inf\"} 100\n\
        h_sum{f=\"p,q\"} 20\nh_count{f=\"p,q\"} 100\n\
        # HELP g A gauge.\n# TYPE g gauge\ng 7.5\n";

    #[test]
    fn the_text_format_reads_as_families() {
        let f = parse(TEXT);
        assert_eq!(f.len(), 3);
        assert_eq!(
            (f[0].name.as_str(), f[0].help.as_str(), f[0].kind.as_str()),
            ("a_total", "Things.", "counter")
        );
        assert_eq!(f[0].samples[1], ("a_total".into(), "x=\"2\"".into(), 4.0));
        assert_eq!(f[2].samples, vec![("g".into(), String::new(), 7.5)]);
    }

    #[test]
    fn labels_split_outside_quotes() {
        assert_eq!(
            split_labels(r#"a="x,y",b="z\",w""#),
            vec![r#"a="x,y""#, r#"b="z\",w""#]
        );
        assert_eq!(split_labels(""), Vec::<&str>::new());
    }

    #[test]
    fn a_histogram_reads_as_count_mean_and_quantile_bounds() {
        let f = parse(TEXT);
        let s = summarize(&f[1]);
        assert_eq!(
            s,
            vec![Summary {
                labels: "f=\"p,q\"".into(),
                count: 100.0,
                sum: 20.0,
                p50: Some("0.1".into()),
                p99: Some("1".into()),
            }]
        );
    }
}
