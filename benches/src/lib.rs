//! Shared helpers for rill benchmarks.
//!
//! * **Measuring**: the CPU time of this process ([`process_cpu`]) and of the whole
//!   machine ([`machine_cpu`]).
//! * **Running a bench**: [`block_on`] runs a bench's `main` on a tokio runtime and
//!   [`Flags`] reads its command line. A [`Bench`] lists its figures; [`Bench::run`]
//!   finds the `rill` binary if a wanted figure needs it, makes the directory children
//!   log to, runs the figures one after the other, keeps going past a failed one, and
//!   prints the rows of all of them as one summary table ([`Row`], [`print_table`]).
//! * **rill child processes**: [`find_rill`] locates the binary, [`Proc`] owns one
//!   child (killed when dropped), [`spawn_jobmanager`] and [`spawn_taskmanager`] start
//!   the two endpoints and read their addresses from stdout, [`ProcessCluster`] is a
//!   JobManager with its TaskManagers.
//! * **Clusters and jobs**: [`start_mini_cluster`] starts an in-process cluster,
//!   [`wait_for_slots`], [`wait_all_running`] and [`cancel_and_wait`] poll a cluster
//!   through its [`AdminClient`] with a bound on every wait; [`ensure_recovering`]
//!   fails once a job that should recover has ended.

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rill::admin::AdminClient;
use rill_dataflow::{JobId, OperatorRegistry};
use rill_endpoints::messages::{ExecutionState, JobDetails};
use rill_endpoints::{JobStatus, MiniCluster, MiniClusterOptions, RillConfig};
use rill_runtime::security::ClusterSecret;
use tokio::sync::mpsc;

pub mod fuzz;

/// Linux's `USER_HZ`: the unit of utime/stime in `/proc/*/stat`.
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// CPU time (user + system, all threads) this process has used so far; zero where
/// `/proc/self/stat` cannot be read.
pub fn process_cpu() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are the 14th
            // and 15th fields overall, i.e. the 12th and 13th after it.
            let rest = s.get(s.rfind(')')? + 2..)?;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / CLOCK_TICKS_PER_S)
}

/// CPU time all processes of the machine have used so far (`/proc/stat`: user, nice,
/// system, irq, softirq, steal); zero where `/proc/stat` cannot be read.
pub fn machine_cpu() -> Duration {
    let ticks = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("cpu "))?;
            let f: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            Some(
                [0, 1, 2, 5, 6, 7]
                    .iter()
                    .map(|&i| f.get(i).copied().unwrap_or(0))
                    .sum::<u64>(),
            )
        })
        .unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / CLOCK_TICKS_PER_S)
}

// ---------------------------------------------------------------------------------------
// Running a bench

/// A bench's command line, `--flag value` pairs read one after the other; errors name
/// the flag and end with the bench's usage line.
pub struct Flags {
    args: std::iter::Skip<std::env::Args>,
    usage: &'static str,
    flag: String,
}

impl Flags {
    /// This process's arguments after the program name.
    pub fn from_env(usage: &'static str) -> Self {
        Flags {
            args: std::env::args().skip(1),
            usage,
            flag: String::new(),
        }
    }

    /// The next flag, or `None` after the last.
    pub fn next_flag(&mut self) -> Option<String> {
        self.flag = self.args.next()?;
        Some(self.flag.clone())
    }

    /// The value of the flag [`Flags::next_flag`] returned last.
    pub fn value(&mut self) -> Result<String> {
        let usage = self.usage;
        self.args
            .next()
            .with_context(|| format!("{} needs a value; {usage}", self.flag))
    }

    /// The value as a number; `_` may separate digits (`20_000_000`).
    pub fn number<T>(&mut self) -> Result<T>
    where
        T: FromStr,
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        Ok(self.value()?.replace('_', "").parse()?)
    }

    /// The value as a number of seconds, fractions allowed.
    pub fn seconds(&mut self) -> Result<Duration> {
        Ok(Duration::from_secs_f64(self.value()?.parse()?))
    }

    /// The error for a flag the bench does not know.
    pub fn unknown(&self) -> anyhow::Error {
        anyhow::anyhow!("unknown argument {}; {}", self.flag, self.usage)
    }
}

/// Runs `bench` to completion on a multi-threaded tokio runtime whose worker threads are
/// named `bench-io`.
pub fn block_on(bench: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-io")
        .build()?
        .block_on(bench)
}

/// What a bench is made of: its figures and which of them run the `rill` binary.
pub struct Bench<F: 'static> {
    /// Names the directory child processes log to: `<temp>/rill-<name>-<pid>`.
    pub name: &'static str,
    /// Every figure, in the order they run.
    pub figures: &'static [F],
    /// A figure's name, as `--only` takes it and the summary table reports a failure.
    pub figure_name: fn(F) -> &'static str,
    /// The figures that run `rill` child processes.
    pub processes: &'static [F],
}

