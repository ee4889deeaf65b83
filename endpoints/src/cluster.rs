//! Starting the endpoints as processes: a JobManager (Dispatcher + ResourceManager, and
//! the JobMasters it spawns), TaskManagers (one TaskExecutor + the data plane each), and
//! the [`MiniCluster`] that puts both in one process.
//!
//! All of it must run inside a tokio runtime (multi-threaded in production): RPC and
//! data-plane I/O run there, endpoints on their own actix arbiters.
//!
//! Which calls skip the wire is explicit ([`LocalCalls`]): a standalone process calls only
//! its own endpoints locally; a [`MiniCluster`] gives its processes one
//! [`ServiceDirectory`](rill_runtime::ServiceDirectory) so they call each other locally;
//! with `force_remote` every RPC — even between endpoints of one process — goes through
//! rmp-serde, QUIC and authentication, and TaskExecutors read each other's partitions over
//! QUIC, so a single-process test covers the wire.
//!
//! A TaskManager also serves Prometheus metrics ([`crate::rest::prometheus`]) on
//! `metrics.reporter.prom.port` at its RPC bind address: a small axum server, one named
//! task of the process, bound before the TaskExecutor starts so that its address is in
//! the TaskExecutor's registration, and stopped with the process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rill_dataflow::OperatorRegistry;
use rill_network::NetworkEnvironment;
use rill_runtime::address::HostPort;
use rill_runtime::security::admission::PendingBudget;
use rill_runtime::security::ClusterSecret;
use rill_runtime::tasks::TaskSet;
use rill_runtime::{
    EndpointHandle, LocalCalls, ResourceId, RpcAddress, RpcService, RpcServiceConfig,
    ServiceDirectory,
};

use crate::config::RillConfig;
use crate::dispatcher::Dispatcher;
use crate::gateways::{DISPATCHER, RESOURCE_MANAGER, TASK_EXECUTOR};
use crate::messages::ExecutionAttemptId;
use crate::resource_manager::ResourceManager;
use crate::rest::prometheus::{self, ProcessSample, TaskSample, TaskSampler};
use crate::rest::RestServer;
use crate::task_executor::{TaskCounters, TaskExecutor, TaskExecutorServices};

