//! The cluster figures of issue #4 (DESIGN §8), printed as one table with their targets.
//!
//! * **startup**: mini-cluster start to first record. Task counters only reach the
//!   JobMaster with heartbeats (1 s), so the first record cannot be observed through
//!   `job_details` with useful precision. Instead each run starts a fresh
//!   [`MiniCluster`] (1 TaskManager, 1 slot, default configuration), submits a bounded
//!   keyed-sum of one row into a collect sink, and measures `MiniCluster::start` → job
//!   FINISHED with its one result: an upper bound of the first-record latency. The same
//!   runs report start → all slots registered and submit → RUNNING. Median of 5 runs.
//! * **rss**: the resident memory (`VmRSS`) of an idle `rill taskmanager` process,
//!   2 s after it registered at a `rill jobmanager` process.
//! * **throughput**: keyed-sum (sequence rows → key = id % K → count + sum per key →
//!   collect sink) on a MiniCluster with one TaskManager holding P slots, P = 1 and 2,
//!   20M rows and 1000 keys by default (the shape of the Flink baseline). Reports
//!   events/s against the job's own duration and against wall time from submission to
//!   result, per task slot and per CPU-second the process used, and how many cores this
//!   process and the rest of the machine used meanwhile: on a shared machine other
//!   load (even niced, when the kernel groups CPU time per session) caps what P = 2 can
//!   show. Verifies the checksum.
//! * **recovery**: a `rill jobmanager` and two `rill taskmanager --slots 2` processes run
//!   an unbounded, rate-limited keyed-sum with parallelism 2; the TaskManager hosting its
//!   tasks gets SIGKILL. Measured from the kill: the JobMaster noticed (status leaves
//!   RUNNING), the ResourceManager dropped the TaskManager, and the job is RUNNING again
//!   with every task RUNNING. Default heartbeats (1 s / 5 s); restart strategy
//!   exponential-delay with its defaults (1 s initial backoff), configured explicitly
//!   since without checkpointing the default is not to restart. Median of 3 runs, each on a fresh cluster,
//!   killing at different phases of the 1 s liveness pings.
//!
//! The process figures run the real `rill` binary, looked up next to this bench's
//! executable (build it first: `cargo build --release -p rill`) or given with `--rill`.
//! Children's stderr goes to log files in a directory printed at the end; children get
//! `RILL_LOG` from the environment, or `info` for the recovery cluster.
//!
//! Usage: `cargo run --release -p rill-benches --bin cluster_bench -- [--only startup|rss|throughput|recovery] [--rows N] [--keys K] [--rill PATH]`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use rill::admin::AdminClient;
use rill_benches::{
    all_running, block_on, cancel_and_wait, ensure_recovering, machine_cpu, process_cpu,
    spawn_jobmanager, spawn_taskmanager, start_mini_cluster, wait_all_running, Bench, Flags,
    ProcessCluster, Row,
};
use rill_dataflow::{jobs, JobId, OperatorRegistry, Value};
use rill_endpoints::{JobStatus, MiniCluster, MiniClusterOptions, RillConfig};
use rill_runtime::security::ClusterSecret;

/// The passphrase every process of the multi-process figures shares.
const SECRET: &str = "rill-cluster-bench";
const STARTUP_RUNS: usize = 5;
const RECOVERY_RUNS: usize = 3;
/// Source rate of the recovery job, records/s over all source subtasks.
const RECOVERY_RATE: f64 = 100_000.0;
/// How long the recovery job runs before the kill, at least. Run `i` (counting from 0) waits
/// `i / RECOVERY_RUNS` of a heartbeat interval longer, so the kills land at different
/// phases of the 1 s liveness pings instead of always the same one.
const RECOVERY_WARMUP: Duration = Duration::from_secs(3);
/// Every wait on the cluster is bounded by this.
const WAIT_LIMIT: Duration = Duration::from_secs(30);
/// How long the multi-process figures wait for their TaskManagers' slots.
const SLOTS_LIMIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Figure {
    Startup,
    Rss,
    Throughput,
    Recovery,
}

impl Figure {
    const ALL: [Figure; 4] = [
        Figure::Startup,
        Figure::Rss,
        Figure::Throughput,
        Figure::Recovery,
    ];

    fn name(self) -> &'static str {
        match self {
            Figure::Startup => "startup",
            Figure::Rss => "rss",
            Figure::Throughput => "throughput",
            Figure::Recovery => "recovery",
        }
    }
}

