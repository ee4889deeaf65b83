//! Event-time windows end to end: the built-in `window-count` job (`key,timestamp` lines
//! → bounded-out-of-orderness watermarks → tumbling event-time window count per key →
//! transactional file sink) run through the real `rill` binary on a real cluster. The
//! committed output is compared record by record with the counts this test computes
//! from its own input — once on a healthy cluster, and once under repeated TaskManager SIGKILLs with checkpoints (exactly once).

use std::collections::BTreeMap;
use std::time::Duration;

use rill::admin::AdminClient;
mod support;
use support::*;

const LONG: Duration = Duration::from_secs(120);
const SIZE: i64 = 1_000;
const OUT_OF_ORDERNESS: i64 = 1_000;

/// Writes `lines` records `key,timestamp`: timestamps rise by 7 ms per line with a
/// jitter of up to 500 ms, so no record lags the largest timestamp before it by more than
/// the out-of-orderness, whichever byte range of the file a source subtask reads — none
/// is late. Returns the expected `key,start,end,count` lines, sorted, computed here.
fn window_input(path: &std::path::Path, lines: u64) -> Vec<String> {
    let mut text = String::new();
    let mut counts: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for i in 0..lines {
        let key = format!("k{}", (i * 13 + i / 7) % 17);
        let ts = (i * 7 + (i * 31) % 500) as i64;
        text.push_str(&format!("{key},{ts}\n"));
        *counts.entry((key, ts - ts % SIZE)).or_default() += 1;
    }
    std::fs::write(path, text).unwrap();
    let mut expected: Vec<String> = counts
        .into_iter()
        .map(|((k, start), n)| format!("{k},{start},{},{n}", start + SIZE))
        .collect();
    expected.sort();
    expected
}

fn window_count_cmd(
    addr: std::net::SocketAddr,
    parallelism: u32,
    input: &std::path::Path,
    output: &std::path::Path,
    rate: Option<u32>,
) -> std::process::Command {
    let mut cmd = rill();
    cmd.args([
        "run",
        "--jobmanager",
        &addr.to_string(),
        "-p",
        &parallelism.to_string(),
        "window-count",
        "--size",
        &SIZE.to_string(),
        "--out-of-orderness",
        &OUT_OF_ORDERNESS.to_string(),
    ]);
    if let Some(r) = rate {
        cmd.args(["--rate", &r.to_string()]);
    }
    cmd.arg("--input").arg(input).arg("--output").arg(output);
    cmd
}

fn assert_exact(expected: &[String], lines: &[String], hidden: &[String]) {
    assert!(hidden.is_empty(), "uncommitted files left: {hidden:?}");
    for (i, (got, want)) in lines.iter().zip(expected).enumerate() {
        assert_eq!(got, want, "line {i} of the sorted committed output");
    }
    assert_eq!(lines.len(), expected.len(), "line count");
}

#[test]
fn window_count_commits_each_window_once() {
    let (_jm, addr) = jobmanager(&[]);
    let _tm1 = taskmanager(addr, 2, &[]);
    let _tm2 = taskmanager(addr, 2, &[]);
    let dir = tempfile::tempdir().unwrap();

    // Parallelism 2: two source subtasks, watermarks combined at the window.
    let input = dir.path().join("in.txt");
    let output = dir.path().join("out");
    let expected = window_input(&input, 5_000);
    let out = run(window_count_cmd(addr, 2, &input, &output, None), LONG);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let (lines, hidden) = committed_output(&output);
    assert_exact(&expected, &lines, &hidden);

    // A malformed line fails the job, naming the line.
    let input = dir.path().join("bad.txt");
    std::fs::write(&input, "a,10\nnot a record\n").unwrap();
    let output = dir.path().join("bad-out");
    let out = run(window_count_cmd(addr, 1, &input, &output, None), LONG);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("not a record"),
        "{stdout}\n{stderr}"
    );
}

/// Open windows and their timers survive failures exactly once: the job runs at
/// parallelism 3 on three one-slot TaskManagers with checkpoints every 200 ms while
/// TaskManagers are SIGKILLed at seeded moments (a replacement starts after each kill).
#[test]
fn window_count_is_exactly_once_after_taskmanager_kills() {
    window_count_under_kills("heap");
}

#[test]
fn window_count_is_exactly_once_with_incremental_lsm_checkpoints_after_kills() {
    window_count_under_kills("lsm");
}

fn window_count_under_kills(backend: &str) {
    const KILLS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let defines = [
        "execution.checkpointing.interval=200ms".to_owned(),
        format!("state.backend.type={backend}"),
        format!("state.checkpoints.dir=file://{}", checkpoints.display()),
        "restart-strategy.type=fixed-delay".to_owned(),
        "restart-strategy.fixed-delay.attempts=1000".to_owned(),
        "restart-strategy.fixed-delay.delay=100ms".to_owned(),
    ];
    let defines: Vec<&str> = defines.iter().map(String::as_str).collect();
    let (_jm, addr) = jobmanager(&defines);
    let mut tms: Vec<Proc> = (0..3).map(|_| taskmanager(addr, 1, &[]).0).collect();
    let input = dir.path().join("in.txt");
    let output = dir.path().join("out");
    let expected = window_input(&input, 8_000);
    let cmd = window_count_cmd(addr, 3, &input, &output, Some(700));
    let client = std::thread::spawn(move || run(cmd, Duration::from_secs(240)));

    let rt = runtime();
    let admin = rt
        .block_on(AdminClient::connect(addr, &secret()))
        .expect("admin client connects");
    let mut rng = Rng::seeded();
    kill_taskmanagers(&rt, &admin, addr, &mut tms, KILLS, 300..1500, &mut rng);
    let out = client.join().expect("the client thread");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.matches("restarting in").count() >= KILLS,
        "each kill must have restarted the job:\n{stdout}\n{stderr}"
    );
    let d = rt
        .block_on(async {
            let job = admin.list_jobs().await?.first().map(|j| j.job);
            admin.job_details(job.expect("the job")).await
        })
        .expect("job details");
    // The last attempt restored a checkpoint and resumed mid-file.
    assert!(d.checkpoints.restored.is_some(), "{:?}", d.checkpoints);
    assert!(d.vertices[0].records_out < 8_000, "{:?}", d.vertices[0]);
    let (lines, hidden) = committed_output(&output);
    assert_exact(&expected, &lines, &hidden);
}
