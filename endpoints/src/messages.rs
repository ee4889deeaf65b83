//! The messages the four endpoints exchange: identifiers, slot reports, deployment
//! descriptors, execution and job states, and what the Dispatcher answers admin tools.
//!
//! Everything here is plain serde data: it crosses process boundaries as rmp-serde inside
//! the gateways of [`crate::gateways`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use rill_dataflow::state::OperatorSubtaskSnapshot;
use rill_dataflow::{JobId, Value, VertexId};
use rill_network::PartitionId;
use rill_runtime::{ResourceId, RpcAddress};
use rill_state::BackendKind;
use serde::{Deserialize, Serialize};

/// Errors the cluster answers with; typed so admin tools can react to each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ClusterError {
    /// No job with this id is known.
    #[error("job {0} not found")]
    JobNotFound(JobId),
    /// A job with this id was already submitted.
    #[error("a job with id {0} was already submitted")]
    DuplicateJob(JobId),
    /// The job graph was rejected at submission (unknown operator, cycle, bad parallelism…).
    #[error("job rejected: {0}")]
    InvalidJob(String),
    /// The job already reached a terminal state.
    #[error("job {job} is already {status}")]
    JobTerminal {
        /// The job.
        job: JobId,
        /// Its terminal status.
        status: JobStatus,
    },
    /// The job has not reached a terminal state yet.
    #[error("job {job} has not finished yet (status {status})")]
    JobNotTerminal {
        /// The job.
        job: JobId,
        /// Its current status.
        status: JobStatus,
    },
    /// A request about a slot, allocation or task that does not match this endpoint's state.
    #[error("{0}")]
    Rejected(String),
    /// A call to another component failed.
    #[error("{0}")]
    Unavailable(String),
    /// A checkpoint or savepoint cannot be started (checkpointing off, no target
    /// directory, job not running, stop already in progress, …).
    #[error("{0}")]
    SnapshotRefused(String),
    /// No checkpoint or savepoint with this id was triggered for the job.
    #[error("job {job} has no checkpoint or savepoint {id}")]
    SnapshotNotFound {
        /// The job.
        job: JobId,
        /// The id asked for.
        id: u64,
    },
}

/// Result type of cluster operations.
pub type ClusterResult<T> = Result<T, ClusterError>;

macro_rules! random_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub u128);

        impl $name {
            /// A fresh random id.
            pub fn generate() -> Self {
                Self(rand::random())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:032x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "({:08x})"), (self.0 >> 96) as u32)
            }
        }
    };
}

random_id!(
    /// One allocation of a slot to a job (Flink's `AllocationID`).
    AllocationId,
    "AllocationId"
);
random_id!(
    /// One attempt to run one subtask (Flink's `ExecutionAttemptID`).
    ExecutionAttemptId,
    "ExecutionAttemptId"
);

/// A slot of a TaskExecutor: its resource id and slot index.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SlotId {
    /// The TaskExecutor.
    pub task_executor: ResourceId,
    /// Index in its slot table.
    pub index: u32,
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.task_executor, self.index)
    }
}

/// What one slot is doing, as its TaskExecutor reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotStatus {
    /// The slot.
    pub slot: SlotId,
    /// The job and allocation holding it, if any.
    pub allocation: Option<(JobId, AllocationId)>,
}

/// All slots of a TaskExecutor: sent at registration and in every heartbeat to the RM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotReport {
    /// One entry per slot.
    pub slots: Vec<SlotStatus>,
    /// The TaskExecutor process's resident memory (`VmRSS`), bytes, when it sent the
    /// report; `None` at registration, where it cannot be read, and from senders that
    /// predate it.
    #[serde(default)]
    pub process_rss_bytes: Option<u64>,
}

