//! Command-line parsing and dispatch.
//!
//! Exit codes: `0` success, `1` the job or demo failed, `2` bad usage or configuration.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use rill_runtime::config::{self, ConfigSources, RuntimeConfig};

/// Exit code for a failed job or demo.
pub const EXIT_FAILED: i32 = 1;
/// Exit code for bad usage or configuration.
pub const EXIT_USAGE: i32 = 2;

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
    /// Run a built-in streaming job in this process and print its result.
    Run(crate::jobs::RunArgs),
    /// Start RPC endpoints in two services talking over authenticated QUIC, exercise
    /// asks, tells, fencing and death-watch, and print what happened with timings.
    Demo(crate::demo::DemoArgs),
}

/// Loads the runtime configuration from defaults, the file, `RILL_*` and `-D` overrides.
pub fn load_config(cli: &Cli) -> Result<RuntimeConfig, config::ConfigError> {
    let sources = ConfigSources {
        file: cli.config.clone(),
        overrides: cli.define.clone(),
        ..ConfigSources::default()
    };
    config::load(&sources)
}

/// Parses `args` (including the program name), runs the command and returns the exit code.
pub fn main(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> i32 {
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
    let result = match cli.command {
        Command::Run(args) => crate::jobs::run(&args),
        Command::Demo(args) => crate::demo::run(&args, &config),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rill: {e:#}");
            EXIT_FAILED
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RILL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
