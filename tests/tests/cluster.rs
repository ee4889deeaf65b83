//! A real cluster: one `rill jobmanager` and `rill taskmanager` processes on 127.0.0.1,
//! driven through the CLI and through the `rill::admin` library, with TaskManagers
//! killed by SIGKILL.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rill::admin::AdminClient;
use rill_dataflow::{jobs, JobEdge, JobId, Partitioning, VertexId};
use rill_endpoints::messages::{ExecutionState, JobDetails, JobStatus};
use rill_endpoints::ClusterError;
mod support;
use support::*;

const LONG: Duration = Duration::from_secs(60);

async fn admin(jm: SocketAddr) -> AdminClient {
    AdminClient::connect(jm, &secret())
        .await
        .expect("admin client connects")
}

fn job_id_of(stdout: &str) -> JobId {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Job has been submitted with JobID "))
        .unwrap_or_else(|| panic!("no job id in {stdout:?}"))
        .trim()
        .parse()
        .unwrap()
}

fn all_running(d: &JobDetails) -> bool {
    d.overview.status == JobStatus::Running
        && d.vertices
            .iter()
            .all(|v| v.states.get(&ExecutionState::Running) == Some(&v.parallelism))
}

#[test]
fn wordcount_runs_with_parallelism_4_over_two_taskmanagers() {
    let (_jm, addr) = jobmanager(&[]);
    let _tm1 = taskmanager(addr, 2, &[]);
    let _tm2 = taskmanager(addr, 2, &[]);
    let rt = runtime();
    let client = rt.block_on(admin(addr));
    assert_eq!(rt.block_on(client.wait_for_slots(4, LONG)).unwrap(), 4);

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let output = dir.path().join("out.txt");
    let mut text_in = String::new();
    for i in 0..2000 {
        text_in.push_str(&format!("alpha beta w{} gamma beta\n", i % 50));
    }
    std::fs::write(&input, &text_in).unwrap();
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
    .arg(&input)
    .arg("--output")
    .arg(&output);
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let id = job_id_of(&stdout);

    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for w in text_in.split_whitespace() {
        *expected.entry(w.to_string()).or_default() += 1;
    }
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    for line in std::fs::read_to_string(&output).unwrap().lines() {
        let (w, n) = line
            .trim_matches(|c| c == '(' || c == ')')
            .rsplit_once(',')
            .unwrap_or_else(|| panic!("bad output line {line:?}"));
        got.insert(w.to_string(), n.parse().unwrap());
    }
    assert_eq!(got, expected);

    // The parallel vertices ran on both TaskManagers.
    let details = rt.block_on(client.job_details(id)).unwrap();
    let places: std::collections::BTreeSet<_> = details
        .vertices
        .iter()
        .filter(|v| v.parallelism == 4)
        .flat_map(|v| v.locations.iter().flatten().cloned())
        .collect();
    assert_eq!(places.len(), 2, "{details:?}");

    // Exact record counters: every word once out of the sources and into the counters,
    // every distinct word once into the sink — no end-of-input or watermark elements.
    let words = text_in.split_whitespace().count() as u64;
    let distinct = expected.len() as u64;
    let counts: Vec<(u64, u64)> = details
        .vertices
        .iter()
        .map(|v| (v.records_in, v.records_out))
        .collect();
    assert_eq!(
        counts,
        [(0, words), (words, distinct), (distinct, 0)],
        "records (in, out) per vertex: {details:?}"
    );

    let out = run(
        {
            let mut c = rill();
            c.args(["list", "--jobmanager", &addr.to_string()]);
            c
        },
        LONG,
    );
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&id.to_string()))
        .expect("job listed");
    assert!(line.contains("FINISHED"), "{stdout}");
}

fn start_unbounded(addr: SocketAddr, parallelism: u32) -> JobId {
    let mut cmd = rill();
    cmd.args([
        "run",
        "--jobmanager",
        &addr.to_string(),
        "--detached",
        "-p",
        &parallelism.to_string(),
        "keyed-sum",
        "--rate",
        "20000",
    ]);
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    job_id_of(&stdout)
}

