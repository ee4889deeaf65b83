//! The operator chain of one subtask: operators connected by direct calls.
//!
//! Built from a [`JobVertex`]'s chain (a tree, see `job_graph`). A batch pushed into an
//! operator is processed into that operator's reusable output buffer, which then goes to
//! each consumer — chained operators (recursively) and output edges. The last consumer
//! gets the buffer itself; earlier ones get a copy, so the common single-consumer chain
//! never clones a record. No queue sits between chained operators.
//!
//! Watermarks and end of input walk the tree the same way: an operator first handles
//! them (possibly emitting records, which are delivered first), then its consumers
//! receive them. Hash-partitioned outputs get each record's target channel computed
//! here: the downstream subtask that owns the key's key group,
//! [`operator_index_for_key`] over the target vertex's parallelism and max parallelism.
//!
//! State: [`OperatorChain::initialize_state`] hands every operator its part of a
//! restored snapshot (matched by operator uid) before `open`;
//! [`OperatorChain::snapshot`] takes every stateful operator's synchronous snapshot;
//! checkpoint notifications go to every operator (see [`state`](crate::state)).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint::{CheckpointBarrier, CheckpointEvent};
use crate::collect::CollectSink;
use crate::element::{StreamEvent, StreamRecord};
use crate::error::{DataflowError, Result};
use crate::job_graph::{JobGraph, JobVertex};
use crate::key::KeySelector;
use crate::key_group::operator_index_for_key;
use crate::operator::{Operator, OperatorContext, SourceOperator, SourceStatus};
use crate::partitioning::Partitioning;
use crate::registry::{OperatorKind, OperatorRegistry};
use crate::state::{
    operator_uid, OperatorStateSnapshot, SnapshotContext, StateContext, StateInitContext,
    TaskRestore,
};
use crate::task_io::TaskOutput;
use crate::two_input::InputSide;
use rill_network::QueuedBarrier;
use rill_state::SnapshotTarget;

struct Node {
    /// `None` for a source head: its records enter through `push_source`.
    op: Option<Box<dyn Operator>>,
    ctx: OperatorContext,
    chained: Vec<usize>,
    outputs: Vec<usize>,
    /// Output edges consuming one of the operator's side outputs: (tag, output).
    side_outputs: Vec<(String, usize)>,
    /// Output buffer, reused across batches.
    out: Vec<StreamRecord>,
    /// Copy buffer for all but the last consumer.
    scratch: Vec<StreamRecord>,
}

/// What `walk` does at each operator (watermark or end-of-input handling).
type OperatorStep<'a> = dyn FnMut(&mut dyn Operator, &mut Vec<StreamRecord>) -> Result<()> + 'a;

struct Output {
    output: Box<dyn TaskOutput>,
    /// Hash-partitioned edges only.
    route: Option<KeyRoute>,
    /// Target channel per record of the batch being emitted (hash edges).
    channels: Vec<u32>,
}

/// How a hash edge picks the channel of a record: the key's owner among the target
/// vertex's subtasks (output channel `k` of an all-to-all edge is target subtask `k`).
struct KeyRoute {
    key: Arc<dyn KeySelector>,
    parallelism: u32,
    max_parallelism: u32,
}

/// A running chain of one subtask.
pub(crate) struct OperatorChain {
    source: Option<Box<dyn SourceOperator>>,
    /// Which input of the head each input channel feeds; empty unless the head has two
    /// inputs (every channel then feeds input 1).
    channel_sides: Vec<InputSide>,
    nodes: Vec<Node>,
    outputs: Vec<Output>,
}

