//! A task's side of checkpointing: barriers, the snapshot, and its acknowledgement.
//!
//! The JobMaster's checkpoint coordinator decides when a checkpoint starts; a task takes
//! part in it as [`StreamTask`](crate::stream_task::StreamTask) describes:
//!
//! * a **source** task (and a task whose input has ended) is triggered by a
//!   [`Mail::TriggerCheckpoint`](crate::mailbox::Mail::TriggerCheckpoint);
//! * any other task is triggered by the [`CheckpointBarrier`]s on its input channels,
//!   aligned or only tracked by the [`BarrierHandler`](crate::barrier_handler);
//! * the **synchronous part** runs on the task thread between two batches: every
//!   operator's `snapshot_state` (a consistent view of the state backends, source
//!   positions, two-phase-commit sinks' pre-commit), then the barrier is forwarded on
//!   every output;
//! * the **asynchronous part** (serializing and writing keyed state) runs on a thread of
//!   its own, then the task's [`CheckpointResponder`] acknowledges the checkpoint with
//!   the state handles and [`TaskCheckpointStats`], or declines it with the reason (a
//!   panic there declines too). The task waits for these threads before it closes its
//!   operators, whose backends they read.
//!
//! **Unaligned checkpoints** (`execution.checkpointing.unaligned.enabled`): the barrier
//! overtakes the data queued in the task's outputs, and the snapshot is taken at the
//! first barrier; the data that crosses the checkpoint in the channels is stored with it
//! (see [`in_flight`](crate::in_flight)) and the acknowledgement waits until the last
//! barrier arrived. With `execution.checkpointing.aligned-checkpoint-timeout` a
//! checkpoint starts aligned and turns unaligned where its alignment is slow.
//!
//! A failed synchronous part declines the checkpoint and forwards a
//! `CancelCheckpointMarker` instead of the barrier; the task keeps running (the
//! coordinator counts the failure against `execution.checkpointing.tolerable-failed-checkpoints`).
//!
//! **Ending with checkpoints.** A task of a job with checkpoints does not end when its
//! input does: its last records are only safe (and its sink's last transaction only
//! committed) once a checkpoint covering them has completed. So after `end_input` it
//! reports [`CheckpointResponder::input_ended`] and waits: the coordinator triggers it
//! directly, it snapshots its final state, and when the JobMaster says that a
//! checkpoint taken after *every* task ended is complete
//! ([`Mail::CheckpointComplete`](crate::mailbox::Mail::CheckpointComplete) with
//! `last: true`) it finishes (Flink's final checkpoint, FLIP-147). A failure before that
//! restores the previous checkpoint and replays; after it, a restored task finds its
//! sources at their ends and finishes again.

use std::sync::Arc;
use std::time::Duration;

pub use rill_network::{Alignment, CheckpointKind, CheckpointOptions};
use rill_state::storage::{CheckpointLayout, CheckpointStorage};
use rill_state::{SnapshotKind, SnapshotTarget};

use crate::barrier_handler::BarrierMode;
use crate::state::OperatorSubtaskSnapshot;

/// A checkpoint barrier as a task sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointBarrier {
    /// Checkpoint id.
    pub id: u64,
    /// Trigger time, ms since the epoch.
    pub timestamp_ms: i64,
    /// Kind and alignment.
    pub options: CheckpointOptions,
}

impl CheckpointBarrier {
    /// The same checkpoint's unaligned barrier (where an aligned one turns unaligned).
    pub fn unaligned(self) -> Self {
        CheckpointBarrier {
            options: CheckpointOptions {
                alignment: Alignment::Unaligned,
                ..self.options
            },
            ..self
        }
    }

    /// The network event that carries it.
    pub fn to_event(self) -> rill_network::Event {
        rill_network::Event::CheckpointBarrier {
            id: self.id,
            timestamp_ms: self.timestamp_ms,
            options: self.options,
        }
    }
}

/// A checkpoint event a task forwards downstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointEvent {
    /// The barrier of a checkpoint this task has snapshotted.
    Barrier(CheckpointBarrier),
    /// Checkpoint `id` was aborted at or before this task.
    Cancel(u64),
    /// Stop-with-savepoint: no more data follows (end of input comes next); without
    /// `drain` the consumers do not flush their operators (`end_input` is skipped), so
    /// that a job resumed from the savepoint continues where this one stopped.
    EndOfData {
        /// Whether the stop drains the pipeline.
        drain: bool,
    },
}

