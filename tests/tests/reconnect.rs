//! Host names and reconnection, with real processes: a cluster addressed as `localhost`,
//! an unresolvable JobManager host, and a TaskManager rejoining a JobManager that was
//! SIGKILLed and started again on the same address.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use rill::admin::AdminClient;
mod support;
use support::*;

const LONG: Duration = Duration::from_secs(60);

/// A UDP port on 127.0.0.1 that was free a moment ago (bound, read, released).
fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// Polls the JobManager at `jm` (reconnecting as needed) until the TaskManager `id` is
/// registered, at most `timeout`; returns when it was first seen.
async fn wait_until_registered(jm: SocketAddr, id: &str, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    let mut client: Option<AdminClient> = None;
    loop {
        if client.is_none() {
            client = AdminClient::connect(jm, &secret()).await.ok();
        }
        if let Some(c) = &client {
            match c.task_managers().await {
                Ok(tms) if tms.iter().any(|t| t.location.resource_id.to_string() == id) => {
                    let seen = Instant::now();
                    if let Some(c) = client.take() {
                        c.close().await;
                    }
                    return seen;
                }
                Ok(_) => {}
                Err(_) => {
                    if let Some(c) = client.take() {
                        c.close().await;
                    }
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "TaskManager {id} not registered at {jm} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_cluster_addressed_as_localhost_runs_a_job() {
    let (_jm, addr) = jobmanager_at("localhost:0", &[]);
    assert!(addr.ip().is_loopback(), "{addr}");
    let jm = format!("localhost:{}", addr.port());
    let (_tm, id) = taskmanager_at(&jm, 2, &[]);
    let rt = runtime();
    rt.block_on(wait_until_registered(addr, &id, LONG));

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let output = dir.path().join("out.txt");
    std::fs::write(&input, "to be or not to be\n").unwrap();
    let mut cmd = rill();
    cmd.args([
        "run",
        "--jobmanager",
        &jm,
        "-p",
        "2",
        "wordcount",
        "--input",
    ])
    .arg(&input)
    .arg("--output")
    .arg(&output);
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let mut lines: Vec<String> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    assert_eq!(lines, ["(be,2)", "(not,1)", "(or,1)", "(to,2)"]);

    let out = run(
        {
            let mut c = rill();
            c.args(["taskmanagers", "--jobmanager", &jm]);
            c
        },
        LONG,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&id), "{stdout}");
}

#[test]
fn an_unresolvable_jobmanager_host_is_named_in_the_error() {
    let mut cmd: Command = rill();
    cmd.args(["list", "--jobmanager", "nosuch.invalid:6123"]);
    let out = run(cmd, LONG);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("cannot resolve host \"nosuch.invalid\""),
        "{stderr}"
    );
    // A malformed address is a usage error, not a resolution failure.
    let mut cmd: Command = rill();
    cmd.args(["list", "--jobmanager", "no-port-here"]);
    let out = run(cmd, LONG);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
}

#[test]
fn a_taskmanager_rejoins_a_restarted_jobmanager_quickly() {
    let port = free_udp_port();
    let bind = format!("127.0.0.1:{port}");
    let (mut jm, addr) = jobmanager_at(&bind, &[]);
    assert_eq!(addr.port(), port);
    let (_tm, id) = taskmanager_at(&format!("localhost:{port}"), 1, &[]);
    let rt = runtime();
    rt.block_on(wait_until_registered(addr, &id, LONG));

    jm.kill();
    let killed = Instant::now();
    let (_jm2, addr2) = jobmanager_at(&bind, &[]);
    let started = Instant::now();
    assert_eq!(addr2, addr);
    let rejoined = rt.block_on(wait_until_registered(addr, &id, LONG));
    let since_start = rejoined - started;
    println!(
        "TaskManager rejoined the restarted JobManager {:.2} s after it started \
         ({:.2} s after the old one was killed)",
        since_start.as_secs_f64(),
        (rejoined - killed).as_secs_f64()
    );
    // The target is heartbeat.timeout (5 s) + 1 s; the bound is generous so that a
    // loaded machine does not make the test flaky.
    assert!(
        since_start <= Duration::from_secs(15),
        "rejoin took {since_start:?}"
    );
}
