//! The JobMaster (DESIGN §3): one per job, fenced by its `JobMasterId`.
//!
//! # Parts
//!
//! The JobMaster is state plus RPC handlers (DESIGN §3, "Endpoints own pure parts"): the
//! decisions live in plain structs it owns, which take inputs (and `now`) and return
//! what to do, and which are unit-tested without a cluster:
//!
//! - [`slot_pool`]: the slots offered to the job and the `(sharing group, subtask
//!   index)` each hosts;
//! - [`execution_graph`]: the current execution attempt of each subtask and the
//!   execution state machine (one transition `match`);
//! - [`failover`]: typed failure causes, what a failure restarts (region or full),
//!   the restart strategy's verdict, and the failure history;
//! - [`checkpointing`]: the checkpoint coordinator and the job's checkpoint storage.
//!
//! The handlers perform the RPCs (deploy, cancel, free slots) the parts call for, and
//! move the job status.
//!
//! # Scheduling
//!
//! The JobMaster registers at the ResourceManager, declares the slots the job needs
//! ([`slot_pool`]), and accepts the slots TaskExecutors offer into its slot pool. Once
//! the pool covers the vertices to deploy, it creates one execution attempt per subtask,
//! a result partition id per output edge ([`execution_graph`]), and sends
//! [`TaskDeploymentDescriptor`]s in topological order (so a producer's partitions exist
//! before a consumer on the same TaskExecutor looks for them). If the slots do not
//! arrive within `slot.request.timeout`, the job fails with a message saying how many
//! slots it needed and how many the cluster has.
//!
//! # Failover
//!
//! A failed task, or a lost TaskExecutor (heartbeat timeout, death-watch, or the
//! TaskExecutor saying so), fails the executions concerned, and [`failover`] decides:
//! restart the failed pipelined region (or every task) after a delay, or fail the job.
//! A restart cancels the affected tasks, waits until all of their executions are
//! terminal, waits out the delay, and deploys new attempts into the pool's slots; slots
//! of a lost TaskExecutor leave the pool, which then accepts replacements from the
//! ResourceManager. Job status moves `CREATED → RUNNING → (RESTARTING → RUNNING)* →
//! FINISHED | FAILING → FAILED | CANCELLING → CANCELED`; every change is reported to the
//! Dispatcher. Every failure is kept in a short history ([`JobDetails::failures`]) with
//! what followed it.
//!
//! # Collect results
//!
//! Values of collect sinks are kept until the job ends and then handed to the Dispatcher
//! with the job's result. They are bounded by `collect.max-bytes`, measured as their RPC
//! encoding ([`rill_dataflow::collect::encoded_size`]): the batch that passes the limit
//! fails the job (without restart: collecting the same output again would pass it again),
//! and what was collected is dropped. Values are kept per sink subtask together with the
//! execution attempt that sent them: a restarted subtask produces its output again from
//! the start, so its first value of a new attempt replaces the old attempt's values, and
//! values of a superseded attempt that arrive late are ignored. The result holds each
//! subtask's values in subtask order.
//!
//! # Ids from peers
//!
//! Execution attempt ids, allocation ids and resource ids arrive from TaskExecutors, and
//! vertex ids inside the submitted graph: every one is looked up with a checked lookup,
//! never by indexing. An id that names nothing (typically an attempt superseded by a
//! restart) is logged with the id and ignored; an inconsistency the JobMaster itself
//! should have prevented fails the job with the ids in the cause, never the process.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use rill_dataflow::{JobGraph, JobId, Value, VertexId};
use rill_network::PartitionId;
use rill_runtime::heartbeat::{HeartbeatManager, HeartbeatRole};
use rill_runtime::registration::{RegistrationAttempt, RetryingRegistration};
use rill_runtime::{
    EndpointContext, Fencing, FencingToken, Reply, ResourceId, RpcAddress, RpcEndpoint, RpcService,
};

use crate::config::RillConfig;
use crate::final_snapshot::{self, FINAL_CHECKPOINT_ID};
use crate::gateways::{dispatcher, job_master, resource_manager, task_executor};
use crate::heartbeats::{start_heartbeats, TellTarget};
use crate::messages::*;
use crate::restart::RestartStrategy;

mod checkpointing;
mod execution_graph;
pub(crate) mod failover;
mod slot_pool;
use checkpointing::{JobCheckpoints, SubtaskKey};
use execution_graph::{ExecutionEffect, ExecutionError, ExecutionEvent, ExecutionGraph, Step};
use failover::{Decision, Failover, FailureCause, TaskError, TaskName};
use slot_pool::{SlotKey, SlotPool};

/// One sink subtask's collected values and the attempt that sent them.
struct CollectedPart {
    execution: ExecutionAttemptId,
    values: Vec<Value>,
    bytes: usize,
}

impl JobMaster {
    /// Forgets the collect values a superseded attempt sent: its replacement produces
    /// the subtask's output again from the start.
    fn drop_collected_of(&mut self, execution: ExecutionAttemptId) {
        for parts in self.collected.values_mut() {
            parts.retain(|_, p| {
                let keep = p.execution != execution;
                if !keep {
                    self.collected_bytes -= p.bytes;
                }
                keep
            });
        }
    }
}

/// What a JobMaster is started with.
#[derive(Clone)]
pub struct JobMasterServices {
    /// The JobManager process's RPC service.
    pub rpc: RpcService,
    /// Configuration.
    pub config: RillConfig,
    /// The ResourceManager.
    pub resource_manager: RpcAddress,
    /// The Dispatcher, told about status changes and the final result.
    pub dispatcher: RpcAddress,
}

struct RegisteredTaskManager {
    gateway: task_executor::Gateway,
    location: TaskManagerLocation,
}

