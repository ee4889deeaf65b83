//! The JobMaster's side of periodic checkpoints: it owns the pure
//! [`CheckpointCoordinator`] and carries out its [`Action`]s.
//!
//! * **Trigger**: a timer ticks the coordinator at its next due time while every task is
//!   RUNNING (Flink refuses to trigger before that too). A trigger goes, as a
//!   `trigger_checkpoint` tell, to every source task and to every task whose input has
//!   ended (those wait for their final checkpoint, see
//!   [`rill_dataflow::checkpoint`]); every other task is reached by the barriers.
//! * **Acknowledge / decline** arrive from the tasks' TaskExecutors and are handed to the
//!   coordinator by the attempt's subtask; those of superseded attempts are ignored.
//! * **Finalize**: `_metadata` is written into `chk-<id>` from the acknowledgements; the
//!   checkpoint's shared files are registered so that discarding an older checkpoint
//!   keeps what a newer one references. A savepoint's directory is then copied to its
//!   target (see [`super::savepoint`] once it exists).
//! * **Notify**: every TaskExecutor is told of completions (sinks commit) and aborts; a
//!   completion of a checkpoint triggered after *every* task had ended its input is the
//!   job's final checkpoint (`last`), after which the tasks finish.
//! * **Failover**: pending checkpoints are aborted (not counted as failures), and the
//!   restarted tasks restore from the newest completed checkpoint; the job details say
//!   which.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rill_dataflow::VertexId;
use rill_runtime::EndpointContext;
use rill_state::shared::SharedStateRegistry;
use rill_state::storage::{CheckpointLayout, CheckpointStorage, FsCheckpointStorage};
use rill_state::SnapshotKind;

use super::JobMaster;
use crate::checkpoint_coordinator::{
    AbortReason, AckStats, Action, CheckpointCoordinator, CheckpointStatus, CheckpointingMode,
    CoordinatorConfig, SnapshotRequest,
};
use crate::config::{CheckpointingModeSetting, RillConfig};
use crate::final_snapshot::write_checkpoint_metadata;
use crate::messages::*;

/// A subtask, as the coordinator names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SubtaskKey(pub VertexId, pub u32);

impl fmt::Display for SubtaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subtask {} of vertex {}", self.1 + 1, self.0)
    }
}

/// Checkpointing state of one job.
pub(crate) struct JobCheckpoints {
    pub(crate) coordinator: CheckpointCoordinator<SubtaskKey, CheckpointAck>,
    storage: Arc<FsCheckpointStorage>,
    layout: CheckpointLayout,
    pub(crate) spec: TaskCheckpointSpec,
    /// Subtasks of the current attempts whose input has ended.
    input_ended: BTreeSet<SubtaskKey>,
    /// Checkpoints triggered while every subtask had ended its input.
    final_candidates: BTreeSet<u64>,
    /// The job's final checkpoint completed: nothing more is triggered.
    final_completed: bool,
    timer_armed: bool,
    shared: SharedStateRegistry,
    /// What the latest (re)deployment restored: `(checkpoint id, directory)`.
    pub(crate) restored: Option<(u64, String)>,
    completed: u64,
    failed: u64,
}

impl JobCheckpoints {
    /// Checkpointing for a job of `subtasks`, if `config` enables it.
    pub(crate) fn new(
        config: &RillConfig,
        job_id: &str,
        subtasks: impl IntoIterator<Item = SubtaskKey>,
    ) -> Result<Option<Self>, String> {
        let c = &config.execution.checkpointing;
        let Some(interval) = c.interval else {
            return Ok(None);
        };
        let dir =
            config.state.checkpoints.dir.clone().ok_or(
                "execution.checkpointing.interval is set but state.checkpoints.dir is not",
            )?;
        let storage = FsCheckpointStorage::from_url(&dir).map_err(|e| e.to_string())?;
        let layout = CheckpointLayout::new(storage.root().to_path_buf(), job_id.to_owned());
        let mode = match c.mode {
            CheckpointingModeSetting::ExactlyOnce => CheckpointingMode::ExactlyOnce,
            CheckpointingModeSetting::AtLeastOnce => CheckpointingMode::AtLeastOnce,
        };
        let coordinator = CheckpointCoordinator::new(
            CoordinatorConfig {
                interval: Some(interval),
                timeout: c.timeout,
                min_pause: c.min_pause,
                max_concurrent: c.max_concurrent_checkpoints,
                tolerable_failed: c.tolerable_failed_checkpoints,
                mode,
                num_retained: config.state.checkpoints.num_retained.max(1) as usize,
            },
            subtasks,
            1,
        );
        Ok(Some(JobCheckpoints {
            coordinator,
            storage: Arc::new(storage),
            layout,
            spec: TaskCheckpointSpec {
                checkpoints_dir: dir,
                exactly_once: mode == CheckpointingMode::ExactlyOnce,
            },
            input_ended: BTreeSet::new(),
            final_candidates: BTreeSet::new(),
            final_completed: false,
            timer_armed: false,
            shared: SharedStateRegistry::new(),
            restored: None,
            completed: 0,
            failed: 0,
        }))
    }

