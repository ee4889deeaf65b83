//! `rill run`: the built-in jobs, executed in this process by the dataflow crate's local
//! executor (parallel subtasks on their own threads, connected by in-memory channels).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rill_dataflow::{jobs, JobOutcome, LocalExecutor, OperatorRegistry};

/// Arguments of `rill run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Default parallelism of the job's operators.
    #[arg(long, short = 'p', default_value_t = 1, global = true)]
    pub parallelism: u32,
    /// The job to run.
    #[command(subcommand)]
    pub job: Job,
}

/// The built-in jobs.
#[derive(Debug, Subcommand)]
pub enum Job {
    /// Count the words of a text file: `(word,count)` lines to the output file.
    Wordcount {
        /// Input text file (or directory of files).
        #[arg(long)]
        input: String,
        /// Output file.
        #[arg(long)]
        output: String,
    },
    /// Sequence source → key = id % K → count + sum per key → blackhole; prints a per-key
    /// checksum when bounded.
    KeyedSum {
        /// Number of rows (unbounded when omitted: stop with Ctrl-C).
        #[arg(long)]
        rows: Option<u64>,
        /// Number of distinct keys.
        #[arg(long, default_value_t = 1000)]
        keys: u64,
        /// Source rate limit in records per second.
        #[arg(long)]
        rate: Option<f64>,
    },
}

/// Runs the job and prints its outcome.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let job = match &args.job {
        Job::Wordcount { input, output } => jobs::wordcount(input, output, args.parallelism),
        Job::KeyedSum { rows, keys, rate } => {
            jobs::keyed_sum(*rows, *keys, *rate, args.parallelism)
        }
    }
    .context("cannot build the job")?;
    let executor = LocalExecutor::new(Arc::new(OperatorRegistry::new()));
    eprintln!(
        "rill: running job {} ({} vertices, parallelism {}) in this process",
        job.job_id,
        job.vertices.len(),
        args.parallelism
    );
    let started = Instant::now();
    let result = executor.execute(&job).context("job rejected")?;
    let elapsed = started.elapsed();
    match &result.outcome {
        JobOutcome::Finished => {}
        other => bail!("job {} did not finish: {other:?}", job.job_id),
    }
    println!(
        "job {} FINISHED in {:.3} s",
        job.job_id,
        elapsed.as_secs_f64()
    );
    if let Job::KeyedSum {
        rows: Some(rows),
        keys,
        ..
    } = &args.job
    {
        let checksum = jobs::keyed_sum_checksum(result.collected(jobs::KEYED_SUM_COLLECT_ID))
            .context("cannot compute the checksum")?;
        let expected = jobs::expected_keyed_sum_checksum(*rows, *keys);
        println!(
            "keyed-sum: {rows} rows, {keys} keys, {:.2} M records/s, checksum {checksum:016x} ({})",
            *rows as f64 / elapsed.as_secs_f64() / 1e6,
            if checksum == expected {
                "OK"
            } else {
                "MISMATCH"
            }
        );
        if checksum != expected {
            bail!("checksum {checksum:016x} differs from the expected {expected:016x}");
        }
    }
    Ok(())
}
