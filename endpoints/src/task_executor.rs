//! The TaskExecutor (DESIGN §3): a slot table, the process's network environment, and
//! one [`StreamTask`] thread per deployed subtask.
//!
//! # Life of a slot
//!
//! 1. The TaskExecutor registers at the ResourceManager (retrying with backoff) with a
//!    slot report; from then on the ResourceManager requests heartbeats, answered with
//!    the current slot report.
//! 2. The ResourceManager calls `request_slot`: the slot is allocated to the job, the
//!    TaskExecutor connects to the job's JobMaster (fenced by its id), registers there,
//!    and offers the slot. Rejected offers free the slot again.
//! 3. The JobMaster calls `submit_task`: the task's output partitions and input gate are
//!    created at once (so producers deployed earlier are visible to local consumers
//!    deployed later, see [`rill_dataflow::network_io`]) and the task starts on its own
//!    thread. State changes go to the JobMaster; collect-sink values too, through this
//!    endpoint's mailbox so they arrive before the task's FINISHED update.
//! 4. `free_slot` (or the JobMaster's disconnect) cancels the slot's tasks, releases
//!    their partitions and tells the ResourceManager the slot is free.
//!
//! # Failures
//!
//! Losing the ResourceManager (heartbeat) closes the connection to its process and
//! starts registration again at once, so a JobManager restarted at the same address is
//! found as soon as it answers; slots stay as they are and the next slot report tells
//! the new ResourceManager. Losing a JobMaster fails
//! that job's tasks and frees its slots at once. Flink keeps them allocated for a while
//! so a recovering JobMaster can take them back; rill's JobMasters do not survive their
//! JobManager yet, so there is nothing to wait for.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rill_dataflow::barrier_handler::BarrierMode;
use rill_dataflow::checkpoint::{
    Alignment, CheckpointBarrier, CheckpointKind, CheckpointOptions, CheckpointResponder,
    TaskCheckpointStats, TaskCheckpointing,
};
use rill_dataflow::network_io::{create_task_io, ChannelLocation, InputChannelSpec, OutputSpec};
use rill_dataflow::state::{OperatorSubtaskSnapshot, TaskRestore};
use rill_dataflow::{
    CollectSink, JobGraph, JobId, Mail, OperatorRegistry, StateConfig, StreamTask, TaskConfig,
    TaskEnvironment, TaskHandle, TaskOutcome, Value,
};
use rill_network::{NetworkEnvironment, PartitionId, TaskIoMetrics};
use rill_runtime::heartbeat::{HeartbeatManager, HeartbeatRole};
use rill_runtime::registration::{RegistrationAttempt, RetryingRegistration};
use rill_runtime::{
    EndpointContext, EndpointHandle, FencingToken, Reply, ResourceId, RpcAddress, RpcEndpoint,
    RpcService,
};
use rill_state::format::read_metadata;
use rill_state::storage::{CheckpointLayout, CheckpointStorage, FsCheckpointStorage};
use rill_state::{SnapshotKind, SnapshotTarget};

use crate::config::RillConfig;
use crate::gateways::{job_master, resource_manager, task_executor};
use crate::heartbeats::{start_heartbeats, TellTarget};
use crate::messages::*;
use crate::rest::prometheus::ProcessSample;

/// What a TaskExecutor is started with.
#[derive(Clone)]
pub struct TaskExecutorServices {
    /// The process's RPC service.
    pub rpc: RpcService,
    /// The process's data plane, transport started.
    pub network: Arc<NetworkEnvironment>,
    /// Where the data plane listens.
    pub data_address: SocketAddr,
    /// Operators this binary knows.
    pub registry: Arc<OperatorRegistry>,
    /// Configuration.
    pub config: RillConfig,
    /// This TaskExecutor's id.
    pub resource_id: ResourceId,
    /// The ResourceManager to register at.
    pub resource_manager: RpcAddress,
    /// Read even same-process partitions over QUIC (tests of the wire).
    pub force_remote_data: bool,
    /// Where the TaskManager's Prometheus endpoint listens, told to the cluster in its
    /// [`TaskManagerLocation`].
    pub metrics_address: Option<SocketAddr>,
}

struct SlotAllocation {
    job: JobId,
    allocation: AllocationId,
    offered: bool,
}

struct JobConnection {
    address: RpcAddress,
    job_master_id: u128,
    /// Set once registered at the JobMaster.
    gateway: Option<job_master::Gateway>,
    job_master_resource: Option<ResourceId>,
}

struct RunningTask {
    job: JobId,
    allocation: AllocationId,
    handle: TaskHandle,
    /// The task's output partitions.
    partitions: Vec<PartitionId>,
    /// Cancellation was requested: a failure while it takes effect (e.g. an upstream
    /// partition released by the same cancellation) is reported as CANCELED.
    cancel_requested: bool,
    /// How the job's barriers align (`execution.checkpointing.mode`).
    alignment: Alignment,
}