impl OperatorChain {
    /// Instantiates `vertex`'s operators for subtask `subtask_index`; `outputs[i]` is the
    /// output for the vertex's `i`-th output edge; `state` is what operators get for
    /// their state.
    pub(crate) fn build(
        job: &JobGraph,
        vertex: &JobVertex,
        subtask_index: u32,
        registry: &OperatorRegistry,
        collect: Option<Arc<dyn CollectSink>>,
        outputs: Vec<Box<dyn TaskOutput>>,
        state: &StateContext,
    ) -> Result<Self> {
        let edges: Vec<_> = job.output_edges(vertex.id).map(|(_, e)| e).collect();
        if edges.len() != outputs.len() {
            return Err(DataflowError::InvalidGraph(format!(
                "vertex `{}` has {} output edges but the task got {} outputs",
                vertex.name,
                edges.len(),
                outputs.len()
            )));
        }
        let mut nodes: Vec<Node> = Vec::with_capacity(vertex.operators.len());
        let mut source = None;
        for (i, op) in vertex.operators.iter().enumerate() {
            let ctx = OperatorContext {
                job_id: job.job_id,
                operator_name: op.spec.name.clone(),
                operator_uid: operator_uid(vertex, i),
                subtask_index,
                parallelism: vertex.parallelism,
                max_parallelism: vertex.max_parallelism,
                key_selector: op
                    .spec
                    .key
                    .as_ref()
                    .map(|k| registry.key_selector(k))
                    .transpose()?,
                key_selector2: op
                    .spec
                    .key2
                    .as_ref()
                    .map(|k| registry.key_selector(k))
                    .transpose()?,
                collect: collect.clone(),
                state: state.clone(),
            };
            let built = if i == 0 && op.spec.kind == OperatorKind::Source {
                source = Some(registry.create_source(&op.spec, &ctx)?);
                None
            } else {
                Some(registry.create_operator(&op.spec, &ctx)?)
            };
            nodes.push(Node {
                op: built,
                ctx,
                chained: op.chained_outputs.clone(),
                outputs: Vec::new(),
                side_outputs: Vec::new(),
                out: Vec::new(),
                scratch: Vec::new(),
            });
        }
        let mut outs = Vec::with_capacity(outputs.len());
        for (i, (edge, output)) in edges.into_iter().zip(outputs).enumerate() {
            let node = nodes.get_mut(edge.source_operator).ok_or_else(|| {
                DataflowError::InvalidGraph(format!(
                    "output edge leaves missing operator {}",
                    edge.source_operator
                ))
            })?;
            match &edge.side_output {
                Some(tag) => node.side_outputs.push((tag.clone(), i)),
                None => node.outputs.push(i),
            }
            let route = match &edge.partitioning {
                Partitioning::Hash { key } => {
                    let target = job.vertex(edge.target).ok_or_else(|| {
                        DataflowError::InvalidGraph(format!("no vertex {}", edge.target))
                    })?;
                    Some(KeyRoute {
                        key: registry.key_selector(key)?,
                        parallelism: target.parallelism,
                        max_parallelism: target.max_parallelism,
                    })
                }
                _ => None,
            };
            outs.push(Output {
                output,
                route,
                channels: Vec::new(),
            });
        }
        let two_input = vertex
            .operators
            .first()
            .is_some_and(|h| h.spec.kind.is_two_input());
        let channel_sides = if two_input {
            job.wiring(vertex.id, subtask_index)?.input_sides(job)
        } else {
            Vec::new()
        };
        Ok(Self {
            source,
            channel_sides,
            nodes,
            outputs: outs,
        })
    }

    /// Whether the head is a source.
    pub(crate) fn is_source(&self) -> bool {
        self.source.is_some()
    }

    /// Calls `initialize_state` on every operator (head first), handing each the
    /// operator of `restore` with its uid, if any.
    pub(crate) fn initialize_state(&mut self, restore: Option<&TaskRestore>) -> Result<()> {
        let init_for = |ctx: &OperatorContext| -> StateInitContext {
            match restore.and_then(|r| {
                r.operators
                    .iter()
                    .find(|o| o.uid == ctx.operator_uid)
                    .map(|o| (r, o))
            }) {
                Some((r, o)) => StateInitContext::restoring(
                    r.snapshot_dir.clone(),
                    o.clone(),
                    r.storage.clone(),
                ),
                None => StateInitContext::empty(),
            }
        };
        if let (Some(s), Some(head)) = (&mut self.source, self.nodes.first()) {
            s.initialize_state(&mut init_for(&head.ctx))?;
        }
        for node in &mut self.nodes {
            if let Some(op) = &mut node.op {
                op.initialize_state(&mut init_for(&node.ctx))?;
            }
        }
        Ok(())
    }

    /// Takes the synchronous snapshot of every operator, head first; returns the
    /// stateful ones' asynchronous parts by operator uid.
    pub(crate) fn snapshot(
        &mut self,
        checkpoint_id: u64,
        target: &SnapshotTarget,
    ) -> Result<Vec<(String, OperatorStateSnapshot)>> {
        let ctx = SnapshotContext {
            checkpoint_id,
            target: target.clone(),
        };
        let mut out = Vec::new();
        if let (Some(s), Some(head)) = (&mut self.source, self.nodes.first()) {
            let snap = s.snapshot_state(&ctx)?;
            if !snap.is_empty() {
                out.push((head.ctx.operator_uid.clone(), snap));
            }
        }
        for node in &mut self.nodes {
            if let Some(op) = &mut node.op {
                let snap = op.snapshot_state(&ctx)?;
                if !snap.is_empty() {
                    out.push((node.ctx.operator_uid.clone(), snap));
                }
            }
        }
        Ok(out)
    }