/// How to reach a TaskExecutor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskManagerLocation {
    /// Its resource id.
    pub resource_id: ResourceId,
    /// Its TaskExecutor endpoint.
    pub rpc_address: RpcAddress,
    /// Where its data plane (QUIC) listens.
    pub data_address: SocketAddr,
    /// Where its Prometheus metrics endpoint (`GET /metrics`) listens; `None` from a
    /// TaskManager that predates it.
    #[serde(default)]
    pub metrics_address: Option<SocketAddr>,
}

/// A TaskExecutor's registration at the ResourceManager.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskExecutorRegistration {
    /// Who and where.
    pub location: TaskManagerLocation,
    /// Its slots at registration time.
    pub slot_report: SlotReport,
}

/// The ResourceManager's answer to a registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistrationResponse {
    /// Registered; heartbeats come from `resource_manager`.
    Success {
        /// The ResourceManager's resource id.
        resource_manager: ResourceId,
    },
    /// Refused, with the reason.
    Refused(String),
}

/// A slot a TaskExecutor offers to a JobMaster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotOffer {
    /// The allocation the ResourceManager made.
    pub allocation: AllocationId,
    /// The slot index on the offering TaskExecutor.
    pub slot_index: u32,
}

/// A request from the ResourceManager to give a slot to a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRequest {
    /// Which slot.
    pub slot_index: u32,
    /// For which job.
    pub job: JobId,
    /// The new allocation.
    pub allocation: AllocationId,
    /// The job's JobMaster, to offer the slot to.
    pub job_master: RpcAddress,
    /// The JobMaster's fencing token.
    pub job_master_id: u128,
}

/// Where an input channel's producer partition lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputChannelDescriptor {
    /// The producer's result partition.
    pub partition: PartitionId,
    /// The subpartition this consumer reads.
    pub subpartition: u32,
    /// The TaskExecutor running the producer.
    pub producer: ResourceId,
    /// That TaskExecutor's data-plane address.
    pub producer_data_address: SocketAddr,
}

/// Everything a TaskExecutor needs to run one subtask (Flink's
/// `TaskDeploymentDescriptor`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskDeploymentDescriptor {
    /// The job.
    pub job: JobId,
    /// The job graph, as bytes ([`rill_dataflow::JobGraph::to_bytes`]).
    pub job_graph: Vec<u8>,
    /// The vertex.
    pub vertex: VertexId,
    /// The subtask index.
    pub subtask: u32,
    /// This attempt.
    pub execution: ExecutionAttemptId,
    /// The attempt number (0 for the first).
    pub attempt: u32,
    /// The slot allocation to run in.
    pub allocation: AllocationId,
    /// One partition per output edge, in `JobGraph::output_edges` order.
    pub output_partitions: Vec<PartitionId>,
    /// The input channels in input-channel order.
    pub inputs: Vec<InputChannelDescriptor>,
    /// The job's keyed state backend (from the JobManager's `state.backend.type`, so
    /// every subtask of a job uses the same one) and incremental setting.
    pub state_backend: BackendKind,
    /// `execution.checkpointing.incremental` as configured at the JobManager.
    pub incremental: Option<bool>,
    /// Where to write a final snapshot when the task's input ends, if the JobManager has
    /// `state.checkpoints.dir` but no periodic checkpoints.
    pub final_snapshot: Option<FinalSnapshotSpec>,
    /// Periodic checkpoints, if the job takes them.
    pub checkpointing: Option<TaskCheckpointSpec>,
    /// The directory of the completed checkpoint or savepoint (holding `_metadata`) the
    /// task restores from.
    pub restore_from: Option<String>,
}

/// How a task takes part in periodic checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCheckpointSpec {
    /// `state.checkpoints.dir` (a `file://` URL); the job's checkpoints go to
    /// `<dir>/<job-id>/chk-<n>`.
    pub checkpoints_dir: String,
    /// `execution.checkpointing.mode = exactly_once`: align barriers.
    pub exactly_once: bool,
    /// `execution.checkpointing.unaligned.enabled` with no aligned-checkpoint timeout:
    /// checkpoint barriers (not savepoints) are unaligned from the sources on.
    #[serde(default)]
    pub unaligned: bool,
    /// `execution.checkpointing.aligned-checkpoint-timeout` when unaligned checkpoints
    /// are enabled with a positive timeout: a task whose alignment lasts longer turns
    /// the checkpoint unaligned.
    #[serde(default)]
    pub aligned_timeout: Option<std::time::Duration>,
}

