//! StreamGraph → JobGraph: resolving defaults and chaining operators.
//!
//! An edge is **chainable** — its two operators run in one task, connected by direct
//! calls — exactly when (Flink's `isChainable`):
//!
//! 1. its partitioning is `Forward` (explicit, or the default between equal parallelism),
//! 2. both operators have the same parallelism,
//! 3. both are in the same slot sharing group,
//! 4. the downstream operator has exactly one input edge,
//! 5. neither operator has chaining disabled, and
//! 6. it carries the upstream operator's main output, not a side output (side outputs
//!    always leave the task through an output edge, see [`side_output`](crate::side_output)).
//!
//! Because of (4) every operator has at most one chained parent, so chains are trees.
//! Operators with no chainable input edge head a chain; each head and everything
//! reachable from it over chainable edges (breadth-first, in edge order) form one
//! vertex. Vertices are numbered by their head's node id, so the result is deterministic.
//! Non-chainable edges become [`JobEdge`]s from the producing operator's position in its
//! chain to the head of the consumer's vertex.

use std::collections::VecDeque;

use crate::error::{DataflowError, Result};
use crate::ids::{JobId, VertexId};
use crate::job_graph::{ChainedOperator, JobEdge, JobGraph, JobVertex};
use crate::partitioning::Partitioning;
use crate::stream_graph::{StreamGraph, DEFAULT_SLOT_SHARING_GROUP};

/// Settings of a node after defaults are applied.
struct Resolved {
    parallelism: u32,
    max_parallelism: u32,
    group: String,
}

/// Node ids in topological order, or a cycle error.
fn topological(g: &StreamGraph) -> Result<Vec<usize>> {
    let n = g.nodes.len();
    let mut indegree = vec![0usize; n];
    for e in &g.edges {
        indegree[e.target as usize] += 1;
    }
    let mut ready: Vec<usize> = (0..n).filter(|i| indegree[*i] == 0).rev().collect();
    let mut order = Vec::with_capacity(n);
    while let Some(v) = ready.pop() {
        order.push(v);
        for e in g.edges.iter().filter(|e| e.source as usize == v) {
            let t = e.target as usize;
            indegree[t] -= 1;
            if indegree[t] == 0 {
                ready.push(t);
            }
        }
    }
    if order.len() < n {
        let stuck = (0..n).find(|i| indegree[*i] > 0).unwrap_or(0);
        return Err(DataflowError::Cycle {
            vertex: g.nodes[stuck].spec.name.clone(),
        });
    }
    Ok(order)
}

