//! kiln: a durable, embedded feature-precompute engine for trading systems.
//!
//! The durable job queue and result store are in the `kiln-store` crate
//! (re-exported as [`store`]); this crate adds the benchmarks and, in later
//! work, the feature kernels, market data, the engine and the HTTP API.

pub mod bench;

pub use kiln_store as store;
