//! Checkpoint storage faults on a real cluster: the checkpoint directory is a small
//! tmpfs the test mounts (root only; without the privilege the test says so and
//! returns), which the test fills up and remounts read-only while `running-count` runs.
//! Each failed checkpoint is visible with its reason in `rill checkpoints`; with a
//! tolerable-failure count the job keeps running through the faults, completes
//! checkpoints again once the storage is healthy, and its committed output is exact.
//! Without tolerance, the first failed checkpoint fails the job over. A corrupt latest
//! checkpoint makes a recovery fall back to an older one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::*;

const LONG: Duration = Duration::from_secs(120);

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }

    fn remount(&self, mode: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount {mode}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Polls `rill checkpoints` until `pred` holds on its output (bounded).
fn wait_history(job: &str, jm: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out, _) = rill_out(LONG, &["checkpoints", job, "--jobmanager", jm]);
        if pred(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen within 30 s:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A JobManager started with `defines`, one two-slot TaskManager, and `running-count`
/// (p = 2, `rate` lines/s) submitted detached over `lines` lines of input in `dir`.
struct RunningCount {
    _jm: Proc,
    addr: std::net::SocketAddr,
    tm: Proc,
    /// The JobManager's address, as the CLI takes it.
    jm: String,
    job: String,
    output: PathBuf,
    /// The committed output the job must produce.
    expected: Vec<String>,
}

impl RunningCount {
    fn start(dir: &Path, defines: &[String], lines: u64, rate: u32) -> RunningCount {
        let defines: Vec<&str> = defines.iter().map(String::as_str).collect();
        let (jm_proc, addr) = jobmanager(&defines);
        let tm = taskmanager(addr, 2, &[]).0;
        let jm = addr.to_string();
        let in_path = dir.join("in.txt");
        let output = dir.join("out");
        let expected = running_count_input(&in_path, lines, |i| format!("k{}", (i * 5) % 29));
        let (ok, stdout, stderr) = rill_out(
            LONG,
            &[
                "run",
                "--jobmanager",
                &jm,
                "--detached",
                "-p",
                "2",
                "running-count",
                "--rate",
                &rate.to_string(),
                "--input",
                &in_path.display().to_string(),
                "--output",
                &output.display().to_string(),
            ],
        );
        assert!(ok, "{stdout}\n{stderr}");
        RunningCount {
            _jm: jm_proc,
            addr,
            tm,
            job: job_id_of(&stdout),
            jm,
            output,
            expected,
        }
    }
}

/// Polls `rill status` until its first line is `status` (bounded by `limit`); returns
/// the whole output.
fn wait_status(job: &str, jm: &str, status: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (_, out, _) = rill_out(LONG, &["status", job, "--jobmanager", jm]);
        if out.starts_with(status) {
            return out;
        }
        assert!(Instant::now() < deadline, "job not {status}: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn completed_count(history: &str) -> u64 {
    history
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("completed "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn full_and_read_only_checkpoint_storage_fail_checkpoints_visibly_and_the_job_survives() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("chk"), "4m") else {
        eprintln!("cannot mount a tmpfs (needs root): the real full-disk test is skipped");
        return;
    };
    let defines = [
        "execution.checkpointing.interval=200ms".to_owned(),
        "execution.checkpointing.tolerable-failed-checkpoints=100000".to_owned(),
        format!("state.checkpoints.dir=file://{}", fs.0.display()),
    ];
    let RunningCount {
        _jm,
        addr: _,
        tm: _tm,
        jm,
        job,
        output,
        expected,
    } = RunningCount::start(dir.path(), &defines, 5000, 500);
    wait_history(&job, &jm, "a completed checkpoint", |h| {
        completed_count(h) >= 2
    });

    // Disk full: a filler takes every free byte.
    let filler = fs.0.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status();
    let history = wait_history(&job, &jm, "a checkpoint failing on the full disk", |h| {
        h.contains("No space left on device")
    });
    assert!(history.contains("FAILED"), "{history}");
    let (_, status, _) = rill_out(LONG, &["status", &job, "--jobmanager", &jm]);
    assert!(status.starts_with("RUNNING"), "{status}");
    std::fs::remove_file(&filler).unwrap();
    let before = completed_count(&history);
    wait_history(&job, &jm, "checkpoints completing again", |h| {
        completed_count(h) > before + 1
    });

    // Read-only storage: the same, with its own reason.
    fs.remount("ro");
    let history = wait_history(
        &job,
        &jm,
        "a checkpoint failing on read-only storage",
        |h| h.contains("Read-only file system"),
    );
    fs.remount("rw");
    let before = completed_count(&history);
    wait_history(&job, &jm, "checkpoints completing again", |h| {
        completed_count(h) > before + 1
    });

    // The job never restarted and its output is exact.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, status, _) = rill_out(LONG, &["status", &job, "--jobmanager", &jm]);
        if status.starts_with("FINISHED") {
            assert!(status.contains("restarts: 0"), "{status}");
            break;
        }
        assert!(status.starts_with("RUNNING"), "{status}");
        assert!(Instant::now() < deadline, "job not FINISHED: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(committed_output(&output).0, expected);
}

#[test]
fn without_tolerance_a_failed_checkpoint_fails_the_job_over() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("chk"), "4m") else {
        eprintln!("cannot mount a tmpfs (needs root): the real full-disk test is skipped");
        return;
    };
    let defines = [
        "execution.checkpointing.interval=200ms".to_owned(),
        format!("state.checkpoints.dir=file://{}", fs.0.display()),
        "restart-strategy.type=fixed-delay".to_owned(),
        "restart-strategy.fixed-delay.attempts=1000".to_owned(),
        "restart-strategy.fixed-delay.delay=200ms".to_owned(),
    ];
    let RunningCount {
        _jm,
        addr: _,
        tm: _tm,
        jm,
        job,
        output,
        expected,
    } = RunningCount::start(dir.path(), &defines, 4000, 500);
    wait_history(&job, &jm, "a completed checkpoint", |h| {
        completed_count(h) >= 2
    });
    fs.remount("ro");
    // The failover restores the last completed checkpoint; with the storage still
    // read-only its next checkpoint fails again, and so on.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let (_, status, _) = rill_out(LONG, &["status", &job, "--jobmanager", &jm]);
        if status.contains("tolerable failure threshold") {
            break status;
        }
        assert!(Instant::now() < deadline, "no failover seen: {status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.contains("Read-only file system"), "{status}");
    fs.remount("rw");
    wait_status(&job, &jm, "FINISHED", Duration::from_secs(60));
    assert_eq!(committed_output(&output).0, expected);
}

/// The completed checkpoints (`chk-<n>` with `_metadata`) under a job's directory.
fn completed_checkpoints(root: &Path) -> Vec<(u64, PathBuf)> {
    let mut out = Vec::new();
    for job in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for e in std::fs::read_dir(job.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name.strip_prefix("chk-").and_then(|n| n.parse().ok()) {
                if e.path().join("_metadata").exists() {
                    out.push((n, e.path()));
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_corrupt_latest_checkpoint_makes_recovery_fall_back_to_an_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let chk = dir.path().join("chk");
    let defines = [
        "execution.checkpointing.interval=200ms".to_owned(),
        format!("state.checkpoints.dir=file://{}", chk.display()),
        "state.checkpoints.num-retained=3".to_owned(),
        // Long enough to corrupt the latest checkpoint while the job is RESTARTING.
        "restart-strategy.type=fixed-delay".to_owned(),
        "restart-strategy.fixed-delay.attempts=10".to_owned(),
        "restart-strategy.fixed-delay.delay=2s".to_owned(),
    ];
    let RunningCount {
        _jm,
        addr,
        mut tm,
        jm,
        job,
        output,
        expected,
    } = RunningCount::start(dir.path(), &defines, 4000, 800);
    wait_history(&job, &jm, "three completed checkpoints", |h| {
        completed_count(h) >= 4
    });
    tm.kill();
    wait_status(&job, &jm, "RESTARTING", Duration::from_secs(20));
    // No checkpoint completes while the job restarts: corrupt the newest one.
    let retained = completed_checkpoints(&chk);
    assert_eq!(retained.len(), 3, "{retained:?}");
    let (latest, latest_dir) = retained.last().unwrap().clone();
    std::fs::write(latest_dir.join("_metadata"), b"garbage").unwrap();
    let _tm2 = taskmanager(addr, 2, &[]);
    let history = wait_history(&job, &jm, "the restore of an older checkpoint", |h| {
        h.contains("restored from checkpoint")
    });
    let restored: u64 = history
        .lines()
        .find_map(|l| l.strip_prefix("restored from checkpoint "))
        .and_then(|l| l.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{history}"));
    assert!(restored < latest, "restored {restored}, corrupted {latest}");
    assert!(history.contains("unreadable on recovery"), "{history}");
    wait_status(&job, &jm, "FINISHED", Duration::from_secs(60));
    // Nothing is lost. The transaction the corrupt checkpoint committed stays committed
    // and its records are replayed from the older checkpoint: falling back gives up
    // exactly-once for that stretch (as in Flink), which the JobManager's log says.
    let (lines, _) = committed_output(&output);
    let mut have: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &lines {
        *have.entry(l.as_str()).or_default() += 1;
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|l| !have.contains_key(l.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "lost {} lines: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(lines.len() >= expected.len());
}