const BENCH: Bench<Figure> = Bench {
    name: "cluster-bench",
    figures: &Figure::ALL,
    figure_name: Figure::name,
    processes: &[Figure::Rss, Figure::Recovery],
};

struct Args {
    only: Option<Figure>,
    rows: u64,
    keys: u64,
    rill: Option<PathBuf>,
}

const USAGE: &str = "usage: cluster_bench [--only startup|rss|throughput|recovery] [--rows N] [--keys K] [--rill PATH]";

fn parse_args() -> Result<Args> {
    let mut args = Args {
        only: None,
        rows: 20_000_000,
        keys: 1000,
        rill: None,
    };
    let mut flags = Flags::from_env(USAGE);
    while let Some(flag) = flags.next_flag() {
        match flag.as_str() {
            "--only" => args.only = Some(BENCH.parse_figure(&flags.value()?)?),
            "--rows" => args.rows = flags.number()?,
            "--keys" => args.keys = flags.number()?,
            "--rill" => args.rill = Some(PathBuf::from(flags.value()?)),
            _ => return Err(flags.unknown()),
        }
    }
    ensure!(
        args.rows > 0 && args.keys > 0,
        "--rows and --keys must be positive"
    );
    Ok(args)
}

fn median(xs: &[Duration]) -> Duration {
    let mut v = xs.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn range(xs: &[Duration]) -> String {
    let min = xs.iter().min().copied().unwrap_or_default();
    let max = xs.iter().max().copied().unwrap_or_default();
    format!("min {} max {}", ms(min), ms(max))
}

/// Polls the job's status every `interval` until it is terminal; returns when it was
/// first seen RUNNING (if it was) and when it was seen terminal.
async fn follow(
    client: &AdminClient,
    job: JobId,
    interval: Duration,
    limit: Duration,
) -> Result<(Option<Instant>, Instant, JobStatus)> {
    let deadline = Instant::now() + limit;
    let mut running = None;
    loop {
        let status = client.job_status(job).await?;
        let now = Instant::now();
        if status == JobStatus::Running && running.is_none() {
            running = Some(now);
        }
        if status.is_terminal() {
            return Ok((running, now, status));
        }
        ensure!(now < deadline, "job {job} did not end (status {status})");
        tokio::time::sleep(interval).await;
    }
}

// ---------------------------------------------------------------------------------------
// 1. Mini-cluster start to first record

struct StartupRun {
    slots: Duration,
    submit_to_running: Duration,
    first_result: Duration,
}

async fn startup_once(registry: &Arc<OperatorRegistry>) -> Result<StartupRun> {
    let config = RillConfig::default();
    let secret = ClusterSecret::generate();
    let t0 = Instant::now();
    let cluster = MiniCluster::start(
        &config,
        &MiniClusterOptions::default(),
        &secret,
        registry.clone(),
    )?;
    let client = AdminClient::with_service(
        cluster.jobmanager().rpc().clone(),
        cluster.jobmanager().address(),
    )
    .await?;
    let outcome = async {
        let want = config.taskmanager.number_of_task_slots;
        loop {
            let slots: u32 = client
                .task_managers()
                .await?
                .iter()
                .map(|t| t.slots_total)
                .sum();
            if slots >= want {
                break;
            }
            ensure!(
                t0.elapsed() < WAIT_LIMIT,
                "only {slots} of {want} slots registered"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let slots = t0.elapsed();
        let submitted = Instant::now();
        let job = client.submit(jobs::keyed_sum(Some(1), 1, None, 1)?).await?;
        let (running, done, status) =
            follow(&client, job, Duration::from_millis(5), WAIT_LIMIT).await?;
        let result = client.job_result(job).await?;
        let first_result = done - t0;
        ensure!(
            status == JobStatus::Finished,
            "tiny job {status}: {:?}",
            result.failure
        );
        let values = result
            .collected
            .get(jobs::KEYED_SUM_COLLECT_ID)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        ensure!(
            values.len() == 1,
            "tiny job returned {} rows, not 1",
            values.len()
        );
        ensure!(
            jobs::keyed_sum_checksum(values)? == jobs::expected_keyed_sum_checksum(1, 1),
            "tiny job returned a wrong result: {values:?}"
        );
        Ok(StartupRun {
            slots,
            // A job this small may finish between two polls: then RUNNING is bounded by
            // the end.
            submit_to_running: running.unwrap_or(done) - submitted,
            first_result,
        })
    }
    .await;
    client.close().await;
    cluster.shutdown().await;
    outcome
}

async fn startup(registry: &Arc<OperatorRegistry>) -> Result<Vec<Row>> {
    println!("== mini-cluster start to first record ({STARTUP_RUNS} runs, 1 TaskManager × 1 slot, keyed-sum of 1 row)");
    let mut runs = Vec::new();
    for i in 0..STARTUP_RUNS {
        let r = startup_once(registry).await?;
        println!(
            "  run {}: start → slots registered {:>6}   submit → RUNNING {:>6}   start → FINISHED with result {:>6}",
            i + 1,
            ms(r.slots),
            ms(r.submit_to_running),
            ms(r.first_result)
        );
        runs.push(r);
    }
    let first: Vec<_> = runs.iter().map(|r| r.first_result).collect();
    let slots: Vec<_> = runs.iter().map(|r| r.slots).collect();
    let running: Vec<_> = runs.iter().map(|r| r.submit_to_running).collect();
    let m = median(&first);
    println!(
        "  start → first record (upper bound): median {} ({})",
        ms(m),
        range(&first)
    );
    Ok(vec![
        Row::new("start → first record (≤ job FINISHED), median", ms(m))
            .target("≤ 1 s", m <= Duration::from_secs(1)),
        Row::new("  start → all slots registered, median", ms(median(&slots))),
        Row::new("  submit → RUNNING, median", ms(median(&running))),
    ])
}

fn cluster_secret() -> Result<ClusterSecret> {
    Ok(ClusterSecret::from_bytes(SECRET.as_bytes())?)
}

/// `(name, kB)` of the `Vm*` lines of `/proc/PID/status`, and its thread count.
fn proc_status(pid: u32) -> Result<(BTreeMap<String, u64>, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let mut vm = BTreeMap::new();
    let mut threads = 0;
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let key = key.trim_end_matches(':');
        if key.starts_with("Vm") || key.starts_with("Rss") {
            vm.insert(key.to_owned(), value.parse().unwrap_or(0));
        } else if key == "Threads" {
            threads = value.parse().unwrap_or(0);
        }
    }
    Ok((vm, threads))
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------
// 2. Idle TaskExecutor RSS

async fn rss(rill: &Path, logs: &Path) -> Result<Vec<Row>> {
    println!("== idle TaskExecutor RSS (`rill taskmanager` process, 1 slot, default config)");
    let level = std::env::var("RILL_LOG").unwrap_or_else(|_| "warn".into());
    let (jm, addr) = spawn_jobmanager(rill, logs, "rss-jobmanager", SECRET, &level, &[]).await?;
    let (tm, id) =
        spawn_taskmanager(rill, logs, "rss-taskmanager", SECRET, &level, addr, None).await?;
    let client = AdminClient::connect(addr, &cluster_secret()?).await?;
    let outcome = async {
        rill_benches::wait_for_slots(&client, 1, SLOTS_LIMIT).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (vm, threads) = proc_status(tm.pid())?;
        let (jm_vm, _) = proc_status(jm.pid())?;
        let get = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
        let rss = get(&vm, "VmRSS");
        println!(
            "  TaskManager {id} (pid {}): VmRSS {:.1} MiB (anon {:.1}, file {:.1}), VmHWM {:.1} MiB, VmSize {:.0} MiB, {threads} threads",
            tm.pid(),
            mib(rss),
            mib(get(&vm, "RssAnon")),
            mib(get(&vm, "RssFile")),
            mib(get(&vm, "VmHWM")),
            mib(get(&vm, "VmSize")),
        );
        println!(
            "  JobManager (pid {}): VmRSS {:.1} MiB (for comparison)",
            jm.pid(),
            mib(get(&jm_vm, "VmRSS"))
        );
        // The same TaskManager idle again after a job: network buffers and task threads
        // it used may stay resident.
        let rows = 2_000_000;
        let job = client.submit(jobs::keyed_sum(Some(rows), 1000, None, 1)?).await?;
        let (_, _, status) = follow(&client, job, Duration::from_millis(20), WAIT_LIMIT).await?;
        let result = client.job_result(job).await?;
        ensure!(
            status == JobStatus::Finished,
            "keyed-sum on the TaskManager {status}: {:?}",
            result.failure
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (after, threads_after) = proc_status(tm.pid())?;
        let rss_after = get(&after, "VmRSS");
        println!(
            "  the same TaskManager 2 s after a {rows}-row keyed-sum: VmRSS {:.1} MiB (anon {:.1}), VmHWM {:.1} MiB, {threads_after} threads",
            mib(rss_after),
            mib(get(&after, "RssAnon")),
            mib(get(&after, "VmHWM")),
        );
        Ok(vec![
            Row::new("idle TaskExecutor RSS", format!("{:.1} MiB", mib(rss)))
                .target("≤ 50 MiB", rss <= 50 * 1024),
            Row::new(
                "  idle again after one job",
                format!("{:.1} MiB", mib(rss_after)),
            )
            .target("≤ 50 MiB", rss_after <= 50 * 1024),
            Row::new(
                "  peak RSS (VmHWM) during that job",
                format!("{:.1} MiB", mib(get(&after, "VmHWM"))),
            ),
        ])
    }
    .await;
    client.close().await;
    outcome
}

// ---------------------------------------------------------------------------------------
// 3. Keyed-sum throughput on a MiniCluster

/// What is wrong with a keyed-sum result: rows, distinct keys, keys reported more than
/// once, and the total count against the rows the source emitted.
fn describe_keyed_sum(values: &[Value], rows: u64, keys: u64) -> String {
    let mut per_key = BTreeMap::<i64, (u32, i64)>::new();
    let mut malformed = 0;
    for v in values {
        match v.as_tuple() {
            Some([Value::I64(k), Value::I64(count), Value::I64(_)]) => {
                let e = per_key.entry(*k).or_default();
                e.0 += 1;
                e.1 += count;
            }
            _ => malformed += 1,
        }
    }
    let repeated = per_key.values().filter(|e| e.0 > 1).count();
    let total: i64 = per_key.values().map(|e| e.1).sum();
    format!(
        "{} rows ({malformed} malformed), {} distinct keys of {}, {repeated} keys reported more than once, counts sum to {total} of {rows} rows",
        values.len(),
        per_key.len(),
        keys.min(rows),
    )
}

async fn throughput_once(
    registry: &Arc<OperatorRegistry>,
    parallelism: u32,
    rows: u64,
    keys: u64,
) -> Result<Vec<Row>> {
    let mut config = RillConfig::default();
    config.taskmanager.number_of_task_slots = parallelism;
    let (cluster, client) = start_mini_cluster(&config, registry.clone(), parallelism).await?;
    let outcome = async {
        let job = jobs::keyed_sum(Some(rows), keys, None, parallelism)?;
        let cpu0 = process_cpu();
        let machine0 = machine_cpu();
        let submitted = Instant::now();
        let id = client.submit(job).await?;
        let (_, _, status) = follow(&client, id, Duration::from_millis(10), Duration::from_secs(600)).await?;
        let result = client.job_result(id).await?;
        let wall = submitted.elapsed();
        let cpu = process_cpu().saturating_sub(cpu0);
        let others = machine_cpu().saturating_sub(machine0).saturating_sub(cpu);
        ensure!(
            status == JobStatus::Finished,
            "keyed-sum p={parallelism} {status}: {:?}",
            result.failure
        );
        let values = result
            .collected
            .get(jobs::KEYED_SUM_COLLECT_ID)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let checksum = jobs::keyed_sum_checksum(values)?;
        let expected = jobs::expected_keyed_sum_checksum(rows, keys);
        ensure!(
            checksum == expected,
            "keyed-sum p={parallelism}: checksum {checksum:016x}, expected {expected:016x}; {}",
            describe_keyed_sum(values, rows, keys)
        );
        let job_s = result.duration_ms.max(1) as f64 / 1e3;
        let wall_s = wall.as_secs_f64();
        let cpu_s = cpu.as_secs_f64().max(1e-3);
        let p = f64::from(parallelism);
        let (ev_job, ev_wall, ev_cpu) = (rows as f64 / job_s, rows as f64 / wall_s, rows as f64 / cpu_s);
        let (cores, other_cores) = (cpu_s / wall_s, others.as_secs_f64() / wall_s);
        println!(
            "  p={parallelism}: job {job_s:.2} s, wall {wall_s:.2} s; this process used {cores:.2} cores, other processes {other_cores:.2} of the machine's {}",
            std::thread::available_parallelism().map_or(0, usize::from)
        );
        println!(
            "       {:.2} M ev/s (job), {:.2} M ev/s per slot (job), {:.2} M ev/s (wall), {:.2} M ev/s per slot (wall), {:.2} M ev/s per CPU-second",
            ev_job / 1e6,
            ev_job / p / 1e6,
            ev_wall / 1e6,
            ev_wall / p / 1e6,
            ev_cpu / 1e6,
        );
        println!(
            "       checksum {checksum:016x} OK ({} keys)",
            values.len()
        );
        let m = |x: f64| format!("{:.2} M ev/s", x / 1e6);
        Ok(vec![
            Row::new(format!("keyed-sum p={parallelism}, events/s (job duration)"), m(ev_job)),
            Row::new(format!("  p={parallelism} per slot (job duration)"), m(ev_job / p)),
            Row::new(format!("  p={parallelism} events/s (submit → result wall)"), m(ev_wall)),
            Row::new(format!("  p={parallelism} per slot (wall)"), m(ev_wall / p)),
            Row::new(format!("  p={parallelism} per CPU-second of the process"), m(ev_cpu)),
            Row::new(
                format!("  p={parallelism} cores used: this process / others"),
                format!("{cores:.2} / {other_cores:.2}"),
            ),
        ])
    }
    .await;
    client.close().await;
    cluster.shutdown().await;
    outcome
}

async fn throughput(registry: &Arc<OperatorRegistry>, rows: u64, keys: u64) -> Result<Vec<Row>> {
    println!("== keyed-sum throughput on a MiniCluster ({rows} rows, {keys} keys, 1 TaskManager × P slots, collect sink)");
    let mut out = Vec::new();
    for p in [1, 2] {
        out.extend(throughput_once(registry, p, rows, keys).await?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// 4. SIGKILL recovery

struct RecoveryRun {
    jm_noticed: Duration,
    rm_dropped: Option<Duration>,
    running_again: Duration,
    failure: Option<String>,
    resumed: bool,
}

async fn recovery_once(rill: &Path, logs: &Path, run: usize) -> Result<RecoveryRun> {
    let level = std::env::var("RILL_LOG").unwrap_or_else(|_| "info".into());
    let mut procs = ProcessCluster::spawn(
        rill,
        logs,
        &format!("recovery{run}"),
        SECRET,
        &level,
        &["restart-strategy.type=exponential-delay"],
        &[2, 2],
    )
    .await?;
    let client = procs.client().await?;
    let outcome = async {
        rill_benches::wait_for_slots(&client, 4, SLOTS_LIMIT).await?;
        let job = client
            .submit(jobs::keyed_sum(None, 1000, Some(RECOVERY_RATE), 2)?)
            .await?;
        let details = wait_all_running(&client, job, WAIT_LIMIT).await?;
        let phase = Duration::from_secs(1) * (run as u32 - 1) / RECOVERY_RUNS as u32;
        let warmup = RECOVERY_WARMUP + phase;
        tokio::time::sleep(warmup).await;
        let details = client.job_details(job).await.unwrap_or(details);
        // Kill the TaskManager hosting the most subtasks (ties: the source's first).
        let mut hosted = BTreeMap::<String, usize>::new();
        for v in &details.vertices {
            for r in v.locations.iter().flatten() {
                *hosted.entry(r.to_string()).or_default() += 1;
            }
        }
        let victim = details
            .vertices
            .iter()
            .flat_map(|v| v.locations.iter().flatten())
            .map(|r| r.to_string())
            .max_by_key(|r| hosted[r])
            .context("no task has a location")?;
        println!(
            "  run {run}: tasks per TaskManager {hosted:?}; SIGKILL {victim} after {} RUNNING",
            secs(warmup)
        );
        let killed = procs.sigkill_taskmanager(&victim)?;

        let mut jm_noticed = None;
        let mut rm_dropped = None;
        let mut failure = None;
        let (running_again, after) = loop {
            let d = client.job_details(job).await?;
            let now = killed.elapsed();
            if jm_noticed.is_none() && (d.overview.status != JobStatus::Running || d.restarts >= 1)
            {
                jm_noticed = Some(now);
                println!(
                    "    {:>6}: JobMaster noticed: status {}",
                    ms(now),
                    d.overview.status
                );
            }
            if failure.is_none() && d.failure.is_some() {
                failure = d.failure.clone();
            }
            if rm_dropped.is_none() {
                let list = client.task_managers().await?;
                if list
                    .iter()
                    .all(|t| t.location.resource_id.to_string() != victim)
                {
                    rm_dropped = Some(killed.elapsed());
                    println!(
                        "    {:>6}: ResourceManager dropped {victim}",
                        ms(killed.elapsed())
                    );
                }
            }
            if d.restarts >= 1 && all_running(&d) {
                break (now, d);
            }
            ensure_recovering(&d)?;
            ensure!(
                now < WAIT_LIMIT,
                "job not RUNNING again {} after the kill: {} restarts {} states {:?}",
                secs(now),
                d.overview.status,
                d.restarts,
                d.vertices.iter().map(|v| &v.states).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        println!(
            "    {:>6}: RUNNING again, every task RUNNING (restarts {})",
            ms(running_again),
            after.restarts
        );
        let on_victim = after
            .vertices
            .iter()
            .flat_map(|v| v.locations.iter().flatten())
            .any(|r| r.to_string() == victim);
        ensure!(!on_victim, "tasks still placed on the killed {victim}");
        // Records flow again: the source's counter grows over the next heartbeats.
        let before = client.job_details(job).await?.vertices[0].records_out;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let later = client.job_details(job).await?;
        let resumed =
            later.vertices[0].records_out > before && later.overview.status == JobStatus::Running;
        println!(
            "    source records out {before} → {} 2.5 s later ({}); failure: {}",
            later.vertices[0].records_out,
            if resumed {
                "processing resumed"
            } else {
                "NOT PROCESSING"
            },
            failure.as_deref().unwrap_or("none recorded")
        );
        cancel_and_wait(&client, job, Duration::from_secs(10)).await?;
        Ok(RecoveryRun {
            jm_noticed: jm_noticed.unwrap_or(running_again),
            rm_dropped,
            running_again,
            failure,
            resumed,
        })
    }
    .await;
    client.close().await;
    outcome
}

async fn recovery(rill: &Path, logs: &Path) -> Result<Vec<Row>> {
    println!("== SIGKILL recovery ({RECOVERY_RUNS} runs: `rill jobmanager` + 2 × `rill taskmanager --slots 2`, keyed-sum p=2 at {RECOVERY_RATE} rows/s, default heartbeats, restart-strategy exponential-delay)");
    let mut runs = Vec::new();
    for run in 1..=RECOVERY_RUNS {
        runs.push(recovery_once(rill, logs, run).await?);
    }
    let noticed: Vec<_> = runs.iter().map(|r| r.jm_noticed).collect();
    let again: Vec<_> = runs.iter().map(|r| r.running_again).collect();
    let dropped: Vec<_> = runs.iter().filter_map(|r| r.rm_dropped).collect();
    let (n, a) = (median(&noticed), median(&again));
    println!(
        "  JobMaster noticed: median {} ({})",
        ms(n),
        range(&noticed)
    );
    println!("  RUNNING again: median {} ({})", ms(a), range(&again));
    for (i, r) in runs.iter().enumerate() {
        if let Some(f) = &r.failure {
            println!("  run {} failure cause: {f}", i + 1);
        }
    }
    let max = |xs: &[Duration]| xs.iter().max().copied().unwrap_or_default();
    let mut rows = vec![
        Row::new("SIGKILL → JobMaster noticed, median", ms(n))
            .target("≤ 3 s", n <= Duration::from_secs(3)),
        Row::new(
            "  SIGKILL → JobMaster noticed, worst run",
            ms(max(&noticed)),
        ),
        Row::new("SIGKILL → job RUNNING again, median", ms(a))
            .target("≤ 5 s", a <= Duration::from_secs(5)),
        Row::new("  SIGKILL → job RUNNING again, worst run", ms(max(&again))),
    ];
    if dropped.len() == runs.len() {
        rows.push(Row::new(
            "  SIGKILL → ResourceManager dropped the TM, median",
            ms(median(&dropped)),
        ));
    } else {
        rows.push(Row::new(
            "  SIGKILL → ResourceManager dropped the TM",
            format!("{} of {} runs", dropped.len(), runs.len()),
        ));
    }
    let resumed = runs.iter().filter(|r| r.resumed).count();
    rows.push(Row::all_runs(
        "  records flowing again after recovery",
        resumed,
        runs.len(),
    ));
    Ok(rows)
}

// ---------------------------------------------------------------------------------------

async fn run(args: Args) -> Result<()> {
    let registry = Arc::new(OperatorRegistry::new());
    BENCH
        .run(args.only, args.rill.clone(), async |f, rill, logs| {
            match (f, rill) {
                (Figure::Startup, _) => startup(&registry).await,
                (Figure::Throughput, _) => throughput(&registry, args.rows, args.keys).await,
                (Figure::Rss, Some(r)) => rss(r, logs).await,
                (Figure::Recovery, Some(r)) => recovery(r, logs).await,
                (_, None) => {
                    unreachable!("the rill binary is looked up when a process figure is wanted")
                }
            }
        })
        .await
}

fn main() -> Result<()> {
    block_on(run(parse_args()?))
}
