//! `rill::admin`: the library API admin tools use to talk to a cluster.
//!
//! Every method is one typed `DispatcherGateway` call over authenticated QUIC — the same
//! calls `rill list`, `rill status`, `rill cancel`, `rill taskmanagers`, `rill run`,
//! `rill checkpoint(s)`, `rill savepoint` and `rill stop` make:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rill::admin::{jobs, AdminClient, ClusterSecret, HostPort};
//!
//! // An IP address or a host name (`"jobmanager.example:6123"`), resolved on connect.
//! let jobmanager: HostPort = "127.0.0.1:6123".parse().unwrap();
//! // The secret `rill list` would use: configuration, the secret file, or on loopback
//! // the development secret. `ClusterSecret::from_bytes` and `load_secret(path)` work too.
//! let secret = rill::admin::default_secret(jobmanager.clone())?;
//! let client = AdminClient::connect(jobmanager, &secret).await?;
//! let job = client.submit(jobs::keyed_sum(Some(1000), 10, None, 2)?).await?;
//! for overview in client.list_jobs().await? {
//!     println!("{} {} {}", overview.job, overview.status, overview.name);
//! }
//! println!("{}", client.job_status(job).await?);
//! client.cancel(job).await?;
//! # Ok(()) }
//! ```
//!
//! Everything such a tool needs is re-exported here, so it depends on `rill` alone: the
//! secret ([`ClusterSecret`], [`load_secret`], [`default_secret`]), ids ([`JobId`]), job
//! builders ([`StreamExecutionEnvironment`], [`builtins`], [`key`], the built-in
//! [`jobs`]) and the status types ([`JobStatus`], [`JobDetails`], [`JobResult`], …).
//!
//! Errors are typed: [`AdminError::Unreachable`] (no JobManager there, or it does not
//! accept our secret), [`AdminError::Cluster`] (the cluster answered with a
//! [`ClusterError`], e.g. an unknown job id), [`AdminError::Rpc`] (the call failed on
//! the way), [`AdminError::Secret`] (no usable cluster secret: a [`SecretError`], which
//! the secret loaders return). An error's message says
//! what failed; its cause is its [`source`](std::error::Error::source), not repeated in
//! the message, so printing the chain (`{:#}` of anyhow) says each part once.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rill_endpoints::gateways::DISPATCHER;
use rill_runtime::config::ConfigSources;
use rill_runtime::{RpcAddress, RpcService, RpcServiceConfig};

pub use rill_dataflow::{
    builtins, jobs, key, DataStream, DataflowError, JobGraph, JobId, KeyedStream, ParseJobIdError,
    SavepointRestoreSettings, StreamExecutionEnvironment, Value,
};
pub use rill_endpoints::dispatcher_gateway::Gateway as DispatcherGateway;
pub use rill_endpoints::messages::{
    CheckpointInfo, CheckpointsSummary, ExecutionState, FailureOutcome, FinalCheckpoint,
    JobDetails, JobFailure, JobOverview, JobResult, JobStatus, SavepointRequest, SnapshotStatus,
    TaskManagerInfo, TaskManagerLocation, VertexDetails,
};
pub use rill_endpoints::{ClusterError, RillConfig};
pub use rill_runtime::address::HostPort;
pub use rill_runtime::config::{ConfigError, RpcConfig, SecurityConfig};
pub use rill_runtime::security::{default_dev_secret_path, ClusterSecret, SecurityError};
pub use rill_runtime::{ResourceId, RpcError};

/// The default JobManager address (Flink's `jobmanager.rpc.port` is 6123 too).
pub const DEFAULT_JOBMANAGER: &str = "127.0.0.1:6123";

/// What can go wrong talking to a cluster.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No JobManager answered at the address (or its host name did not resolve).
    #[error("cannot reach the JobManager at {address}")]
    Unreachable {
        /// The address tried.
        address: HostPort,
        /// Why.
        source: RpcError,
    },
    /// The cluster rejected the request.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The call failed in transit.
    #[error("call to the JobManager failed")]
    Rpc(#[from] RpcError),
    /// No usable cluster secret.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The local client could not start.
    #[error("cannot start the RPC client: {0}")]
    Client(String),
}