/// Why a cluster process could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The RPC service could not start (bind failure, no runtime, …).
    #[error("cannot start the RPC service on {bind}: {source}")]
    Rpc {
        /// The address.
        bind: SocketAddr,
        /// Why.
        source: rill_runtime::ServiceError,
    },
    /// The data plane could not start.
    #[error("cannot start the data plane on {bind}: {source}")]
    Network {
        /// The address.
        bind: SocketAddr,
        /// Why.
        source: rill_network::NetworkError,
    },
    /// The REST server could not bind `rest.address:rest.port`.
    #[error("cannot start the REST endpoint on {bind}: {source}")]
    Rest {
        /// The address.
        bind: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A TaskManager's metrics endpoint could not bind `metrics.reporter.prom.port`.
    #[error("cannot start the Prometheus metrics endpoint on {bind}: {source}")]
    Metrics {
        /// The address.
        bind: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

fn rpc_service(
    config: &RillConfig,
    bind: SocketAddr,
    secret: &ClusterSecret,
    local_calls: LocalCalls,
    pending_budget: Option<PendingBudget>,
) -> Result<RpcService, StartError> {
    RpcService::start(RpcServiceConfig {
        bind,
        rpc: config.rpc.clone(),
        heartbeat: config.heartbeat.clone(),
        secret: secret.clone(),
        auth: config.security.auth.clone(),
        report_refused_credentials: true,
        local_calls,
        pending_budget,
    })
    .map_err(|source| StartError::Rpc { bind, source })
}

/// A running JobManager: Dispatcher and ResourceManager on one RPC service, and the
/// REST API in front of the Dispatcher.
pub struct JobManagerProcess {
    rpc: RpcService,
    dispatcher: EndpointHandle<Dispatcher>,
    resource_manager: EndpointHandle<ResourceManager>,
    rest: RestServer,
}

impl JobManagerProcess {
    /// Starts the JobManager's endpoints, serving RPC on `bind` and the REST API on
    /// `rest.address:rest.port`.
    pub fn start(
        config: &RillConfig,
        bind: SocketAddr,
        secret: &ClusterSecret,
        registry: Arc<OperatorRegistry>,
        local_calls: LocalCalls,
    ) -> Result<Self, StartError> {
        let rpc = rpc_service(config, bind, secret, local_calls, None)?;
        // Bound first, so a taken REST port fails the start before any endpoint runs
        // (its task stops when `rest` is dropped).
        let rest = RestServer::start(config, rpc.clone(), rpc.address_of(DISPATCHER)).map_err(
            |source| StartError::Rest {
                bind: config.rest.bind(),
                source,
            },
        )?;
        let dup = |e| StartError::Rpc { bind, source: e };
        let resource_manager = rpc
            .start_endpoint(
                RESOURCE_MANAGER,
                ResourceManager::new(rpc.clone(), config.clone()),
            )
            .map_err(dup)?;
        resource_manager.start();
        let dispatcher = rpc
            .start_endpoint(
                DISPATCHER,
                Dispatcher::new(
                    rpc.clone(),
                    config.clone(),
                    registry,
                    rpc.address_of(RESOURCE_MANAGER),
                ),
            )
            .map_err(dup)?;
        dispatcher.start();
        tracing::info!(address = %rpc.local_addr(), rest = %rest.local_addr(), "JobManager started");
        Ok(JobManagerProcess {
            rpc,
            dispatcher,
            resource_manager,
            rest,
        })
    }

    /// The REST API's base URL, e.g. `http://127.0.0.1:8081`.
    pub fn rest_url(&self) -> String {
        self.rest.url()
    }

    /// The socket clients and TaskManagers connect to.
    pub fn address(&self) -> SocketAddr {
        self.rpc.local_addr()
    }

    /// The Dispatcher's address.
    pub fn dispatcher_address(&self) -> RpcAddress {
        self.rpc.address_of(DISPATCHER)
    }

    /// The ResourceManager's address.
    pub fn resource_manager_address(&self) -> RpcAddress {
        self.rpc.address_of(RESOURCE_MANAGER)
    }

    /// The process's RPC service.
    pub fn rpc(&self) -> &RpcService {
        &self.rpc
    }

    /// Stops the endpoints (running jobs' JobMasters with them) and the RPC service.
    pub async fn shutdown(self) {
        self.rest.shutdown();
        self.dispatcher.stop();
        self.resource_manager.stop();
        self.dispatcher.terminated().await;
        self.resource_manager.terminated().await;
        self.rpc.shutdown().await;
    }
}

/// How to start a TaskManager.
#[derive(Clone, Debug)]
pub struct TaskManagerOptions {
    /// RPC bind address (port 0: chosen by the OS).
    pub rpc_bind: SocketAddr,
    /// Data-plane bind address.
    pub data_bind: SocketAddr,
    /// The JobManager's RPC address; a host name is resolved on every (re)connect.
    pub jobmanager: HostPort,
    /// Which RPC calls skip the wire; with [`LocalCalls::Never`] partitions of this
    /// TaskManager's own tasks go through QUIC too.
    pub local_calls: LocalCalls,
    /// The resource id; generated when `None`.
    pub resource_id: Option<ResourceId>,
}

/// A running TaskManager: one TaskExecutor, the process's data plane and its metrics
/// endpoint.
pub struct TaskManagerProcess {
    rpc: RpcService,
    network: Arc<NetworkEnvironment>,
    task_executor: EndpointHandle<TaskExecutor>,
    resource_id: ResourceId,
    data_address: SocketAddr,
    metrics_address: SocketAddr,
    metrics: TaskSet,
}

/// What a TaskManager's `GET /metrics` reads: the TaskExecutor's running tasks, and
/// what the previous scrape saw of them (for the rates).
struct TaskManagerMetrics {
    tm_id: String,
    tasks: TaskCounters,
    sampler: parking_lot::Mutex<TaskSampler<ExecutionAttemptId>>,
}

impl TaskManagerMetrics {
    /// The Prometheus text of the running tasks as of `now`, and of the process.
    fn scrape(&self, now: Instant) -> String {
        let running: Vec<_> = self
            .tasks
            .lock()
            .iter()
            .map(|(id, t)| (*id, t.clone()))
            .collect();
        let counters: Vec<_> = running
            .iter()
            .map(|(id, t)| (*id, t.counters(now)))
            .collect();
        let ratios = self.sampler.lock().observe(&counters);
        let samples: Vec<TaskSample> = running
            .iter()
            .zip(counters)
            .zip(ratios)
            .map(|(((_, t), (_, counters)), ratios)| TaskSample {
                job_id: t.job.to_string(),
                job_name: t.job_name.clone(),
                task_name: t.task_name.clone(),
                subtask_index: t.subtask,
                tm_id: self.tm_id.clone(),
                counters,
                ratios,
            })
            .collect();
        prometheus::task_manager_metrics(&samples, ProcessSample::read())
    }
}

async fn task_manager_metrics(State(m): State<Arc<TaskManagerMetrics>>) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)],
        m.scrape(Instant::now()),
    )
        .into_response()
}

