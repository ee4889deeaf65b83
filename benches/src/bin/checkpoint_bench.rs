//! The checkpoint figures of issue #10, printed as one table with their targets.
//!
//! * **cost**: keyed-sum unbounded at full speed (datagen → key = id % K → count + sum
//!   per key → blackhole) on an in-process [`MiniCluster`] (1 TaskManager × P slots),
//!   with periodic checkpoints every 1 s and without, on the heap and the lsm backend
//!   (lsm checkpoints incremental). The four variants run alternately, round after
//!   round, each on a fresh cluster. A round measures the aggregation's records in over a
//!   fixed window after a warm-up. Task counters reach the JobMaster with heartbeats
//!   (every 1 s), so the counter is polled every 20 ms and the window runs from one
//!   counter change to the last change before the window ends: the rate is the records
//!   between two heartbeats divided by the time between their arrivals, and the
//!   heartbeat period adds no error. Also reports events per CPU-second of the process
//!   and the checkpoints completed / failed within the window. Medians over the rounds;
//!   the loss is `1 − with / without` per backend.
//! * **size**: the same job with 1M keys and checkpoints every 1 s, per backend, for a
//!   fixed time. The job details keep only the last 10 checkpoints, so the history is
//!   polled every 500 ms and distinct ids collected. p50 / p99 of duration, bytes and
//!   alignment over the completed ones (the first, full lsm checkpoint reported apart).
//! * **backpressure**: aligned vs unaligned checkpoints under backpressure. An unbounded
//!   full-speed datagen → key = id % K → running count per key (emitting every update) →
//!   `throttle` (at most `--throttle` records/s per subtask) → blackhole, on a
//!   MiniCluster with P = `--backpressure-parallelism` (2) slots: the throttle sleeps, so
//!   the count's input channels stay full and a barrier waits behind them. Checkpoints
//!   every 1 s, aligned, unaligned (`execution.checkpointing.unaligned.enabled`) and
//!   aligned turning unaligned after 100 ms (`aligned-checkpoint-timeout`),
//!   alternated for `--rounds` rounds of `--backpressure-secs` each; p50 / p99 of the
//!   completed checkpoints' duration and alignment, the in-flight data unaligned ones
//!   stored, and the throttled throughput (unchanged by design).
//! * **recovery**: a `rill jobmanager` and two `rill taskmanager --slots 1` processes run
//!   keyed-sum (p = 1, unbounded, full speed) with checkpoints every 1 s; after at least
//!   one completed checkpoint the TaskManager running the tasks gets SIGKILL. Measured
//!   from the kill: the job is RUNNING again with every task RUNNING and
//!   `checkpoints.restored` set. Then records must flow and a new checkpoint complete.
//!   Restart strategy fixed-delay (100 ms), and the default with checkpointing
//!   (exponential-delay from 1 s). Median of `--recovery-runs`, killing at different
//!   phases of the 1 s liveness pings.
//!
//! The process figures run the real `rill` binary, looked up next to this bench's
//! executable (build it first: `cargo build --release -p rill`) or given with `--rill`.
//! Children's stderr goes to log files in a directory printed at the end.
//!
//! Usage: `cargo run --release -p rill-benches --bin checkpoint_bench -- [--only cost|size|backpressure|recovery] [--rounds N] [--warmup S] [--window S] [--keys K] [--parallelism P] [--size-keys K] [--size-secs S] [--throttle R] [--backpressure-secs S] [--backpressure-parallelism P] [--recovery-runs N] [--restart fixed|default|both] [--rill PATH]`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rill::admin::AdminClient;
use rill_benches::{
    all_running, block_on, cancel_and_wait, ensure_recovering, process_cpu, start_mini_cluster,
    wait_for_slots, Bench, Flags, ProcessCluster, Row,
};
use rill_dataflow::{jobs, JobId, OperatorRegistry};
use rill_endpoints::messages::{CheckpointInfo, JobDetails};
use rill_endpoints::{JobStatus, MiniCluster, RillConfig};
use rill_runtime::config::Validate;
use rill_state::BackendKind;

/// The passphrase every process of the recovery figure shares.
const SECRET: &str = "rill-checkpoint-bench";
/// The checkpoint interval of every figure.
const INTERVAL: Duration = Duration::from_secs(1);
/// How often the cost figure polls the task counters.
const COUNTER_POLL: Duration = Duration::from_millis(20);
/// How often the size figure polls the checkpoint history (it keeps the last 10).
const HISTORY_POLL: Duration = Duration::from_millis(500);
/// Every wait on a cluster is bounded by this.
const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// The name of the vertex whose records in the cost figure counts.
const AGG: &str = "count+sum";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Figure {
    Cost,
    Size,
    Backpressure,
    Recovery,
}

impl Figure {
    const ALL: [Figure; 4] = [
        Figure::Cost,
        Figure::Size,
        Figure::Backpressure,
        Figure::Recovery,
    ];

    fn name(self) -> &'static str {
        match self {
            Figure::Cost => "cost",
            Figure::Size => "size",
            Figure::Backpressure => "backpressure",
            Figure::Recovery => "recovery",
        }
    }
}

const BENCH: Bench<Figure> = Bench {
    name: "checkpoint-bench",
    figures: &Figure::ALL,
    figure_name: Figure::name,
    processes: &[Figure::Recovery],
};