/// A running task's I/O metrics, when it started (its busy time is the rest of its
/// running time) and who it is: what heartbeats to the JobMaster report and the
/// TaskManager's Prometheus endpoint shows.
#[derive(Clone)]
pub struct RunningTaskMetrics {
    /// When the task started.
    pub started: Instant,
    /// Its counters, updated by the task.
    pub metrics: Arc<TaskIoMetrics>,
    /// Its job.
    pub job: JobId,
    /// Its job's name.
    pub job_name: String,
    /// Its vertex's name.
    pub task_name: String,
    /// Its subtask index.
    pub subtask: u32,
}

impl RunningTaskMetrics {
    /// Its cumulative figures as of `now`.
    pub fn counters(&self, now: Instant) -> TaskIoCounters {
        io_counters(&self.metrics, self.started, now)
    }
}

/// Each running task's metrics by attempt, shared with the TaskManager's metrics
/// endpoint ([`TaskExecutor::task_metrics`]).
pub type TaskCounters = Arc<Mutex<BTreeMap<ExecutionAttemptId, RunningTaskMetrics>>>;

/// The figures of `m` reported to the JobMaster, for a task started at `started`.
fn io_counters(m: &TaskIoMetrics, started: Instant, now: Instant) -> TaskIoCounters {
    let s = m.snapshot(Duration::ZERO);
    let ms = |nanos: u64| nanos / 1_000_000;
    let (back_pressured_ms, idle_ms) = (ms(s.back_pressured_nanos), ms(s.idle_nanos));
    let running_ms = now.saturating_duration_since(started).as_millis() as u64;
    TaskIoCounters {
        records_in: s.records_in,
        records_out: s.records_out,
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        back_pressured_ms,
        idle_ms,
        busy_ms: running_ms.saturating_sub(back_pressured_ms + idle_ms),
        input_watermark: m.input_watermark(),
        in_pool: pool_usage(m.in_pool_usage()),
        out_pool: pool_usage(m.out_pool_usage()),
    }
}

fn pool_usage(u: rill_network::metrics::BufferUsage) -> PoolUsage {
    PoolUsage {
        used: u.used as u64,
        size: u.size as u64,
    }
}

/// The TaskExecutor endpoint.
pub struct TaskExecutor {
    s: TaskExecutorServices,
    location: TaskManagerLocation,
    slots: Vec<Option<SlotAllocation>>,
    slot_report: Arc<Mutex<SlotReport>>,
    resource_manager: Option<(resource_manager::Gateway, ResourceId)>,
    registration_epoch: u64,
    jobs: BTreeMap<JobId, JobConnection>,
    tasks: BTreeMap<ExecutionAttemptId, RunningTask>,
    partitions: BTreeMap<AllocationId, Vec<PartitionId>>,
    counters: TaskCounters,
    heartbeat_rm: Option<HeartbeatManager<(), SlotReport>>,
    heartbeat_jm: Option<HeartbeatManager<(), TaskExecutorToJobManagerHeartbeat>>,
}

impl TaskExecutor {
    /// A TaskExecutor with `config.taskmanager.number-of-task-slots` free slots.
    pub fn new(services: TaskExecutorServices) -> Self {
        let slots = services.config.taskmanager.number_of_task_slots as usize;
        let location = TaskManagerLocation {
            resource_id: services.resource_id.clone(),
            rpc_address: services.rpc.address_of(crate::gateways::TASK_EXECUTOR),
            data_address: services.data_address,
            metrics_address: services.metrics_address,
        };
        let mut te = TaskExecutor {
            s: services,
            location,
            slots: (0..slots).map(|_| None).collect(),
            slot_report: Arc::default(),
            resource_manager: None,
            registration_epoch: 0,
            jobs: BTreeMap::new(),
            tasks: BTreeMap::new(),
            partitions: BTreeMap::new(),
            counters: Arc::default(),
            heartbeat_rm: None,
            heartbeat_jm: None,
        };
        te.update_slot_report();
        te
    }

    /// Its running tasks' metrics, shared: for the TaskManager's metrics endpoint.
    pub fn task_metrics(&self) -> TaskCounters {
        self.counters.clone()
    }

    fn update_slot_report(&mut self) {
        let report = SlotReport {
            slots: self
                .slots
                .iter()
                .enumerate()
                .map(|(i, s)| SlotStatus {
                    slot: SlotId {
                        task_executor: self.s.resource_id.clone(),
                        index: i as u32,
                    },
                    allocation: s.as_ref().map(|a| (a.job, a.allocation)),
                })
                .collect(),
            process_rss_bytes: None,
        };
        *self.slot_report.lock() = report;
    }

