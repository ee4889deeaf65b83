//! `rill run`: builds a built-in job and runs it on a cluster.
//!
//! * `--jobmanager HOST:PORT`: submit to that cluster;
//! * `--minicluster`: start a mini-cluster in this process (JobManager + `--taskmanagers`
//!   TaskManagers with enough slots for the job) and run there;
//! * neither: submit to a JobManager at 127.0.0.1:6123 if one answers, otherwise start
//!   a mini-cluster — and say so.
//!
//! Attached runs print the job id, then a progress line every second (status, running
//! tasks, records in/out), each failure as soon as it is seen — its root cause and what
//! followed (`job …: task 'Source: lines' (2/4) failed: …; restarting in 1.0 s (restart
//! 1)`) — then the outcome; a job that FAILS ends the run with exit code 1 and its cause.
//! `--detached` returns after submission.
//! Ctrl-C cancels a mini-cluster job; on a remote cluster it only detaches.
//!
//! Exit codes: 0 the job finished (or was submitted, detached), 1 it failed or was
//! canceled, 2 bad usage, 3 the JobManager is unreachable.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rill_dataflow::{jobs, JobGraph, OperatorRegistry};
use rill_endpoints::messages::{ExecutionState, JobDetails, JobFailure, JobStatus};
use rill_endpoints::{MiniCluster, MiniClusterOptions, RillConfig};
use rill_runtime::address::HostPort;
use rill_runtime::config::RpcConfig;

use crate::admin::AdminClient;
use crate::cluster::{runtime, secret_for, shutdown_signal};

/// Arguments of `rill run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The JobManager to submit to, `ip:port` or `host:port`.
    #[arg(long, global = true)]
    pub jobmanager: Option<HostPort>,
    /// Run on a fresh mini-cluster in this process.
    #[arg(long, global = true, conflicts_with = "jobmanager")]
    pub minicluster: bool,
    /// Mini-cluster TaskManagers.
    #[arg(long, global = true, default_value_t = 1)]
    pub taskmanagers: u32,
    /// Mini-cluster slots per TaskManager (default: enough for the job).
    #[arg(long, global = true)]
    pub slots: Option<u32>,
    /// Default parallelism of the job's operators.
    #[arg(long = "parallelism", short = 'p', default_value_t = 1, global = true)]
    pub parallelism: u32,
    /// Return once the job is submitted.
    #[arg(long, global = true)]
    pub detached: bool,
    /// Start from this savepoint (or retained checkpoint) directory: operator state is
    /// matched by uid and redistributed by key group if the parallelism changed.
    #[arg(long = "from-savepoint", short = 's', global = true)]
    pub from_savepoint: Option<String>,
    /// With `--from-savepoint`: start even if the savepoint has state for an operator
    /// the job lacks (that state is dropped).
    #[arg(
        long = "allow-non-restored-state",
        short = 'n',
        global = true,
        requires = "from_savepoint"
    )]
    pub allow_non_restored_state: bool,
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
    /// Sequence source → key = id % K → count + sum per key; prints a per-key checksum
    /// when bounded.
    KeyedSum {
        /// Number of rows (unbounded when omitted: stop with Ctrl-C or `rill cancel`).
        #[arg(long)]
        rows: Option<u64>,
        /// Number of distinct keys.
        #[arg(long, default_value_t = 1000)]
        keys: u64,
        /// Source rate limit in records per second.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Text lines → key = first field → running count per key, `key,count` per record →
    /// exactly-once part files in the output directory (hidden until committed: on
    /// checkpoint completion, and at the end of the input).
    RunningCount {
        /// Input text file (or directory of files).
        #[arg(long)]
        input: String,
        /// Output directory.
        #[arg(long)]
        output: String,
        /// Source rate limit in lines per second.
        #[arg(long)]
        rate: Option<f64>,
        /// Limit the counts to this many records per second before the sink: a slow
        /// stage, so backpressure builds up (to watch checkpoints under it).
        #[arg(long)]
        throttle: Option<f64>,
    },
    /// `key,timestamp` lines (timestamps in ms) → watermarks bounded by the
    /// out-of-orderness → tumbling event-time window count per key,
    /// `key,window_start,window_end,count` per window → exactly-once part files in the
    /// output directory.
    WindowCount {
        /// Input text file (or directory of files) of `key,timestamp` lines.
        #[arg(long)]
        input: String,
        /// Output directory.
        #[arg(long)]
        output: String,
        /// Window size in milliseconds.
        #[arg(long, default_value_t = 5000)]
        size: i64,
        /// How far (ms) a timestamp may lag the largest one seen and still be on time.
        #[arg(long, default_value_t = 1000)]
        out_of_orderness: i64,
        /// Source rate limit in lines per second.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Nexmark: generated events (`--events`) or a JSON Lines file (`--events-file`) →
    /// watermarks 4 s behind event time → query q0 (bids), q1 (price in euros), q2
    /// (bids on auctions ≡ 0 mod 123), q3 (auctions of category 10 ⋈ persons in OR, ID,
    /// CA), q4 (average final price per category), q5 (hot items: most bids per 10 s
    /// window every 2 s), q6 (average final price of each seller's last 10 auctions),
    /// q7 (highest bids per 10 s window) or q8 (persons with an auction in the 10 s
    /// window they joined) → one JSON object per row to `--output` (q4 and q6: an upsert
    /// log, the last row per key is the result; discarded without it: a throughput run).
    Nexmark {
        /// The query: q0 to q8.
        #[arg(long)]
        query: String,
        /// Number of generated events.
        #[arg(
            long,
            required_unless_present = "events_file",
            conflicts_with = "events_file"
        )]
        events: Option<u64>,
        /// The generator's parameters (with `--events`).
        #[command(flatten)]
        generator: crate::nexmark::GeneratorArgs,
        /// Read the events from this JSON Lines file (`rill nexmark generate`'s format).
        #[arg(long)]
        events_file: Option<String>,
        /// Write the result rows (JSON Lines) to this file.
        #[arg(long)]
        output: Option<String>,
    },
}