/// The JobMaster endpoint.
pub struct JobMaster {
    s: JobMasterServices,
    job: Arc<JobGraph>,
    job_bytes: Vec<u8>,
    job_master_id: u128,
    resource_id: ResourceId,
    status: JobStatus,
    start_time_ms: u64,
    started: Instant,
    ended: Option<Instant>,
    /// Failover decisions and the failure history (see [`failover`]).
    failover: Failover,
    order: Vec<VertexId>,
    /// Executions and their states (see [`execution_graph`]).
    graph: ExecutionGraph,
    /// The slots offered to the job (see [`slot_pool`]).
    slots: SlotPool,
    task_managers: BTreeMap<ResourceId, RegisteredTaskManager>,
    resource_manager: Option<resource_manager::Gateway>,
    dispatcher: Option<dispatcher::Gateway>,
    heartbeat_tm: Option<HeartbeatManager<TaskExecutorToJobManagerHeartbeat, ()>>,
    heartbeat_rm: Option<HeartbeatManager<(), ()>>,
    /// Collect-sink values per sink id and subtask, from the subtask's current attempt
    /// only (see the module docs).
    collected: BTreeMap<String, BTreeMap<u32, CollectedPart>>,
    /// Encoded bytes of `collected` (see the module docs).
    collected_bytes: usize,
    /// Final-snapshot reports of finished subtasks (see [`crate::final_snapshot`]).
    final_snapshots: BTreeMap<(VertexId, u32), FinalSnapshotReport>,
    /// The final snapshot, once the job finished with `state.checkpoints.dir` set.
    final_checkpoint: Option<FinalCheckpoint>,
    /// Vertices waiting to be (re)deployed.
    to_deploy: BTreeSet<VertexId>,
    /// A restart delay is running.
    delay_pending: bool,
    /// Incremented whenever the wait for slots starts afresh.
    slot_epoch: u64,
    slot_timer_armed: bool,
    /// Periodic checkpoints, when `execution.checkpointing.interval` is set (see
    /// [`checkpointing`]).
    checkpoints: Option<JobCheckpoints>,
    /// The checkpoint the tasks of the current deployment restore from.
    restore_from: Option<String>,
}

impl JobMaster {
    /// A JobMaster for `job` (already validated by the Dispatcher).
    pub fn new(
        services: JobMasterServices,
        job: JobGraph,
        job_master_id: u128,
    ) -> Result<Self, ClusterError> {
        // The Dispatcher validated the graph; the ids are still checked here, since the
        // graph came over the wire and everything below looks vertices up by them.
        for (i, e) in job.edges.iter().enumerate() {
            for end in [e.source, e.target] {
                if job.vertex(end).is_none() {
                    return Err(ClusterError::InvalidJob(format!(
                        "edge {i} ({} -> {}) names vertex {end}, but the job has {} vertices",
                        e.source,
                        e.target,
                        job.vertices.len()
                    )));
                }
            }
        }
        if let Some((i, v)) = job
            .vertices
            .iter()
            .enumerate()
            .find(|(i, v)| v.id.0 as usize != *i)
        {
            return Err(ClusterError::InvalidJob(format!(
                "vertex `{}` has id {} at index {i}",
                v.name, v.id
            )));
        }
        let order = job
            .topological_order()
            .map_err(|e| ClusterError::InvalidJob(e.to_string()))?;
        let job_bytes = job
            .to_bytes()
            .map_err(|e| ClusterError::InvalidJob(e.to_string()))?;
        let restart = RestartStrategy::new(
            &services.config.restart_strategy,
            services.config.checkpointing_enabled(),
            job_master_id as u64,
        );
        let failover = Failover::new(
            &job,
            services.config.jobmanager.execution.failover_strategy,
            restart,
        );
        let resource_id = ResourceId::new(format!("jobmaster-{}", job.job_id));
        let total_subtasks = job.vertices.iter().map(|v| u64::from(v.parallelism)).sum();
        let subtasks = job
            .vertices
            .iter()
            .flat_map(|v| (0..v.parallelism).map(move |k| SubtaskKey(v.id, k)));
        // A savepoint to start from is checked before anything is deployed.
        let savepoint = match &job.savepoint_restore {
            Some(settings) => Some(
                checkpointing::check_savepoint(&job, settings).map_err(ClusterError::InvalidJob)?,
            ),
            None => None,
        };
        let first_id = savepoint.as_ref().map_or(1, |(_, id)| id + 1);
        let mut checkpoints = JobCheckpoints::new(
            &services.config,
            &job.job_id.to_string(),
            subtasks,
            first_id,
        )
        .map_err(ClusterError::InvalidJob)?;
        if let (Some(c), Some((path, id))) = (&mut checkpoints, &savepoint) {
            c.restored = Some((*id, path.clone()));
        }
        let restore_from = savepoint.map(|(path, _)| path);
        Ok(JobMaster {
            s: services,
            job_bytes,
            job_master_id,
            resource_id,
            status: JobStatus::Initializing,
            start_time_ms: now_ms(),
            started: Instant::now(),
            ended: None,
            failover,
            to_deploy: order.iter().copied().collect(),
            order,
            slots: SlotPool::new(&job),
            graph: ExecutionGraph::new(total_subtasks),
            task_managers: BTreeMap::new(),
            resource_manager: None,
            dispatcher: None,
            heartbeat_tm: None,
            heartbeat_rm: None,
            collected: BTreeMap::new(),
            collected_bytes: 0,
            final_snapshots: BTreeMap::new(),
            final_checkpoint: None,
            delay_pending: false,
            slot_epoch: 0,
            slot_timer_armed: false,
            checkpoints,
            restore_from,
            job: Arc::new(job),
        })
    }

    fn job_id(&self) -> JobId {
        self.job.job_id
    }

    fn set_status(&mut self, status: JobStatus) {
        if self.status == status {
            return;
        }
        tracing::info!(job = %self.job_id(), from = %self.status, to = %status, "job status changed");
        self.status = status;
        if let Some(d) = &self.dispatcher {
            let _ = d.job_status_changed(self.job_id(), status);
        }
    }

    fn connect_resource_manager(&mut self, ctx: &mut EndpointContext<'_, Self>) {
        let rpc = self.s.rpc.clone();
        let address = self.s.resource_manager.clone();
        let (job, token, me, rid) = (
            self.job_id(),
            self.job_master_id,
            self.s.rpc.address_of(ctx.name()),
            self.resource_id.clone(),
        );
        let retrying = RetryingRegistration::new(
            format!("ResourceManager at {address}"),
            &self.s.config.cluster.registration,
        );
        let handle = ctx.handle();
        ctx.spawn(async move {
            let (gw, rm) = retrying
                .run(|timeout| {
                    let (rpc, address, me, rid) =
                        (rpc.clone(), address.clone(), me.clone(), rid.clone());
                    async move {
                        let gw: resource_manager::Gateway = match rpc.connect(&address).await {
                            Ok(gw) => gw,
                            Err(e) => return RegistrationAttempt::Error(e),
                        };
                        match gw
                            .with_timeout(timeout)
                            .register_job_master(job, token, me, rid)
                            .await
                        {
                            Ok(Ok(rm)) => RegistrationAttempt::Success((gw, rm)),
                            Ok(Err(e)) => RegistrationAttempt::Refused(e.to_string()),
                            Err(e) => RegistrationAttempt::Error(e),
                        }
                    }
                })
                .await;
            handle.run_async(move |jm, ctx| jm.resource_manager_connected(ctx, gw, rm));
        });
    }

