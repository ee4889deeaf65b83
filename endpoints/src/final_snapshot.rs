//! Completing the final snapshot of a finished bounded job.
//!
//! When the JobManager has `state.checkpoints.dir`, every task is deployed with a
//! [`FinalSnapshotSpec`]: once its input has ended (after `end_input`, so the state is
//! final and therefore consistent across all tasks without barriers), the task snapshots
//! its stateful operators into `<dir>/<job-id>/chk-<id>/` and reports the handles with
//! its `Finished` state. When every task has finished, the JobMaster calls
//! [`complete`]: it groups the reports by operator uid into a
//! [`CheckpointMetadata`] and writes `_metadata` atomically, which is what makes the
//! snapshot a completed checkpoint that `rill state inspect` / `dump` read (and that a
//! job can later be restored from). A failed task snapshot or metadata write fails the
//! checkpoint, never the job: its results were already produced.
//!
//! This is Flink's "final checkpoint" of finished tasks (FLIP-147) for jobs without
//! periodic checkpoints; the checkpoint coordinator of the periodic-checkpoint work
//! subsumes it.

use std::path::PathBuf;

use rill_dataflow::state::group_by_operator;
use rill_dataflow::JobGraph;
use rill_state::format::write_metadata;
use rill_state::snapshot::FORMAT_VERSION;
use rill_state::storage::{CheckpointLayout, FsCheckpointStorage};
use rill_state::{CheckpointMetadata, SnapshotKind};

use crate::messages::{FinalCheckpoint, FinalSnapshotReport};

/// Checkpoint id of the final snapshot (the only checkpoint a job without periodic
/// checkpoints takes).
pub const FINAL_CHECKPOINT_ID: u64 = 1;

/// Writes `_metadata` for the final snapshot of `job` from the tasks' `reports` (one per
/// finished task that had a snapshot spec) into the storage at `checkpoints_dir`.
pub fn complete<'a>(
    job: &JobGraph,
    checkpoints_dir: &str,
    checkpoint_id: u64,
    timestamp_ms: i64,
    reports: impl IntoIterator<Item = &'a FinalSnapshotReport>,
) -> FinalCheckpoint {
    let failed = |reason: String| FinalCheckpoint::Failed {
        checkpoint_id,
        reason,
    };
    let mut parts = Vec::new();
    for report in reports {
        match report {
            FinalSnapshotReport::Written(p) => parts.extend(p.iter().cloned()),
            FinalSnapshotReport::Failed(reason) => return failed(reason.clone()),
        }
    }
    let storage = match FsCheckpointStorage::from_url(checkpoints_dir) {
        Ok(s) => s,
        Err(e) => return failed(e.to_string()),
    };
    let job_id = job.job_id.to_string();
    let layout = CheckpointLayout::new(storage.root().to_path_buf(), job_id.clone());
    let dir: PathBuf = layout.checkpoint_dir(checkpoint_id);
    let meta = CheckpointMetadata {
        format_version: FORMAT_VERSION,
        job_id,
        job_name: job.name.clone(),
        checkpoint_id,
        timestamp_ms,
        kind: SnapshotKind::Checkpoint,
        operators: group_by_operator(parts),
    };
    match write_metadata(&storage, &dir, &meta) {
        Ok(_) => FinalCheckpoint::Completed {
            checkpoint_id,
            path: dir.display().to_string(),
        },
        Err(e) => failed(e.to_string()),
    }
}
