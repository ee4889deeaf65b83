//! Test helpers shared by the sources' checkpoint tests: snapshot every subtask of a
//! source through the real operator-state backend and checkpoint storage, and restore
//! new subtasks from it.

use std::path::Path;
use std::sync::Arc;

use rill_state::snapshot::{OperatorSnapshot, SnapshotKind};
use rill_state::storage::CheckpointLayout;
use rill_state::{CheckpointStorage, FsCheckpointStorage, SnapshotTarget};

use crate::ids::JobId;
use crate::operator::{OperatorContext, SourceOperator};
use crate::state::{SnapshotContext, StateInitContext};

/// The context of subtask `i` of `p` of a source with uid (and name) `uid`.
pub(crate) fn ctx(uid: &str, i: u32, p: u32) -> OperatorContext {
    OperatorContext {
        job_id: JobId([0; 16]),
        operator_name: uid.into(),
        operator_uid: uid.into(),
        subtask_index: i,
        parallelism: p,
        max_parallelism: 128,
        key_selector: None,
        key_selector2: None,
        collect: None,
        state: crate::state::StateContext::default(),
    }
}

/// Snapshots every subtask (subtask `i` = `sources[i]`) of the source `uid` into
/// checkpoint `id` under `dir`.
pub(crate) fn snapshot_all<S: SourceOperator>(
    sources: &mut [S],
    uid: &str,
    dir: &Path,
    id: u64,
) -> (SnapshotTarget, OperatorSnapshot) {
    let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::new(dir));
    let target = CheckpointLayout::new(dir, "job").target(storage, id, SnapshotKind::Checkpoint);
    let ctx = SnapshotContext {
        checkpoint_id: id,
        target: target.clone(),
    };
    let subtasks = sources
        .iter_mut()
        .enumerate()
        .map(|(i, s)| s.snapshot_state(&ctx).unwrap().run(i as u32).unwrap())
        .collect();
    let snapshot = OperatorSnapshot {
        uid: uid.into(),
        name: uid.into(),
        parallelism: sources.len() as u32,
        max_parallelism: 128,
        subtasks,
    };
    (target, snapshot)
}

/// What `initialize_state` gets: the snapshot `from`, or nothing.
pub(crate) fn init_from(from: Option<&(SnapshotTarget, OperatorSnapshot)>) -> StateInitContext {
    match from {
        Some((t, snap)) => {
            StateInitContext::restoring(t.exclusive_dir.clone(), snap.clone(), t.storage.clone())
        }
        None => StateInitContext::empty(),
    }
}