/// Which restart strategies the recovery figure runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Restart {
    /// `fixed-delay`, 100 ms.
    Fixed,
    /// Nothing configured: exponential-delay from 1 s, checkpointing being on.
    Default,
}

impl Restart {
    fn name(self) -> &'static str {
        match self {
            Restart::Fixed => "fixed-delay 100 ms",
            Restart::Default => "default (exponential-delay from 1 s)",
        }
    }

    fn defines(self) -> &'static [&'static str] {
        match self {
            Restart::Fixed => &[
                "restart-strategy.type=fixed-delay",
                "restart-strategy.fixed-delay.attempts=1000",
                "restart-strategy.fixed-delay.delay=100ms",
            ],
            Restart::Default => &[],
        }
    }
}

struct Args {
    only: Option<Figure>,
    rounds: usize,
    warmup: Duration,
    window: Duration,
    keys: u64,
    parallelism: u32,
    size_keys: u64,
    size_time: Duration,
    throttle: f64,
    backpressure_time: Duration,
    backpressure_parallelism: u32,
    recovery_runs: usize,
    restarts: Vec<Restart>,
    rill: Option<PathBuf>,
}

const USAGE: &str = "usage: checkpoint_bench [--only cost|size|backpressure|recovery] [--rounds N] [--warmup S] [--window S] [--keys K] [--parallelism P] [--size-keys K] [--size-secs S] [--throttle R] [--backpressure-secs S] [--backpressure-parallelism P] [--recovery-runs N] [--restart fixed|default|both] [--rill PATH]";