/// A JobManager (with `defines`) and two TaskManagers of `slots` slots each, running an
/// unbounded keyed-sum with parallelism 2 submitted through `rill run --detached`.
struct RunningJob {
    _jm: Proc,
    addr: SocketAddr,
    tm1: Proc,
    id1: String,
    _tm2: Proc,
    rt: tokio::runtime::Runtime,
    client: AdminClient,
    job: JobId,
}

fn running_unbounded_job(defines: &[&str], slots: u32) -> RunningJob {
    let (jm, addr) = jobmanager(defines);
    let (tm1, id1) = taskmanager(addr, slots, &[]);
    let (tm2, _) = taskmanager(addr, slots, &[]);
    let rt = runtime();
    let client = rt.block_on(admin(addr));
    rt.block_on(client.wait_for_slots(2 * slots, LONG)).unwrap();
    let job = start_unbounded(addr, 2);
    rt.block_on(eventually("job running", LONG, || async {
        client.job_details(job).await.ok().filter(all_running)
    }));
    RunningJob {
        _jm: jm,
        addr,
        tm1,
        id1,
        _tm2: tm2,
        rt,
        client,
        job,
    }
}

#[test]
fn a_killed_taskmanager_is_replaced_and_the_job_runs_again_then_cancel_frees_the_slots() {
    let defines = [
        "restart-strategy.type=fixed-delay",
        "restart-strategy.fixed-delay.attempts=5",
        "restart-strategy.fixed-delay.delay=200ms",
    ];
    let RunningJob {
        addr,
        mut tm1,
        id1,
        rt,
        client,
        job,
        // Bound, not `..`: unbound fields would be dropped (the processes killed) here.
        _jm: _keep_jm,
        _tm2: _keep_tm2,
    } = running_unbounded_job(&defines, 2);
    let details = rt.block_on(client.job_details(job)).unwrap();
    assert!(
        details
            .vertices
            .iter()
            .flat_map(|v| v.locations.iter().flatten())
            .any(|r| r.as_str() == id1),
        "the job should use both TaskManagers: {details:?}"
    );
    tm1.kill();
    let restarted = rt.block_on(eventually(
        "job running again after the kill",
        LONG,
        || async {
            client
                .job_details(job)
                .await
                .ok()
                .filter(|d| d.restarts >= 1 && all_running(d))
        },
    ));
    assert!(
        restarted.failure.as_deref().unwrap_or("").contains(&id1),
        "the failure should name the lost TaskManager {id1}: {:?}",
        restarted.failure
    );
    for v in &restarted.vertices {
        assert!(v.locations.iter().flatten().all(|r| r.as_str() != id1));
    }

    // Cancel through the CLI; the slots come back.
    let mut cmd = rill();
    cmd.args([
        "cancel",
        &job.to_string(),
        "--jobmanager",
        &addr.to_string(),
    ]);
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("job {job} CANCELED")), "{stdout}");
    rt.block_on(eventually("slots free again", LONG, || async {
        let tms = client.task_managers().await.ok()?;
        (tms.iter().map(|t| t.slots_free).sum::<u32>() == 2).then_some(())
    }));
}

#[test]
fn without_restarts_a_killed_taskmanager_fails_the_job_naming_it() {
    let RunningJob {
        addr,
        mut tm1,
        id1,
        rt,
        client,
        job,
        // Bound, not `..`: unbound fields would be dropped (the processes killed) here.
        _jm: _keep_jm,
        _tm2: _keep_tm2,
    } = running_unbounded_job(&["restart-strategy.type=none"], 1);
    tm1.kill();
    let result = rt.block_on(eventually("job failed", LONG, || async {
        client.job_result(job).await.ok()
    }));
    assert_eq!(result.status, JobStatus::Failed);
    let failure = result.failure.unwrap_or_default();
    assert!(
        failure.contains(&id1) && failure.contains("lost"),
        "{failure}"
    );

    let mut cmd = rill();
    cmd.args([
        "status",
        &job.to_string(),
        "--jobmanager",
        &addr.to_string(),
    ]);
    let out = run(cmd, LONG);
    let (stdout, _) = text(&out);
    assert_eq!(stdout.lines().next(), Some("FAILED"), "{stdout}");
}

