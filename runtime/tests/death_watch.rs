//! Death-watch: local stops, remote stops, and a SIGKILLed child process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rill_runtime::security::ClusterSecret;
use rill_runtime::{
    EndpointContext, Reply, RpcAddress, RpcEndpoint, RpcService, RpcServiceConfig,
    TerminationReason,
};

rill_runtime::gateway! {
    /// A trivial gateway for the watched endpoint.
    pub mod probe("probe") {
        /// Answers with its argument.
        fn hello(n: u32) -> u32;
    }
}

struct Probe;

impl RpcEndpoint for Probe {
    type Protocol = probe::Protocol;
}

impl probe::Handler for Probe {
    fn hello(&mut self, _: &mut EndpointContext<'_, Self>, n: u32) -> Reply<u32> {
        Reply::ready(n)
    }
}

const CHILD_SECRET_ENV: &str = "RILL_TEST_CHILD_SECRET";

fn service(secret: &[u8], force_remote: bool) -> RpcService {
    let mut config = RpcServiceConfig::local(ClusterSecret::from_bytes(secret).unwrap());
    config.local_calls = if force_remote {
        rill_runtime::LocalCalls::Never
    } else {
        rill_runtime::LocalCalls::OwnService
    };
    RpcService::start(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_remote_clean_stops_are_reported_once() {
    let server = service(b"s3cret", false);
    let client = service(b"s3cret", true);
    let handle = server.start_endpoint("probe", Probe).unwrap();
    handle.start();
    let address = server.address_of("probe");
    let local_watch = server.watch(&address);
    let remote_watch = client.watch(&address);
    // Let the remote watch see the endpoint alive at least once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    handle.stop();
    let local = tokio::time::timeout(Duration::from_secs(10), local_watch.terminated())
        .await
        .unwrap();
    assert_eq!(local.reason, TerminationReason::Stopped);
    assert_eq!(local.address, address);
    let remote = tokio::time::timeout(Duration::from_secs(10), remote_watch.terminated())
        .await
        .unwrap();
    assert_eq!(remote.reason, TerminationReason::Stopped);
    // Watching something that is not there ends at once with NotFound.
    let missing = RpcAddress::new(address.host.clone(), "nobody");
    for svc in [&server, &client] {
        let t = tokio::time::timeout(Duration::from_secs(10), svc.watch(&missing).terminated())
            .await
            .unwrap();
        assert_eq!(t.reason, TerminationReason::NotFound);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_service_shutdown_is_a_lost_connection() {
    let server = service(b"s3cret", true);
    let client = service(b"s3cret", true);
    server.start_endpoint("probe", Probe).unwrap().start();
    let watch = client.watch(&server.address_of("probe"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.shutdown().await;
    let t = tokio::time::timeout(Duration::from_secs(10), watch.terminated())
        .await
        .unwrap();
    assert!(
        matches!(
            t.reason,
            TerminationReason::Stopped | TerminationReason::ConnectionLost(_)
        ),
        "{t:?}"
    );
}

/// Not a test of its own: the body of the child process of
/// `sigkilled_child_process_is_detected_within_the_heartbeat_timeout`.
#[test]
#[ignore = "runs only as the child process of a death-watch test"]
fn death_watch_child() {
    let Ok(secret) = std::env::var(CHILD_SECRET_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = service(secret.as_bytes(), false);
        server.start_endpoint("probe", Probe).unwrap().start();
        println!("ADDRESS {}", server.address_of("probe"));
        // The parent kills us long before this; the bound keeps an orphan from lingering.
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_child_process_is_detected_within_the_heartbeat_timeout() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "death_watch_child", "--ignored", "--nocapture"])
        .env(CHILD_SECRET_ENV, "child-secret")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the child whatever happens below.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut child = Reap(child);
    let address: RpcAddress = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = lines.next().expect("child exited early").unwrap();
            if let Some(a) = line.strip_prefix("ADDRESS ") {
                return a.parse().unwrap();
            }
        }
    })
    .await
    .unwrap();

    let client = service(b"child-secret", true);
    let gw: probe::Gateway = client.connect(&address).await.unwrap();
    assert_eq!(gw.hello(7).await.unwrap(), 7);
    let watch = client.watch(&address);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    child.0.kill().unwrap(); // SIGKILL on unix
    let killed_at = Instant::now();
    let heartbeat_timeout = client_heartbeat_timeout();
    let t = tokio::time::timeout(
        heartbeat_timeout + Duration::from_secs(2),
        watch.terminated(),
    )
    .await
    .expect("no Terminated within the heartbeat timeout");
    let detected_after = killed_at.elapsed();
    eprintln!("SIGKILL detected after {detected_after:?}: {:?}", t.reason);
    assert_eq!(t.address, address);
    assert!(
        matches!(
            t.reason,
            TerminationReason::Unreachable
                | TerminationReason::HeartbeatTimeout
                | TerminationReason::ConnectionLost(_)
        ),
        "{t:?}"
    );
    // The gateway reports the dead peer as an error, not a hang.
    assert!(gw
        .with_timeout(Duration::from_millis(500))
        .hello(1)
        .await
        .is_err());
}

fn client_heartbeat_timeout() -> Duration {
    rill_runtime::config::HeartbeatConfig::default().timeout
}
