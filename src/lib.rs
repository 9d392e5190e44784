//! kiln: a durable, embedded feature-precompute engine for trading systems.

pub mod features;