    fn resource_manager_connected(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        gw: resource_manager::Gateway,
        rm: ResourceId,
    ) {
        if self.status.is_terminal() {
            return;
        }
        if let Some(hb) = &self.heartbeat_rm {
            let g = gw.clone();
            hb.monitor_target(
                rm,
                TellTarget::answerer(move |from, ()| g.receive_heartbeat_from_job_master(from)),
            );
        }
        let _ =
            gw.declare_required_resources(self.job_id(), self.job_master_id, self.slots.required());
        self.resource_manager = Some(gw);
        self.try_schedule(ctx);
    }

    fn resource_manager_lost(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        _rm: ResourceId,
        reason: String,
    ) {
        if self.status.is_terminal() {
            return;
        }
        tracing::warn!(job = %self.job_id(), %reason, "lost the ResourceManager; registering again");
        if let Some(gateway) = self.resource_manager.take() {
            // Dial afresh: a ResourceManager restarted at the same address cannot answer
            // on the lost process's connection (a no-op for an in-process one).
            gateway.close_connection(&reason);
        }
        self.connect_resource_manager(ctx);
    }

    /// Deploys `to_deploy` if nothing blocks it.
    fn try_schedule(&mut self, ctx: &mut EndpointContext<'_, Self>) {
        if self.to_deploy.is_empty()
            || self.delay_pending
            || matches!(self.status, JobStatus::Cancelling | JobStatus::Failing)
            || self.status.is_terminal()
        {
            return;
        }
        if self.to_deploy.iter().any(|v| self.graph.is_busy(*v)) {
            return;
        }
        if !self.slots.assign(&self.job, &self.to_deploy) {
            if !self.slot_timer_armed {
                self.slot_timer_armed = true;
                self.slot_epoch += 1;
                let epoch = self.slot_epoch;
                ctx.run_later(self.s.config.slot.request.timeout, move |jm, ctx| {
                    if jm.slot_epoch == epoch && jm.slot_timer_armed {
                        jm.slot_request_timed_out(ctx);
                    }
                });
            }
            return;
        }
        self.slot_timer_armed = false;
        self.deploy(ctx);
    }

    fn slot_request_timed_out(&mut self, ctx: &mut EndpointContext<'_, Self>) {
        let needed = self.slots.required();
        let have = self.slots.len();
        let timeout = self.s.config.slot.request.timeout;
        let rm = self.resource_manager.clone();
        let handle = ctx.handle();
        ctx.spawn(async move {
            let cluster = match rm {
                Some(rm) => match rm.list_task_managers().await {
                    Ok(tms) => format!(
                        "the cluster has {} slots in total ({} free) on {} TaskExecutor(s)",
                        tms.iter().map(|t| t.slots_total).sum::<u32>(),
                        tms.iter().map(|t| t.slots_free).sum::<u32>(),
                        tms.len()
                    ),
                    Err(e) => format!("the ResourceManager could not be asked: {e}"),
                },
                None => "the ResourceManager is not connected".into(),
            };
            let cause = format!(
                "could not acquire the required slots within slot.request.timeout ({timeout:?}): \
                 the job needs {needed} slot(s), {have} were acquired; {cluster}"
            );
            handle.run_async(move |jm, ctx| {
                if jm.slot_timer_armed && !jm.status.is_terminal() {
                    jm.fail_job(ctx, cause);
                }
            });
        });
    }