async fn metrics_not_found() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// Binds the metrics endpoint's socket (inside the current tokio runtime).
fn bind_metrics(bind: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, TaskSet)> {
    let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
    let listener = std::net::TcpListener::bind(bind)?;
    listener.set_nonblocking(true)?;
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    Ok((listener, TaskSet::new(runtime)))
}

impl TaskManagerProcess {
    /// Starts the data plane and the TaskExecutor, which registers at the JobManager's
    /// ResourceManager (retrying until it is there).
    pub fn start(
        config: &RillConfig,
        options: TaskManagerOptions,
        secret: &ClusterSecret,
        registry: Arc<OperatorRegistry>,
    ) -> Result<Self, StartError> {
        let network = Arc::new(
            NetworkEnvironment::new(config.taskmanager.network.clone()).map_err(|source| {
                StartError::Network {
                    bind: options.data_bind,
                    source,
                }
            })?,
        );
        // One pending-connection budget for the process's two QUIC servers.
        let budget = PendingBudget::new(&config.security.auth);
        let data_address = network
            .start_transport_with(
                options.data_bind,
                secret.clone(),
                &config.security.auth,
                Some(budget.clone()),
            )
            .map_err(|source| StartError::Network {
                bind: options.data_bind,
                source,
            })?;
        let force_remote_data = matches!(options.local_calls, LocalCalls::Never);
        let rpc = rpc_service(
            config,
            options.rpc_bind,
            secret,
            options.local_calls,
            Some(budget),
        )?;
        let resource_id = options
            .resource_id
            .unwrap_or_else(|| ResourceId::generate("taskmanager", &mut rand::thread_rng()));
        let metrics_bind =
            SocketAddr::new(options.rpc_bind.ip(), config.metrics.reporter.prom.port);
        let metrics_error = |source| StartError::Metrics {
            bind: metrics_bind,
            source,
        };
        let (listener, metrics) = bind_metrics(metrics_bind).map_err(metrics_error)?;
        let metrics_address = listener.local_addr().map_err(metrics_error)?;
        let services = TaskExecutorServices {
            rpc: rpc.clone(),
            network: network.clone(),
            data_address,
            registry,
            config: config.clone(),
            resource_id: resource_id.clone(),
            resource_manager: RpcAddress::new(options.jobmanager, RESOURCE_MANAGER),
            force_remote_data,
            metrics_address: Some(metrics_address),
        };
        let te = TaskExecutor::new(services);
        let app = Router::new()
            .route("/metrics", get(task_manager_metrics))
            .fallback(metrics_not_found)
            .with_state(Arc::new(TaskManagerMetrics {
                tm_id: resource_id.to_string(),
                tasks: te.task_metrics(),
                sampler: Default::default(),
            }));
        metrics.spawn("taskmanager-metrics", async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "the TaskManager's metrics endpoint stopped");
            }
        });
        tracing::info!(
            url = %prometheus::metrics_url(metrics_address),
            "Prometheus metrics endpoint listening"
        );
        let task_executor =
            rpc.start_endpoint(TASK_EXECUTOR, te)
                .map_err(|source| StartError::Rpc {
                    bind: options.rpc_bind,
                    source,
                })?;
        task_executor.start();
        Ok(TaskManagerProcess {
            rpc,
            network,
            task_executor,
            resource_id,
            data_address,
            metrics_address,
            metrics,
        })
    }

    /// This TaskManager's resource id.
    pub fn resource_id(&self) -> &ResourceId {
        &self.resource_id
    }

    /// The TaskExecutor's RPC socket.
    pub fn address(&self) -> SocketAddr {
        self.rpc.local_addr()
    }

    /// The data plane's socket.
    pub fn data_address(&self) -> SocketAddr {
        self.data_address
    }

    /// The Prometheus metrics endpoint's URL, e.g. `http://127.0.0.1:9249/metrics`.
    pub fn metrics_url(&self) -> String {
        prometheus::metrics_url(self.metrics_address)
    }

    /// Stops the metrics endpoint, the TaskExecutor (canceling its tasks), the data
    /// plane and the RPC service.
    pub async fn shutdown(self) {
        self.metrics.shutdown();
        self.task_executor.stop();
        self.task_executor.terminated().await;
        self.network.shutdown();
        self.rpc.shutdown().await;
    }
}