fn parse_args() -> Result<Args> {
    let mut args = Args {
        only: None,
        rounds: 3,
        warmup: Duration::from_secs(5),
        window: Duration::from_secs(20),
        keys: 1000,
        parallelism: 1,
        size_keys: 1_000_000,
        size_time: Duration::from_secs(60),
        throttle: 20_000.0,
        backpressure_time: Duration::from_secs(20),
        backpressure_parallelism: 2,
        recovery_runs: 3,
        restarts: vec![Restart::Fixed, Restart::Default],
        rill: None,
    };
    let mut flags = Flags::from_env(USAGE);
    while let Some(flag) = flags.next_flag() {
        match flag.as_str() {
            "--only" => args.only = Some(BENCH.parse_figure(&flags.value()?)?),
            "--rounds" => args.rounds = flags.number()?,
            "--warmup" => args.warmup = flags.seconds()?,
            "--window" => args.window = flags.seconds()?,
            "--keys" => args.keys = flags.number()?,
            "--parallelism" => args.parallelism = flags.number()?,
            "--size-keys" => args.size_keys = flags.number()?,
            "--size-secs" => args.size_time = flags.seconds()?,
            "--throttle" => args.throttle = flags.number::<u64>()? as f64,
            "--backpressure-secs" => args.backpressure_time = flags.seconds()?,
            "--backpressure-parallelism" => args.backpressure_parallelism = flags.number()?,
            "--recovery-runs" => args.recovery_runs = flags.number()?,
            "--restart" => {
                args.restarts = match flags.value()?.as_str() {
                    "fixed" => vec![Restart::Fixed],
                    "default" => vec![Restart::Default],
                    "both" => vec![Restart::Fixed, Restart::Default],
                    other => bail!("--restart {other}: one of fixed, default, both"),
                }
            }
            "--rill" => args.rill = Some(PathBuf::from(flags.value()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(flags.unknown()),
        }
    }
    ensure!(
        args.rounds > 0 && args.recovery_runs > 0 && args.keys > 0 && args.size_keys > 0,
        "--rounds, --recovery-runs, --keys and --size-keys must be positive"
    );
    ensure!(
        args.parallelism > 0 && args.backpressure_parallelism > 0 && args.throttle > 0.0,
        "--parallelism, --backpressure-parallelism and --throttle must be positive"
    );
    Ok(args)
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The `q`-quantile (0..=1) of `xs` by nearest rank.
fn quantile(xs: &[f64], q: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn mega(x: f64) -> String {
    format!("{:.2} M ev/s", x / 1e6)
}

fn mib(bytes: f64) -> String {
    if bytes < 1024.0 * 1024.0 {
        format!("{:.1} KiB", bytes / 1024.0)
    } else {
        format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn range(xs: &[f64], unit: impl Fn(f64) -> String) -> String {
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{} – {}", unit(min), unit(max))
}

/// A MiniCluster with one TaskManager × `parallelism` slots, its admin client, and the
/// directories it checkpoints to and keeps lsm state in (removed when dropped).
struct Cluster {
    cluster: MiniCluster,
    client: AdminClient,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Cluster {
    async fn start(
        registry: &Arc<OperatorRegistry>,
        backend: BackendKind,
        checkpoints: bool,
        parallelism: u32,
    ) -> Result<Self> {
        Self::start_with(registry, backend, checkpoints, parallelism, |_| {}).await
    }

    async fn start_with(
        registry: &Arc<OperatorRegistry>,
        backend: BackendKind,
        checkpoints: bool,
        parallelism: u32,
        tune: impl FnOnce(&mut RillConfig),
    ) -> Result<Self> {
        let chk = tempfile::tempdir()?;
        let local = tempfile::tempdir()?;
        let mut config = RillConfig::default();
        config.taskmanager.number_of_task_slots = parallelism;
        config.state.backend.kind = backend;
        config.state.backend.lsm.localdir = Some(local.path().to_path_buf());
        if checkpoints {
            config.execution.checkpointing.interval = Some(INTERVAL);
            config.state.checkpoints.dir = Some(format!("file://{}", chk.path().display()));
            if backend == BackendKind::Lsm {
                config.execution.checkpointing.incremental = Some(true);
            }
        }
        tune(&mut config);
        config.validate()?;
        let (cluster, client) = start_mini_cluster(&config, registry.clone(), parallelism).await?;
        Ok(Cluster {
            cluster,
            client,
            _dirs: (chk, local),
        })
    }

    /// Submits an unbounded full-speed keyed-sum and waits until every task runs.
    async fn run_keyed_sum(&self, keys: u64, parallelism: u32) -> Result<JobId> {
        let job = self
            .client
            .submit(jobs::keyed_sum(None, keys, None, parallelism)?)
            .await?;
        wait_all_running(&self.client, job).await?;
        Ok(job)
    }

    /// Ends a figure's run on this cluster: cancels `job` and shuts down after a
    /// successful `outcome`, only shuts down after a failed one (whose error wins).
    async fn finish<T>(self, outcome: Result<(JobId, T)>) -> Result<T> {
        match outcome {
            Ok((job, value)) => {
                self.stop(job).await?;
                Ok(value)
            }
            Err(e) => {
                self.client.close().await;
                self.cluster.shutdown().await;
                Err(e)
            }
        }
    }

    async fn stop(self, job: JobId) -> Result<()> {
        let cancelled = cancel(&self.client, job).await;
        self.client.close().await;
        self.cluster.shutdown().await;
        cancelled
    }
}

async fn wait_all_running(client: &AdminClient, job: JobId) -> Result<JobDetails> {
    rill_benches::wait_all_running(client, job, WAIT_LIMIT).await
}

async fn cancel(client: &AdminClient, job: JobId) -> Result<()> {
    cancel_and_wait(client, job, WAIT_LIMIT).await
}

/// Fails if the job is no longer RUNNING, naming its failure and checkpoint history.
fn ensure_running(d: &JobDetails, what: &str) -> Result<()> {
    ensure!(
        d.overview.status == JobStatus::Running && d.restarts == 0,
        "{what}: job {} after {} restarts, failure {:?}; checkpoints {}",
        d.overview.status,
        d.restarts,
        d.failure,
        describe_history(d)
    );
    Ok(())
}

fn describe_history(d: &JobDetails) -> String {
    let c = &d.checkpoints;
    let last: Vec<String> = c
        .history
        .iter()
        .rev()
        .take(3)
        .map(|i| {
            format!(
                "#{} {} {:?} ms {} B acked {}/{}{}",
                i.id,
                i.status,
                i.duration_ms,
                i.bytes,
                i.acknowledged,
                i.expected,
                i.failure
                    .as_deref()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default()
            )
        })
        .collect();
    format!(
        "{} completed, {} failed; newest: [{}]",
        c.completed,
        c.failed,
        last.join("; ")
    )
}

fn agg_records_in(d: &JobDetails) -> Result<u64> {
    d.vertices
        .iter()
        .find(|v| v.name.contains(AGG))
        .map(|v| v.records_in)
        .with_context(|| format!("no vertex named {AGG}"))
}

// ---------------------------------------------------------------------------------------
// 1. Checkpoint cost

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Variant {
    backend: BackendKind,
    checkpoints: bool,
}

impl Variant {
    fn name(self) -> String {
        format!(
            "{}, {}",
            self.backend.name(),
            if self.checkpoints {
                if self.backend == BackendKind::Lsm {
                    "checkpoints 1 s (incremental)"
                } else {
                    "checkpoints 1 s"
                }
            } else {
                "no checkpoints"
            }
        )
    }
}

struct CostRound {
    rate: f64,
    per_cpu: f64,
    /// Checkpoints completed and failed within the window.
    completed: u64,
    failed: u64,
    /// Durations (ms) of the checkpoints completed in the window, as far as the history
    /// still held them at its end.
    durations: Vec<u64>,
}

/// Measures the aggregation's input rate over `window` (between heartbeat arrivals; see
/// the module docs) and the process's CPU meanwhile.
async fn measure_rate(
    client: &AdminClient,
    job: JobId,
    window: Duration,
) -> Result<(f64, f64, JobDetails, JobDetails)> {
    /// The next change of the counter: its value, arrival time and CPU then.
    async fn next_change(
        client: &AdminClient,
        job: JobId,
        from: u64,
    ) -> Result<(u64, Instant, Duration, JobDetails)> {
        let t = Instant::now();
        loop {
            let d = client.job_details(job).await?;
            ensure_running(&d, "while measuring")?;
            let v = agg_records_in(&d)?;
            if v != from {
                return Ok((v, Instant::now(), process_cpu(), d));
            }
            ensure!(
                t.elapsed() < Duration::from_secs(10),
                "records in stuck at {v} for 10 s; checkpoints {}",
                describe_history(&d)
            );
            tokio::time::sleep(COUNTER_POLL).await;
        }
    }
    let now = agg_records_in(&client.job_details(job).await?)?;
    let (v0, t0, cpu0, d0) = next_change(client, job, now).await?;
    let (mut v1, mut t1, mut cpu1, mut d1) = (v0, t0, cpu0, d0.clone());
    while t1 - t0 < window {
        (v1, t1, cpu1, d1) = next_change(client, job, v1).await?;
    }
    let secs = (t1 - t0).as_secs_f64();
    let cpu = (cpu1.saturating_sub(cpu0)).as_secs_f64().max(1e-3);
    let events = (v1 - v0) as f64;
    Ok((events / secs, events / cpu, d0, d1))
}

async fn cost_once(
    registry: &Arc<OperatorRegistry>,
    v: Variant,
    keys: u64,
    args: &Args,
) -> Result<CostRound> {
    let c = Cluster::start(registry, v.backend, v.checkpoints, args.parallelism).await?;
    let outcome = async {
        let job = c.run_keyed_sum(keys, args.parallelism).await?;
        tokio::time::sleep(args.warmup).await;
        let (rate, per_cpu, d0, d1) = measure_rate(&c.client, job, args.window).await?;
        let (k0, k1) = (&d0.checkpoints, &d1.checkpoints);
        let completed = k1.completed - k0.completed;
        let failed = k1.failed - k0.failed;
        let first = k0.history.iter().map(|i| i.id).max().unwrap_or(0);
        let durations = k1
            .history
            .iter()
            .filter(|i| i.id > first && i.status == "COMPLETED")
            .filter_map(|i| i.duration_ms)
            .collect();
        if v.checkpoints && completed == 0 {
            println!(
                "    NO checkpoint completed within the window: {}",
                describe_history(&d1)
            );
        }
        Ok((
            job,
            CostRound {
                rate,
                per_cpu,
                completed,
                failed,
                durations,
            },
        ))
    }
    .await;
    c.finish(outcome).await
}

async fn cost(registry: &Arc<OperatorRegistry>, args: &Args) -> Result<Vec<Row>> {
    let p = args.parallelism;
    println!(
        "== checkpoint cost: keyed-sum unbounded at full speed, {} keys, p={p}, MiniCluster 1 TaskManager × {p} slot(s); {} warm-up, {} window; variants alternated, {} rounds",
        args.keys,
        secs(args.warmup),
        secs(args.window),
        args.rounds
    );
    let variants: Vec<Variant> = [BackendKind::Heap, BackendKind::Lsm]
        .into_iter()
        .flat_map(|backend| {
            [false, true].map(|checkpoints| Variant {
                backend,
                checkpoints,
            })
        })
        .collect();
    let mut rounds: Vec<Vec<CostRound>> = variants.iter().map(|_| Vec::new()).collect();
    for r in 1..=args.rounds {
        for (i, v) in variants.iter().enumerate() {
            let round = cost_once(registry, *v, args.keys, args)
                .await
                .with_context(|| format!("{} round {r}", v.name()))?;
            let durations = if round.durations.is_empty() {
                String::new()
            } else {
                let d: Vec<f64> = round.durations.iter().map(|&d| d as f64).collect();
                format!(
                    ", durations p50 {:.0} ms max {:.0} ms",
                    quantile(&d, 0.5),
                    quantile(&d, 1.0)
                )
            };
            println!(
                "  round {r} {:<40} {:>8}, {:>8} per CPU-second; checkpoints in window: {} completed, {} failed{durations}",
                v.name(),
                mega(round.rate),
                mega(round.per_cpu),
                round.completed,
                round.failed,
            );
            rounds[i].push(round);
        }
    }
    let mut rows = Vec::new();
    for backend in [BackendKind::Heap, BackendKind::Lsm] {
        let stats = |checkpoints: bool| {
            let i = variants
                .iter()
                .position(|v| v.backend == backend && v.checkpoints == checkpoints)
                .expect("every backend runs with and without checkpoints");
            let rs = &rounds[i];
            let rates: Vec<f64> = rs.iter().map(|r| r.rate).collect();
            let cpu: Vec<f64> = rs.iter().map(|r| r.per_cpu).collect();
            let completed: u64 = rs.iter().map(|r| r.completed).sum();
            let failed: u64 = rs.iter().map(|r| r.failed).sum();
            (rates, cpu, completed, failed)
        };
        let (off, off_cpu, _, _) = stats(false);
        let (on, on_cpu, completed, failed) = stats(true);
        let (m_off, m_on) = (median(&off), median(&on));
        let loss = 100.0 * (1.0 - m_on / m_off);
        let cpu_loss = 100.0 * (1.0 - median(&on_cpu) / median(&off_cpu));
        let name = backend.name();
        println!(
            "  {name}: no checkpoints {} ({}), checkpoints 1 s {} ({}): loss {loss:.1} % (per CPU-second {cpu_loss:.1} %)",
            mega(m_off),
            range(&off, mega),
            mega(m_on),
            range(&on, mega),
        );
        rows.extend([
            Row::new(
                format!("{name}, no checkpoints, events/s (median)"),
                mega(m_off),
            ),
            Row::new(
                format!("{name}, checkpoints every 1 s, events/s (median)"),
                mega(m_on),
            ),
            Row::new(format!("  {name} throughput loss"), format!("{loss:.1} %"))
                .target("≤ 10 %", loss <= 10.0),
            Row::new(
                format!("  {name} events per CPU-second: off / on"),
                format!("{} / {}", mega(median(&off_cpu)), mega(median(&on_cpu))),
            ),
            Row::new(
                format!("  {name} checkpoints in the windows: completed / failed"),
                format!("{completed} / {failed}"),
            )
            .target("all complete", completed > 0 && failed == 0),
        ]);
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------
// 2. Checkpoint duration and size

async fn size_once(
    registry: &Arc<OperatorRegistry>,
    backend: BackendKind,
    args: &Args,
) -> Result<Vec<Row>> {
    let c = Cluster::start(registry, backend, true, args.parallelism).await?;
    let outcome = async {
        let job = c.run_keyed_sum(args.size_keys, args.parallelism).await?;
        let t = Instant::now();
        let mut seen = BTreeMap::<u64, CheckpointInfo>::new();
        let mut last = c.client.job_details(job).await?;
        while t.elapsed() < args.size_time {
            tokio::time::sleep(HISTORY_POLL).await;
            last = c.client.job_details(job).await?;
            ensure_running(&last, "while checkpointing")?;
            for i in &last.checkpoints.history {
                seen.insert(i.id, i.clone());
            }
        }
        let records = agg_records_in(&last)?;
        Ok((job, (seen, last, records, t.elapsed())))
    }
    .await;
    let (seen, last, records, elapsed) = c.finish(outcome).await?;
    let name = backend.name();
    let done: Vec<&CheckpointInfo> = seen.values().filter(|i| i.status == "COMPLETED").collect();
    let failed = seen.values().filter(|i| i.status == "FAILED").count();
    let missed = last.checkpoints.completed as usize - done.len();
    println!(
        "  {name}: {} checkpoints seen in {} ({} completed, {failed} failed; job counts {} completed, {} failed{}); {:.2} M events processed",
        seen.len(),
        secs(elapsed),
        done.len(),
        last.checkpoints.completed,
        last.checkpoints.failed,
        if missed > 0 {
            format!(", {missed} completed ones left the history between polls")
        } else {
            String::new()
        },
        records as f64 / 1e6
    );
    for i in seen.values().filter(|i| i.status == "FAILED") {
        println!("    #{} FAILED: {:?}", i.id, i.failure);
    }
    ensure!(
        !done.is_empty(),
        "{name}: no checkpoint completed in {}: {}",
        secs(elapsed),
        describe_history(&last)
    );
    // With incremental lsm checkpoints the first is full: reported apart.
    let (first, steady): (Vec<&CheckpointInfo>, Vec<&CheckpointInfo>) =
        if backend == BackendKind::Lsm && done.len() > 1 {
            (done[..1].to_vec(), done[1..].to_vec())
        } else {
            (Vec::new(), done.clone())
        };
    let dur: Vec<f64> = steady
        .iter()
        .filter_map(|i| i.duration_ms)
        .map(|d| d as f64)
        .collect();
    let bytes: Vec<f64> = steady.iter().map(|i| i.bytes as f64).collect();
    let align: Vec<f64> = steady.iter().map(|i| i.alignment_ms as f64).collect();
    let ms = |x: f64| format!("{x:.0} ms");
    let what = if first.is_empty() {
        format!("{name}, {} checkpoints", steady.len())
    } else {
        format!(
            "{name} incremental, {} checkpoints after the first",
            steady.len()
        )
    };
    println!(
        "  {what}: duration p50 {} p99 {}, size p50 {} p99 {}, alignment p50 {} p99 {}",
        ms(quantile(&dur, 0.5)),
        ms(quantile(&dur, 0.99)),
        mib(quantile(&bytes, 0.5)),
        mib(quantile(&bytes, 0.99)),
        ms(quantile(&align, 0.5)),
        ms(quantile(&align, 0.99)),
    );
    let mut rows = vec![
        Row::new(
            format!("{what}: duration p50 / p99"),
            format!("{} / {}", ms(quantile(&dur, 0.5)), ms(quantile(&dur, 0.99))),
        ),
        Row::new(
            format!("  {name} size p50 / p99"),
            format!(
                "{} / {}",
                mib(quantile(&bytes, 0.5)),
                mib(quantile(&bytes, 0.99))
            ),
        ),
        Row::new(
            format!("  {name} alignment p50 / p99"),
            format!(
                "{} / {}",
                ms(quantile(&align, 0.5)),
                ms(quantile(&align, 0.99))
            ),
        ),
        Row::new(
            format!("  {name} events/s meanwhile"),
            mega(records as f64 / elapsed.as_secs_f64()),
        ),
        Row::new(
            format!("  {name} completed / failed in {}", secs(elapsed)),
            format!("{} / {failed}", done.len()),
        )
        .target("none failed", failed == 0),
    ];
    if let Some(f) = first.first() {
        println!(
            "  {name} first (full) checkpoint #{}: {} ms, {}",
            f.id,
            f.duration_ms.unwrap_or(0),
            mib(f.bytes as f64)
        );
        rows.push(Row::new(
            format!("  {name} first (full) checkpoint: duration, size"),
            format!("{} ms, {}", f.duration_ms.unwrap_or(0), mib(f.bytes as f64)),
        ));
    }
    Ok(rows)
}

async fn size(registry: &Arc<OperatorRegistry>, args: &Args) -> Result<Vec<Row>> {
    println!(
        "== checkpoint duration and size: keyed-sum unbounded at full speed, {} keys, p={}, checkpoints every 1 s for {}",
        args.size_keys,
        args.parallelism,
        secs(args.size_time)
    );
    let mut rows = Vec::new();
    for backend in [BackendKind::Heap, BackendKind::Lsm] {
        rows.extend(size_once(registry, backend, args).await?);
    }
    // What checkpoints of this much state cost: one round without and one with, as in
    // the cost figure.
    println!(
        "  throughput at {} keys, one round each ({} warm-up, {} window), without then with checkpoints:",
        args.size_keys,
        secs(args.warmup),
        secs(args.window)
    );
    for backend in [BackendKind::Heap, BackendKind::Lsm] {
        let mut rates = Vec::new();
        for checkpoints in [false, true] {
            let v = Variant {
                backend,
                checkpoints,
            };
            let r = cost_once(registry, v, args.size_keys, args)
                .await
                .with_context(|| format!("{} at {} keys", v.name(), args.size_keys))?;
            println!(
                "    {:<40} {:>8}, {:>8} per CPU-second; checkpoints in window: {} completed, {} failed",
                v.name(),
                mega(r.rate),
                mega(r.per_cpu),
                r.completed,
                r.failed
            );
            rates.push(r);
        }
        let name = backend.name();
        let loss = 100.0 * (1.0 - rates[1].rate / rates[0].rate);
        let cpu_loss = 100.0 * (1.0 - rates[1].per_cpu / rates[0].per_cpu);
        rows.push(Row::new(
            format!(
                "  {name} at {} keys: events/s off / on (loss; per CPU-s)",
                args.size_keys
            ),
            format!(
                "{} / {} ({loss:.0} %; {cpu_loss:.0} %)",
                mega(rates[0].rate),
                mega(rates[1].rate)
            ),
        ));
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------
// 3. Aligned vs unaligned under backpressure

/// The running count of the backpressure figure: datagen → count per key (every
/// update) → throttle → blackhole.
fn throttled_count(keys: u64, parallelism: u32, rate: f64) -> Result<rill_dataflow::JobGraph> {
    use rill_dataflow::builtins::{self, DatagenConfig};
    use rill_dataflow::{key, StreamExecutionEnvironment};
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism);
    env.add_source(builtins::datagen(DatagenConfig::default()))
        .name("Source: datagen")
        .key_by(key::by_i64_mod(keys as i64))
        .process(builtins::count_per_key(true))
        .name(AGG)
        .map(builtins::throttle(rate))
        .name("throttle")
        .sink(builtins::blackhole())
        .name("Sink: blackhole");
    Ok(env.job_graph("throttled-count")?)
}

/// How the backpressure figure's checkpoints align.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Pressure {
    Aligned,
    Unaligned,
    /// Aligned, turning unaligned after `execution.checkpointing.aligned-checkpoint-timeout`.
    AlignedTimeout,
}

impl Pressure {
    const ALL: [Pressure; 3] = [
        Pressure::Aligned,
        Pressure::Unaligned,
        Pressure::AlignedTimeout,
    ];

    fn name(self) -> &'static str {
        match self {
            Pressure::Aligned => "aligned",
            Pressure::Unaligned => "unaligned",
            Pressure::AlignedTimeout => "aligned, 100 ms timeout",
        }
    }
}

/// The aligned-checkpoint timeout of [`Pressure::AlignedTimeout`].
const PRESSURE_TIMEOUT: Duration = Duration::from_millis(100);

struct PressureRound {
    done: Vec<CheckpointInfo>,
    failed: usize,
    rate: f64,
}

async fn backpressure_once(
    registry: &Arc<OperatorRegistry>,
    mode: Pressure,
    args: &Args,
) -> Result<PressureRound> {
    let p = args.backpressure_parallelism;
    let c = Cluster::start_with(registry, BackendKind::Heap, true, p, |config| {
        let c = &mut config.execution.checkpointing;
        c.unaligned.enabled = mode != Pressure::Aligned;
        if mode == Pressure::AlignedTimeout {
            c.aligned_checkpoint_timeout = PRESSURE_TIMEOUT;
        }
    })
    .await?;
    let outcome = async {
        let job = c
            .client
            .submit(throttled_count(args.keys, p, args.throttle)?)
            .await?;
        wait_all_running(&c.client, job).await?;
        // Let the buffers fill before the first counted checkpoint.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let first = c.client.job_details(job).await?;
        let skip = first
            .checkpoints
            .history
            .iter()
            .map(|i| i.id)
            .max()
            .unwrap_or(0);
        let t = Instant::now();
        let mut seen = BTreeMap::<u64, CheckpointInfo>::new();
        let mut last = first.clone();
        while t.elapsed() < args.backpressure_time {
            tokio::time::sleep(HISTORY_POLL).await;
            last = c.client.job_details(job).await?;
            ensure_running(&last, "under backpressure")?;
            for i in last.checkpoints.history.iter().filter(|i| i.id > skip) {
                seen.insert(i.id, i.clone());
            }
        }
        let records = agg_records_in(&last)? - agg_records_in(&first)?;
        Ok((job, (seen, records, t.elapsed())))
    }
    .await;
    let (seen, records, elapsed) = c.finish(outcome).await?;
    Ok(PressureRound {
        done: seen
            .values()
            .filter(|i| i.status == "COMPLETED")
            .cloned()
            .collect(),
        failed: seen.values().filter(|i| i.status == "FAILED").count(),
        rate: records as f64 / elapsed.as_secs_f64(),
    })
}

async fn backpressure(registry: &Arc<OperatorRegistry>, args: &Args) -> Result<Vec<Row>> {
    println!(
        "== aligned vs unaligned checkpoints under backpressure: datagen → count per key ({} keys) → throttle {} records/s per subtask → blackhole, p={}, checkpoints every 1 s, {} rounds of {} each, alternated",
        args.keys,
        args.throttle,
        args.backpressure_parallelism,
        args.rounds,
        secs(args.backpressure_time)
    );
    let mut all: BTreeMap<Pressure, (Vec<CheckpointInfo>, usize, Vec<f64>)> = BTreeMap::new();
    for round in 0..args.rounds {
        for mode in Pressure::ALL {
            let r = backpressure_once(registry, mode, args).await?;
            let name = mode.name();
            let dur: Vec<f64> = r
                .done
                .iter()
                .filter_map(|i| i.duration_ms)
                .map(|d| d as f64)
                .collect();
            println!(
                "  round {} {name:<23}: {} completed, {} failed, duration p50 {:.0} ms, {} events/s",
                round + 1,
                r.done.len(),
                r.failed,
                quantile(&dur, 0.5),
                mega(r.rate)
            );
            let e = all.entry(mode).or_default();
            e.0.extend(r.done);
            e.1 += r.failed;
            e.2.push(r.rate);
        }
    }
    let mut rows = Vec::new();
    let mut p50 = BTreeMap::new();
    for (mode, (done, failed, rates)) in &all {
        let name = mode.name();
        ensure!(
            !done.is_empty(),
            "{name}: no checkpoint completed under backpressure"
        );
        let q = |f: &dyn Fn(&CheckpointInfo) -> f64, at: f64| {
            let xs: Vec<f64> = done.iter().map(f).collect();
            quantile(&xs, at)
        };
        let dur = |i: &CheckpointInfo| i.duration_ms.unwrap_or(0) as f64;
        let align = |i: &CheckpointInfo| i.alignment_ms as f64;
        let in_flight = |i: &CheckpointInfo| i.in_flight_bytes as f64;
        p50.insert(*mode, q(&dur, 0.5));
        rows.push(Row::new(
            format!(
                "{name}: checkpoint duration p50 / p99 ({} checkpoints)",
                done.len()
            ),
            format!("{:.0} ms / {:.0} ms", q(&dur, 0.5), q(&dur, 0.99)),
        ));
        rows.push(Row::new(
            format!("  {name} alignment p50 / p99"),
            format!("{:.0} ms / {:.0} ms", q(&align, 0.5), q(&align, 0.99)),
        ));
        rows.push(Row::new(
            format!("  {name} in-flight data stored p50 / p99"),
            format!("{} / {}", mib(q(&in_flight, 0.5)), mib(q(&in_flight, 0.99))),
        ));
        rows.push(Row::new(
            format!("  {name} throttled events/s (median of rounds); failed checkpoints"),
            format!("{}; {failed}", mega(median(rates))),
        ));
    }
    if let (Some(a), Some(u), Some(t)) = (
        p50.get(&Pressure::Aligned),
        p50.get(&Pressure::Unaligned),
        p50.get(&Pressure::AlignedTimeout),
    ) {
        rows.push(
            Row::new(
                "unaligned / aligned checkpoint duration p50",
                format!("{:.3}", u / a.max(1.0)),
            )
            .target("unaligned faster", u < a),
        );
        rows.push(
            Row::new(
                "aligned with 100 ms timeout / aligned checkpoint duration p50",
                format!("{:.3}", t / a.max(1.0)),
            )
            .target("timeout faster", t < a),
        );
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------
// 4. Recovery from SIGKILL

struct RecoveryRun {
    running_again: Duration,
    restored: u64,
    latest_before: u64,
}

async fn recovery_once(
    rill: &Path,
    logs: &Path,
    restart: Restart,
    run: usize,
    runs: usize,
) -> Result<RecoveryRun> {
    let level = std::env::var("RILL_LOG").unwrap_or_else(|_| "info".into());
    let chk = tempfile::tempdir()?;
    let dir = format!("state.checkpoints.dir=file://{}", chk.path().display());
    let mut defines = vec!["execution.checkpointing.interval=1s", dir.as_str()];
    defines.extend(restart.defines());
    let tag = match restart {
        Restart::Fixed => "fixed",
        Restart::Default => "default",
    };
    let mut procs = ProcessCluster::spawn(
        rill,
        logs,
        &format!("recovery-{tag}{run}"),
        SECRET,
        &level,
        &defines,
        &[1, 1],
    )
    .await?;
    let client = procs.client().await?;
    let outcome = async {
        wait_for_slots(&client, 2, WAIT_LIMIT).await?;
        let job = client.submit(jobs::keyed_sum(None, 1000, None, 1)?).await?;
        wait_all_running(&client, job).await?;
        // At least one completed checkpoint, then a phase-shifted pause so the kills land
        // at different phases of the 1 s liveness pings.
        let t = Instant::now();
        loop {
            let d = client.job_details(job).await?;
            ensure_running(&d, "before the kill")?;
            if d.checkpoints.completed >= 2 {
                break;
            }
            ensure!(
                t.elapsed() < WAIT_LIMIT,
                "no checkpoint completed in {}: {}",
                secs(t.elapsed()),
                describe_history(&d)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(1) * (run as u32 - 1) / runs as u32).await;
        let d = client.job_details(job).await?;
        let latest_before = d
            .checkpoints
            .history
            .iter()
            .filter(|i| i.status == "COMPLETED")
            .map(|i| i.id)
            .max()
            .unwrap_or(0);
        let victim = d
            .vertices
            .iter()
            .flat_map(|v| v.locations.iter().flatten())
            .map(|r| r.to_string())
            .next()
            .context("no task has a location")?;
        println!(
            "  run {run}: {} checkpoints completed (newest #{latest_before}); SIGKILL {victim}",
            d.checkpoints.completed
        );
        let killed = procs.sigkill_taskmanager(&victim)?;
        let mut noticed = None;
        let (running_again, after) = loop {
            let d = client.job_details(job).await?;
            let now = killed.elapsed();
            if noticed.is_none() && (d.overview.status != JobStatus::Running || d.restarts >= 1) {
                noticed = Some(now);
                println!(
                    "    {:>6}: JobMaster noticed: status {}",
                    secs(now),
                    d.overview.status
                );
            }
            if d.restarts >= 1 && all_running(&d) && d.checkpoints.restored.is_some() {
                break (now, d);
            }
            ensure_recovering(&d)?;
            ensure!(
                now < WAIT_LIMIT,
                "job not RUNNING again with a restored checkpoint {} after the kill: {} restarts {} restored {:?}",
                secs(now),
                d.overview.status,
                d.restarts,
                d.checkpoints.restored
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (restored, path) = after
            .checkpoints
            .restored
            .clone()
            .context("restored is set: the loop above waited for it")?;
        println!(
            "    {:>6}: RUNNING again, every task RUNNING, restored checkpoint #{restored} ({path}); restarts {}",
            secs(running_again),
            after.restarts
        );
        // Records flow and checkpoints complete again.
        let completed = after.checkpoints.completed;
        let before = agg_records_in(&after)?;
        let t = Instant::now();
        loop {
            let d = client.job_details(job).await?;
            if agg_records_in(&d)? > before && d.checkpoints.completed > completed {
                println!(
                    "    {:>6}: records flowing ({} in since), checkpoint #{} completed after the restore",
                    secs(killed.elapsed()),
                    agg_records_in(&d)? - before,
                    d.checkpoints.history.last().map_or(0, |i| i.id)
                );
                break;
            }
            ensure!(
                t.elapsed() < Duration::from_secs(15),
                "after the restore: records in {} → {}, checkpoints {}",
                before,
                agg_records_in(&d)?,
                describe_history(&d)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cancel(&client, job).await?;
        Ok(RecoveryRun {
            running_again,
            restored,
            latest_before,
        })
    }
    .await;
    client.close().await;
    outcome
}

async fn recovery(rill: &Path, logs: &Path, args: &Args) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &restart in &args.restarts {
        println!(
            "== recovery ({} runs: `rill jobmanager` + 2 × `rill taskmanager --slots 1`, keyed-sum p=1 unbounded at full speed, 1000 keys, heap, checkpoints every 1 s, default heartbeats, restart strategy {})",
            args.recovery_runs,
            restart.name()
        );
        let mut runs = Vec::new();
        for run in 1..=args.recovery_runs {
            runs.push(recovery_once(rill, logs, restart, run, args.recovery_runs).await?);
        }
        let again: Vec<f64> = runs.iter().map(|r| r.running_again.as_secs_f64()).collect();
        let each: Vec<String> = again.iter().map(|s| format!("{s:.2}")).collect();
        let m = median(&again);
        println!(
            "  RUNNING again with a restored checkpoint: median {m:.2} s ({} s)",
            each.join(" / ")
        );
        let newest = runs
            .iter()
            .filter(|r| r.restored >= r.latest_before)
            .count();
        rows.extend([
            Row::new(
                format!("SIGKILL → RUNNING + restored, {}, median", restart.name()),
                format!("{m:.2} s ({} s)", each.join(" / ")),
            ),
            Row::all_runs(
                "  restored the newest completed checkpoint",
                newest,
                runs.len(),
            ),
        ]);
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------

async fn run(args: Args) -> Result<()> {
    let registry = Arc::new(OperatorRegistry::new());
    BENCH
        .run(args.only, args.rill.clone(), async |f, rill, logs| {
            match (f, rill) {
                (Figure::Cost, _) => cost(&registry, &args).await,
                (Figure::Size, _) => size(&registry, &args).await,
                (Figure::Backpressure, _) => backpressure(&registry, &args).await,
                (Figure::Recovery, Some(r)) => recovery(r, logs, &args).await,
                (Figure::Recovery, None) => {
                    unreachable!("the rill binary is looked up when recovery is wanted")
                }
            }
        })
        .await
}

fn main() -> Result<()> {
    block_on(run(parse_args()?))
}
