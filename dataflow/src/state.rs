//! How operators get, restore and snapshot their state (DESIGN §6), on top of rill-state.
//!
//! # Lifecycle of one operator subtask's state
//!
//! 1. **Construction.** The factory gets the [`OperatorContext`], whose
//!    [`StateContext`] carries the task's [`StateConfig`] and TTL clock. A keyed operator
//!    creates its [`KeyedStateBackend`] right away with
//!    [`OperatorContext::create_keyed_backend`] (for
//!    [`KeyGroupRange::of_subtask`] of its subtask) and registers its states, so an
//!    operator that is never restored needs nothing else.
//! 2. **[`initialize_state`](crate::operator::Operator::initialize_state)**, after
//!    construction and before `open`, with a [`StateInitContext`]. If the task restores
//!    from a snapshot, the context holds the snapshot's directory and this operator's
//!    [`OperatorSnapshot`] (matched by uid) plus the storage to read from; the operator
//!    replaces its backend with [`StateInitContext::keyed_backend`] (a fresh backend that
//!    read the key groups it owns from every overlapping old subtask: rescaling) and
//!    registers its states again. Operator state comes from
//!    [`StateInitContext::operator_state_backend`] (even split, union, broadcast copy).
//! 3. **[`snapshot_state`](crate::operator::Operator::snapshot_state)**, on the task
//!    thread between records, with a [`SnapshotContext`]: the operator takes the
//!    synchronous part (a consistent view of its backend) and returns an
//!    [`OperatorStateSnapshot`] whose asynchronous part ([`OperatorStateSnapshot::run`])
//!    serializes and writes files, off the task thread.
//! 4. **`notify_checkpoint_complete` / `notify_checkpoint_aborted`**, forwarded to the
//!    backend (incremental checkpoints rebase on the completed one).
//!
//! # Operator identity
//!
//! State is matched to operators by uid: the user's `.uid(..)`, or else one derived from
//! the job graph's structure ([`operator_uid`]: vertex id and position in the chain, like
//! Flink's generated ids). Derived uids survive resubmitting the same program but not
//! changes of its topology; set explicit uids for jobs whose state must outlive changes.
//!
//! # Final snapshots of bounded jobs
//!
//! A task whose input ends normally and whose [`TaskConfig`](crate::TaskConfig) has both
//! `state.checkpoints.dir` and a `final_snapshot` target snapshots every stateful
//! operator after `end_input`, runs the asynchronous parts on its own thread (nothing
//! else is left to do) and reports one [`OperatorSubtaskSnapshot`] per stateful operator
//! in [`TaskOutcome::Finished`](crate::TaskOutcome::Finished). Whoever deployed the
//! task collects them from all subtasks, groups them with [`group_by_operator`] and
//! writes the snapshot's `_metadata` ([`rill_state::CheckpointMetadata`]).

use std::path::PathBuf;
use std::sync::Arc;

use rill_state::restore::{keyed_handles_for, operator_state_for};
use rill_state::snapshot::{OperatorSnapshot, OperatorStateHandle, SubtaskSnapshot};
use rill_state::{
    AsyncSnapshot, CheckpointStorage, KeyGroupRange, KeyedBackendParams, KeyedStateBackend,
    OperatorStateBackend, SnapshotTarget, StateError, StateKey, SystemTtlClock, TtlClock,
};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::job_graph::JobVertex;
use crate::operator::OperatorContext;
use crate::state_config::StateConfig;

/// The state settings an operator sees: configuration and the TTL clock.
#[derive(Clone)]
pub struct StateContext {
    /// `state.*` configuration.
    pub config: StateConfig,
    /// Processing time for state TTL (injected so tests control it).
    pub clock: Arc<dyn TtlClock>,
    /// The job takes periodic checkpoints: what an operator emitted is only final once
    /// a checkpoint covers it (two-phase-commit sinks commit on checkpoints, even at the
    /// end of input).
    pub checkpointing: bool,
}

impl Default for StateContext {
    fn default() -> Self {
        Self {
            config: StateConfig::default(),
            clock: Arc::new(SystemTtlClock),
            checkpointing: false,
        }
    }
}