impl<F: Copy + PartialEq> Bench<F> {
    /// The figure named `s`; the error lists the names.
    pub fn parse_figure(&self, s: &str) -> Result<F> {
        let name = self.figure_name;
        self.figures
            .iter()
            .copied()
            .find(|f| name(*f) == s)
            .with_context(|| {
                let names: Vec<&str> = self.figures.iter().map(|f| name(*f)).collect();
                format!("unknown figure {s}; one of {}", names.join(", "))
            })
    }

    /// Runs the figures (`only` that one, if given) in order with `figure`, which gets
    /// the `rill` binary (looked up with [`find_rill`] from `rill`, and printed, only if
    /// a wanted figure runs processes) and the log directory, and returns its rows of the
    /// summary table. A failed figure prints `<name> FAILED: <error>` and gets a `FAILED`
    /// row; the rest still run. Then prints the table, the total time and the log
    /// directory, and fails naming the figures that failed, if any.
    pub async fn run(
        &self,
        only: Option<F>,
        rill: Option<PathBuf>,
        mut figure: impl AsyncFnMut(F, Option<&Path>, &Path) -> Result<Vec<Row>>,
    ) -> Result<()> {
        let name = self.figure_name;
        let wanted: Vec<F> = self
            .figures
            .iter()
            .copied()
            .filter(|f| only.is_none_or(|o| o == *f))
            .collect();
        let rill = if wanted.iter().any(|f| self.processes.contains(f)) {
            Some(find_rill(rill)?)
        } else {
            None
        };
        let logs = std::env::temp_dir().join(format!("rill-{}-{}", self.name, std::process::id()));
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        if let Some(r) = &rill {
            println!("rill binary: {}", r.display());
        }
        let started = Instant::now();
        let mut rows = Vec::new();
        let mut errors = Vec::new();
        for f in wanted {
            match figure(f, rill.as_deref(), &logs).await {
                Ok(r) => rows.extend(r),
                Err(e) => {
                    println!("  {} FAILED: {e:#}", name(f));
                    rows.push(Row::new(name(f), "FAILED").target("-", false));
                    errors.push(name(f));
                }
            }
        }
        print_table(&rows);
        println!(
            "\ntotal {:.1} s; child process logs in {}",
            started.elapsed().as_secs_f64(),
            logs.display()
        );
        ensure!(errors.is_empty(), "figures failed: {}", errors.join(", "));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The rill binary

/// The `rill` binary: `explicit` (`--rill`), or next to this executable (both live in
/// `target/<profile>/`).
pub fn find_rill(explicit: Option<PathBuf>) -> Result<PathBuf> {
    let path = match explicit {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("the executable has no directory")?
            .join("rill"),
    };
    ensure!(
        path.is_file(),
        "no rill binary at {}: build it first (`cargo build --release -p rill`) or pass --rill PATH",
        path.display()
    );
    Ok(path)
}

// ---------------------------------------------------------------------------------------
// Summary tables

/// One line of a bench's summary table: a figure, its value and, if it has one, its
/// target and whether the value met it.
pub struct Row {
    figure: String,
    value: String,
    target: String,
    met: Option<bool>,
}

impl Row {
    /// A figure without a target.
    pub fn new(figure: impl Into<String>, value: impl Into<String>) -> Self {
        Row {
            figure: figure.into(),
            value: value.into(),
            target: "-".into(),
            met: None,
        }
    }

    /// Adds the figure's target and whether the value `met` it.
    pub fn target(mut self, target: impl Into<String>, met: bool) -> Self {
        self.target = target.into();
        self.met = Some(met);
        self
    }

    /// `<ok> of <runs> runs`, with the target that all runs are.
    pub fn all_runs(figure: impl Into<String>, ok: usize, runs: usize) -> Self {
        Row::new(figure, format!("{ok} of {runs} runs")).target("all runs", ok == runs)
    }
}

/// Prints `rows` as a table: figure, value, target, verdict (`met` / `MISSED`).
pub fn print_table(rows: &[Row]) {
    let width = |f: fn(&Row) -> usize, min: usize| rows.iter().map(f).max().unwrap_or(0).max(min);
    let w0 = width(|r| r.figure.chars().count(), 6);
    let w1 = width(|r| r.value.chars().count(), 5);
    let w2 = width(|r| r.target.chars().count(), 6);
    println!();
    println!(
        "{:<w0$}  {:>w1$}  {:<w2$}  verdict",
        "figure", "value", "target"
    );
    println!("{}", "-".repeat(w0 + w1 + w2 + 13));
    for r in rows {
        let verdict = match r.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        println!(
            "{:<w0$}  {:>w1$}  {:<w2$}  {verdict}",
            r.figure, r.value, r.target
        );
    }
}

/// Whether `d`'s job is RUNNING with every subtask of every vertex RUNNING.
pub fn all_running(d: &JobDetails) -> bool {
    d.overview.status == JobStatus::Running
        && d.vertices
            .iter()
            .all(|v| v.states.get(&ExecutionState::Running).copied().unwrap_or(0) == v.parallelism)
}

// ---------------------------------------------------------------------------------------
// rill child processes

/// A `rill` child process: SIGKILLed and reaped when dropped. Its stdout lines arrive on
/// a channel; its stderr goes to `<logs>/<name>.log`.
pub struct Proc {
    name: String,
    child: Child,
    stdout: mpsc::UnboundedReceiver<String>,
}

impl Proc {
    /// Starts `rill -D security.cluster-secret=<secret> <args>` in `logs` (so no stray
    /// `./rill.toml` is read) with `RILL_LOG=<rill_log>`.
    pub fn spawn(
        rill: &Path,
        logs: &Path,
        name: &str,
        secret: &str,
        rill_log: &str,
        args: &[&str],
    ) -> Result<Self> {
        let log = logs.join(format!("{name}.log"));
        let stderr =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = Command::new(rill)
            .arg("-D")
            .arg(format!("security.cluster-secret={secret}"))
            .args(args)
            .current_dir(logs)
            .env("RILL_LOG", rill_log)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {}", rill.display()))?;
        let out = child.stdout.take();
        let (tx, rx) = mpsc::unbounded_channel();
        // From here on the guard owns the child: an early return kills it.
        let proc = Proc {
            name: name.into(),
            child,
            stdout: rx,
        };
        let out = out.context("stdout is piped")?;
        // Drains stdout for the child's whole life, so it never blocks on a full pipe.
        std::thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    // Once nobody listens, lines are dropped, but still drained.
                    let _ = tx.send(line);
                }
            })?;
        Ok(proc)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line containing `needle`, waiting at most 10 s.
    pub async fn line_with(&mut self, needle: &str) -> Result<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.stdout.recv()).await {
                Ok(Some(line)) if line.contains(needle) => return Ok(line),
                Ok(Some(_)) => {}
                Ok(None) => bail!(
                    "{} exited ({:?}) before printing {needle:?}",
                    self.name,
                    self.child.try_wait()
                ),
                Err(_) => bail!("{} printed no {needle:?} within 10 s", self.name),
            }
        }
    }

    /// Sends SIGKILL (what `Child::kill` does on Unix) and reaps the process.
    pub fn sigkill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Starts `rill jobmanager --bind 127.0.0.1:0` with an OS-chosen REST port and `-D`
