//! The sequence / datagen source.
//!
//! Subtask `i` of `p` emits ids `start + i, start + i + p, …` — strided rather than
//! contiguous ranges, so every subtask covers the whole id range at the same pace
//! (Flink's contiguous split skews event time). The union over subtasks is exactly
//! `start..start + rows` with no overlap. Unbounded when `rows` is `None`. A `rate`
//! (records/s for the whole source) is split evenly over the subtasks.
//!
//! # Checkpoints
//!
//! What a subtask has left to emit is a list of [`Sequence`]s — offsets from `start`:
//! the next one, the stride, and the end (none when unbounded) — kept in operator
//! **list state** [`SEQUENCES_STATE`], one entry per unfinished sequence; a fresh
//! subtask has one, `{next: i, step: p, end: rows}`. The stride is part of each entry
//! because the sequences of different subtasks interleave. A finished subtask snapshots
//! an empty list; list state [`SNAPSHOTTED_STATE`] holds the subtask index, so that
//! every subtask writes a state file and a source whose subtasks have all finished is
//! still in the snapshot (and not restarted from id 0 on restore).
//!
//! On restore the sequences from the snapshot **replace** the ones computed from the
//! configuration (a changed `rows` is ignored; `start` is still read from it). The list
//! is split evenly over the new subtasks: after scaling down a subtask emits several
//! sequences, round-robin one id at a time, so unbounded ones all advance and ids stay
//! roughly in order; after scaling up the extra subtasks get no sequence and finish at
//! once (a sequence is not re-split). Either way every id not emitted before the
//! snapshot is emitted exactly once. A sequence with stride 0 fails the restore with a
//! [`StateError::Restore`]. The rate is that of the new parallelism.

use std::time::Instant;

use rill_state::{OperatorListState, OperatorStateBackend, StateError};
use serde::{Deserialize, Serialize};

use crate::element::StreamRecord;
use crate::error::{DataflowError, Result};
use crate::operator::{OperatorContext, SourceOperator, SourceStatus};
use crate::rate_limiter::RateLimiter;
use crate::state::{OperatorStateSnapshot, SnapshotContext, StateInitContext};
use crate::value::Value;

/// Name of the list state holding a subtask's unfinished [`Sequence`]s.
pub(crate) const SEQUENCES_STATE: &str = "datagen-sequences";
/// Name of the list state holding the index of each subtask that took a snapshot.
pub(crate) const SNAPSHOTTED_STATE: &str = "datagen-snapshotted";

/// Configuration of `rill.source.datagen`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatagenConfig {
    /// Number of ids to emit in total; `None` = unbounded.
    #[serde(default)]
    pub rows: Option<u64>,
    /// Total records per second over all subtasks; `None` = as fast as possible.
    #[serde(default)]
    pub rate: Option<f64>,
    /// First id.
    #[serde(default)]
    pub start: i64,
    /// Records per poll.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

fn default_batch() -> usize {
    1024
}

impl Default for DatagenConfig {
    fn default() -> Self {
        Self {
            rows: None,
            rate: None,
            start: 0,
            batch_size: default_batch(),
        }
    }
}

impl DatagenConfig {
    /// `rows` ids as fast as possible.
    pub fn bounded(rows: u64) -> Self {
        Self {
            rows: Some(rows),
            ..Self::default()
        }
    }
}

/// The id offsets `next, next + step, …` below `end` (all of them if `end` is `None`).
/// Also the element of [`SEQUENCES_STATE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sequence {
    /// Offset (from `start`) of the next id.
    next: u64,
    /// Distance between ids (the parallelism the sequence was created for); ≥ 1.
    step: u64,
    /// Offset bound (exclusive); `None` = unbounded.
    end: Option<u64>,
}

impl Sequence {
    fn is_done(&self) -> bool {
        matches!(self.end, Some(end) if self.next >= end)
    }

    /// Ids left (`u64::MAX` when unbounded).
    fn remaining(&self) -> u64 {
        match self.end {
            Some(end) if self.next >= end => 0,
            // `step` ≥ 1: checked on construction and restore.
            Some(end) => (end - self.next).div_ceil(self.step),
            None => u64::MAX,
        }
    }
}

/// The state handles, registered by `initialize_state`.
#[derive(Clone, Copy)]
struct Handles {
    sequences: OperatorListState<Sequence>,
    snapshotted: OperatorListState<u32>,
}

pub(crate) struct DatagenSource {
    ctx: OperatorContext,
    /// Unfinished sequences, emitted round-robin.
    sequences: Vec<Sequence>,
    /// Index into `sequences` of the one that emits the next id.
    cursor: usize,
    start: i64,
    batch: usize,
    limiter: Option<RateLimiter>,
    backend: OperatorStateBackend,
    state: Option<Handles>,
}

