//! Shared helpers of the end-to-end tests: real `rill` processes on 127.0.0.1 with ports
#![allow(dead_code, unreachable_pub)]
//! chosen by the OS, always killed when the test ends, every wait bounded.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod webdriver;

/// The shared secret every test process uses (`security.cluster-secret`).
pub const SECRET: &str = "rill-e2e-secret";

/// The rill binary under test.
pub fn rill_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rill-e2e"))
}

/// A `rill` command with the test secret and quiet logs.
pub fn rill() -> Command {
    let mut c = Command::new(rill_binary());
    c.arg("-D").arg(format!("security.cluster-secret={SECRET}"));
    // Every JobManager of the tests serves REST on an OS-chosen port, so parallel tests
    // never fight over Flink's default 8081.
    c.arg("-D").arg("rest.port=0");
    c.env(
        "RILL_LOG",
        std::env::var("RILL_LOG").unwrap_or_else(|_| "warn".into()),
    );
    c
}

/// The secret as the admin library wants it.
pub fn secret() -> rill_runtime::security::ClusterSecret {
    rill_runtime::security::ClusterSecret::from_bytes(SECRET.as_bytes()).expect("non-empty")
}

/// A child process killed (SIGKILL) and reaped on drop; its stdout lines are collected.
pub struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// What it is, for messages.
    pub name: String,
}

impl Proc {
    /// Spawns `cmd` with piped stdout (stderr is inherited, so logs show in test output).
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines: rx,
            seen: Vec::new(),
            name: name.to_string(),
        }
    }

    /// Waits (at most `timeout`) for a stdout line containing `needle`; returns it.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "{}: no line containing {needle:?} within {timeout:?}; saw {:?}",
                    self.name, self.seen
                ),
            }
        }
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JobManager process on 127.0.0.1 with an OS-chosen port.
pub fn jobmanager(defines: &[&str]) -> (Proc, SocketAddr) {
    jobmanager_at("127.0.0.1:0", defines)
}

/// A JobManager bound to `bind` (which may be a host name); returns it and the socket it
/// printed.
pub fn jobmanager_at(bind: &str, defines: &[&str]) -> (Proc, SocketAddr) {
    let mut cmd = rill();
    for d in defines {
        cmd.arg("-D").arg(d);
    }
    cmd.args(["jobmanager", "--bind", bind]);
    let mut p = Proc::spawn("jobmanager", cmd);
    let line = p.wait_for_line("JobManager listening on", Duration::from_secs(20));
    let addr = line
        .split_whitespace()
        .nth(4)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse the JobManager address from {line:?}"));
    (p, addr)
}

/// A TaskManager process registering at `jobmanager`; returns it and its resource id.
pub fn taskmanager(jobmanager: SocketAddr, slots: u32, defines: &[&str]) -> (Proc, String) {
    taskmanager_at(&jobmanager.to_string(), slots, defines)
}

/// A TaskManager registering at `jobmanager` (`host:port`, the host possibly a name);
/// returns it and its resource id.
pub fn taskmanager_at(jobmanager: &str, slots: u32, defines: &[&str]) -> (Proc, String) {
    let mut cmd = rill();
    for d in defines {
        cmd.arg("-D").arg(d);
    }
    cmd.args([
        "taskmanager",
        "--jobmanager",
        jobmanager,
        "--slots",
        &slots.to_string(),
    ]);
    let mut p = Proc::spawn("taskmanager", cmd);
    let line = p.wait_for_line("TaskManager ", Duration::from_secs(20));
    let id = line
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("cannot parse the resource id from {line:?}"))
        .to_string();
    (p, id)
}

/// A multi-threaded tokio runtime with 2 workers for a test's async admin calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs a rill command to completion (bounded by `timeout`, killed after it).
pub fn run(mut cmd: Command, timeout: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rill starts");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.expect("rill ran"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("rill command did not finish within {timeout:?}: {cmd:?}");
        }
    }
}

/// Stdout and stderr of an output, for assertion messages.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `f` every 20 ms until it returns `Some`, at most `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{what}: not reached within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The job id `rill run` printed on submission.
pub fn job_id_of(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Job has been submitted with JobID "))
        .unwrap_or_else(|| panic!("no job id in {stdout:?}"))
        .trim()
        .to_string()
}

/// Runs `rill args…` to completion (bounded by `timeout`): success, stdout, stderr.
pub fn rill_out(timeout: Duration, args: &[&str]) -> (bool, String, String) {
    let mut cmd = rill();
    cmd.args(args);
    let out = run(cmd, timeout);
    let (stdout, stderr) = text(&out);
    (out.status.success(), stdout, stderr)
}

/// Writes a `running-count` input of `lines` lines whose first field is `key(i)` and
/// returns the committed output it must produce, sorted: for a key that occurs n times,
/// `key,1` … `key,n`.
pub fn running_count_input(
    path: &std::path::Path,
    lines: u64,
    key: impl Fn(u64) -> String,
) -> Vec<String> {
    let mut text = String::new();
    let mut expected = Vec::new();
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for i in 0..lines {
        let k = key(i);
        text.push_str(&format!("{k} payload {i}\n"));
        let n = counts.entry(k.clone()).or_default();
        *n += 1;
        expected.push(format!("{k},{n}"));
    }
    std::fs::write(path, text).unwrap();
    expected.sort();
    expected
}

/// The committed lines of a transactional file sink's output directory, sorted, and
/// the names of the hidden (in-progress or pending) files left in it.
pub fn committed_output(dir: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let mut lines = Vec::new();
    let mut hidden = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            hidden.push(name);
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap();
        lines.extend(text.lines().map(String::from));
    }
    lines.sort();
    (lines, hidden)
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Self {
        let seed = std::env::var("RILL_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_1234_abcd_0001u64);
        eprintln!("kill schedule seed: {seed} (RILL_TEST_SEED replays it)");
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// SIGKILLs a random one of `tms` (replacing it with a new TaskManager) `kills` times,
/// each kill `pause_ms` (a random time in that range, from `rng`) after the job is
/// RUNNING again with every task RUNNING, so that each kill is a failover of a running
/// job rather than one more blow to a restarting one. Every wait is bounded (60 s).
pub fn kill_taskmanagers(
    rt: &tokio::runtime::Runtime,
    admin: &rill::admin::AdminClient,
    jobmanager: SocketAddr,
    tms: &mut [Proc],
    kills: usize,
    pause_ms: std::ops::Range<u64>,
    rng: &mut Rng,
) {
    use rill_endpoints::messages::{ExecutionState, JobStatus};
    let wait_running = |restarts: u32| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let running = rt.block_on(async {
                let jobs = admin.list_jobs().await.ok()?;
                let d = admin.job_details(jobs.first()?.job).await.ok()?;
                Some(
                    d.restarts >= restarts
                        && d.overview.status == JobStatus::Running
                        && d.vertices.iter().all(|v| {
                            v.states.get(&ExecutionState::Running) == Some(&v.parallelism)
                        }),
                )
            });
            if running == Some(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the job did not run again within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let started = Instant::now();
    for k in 0..kills {
        wait_running(k as u32);
        let pause = pause_ms.start + rng.below(pause_ms.end - pause_ms.start);
        std::thread::sleep(Duration::from_millis(pause));
        let victim = rng.below(tms.len() as u64) as usize;
        eprintln!(
            "kill {}: TaskManager {victim} (pid {}) at {:?}",
            k + 1,
            tms[victim].pid(),
            started.elapsed()
        );
        tms[victim].kill();
        tms[victim] = taskmanager(jobmanager, 1, &[]).0;
    }
}
