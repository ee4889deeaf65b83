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

use std::collections::{BTreeMap, BTreeSet};
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
    /// User requests (trigger ids) and the checkpoint each started.
    requests: BTreeMap<u64, UserRequest>,
    next_request: u64,
    /// A stop-with-savepoint waiting for every task to end its input.
    stop: Option<PendingStop>,
    /// `state.savepoints.dir`.
    savepoints_dir: Option<String>,
}

/// A user's checkpoint or savepoint request.
struct UserRequest {
    checkpoint: Option<u64>,
    status: SnapshotStatus,
}

/// A stop-with-savepoint in progress: the sources were told to stop; the savepoint is
/// triggered once every task has ended its input.
struct PendingStop {
    request: u64,
    target_dir: String,
    triggered: bool,
}

/// How many user requests the job details keep.
const MAX_REQUESTS: usize = 64;

impl JobCheckpoints {
    /// Checkpointing for a job of `subtasks`, if `config` enables it.
    pub(crate) fn new(
        config: &RillConfig,
        job_id: &str,
        subtasks: impl IntoIterator<Item = SubtaskKey>,
        first_id: u64,
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
            first_id,
        );
        Ok(Some(JobCheckpoints {
            coordinator,
            storage: Arc::new(storage),
            layout,
            spec: TaskCheckpointSpec {
                checkpoints_dir: dir,
                exactly_once: mode == CheckpointingMode::ExactlyOnce,
                unaligned: c.unaligned.enabled && c.aligned_checkpoint_timeout.is_zero(),
                aligned_timeout: (c.unaligned.enabled && !c.aligned_checkpoint_timeout.is_zero())
                    .then_some(c.aligned_checkpoint_timeout),
            },
            input_ended: BTreeSet::new(),
            final_candidates: BTreeSet::new(),
            final_completed: false,
            timer_armed: false,
            shared: SharedStateRegistry::new(),
            restored: None,
            completed: 0,
            failed: 0,
            requests: BTreeMap::new(),
            next_request: 1,
            stop: None,
            savepoints_dir: config.state.savepoints.dir.clone(),
        }))
    }

    /// The newest completed checkpoint's directory: what a restarted task restores.
    pub(crate) fn restore_point(&self) -> Option<(u64, String)> {
        self.coordinator
            .latest_completed()
            .map(|c| (c.id, c.path.clone()))
    }

    /// The newest completed checkpoint that reads back (its `_metadata` parses and every
    /// file it references is there with its recorded size); unreadable ones are dropped
    /// with the reason in the history. `Err` lists them when none is left: restoring
    /// nothing would replay committed output again.
    pub(crate) fn readable_restore_point(&mut self) -> Result<Option<(u64, String)>, String> {
        let mut unreadable = Vec::new();
        while let Some((id, path)) = self.restore_point() {
            match check_readable(Path::new(&path)) {
                Ok(()) => return Ok(Some((id, path))),
                Err(why) => {
                    tracing::warn!(checkpoint_id = id, %path, reason = %why, "completed checkpoint is unreadable; falling back to an older one: output that two-phase-commit sinks committed with it is produced again");
                    self.coordinator.drop_unreadable(id, why.clone());
                    unreadable.push(format!("checkpoint {id} ({path}): {why}"));
                }
            }
        }
        if unreadable.is_empty() {
            Ok(None)
        } else {
            Err(format!(
                "no readable completed checkpoint to recover from: {}",
                unreadable.join("; ")
            ))
        }
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
                        in_flight_bytes: r.stats.in_flight_bytes,
                        unaligned: !r.savepoint
                            && (self.spec.unaligned || r.stats.in_flight_bytes > 0),
                        path,
                        failure,
                    }
                })
                .collect(),
            completed: self.completed,
            failed: self.failed,
            latest_completed: self.restore_point().map(|(_, p)| p),
            restored: self.restored.clone(),
            requests: self
                .requests
                .iter()
                .map(|(id, r)| (*id, r.status.clone()))
                .collect(),
        }
    }

    /// Records a new user request; the oldest beyond [`MAX_REQUESTS`] are forgotten.
    fn new_request(&mut self, checkpoint: Option<u64>) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        self.requests.insert(
            id,
            UserRequest {
                checkpoint,
                status: SnapshotStatus::InProgress,
            },
        );
        while self.requests.len() > MAX_REQUESTS {
            self.requests.pop_first();
        }
        id
    }

    /// Checkpoint `checkpoint` ended: the requests that started it say so.
    fn settle(&mut self, checkpoint: u64, status: SnapshotStatus) {
        for r in self.requests.values_mut() {
            if r.checkpoint == Some(checkpoint) && r.status == SnapshotStatus::InProgress {
                r.status = status.clone();
            }
        }
    }

    /// Where user request `id` stands.
    pub(crate) fn request_status(&self, id: u64) -> Option<SnapshotStatus> {
        self.requests.get(&id).map(|r| r.status.clone())
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
        if let SnapshotRequest::Savepoint { target_dir, .. } = request {
            let path = relocate_savepoint(job, &dir, target_dir, id, timestamp_ms, parts)?;
            self.delete_dir(&dir);
            return Ok(path);
        }
        write_checkpoint_metadata(
            job,
            self.storage.as_ref(),
            &dir,
            id,
            timestamp_ms,
            kind,
            parts,
        )?;
        self.shared.register(id, &shared);
        Ok(dir.display().to_string())
    }
}