    /// The newest completed checkpoint's directory: what a restarted task restores.
    pub(crate) fn restore_point(&self) -> Option<(u64, String)> {
        self.coordinator
            .latest_completed()
            .map(|c| (c.id, c.path.clone()))
    }

    /// For the job details.
    pub(crate) fn summary(&self) -> CheckpointsSummary {
        CheckpointsSummary {
            enabled: true,
            history: self
                .coordinator
                .history()
                .map(|r| {
                    let (status, path, failure) = match &r.status {
                        CheckpointStatus::InProgress => ("IN_PROGRESS", None, None),
                        CheckpointStatus::Completed { path } => {
                            ("COMPLETED", Some(path.clone()), None)
                        }
                        CheckpointStatus::Failed { reason } => {
                            ("FAILED", None, Some(reason.to_string()))
                        }
                    };
                    CheckpointInfo {
                        id: r.id,
                        savepoint: r.savepoint,
                        status: status.to_owned(),
                        trigger_timestamp_ms: r.trigger_timestamp_ms,
                        duration_ms: r.duration.map(|d| d.as_millis() as u64),
                        acknowledged: r.acknowledged,
                        expected: r.expected,
                        bytes: r.stats.bytes,
                        alignment_ms: r.stats.alignment_ms,
                        path,
                        failure,
                    }
                })
                .collect(),
            completed: self.completed,
            failed: self.failed,
            latest_completed: self.restore_point().map(|(_, p)| p),
            restored: self.restored.clone(),
        }
    }

    /// Deletes a checkpoint directory that will not complete (or was discarded).
    fn delete_dir(&self, dir: &Path) {
        if let Err(e) = self.storage.delete_dir(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot delete a checkpoint directory");
        }
    }

    /// Writes `_metadata` of checkpoint `id` from the acknowledgements.
    fn finalize(
        &mut self,
        job: &rill_dataflow::JobGraph,
        id: u64,
        timestamp_ms: i64,
        request: &SnapshotRequest,
        acks: Vec<CheckpointAck>,
    ) -> Result<String, String> {
        let dir = self.layout.checkpoint_dir(id);
        let parts: Vec<_> = acks.into_iter().flat_map(|a| a.snapshots).collect();
        let shared: Vec<PathBuf> = parts
            .iter()
            .flat_map(|p| p.snapshot.keyed.iter().flat_map(|k| k.files.iter()))
            .filter(|f| f.shared)
            .map(|f| f.resolve(&dir))
            .collect();
        let kind = match request {
            SnapshotRequest::Checkpoint => SnapshotKind::Checkpoint,
            SnapshotRequest::Savepoint { .. } => SnapshotKind::Savepoint,
        };
        write_checkpoint_metadata(
            job,
            self.storage.as_ref(),
            &dir,
            id,
            timestamp_ms,
            kind,
            parts,
        )?;
        if kind == SnapshotKind::Checkpoint {
            self.shared.register(id, &shared);
        }
        Ok(dir.display().to_string())
    }
}

impl JobMaster {
    fn is_source_vertex(&self, v: VertexId) -> bool {
        !self.job.edges.iter().any(|e| e.target == v)
    }

    /// Arms the timer that ticks the coordinator, unless it is armed.
    pub(super) fn arm_checkpoint_timer(&mut self, ctx: &mut EndpointContext<'_, Self>) {
        let Some(c) = &mut self.checkpoints else {
            return;
        };
        if c.timer_armed || self.status.is_terminal() {
            return;
        }
        let now = Instant::now();
        let Some(due) = c.coordinator.next_periodic(now) else {
            return;
        };
        c.timer_armed = true;
        let delay = due
            .saturating_duration_since(now)
            .max(Duration::from_millis(10));
        ctx.run_later(delay, |jm, ctx| {
            if let Some(c) = &mut jm.checkpoints {
                c.timer_armed = false;
            }
            jm.checkpoint_tick(ctx);
            jm.arm_checkpoint_timer(ctx);
        });
    }