/// Figures a task reports with its acknowledgement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskCheckpointStats {
    /// Bytes written for this checkpoint (incremental size for incremental backends).
    pub bytes: u64,
    /// In-flight bytes persisted with the state.
    pub in_flight_bytes: u64,
    /// Synchronous part on the task thread, ms.
    pub sync_ms: u64,
    /// Asynchronous part, ms.
    pub async_ms: u64,
    /// First barrier to last at this task's input, ms.
    pub alignment_ms: u64,
}

/// Why a task declines a checkpoint (Flink's `CheckpointFailureReason`s of a task).
/// `task` names the subtask (`"name (i/p)"`); `Display` gives the whole reason.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeclineReason {
    /// The synchronous part failed: an operator's `snapshot_state`.
    SnapshotFailed {
        /// The subtask.
        task: String,
        /// The error.
        message: String,
    },
    /// The asynchronous part failed writing an operator's state (a full disk, an
    /// unwritable directory, …).
    UploadFailed {
        /// The subtask.
        task: String,
        /// The operator whose state could not be written.
        operator: String,
        /// The error.
        message: String,
    },
    /// The in-flight data of an unaligned checkpoint could not be written.
    InFlightFailed {
        /// The subtask.
        task: String,
        /// The error.
        message: String,
    },
    /// A barrier of a newer checkpoint arrived before this one was aligned.
    Subsumed {
        /// The subtask.
        task: String,
        /// The newer checkpoint.
        by: u64,
    },
    /// A cancel marker arrived: the checkpoint was aborted upstream.
    CancelledUpstream {
        /// The subtask.
        task: String,
    },
    /// The task could not take part (no thread for the asynchronous part, a panic in
    /// it).
    TaskFailure {
        /// The subtask.
        task: String,
        /// What happened.
        message: String,
    },
}

impl std::fmt::Display for DeclineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeclineReason::SnapshotFailed { task, message } => {
                write!(f, "{task}: snapshot failed: {message}")
            }
            DeclineReason::UploadFailed {
                task,
                operator,
                message,
            } => write!(f, "{task} ({operator}): {message}"),
            DeclineReason::InFlightFailed { task, message } => {
                write!(f, "{task}: in-flight data: {message}")
            }
            DeclineReason::Subsumed { task, by } => write!(
                f,
                "{task}: the barrier of checkpoint {by} arrived before alignment"
            ),
            DeclineReason::CancelledUpstream { task } => write!(f, "{task}: cancelled upstream"),
            DeclineReason::TaskFailure { task, message } => write!(f, "{task}: {message}"),
        }
    }
}

/// Where a task reports its checkpoints (the TaskExecutor forwards to the JobMaster).
/// Called from the task thread and from snapshot threads.
pub trait CheckpointResponder: Send + Sync {
    /// Checkpoint `id` is written: one entry per stateful operator of the chain.
    fn acknowledge(
        &self,
        id: u64,
        snapshots: Vec<OperatorSubtaskSnapshot>,
        stats: TaskCheckpointStats,
    );

    /// Checkpoint `id` cannot be taken here.
    fn decline(&self, id: u64, reason: DeclineReason);

    /// The task's input has ended; it waits for the final checkpoint.
    fn input_ended(&self);
}

/// A task's checkpoint settings.
#[derive(Clone)]
pub struct TaskCheckpointing {
    /// `execution.checkpointing.mode` at this task's input.
    pub mode: BarrierMode,
    /// The job's checkpoint storage.
    pub storage: Arc<dyn CheckpointStorage>,
    /// The job's directory layout in it.
    pub layout: CheckpointLayout,
    /// Where acknowledgements go.
    pub responder: Arc<dyn CheckpointResponder>,
    /// `execution.checkpointing.aligned-checkpoint-timeout` when unaligned checkpoints
    /// are enabled with a timeout: an aligned checkpoint (never a savepoint) whose
    /// alignment at this task lasts longer turns unaligned (see
    /// [`barrier_handler`](crate::barrier_handler)).
    pub aligned_timeout: Option<Duration>,
}