/// What a task acknowledges a checkpoint with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointAck {
    /// One entry per stateful operator of the task's chain.
    pub snapshots: Vec<OperatorSubtaskSnapshot>,
    /// Bytes written for this checkpoint.
    pub bytes: u64,
    /// In-flight bytes persisted with the state.
    pub in_flight_bytes: u64,
    /// Synchronous part, ms.
    pub sync_ms: u64,
    /// Asynchronous part, ms.
    pub async_ms: u64,
    /// Alignment at the task's input, ms.
    pub alignment_ms: u64,
}

/// One checkpoint of a job, for `rill checkpoints` and REST.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// Checkpoint id.
    pub id: u64,
    /// A savepoint rather than a checkpoint.
    pub savepoint: bool,
    /// `IN_PROGRESS`, `COMPLETED` or `FAILED` (Flink's names).
    pub status: String,
    /// Trigger time, ms since the epoch.
    pub trigger_timestamp_ms: i64,
    /// Trigger to completion or failure, ms (`None` while in progress).
    pub duration_ms: Option<u64>,
    /// Tasks that acknowledged.
    pub acknowledged: usize,
    /// Tasks expected to.
    pub expected: usize,
    /// Bytes written by the acknowledged tasks.
    pub bytes: u64,
    /// Longest alignment of a task, ms.
    pub alignment_ms: u64,
    /// In-flight data stored by the acknowledged tasks (unaligned checkpoints), bytes.
    #[serde(default)]
    pub in_flight_bytes: u64,
    /// Taken unaligned (barriers overtook in-flight data), at least in part.
    #[serde(default)]
    pub unaligned: bool,
    /// Where a completed checkpoint is.
    pub path: Option<String>,
    /// Why it failed.
    pub failure: Option<String>,
}

/// What a user asks for with `rill savepoint` / `rill stop` (or REST
/// `POST /jobs/:id/savepoints` and `/stop`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavepointRequest {
    /// Where the savepoint goes (a directory under which `savepoint-<job>-<id>` is
    /// created); `None`: `state.savepoints.dir`.
    pub target_dir: Option<String>,
    /// Stop the job after the savepoint (stop-with-savepoint): sources stop, the
    /// savepoint is taken, the job ends FINISHED.
    pub terminate: bool,
    /// With `terminate`: sources emit the final watermark and operators flush (windows
    /// fire) before the savepoint (`--drain`).
    pub drain: bool,
}

/// Where a triggered checkpoint or savepoint stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotStatus {
    /// Not complete yet.
    InProgress,
    /// Complete: its directory (holding `_metadata`).
    Completed {
        /// The directory.
        path: String,
    },
    /// It failed.
    Failed {
        /// Why.
        reason: String,
    },
}

/// A job's checkpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointsSummary {
    /// Checkpoints are configured (`execution.checkpointing.interval`).
    pub enabled: bool,
    /// The most recent ones, oldest first.
    pub history: Vec<CheckpointInfo>,
    /// Completed, failed and in-progress counts over the job's life.
    pub completed: u64,
    /// Failed ones.
    pub failed: u64,
    /// The newest completed checkpoint's directory.
    pub latest_completed: Option<String>,
    /// What the last (re)start restored: `(checkpoint id, directory)`.
    pub restored: Option<(u64, String)>,
    /// User-triggered checkpoints and savepoints by request id, with where each stands
    /// (what `snapshot_status` answers, also after the job ended).
    #[serde(default)]
    pub requests: Vec<(u64, SnapshotStatus)>,
}