/// How to start a [`MiniCluster`].
#[derive(Clone, Debug)]
pub struct MiniClusterOptions {
    /// Number of TaskManagers.
    pub task_managers: u32,
    /// Route every call and every partition through QUIC even in-process.
    pub force_remote: bool,
    /// JobManager RPC bind address (127.0.0.1:0 by default).
    pub bind: SocketAddr,
    /// The REST API's port, in place of `rest.port`: 0 by default (OS-chosen, as in
    /// Flink's MiniCluster), so clusters started by tests and by `rill run` never
    /// collide; `rill minicluster` passes `rest.port`.
    pub rest_port: u16,
}

impl Default for MiniClusterOptions {
    fn default() -> Self {
        MiniClusterOptions {
            task_managers: 1,
            force_remote: false,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            rest_port: 0,
        }
    }
}

/// A JobManager and TaskManagers in one process (DESIGN §3). Slots per TaskManager come
/// from `taskmanager.number-of-task-slots`.
pub struct MiniCluster {
    jobmanager: JobManagerProcess,
    task_managers: Vec<TaskManagerProcess>,
}

impl MiniCluster {
    /// Starts the cluster; TaskExecutors register in the background.
    pub fn start(
        config: &RillConfig,
        options: &MiniClusterOptions,
        secret: &ClusterSecret,
        registry: Arc<OperatorRegistry>,
    ) -> Result<Self, StartError> {
        let local_calls = if options.force_remote {
            LocalCalls::Never
        } else {
            LocalCalls::Directory(ServiceDirectory::new())
        };
        let mut jm_config = config.clone();
        jm_config.rest.port = options.rest_port;
        let jobmanager = JobManagerProcess::start(
            &jm_config,
            options.bind,
            secret,
            registry.clone(),
            local_calls.clone(),
        )?;
        let host = options.bind.ip();
        // Several TaskManagers of one process cannot share a metrics port.
        let mut tm_config = config.clone();
        tm_config.metrics.reporter.prom.port = 0;
        let task_managers = (0..options.task_managers)
            .map(|i| {
                TaskManagerProcess::start(
                    &tm_config,
                    TaskManagerOptions {
                        rpc_bind: SocketAddr::new(host, 0),
                        data_bind: SocketAddr::new(host, 0),
                        jobmanager: jobmanager.address().into(),
                        local_calls: local_calls.clone(),
                        resource_id: Some(ResourceId::new(format!("taskmanager-{i}"))),
                    },
                    secret,
                    registry.clone(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MiniCluster {
            jobmanager,
            task_managers,
        })
    }

    /// The JobManager.
    pub fn jobmanager(&self) -> &JobManagerProcess {
        &self.jobmanager
    }

    /// The TaskManagers.
    pub fn task_managers(&self) -> &[TaskManagerProcess] {
        &self.task_managers
    }

    /// Stops everything.
    pub async fn shutdown(self) {
        for tm in self.task_managers {
            tm.shutdown().await;
        }
        self.jobmanager.shutdown().await;
    }
}