impl DatagenSource {
    pub(crate) fn new(c: DatagenConfig, ctx: &OperatorContext) -> Result<Self> {
        let p = ctx.parallelism.max(1);
        Ok(Self {
            ctx: ctx.clone(),
            sequences: vec![Sequence {
                next: u64::from(ctx.subtask_index),
                step: u64::from(p),
                end: c.rows,
            }],
            cursor: 0,
            start: c.start,
            batch: c.batch_size.max(1),
            limiter: c.rate.map(|r| RateLimiter::new(r / f64::from(p))),
            backend: ctx.create_operator_state_backend(),
            state: None,
        })
    }
}

impl SourceOperator for DatagenSource {
    fn initialize_state(&mut self, init: &mut StateInitContext) -> Result<()> {
        self.backend = init.operator_state_backend(&self.ctx)?;
        let handles = Handles {
            sequences: self.backend.list_state::<Sequence>(SEQUENCES_STATE)?,
            snapshotted: self.backend.list_state::<u32>(SNAPSHOTTED_STATE)?,
        };
        if init.is_restored() {
            let restored = handles.sequences.get(&self.backend)?;
            if let Some(bad) = restored.iter().find(|s| s.step == 0) {
                return Err(StateError::Restore {
                    reason: format!(
                        "datagen source `{}`: restored sequence {bad:?} has stride 0",
                        self.ctx.operator_uid
                    ),
                }
                .into());
            }
            self.sequences = restored;
            self.cursor = 0;
        }
        self.state = Some(handles);
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &SnapshotContext) -> Result<OperatorStateSnapshot> {
        let handles = self.state.ok_or_else(|| {
            DataflowError::InvalidGraph(format!(
                "source `{}` snapshotted before initialize_state",
                self.ctx.operator_uid
            ))
        })?;
        // Starting at the cursor keeps the round-robin order across a restore.
        let n = self.sequences.len();
        let unfinished: Vec<Sequence> = (0..n)
            .map(|k| self.sequences[(self.cursor + k) % n])
            .filter(|s| !s.is_done())
            .collect();
        handles.sequences.update(&mut self.backend, &unfinished)?;
        handles
            .snapshotted
            .update(&mut self.backend, &[self.ctx.subtask_index])?;
        let handle =
            self.backend
                .snapshot(&ctx.target, &self.ctx.operator_uid, self.ctx.subtask_index)?;
        Ok(OperatorStateSnapshot {
            keyed: None,
            operator: handle,
        })
    }