impl std::fmt::Debug for TaskCheckpointing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCheckpointing")
            .field("mode", &self.mode)
            .field("layout", &self.layout)
            .field("aligned_timeout", &self.aligned_timeout)
            .finish_non_exhaustive()
    }
}

impl TaskCheckpointing {
    /// How this task handles `barrier` at its input, at wall time `now_ms` (ms since the
    /// epoch).
    pub fn barrier_kind(
        &self,
        barrier: &CheckpointBarrier,
        now_ms: i64,
    ) -> crate::barrier_handler::BarrierKind {
        use crate::barrier_handler::BarrierKind;
        match barrier.options.alignment {
            Alignment::Unaligned => BarrierKind::Unaligned,
            Alignment::Aligned | Alignment::AtLeastOnce => BarrierKind::Aligned {
                timeout: self.alignment_time_left(barrier, now_ms),
            },
        }
    }

    /// How much longer aligned checkpoint `barrier` may take to align, at this task's
    /// input or queued in its outputs, before it turns unaligned, at wall time `now_ms`:
    /// the aligned-checkpoint timeout counted from the checkpoint's trigger time (as
    /// Flink does, so that a barrier late at every hop still turns unaligned on time).
    /// `None` if it never does: no timeout, a savepoint, or not an aligned barrier.
    pub fn alignment_time_left(
        &self,
        barrier: &CheckpointBarrier,
        now_ms: i64,
    ) -> Option<Duration> {
        alignment_time_left(self.aligned_timeout, barrier, now_ms)
    }

    /// Where checkpoint `barrier` writes (`chk-<id>`; savepoints are copied into their
    /// own directory by the JobMaster when they complete).
    pub fn target(&self, barrier: &CheckpointBarrier) -> SnapshotTarget {
        let kind = match barrier.options.kind {
            CheckpointKind::Checkpoint => SnapshotKind::Checkpoint,
            CheckpointKind::Savepoint => SnapshotKind::Savepoint,
        };
        self.layout.target(self.storage.clone(), barrier.id, kind)
    }
}

/// See [`TaskCheckpointing::alignment_time_left`].
fn alignment_time_left(
    aligned_timeout: Option<Duration>,
    barrier: &CheckpointBarrier,
    now_ms: i64,
) -> Option<Duration> {
    let timeout = match (barrier.options.alignment, barrier.options.kind) {
        (Alignment::Aligned, CheckpointKind::Checkpoint) => aligned_timeout?,
        _ => return None,
    };
    let elapsed = u64::try_from(now_ms.saturating_sub(barrier.timestamp_ms)).unwrap_or(0);
    Some(timeout.saturating_sub(Duration::from_millis(elapsed)))
}

/// The wall clock, in milliseconds since the epoch (barrier timestamps are on it).
pub(crate) fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Milliseconds of a duration, rounded down.
pub(crate) fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alignment_timeout_counts_from_the_checkpoints_trigger_time() {
        let barrier = |alignment, kind| CheckpointBarrier {
            id: 1,
            timestamp_ms: 1_000,
            options: CheckpointOptions { kind, alignment },
        };
        let aligned = barrier(Alignment::Aligned, CheckpointKind::Checkpoint);
        let timeout = Some(Duration::from_millis(100));
        let left = |now| alignment_time_left(timeout, &aligned, now);
        assert_eq!(left(1_000), Some(Duration::from_millis(100)));
        assert_eq!(left(1_060), Some(Duration::from_millis(40)));
        assert_eq!(
            left(1_500),
            Some(Duration::ZERO),
            "late: turns unaligned now"
        );
        assert_eq!(
            left(900),
            Some(Duration::from_millis(100)),
            "clock skew: the whole timeout"
        );
        assert_eq!(alignment_time_left(None, &aligned, 1_000), None);
        for never in [
            barrier(Alignment::Aligned, CheckpointKind::Savepoint),
            barrier(Alignment::Unaligned, CheckpointKind::Checkpoint),
            barrier(Alignment::AtLeastOnce, CheckpointKind::Checkpoint),
        ] {
            assert_eq!(
                alignment_time_left(timeout, &never, 1_000),
                None,
                "{never:?}"
            );
        }
    }
}
