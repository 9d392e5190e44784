//! kiln: a durable, embedded feature-precompute engine for trading systems.
//!
//! - [`features`]: the indicator catalog, TA-Lib-exact kernels, the plan
//!   that computes shared intermediates once, incremental continuation and
//!   parallel batches.
//! - [`market`]: ingest of OHLCV bars from CSV, Arrow IPC and Parquet with
//!   validation, export, and the synthetic universe.
//! - [`engine`]: jobs to stored features: submit, run, refresh, read, over
//!   any storage backend (`kiln-core`'s traits).
//! - [`api`]: the HTTP service over an engine.
//! - [`config`]: every key of the configuration, declared once.
//! - [`store`]: the embedded backend (the `kiln-store` crate, re-exported).
//! - [`json`]: the JSON shapes of jobs and events that the CLI and the HTTP
//!   service share; [`sys`]: the one OS call outside the store
//!   (`SCHED_IDLE`).
//!
//! The benchmarks behind `kiln bench …` are the `kiln-bench` crate.
//!
//! `ARCHITECTURE.md` at the repository's root maps how they fit together.

pub mod api;

pub mod config;
pub mod engine;
pub mod features;
pub mod json;
pub mod market;
pub mod sys;

pub use kiln_store as store;