    fn deploy(&mut self, ctx: &mut EndpointContext<'_, Self>) {
        let vertices: Vec<VertexId> = self
            .order
            .iter()
            .copied()
            .filter(|v| self.to_deploy.contains(v))
            .collect();
        self.to_deploy.clear();
        // Every subtask's slot first: `try_schedule` assigned them, but a missing one must
        // fail the job, not the process.
        let mut placement = Vec::new();
        for v in &vertices {
            let Some(vertex) = self.job.vertex(*v) else {
                return self.fail_job(ctx, format!("cannot deploy: the job has no vertex {v}"));
            };
            for k in 0..vertex.parallelism {
                let group = &vertex.slot_sharing_group;
                let slot = self.slots.slot_of(&SlotKey {
                    group: group.clone(),
                    index: k,
                });
                let Some(slot) = slot else {
                    tracing::error!(job = %self.job_id(), vertex = %v, subtask = k, group, "no slot assigned to a subtask being deployed");
                    return self.fail_job(
                        ctx,
                        format!(
                            "cannot deploy {} ({}/{}): no slot of sharing group `{group}` index {k} in the pool",
                            vertex.name,
                            k + 1,
                            vertex.parallelism
                        ),
                    );
                };
                placement.push(((*v, k), slot));
            }
        }
        // A restart restores the newest completed checkpoint.
        let restarting = placement
            .iter()
            .any(|(subtask, _)| self.graph.has_attempt(*subtask));
        if let Some(c) = self.checkpoints.as_mut().filter(|_| restarting) {
            match c.readable_restore_point() {
                Ok(Some(point)) => {
                    tracing::info!(job = %self.job.job_id, checkpoint_id = point.0, path = %point.1, "restoring from checkpoint");
                    self.restore_from = Some(point.1.clone());
                    c.restored = Some(point);
                }
                Ok(None) => {}
                Err(why) => return self.fail_job(ctx, why),
            }
        }
        self.checkpoints_redeploying(placement.iter().map(|((v, k), _)| SubtaskKey(*v, *k)));
        // New attempts first, so consumers can name their producers' partitions.
        for ((v, k), (allocation, te)) in placement {
            let outputs = self.job.output_edges(v).count();
            let partitions = (0..outputs).map(|_| PartitionId(rand::random())).collect();
            let id = ExecutionAttemptId::generate();
            if let Some(superseded) = self
                .graph
                .new_attempt((v, k), id, allocation, te, partitions)
            {
                self.drop_collected_of(superseded);
            }
        }
        let mut deployments = Vec::new();
        for v in &vertices {
            let parallelism = self.job.vertex(*v).map_or(0, |vertex| vertex.parallelism);
            for k in 0..parallelism {
                match self.descriptor(*v, k) {
                    Ok((gw, tdd)) => deployments.push((gw, tdd)),
                    Err(e) => {
                        match self.graph.get((*v, k)) {
                            Some(execution) => {
                                let id = execution.id;
                                self.task_failed(ctx, id, TaskError::CannotDeploy(e));
                            }
                            None => self.fail_job(
                                ctx,
                                format!("cannot deploy subtask {k} of vertex {v}: {e}"),
                            ),
                        }
                        return;
                    }
                }
            }
        }
        if matches!(self.status, JobStatus::Created | JobStatus::Restarting) {
            self.set_status(JobStatus::Running);
        }
        self.arm_checkpoint_timer(ctx);
        tracing::info!(job = %self.job_id(), tasks = deployments.len(), "deploying tasks");
        let token = self.job_master_id;
        let handle = ctx.handle();
        ctx.spawn(async move {
            // One at a time, in topological order: see the module docs.
            for (gw, tdd) in deployments {
                let execution = tdd.execution;
                let error = match gw.submit_task(tdd, token).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(ClusterError::Rejected(e))) if failover::is_knock_on_refusal(&e) => {
                        TaskError::KnockOn(format!("deployment failed: {e}"))
                    }
                    Ok(Err(e)) => TaskError::DeploymentFailed(e.to_string()),
                    Err(e) => TaskError::DeploymentFailed(e.to_string()),
                };
                handle.run_async(move |jm, ctx| jm.task_failed(ctx, execution, error));
            }
        });
    }

    fn descriptor(
        &self,
        v: VertexId,
        k: u32,
    ) -> Result<(task_executor::Gateway, TaskDeploymentDescriptor), String> {
        let e = self
            .graph
            .get((v, k))
            .ok_or_else(|| format!("subtask {k} of vertex {v} has no execution"))?;
        let te = e.task_executor.clone().ok_or("no TaskExecutor")?;
        let tm = self
            .task_managers
            .get(&te)
            .ok_or_else(|| format!("TaskExecutor {te} is not registered"))?;
        // The channel layout comes from the graph (the TaskExecutor checks it against
        // the same function); only the placement of producers is decided here.
        let wiring = self.job.wiring(v, k).map_err(|e| e.to_string())?;
        let mut inputs = Vec::with_capacity(wiring.inputs.len());
        for c in &wiring.inputs {
            let source = self
                .job
                .edges
                .get(c.edge)
                .ok_or_else(|| format!("no edge {}", c.edge))?
                .source;
            let producer = self.graph.get((source, c.upstream)).ok_or_else(|| {
                format!(
                    "producer subtask {} of vertex {source} has no execution",
                    c.upstream
                )
            })?;
            let producer_te = producer
                .task_executor
                .clone()
                .ok_or("producer not deployed")?;
            let producer_tm = self
                .task_managers
                .get(&producer_te)
                .ok_or_else(|| format!("TaskExecutor {producer_te} is not registered"))?;
            let partition = *producer.partitions.get(c.output).ok_or_else(|| {
                format!(
                    "producer {} has no partition for output {}",
                    producer.id, c.output
                )
            })?;
            inputs.push(InputChannelDescriptor {
                partition,
                subpartition: c.subpartition,
                producer: producer_te,
                producer_data_address: producer_tm.location.data_address,
            });
        }
        Ok((
            tm.gateway.clone(),
            TaskDeploymentDescriptor {
                job: self.job_id(),
                job_graph: self.job_bytes.clone(),
                vertex: v,
                subtask: k,
                execution: e.id,
                attempt: e.attempt,
                allocation: e.allocation.ok_or("no slot")?,
                output_partitions: e.partitions.clone(),
                inputs,
                state_backend: self.s.config.state.backend.kind,
                incremental: self.s.config.execution.checkpointing.incremental,
                // With periodic checkpoints, the job's last checkpoint is its final one.
                final_snapshot: match &self.checkpoints {
                    Some(_) => None,
                    None => {
                        self.s
                            .config
                            .state
                            .checkpoints
                            .dir
                            .clone()
                            .map(|dir| FinalSnapshotSpec {
                                checkpoints_dir: dir,
                                checkpoint_id: FINAL_CHECKPOINT_ID,
                            })
                    }
                },
                checkpointing: self.checkpoints.as_ref().map(|c| c.spec.clone()),
                restore_from: self.restore_from.clone(),
            },
        ))
    }

    fn task_failed(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        execution: ExecutionAttemptId,
        error: TaskError,
    ) {
        let key = match self.graph.apply_to(execution, ExecutionEvent::Fail) {
            Ok((key, _)) => key,
            Err(ExecutionError::Unknown(_)) => {
                tracing::debug!(job = %self.job_id(), %execution, %error, "failure of an unknown or superseded execution attempt ignored");
                return;
            }
            // Terminal already.
            Err(_) => return,
        };
        self.subtask_failed(ctx, key, error);
    }

    /// Reacts to the failure of `subtask`, whose execution is FAILED already.
    fn subtask_failed(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        (vertex, subtask): (VertexId, u32),
        error: TaskError,
    ) {
        let (name, parallelism) = self
            .job
            .vertex(vertex)
            .map_or(("?", 0), |v| (v.name.as_str(), v.parallelism));
        let task = TaskName {
            vertex,
            subtask,
            name: name.to_owned(),
            parallelism,
        };
        self.handle_failure(ctx, FailureCause::Task { task, error });
    }

    /// Asks failover what `cause` restarts, and does it.
    fn handle_failure(&mut self, ctx: &mut EndpointContext<'_, Self>, cause: FailureCause) {
        let status = self.status;
        let decision =
            self.failover
                .on_failure(&cause, status, &self.to_deploy, Instant::now(), now_ms());
        match decision {
            Decision::Ignore => {}
            Decision::CheckCompletion => {
                if status == JobStatus::Restarting {
                    tracing::debug!(job = %self.job_id(), %cause, "failure while already restarting");
                }
                self.check_completion(ctx);
            }
            Decision::Fail => {
                tracing::warn!(job = %self.job_id(), %cause, "job failure");
                self.start_failing(ctx);
            }
            Decision::Restart { vertices, delay } => {
                tracing::warn!(job = %self.job_id(), %cause, "job failure");
                self.abort_checkpoints(ctx, &format!("job failover: {cause}"), false);
                self.set_status(JobStatus::Restarting);
                self.cancel_executions(ctx, &vertices);
                self.to_deploy.extend(vertices);
                self.delay_pending = true;
                tracing::info!(job = %self.job_id(), ?delay, restart = self.failover.restarts(), "restarting");
                ctx.run_later(delay, |jm, ctx| {
                    jm.delay_pending = false;
                    jm.try_schedule(ctx);
                });
            }
        }
    }

    /// Fails the job without asking the restart strategy (the cluster cannot run it).
    fn fail_job(&mut self, ctx: &mut EndpointContext<'_, Self>, cause: String) {
        self.failover.fail(cause, now_ms());
        self.start_failing(ctx);
    }

    /// Moves to FAILING (with the failure failover reports) and cancels every task.
    fn start_failing(&mut self, ctx: &mut EndpointContext<'_, Self>) {
        let cause = self.failover.failure().unwrap_or_default();
        tracing::warn!(job = %self.job_id(), %cause, "job failing");
        self.to_deploy.clear();
        self.slot_timer_armed = false;
        self.set_status(JobStatus::Failing);
        self.abort_checkpoints(ctx, "the job is failing", true);
        let all: BTreeSet<VertexId> = self.order.iter().copied().collect();
        self.cancel_executions(ctx, &all);
        self.check_completion(ctx);
    }

    fn cancel_executions(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        vertices: &BTreeSet<VertexId>,
    ) {
        let mut canceling = false;
        for key in self.graph.active(|(v, _), _| vertices.contains(&v)) {
            let Some((id, gw)) = self.graph.get(key).map(|e| (e.id, self.gateway_of(e))) else {
                continue;
            };
            let event = ExecutionEvent::Cancel {
                reachable: gw.is_some(),
            };
            if let (
                Ok(Step {
                    effect: ExecutionEffect::SendCancel,
                    ..
                }),
                Some(gw),
            ) = (self.graph.apply(key, event), gw)
            {
                canceling = true;
                ctx.spawn(async move {
                    if let Err(err) = gw.cancel_task(id).await {
                        tracing::debug!(execution = %id, error = %err, "cancel_task failed");
                    }
                });
            }
        }
        if canceling {
            // Safety net: a task that does not confirm its cancellation within the ask
            // timeout (its TaskExecutor hung) is given up on.
            let timeout = self.s.config.rpc.ask_timeout;
            ctx.run_later(timeout, |jm, ctx| {
                let mut changed = false;
                for key in jm
                    .graph
                    .active(|_, e| e.state() == ExecutionState::Canceling)
                {
                    if jm.graph.apply(key, ExecutionEvent::CancelTimedOut).is_ok() {
                        tracing::warn!(vertex = %key.0, subtask = key.1, "task did not confirm cancellation; giving up on it");
                        changed = true;
                    }
                }
                if changed {
                    jm.check_completion(ctx);
                }
            });
        }
    }

    fn check_completion(&mut self, ctx: &mut EndpointContext<'_, Self>) {
        let all_terminal = self.graph.all_terminal();
        match self.status {
            JobStatus::Failing if all_terminal => self.finalize(ctx, JobStatus::Failed),
            JobStatus::Cancelling if all_terminal => self.finalize(ctx, JobStatus::Canceled),
            JobStatus::Restarting => self.try_schedule(ctx),
            JobStatus::Running
                if all_terminal && self.to_deploy.is_empty() && self.graph.all_finished() =>
            {
                if self.checkpoints.is_none() {
                    self.complete_final_snapshot();
                }
                self.finalize(ctx, JobStatus::Finished)
            }
            _ => {}
        }
    }

    /// Writes the final snapshot's `_metadata` when every task has finished (a failure
    /// is recorded in the job details, the job still finishes).
    fn complete_final_snapshot(&mut self) {
        let Some(dir) = self.s.config.state.checkpoints.dir.clone() else {
            return;
        };
        let outcome = final_snapshot::complete(
            &self.job,
            &dir,
            FINAL_CHECKPOINT_ID,
            now_ms() as i64,
            self.final_snapshots.values(),
        );
        match &outcome {
            FinalCheckpoint::Completed { path, .. } => {
                tracing::info!(job_id = %self.job_id(), %path, "final snapshot completed")
            }
            FinalCheckpoint::Failed { reason, .. } => {
                tracing::warn!(job_id = %self.job_id(), %reason, "final snapshot failed")
            }
        }
        self.final_checkpoint = Some(outcome);
    }

    fn total_subtasks(&self) -> u64 {
        self.graph.total_subtasks()
    }

    /// The gateway of the TaskExecutor `e` runs on, if it is registered.
    fn gateway_of(&self, e: &execution_graph::Execution) -> Option<task_executor::Gateway> {
        let te = e.task_executor.as_ref()?;
        self.task_managers.get(te).map(|tm| tm.gateway.clone())
    }

    fn finalize(&mut self, ctx: &mut EndpointContext<'_, Self>, status: JobStatus) {
        if self.status.is_terminal() {
            return;
        }
        self.ended = Some(Instant::now());
        self.set_status(status);
        self.abort_checkpoints(ctx, &format!("the job is {status}"), true);
        let reason = format!("job {} is {status}", self.job_id());
        // The ResourceManager first, so that the slots freed below are not handed back
        // to this job.
        if let Some(rm) = &self.resource_manager {
            let _ = rm.disconnect_job_master(self.job_id(), self.job_master_id, reason.clone());
        }
        for (allocation, te) in self.slots.release_all() {
            if let Some(tm) = self.task_managers.get(&te) {
                let _ = tm.gateway.free_slot(allocation, reason.clone());
            }
        }
        for tm in self.task_managers.values() {
            let _ = tm
                .gateway
                .disconnect_job_master(self.job_id(), reason.clone());
        }
        if let Some(hb) = self.heartbeat_tm.take() {
            hb.stop();
        }
        if let Some(hb) = self.heartbeat_rm.take() {
            hb.stop();
        }
        let result = JobResult {
            job: self.job_id(),
            status,
            failure: if status == JobStatus::Finished {
                None
            } else {
                self.failover.failure().map(str::to_owned)
            },
            duration_ms: self.started.elapsed().as_millis() as u64,
            collected: std::mem::take(&mut self.collected)
                .into_iter()
                .map(|(id, parts)| {
                    let values = parts.into_values().flat_map(|p| p.values).collect();
                    (id, values)
                })
                .collect(),
        };
        let details = self.details();
        if let Some(d) = &self.dispatcher {
            let _ = d.job_reached_terminal_state(result, details);
        }
        ctx.stop();
    }

    fn task_executor_lost(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        te: ResourceId,
        reason: String,
    ) {
        let Some(tm) = self.task_managers.remove(&te) else {
            return;
        };
        if let Some(hb) = &self.heartbeat_tm {
            hb.unmonitor_target(te.clone());
        }
        self.slots.task_executor_lost(&te);
        let mut failed = Vec::new();
        for key in self
            .graph
            .active(|_, e| e.task_executor.as_ref() == Some(&te))
        {
            if self.graph.apply(key, ExecutionEvent::Fail).is_ok() {
                failed.push(key.0);
            }
        }
        if self.status.is_terminal() {
            return;
        }
        let tasks = failed.len();
        let cause = FailureCause::TaskExecutorLost {
            task_executor: te,
            host: tm.location.rpc_address.host.to_string(),
            reason,
            vertices: failed,
        };
        tracing::warn!(job = %self.job_id(), %cause, tasks, "TaskExecutor lost");
        if tasks == 0 {
            self.check_completion(ctx);
        } else {
            self.handle_failure(ctx, cause);
        }
    }

    fn details(&self) -> JobDetails {
        let vertices = self
            .order
            .iter()
            .filter_map(|v| Some((v, self.job.vertex(*v)?)))
            .map(|(v, vertex)| {
                let mut states = BTreeMap::new();
                let mut locations = Vec::new();
                let mut attempts = Vec::new();
                let mut subtasks = Vec::new();
                let (mut records_in, mut records_out) = (0, 0);
                for k in 0..vertex.parallelism {
                    let e = self.graph.get((*v, k));
                    let state = e.map_or(ExecutionState::Created, |e| e.state());
                    *states.entry(state).or_insert(0) += 1;
                    locations.push(e.and_then(|e| e.task_executor.clone()));
                    attempts.push(e.map_or(0, |e| e.attempt));
                    subtasks.push(e.map(|e| e.counters).unwrap_or_default());
                    if let Some(e) = e {
                        records_in += e.counters.records_in;
                        records_out += e.counters.records_out;
                    }
                }
                VertexDetails {
                    vertex: *v,
                    name: vertex.name.clone(),
                    parallelism: vertex.parallelism,
                    states,
                    records_in,
                    records_out,
                    locations,
                    attempts,
                    subtasks,
                    inputs: self
                        .job
                        .input_edges(*v)
                        .map(|(_, e)| VertexInput {
                            source: e.source,
                            ship_strategy: e.partitioning.name().to_string(),
                        })
                        .collect(),
                }
            })
            .collect();
        JobDetails {
            overview: self.overview(),
            restarts: self.failover.restarts(),
            failure: self.failover.failure().map(str::to_owned),
            vertices,
            final_checkpoint: self.final_checkpoint.clone(),
            failures: self.failover.history().cloned().collect(),
            checkpoints: self
                .checkpoints
                .as_ref()
                .map(JobCheckpoints::summary)
                .unwrap_or_default(),
        }
    }

    fn overview(&self) -> JobOverview {
        let duration = self.ended.unwrap_or_else(Instant::now) - self.started;
        JobOverview {
            job: self.job_id(),
            name: self.job.name.clone(),
            status: self.status,
            start_time_ms: self.start_time_ms,
            duration_ms: duration.as_millis() as u64,
        }
    }

    fn on_heartbeat_payload(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        _from: ResourceId,
        payload: TaskExecutorToJobManagerHeartbeat,
    ) {
        for (id, counters) in payload.tasks {
            if !self.graph.set_counters(id, counters) {
                tracing::debug!(job = %self.job_id(), execution = %id, "counters of an unknown execution attempt ignored")
            }
        }
    }
}

