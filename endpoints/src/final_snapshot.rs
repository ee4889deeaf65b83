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
use rill_state::storage::{clean_incomplete, CheckpointLayout, FsCheckpointStorage};
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
    let storage = match FsCheckpointStorage::from_url(checkpoints_dir) {
        Ok(s) => s,
        Err(e) => return failed(e.to_string()),
    };
    let job_id = job.job_id.to_string();
    let layout = CheckpointLayout::new(storage.root().to_path_buf(), job_id.clone());
    let dir: PathBuf = layout.checkpoint_dir(checkpoint_id);
    let written = (|| {
        let mut parts = Vec::new();
        for report in reports {
            match report {
                FinalSnapshotReport::Written(p) => parts.extend(p.iter().cloned()),
                FinalSnapshotReport::Failed(reason) => return Err(reason.clone()),
            }
        }
        write_checkpoint_metadata(
            job,
            &storage,
            &dir,
            checkpoint_id,
            timestamp_ms,
            SnapshotKind::Checkpoint,
            parts,
        )
    })();
    match written {
        Ok(_) => FinalCheckpoint::Completed {
            checkpoint_id,
            path: dir.display().to_string(),
        },
        Err(reason) => {
            // Whatever the tasks wrote is garbage without `_metadata`.
            if let Err(e) = clean_incomplete(&storage, &layout, &[]) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an incomplete final snapshot");
            }
            failed(reason)
        }
    }
}

/// Writes `_metadata` into `dir` from the tasks' snapshot `parts` (grouped by operator
/// uid): what makes a checkpoint or savepoint complete.
pub fn write_checkpoint_metadata(
    job: &JobGraph,
    storage: &dyn rill_state::CheckpointStorage,
    dir: &std::path::Path,
    checkpoint_id: u64,
    timestamp_ms: i64,
    kind: SnapshotKind,
    parts: Vec<rill_dataflow::state::OperatorSubtaskSnapshot>,
) -> Result<(), String> {
    let meta = CheckpointMetadata {
        format_version: FORMAT_VERSION,
        job_id: job.job_id.to_string(),
        job_name: job.name.clone(),
        checkpoint_id,
        timestamp_ms,
        kind,
        operators: group_by_operator(parts),
    };
    write_metadata(storage, dir, &meta)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_dataflow::state::OperatorSubtaskSnapshot;
    use rill_dataflow::{jobs, JobId};
    use rill_state::format::read_metadata;
    use rill_state::snapshot::SubtaskSnapshot;

    fn job() -> JobGraph {
        let mut job = jobs::keyed_sum(Some(10), 2, None, 2).unwrap();
        job.job_id = JobId([7; 16]);
        job
    }

    fn part(subtask: u32) -> FinalSnapshotReport {
        FinalSnapshotReport::Written(vec![OperatorSubtaskSnapshot {
            uid: "keyed-sum-agg".into(),
            name: "count+sum".into(),
            parallelism: 2,
            max_parallelism: 128,
            snapshot: SubtaskSnapshot {
                subtask_index: subtask,
                keyed: None,
                operator: None,
                in_flight: None,
            },
        }])
    }

    #[test]
    fn reports_of_all_subtasks_become_one_metadata_file() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let reports = [part(1), part(0)];
        let FinalCheckpoint::Completed { path, .. } = complete(&job(), &url, 1, 5, &reports) else {
            panic!("not completed")
        };
        let storage = FsCheckpointStorage::new(dir.path());
        let (_, meta) = read_metadata(&storage, std::path::Path::new(&path)).unwrap();
        assert_eq!(meta.checkpoint_id, 1);
        assert_eq!(meta.job_name, "keyed-sum");
        assert_eq!(meta.operators.len(), 1);
        let subtasks: Vec<u32> = meta.operators[0]
            .subtasks
            .iter()
            .map(|s| s.subtask_index)
            .collect();
        assert_eq!(subtasks, [0, 1]);
    }

    #[test]
    fn a_failed_task_snapshot_fails_the_checkpoint_and_removes_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let chk = dir.path().join(job().job_id.to_string()).join("chk-1");
        std::fs::create_dir_all(&chk).unwrap();
        std::fs::write(chk.join("keyed-sum-agg-0-1-keyed.heap"), b"partial").unwrap();
        let reports = [part(0), FinalSnapshotReport::Failed("disk full".into())];
        assert_eq!(
            complete(&job(), &url, 1, 5, &reports),
            FinalCheckpoint::Failed {
                checkpoint_id: 1,
                reason: "disk full".into()
            }
        );
        assert!(!chk.exists(), "incomplete checkpoint left behind");
    }
}
