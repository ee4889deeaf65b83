//! Channel wiring: which subpartition of which producer feeds each input channel of a
//! subtask, and how many subpartitions each output partition of a subtask has.
//!
//! This is the one place where the data-plane layout of a [`JobGraph`] is computed.
//! The JobMaster builds each deployment's input channel descriptors from
//! [`JobGraph::wiring`]; the TaskExecutor's [`create_task_io`](crate::network_io::create_task_io)
//! creates the output partitions and checks the input channels against it; the
//! [`StreamTask`](crate::stream_task::StreamTask) checks its input's channel count
//! against it. Producer and consumer therefore agree by construction.
//!
//! # Layout
//!
//! Every subtask creates **one result partition per output edge**, in
//! [`JobGraph::output_edges`] order, with one subpartition per downstream subtask it is
//! connected to: all of them on an all-to-all edge (rebalance, hash, broadcast), a
//! contiguous range on a pointwise edge (forward, rescale; see
//! [`partitioning`](crate::partitioning)). Subpartition `k` goes to the `k`-th subtask
//! of that range.
//!
//! The **input channels** of subtask `j` of vertex `v` are numbered by walking `v`'s
//! input edges in edge order and, within each, the connected upstream subtasks in
//! ascending order. Input channel `i` reads exactly one subpartition: the one its
//! upstream subtask's partition for that edge holds for `j`. Every subpartition of every
//! partition is read by exactly one input channel.

use std::ops::Range;

use crate::error::{DataflowError, Result};
use crate::ids::VertexId;
use crate::job_graph::JobGraph;
use crate::partitioning::{input_sources, output_targets};
use crate::two_input::InputSide;

/// One input channel of a subtask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputChannel {
    /// The edge it belongs to (an index into [`JobGraph::edges`]).
    pub edge: usize,
    /// The producing subtask of the edge's source vertex.
    pub upstream: u32,
    /// Which of the producer's output partitions: the edge's position among the source
    /// vertex's [`JobGraph::output_edges`].
    pub output: usize,
    /// The subpartition of that partition this channel reads.
    pub subpartition: u32,
}

/// One output partition of a subtask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputPartition {
    /// The edge it feeds (an index into [`JobGraph::edges`]).
    pub edge: usize,
    /// The downstream subtasks it feeds; subpartition `k` goes to `consumers.start + k`.
    pub consumers: Range<u32>,
}

impl OutputPartition {
    /// Number of subpartitions (one per consumer subtask).
    pub fn num_subpartitions(&self) -> u32 {
        self.consumers.len() as u32
    }
}

/// The channels of one subtask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubtaskWiring {
    /// Input channels in input-channel order (empty for a source vertex).
    pub inputs: Vec<InputChannel>,
    /// Output partitions in [`JobGraph::output_edges`] order.
    pub outputs: Vec<OutputPartition>,
}

impl SubtaskWiring {
    /// Which input of the head each input channel feeds, in channel order (see
    /// [`two_input`](crate::two_input)).
    pub fn input_sides(&self, job: &JobGraph) -> Vec<InputSide> {
        self.inputs
            .iter()
            .map(|c| job.edges.get(c.edge).map_or(InputSide::First, |e| e.input))
            .collect()
    }
}