impl RpcEndpoint for JobMaster {
    type Protocol = job_master::Protocol;

    fn fencing(&self) -> Fencing {
        Fencing::Fenced(Some(FencingToken(self.job_master_id)))
    }

    fn on_start(&mut self, ctx: &mut EndpointContext<'_, Self>) {
        let hb = self.s.config.heartbeat.clone();
        self.heartbeat_tm = Some(start_heartbeats(
            ctx,
            &self.resource_id,
            HeartbeatRole::Sender,
            &hb,
            "TaskExecutor",
            Self::task_executor_lost,
            Self::on_heartbeat_payload,
            |_| (),
        ));
        self.heartbeat_rm = Some(start_heartbeats(
            ctx,
            &self.resource_id,
            HeartbeatRole::Receiver,
            &hb,
            "ResourceManager",
            Self::resource_manager_lost,
            |_, _, _, ()| {},
            |_| (),
        ));
        let rpc = self.s.rpc.clone();
        let address = self.s.dispatcher.clone();
        let handle = ctx.handle();
        ctx.spawn(async move {
            match rpc.connect::<dispatcher::Gateway>(&address).await {
                Ok(gw) => handle.run_async(move |jm, _| {
                    let _ = gw.job_status_changed(jm.job_id(), jm.status);
                    jm.dispatcher = Some(gw);
                }),
                Err(e) => tracing::error!(error = %e, "JobMaster cannot reach its Dispatcher"),
            }
        });
        self.set_status(JobStatus::Created);
        self.connect_resource_manager(ctx);
    }
}

