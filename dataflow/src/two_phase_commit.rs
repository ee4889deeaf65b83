//! Exactly-once sinks: two-phase commit tied to checkpoints (Flink's
//! `TwoPhaseCommitSinkFunction`).
//!
//! A [`TwoPhaseCommitSink`] writes records into a *transaction*. The
//! [`TwoPhaseCommitOperator`] drives it from the checkpoint hooks:
//!
//! * `snapshot_state(n)` — **pre-commit** the current transaction (make its data durable
//!   but invisible), remember it as pending for checkpoint `n` and store every pending
//!   transaction in operator state; the next record begins a new transaction;
//! * `notify_checkpoint_complete(n)` — **commit** every pending transaction of a
//!   checkpoint ≤ `n` (a transaction of an aborted checkpoint stays pending and is
//!   committed by the next completed one, whose state covers its records too);
//! * `initialize_state` after a failure — the restored checkpoint completed, so its
//!   pending transactions are **committed again** (commit must be idempotent: the first
//!   attempt may or may not have happened), and every transaction begun after it is
//!   **cleaned up** (aborted): its records are replayed from the checkpoint;
//! * end of input (bounded jobs) — without checkpoints, pre-commit and commit the last
//!   transaction: nothing can replay it any more; with checkpoints, nothing: the task's
//!   final checkpoint pre-commits it and its completion commits it (see
//!   [`checkpoint`](crate::checkpoint)), so a failure before then replays it exactly once.
//!
//! Transactions are kept in *union* operator state tagged with the subtask that began
//! them, so after rescaling each old subtask's transactions are recovered by exactly one
//! new subtask (`old_subtask % new_parallelism`), which also tells the sink to clean up
//! whatever else that old subtask left behind.

use std::collections::BTreeMap;

use rill_state::{OperatorListState, OperatorStateBackend, StateData};
use serde::{Deserialize, Serialize};

use crate::element::StreamRecord;
use crate::error::Result;
use crate::operator::{Operator, OperatorContext};
use crate::state::{OperatorStateSnapshot, SnapshotContext, StateInitContext};

/// A sink with transactions: what [`TwoPhaseCommitOperator`] runs.
pub trait TwoPhaseCommitSink: Send + 'static {
    /// A transaction's durable description (stored in checkpoints).
    type Txn: StateData + Clone + std::fmt::Debug;

    /// Starts a transaction.
    fn begin(&mut self) -> Result<Self::Txn>;

    /// Writes records into `txn`.
    fn write(&mut self, txn: &mut Self::Txn, records: &mut Vec<StreamRecord>) -> Result<()>;

    /// Makes `txn`'s data durable, ready to commit; nothing is visible yet.
    fn pre_commit(&mut self, txn: &mut Self::Txn) -> Result<()>;

    /// Makes a pre-committed `txn` visible. Must be idempotent: recovery calls it again
    /// for transactions that may already be committed.
    fn commit(&mut self, txn: &Self::Txn) -> Result<()>;

    /// Discards `txn` (pre-committed or not, possibly already discarded).
    fn abort(&mut self, txn: &Self::Txn) -> Result<()>;

    /// After recovery, removes what `old_subtask` began after the restored checkpoint
    /// (or, on a fresh start, anything a previous attempt of this subtask left); the
    /// transactions named in `keep` are already committed and must stay.
    fn clean_up_after(&mut self, old_subtask: u32, keep: &[Self::Txn]) -> Result<()>;
}

/// Name of the union list state holding the transactions.
pub const TRANSACTIONS_STATE: &str = "2pc-transactions";

/// One subtask's transactions in a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "T: Serialize + serde::de::DeserializeOwned")]
pub struct SubtaskTransactions<T> {
    /// The subtask that began them.
    pub subtask: u32,
    /// Pre-committed transactions by checkpoint id.
    pub pending: Vec<(u64, T)>,
}

/// Runs a [`TwoPhaseCommitSink`] from the checkpoint hooks.
pub struct TwoPhaseCommitOperator<S: TwoPhaseCommitSink> {
    sink: S,
    ctx: OperatorContext,
    current: Option<S::Txn>,
    pending: BTreeMap<u64, S::Txn>,
    backend: OperatorStateBackend,
    state: Option<OperatorListState<SubtaskTransactions<S::Txn>>>,
}