    fn register_at_resource_manager(&mut self, ctx: &mut EndpointContext<'_, Self>) {
        self.registration_epoch += 1;
        let epoch = self.registration_epoch;
        let rpc = self.s.rpc.clone();
        let address = self.s.resource_manager.clone();
        let registration = TaskExecutorRegistration {
            location: self.location.clone(),
            slot_report: self.slot_report.lock().clone(),
        };
        let retrying = RetryingRegistration::new(
            format!("ResourceManager at {address}"),
            &self.s.config.cluster.registration,
        );
        let handle = ctx.handle();
        ctx.spawn(async move {
            let (gateway, rm) = retrying
                .run(|timeout| {
                    let rpc = rpc.clone();
                    let address = address.clone();
                    let registration = registration.clone();
                    async move {
                        let gw: resource_manager::Gateway = match rpc.connect(&address).await {
                            Ok(gw) => gw,
                            Err(e) => return RegistrationAttempt::Error(e),
                        };
                        match gw
                            .with_timeout(timeout)
                            .register_task_executor(registration)
                            .await
                        {
                            Ok(RegistrationResponse::Success { resource_manager }) => {
                                RegistrationAttempt::Success((gw, resource_manager))
                            }
                            Ok(RegistrationResponse::Refused(reason)) => {
                                RegistrationAttempt::Refused(reason)
                            }
                            Err(e) => RegistrationAttempt::Error(e),
                        }
                    }
                })
                .await;
            handle.run_async(move |te, _| te.registered(epoch, gateway, rm));
        });
    }

    fn registered(&mut self, epoch: u64, gateway: resource_manager::Gateway, rm: ResourceId) {
        if epoch != self.registration_epoch {
            return;
        }
        tracing::info!(resource_manager = %rm, task_executor = %self.s.resource_id, "registered at the ResourceManager");
        if let Some(hb) = &self.heartbeat_rm {
            let gw = gateway.clone();
            hb.monitor_target(
                rm.clone(),
                TellTarget::answerer(move |from, report| {
                    gw.receive_heartbeat_from_task_executor(from, report)
                }),
            );
        }
        self.resource_manager = Some((gateway, rm));
    }

    fn resource_manager_lost(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        rm: ResourceId,
        reason: String,
    ) {
        if self.resource_manager.as_ref().map(|(_, id)| id) != Some(&rm) {
            return;
        }
        tracing::warn!(%reason, "lost the ResourceManager; registering again");
        if let Some((gateway, _)) = self.resource_manager.take() {
            // Registering again must dial afresh: a restarted JobManager at the same
            // address cannot answer on the lost process's connection, which would look
            // open until its idle timeout.
            gateway.close_connection(&reason);
        }
        self.register_at_resource_manager(ctx);
    }