impl std::fmt::Debug for StateContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateContext")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OperatorContext {
    /// The key groups this subtask owns.
    pub fn key_group_range(&self) -> KeyGroupRange {
        KeyGroupRange::of_subtask(self.subtask_index, self.parallelism, self.max_parallelism)
    }

    /// A new, empty keyed state backend of the configured kind for this subtask's key
    /// groups.
    pub fn create_keyed_backend<K: StateKey>(&self) -> Result<KeyedStateBackend<K>> {
        let c = &self.state.config;
        let params = KeyedBackendParams {
            operator_uid: self.operator_uid.clone(),
            subtask_index: self.subtask_index,
            max_parallelism: self.max_parallelism,
            key_group_range: self.key_group_range(),
            clock: self.state.clock.clone(),
            local_dir: c.local_dir(),
            incremental: c.is_incremental(),
            lsm_cache_entries: c.lsm_cache_entries,
        };
        Ok(KeyedStateBackend::new(c.backend, params)?)
    }

    /// A new, empty operator-state backend.
    pub fn create_operator_state_backend(&self) -> OperatorStateBackend {
        OperatorStateBackend::new()
    }
}

/// The uid of operator `position` of `vertex`'s chain: the user's `uid`, or
/// `"<vertex id>-op<position>"` (stable for an unchanged job graph).
pub fn operator_uid(vertex: &JobVertex, position: usize) -> String {
    vertex
        .operators
        .get(position)
        .and_then(|o| o.spec.uid.clone())
        .unwrap_or_else(|| format!("{}-op{position}", vertex.id))
}

/// What a task restores from: a snapshot's directory, its storage and operators.
#[derive(Clone)]
pub struct TaskRestore {
    /// The directory holding the snapshot's `_metadata` (handle paths are relative to it).
    pub snapshot_dir: PathBuf,
    /// The storage the snapshot lives in.
    pub storage: Arc<dyn CheckpointStorage>,
    /// The snapshot's operators; each operator of the task takes the one with its uid.
    pub operators: Vec<OperatorSnapshot>,
}

impl std::fmt::Debug for TaskRestore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRestore")
            .field("snapshot_dir", &self.snapshot_dir)
            .field(
                "operators",
                &self.operators.iter().map(|o| &o.uid).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Passed to `initialize_state`: the operator's restored state, if any.
#[derive(Clone, Default)]
pub struct StateInitContext {
    /// The snapshot directory (holding `_metadata`) and this operator's part of it.
    pub restored: Option<(PathBuf, OperatorSnapshot)>,
    /// The storage the snapshot lives in (required when `restored` is set).
    pub storage: Option<Arc<dyn CheckpointStorage>>,
}

impl std::fmt::Debug for StateInitContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateInitContext")
            .field(
                "restored",
                &self.restored.as_ref().map(|(d, o)| (d, &o.uid)),
            )
            .finish_non_exhaustive()
    }
}

impl StateInitContext {
    /// Nothing to restore.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Restores `operator` from a snapshot directory.
    pub fn restoring(
        snapshot_dir: PathBuf,
        operator: OperatorSnapshot,
        storage: Arc<dyn CheckpointStorage>,
    ) -> Self {
        Self {
            restored: Some((snapshot_dir, operator)),
            storage: Some(storage),
        }
    }

    /// Whether there is state to restore.
    pub fn is_restored(&self) -> bool {
        self.restored.is_some()
    }

    fn restore_source(
        &self,
    ) -> Result<Option<(&PathBuf, &OperatorSnapshot, &dyn CheckpointStorage)>> {
        let Some((dir, op)) = &self.restored else {
            return Ok(None);
        };
        let storage = self.storage.as_deref().ok_or_else(|| StateError::Restore {
            reason: format!(
                "operator `{}`: restoring from {} without a checkpoint storage",
                op.uid,
                dir.display()
            ),
        })?;
        Ok(Some((dir, op, storage)))
    }