impl<S: TwoPhaseCommitSink> TwoPhaseCommitOperator<S> {
    /// An operator over `sink` for the subtask of `ctx`.
    pub fn new(sink: S, ctx: &OperatorContext) -> Self {
        Self {
            sink,
            ctx: ctx.clone(),
            current: None,
            pending: BTreeMap::new(),
            backend: ctx.create_operator_state_backend(),
            state: None,
        }
    }

    /// The sink (tests).
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Ids of checkpoints whose transactions await commit.
    pub fn pending_checkpoints(&self) -> Vec<u64> {
        self.pending.keys().copied().collect()
    }
}

impl<S: TwoPhaseCommitSink> Operator for TwoPhaseCommitOperator<S> {
    fn initialize_state(&mut self, init: &mut StateInitContext) -> Result<()> {
        self.backend = init.operator_state_backend(&self.ctx)?;
        let state = self
            .backend
            .union_list_state::<SubtaskTransactions<S::Txn>>(TRANSACTIONS_STATE)?;
        let restored = state.get(&self.backend)?;
        let (me, parallelism) = (self.ctx.subtask_index, self.ctx.parallelism.max(1));
        let mut mine_seen = false;
        for t in restored {
            if t.subtask % parallelism != me {
                continue;
            }
            mine_seen |= t.subtask == me;
            let committed: Vec<S::Txn> = t.pending.into_iter().map(|(_, txn)| txn).collect();
            for txn in &committed {
                self.sink.commit(txn)?;
            }
            self.sink.clean_up_after(t.subtask, &committed)?;
        }
        if !mine_seen {
            // A fresh start, or a subtask that did not exist before a rescale: what a
            // previous attempt of this subtask index left uncommitted is garbage.
            self.sink.clean_up_after(me, &[])?;
        }
        state.clear(&mut self.backend)?;
        self.state = Some(state);
        Ok(())
    }

    fn process_batch(
        &mut self,
        input: &mut Vec<StreamRecord>,
        _out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        if input.is_empty() {
            return Ok(());
        }
        if self.current.is_none() {
            self.current = Some(self.sink.begin()?);
        }
        let txn = self.current.as_mut().expect("begun above");
        self.sink.write(txn, input)
    }

    fn snapshot_state(&mut self, ctx: &SnapshotContext) -> Result<OperatorStateSnapshot> {
        // A failed pre-commit keeps the transaction current (the checkpoint is declined,
        // the next one pre-commits it again); a failed state write below keeps it
        // pending, for the next completed checkpoint to commit.
        if let Some(txn) = self.current.as_mut() {
            self.sink.pre_commit(txn)?;
        }
        if let Some(txn) = self.current.take() {
            self.pending.insert(ctx.checkpoint_id, txn);
        }
        let record = SubtaskTransactions {
            subtask: self.ctx.subtask_index,
            pending: self.pending.iter().map(|(k, v)| (*k, v.clone())).collect(),
        };
        let state = self.state.as_ref().ok_or_else(|| {
            crate::error::DataflowError::InvalidGraph(format!(
                "operator `{}` snapshotted before initialize_state",
                self.ctx.operator_uid
            ))
        })?;
        state.update(&mut self.backend, std::slice::from_ref(&record))?;
        let handle =
            self.backend
                .snapshot(&ctx.target, &self.ctx.operator_uid, self.ctx.subtask_index)?;
        Ok(OperatorStateSnapshot {
            keyed: None,
            operator: handle,
        })
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        let later = self.pending.split_off(&(checkpoint_id + 1));
        let due = std::mem::replace(&mut self.pending, later);
        for txn in due.values() {
            self.sink.commit(txn)?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        // Cancelled or failed mid-transaction: its records were never acknowledged by a
        // checkpoint. Pre-committed ones stay for a recovery to commit.
        if let Some(txn) = self.current.take() {
            self.sink.abort(&txn)?;
        }
        Ok(())
    }

    fn end_input(&mut self, _out: &mut Vec<StreamRecord>) -> Result<()> {
        if self.ctx.state.checkpointing {
            // The task waits for a final checkpoint, which pre-commits the last
            // transaction; it commits when that checkpoint completes.
            return Ok(());
        }
        // Without checkpoints nothing can replay these records any more: commit
        // everything.
        let mut last = self.current.take();
        if let Some(txn) = &mut last {
            self.sink.pre_commit(txn)?;
        }
        for txn in std::mem::take(&mut self.pending)
            .values()
            .chain(last.as_ref())
        {
            self.sink.commit(txn)?;
        }
        Ok(())
    }
}
