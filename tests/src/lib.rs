//! Helpers for rill end-to-end tests.