    /// A keyed backend for `ctx`'s subtask: restored from every old subtask whose key
    /// groups overlap this subtask's (rescaling), or empty without restored state.
    /// Register the operator's states on it afterwards.
    pub fn keyed_backend<K: StateKey>(
        &self,
        ctx: &OperatorContext,
    ) -> Result<KeyedStateBackend<K>> {
        let mut backend = ctx.create_keyed_backend::<K>()?;
        if let Some((dir, op, storage)) = self.restore_source()? {
            if op.max_parallelism != ctx.max_parallelism {
                return Err(StateError::Restore {
                    reason: format!(
                        "operator `{}` was snapshotted with max parallelism {} but runs with {}",
                        op.uid, op.max_parallelism, ctx.max_parallelism
                    ),
                }
                .into());
            }
            let handles = keyed_handles_for(op, backend.key_group_range());
            backend.restore(&handles, dir, storage)?;
        }
        Ok(backend)
    }

    /// An operator-state backend for `ctx`'s subtask, holding its share of the restored
    /// operator state (even split of list state, all of union state, a copy of
    /// broadcast state), or empty.
    pub fn operator_state_backend(&self, ctx: &OperatorContext) -> Result<OperatorStateBackend> {
        let mut backend = ctx.create_operator_state_backend();
        if let Some((dir, op, storage)) = self.restore_source()? {
            let parts = operator_state_for(op, dir, storage, ctx.parallelism, ctx.subtask_index)?;
            backend.restore(parts);
        }
        Ok(backend)
    }
}

/// Passed to `snapshot_state`: which checkpoint, and where its files go.
#[derive(Clone, Debug)]
pub struct SnapshotContext {
    /// The checkpoint (or savepoint) id.
    pub checkpoint_id: u64,
    /// Storage and directories for the snapshot's files.
    pub target: SnapshotTarget,
}

/// The result of an operator's synchronous snapshot: what is left to do off the task
/// thread, and what was already written.
#[derive(Debug, Default)]
pub struct OperatorStateSnapshot {
    /// The keyed state's asynchronous part (serialize and write), if the operator is keyed.
    pub keyed: Option<AsyncSnapshot>,
    /// The operator state, already written (operator state is small), if any.
    pub operator: Option<OperatorStateHandle>,
}

impl OperatorStateSnapshot {
    /// Nothing to snapshot (stateless operators).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Whether the operator has no state in this snapshot.
    pub fn is_empty(&self) -> bool {
        self.keyed.is_none() && self.operator.is_none()
    }

    /// Runs the asynchronous part (call it off the task thread); returns the subtask's
    /// handles.
    pub fn run(self, subtask_index: u32) -> Result<SubtaskSnapshot> {
        let keyed = self.keyed.map(AsyncSnapshot::run).transpose()?;
        Ok(SubtaskSnapshot {
            subtask_index,
            keyed,
            operator: self.operator,
            in_flight: None,
        })
    }
}

/// One stateful operator subtask's part of a snapshot, as a task reports it (in
/// [`TaskOutcome::Finished`](crate::TaskOutcome::Finished) for final snapshots). Plain
/// data: serialize it to ship it to whoever writes `_metadata`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorSubtaskSnapshot {
    /// The operator's uid (see [`operator_uid`]).
    pub uid: String,
    /// The operator's display name.
    pub name: String,
    /// The operator's parallelism.
    pub parallelism: u32,
    /// The operator's max parallelism (number of key groups).
    pub max_parallelism: u32,
    /// This subtask's handles.
    pub snapshot: SubtaskSnapshot,
}

/// Groups subtask snapshots (of any number of tasks) into one [`OperatorSnapshot`] per
/// uid, in the order uids first appear, subtasks sorted by index: the `operators` of a
/// [`rill_state::CheckpointMetadata`].
pub fn group_by_operator(
    parts: impl IntoIterator<Item = OperatorSubtaskSnapshot>,
) -> Vec<OperatorSnapshot> {
    let mut out: Vec<OperatorSnapshot> = Vec::new();
    for p in parts {
        match out.iter_mut().find(|o| o.uid == p.uid) {
            Some(o) => o.subtasks.push(p.snapshot),
            None => out.push(OperatorSnapshot {
                uid: p.uid,
                name: p.name,
                parallelism: p.parallelism,
                max_parallelism: p.max_parallelism,
                subtasks: vec![p.snapshot],
            }),
        }
    }
    for o in &mut out {
        o.subtasks.sort_by_key(|s| s.subtask_index);
    }
    out
}
