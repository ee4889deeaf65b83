//! Memory of a `rill jobmanager` under a flood of unauthenticated QUIC handshakes (issue
//! #13): its resident memory before, at the peak of, and 5 s and 30 s after a flood.
//!
//! The flood is a quinn client in this process, on another loopback address (127.0.0.2)
//! than honest clients, that opens N connections at once, completes TLS on each and never
//! sends the cluster secret; it holds every connection the JobManager lets in until all
//! attempts are decided, then closes them. Memory is `VmRSS` of the JobManager (sampled
//! every 10 ms; the peak is the larger of the samples and `VmHWM`), also split into
//! anonymous and file-backed pages (the binary's own pages count as file RSS).
//!
//! Extra `-D key=value` arguments go to the JobManager, e.g.
//! `-D security.auth.max-pending-per-address=100000` to let the flood reach the
//! process-wide cap rather than the per-address one.
//!
//! Usage: `cargo run --release -p rill-benches --bin handshake_flood -- [--connections N]
//! [--rill PATH] [-D key=value]…` (build the binary first: `cargo build --release -p rill`).

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rill_benches::find_rill;
use rill_runtime::security::{quic_client_config, RPC_ALPN, SERVER_NAME};

const USAGE: &str = "usage: handshake_flood [--connections N] [--rill PATH] [-D key=value]...";
const SECRET: &str = "rill-flood-bench";
const MIB: f64 = (1 << 20) as f64;

struct Args {
    connections: usize,
    rill: Option<PathBuf>,
    defines: Vec<String>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        connections: 2000,
        rill: None,
        defines: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{arg} needs a value; {USAGE}"))
        };
        match arg.as_str() {
            "--connections" => args.connections = value()?.parse()?,
            "--rill" => args.rill = Some(PathBuf::from(value()?)),
            "-D" => args.defines.push(value()?),
            other => bail!("unknown argument {other}; {USAGE}"),
        }
    }
    Ok(args)
}

/// Memory figures of a process, in bytes.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    anon: u64,
    file: u64,
    hwm: u64,
}

fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Memory {
        rss: field("VmRSS")?,
        anon: field("RssAnon")?,
        file: field("RssFile")?,
        hwm: field("VmHWM")?,
    })
}

fn line(label: &str, m: Memory) {
    println!(
        "{label:<28} RSS {:>7.1} MiB  (anonymous {:>6.1} MiB, file {:>5.1} MiB)",
        m.rss as f64 / MIB,
        m.anon as f64 / MIB,
        m.file as f64 / MIB
    );
}

struct JobManager(Child);

impl Drop for JobManager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_jobmanager(rill: &PathBuf, defines: &[String]) -> Result<(JobManager, SocketAddr)> {
    let mut cmd = Command::new(rill);
    cmd.arg("-D")
        .arg(format!("security.cluster-secret={SECRET}"));
    // An OS-chosen REST port, so the bench never fights over Flink's 8081.
    cmd.arg("-D").arg("rest.port=0");
    for d in defines {
        cmd.arg("-D").arg(d);
    }
    cmd.args(["jobmanager", "--bind", "127.0.0.1:0"])
        .env(
            "RILL_LOG",
            std::env::var("RILL_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().context("cannot start the JobManager")?;
    let stdout = child.stdout.take().context("piped")?;
    let jm = JobManager(child);
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .context("the JobManager exited before listening")??;
        if line.contains("JobManager listening on") {
            break line
                .split_whitespace()
                .nth(4)
                .and_then(|a| a.parse().ok())
                .with_context(|| format!("no address in {line:?}"))?;
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok((jm, addr))
}

async fn flood(target: SocketAddr, n: usize) -> Result<(Vec<quinn::Connection>, usize)> {
    let source = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 0);
    let mut endpoint = quinn::Endpoint::client(source)?;
    endpoint.set_default_client_config(quic_client_config(
        RPC_ALPN,
        Arc::new(quinn::TransportConfig::default()),
    )?);
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..n {
        let connecting = endpoint.connect(target, SERVER_NAME)?;
        attempts.spawn(async move {
            tokio::time::timeout(Duration::from_secs(30), connecting)
                .await
                .ok()
                .and_then(Result::ok)
        });
    }
    let mut held = Vec::new();
    let mut refused = 0;
    while let Some(outcome) = attempts.join_next().await {
        match outcome? {
            Some(conn) => held.push(conn),
            None => refused += 1,
        }
    }
    Ok((held, refused))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let rill = find_rill(args.rill)?;
    let (jm, addr) = start_jobmanager(&rill, &args.defines)?;
    let pid = jm.0.id();
    std::thread::sleep(Duration::from_secs(1));
    let baseline = memory(pid)?;

    let peak = Arc::new(AtomicU64::new(baseline.rss));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                if let Ok(m) = memory(pid) {
                    peak.fetch_max(m.rss.max(m.hwm), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let (held, refused) = rt.block_on(flood(addr, args.connections))?;
    let flood_time = started.elapsed();
    let during = memory(pid)?;
    for conn in &held {
        conn.close(0u32.into(), b"flood over");
    }
    rt.block_on(async {
        for conn in &held {
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
        }
    });
    let closed_at = Instant::now();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let hwm = memory(pid)?.hwm;
    let peak = peak.load(Ordering::Relaxed).max(hwm);

    std::thread::sleep(Duration::from_secs(5).saturating_sub(closed_at.elapsed()));
    let after_5 = memory(pid)?;
    std::thread::sleep(Duration::from_secs(30).saturating_sub(closed_at.elapsed()));
    let after_30 = memory(pid)?;

    println!(
        "handshake flood: {} connection attempts from 127.0.0.2 in {:.2} s: {} let in (held \
         until the end), {refused} refused",
        args.connections,
        flood_time.as_secs_f64(),
        held.len()
    );
    println!("JobManager {} (pid {pid})", rill.display());
    line("before", baseline);
    line("end of the flood", during);
    println!("{:<28} RSS {:>7.1} MiB", "peak", peak as f64 / MIB);
    line("5 s after the flood closed", after_5);
    line("30 s after the flood closed", after_30);
    println!(
        "targets: peak ≤ 100 MiB ({}), 30 s after ≤ 2 × before ({})",
        if peak <= 100 << 20 { "met" } else { "MISSED" },
        if after_30.rss <= 2 * baseline.rss {
            "met"
        } else {
            "MISSED"
        }
    );
    drop(jm);
    Ok(())
}