    fn job_master_lost(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        jm: ResourceId,
        reason: String,
    ) {
        let jobs: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, c)| c.job_master_resource.as_ref() == Some(&jm))
            .map(|(j, _)| *j)
            .collect();
        for job in jobs {
            tracing::warn!(%job, %reason, "lost the JobMaster; failing the job's tasks and freeing its slots");
            self.release_job(job, &format!("JobMaster lost: {reason}"));
        }
    }

    /// Frees every slot of `job` and forgets its JobMaster.
    fn release_job(&mut self, job: JobId, reason: &str) {
        let allocations: Vec<AllocationId> = self
            .slots
            .iter()
            .flatten()
            .filter(|a| a.job == job)
            .map(|a| a.allocation)
            .collect();
        for allocation in allocations {
            self.free_slot_internal(allocation, reason);
        }
        self.forget_job_if_unused(job);
    }

    fn forget_job_if_unused(&mut self, job: JobId) {
        if self.slots.iter().flatten().any(|a| a.job == job) {
            return;
        }
        if let Some(conn) = self.jobs.remove(&job) {
            if let (Some(hb), Some(jm)) = (&self.heartbeat_jm, conn.job_master_resource) {
                // Another job may share the JobMaster's resource id only if it is the
                // same JobMaster; ids are per JobMaster, so unmonitoring is safe.
                hb.unmonitor_target(jm);
            }
        }
    }

    fn free_slot_internal(&mut self, allocation: AllocationId, reason: &str) {
        let Some(index) = self
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|a| a.allocation == allocation))
        else {
            return;
        };
        for task in self
            .tasks
            .values_mut()
            .filter(|t| t.allocation == allocation)
        {
            task.cancel_requested = true;
            task.handle.cancel();
        }
        for p in self.partitions.remove(&allocation).unwrap_or_default() {
            self.s.network.release_partition(p);
        }
        let job = self.slots[index].take().map(|a| a.job);
        self.update_slot_report();
        tracing::debug!(slot = index, %allocation, ?job, reason, "slot freed");
        if let Some((rm, _)) = &self.resource_manager {
            let _ = rm.notify_slot_available(self.s.resource_id.clone(), index as u32, allocation);
        }
    }

    fn connect_job_master(&mut self, ctx: &mut EndpointContext<'_, Self>, job: JobId) {
        let Some(conn) = self.jobs.get(&job) else {
            return;
        };
        let rpc = self.s.rpc.clone();
        let address = conn.address.clone();
        let token = conn.job_master_id;
        let location = self.location.clone();
        let handle = ctx.handle();
        ctx.spawn(async move {
            let result = async {
                let gw: job_master::Gateway =
                    rpc.connect(&address).await.map_err(|e| e.to_string())?;
                let gw = gw.with_fencing_token(FencingToken(token));
                let jm = gw
                    .register_task_manager(location)
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>((gw, jm))
            }
            .await;
            handle.run_async(move |te, ctx| te.job_master_connected(ctx, job, token, result));
        });
    }

    fn job_master_connected(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        job: JobId,
        token: u128,
        result: Result<(job_master::Gateway, ResourceId), String>,
    ) {
        match self.jobs.get_mut(&job) {
            Some(conn) if conn.job_master_id == token => match result {
                Ok((gw, jm)) => {
                    if let Some(hb) = &self.heartbeat_jm {
                        let g = gw.clone();
                        hb.monitor_target(
                            jm.clone(),
                            TellTarget::answerer(move |from, payload| {
                                g.receive_heartbeat_from_task_executor(from, payload)
                            }),
                        );
                    }
                    conn.gateway = Some(gw);
                    conn.job_master_resource = Some(jm);
                    self.offer_slots(ctx, job);
                }
                Err(e) => {
                    tracing::warn!(%job, error = %e, "cannot connect to the JobMaster; freeing the job's slots");
                    self.release_job(job, &format!("cannot connect to the JobMaster: {e}"));
                }
            },
            _ => {}
        }
    }

    fn offer_slots(&mut self, ctx: &mut EndpointContext<'_, Self>, job: JobId) {
        let Some(gw) = self.jobs.get(&job).and_then(|c| c.gateway.clone()) else {
            return;
        };
        let mut offers = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(a) = slot.as_mut().filter(|a| a.job == job && !a.offered) {
                a.offered = true;
                offers.push(SlotOffer {
                    allocation: a.allocation,
                    slot_index: i as u32,
                });
            }
        }
        if offers.is_empty() {
            return;
        }
        let me = self.s.resource_id.clone();
        let handle = ctx.handle();
        ctx.spawn(async move {
            let answer = gw.offer_slots(me, offers.clone()).await;
            handle.run_async(move |te, _| {
                let accepted = match answer {
                    Ok(Ok(accepted)) => accepted,
                    Ok(Err(e)) => {
                        tracing::warn!(%job, error = %e, "JobMaster refused the slot offer");
                        Vec::new()
                    }
                    Err(e) => {
                        tracing::warn!(%job, error = %e, "slot offer failed");
                        Vec::new()
                    }
                };
                for offer in offers {
                    if !accepted.contains(&offer) {
                        te.free_slot_internal(offer.allocation, "offer rejected by the JobMaster");
                    }
                }
                te.forget_job_if_unused(job);
            });
        });
    }

    fn deploy(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        tdd: TaskDeploymentDescriptor,
        job_master_id: u128,
    ) -> ClusterResult<()> {
        let conn = self
            .jobs
            .get(&tdd.job)
            .filter(|c| c.job_master_id == job_master_id)
            .ok_or_else(|| {
                ClusterError::Rejected(format!(
                    "TaskExecutor {} has no slot for job {} of this JobMaster",
                    self.s.resource_id, tdd.job
                ))
            })?;
        let gateway = conn.gateway.clone().ok_or_else(|| {
            ClusterError::Rejected("the JobMaster has not registered this TaskExecutor yet".into())
        })?;
        if !self
            .slots
            .iter()
            .flatten()
            .any(|a| a.allocation == tdd.allocation && a.job == tdd.job)
        {
            return Err(ClusterError::Rejected(format!(
                "allocation {} is not active on TaskExecutor {}",
                tdd.allocation, self.s.resource_id
            )));
        }
        if self.tasks.contains_key(&tdd.execution) {
            return Err(ClusterError::Rejected(format!(
                "execution {} is already running",
                tdd.execution
            )));
        }
        let job = JobGraph::from_bytes(&tdd.job_graph)
            .map_err(|e| ClusterError::InvalidJob(e.to_string()))?;
        job.validate(&self.s.registry)
            .map_err(|e| ClusterError::InvalidJob(e.to_string()))?;
        let job = Arc::new(job);
        let job_name = job.name.clone();
        let task_name = job
            .vertex(tdd.vertex)
            .map(|v| v.name.clone())
            .unwrap_or_default();
        let me = &self.s.resource_id;
        let inputs = tdd
            .inputs
            .iter()
            .map(|i| InputChannelSpec {
                partition: i.partition,
                subpartition: i.subpartition,
                location: if &i.producer == me && !self.s.force_remote_data {
                    ChannelLocation::Local
                } else {
                    ChannelLocation::Remote(i.producer_data_address)
                },
            })
            .collect();
        let outputs: Vec<OutputSpec> = tdd
            .output_partitions
            .iter()
            .map(|p| OutputSpec { partition: *p })
            .collect();
        let task_config = TaskConfig {
            buffer_timeout: match self.s.config.taskmanager.network.buffer_timeout {
                rill_network::BufferTimeout::Interval(d) => d,
                rill_network::BufferTimeout::EveryRecord => std::time::Duration::ZERO,
                rill_network::BufferTimeout::Never => std::time::Duration::from_secs(3600),
            },
            state: StateConfig {
                backend: tdd.state_backend,
                incremental: tdd.incremental,
                checkpoints_dir: tdd
                    .final_snapshot
                    .as_ref()
                    .map(|f| f.checkpoints_dir.clone())
                    .or_else(|| {
                        tdd.checkpointing
                            .as_ref()
                            .map(|c| c.checkpoints_dir.clone())
                    }),
                ..self.s.config.state()
            },
            final_snapshot: match &tdd.final_snapshot {
                None => None,
                Some(spec) => Some(final_snapshot_target(tdd.job, spec)?),
            },
            checkpointing: match &tdd.checkpointing {
                None => None,
                Some(spec) => Some(task_checkpointing(
                    tdd.job,
                    spec,
                    Arc::new(CheckpointForwarder {
                        handle: ctx.handle(),
                        job: tdd.job,
                        execution: tdd.execution,
                    }),
                )?),
            },
            restore: match &tdd.restore_from {
                None => None,
                Some(dir) => Some(task_restore(dir)?),
            },
            ..TaskConfig::default()
        };
        let io = create_task_io(
            &self.s.network,
            &job,
            tdd.vertex,
            tdd.subtask,
            &outputs,
            inputs,
            &task_config,
        )
        .map_err(|e| ClusterError::Rejected(format!("cannot set up the task's I/O: {e}")))?;
        self.partitions
            .entry(tdd.allocation)
            .or_default()
            .extend(io.partitions.iter().copied());
        let env = TaskEnvironment {
            registry: self.s.registry.clone(),
            collect: Some(Arc::new(CollectForwarder {
                handle: ctx.handle(),
                job: tdd.job,
                execution: tdd.execution,
            })),
            config: task_config,
        };
        let release = |te: &mut Self| {
            for p in &io.partitions {
                te.s.network.release_partition(*p);
            }
        };
        let task = match StreamTask::new(job, tdd.vertex, tdd.subtask, env, io.input, io.outputs) {
            Ok(t) => t,
            Err(e) => {
                release(self);
                return Err(ClusterError::Rejected(format!(
                    "cannot create the task: {e}"
                )));
            }
        };
        let execution = tdd.execution;
        let wants_snapshot = tdd.final_snapshot.is_some();
        let handle = ctx.handle();
        let spawned = task.spawn(move |outcome| {
            let (state, error, snapshot, knock_on) = match outcome {
                TaskOutcome::Finished(parts) => (
                    ExecutionState::Finished,
                    None,
                    wants_snapshot.then(|| match parts {
                        Ok(parts) => FinalSnapshotReport::Written(parts.clone()),
                        Err(e) => FinalSnapshotReport::Failed(e.to_string()),
                    }),
                    false,
                ),
                TaskOutcome::Canceled => (ExecutionState::Canceled, None, None, false),
                TaskOutcome::Failed(e) => (
                    ExecutionState::Failed,
                    Some(e.to_string()),
                    None,
                    crate::job_master::failover::is_knock_on_error(e),
                ),
            };
            handle.run_async(move |te, _| {
                te.task_exited(execution, state, error, snapshot, knock_on)
            });
        });
        let handle = match spawned {
            Ok(h) => h,
            Err(e) => {
                release(self);
                return Err(ClusterError::Rejected(format!(
                    "cannot start the task thread: {e}"
                )));
            }
        };
        self.counters.lock().insert(
            execution,
            RunningTaskMetrics {
                started: Instant::now(),
                metrics: io.metrics.clone(),
                job: tdd.job,
                job_name,
                task_name,
                subtask: tdd.subtask,
            },
        );
        self.tasks.insert(
            execution,
            RunningTask {
                job: tdd.job,
                allocation: tdd.allocation,
                handle,
                partitions: io.partitions.clone(),
                cancel_requested: false,
                alignment: match &tdd.checkpointing {
                    Some(c) if !c.exactly_once => Alignment::AtLeastOnce,
                    Some(c) if c.unaligned => Alignment::Unaligned,
                    _ => Alignment::Aligned,
                },
            },
        );
        let _ = gateway.update_task_execution_state(TaskExecutionStateUpdate {
            execution,
            state: ExecutionState::Running,
            error: None,
            io: TaskIoCounters::default(),
            final_snapshot: None,
            knock_on: false,
        });
        Ok(())
    }

    fn task_exited(
        &mut self,
        execution: ExecutionAttemptId,
        state: ExecutionState,
        error: Option<String>,
        final_snapshot: Option<FinalSnapshotReport>,
        knock_on: bool,
    ) {
        let Some(task) = self.tasks.remove(&execution) else {
            return;
        };
        let (state, error, knock_on) = match state {
            ExecutionState::Failed if task.cancel_requested => {
                (ExecutionState::Canceled, None, false)
            }
            other => (other, error, knock_on),
        };
        let io = self
            .counters
            .lock()
            .remove(&execution)
            .map(|t| t.counters(Instant::now()))
            .unwrap_or_default();
        tracing::info!(%execution, %state, error = error.as_deref().unwrap_or(""), "task ended");
        if let Some(gw) = self.jobs.get(&task.job).and_then(|c| c.gateway.as_ref()) {
            let _ = gw.update_task_execution_state(TaskExecutionStateUpdate {
                execution,
                state,
                error,
                io,
                final_snapshot,
                knock_on,
            });
        }
    }

    fn forward_collect(
        &mut self,
        job: JobId,
        execution: ExecutionAttemptId,
        id: String,
        subtask: u32,
        values: Vec<Value>,
    ) {
        if let Some(gw) = self.jobs.get(&job).and_then(|c| c.gateway.as_ref()) {
            let _ = gw.collect(execution, id, subtask, values);
        }
    }

    fn heartbeat_payload(counters: &TaskCounters) -> TaskExecutorToJobManagerHeartbeat {
        TaskExecutorToJobManagerHeartbeat {
            tasks: counters
                .lock()
                .iter()
                .map(|(id, t)| (*id, t.counters(Instant::now())))
                .collect(),
        }
    }
}