/// Where a bounded task writes its final snapshot (see [`FinalSnapshotReport`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalSnapshotSpec {
    /// `state.checkpoints.dir` (a `file://` URL).
    pub checkpoints_dir: String,
    /// The checkpoint id the final snapshot gets (`chk-<id>`).
    pub checkpoint_id: u64,
}

/// What a finished task wrote as its final snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FinalSnapshotReport {
    /// One entry per stateful operator of the task's chain (possibly none).
    Written(Vec<OperatorSubtaskSnapshot>),
    /// The snapshot could not be written; the task still finished.
    Failed(String),
}

/// A completed (or failed) final snapshot of a finished job, as job details show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinalCheckpoint {
    /// `_metadata` was written: the checkpoint directory.
    Completed {
        /// Checkpoint id.
        checkpoint_id: u64,
        /// The `chk-<id>` directory holding `_metadata`.
        path: String,
    },
    /// The snapshot failed; the job's results are unaffected.
    Failed {
        /// Checkpoint id.
        checkpoint_id: u64,
        /// Why.
        reason: String,
    },
}

/// A subtask attempt's state (DESIGN §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ExecutionState {
    /// Not scheduled yet.
    Created,
    /// Waiting for a slot.
    Scheduled,
    /// Sent to a TaskExecutor.
    Deploying,
    /// The TaskExecutor is setting it up.
    Initializing,
    /// Processing.
    Running,
    /// Ended after all input.
    Finished,
    /// Being canceled.
    Canceling,
    /// Canceled.
    Canceled,
    /// Failed.
    Failed,
}

impl ExecutionState {
    /// Finished, Canceled or Failed.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecutionState::Finished | ExecutionState::Canceled | ExecutionState::Failed
        )
    }

    /// Upper-case name, as Flink prints it.
    pub fn name(self) -> &'static str {
        match self {
            ExecutionState::Created => "CREATED",
            ExecutionState::Scheduled => "SCHEDULED",
            ExecutionState::Deploying => "DEPLOYING",
            ExecutionState::Initializing => "INITIALIZING",
            ExecutionState::Running => "RUNNING",
            ExecutionState::Finished => "FINISHED",
            ExecutionState::Canceling => "CANCELING",
            ExecutionState::Canceled => "CANCELED",
            ExecutionState::Failed => "FAILED",
        }
    }
}

impl fmt::Display for ExecutionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A job's status (DESIGN §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum JobStatus {
    /// The JobMaster is starting.
    Initializing,
    /// Waiting for slots.
    Created,
    /// Tasks deployed or running.
    Running,
    /// Failing: canceling tasks before FAILED.
    Failing,
    /// Failed for good.
    Failed,
    /// Canceling tasks before CANCELED.
    Cancelling,
    /// Canceled by a user.
    Canceled,
    /// All tasks finished.
    Finished,
    /// Restarting after a failure.
    Restarting,
    /// Stopped without a final result (the JobManager went away).
    Suspended,
}

impl JobStatus {
    /// Failed, Canceled, Finished or Suspended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Failed | JobStatus::Canceled | JobStatus::Finished | JobStatus::Suspended
        )
    }

    /// Upper-case name, as Flink prints it.
    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Initializing => "INITIALIZING",
            JobStatus::Created => "CREATED",
            JobStatus::Running => "RUNNING",
            JobStatus::Failing => "FAILING",
            JobStatus::Failed => "FAILED",
            JobStatus::Cancelling => "CANCELLING",
            JobStatus::Canceled => "CANCELED",
            JobStatus::Finished => "FINISHED",
            JobStatus::Restarting => "RESTARTING",
            JobStatus::Suspended => "SUSPENDED",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A task's state change, reported by its TaskExecutor to the JobMaster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskExecutionStateUpdate {
    /// The attempt.
    pub execution: ExecutionAttemptId,
    /// Its new state.
    pub state: ExecutionState,
    /// Why it failed, for `Failed`.
    pub error: Option<String>,
    /// The task's counters at the time of the update.
    pub io: TaskIoCounters,
    /// For `Finished` with a final snapshot configured: what the task wrote.
    pub final_snapshot: Option<FinalSnapshotReport>,
    /// For `Failed`: the error is only the consequence of another failure (a producer's
    /// partition this task reads was released or is gone), so the root cause, when it
    /// arrives, replaces it as the job's reported failure. Absent (false) from senders
    /// that predate it.
    #[serde(default)]
    pub knock_on: bool,
}

