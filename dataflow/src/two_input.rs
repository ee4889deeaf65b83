//! Two-input operators (Flink's `TwoInputStreamOperator` and `StreamTwoInputProcessor`).
//!
//! **Graph.** Every edge names the input of its target it feeds ([`InputSide`] on
//! [`StreamEdge`](crate::stream_graph::StreamEdge) and [`JobEdge`](crate::job_graph::JobEdge));
//! only a head of a two-input kind ([`OperatorKind::is_two_input`](crate::spec::OperatorKind::is_two_input))
//! has `Second` edges, and it has both kinds ([`JobGraph::validate`](crate::job_graph::JobGraph::validate)).
//! A two-input operator has two input edges, so it is never chained to its inputs; it
//! heads its vertex and may chain one-input operators after it.
//!
//! **Channels.** The channels of both inputs are in the task's one input gate, numbered
//! as [`wiring`](crate::wiring) numbers every gate (edge order, then upstream subtask);
//! [`SubtaskWiring::input_sides`](crate::wiring::SubtaskWiring::input_sides) says which input each channel
//! belongs to, and the chain hands a batch of channel `c` to
//! [`TwoInputOperator::process_batch1`] or [`process_batch2`](TwoInputOperator::process_batch2).
//! Because it is one gate, everything the task does per channel holds across both
//! inputs unchanged:
//!
//! * **watermarks**: the task's [`WatermarkValve`](crate::watermark::WatermarkValve) takes the
//!   minimum over all active channels, which is `min(input 1's watermark, input 2's
//!   watermark)` (an input whose channels are all idle does not hold the other back, as in
//!   Flink); the operator gets that combined watermark;
//! * **checkpoint barriers** align over every channel of both inputs
//!   ([`barrier_handler`](crate::barrier_handler)), so a snapshot sees exactly the records
//!   of both inputs before the barrier and exactly-once holds;
//! * **end of input**: `end_input` runs once, after every channel of both inputs ended.
//!
//! **Keyed two-input operators** have a key selector per input (`OperatorSpec::key` for
//! input 1, `key2` for input 2); both input edges are hash-partitioned by their own key
//! and routed by key group the same way ([`key_group`](crate::key_group)), so records of
//! either input with equal keys meet in one subtask, whose keyed state is keyed by the
//! current record's key.
//!
//! **Dispatch.** The chain holds operators as `Box<dyn Operator>`; a two-input operator
//! is wrapped in [`TwoInputAdapter`], whose `process_batch` is input 1 and
//! [`Operator::process_batch2`] input 2: one dynamic call per batch, as for one-input
//! operators, whose per-record path is untouched.

use serde::{Deserialize, Serialize};

use crate::element::StreamRecord;
use crate::error::Result;
use crate::operator::{Operator, OperatorContext};
use crate::state::{OperatorStateSnapshot, SnapshotContext, StateInitContext};

/// Which input of its target an edge feeds (Flink's type number 1 or 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InputSide {
    /// Input 1: the only input of one-input operators.
    #[default]
    First,
    /// Input 2 of a two-input operator.
    Second,
}

impl InputSide {
    /// Whether this is the default, input 1 (serde skips it).
    pub fn is_first(&self) -> bool {
        *self == InputSide::First
    }
}

/// An operator with two inputs. The hooks mean what they mean on [`Operator`]; only
/// records come per input. Watermarks arrive combined (see the module docs).
pub trait TwoInputOperator: Send {
    /// Prepares the operator. Runs on the task thread.
    fn open(&mut self, _ctx: &OperatorContext) -> Result<()> {
        Ok(())
    }

    /// Creates or restores the operator's state, before [`open`](Self::open).
    fn initialize_state(&mut self, _ctx: &mut StateInitContext) -> Result<()> {
        Ok(())
    }

    /// The synchronous part of a snapshot, between two batches.
    fn snapshot_state(&mut self, _ctx: &SnapshotContext) -> Result<OperatorStateSnapshot> {
        Ok(OperatorStateSnapshot::empty())
    }

    /// Checkpoint `checkpoint_id` completed.
    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> Result<()> {
        Ok(())
    }

    /// Checkpoint `checkpoint_id` was aborted.
    fn notify_checkpoint_aborted(&mut self, _checkpoint_id: u64) -> Result<()> {
        Ok(())
    }

    /// Processes and drains a batch of input 1.
    fn process_batch1(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()>;

    /// Processes and drains a batch of input 2.
    fn process_batch2(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()>;

    /// The combined watermark `min(input 1, input 2)` advanced to `watermark`.
    fn process_watermark(&mut self, _watermark: i64, _out: &mut Vec<StreamRecord>) -> Result<()> {
        Ok(())
    }

    /// The earliest processing-time timer, if any.
    fn next_processing_timer(&self) -> Option<i64> {
        None
    }

    /// Processing time reached `now_ms`: fires the due processing-time timers.
    fn on_processing_time(&mut self, _now_ms: i64, _out: &mut Vec<StreamRecord>) -> Result<()> {
        Ok(())
    }

    /// Hands side-output records to `sink`, by tag.
    fn drain_side_outputs(
        &mut self,
        _sink: &mut dyn FnMut(&str, &mut Vec<StreamRecord>) -> Result<()>,
    ) -> Result<()> {
        Ok(())
    }

    /// Both inputs ended.
    fn end_input(&mut self, _out: &mut Vec<StreamRecord>) -> Result<()> {
        Ok(())
    }

    /// Releases resources.
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A [`TwoInputOperator`] as the chain's [`Operator`]: `process_batch` is input 1,
/// `process_batch2` input 2, every other hook is forwarded.
pub struct TwoInputAdapter<T>(pub T);

impl<T: TwoInputOperator> Operator for TwoInputAdapter<T> {
    fn open(&mut self, ctx: &OperatorContext) -> Result<()> {
        self.0.open(ctx)
    }

    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<()> {
        self.0.initialize_state(ctx)
    }

    fn snapshot_state(&mut self, ctx: &SnapshotContext) -> Result<OperatorStateSnapshot> {
        self.0.snapshot_state(ctx)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        self.0.notify_checkpoint_complete(checkpoint_id)
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> Result<()> {
        self.0.notify_checkpoint_aborted(checkpoint_id)
    }

    fn process_batch(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        self.0.process_batch1(input, out)
    }

    fn process_batch2(
        &mut self,
        input: &mut Vec<StreamRecord>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        self.0.process_batch2(input, out)
    }

    fn process_watermark(&mut self, watermark: i64, out: &mut Vec<StreamRecord>) -> Result<()> {
        self.0.process_watermark(watermark, out)
    }

    fn next_processing_timer(&self) -> Option<i64> {
        self.0.next_processing_timer()
    }

    fn on_processing_time(&mut self, now_ms: i64, out: &mut Vec<StreamRecord>) -> Result<()> {
        self.0.on_processing_time(now_ms, out)
    }

    fn drain_side_outputs(
        &mut self,
        sink: &mut dyn FnMut(&str, &mut Vec<StreamRecord>) -> Result<()>,
    ) -> Result<()> {
        self.0.drain_side_outputs(sink)
    }

    fn end_input(&mut self, out: &mut Vec<StreamRecord>) -> Result<()> {
        self.0.end_input(out)
    }

    fn close(&mut self) -> Result<()> {
        self.0.close()
    }
}
