//! `rill nexmark generate`: writes the Nexmark generator's events as a JSON Lines file,
//! the input that `rill run nexmark --events-file` and Flink's `nexmark.sh` both read.
//!
//! The file holds events `0..N` in order, one JSON object per line (see
//! [`rill_dataflow::builtins::nexmark::model`]); the same `--seed`, `--events` and
//! `--events-per-second` give the same bytes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use rill_dataflow::builtins::nexmark::generator::{
    DEFAULT_BASE_TIME_MS, DEFAULT_EVENTS_PER_SECOND,
};
use rill_dataflow::builtins::nexmark::GeneratorConfig;

use crate::cli::UsageError;

/// Arguments of `rill nexmark`.
#[derive(Debug, Args)]
pub struct NexmarkArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: NexmarkCommand,
}

/// The `rill nexmark` subcommands.
#[derive(Debug, Subcommand)]
pub enum NexmarkCommand {
    /// Write generated events as a JSON Lines file.
    Generate(GenerateArgs),
}

/// The generator's parameters, shared by `rill nexmark generate` and `rill run nexmark`.
#[derive(Debug, Clone, Args)]
pub struct GeneratorArgs {
    /// Seed of the generator's random numbers.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Event-time rate: event n happens n / R seconds after the base time.
    #[arg(long, default_value_t = DEFAULT_EVENTS_PER_SECOND)]
    pub events_per_second: u64,
    /// Event time of the first event, ms since the epoch.
    #[arg(long, default_value_t = DEFAULT_BASE_TIME_MS)]
    pub base_time_ms: i64,
}

impl GeneratorArgs {
    /// The generator configuration, validated.
    pub fn config(&self) -> anyhow::Result<GeneratorConfig> {
        let c = GeneratorConfig {
            seed: self.seed,
            events_per_second: self.events_per_second,
            base_time_ms: self.base_time_ms,
        };
        c.validate().map_err(UsageError)?;
        Ok(c)
    }
}

/// Arguments of `rill nexmark generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of events.
    #[arg(long)]
    pub events: u64,
    /// The generator's parameters.
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// The file to write (replaced if it exists).
    #[arg(long)]
    pub output: PathBuf,
}

/// Runs `rill nexmark …`.
pub fn run(args: &NexmarkArgs) -> anyhow::Result<()> {
    match &args.command {
        NexmarkCommand::Generate(a) => generate(a),
    }
}

fn generate(a: &GenerateArgs) -> anyhow::Result<()> {
    let g = a.generator.config()?;
    let file =
        File::create(&a.output).with_context(|| format!("cannot create {}", a.output.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut line = Vec::with_capacity(1024);
    for n in 0..a.events {
        line.clear();
        g.event(n).write_json(&mut line);
        line.push(b'\n');
        w.write_all(&line)
            .with_context(|| format!("cannot write {}", a.output.display()))?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    eprintln!(
        "rill: wrote {} Nexmark events to {}",
        a.events,
        a.output.display()
    );
    Ok(())
}
