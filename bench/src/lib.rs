//! kiln-bench: the benchmarks behind `kiln bench …` (the `kiln` binary
//! runs this crate's `kiln-bench` binary beside it). Measurements, printed
//! as JSON lines `{"bench":…,"name":…,"value":…,"unit":…}`, each next to a
//! peer or a physical floor measured in the same run; never assertions.
//!
//! - `queue`: the durable queue and result store, next to raw sled and a
//!   plain file, and an idle runner's pickup latency;
//! - `features`: the standard feature set's kernels;
//! - `e2e`: the peers' seed pipeline, end to end through the durable queue;
//! - `http`: feature reads over HTTP while a batch computes;
//! - `ingest`: durable ingest from Parquet and CSV, and a batch read;
//! - `live`: ticks of one new bar per symbol, ingest to durable features.

pub mod e2e;
pub mod features;
pub mod http;
pub mod ingest;
pub mod live;
pub mod queue;
mod sys;

/// What can stop a benchmark.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] kiln::config::ConfigError),
    /// The feature plan failed.
    #[error(transparent)]
    Feature(#[from] kiln::features::FeatureError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] kiln::engine::EngineError),
    /// Ingest or export failed.
    #[error(transparent)]
    Market(#[from] kiln::market::MarketError),
    /// Scratch files or a peer process failed.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// A peer baseline gave no usable figure.
    #[error("peer baseline: {0}")]
    Peer(String),
}

/// One measured figure.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchLine {
    /// The benchmark family (`queue`, `features`, …).
    pub bench: &'static str,
    /// What was measured.
    pub name: &'static str,
    /// The figure.
    pub value: f64,
    /// Its unit (`jobs/s`, `MB/s`, …).
    pub unit: &'static str,
}

impl BenchLine {
    /// The line as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "bench": self.bench,
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
        })
        .to_string()
    }
}
