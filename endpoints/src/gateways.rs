//! The four endpoints' gateways (DESIGN §3). Each is usable in-process and over QUIC.
//!
//! Endpoint names: the Dispatcher serves at [`DISPATCHER`], the ResourceManager at
//! [`RESOURCE_MANAGER`], each TaskExecutor at [`TASK_EXECUTOR`], and the JobMaster of job
//! `j` at [`job_master_name`]`(j)`, fenced by its `JobMasterId`.
//!
//! Heartbeat methods come in pairs per relation: the sender side calls
//! `request_heartbeat_*` on the receiver, which answers with `receive_heartbeat_*` on the
//! sender, each carrying the payload of that direction (see
//! [`rill_runtime::heartbeat`]).

use rill_dataflow::{JobGraph, JobId, Value};
use rill_runtime::{ResourceId, RpcAddress};

use crate::messages::*;

/// The Dispatcher's endpoint name.
pub const DISPATCHER: &str = "dispatcher";
/// The ResourceManager's endpoint name.
pub const RESOURCE_MANAGER: &str = "resourcemanager";
/// A TaskExecutor's endpoint name.
pub const TASK_EXECUTOR: &str = "taskexecutor";

/// The endpoint name of `job`'s JobMaster.
pub fn job_master_name(job: JobId) -> String {
    format!("jobmaster-{job}")
}

rill_runtime::gateway! {
    /// The Dispatcher: what clients and admin tools call.
    pub mod dispatcher("rill.dispatcher") {
        /// Submits a job; answers its id once a JobMaster runs it.
        fn submit_job(job: JobGraph) -> ClusterResult<JobId>;
        /// All jobs, running and finished, oldest first.
        fn list_jobs() -> Vec<JobOverview>;
        /// A job's status.
        fn job_status(job: JobId) -> ClusterResult<JobStatus>;
        /// A job's details: status, vertices, counters, failure cause.
        fn job_details(job: JobId) -> ClusterResult<JobDetails>;
        /// Cancels a job; answers once cancellation started.
        fn cancel_job(job: JobId) -> ClusterResult<()>;
        /// A finished job's result; `JobNotTerminal` while it still runs.
        fn request_job_result(job: JobId) -> ClusterResult<JobResult>;
        /// The registered TaskExecutors and their slots.
        fn list_task_managers() -> ClusterResult<Vec<TaskManagerInfo>>;
        /// Starts a checkpoint now; answers its id (poll [`snapshot_status`]).
        fn trigger_checkpoint(job: JobId) -> ClusterResult<u64>;
        /// Starts a savepoint (or stop-with-savepoint); answers its id (poll
        /// [`snapshot_status`]).
        fn trigger_savepoint(job: JobId, request: SavepointRequest) -> ClusterResult<u64>;
        /// Where checkpoint or savepoint `id` of `job` stands (also after the job ended).
        fn snapshot_status(job: JobId, id: u64) -> ClusterResult<SnapshotStatus>;
        /// A JobMaster reports its job's new status (internal).
        fn job_status_changed(job: JobId, status: JobStatus);
        /// A JobMaster reports its job's end (internal).
        fn job_reached_terminal_state(result: JobResult, details: JobDetails);
    }
}

rill_runtime::gateway! {
    /// The ResourceManager: TaskExecutor and JobMaster registration, slot matching.
    pub mod resource_manager("rill.resourcemanager") {
        /// Registers a TaskExecutor with its slots.
        fn register_task_executor(registration: TaskExecutorRegistration) -> RegistrationResponse;
        /// A TaskExecutor says goodbye (orderly shutdown).
        fn disconnect_task_executor(task_executor: ResourceId, reason: String);
        /// A TaskExecutor freed a slot.
        fn notify_slot_available(task_executor: ResourceId, slot_index: u32, allocation: AllocationId);
        /// A TaskExecutor answers a heartbeat request with its slot report.
        fn receive_heartbeat_from_task_executor(from: ResourceId, report: SlotReport);
        /// Registers the JobMaster of `job`.
        fn register_job_master(job: JobId, job_master_id: u128, address: RpcAddress, resource: ResourceId) -> ClusterResult<ResourceId>;
        /// A JobMaster declares how many slots its job needs in total.
        fn declare_required_resources(job: JobId, job_master_id: u128, slots: u32);
        /// A JobMaster is done: its requirements go away.
        fn disconnect_job_master(job: JobId, job_master_id: u128, reason: String);
        /// A JobMaster answers a heartbeat request.
        fn receive_heartbeat_from_job_master(from: ResourceId);
        /// The registered TaskExecutors.
        fn list_task_managers() -> Vec<TaskManagerInfo>;
    }
}