    fn checkpoint_tick(&mut self, ctx: &mut EndpointContext<'_, Self>) {
        let all_running = self.status == JobStatus::Running
            && self.to_deploy.is_empty()
            && self.executions.len() as u64 == self.total_subtasks()
            && self
                .executions
                .values()
                .all(|e| e.state == ExecutionState::Running);
        let Some(c) = &mut self.checkpoints else {
            return;
        };
        if !all_running || c.final_completed {
            return;
        }
        let actions = c.coordinator.tick(Instant::now(), now_ms() as i64);
        self.apply_checkpoint_actions(ctx, actions);
    }

    /// Carries out what the coordinator decided.
    pub(super) fn apply_checkpoint_actions(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        actions: Vec<Action<CheckpointAck>>,
    ) {
        for action in actions {
            match action {
                Action::TriggerSources {
                    id,
                    timestamp_ms,
                    request,
                } => self.trigger_tasks(id, timestamp_ms, &request),
                Action::Finalize {
                    id,
                    timestamp_ms,
                    request,
                    acks,
                } => {
                    let job = self.job.clone();
                    let Some(c) = &mut self.checkpoints else {
                        return;
                    };
                    let result = c.finalize(&job, id, timestamp_ms, &request, acks);
                    if let Err(e) = &result {
                        tracing::warn!(job = %self.job.job_id, checkpoint_id = id, error = %e, "cannot complete checkpoint");
                    }
                    let more = c.coordinator.finalized(id, result, Instant::now());
                    self.apply_checkpoint_actions(ctx, more);
                }
                Action::NotifyComplete { id } => {
                    let Some(c) = &mut self.checkpoints else {
                        return;
                    };
                    c.completed += 1;
                    let last = c.final_candidates.contains(&id);
                    if last {
                        c.final_completed = true;
                    }
                    tracing::info!(job = %self.job.job_id, checkpoint_id = id, last, "checkpoint completed");
                    for tm in self.task_managers.values() {
                        let _ = tm
                            .gateway
                            .notify_checkpoint_complete(self.job.job_id, id, last);
                    }
                }
                Action::NotifyAborted { id, reason } => {
                    let Some(c) = &mut self.checkpoints else {
                        return;
                    };
                    if !matches!(reason, AbortReason::Subsumed { .. }) {
                        c.failed += 1;
                    }
                    c.final_candidates.remove(&id);
                    tracing::info!(job = %self.job.job_id, checkpoint_id = id, %reason, "checkpoint aborted");
                    let dir = c.layout.checkpoint_dir(id);
                    c.delete_dir(&dir);
                    for tm in self.task_managers.values() {
                        let _ = tm.gateway.notify_checkpoint_aborted(self.job.job_id, id);
                    }
                }
                Action::Discard { checkpoint } => {
                    let Some(c) = &mut self.checkpoints else {
                        return;
                    };
                    for f in c.shared.release(checkpoint.id) {
                        if let Err(e) = c.storage.delete_file(&f) {
                            tracing::warn!(file = %f.display(), error = %e, "cannot delete a shared state file");
                        }
                    }
                    c.delete_dir(Path::new(&checkpoint.path));
                }
                Action::FailJob { reason } => {
                    let all: Vec<VertexId> = self.order.clone();
                    self.handle_failure(ctx, all, reason);
                }
            }
        }
    }

    /// Sends checkpoint `id`'s trigger to the source tasks and to the tasks whose input
    /// ended; remembers a final-checkpoint candidate.
    fn trigger_tasks(&mut self, id: u64, timestamp_ms: i64, request: &SnapshotRequest) {
        let total = self.total_subtasks();
        let sources: BTreeSet<VertexId> = self
            .job
            .vertices
            .iter()
            .map(|v| v.id)
            .filter(|v| self.is_source_vertex(*v))
            .collect();
        let Some(c) = &mut self.checkpoints else {
            return;
        };
        if c.input_ended.len() as u64 == total {
            c.final_candidates.insert(id);
        }
        let savepoint = matches!(request, SnapshotRequest::Savepoint { .. });
        let targets: Vec<_> = self
            .executions
            .iter()
            .filter(|((v, k), e)| {
                e.state == ExecutionState::Running
                    && (sources.contains(v) || c.input_ended.contains(&SubtaskKey(*v, *k)))
            })
            .filter_map(|(_, e)| {
                let tm = self.task_managers.get(e.task_executor.as_ref()?)?;
                Some((tm.gateway.clone(), e.id))
            })
            .collect();
        tracing::debug!(job = %self.job.job_id, checkpoint_id = id, tasks = targets.len(), "triggering checkpoint");
        for (gw, execution) in targets {
            let _ = gw.trigger_checkpoint(execution, id, timestamp_ms, savepoint);
        }
    }

