//! `rill jobmanager`, `rill taskmanager`, `rill minicluster`: long-running cluster
//! processes. Each prints where it listens, then runs until Ctrl-C or SIGTERM and shuts
//! down cleanly (running tasks are canceled).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use rill_dataflow::OperatorRegistry;
use rill_endpoints::{
    JobManagerProcess, MiniCluster, MiniClusterOptions, RillConfig, TaskManagerOptions,
    TaskManagerProcess,
};
use rill_runtime::address::HostPort;
use rill_runtime::security::ClusterSecret;
use rill_runtime::LocalCalls;

/// Arguments of `rill jobmanager`.
#[derive(Debug, Args)]
pub struct JobManagerArgs {
    /// RPC address to listen on, `ip:port` or `host:port` (port 0: chosen by the OS).
    #[arg(long, default_value = crate::admin::DEFAULT_JOBMANAGER)]
    pub bind: HostPort,
}

/// Arguments of `rill taskmanager`.
#[derive(Debug, Args)]
pub struct TaskManagerArgs {
    /// The JobManager to register with, `ip:port` or `host:port` (a host name is resolved
    /// again on every reconnect).
    #[arg(long, default_value = crate::admin::DEFAULT_JOBMANAGER)]
    pub jobmanager: HostPort,
    /// Task slots (overrides `taskmanager.numberOfTaskSlots`).
    #[arg(long)]
    pub slots: Option<u32>,
    /// RPC address to listen on, and advertised to the cluster (default: the interface
    /// the OS routes towards the JobManager; port chosen by the OS).
    #[arg(long)]
    pub bind: Option<HostPort>,
    /// Data-plane (QUIC) address to listen on (default: like `--bind`).
    #[arg(long)]
    pub data_bind: Option<HostPort>,
}

/// Arguments of `rill minicluster`.
#[derive(Debug, Args)]
pub struct MiniClusterArgs {
    /// JobManager RPC address to listen on (`ip:port` or `host:port`).
    #[arg(long, default_value = crate::admin::DEFAULT_JOBMANAGER)]
    pub bind: HostPort,
    /// Number of TaskManagers.
    #[arg(long, default_value_t = 1)]
    pub taskmanagers: u32,
    /// Slots per TaskManager (overrides `taskmanager.numberOfTaskSlots`).
    #[arg(long)]
    pub slots: Option<u32>,
    /// Route every call and partition through QUIC, even in this process.
    #[arg(long)]
    pub force_remote: bool,
}

/// Resolves the cluster secret for a process bound to (or talking to) `addr`; a host
/// name counts as loopback only if it is `localhost` (it is not resolved here).
pub fn secret_for(config: &RillConfig, addr: impl Into<HostPort>) -> anyhow::Result<ClusterSecret> {
    let addr = addr.into();
    ClusterSecret::resolve(&config.security, addr.is_loopback(), &addr.to_string())
        .context("cannot determine the cluster secret")
}

/// The socket to bind for `--bind`-style `addr`: a host name is resolved now (its first
/// IPv4 address, else its first address).
pub fn bind_address(addr: &HostPort) -> anyhow::Result<SocketAddr> {
    addr.resolve_for_bind()
        .map_err(|e| anyhow::Error::new(crate::cli::UsageError(e.to_string())))
}

/// The local interface address a TaskManager binds to by default: the one the OS routes
/// towards the JobManager, so the address the TaskManager advertises (its bound socket)
/// is one the JobManager can reach. A JobManager name is resolved once for this choice
/// (the connection itself resolves it again on every connect); when that fails the
/// TaskManager binds all IPv4 interfaces.
fn interface_towards(jobmanager: &HostPort) -> std::net::IpAddr {
    let unspecified = |v4: bool| -> std::net::IpAddr {
        if v4 {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        }
    };
    let target = match jobmanager.resolve_for_bind() {
        Ok(target) => target,
        Err(e) => {
            tracing::warn!(error = %e, "binding all interfaces; pass --bind to choose one");
            return unspecified(true);
        }
    };
    if target.ip().is_loopback() {
        return target.ip();
    }
    // Connecting a UDP socket sends nothing; it only asks the OS for the route.
    std::net::UdpSocket::bind(SocketAddr::new(unspecified(target.is_ipv4()), 0))
        .and_then(|socket| {
            socket.connect(target)?;
            socket.local_addr()
        })
        .map(|local| local.ip())
        .unwrap_or_else(|_| unspecified(target.is_ipv4()))
}