/// Forwards collect-sink values through the TaskExecutor's mailbox to the JobMaster.
struct CollectForwarder {
    handle: EndpointHandle<TaskExecutor>,
    job: JobId,
    /// The task's attempt: the JobMaster keeps only the current attempt's values.
    execution: ExecutionAttemptId,
}

impl CollectSink for CollectForwarder {
    fn collect(
        &self,
        id: &str,
        subtask_index: u32,
        values: Vec<Value>,
    ) -> rill_dataflow::Result<()> {
        let (job, execution, id) = (self.job, self.execution, id.to_owned());
        self.handle
            .run_async(move |te, _| te.forward_collect(job, execution, id, subtask_index, values));
        Ok(())
    }
}

impl RpcEndpoint for TaskExecutor {
    type Protocol = task_executor::Protocol;

    fn on_start(&mut self, ctx: &mut EndpointContext<'_, Self>) {
        let hb = self.s.config.heartbeat.clone();
        let report = self.slot_report.clone();
        self.heartbeat_rm = Some(start_heartbeats(
            ctx,
            &self.s.resource_id,
            HeartbeatRole::Receiver,
            &hb,
            "ResourceManager",
            Self::resource_manager_lost,
            |_, _, _, ()| {},
            move |_| SlotReport {
                process_rss_bytes: ProcessSample::read().map(|p| p.rss_bytes),
                ..report.lock().clone()
            },
        ));
        let counters = self.counters.clone();
        self.heartbeat_jm = Some(start_heartbeats(
            ctx,
            &self.s.resource_id,
            HeartbeatRole::Receiver,
            &hb,
            "JobMaster",
            Self::job_master_lost,
            |_, _, _, ()| {},
            move |_| Self::heartbeat_payload(&counters),
        ));
        tracing::info!(
            task_executor = %self.s.resource_id,
            rpc = %self.location.rpc_address,
            data = %self.s.data_address,
            slots = self.slots.len(),
            "TaskExecutor started"
        );
        self.register_at_resource_manager(ctx);
    }

