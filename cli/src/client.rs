//! The client verbs: `rill list`, `rill status`, `rill cancel`, `rill taskmanagers`.
//! Each is one [`AdminClient`] call (a typed Dispatcher gateway call).

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use rill_dataflow::JobId;
use rill_endpoints::messages::{FinalCheckpoint, JobDetails};
use rill_endpoints::RillConfig;
use rill_runtime::address::HostPort;

use crate::admin::{AdminClient, DEFAULT_JOBMANAGER};
use crate::cluster::{runtime, secret_for};

/// Where the JobManager is.
#[derive(Debug, Args)]
pub struct Target {
    /// The JobManager's RPC address, `ip:port` or `host:port`.
    #[arg(long, default_value = DEFAULT_JOBMANAGER)]
    pub jobmanager: HostPort,
}

/// Arguments of `rill status` and `rill cancel`.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// The job id (32 hex digits, as printed on submission and by `rill list`).
    pub job_id: String,
    /// The JobManager.
    #[command(flatten)]
    pub target: Target,
}

/// Arguments of `rill cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The job.
    #[command(flatten)]
    pub job: JobArgs,
    /// Return once cancellation is requested instead of waiting for CANCELED.
    #[arg(long)]
    pub no_wait: bool,
}

/// Parses a job id argument.
pub fn parse_job_id(s: &str) -> anyhow::Result<JobId> {
    s.parse::<JobId>()
        .map_err(|e| anyhow::Error::new(crate::cli::UsageError(e.to_string())))
}

async fn client(target: &Target, config: &RillConfig) -> anyhow::Result<AdminClient> {
    let secret = secret_for(config, target.jobmanager.clone())?;
    Ok(AdminClient::connect_with(target.jobmanager.clone(), &secret, &config.rpc).await?)
}

fn fmt_duration(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// `rill list`.
pub fn list(target: &Target, config: &RillConfig) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let c = client(target, config).await?;
        let jobs = c.list_jobs().await?;
        if jobs.is_empty() {
            println!("no jobs");
        } else {
            println!(
                "{:<32}  {:<11}  {:>10}  NAME",
                "JOB ID", "STATUS", "DURATION"
            );
            for j in jobs {
                println!(
                    "{}  {:<11}  {:>10}  {}",
                    j.job,
                    j.status,
                    fmt_duration(j.duration_ms),
                    j.name
                );
            }
        }
        c.close().await;
        Ok(())
    })
}

/// Prints a job's details: the status word first, alone on its line.
pub fn print_details(d: &JobDetails) {
    println!("{}", d.overview.status);
    println!("job:      {} ({})", d.overview.job, d.overview.name);
    println!("duration: {}", fmt_duration(d.overview.duration_ms));
    println!("restarts: {}", d.restarts);
    if let Some(line) = final_checkpoint_line(d) {
        println!("{line}");
    }
    let c = &d.checkpoints;
    if c.enabled {
        println!(
            "checkpoints: {} completed, {} failed, latest {}",
            c.completed,
            c.failed,
            c.latest_completed.as_deref().unwrap_or("-")
        );
        if let Some((id, path)) = &c.restored {
            println!("restored:    checkpoint {id} ({path})");
        }
    }
    if let Some(f) = &d.failure {
        println!("failure:  {f}");
    }
    for v in &d.vertices {
        let states: Vec<String> = v.states.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let mut places: Vec<String> = v
            .locations
            .iter()
            .flatten()
            .map(|r| r.to_string())
            .collect();
        places.sort();
        places.dedup();
        println!(
            "  vertex {} {:<40} parallelism {:<3} [{}] records in {} out {} on {}",
            v.vertex,
            v.name,
            v.parallelism,
            states.join(", "),
            v.records_in,
            v.records_out,
            if places.is_empty() {
                "-".into()
            } else {
                places.join(",")
            }
        );
    }
}

/// `rill status`.
pub fn status(args: &JobArgs, config: &RillConfig) -> anyhow::Result<()> {
    let job = parse_job_id(&args.job_id)?;
    runtime()?.block_on(async {
        let c = client(&args.target, config).await?;
        let d = c.job_details(job).await?;
        print_details(&d);
        c.close().await;
        Ok(())
    })
}

/// `rill cancel`.
pub fn cancel(args: &CancelArgs, config: &RillConfig) -> anyhow::Result<()> {
    let job = parse_job_id(&args.job.job_id)?;
    runtime()?.block_on(async {
        let c = client(&args.job.target, config).await?;
        c.cancel(job).await?;
        println!("cancellation of job {job} requested");
        if !args.no_wait {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let s = c.job_status(job).await?;
                if s.is_terminal() {
                    println!("job {job} {s}");
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    bail!("job {job} is still {s} after 60 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        c.close().await;
        Ok(())
    })
}

/// `rill taskmanagers`.
pub fn taskmanagers(target: &Target, config: &RillConfig) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let c = client(target, config).await?;
        let tms = c
            .task_managers()
            .await
            .context("cannot list TaskManagers")?;
        if tms.is_empty() {
            println!("no TaskManagers registered");
        } else {
            println!(
                "{:<32}  {:<22}  {:<22}  SLOTS (FREE/TOTAL)",
                "RESOURCE ID", "RPC", "DATA"
            );
            for t in tms {
                println!(
                    "{:<32}  {:<22}  {:<22}  {}/{}",
                    t.location.resource_id.to_string(),
                    t.location.rpc_address.host.to_string(),
                    t.location.data_address.to_string(),
                    t.slots_free,
                    t.slots_total
                );
            }
        }
        c.close().await;
        Ok(())
    })
}

/// `final checkpoint: …` for a finished job that wrote (or failed to write) its final
/// snapshot.
pub(crate) fn final_checkpoint_line(d: &JobDetails) -> Option<String> {
    Some(match d.final_checkpoint.as_ref()? {
        FinalCheckpoint::Completed {
            checkpoint_id,
            path,
        } => format!("final checkpoint {checkpoint_id}: {path} (`rill state inspect {path}`)"),
        FinalCheckpoint::Failed {
            checkpoint_id,
            reason,
        } => format!("final checkpoint {checkpoint_id} FAILED: {reason}"),
    })
}
