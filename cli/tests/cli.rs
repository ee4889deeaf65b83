//! The `rill` binary as a user runs it.

use std::process::Command;

fn rill() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rill"))
}

#[test]
fn demo_runs_endpoints_over_quic() {
    let out = rill()
        .args(["demo", "--asks", "200", "--tells", "5000"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("registered as worker 0"), "{stdout}");
    assert!(
        stdout.contains("5000 remote tells, all handled"),
        "{stdout}"
    );
    assert!(stdout.contains("stale token rejected"), "{stdout}");
    assert!(stdout.contains("death-watch reported Stopped"), "{stdout}");
}

#[test]
fn keyed_sum_job_prints_a_correct_checksum() {
    let out = rill()
        .args([
            "run",
            "-p",
            "2",
            "keyed-sum",
            "--rows",
            "200000",
            "--keys",
            "100",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("FINISHED"), "{stdout}");
    assert!(stdout.contains("(OK)"), "{stdout}");
    // No JobManager was given: the run says it uses a local mini-cluster.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mini-cluster"), "{stderr}");
}

#[test]
fn wordcount_counts_words_of_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let output = dir.path().join("out.txt");
    std::fs::write(&input, "to be or not to be\nthat is the question\n").unwrap();
    let out = rill()
        .args([
            "run",
            "--minicluster",
            "--taskmanagers",
            "2",
            "-p",
            "2",
            "wordcount",
        ])
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&output).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "(be,2)",
            "(is,1)",
            "(not,1)",
            "(or,1)",
            "(question,1)",
            "(that,1)",
            "(the,1)",
            "(to,2)"
        ],
        "{text}"
    );
}

#[test]
fn bad_usage_and_bad_config_exit_with_2() {
    let out = rill().args(["run", "no-such-job"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = rill()
        .args(["-D", "heartbeat.interval=banana", "demo"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("heartbeat.interval"), "{stderr}");
}

#[test]
fn a_malformed_job_id_is_a_usage_error_that_names_it() {
    for (verb, id) in [("status", "not-a-job-id"), ("cancel", "xyz")] {
        // Port 9 (discard): the id is checked before any connection is tried.
        let out = rill()
            .args([verb, id, "--jobmanager", "127.0.0.1:9"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{verb}: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!("rill: invalid job id \"{id}\": expected 32 hex digits"),
            "{verb}"
        );
    }
}