    /// The context of the operator with this uid.
    pub(crate) fn operator_context(&self, uid: &str) -> Option<&OperatorContext> {
        self.nodes
            .iter()
            .map(|n| &n.ctx)
            .find(|c| c.operator_uid == uid)
    }

    /// Tells every operator that checkpoint `checkpoint_id` completed; returns the first
    /// error after notifying all.
    pub(crate) fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        self.notify(
            |op| op.notify_checkpoint_complete(checkpoint_id),
            |s| s.notify_checkpoint_complete(checkpoint_id),
        )
    }

    /// Tells every operator that checkpoint `checkpoint_id` was aborted.
    pub(crate) fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> Result<()> {
        self.notify(
            |op| op.notify_checkpoint_aborted(checkpoint_id),
            |s| s.notify_checkpoint_aborted(checkpoint_id),
        )
    }

    fn notify(
        &mut self,
        mut f: impl FnMut(&mut dyn Operator) -> Result<()>,
        source: impl FnOnce(&mut dyn SourceOperator) -> Result<()>,
    ) -> Result<()> {
        let mut first = None;
        if let Some(s) = &mut self.source {
            first = source(s.as_mut()).err();
        }
        for node in &mut self.nodes {
            if let Some(op) = &mut node.op {
                if let Err(e) = f(op.as_mut()) {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Opens operators, tail first so consumers are ready before producers.
    pub(crate) fn open(&mut self) -> Result<()> {
        for node in self.nodes.iter_mut().rev() {
            if let Some(op) = &mut node.op {
                op.open(&node.ctx)?;
            }
        }
        if let (Some(s), Some(head)) = (&mut self.source, self.nodes.first()) {
            s.open(&head.ctx)?;
        }
        Ok(())
    }

    /// Closes every operator head first; returns the first error after closing all.
    pub(crate) fn close(&mut self) -> Result<()> {
        let mut first = None;
        if let Some(s) = &mut self.source {
            first = s.close().err();
        }
        for node in &mut self.nodes {
            if let Some(op) = &mut node.op {
                if let Err(e) = op.close() {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Polls the source head for one batch and pushes it down the chain.
    pub(crate) fn poll_source(
        &mut self,
        buf: &mut Vec<StreamRecord>,
        now: Instant,
    ) -> Result<SourceStatus> {
        let Some(source) = &mut self.source else {
            return Err(DataflowError::InvalidGraph(
                "polled a chain without a source".into(),
            ));
        };
        let status = source.poll_next(buf, now)?;
        self.distribute(0, buf)?;
        buf.clear();
        Ok(status)
    }

    /// Pushes records of input channel `channel` into the head operator (into its input
    /// 1 or 2 when it has two).
    pub(crate) fn push_input(
        &mut self,
        channel: usize,
        records: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        let side = self
            .channel_sides
            .get(channel)
            .copied()
            .unwrap_or(InputSide::First);
        self.push_side(0, side, records)
    }

    fn push(&mut self, idx: usize, input: &mut Vec<StreamRecord>) -> Result<()> {
        self.push_side(idx, InputSide::First, input)
    }

    fn push_side(
        &mut self,
        idx: usize,
        side: InputSide,
        input: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        if input.is_empty() {
            return Ok(());
        }
        let mut out = std::mem::take(&mut self.nodes[idx].out);
        let res = match (&mut self.nodes[idx].op, side) {
            (Some(op), InputSide::First) => op.process_batch(input, &mut out),
            (Some(op), InputSide::Second) => op.process_batch2(input, &mut out),
            (None, _) => Err(DataflowError::InvalidGraph(
                "records pushed into a source".into(),
            )),
        };
        let res = res
            .and_then(|()| self.distribute(idx, &mut out))
            .and_then(|()| self.route_side_outputs(idx));
        out.clear();
        self.nodes[idx].out = out;
        res?;
        let generated = self.nodes[idx]
            .op
            .as_mut()
            .and_then(|op| op.take_generated_watermark());
        match generated {
            Some(w) => self.walk_children(
                idx,
                &mut |op, out| op.process_watermark(w, out),
                StreamEvent::Watermark(w),
            ),
            None => Ok(()),
        }
    }

    /// Sends what operator `idx` emitted to side outputs to the output edges consuming
    /// each tag; tags nobody consumes are dropped.
    fn route_side_outputs(&mut self, idx: usize) -> Result<()> {
        let node = &mut self.nodes[idx];
        let Some(op) = &mut node.op else {
            return Ok(());
        };
        let (side, outputs) = (&node.side_outputs, &mut self.outputs);
        op.drain_side_outputs(&mut |tag, records| {
            for (t, o) in side {
                if t == tag {
                    let mut copy = records.clone();
                    emit_to(&mut outputs[*o], &mut copy)?;
                }
            }
            records.clear();
            Ok(())
        })
    }

    /// The earliest processing-time timer of any operator.
    pub(crate) fn next_processing_timer(&self) -> Option<i64> {
        self.nodes
            .iter()
            .filter_map(|n| n.op.as_ref()?.next_processing_timer())
            .min()
    }

    /// How long until the earliest processing-time timer on the task's clock (`None`:
    /// there is none, wait for input as long as it takes).
    pub(crate) fn processing_timer_wait(&self) -> Option<Duration> {
        let next = self.next_processing_timer()?;
        let now = self.nodes.first()?.ctx.state.clock.now_ms();
        Some(Duration::from_millis(next.saturating_sub(now).max(0) as u64))
    }

    /// Fires every operator's due processing-time timers, head first; their results go
    /// down the chain like a batch's.
    pub(crate) fn fire_processing_timers(&mut self) -> Result<()> {
        for idx in 0..self.nodes.len() {
            let Some(due) = self.nodes[idx]
                .op
                .as_ref()
                .and_then(|op| op.next_processing_timer())
            else {
                continue;
            };
            let now = self.nodes[idx].ctx.state.clock.now_ms();
            if due > now {
                continue;
            }
            let mut out = std::mem::take(&mut self.nodes[idx].out);
            let res = match &mut self.nodes[idx].op {
                Some(op) => op.on_processing_time(now, &mut out),
                None => Ok(()),
            };
            let res = res
                .and_then(|()| self.distribute(idx, &mut out))
                .and_then(|()| self.route_side_outputs(idx));
            out.clear();
            self.nodes[idx].out = out;
            res?;
        }
        Ok(())
    }

    /// Hands `records` (drained) to every consumer of operator `idx`.
    fn distribute(&mut self, idx: usize, records: &mut Vec<StreamRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let chained = self.nodes[idx].chained.len();
        let total = chained + self.nodes[idx].outputs.len();
        for k in 0..total {
            if k + 1 == total {
                self.deliver(idx, k, chained, records)?;
            } else {
                let mut copy = std::mem::take(&mut self.nodes[idx].scratch);
                copy.extend_from_slice(records);
                let res = self.deliver(idx, k, chained, &mut copy);
                copy.clear();
                self.nodes[idx].scratch = copy;
                res?;
            }
        }
        records.clear();
        Ok(())
    }

    fn deliver(
        &mut self,
        idx: usize,
        k: usize,
        chained: usize,
        records: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        if k < chained {
            let child = self.nodes[idx].chained[k];
            return self.push(child, records);
        }
        emit_to(
            &mut self.outputs[self.nodes[idx].outputs[k - chained]],
            records,
        )
    }

    /// Event time reached `watermark`: operators react, then it moves downstream.
    pub(crate) fn watermark(&mut self, watermark: i64) -> Result<()> {
        self.walk(
            0,
            &mut |op, out| op.process_watermark(watermark, out),
            StreamEvent::Watermark(watermark),
        )
    }

    /// All input ended: operators emit final results, then outputs get `EndOfInput`.
    pub(crate) fn end_input(&mut self) -> Result<()> {
        self.walk(0, &mut |op, out| op.end_input(out), StreamEvent::EndOfInput)
    }

    fn walk(&mut self, idx: usize, f: &mut OperatorStep<'_>, event: StreamEvent) -> Result<()> {
        if let (StreamEvent::Watermark(w), Some(op)) = (event, &self.nodes[idx].op) {
            if w != i64::MAX && !op.forwards_watermarks() {
                // A watermark generator: upstream watermarks stop here.
                return Ok(());
            }
        }
        let mut out = std::mem::take(&mut self.nodes[idx].out);
        let res = match &mut self.nodes[idx].op {
            Some(op) => f(op.as_mut(), &mut out),
            None => Ok(()),
        };
        let res = res
            .and_then(|()| self.distribute(idx, &mut out))
            .and_then(|()| self.route_side_outputs(idx));
        out.clear();
        self.nodes[idx].out = out;
        res?;
        self.walk_children(idx, f, event)
    }

    /// `event` after operator `idx` handled it: its chained operators, then its outputs.
    fn walk_children(
        &mut self,
        idx: usize,
        f: &mut OperatorStep<'_>,
        event: StreamEvent,
    ) -> Result<()> {
        for k in 0..self.nodes[idx].chained.len() {
            let child = self.nodes[idx].chained[k];
            self.walk(child, f, event)?;
        }
        for k in 0..self.nodes[idx].outputs.len() {
            let o = self.nodes[idx].outputs[k];
            self.outputs[o].output.emit_event(event)?;
        }
        // Side-output edges carry the operator's watermarks and end of input too.
        for k in 0..self.nodes[idx].side_outputs.len() {
            let o = self.nodes[idx].side_outputs[k].1;
            self.outputs[o].output.emit_event(event)?;
        }
        Ok(())
    }

    /// Sends `event` to every output as is (watermark status changes).
    pub(crate) fn broadcast_event(&mut self, event: StreamEvent) -> Result<()> {
        for o in &mut self.outputs {
            o.output.emit_event(event)?;
        }
        Ok(())
    }

    /// Sends a checkpoint barrier or cancel marker to every output.
    pub(crate) fn broadcast_checkpoint_event(&mut self, event: CheckpointEvent) -> Result<()> {
        for o in &mut self.outputs {
            o.output.emit_checkpoint_event(event)?;
        }
        Ok(())
    }

    /// Sends an unaligned barrier to every output ahead of its queued data; returns the
    /// overtaken bytes as `(output edge, subpartition, bytes)`, empty parts left out.
    pub(crate) fn broadcast_priority_barrier(
        &mut self,
        barrier: CheckpointBarrier,
    ) -> Result<Vec<(u32, u32, Vec<u8>)>> {
        let mut out = Vec::new();
        for (edge, o) in (0u32..).zip(&mut self.outputs) {
            for (sub, bytes) in (0u32..).zip(o.output.emit_priority_barrier(barrier)?) {
                if !bytes.is_empty() {
                    out.push((edge, sub, bytes));
                }
            }
        }
        Ok(out)
    }

    /// Sends the aligned barrier of a checkpoint with an aligned-checkpoint timeout to
    /// every output; returns, per output edge, the handle that turns it
    /// unaligned where it is still queued at the deadline.
    pub(crate) fn broadcast_timeoutable_barrier(
        &mut self,
        barrier: CheckpointBarrier,
    ) -> Result<Vec<(u32, QueuedBarrier)>> {
        let mut out = Vec::new();
        for (edge, o) in (0u32..).zip(&mut self.outputs) {
            out.push((edge, o.output.emit_timeoutable_barrier(barrier)?));
        }
        Ok(out)
    }

    /// Writes output in-flight data restored from an unaligned checkpoint.
    pub(crate) fn restore_output_in_flight(&mut self, parts: &[(u32, u32, Vec<u8>)]) -> Result<()> {
        let count = self.outputs.len();
        for (edge, sub, bytes) in parts {
            let o = self.outputs.get_mut(*edge as usize).ok_or_else(|| {
                DataflowError::InvalidGraph(format!(
                    "restored in-flight data for output edge {edge} of a task with {count} outputs"
                ))
            })?;
            o.output.restore_in_flight(*sub, bytes)?;
        }
        Ok(())
    }

    /// The context of the chain's first operator.
    pub(crate) fn head_context(&self) -> Option<&OperatorContext> {
        self.nodes.first().map(|n| &n.ctx)
    }

    /// Whether every output can take more without waiting (see
    /// [`TaskOutput::is_available`]).
    pub(crate) fn output_available(&self) -> bool {
        self.outputs.iter().all(|o| o.output.is_available())
    }

    /// Flushes every output.
    pub(crate) fn flush(&mut self) -> Result<()> {
        for o in &mut self.outputs {
            o.output.flush()?;
        }
        Ok(())
    }
}

/// Emits `records` (drained) to `o`, computing each record's channel on hash edges.
fn emit_to(o: &mut Output, records: &mut Vec<StreamRecord>) -> Result<()> {
    o.channels.clear();
    if let Some(route) = &o.route {
        for r in records.iter() {
            o.channels.push(operator_index_for_key(
                route.key.key_hash(&r.value)?,
                route.parallelism,
                route.max_parallelism,
            ));
        }
    }
    o.output.emit(records, &o.channels)?;
    records.clear();
    Ok(())
}