/// Why no cluster secret could be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// None configured, or its file is unreadable or empty.
    #[error("cannot load the cluster secret")]
    Secret(#[from] SecurityError),
    /// The configuration (`rill.toml`, `RILL_*`) could not be read.
    #[error("cannot read the configuration")]
    Config(#[from] ConfigError),
}

/// Reads a cluster secret file (`security.cluster-secret-file`; the whole content,
/// surrounding whitespace trimmed).
pub fn load_secret(path: impl AsRef<Path>) -> Result<ClusterSecret, SecretError> {
    Ok(ClusterSecret::from_file(path.as_ref())?)
}

/// The secret the `rill` command uses towards `jobmanager`, from `security`:
/// `security.cluster-secret`, else `security.cluster-secret-file`, else — for a loopback
/// JobManager and `security.auto-generate` — the development secret at
/// [`default_dev_secret_path`] (created if missing, as the command does).
pub fn secret_from_config(
    security: &SecurityConfig,
    jobmanager: impl Into<HostPort>,
) -> Result<ClusterSecret, SecretError> {
    let jobmanager = jobmanager.into();
    Ok(ClusterSecret::resolve(
        security,
        jobmanager.is_loopback(),
        &jobmanager.to_string(),
    )?)
}

/// Like [`secret_from_config`], with the configuration the `rill` command reads by
/// default: `./rill.toml` if present, then `RILL_*` environment variables.
pub fn default_secret(jobmanager: impl Into<HostPort>) -> Result<ClusterSecret, SecretError> {
    let config: RillConfig = rill_runtime::config::load(&ConfigSources::default())?;
    secret_from_config(&config.security, jobmanager)
}

/// A connection to a cluster's Dispatcher. Needs a tokio runtime.
pub struct AdminClient {
    rpc: RpcService,
    /// Whether `rpc` was started by this client (and is shut down by `close`).
    owned: bool,
    dispatcher: DispatcherGateway,
}

impl AdminClient {
    /// Connects to the JobManager at `jobmanager` (an IP socket address or `host:port`,
    /// resolved now) with default RPC settings.
    pub async fn connect(
        jobmanager: impl Into<HostPort>,
        secret: &ClusterSecret,
    ) -> Result<Self, AdminError> {
        Self::connect_with(jobmanager, secret, &RpcConfig::default()).await
    }

    /// Connects with explicit RPC settings (timeouts, frame size).
    pub async fn connect_with(
        jobmanager: impl Into<HostPort>,
        secret: &ClusterSecret,
        rpc: &RpcConfig,
    ) -> Result<Self, AdminError> {
        let jobmanager = jobmanager.into();
        // Resolved here to choose the local socket's family; an IPv4 address if the name
        // has one.
        let socket = jobmanager
            .resolve_from(SocketAddr::from(([0, 0, 0, 0], 0)))
            .await
            .map_err(|e| AdminError::Unreachable {
                address: jobmanager.clone(),
                source: e.into(),
            })?;
        let bind = match socket {
            SocketAddr::V4(a) if a.ip().is_loopback() => SocketAddr::from(([127, 0, 0, 1], 0)),
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::V6(a) if a.ip().is_loopback() => "[::1]:0".parse().expect("valid"),
            SocketAddr::V6(_) => "[::]:0".parse().expect("valid"),
        };
        let mut config = RpcServiceConfig::local(secret.clone());
        config.bind = bind;
        config.rpc = rpc.clone();
        // The refusal comes back as the error; a log line would say it twice.
        config.report_refused_credentials = false;
        let service = RpcService::start(config).map_err(|e| AdminError::Client(e.to_string()))?;
        let mut client = Self::connect_service(service, socket.into(), jobmanager).await?;
        client.owned = true;
        Ok(client)
    }

    /// Connects through an existing RPC service (e.g. in the same process as a
    /// mini-cluster, where the gateway stays local).
    pub async fn with_service(
        rpc: RpcService,
        jobmanager: impl Into<HostPort>,
    ) -> Result<Self, AdminError> {
        let jobmanager = jobmanager.into();
        Self::connect_service(rpc, jobmanager.clone(), jobmanager).await
    }

    /// Connects through `rpc` to the Dispatcher at `host`; errors name `jobmanager` (the
    /// address as the caller wrote it).
    async fn connect_service(
        rpc: RpcService,
        host: HostPort,
        jobmanager: HostPort,
    ) -> Result<Self, AdminError> {
        let address = RpcAddress::new(host, DISPATCHER);
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

    /// Starts a checkpoint of a running job now; answers the request id for
    /// [`snapshot_status`](Self::snapshot_status).
    pub async fn trigger_checkpoint(&self, job: JobId) -> Result<u64, AdminError> {
        Ok(self.dispatcher.trigger_checkpoint(job).await??)
    }

    /// Starts a savepoint — or, with `request.terminate`, a stop-with-savepoint — of a
    /// running job; answers the request id for [`snapshot_status`](Self::snapshot_status).
    pub async fn trigger_savepoint(
        &self,
        job: JobId,
        request: SavepointRequest,
    ) -> Result<u64, AdminError> {
        Ok(self.dispatcher.trigger_savepoint(job, request).await??)
    }

    /// Where a triggered checkpoint or savepoint stands (also after the job ended).
    pub async fn snapshot_status(&self, job: JobId, id: u64) -> Result<SnapshotStatus, AdminError> {
        Ok(self.dispatcher.snapshot_status(job, id).await??)
    }

    /// Polls [`snapshot_status`](Self::snapshot_status) until request `id` is no longer
    /// in progress (or `timeout` passes, answering `InProgress`).
    pub async fn wait_for_snapshot(
        &self,
        job: JobId,
        id: u64,
        timeout: Duration,
    ) -> Result<SnapshotStatus, AdminError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.snapshot_status(job, id).await?;
            if s != SnapshotStatus::InProgress || tokio::time::Instant::now() >= deadline {
                return Ok(s);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The cluster's TaskManagers.
    pub async fn task_managers(&self) -> Result<Vec<TaskManagerInfo>, AdminError> {
        Ok(self.dispatcher.list_task_managers().await??)
    }

    /// Polls until the job is terminal, calling `progress` with its details every
    /// `interval` and whenever its status changes (so a failure and the restart it leads
    /// to are seen when they happen, not up to `interval` later); returns its result.
    pub async fn wait_for_result(
        &self,
        job: JobId,
        interval: Duration,
        mut progress: impl FnMut(&JobDetails),
    ) -> Result<JobResult, AdminError> {
        // Status is cheap (cached by the Dispatcher): poll it often so the result comes
        // promptly; fetch details for `progress` once per `interval` or on a change.
        let poll = interval.min(Duration::from_millis(50));
        let mut next_progress = tokio::time::Instant::now();
        let mut last_status = None;
        loop {
            let status = self.job_status(job).await?;
            if status.is_terminal() {
                progress(&self.job_details(job).await?);
                return self.job_result(job).await;
            }
            let now = tokio::time::Instant::now();
            if now >= next_progress || last_status != Some(status) {
                progress(&self.job_details(job).await?);
                next_progress = now + interval;
            }
            last_status = Some(status);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> RpcError {
        RpcError::Unreachable {
            address: "rill://127.0.0.1:9/dispatcher".into(),
            reason: "connect timed out".into(),
        }
    }

    #[test]
    fn each_cause_is_said_once_in_the_chain() {
        let e = anyhow::Error::from(AdminError::Unreachable {
            address: "127.0.0.1:9".parse().unwrap(),
            source: unreachable(),
        });
        assert_eq!(
            format!("{e:#}"),
            "cannot reach the JobManager at 127.0.0.1:9: \
             rill://127.0.0.1:9/dispatcher is unreachable: connect timed out"
        );
        let e = anyhow::Error::from(AdminError::Rpc(unreachable()));
        assert_eq!(
            format!("{e:#}"),
            "call to the JobManager failed: \
             rill://127.0.0.1:9/dispatcher is unreachable: connect timed out"
        );
        let e = anyhow::Error::from(AdminError::Cluster(ClusterError::InvalidJob(
            "unknown operator `acme.x`".into(),
        )));
        assert_eq!(format!("{e:#}"), "job rejected: unknown operator `acme.x`");
    }

    #[test]
    fn secrets_load_from_a_file_or_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        let from_file = load_secret(&path).unwrap();
        let security = SecurityConfig {
            cluster_secret_file: Some(path),
            ..SecurityConfig::default()
        };
        let jobmanager: SocketAddr = "10.0.0.1:6123".parse().unwrap();
        let from_config = secret_from_config(&security, jobmanager).unwrap();
        let direct = ClusterSecret::from_bytes(b"s3cret").unwrap();
        assert!(from_file == direct && from_config == direct);
        // Not loopback and nothing configured: no secret, and the error says which keys.
        match secret_from_config(&SecurityConfig::default(), jobmanager) {
            Err(SecretError::Secret(e)) => {
                assert!(e.to_string().contains("security.cluster-secret"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }
}
