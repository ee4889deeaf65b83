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
//! receive them. Hash-partitioned outputs get per-record key hashes computed here, with
//! the edge's key selector.

use std::sync::Arc;
use std::time::Instant;

use crate::collect::CollectSink;
use crate::element::{StreamEvent, StreamRecord};
use crate::error::{DataflowError, Result};
use crate::job_graph::{JobGraph, JobVertex};
use crate::key::KeySelector;
use crate::operator::{Operator, OperatorContext, SourceOperator, SourceStatus};
use crate::partitioning::Partitioning;
use crate::registry::{OperatorKind, OperatorRegistry};
use crate::task_io::TaskOutput;

struct Node {
    /// `None` for a source head: its records enter through `push_source`.
    op: Option<Box<dyn Operator>>,
    ctx: OperatorContext,
    chained: Vec<usize>,
    outputs: Vec<usize>,
    /// Output buffer, reused across batches.
    out: Vec<StreamRecord>,
    /// Copy buffer for all but the last consumer.
    scratch: Vec<StreamRecord>,
}

/// What `walk` does at each operator (watermark or end-of-input handling).
type OperatorStep<'a> = dyn FnMut(&mut dyn Operator, &mut Vec<StreamRecord>) -> Result<()> + 'a;

struct Output {
    output: Box<dyn TaskOutput>,
    key: Option<Arc<dyn KeySelector>>,
    hashes: Vec<u64>,
}

/// A running chain of one subtask.
pub(crate) struct OperatorChain {
    source: Option<Box<dyn SourceOperator>>,
    nodes: Vec<Node>,
    outputs: Vec<Output>,
}

impl OperatorChain {
    /// Instantiates `vertex`'s operators for subtask `subtask_index`; `outputs[i]` is the
    /// output for the vertex's `i`-th output edge.
    pub(crate) fn build(
        job: &JobGraph,
        vertex: &JobVertex,
        subtask_index: u32,
        registry: &OperatorRegistry,
        collect: Option<Arc<dyn CollectSink>>,
        outputs: Vec<Box<dyn TaskOutput>>,
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
                subtask_index,
                parallelism: vertex.parallelism,
                max_parallelism: vertex.max_parallelism,
                key_selector: op
                    .spec
                    .key
                    .as_ref()
                    .map(|k| registry.key_selector(k))
                    .transpose()?,
                collect: collect.clone(),
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
            node.outputs.push(i);
            let key = match &edge.partitioning {
                Partitioning::Hash { key } => Some(registry.key_selector(key)?),
                _ => None,
            };
            outs.push(Output {
                output,
                key,
                hashes: Vec::new(),
            });
        }
        Ok(Self {
            source,
            nodes,
            outputs: outs,
        })
    }

    /// Whether the head is a source.
    pub(crate) fn is_source(&self) -> bool {
        self.source.is_some()
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

    /// Pushes input records into the head operator.
    pub(crate) fn push_input(&mut self, records: &mut Vec<StreamRecord>) -> Result<()> {
        self.push(0, records)
    }

    fn push(&mut self, idx: usize, input: &mut Vec<StreamRecord>) -> Result<()> {
        if input.is_empty() {
            return Ok(());
        }
        let mut out = std::mem::take(&mut self.nodes[idx].out);
        let res = match &mut self.nodes[idx].op {
            Some(op) => op.process_batch(input, &mut out),
            None => Err(DataflowError::InvalidGraph(
                "records pushed into a source".into(),
            )),
        };
        let res = res.and_then(|()| self.distribute(idx, &mut out));
        out.clear();
        self.nodes[idx].out = out;
        res
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
        let o = &mut self.outputs[self.nodes[idx].outputs[k - chained]];
        o.hashes.clear();
        if let Some(key) = &o.key {
            for r in records.iter() {
                o.hashes.push(key.key_hash(&r.value)?);
            }
        }
        o.output.emit(records, &o.hashes)?;
        records.clear();
        Ok(())
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
        let mut out = std::mem::take(&mut self.nodes[idx].out);
        let res = match &mut self.nodes[idx].op {
            Some(op) => f(op.as_mut(), &mut out),
            None => Ok(()),
        };
        let res = res.and_then(|()| self.distribute(idx, &mut out));
        out.clear();
        self.nodes[idx].out = out;
        res?;
        for k in 0..self.nodes[idx].chained.len() {
            let child = self.nodes[idx].chained[k];
            self.walk(child, f, event)?;
        }
        for k in 0..self.nodes[idx].outputs.len() {
            let o = self.nodes[idx].outputs[k];
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

    /// Flushes every output.
    pub(crate) fn flush(&mut self) -> Result<()> {
        for o in &mut self.outputs {
            o.output.flush()?;
        }
        Ok(())
    }
}