    /// The current attempt's subtask of `execution`, if it is current.
    fn current_subtask(&self, execution: ExecutionAttemptId) -> Option<SubtaskKey> {
        self.by_id.get(&execution).map(|(v, k)| SubtaskKey(*v, *k))
    }

    pub(super) fn on_checkpoint_ack(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        execution: ExecutionAttemptId,
        id: u64,
        ack: CheckpointAck,
    ) {
        let Some(key) = self.current_subtask(execution) else {
            tracing::debug!(%execution, checkpoint_id = id, "acknowledgement of a superseded attempt ignored");
            return;
        };
        let Some(c) = &mut self.checkpoints else {
            return;
        };
        let stats = AckStats {
            bytes: ack.bytes,
            in_flight_bytes: ack.in_flight_bytes,
            sync_ms: ack.sync_ms,
            async_ms: ack.async_ms,
            alignment_ms: ack.alignment_ms,
        };
        let actions = c.coordinator.acknowledge(id, &key, ack, stats);
        self.apply_checkpoint_actions(ctx, actions);
    }

    pub(super) fn on_checkpoint_decline(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        execution: ExecutionAttemptId,
        id: u64,
        reason: String,
    ) {
        let Some(key) = self.current_subtask(execution) else {
            return;
        };
        let Some(c) = &mut self.checkpoints else {
            return;
        };
        let actions = c.coordinator.decline(id, &key, reason, Instant::now());
        self.apply_checkpoint_actions(ctx, actions);
    }

    /// A task's input ended: it takes the pending checkpoints it has not acknowledged
    /// directly, and once every task has ended a checkpoint is started at once (it is
    /// the job's final one).
    pub(super) fn on_task_input_ended(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        execution: ExecutionAttemptId,
    ) {
        let Some(key) = self.current_subtask(execution) else {
            return;
        };
        let total = self.total_subtasks();
        let gateway = self
            .executions
            .get(&(key.0, key.1))
            .and_then(|e| e.task_executor.as_ref())
            .and_then(|te| self.task_managers.get(te))
            .map(|tm| tm.gateway.clone());
        let Some(c) = &mut self.checkpoints else {
            return;
        };
        c.input_ended.insert(key);
        if let Some(gw) = gateway {
            for (id, timestamp_ms, request) in c.coordinator.awaiting(&key) {
                let savepoint = matches!(request, SnapshotRequest::Savepoint { .. });
                let _ = gw.trigger_checkpoint(execution, id, timestamp_ms, savepoint);
            }
        }
        if c.input_ended.len() as u64 == total
            && c.coordinator.pending_ids().is_empty()
            && !c.final_completed
        {
            if let Ok(action) =
                c.coordinator
                    .trigger(SnapshotRequest::Checkpoint, Instant::now(), now_ms() as i64)
            {
                self.apply_checkpoint_actions(ctx, vec![action]);
            }
        }
    }

    /// Failover or the end of the job: pending checkpoints are aborted; the subtasks of
    /// `redeployed` start over (their input has not ended).
    pub(super) fn abort_checkpoints(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        why: &str,
        terminal: bool,
    ) {
        let Some(c) = &mut self.checkpoints else {
            return;
        };
        let now = Instant::now();
        let actions = if terminal {
            c.coordinator.shutdown(why, now)
        } else {
            c.coordinator.abort_all(why, now)
        };
        c.final_candidates.clear();
        self.apply_checkpoint_actions(ctx, actions);
    }

    /// Subtasks being deployed anew have not ended their input.
    pub(super) fn checkpoints_redeploying(&mut self, keys: impl IntoIterator<Item = SubtaskKey>) {
        if let Some(c) = &mut self.checkpoints {
            for k in keys {
                c.input_ended.remove(&k);
            }
        }
    }
}
