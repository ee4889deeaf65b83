//! Command-line parsing and dispatch.
//!
//! Exit codes: `0` success, `1` the job or operation failed (or the cluster rejected
//! it), `2` bad usage or configuration, `3` the JobManager could not be reached.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use rill_dataflow::OperatorRegistry;
use rill_endpoints::RillConfig;
use rill_runtime::config::{self, ConfigSources};

use crate::admin::AdminError;

/// Exit code for a failed job or operation.
pub const EXIT_FAILED: i32 = 1;
/// Exit code for bad usage or configuration.
pub const EXIT_USAGE: i32 = 2;
/// Exit code when the JobManager cannot be reached.
pub const EXIT_UNREACHABLE: i32 = 3;

/// A usage error found after parsing (e.g. a malformed job id).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// rill: a distributed stream processor in Rust, built on Flink's architecture.
#[derive(Debug, Parser)]
#[command(name = "rill", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (TOML); defaults to ./rill.toml when present.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Configuration override, e.g. `-D heartbeat.interval=2s` (repeatable).
    #[arg(short = 'D', global = true, value_name = "KEY=VALUE")]
    pub define: Vec<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The `rill` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a JobManager (Dispatcher + ResourceManager) until Ctrl-C.
    Jobmanager(crate::cluster::JobManagerArgs),
    /// Run a TaskManager that registers at a JobManager, until Ctrl-C.
    Taskmanager(crate::cluster::TaskManagerArgs),
    /// Run a JobManager and TaskManagers in this process, until Ctrl-C.
    Minicluster(crate::cluster::MiniClusterArgs),
    /// Submit a built-in job (to `--jobmanager`, or a local mini-cluster) and follow it.
    Run(crate::jobs::RunArgs),
    /// List the cluster's jobs.
    List(crate::client::Target),
    /// Print a job's status (first line: RUNNING, FINISHED, FAILED, …) and details.
    Status(crate::client::JobArgs),
    /// Cancel a job and wait until it is CANCELED.
    Cancel(crate::client::CancelArgs),
    /// List the registered TaskManagers and their slots.
    Taskmanagers(crate::client::Target),
    /// Start RPC endpoints in two services talking over authenticated QUIC, exercise
    /// asks, tells, fencing and death-watch, and print what happened with timings.
    Demo(crate::demo::DemoArgs),
    /// Inspect or dump a checkpoint, savepoint or state file offline.
    State(crate::state_tool::StateArgs),
    /// A job's checkpoint history: id, kind, status, duration, size, alignment, and what
    /// the last restart restored.
    Checkpoints(crate::client::JobArgs),
    /// Take a checkpoint of a running job now and print its directory.
    Checkpoint(crate::client::JobArgs),
    /// Take a savepoint of a running job and print its directory.
    Savepoint(crate::snapshots::SavepointArgs),
    /// Nexmark tools: `rill nexmark generate` writes generated events as JSON Lines.
    Nexmark(crate::nexmark::NexmarkArgs),
    /// Stop a job with a final savepoint (stop-with-savepoint); the job ends FINISHED.
    Stop(crate::snapshots::StopArgs),
}

/// Loads the configuration from defaults, the file, `RILL_*` and `-D` overrides.
pub fn load_config(cli: &Cli) -> Result<RillConfig, config::ConfigError> {
    let sources = ConfigSources {
        file: cli.config.clone(),
        overrides: cli.define.clone(),
        ..ConfigSources::default()
    };
    config::load(&sources)
}

/// Parses `args` (including the program name), runs the command with the built-in
/// operators and returns the exit code.
pub fn main(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> i32 {
    main_with_registry(args, Arc::new(OperatorRegistry::new()))
}

/// Like [`main`], with an application's own operator registry (Flink's application
/// mode: a binary that links `rill`, registers its operators, and calls this).
pub fn main_with_registry(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    registry: Arc<OperatorRegistry>,
) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { 0 };
        }
    };
    init_logging();
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rill: configuration error: {e}");
            return EXIT_USAGE;
        }
    };
    let result = match &cli.command {
        Command::Jobmanager(a) => crate::cluster::jobmanager(a, &config, registry),
        Command::Taskmanager(a) => crate::cluster::taskmanager(a, &config, registry),
        Command::Minicluster(a) => crate::cluster::minicluster(a, &config, registry),
        Command::Run(a) => crate::jobs::run(a, &config, registry),
        Command::List(t) => crate::client::list(t, &config),
        Command::Status(a) => crate::client::status(a, &config),
        Command::Cancel(a) => crate::client::cancel(a, &config),
        Command::Taskmanagers(t) => crate::client::taskmanagers(t, &config),
        Command::Demo(a) => crate::demo::run(a, &config.runtime()),
        Command::State(a) => crate::state_tool::run(a),
        Command::Checkpoints(a) => crate::snapshots::checkpoints(a, &config),
        Command::Checkpoint(a) => crate::snapshots::checkpoint(a, &config),
        Command::Savepoint(a) => crate::snapshots::savepoint(a, &config),
        Command::Stop(a) => crate::snapshots::stop(a, &config),
        Command::Nexmark(a) => crate::nexmark::run(a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rill: {}", error_message(&e));
            exit_code(&e)
        }
    }
}

/// `e` and its causes, each said once. Errors that embed their source in their own
/// message (`handshake with … failed: <source>`) and also return it as `source()` would
/// otherwise print every cause once per level of the chain.
fn error_message(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

fn exit_code(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if cause.is::<UsageError>() {
            return EXIT_USAGE;
        }
        if let Some(AdminError::Unreachable { .. }) = cause.downcast_ref::<AdminError>() {
            return EXIT_UNREACHABLE;
        }
    }
    EXIT_FAILED
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RILL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the cluster secret does not match: refused")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("handshake with rill://h:1 failed: {source}")]
    struct Middle {
        source: Inner,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot reach the JobManager at h:1: {source}")]
    struct Outer {
        source: Middle,
    }

    #[test]
    fn error_message_says_each_cause_once() {
        let e = anyhow::Error::new(Outer {
            source: Middle { source: Inner },
        });
        assert_eq!(
            error_message(&e),
            "cannot reach the JobManager at h:1: handshake with rill://h:1 failed: \
             the cluster secret does not match: refused"
        );
        // Context that does not repeat its cause keeps the cause.
        let e = anyhow::Error::new(Inner).context("cannot list jobs");
        assert_eq!(
            error_message(&e),
            "cannot list jobs: the cluster secret does not match: refused"
        );
    }
}