/// Whether the checkpoint or savepoint in `dir` reads back: `_metadata` parses, and every
/// state file it references exists with its recorded size.
pub(crate) fn check_readable(dir: &Path) -> Result<(), String> {
    let storage = FsCheckpointStorage::new("/");
    let (dir, meta) =
        rill_state::format::read_metadata(&storage, dir).map_err(|e| e.to_string())?;
    for op in &meta.operators {
        for sub in &op.subtasks {
            for f in sub.files() {
                let path = rill_state::shared::normalize(&f.resolve(&dir));
                match std::fs::metadata(&path) {
                    Ok(m) if m.len() == f.size => {}
                    Ok(m) => {
                        return Err(format!(
                            "{} has {} bytes, the checkpoint recorded {}",
                            path.display(),
                            m.len(),
                            f.size
                        ))
                    }
                    Err(e) => return Err(format!("{}: {e}", path.display())),
                }
            }
        }
    }
    Ok(())
}

/// Makes a savepoint self-contained: copies every file its `parts` reference (written
/// into `chk_dir` and, for incremental backends, the job's shared directory) into a new
/// `savepoint-<job>-<id>` directory under `target_dir`, rewrites the references
/// relative to it and writes `_metadata` there. The directory can then be moved or
/// copied anywhere and still restores. Returns its path.
fn relocate_savepoint(
    job: &rill_dataflow::JobGraph,
    chk_dir: &Path,
    target_dir: &str,
    id: u64,
    timestamp_ms: i64,
    mut parts: Vec<rill_dataflow::state::OperatorSubtaskSnapshot>,
) -> Result<String, String> {
    let target = FsCheckpointStorage::from_url(target_dir).map_err(|e| e.to_string())?;
    let job_id = job.job_id.to_string();
    let dir = target
        .root()
        .join(format!("savepoint-{}-{id}", &job_id[..job_id.len().min(6)]));
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create savepoint directory {}: {e}", dir.display()))?;
    let mut n = 0usize;
    let mut relocate = |f: &mut rill_state::snapshot::StateFileRef| -> Result<(), String> {
        let src = f.resolve(chk_dir);
        let name = format!(
            "{n:05}-{}",
            src.file_name()
                .map_or_else(|| "state".into(), |s| s.to_string_lossy().into_owned())
        );
        n += 1;
        let dst = dir.join(&name);
        std::fs::copy(&src, &dst).map_err(|e| {
            format!(
                "cannot copy {} into the savepoint {}: {e}",
                src.display(),
                dir.display()
            )
        })?;
        f.path = name;
        f.shared = false;
        Ok(())
    };
    for p in &mut parts {
        for f in p.snapshot.files_mut() {
            relocate(f)?;
        }
    }
    write_checkpoint_metadata(
        job,
        &target,
        &dir,
        id,
        timestamp_ms,
        SnapshotKind::Savepoint,
        parts,
    )?;
    Ok(dir.display().to_string())
}

