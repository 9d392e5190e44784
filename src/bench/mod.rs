//! Benchmarks run by `kiln bench …`: measurements, printed as JSON lines
//! `{"bench":…,"name":…,"value":…,"unit":…}`, never assertions.

pub mod e2e;
pub mod http;
pub mod ingest;
pub mod queue;

/// What can stop a benchmark.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
    /// The feature plan failed.
    #[error(transparent)]
    Feature(#[from] crate::features::FeatureError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// Ingest or export failed.
    #[error(transparent)]
    Market(#[from] crate::market::MarketError),
    /// Scratch files or a peer process failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
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
