//! `rill::admin`: the library API admin tools use to talk to a cluster.
//!
//! Every method is one typed `DispatcherGateway` call over authenticated QUIC — the same
//! calls `rill list`, `rill status`, `rill cancel`, `rill taskmanagers` and `rill run`
//! make:
//!
//! ```no_run
//! # async fn demo() -> Result<(), rill::admin::AdminError> {
//! use rill::admin::AdminClient;
//! use rill_runtime::security::ClusterSecret;
//!
//! let secret = ClusterSecret::from_bytes(b"the cluster's secret").unwrap();
//! let client = AdminClient::connect("127.0.0.1:6123".parse().unwrap(), &secret).await?;
//! for job in client.list_jobs().await? {
//!     println!("{} {} {}", job.job, job.status, job.name);
//! }
//! # Ok(()) }
//! ```
//!
//! Errors are typed: [`AdminError::Unreachable`] (no JobManager there, or it does not
//! accept our secret), [`AdminError::Cluster`] (the cluster answered with a
//! [`ClusterError`], e.g. an unknown job id), [`AdminError::Rpc`] (the call failed on
//! the way).

use std::net::SocketAddr;
use std::time::Duration;

use rill_dataflow::{JobGraph, JobId};
use rill_endpoints::dispatcher_gateway::Gateway as DispatcherGateway;
use rill_endpoints::gateways::DISPATCHER;
use rill_endpoints::messages::{JobDetails, JobOverview, JobResult, JobStatus, TaskManagerInfo};
use rill_endpoints::ClusterError;
use rill_runtime::config::RpcConfig;
use rill_runtime::security::ClusterSecret;
use rill_runtime::{RpcAddress, RpcError, RpcService, RpcServiceConfig};

/// The default JobManager address (Flink's `jobmanager.rpc.port` is 6123 too).
pub const DEFAULT_JOBMANAGER: &str = "127.0.0.1:6123";

/// What can go wrong talking to a cluster.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No JobManager answered at the address.
    #[error("cannot reach the JobManager at {address}: {source}")]
    Unreachable {
        /// The address tried.
        address: SocketAddr,
        /// Why.
        source: RpcError,
    },
    /// The cluster rejected the request.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The call failed in transit.
    #[error("call to the JobManager failed: {0}")]
    Rpc(#[from] RpcError),
    /// The local client could not start.
    #[error("cannot start the RPC client: {0}")]
    Client(String),
}

/// A connection to a cluster's Dispatcher. Needs a tokio runtime.
pub struct AdminClient {
    rpc: RpcService,
    /// Whether `rpc` was started by this client (and is shut down by `close`).
    owned: bool,
    dispatcher: DispatcherGateway,
}

impl AdminClient {
    /// Connects to the JobManager at `jobmanager` with default RPC settings.
    pub async fn connect(
        jobmanager: SocketAddr,
        secret: &ClusterSecret,
    ) -> Result<Self, AdminError> {
        Self::connect_with(jobmanager, secret, &RpcConfig::default()).await
    }

    /// Connects with explicit RPC settings (timeouts, frame size).
    pub async fn connect_with(
        jobmanager: SocketAddr,
        secret: &ClusterSecret,
        rpc: &RpcConfig,
    ) -> Result<Self, AdminError> {
        let bind = match jobmanager {
            SocketAddr::V4(a) if a.ip().is_loopback() => SocketAddr::from(([127, 0, 0, 1], 0)),
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::V6(a) if a.ip().is_loopback() => "[::1]:0".parse().expect("valid"),
            SocketAddr::V6(_) => "[::]:0".parse().expect("valid"),
        };
        let mut config = RpcServiceConfig::local(secret.clone());
        config.bind = bind;
        config.rpc = rpc.clone();
        let service = RpcService::start(config).map_err(|e| AdminError::Client(e.to_string()))?;
        let mut client = Self::with_service(service, jobmanager).await?;
        client.owned = true;
        Ok(client)
    }

    /// Connects through an existing RPC service (e.g. in the same process as a
    /// mini-cluster, where the gateway stays local).
    pub async fn with_service(rpc: RpcService, jobmanager: SocketAddr) -> Result<Self, AdminError> {
        let address = RpcAddress::new(jobmanager, DISPATCHER);
        let dispatcher = rpc
            .connect::<DispatcherGateway>(&address)
            .await
            .map_err(|source| AdminError::Unreachable {
                address: jobmanager,
                source,
            })?;
        Ok(AdminClient {
            rpc,
            owned: false,
            dispatcher,
        })
    }

    /// The Dispatcher gateway, for calls this type does not wrap.
    pub fn gateway(&self) -> &DispatcherGateway {
        &self.dispatcher
    }

    /// Submits a job; returns its id.
    pub async fn submit(&self, job: JobGraph) -> Result<JobId, AdminError> {
        Ok(self.dispatcher.submit_job(job).await??)
    }

    /// All jobs the cluster knows.
    pub async fn list_jobs(&self) -> Result<Vec<JobOverview>, AdminError> {
        Ok(self.dispatcher.list_jobs().await?)
    }

    /// A job's status.
    pub async fn job_status(&self, job: JobId) -> Result<JobStatus, AdminError> {
        Ok(self.dispatcher.job_status(job).await??)
    }

    /// A job's details.
    pub async fn job_details(&self, job: JobId) -> Result<JobDetails, AdminError> {
        Ok(self.dispatcher.job_details(job).await??)
    }

    /// Asks the cluster to cancel a job.
    pub async fn cancel(&self, job: JobId) -> Result<(), AdminError> {
        Ok(self.dispatcher.cancel_job(job).await??)
    }

    /// A finished job's result.
    pub async fn job_result(&self, job: JobId) -> Result<JobResult, AdminError> {
        Ok(self.dispatcher.request_job_result(job).await??)
    }

    /// The cluster's TaskManagers.
    pub async fn task_managers(&self) -> Result<Vec<TaskManagerInfo>, AdminError> {
        Ok(self.dispatcher.list_task_managers().await??)
    }

    /// Polls every `interval` until the job is terminal, calling `progress` with its
    /// details after each poll; returns its result.
    pub async fn wait_for_result(
        &self,
        job: JobId,
        interval: Duration,
        mut progress: impl FnMut(&JobDetails),
    ) -> Result<JobResult, AdminError> {
        // Status is cheap (cached by the Dispatcher): poll it often so the result comes
        // promptly; fetch details for `progress` once per `interval`.
        let poll = interval.min(Duration::from_millis(50));
        let mut next_progress = tokio::time::Instant::now();
        loop {
            let status = self.job_status(job).await?;
            if status.is_terminal() {
                progress(&self.job_details(job).await?);
                return self.job_result(job).await;
            }
            if tokio::time::Instant::now() >= next_progress {
                progress(&self.job_details(job).await?);
                next_progress += interval;
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Waits until `total` slots are registered (or `timeout` passes); returns the slots
    /// seen last.
    pub async fn wait_for_slots(&self, total: u32, timeout: Duration) -> Result<u32, AdminError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let slots = self
                .task_managers()
                .await?
                .iter()
                .map(|t| t.slots_total)
                .sum();
            if slots >= total || tokio::time::Instant::now() >= deadline {
                return Ok(slots);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Closes the client's RPC service (if it started one).
    pub async fn close(self) {
        if self.owned {
            self.rpc.shutdown().await;
        }
    }
}