impl job_master::Handler for JobMaster {
    fn register_task_manager(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        location: TaskManagerLocation,
    ) -> Reply<ClusterResult<ResourceId>> {
        if self.status.is_terminal() {
            return Reply::ready(Err(ClusterError::JobTerminal {
                job: self.job_id(),
                status: self.status,
            }));
        }
        if self.task_managers.contains_key(&location.resource_id) {
            return Reply::ready(Ok(self.resource_id.clone()));
        }
        let rpc = self.s.rpc.clone();
        let handle = ctx.handle();
        let me = self.resource_id.clone();
        Reply::later(async move {
            let gw: task_executor::Gateway = match rpc.connect(&location.rpc_address).await {
                Ok(gw) => gw,
                Err(e) => {
                    return Err(ClusterError::Unavailable(format!(
                        "JobMaster cannot reach TaskExecutor {}: {e}",
                        location.rpc_address
                    )))
                }
            };
            let watch = rpc.watch(&location.rpc_address);
            let te = location.resource_id.clone();
            handle.run_async(move |jm, ctx| {
                let h = ctx.handle();
                ctx.spawn(async move {
                    let t = watch.terminated().await;
                    h.run_async(move |jm, ctx| {
                        jm.task_executor_lost(ctx, te, format!("death-watch: {:?}", t.reason))
                    });
                });
                if let Some(hb) = &jm.heartbeat_tm {
                    let g = gw.clone();
                    hb.monitor_target(
                        location.resource_id.clone(),
                        TellTarget::requester(move |from, ()| {
                            g.request_heartbeat_from_job_master(from)
                        }),
                    );
                }
                jm.task_managers.insert(
                    location.resource_id.clone(),
                    RegisteredTaskManager {
                        gateway: gw,
                        location,
                    },
                );
            });
            Ok(me)
        })
    }

