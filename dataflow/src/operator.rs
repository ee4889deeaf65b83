//! The operator interfaces a task drives.
//!
//! Operators are **batch-at-a-time**: the task hands an operator a `Vec` of records, the
//! operator drains it and appends its results to an output `Vec` that the chain reuses
//! (no allocation in steady state). Dynamic dispatch thus happens once per batch and
//! operator, not per record; generic function operators (`functions`, `keyed`) are
//! monomorphized over the user's closure, so the per-record loop is static code.
//!
//! Lifecycle, per subtask: built by its factory → [`Operator::initialize_state`]
//! (restore) → [`Operator::open`] → any number of `process_batch` / `process_watermark`
//! calls, with [`Operator::snapshot_state`] and the checkpoint notifications in between
//! → [`Operator::end_input`] once if the input ends (bounded jobs; not on cancellation)
//! → [`Operator::close`]. All calls happen on the task's thread. How state is created,
//! restored and snapshotted is described in [`state`](crate::state).
//!
//! Sources implement [`SourceOperator`] instead: the task polls them for a batch, runs
//! pending mails, and polls again, so cancellation is handled between batches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::collect::CollectSink;
use crate::element::StreamRecord;
use crate::error::Result;
use crate::ids::JobId;
use crate::key::KeySelector;
use crate::state::{OperatorStateSnapshot, SnapshotContext, StateContext, StateInitContext};
use crate::value::Value;

/// What an operator knows about where it runs.
#[derive(Clone)]
pub struct OperatorContext {
    /// The job.
    pub job_id: JobId,
    /// The operator's display name.
    pub operator_name: String,
    /// The operator's stable id for state: its `uid`, or one derived from the job graph
    /// ([`operator_uid`](crate::state::operator_uid)).
    pub operator_uid: String,
    /// This subtask's index (`0..parallelism`).
    pub subtask_index: u32,
    /// The operator's parallelism.
    pub parallelism: u32,
    /// The operator's max parallelism (number of key groups).
    pub max_parallelism: u32,
    /// The key selector, for keyed operators (of input 1, for two-input operators).
    pub key_selector: Option<Arc<dyn KeySelector>>,
    /// The key selector of input 2, for keyed two-input operators.
    pub key_selector2: Option<Arc<dyn KeySelector>>,
    /// Where collect sinks send their results, if the runtime provides it.
    pub collect: Option<Arc<dyn CollectSink>>,
    /// State configuration and clock; see
    /// [`create_keyed_backend`](OperatorContext::create_keyed_backend).
    pub state: StateContext,
}

impl std::fmt::Debug for OperatorContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorContext")
            .field("job_id", &self.job_id)
            .field("operator_name", &self.operator_name)
            .field("operator_uid", &self.operator_uid)
            .field("subtask_index", &self.subtask_index)
            .field("parallelism", &self.parallelism)
            .field("max_parallelism", &self.max_parallelism)
            .field("keyed", &self.key_selector.is_some())
            .field("collect", &self.collect.is_some())
            .field("state", &self.state)
            .finish()
    }
}

/// A one-input operator (transform or sink).
pub trait Operator: Send {
    /// Prepares the operator (open files, connections). Runs on the task thread.
    fn open(&mut self, _ctx: &OperatorContext) -> Result<()> {
        Ok(())
    }

    /// Creates or restores the operator's state; called once after construction and
    /// before [`open`](Self::open). Restored state, if any, is in `ctx`.
    fn initialize_state(&mut self, _ctx: &mut StateInitContext) -> Result<()> {
        Ok(())
    }

    /// The synchronous part of a snapshot, between two batches: returns the
    /// asynchronous part, which the caller runs off the task thread.
    fn snapshot_state(&mut self, _ctx: &SnapshotContext) -> Result<OperatorStateSnapshot> {
        Ok(OperatorStateSnapshot::empty())
    }

    /// Checkpoint `checkpoint_id` completed (every task acknowledged it).
    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> Result<()> {
        Ok(())
    }

    /// Checkpoint `checkpoint_id` was aborted.
    fn notify_checkpoint_aborted(&mut self, _checkpoint_id: u64) -> Result<()> {
        Ok(())
    }