impl JobGraph {
    /// The input channels and output partitions of subtask `subtask` of `vertex` (see
    /// the [module docs](crate::wiring)).
    ///
    /// Errors ([`DataflowError::InvalidGraph`]): no such vertex, a subtask out of range,
    /// or an edge naming a missing vertex (the graph may not be validated yet).
    pub fn wiring(&self, vertex: VertexId, subtask: u32) -> Result<SubtaskWiring> {
        let v = self
            .vertex(vertex)
            .ok_or_else(|| DataflowError::InvalidGraph(format!("no vertex {vertex}")))?;
        if subtask >= v.parallelism {
            return Err(DataflowError::InvalidGraph(format!(
                "subtask {subtask} of `{}` with parallelism {}",
                v.name, v.parallelism
            )));
        }
        let parallelism = |id: VertexId| {
            self.vertex(id)
                .map(|v| v.parallelism)
                .ok_or_else(|| DataflowError::InvalidGraph(format!("no vertex {id}")))
        };
        let mut inputs = Vec::new();
        for (edge, e) in self.input_edges(vertex) {
            let up = parallelism(e.source)?;
            let pointwise = e.partitioning.is_pointwise();
            let output = self
                .output_edges(e.source)
                .position(|(i, _)| i == edge)
                .ok_or_else(|| {
                    DataflowError::InvalidGraph(format!(
                        "edge {edge} is not among its source's outputs"
                    ))
                })?;
            for upstream in input_sources(pointwise, subtask, up, v.parallelism) {
                let consumers = output_targets(pointwise, upstream, up, v.parallelism);
                // The two range functions are inverse (unit-tested in `partitioning`).
                debug_assert!(consumers.contains(&subtask));
                inputs.push(InputChannel {
                    edge,
                    upstream,
                    output,
                    subpartition: subtask - consumers.start,
                });
            }
        }
        let mut outputs = Vec::new();
        for (edge, e) in self.output_edges(vertex) {
            let pointwise = e.partitioning.is_pointwise();
            outputs.push(OutputPartition {
                edge,
                consumers: output_targets(
                    pointwise,
                    subtask,
                    v.parallelism,
                    parallelism(e.target)?,
                ),
            });
        }
        Ok(SubtaskWiring { inputs, outputs })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::builtins::{self, DatagenConfig};
    use crate::environment::{DataStream, StreamExecutionEnvironment};

    fn source(env: &StreamExecutionEnvironment, parallelism: u32) -> DataStream {
        env.add_source(builtins::datagen(DatagenConfig::bounded(1)))
            .parallelism(parallelism)
    }

    /// Checks that every subpartition of every producer is read by exactly one input
    /// channel, by the subtask it is meant for.
    fn assert_consistent(job: &JobGraph) {
        // (edge, upstream, subpartition) -> consumer subtask.
        let mut produced = BTreeMap::new();
        for v in &job.vertices {
            for k in 0..v.parallelism {
                let w = job.wiring(v.id, k).unwrap();
                assert_eq!(w.outputs.len(), job.output_edges(v.id).count());
                for (o, (edge, _)) in w.outputs.iter().zip(job.output_edges(v.id)) {
                    assert_eq!(o.edge, edge);
                    for (s, consumer) in o.consumers.clone().enumerate() {
                        produced.insert((edge, k, s as u32), consumer);
                    }
                }
            }
        }
        let mut read = BTreeMap::new();
        for v in &job.vertices {
            for k in 0..v.parallelism {
                for c in job.wiring(v.id, k).unwrap().inputs {
                    let e = &job.edges[c.edge];
                    assert_eq!(e.target, v.id);
                    assert_eq!(job.output_edges(e.source).nth(c.output).unwrap().0, c.edge);
                    let producer = job.wiring(e.source, c.upstream).unwrap();
                    assert_eq!(producer.outputs[c.output].edge, c.edge);
                    assert!(c.subpartition < producer.outputs[c.output].num_subpartitions());
                    assert!(read
                        .insert((c.edge, c.upstream, c.subpartition), k)
                        .is_none());
                }
            }
        }
        assert_eq!(produced, read);
    }

    #[test]
    fn all_to_all_reads_one_subpartition_of_every_producer() {
        // 3 -> 2 rebalance: every sink subtask reads subpartition k of each source.
        let env = StreamExecutionEnvironment::new();
        source(&env, 3)
            .rebalance()
            .sink(builtins::blackhole())
            .parallelism(2);
        let job = env.job_graph("t").unwrap();
        let (src, sink) = (VertexId(0), VertexId(1));
        let w = job.wiring(sink, 1).unwrap();
        let channels: Vec<(u32, u32)> = w
            .inputs
            .iter()
            .map(|c| (c.upstream, c.subpartition))
            .collect();
        assert_eq!(channels, [(0, 1), (1, 1), (2, 1)]);
        assert!(w.outputs.is_empty());
        let w = job.wiring(src, 2).unwrap();
        assert!(w.inputs.is_empty());
        assert_eq!(w.outputs[0].consumers, 0..2);
        assert_consistent(&job);
    }

    #[test]
    fn pointwise_fans_out_and_in_by_ranges() {
        // 2 -> 5 rescale: source 0 feeds sinks 0..3, source 1 feeds 3..5.
        let env = StreamExecutionEnvironment::new();
        source(&env, 2)
            .rescale()
            .sink(builtins::blackhole())
            .parallelism(5);
        let job = env.job_graph("fan-out").unwrap();
        assert_eq!(
            job.wiring(VertexId(0), 0).unwrap().outputs[0].consumers,
            0..3
        );
        assert_eq!(
            job.wiring(VertexId(0), 1).unwrap().outputs[0].consumers,
            3..5
        );
        let c = job.wiring(VertexId(1), 4).unwrap().inputs;
        assert_eq!((c.len(), c[0].upstream, c[0].subpartition), (1, 1, 1));
        assert_consistent(&job);

        // 5 -> 2 rescale: sink 0 reads sources 0..3, sink 1 reads 3..5, each the only
        // subpartition.
        let env = StreamExecutionEnvironment::new();
        source(&env, 5)
            .rescale()
            .sink(builtins::blackhole())
            .parallelism(2);
        let job = env.job_graph("fan-in").unwrap();
        let c = job.wiring(VertexId(1), 1).unwrap().inputs;
        let channels: Vec<(u32, u32)> = c.iter().map(|c| (c.upstream, c.subpartition)).collect();
        assert_eq!(channels, [(3, 0), (4, 0)]);
        assert_consistent(&job);
    }

    #[test]
    fn channels_are_numbered_by_edge_then_upstream_subtask() {
        // a (2) -forward-> map (2) <-rebalance- b (3); map -> two sinks.
        let env = StreamExecutionEnvironment::new();
        let a = source(&env, 2);
        let b = source(&env, 3);
        let map = a
            .union(&[&b.rebalance()])
            .map(crate::spec::FactoryRef::unit("t.identity"))
            .parallelism(2);
        map.broadcast().sink(builtins::blackhole()).parallelism(3);
        map.rescale().sink(builtins::blackhole()).parallelism(4);
        let job = env.job_graph("t").unwrap();
        let map = VertexId(2);
        let w = job.wiring(map, 1).unwrap();
        let channels: Vec<(usize, u32, u32)> = w
            .inputs
            .iter()
            .map(|c| (c.edge, c.upstream, c.subpartition))
            .collect();
        assert_eq!(channels, [(0, 1, 0), (1, 0, 1), (1, 1, 1), (1, 2, 1)]);
        let outputs: Vec<Range<u32>> = w.outputs.iter().map(|o| o.consumers.clone()).collect();
        assert_eq!(outputs, [0..3, 2..4]);
        assert_consistent(&job);
        assert!(job.wiring(map, 2).is_err());
        assert!(job.wiring(VertexId(9), 0).is_err());
    }

    #[test]
    fn every_parallelism_pair_is_consistent() {
        for up in 1..7 {
            for down in 1..7 {
                let env = StreamExecutionEnvironment::new();
                let s = source(&env, up);
                s.rescale().sink(builtins::blackhole()).parallelism(down);
                s.rebalance().sink(builtins::blackhole()).parallelism(down);
                assert_consistent(&env.job_graph("t").unwrap());
            }
        }
    }
}