/// Records and bytes a task moved, reported in TaskExecutor → JobMaster heartbeats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskIoCounters {
    /// Records read from the input gate.
    pub records_in: u64,
    /// Records written to output partitions (or sinks).
    pub records_out: u64,
    /// Bytes read from the input gate. Absent (0) from senders that predate it, as are
    /// the fields below.
    #[serde(default)]
    pub bytes_in: u64,
    /// Bytes written to output partitions.
    #[serde(default)]
    pub bytes_out: u64,
    /// Milliseconds spent waiting for an output buffer, since the task started.
    #[serde(default)]
    pub back_pressured_ms: u64,
    /// Milliseconds spent waiting for input, since the task started.
    #[serde(default)]
    pub idle_ms: u64,
    /// Milliseconds neither idle nor backpressured, since the task started.
    #[serde(default)]
    pub busy_ms: u64,
    /// The task's `currentInputWatermark` (ms), if it has one yet.
    #[serde(default)]
    pub input_watermark: Option<i64>,
    /// Buffers of its input gate's pools in use (`inPoolUsage`).
    #[serde(default)]
    pub in_pool: PoolUsage,
    /// Buffers of its output partitions' pools in use (`outPoolUsage`).
    #[serde(default)]
    pub out_pool: PoolUsage,
}

/// Buffers in use out of a set of buffer pools' entitlements, at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUsage {
    /// Buffers handed out and not yet returned.
    pub used: u64,
    /// The pools' current sizes, summed.
    pub size: u64,
}

impl PoolUsage {
    /// `used / size` in [0, 1] (Flink's `inPoolUsage` / `outPoolUsage`); 0 for no pool.
    pub fn ratio(&self) -> f64 {
        if self.size == 0 {
            0.0
        } else {
            (self.used as f64 / self.size as f64).min(1.0)
        }
    }
}

/// The payload of a TaskExecutor's heartbeat to a JobMaster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskExecutorToJobManagerHeartbeat {
    /// Counters of this job's running tasks on that TaskExecutor.
    pub tasks: Vec<(ExecutionAttemptId, TaskIoCounters)>,
}

/// One line of `rill list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOverview {
    /// The job.
    pub job: JobId,
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: JobStatus,
    /// Milliseconds since the Unix epoch when it was submitted.
    pub start_time_ms: u64,
    /// How long it ran (until now, or until it ended), in milliseconds.
    pub duration_ms: u64,
}

/// One vertex in [`JobDetails`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VertexDetails {
    /// The vertex.
    pub vertex: VertexId,
    /// Its name (its operators' names joined).
    pub name: String,
    /// Its parallelism.
    pub parallelism: u32,
    /// Number of subtasks in each state.
    pub states: BTreeMap<ExecutionState, u32>,
    /// Records in, summed over the vertex's subtasks (last heartbeat).
    pub records_in: u64,
    /// Records out, summed over the vertex's subtasks (last heartbeat).
    pub records_out: u64,
    /// Where each subtask runs (`None` while not deployed).
    pub locations: Vec<Option<ResourceId>>,
    /// Each subtask's current attempt number (0 until it is restarted).
    pub attempts: Vec<u32>,
    /// Each subtask's counters as of its last heartbeat (all 0 before the first one).
    #[serde(default)]
    pub subtasks: Vec<TaskIoCounters>,
    /// The edges entering it, in input order.
    #[serde(default)]
    pub inputs: Vec<VertexInput>,
}