rill_runtime::gateway! {
    /// A JobMaster, fenced by its `JobMasterId`.
    pub mod job_master("rill.jobmaster") {
        /// A TaskExecutor that got a slot for this job connects.
        fn register_task_manager(location: TaskManagerLocation) -> ClusterResult<ResourceId>;
        /// A TaskExecutor offers slots; answers the accepted ones.
        fn offer_slots(from: ResourceId, offers: Vec<SlotOffer>) -> ClusterResult<Vec<SlotOffer>>;
        /// A task changed state.
        fn update_task_execution_state(update: TaskExecutionStateUpdate);
        /// Values from a collect sink's subtask, sent by its execution attempt.
        fn collect(execution: ExecutionAttemptId, id: String, subtask: u32, values: Vec<Value>);
        /// A TaskExecutor answers a heartbeat request with its tasks' counters.
        fn receive_heartbeat_from_task_executor(from: ResourceId, payload: TaskExecutorToJobManagerHeartbeat);
        /// The ResourceManager asks for a heartbeat.
        fn request_heartbeat_from_resource_manager(from: ResourceId);
        /// A TaskExecutor disconnects (shutdown, or it lost this JobMaster).
        fn disconnect_task_manager(from: ResourceId, reason: String);
        /// A task wrote its part of checkpoint `checkpoint_id`.
        fn acknowledge_checkpoint(execution: ExecutionAttemptId, checkpoint_id: u64, ack: CheckpointAck);
        /// A task cannot take checkpoint `checkpoint_id`.
        fn decline_checkpoint(execution: ExecutionAttemptId, checkpoint_id: u64, reason: rill_dataflow::checkpoint::DeclineReason);
        /// A task's input ended; it waits for the job's final checkpoint.
        fn task_input_ended(execution: ExecutionAttemptId);
        /// The job's status.
        fn job_status() -> JobStatus;
        /// The job's details.
        fn job_details() -> JobDetails;
        /// Starts a checkpoint now; answers its id.
        fn trigger_checkpoint() -> ClusterResult<u64>;
        /// Starts a savepoint (or stop-with-savepoint); answers its id.
        fn trigger_savepoint(request: SavepointRequest) -> ClusterResult<u64>;
        /// Where checkpoint or savepoint `id` stands.
        fn snapshot_status(id: u64) -> ClusterResult<SnapshotStatus>;
        /// Cancels the job.
        fn cancel() -> ClusterResult<()>;
    }
}

rill_runtime::gateway! {
    /// A TaskExecutor.
    pub mod task_executor("rill.taskexecutor") {
        /// The ResourceManager allocates a slot to a job.
        fn request_slot(request: SlotRequest) -> ClusterResult<()>;
        /// A JobMaster deploys a task into one of its slots.
        fn submit_task(tdd: TaskDeploymentDescriptor, job_master_id: u128) -> ClusterResult<()>;
        /// A JobMaster cancels a task.
        fn cancel_task(execution: ExecutionAttemptId) -> ClusterResult<()>;
        /// A JobMaster starts a checkpoint (or savepoint) at a source task, or at a task
        /// whose input has ended.
        fn trigger_checkpoint(execution: ExecutionAttemptId, checkpoint_id: u64, timestamp_ms: i64, savepoint: bool);
        /// Stop-with-savepoint: a source task stops reading (`drain`: flushing the
        /// pipeline first).
        fn stop_source(execution: ExecutionAttemptId, drain: bool);
        /// Checkpoint `checkpoint_id` of `job` completed (`last`: the job's final one).
        fn notify_checkpoint_complete(job: JobId, checkpoint_id: u64, last: bool);
        /// Checkpoint `checkpoint_id` of `job` was aborted.
        fn notify_checkpoint_aborted(job: JobId, checkpoint_id: u64);
        /// A JobMaster gives back a slot.
        fn free_slot(allocation: AllocationId, reason: String);
        /// A JobMaster is done with this TaskExecutor for `job`.
        fn disconnect_job_master(job: JobId, reason: String);
        /// The ResourceManager asks for a heartbeat.
        fn request_heartbeat_from_resource_manager(from: ResourceId);
        /// A JobMaster asks for a heartbeat.
        fn request_heartbeat_from_job_master(from: ResourceId);
    }
}