    fn poll_next(&mut self, out: &mut Vec<StreamRecord>, now: Instant) -> Result<SourceStatus> {
        let remaining = self
            .sequences
            .iter()
            .fold(0u64, |sum, s| sum.saturating_add(s.remaining()));
        if remaining == 0 {
            return Ok(SourceStatus::Finished);
        }
        let mut n = remaining.min(self.batch as u64) as usize;
        if let Some(l) = &mut self.limiter {
            match l.acquire(n, now) {
                Ok(allowed) => n = allowed,
                Err(wait) => return Ok(SourceStatus::Idle(wait)),
            }
        }
        out.reserve(n);
        let mut emitted = 0;
        // The sequences hold at least `n` ids, so the loop ends with `emitted == n`.
        while emitted < n && !self.sequences.is_empty() {
            let k = self.cursor % self.sequences.len();
            let s = &mut self.sequences[k];
            if s.is_done() {
                self.sequences.remove(k);
                self.cursor = k;
                continue;
            }
            out.push(StreamRecord {
                value: Value::I64(self.start.wrapping_add(s.next as i64)),
                timestamp: None,
            });
            s.next = s.next.saturating_add(s.step);
            emitted += 1;
            self.cursor = k + 1;
        }
        Ok(SourceStatus::More)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use rill_state::snapshot::OperatorSnapshot;
    use rill_state::SnapshotTarget;

    use super::*;
    use crate::builtins::source_tests;

    fn ctx(i: u32, p: u32) -> OperatorContext {
        source_tests::ctx("datagen", i, p)
    }

    fn ids(records: Vec<StreamRecord>) -> Vec<i64> {
        records
            .into_iter()
            .map(|r| r.value.as_i64().unwrap())
            .collect()
    }

    fn drain(s: &mut DatagenSource) -> Vec<i64> {
        let mut out = Vec::new();
        while s.poll_next(&mut out, Instant::now()).unwrap() == SourceStatus::More {}
        ids(out)
    }

    fn poll_times(s: &mut DatagenSource, polls: usize) -> Vec<i64> {
        let mut out = Vec::new();
        for _ in 0..polls {
            if s.poll_next(&mut out, Instant::now()).unwrap() == SourceStatus::Finished {
                break;
            }
        }
        ids(out)
    }

    #[test]
    fn subtasks_split_rows_without_overlap() {
        let p = 3;
        let mut all = Vec::new();
        for i in 0..p {
            let mut s = DatagenSource::new(
                DatagenConfig {
                    rows: Some(10),
                    batch_size: 2,
                    ..Default::default()
                },
                &ctx(i, p),
            )
            .unwrap();
            all.extend(drain(&mut s));
        }
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn rate_limited_source_goes_idle() {
        let mut s = DatagenSource::new(
            DatagenConfig {
                rate: Some(10.0),
                ..Default::default()
            },
            &ctx(0, 1),
        )
        .unwrap();
        let t = Instant::now();
        let mut out = Vec::new();
        assert_eq!(s.poll_next(&mut out, t).unwrap(), SourceStatus::More);
        assert!(matches!(
            s.poll_next(&mut out, t).unwrap(),
            SourceStatus::Idle(_)
        ));
        assert_eq!(out.len(), 1);
    }

    // ---- checkpoints: snapshot → restore (same or other parallelism) ----

    fn snapshot_all(
        sources: &mut [DatagenSource],
        dir: &Path,
        id: u64,
    ) -> (SnapshotTarget, OperatorSnapshot) {
        source_tests::snapshot_all(sources, "datagen", dir, id)
    }

    /// `p` initialized subtasks, restored from `from` (or fresh).
    fn subtasks(
        c: &DatagenConfig,
        p: u32,
        from: Option<&(SnapshotTarget, OperatorSnapshot)>,
    ) -> Vec<DatagenSource> {
        (0..p)
            .map(|i| {
                let mut s = DatagenSource::new(c.clone(), &ctx(i, p)).unwrap();
                s.initialize_state(&mut source_tests::init_from(from))
                    .unwrap();
                s
            })
            .collect()
    }

    /// For every rescale `p_old → p_new` and snapshot point (polls per old subtask, a
    /// different number for each), ids emitted before the snapshot plus ids emitted by
    /// the restored subtasks are exactly `start..start + rows`, each once.
    #[test]
    fn restore_resumes_the_sequence_exactly_where_the_snapshot_was_taken() {
        let c = DatagenConfig {
            rows: Some(100),
            start: -20,
            batch_size: 3,
            ..Default::default()
        };
        let chk = tempfile::tempdir().unwrap();
        let mut id = 0;
        for (p_old, p_new) in [(1, 1), (2, 2), (3, 2), (2, 3), (1, 3), (3, 1)] {
            for polls in [0, 1, 2, 5, 9, 16, 40] {
                id += 1;
                let mut old = subtasks(&c, p_old, None);
                let mut seen = Vec::new();
                for (i, s) in old.iter_mut().enumerate() {
                    seen.extend(poll_times(s, polls + i * 3));
                }
                let snap = snapshot_all(&mut old, chk.path(), id);
                // Progress after the snapshot is not in it.
                for s in &mut old {
                    poll_times(s, 2);
                }
                let before = seen.len();
                for s in &mut subtasks(&c, p_new, Some(&snap)) {
                    seen.extend(drain(s));
                }
                seen.sort_unstable();
                assert_eq!(
                    seen,
                    (-20..80).collect::<Vec<_>>(),
                    "{p_old} → {p_new} after {polls} polls ({before} ids before)"
                );
            }
        }
    }

    #[test]
    fn unbounded_sequences_merged_by_scaling_down_all_advance() {
        let c = DatagenConfig {
            batch_size: 4,
            ..Default::default()
        };
        let chk = tempfile::tempdir().unwrap();
        let mut old = subtasks(&c, 2, None);
        let mut before = BTreeSet::new();
        for s in &mut old {
            before.extend(poll_times(s, 3));
        }
        assert_eq!(before, (0..24).collect());
        let snap = snapshot_all(&mut old, chk.path(), 1);
        let mut one = subtasks(&c, 1, Some(&snap));
        // Round-robin over both old subtasks' sequences: the ids continue in order.
        assert_eq!(poll_times(&mut one[0], 5), (24..44).collect::<Vec<_>>());
    }

    #[test]
    fn restored_sequence_with_stride_zero_is_a_restore_error() {
        let c = DatagenConfig::bounded(10);
        let chk = tempfile::tempdir().unwrap();
        let mut old = subtasks(&c, 1, None);
        old[0].sequences[0].step = 0;
        let snap = snapshot_all(&mut old, chk.path(), 1);
        let mut s = DatagenSource::new(c, &ctx(0, 1)).unwrap();
        let r = s.initialize_state(&mut source_tests::init_from(Some(&snap)));
        assert!(
            matches!(r, Err(DataflowError::State(StateError::Restore { .. }))),
            "{r:?}"
        );
    }
}
