//! rill: the command-line tool and the admin library.
//!
//! * [`cli`]: the `rill` command; an application that registers its own operators calls
//!   [`cli::main_with_registry`] from its `main` (Flink's "application mode").
//! * [`admin`]: [`admin::AdminClient`], typed Dispatcher gateway calls for admin tools.
//! * [`cluster`]: `rill jobmanager`, `rill taskmanager`, `rill minicluster`.
//! * [`client`]: `rill list`, `rill status`, `rill cancel`, `rill taskmanagers`.
//! * [`jobs`]: `rill run` and the built-in jobs.
//! * [`nexmark`]: `rill nexmark generate`, the Nexmark events file writer.
//! * [`snapshots`]: `rill checkpoints`, `rill checkpoint`, `rill savepoint`, `rill stop`.
//! * [`state_tool`]: `rill state inspect` and `rill state dump`, the offline state tool.
//! * [`demo`]: the RPC demo behind `rill demo`.

pub mod admin;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod demo;
pub mod jobs;
pub mod nexmark;
pub mod snapshots;
pub mod state_tool;