/// Checks a job's savepoint before anything is deployed: `_metadata` must be readable,
/// every operator state in it must belong to an operator uid of the job (unless
/// `allow_non_restored_state`), and keyed state must have the job's max parallelism (its
/// key groups). Answers the savepoint's directory and checkpoint id.
pub(crate) fn check_savepoint(
    job: &rill_dataflow::JobGraph,
    settings: &rill_dataflow::SavepointRestoreSettings,
) -> Result<(String, u64), String> {
    let storage = FsCheckpointStorage::new("/");
    let (dir, meta) = rill_state::format::read_metadata(&storage, Path::new(&settings.path))
        .map_err(|e| format!("cannot restore from savepoint {}: {e}", settings.path))?;
    let mut uids = BTreeMap::new();
    for v in &job.vertices {
        for position in 0..v.operators.len() {
            uids.insert(
                rill_dataflow::state::operator_uid(v, position),
                v.max_parallelism,
            );
        }
    }
    for op in &meta.operators {
        match uids.get(&op.uid) {
            None if !settings.allow_non_restored_state => {
                return Err(format!(
                    "savepoint {} has state for operator uid `{}` ({}), which the job does not have; resume with --allow-non-restored-state to drop it",
                    dir.display(),
                    op.uid,
                    op.name
                ))
            }
            None => {
                tracing::warn!(uid = %op.uid, name = %op.name, "savepoint state of an operator the job lacks is not restored")
            }
            Some(max) => {
                let keyed = op.subtasks.iter().any(|s| s.keyed.is_some());
                if keyed && *max != op.max_parallelism {
                    return Err(format!(
                        "operator `{}` was snapshotted with max parallelism {} but the job has {}: its key groups cannot be redistributed",
                        op.uid, op.max_parallelism, max
                    ));
                }
            }
        }
    }
    Ok((dir.display().to_string(), meta.checkpoint_id))
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
            && self.graph.all_running();
        let Some(c) = &mut self.checkpoints else {
            return;
        };
        if !all_running || c.final_completed || c.stop.is_some() {
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
                    match &result {
                        Ok(path) => {
                            if matches!(request, SnapshotRequest::Savepoint { .. }) {
                                tracing::info!(job = %self.job.job_id, checkpoint_id = id, %path, "savepoint completed");
                            }
                            c.settle(id, SnapshotStatus::Completed { path: path.clone() });
                        }
                        Err(e) => {
                            tracing::warn!(job = %self.job.job_id, checkpoint_id = id, error = %e, "cannot complete checkpoint")
                        }
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
                    // One that started before the last input ended is not final.
                    if !last {
                        self.trigger_final_checkpoint(ctx);
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
                    c.settle(
                        id,
                        SnapshotStatus::Failed {
                            reason: format!("checkpoint {id} {reason}"),
                        },
                    );
                    if c.stop.as_ref().is_some_and(|s| {
                        c.requests.get(&s.request).and_then(|r| r.checkpoint) == Some(id)
                    }) {
                        // The job's sources are stopped: it ends with a final checkpoint.
                        tracing::warn!(job = %self.job.job_id, checkpoint_id = id, "stop-with-savepoint failed; the job finishes with a final checkpoint instead");
                        c.stop = None;
                    }
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
                    let cause = super::FailureCause::CheckpointToleranceExceeded { reason };
                    self.handle_failure(ctx, cause);
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
        let terminating = matches!(
            request,
            SnapshotRequest::Savepoint {
                terminate: true,
                ..
            }
        );
        if c.input_ended.len() as u64 == total && (c.stop.is_none() || terminating) {
            c.final_candidates.insert(id);
        }
        let savepoint = matches!(request, SnapshotRequest::Savepoint { .. });
        let targets: Vec<_> = self
            .graph
            .iter()
            .filter(|((v, k), e)| {
                e.state() == ExecutionState::Running
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
        self.graph
            .subtask_of(execution)
            .map(|(v, k)| SubtaskKey(v, k))
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
            .graph
            .get((key.0, key.1))
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
        if c.input_ended.len() as u64 != total || c.final_completed {
            return;
        }
        if let Some(stop) = c.stop.as_mut().filter(|s| !s.triggered) {
            stop.triggered = true;
            let (request, target_dir) = (stop.request, stop.target_dir.clone());
            let action = c.coordinator.trigger(
                SnapshotRequest::Savepoint {
                    target_dir,
                    terminate: true,
                },
                Instant::now(),
                now_ms() as i64,
            );
            match action {
                Ok(action) => {
                    if let (Action::TriggerSources { id, .. }, Some(r)) =
                        (&action, c.requests.get_mut(&request))
                    {
                        r.checkpoint = Some(*id);
                    }
                    self.apply_checkpoint_actions(ctx, vec![action]);
                }
                Err(e) => {
                    if let Some(r) = c.requests.get_mut(&request) {
                        r.status = SnapshotStatus::Failed {
                            reason: e.to_string(),
                        };
                    }
                    c.stop = None;
                }
            }
        } else {
            self.trigger_final_checkpoint(ctx);
        }
    }

    /// Every task ended its input and no checkpoint is pending: the job's final
    /// checkpoint starts now rather than an interval later (the tasks wait for it).
    fn trigger_final_checkpoint(&mut self, ctx: &mut EndpointContext<'_, Self>) {
        let total = self.total_subtasks();
        let Some(c) = &mut self.checkpoints else {
            return;
        };
        let due = c.input_ended.len() as u64 == total
            && !c.final_completed
            && c.stop.is_none()
            && c.coordinator.pending_ids().is_empty();
        if !due {
            return;
        }
        if let Ok(action) =
            c.coordinator
                .trigger(SnapshotRequest::Checkpoint, Instant::now(), now_ms() as i64)
        {
            self.apply_checkpoint_actions(ctx, vec![action]);
        }
    }

    /// A user asks for a checkpoint (`request` `None`) or a savepoint now; answers the
    /// request id to poll with `snapshot_status`.
    pub(super) fn user_snapshot(
        &mut self,
        ctx: &mut EndpointContext<'_, Self>,
        request: Option<SavepointRequest>,
    ) -> ClusterResult<u64> {
        let all_running = self.status == JobStatus::Running
            && self.to_deploy.is_empty()
            && self.graph.all_running();
        let job = self.job.job_id;
        let status = self.status;
        let total = self.total_subtasks();
        let Some(c) = &mut self.checkpoints else {
            return Err(ClusterError::SnapshotRefused(format!(
                "job {job} takes no checkpoints: checkpoints and savepoints need execution.checkpointing.interval and state.checkpoints.dir"
            )));
        };
        if !all_running {
            return Err(ClusterError::SnapshotRefused(format!(
                "job {job} is {status} and not every task is RUNNING; try again when it is"
            )));
        }
        if c.stop.is_some() {
            return Err(ClusterError::SnapshotRefused(format!(
                "job {job} is stopping with a savepoint"
            )));
        }
        let now = Instant::now();
        let (snapshot, stop) = match request {
            None => (SnapshotRequest::Checkpoint, None),
            Some(r) => {
                let target_dir = r
                    .target_dir
                    .clone()
                    .or_else(|| c.savepoints_dir.clone())
                    .ok_or_else(|| {
                        ClusterError::SnapshotRefused(
                            "no savepoint directory: name one or set state.savepoints.dir".into(),
                        )
                    })?;
                FsCheckpointStorage::from_url(&target_dir).map_err(|e| {
                    ClusterError::SnapshotRefused(format!("bad savepoint directory: {e}"))
                })?;
                if r.terminate {
                    (SnapshotRequest::Checkpoint, Some((target_dir, r.drain)))
                } else {
                    (
                        SnapshotRequest::Savepoint {
                            target_dir,
                            terminate: false,
                        },
                        None,
                    )
                }
            }
        };
        if let Some((target_dir, drain)) = stop {
            let request = c.new_request(None);
            c.stop = Some(PendingStop {
                request,
                target_dir,
                triggered: false,
            });
            let every_input_ended = c.input_ended.len() as u64 == total;
            tracing::info!(%job, drain, "stop-with-savepoint: stopping the sources");
            let sources: Vec<_> = self
                .graph
                .iter()
                .filter(|((v, _), _)| !self.job.edges.iter().any(|e| e.target == *v))
                .filter_map(|(_, e)| {
                    let tm = self.task_managers.get(e.task_executor.as_ref()?)?;
                    Some((tm.gateway.clone(), e.id))
                })
                .collect();
            for (gw, execution) in sources {
                let _ = gw.stop_source(execution, drain);
            }
            // Every input may have ended already (a bounded job at its end).
            if every_input_ended {
                let first = self.graph.iter().next().map(|(_, e)| e.id);
                if let Some(e) = first {
                    self.on_task_input_ended(ctx, e);
                }
            }
            return Ok(request);
        }
        let action = c
            .coordinator
            .trigger(snapshot, now, now_ms() as i64)
            .map_err(|e| ClusterError::SnapshotRefused(format!("cannot trigger: {e}")))?;
        let Action::TriggerSources { id, .. } = &action else {
            return Err(ClusterError::SnapshotRefused(
                "the coordinator did not start a checkpoint".into(),
            ));
        };
        let request = c.new_request(Some(*id));
        self.apply_checkpoint_actions(ctx, vec![action]);
        Ok(request)
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
        if let Some(stop) = c.stop.take() {
            if let Some(r) = c.requests.get_mut(&stop.request) {
                if r.status == SnapshotStatus::InProgress {
                    r.status = SnapshotStatus::Failed {
                        reason: format!("stop-with-savepoint did not complete: {why}"),
                    };
                }
            }
        }
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