/// `path` made absolute against the current directory: TaskManagers resolve paths
/// themselves, perhaps in another directory.
fn absolute(path: &str) -> anyhow::Result<String> {
    Ok(std::path::absolute(path)
        .with_context(|| format!("cannot resolve {path}"))?
        .to_string_lossy()
        .into_owned())
}

/// The Nexmark job of `rill run nexmark`; a bad query or generator parameter is a usage
/// error.
fn nexmark_job(
    query: &str,
    events: Option<u64>,
    generator: &crate::nexmark::GeneratorArgs,
    events_file: Option<&str>,
    output: Option<&str>,
    parallelism: u32,
) -> anyhow::Result<JobGraph> {
    let input = match events_file {
        Some(f) => jobs::NexmarkInput::File(absolute(f)?),
        None => jobs::NexmarkInput::Generator {
            events,
            config: generator.config()?,
        },
    };
    let output = output.map(absolute).transpose()?;
    jobs::nexmark(query, &input, output.as_deref(), parallelism)
        .map_err(|e| crate::cli::UsageError(e.to_string()).into())
}

fn build(args: &RunArgs) -> anyhow::Result<JobGraph> {
    match &args.job {
        Job::Wordcount { input, output } => jobs::wordcount(input, output, args.parallelism),
        Job::KeyedSum { rows, keys, rate } => {
            jobs::keyed_sum(*rows, *keys, *rate, args.parallelism)
        }
        Job::RunningCount {
            input,
            output,
            rate,
            throttle,
        } => jobs::running_count(input, output, *rate, *throttle, args.parallelism),
        Job::WindowCount {
            input,
            output,
            size,
            out_of_orderness,
            rate,
        } => jobs::window_count(
            input,
            output,
            *size,
            *out_of_orderness,
            *rate,
            args.parallelism,
        ),
        Job::Nexmark {
            query,
            events,
            generator,
            events_file,
            output,
        } => {
            return nexmark_job(
                query,
                *events,
                generator,
                events_file.as_deref(),
                output.as_deref(),
                args.parallelism,
            )
        }
    }
    .context("cannot build the job")
}

/// Slots the job needs: per sharing group, its largest parallelism.
fn slots_needed(job: &JobGraph) -> u32 {
    let mut groups = std::collections::BTreeMap::<&str, u32>::new();
    for v in &job.vertices {
        let g = groups.entry(&v.slot_sharing_group).or_default();
        *g = (*g).max(v.parallelism);
    }
    groups.values().sum()
}

fn progress_line(started: Instant, d: &JobDetails) -> String {
    let total: u32 = d.vertices.iter().map(|v| v.parallelism).sum();
    let running: u32 = d
        .vertices
        .iter()
        .map(|v| v.states.get(&ExecutionState::Running).copied().unwrap_or(0))
        .sum();
    let source_out: u64 = d.vertices.first().map_or(0, |v| v.records_out);
    let sink_in: u64 = d.vertices.last().map_or(0, |v| v.records_in);
    format!(
        "[{:>6.1}s] {:<11} tasks running {running}/{total}  source records out {source_out}  sink records in {sink_in}{}",
        started.elapsed().as_secs_f64(),
        d.overview.status.to_string(),
        if d.restarts > 0 { format!("  restarts {}", d.restarts) } else { String::new() }
    )
}