#[test]
fn cancel_through_the_library_frees_slots_for_the_next_job() {
    let (_jm, addr) = jobmanager(&[]);
    let _tm = taskmanager(addr, 2, &[]);
    let rt = runtime();
    rt.block_on(async {
        let client = admin(addr).await;
        client.wait_for_slots(2, LONG).await.unwrap();
        let job = client
            .submit(jobs::keyed_sum(None, 100, Some(10_000.0), 2).unwrap())
            .await
            .unwrap();
        eventually("running", LONG, || async {
            client.job_details(job).await.ok().filter(all_running)
        })
        .await;
        client.cancel(job).await.unwrap();
        let result = eventually("canceled", LONG, || async {
            client.job_result(job).await.ok()
        })
        .await;
        assert_eq!(result.status, JobStatus::Canceled);
        // All slots are needed by the next job: it can only finish if they were freed.
        let next = client
            .submit(jobs::keyed_sum(Some(10_000), 10, None, 2).unwrap())
            .await
            .unwrap();
        let result = eventually("finished", LONG, || async {
            client.job_result(next).await.ok()
        })
        .await;
        assert_eq!(result.status, JobStatus::Finished, "{:?}", result.failure);
        let checksum =
            jobs::keyed_sum_checksum(&result.collected[jobs::KEYED_SUM_COLLECT_ID]).unwrap();
        assert_eq!(checksum, jobs::expected_keyed_sum_checksum(10_000, 10));
        client.close().await;
    });
}

#[test]
fn bad_submissions_get_clear_errors_and_leave_the_cluster_healthy() {
    let (_jm, addr) = jobmanager(&["slot.request.timeout=1s"]);
    let _tm = taskmanager(addr, 2, &[]);
    let rt = runtime();
    let client = rt.block_on(admin(addr));
    rt.block_on(client.wait_for_slots(2, LONG)).unwrap();
    let jm = addr.to_string();

    // Unknown operator and a cycle, through the library.
    let mut unknown = jobs::keyed_sum(Some(10), 1, None, 1).unwrap();
    unknown.vertices[0].operators[0].spec.factory.name = "acme.no-such-source".into();
    match rt.block_on(client.submit(unknown)) {
        Err(rill::admin::AdminError::Cluster(ClusterError::InvalidJob(m))) => {
            assert!(m.contains("acme.no-such-source"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let mut cyclic = jobs::keyed_sum(Some(10), 1, None, 1).unwrap();
    let last = VertexId(cyclic.vertices.len() as u32 - 1);
    cyclic.edges.push(JobEdge {
        source: last,
        source_operator: 0,
        target: VertexId(1),
        partitioning: Partitioning::Rebalance,
        side_output: None,
        input: Default::default(),
    });
    match rt.block_on(client.submit(cyclic)) {
        Err(rill::admin::AdminError::Cluster(ClusterError::InvalidJob(m))) => {
            assert!(m.contains("cycle"), "{m}")
        }
        other => panic!("{other:?}"),
    }

    // More parallelism than slots: a clear failure after slot.request.timeout.
    let mut cmd = rill();
    cmd.args([
        "run",
        "--jobmanager",
        &jm,
        "-p",
        "3",
        "keyed-sum",
        "--rows",
        "100",
    ]);
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("needs 3 slot(s)") && stderr.contains("2 slots in total"),
        "{stderr}"
    );

    // Unknown and malformed job ids.
    let unknown = "0123456789abcdef0123456789abcdef";
    for verb in ["status", "cancel"] {
        let mut cmd = rill();
        cmd.args([verb, unknown, "--jobmanager", &jm]);
        let out = run(cmd, LONG);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{verb}: {stderr}");
        assert!(
            stderr.contains(&format!("job {unknown} not found")),
            "{stderr}"
        );
    }
    let mut cmd = rill();
    cmd.args(["status", "not-a-job", "--jobmanager", &jm]);
    let out = run(cmd, LONG);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));

    // Nobody at the address: exit code 3.
    let mut cmd = rill();
    cmd.args([
        "-D",
        "rpc.connect-timeout=300ms",
        "list",
        "--jobmanager",
        "127.0.0.1:9",
    ]);
    let out = run(cmd, LONG);
    assert_eq!(out.status.code(), Some(3), "{:?}", text(&out));

    // Still healthy: a job that fits runs.
    let mut cmd = rill();
    cmd.args([
        "run",
        "--jobmanager",
        &jm,
        "-p",
        "2",
        "keyed-sum",
        "--rows",
        "5000",
        "--keys",
        "7",
    ]);
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("(OK)"), "{stdout}");
}