    fn on_stop(&mut self, _ctx: &mut EndpointContext<'_, Self>) {
        for task in self.tasks.values() {
            task.handle.cancel();
        }
        if let Some((rm, _)) = &self.resource_manager {
            let _ = rm.disconnect_task_executor(
                self.s.resource_id.clone(),
                "TaskExecutor shut down".into(),
            );
        }
        if let Some(hb) = self.heartbeat_rm.take() {
            hb.stop();
        }
        if let Some(hb) = self.heartbeat_jm.take() {
            hb.stop();
        }
    }
}

impl task_executor::Handler for TaskExecutor {
    fn request_slot(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        request: SlotRequest,
    ) -> Reply<ClusterResult<()>> {
        let index = request.slot_index as usize;
        let Some(slot) = self.slots.get_mut(index) else {
            return Reply::ready(Err(ClusterError::Rejected(format!(
                "TaskExecutor {} has no slot {}",
                self.s.resource_id, request.slot_index
            ))));
        };
        match slot {
            Some(a) if a.allocation == request.allocation => return Reply::ready(Ok(())),
            Some(a) => {
                return Reply::ready(Err(ClusterError::Rejected(format!(
                    "slot {} of TaskExecutor {} is allocated to job {}",
                    request.slot_index, self.s.resource_id, a.job
                ))))
            }
            None => {}
        }
        if let Some(conn) = self.jobs.get(&request.job) {
            if conn.job_master_id != request.job_master_id {
                // A new JobMaster for the job: start afresh.
                self.release_job(request.job, "superseded by a new JobMaster");
            }
        }
        self.slots[index] = Some(SlotAllocation {
            job: request.job,
            allocation: request.allocation,
            offered: false,
        });
        self.update_slot_report();
        match self.jobs.get(&request.job) {
            Some(conn) if conn.gateway.is_some() => self.offer_slots(ctx, request.job),
            Some(_) => {} // connecting: offered once connected
            None => {
                self.jobs.insert(
                    request.job,
                    JobConnection {
                        address: request.job_master.clone(),
                        job_master_id: request.job_master_id,
                        gateway: None,
                        job_master_resource: None,
                    },
                );
                self.connect_job_master(ctx, request.job);
            }
        }
        Reply::ready(Ok(()))
    }