/// The lines for failures of `d` not printed yet (numbers above `*printed`), advancing
/// `*printed`.
fn new_failure_lines(id: &rill_dataflow::JobId, d: &JobDetails, printed: &mut u32) -> Vec<String> {
    let fresh: Vec<&JobFailure> = d.failures.iter().filter(|f| f.number > *printed).collect();
    let mut lines = Vec::new();
    if let Some(first) = fresh.first() {
        let missed = first.number - *printed - 1;
        if missed > 0 {
            lines.push(format!("job {id}: {missed} earlier failure(s) not shown"));
        }
    }
    for f in fresh {
        lines.push(format!("job {id}: {}; {}", f.cause, f.outcome));
        *printed = f.number;
    }
    lines
}

/// What a failed submission of job `name` says before the cluster's answer (which says
/// "job rejected: …" itself when the cluster refused the graph).
fn submit_context(name: &str) -> String {
    format!("cannot run job `{name}`")
}

/// Runs the job and prints its outcome.
pub fn run(
    args: &RunArgs,
    config: &RillConfig,
    registry: Arc<OperatorRegistry>,
) -> anyhow::Result<()> {
    let mut job = build(args)?;
    job.savepoint_restore =
        args.from_savepoint
            .clone()
            .map(|path| rill_dataflow::SavepointRestoreSettings {
                path,
                allow_non_restored_state: args.allow_non_restored_state,
            });
    runtime()?.block_on(run_async(args, config, registry, job))
}

async fn probe(addr: SocketAddr, config: &RillConfig) -> Option<AdminClient> {
    let secret = secret_for(config, addr).ok()?;
    let rpc = RpcConfig {
        connect_timeout: Duration::from_millis(300),
        ..config.rpc.clone()
    };
    let client = tokio::time::timeout(
        Duration::from_millis(500),
        AdminClient::connect_with(addr, &secret, &rpc),
    )
    .await
    .ok()?
    .ok()?;
    client.list_jobs().await.ok().map(|_| client)
}

async fn run_async(
    args: &RunArgs,
    config: &RillConfig,
    registry: Arc<OperatorRegistry>,
    job: JobGraph,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut cluster: Option<MiniCluster> = None;
    let client = match &args.jobmanager {
        Some(addr) => {
            let secret = secret_for(config, addr.clone())?;
            AdminClient::connect_with(addr.clone(), &secret, &config.rpc).await?
        }
        None => {
            let default: SocketAddr = crate::admin::DEFAULT_JOBMANAGER.parse().expect("valid");
            let found = if args.minicluster {
                None
            } else {
                probe(default, config).await
            };
            match found {
                Some(c) => {
                    eprintln!("rill: submitting to the JobManager at {default}");
                    c
                }
                None => {
                    let needed = slots_needed(&job);
                    let tms = args.taskmanagers.max(1);
                    let slots = args.slots.unwrap_or(needed.div_ceil(tms).max(1));
                    let mut config = config.clone();
                    config.taskmanager.number_of_task_slots = slots;
                    let bind = SocketAddr::from(([127, 0, 0, 1], 0));
                    let secret = secret_for(&config, bind)?;
                    if !args.minicluster {
                        eprintln!(
                            "rill: no JobManager at {default}; starting a local mini-cluster"
                        );
                    }
                    let mc = MiniCluster::start(
                        &config,
                        &MiniClusterOptions {
                            task_managers: tms,
                            force_remote: false,
                            bind,
                            rest_port: 0,
                        },
                        &secret,
                        registry,
                    )?;
                    let c = AdminClient::with_service(
                        mc.jobmanager().rpc().clone(),
                        mc.jobmanager().address(),
                    )
                    .await?;
                    let have = c
                        .wait_for_slots(tms * slots, Duration::from_secs(10))
                        .await?;
                    eprintln!(
                        "rill: mini-cluster up in {:.0} ms: {tms} TaskManager(s), {have} slot(s), JobManager {}",
                        started.elapsed().as_secs_f64() * 1e3,
                        mc.jobmanager().address()
                    );
                    cluster = Some(mc);
                    c
                }
            }
        }
    };
    let result = attach(args, &client, job, cluster.is_some(), started).await;
    client.close().await;
    if let Some(mc) = cluster {
        mc.shutdown().await;
    }
    result
}

