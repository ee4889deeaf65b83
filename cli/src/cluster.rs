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
use rill_runtime::security::ClusterSecret;

/// Arguments of `rill jobmanager`.
#[derive(Debug, Args)]
pub struct JobManagerArgs {
    /// RPC address to listen on (port 0: chosen by the OS).
    #[arg(long, default_value = crate::admin::DEFAULT_JOBMANAGER)]
    pub bind: SocketAddr,
}

/// Arguments of `rill taskmanager`.
#[derive(Debug, Args)]
pub struct TaskManagerArgs {
    /// The JobManager to register with.
    #[arg(long, default_value = crate::admin::DEFAULT_JOBMANAGER)]
    pub jobmanager: SocketAddr,
    /// Task slots (overrides `taskmanager.numberOfTaskSlots`).
    #[arg(long)]
    pub slots: Option<u32>,
    /// RPC address to listen on (default: the JobManager's interface, port chosen by the OS).
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// Data-plane (QUIC) address to listen on (default: like `--bind`).
    #[arg(long)]
    pub data_bind: Option<SocketAddr>,
}

/// Arguments of `rill minicluster`.
#[derive(Debug, Args)]
pub struct MiniClusterArgs {
    /// JobManager RPC address to listen on.
    #[arg(long, default_value = crate::admin::DEFAULT_JOBMANAGER)]
    pub bind: SocketAddr,
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

/// Resolves the cluster secret for a process bound to (or talking to) `addr`.
pub fn secret_for(config: &RillConfig, addr: SocketAddr) -> anyhow::Result<ClusterSecret> {
    ClusterSecret::resolve(&config.security, addr.ip().is_loopback(), &addr.to_string())
        .context("cannot determine the cluster secret")
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
    let secret = secret_for(config, args.bind)?;
    runtime()?.block_on(async {
        let jm = JobManagerProcess::start(config, args.bind, &secret, registry, false)?;
        println!(
            "rill: JobManager listening on {} (dispatcher {})",
            jm.address(),
            jm.dispatcher_address()
        );
        println!(
            "rill: start TaskManagers with `rill taskmanager --jobmanager {}`",
            jm.address()
        );
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
    let host = if args.jobmanager.ip().is_loopback() {
        args.jobmanager.ip()
    } else if args.jobmanager.is_ipv4() {
        [0, 0, 0, 0].into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let rpc_bind = args.bind.unwrap_or(SocketAddr::new(host, 0));
    let data_bind = args.data_bind.unwrap_or(SocketAddr::new(rpc_bind.ip(), 0));
    let secret = secret_for(&config, args.jobmanager)?;
    runtime()?.block_on(async {
        let tm = TaskManagerProcess::start(
            &config,
            TaskManagerOptions {
                rpc_bind,
                data_bind,
                jobmanager: args.jobmanager,
                force_remote: false,
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
    let secret = secret_for(&config, args.bind)?;
    runtime()?.block_on(async {
        let cluster = MiniCluster::start(
            &config,
            &MiniClusterOptions {
                task_managers: args.taskmanagers,
                force_remote: args.force_remote,
                bind: args.bind,
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
        shutdown_signal().await;
        eprintln!("rill: shutting down the mini-cluster");
        cluster.shutdown().await;
        Ok(())
    })
}