    fn submit_task(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        tdd: TaskDeploymentDescriptor,
        job_master_id: u128,
    ) -> Reply<ClusterResult<()>> {
        let execution = tdd.execution;
        let result = self.deploy(ctx, tdd, job_master_id);
        if let Err(e) = &result {
            tracing::warn!(%execution, error = %e, "task deployment failed");
        }
        Reply::ready(result)
    }

    fn cancel_task(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        execution: ExecutionAttemptId,
    ) -> Reply<ClusterResult<()>> {
        if let Some(t) = self.tasks.get_mut(&execution) {
            t.cancel_requested = true;
            t.handle.cancel();
            // A canceled task's output is discarded; releasing it now also wakes the
            // task if it is blocked on backpressure (e.g. towards a consumer on a dead
            // TaskExecutor), so it sees the cancel mail at once.
            for p in &t.partitions {
                self.s.network.release_partition(*p);
            }
        }
        Reply::ready(Ok(()))
    }

    fn trigger_checkpoint(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        execution: ExecutionAttemptId,
        checkpoint_id: u64,
        timestamp_ms: i64,
        savepoint: bool,
    ) {
        let Some(t) = self.tasks.get(&execution) else {
            tracing::debug!(%execution, checkpoint_id, "trigger for a task not running here ignored");
            return;
        };
        let barrier = CheckpointBarrier {
            id: checkpoint_id,
            timestamp_ms,
            options: CheckpointOptions {
                kind: if savepoint {
                    CheckpointKind::Savepoint
                } else {
                    CheckpointKind::Checkpoint
                },
                // Savepoints are always aligned.
                alignment: match t.alignment {
                    Alignment::Unaligned if savepoint => Alignment::Aligned,
                    a => a,
                },
            },
        };
        // `Err`: the task has just ended; the JobMaster learns that from its state.
        let _ = t.handle.mailbox().send(Mail::TriggerCheckpoint(barrier));
    }

    fn stop_source(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        execution: ExecutionAttemptId,
        drain: bool,
    ) {
        if let Some(t) = self.tasks.get(&execution) {
            let _ = t.handle.mailbox().send(Mail::StopSource { drain });
        }
    }

    fn notify_checkpoint_complete(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        job: JobId,
        checkpoint_id: u64,
        last: bool,
    ) {
        for t in self.tasks.values().filter(|t| t.job == job) {
            let _ = t.handle.mailbox().send(Mail::CheckpointComplete {
                id: checkpoint_id,
                last,
            });
        }
    }

    fn notify_checkpoint_aborted(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        job: JobId,
        checkpoint_id: u64,
    ) {
        for t in self.tasks.values().filter(|t| t.job == job) {
            let _ = t
                .handle
                .mailbox()
                .send(Mail::CheckpointAborted(checkpoint_id));
        }
    }