    /// Processes and drains every record of `input`, appending results to `out`.
    fn process_batch(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()>;

    /// Processes a batch of input 2 (two-input operators only, see
    /// [`two_input`](crate::two_input)). One-input operators have no input 2: the default
    /// refuses, which the graph check makes unreachable.
    fn process_batch2(
        &mut self,
        _input: &mut Vec<StreamRecord>,
        _out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        Err(crate::error::DataflowError::InvalidGraph(
            "records of input 2 reached a one-input operator".into(),
        ))
    }

    /// Reacts to event time reaching `watermark`; records appended to `out` are emitted
    /// before the watermark, which the chain forwards afterwards.
    fn process_watermark(&mut self, _watermark: i64, _out: &mut Vec<StreamRecord>) -> Result<()> {
        Ok(())
    }

    /// The watermark this operator generated since the last call, if it advanced
    /// (watermark generators such as bounded out-of-orderness): the chain sends it on
    /// after the batch, to chained operators and outputs.
    fn take_generated_watermark(&mut self) -> Option<i64> {
        None
    }

    /// Whether watermarks from upstream pass through this operator. Watermark
    /// generators replace them (`false`); the final watermark `i64::MAX` always passes.
    fn forwards_watermarks(&self) -> bool {
        true
    }

    /// The earliest processing-time timer of this operator (ms since the epoch, on the
    /// task's clock), if any: the task waits on its input at most until then.
    fn next_processing_timer(&self) -> Option<i64> {
        None
    }

    /// Processing time reached `now_ms`: fires the due processing-time timers.
    fn on_processing_time(&mut self, _now_ms: i64, _out: &mut Vec<StreamRecord>) -> Result<()> {
        Ok(())
    }

    /// Hands the records emitted to side outputs since the last call to `sink`, by tag
    /// (see [`side_output`](crate::side_output)). Called after every batch, watermark
    /// and timer callback.
    fn drain_side_outputs(
        &mut self,
        _sink: &mut dyn FnMut(&str, &mut Vec<StreamRecord>) -> Result<()>,
    ) -> Result<()> {
        Ok(())
    }

    /// Called once when all input has ended; a last chance to emit (final aggregates).
    fn end_input(&mut self, _out: &mut Vec<StreamRecord>) -> Result<()> {
        Ok(())
    }

    /// Releases resources; flushes sinks. Called on finish and on cancellation.
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What a source reports after a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceStatus {
    /// More records may be available right away.
    More,
    /// Nothing available now; poll again after at most this long (mails are processed
    /// while waiting, so cancellation stays prompt).
    Idle(Duration),
    /// The source is exhausted (bounded sources only).
    Finished,
}

/// A source operator: the head of a vertex without inputs.
pub trait SourceOperator: Send {
    /// Prepares the source. Runs on the task thread.
    fn open(&mut self, _ctx: &OperatorContext) -> Result<()> {
        Ok(())
    }

    /// Creates or restores the operator's state; called once after construction and
    /// before [`open`](Self::open). Restored state, if any, is in `ctx`.
    fn initialize_state(&mut self, _ctx: &mut StateInitContext) -> Result<()> {
        Ok(())
    }

    /// The synchronous part of a snapshot, between two batches: returns the
    /// asynchronous part, which the caller runs off the task thread.
    fn snapshot_state(&mut self, _ctx: &SnapshotContext) -> Result<OperatorStateSnapshot> {
        Ok(OperatorStateSnapshot::empty())
    }

    /// Checkpoint `checkpoint_id` completed (every task acknowledged it).
    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> Result<()> {
        Ok(())
    }

    /// Checkpoint `checkpoint_id` was aborted.
    fn notify_checkpoint_aborted(&mut self, _checkpoint_id: u64) -> Result<()> {
        Ok(())
    }

    /// Appends up to one batch of records to `out`. `now` is the task's clock reading,
    /// for rate limiting. Must not block for long: return `Idle` instead.
    fn poll_next(&mut self, out: &mut Vec<StreamRecord>, now: Instant) -> Result<SourceStatus>;

    /// Releases resources.
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Emits results of a function, carrying the input record's timestamp by default.
pub struct Collector<'a> {
    out: &'a mut Vec<StreamRecord>,
    timestamp: Option<i64>,
}

impl<'a> Collector<'a> {
    /// A collector appending to `out` with the given current timestamp.
    pub fn new(out: &'a mut Vec<StreamRecord>, timestamp: Option<i64>) -> Self {
        Self { out, timestamp }
    }

    /// The timestamp of the record being processed, if any.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// Emits `value` with the current record's timestamp.
    #[inline]
    pub fn collect(&mut self, value: impl Into<Value>) {
        self.out.push(StreamRecord {
            value: value.into(),
            timestamp: self.timestamp,
        });
    }

    /// Emits `value` with an explicit timestamp.
    pub fn collect_with_timestamp(&mut self, value: impl Into<Value>, timestamp: i64) {
        self.out.push(StreamRecord {
            value: value.into(),
            timestamp: Some(timestamp),
        });
    }
}