/// A multi-threaded tokio runtime for the process's I/O.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rill-io")
        .build()
        .context("cannot start the tokio runtime")
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `rill jobmanager`.
pub fn jobmanager(
    args: &JobManagerArgs,
    config: &RillConfig,
    registry: Arc<OperatorRegistry>,
) -> anyhow::Result<()> {
    let bind = bind_address(&args.bind)?;
    let secret = secret_for(config, bind)?;
    runtime()?.block_on(async {
        let jm = JobManagerProcess::start(config, bind, &secret, registry, LocalCalls::OwnService)?;
        println!(
            "rill: JobManager listening on {} (dispatcher {})",
            jm.address(),
            jm.dispatcher_address()
        );
        println!(
            "rill: start TaskManagers with `rill taskmanager --jobmanager {}`",
            jm.address()
        );
        println!("rill: REST endpoint {}", jm.rest_url());
        shutdown_signal().await;
        eprintln!("rill: shutting down the JobManager");
        jm.shutdown().await;
        Ok(())
    })
}

/// `rill taskmanager`.
pub fn taskmanager(
    args: &TaskManagerArgs,
    config: &RillConfig,
    registry: Arc<OperatorRegistry>,
) -> anyhow::Result<()> {
    let mut config = config.clone();
    if let Some(slots) = args.slots {
        config.taskmanager.number_of_task_slots = slots;
    }
    let rpc_bind = match &args.bind {
        Some(b) => bind_address(b)?,
        None => SocketAddr::new(interface_towards(&args.jobmanager), 0),
    };
    let data_bind = match &args.data_bind {
        Some(b) => bind_address(b)?,
        None => SocketAddr::new(rpc_bind.ip(), 0),
    };
    let secret = secret_for(&config, args.jobmanager.clone())?;
    runtime()?.block_on(async {
        let tm = TaskManagerProcess::start(
            &config,
            TaskManagerOptions {
                rpc_bind,
                data_bind,
                jobmanager: args.jobmanager.clone(),
                local_calls: LocalCalls::OwnService,
                resource_id: None,
            },
            &secret,
            registry,
        )?;
        println!(
            "rill: TaskManager {} with {} slot(s) listening on {} (data {}), registering at {}",
            tm.resource_id(),
            config.taskmanager.number_of_task_slots,
            tm.address(),
            tm.data_address(),
            args.jobmanager
        );
        println!("rill: Prometheus metrics {}", tm.metrics_url());
        shutdown_signal().await;
        eprintln!("rill: shutting down the TaskManager");
        tm.shutdown().await;
        Ok(())
    })
}

/// `rill minicluster`.
pub fn minicluster(
    args: &MiniClusterArgs,
    config: &RillConfig,
    registry: Arc<OperatorRegistry>,
) -> anyhow::Result<()> {
    let mut config = config.clone();
    if let Some(slots) = args.slots {
        config.taskmanager.number_of_task_slots = slots;
    }
    let bind = bind_address(&args.bind)?;
    let secret = secret_for(&config, bind)?;
    runtime()?.block_on(async {
        let cluster = MiniCluster::start(
            &config,
            &MiniClusterOptions {
                task_managers: args.taskmanagers,
                force_remote: args.force_remote,
                bind,
                rest_port: config.rest.port,
            },
            &secret,
            registry,
        )?;
        println!(
            "rill: mini-cluster with {} TaskManager(s) × {} slot(s); JobManager listening on {}",
            args.taskmanagers,
            config.taskmanager.number_of_task_slots,
            cluster.jobmanager().address()
        );
        println!("rill: REST endpoint {}", cluster.jobmanager().rest_url());
        shutdown_signal().await;
        eprintln!("rill: shutting down the mini-cluster");
        cluster.shutdown().await;
        Ok(())
    })
}