/// An edge entering a vertex in [`VertexDetails`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VertexInput {
    /// The producing vertex.
    pub source: VertexId,
    /// How records are distributed, in Flink's ship-strategy names (`FORWARD`,
    /// `REBALANCE`, `RESCALE`, `HASH`, `BROADCAST`).
    pub ship_strategy: String,
}

/// `rill status`: a job and its vertices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDetails {
    /// Status, name, timing.
    pub overview: JobOverview,
    /// How many times it restarted.
    pub restarts: u32,
    /// The root cause of the last failure, if any.
    pub failure: Option<String>,
    /// Vertices in topological order.
    pub vertices: Vec<VertexDetails>,
    /// The final snapshot of a finished job, when `state.checkpoints.dir` is set.
    pub final_checkpoint: Option<FinalCheckpoint>,
    /// The job's most recent failures, oldest first, at most [`MAX_FAILURE_HISTORY`]
    /// (Flink's exception history): `rill run` prints each one as it appears.
    #[serde(default)]
    pub failures: Vec<JobFailure>,
    /// Checkpoints taken, and what a restart restored.
    #[serde(default)]
    pub checkpoints: CheckpointsSummary,
}

/// How many failures [`JobDetails::failures`] keeps.
pub const MAX_FAILURE_HISTORY: usize = 16;

/// One failure of a job and what the JobMaster did about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFailure {
    /// 1 for the job's first failure, 2 for the next, …; counts every failure handled,
    /// also those that no longer fit the history, so a client polling the history can
    /// tell which entries are new.
    pub number: u32,
    /// When it happened, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The root cause: which task (name, subtask/parallelism) failed and why, or which
    /// TaskExecutor was lost.
    pub cause: String,
    /// What followed.
    pub outcome: FailureOutcome,
}

/// What the JobMaster did after a [`JobFailure`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureOutcome {
    /// The job restarts after `delay_ms`; this is its `restart`-th restart (1-based).
    Restarting {
        /// The restart's number.
        restart: u32,
        /// The delay before redeploying, in milliseconds.
        delay_ms: u64,
    },
    /// The restart strategy allows no more restarts: the job fails.
    NoRestart {
        /// The strategy, as `restart-strategy …` with its parameters.
        strategy: String,
    },
    /// The job fails without asking the restart strategy (the cluster cannot run it:
    /// too few slots, collect results over `collect.max-bytes`, …).
    JobFailed,
}

impl fmt::Display for FailureOutcome {
    /// `restarting in 1.0 s (restart 1)`, `not restarting: <strategy>`, `job failed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureOutcome::Restarting { restart, delay_ms } => write!(
                f,
                "restarting in {:.1} s (restart {restart})",
                *delay_ms as f64 / 1000.0
            ),
            FailureOutcome::NoRestart { strategy } => write!(f, "not restarting: {strategy}"),
            FailureOutcome::JobFailed => f.write_str("job failed"),
        }
    }
}

/// A job's final result (Flink's `JobResult`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobResult {
    /// The job.
    pub job: JobId,
    /// Its terminal status.
    pub status: JobStatus,
    /// Why it failed, for `Failed`.
    pub failure: Option<String>,
    /// How long it ran, in milliseconds.
    pub duration_ms: u64,
    /// Values of its collect sinks, by collect id.
    pub collected: BTreeMap<String, Vec<Value>>,
}

/// One line of `rill taskmanagers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskManagerInfo {
    /// Who and where.
    pub location: TaskManagerLocation,
    /// Slots it has.
    pub slots_total: u32,
    /// Slots not allocated to any job.
    pub slots_free: u32,
    /// Milliseconds since its last heartbeat (or registration) reached the
    /// ResourceManager.
    #[serde(default)]
    pub since_heartbeat_ms: u64,
    /// Its process's resident memory as of its last heartbeat, bytes, if it reported one.
    #[serde(default)]
    pub process_rss_bytes: Option<u64>,
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
