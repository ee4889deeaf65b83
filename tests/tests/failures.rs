//! Jobs that can never succeed, on a real cluster (`rill jobmanager` and `rill
//! taskmanager` processes on 127.0.0.1): what `rill run` says and how the restart
//! strategy treats them.
//!
//! * Without checkpointing and without a configured strategy, a failing job is not
//!   restarted (Flink's default): it FAILS at once and `rill run` names the cause.
//! * With a fixed-delay strategy, `rill run` prints every failure's cause with the
//!   restart it leads to, then the final failure.
//! * A job whose collect results pass `collect.max-bytes` FAILS with a cause naming the
//!   limit.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod support;
use support::*;

const LONG: Duration = Duration::from_secs(90);

fn wordcount(jobmanager: &std::net::SocketAddr, input: &Path, output: &Path) -> Command {
    let mut cmd = rill();
    cmd.args([
        "run",
        "--jobmanager",
        &jobmanager.to_string(),
        "-p",
        "2",
        "wordcount",
        "--input",
    ])
    .arg(input)
    .arg("--output")
    .arg(output);
    cmd
}

/// `rill status` of `job`: its stdout.
fn status(jobmanager: &std::net::SocketAddr, job: &str) -> String {
    let mut cmd = rill();
    cmd.args(["status", job, "--jobmanager", &jobmanager.to_string()]);
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    stdout
}

#[test]
fn without_checkpointing_a_job_with_a_missing_input_fails_at_once_naming_the_file() {
    let (_jm, addr) = jobmanager(&[]);
    let _tm = taskmanager(addr, 2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-input.txt");
    let missing_text = missing.display().to_string();

    let out = run(
        wordcount(&addr, &missing, &dir.path().join("out.txt")),
        LONG,
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    // Printed as it happened, with what followed …
    let failure_line = stderr
        .lines()
        .find(|l| l.contains(&missing_text) && l.contains("not restarting"))
        .unwrap_or_else(|| panic!("no failure line naming {missing_text}: {stderr}"));
    assert!(
        failure_line.contains("No such file or directory")
            && failure_line.contains("the default without checkpointing"),
        "{failure_line}"
    );
    assert!(!stderr.contains("restarting in"), "{stderr}");
    // … and as the run's error.
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("rill: job ") && last.contains("FAILED") && last.contains(&missing_text),
        "{stderr}"
    );

    let details = status(&addr, &job_id_of(&stdout));
    assert_eq!(details.lines().next(), Some("FAILED"), "{details}");
    assert!(details.contains("restarts: 0"), "{details}");
}

#[test]
fn a_fixed_delay_strategy_restarts_twice_printing_each_cause_then_fails() {
    let (_jm, addr) = jobmanager(&[
        "restart-strategy.type=fixed-delay",
        "restart-strategy.fixed-delay.attempts=2",
        "restart-strategy.fixed-delay.delay=100ms",
    ]);
    let _tm = taskmanager(addr, 2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("gone.txt");
    let missing_text = missing.display().to_string();

    let out = run(
        wordcount(&addr, &missing, &dir.path().join("out.txt")),
        LONG,
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let causes: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("job ") && l.contains(&missing_text))
        .collect();
    assert_eq!(causes.len(), 3, "one line per failure: {stderr}");
    assert!(
        causes[0].ends_with("restarting in 0.1 s (restart 1)"),
        "{}",
        causes[0]
    );
    assert!(
        causes[1].ends_with("restarting in 0.1 s (restart 2)"),
        "{}",
        causes[1]
    );
    assert!(
        causes[2].contains("not restarting: restart-strategy fixed-delay (attempts=2"),
        "{}",
        causes[2]
    );
    for line in &causes {
        assert!(line.contains("task 'Source: lines"), "{line}");
    }
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("FAILED") && last.contains(&missing_text),
        "{stderr}"
    );
    let details = status(&addr, &job_id_of(&stdout));
    assert_eq!(details.lines().next(), Some("FAILED"), "{details}");
    assert!(details.contains("restarts: 2"), "{details}");
}

#[test]
fn collect_results_past_collect_max_bytes_fail_the_job_with_the_limit_in_the_cause() {
    let (_jm, addr) = jobmanager(&[
        "collect.max-bytes=64kb",
        // Collecting again would pass the limit again: no restart even when allowed.
        "restart-strategy.type=fixed-delay",
        "restart-strategy.fixed-delay.attempts=3",
    ]);
    let _tm = taskmanager(addr, 1, &[]);
    let jm = addr.to_string();
    // 20,000 (key, count, sum) rows: far more than 64 KiB.
    let mut cmd = rill();
    cmd.args([
        "run",
        "--jobmanager",
        &jm,
        "keyed-sum",
        "--rows",
        "20000",
        "--keys",
        "20000",
    ]);
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("collect results exceeded collect.max-bytes = 65536 bytes"),
        "{stderr}"
    );
    let details = status(&addr, &job_id_of(&stdout));
    assert_eq!(details.lines().next(), Some("FAILED"), "{details}");
    assert!(details.contains("restarts: 0"), "{details}");

    // Under the limit, the same cluster runs the job and returns its results.
    let mut cmd = rill();
    cmd.args([
        "run",
        "--jobmanager",
        &jm,
        "keyed-sum",
        "--rows",
        "20000",
        "--keys",
        "100",
    ]);
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("(OK)"), "{stdout}");
}