/// `defines`; returns it and its RPC address (from its "JobManager listening on" line).
pub async fn spawn_jobmanager(
    rill: &Path,
    logs: &Path,
    name: &str,
    secret: &str,
    rill_log: &str,
    defines: &[&str],
) -> Result<(Proc, SocketAddr)> {
    // An OS-chosen REST port, so a bench never fights over Flink's 8081.
    let mut args = vec!["-D", "rest.port=0"];
    for d in defines {
        args.extend(["-D", d]);
    }
    args.extend(["jobmanager", "--bind", "127.0.0.1:0"]);
    let mut jm = Proc::spawn(rill, logs, name, secret, rill_log, &args)?;
    let line = jm.line_with("JobManager listening on").await?;
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .with_context(|| format!("no address in {line:?}"))?
        .parse()
        .with_context(|| format!("bad address in {line:?}"))?;
    Ok((jm, addr))
}

/// Starts `rill taskmanager --jobmanager <jobmanager>` (with `--slots` if given); returns
/// it and its resource id (from its "TaskManager <id>" line).
pub async fn spawn_taskmanager(
    rill: &Path,
    logs: &Path,
    name: &str,
    secret: &str,
    rill_log: &str,
    jobmanager: SocketAddr,
    slots: Option<u32>,
) -> Result<(Proc, String)> {
    let jm = jobmanager.to_string();
    let slots = slots.map(|s| s.to_string());
    let mut args = vec!["taskmanager", "--jobmanager", jm.as_str()];
    if let Some(s) = &slots {
        args.extend(["--slots", s.as_str()]);
    }
    let mut tm = Proc::spawn(rill, logs, name, secret, rill_log, &args)?;
    let line = tm.line_with("TaskManager ").await?;
    let id = line
        .split("TaskManager ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .with_context(|| format!("no resource id in {line:?}"))?
        .to_owned();
    Ok((tm, id))
}

/// A `rill jobmanager` process and its `rill taskmanager` processes, keyed by resource
/// id; all are SIGKILLed when dropped.
pub struct ProcessCluster {
    // Fields drop in order: the TaskManagers go before their JobManager.
    /// The TaskManager processes by resource id.
    pub taskmanagers: BTreeMap<String, Proc>,
    /// The JobManager process.
    pub jobmanager: Proc,
    /// The JobManager's RPC address.
    pub address: SocketAddr,
    secret: String,
}

impl ProcessCluster {
    /// Starts `<name>-jobmanager` with `defines` (see [`spawn_jobmanager`]), then one
    /// TaskManager `<name>-taskmanager<i>` with `slots[i]` slots per entry of `slots`,
    /// one after the other.
    pub async fn spawn(
        rill: &Path,
        logs: &Path,
        name: &str,
        secret: &str,
        rill_log: &str,
        defines: &[&str],
        slots: &[u32],
    ) -> Result<Self> {
        let (jobmanager, address) = spawn_jobmanager(
            rill,
            logs,
            &format!("{name}-jobmanager"),
            secret,
            rill_log,
            defines,
        )
        .await?;
        let mut cluster = ProcessCluster {
            taskmanagers: BTreeMap::new(),
            jobmanager,
            address,
            secret: secret.into(),
        };
        for (i, &n) in slots.iter().enumerate() {
            let (tm, id) = spawn_taskmanager(
                rill,
                logs,
                &format!("{name}-taskmanager{i}"),
                secret,
                rill_log,
                address,
                Some(n),
            )
            .await?;
            cluster.taskmanagers.insert(id, tm);
        }
        Ok(cluster)
    }

    /// An admin client of the JobManager.
    pub async fn client(&self) -> Result<AdminClient> {
        let secret = ClusterSecret::from_bytes(self.secret.as_bytes())?;
        Ok(AdminClient::connect(self.address, &secret).await?)
    }

    /// SIGKILLs the TaskManager with resource id `id`; returns when the signal was sent.
    pub fn sigkill_taskmanager(&mut self, id: &str) -> Result<Instant> {
        let tm = self
            .taskmanagers
            .get_mut(id)
            .with_context(|| format!("{id} is none of the TaskManagers started"))?;
        let killed = Instant::now();
        tm.sigkill()?;
        Ok(killed)
    }
}

// ---------------------------------------------------------------------------------------
// Clusters and jobs

/// Starts an in-process [`MiniCluster`] with `config` and connects an admin client to
/// it; returns once `slots` task slots registered (at most 30 s).
pub async fn start_mini_cluster(
    config: &RillConfig,
    registry: Arc<OperatorRegistry>,
    slots: u32,
) -> Result<(MiniCluster, AdminClient)> {
    let cluster = MiniCluster::start(
        config,
        &MiniClusterOptions::default(),
        &ClusterSecret::generate(),
        registry,
    )?;
    let client = AdminClient::with_service(
        cluster.jobmanager().rpc().clone(),
        cluster.jobmanager().address(),
    )
    .await?;
    if let Err(e) = wait_for_slots(&client, slots, Duration::from_secs(30)).await {
        client.close().await;
        cluster.shutdown().await;
        return Err(e);
    }
    Ok((cluster, client))
}

/// Waits (at most `limit`) until the cluster has `want` task slots registered.
pub async fn wait_for_slots(client: &AdminClient, want: u32, limit: Duration) -> Result<()> {
    let have = client.wait_for_slots(want, limit).await?;
    ensure!(
        have >= want,
        "only {have} of {want} slots registered within {limit:?}"
    );
    Ok(())
}

/// Polls `job` every 20 ms until it and all its subtasks are RUNNING (see
/// [`all_running`]); returns those details. Fails when the job ends first or `limit`
/// passes.
pub async fn wait_all_running(
    client: &AdminClient,
    job: JobId,
    limit: Duration,
) -> Result<JobDetails> {
    let t = Instant::now();
    loop {
        let d = client.job_details(job).await?;
        if all_running(&d) {
            return Ok(d);
        }
        ensure!(
            !d.overview.status.is_terminal() && t.elapsed() < limit,
            "job {job} not running after {:?}: {} {:?}",
            t.elapsed(),
            d.overview.status,
            d.failure
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fails if the job ended (while it should be recovering), naming its failure.
pub fn ensure_recovering(d: &JobDetails) -> Result<()> {
    ensure!(
        !d.overview.status.is_terminal(),
        "job went {} instead of recovering: {:?}",
        d.overview.status,
        d.failure
    );
    Ok(())
}

/// Cancels `job` and waits (polling every 20 ms, at most `limit`) until it is terminal.
pub async fn cancel_and_wait(client: &AdminClient, job: JobId, limit: Duration) -> Result<()> {
    client.cancel(job).await?;
    let t = Instant::now();
    loop {
        let s = client.job_status(job).await?;
        if s.is_terminal() {
            return Ok(());
        }
        ensure!(
            t.elapsed() < limit,
            "cancel of job {job} did not finish: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