async fn attach(
    args: &RunArgs,
    client: &AdminClient,
    job: JobGraph,
    own_cluster: bool,
    started: Instant,
) -> anyhow::Result<()> {
    let name = job.name.clone();
    let id = client
        .submit(job)
        .await
        .with_context(|| submit_context(&name))?;
    println!("Job has been submitted with JobID {id}");
    if args.detached {
        if own_cluster {
            eprintln!("rill: --detached has no effect on a mini-cluster in this process; waiting for the job");
        } else {
            return Ok(());
        }
    }
    let mut printed = 0;
    let wait = client.wait_for_result(id, Duration::from_secs(1), |d| {
        for line in new_failure_lines(&id, d, &mut printed) {
            eprintln!("{line}");
        }
        eprintln!("{}", progress_line(started, d));
    });
    let result = tokio::select! {
        r = wait => r?,
        _ = shutdown_signal() => {
            if own_cluster {
                eprintln!("rill: interrupted; canceling job {id}");
                client.cancel(id).await?;
                client.wait_for_result(id, Duration::from_millis(100), |_| {}).await?
            } else {
                eprintln!("rill: detached; job {id} keeps running (`rill cancel {id}` stops it)");
                return Ok(());
            }
        }
    };
    let elapsed = started.elapsed();
    match result.status {
        JobStatus::Finished => {}
        status => bail!(
            "job {id} ({name}) {status}: {}",
            result
                .failure
                .as_deref()
                .unwrap_or("no failure cause recorded")
        ),
    }
    println!(
        "job {id} FINISHED in {:.3} s",
        result.duration_ms as f64 / 1e3
    );
    if let Ok(details) = client.job_details(id).await {
        if let Some(line) = crate::client::final_checkpoint_line(&details) {
            println!("{line}");
        }
    }
    if let Job::KeyedSum {
        rows: Some(rows),
        keys,
        ..
    } = &args.job
    {
        let values = result
            .collected
            .get(jobs::KEYED_SUM_COLLECT_ID)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let checksum = jobs::keyed_sum_checksum(values).context("cannot compute the checksum")?;
        let expected = jobs::expected_keyed_sum_checksum(*rows, *keys);
        println!(
            "keyed-sum: {rows} rows, {keys} keys, {:.2} M records/s (job), {:.2} M records/s (wall), checksum {checksum:016x} ({})",
            *rows as f64 / (result.duration_ms.max(1) as f64 / 1e3) / 1e6,
            *rows as f64 / elapsed.as_secs_f64() / 1e6,
            if checksum == expected { "OK" } else { "MISMATCH" }
        );
        if checksum != expected {
            bail!("checksum {checksum:016x} differs from the expected {expected:016x}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_endpoints::messages::{FailureOutcome, JobOverview};

    fn details(failures: Vec<JobFailure>) -> JobDetails {
        JobDetails {
            overview: JobOverview {
                job: rill_dataflow::JobId([1; 16]),
                name: "j".into(),
                status: JobStatus::Restarting,
                start_time_ms: 0,
                duration_ms: 0,
            },
            restarts: 0,
            failure: None,
            vertices: Vec::new(),
            final_checkpoint: None,
            failures,
            checkpoints: Default::default(),
        }
    }

    fn failure(number: u32, outcome: FailureOutcome) -> JobFailure {
        JobFailure {
            number,
            timestamp_ms: 0,
            cause: format!("task 'Source: s' (2/4) failed: cause {number}"),
            outcome,
        }
    }

    #[test]
    fn a_rejected_submission_says_job_rejected_once() {
        use rill_endpoints::ClusterError;
        let e = anyhow::Error::from(crate::admin::AdminError::Cluster(ClusterError::InvalidJob(
            "unknown operator `acme.x`".into(),
        )))
        .context(submit_context("wordcount"));
        assert_eq!(
            format!("{e:#}"),
            "cannot run job `wordcount`: job rejected: unknown operator `acme.x`"
        );
    }

    #[test]
    fn each_failure_is_printed_once_with_its_outcome() {
        let id = rill_dataflow::JobId([1; 16]);
        let mut printed = 0;
        let first = failure(
            1,
            FailureOutcome::Restarting {
                restart: 1,
                delay_ms: 1000,
            },
        );
        let d = details(vec![first.clone()]);
        assert_eq!(
            new_failure_lines(&id, &d, &mut printed),
            [format!(
                "job {id}: task 'Source: s' (2/4) failed: cause 1; restarting in 1.0 s (restart 1)"
            )]
        );
        assert!(new_failure_lines(&id, &d, &mut printed).is_empty());
        let last = failure(
            4,
            FailureOutcome::NoRestart {
                strategy: "restart-strategy fixed-delay".into(),
            },
        );
        let d = details(vec![first, last]);
        assert_eq!(
            new_failure_lines(&id, &d, &mut printed),
            [
                format!("job {id}: 2 earlier failure(s) not shown"),
                format!(
                    "job {id}: task 'Source: s' (2/4) failed: cause 4; not restarting: restart-strategy fixed-delay"
                )
            ]
        );
        assert_eq!(printed, 4);
    }
}
