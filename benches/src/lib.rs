//! Shared helpers for rill benchmarks.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use rill_endpoints::messages::{ExecutionState, JobDetails};
use rill_endpoints::JobStatus;
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
}

/// Prints `rows` as a table: figure, value, target, verdict (`met` / `MISSED`).
pub fn print_table(rows: &[Row]) {
    let width = |f: fn(&Row) -> usize, min: usize| rows.iter().map(f).max().unwrap_or(0).max(min);
    let w0 = width(|r| r.figure.chars().count(), 6);
    let w1 = width(|r| r.value.chars().count(), 5);
    let w2 = width(|r| r.target.chars().count(), 6);
    println!();
    println!("{:<w0$}  {:>w1$}  {:<w2$}  verdict", "figure", "value", "target");
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
