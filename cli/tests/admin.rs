//! An admin tool as an outside crate writes it: every rill item it names is a
//! `rill::admin::…` path (no `rill_runtime`, `rill_dataflow` or `rill_endpoints`), against
//! a cluster of real `rill jobmanager` / `rill taskmanager` processes sharing a secret
//! file.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rill::admin::{
    builtins, jobs, load_secret, secret_from_config, AdminClient, AdminError, ClusterError, JobId,
    JobStatus, SecretError, SecurityConfig, StreamExecutionEnvironment, Value,
};

const LONG: Duration = Duration::from_secs(60);

/// A child process, SIGKILLed on drop; its stdout lines arrive on `lines`.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(secret_file: &Path, args: &[&str]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rill"))
            .arg("-D")
            .arg(format!(
                "security.cluster-secret-file={}",
                secret_file.display()
            ))
            .args(["-D", "rest.port=0"])
            .args(args)
            .env("RILL_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("rill starts");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines }
    }

    fn wait_for_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + LONG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line containing {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn eventually<T, Fut: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> Fut,
) -> T {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn an_admin_tool_needs_only_rill_admin_to_submit_list_inspect_and_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("cluster.secret");
    std::fs::write(&secret_file, "an admin test secret\n").unwrap();
    let jm = Proc::spawn(&secret_file, &["jobmanager", "--bind", "127.0.0.1:0"]);
    let line = jm.wait_for_line("JobManager listening on");
    let addr: SocketAddr = line
        .split_whitespace()
        .nth(4)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let _tm = Proc::spawn(
        &secret_file,
        &[
            "taskmanager",
            "--jobmanager",
            &addr.to_string(),
            "--slots",
            "2",
        ],
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The secret, from the file and from a configuration naming the file.
        let secret = load_secret(&secret_file).expect("secret file loads");
        let configured = SecurityConfig {
            cluster_secret_file: Some(secret_file.clone()),
            ..SecurityConfig::default()
        };
        let same = secret_from_config(&configured, addr).expect("configured secret");
        assert!(
            secret == same,
            "the file and the configuration naming it agree"
        );
        match load_secret(dir.path().join("missing")) {
            Err(SecretError::Secret(e)) => assert!(e.to_string().contains("missing"), "{e}"),
            other => panic!("a missing secret file: {other:?}"),
        }

        let client = AdminClient::connect(addr, &same).await.expect("connects");
        assert_eq!(client.wait_for_slots(2, LONG).await.unwrap(), 2);

        // A job built with the re-exported builders runs and returns its results.
        let env = StreamExecutionEnvironment::new();
        env.add_source(builtins::collection((0..10).map(Value::I64).collect()))
            .sink(builtins::collect("out"));
        let bounded = client.submit(env.job_graph("admin bounded").unwrap()).await;
        let bounded = bounded.expect("submitted");
        let result = eventually("bounded job result", || async {
            client.job_result(bounded).await.ok()
        })
        .await;
        assert_eq!(result.status, JobStatus::Finished, "{:?}", result.failure);
        let mut got = result.collected["out"].clone();
        got.sort();
        assert_eq!(got, (0..10).map(Value::I64).collect::<Vec<_>>());

        // A built-in unbounded job: listed, running, canceled.
        let job = client
            .submit(jobs::keyed_sum(None, 10, Some(1000.0), 2).unwrap())
            .await
            .expect("submitted");
        let listed = client.list_jobs().await.unwrap();
        assert!(listed.iter().any(|j| j.job == job), "{listed:?}");
        eventually("running", || async {
            (client.job_status(job).await.ok()? == JobStatus::Running).then_some(())
        })
        .await;
        let details = client.job_details(job).await.unwrap();
        assert_eq!(details.overview.name, "keyed-sum");
        client.cancel(job).await.unwrap();
        let result = eventually("canceled", || async { client.job_result(job).await.ok() }).await;
        assert_eq!(result.status, JobStatus::Canceled);

        // Typed errors with the ids of the re-exported types.
        let unknown: JobId = "0123456789abcdef0123456789abcdef".parse().unwrap();
        match client.job_status(unknown).await {
            Err(AdminError::Cluster(ClusterError::JobNotFound(id))) => assert_eq!(id, unknown),
            other => panic!("unknown job: {other:?}"),
        }
        let bad = "xyz".parse::<JobId>().unwrap_err();
        assert_eq!(
            bad.to_string(),
            "invalid job id \"xyz\": expected 32 hex digits"
        );
        client.close().await;

        // The wrong secret: refused, as `Unreachable`; the message names the address,
        // the cause is the source (not repeated in the message).
        let wrong = dir.path().join("wrong.secret");
        std::fs::write(&wrong, "another secret").unwrap();
        let wrong = load_secret(&wrong).unwrap();
        match AdminClient::connect(addr, &wrong).await {
            Err(e @ AdminError::Unreachable { .. }) => {
                assert_eq!(
                    e.to_string(),
                    format!("cannot reach the JobManager at {addr}")
                );
                let source = std::error::Error::source(&e)
                    .expect("the cause")
                    .to_string();
                assert!(source.contains("secret"), "{source}");
            }
            Err(other) => panic!("wrong secret: {other}"),
            Ok(_) => panic!("a wrong secret was accepted"),
        }
    });
}
