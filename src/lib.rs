//! kiln: a durable, embedded feature-precompute engine for trading systems.
//!
//! - [`features`]: the indicator catalog, TA-Lib-exact kernels, the plan
//!   that computes shared intermediates once, incremental continuation and
//!   parallel batches.
//! - [`store`]: the durable job queue and result store (the `kiln-store`
//!   crate, re-exported).
//! - [`market`]: ingest of OHLCV bars from CSV, Arrow IPC and Parquet with
//!   validation, export, and the synthetic universe.
//! - [`engine`]: jobs to stored features: submit, run, refresh.
//! - [`bench`]: the measurements behind `kiln bench …`.
//!
//! The HTTP API comes with later work.

pub mod api;
pub mod bench;
pub mod engine;
pub mod features;
pub mod market;

pub use kiln_store as store;
