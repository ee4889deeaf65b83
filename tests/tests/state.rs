//! Keyed state written by real jobs, read back with the offline state tool: a
//! `rill jobmanager` with `state.checkpoints.dir` and two `rill taskmanager` processes run
//! wordcount at parallelism 4 (string keys over the remote data plane); every task's final
//! snapshot lands in `chk-1`, and `rill state inspect` / `rill state dump` — run as a user
//! would — must show exactly the counts the job computed, for the heap and the lsm backend.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod support;
use support::*;

const LONG: Duration = Duration::from_secs(60);

fn write_input(dir: &Path) -> (PathBuf, BTreeMap<String, i64>) {
    let input = dir.join("in.txt");
    let mut text_in = String::new();
    for i in 0..3000 {
        text_in.push_str(&format!("alpha beta w{} gamma beta\n", i % 97));
    }
    std::fs::write(&input, &text_in).unwrap();
    let mut expected = BTreeMap::new();
    for w in text_in.split_whitespace() {
        *expected.entry(w.to_string()).or_default() += 1;
    }
    (input, expected)
}

/// Runs wordcount on a fresh cluster with `defines`; returns `rill run`'s stdout.
fn wordcount_on_cluster(defines: &[&str], input: &Path, output: &Path) -> String {
    let (_jm, addr) = jobmanager(defines);
    let _tm1 = taskmanager(addr, 2, defines);
    let _tm2 = taskmanager(addr, 2, defines);
    let mut cmd = rill();
    cmd.args([
        "run",
        "--jobmanager",
        &addr.to_string(),
        "-p",
        "4",
        "wordcount",
        "--input",
    ])
    .arg(input)
    .arg("--output")
    .arg(output);
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    stdout
}

fn final_checkpoint_dir(stdout: &str) -> PathBuf {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("final checkpoint 1: "))
        .unwrap_or_else(|| panic!("no final checkpoint line in {stdout:?}"));
    PathBuf::from(
        line.trim_start_matches("final checkpoint 1: ")
            .split(" (")
            .next()
            .unwrap(),
    )
}

fn state_tool(args: &[&str], path: &Path) -> (bool, String, String) {
    let mut cmd = rill();
    cmd.arg("state").arg(args[0]).arg(path).args(&args[1..]);
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    (out.status.success(), stdout, stderr)
}

/// `backend` is a `state.backend.type` value; `shown` the canonical name inspect prints.
fn snapshot_matches_the_job(backend: &str, shown: &str) {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let (input, expected) = write_input(dir.path());
    let dir_define = format!("state.checkpoints.dir=file://{}", checkpoints.display());
    let backend_define = format!("state.backend.type={backend}");
    let stdout = wordcount_on_cluster(
        &[&dir_define, &backend_define],
        &input,
        &dir.path().join("out.txt"),
    );
    let chk = final_checkpoint_dir(&stdout);
    assert!(chk.starts_with(&checkpoints), "{chk:?}");
    assert!(chk.join("_metadata").is_file());

    let (ok, out, err) = state_tool(&["inspect"], &chk);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("operator wordcount-count (count)"), "{out}");
    assert!(out.contains("parallelism 4, max parallelism 128"), "{out}");
    assert!(out.contains(&format!("keyed backend {shown}")), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("process") && l.contains(&format!("{} keys", expected.len()))),
        "{out}"
    );

    let (ok, out, err) = state_tool(
        &[
            "dump",
            "--operator",
            "wordcount-count",
            "--state",
            "process",
        ],
        &chk,
    );
    assert!(ok, "{out}\n{err}");
    let mut got = BTreeMap::new();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = v["key"]["Str"]
            .as_str()
            .unwrap_or_else(|| panic!("{line}"))
            .to_string();
        let count = v["value"].as_i64().unwrap_or_else(|| panic!("{line}"));
        assert!(got.insert(key, count).is_none(), "key twice: {line}");
    }
    assert_eq!(got, expected);
}

#[test]
fn heap_final_snapshot_is_inspectable_and_exact() {
    snapshot_matches_the_job("heap", "heap");
}

#[test]
fn lsm_final_snapshot_is_inspectable_and_exact() {
    snapshot_matches_the_job("rocksdb", "lsm");
}

#[test]
fn an_unwritable_checkpoint_dir_fails_the_snapshot_not_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let (input, expected) = write_input(dir.path());
    // A regular file where the checkpoint directory should be: every write under it fails.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let dir_define = format!("state.checkpoints.dir=file://{}", blocker.display());
    let output = dir.path().join("out.txt");
    let stdout = wordcount_on_cluster(&[&dir_define], &input, &output);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("final checkpoint 1 FAILED: ") && l.contains("not-a-dir")),
        "{stdout}"
    );
    let lines = std::fs::read_to_string(&output).unwrap().lines().count();
    assert_eq!(lines, expected.len(), "the job's output is complete");
}
