//! rill: the command-line tool and the admin library.
//!
//! * [`cli`]: the `rill` command (`rill run`, `rill demo`); an application that registers
//!   its own operators calls [`cli::main`] from its `main` (Flink's "application mode").
//! * [`demo`]: the RPC demo behind `rill demo`.
//! * [`jobs`]: running the built-in jobs.

pub mod cli;
pub mod demo;
pub mod jobs;
