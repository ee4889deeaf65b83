//! Shared helpers for rill benchmarks.