    fn offer_slots(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        from: ResourceId,
        offers: Vec<SlotOffer>,
    ) -> Reply<ClusterResult<Vec<SlotOffer>>> {
        if !self.task_managers.contains_key(&from) {
            return Reply::ready(Err(ClusterError::Rejected(format!(
                "TaskExecutor {from} is not registered at this JobMaster"
            ))));
        }
        if self.status.is_terminal()
            || matches!(self.status, JobStatus::Cancelling | JobStatus::Failing)
        {
            return Reply::ready(Ok(Vec::new()));
        }
        let mut accepted = Vec::new();
        for offer in offers {
            if self.slots.offer(&from, offer.allocation) {
                accepted.push(offer);
            }
        }
        self.try_schedule(ctx);
        Reply::ready(Ok(accepted))
    }

    fn update_task_execution_state(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        update: TaskExecutionStateUpdate,
    ) {
        let Some((key, e)) = self.graph.current(update.execution) else {
            // Normal for an attempt a restart superseded; anything else is a confused peer.
            tracing::debug!(job = %self.job.job_id, execution = %update.execution, state = ?update.state, "state update of an unknown or superseded execution attempt ignored");
            return;
        };
        if e.state().is_terminal() {
            return;
        }
        let gateway = self.gateway_of(e);
        if update.io != TaskIoCounters::default() {
            self.graph.set_counters(update.execution, update.io);
        }
        if update.state == ExecutionState::Finished {
            if let Some(report) = update.final_snapshot {
                self.final_snapshots.insert(key, report);
            }
        }
        match self
            .graph
            .apply(key, ExecutionEvent::Reported(update.state))
        {
            Err(e) => {
                tracing::debug!(job = %self.job.job_id, execution = %update.execution, error = %e, "state update ignored");
            }
            Ok(Step {
                effect: ExecutionEffect::Failover { unexpected_cancel },
                ..
            }) => {
                let error = update.error.unwrap_or_else(|| "unknown error".into());
                let error = match (unexpected_cancel, update.knock_on) {
                    (true, _) => TaskError::CanceledUnexpectedly,
                    (false, true) => TaskError::KnockOn(error),
                    (false, false) => TaskError::Failed(error),
                };
                self.subtask_failed(ctx, key, error);
            }
            Ok(Step {
                effect: ExecutionEffect::SendCancel,
                ..
            }) => {
                // The cancel overtook the deployment (it found no task): cancel again
                // now that the task exists.
                if let Some(gw) = gateway {
                    let id = update.execution;
                    ctx.spawn(async move {
                        let _ = gw.cancel_task(id).await;
                    });
                }
            }
            Ok(Step { to, .. }) => {
                if to.is_terminal() {
                    self.check_completion(ctx);
                }
            }
        }
    }

    fn collect(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        execution: ExecutionAttemptId,
        id: String,
        subtask: u32,
        values: Vec<Value>,
    ) {
        if self.status.is_terminal()
            || matches!(self.status, JobStatus::Failing | JobStatus::Cancelling)
        {
            return;
        }
        // The subtask as this JobMaster deployed it, not as the message says.
        let Some((_, subtask)) = self.graph.subtask_of(execution) else {
            tracing::debug!(job = %self.job.job_id, %execution, sink = %id, subtask, "collect values of an unknown or superseded execution attempt ignored");
            return;
        };
        let part = self
            .collected
            .entry(id.clone())
            .or_default()
            .entry(subtask)
            .or_insert_with(|| CollectedPart {
                execution,
                values: Vec::new(),
                bytes: 0,
            });
        if part.execution != execution {
            // Not reached: a superseded attempt's part is dropped at the restart.
            self.collected_bytes -= part.bytes;
            *part = CollectedPart {
                execution,
                values: Vec::new(),
                bytes: 0,
            };
        }
        let size = rill_dataflow::collect::encoded_size(&values);
        let max = self.s.config.collect.max_bytes;
        let total = self.collected_bytes.saturating_add(size);
        if total > max {
            self.collected.clear();
            self.collected_bytes = 0;
            return self.fail_job(
                ctx,
                format!(
                    "collect results exceeded collect.max-bytes = {max} bytes: collect sink \
                     `{id}` (subtask {}) brought them to {total} bytes; raise collect.max-bytes \
                     (below rpc.max-frame-size) or write the results to a file sink",
                    subtask + 1
                ),
            );
        }
        self.collected_bytes = total;
        if let Some(part) = self
            .collected
            .get_mut(&id)
            .and_then(|parts| parts.get_mut(&subtask))
        {
            part.bytes += size;
            part.values.extend(values);
        }
    }