/// Chains `g` into a JobGraph named `name` with id `job_id`.
pub fn build_job_graph(g: &StreamGraph, name: &str, job_id: JobId) -> Result<JobGraph> {
    let n = g.nodes.len();
    for (i, node) in g.nodes.iter().enumerate() {
        if node.id as usize != i {
            return Err(DataflowError::InvalidGraph(format!(
                "stream node `{}` has id {} at index {i}",
                node.spec.name, node.id
            )));
        }
    }
    if let Some(e) = g
        .edges
        .iter()
        .find(|e| e.source as usize >= n || e.target as usize >= n)
    {
        return Err(DataflowError::InvalidGraph(format!(
            "stream edge {} -> {} names a missing node",
            e.source, e.target
        )));
    }
    let order = topological(g)?;

    // Resolve parallelism and slot sharing groups in topological order (groups inherit).
    let mut resolved: Vec<Option<Resolved>> = (0..n).map(|_| None).collect();
    for &i in &order {
        let node = &g.nodes[i];
        let group = match &node.slot_sharing_group {
            Some(gr) => gr.clone(),
            None => {
                let mut groups = g
                    .edges
                    .iter()
                    .filter(|e| e.target as usize == i)
                    .filter_map(|e| resolved[e.source as usize].as_ref().map(|r| &r.group));
                match groups.next() {
                    Some(first) if groups.all(|gr| gr == first) => first.clone(),
                    _ => DEFAULT_SLOT_SHARING_GROUP.to_owned(),
                }
            }
        };
        resolved[i] = Some(Resolved {
            parallelism: node.parallelism.unwrap_or(g.default_parallelism),
            max_parallelism: node.max_parallelism.unwrap_or(g.default_max_parallelism),
            group,
        });
    }
    // Every node is in `order` (no cycle), so every entry is resolved.
    let resolved: Vec<Resolved> = resolved.into_iter().flatten().collect();

    let partitioning: Vec<Partitioning> = g
        .edges
        .iter()
        .map(|e| match &e.partitioning {
            Some(p) => p.clone(),
            None if resolved[e.source as usize].parallelism
                == resolved[e.target as usize].parallelism =>
            {
                Partitioning::Forward
            }
            None => Partitioning::Rebalance,
        })
        .collect();
    let in_degree = |t: usize| g.edges.iter().filter(|e| e.target as usize == t).count();
    let chainable: Vec<bool> = g
        .edges
        .iter()
        .zip(&partitioning)
        .map(|(e, p)| {
            let (s, t) = (e.source as usize, e.target as usize);
            *p == Partitioning::Forward
                && e.side_output.is_none()
                && resolved[s].parallelism == resolved[t].parallelism
                && resolved[s].group == resolved[t].group
                && in_degree(t) == 1
                && !g.nodes[t].spec.kind.is_two_input()
                && !g.nodes[s].chaining_disabled
                && !g.nodes[t].chaining_disabled
        })
        .collect();

    // Build chains from heads, breadth-first.
    let mut location: Vec<Option<(VertexId, usize)>> = vec![None; n];
    let mut vertices = Vec::new();
    for (head, r) in resolved.iter().enumerate() {
        let is_head = !g
            .edges
            .iter()
            .zip(&chainable)
            .any(|(e, c)| *c && e.target as usize == head);
        if !is_head {
            continue;
        }
        let vid = VertexId(vertices.len() as u32);
        let mut ops: Vec<ChainedOperator> = Vec::new();
        let mut queue = VecDeque::from([(head, None::<usize>)]);
        while let Some((node, parent)) = queue.pop_front() {
            let idx = ops.len();
            ops.push(ChainedOperator {
                spec: g.nodes[node].spec.clone(),
                chained_outputs: Vec::new(),
            });
            if let Some(p) = parent {
                ops[p].chained_outputs.push(idx);
            }
            location[node] = Some((vid, idx));
            for (e, _) in g
                .edges
                .iter()
                .zip(&chainable)
                .filter(|(e, c)| **c && e.source as usize == node)
            {
                queue.push_back((e.target as usize, Some(idx)));
            }
        }
        vertices.push(JobVertex {
            id: vid,
            name: ops
                .iter()
                .map(|o| o.spec.name.as_str())
                .collect::<Vec<_>>()
                .join(" -> "),
            parallelism: r.parallelism,
            max_parallelism: r.max_parallelism,
            slot_sharing_group: r.group.clone(),
            operators: ops,
        });
    }

    let mut edges = Vec::new();
    for ((e, p), c) in g.edges.iter().zip(partitioning).zip(&chainable) {
        if *c {
            continue;
        }
        let (Some((sv, sop)), Some((tv, 0))) =
            (location[e.source as usize], location[e.target as usize])
        else {
            // A non-chainable edge always enters a chain head; anything else is a bug in
            // the loop above, reported rather than panicking.
            return Err(DataflowError::InvalidGraph(format!(
                "internal: edge {} -> {} does not enter a chain head",
                e.source, e.target
            )));
        };
        edges.push(JobEdge {
            source: sv,
            source_operator: sop,
            target: tv,
            partitioning: p,
            side_output: e.side_output.clone(),
            input: e.input,
        });
    }
    Ok(JobGraph {
        job_id,
        name: name.to_owned(),
        vertices,
        edges,
        savepoint_restore: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtins;
    use crate::environment::StreamExecutionEnvironment;
    use crate::key;
    use crate::registry::OperatorRegistry;
    use crate::spec::{FactoryRef, OperatorKind};

    fn identity() -> FactoryRef {
        FactoryRef::unit("t.identity")
    }

    fn registry() -> OperatorRegistry {
        let mut r = OperatorRegistry::new();
        r.register_map("t.identity", |()| Ok(Ok)).unwrap();
        r
    }

    /// Source → map → sink with a tweak applied to the map; returns the number of vertices.
    fn vertices_with(tweak: impl FnOnce(&StreamExecutionEnvironment)) -> usize {
        let env = StreamExecutionEnvironment::new();
        env.set_parallelism(2);
        tweak(&env);
        let job = env.job_graph("t").unwrap();
        job.validate(&registry()).unwrap();
        job.vertices.len()
    }

    #[test]
    fn forward_equal_parallelism_same_group_single_input_chains() {
        assert_eq!(
            vertices_with(|env| {
                env.add_source(builtins::datagen(Default::default()))
                    .map(identity())
                    .sink(builtins::blackhole());
            }),
            1
        );
    }

    #[test]
    fn non_forward_partitioning_breaks_chain() {
        assert_eq!(
            vertices_with(|env| {
                env.add_source(builtins::datagen(Default::default()))
                    .rebalance()
                    .map(identity())
                    .sink(builtins::blackhole());
            }),
            2
        );
    }

    #[test]
    fn different_parallelism_breaks_chain() {
        assert_eq!(
            vertices_with(|env| {
                env.add_source(builtins::datagen(Default::default()))
                    .map(identity())
                    .parallelism(1)
                    .sink(builtins::blackhole());
            }),
            3
        );
    }

    #[test]
    fn different_slot_sharing_group_breaks_chain() {
        assert_eq!(
            vertices_with(|env| {
                env.add_source(builtins::datagen(Default::default()))
                    .map(identity())
                    .slot_sharing_group("other")
                    .sink(builtins::blackhole());
            }),
            // The sink inherits "other" from its only input and chains to the map.
            2
        );
    }

    #[test]
    fn multiple_inputs_break_chain() {
        assert_eq!(
            vertices_with(|env| {
                let a = env.add_source(builtins::datagen(Default::default()));
                let b = env.add_source(builtins::datagen(Default::default()));
                a.union(&[&b]).map(identity()).sink(builtins::blackhole());
            }),
            3
        );
    }

    #[test]
    fn disabled_chaining_breaks_chain_on_both_sides() {
        assert_eq!(
            vertices_with(|env| {
                env.add_source(builtins::datagen(Default::default()))
                    .map(identity())
                    .disable_chaining()
                    .sink(builtins::blackhole());
            }),
            3
        );
    }

    #[test]
    fn chains_are_trees_with_side_outputs() {
        let env = StreamExecutionEnvironment::new();
        let src = env.add_source(builtins::datagen(Default::default()));
        let m = src.map(identity());
        m.sink(builtins::blackhole());
        m.sink(builtins::print());
        m.key_by(key::by_value())
            .process(builtins::count_per_key(false));
        let job = env.job_graph("t").unwrap();
        job.validate(&registry()).unwrap();
        assert_eq!(job.vertices.len(), 2);
        let chain = &job.vertices[0].operators;
        assert_eq!(chain.len(), 4);
        assert_eq!(chain[0].chained_outputs, vec![1]);
        assert_eq!(chain[1].chained_outputs, vec![2, 3]);
        assert_eq!(job.edges.len(), 1);
        assert_eq!(job.edges[0].source_operator, 1);
        assert_eq!(
            job.vertices[1].operators[0].spec.kind,
            OperatorKind::Process
        );
        assert_eq!(
            job.vertices[0].name,
            "rill.source.datagen -> t.identity -> rill.sink.blackhole -> rill.sink.print"
        );
    }

    #[test]
    fn cycles_are_rejected() {
        let env = StreamExecutionEnvironment::new();
        env.add_source(builtins::datagen(Default::default()))
            .map(identity())
            .map(identity())
            .sink(builtins::blackhole());
        let mut g = env.stream_graph().unwrap();
        g.edges.push(crate::stream_graph::StreamEdge {
            source: 2,
            target: 1,
            partitioning: Some(Partitioning::Rebalance),
            side_output: None,
            input: Default::default(),
        });
        assert!(matches!(
            build_job_graph(&g, "t", JobId([0; 16])),
            Err(DataflowError::Cycle { .. })
        ));

        // And in a JobGraph received from elsewhere.
        let env = StreamExecutionEnvironment::new();
        env.add_source(builtins::datagen(Default::default()))
            .rebalance()
            .map(identity())
            .rebalance()
            .map(identity())
            .sink(builtins::blackhole());
        let mut job = env.job_graph("t").unwrap();
        job.validate(&registry()).unwrap();
        job.edges.push(JobEdge {
            source: VertexId(2),
            source_operator: 0,
            target: VertexId(1),
            partitioning: Partitioning::Rebalance,
            side_output: None,
            input: Default::default(),
        });
        assert!(matches!(
            job.validate(&registry()),
            Err(DataflowError::Cycle { .. })
        ));
    }

    #[test]
    fn unknown_operator_is_a_typed_submission_error() {
        let env = StreamExecutionEnvironment::new();
        env.add_source(builtins::datagen(Default::default()))
            .map(FactoryRef::unit("myapp.not_registered"))
            .sink(builtins::blackhole());
        let job = env.job_graph("t").unwrap();
        assert!(matches!(
            job.validate(&registry()),
            Err(DataflowError::UnknownOperator { name }) if name == "myapp.not_registered"
        ));
    }

    #[test]
    fn forward_edge_needs_equal_parallelism() {
        let env = StreamExecutionEnvironment::new();
        env.add_source(builtins::datagen(Default::default()))
            .parallelism(2)
            .forward()
            .map(identity())
            .parallelism(3)
            .sink(builtins::blackhole());
        let job = env.job_graph("t").unwrap();
        assert!(matches!(
            job.validate(&registry()),
            Err(DataflowError::ForwardParallelismMismatch { .. })
        ));
    }

    #[test]
    fn job_graph_round_trips_through_bytes() {
        let job = crate::jobs::keyed_sum(Some(1000), 10, None, 4).unwrap();
        let bytes = job.to_bytes().unwrap();
        let back = JobGraph::from_bytes(&bytes).unwrap();
        assert_eq!(back, job);
        back.validate(&OperatorRegistry::new()).unwrap();
        assert!(JobGraph::from_bytes(&bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn input_channels_are_numbered_per_edge_and_upstream_subtask() {
        let env = StreamExecutionEnvironment::new();
        let a = env
            .add_source(builtins::datagen(Default::default()))
            .parallelism(2);
        let b = env
            .add_source(builtins::datagen(Default::default()))
            .parallelism(3);
        a.union(&[&b.rebalance()]).map(identity()).parallelism(2);
        let job = env.job_graph("t").unwrap();
        let map = VertexId(2);
        // a -> map is forward (2 -> 2): one channel; b -> map all-to-all: three.
        let inputs: Vec<(usize, u32)> = job
            .wiring(map, 1)
            .unwrap()
            .inputs
            .iter()
            .map(|c| (c.edge, c.upstream))
            .collect();
        assert_eq!(inputs, [(0, 1), (1, 0), (1, 1), (1, 2)]);
        assert_eq!(
            job.wiring(VertexId(1), 0).unwrap().outputs[0].consumers,
            0..2
        );
    }
}
