//! Benchmarks run by `kiln bench …`: measurements, printed as JSON lines
//! `{"bench":…,"name":…,"value":…,"unit":…}`, never assertions.

pub mod queue;

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
