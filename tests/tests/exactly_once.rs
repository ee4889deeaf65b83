//! Exactly-once through failures: `running-count` (parallelism 3) on 1 JobManager + 3
//! one-slot TaskManager processes with checkpoints every 200 ms while a test SIGKILLs random TaskManagers at
//! random moments (starting a replacement after each kill). The committed output is
//! compared with the expected output line by line: every key that occurs n times has
//! exactly the lines `key,1` … `key,n`, each once.
//!
//! The moments and victims come from a seeded generator; the seed is printed, and
//! `RILL_TEST_SEED` replays a run.

use std::collections::BTreeMap;
use std::time::Duration;

use rill::admin::AdminClient;
mod support;
use support::*;

/// Runs `running-count` under repeated TaskManager kills in `mode`; returns the
/// expected and the committed lines, and the hidden files left. `extra` configures the
/// cluster; with unaligned checkpoints the job is throttled downstream instead of at
/// its source, so that backpressure keeps data in flight at every checkpoint.
fn run_under_kills(
    mode: &str,
    backend: &str,
    kills: usize,
    extra: &[&str],
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let unaligned = extra.contains(&UNALIGNED);
    // With an aligned-checkpoint timeout, a checkpoint turns unaligned only where its
    // barriers are late: completed checkpoints are of either kind.
    let timeout = extra.contains(&ALIGNED_TIMEOUT);
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let defines = [
        "execution.checkpointing.interval=200ms".to_owned(),
        format!("execution.checkpointing.mode={mode}"),
        format!("state.backend.type={backend}"),
        // Two retained: discarding the older one must keep the shared files the newer
        // (incremental lsm) checkpoint still references.
        "state.checkpoints.num-retained=2".to_owned(),
        format!("state.checkpoints.dir=file://{}", checkpoints.display()),
        "restart-strategy.type=fixed-delay".to_owned(),
        "restart-strategy.fixed-delay.attempts=1000".to_owned(),
        "restart-strategy.fixed-delay.delay=100ms".to_owned(),
    ];
    let defines: Vec<&str> = defines
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
        .collect();
    let (_jm, addr) = jobmanager(&defines);
    // One slot each and parallelism 3: every TaskManager runs a share of the job, so
    // every kill hits it.
    let mut tms: Vec<Proc> = (0..3).map(|_| taskmanager(addr, 1, &[]).0).collect();
    let in_path = dir.path().join("in.txt");
    let output = dir.path().join("out");
    let key = |i: u64| format!("k{}", (i * 7 + i / 13) % 53);
    // Unaligned: 240 000 lines through 4 000 lines/s per count subtask (12 000/s in all,
    // 20 s as at the source's 600 lines/s otherwise). The source reads far ahead, so the
    // network buffers stay full behind the throttle and every barrier overtakes data.
    let expected = running_count_input(&in_path, if unaligned { 240_000 } else { 12_000 }, key);

    let mut cmd = rill();
    cmd.args([
        "run",
        "--jobmanager",
        &addr.to_string(),
        "-p",
        "3",
        "running-count",
        "--input",
    ])
    .arg(&in_path)
    .arg("--output")
    .arg(&output)
    .args(if unaligned {
        ["--throttle", "4000"]
    } else {
        ["--rate", "600"]
    });
    let client = std::thread::spawn(move || run(cmd, Duration::from_secs(240)));

    let rt = runtime();
    let admin = rt
        .block_on(AdminClient::connect(addr, &secret()))
        .expect("admin client connects");
    let mut rng = Rng::seeded();
    kill_taskmanagers(&rt, &admin, addr, &mut tms, kills, 200..1500, &mut rng);
    let out = client.join().expect("the client thread");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // `rill run` reports each failure and its restart on stderr.
    let restarts = stderr.matches("restarting in").count();
    eprintln!("{restarts} restarts");
    assert!(
        restarts >= kills,
        "each kill must have restarted the job:\n{stdout}\n{stderr}"
    );
    // The last attempt restored a checkpoint and its source resumed mid-file rather
    // than reading the input again from its start.
    let d = rt
        .block_on(async {
            let job = admin.list_jobs().await?.first().map(|j| j.job);
            admin.job_details(job.expect("the job")).await
        })
        .expect("job details");
    eprintln!("checkpoints: {:?}", d.checkpoints);
    assert!(d.checkpoints.restored.is_some(), "{:?}", d.checkpoints);
    assert!(d.checkpoints.completed >= 10, "{:?}", d.checkpoints);
    assert!(
        d.checkpoints
            .history
            .iter()
            .filter(|c| c.status == "COMPLETED")
            .all(|c| c.unaligned == unaligned || timeout),
        "{:?}",
        d.checkpoints.history
    );
    if unaligned {
        // Backpressure: the barriers overtook buffered data, which was stored.
        assert!(
            d.checkpoints.history.iter().any(|c| c.in_flight_bytes > 0),
            "{:?}",
            d.checkpoints.history
        );
    }
    let source_out = d.vertices[0].records_out;
    assert!(
        source_out < expected.len() as u64,
        "the last attempt's source read {source_out} lines: it did not resume"
    );
    let (lines, hidden) = committed_output(&output);
    (expected, lines, hidden)
}

#[test]
fn exactly_once_output_after_ten_taskmanager_kills() {
    let (expected, lines, hidden) = run_under_kills("exactly_once", "heap", 10, &[]);
    assert_exact(&expected, &lines, &hidden);
}

const UNALIGNED: &str = "execution.checkpointing.unaligned.enabled=true";

/// The same with unaligned checkpoints: barriers overtake the buffered data, which is
/// stored with the checkpoints and replayed first after each restore.
#[test]
fn exactly_once_with_unaligned_checkpoints_after_ten_taskmanager_kills() {
    let (expected, lines, hidden) = run_under_kills("exactly_once", "heap", 10, &[UNALIGNED]);
    assert_exact(&expected, &lines, &hidden);
}

const ALIGNED_TIMEOUT: &str = "execution.checkpointing.aligned-checkpoint-timeout=20ms";

/// The same with aligned checkpoints that turn unaligned after 20 ms: behind the
/// throttle, barriers wait in the source's and the count's output queues and turn
/// unaligned there (and at the count's input), and what they overtook is stored.
#[test]
fn exactly_once_with_an_aligned_checkpoint_timeout_after_ten_taskmanager_kills() {
    let (expected, lines, hidden) =
        run_under_kills("exactly_once", "heap", 10, &[UNALIGNED, ALIGNED_TIMEOUT]);
    assert_exact(&expected, &lines, &hidden);
}

#[test]
fn exactly_once_with_incremental_lsm_checkpoints_after_ten_taskmanager_kills() {
    let (expected, lines, hidden) = run_under_kills("exactly_once", "lsm", 10, &[]);
    assert_exact(&expected, &lines, &hidden);
}

fn assert_exact(expected: &[String], lines: &[String], hidden: &[String]) {
    assert!(hidden.is_empty(), "uncommitted files left: {hidden:?}");
    assert_eq!(lines.len(), expected.len(), "line count");
    // Record by record: a diff names the first lost or duplicated line.
    for (i, (got, want)) in lines.iter().zip(expected).enumerate() {
        assert_eq!(got, want, "line {i} of the sorted committed output");
    }
}

#[test]
fn at_least_once_loses_nothing_after_taskmanager_kills() {
    let (expected, lines, _) = run_under_kills("at_least_once", "heap", 10, &[]);
    let mut have: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &lines {
        *have.entry(l).or_default() += 1;
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|l| !have.contains_key(l.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "lost {} lines, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}
