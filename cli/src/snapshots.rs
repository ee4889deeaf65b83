//! The checkpoint verbs: `rill checkpoints` (history), `rill checkpoint` (trigger one),
//! `rill savepoint` and `rill stop` (stop-with-savepoint). Each triggers through the
//! Dispatcher gateway and polls the request until it completes, printing the path.

use std::time::Duration;

use anyhow::bail;
use clap::Args;
use rill_endpoints::messages::{CheckpointsSummary, SavepointRequest, SnapshotStatus};
use rill_endpoints::RillConfig;

use crate::admin::AdminClient;
use crate::client::{parse_job_id, JobArgs};
use crate::cluster::{runtime, secret_for};

/// How long `rill checkpoint` / `savepoint` / `stop` wait for completion.
const WAIT: Duration = Duration::from_secs(600);

/// Arguments of `rill savepoint`.
#[derive(Debug, Args)]
pub struct SavepointArgs {
    /// The job.
    #[command(flatten)]
    pub job: JobArgs,
    /// Target directory (default: `state.savepoints.dir`); the savepoint is a new
    /// `savepoint-<job>-<id>` directory in it.
    pub target_directory: Option<String>,
}

/// Arguments of `rill stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// The job.
    #[command(flatten)]
    pub job: JobArgs,
    /// Target directory of the final savepoint (default: `state.savepoints.dir`).
    #[arg(long = "savepoint-path", short = 'p')]
    pub savepoint_path: Option<String>,
    /// Emit the final watermark and flush every operator before the savepoint (windows
    /// fire); without it the job resumes exactly where it stopped.
    #[arg(long, short = 'd')]
    pub drain: bool,
}

async fn connect(args: &JobArgs, config: &RillConfig) -> anyhow::Result<AdminClient> {
    let target = &args.target.jobmanager;
    let secret = secret_for(config, target.clone())?;
    Ok(AdminClient::connect_with(target.clone(), &secret, &config.rpc).await?)
}

/// Waits for request `id` and prints its outcome; an error if it failed.
async fn finish(
    c: &AdminClient,
    job: rill_dataflow::JobId,
    id: u64,
    what: &str,
) -> anyhow::Result<()> {
    eprintln!("rill: {what} triggered (request {id}); waiting for it to complete");
    match c.wait_for_snapshot(job, id, WAIT).await? {
        SnapshotStatus::Completed { path } => {
            println!("{what} completed: {path}");
            Ok(())
        }
        SnapshotStatus::Failed { reason } => bail!("{what} failed: {reason}"),
        SnapshotStatus::InProgress => bail!("{what} still in progress after {WAIT:?}"),
    }
}

/// `rill checkpoint JOB`.
pub fn checkpoint(args: &JobArgs, config: &RillConfig) -> anyhow::Result<()> {
    let job = parse_job_id(&args.job_id)?;
    runtime()?.block_on(async {
        let c = connect(args, config).await?;
        let id = c.trigger_checkpoint(job).await?;
        let res = finish(&c, job, id, "checkpoint").await;
        c.close().await;
        res
    })
}

/// `rill savepoint JOB [DIR]`.
pub fn savepoint(args: &SavepointArgs, config: &RillConfig) -> anyhow::Result<()> {
    let job = parse_job_id(&args.job.job_id)?;
    runtime()?.block_on(async {
        let c = connect(&args.job, config).await?;
        let request = SavepointRequest {
            target_dir: args.target_directory.clone(),
            terminate: false,
            drain: false,
        };
        let id = c.trigger_savepoint(job, request).await?;
        let res = finish(&c, job, id, "savepoint").await;
        c.close().await;
        res
    })
}

/// `rill stop JOB [--savepoint-path DIR] [--drain]`: waits for the savepoint and then
/// for the job to be FINISHED.
pub fn stop(args: &StopArgs, config: &RillConfig) -> anyhow::Result<()> {
    let job = parse_job_id(&args.job.job_id)?;
    runtime()?.block_on(async {
        let c = connect(&args.job, config).await?;
        let request = SavepointRequest {
            target_dir: args.savepoint_path.clone(),
            terminate: true,
            drain: args.drain,
        };
        let id = c.trigger_savepoint(job, request).await?;
        let mut res = finish(&c, job, id, "savepoint").await;
        if res.is_ok() {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let s = c.job_status(job).await?;
                if s.is_terminal() {
                    println!("job {job} {s}");
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    res = Err(anyhow::anyhow!(
                        "job {job} is still {s} 60 s after its savepoint"
                    ));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        c.close().await;
        res
    })
}

/// `rill checkpoints JOB`: the checkpoint history.
pub fn checkpoints(args: &JobArgs, config: &RillConfig) -> anyhow::Result<()> {
    let job = parse_job_id(&args.job_id)?;
    runtime()?.block_on(async {
        let c = connect(args, config).await?;
        let d = c.job_details(job).await?;
        print_history(&d.checkpoints);
        c.close().await;
        Ok(())
    })
}

/// Prints a checkpoint history table.
pub fn print_history(s: &CheckpointsSummary) {
    if !s.enabled {
        println!("checkpointing is off for this job (set execution.checkpointing.interval and state.checkpoints.dir)");
        return;
    }
    println!(
        "completed {}  failed {}  latest {}",
        s.completed,
        s.failed,
        s.latest_completed.as_deref().unwrap_or("-")
    );
    if let Some((id, path)) = &s.restored {
        println!("restored from checkpoint {id}: {path}");
    }
    println!(
        "{:>6}  {:<10}  {:<11}  {:>9}  {:>10}  {:>11}  {:>10}  {:>7}  DETAIL",
        "ID", "KIND", "STATUS", "DURATION", "SIZE", "ALIGNMENT", "IN-FLIGHT", "ACKED"
    );
    for r in &s.history {
        println!(
            "{:>6}  {:<10}  {:<11}  {:>9}  {:>10}  {:>11}  {:>10}  {:>7}  {}",
            r.id,
            match (r.savepoint, r.unaligned) {
                (true, _) => "savepoint",
                (false, true) => "unaligned",
                (false, false) => "checkpoint",
            },
            r.status,
            r.duration_ms.map_or("-".into(), |d| format!("{d} ms")),
            format!("{} B", r.bytes),
            format!("{} ms", r.alignment_ms),
            format!("{} B", r.in_flight_bytes),
            format!("{}/{}", r.acknowledged, r.expected),
            r.path.as_deref().or(r.failure.as_deref()).unwrap_or("")
        );
    }
}