    fn receive_heartbeat_from_task_executor(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        from: ResourceId,
        payload: TaskExecutorToJobManagerHeartbeat,
    ) {
        if let Some(hb) = &self.heartbeat_tm {
            hb.receive_heartbeat(from, payload);
        }
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

    fn disconnect_task_manager(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        from: ResourceId,
        reason: String,
    ) {
        self.task_executor_lost(ctx, from, format!("disconnected: {reason}"));
    }

    fn acknowledge_checkpoint(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        execution: ExecutionAttemptId,
        checkpoint_id: u64,
        ack: CheckpointAck,
    ) {
        self.on_checkpoint_ack(ctx, execution, checkpoint_id, ack);
    }

    fn decline_checkpoint(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        execution: ExecutionAttemptId,
        checkpoint_id: u64,
        reason: rill_dataflow::checkpoint::DeclineReason,
    ) {
        self.on_checkpoint_decline(ctx, execution, checkpoint_id, reason.to_string());
    }

    fn task_input_ended(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        execution: ExecutionAttemptId,
    ) {
        self.on_task_input_ended(ctx, execution);
    }

    fn trigger_checkpoint(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
    ) -> Reply<ClusterResult<u64>> {
        Reply::ready(self.user_snapshot(ctx, None))
    }

    fn trigger_savepoint(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        request: SavepointRequest,
    ) -> Reply<ClusterResult<u64>> {
        Reply::ready(self.user_snapshot(ctx, Some(request)))
    }

    fn snapshot_status(
        &mut self,
        _ctx: &mut EndpointContext<'_, Self>,
        id: u64,
    ) -> Reply<ClusterResult<SnapshotStatus>> {
        let job = self.job_id();
        Reply::ready(
            self.checkpoints
                .as_ref()
                .and_then(|c| c.request_status(id))
                .ok_or(ClusterError::SnapshotNotFound { job, id }),
        )
    }

    fn job_status(&mut self, _ctx: &mut EndpointContext<'_, Self>) -> Reply<JobStatus> {
        Reply::ready(self.status)
    }

    fn job_details(&mut self, _ctx: &mut EndpointContext<'_, Self>) -> Reply<JobDetails> {
        Reply::ready(self.details())
    }

    fn cancel(&mut self, ctx: &mut EndpointContext<'_, Self>) -> Reply<ClusterResult<()>> {
        if self.status.is_terminal() {
            return Reply::ready(Err(ClusterError::JobTerminal {
                job: self.job_id(),
                status: self.status,
            }));
        }
        if self.status != JobStatus::Cancelling {
            self.to_deploy.clear();
            self.slot_timer_armed = false;
            self.set_status(JobStatus::Cancelling);
            self.abort_checkpoints(ctx, "the job is being cancelled", true);
            let all: BTreeSet<VertexId> = self.order.iter().copied().collect();
            self.cancel_executions(ctx, &all);
            self.check_completion(ctx);
        }
        Reply::ready(Ok(()))
    }
}

/// A job of `pipelines` independent source → rebalance → sink pipelines, the sources at
/// parallelism 2 and the sinks at `sink_parallelism`.
#[cfg(test)]
fn test_job(pipelines: i64, sink_parallelism: u32) -> JobGraph {
    let env = rill_dataflow::StreamExecutionEnvironment::new();
    env.set_parallelism(2);
    for i in 0..pipelines {
        env.add_source(rill_dataflow::builtins::collection(vec![Value::I64(i)]))
            .rebalance()
            .sink(rill_dataflow::builtins::blackhole())
            .parallelism(sink_parallelism);
    }
    env.job_graph("test").unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_dataflow::job_graph::JobEdge;
    use rill_dataflow::partitioning::Partitioning;
    use rill_runtime::security::ClusterSecret;
    use rill_runtime::RpcServiceConfig;

    fn two_vertex_job() -> JobGraph {
        test_job(1, 2)
    }

    fn services() -> JobMasterServices {
        let rpc = RpcService::start(RpcServiceConfig::local(ClusterSecret::generate())).unwrap();
        // Nobody serves these: the JobMaster keeps trying to register in the background.
        let resource_manager = rpc.address_of("no-resourcemanager");
        let dispatcher = rpc.address_of("no-dispatcher");
        JobMasterServices {
            rpc,
            config: RillConfig::default(),
            resource_manager,
            dispatcher,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_edge_naming_a_missing_vertex_is_a_typed_error() {
        let mut job = two_vertex_job();
        job.edges.push(JobEdge {
            source: VertexId(0),
            source_operator: 0,
            target: VertexId(7),
            partitioning: Partitioning::Rebalance,
            side_output: None,
            input: Default::default(),
        });
        match JobMaster::new(services(), job, 1) {
            Err(ClusterError::InvalidJob(m)) => assert!(m.contains("vertex v7"), "{m}"),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a dangling edge was accepted"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_execution_ids_from_peers_are_ignored() {
        let s = services();
        let rpc = s.rpc.clone();
        let jm = JobMaster::new(s, two_vertex_job(), 1).unwrap();
        let handle = rpc.start_endpoint("jobmaster-ids", jm).unwrap();
        handle.start();
        let unknown = ExecutionAttemptId::generate();
        let status = handle
            .call(move |jm, ctx| {
                use job_master::Handler;
                for state in [
                    ExecutionState::Running,
                    ExecutionState::Failed,
                    ExecutionState::Canceled,
                    ExecutionState::Finished,
                ] {
                    jm.update_task_execution_state(
                        ctx,
                        TaskExecutionStateUpdate {
                            execution: unknown,
                            state,
                            error: Some("from a confused peer".into()),
                            io: TaskIoCounters {
                                records_in: 1,
                                records_out: 1,
                                ..Default::default()
                            },
                            final_snapshot: None,
                            knock_on: false,
                        },
                    );
                }
                let error = TaskError::Failed("from a confused peer".into());
                jm.task_failed(ctx, unknown, error);
                jm.on_heartbeat_payload(
                    ctx,
                    ResourceId::new("nobody"),
                    TaskExecutorToJobManagerHeartbeat {
                        tasks: vec![(unknown, TaskIoCounters::default())],
                    },
                );
                jm.disconnect_task_manager(ctx, ResourceId::new("nobody"), "bye".into());
                jm.status
            })
            .await;
        assert_eq!(status, Ok(JobStatus::Created));
        assert_eq!(handle.state(), rill_runtime::Lifecycle::Started);
        handle.stop();
        handle.terminated().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn collect_keeps_only_the_current_attempts_values() {
        let s = services();
        let rpc = s.rpc.clone();
        let jm = JobMaster::new(s, two_vertex_job(), 1).unwrap();
        let handle = rpc.start_endpoint("jobmaster-collect", jm).unwrap();
        handle.start();
        let (first, second) = (
            ExecutionAttemptId::generate(),
            ExecutionAttemptId::generate(),
        );
        let (values, bytes) = handle
            .call(move |jm, ctx| {
                use job_master::Handler;
                let sink = jm.order[1];
                let v = |xs: &[i64]| xs.iter().map(|x| Value::I64(*x)).collect::<Vec<_>>();
                let other = ExecutionAttemptId::generate();
                let deploy = |jm: &mut JobMaster, k, id| {
                    let (allocation, te) = (AllocationId(1), ResourceId::new("te"));
                    jm.graph
                        .new_attempt((sink, k), id, allocation, te, Vec::new())
                };
                deploy(jm, 0, first);
                deploy(jm, 1, other);
                jm.collect(ctx, first, "out".into(), 0, v(&[1, 2]));
                jm.collect(ctx, other, "out".into(), 1, v(&[10]));
                // Subtask 0 restarts (as `deploy` does it): its second attempt produces
                // its output again.
                assert_eq!(deploy(jm, 0, second), Some(first));
                jm.drop_collected_of(first);
                jm.collect(ctx, second, "out".into(), 0, v(&[1]));
                jm.collect(ctx, first, "out".into(), 0, v(&[3])); // late, superseded
                jm.collect(ctx, second, "out".into(), 0, v(&[2]));
                let parts = &jm.collected["out"];
                let values: Vec<Value> = parts.values().flat_map(|p| p.values.clone()).collect();
                (values, jm.collected_bytes)
            })
            .await
            .unwrap();
        // Subtask 0's second attempt in full, nothing of its first, then subtask 1.
        assert_eq!(values, vec![Value::I64(1), Value::I64(2), Value::I64(10)]);
        let size = |xs: &[i64]| {
            rill_dataflow::collect::encoded_size(
                &xs.iter().map(|x| Value::I64(*x)).collect::<Vec<_>>(),
            )
        };
        assert_eq!(bytes, size(&[1]) + size(&[2]) + size(&[10]));
        handle.stop();
        handle.terminated().await;
    }
}
