//! `rill demo`: two RPC services in this process that talk only over authenticated QUIC
//! (remote gateways forced), the way a JobManager and a TaskExecutor will.
//!
//! Steps, each printed with its timing:
//! 1. the "jobmanager" service starts a fenced `registry` endpoint;
//! 2. the "taskmanager" service registers with it through [`RetryingRegistration`],
//!    before the endpoint is started (so the first attempts are refused and retried);
//! 3. asks and tells over the wire, a call with a stale fencing token (rejected);
//! 4. the taskmanager death-watches the registry; the registry stops; the watch fires.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rill_runtime::config::RuntimeConfig;
use rill_runtime::registration::{RegistrationAttempt, RetryingRegistration};
use rill_runtime::security::ClusterSecret;
use rill_runtime::{
    EndpointContext, Fencing, FencingToken, Reply, ResourceManagerId, RpcEndpoint, RpcError,
    RpcService, RpcServiceConfig,
};

/// Arguments of `rill demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of asks to time.
    #[arg(long, default_value_t = 2000)]
    pub asks: u32,
    /// Number of tells to send.
    #[arg(long, default_value_t = 100_000)]
    pub tells: u64,
}

rill_runtime::gateway! {
    /// A toy registry: workers register and report progress.
    pub mod registry("registry") {
        /// Registers a worker; returns its index.
        fn register(worker: String) -> u32;
        /// Reports processed records.
        fn report(records: u64);
        /// Returns the records reported so far.
        fn reported() -> u64;
    }
}

struct Registry {
    term: ResourceManagerId,
    workers: Vec<String>,
    reported: u64,
}

impl RpcEndpoint for Registry {
    type Protocol = registry::Protocol;

    fn fencing(&self) -> Fencing {
        Fencing::Fenced(Some(self.term.into()))
    }
}

impl registry::Handler for Registry {
    fn register(&mut self, _: &mut EndpointContext<'_, Self>, worker: String) -> Reply<u32> {
        self.workers.push(worker);
        Reply::ready(self.workers.len() as u32 - 1)
    }
    fn report(&mut self, _: &mut EndpointContext<'_, Self>, records: u64) {
        self.reported += records;
    }
    fn reported(&mut self, _: &mut EndpointContext<'_, Self>) -> Reply<u64> {
        Reply::ready(self.reported)
    }
}

fn step(started: Instant, text: impl std::fmt::Display) {
    println!("[{:>8.1} ms] {text}", started.elapsed().as_secs_f64() * 1e3);
}

/// Runs the demo on a fresh tokio runtime.
pub fn run(args: &DemoArgs, config: &RuntimeConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(demo(args, config))
}

async fn demo(args: &DemoArgs, config: &RuntimeConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    // The demo's two services share a secret generated for this run only.
    let secret = ClusterSecret::generate();
    let service = |force_remote| {
        let mut c = RpcServiceConfig::local(secret.clone());
        c.rpc = config.rpc.clone();
        c.heartbeat = config.heartbeat.clone();
        c.local_calls = if force_remote {
            rill_runtime::LocalCalls::Never
        } else {
            rill_runtime::LocalCalls::OwnService
        };
        RpcService::start(c)
    };
    let jobmanager = service(false)?;
    let taskmanager = service(true)?;
    step(
        started,
        format_args!(
            "jobmanager RPC service on {}, taskmanager on {} (QUIC, cluster secret, remote calls forced)",
            jobmanager.local_addr(),
            taskmanager.local_addr()
        ),
    );

    let term = ResourceManagerId(0x5eed);
    let handle = jobmanager.start_endpoint(
        "registry",
        Registry {
            term,
            workers: Vec::new(),
            reported: 0,
        },
    )?;
    let address = jobmanager.address_of("registry");
    let gateway: registry::Gateway = taskmanager.connect(&address).await?;
    let gateway = gateway.with_fencing_token(term);
    step(
        started,
        format_args!("connected to {address}; the endpoint is not started yet"),
    );

    // Start the endpoint a little later: registration attempts meanwhile are refused
    // with EndpointNotStarted and retried with backoff.
    let starter = handle.clone();
    let start_task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(250)).await;
        starter.start();
    });
    let mut attempts = 0u32;
    // A refused attempt (endpoint not started) waits `error-delay`; the demo shortens it.
    let mut registration_config = config.cluster.registration.clone();
    registration_config.error_delay = registration_config
        .error_delay
        .min(Duration::from_millis(100));
    let registration = RetryingRegistration::new("registry", &registration_config);
    let index = registration
        .run(|timeout| {
            attempts += 1;
            let gw = gateway.with_timeout(timeout);
            async move {
                match gw.register("taskmanager-1".into()).await {
                    Ok(index) => RegistrationAttempt::<u32, String>::Success(index),
                    Err(RpcError::Timeout { .. }) => RegistrationAttempt::Timeout,
                    Err(e) => RegistrationAttempt::Error(e),
                }
            }
        })
        .await;
    let _ = start_task.await;
    step(
        started,
        format_args!("registered as worker {index} after {attempts} attempt(s)"),
    );

    let mut samples = Vec::with_capacity(args.asks as usize);
    for _ in 0..args.asks {
        let t = Instant::now();
        gateway.reported().await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    if let Some(p50) = samples.get(samples.len() / 2) {
        step(
            started,
            format_args!(
                "{} remote asks: p50 {:.1} µs",
                args.asks,
                p50.as_secs_f64() * 1e6
            ),
        );
    }

    let t = Instant::now();
    for _ in 0..args.tells {
        gateway.report(1)?;
    }
    let reported = gateway.reported().await?;
    if reported != args.tells {
        bail!("{} tells sent, {reported} arrived", args.tells);
    }
    step(
        started,
        format_args!(
            "{} remote tells, all handled: {:.0} tells/s",
            args.tells,
            args.tells as f64 / t.elapsed().as_secs_f64()
        ),
    );

    match gateway
        .with_fencing_token(FencingToken(0xdead))
        .reported()
        .await
    {
        Err(e @ RpcError::Fencing { .. }) => {
            step(started, format_args!("stale token rejected: {e}"))
        }
        other => bail!("a stale fencing token was not rejected: {other:?}"),
    }

    let watch = taskmanager.watch(&address);
    tokio::time::sleep(config.heartbeat.interval + Duration::from_millis(100)).await;
    let stopped_at = Instant::now();
    handle.stop();
    let terminated = tokio::time::timeout(config.heartbeat.timeout * 2, watch.terminated())
        .await
        .context("death-watch did not fire")?;
    step(
        started,
        format_args!(
            "registry stopped; death-watch reported {:?} after {:.0} ms",
            terminated.reason,
            stopped_at.elapsed().as_secs_f64() * 1e3
        ),
    );
    taskmanager.shutdown().await;
    jobmanager.shutdown().await;
    step(started, "both services shut down");
    Ok(())
}