#[test]
fn running_count_commits_every_update_once_through_the_transactional_file_sink() {
    let (_jm, addr) = jobmanager(&[]);
    let _tm1 = taskmanager(addr, 2, &[]);
    let _tm2 = taskmanager(addr, 2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let output = dir.path().join("out");
    let expected = running_count_input(&input, 3000, |i| format!("k{}", (i * 7) % 97));
    // Blank lines have no key.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    f.write_all(b"\n   \n").unwrap();

    let mut cmd = rill();
    cmd.args([
        "run",
        "--jobmanager",
        &addr.to_string(),
        "-p",
        "2",
        "running-count",
        "--input",
    ])
    .arg(&input)
    .arg("--output")
    .arg(&output);
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let (lines, hidden) = committed_output(&output);
    let hidden = hidden.len();
    assert_eq!(hidden, 0, "uncommitted files left in {}", output.display());
    assert_eq!(lines.len(), expected.len());
    assert_eq!(lines, expected);
}

#[test]
fn running_count_with_periodic_checkpoints_commits_on_checkpoints_and_ends_with_a_final_one() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let defines = [
        "execution.checkpointing.interval=200ms".to_owned(),
        format!("state.checkpoints.dir=file://{}", checkpoints.display()),
    ];
    let defines: Vec<&str> = defines.iter().map(String::as_str).collect();
    let (_jm, addr) = jobmanager(&defines);
    let _tm1 = taskmanager(addr, 2, &[]);
    let _tm2 = taskmanager(addr, 2, &[]);
    let input = dir.path().join("in.txt");
    let output = dir.path().join("out");
    let expected = running_count_input(&input, 2000, |i| format!("k{}", (i * 7) % 31));

    let mut cmd = rill();
    cmd.args([
        "run",
        "--jobmanager",
        &addr.to_string(),
        "-p",
        "2",
        "running-count",
        "--rate",
        "1000",
        "--input",
    ])
    .arg(&input)
    .arg("--output")
    .arg(&output);
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let (lines, hidden) = committed_output(&output);
    let hidden = hidden.len();
    assert_eq!(hidden, 0, "uncommitted files left in {}", output.display());
    assert_eq!(lines, expected);
    // Several checkpoints completed; the retained one (num-retained 1) is the final one.
    let job_dir = std::fs::read_dir(&checkpoints)
        .unwrap()
        .next()
        .expect("a job directory")
        .unwrap()
        .path();
    let chk: Vec<u64> = std::fs::read_dir(&job_dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_prefix("chk-").and_then(|n| n.parse().ok())
        })
        .collect();
    assert_eq!(chk.len(), 1, "retained checkpoints: {chk:?}");
    assert!(chk[0] >= 5, "only {} checkpoints in ~2 s at 200 ms", chk[0]);
    assert!(job_dir.join(format!("chk-{}/_metadata", chk[0])).exists());
}
