//! Savepoints through the CLI on a real cluster: an intermediate savepoint, a
//! stop-with-savepoint, resuming the stopped job at a different parallelism from a copy
//! of the savepoint directory (so it must be self-contained), and resuming a job that
//! lacks the savepoint's operators — refused, then accepted with
//! `--allow-non-restored-state`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

mod support;
use support::*;

const LONG: Duration = Duration::from_secs(90);

/// The path a `rill savepoint` / `rill stop` printed.
fn savepoint_path(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("savepoint completed: "))
        .unwrap_or_else(|| panic!("no savepoint path in {stdout:?}"))
        .trim()
        .to_owned()
}

fn rill_ok(args: &[&str]) -> String {
    let mut cmd = rill();
    cmd.args(args);
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "rill {args:?}\n{stdout}\n{stderr}");
    stdout
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        assert!(e.file_type().unwrap().is_file(), "savepoints are flat");
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn stop_with_savepoint_and_resume_at_another_parallelism_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let defines = [
        "execution.checkpointing.interval=300ms".to_owned(),
        format!(
            "state.checkpoints.dir=file://{}",
            dir.path().join("chk").display()
        ),
        format!(
            "state.savepoints.dir=file://{}",
            dir.path().join("sp").display()
        ),
    ];
    let defines: Vec<&str> = defines.iter().map(String::as_str).collect();
    let (_jm, addr) = jobmanager(&defines);
    let _tm1 = taskmanager(addr, 2, &[]);
    let _tm2 = taskmanager(addr, 2, &[]);
    let jm = addr.to_string();

    let input = dir.path().join("in.txt");
    let output = dir.path().join("out");
    let expected = running_count_input(&input, 4000, |i| format!("k{}", (i * 11) % 37));
    let (input, output) = (input.display().to_string(), output.display().to_string());

    let stdout = rill_ok(&[
        "run",
        "--jobmanager",
        &jm,
        "--detached",
        "-p",
        "2",
        "running-count",
        "--rate",
        "400",
        "--input",
        &input,
        "--output",
        &output,
    ]);
    let job = job_id_of(&stdout);
    // Running for a while (bounded wait on the job's status line).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = rill_ok(&["status", &job, "--jobmanager", &jm]);
        if s.starts_with("RUNNING") {
            break;
        }
        assert!(Instant::now() < deadline, "job not RUNNING: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));

    // An intermediate savepoint into the configured directory; the job goes on.
    let sp1 = savepoint_path(&rill_ok(&["savepoint", &job, "--jobmanager", &jm]));
    assert!(Path::new(&sp1).join("_metadata").exists(), "{sp1}");
    assert!(sp1.starts_with(&dir.path().join("sp").display().to_string()));
    std::thread::sleep(Duration::from_millis(800));

    // Stop with a savepoint into an explicit directory: the job ends FINISHED, having
    // committed exactly a prefix of every key's counts.
    let target = dir.path().join("stopped");
    let stop_out = rill_ok(&[
        "stop",
        &job,
        "--jobmanager",
        &jm,
        "--savepoint-path",
        &format!("file://{}", target.display()),
    ]);
    assert!(stop_out.contains("FINISHED"), "{stop_out}");
    let sp2 = savepoint_path(&stop_out);
    let history = rill_ok(&["checkpoints", &job, "--jobmanager", &jm]);
    assert!(history.contains("savepoint"), "{history}");
    let (partial, hidden) = committed_output(Path::new(&output));
    let hidden = hidden.len();
    assert_eq!(hidden, 0);
    assert!(
        partial.len() < expected.len() && !partial.is_empty(),
        "{} of {} lines before the resume",
        partial.len(),
        expected.len()
    );
    let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
    for l in &partial {
        let (k, n) = l.rsplit_once(',').unwrap();
        let n: u64 = n.parse().unwrap();
        let max = seen.entry(k).or_default();
        *max = (*max).max(n);
    }
    let prefix_lines: u64 = seen.values().sum();
    assert_eq!(
        prefix_lines,
        partial.len() as u64,
        "a gap or a duplicate: {partial:?}"
    );

    // The savepoint is self-contained: move it elsewhere and resume from the copy, at
    // parallelism 3.
    let moved = dir.path().join("moved-savepoint");
    copy_dir(Path::new(&sp2), &moved);
    std::fs::remove_dir_all(&sp2).unwrap();
    let moved = moved.display().to_string();
    let resumed = rill_ok(&[
        "run",
        "--jobmanager",
        &jm,
        "-p",
        "3",
        "--from-savepoint",
        &moved,
        "running-count",
        "--input",
        &input,
        "--output",
        &output,
    ]);
    assert!(resumed.contains("FINISHED"), "{resumed}");
    let (lines, hidden) = committed_output(Path::new(&output));
    let hidden = hidden.len();
    assert_eq!(hidden, 0);
    assert_eq!(lines.len(), expected.len());
    assert_eq!(lines, expected);

    // A job without the savepoint's operators is refused before it is deployed, naming
    // the uid; `--allow-non-restored-state` drops that state.
    let mut cmd = rill();
    cmd.args([
        "run",
        "--jobmanager",
        &jm,
        "--from-savepoint",
        &sp1,
        "keyed-sum",
        "--rows",
        "100",
    ]);
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains("running-count-") && stderr.contains("--allow-non-restored-state"),
        "{stderr}"
    );
    let ok = rill_ok(&[
        "run",
        "--jobmanager",
        &jm,
        "--from-savepoint",
        &sp1,
        "--allow-non-restored-state",
        "keyed-sum",
        "--rows",
        "100",
    ]);
    assert!(ok.contains("FINISHED"), "{ok}");

    // A missing savepoint is refused with its path.
    let mut cmd = rill();
    cmd.args([
        "run",
        "--jobmanager",
        &jm,
        "--from-savepoint",
        "/nonexistent/savepoint-x",
        "keyed-sum",
        "--rows",
        "10",
    ]);
    let out = run(cmd, LONG);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("/nonexistent/savepoint-x"), "{stderr}");
}