    fn free_slot(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        allocation: AllocationId,
        reason: String,
    ) {
        let job = self
            .slots
            .iter()
            .flatten()
            .find(|a| a.allocation == allocation)
            .map(|a| a.job);
        self.free_slot_internal(allocation, &reason);
        if let Some(job) = job {
            self.forget_job_if_unused(job);
        }
    }

    fn disconnect_job_master(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        job: JobId,
        reason: String,
    ) {
        self.release_job(job, &reason);
    }

    fn request_heartbeat_from_resource_manager(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        from: ResourceId,
    ) {
        if let Some(hb) = &self.heartbeat_rm {
            hb.request_heartbeat(from, ());
        }
    }

    fn request_heartbeat_from_job_master(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        from: ResourceId,
    ) {
        if let Some(hb) = &self.heartbeat_jm {
            hb.request_heartbeat(from, ());
        }
    }
}

/// A task's checkpoint settings: the job's storage and layout under `spec`'s directory.
fn task_checkpointing(
    job: JobId,
    spec: &TaskCheckpointSpec,
    responder: Arc<dyn CheckpointResponder>,
) -> Result<TaskCheckpointing, ClusterError> {
    let storage = FsCheckpointStorage::from_url(&spec.checkpoints_dir)
        .map_err(|e| ClusterError::Rejected(format!("cannot deploy the task: {e}")))?;
    let layout = CheckpointLayout::new(storage.root().to_path_buf(), job.to_string());
    Ok(TaskCheckpointing {
        mode: if spec.exactly_once {
            BarrierMode::Aligned
        } else {
            BarrierMode::AtLeastOnce
        },
        storage: Arc::new(storage),
        layout,
        responder,
        aligned_timeout: spec.aligned_timeout,
    })
}

/// What a task restores from: the `_metadata` in `dir`, read and checked here so that a
/// corrupt snapshot refuses the deployment with the file's name.
fn task_restore(dir: &str) -> Result<TaskRestore, ClusterError> {
    // Paths in the metadata are relative to its directory; the storage takes them as
    // they are.
    let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::new("/"));
    let (snapshot_dir, meta) = read_metadata(storage.as_ref(), std::path::Path::new(dir))
        .map_err(|e| ClusterError::Rejected(format!("cannot restore from {dir}: {e}")))?;
    Ok(TaskRestore {
        snapshot_dir,
        storage,
        operators: meta.operators,
    })
}

/// Forwards a task's checkpoint reports through the TaskExecutor's mailbox to the
/// JobMaster.
struct CheckpointForwarder {
    handle: EndpointHandle<TaskExecutor>,
    job: JobId,
    execution: ExecutionAttemptId,
}

impl CheckpointForwarder {
    fn with_gateway(&self, f: impl FnOnce(&job_master::Gateway) + Send + 'static) {
        let job = self.job;
        self.handle.run_async(move |te, _| {
            if let Some(gw) = te.jobs.get(&job).and_then(|c| c.gateway.as_ref()) {
                f(gw);
            }
        });
    }
}

impl CheckpointResponder for CheckpointForwarder {
    fn acknowledge(
        &self,
        id: u64,
        snapshots: Vec<OperatorSubtaskSnapshot>,
        stats: TaskCheckpointStats,
    ) {
        let execution = self.execution;
        let ack = CheckpointAck {
            snapshots,
            bytes: stats.bytes,
            in_flight_bytes: stats.in_flight_bytes,
            sync_ms: stats.sync_ms,
            async_ms: stats.async_ms,
            alignment_ms: stats.alignment_ms,
        };
        self.with_gateway(move |gw| {
            let _ = gw.acknowledge_checkpoint(execution, id, ack);
        });
    }

    fn decline(&self, id: u64, reason: rill_dataflow::checkpoint::DeclineReason) {
        let execution = self.execution;
        self.with_gateway(move |gw| {
            let _ = gw.decline_checkpoint(execution, id, reason);
        });
    }

    fn input_ended(&self) {
        let execution = self.execution;
        self.with_gateway(move |gw| {
            let _ = gw.task_input_ended(execution);
        });
    }
}

/// The target of a task's final snapshot: `chk-<id>` of the job under the configured
/// checkpoint directory.
fn final_snapshot_target(
    job: JobId,
    spec: &FinalSnapshotSpec,
) -> Result<SnapshotTarget, ClusterError> {
    let storage = FsCheckpointStorage::from_url(&spec.checkpoints_dir)
        .map_err(|e| ClusterError::Rejected(format!("cannot deploy the task: {e}")))?;
    let layout = CheckpointLayout::new(storage.root().to_path_buf(), job.to_string());
    Ok(layout.target(
        Arc::new(storage),
        spec.checkpoint_id,
        SnapshotKind::Checkpoint,
    ))
}
